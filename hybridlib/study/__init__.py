"""The reproduction study, built on the engine: grids of runs, their tables and tests.

- `reproduce`: the papers' grids (`grid_configs`, `run_grid`, `reproduce` command);
- `runs`: finding and reading run folders; `papers`: the papers' own numbers;
- `tables`: paper tables and model / recipe comparisons; `stats`: the statistics
  behind them (Welch, Holm, minimum detectable effect, binomial test noise);
- `markdown`, `report`, `results`: the written tables and the `results` command;
- `figures`: the study's figures; `findings`: its answer in words, from its tables.
"""

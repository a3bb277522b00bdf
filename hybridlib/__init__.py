"""hybridlib: CNN, CNN+LSTM, CNN+LSTM with skip connections and auto-encoder
image classifiers, rebuilt from two papers for an interactive course.

Paper A: Yilmaz, Kirman, Odabasi, Buzcu, "Image Classification Using CNN-LSTM
Hybrid Model With Skip Connections" (Ozyegin University, CS 554).
Paper B: Yu, Zhou, Gong, Sun, Shi, Ou, "Research on Image Feature Recognition
Based on Convolution-Long Short Term Memory Network" (Jiangnan University).

The package has two readers. The teaching core, these modules, is what the notebooks
and a student read, in this order: `data` (data sets, stratified splits, the
in-memory loader; `datasets` holds the on-disk formats), `models`, `train` (the
written-out `train_one_epoch` / `evaluate` / `fit`), `metrics`, `history`, `plots`,
with `config` (the run settings), `runtime` (device, seeds, mixed precision),
`progress`, `errors` and `paths`. The core imports nothing from the machinery:

- `hybridlib.engine`: runs a long job needs (checkpoints and resume, run
  directories, torchrun, CUDA-graph steps, the decoded-image cache, per-rank loading);
- `hybridlib.study`: the reproduction study (grids, tables, statistics, figures,
  findings);
- `hybridlib.tools`: the command line, the course runner, the dashboard, the
  architecture diagrams and the benchmark.

Imports go one way, tools -> study -> engine -> core (`tests/test_layering.py`).
Run `python -m hybridlib --help` for the command line.
"""

__version__ = "0.1.0"

from hybridlib.errors import HybridError
from hybridlib.paths import data_root, runs_root

__all__ = ["HybridError", "__version__", "data_root", "runs_root"]

"""The committed reproduction study (`results/`, `figures/results/`).

Every table committed under `results/` must be what its committed runs regenerate,
stamped with the command, hardware, versions and seeds that made it, and every
figure must exist for the runs it shows. `results/README.md` gives the commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridlib.errors import HybridError
from hybridlib.study import results
from hybridlib.tools import cli

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
FIGURES = REPO / "figures" / "results"
# results folder -> (the paper's table, the recipe of its runs)
STUDY = {
    "paper-a": ("paper-a", "paper"),
    # Caltech 101 and Tiny ImageNet in fp32; the complete CIFAR-10 in bf16 (its table says so)
    "paper-a-improved": ("paper-a", "improved"),
    "paper-b": ("paper-b", "paper"),
    "paper-a-cpu-bf16": ("paper-a", "paper"),  # one cell in bf16, against paper-a's fp32
}


def test_the_study_is_committed():
    from hybridlib.tools import site

    folders = {p.name for p in RESULTS.iterdir() if p.is_dir()}
    assert folders == {*STUDY, *RECIPES, "cpu-bf16-vs-fp32"}
    assert set(site.GRIDS) == folders  # the website has a page for each


def _flags(column: pd.Series) -> list:
    """True / False per cell, None where there is no range yet (a single seed)."""
    return [None if pd.isna(v) else bool(v) for v in column]


def committed_runs(folder: str) -> pd.DataFrame:
    runs = results.read_runs(RESULTS / folder / "runs")
    assert len(runs), f"no runs committed in results/{folder}/runs"
    return runs


@pytest.mark.parametrize("folder", STUDY)
def test_committed_table_is_what_its_runs_regenerate(folder):
    table, recipe = STUDY[folder]
    prefix = table.replace("-", "_")
    runs = committed_runs(folder)
    assert (runs["status"] == "complete").all()
    assert set(runs["recipe"]) == {recipe}
    committed = pd.read_csv(RESULTS / folder / f"{prefix}_table.csv", index_col=[0, 1])
    regenerated = results.paper_table(runs, table)
    assert list(committed.index) == list(regenerated.index)
    assert committed["n_seeds"].tolist() == regenerated["n_seeds"].tolist()
    for column in ("mean", "std", "paper", "test_size", "se_test", "run_low", "run_high"):
        np.testing.assert_allclose(committed[column], regenerated[column], atol=1e-4)
    assert _flags(committed["paper_in_range"]) == _flags(regenerated["paper_in_range"])
    tests = pd.read_csv(RESULTS / folder / f"{prefix}_tests.csv")
    again = results.compare_pairs(runs, table)
    assert tests["verdict"].tolist() == again["verdict"].tolist()
    for column in ("p_value", "p_holm", "ci_low", "ci_high", "df", "mde", "se_test_a", "se_test_b"):
        np.testing.assert_allclose(tests[column], again[column], rtol=1e-4, atol=1e-4)
    # the Holm family is the whole table, and every verdict follows its Holm p
    np.testing.assert_allclose(tests["p_holm"], results.holm(tests["p_value"]), rtol=1e-4)
    assert (tests["verdict"].str.startswith("larger") == (tests["p_holm"] < 0.05)).all()
    assert "Holm p" in (RESULTS / folder / f"{prefix}_tests.md").read_text()


@pytest.mark.parametrize("folder", STUDY)
def test_committed_results_are_stamped(folder):
    table, _ = STUDY[folder]
    prefix = table.replace("-", "_")
    runs = committed_runs(folder)
    stamp = json.loads((RESULTS / folder / f"{prefix}_provenance.json").read_text())
    assert stamp["command"].startswith("python -m hybridlib results")
    assert stamp["devices"] and stamp["torch"] and stamp["git_commit"]
    assert stamp["seeds"] == sorted({int(s) for s in runs["seed"]})
    assert stamp["runs"] == len(runs)
    assert "Made by `python -m hybridlib" in (RESULTS / folder / f"{prefix}_table.md").read_text()
    for run_dir in runs["run_dir"]:  # each run says how it was made
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        assert summary["command"].startswith("python -m hybridlib")
        assert summary["hardware"]["device"] and summary["torch"]


# results folder -> the run folders `results --out` made it from (results/README.md)
SOURCES = {
    "paper-a": ("paper-a", ["paper-a"]),
    "paper-a-improved": ("paper-a", ["paper-a-improved"]),
    "paper-b": ("paper-b", ["paper-b"]),
    "improved-vs-paper": ("paper-a", ["paper-a", "paper-a-improved"]),
    "paper-a-cpu-bf16": ("paper-a", ["paper-a-cpu-bf16"]),
}
# the recipe comparison: results folder -> the run folders of (the paper's, the improved)
RECIPES = {"improved-vs-paper": ("paper-a", "paper-a-improved")}


def _without_stamp(text: str) -> str:
    """A markdown table's text without its provenance line (time, command, commit)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("Made by `"))


def _table_files(folder: Path) -> list[str]:
    """The files `write_tables` leaves in `folder`, without its lock file."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


@pytest.mark.parametrize("folder", SOURCES)
def test_results_command_rewrites_the_committed_tables_word_for_word(folder, tmp_path, capsys):
    table, sources = SOURCES[folder]
    runs = [str(RESULTS / source / "runs") for source in sources]
    out = tmp_path / folder
    assert cli.main(["results", *runs, "--table", table, "--out", str(out)]) == 0
    capsys.readouterr()
    committed = _table_files(RESULTS / folder)
    assert _table_files(out) == committed
    for name in committed:
        if name == "runs.csv":  # run folders named relative to where the tables are
            continue
        old, new = (RESULTS / folder / name).read_text(), (out / name).read_text()
        if name.endswith(".md"):
            assert _without_stamp(new) == _without_stamp(old), name
        elif name.endswith(".csv"):
            assert new == old, name
        else:  # the provenance stamp: the same runs, seeds and epochs
            old, new = json.loads(old), json.loads(new)
            for key in ("runs", "seeds", "epochs", "devices", "torch", "hybridlib"):
                assert new[key] == old[key], (name, key)


@pytest.mark.parametrize("folder", STUDY)
def test_committed_figures_cover_every_cell(folder):
    runs = committed_runs(folder)
    assert (FIGURES / folder / "table.png").stat().st_size > 10_000
    stamp = json.loads((FIGURES / folder / "provenance.json").read_text())
    assert stamp["command"].startswith("python -m hybridlib results")
    assert stamp["runs"] == len(runs) and stamp["devices"] and stamp["torch"]
    on_disk = {p.name for p in (FIGURES / folder).glob("*.png")}
    assert set(stamp["figures"]) == on_disk  # no stale figure from an earlier grid
    for dataset in set(runs["dataset"]):
        assert (FIGURES / folder / f"curves-{dataset}.png").stat().st_size > 10_000
        for model in set(runs.loc[runs["dataset"] == dataset, "model"]):
            assert (FIGURES / folder / f"confusion-{dataset}-{model}.png").is_file()


@pytest.mark.parametrize("folder", RECIPES)
def test_committed_recipe_comparison_is_what_the_runs_regenerate(folder):
    compared = pd.read_csv(RESULTS / folder / "paper_a_recipes.csv")
    regenerated = results.compare_recipes(
        [RESULTS / source / "runs" for source in RECIPES[folder]], "paper-a"
    )
    assert len(compared) == len(regenerated) > 0
    assert compared["model"].tolist() == regenerated["model"].tolist()
    assert compared["verdict"].tolist() == regenerated["verdict"].tolist()
    for side in ("precision_a", "precision_b"):
        assert compared[side].tolist() == regenerated[side].tolist()
    columns = ("mean_a", "mean_b", "p_value", "p_holm", "ci_low", "ci_high", "mde")
    for column in (*columns, "time_base_s", "time_other_s"):
        expected = regenerated[column].astype(float)
        np.testing.assert_allclose(compared[column], expected, rtol=1e-4, equal_nan=True)


def test_the_improved_cifar10_column_is_the_papers_split_in_bf16_and_the_tables_say_so():
    """The improved grid's CIFAR-10 column trains in bf16 (allowed once one cell agreed
    with fp32, `cpu-bf16-vs-fp32`), its other columns in fp32, and every table it is in
    says which precision each column or cell trained in."""
    runs = committed_runs("paper-a-improved")
    cifar = runs[runs["dataset"] == "cifar10"]
    assert set(cifar["train_size"]) == {45_000} and set(cifar["test_size"]) == {10_000}
    assert set(cifar["precision"]) == {"bf16"}
    assert set(runs.loc[runs["dataset"] != "cifar10", "precision"]) == {"fp32"}
    for run_dir in cifar["run_dir"]:
        config = json.loads((Path(run_dir) / "config.json").read_text())
        assert (config["batch_size"], config["epochs"], config["flip"]) == (16, 30, True)
        assert config["cpu_bf16"] and config["batch_norm"] and config["scheduler"] == "cosine"
    cells = results.paper_table(runs, "paper-a")
    assert (cells["n_seeds"] == 3).all() and len(cells) == 12  # every cell, three seeds
    table = (RESULTS / "paper-a-improved" / "paper_a_table.md").read_text()
    note = "Precision by data set: CIFAR-10 bf16; Caltech 101 fp32; Tiny ImageNet fp32."
    assert note in table
    compared = pd.read_csv(RESULTS / "improved-vs-paper" / "paper_a_recipes.csv")
    mixed = compared["dataset"] == "cifar10"
    assert set(compared.loc[mixed, "precision_a"]) == {"bf16"}
    assert set(compared.loc[~mixed, "precision_a"]) == set(compared["precision_b"]) == {"fp32"}
    recipes = (RESULTS / "improved-vs-paper" / "paper_a_recipes.md").read_text()
    assert "| precision (paper's, improved) |" in recipes
    assert f"In {mixed.sum()} of the {len(compared)} cells the two recipes trained in" in recipes
    assert len(compared) == compared["p_holm"].notna().sum() == 12  # one Holm family of 12
    precision = pd.read_csv(RESULTS / "cpu-bf16-vs-fp32" / "paper_a_precision.csv")
    assert precision["verdict"].tolist() == ["within seed noise"]  # the check it rests on


def test_results_readme_shows_the_committed_numbers():
    """The headline table in results/README.md is the committed one, cell by cell."""
    text = (RESULTS / "README.md").read_text()
    table = pd.read_csv(RESULTS / "paper-a" / "paper_a_table.csv", index_col=[0, 1])
    for (model, dataset), row in table.iterrows():
        if row["n_seeds"] > 1 and not math.isnan(row["std"]):
            assert f"{row['mean']:.1f} ± {row['std']:.1f} (n={row['n_seeds']})" in text, (
                model,
                dataset,
            )


def test_results_readme_states_paper_b_tests_as_committed():
    """Every comparison of paper B's grid is quoted in results/README.md
    with the committed difference and interval, and the README quotes its headline."""
    text = (RESULTS / "README.md").read_text().replace("\n  ", " ")
    tests = pd.read_csv(RESULTS / "paper-b" / "paper_b_tests.csv")
    for row in tests.itertuples():
        quoted = f"{row.diff:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
        assert quoted in text, (row.a, row.b, quoted)
    headline = tests[(tests["a"] == "yu_conv_lstm") & (tests["b"] == "yu_cnn")].iloc[0]
    readme = (REPO / "README.md").read_text().replace("\n  ", " ")
    assert (
        f"{-headline['diff']:.2f} [{headline['ci_low']:+.2f}, {headline['ci_high']:+.2f}]" in readme
    )


def test_results_readme_states_the_recipe_comparison_as_committed():
    """Each tested cell of the recipe comparison is quoted in
    results/README.md with its committed difference, interval and p, and the table
    there gives every cell's seed count as committed."""
    text = (RESULTS / "README.md").read_text().replace("\n  ", " ")
    compared = pd.read_csv(RESULTS / "improved-vs-paper" / "paper_a_recipes.csv")
    tested = compared.dropna(subset=["p_value"])
    assert len(tested)
    for row in tested.itertuples():
        assert (
            f"| {row.diff:+.1f} | [{row.ci_low:+.2f}, {row.ci_high:+.2f}] | {row.p_value:.3g} |"
            in text
        )
        assert f"{row.mean_a:.1f} ± {row.sd_a:.1f} (n={row.n_a})" in text


def test_every_cifar10_cell_is_the_papers_complete_split_and_cells_never_mix():
    """Every committed CIFAR-10 run trained on paper A's 45,000 and tested on the 10,000;
    what notebook 08 reads (everything under results/) never mixes precisions in a cell."""
    everything = results.read_runs(RESULTS)
    cifar = everything[everything["dataset"] == "cifar10"]
    assert set(cifar["train_size"]) == {45_000} and set(cifar["test_size"]) == {10_000}
    with pytest.raises(HybridError, match="different precisions"):  # the bf16 check's cell
        results.paper_table(everything, "paper-a")
    paper = results.one_split(everything)
    paper = paper[paper["recipe"] == "paper"]
    assert set(paper["precision"]) == {"fp32"}  # the bf16 check stays out of the tables
    table = results.paper_table(paper, "paper-a")
    assert (table["n_seeds"] == 3).all() and len(table) == 12  # every cell of Table I
    improved = results.one_split(everything)
    improved = improved[(improved["recipe"] == "improved") & (improved["dataset"] == "cifar10")]
    assert set(improved["precision"]) == {"bf16"}


def test_the_bf16_check_is_what_its_runs_regenerate_and_says_which_precision():
    bf16 = committed_runs("paper-a-cpu-bf16")
    assert set(bf16["precision"]) == {"bf16"} and set(bf16["dataset"]) == {"caltech101"}
    fp32 = results.read_runs(sorted((RESULTS / "paper-a" / "runs").glob("caltech101-cnn-s*")))
    assert set(fp32["precision"]) == {"fp32"} and len(fp32) == len(bf16) == 3
    assert "precision bf16." in (RESULTS / "paper-a-cpu-bf16" / "paper_a_table.md").read_text()
    committed = pd.read_csv(RESULTS / "cpu-bf16-vs-fp32" / "paper_a_precision.csv")
    again = results.compare_recipes(
        pd.concat([fp32, bf16]), "paper-a", column="precision", base="fp32", other="bf16"
    )
    assert committed["verdict"].tolist() == again["verdict"].tolist()
    for column in ("mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value", "mde"):
        np.testing.assert_allclose(committed[column], again[column], rtol=1e-4)
    stamp = json.loads(
        (RESULTS / "cpu-bf16-vs-fp32" / "paper_a_precision_provenance.json").read_text()
    )
    assert stamp["precision"] == ["bf16", "fp32"] and stamp["runs"] == 6


def test_paper_b_on_the_complete_data_runs_at_the_papers_stated_settings():
    runs = committed_runs("paper-b")
    assert set(runs["train_size"]) == {45_000} and set(runs["test_size"]) == {10_000}
    for run_dir, model in zip(runs["run_dir"], runs["model"], strict=True):
        config = json.loads((Path(run_dir) / "config.json").read_text())
        assert config["batch_size"] == 128 and config["flip"] is False  # crops only
        assert config["weight_decay"] == (5e-4 if model == "yu_cnn_nolrn" else 0.0)
    table = results.paper_table(runs, "paper-b")
    assert (table["n_seeds"] == 3).all() and len(table) == 5  # every cell of Table 1
    tests = pd.read_csv(RESULTS / "paper-b" / "paper_b_tests.csv")
    assert len(tests) == 4 and tests["p_holm"].notna().all()  # every comparison tested


@pytest.mark.parametrize(
    "folder, grid",
    [
        ("paper-a", dict(table="paper-a")),
        ("paper-b", dict(table="paper-b")),
        ("paper-a-improved", dict(table="paper-a", datasets=["caltech101", "tiny-imagenet"],
                                  recipe="improved")),
        ("paper-a-improved", dict(table="paper-a", datasets=["cifar10"], recipe="improved",
                                  cpu_bf16=True)),
    ],
)  # fmt: skip
def test_a_grid_continues_elsewhere_from_its_committed_runs(folder, grid, tmp_path):
    """Copied into a grid folder, the committed runs are the runs `reproduce` would
    train now, finished, so it skips them (results/README.md): the code's settings for
    these grids have not drifted since they ran."""
    import shutil

    from hybridlib.study import reproduce

    datasets = grid.get("datasets", results.TABLES[grid["table"]]["datasets"])
    committed = set()
    for run in (RESULTS / folder / "runs").iterdir():
        if json.loads((run / "config.json").read_text())["dataset"] in datasets:
            shutil.copytree(run, tmp_path / run.name)
            committed.add(run.name)
    configs = reproduce.grid_configs(**grid, seeds=3, out=tmp_path, device="cpu")
    statuses = {Path(c.out).name: reproduce._status(c) for c in configs}
    assert committed <= set(statuses)
    assert {name: statuses[name] for name in committed} == dict.fromkeys(committed, "complete")
    assert all(statuses[name] == "new" for name in set(statuses) - committed)


def test_the_improved_recipe_claim_is_what_the_recipe_comparison_shows():
    """README.md and results/README.md say the improved recipe beats every cell it was
    compared with, all its differences surviving Holm, and count them: the committed
    comparison must bear that out."""
    compared = pd.read_csv(RESULTS / "improved-vs-paper" / "paper_a_recipes.csv")
    tested = compared.dropna(subset=["p_value"])
    assert len(tested) and (tested["diff"] > 0).all()
    assert (tested["p_holm"] < 0.05).all()
    readme = (REPO / "README.md").read_text().replace("\n  ", " ")
    assert f"all {len(tested)} differences" in readme
    study = (RESULTS / "README.md").read_text().replace("\n  ", " ")
    assert f"all {len(tested)} recipe comparisons" in study

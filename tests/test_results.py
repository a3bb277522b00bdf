"""Results tables from run directories, the seed statistics, and the plots."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from scipy import stats

from hybridlib import plots
from hybridlib.config import RunConfig
from hybridlib.data import load_dataset
from hybridlib.errors import HybridError
from hybridlib.models import build_model
from hybridlib.study import figures, report, results
from hybridlib.tools import cli
from hybridlib.train import History


def make_run(
    root,
    model,
    dataset,
    seed,
    test_acc,
    *,
    status="complete",
    epochs=30,
    recipe="paper",
    train_size=None,
    train_time_s=60.0,
    test_size=None,
    cpu_bf16=False,
):
    """A run directory as `run_training` leaves it (without the checkpoint)."""
    run_dir = root / f"{dataset}-{model}-s{seed}"
    run_dir.mkdir(parents=True)
    config = RunConfig(
        model=model, dataset=dataset, seed=seed, epochs=epochs, recipe=recipe, cpu_bf16=cpu_bf16
    )
    config.to_json(run_dir / "config.json")
    history = History()
    for epoch in range(1, 4):
        history.append(
            {
                "epoch": epoch,
                "train_loss": 2.0 / epoch,
                "train_acc": 0.3 * epoch,
                "val_loss": 2.1 / epoch if epoch % 2 else float("nan"),
                "val_acc": 0.25 * epoch if epoch % 2 else float("nan"),
                "lr": 1e-4,
                "time_s": 1.0,
                "images_per_s": 100.0,
            }
        )
    history.to_frame().to_csv(run_dir / "metrics.csv", index=False)
    summary = {
        "status": status,
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "recipe": recipe,
        "epochs": epochs,
        "epochs_done": epochs,
        "test_acc": test_acc if status == "complete" else None,
        "device": "cpu (test)",
        "torch": torch.__version__,
        "train_time_s": train_time_s,
        "sizes": {"train": train_size} if train_size else None,
        "test_size": test_size,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    confusion = pd.DataFrame(np.eye(3, dtype=int) * 5, index=list("abc"), columns=list("abc"))
    confusion.to_csv(run_dir / "confusion.csv")
    return run_dir


# Test accuracies (fractions) for three seeds of each paper A cell.
ACCURACY = {
    ("cnn", "cifar10"): (0.80, 0.81, 0.79),
    ("cnn_lstm", "cifar10"): (0.70, 0.71, 0.69),
    ("cnn_lstm_skip", "cifar10"): (0.80, 0.82, 0.78),
    ("autoencoder", "cifar10"): (0.66, 0.67, 0.65),
}


@pytest.fixture()
def grid(tmp_path):
    root = tmp_path / "grid"
    for model in results.TABLES["paper-a"]["models"]:
        for dataset in results.TABLES["paper-a"]["datasets"]:
            values = ACCURACY.get((model, dataset), (0.5, 0.6, 0.7))
            for seed, value in enumerate(values):
                make_run(root, model, dataset, seed, value)
    make_run(root, "cnn", "cifar10", 9, None, status="interrupted")  # must be ignored
    return root


def test_read_runs_finds_every_run(grid):
    runs = results.read_runs(grid)
    assert len(runs) == 4 * 3 * 3 + 1
    assert list(runs.columns) == list(results.RUN_COLUMNS)
    assert (runs["status"] == "interrupted").sum() == 1


def test_paper_a_table_shape_and_paper_columns(grid):
    table = results.paper_table(grid, "paper-a")
    assert table.shape[0] == 12  # 4 models x 3 data sets
    assert list(table.index.names) == ["model", "dataset"]
    for column in ("n_seeds", "mean", "std", "paper", "diff", "seeds"):
        assert column in table.columns
    cell = table.loc[("cnn", "cifar10")]
    assert cell["n_seeds"] == 3  # the interrupted fourth run does not count
    assert cell["mean"] == pytest.approx(80.0)
    assert cell["std"] == pytest.approx(1.0)
    assert cell["paper"] == 80.0 and cell["diff"] == pytest.approx(0.0)
    assert table.loc[("cnn_lstm", "caltech101"), "paper"] == 78.0
    assert table.loc[("autoencoder", "tiny-imagenet"), "paper"] == 63.0
    assert table.loc[("cnn_lstm", "cifar10"), "diff"] == pytest.approx(-10.0)


def test_wide_table_is_models_by_datasets(grid):
    wide = results.wide_table(results.paper_table(grid, "paper-a"))
    assert wide.shape == (4, 9)  # per data set: ours, paper, diff
    assert list(wide.index) == ["CNN", "CNN + LSTM", "CNN + LSTM + skip", "Auto-encoder"]
    assert wide.loc["CNN", "CIFAR-10"] == "80.0 ± 1.0 (n=3)"
    assert wide.loc["CNN", "CIFAR-10 paper"] == "80"
    assert wide.loc["CNN + LSTM", "CIFAR-10 diff"] == "-10.0"


def test_table_datasets_default_to_those_with_runs(tmp_path):
    make_run(tmp_path, "cnn", "digits", 0, 0.9)
    table = results.paper_table(tmp_path, "paper-a")
    assert table.shape[0] == 4  # every paper model, one data set
    assert table.loc[("cnn", "digits"), "n_seeds"] == 1
    assert np.isnan(table.loc[("cnn", "digits"), "paper"])
    assert table.loc[("cnn_lstm", "digits"), "n_seeds"] == 0


def test_welch_t_test_between_compared_models(grid):
    tests = results.compare_pairs(grid, "paper-a")
    assert len(tests) == 4 * 3  # four pairs on three data sets
    row = tests[(tests["dataset"] == "cifar10") & (tests["a"] == "cnn_lstm")].iloc[0]
    expected = stats.ttest_ind(
        np.array(ACCURACY[("cnn_lstm", "cifar10")]) * 100,
        np.array(ACCURACY[("cnn", "cifar10")]) * 100,
        equal_var=False,
    )
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["diff"] == pytest.approx(-10.0) and row["paper_diff"] == 0.0
    assert row["verdict"].startswith("larger than seed noise")
    cifar = tests[tests["dataset"] == "cifar10"].set_index(["a", "b"])
    assert cifar.loc[("cnn_lstm_skip", "cnn"), "verdict"] == "within seed noise"  # 80 vs 80
    assert cifar.loc[("cnn_lstm_skip", "cnn_lstm"), "diff"] == pytest.approx(10.0)
    assert set(tests["verdict"]) <= {
        "larger than seed noise (Holm p < 0.05)",
        "within seed noise",
        "identical runs",
    }


def test_welch_interval_is_the_hand_computation():
    a, b = np.array([70.0, 71.5, 69.0, 72.0]), np.array([66.0, 68.5, 67.0])
    low, high, df = results.welch_interval(a, b)
    v_a, v_b = a.var(ddof=1) / 4, b.var(ddof=1) / 3
    expected_df = (v_a + v_b) ** 2 / (v_a**2 / 3 + v_b**2 / 2)
    half = stats.t.ppf(0.975, expected_df) * np.sqrt(v_a + v_b)
    diff = a.mean() - b.mean()
    assert df == pytest.approx(expected_df)
    assert (low, high) == pytest.approx((diff - half, diff + half))
    scipy_ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((scipy_ci.low, scipy_ci.high))
    assert np.isnan(results.welch_interval([1.0], [2.0, 3.0])[0])


def test_holm_on_a_known_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04)
    adjusted = results.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # a NaN is not a member of the family; adjusted p never exceeds 1
    adjusted = results.holm([0.2, np.nan, 0.6])
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.4, 0.6])
    np.testing.assert_allclose(results.holm([0.5, 0.9]), [1.0, 1.0])


def test_minimum_detectable_effect():
    mde = results.minimum_detectable_effect(1.0, 3)
    # by definition: at that difference the t-test (df = 4) rejects with 80 % power
    df, crit = 4, stats.t.ppf(0.975, 4)
    nc = mde / np.sqrt(2 / 3)
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=1e-6)
    # close to, and a little above, the normal approximation with t quantiles
    approx = (crit + stats.t.ppf(0.8, df)) * np.sqrt(2 / 3)
    assert approx < mde < 1.05 * approx
    # linear in the sd, smaller with more seeds
    assert results.minimum_detectable_effect(2.0, 3) == pytest.approx(2 * mde)
    values = [results.minimum_detectable_effect(1.0, n) for n in (2, 3, 5, 10, 30)]
    assert all(x > y for x, y in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(2.8 * np.sqrt(2 / 30), rel=0.05)  # ~ (1.96 + 0.84)
    assert np.isnan(results.minimum_detectable_effect(1.0, 1))


def test_binomial_standard_error_of_one_run():
    assert results.binomial_se(90.0, 676) == pytest.approx(100 * np.sqrt(0.9 * 0.1 / 676))
    assert results.binomial_se(50.0, 10_000) == pytest.approx(0.5)
    assert np.isnan(results.binomial_se(90.0, float("nan")))


def test_one_run_range():
    low, high = results.one_run_range(60.0, 1.0, 3, 0.0)
    half = stats.t.ppf(0.975, 2) * np.sqrt(1 + 1 / 3)  # seed noise only: t with n - 1 df
    assert (low, high) == pytest.approx((60 - half, 60 + half))
    low, high = results.one_run_range(60.0, 0.0, 3, 1.0)  # test-set noise only: normal
    assert high - 60 == pytest.approx(stats.norm.ppf(0.975) * np.sqrt(2))
    wider = results.one_run_range(60.0, 1.0, 3, 1.0)
    assert wider[1] - wider[0] > high - low


def test_compare_pairs_gives_interval_holm_mde_and_test_noise(tmp_path):
    values = {
        ("cnn", "cifar10"): (0.80, 0.81, 0.79),
        ("cnn_lstm", "cifar10"): (0.70, 0.72, 0.69),
        ("cnn_lstm_skip", "cifar10"): (0.79, 0.83, 0.78),
        ("autoencoder", "cifar10"): (0.76, 0.79, 0.80),
    }
    for (model, dataset), accuracies in values.items():
        for seed, value in enumerate(accuracies):
            make_run(tmp_path, model, dataset, seed, value, test_size=3_000)
    tests = results.compare_pairs(tmp_path, "paper-a")
    assert len(tests) == 4
    np.testing.assert_allclose(tests["p_holm"], results.holm(tests["p_value"]))
    assert (tests["p_holm"] >= tests["p_value"]).all()
    for _, row in tests.iterrows():
        a = np.array(values[(row["a"], "cifar10")]) * 100
        b = np.array(values[(row["b"], "cifar10")]) * 100
        assert (row["ci_low"], row["ci_high"], row["df"]) == pytest.approx(
            results.welch_interval(a, b)
        )
        assert row["ci_low"] < row["diff"] < row["ci_high"]
        sd = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)  # equal n: the mean variance
        assert row["sd_pooled"] == pytest.approx(sd)
        assert row["mde"] == pytest.approx(results.minimum_detectable_effect(sd, 3, 3))
        assert row["se_test_a"] == pytest.approx(
            100 * np.sqrt(a.mean() / 100 * (1 - a.mean() / 100) / 3_000)
        )
        holm_significant = row["p_holm"] < 0.05
        assert row["verdict"].startswith("larger than seed noise") == holm_significant
    # the interval excludes 0 exactly where Welch's p < 0.05
    excludes = (tests["ci_low"] > 0) | (tests["ci_high"] < 0)
    assert excludes.tolist() == (tests["p_value"] < 0.05).tolist()
    # one that is significant alone but not after Holm: the verdict follows Holm
    lonely = tests[(tests["p_value"] < 0.05) & (tests["p_holm"] >= 0.05)]
    assert (lonely["verdict"] == "within seed noise").all()
    table = results.paper_table(tmp_path, "paper-a")
    cell = table.loc[("cnn", "cifar10")]
    assert cell["test_size"] == 3_000
    assert cell["se_test"] == pytest.approx(100 * np.sqrt(0.8 * 0.2 / 3_000))
    assert (cell["run_low"], cell["run_high"]) == pytest.approx(
        results.one_run_range(80.0, 1.0, 3, cell["se_test"])
    )
    assert cell["paper_in_range"]  # paper A: 80 %
    assert not table.loc[("cnn_lstm", "cifar10"), "paper_in_range"]  # ours 70.3, paper 80


def test_one_seed_is_not_enough_for_a_test(tmp_path):
    make_run(tmp_path, "cnn", "cifar10", 0, 0.8)
    make_run(tmp_path, "cnn_lstm", "cifar10", 0, 0.7)
    tests = results.compare_pairs(tmp_path, "paper-a")
    assert tests.iloc[0]["verdict"] == "needs >= 2 seeds per model"
    assert np.isnan(tests.iloc[0]["p_value"])


def test_paper_b_table(tmp_path):
    for seed in range(2):
        for model in results.TABLES["paper-b"]["models"]:
            make_run(tmp_path, model, "cifar10", seed, 0.5 + 0.01 * seed)
    table = results.paper_table(tmp_path, "paper-b")
    assert table.shape[0] == 5
    assert table.loc[("yu_conv_lstm", "cifar10"), "paper"] == 78.0
    assert table.loc[("row_gru", "cifar10"), "paper"] == 46.0
    assert results.wide_table(table).shape == (5, 3)


def test_mixed_recipes_are_kept_apart(tmp_path):
    make_run(tmp_path / "a", "cnn", "cifar10", 0, 0.8)
    make_run(tmp_path / "b", "cnn", "cifar10", 0, 0.9, recipe="improved")
    table = results.paper_table([tmp_path / "a", tmp_path / "b"], "paper-a")
    assert list(table.index.names) == ["recipe", "model", "dataset"]
    assert table.loc[("improved", "cnn", "cifar10"), "mean"] == pytest.approx(90.0)


def test_a_smaller_training_split_is_labelled_a_subset(tmp_path):
    for seed in range(2):
        make_run(tmp_path, "cnn", "cifar10", seed, 0.6, train_size=9_000)
        make_run(tmp_path, "cnn", "caltech101", seed, 0.9, train_size=2_432)
    wide = results.wide_table(results.paper_table(tmp_path, "paper-a"))
    assert "CIFAR-10 (subset, 9,000 train)" in wide.columns
    assert "Caltech 101" in wide.columns  # the paper's full split: no note
    assert results.dataset_label("cifar10", 45_000) == "CIFAR-10"
    assert results.dataset_label("digits", 100) == "digits"


def test_a_cell_never_mixes_two_splits(tmp_path):
    # a grid on a 9,000-image subset beside one on the complete data: two experiments
    for seed in range(2):
        make_run(tmp_path / "subset", "cnn", "cifar10", seed, 0.56, train_size=9_000)
        make_run(tmp_path / "full", "cnn", "cifar10", seed, 0.75, train_size=45_000)
        make_run(tmp_path / "full", "cnn_lstm", "cifar10", seed, 0.74, train_size=45_000)
        make_run(tmp_path / "imp", "cnn", "cifar10", seed, 0.70, train_size=9_000,
                 recipe="improved")  # fmt: skip
    folders = [tmp_path / "subset", tmp_path / "full"]
    for table in (results.paper_table, results.compare_pairs):
        with pytest.raises(HybridError, match="9,000 and 45,000 training images"):
            table(folders, "paper-a")
    with pytest.raises(HybridError, match="different splits"):
        results.compare_recipes([tmp_path / "full", tmp_path / "imp"], "paper-a")
    everything = results.read_runs([*folders, tmp_path / "imp"])
    largest = results.one_split(everything)
    paper = largest[largest["recipe"] == "paper"]
    assert set(paper["train_size"]) == {45_000} and len(paper) == 4
    assert set(largest.loc[largest["recipe"] == "improved", "train_size"]) == {9_000}
    assert results.paper_table(paper, "paper-a").loc[("cnn", "cifar10"), "mean"] == 75.0
    common = results.one_split(everything, common=True)  # the size both recipes have
    assert set(common["train_size"]) == {9_000} and len(common) == 4
    compared = results.compare_recipes(common, "paper-a").set_index("model")
    assert compared.loc["cnn", "diff"] == pytest.approx(14.0)


def test_a_cell_never_mixes_two_precisions_and_precisions_compare_like_recipes(tmp_path):
    for seed, (fp32, bf16) in enumerate([(0.90, 0.91), (0.89, 0.90), (0.91, 0.90)]):
        make_run(tmp_path / "fp32", "cnn", "caltech101", seed, fp32)
        make_run(tmp_path / "bf16", "cnn", "caltech101", seed, bf16, cpu_bf16=True)
    both = results.read_runs([tmp_path / "fp32", tmp_path / "bf16"])
    assert sorted(set(both["precision"])) == ["bf16", "fp32"]
    with pytest.raises(HybridError, match=r"different precisions \(bf16 and fp32\)"):
        results.paper_table(both, "paper-a")
    compared = results.compare_recipes(both, "paper-a", column="precision", base="fp32",
                                       other="bf16")  # fmt: skip
    row = compared.iloc[0]
    assert (row["n_a"], row["n_b"]) == (3, 3) and row["diff"] == pytest.approx(1 / 3)
    expected = stats.ttest_ind([91, 90, 90], [90, 89, 91], equal_var=False)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    kept = results.one_split(both)  # one precision per cell: fp32 where there is one
    assert set(kept["precision"]) == {"fp32"} and len(kept) == 3
    assert set(results.one_split(both, precision="bf16")["precision"]) == {"bf16"}
    stamp = results.provenance(both)
    assert stamp["precision"] == ["bf16", "fp32"]
    assert "precision bf16, fp32." in report.provenance_text(stamp)


def test_results_compare_precision_writes_the_cell_by_cell_comparison(tmp_path, capsys):
    for seed, (fp32, bf16) in enumerate([(0.90, 0.91), (0.89, 0.90), (0.91, 0.90)]):
        make_run(tmp_path / "fp32", "cnn", "caltech101", seed, fp32)
        make_run(tmp_path / "bf16", "cnn", "caltech101", seed, bf16, cpu_bf16=True)
    out = tmp_path / "out"
    folders = [str(tmp_path / "fp32"), str(tmp_path / "bf16")]
    args = ["results", *folders, "--table", "paper-a", "--compare", "precision"]
    assert cli.main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "paper_a_precision.csv")
    assert table.loc[0, "diff"] == pytest.approx(1 / 3) and table.loc[0, "n_a"] == 3
    text = (out / "paper_a_precision.md").read_text()
    assert "bf16 against fp32 runs" in text and "diff = bf16 - fp32" in text
    assert "| data set | fp32 | bf16 | diff |" in text
    assert "precision bf16, fp32" in text and "within seed noise" in printed
    assert cli.main(args) == 2  # --out is needed
    assert "add --table paper-a and --out DIR" in capsys.readouterr().err
    only_fp32 = ["results", folders[0], "--table", "paper-a", "--compare", "precision"]
    assert cli.main([*only_fp32, "--out", str(out)]) == 2
    assert "no cell has runs with both fp32 and bf16" in capsys.readouterr().err


def recipe_grid(root):
    """cnn on cifar10 with both recipes (improved clearly better, twice as slow), and
    cnn_lstm with both recipes equal within noise."""
    for seed, (paper, improved) in enumerate([(0.60, 0.70), (0.62, 0.71), (0.61, 0.72)]):
        make_run(root / "paper", "cnn", "cifar10", seed, paper, train_time_s=100.0)
        make_run(root / "improved", "cnn", "cifar10", seed, improved, recipe="improved",
                 train_time_s=200.0)  # fmt: skip
    for seed, value in enumerate([0.50, 0.55, 0.45]):
        make_run(root / "paper", "cnn_lstm", "cifar10", seed, value)
        make_run(root / "improved", "cnn_lstm", "cifar10", seed, value + 0.001, recipe="improved")
    return [root / "paper", root / "improved"]


def test_compare_recipes(tmp_path):
    compared = results.compare_recipes(recipe_grid(tmp_path), "paper-a").set_index("model")
    cnn = compared.loc["cnn"]
    assert (cnn["n_a"], cnn["n_b"]) == (3, 3)
    assert cnn["mean_a"] == pytest.approx(71.0) and cnn["mean_b"] == pytest.approx(61.0)
    expected = stats.ttest_ind([70, 71, 72], [60, 62, 61], equal_var=False)
    assert cnn["p_value"] == pytest.approx(expected.pvalue)
    ci = expected.confidence_interval(0.95)
    assert (cnn["ci_low"], cnn["ci_high"]) == pytest.approx((ci.low, ci.high))
    np.testing.assert_allclose(compared["p_holm"], results.holm(compared["p_value"]))
    assert cnn["mde"] == pytest.approx(results.minimum_detectable_effect(1.0, 3))
    assert bool(cnn["beats_base"]) and not bool(cnn["beats_paper"])  # paper A: 80 %
    assert (cnn["time_base_s"], cnn["time_other_s"]) == (100.0, 200.0)
    lstm = compared.loc["cnn_lstm"]
    assert not bool(lstm["beats_base"]) and lstm["verdict"] == "within seed noise"


def test_compare_pairs_stays_within_a_recipe(tmp_path):
    tests = results.compare_pairs(recipe_grid(tmp_path), "paper-a")
    assert list(tests["recipe"].unique()) == ["improved", "paper"]
    pair = tests.set_index(["recipe", "a", "b"]).loc[("paper", "cnn_lstm", "cnn")]
    assert pair["mean_b"] == pytest.approx(61.0) and pair["n_b"] == 3


def test_write_tables_with_both_recipes(tmp_path):
    paths = results.write_tables(recipe_grid(tmp_path), tmp_path / "out", "paper-a")
    compared = pd.read_csv(paths["recipes_csv"])
    assert set(compared["model"]) == {"cnn", "cnn_lstm"}
    text = paths["recipes_md"].read_text()
    assert "| CNN | CIFAR-10 | 61.0 (n=3) | 71.0 (n=3) | +10.0 |" in text
    assert "higher in 2 of 2 cells" in text
    # cnn: 100 s and 200 s per run; cnn_lstm: 60 s per run with each recipe
    assert "80 s (paper's) and 130 s (improved), 1.62x" in text
    assert "| paper's recipe (ours, fp32) | improved (fp32) |" in text
    assert "different precisions" not in text


def test_the_recipes_note_counts_only_the_tested_cells_in_the_holm_family(tmp_path):
    folders = recipe_grid(tmp_path)
    text = results.write_tables(folders, tmp_path / "out", "paper-a")["recipes_md"].read_text()
    assert "Holm p: adjusted over the family of all 2 cells of this table," in text
    for seed in range(3):  # a third cell, with one improved seed so far: untested
        make_run(tmp_path / "paper", "cnn_lstm_skip", "cifar10", seed, 0.6)
    make_run(tmp_path / "improved", "cnn_lstm_skip", "cifar10", 0, 0.7, recipe="improved")
    text = results.write_tables(folders, tmp_path / "out", "paper-a")["recipes_md"].read_text()
    assert "family of the 2 cells of this table with 2 seeds or more a side," in text
    assert "| CNN + LSTM + skip | CIFAR-10 | 60.0 (n=3) | 70.0 (n=1) |" in text


def test_recipes_compare_across_precisions_only_one_precision_a_side(tmp_path):
    """An improved grid in bf16 against the paper's recipe in fp32: the comparison runs
    and says which precision each side trained in; a side that mixes them is refused."""
    for seed, (paper, improved) in enumerate([(0.74, 0.80), (0.75, 0.81), (0.745, 0.805)]):
        make_run(tmp_path / "paper", "cnn", "cifar10", seed, paper, train_size=45_000)
        make_run(tmp_path / "improved", "cnn", "cifar10", seed, improved, recipe="improved",
                 train_size=45_000, cpu_bf16=True)  # fmt: skip
    folders = [tmp_path / "paper", tmp_path / "improved"]
    row = results.compare_recipes(folders, "paper-a").iloc[0]
    assert (row["precision_a"], row["precision_b"]) == ("bf16", "fp32")
    assert row["diff"] == pytest.approx(6.0)
    paths = results.write_tables(folders, tmp_path / "out", "paper-a")
    text = paths["recipes_md"].read_text()
    assert "| paper's recipe (ours, fp32) | improved (bf16) |" in text
    assert "different precisions (paper's recipe fp32, improved bf16)" in text
    # an fp32 seed among the bf16 ones
    make_run(tmp_path / "improved", "cnn", "cifar10", 3, 0.80, recipe="improved", train_size=45_000)
    with pytest.raises(
        HybridError, match=r"cnn on cifar10 \(improved recipe\) .* \(bf16 and fp32\)"
    ):
        results.compare_recipes(folders, "paper-a")
    make_run(tmp_path / "subset", "cnn", "cifar10", 0, 0.70, recipe="improved",
             train_size=9_000, cpu_bf16=True)  # fmt: skip
    with pytest.raises(HybridError, match="different splits"):  # equal data, always
        results.compare_recipes([tmp_path / "paper", tmp_path / "subset"], "paper-a")


def test_a_grid_in_two_precisions_says_which_cell_trained_in_which(tmp_path):
    """One data set in bf16, another in fp32 (each cell one precision): the table says
    the precision by data set, and the recipe comparison gives it cell by cell."""
    for seed in range(3):
        for dataset, paper, improved, bf16 in [
            ("cifar10", 0.74, 0.80, True),
            ("caltech101", 0.90, 0.97, False),
        ]:
            make_run(
                tmp_path / "paper", "cnn", dataset, seed, paper + seed / 200, train_size=45_000
            )
            make_run(tmp_path / "improved", "cnn", dataset, seed, improved + seed / 200,
                     recipe="improved", train_size=45_000, cpu_bf16=bf16)  # fmt: skip
    paths = results.write_tables(tmp_path / "improved", tmp_path / "alone", "paper-a")
    assert "Precision by data set: CIFAR-10 bf16; Caltech 101 fp32.\n" in (
        paths["table_md"].read_text()
    )
    paper = results.write_tables(tmp_path / "paper", tmp_path / "paper-only", "paper-a")
    assert "Precision by data set" not in paper["table_md"].read_text()  # one precision
    both = [tmp_path / "paper", tmp_path / "improved"]
    text = results.write_tables(both, tmp_path / "both", "paper-a")["recipes_md"].read_text()
    assert "| paper's recipe (ours) | improved | precision (paper's, improved) | diff |" in text
    assert "| CNN | CIFAR-10 | 74.5 (n=3) | 80.5 (n=3) | fp32, bf16 | +6.0 |" in text
    assert "| CNN | Caltech 101 | 90.5 (n=3) | 97.5 (n=3) | fp32, fp32 | +7.0 |" in text
    assert "In 1 of the 2 cells the two recipes trained in different precisions" in text


def test_results_cli_copies_runs_and_draws_figures(grid, tmp_path, capsys):
    for run_dir in grid.glob("cifar10-*-s0"):
        (run_dir / "checkpoint.pt").write_bytes(b"weights")
    out, figures = tmp_path / "published", tmp_path / "figures"
    argv = ["results", str(grid), "--table", "paper-a", "--out", str(out), "--copy-runs"]
    assert cli.main([*argv, "--figures", str(figures)]) == 0
    assert "copied 36 finished runs" in capsys.readouterr().out
    copied = sorted((out / "runs").iterdir())
    assert len(copied) == 36 and not list((out / "runs").rglob("checkpoint.pt"))
    assert (out / "runs" / "cifar10-cnn-s0" / "metrics.csv").is_file()
    runs_csv = pd.read_csv(out / "runs.csv")
    assert runs_csv["run_dir"].str.startswith("runs/").all()  # portable: relative to out
    # the copies alone make the same table as the originals
    before = results.paper_table(grid, "paper-a")
    after = pd.read_csv(out / "paper_a_table.csv", index_col=[0, 1])
    assert np.allclose(after["mean"], before["mean"]) and (after["n_seeds"] == 3).all()
    names = {p.name for p in figures.iterdir()}
    assert {"curves-cifar10.png", "confusion-cifar10-cnn_lstm_skip.png", "table.png"} <= names
    stamp = json.loads((figures / "provenance.json").read_text())
    assert stamp["command"].startswith("python -m hybridlib") and stamp["seeds"] == [0, 1, 2]
    assert set(stamp["figures"]) == names - {"provenance.json"}
    assert cli.main(["results", str(grid), "--table", "paper-a", "--copy-runs"]) == 2
    assert "add --out" in capsys.readouterr().err


def test_copy_runs_adds_a_grids_runs_to_its_copies_and_refuses_two_sources(grid, tmp_path):
    """The grid beside its own copies is one set of runs (the grid's replace the copies);
    two different grids with a run of one name are ambiguous."""
    dest = tmp_path / "published" / "runs"
    results.copy_runs(sorted(grid.glob("cifar10-*")), dest)
    (dest / "cifar10-cnn-s0" / "metrics.csv").write_text("stale")
    copied = results.copy_runs([grid, dest], dest)
    assert len(copied) == 36 and len({p.name for p in copied}) == 36
    assert (dest / "cifar10-cnn-s0" / "metrics.csv").read_text() != "stale"
    other = tmp_path / "other"
    shutil.copytree(grid / "cifar10-cnn-s0", other / "cifar10-cnn-s0")
    with pytest.raises(HybridError, match="several runs are named cifar10-cnn-s0"):
        results.copy_runs([grid, other], dest)


def test_write_tables(grid, tmp_path):
    paths = results.write_tables(grid, tmp_path / "out", "paper-a", command="python -m x")
    for path in paths.values():
        assert path.is_file(), path
    markdown = paths["table_md"].read_text()
    assert "| model | CIFAR-10 | CIFAR-10 paper | CIFAR-10 diff |" in markdown
    assert "`python -m x`" in markdown and "seeds [0, 1, 2]" in markdown
    long = pd.read_csv(paths["table_csv"], index_col=[0, 1])
    assert long.shape[0] == 12
    assert json.loads(paths["provenance"].read_text())["runs"] == 36
    tests = pd.read_csv(paths["tests_csv"])
    p_value = tests["p_value"].dropna().iloc[0]
    assert f"| {p_value:.3g} |" in paths["tests_md"].read_text()  # three significant digits


def test_to_markdown():
    frame = pd.DataFrame({"a": [1.234, float("nan")], "b": ["x|y", "z"]})
    text = results.to_markdown(frame, index=False, floatfmt=".1f")
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| 1.2 | x\\|y |", "| - | z |"]


def test_cli_results(grid, capsys):
    assert cli.main(["results", str(grid), "--table", "paper-a"]) == 0
    out = capsys.readouterr().out
    assert "CNN + LSTM + skip" in out and "Welch" in out
    assert cli.main(["results", str(grid), "--markdown"]) == 0
    assert "| status |" in capsys.readouterr().out


def test_cli_results_stops_quietly_when_the_reader_goes_away(grid):
    """`hybridlib results ... | head`: no traceback when the pipe closes early."""
    import os
    import subprocess
    import sys

    command = f"{sys.executable} -m hybridlib results {grid} --table paper-a | true"
    # as a user's shell: stdout block-buffered, so the failed write comes at the end
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True,
                          text=True, timeout=120, env=env)  # fmt: skip
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141


def test_cli_results_without_runs(tmp_path, capsys):
    assert cli.main(["results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run directories found" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["results", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- plots


def test_plot_curves(grid, tmp_path):
    run_dirs = sorted(grid.glob("cifar10-cnn-s[012]"))
    fig = plots.plot_curves({"CNN": run_dirs, "one": run_dirs[0]}, save=tmp_path / "c.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    loss_cnn, acc_cnn, loss_one, acc_one = fig.axes  # rows compared on one scale per column
    assert loss_cnn.get_ylim() == loss_one.get_ylim() and acc_cnn.get_ylim() == acc_one.get_ylim()
    assert (tmp_path / "c.png").stat().st_size > 0
    history = History.from_frame(pd.read_csv(run_dirs[0] / "metrics.csv"))
    assert len(plots.plot_curves(history).axes) == 2


def test_plot_table_draws_a_panel_per_data_set(grid, tmp_path):
    fig = figures.plot_table(grid, "paper-a", save=tmp_path / "t.png")
    assert [ax.get_title() for ax in fig.axes] == ["CIFAR-10", "Caltech 101", "Tiny ImageNet"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "CNN"
    assert (tmp_path / "t.png").stat().st_size > 0
    assert fig._suptitle.get_text() == "Paper A, Table I: test accuracy (%)"
    improved = results.read_runs(recipe_grid(tmp_path / "recipes"))
    fig = figures.plot_table(improved[improved["recipe"] == "improved"], "paper-a")
    assert fig._suptitle.get_text().endswith("(%), improved recipe")
    make_run(tmp_path / "unfinished", "cnn", "cifar10", 0, None, status="interrupted")
    with pytest.raises(ValueError, match="no finished runs"):
        figures.plot_table(tmp_path / "unfinished")


def test_plot_accuracy_table_draws_what_it_is_given(tmp_path):
    """The core drawing: cells and seeds as plain frames, no run folders."""
    cells = pd.DataFrame(
        {
            "model": ["a", "b", "a"],
            "dataset": ["x", "x", "y"],
            "n_seeds": [2, 1, 2],
            "mean": [50.0, 60.0, 70.0],
            "std": [1.0, float("nan"), 2.0],
            "paper": [55.0, float("nan"), 72.0],
        }
    )
    seeds = pd.DataFrame(
        {"model": ["a", "a", "b", "a", "a"], "dataset": ["x", "x", "x", "y", "y"],
         "accuracy": [49.0, 51.0, 60.0, 68.0, 72.0]}
    )  # fmt: skip
    fig = plots.plot_accuracy_table(
        cells, seeds, names={"a": "Model A"}, panel_titles={"x": "X set"}, title="T",
        save=tmp_path / "a.png",
    )  # fmt: skip
    assert [ax.get_title() for ax in fig.axes] == ["X set", "y"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["Model A", "b"]
    assert fig._suptitle.get_text() == "T" and (tmp_path / "a.png").stat().st_size > 0
    scatters = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert sorted(scatters[0].get_offsets()[:, 1].tolist()) == [49.0, 51.0]  # a's seeds on x
    assert scatters[1].get_offsets()[:, 1].tolist() == [55.0]  # the paper's diamond
    with pytest.raises(ValueError, match="no cells"):
        plots.plot_accuracy_table(cells.iloc[:0], seeds)


def test_plot_samples_and_class_counts(tmp_path):
    bundle = load_dataset("digits", limit=200)
    fig = plots.plot_samples(bundle, per_class=3, save=tmp_path / "s.png")
    assert len(fig.axes) == bundle.num_classes * 3
    assert fig.axes[0].get_ylabel() == bundle.classes[0]
    fig = plots.plot_class_counts({"digits": bundle}, save=tmp_path / "c.png")
    bars = fig.axes[0].containers  # one stacked bar series per split
    assert len(bars) == 3
    train_counts = [int(rect.get_width()) for rect in bars[0]]
    assert train_counts == list(bundle.class_counts("train"))
    assert (tmp_path / "s.png").is_file() and (tmp_path / "c.png").is_file()


def test_plot_confusion_has_class_names(tmp_path):
    matrix = torch.tensor([[5, 1], [2, 7]])
    fig = plots.plot_confusion(matrix, ["cat", "dog"], save=tmp_path / "m.png")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["cat", "dog"]
    assert "80.0%" in fig.axes[0].get_title()  # 12 of 15
    assert (tmp_path / "m.png").is_file()
    assert isinstance(plots.plot_confusion(matrix, ["cat", "dog"], normalize=True), Figure)


def test_plot_predictions_and_reconstructions(tmp_path):
    bundle = load_dataset("digits", tmp_path / "data", limit=20)
    images, targets = bundle.tensors("test")
    fig = plots.plot_predictions(images, targets, targets.flip(0), bundle.classes, n=8)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 8
    model = build_model("autoencoder", bundle.num_classes)
    fig = plots.plot_reconstructions(model, bundle, n=4, save=tmp_path / "r.png")
    assert len(fig.axes) == 8 and (tmp_path / "r.png").is_file()

"""The study's findings text says what its tables say, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from hybridlib.study import findings

ROOT = Path(__file__).resolve().parents[1]


def _pairs(**changes):
    row = {
        "dataset": "cifar10", "a": "cnn_lstm", "b": "cnn", "n_a": 3, "n_b": 3,
        "mean_a": 60.0, "mean_b": 62.0, "diff": -2.0, "ci_low": -3.5, "ci_high": -0.5,
        "p_holm": 0.24, "mde": 1.9,
    }  # fmt: skip
    row.update(changes)
    return pd.DataFrame([row])


def test_a_difference_is_real_only_after_holm():
    text = findings.findings_markdown(_pairs(p_holm=0.01))
    assert "larger than seed noise" in text and "1 of 1 tested comparisons" in text
    text = findings.findings_markdown(_pairs())
    assert "within seed noise" in text and "0 of 1 tested comparisons" in text
    assert "excludes zero" in text  # the unadjusted interval does, Holm does not
    assert "excludes zero" not in findings.findings_markdown(_pairs(ci_low=-3.5, ci_high=0.5))


def test_the_text_states_the_excluded_effect_sizes_and_the_mde():
    text = findings.findings_markdown(_pairs(ci_low=-4.25, ci_high=2.75, mde=3.3))
    assert "from -4.2 to +2.8 points open" in text or "from -4.3 to +2.8 points open" in text
    assert "about 3.3 points or more" in text


def test_every_number_comes_from_the_committed_tables():
    tests = pd.read_csv(ROOT / "results" / "paper-a" / "paper_a_tests.csv")
    recipes = pd.read_csv(ROOT / "results" / "improved-vs-paper" / "paper_a_recipes.csv")
    text = findings.findings_markdown(tests, recipes)
    allowed = set()
    for frame in (tests, recipes):
        for value in frame.select_dtypes("number").to_numpy().ravel():
            for digits in (0, 1, 2, 3):
                allowed.add(f"{abs(value):.{digits}f}")
    allowed |= {str(n) for n in range(0, 13)} | {"95", "0.05"}
    numbers = re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text)
    unexplained = [n for n in numbers if n not in allowed]
    assert not unexplained, unexplained
    tested = int(recipes["p_value"].notna().sum())  # a cell with one seed a side: untested
    assert f"of the {tested} tested exceed seed noise" in text


def test_per_class_names_the_hardest_classes():
    recall = {"caltech101": pd.DataFrame({"cnn": [0.9, 0.3, 1.0], "cnn_lstm": [0.8, 0.5, 0.96]},
                                         index=["airplanes", "ant", "faces"])}  # fmt: skip
    text = findings.findings_markdown(_pairs(), recall=recall, labels={"caltech101": "Caltech"})
    assert "**Caltech, per class**: lowest mean recall over the models: ant (40%)" in text
    assert "highest: faces (98%)" in text


def test_a_comparison_with_one_seed_a_side_is_not_called_within_noise():
    """A cell with one seed has no test: the text says so instead of 'within seed noise'."""
    one = _pairs(n_a=1, p_holm=float("nan"), ci_low=float("nan"), ci_high=float("nan"))
    text = findings.findings_markdown(pd.concat([one, _pairs(a="autoencoder")]))
    assert "0 of 1 tested comparisons exceed seed noise (1 not testable yet)" in text
    assert "-2.0 points from 1 and 3 seeds: not tested" in text
    assert text.count("within seed noise") == 1  # the tested pair only
    recipes = pd.DataFrame([
        {"model": "cnn", "dataset": "cifar10", "n_a": 1, "n_b": 3, "diff": 6.5, "p_holm": None},
        {"model": "cnn", "dataset": "caltech101", "n_a": 3, "n_b": 3, "diff": 7.0, "p_holm": 0.001},
        {"model": "cnn_lstm", "dataset": "caltech101", "n_a": 3, "n_b": 3, "diff": 0.5,
         "p_holm": 0.6},
    ])  # fmt: skip
    line = findings.recipe_findings(recipes)[0]
    assert "1 of the 2 tested exceed seed noise" in line
    assert "Within seed noise: cnn_lstm on caltech101 (+0.5)." in line
    assert "Not tested yet (fewer than 2 seeds a side): cnn on cifar10 (+6.5)." in line


def test_no_pairs_no_claims():
    assert "No comparisons" in findings.findings_markdown(_pairs().iloc[0:0])


def test_the_recipe_line_names_the_split_it_was_compared_on():
    tests = pd.read_csv(ROOT / "results" / "paper-a" / "paper_a_tests.csv")
    recipes = pd.read_csv(ROOT / "results" / "improved-vs-paper" / "paper_a_recipes.csv")
    text = findings.findings_markdown(
        tests, recipes, labels={"cifar10": "CIFAR-10"}, recipe_labels={"cifar10": "CIFAR-10 (9k)"}
    )
    recipe_line = next(line for line in text.splitlines() if "**The recipe**" in line)
    assert "CIFAR-10 (9k)" in recipe_line and "caltech101" in recipe_line
    assert "CIFAR-10 (9k)" not in text.replace(recipe_line, "")


def test_a_small_difference_is_not_rounded_to_zero():
    """-0.04 points reads as "-0.04", not "-0.0": the sign and size stay visible."""
    text = findings.findings_markdown(_pairs(diff=-0.04, ci_low=-0.66, ci_high=0.58))
    assert "-0.04 points (95 % CI -0.7 to +0.6)" in text
    assert "-0.0 " not in text and "+0.0 " not in text
    recipes = pd.DataFrame([
        {"model": "cnn", "dataset": "cifar10", "n_a": 3, "n_b": 3, "diff": 0.03, "p_holm": 0.9},
    ])  # fmt: skip
    assert "(+0.03)" in findings.recipe_findings(recipes)[0]

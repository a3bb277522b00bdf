"""The committed sample grids of the real data sets (figures/data/, notebook 01)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from hybridlib.errors import HybridError
from hybridlib.tools import cli, samples

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "figures" / "data"


def test_the_grids_are_committed_with_their_provenance():
    stamp = json.loads((COMMITTED / "provenance.json").read_text())
    assert stamp["command"].startswith("python -m hybridlib figures --samples --data-root")
    assert stamp["git_commit"] and set(stamp["datasets"]) == set(samples.REAL)
    for name in samples.REAL:
        with Image.open(COMMITTED / f"{name}.png") as image:
            assert min(image.size) >= 400  # a picture, not an empty canvas
        assert len(stamp["datasets"][name]["classes"]) >= 5
    assert samples.default_out() == COMMITTED


def test_the_command_draws_them_from_the_real_data(shared_data, tmp_path, capsys):
    out = tmp_path / "data"
    args = ["figures", "--samples", "--data-root", str(shared_data), "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{name}.png") for name in samples.REAL]
    stamp = json.loads((out / "provenance.json").read_text())
    assert stamp["command"] == " ".join(["python -m hybridlib", *args])
    committed = json.loads((COMMITTED / "provenance.json").read_text())
    for name in samples.REAL:  # the same classes as the committed grids, in the same rows
        assert stamp["datasets"][name]["classes"] == committed["datasets"][name]["classes"]
        assert (out / f"{name}.png").stat().st_size > 20_000


def test_a_missing_data_set_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(HybridError, match="cifar10") as caught:
        samples.save_sample_figures(tmp_path / "empty", tmp_path / "out", names=["cifar10"])
    assert "first run: python -m hybridlib data cifar10 --download" in str(caught.value)
    assert not (tmp_path / "out" / "provenance.json").exists()

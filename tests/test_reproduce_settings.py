"""The grids' training settings: what each paper states, and overrides that win."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import torch

from hybridlib.config import RunConfig
from hybridlib.data import DeviceLoader
from hybridlib.engine.trainer import config_from_args
from hybridlib.models import build_model
from hybridlib.study import reproduce
from hybridlib.tools import cli
from hybridlib.train import input_crop


def test_paper_b_grid_crops_without_flips_and_l2_on_the_regularised_cnn():
    configs = reproduce.grid_configs("paper-b", seeds=2)
    assert {c.model for c in configs} == set(reproduce.GRIDS["paper-b"].models)
    for config in configs:
        assert config.augment and not config.flip  # random crops only
        assert config.batch_size == 128 and config.optimizer == "adam"
        # every paper B model takes 24x24 crops of the 32x32 images
        assert input_crop(build_model(config.model, num_classes=10), 32) == 24
    decayed = {c.model for c in configs if c.weight_decay > 0}
    assert decayed == {"yu_cnn_nolrn"}  # paper B's "regularized CNN" only
    assert {c.weight_decay for c in configs if c.model == "yu_cnn_nolrn"} == {
        reproduce.PAPER_B_WEIGHT_DECAY
    }
    assert reproduce.PAPER_B_WEIGHT_DECAY == 5e-4


def test_paper_a_grid_keeps_its_flips_and_no_weight_decay():
    for config in reproduce.grid_configs("paper-a", seeds=1):
        assert config.augment and config.flip and config.weight_decay == 0.0
    for config in reproduce.grid_configs("paper-a", seeds=1, recipe="improved"):
        assert config.flip and config.weight_decay == 5e-4  # the recipe's own


def test_settings_given_explicitly_win_over_the_grid():
    configs = reproduce.grid_configs("paper-b", seeds=1, flip=True, weight_decay=0.0)
    assert all(c.flip and c.weight_decay == 0.0 for c in configs)
    configs = reproduce.grid_configs("paper-b", seeds=1, weight_decay=1e-3)
    assert {c.weight_decay for c in configs} == {1e-3}


GRID_CONFIGS = reproduce.grid_configs


class _Stop(Exception):
    pass


def reproduce_configs(monkeypatch, argv):
    """The configs `reproduce` would train for `argv` (nothing is trained)."""
    seen = {}
    real = GRID_CONFIGS  # the function itself, not an earlier call's patch

    def capture(*args, **kwargs):
        seen["configs"] = real(*args, **kwargs)
        raise _Stop  # stop before anything runs

    monkeypatch.setattr(reproduce, "grid_configs", capture)
    args = cli.build_parser().parse_args(["reproduce", *argv])
    with pytest.raises(_Stop):
        reproduce.cli_reproduce(args)
    return seen["configs"], reproduce._command(args)


def test_reproduce_command_line_overrides(monkeypatch, tmp_path):
    out = ["--out", str(tmp_path / "grid")]
    configs, command = reproduce_configs(monkeypatch, ["--table", "paper-b", *out])
    assert not any(c.flip for c in configs)
    assert {c.model for c in configs if c.weight_decay} == {"yu_cnn_nolrn"}
    assert "--flip" not in command and "--weight-decay" not in command
    argv = ["--table", "paper-b", "--flip", "--weight-decay", "0", *out]
    configs, command = reproduce_configs(monkeypatch, argv)
    assert all(c.flip and c.weight_decay == 0.0 for c in configs)
    assert "--flip" in command and "--weight-decay 0.0" in command
    configs, _ = reproduce_configs(monkeypatch, ["--table", "paper-a", "--no-flip", *out])
    assert not any(c.flip for c in configs)


@pytest.mark.parametrize("table", ["paper-a", "paper-b"])
@pytest.mark.parametrize("recipe", ["paper", "improved"])
def test_each_runs_recorded_command_rebuilds_its_config(table, recipe):
    for config in reproduce.grid_configs(table, seeds=1, recipe=recipe, out="/tmp/grid"):
        argv = shlex.split(config.command())[3:]  # after "python -m hybridlib"
        rebuilt = config_from_args(cli.build_parser().parse_args(argv))
        assert rebuilt.science() == config.science(), config.model


def test_command_names_weight_decay_and_flips_only_off_their_defaults():
    plain = RunConfig(model="yu_cnn", dataset="cifar10").command()
    assert "--weight-decay" not in plain and "--no-flip" not in plain
    changed = RunConfig(model="yu_cnn", dataset="cifar10", weight_decay=5e-4, flip=False)
    assert "--weight-decay 0.0005" in changed.command() and "--no-flip" in changed.command()


def test_loader_crops_without_flips_at_the_same_offsets():
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.uint8).reshape(4, 3, 8, 8)
    targets = torch.arange(4)
    common = dict(batch_size=4, mean=(0, 0, 0), std=(1, 1, 1), augment=True, crop=5, seed=3)
    crops_only = DeviceLoader(images, targets, flip=False, **common)
    both = DeviceLoader(images, targets, flip=True, **common)
    x, y = next(iter(crops_only))
    x_both, _ = next(iter(both))
    order, flips, offsets = both._plan(0)
    assert flips is not None and crops_only._plan(0)[1] is None
    for i in range(4):
        top, left = offsets[i].tolist()
        window = images[y[i], :, top : top + 5, left : left + 5].float() / 255
        np.testing.assert_allclose(x[i].numpy(), window.numpy(), atol=1e-6)  # not flipped
        if flips[i].any():  # the flipped run took the same window, then flipped it
            assert not torch.equal(x[i], x_both[i])

"""The exercise checks: each passes the right answer and names the usual wrong ones.

    pytest tests/test_exercises.py -q   # seconds

For every `check_<name>` in hybridlib.exercises: a correct function prints "correct"
and returns True; a function that still raises NotImplementedError is reported and
returns False without raising (so an unfinished notebook runs to its end); and each
typical mistake raises an AssertionError whose message names what differs and gives
the hint a student needs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from hybridlib import exercises


def lstm_step(x_t, h_prev, c_prev, lstm, order="ifgo"):
    """One LSTM step; `order` names the chunks of the stacked weights (nn.LSTM: ifgo)."""
    gates = x_t @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h_prev @ lstm.weight_hh_l0.T
    gates = gates + lstm.bias_hh_l0
    part = dict(zip(order, gates.chunk(4, dim=1), strict=True))
    c_t = torch.sigmoid(part["f"]) * c_prev + torch.sigmoid(part["i"]) * torch.tanh(part["g"])
    return torch.sigmoid(part["o"]) * torch.tanh(c_t), c_t


def merge(h, g, how):
    return h + g if how == "sum" else torch.cat([h, g], dim=1)


def autoencoder_loss(reconstruction, logits, x, y, w):
    return w * F.mse_loss(reconstruction, x) + (1 - w) * F.cross_entropy(logits, y)


def channel_stats(images):
    values = images.float() / 255
    return values.mean(dim=(0, 2, 3)), values.std(dim=(0, 2, 3), correction=0)


def confusion_matrix(targets, predictions, num_classes):
    counts = np.zeros((num_classes, num_classes), dtype=int)
    for t, p in zip(targets, predictions, strict=True):
        counts[t, p] += 1
    return counts


def welch_t(a, b):
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return (np.mean(a) - np.mean(b)) / np.sqrt(va + vb), df


CORRECT = {
    "check_lstm_step": lstm_step,
    "check_skip_merge": merge,
    "check_autoencoder_loss": autoencoder_loss,
    "check_channel_stats": channel_stats,
    "check_confusion_matrix": confusion_matrix,
    "check_welch_t": welch_t,
}


def test_every_check_is_tested():
    assert sorted(CORRECT) == sorted(exercises.__all__)


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_the_right_answer_passes(name, capsys):
    assert getattr(exercises, name)(CORRECT[name]) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_an_unwritten_exercise_is_reported_not_raised(name, capsys):
    def stub(*args):
        raise NotImplementedError

    assert getattr(exercises, name)(stub) is False
    assert "not written yet" in capsys.readouterr().out


WRONG = [  # (check, a typical wrong answer, words the message must contain)
    (
        "check_lstm_step",
        lambda x, h, c, lstm: lstm_step(x, h, c, lstm, order="figo"),
        ["c_t", "forget and input gates are swapped"],
    ),
    (
        "check_lstm_step",
        lambda x, h, c, lstm: (lstm_step(x, h, c, lstm)[0] * 2, lstm_step(x, h, c, lstm)[1]),
        ["h_t[0, 0] is", "expected"],
    ),
    ("check_lstm_step", lambda x, h, c, lstm: lstm_step(x, h, c, lstm)[0], ["return (h_t, c_t)"]),
    (
        "check_skip_merge",
        lambda h, g, how: h + g,
        ["'cat'", "shape (4, 6), expected (4, 12)", "torch.cat"],
    ),
    (
        "check_skip_merge",
        lambda h, g, how: torch.cat([h, g], 1),
        ["'sum'", "concatenation", "h + g"],
    ),
    (
        "check_skip_merge",
        lambda h, g, how: merge(h, g, how) if how == "sum" else torch.cat([h, g]),
        ["shape (8, 6)", "dim=1"],
    ),
    (
        "check_autoencoder_loss",
        lambda r, z, x, y, w: w * ((r - x) ** 2).sum() + (1 - w) * F.cross_entropy(z, y),
        ["loss is", "a mean over every value"],
    ),
    (
        "check_autoencoder_loss",
        lambda r, z, x, y, w: (1 - w) * F.mse_loss(r, x) + w * F.cross_entropy(z, y),
        ["weights are swapped"],
    ),
    ("check_channel_stats", lambda im: channel_stats(im.float() * 255), ["mean", "divide by 255"]),
    (
        "check_channel_stats",
        lambda im: (channel_stats(im)[0], (im.float() / 255).std(dim=(0, 2, 3))),
        ["std", "correction=0"],
    ),
    (
        "check_channel_stats",
        lambda im: (im.float().mean(dim=(0, 1)) / 255, None),
        ["shape (8, 8)", "dim=(0, 2, 3)"],
    ),
    (
        "check_confusion_matrix",
        lambda t, p, k: confusion_matrix(t, p, k).T,
        ["rows are the true classes"],
    ),
    (
        "check_confusion_matrix",
        lambda t, p, k: confusion_matrix(t, p, k).astype(float),
        ["dtype torch.float64", "integer counts"],
    ),
    (
        "check_confusion_matrix",
        lambda t, p, k: confusion_matrix(t, p, max(max(t), max(p)) + 1),
        ["shape (3, 3), expected (4, 4)", "num_classes"],
    ),
    ("check_welch_t", lambda a, b: welch_t(b, a), ["t is", "mean(a) - mean(b)"]),
    (
        "check_welch_t",
        lambda a, b: (stats.ttest_ind(a, b).statistic, len(a) + len(b) - 2),
        ["Student's t with a pooled variance"],
    ),
    (
        "check_welch_t",
        lambda a, b: (welch_t(a, b)[0], len(a) + len(b) - 2),
        ["df is", "Welch-Satterthwaite"],
    ),
]


@pytest.mark.parametrize(
    ("name", "wrong", "words"), WRONG, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)]
)
def test_a_typical_mistake_is_named(name, wrong, words):
    with pytest.raises(AssertionError) as caught:
        getattr(exercises, name)(wrong)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{name}: {word!r} not in the message:\n{message}"

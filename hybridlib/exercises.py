"""Checks for the exercises: each runs your function on small random inputs.

    from hybridlib.exercises import check_lstm_step
    check_lstm_step(my_lstm_step)   # prints "correct", or says what differs and why

Every `check_<name>(student_fn)` calls your function, computes the same thing with a
reference written out below in a few lines, and compares the two. A wrong answer
raises an `AssertionError` that names what differs (the type, the shape, the dtype,
the first value that is off) and, for the usual mistakes, gives a hint. A function
that still raises `NotImplementedError` is reported and skipped, so a notebook with
exercises left to do still runs to its end.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

__all__ = [
    "check_autoencoder_loss",
    "check_channel_stats",
    "check_confusion_matrix",
    "check_lstm_step",
    "check_skip_merge",
    "check_welch_t",
]


def _run(student_fn, *args):
    """(True, student_fn(*args)), or (False, None) while it raises NotImplementedError."""
    try:
        return True, student_fn(*args)
    except NotImplementedError:
        name = getattr(student_fn, "__name__", "your function")
        print(
            f"{name} is not written yet (it raises NotImplementedError): write it, "
            "then run this cell again"
        )
        return False, None


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(
            f"{name} should be a tensor or an array, got {type(value).__name__}"
        ) from None


def _compare(name: str, got, expected: torch.Tensor, hints=(), rtol=1e-4, atol=1e-5):
    """Raise an AssertionError naming the first difference of `got` from `expected`.

    hints: (wrong answer, hint) pairs, the results of the usual mistakes; when `got`
    matches one of them, its hint ends the message.
    """
    got = _as_tensor(got, name)
    hint = next((text for wrong, text in hints if _close(got, wrong, rtol, atol)), None)
    ending = f"\nhint: {hint}" if hint else ""
    if got.shape != expected.shape:
        raise AssertionError(
            f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}{ending}"
        )
    if got.dtype.is_floating_point and not expected.dtype.is_floating_point:
        raise AssertionError(f"{name} has dtype {got.dtype}, expected integer counts{ending}")
    if not _close(got, expected, rtol, atol):
        off = ~torch.isclose(got.double(), expected.double(), rtol=rtol, atol=atol)
        index = tuple(int(i) for i in off.nonzero()[0])
        where = f"{name}[{', '.join(map(str, index))}]" if index else name
        raise AssertionError(
            f"{where} is {got[index].item():.6g}, expected {expected[index].item():.6g} "
            f"({int(off.sum())} of {off.numel()} values differ){ending}"
        )


def _close(got: torch.Tensor, wrong: torch.Tensor, rtol: float, atol: float) -> bool:
    wrong = torch.as_tensor(wrong)
    return got.shape == wrong.shape and torch.allclose(
        got.double(), wrong.double(), rtol=rtol, atol=atol, equal_nan=True
    )


def _correct(name: str) -> bool:
    print(f"{name}: correct")
    return True


def _lstm_step(x_t, h_prev, c_prev, lstm, order="ifgo", biases=2, squash_c=True):
    """The reference step (order "ifgo" is nn.LSTM's); the other arguments make mistakes."""
    gates = x_t @ lstm.weight_ih_l0.T + h_prev @ lstm.weight_hh_l0.T + lstm.bias_ih_l0
    if biases == 2:
        gates = gates + lstm.bias_hh_l0
    part = dict(zip(order, gates.chunk(4, dim=1), strict=True))  # (B, H) each
    c_t = torch.sigmoid(part["f"]) * c_prev + torch.sigmoid(part["i"]) * torch.tanh(part["g"])
    h_t = torch.sigmoid(part["o"]) * (torch.tanh(c_t) if squash_c else c_t)
    return h_t, c_t


def check_lstm_step(student_fn) -> bool:
    """Check `student_fn(x_t, h_prev, c_prev, lstm) -> (h_t, c_t, ...)` against nn.LSTM.

    Args:
        student_fn: one LSTM step; `lstm` is a one-layer `nn.LSTM`, x_t is (B, F),
            h_prev and c_prev are (B, H). Anything after h_t and c_t is ignored.
    """
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(input_size=5, hidden_size=3, batch_first=True)
    x_t, h_prev, c_prev = torch.randn(2, 5), torch.randn(2, 3), torch.randn(2, 3)
    with torch.no_grad():
        done, got = _run(student_fn, x_t, h_prev, c_prev, lstm)
        if not done:
            return False
        _, (h_n, c_n) = lstm(x_t[:, None], (h_prev[None], c_prev[None]))  # one step
        swapped = _lstm_step(x_t, h_prev, c_prev, lstm, order="figo")
        one_bias = _lstm_step(x_t, h_prev, c_prev, lstm, biases=1)
        no_tanh = _lstm_step(x_t, h_prev, c_prev, lstm, squash_c=False)
    if not isinstance(got, (tuple, list)) or len(got) < 2:
        raise AssertionError(f"return (h_t, c_t), got {type(got).__name__}")
    swap = "the forget and input gates are swapped: nn.LSTM stacks input, forget, candidate, output"
    bias = "add both biases, bias_ih_l0 + bias_hh_l0"
    _compare("c_t", got[1], c_n[0], [(swapped[1], swap), (one_bias[1], bias)])
    _compare("h_t", got[0], h_n[0], [(no_tanh[0], "h_t = o_t * tanh(C_t), eq. (6)")])
    return _correct("lstm step")


def check_skip_merge(student_fn) -> bool:
    """Check `student_fn(h, g, how)`: "sum" gives h + g (paper A), "cat" puts them side by side.

    Args:
        student_fn: merges the LSTM branch's h and the fully connected branch's g,
            both (B, W), into (B, W) for "sum" and (B, 2W) for "cat".
    """
    torch.manual_seed(0)
    h, g = torch.randn(4, 6), torch.randn(4, 6)
    cat, total = torch.cat([h, g], dim=1), h + g  # (B, 2W) and (B, W)
    for how, expected in (("sum", total), ("cat", cat)):
        done, got = _run(student_fn, h, g, how)
        if not done:
            return False
        hints = [
            (cat, "this is the concatenation; paper A adds: h + g keeps the width W"),
            (total, "this is the sum; concatenate with torch.cat([h, g], dim=1)"),
            (torch.cat([h, g]), "concatenate along the features (dim=1), not the batch"),
            (torch.cat([g, h], dim=1), "put h first: torch.cat([h, g], dim=1)"),
        ]
        _compare(f"merge(h, g, {how!r})", got, expected, [x for x in hints if x[0] is not expected])
    return _correct("skip merge")


def check_autoencoder_loss(student_fn) -> bool:
    """Check `student_fn(reconstruction, logits, x, y, w)`: w * MSE + (1 - w) * CE, both means.

    Args:
        student_fn: the combined loss of model 4, one number (a 0-dim tensor), for
            reconstructions and images (B, 3, H, W), logits (B, K) and labels y (B,).
    """
    torch.manual_seed(0)
    x, reconstruction = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    logits, y, w = torch.randn(4, 5), torch.tensor([0, 3, 1, 4]), 0.3
    done, got = _run(student_fn, reconstruction, logits, x, y, w)
    if not done:
        return False
    squares = (reconstruction - x) ** 2
    mse, ce = squares.mean(), F.cross_entropy(logits, y)
    hints = [
        ((1 - w) * mse + w * ce, "the weights are swapped: w goes with the MSE"),
        (mse + ce, "weigh the terms: w * MSE + (1 - w) * CE"),
        (w * squares.sum() + (1 - w) * ce, "the MSE is a mean over every value: .mean()"),
        (
            w * squares.flatten(1).sum(1).mean() + (1 - w) * ce,
            "average the squares over the pixels too, not only over the batch",
        ),
        (
            w * mse + (1 - w) * F.cross_entropy(logits, y, reduction="sum"),
            "the cross entropy is a mean over the batch (F.cross_entropy's default)",
        ),
        (
            w * squares.flatten(1).mean(1) + (1 - w) * F.cross_entropy(logits, y, reduction="none"),
            "reduce to one number: the mean over the batch",
        ),
    ]
    _compare("loss", got, w * mse + (1 - w) * ce, hints)
    return _correct("auto-encoder loss")


def check_channel_stats(student_fn) -> bool:
    """Check `student_fn(images) -> (mean, std)`: per channel, on the 0..1 scale.

    Args:
        student_fn: takes uint8 images (N, 3, H, W) and returns two (3,) tensors, the
            mean and the standard deviation (dividing by n) of each channel.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=generator)
    done, got = _run(student_fn, images)
    if not done:
        return False
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise AssertionError(f"return (mean, std), got {type(got).__name__}")
    values = images.double() / 255
    mean, std = values.mean(dim=(0, 2, 3)), values.std(dim=(0, 2, 3), correction=0)
    scale = "divide by 255 first: the statistics are on the 0..1 scale"
    dims = "reduce over the images, rows and columns, dim=(0, 2, 3), keeping the channels"
    _compare("mean", got[0], mean, [(mean * 255, scale), (values.mean(dim=(0, 1)), dims)])
    hints = [(std * 255, scale), (values.std(dim=(0, 2, 3)), "divide by n: correction=0")]
    _compare("std", got[1], std, hints)
    return _correct("channel statistics")


def check_confusion_matrix(student_fn) -> bool:
    """Check `student_fn(targets, predictions, num_classes)`: counts[true, predicted].

    Args:
        student_fn: takes two integer arrays of class indices and returns a (K, K)
            array of integer counts, rows the true classes, columns the predictions.
    """
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 40)  # class 3 never occurs: the size comes from K
    predictions = np.where(rng.random(40) < 0.6, targets, rng.integers(0, 3, 40))
    done, got = _run(student_fn, targets, predictions, 4)
    if not done:
        return False
    counts = np.zeros((4, 4), dtype=np.int64)
    np.add.at(counts, (targets, predictions), 1)  # one count per (true, predicted) pair
    expected = torch.as_tensor(counts)
    hints = [
        (expected.T, "rows are the true classes: counts[target, prediction] += 1"),
        (expected[:3, :3], "size the matrix with num_classes: a class can be missing"),
        (expected / expected.sum(1, keepdim=True).clamp_min(1), "count; do not normalise"),
    ]
    _compare("confusion matrix", got, expected, hints)
    return _correct("confusion matrix")


def _welch(a, b, ddof=1):
    """(t, df) of Welch's t-test of mean(a) - mean(b)."""
    va, vb = np.var(a, ddof=ddof) / len(a), np.var(b, ddof=ddof) / len(b)  # squared SEs
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    return (np.mean(a) - np.mean(b)) / np.sqrt(va + vb), df


def check_welch_t(student_fn) -> bool:
    """Check `student_fn(a, b) -> (t, df)`: Welch's t of mean(a) - mean(b) and its df.

    Args:
        student_fn: takes two 1-D arrays (e.g. test accuracies over seeds, of
            different lengths and spreads) and returns the t statistic and the
            Welch-Satterthwaite degrees of freedom.
    """
    a, b = np.array([91.2, 89.5, 90.8]), np.array([87.9, 84.1, 89.6, 86.0, 88.3])
    done, got = _run(student_fn, a, b)
    if not done:
        return False
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise AssertionError(f"return (t, df), got {type(got).__name__}")
    t, df = _welch(a, b)
    _compare(
        "t",
        got[0],
        torch.tensor(t),
        [
            (torch.tensor(-t), "t is for mean(a) - mean(b), not mean(b) - mean(a)"),
            (
                torch.tensor(stats.ttest_ind(a, b, equal_var=True).statistic),
                "that is Student's t with a pooled variance; Welch's adds s_a²/n_a + s_b²/n_b",
            ),
            (torch.tensor(_welch(a, b, ddof=0)[0]), "use the sample variances (ddof=1)"),
        ],
    )
    hints = [
        (
            torch.tensor(float(len(a) + len(b) - 2)),
            "n_a + n_b - 2 is Student's df; Welch's comes from the Welch-Satterthwaite formula",
        )
    ]
    _compare("df", got[1], torch.tensor(df), hints)
    return _correct("Welch's t")

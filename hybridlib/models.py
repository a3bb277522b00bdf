"""The nine classifiers of the course, as plain `nn.Module`s, and a table of their sizes.

    from hybridlib.models import build_model, stats_table
    model = build_model("cnn_lstm_skip", num_classes=10)
    logits = model(images)                      # images: (B, 3, 32, 32), normalised
    loss = model.loss(logits, images, targets)  # cross entropy on the logits
    print(stats_table())                        # parameters and multiply-adds per image

Paper A (Yilmaz et al.), 32x32 RGB input:

- `cnn`: the conv trunk, then 3 fully connected layers (model 1).
- `cnn_lstm`: the conv trunk, its feature-map rows as time steps into an LSTM, the last
  hidden state into fully connected layers (model 2).
- `cnn_lstm_skip`: the conv trunk, then an LSTM branch and a fully connected branch of
  equal width, summed element-wise, then 3 fully connected layers (model 3).
- `autoencoder`: a conv encoder to a code vector, a fully connected classifier on the
  code, a decoder back to 3x32x32; loss = w * MSE(reconstruction, input) + (1 - w) * CE,
  w = `recon_weight` = 0.5 as in paper A (model 4).

Paper B (Yu et al.), 24x24 crops of CIFAR-10:

- `yu_conv_lstm`: conv 5x5x64, ReLU, max-pool, LRN, twice; the 64x6x6 = 2304 values
  reshaped to one 48x48 map whose 48 rows are 48 time steps into an LSTM.
- `yu_cnn` / `yu_cnn_nolrn`: the same conv stack with a fully connected classifier,
  with and without local response normalisation (LRN).
- `row_lstm` / `row_gru`: no convolution; the 24 image rows are 24 time steps of
  3 * 24 = 72 values.

Choices where the papers are silent (the course notebooks justify them at length):

- Paper A's conv trunk: 6 conv layers of 32-32-64-64-128-128 channels, 3x3 kernels with
  padding 1, a 2x2 max-pool after every pair: (B, 3, 32, 32) -> (B, 128, 4, 4). Paper A
  names a LeNet-like CNN but gives no widths; doubling the channels at every halving of
  the resolution is the usual VGG pattern, and this size (about 39 M multiply-adds per
  image) keeps paper A's batch-16 training practical on a laptop CPU.
- Paper A's fully connected layers: 2048 -> 256 -> 128 -> K for `cnn`. The LSTMs have
  128 hidden units; the skip model's fully connected branch has the same width 128 so the
  two branches can be summed, then 3 layers 128 -> 128 -> 128 -> K. `cnn_lstm` puts two
  fully connected layers (128 -> 128 -> K) after the LSTM ("fully connected layers",
  plural, in paper A).
- Paper A's sequence: the rows of the trunk's feature maps are the time steps,
  (B, 128, 4, 4) -> (B, 4, 128 * 4) (`to_sequence`). Paper A only says "flatten"; rows as
  time steps is the reading that matches paper B, and a 4-step sequence is what a
  recurrent layer can actually use. The LSTM's output at the last step (which has seen
  every row) is the summary passed on.
- The auto-encoder reuses the conv trunk as its encoder, then 2048 -> 256 (the code,
  with ReLU); the classifier is one fully connected layer 256 -> K on the code (paper A:
  "a fully connected layer with 10 outputs"). The decoder mirrors the encoder:
  256 -> 2048, reshape to (128, 4, 4), then three times nearest-neighbour upsampling x2
  followed by a 3x3 conv (128 -> 64 -> 32 -> 3). Upsample + conv instead of transposed
  convolutions avoids their checkerboard artefacts. The reconstruction has no output
  activation: it is compared with the normalised input, which is not confined to [0, 1].
- Paper B's pooling: 3x3 windows, stride 2, padding 1 (24 -> 12 -> 6, as paper B states),
  and its LRN uses `nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0)`: the
  settings of the cuda-convnet / TensorFlow CIFAR-10 tutorial (depth_radius 4, bias 1,
  alpha 0.001 / 9, beta 0.75) that paper B's 24x24-crop, 5x5x64 network follows.
  TensorFlow's alpha multiplies the plain sum of squares, PyTorch's alpha / size does,
  hence alpha = 0.001 here. `yu_cnn`'s classifier is that tutorial's 2304 -> 384 -> 192
  -> K. Paper B's LSTMs (and the row models) have 128 hidden units, the size of the
  TensorFlow row-by-row MNIST RNN example its row-as-time-step input follows.
- Initialisation: PyTorch's defaults (Kaiming-uniform for conv and linear layers,
  uniform(-1/sqrt(H), 1/sqrt(H)) for the recurrent layers). Neither paper states one.

`batch_norm=True` adds batch normalisation after every convolution (the conv then has no
bias, which batch norm would cancel) and `dropout=p > 0` adds dropout before every fully
connected layer of the classifier; both are off by default, as in the papers, and are
used by the course's "improved" recipe.

Why the models output logits: paper A ends every model with log-softmax and trains with
the negative log-likelihood. For logits z and label y, log_softmax(z)_y = z_y -
log(sum_j exp(z_j)), and NLL takes minus that entry, so NLL(log_softmax(z), y) is exactly
cross_entropy(z, y) = -z_y + logsumexp(z). `F.cross_entropy` computes it in one fused,
numerically stable step (logsumexp subtracts the largest logit first), so the models
return raw logits and `Classifier.loss` applies the cross entropy; softmax is only needed
for reading probabilities. Adding a softmax layer and then cross entropy would apply the
softmax twice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybridlib.errors import HybridError, choices_error

__all__ = [
    "MODEL_NAMES",
    "AutoEncoderOutput",
    "Classifier",
    "ConvBlock",
    "ConvTrunk",
    "FoldToSquare",
    "RecurrentEncoder",
    "RowsAsSequence",
    "build_model",
    "fold_to_square",
    "model_stats",
    "stats_table",
    "to_sequence",
]

MODEL_NAMES = (
    "cnn",
    "cnn_lstm",
    "cnn_lstm_skip",
    "autoencoder",
    "yu_conv_lstm",
    "yu_cnn",
    "yu_cnn_nolrn",
    "row_lstm",
    "row_gru",
)

PAPER_A_INPUT = (3, 32, 32)
PAPER_B_INPUT = (3, 24, 24)  # paper B's centre / random 24x24 crops of CIFAR-10
TRUNK_CHANNELS = (32, 32, 64, 64, 128, 128)
HIDDEN_SIZE = 128  # every LSTM / GRU and the skip model's branch width


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


class ConvBlock(nn.Sequential):
    """Conv ('same' padding) -> optional batch norm -> ReLU: the block every model shares.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size; padding kernel_size // 2 keeps the height and width.
        batch_norm: add `BatchNorm2d` after the conv (the conv then has no bias).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, batch_norm=False
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                bias=not batch_norm,
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        super().__init__(*layers)


class ConvTrunk(nn.Sequential):
    """Paper A's feature extractor: 6 conv blocks, a 2x2 max-pool after every pair.

    (B, 3, 32, 32) -> (B, 32, 16, 16) -> (B, 64, 8, 8) -> (B, 128, 4, 4).
    """

    def __init__(self, channels: Iterable[int] = TRUNK_CHANNELS, *, batch_norm=False):
        channels = tuple(channels)
        layers: list[nn.Module] = []
        in_channels = 3
        for i, out_channels in enumerate(channels):
            layers.append(ConvBlock(in_channels, out_channels, batch_norm=batch_norm))
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = out_channels
        super().__init__(*layers)
        self.out_channels = in_channels


def to_sequence(maps: Tensor) -> Tensor:
    """Feature maps to a sequence whose time steps are the rows.

    Row h of every channel, laid side by side, is time step h:
    `out[b, h] == cat([maps[b, 0, h], maps[b, 1, h], ...])`.

    Args:
        maps: (B, C, H, W) feature maps (or images).
    Returns:
        (B, H, C * W) sequence for a `batch_first` LSTM / GRU.
    """
    b, c, h, w = maps.shape
    # (B, C, H, W) -> (B, H, C, W) -> (B, H, C*W): rows become time steps
    return maps.permute(0, 2, 1, 3).reshape(b, h, c * w)


def fold_to_square(maps: Tensor, side: int) -> Tensor:
    """Paper B's hand-off: all C*H*W values of each image as one side x side map.

    Paper B reshapes its 64 maps of 6x6 (2304 values) into one 48x48 map and feeds
    its 48 rows as 48 time steps. The reshape keeps the (C, H, W) memory order, so row t
    holds the flat values 48t .. 48t+47: one and a third 6x6 channel maps per row.

    Args:
        maps: (B, C, H, W) with C * H * W == side * side.
        side: the side of the square map (48 in paper B).
    Returns:
        (B, side, side): `side` time steps of `side` features.
    """
    b = maps.shape[0]
    # (B, C, H, W) -> (B, side, side): e.g. (B, 64, 6, 6) -> (B, 48, 48), rows = time steps
    return maps.reshape(b, side, side)


class RowsAsSequence(nn.Module):
    """`to_sequence` as a layer, so it shows up in the architecture figures."""

    def forward(self, maps: Tensor) -> Tensor:
        return to_sequence(maps)  # (B, C, H, W) -> (B, H, C*W)


class FoldToSquare(nn.Module):
    """`fold_to_square` as a layer (paper B's 2304 -> 48x48 reshape)."""

    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def forward(self, maps: Tensor) -> Tensor:
        return fold_to_square(maps, self.side)  # (B, C, H, W) -> (B, side, side)

    def extra_repr(self) -> str:
        return f"side={self.side}"


class RecurrentEncoder(nn.Module):
    """A one-layer LSTM or GRU over a sequence that keeps its output at the last step.

    Args:
        input_size: features per time step.
        hidden_size: hidden units.
        cell: "lstm" or "gru".
    """

    def __init__(self, input_size: int, hidden_size: int = HIDDEN_SIZE, cell: str = "lstm"):
        super().__init__()
        cells = {"lstm": nn.LSTM, "gru": nn.GRU}
        if cell not in cells:
            raise choices_error("recurrent cell", cell, cells)
        self.cell = cell
        self.rnn = cells[cell](input_size, hidden_size, batch_first=True)

    def forward(self, sequence: Tensor) -> Tensor:
        outputs, _ = self.rnn(sequence)  # (B, T, F) -> (B, T, H)
        # (B, T, H) -> (B, H): the last step has read every row
        return outputs[:, -1]


def classifier_head(
    in_features: int, widths: Iterable[int], num_classes: int, dropout: float = 0.0
) -> nn.Sequential:
    """Fully connected layers with ReLU between them; the last layer gives the logits.

    `dropout > 0` puts a dropout layer before every linear layer.
    """
    layers: list[nn.Module] = []
    for width in widths:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_features, num_classes))  # logits: no activation
    return nn.Sequential(*layers)


class LocalResponseNorm(nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` that also trains under deterministic algorithms on CUDA.

    PyTorch averages the squares over the channel window with `avg_pool3d`, whose CUDA
    backward has no deterministic kernel; with `torch.use_deterministic_algorithms(True)`
    on CUDA this sums the window's shifted slices instead (the same formula, rounded
    in another order). Everywhere else it is PyTorch's own.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and torch.are_deterministic_algorithms_enabled():
            return local_response_norm_by_sums(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)


def local_response_norm_by_sums(x, size: int, alpha: float, beta: float, k: float):
    """x / (k + alpha / size * sum of x^2 over `size` neighbouring channels)^beta."""
    channels = x.shape[1]
    squares = F.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))  # (B, C + size - 1, H, W)
    window = sum(squares[:, i : i + channels] for i in range(size))  # (B, C, H, W)
    return x / (window * (alpha / size) + k).pow(beta)


def _paper_b_conv_stack(*, lrn: bool, batch_norm: bool) -> nn.Sequential:
    """Paper B: (conv 5x5x64 'same', ReLU, max-pool, LRN) twice: (B, 3, 24, 24) -> (B, 64, 6, 6)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for _ in range(2):
        layers.append(ConvBlock(in_channels, 64, 5, batch_norm=batch_norm))
        # 3x3 windows, stride 2, padding 1: 24 -> 12 -> 6 (TensorFlow tutorial's pooling)
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        if lrn:
            # TensorFlow's depth_radius=4, bias=1, alpha=0.001/9, beta=0.75 in PyTorch's terms
            layers.append(LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0))
        in_channels = 64
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------
# The classifiers
# ---------------------------------------------------------------------------


class AutoEncoderOutput(NamedTuple):
    """What the auto-encoder returns: class logits (B, K) and reconstruction (B, 3, 32, 32)."""

    logits: Tensor
    reconstruction: Tensor


class Classifier(nn.Module):
    """Base class: an input-size check, the loss and the logits of an output.

    Attributes:
        name: the model's name in `MODEL_NAMES`.
        input_size: (channels, height, width) the model expects.
        num_classes: K, the number of logits.
    """

    name = "classifier"
    input_size: tuple[int, int, int] = PAPER_A_INPUT

    def __init__(self, num_classes: int = 10):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise HybridError(
                f"num_classes must be a whole number >= 2, got {num_classes!r}; "
                "pass the data set's number of classes (bundle.num_classes)"
            )
        self.num_classes = num_classes

    def check_input(self, x: Tensor) -> None:
        """Raise `HybridError` unless `x` is a (B, *input_size) batch."""
        c, h, w = self.input_size
        expected = f"{c}x{h}x{w}"
        if x.dim() != 4:
            fix = "add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "pass images"
            raise HybridError(
                f"{self.name} expects a batch of {expected} images shaped (B, {c}, {h}, {w}), "
                f"got shape {tuple(x.shape)}; {fix}"
            )
        if tuple(x.shape[1:]) == self.input_size:
            return
        got = "x".join(str(n) for n in x.shape[1:])
        if x.shape[1] != c:
            fix = "convert images to 3 channels (RGB), e.g. x.expand(-1, 3, -1, -1) for grayscale"
        elif h == 24:
            fix = "use the 24x24 crop transform (crop=24 in DataBundle.loader / .dataset)"
        else:
            fix = f"feed the full {h}x{w} images without a crop (image_size={h})"
        raise HybridError(f"{self.name} expects {expected} input, got {got}; {fix}")

    def loss(self, output, inputs: Tensor, targets: Tensor) -> Tensor:
        """Cross entropy of the logits (log-softmax + NLL in one stable step).

        Args:
            output: what `forward` returned.
            inputs: the input batch (used by the auto-encoder's reconstruction term).
            targets: (B,) class indices.
        Returns:
            The mean loss over the batch, a scalar.
        """
        return F.cross_entropy(self.logits(output), targets)

    def logits(self, output) -> Tensor:
        """The (B, K) logits in a forward output (for accuracy and predictions)."""
        return output


class CNN(Classifier):
    """Paper A model 1: conv trunk, flatten, 3 fully connected layers."""

    name = "cnn"

    def __init__(self, num_classes=10, *, batch_norm=False, dropout=0.0):
        super().__init__(num_classes)
        self.trunk = ConvTrunk(batch_norm=batch_norm)
        self.head = nn.Sequential(
            nn.Flatten(), classifier_head(128 * 4 * 4, (256, 128), num_classes, dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.trunk(x)  # (B, 3, 32, 32) -> (B, 128, 4, 4)
        return self.head(features)  # (B, 128, 4, 4) -> (B, 2048) -> (B, K)


class CNNLSTM(Classifier):
    """Paper A model 2: conv trunk, feature-map rows as time steps into an LSTM, FC layers."""

    name = "cnn_lstm"

    def __init__(self, num_classes=10, *, batch_norm=False, dropout=0.0, hidden_size=HIDDEN_SIZE):
        super().__init__(num_classes)
        self.trunk = ConvTrunk(batch_norm=batch_norm)
        self.sequence = RowsAsSequence()
        self.rnn = RecurrentEncoder(128 * 4, hidden_size, "lstm")
        self.head = classifier_head(hidden_size, (128,), num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.trunk(x)  # (B, 3, 32, 32) -> (B, 128, 4, 4)
        sequence = self.sequence(features)  # (B, 128, 4, 4) -> (B, 4, 512): rows = time steps
        summary = self.rnn(sequence)  # (B, 4, 512) -> (B, H)
        return self.head(summary)  # (B, H) -> (B, K)


class CNNLSTMSkip(Classifier):
    """Paper A model 3: conv trunk, an LSTM branch + a fully connected branch, summed, 3 FC."""

    name = "cnn_lstm_skip"

    def __init__(self, num_classes=10, *, batch_norm=False, dropout=0.0, hidden_size=HIDDEN_SIZE):
        super().__init__(num_classes)
        self.trunk = ConvTrunk(batch_norm=batch_norm)
        self.lstm_branch = nn.Sequential(
            RowsAsSequence(), RecurrentEncoder(128 * 4, hidden_size, "lstm")
        )
        # The skip branch has the LSTM's width so that the two can be added.
        self.fc_branch = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, hidden_size), nn.ReLU())
        self.head = classifier_head(hidden_size, (128, 128), num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.trunk(x)  # (B, 3, 32, 32) -> (B, 128, 4, 4)
        recurrent = self.lstm_branch(features)  # (B, 128, 4, 4) -> (B, 4, 512) -> (B, H)
        direct = self.fc_branch(features)  # (B, 128, 4, 4) -> (B, 2048) -> (B, H)
        return self.head(recurrent + direct)  # element-wise sum (B, H) -> (B, K)


class AutoEncoderClassifier(Classifier):
    """Paper A model 4: conv encoder to a code, a classifier on the code, a decoder.

    Args:
        recon_weight: w in w * MSE(reconstruction, input) + (1 - w) * CE; 0.5 in paper A.
        code_size: length of the code vector.
    """

    name = "autoencoder"

    def __init__(
        self, num_classes=10, *, batch_norm=False, dropout=0.0, recon_weight=0.5, code_size=256
    ):
        super().__init__(num_classes)
        if not 0.0 <= float(recon_weight) <= 1.0:
            raise HybridError(
                f"recon_weight must lie in [0, 1], got {recon_weight!r}; paper A uses 0.5"
            )
        self.recon_weight = float(recon_weight)
        self.encoder = ConvTrunk(batch_norm=batch_norm)
        self.code = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, code_size), nn.ReLU())
        self.head = classifier_head(code_size, (), num_classes, dropout)
        self.decoder = nn.Sequential(
            nn.Linear(code_size, 128 * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (128, 4, 4)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBlock(128, 64, batch_norm=batch_norm),
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBlock(64, 32, batch_norm=batch_norm),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(32, 3, 3, padding=1),  # no activation: targets are normalised images
        )

    def forward(self, x: Tensor) -> AutoEncoderOutput:
        self.check_input(x)
        features = self.encoder(x)  # (B, 3, 32, 32) -> (B, 128, 4, 4)
        code = self.code(features)  # (B, 128, 4, 4) -> (B, 2048) -> (B, code)
        logits = self.head(code)  # (B, code) -> (B, K)
        # (B, code) -> (B, 2048) -> (B, 128, 4, 4) -> ... -> (B, 3, 32, 32)
        reconstruction = self.decoder(code)
        return AutoEncoderOutput(logits, reconstruction)

    def loss(self, output: AutoEncoderOutput, inputs: Tensor, targets: Tensor) -> Tensor:
        """recon_weight * MSE(reconstruction, inputs) + (1 - recon_weight) * CE(logits)."""
        w = self.recon_weight
        reconstruction = F.mse_loss(output.reconstruction, inputs)
        return w * reconstruction + (1.0 - w) * F.cross_entropy(output.logits, targets)

    def logits(self, output: AutoEncoderOutput) -> Tensor:
        return output.logits


class YuConvLSTM(Classifier):
    """Paper B's conv-LSTM: 2 x (conv 5x5x64, pool, LRN), 2304 -> 48x48, 48 rows into an LSTM."""

    name = "yu_conv_lstm"
    input_size = PAPER_B_INPUT

    def __init__(self, num_classes=10, *, batch_norm=False, dropout=0.0, hidden_size=HIDDEN_SIZE):
        super().__init__(num_classes)
        self.features = _paper_b_conv_stack(lrn=True, batch_norm=batch_norm)
        self.sequence = FoldToSquare(48)
        self.rnn = RecurrentEncoder(48, hidden_size, "lstm")
        self.head = classifier_head(hidden_size, (), num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.features(x)  # (B, 3, 24, 24) -> (B, 64, 6, 6)
        sequence = self.sequence(features)  # (B, 64, 6, 6) -> (B, 48, 48): 48 steps of 48
        summary = self.rnn(sequence)  # (B, 48, 48) -> (B, H)
        return self.head(summary)  # (B, H) -> (B, K)


class YuCNN(Classifier):
    """Paper B's CNN baseline: 2 x (conv 5x5x64, pool, [LRN]), then 2304 -> 384 -> 192 -> K."""

    input_size = PAPER_B_INPUT

    def __init__(self, num_classes=10, *, batch_norm=False, dropout=0.0, lrn=True):
        super().__init__(num_classes)
        self.name = "yu_cnn" if lrn else "yu_cnn_nolrn"
        self.features = _paper_b_conv_stack(lrn=lrn, batch_norm=batch_norm)
        self.head = nn.Sequential(
            nn.Flatten(), classifier_head(64 * 6 * 6, (384, 192), num_classes, dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        features = self.features(x)  # (B, 3, 24, 24) -> (B, 64, 6, 6)
        return self.head(features)  # (B, 64, 6, 6) -> (B, 2304) -> (B, K)


class RowRNN(Classifier):
    """Paper B's recurrent baselines: the image's 24 rows as 24 time steps, no convolution."""

    input_size = PAPER_B_INPUT

    def __init__(
        self, num_classes=10, *, batch_norm=False, dropout=0.0, cell="lstm", hidden_size=HIDDEN_SIZE
    ):
        super().__init__(num_classes)
        # batch_norm has no conv layer to act on here; it is accepted so every model
        # takes the same recipe switches.
        self.name = f"row_{cell}"
        c, h, w = self.input_size
        self.sequence = RowsAsSequence()
        self.rnn = RecurrentEncoder(c * w, hidden_size, cell)
        self.head = classifier_head(hidden_size, (), num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        sequence = self.sequence(x)  # (B, 3, 24, 24) -> (B, 24, 72): rows = time steps
        summary = self.rnn(sequence)  # (B, 24, 72) -> (B, H)
        return self.head(summary)  # (B, H) -> (B, K)


# name -> constructor(num_classes, *, batch_norm, dropout, **options)
_FACTORIES = {
    "cnn": CNN,
    "cnn_lstm": CNNLSTM,
    "cnn_lstm_skip": CNNLSTMSkip,
    "autoencoder": AutoEncoderClassifier,
    "yu_conv_lstm": YuConvLSTM,
    "yu_cnn": functools.partial(YuCNN, lrn=True),
    "yu_cnn_nolrn": functools.partial(YuCNN, lrn=False),
    "row_lstm": functools.partial(RowRNN, cell="lstm"),
    "row_gru": functools.partial(RowRNN, cell="gru"),
}
_FIXED = {"num_classes", "batch_norm", "dropout", "lrn", "cell"}


def model_options(name: str) -> dict[str, object]:
    """The extra keyword options `build_model(name, ...)` accepts, with their defaults."""
    if name not in _FACTORIES:
        raise choices_error("model", name, MODEL_NAMES)
    params = inspect.signature(_FACTORIES[name]).parameters.values()
    return {p.name: p.default for p in params if p.name not in _FIXED}


def build_model(
    name: str, num_classes: int = 10, *, batch_norm: bool = False, dropout: float = 0.0, **kwargs
) -> Classifier:
    """Build one of the course's classifiers by name.

    Args:
        name: one of `MODEL_NAMES`.
        num_classes: number of output logits K.
        batch_norm: batch norm after every conv (the "improved" recipe; papers: False).
        dropout: dropout probability before every classifier layer (papers: 0).
        **kwargs: model options, see `model_options(name)`: `hidden_size` for the
            recurrent models, `recon_weight` and `code_size` for the auto-encoder.
    Returns:
        A freshly initialised `Classifier` (seed with `torch.manual_seed` first for
        reproducible weights).
    """
    if name not in _FACTORIES:
        raise choices_error("model", name, MODEL_NAMES)
    allowed = model_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "no extra options"
        raise HybridError(
            f"model {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {accepted} (plus num_classes, batch_norm, dropout)"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise HybridError(f"dropout must lie in [0, 1), got {dropout!r}; the papers use 0")
    return _FACTORIES[name](num_classes, batch_norm=bool(batch_norm), dropout=dropout, **kwargs)


# ---------------------------------------------------------------------------
# Size and cost
# ---------------------------------------------------------------------------


def _macs_hook(counter: list[int]):
    """A forward hook that adds a layer's multiply-adds for the batch to `counter[0]`.

    It knows the layers the course's models have: Conv2d, Linear, and one-layer,
    one-direction LSTM / GRU (`RecurrentEncoder`).
    """

    def hook(module: nn.Module, args, output) -> None:
        x = args[0]
        if isinstance(module, nn.Conv2d):
            # every output value: in_channels * kh * kw multiply-adds
            kh, kw = module.kernel_size
            counter[0] += output.numel() * module.in_channels * kh * kw
        elif isinstance(module, nn.Linear):
            counter[0] += x.numel() * module.out_features
        elif isinstance(module, nn.LSTM | nn.GRU):
            gates = 4 if isinstance(module, nn.LSTM) else 3
            batch, steps = x.shape[0], x.shape[1]  # batch_first: (B, T, input_size)
            h = module.hidden_size
            counter[0] += batch * steps * gates * h * (module.input_size + h)

    return hook


def model_stats(name_or_model: str | nn.Module, num_classes: int = 10) -> dict[str, int]:
    """Parameters and multiply-adds (MACs) per image of one model.

    MACs are counted with forward hooks on one image: for Conv2d, every output value
    costs in_channels * kh * kw; Linear in * out; LSTM / GRU, per time step,
    gates * hidden * (input + hidden) (4 gates for the LSTM, 3 for the GRU). Biases,
    activations, pooling, normalisation, the gates' element-wise products and the skip
    model's sum are left out: they are small next to the matrix products.

    Args:
        name_or_model: a name in `MODEL_NAMES` (built with `num_classes`, without
            touching the global random state) or a `Classifier`.
        num_classes: K when a name is given.
    Returns:
        {"params": trainable parameters, "macs": multiply-adds per image}.
    """
    if isinstance(name_or_model, str):
        with torch.random.fork_rng(devices=[]):
            model = build_model(name_or_model, num_classes)
    else:
        model = name_or_model
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counter = [0]
    kinds = (nn.Conv2d, nn.Linear, nn.LSTM, nn.GRU)
    handles = [
        m.register_forward_hook(_macs_hook(counter))
        for m in model.modules()
        if isinstance(m, kinds)
    ]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *model.input_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {"params": int(params), "macs": int(counter[0])}


def stats_table(names: Iterable[str] = MODEL_NAMES, num_classes: int = 10):
    """A pandas DataFrame of each model's paper, input size, parameters and MACs per image.

    Args:
        names: model names (default: all nine).
        num_classes: K for every model.
    Returns:
        DataFrame indexed by model name with columns paper, input, params, macs.
    """
    rows = []
    for name in names:
        with torch.random.fork_rng(devices=[]):
            model = build_model(name, num_classes)
        stats = model_stats(model)
        rows.append(
            {
                "model": name,
                "paper": "B" if model.input_size == PAPER_B_INPUT else "A",
                "input": "x".join(str(n) for n in model.input_size),
                "params": stats["params"],
                "macs": stats["macs"],
            }
        )
    return pd.DataFrame(rows).set_index("model")

"""Architecture figures drawn from the real modules, so they cannot drift from the code.

    python -m hybridlib figures                  # -> figures/architectures/<model>.png
    python -m hybridlib figures --out some/dir

    from hybridlib.tools.diagrams import trace, draw_architecture
    for node in trace(build_model("cnn_lstm")):
        print(node.label, node.shape)
    draw_architecture("cnn_lstm_skip")           # a matplotlib Figure

How it works: `trace` runs a copy of the model on a small dummy batch with forward hooks
on its layers and records each layer's output shape. Which layer feeds which is read
from the autograd graph of that forward pass (each layer's input is traced back to the
outputs of earlier layers), so the skip model's two branches and their sum, and the
auto-encoder's split into classifier and decoder, come from the model itself. ReLU,
batch norm and dropout are folded into the box of the layer they follow. Boxes are
grouped by the model's top-level attributes (`trunk`, `lstm_branch`, `head`, ...).
"""

from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle
from torch import nn

from hybridlib.models import (
    MODEL_NAMES,
    ConvBlock,
    FoldToSquare,
    RecurrentEncoder,
    RowsAsSequence,
    build_model,
    model_stats,
)
from hybridlib.tools import samples

__all__ = ["Node", "cli_figures", "draw_architecture", "save_architecture_figures", "trace"]

# Layers drawn as one box even though they contain sub-modules.
_UNITS = (ConvBlock, RecurrentEncoder)
# Shape-keeping layers folded into the box of the layer before them.
_FOLDED = (nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)
# Autograd nodes where several branches meet, and how the figure names them.
_JOINS = {"AddBackward0": "+", "CatBackward0": "concatenate", "MulBackward0": "x"}


@dataclass
class Node:
    """One box of an architecture figure.

    Attributes:
        key: position in `trace`'s list.
        kind: "input", "layer", "join" (where branches meet) or "output".
        label: what the box says, e.g. "conv 3x3, 3→32 + ReLU".
        shape: the output shape without the batch dimension.
        group: the model attribute the layer belongs to ("trunk", "head", ...).
        style: colour class ("conv", "pool", "norm", "linear", "rnn", "reshape", "io").
        producers / consumers: keys of the nodes feeding this one / fed by it.
    """

    key: int
    kind: str
    label: str
    shape: tuple[int, ...]
    group: str = ""
    style: str = "io"
    producers: list[int] = field(default_factory=list)
    consumers: list[int] = field(default_factory=list)
    module: nn.Module | None = field(default=None, repr=False)


def _describe(module: nn.Module) -> tuple[str, str]:
    """(label, style) of one layer."""
    if isinstance(module, ConvBlock):
        conv = module[0]
        k = conv.kernel_size[0]
        bn = " + BN" if any(isinstance(m, nn.BatchNorm2d) for m in module) else ""
        return f"conv {k}x{k}, {conv.in_channels}→{conv.out_channels}{bn} + ReLU", "conv"
    if isinstance(module, RecurrentEncoder):
        rnn = module.rnn
        return f"{module.cell.upper()} {rnn.input_size}→{rnn.hidden_size}, last step", "rnn"
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0]
        return f"conv {k}x{k}, {module.in_channels}→{module.out_channels}", "conv"
    if isinstance(module, nn.ConvTranspose2d):
        k, s = module.kernel_size[0], module.stride[0]
        return f"transposed conv {k}x{k}/{s}, {module.in_channels}→{module.out_channels}", "conv"
    if isinstance(module, nn.MaxPool2d):
        k, s, pad = module.kernel_size, module.stride, module.padding
        if k == s and not pad:
            return f"max-pool {k}x{k}", "pool"
        return f"max-pool {k}x{k}, stride {s}, pad {pad}", "pool"
    if isinstance(module, nn.Upsample):
        return f"upsample x{module.scale_factor:g} ({module.mode})", "pool"
    if isinstance(module, nn.LocalResponseNorm):
        return f"LRN, size {module.size}", "norm"
    if isinstance(module, nn.Linear):
        return f"linear {module.in_features}→{module.out_features}", "linear"
    if isinstance(module, nn.Flatten):
        return "flatten", "reshape"
    if isinstance(module, nn.Unflatten):
        return "reshape to " + "x".join(str(n) for n in module.unflattened_size), "reshape"
    if isinstance(module, RowsAsSequence):
        return "rows → time steps", "reshape"
    if isinstance(module, FoldToSquare):
        return f"fold to {module.side}x{module.side}, rows → steps", "reshape"
    if isinstance(module, nn.ReLU):
        return "ReLU", "norm"
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        return "BN", "norm"
    if isinstance(module, nn.Dropout):
        return f"dropout {module.p:g}", "norm"
    return type(module).__name__, "linear"


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers drawn as boxes: `_UNITS` whole, every other leaf module alone."""
    units, inside = [], []
    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, _UNITS):
            units.append((name, module))
            inside.append(name)
        elif not any(True for _ in module.children()):
            units.append((name, module))
    return units


def _producers(tensor: torch.Tensor, known: dict, dummy: torch.Tensor) -> list[int]:
    """Keys of the recorded outputs (or the input, key 0) that `tensor` was computed from."""
    if tensor is dummy:
        return [0]
    found, seen, stack = [], set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in known:
            found.append(known[fn])
            continue
        if getattr(fn, "variable", None) is not None:  # a leaf: the input or a parameter
            if fn.variable is dummy:
                found.append(0)
            continue
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return sorted(set(found))


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape[1:])


def trace(model: nn.Module) -> list[Node]:
    """The model's layers with their output shapes and connections, in execution order.

    Runs a deep copy of `model` (in training mode, so dropout shows) on a dummy batch
    of 2 images of `model.input_size`.

    Args:
        model: a `Classifier`.
    Returns:
        Nodes: the input first, the model's outputs ("logits", "reconstruction") last.
    """
    model = copy.deepcopy(model).train()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dummy = torch.randn(2, *model.input_size, device=device, requires_grad=True)

    records: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [
        module.register_forward_hook(
            lambda m, args, out, name=name: records.append((name, m, args[0], out))
        )
        for name, module in _units(model)
    ]
    try:
        with torch.enable_grad():
            output = model(dummy)
    finally:
        for hook in hooks:
            hook.remove()

    nodes = [Node(0, "input", "input", _shape(dummy))]
    known: dict = {}  # grad_fn of a recorded output -> its node key
    for name, module, inp, out in records:
        if out is inp or out.grad_fn in known:  # an identity layer: nothing to draw
            continue
        producers = _producers(inp, known, dummy)
        if len(producers) > 1:  # branches meet here: draw the joining operation
            join = _JOINS.get(type(inp.grad_fn).__name__, type(inp.grad_fn).__name__)
            nodes.append(Node(len(nodes), "join", join, _shape(inp), producers=producers))
            producers = [nodes[-1].key]
        label, style = _describe(module)
        group = name.split(".")[0]
        nodes.append(Node(len(nodes), "layer", label, _shape(out), group, style, producers))
        nodes[-1].module = module
        known[out.grad_fn] = nodes[-1].key

    fields = output._asdict() if hasattr(output, "_asdict") else {"logits": output}
    for field_name, tensor in fields.items():
        producers = _producers(tensor, known, dummy)
        nodes.append(Node(len(nodes), "output", field_name, _shape(tensor), producers=producers))

    for node in nodes:
        for p in node.producers:
            nodes[p].consumers.append(node.key)
    return _fold(nodes)


def _fold(nodes: list[Node]) -> list[Node]:
    """Fold ReLU / batch norm / dropout into the single layer before them; renumber."""
    removed = set()
    for node in nodes:
        if node.kind != "layer" or not isinstance(node.module, _FOLDED):
            continue
        if len(node.producers) != 1:
            continue
        parent = nodes[node.producers[0]]
        if parent.kind != "layer" or parent.consumers != [node.key]:
            continue
        parent.label += " + " + node.label
        parent.shape = node.shape
        parent.consumers = node.consumers
        for c in node.consumers:
            nodes[c].producers = [parent.key if p == node.key else p for p in nodes[c].producers]
        removed.add(node.key)
    kept = [n for n in nodes if n.key not in removed]
    new_key = {n.key: i for i, n in enumerate(kept)}
    for n in kept:
        n.key = new_key[n.key]
        n.producers = [new_key[p] for p in n.producers]
        n.consumers = [new_key[c] for c in n.consumers]
    return kept


def _layout(nodes: list[Node]) -> tuple[list[int], list[float]]:
    """Row (longest path from the input) and lane (0 = centre) of every node."""
    rows, lanes = [0] * len(nodes), [0.0] * len(nodes)
    for node in nodes[1:]:
        rows[node.key] = max(rows[p] for p in node.producers) + 1 if node.producers else 0
        if len(node.producers) > 1:
            lanes[node.key] = sum(lanes[p] for p in node.producers) / len(node.producers)
        elif node.producers:
            parent = nodes[node.producers[0]]
            k = len(parent.consumers)
            i = parent.consumers.index(node.key)
            lanes[node.key] = lanes[parent.key] + (i - (k - 1) / 2)
    return rows, lanes


_FILL = {
    "conv": "#cfe2f3",
    "pool": "#e6e6e6",
    "norm": "#fff2cc",
    "linear": "#fce5cd",
    "rnn": "#d9ead3",
    "reshape": "#ffffff",
    "io": "#ffffff",
}
BOX_W, BOX_H, ROW = 3.0, 0.30, 0.46  # inches
LANE_DX = BOX_W + 0.4
CAPTION = 1.0  # room for group captions beside the boxes


def _format_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["B", *map(str, shape)]) + ")"


def _summary(model: nn.Module) -> str:
    stats = model_stats(model)
    return f"{stats['params']:,} parameters · {stats['macs'] / 1e6:.1f} M multiply-adds per image"


def draw_architecture(name_or_model: str | nn.Module, num_classes: int = 10) -> Figure:
    """Draw one model: its layers top to bottom, each with its output shape.

    Args:
        name_or_model: a name in `MODEL_NAMES` or a `Classifier`.
        num_classes: K when a name is given.
    Returns:
        A matplotlib Figure (displays in a notebook; `fig.savefig(path)` to save).
    """
    if isinstance(name_or_model, str):
        with torch.random.fork_rng(devices=[]):
            model = build_model(name_or_model, num_classes)
    else:
        model = name_or_model
    nodes = trace(model)
    rows, lanes = _layout(nodes)
    ax, top = _canvas(model, rows, lanes)
    place = _Place(rows, lanes, top)
    _draw_groups(ax, nodes, place)
    _draw_arrows(ax, nodes, place)  # then the boxes on top of them
    for node in nodes:
        if node.kind == "join":
            _draw_join(ax, node, *place.xy(node))
        else:
            _draw_box(ax, node, *place.xy(node))
    return ax.figure


@dataclass
class _Place:
    """Where the layout puts each node: its lane (x) and row (y) below the title."""

    rows: list[int]  # by node key
    lanes: list[float]
    top: float

    def xy(self, node: Node) -> tuple[float, float]:
        return self.lanes[node.key] * LANE_DX, self.top + self.rows[node.key] * ROW + BOX_H / 2

    @staticmethod
    def half_height(node: Node) -> float:
        return 0.11 if node.kind == "join" else BOX_H / 2


def _canvas(model: nn.Module, rows, lanes):
    """A figure sized to the layout, with the model's name and summary on top: (ax, top)."""
    left = min(lanes) * LANE_DX - BOX_W / 2 - CAPTION
    widest = max(lanes)
    right = widest * LANE_DX + BOX_W / 2 + (CAPTION if widest > 0 else 0.25)
    width = right - left
    doc = (type(model).__doc__ or "").strip().splitlines()[0] if type(model).__doc__ else ""
    subtitle = textwrap.wrap(doc, int(width * 13)) + [_summary(model)]
    top = 0.45 + 0.17 * len(subtitle) + 0.15
    height = top + (max(rows) + 1) * ROW + 0.1

    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left, right)
    ax.set_ylim(height, 0)
    ax.axis("off")
    centre = (left + right) / 2
    name = getattr(model, "name", type(model).__name__)
    ax.text(centre, 0.3, name, ha="center", va="center", fontsize=12, weight="bold")
    for i, line in enumerate(subtitle):
        ax.text(
            centre, 0.55 + 0.17 * i, line, ha="center", va="center", fontsize=8, color="#333333"
        )
    return ax, top


def _draw_groups(ax, nodes: list[Node], place: _Place) -> None:
    """Dashed frames behind the boxes of each group, with the attribute name beside them."""
    groups: dict[str, list[Node]] = {}
    for node in nodes:
        if node.group:
            groups.setdefault(node.group, []).append(node)
    for group, members in groups.items():
        xs, ys = zip(*(place.xy(n) for n in members), strict=True)
        x0, y0 = min(xs) - BOX_W / 2 - 0.06, min(ys) - BOX_H / 2 - 0.05
        y1 = max(ys) + BOX_H / 2 + 0.05
        ax.add_patch(
            Rectangle(
                (x0, y0),
                max(xs) - min(xs) + BOX_W + 0.12,
                y1 - y0,
                facecolor="#f7f7f7",
                edgecolor="#999999",
                lw=0.7,
                ls="--",
                zorder=0,
            )
        )
        outside_right = place.lanes[members[0].key] > 0
        ax.text(
            x0 + BOX_W + 0.2 if outside_right else x0 - 0.08,
            (y0 + y1) / 2,
            group.replace("_", " "),
            ha="left" if outside_right else "right",
            va="center",
            fontsize=8,
            style="italic",
            color="#555555",
        )


def _draw_arrows(ax, nodes: list[Node], place: _Place) -> None:
    """An arrow from each producer to its consumer; forks and joins go down, across, down."""
    for node in nodes:
        x1, y1 = place.xy(node)
        end = y1 - place.half_height(node)
        for p in node.producers:
            x0, y0 = place.xy(nodes[p])
            y0 += place.half_height(nodes[p])
            arrow = dict(arrowstyle="-|>", color="#444444", lw=0.9, shrinkA=0, shrinkB=0)
            if abs(x0 - x1) < 1e-6:
                ax.annotate("", (x1, end), (x0, y0), arrowprops=arrow)
            else:
                y_mid = y0 + (end - y0) / 2
                ax.plot([x0, x0, x1], [y0, y_mid, y_mid], color="#444444", lw=0.9)
                ax.annotate("", (x1, end), (x1, y_mid), arrowprops=arrow)


def _draw_join(ax, node: Node, x: float, y: float) -> None:
    """A circle with the merge's symbol (+ or a concatenation), its name and shape beside it."""
    ax.add_patch(Circle((x, y), 0.11, facecolor="white", edgecolor="#222222", lw=1.0))
    symbol = node.label if len(node.label) == 1 else ""
    ax.text(x, y, symbol, ha="center", va="center", fontsize=10, weight="bold")
    text = "element-wise sum" if node.label == "+" else node.label
    ax.text(
        x + 0.2,
        y,
        f"{text}  {_format_shape(node.shape)}",
        ha="left",
        va="center",
        fontsize=7.5,
        color="#333333",
    )


def _draw_box(ax, node: Node, x: float, y: float) -> None:
    """A layer's box: its name on the left, its output shape on the right."""
    io = node.kind in ("input", "output")
    ax.add_patch(
        FancyBboxPatch(
            (x - BOX_W / 2, y - BOX_H / 2),
            BOX_W,
            BOX_H,
            boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=_FILL[node.style],
            edgecolor="#222222",
            lw=1.3 if io else 0.8,
            ls=(0, (3, 2)) if node.style == "reshape" and not io else "-",
        )
    )
    weight = "bold" if io else "normal"
    ax.text(x - BOX_W / 2 + 0.08, y, node.label, ha="left", va="center", fontsize=8, weight=weight)
    ax.text(
        x + BOX_W / 2 - 0.08,
        y,
        _format_shape(node.shape),
        ha="right",
        va="center",
        fontsize=7.5,
        family="monospace",
        color="#333333",
    )


def _default_out() -> Path:
    return samples.repo_figures("architectures")


def save_architecture_figures(out=None, names=MODEL_NAMES, *, dpi: int = 100) -> list[Path]:
    """Write `<out>/<name>.png` for every model.

    Args:
        out: folder (default: figures/architectures in the repository).
        names: models to draw (default: all nine).
        dpi: resolution.
    Returns:
        The files written.
    """
    out = Path(out) if out is not None else _default_out()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        fig = draw_architecture(name)
        path = out / f"{name}.png"
        # No software tag: the files only change when the drawing does.
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
        paths.append(path)
    return paths


def cli_figures(args) -> int:
    """`python -m hybridlib figures [--out DIR]`; with `--samples`, the data sets' grids."""
    out = getattr(args, "out", None)
    if getattr(args, "samples", False):
        paths = samples.save_sample_figures(args.data_root, out)
    else:
        paths = save_architecture_figures(out)
    for path in paths:
        print(path)
    return 0

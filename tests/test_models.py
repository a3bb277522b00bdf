"""The nine models: shapes, the CNN -> sequence hand-off, gradients, losses, sizes, errors,
and the architecture figures drawn from them. Tiny batches on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridlib.errors import HybridError
from hybridlib.models import (
    MODEL_NAMES,
    AutoEncoderOutput,
    Classifier,
    FoldToSquare,
    RecurrentEncoder,
    RowsAsSequence,
    build_model,
    fold_to_square,
    model_stats,
    stats_table,
    to_sequence,
)
from hybridlib.tools.diagrams import draw_architecture, save_architecture_figures, trace

ROOT = Path(__file__).resolve().parents[1]

# Parameters and multiply-adds per image with 10 classes. A change here changes the
# course's tables and figures: update it deliberately.
SIZES = {
    "cnn": (845_738, 39_191_808),
    "cnn_lstm": (633_514, 39_961_856),
    "cnn_lstm_skip": (912_298, 40_240_384),
    "autoencoder": (1_433_581, 50_006_528),
    "yu_conv_lstm": (199_754, 21_837_056),
    "yu_cnn": (1_068_298, 18_470_784),
    "yu_cnn_nolrn": (1_068_298, 18_470_784),
    "row_lstm": (104_714, 2_458_880),
    "row_gru": (78_858, 1_844_480),
}

# What each model's recurrent part reads: (sequence shape per image, summary shape).
HAND_OFF = {
    "cnn_lstm": ((4, 512), (128,)),  # (B, 128, 4, 4) -> (B, 4, 128*4): 4 rows
    "cnn_lstm_skip": ((4, 512), (128,)),
    "yu_conv_lstm": ((48, 48), (128,)),  # (B, 64, 6, 6) -> (B, 48, 48): paper B
    "row_lstm": ((24, 72), (128,)),  # (B, 3, 24, 24) -> (B, 24, 3*24)
    "row_gru": ((24, 72), (128,)),
}


def make(name: str, num_classes: int = 10, seed: int = 0, **kwargs) -> Classifier:
    torch.manual_seed(seed)
    return build_model(name, num_classes, **kwargs)


def batch(model: Classifier, size: int = 4, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, *model.input_size, generator=generator)
    y = torch.randint(0, model.num_classes, (size,), generator=generator)
    return x, y


def test_names_match_the_factory():
    assert set(SIZES) == set(MODEL_NAMES)
    for name in MODEL_NAMES:
        model = make(name)
        assert isinstance(model, Classifier)
        assert model.name == name


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size, num_classes", [(1, 2), (3, 10), (2, 101)])
def test_output_shapes(name, size, num_classes):
    model = make(name, num_classes)
    x, _ = batch(model, size)
    output = model(x)
    assert model.logits(output).shape == (size, num_classes)
    if name == "autoencoder":
        assert isinstance(output, AutoEncoderOutput)
        assert output.reconstruction.shape == x.shape
    else:
        assert isinstance(output, torch.Tensor)


def test_input_sizes():
    for name in MODEL_NAMES:
        expected = (3, 24, 24) if name.startswith(("yu_", "row_")) else (3, 32, 32)
        assert make(name).input_size == expected


def test_to_sequence_makes_rows_time_steps():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    seq = to_sequence(maps)
    assert seq.shape == (2, 4, 15)  # (B, C, H, W) -> (B, H, C*W)
    for b in range(2):
        for h in range(4):
            assert torch.equal(seq[b, h], torch.cat([maps[b, c, h] for c in range(3)]))


def test_fold_to_square_is_paper_bs_reshape():
    maps = torch.randn(3, 64, 6, 6)
    square = fold_to_square(maps, 48)
    assert square.shape == (3, 48, 48)  # 64 * 6 * 6 = 2304 = 48 * 48
    assert torch.equal(square.flatten(1), maps.flatten(1))  # memory order kept
    assert torch.equal(square[:, 0, :36], maps[:, 0].flatten(1))  # row 0 starts with map 0


@pytest.mark.parametrize("name", sorted(HAND_OFF))
def test_cnn_to_sequence_hand_off_shapes(name):
    model = make(name)
    seen = {}

    def record(key):
        return lambda module, args, output: seen.__setitem__(key, tuple(output.shape))

    for module in model.modules():
        if isinstance(module, RowsAsSequence | FoldToSquare):
            module.register_forward_hook(record("sequence"))
        if isinstance(module, RecurrentEncoder):
            module.register_forward_hook(record("summary"))
    model(batch(model, 5)[0])
    sequence, summary = HAND_OFF[name]
    assert seen == {"sequence": (5, *sequence), "summary": (5, *summary)}


@pytest.mark.parametrize("name", ["cnn", "cnn_lstm", "cnn_lstm_skip", "autoencoder"])
def test_paper_a_trunk_gives_128x4x4(name):
    model = make(name)
    trunk = model.encoder if name == "autoencoder" else model.trunk
    assert trunk(torch.zeros(2, 3, 32, 32)).shape == (2, 128, 4, 4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradient_reaches_every_parameter(name):
    model = make(name)
    x, y = batch(model)
    model.loss(model(x), x, y).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_adam_step_lowers_the_loss(name):
    model = make(name)
    x, y = batch(model, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.loss(model(x), x, y)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = model.loss(model(x), x, y)
    assert after.item() < before.item()


@pytest.mark.parametrize("weight", [0.5, 0.2])
def test_autoencoder_loss_is_its_formula(weight):
    model = make("autoencoder", recon_weight=weight)
    x, y = batch(model)
    output = model(x)
    mse = ((output.reconstruction - x) ** 2).mean()
    ce = -torch.log_softmax(output.logits, dim=1)[torch.arange(len(y)), y].mean()
    expected = weight * mse + (1 - weight) * ce
    torch.testing.assert_close(model.loss(output, x, y), expected)
    assert model.logits(output) is output.logits


def test_default_recon_weight_is_paper_as():
    assert make("autoencoder").recon_weight == 0.5


def test_loss_is_log_softmax_plus_nll_on_logits():
    model = make("cnn")
    x, y = batch(model)
    logits = model(x)
    assert model.logits(logits) is logits
    nll = F.nll_loss(F.log_softmax(logits, dim=1), y)
    torch.testing.assert_close(model.loss(logits, x, y), nll)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_initial_weights(name):
    a, b, c = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(not torch.equal(value, c.state_dict()[key]) for key, value in a.state_dict().items())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_and_macs_are_pinned(name):
    assert tuple(model_stats(name).values()) == SIZES[name]
    assert sum(p.numel() for p in make(name).parameters()) == SIZES[name][0]


def test_model_stats_leaves_the_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model_stats("cnn")
    assert torch.equal(torch.rand(3), expected)


def test_stats_table_lists_every_model():
    table = stats_table()
    assert tuple(table.index) == MODEL_NAMES
    assert list(table.columns) == ["paper", "input", "params", "macs"]
    assert table.loc["yu_conv_lstm", "input"] == "3x24x24"
    assert table.loc["cnn", "paper"] == "A"
    for name, (params, macs) in SIZES.items():
        assert (table.loc[name, "params"], table.loc[name, "macs"]) == (params, macs)


def test_num_classes_changes_only_the_last_layer():
    assert model_stats("cnn", 5)["params"] == SIZES["cnn"][0] - 5 * (128 + 1)


@pytest.mark.parametrize(
    "name, shape, message",
    [
        (
            "yu_conv_lstm",
            (2, 3, 32, 32),
            "yu_conv_lstm expects 3x24x24 input, got 3x32x32; use the 24x24 crop transform",
        ),
        ("row_gru", (2, 3, 32, 32), "row_gru expects 3x24x24 input, got 3x32x32"),
        ("cnn", (2, 3, 24, 24), "cnn expects 3x32x32 input, got 3x24x24; feed the full 32x32"),
        ("cnn_lstm", (2, 1, 32, 32), "expects 3x32x32 input, got 1x32x32; convert images to 3"),
        ("autoencoder", (3, 32, 32), "add a batch dimension with x.unsqueeze(0)"),
    ],
)
def test_wrong_input_size_says_what_is_expected(name, shape, message):
    with pytest.raises(HybridError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(name)(torch.zeros(shape))


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(HybridError) as error:
        build_model("cnn_lstm_skp")
    assert "unknown model 'cnn_lstm_skp'" in str(error.value)
    assert all(name in str(error.value) for name in MODEL_NAMES)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "num_classes must be a whole number >= 2"),
        ({"dropout": 1.0}, "dropout must lie in"),
        ({"hidden_sise": 64}, "unknown option"),
    ],
)
def test_bad_options_are_hybrid_errors(kwargs, message):
    with pytest.raises(HybridError, match=message):
        build_model("cnn_lstm", **kwargs)


def test_bad_recon_weight():
    with pytest.raises(HybridError, match="recon_weight must lie in"):
        build_model("autoencoder", recon_weight=1.5)


def test_options_change_the_model():
    assert make("cnn_lstm", hidden_size=64).rnn.rnn.hidden_size == 64
    assert make("autoencoder", code_size=32).head[-1].in_features == 32


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_norm_and_dropout_variants_keep_shapes(name):
    model = make(name, 7, batch_norm=True, dropout=0.3)
    x, y = batch(model, 3)
    output = model(x)
    assert model.logits(output).shape == (3, 7)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in model.modules())
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == has_conv
    model.loss(output, x, y).backward()
    model.eval()
    assert model.logits(model(x)).shape == (3, 7)


def test_paper_settings_have_no_batch_norm_or_dropout():
    for name in MODEL_NAMES:
        kinds = {type(m) for m in make(name).modules()}
        assert nn.BatchNorm2d not in kinds and nn.Dropout not in kinds


def test_lrn_switch():
    def has_lrn(name):
        return any(isinstance(m, nn.LocalResponseNorm) for m in make(name).modules())

    assert has_lrn("yu_cnn") and not has_lrn("yu_cnn_nolrn")


# --- architecture figures -------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_trace_follows_the_model(name):
    model = make(name)
    nodes = trace(model)
    assert nodes[0].kind == "input" and nodes[0].shape == model.input_size
    outputs = {n.label: n.shape for n in nodes if n.kind == "output"}
    if name == "autoencoder":
        assert outputs == {"logits": (10,), "reconstruction": (3, 32, 32)}
        forks = [n for n in nodes if len(n.consumers) == 2]
        assert [n.shape for n in forks] == [(256,)]  # the code feeds head and decoder
    else:
        assert outputs == {"logits": (10,)}
    joins = [n for n in nodes if n.kind == "join"]
    if name == "cnn_lstm_skip":
        assert len(joins) == 1 and joins[0].label == "+" and joins[0].shape == (128,)
        groups = {nodes[p].group for p in joins[0].producers}
        assert groups == {"lstm_branch", "fc_branch"}
    else:
        assert not joins
    if name in HAND_OFF:
        shapes = [n.shape for n in nodes]
        assert HAND_OFF[name][0] in shapes


def test_figures_render_small(tmp_path):
    paths = save_architecture_figures(tmp_path, names=("cnn_lstm_skip", "autoencoder"))
    for path in paths:
        assert path.stat().st_size < 150_000
    assert draw_architecture("row_gru").get_size_inches()[1] > 2


def test_committed_figures_exist():
    folder = ROOT / "figures" / "architectures"
    if not folder.is_dir():
        pytest.skip("figures/architectures not generated here (python -m hybridlib figures)")
    for name in MODEL_NAMES:
        path = folder / f"{name}.png"
        assert path.is_file(), f"{path} missing: run python -m hybridlib figures"
        assert path.stat().st_size < 150_000

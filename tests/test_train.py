"""The run config, the runtime helpers, the training loop, checkpoints and resume.

Every training here uses the embedded digits data, a few hundred images at most
and 1-3 epochs, so the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import threading

import pandas as pd
import pytest
import torch

from hybridlib import metrics, runtime, train
from hybridlib.config import RECIPES, RunConfig
from hybridlib.data import load_dataset
from hybridlib.engine import fast, trainer
from hybridlib.errors import HybridError
from hybridlib.models import MODEL_NAMES, build_model

NO_TIMINGS = [c for c in train.History.COLUMNS if c not in train.History.TIMING_COLUMNS]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def quick(data_root, **changes) -> RunConfig:
    """A small deterministic digits run."""
    values = dict(
        model="cnn",
        dataset="digits",
        epochs=2,
        lr=1e-3,
        limit=64,
        progress=False,
        data_root=data_root,
    )
    return RunConfig(**{**values, **changes})


# ---------------------------------------------------------------------------- config


def test_config_defaults_are_paper_a():
    config = RunConfig()
    assert (config.batch_size, config.epochs, config.lr, config.val_every) == (16, 30, 1e-4, 5)
    assert config.optimizer == "adam" and config.augment and config.recipe == "paper"
    assert config.amp and not config.cpu_bf16 and not config.deterministic
    # the improved recipe's switches stay off by default
    assert not config.batch_norm and config.label_smoothing == 0 and config.scheduler == "none"
    assert config.weight_decay == 0 and config.dropout == 0


def test_config_json_round_trip(tmp_path):
    config = RunConfig(model="cnn_lstm_skip", dataset="caltech101", limit=50, lr=3e-4, seed=7)
    path = tmp_path / "config.json"
    text = config.to_json(path)
    assert RunConfig.from_json(path) == config
    assert RunConfig.from_json(text) == config
    assert json.loads(path.read_text())["model"] == "cnn_lstm_skip"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": -1.0}, "lr must be greater than 0"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"model": "cnnn"}, "unknown model 'cnnn'; choose one of: cnn, cnn_lstm"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'; choose one of: cifar10"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
        ({"recipe": "fast"}, "unknown recipe 'fast'"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(HybridError) as error:
        RunConfig(**changes)
    assert message in str(error.value)


def test_config_unknown_field_is_named():
    with pytest.raises(HybridError, match="unknown config field.*colour"):
        RunConfig.from_dict({"model": "cnn", "colour": "red"})


def test_paper_b_models_fit_any_32px_dataset():
    for name in MODEL_NAMES:
        RunConfig(model=name, dataset="digits")  # valid on every data set
    assert train.input_crop(build_model("yu_cnn"), 32) == 24  # paper B's 24x24 crop
    assert train.input_crop(build_model("cnn"), 32) is None
    with pytest.raises(HybridError, match="takes 3x32x32 images"):
        train.input_crop(build_model("cnn"), 24)


def test_recipes():
    improved = RunConfig.from_recipe("improved", model="cnn_lstm")
    for key, value in RECIPES["improved"].items():
        assert getattr(improved, key) == value
    assert improved.recipe == "improved"
    assert RunConfig.from_recipe("improved", lr=5e-4).lr == 5e-4  # explicit values win
    assert RunConfig.from_recipe("paper") == RunConfig()


# --------------------------------------------------------------------------- runtime


def test_device_resolution():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    auto = runtime.resolve_device("auto")
    assert auto.type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert auto.type in ("mps", "cpu")
        with pytest.raises(HybridError, match="not available here"):
            runtime.resolve_device("cuda")
    assert "cpu" in runtime.describe_device(torch.device("cpu"))


def test_autocast_is_off_on_cpu_unless_asked():
    x = torch.randn(4, 4)
    with runtime.autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    with runtime.autocast(torch.device("cpu"), cpu_bf16=True):
        assert (x @ x).dtype == torch.bfloat16


def test_environment_names_versions():
    env = runtime.environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__
    assert {"cpu", "python", "hybridlib", "git_commit", "device"} <= set(env)


# --------------------------------------------------------------------------- metrics


def test_confusion_matrix_and_per_class():
    cm = metrics.ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1, 2, 2, 0]), torch.tensor([0, 1, 2, 2, 2, 1]))
    matrix = cm.compute()
    assert matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 2]]  # rows true, cols predicted
    assert int(matrix.sum()) == 6
    assert metrics.accuracy(matrix) == pytest.approx(4 / 6)
    table = metrics.per_class(matrix, ["a", "b", "c"])
    assert table.loc["c", "recall"] == pytest.approx(2 / 3)
    assert table.loc["b", "precision"] == pytest.approx(1 / 2)
    assert table["support"].tolist() == [1, 2, 3]


def test_misclassified_most_confident_first():
    frame = pd.DataFrame(
        {"target": [0, 1, 2, 0], "prediction": [0, 2, 1, 1], "confidence": [0.9, 0.6, 0.8, 0.7]}
    )
    wrong = metrics.misclassified(frame, 2)
    assert wrong["confidence"].tolist() == [0.8, 0.7]


# ------------------------------------------------------------------- a real training


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):
    """Two epochs of the CNN on the full digits training split (1,293 images)."""
    out = tmp_path_factory.mktemp("runs") / "cnn-digits"
    config = quick(data_root, limit=None, val_every=1, out=str(out))
    return trainer.run_training(config)


def test_fit_two_epochs_on_digits(finished_run):
    run_dir = finished_run
    for name in (
        "config.json",
        "metrics.csv",
        "checkpoint.pt",
        "predictions.csv",
        "confusion.csv",
        "per_class.csv",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name
    history = pd.read_csv(run_dir / "metrics.csv")
    assert list(history.columns) == list(train.History.COLUMNS)
    assert history["epoch"].tolist() == [1, 2]
    assert history["val_acc"].notna().all()  # val_every=1
    assert history["train_loss"].iloc[1] < history["train_loss"].iloc[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["test_acc"] > 0.4  # chance is 0.1
    for key in ("train_time_s", "images_per_s", "hardware", "torch", "git_commit", "command"):
        assert key in summary, key
    assert summary["seed"] == 0 and summary["torch"] == torch.__version__
    assert summary["command"].startswith("python -m hybridlib train --model cnn --dataset digits")
    config = RunConfig.from_json(run_dir / "config.json")
    assert config.epochs == 2 and config.out == str(run_dir)


def test_summary_command_rebuilds_the_run(finished_run):
    """The command in summary.json, parsed by the CLI, gives back the run's settings."""
    import shlex

    from hybridlib.tools import cli

    command = json.loads((finished_run / "summary.json").read_text())["command"]
    argv = shlex.split(command)[3:]  # after "python -m hybridlib"
    rebuilt = trainer.config_from_args(cli.build_parser().parse_args(argv))
    saved = RunConfig.from_json(finished_run / "config.json")
    assert rebuilt.science() == saved.science()
    assert rebuilt.data_root == saved.data_root and rebuilt.out == saved.out


def test_test_files_agree(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    confusion = pd.read_csv(finished_run / "confusion.csv", index_col=0)
    assert int(confusion.to_numpy().sum()) == summary["sizes"]["test"] == summary["test_size"]
    assert list(confusion.columns) == summary["classes"]
    predictions = pd.read_csv(finished_run / "predictions.csv")
    assert len(predictions) == summary["sizes"]["test"]
    assert predictions["correct"].mean() == pytest.approx(summary["test_acc"])
    per_class = pd.read_csv(finished_run / "per_class.csv", index_col=0)
    assert per_class["support"].sum() == summary["test_size"]


def test_checkpoint_contents(finished_run):
    state = trainer.load_checkpoint(finished_run / "checkpoint.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert {"model", "optimizer", "rng", "config"} <= set(state)


def test_the_checkpoint_rebuilds_its_model(finished_run):
    state = trainer.load_checkpoint(finished_run / "checkpoint.pt")
    args = {"name": "cnn", "num_classes": 10, "batch_norm": False, "dropout": 0.0}
    assert state["model_args"] == args
    model, config = trainer.load_run_model(finished_run)
    assert model.num_classes == 10 and not model.training and config.model == "cnn"


def test_an_older_checkpoint_takes_its_classes_from_the_runs_records(finished_run, tmp_path):
    """A checkpoint from before `model_args`: the number of classes comes from the run's
    summary.json, splits.json or config.json, never from the names of the weights."""
    run_dir = tmp_path / "older"
    run_dir.mkdir()
    for name in ("config.json", "summary.json", "splits.json"):
        (run_dir / name).write_bytes((finished_run / name).read_bytes())
    state = trainer.load_checkpoint(finished_run / "checkpoint.pt")
    del state["model_args"]
    torch.save(state, run_dir / "checkpoint.pt")
    assert trainer.load_run_model(run_dir)[0].num_classes == 10  # summary.json
    (run_dir / "summary.json").unlink()
    assert trainer.load_run_model(run_dir)[0].num_classes == 10  # splits.json
    (run_dir / "splits.json").unlink()
    with pytest.raises(HybridError, match="cannot tell how many classes its model has"):
        trainer.load_run_model(run_dir)
    config = RunConfig.from_json(run_dir / "config.json")
    config.replace(num_classes=10).to_json(run_dir / "config.json")
    assert trainer.load_run_model(run_dir)[0].num_classes == 10  # config.json


def test_the_notebooks_train_step_is_the_engines_eager_step():
    """`train_step(model, optimizer, x, y, device=dev)`, as the notebooks call it, and the
    engine's default step give the same losses, counts and weights."""
    torch.manual_seed(0)
    models = [build_model("cnn_lstm", dropout=0.3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    engine_step = fast.make_train_step(models[1], optimizers[1], device="cpu")
    device = torch.device("cpu")
    for seed in range(3):
        x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
        torch.manual_seed(seed)  # the same dropout draws on both sides
        core = train.train_step(models[0], optimizers[0], x, y, device=device)
        torch.manual_seed(seed)
        engine = engine_step(x, y)
        assert all(torch.equal(a, b) for a, b in zip(core, engine, strict=True))
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_multi_tensor_update_is_bit_identical_to_the_loop(optimizer):
    """`make_optimizer`'s foreach update gives exactly the weights of PyTorch's
    per-parameter loop, so switching it on changed no result."""
    config = RunConfig(model="cnn", optimizer=optimizer, lr=1e-3, weight_decay=5e-4)
    torch.manual_seed(0)
    models = [build_model("cnn") for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fast_one = train.make_optimizer(models[0], config)
    assert all(group["foreach"] for group in fast_one.param_groups)
    looped = train.make_optimizer(models[1], config)
    for group in looped.param_groups:
        group["foreach"] = False  # PyTorch's per-parameter loop
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(4, 3, 32, 32, generator=generator)
        y = torch.randint(0, 10, (4,), generator=generator)
        for model, opt in zip(models, (fast_one, looped), strict=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_evaluate_run_matches_summary(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    result = trainer.evaluate_run(finished_run, device="cpu", write=False)
    assert result.num_samples == summary["test_size"]
    assert result.accuracy == pytest.approx(summary["test_acc"])
    assert int(result.confusion.sum()) == result.num_samples


def test_evaluate_counts_every_image(data_root):
    bundle = load_dataset("digits", data_root, limit=50)
    model = build_model("cnn", bundle.num_classes)
    loader = bundle.loader("test", 16)
    result = train.evaluate(model, loader, device=torch.device("cpu"), predictions=True)
    assert int(result.confusion.sum()) == bundle.sizes["test"] == result.num_samples
    assert len(result.predictions) == bundle.sizes["test"]


# -------------------------------------------------------------- interruption and resume


@pytest.fixture(scope="module")
def reference_run(data_root, tmp_path_factory):
    """An uninterrupted deterministic 3-epoch run to compare resumed runs with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    config = quick(data_root, epochs=3, limit=96, val_every=1, deterministic=True, out=str(out))
    return trainer.run_training(config), config


def _same_run(run_dir, reference_dir):
    ours = pd.read_csv(run_dir / "metrics.csv")[NO_TIMINGS]
    theirs = pd.read_csv(reference_dir / "metrics.csv")[NO_TIMINGS]
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    a = trainer.load_checkpoint(run_dir / "checkpoint.pt")
    b = trainer.load_checkpoint(reference_dir / "checkpoint.pt")
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key
    summary_a = json.loads((run_dir / "summary.json").read_text())
    summary_b = json.loads((reference_dir / "summary.json").read_text())
    assert summary_a["test_acc"] == summary_b["test_acc"]
    assert summary_a["test_loss"] == summary_b["test_loss"]


def test_resume_after_interrupt_gives_the_same_history(reference_run, tmp_path):
    reference_dir, config = reference_run
    config = config.replace(out=str(tmp_path / "run"))

    def interrupt(event):  # Ctrl-C in the middle of epoch 2
        if event["event"] == "step" and event["epoch"] == 2 and event["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run_training(config, callback=interrupt)
    run_dir = tmp_path / "run"
    assert trainer.load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 1

    trainer.run_training(config, resume=True)
    _same_run(run_dir, reference_dir)


def test_killed_during_checkpoint_save_still_resumes(reference_run, tmp_path, monkeypatch):
    reference_dir, config = reference_run
    config = config.replace(out=str(tmp_path / "run"))
    real_replace = os.replace
    saves = []

    def dying_replace(src, dst, *args, **kwargs):
        if str(dst).endswith("checkpoint.pt"):
            saves.append(dst)
            if len(saves) == 2:  # the end of epoch 2: the new file is written, then "die"
                raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        trainer.run_training(config)
    monkeypatch.setattr(os, "replace", real_replace)
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoint.pt.tmp").exists()  # the write that never got renamed
    assert trainer.load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1  # the previous one

    trainer.run_training(config, resume=True)
    assert not (run_dir / "checkpoint.pt.tmp").exists()
    _same_run(run_dir, reference_dir)


def test_existing_run_needs_resume(reference_run):
    reference_dir, config = reference_run
    with pytest.raises(HybridError, match="already holds a run; pass --resume"):
        trainer.run_training(config)


# ------------------------------------------------------------- divergence and stopping


def test_nan_loss_stops_with_a_clear_message(data_root, tmp_path):
    config = quick(data_root, epochs=1, lr=1e8, out=str(tmp_path / "run"))
    with pytest.raises(HybridError) as error:
        trainer.run_training(config)
    message = str(error.value)
    assert "diverged" in message and "epoch 1, step" in message and "lower" in message
    assert "--lr" in message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_nan_keeps_the_last_good_checkpoint(data_root, tmp_path):
    bundle = load_dataset("digits", data_root, limit=64)
    model = build_model("cnn", bundle.num_classes)
    steps = math.ceil(bundle.sizes["train"] / 16)  # 4 steps per epoch
    calls = []
    real_loss = model.loss

    def poisoned_loss(output, inputs, targets):
        calls.append(1)
        loss = real_loss(output, inputs, targets)
        return loss * float("nan") if len(calls) == steps + 3 else loss

    model.loss = poisoned_loss
    config = quick(data_root, epochs=2, val_every=5)  # no validation before the NaN
    with pytest.raises(trainer.DivergedError, match=r"epoch 2, step 3 of 4") as error:
        trainer.fit(model, bundle, config, run_dir=tmp_path)
    assert "checkpoint (epoch 1) is kept" in str(error.value)
    state = trainer.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_stop_event_and_callback(data_root, tmp_path):
    stop = threading.Event()
    events = []

    def callback(event):
        events.append(event)
        if event["event"] == "step" and event["epoch"] == 2 and event["step"] == 2:
            stop.set()

    config = quick(data_root, out=str(tmp_path / "run"))
    run_dir = trainer.run_training(config, callback=callback, stop=stop)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "epoch" in kinds
    # stopped right after the step that set the event
    assert [e["step"] for e in events if e["event"] == "step" and e["epoch"] == 2] == [1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_at"] == [2, 2]
    assert summary["epochs_done"] == 1 and not (run_dir / "predictions.csv").exists()
    # a stopped run is resumable
    trainer.run_training(config, resume=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_done"] == 2


def test_fit_returns_a_history_frame(data_root):
    bundle = load_dataset("digits", data_root, limit=48)
    model = build_model("autoencoder", bundle.num_classes)  # its combined loss, same loop
    history = train.fit(model, bundle, quick(data_root, epochs=1, limit=48))
    frame = history.to_frame()
    assert list(frame.columns) == list(train.History.COLUMNS) and len(frame) == 1
    assert frame["val_acc"].notna().all()  # the last epoch always validates
    assert train.History().to_frame().shape == (0, len(train.History.COLUMNS))


def test_improved_recipe_trains(data_root):
    bundle = load_dataset("digits", data_root, limit=48)
    config = RunConfig.from_recipe(
        "improved", epochs=1, limit=48, progress=False, data_root=data_root
    )
    model = build_model("cnn", bundle.num_classes, batch_norm=config.batch_norm)
    history = train.fit(model, bundle, config)
    assert history[0]["lr"] == pytest.approx(1e-3)
    assert math.isfinite(history[0]["train_loss"])

"""Training over several processes: torchrun + DistributedDataParallel on the CPU (Gloo).

The multi-process tests start two ranks with `python -m torch.distributed.run` (torchrun)
on the embedded digits data (45 images per split, one or two epochs, one thread per rank)
and compare them with one process training on the same global batch. The NCCL (CUDA) path
runs the same code with another backend; it needs GPUs and is not run here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from hybridlib.config import RunConfig
from hybridlib.data import load_dataset
from hybridlib.engine import distributed
from hybridlib.engine.loading import rank_loader
from hybridlib.engine.trainer import run_training
from hybridlib.errors import HybridError
from hybridlib.tools import cli

ROOT = Path(__file__).resolve().parents[1]
# 45 training images in batches of 16: the last global batch (13) splits unevenly (7 + 6)
TRAIN = ["--model", "cnn", "--dataset", "digits", "--limit", "45", "--lr", "1e-3"]
TRAIN += ["--batch-size", "16", "--seed", "0", "--device", "cpu"]
LAUNCH_TIMEOUT_S = 240  # the bound on every multi-process command

# `python -m hybridlib ...` with a fault planted for the failure-path tests. Its first
# argument, "RANK:STEP" or "RANK:STEP:hang", makes that rank leave with os._exit(1) at its
# STEP-th training step (counted over all epochs), or stop responding there.
FAULTY_HYBRIDLIB = """
import os, sys, time
import torch
from hybridlib.engine import distributed
from hybridlib.tools import cli

rank, step, how = (sys.argv[1].split(":") + ["exit"])[:3]
real_wrap_model = distributed.wrap_model


def wrap_model(*args, **kwargs):
    model, batches = real_wrap_model(*args, **kwargs)
    steps = []

    def fault(module, inputs):
        if module.training and torch.is_grad_enabled():
            steps.append(1)
            if len(steps) == int(step):
                if how == "hang":
                    time.sleep(10**6)
                os._exit(1)

    if distributed.rank() == int(rank):
        model.register_forward_pre_hook(fault)
    return model, batches


distributed.wrap_model = wrap_model
sys.argv = ["hybridlib", *sys.argv[2:]]
sys.exit(cli.main())
"""


def hybridlib_command(fault: str | None) -> list[str]:
    """How to start `python -m hybridlib`, with `fault` planted (see FAULTY_HYBRIDLIB)."""
    if fault is None:
        return ["-m", "hybridlib"]
    return ["-c", FAULTY_HYBRIDLIB, fault]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDLIB_DIST")}
    env.update(
        OMP_NUM_THREADS="1",  # two ranks on two shared cores
        TQDM_DISABLE="1",
        HYBRIDLIB_DATA=str(tmp / "data"),
        HYBRIDLIB_RUNS=str(tmp / "runs"),
        HYBRIDLIB_DIST_TIMEOUT="60",
    )
    if sys.platform.startswith("linux"):  # Gloo's own sockets on the loopback interface only
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.update(extra)
    return env


def torchrun(
    tmp: Path, *args: str, fault: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m hybridlib train ...`, bounded by LAUNCH_TIMEOUT_S."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    # one machine: the ranks meet at 127.0.0.1 (torch's TCPStore itself still listens
    # on every interface, whatever the address; torchrun has no option to change that)
    command += ["--master_addr=127.0.0.1", "--master_port", str(free_port())]
    if fault is None:
        command += ["-m", "hybridlib", "train", *args]
    else:  # the planted fault's `python -c`, unbuffered as torchrun starts its ranks
        command += ["--no-python", sys.executable, "-u", *hybridlib_command(fault), "train", *args]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=child_env(tmp, **env),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def data(tmp) -> Path:
    """The digits splits decoded once into the cache every process reads."""
    bundle = load_dataset("digits", tmp / "data", limit=45)
    for split in ("train", "val", "test"):
        bundle.tensors(split)
    return tmp / "data"


@pytest.fixture(scope="module")
def single(tmp, data) -> Path:
    """One process, global batch 16, one epoch."""
    config = RunConfig(
        model="cnn",
        dataset="digits",
        limit=45,
        lr=1e-3,
        epochs=1,
        device="cpu",
        progress=False,
        data_root=str(data),
        out=str(tmp / "single"),
    )
    return run_training(config)


# ------------------------------------------------------------------ in one process


@pytest.mark.parametrize("world", [2, 3])
def test_rank_slices_make_the_global_batch(world):
    """The ranks' batches of every step, side by side, are one process's global batch."""
    bundle = load_dataset("digits", limit=45)
    options = dict(augment=True, crop=24, seed=3)
    one = bundle.loader("train", 6 * world, **options)
    ranks = [rank_loader(bundle, "train", 6, shard=(r, world), **options) for r in range(world)]
    for epoch in (1, 2):
        for loader in (one, *ranks):
            loader.set_epoch(epoch)
        steps = [list(loader) for loader in ranks]
        assert all(len(s) == len(one) for s in steps)
        for step, (x, y) in enumerate(one):
            torch.testing.assert_close(torch.cat([s[step][0] for s in steps]), x, rtol=0, atol=0)
            assert torch.equal(torch.cat([s[step][1] for s in steps]), y)
        # each rank a disjoint part, together every image, reshuffled per epoch
        parts = [loader.sample_indices().tolist() for loader in ranks]
        assert sorted(sum(parts, [])) == list(range(45))
    assert ranks[0].sample_indices(1).tolist() != ranks[0].sample_indices(2).tolist()


def test_a_last_batch_smaller_than_the_ranks_is_left_out_of_training():
    bundle = load_dataset("digits", limit=45)
    train = [rank_loader(bundle, "train", 4, shard=(r, 4), seed=0) for r in range(4)]  # 2 x 16 + 13
    assert [len(t) for t in train] == [3, 3, 3, 3]
    assert sum(t.num_samples for t in train) == 45
    odd = [rank_loader(bundle, "train", 1, shard=(r, 4), seed=0) for r in range(4)]  # 11 x 4 + 1
    assert [len(t) for t in odd] == [11, 11, 11, 11]
    assert sum(t.num_samples for t in odd) == 44  # 1 image for 4 ranks: left out
    test = [rank_loader(bundle, "test", 2, shard=(r, 4)) for r in range(4)]  # evaluation: all
    assert sorted(sum((list(t.sample_indices(0).tolist()) for t in test), [])) == list(range(45))


def test_every_rank_computes_its_share_of_the_global_batch():
    """Each rank's gradient weight n_r * W / n, from its own batches alone, is what adding
    up the ranks' image counts gives, in float32 (exactly 1 for equal shares)."""
    bundle = load_dataset("digits", limit=45)
    world, per_rank = 2, 8  # 45 images: global batches of 16, 16 and 13 (7 + 6)
    counts, scales = [], []
    for rank in range(world):
        loader = rank_loader(bundle, "train", per_rank, shard=(rank, world), seed=0)
        share = distributed._Share(world=world)
        batches = distributed.ShareWeighted(
            loader, share, global_batch=per_rank * world, images=bundle.sizes["train"]
        )
        batches.set_epoch(1)
        steps = [(y.shape[0], share.scale) for _, y in batches]
        counts.append([n for n, _ in steps])
        scales.append([scale for _, scale in steps])
    assert counts == [[8, 8, 7], [8, 8, 6]]
    for step, total in enumerate(map(sum, zip(*counts, strict=True))):
        for rank in range(world):
            # the weight as an all-reduce of the counts on the device computed it
            images = torch.tensor(float(counts[rank][step]))
            expected = (images * world / torch.tensor(float(total))).item()
            assert scales[rank][step] == expected
    assert scales[0][:2] == scales[1][:2] == [1.0, 1.0]


def test_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(HybridError) as error:
        distributed.per_rank_batch(16)
    message = str(error.value)
    assert "--batch-size 16 is the global batch" in message
    assert "--batch-size 15 or 18" in message and "--per-rank-batch" in message
    assert distributed.per_rank_batch(18) == 6
    assert distributed.per_rank_batch(16, per_rank=True) == 16


def test_environment_detection(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.environment() is None  # one process: nothing to join
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(HybridError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        distributed.environment()
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    env = distributed.environment()
    assert (env["rank"], env["world_size"], env["local_rank"]) == (1, 2, 1)
    assert not distributed.active() and distributed.shard() == (0, 1)
    monkeypatch.setenv("HYBRIDLIB_DIST_TIMEOUT", "soon")
    with pytest.raises(HybridError, match="HYBRIDLIB_DIST_TIMEOUT"):
        distributed.timeout_s()


# ------------------------------------------------------- two processes, torchrun


@pytest.mark.slow
def test_torchrun_matches_one_process(tmp, single):
    done = torchrun(tmp, *TRAIN, "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dirs = list((tmp / "runs" / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs  # only rank 0 writes, into one run directory
    ddp, one = run_dirs[0], single
    assert {p.name for p in ddp.iterdir()} == {p.name for p in one.iterdir()}
    # the same updates: DDP's share-weighted mean over 7 + 6 images equals the mean of 13,
    # up to float rounding. Adam divides each gradient by its own running size, so a weight
    # whose gradient is almost zero may move by up to lr per step on one side only: allow
    # that for a handful of weights, and 1e-4 for all the others.
    steps, lr = 3, 1e-3  # 45 images, batch 16
    for name, value in weights(one).items():
        difference = (weights(ddp)[name] - value).abs()
        assert difference.max() <= steps * lr, name
        assert (difference > 1e-4).float().mean() < 1e-3, name
    a, b = summary(ddp), summary(one)
    assert (a["ranks"], b["ranks"]) == (2, 1)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for key in ("train_acc", "val_acc", "test_acc", "test_size", "sizes"):
        assert a[key] == b[key], key
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # every test image evaluated once, in split order, by one of the ranks
    pa, pb = (pd.read_csv(d / "predictions.csv") for d in (ddp, one))
    columns = ["index", "target", "prediction"]
    pd.testing.assert_frame_equal(pa[columns], pb[columns])
    pd.testing.assert_frame_equal(*(pd.read_csv(d / "confusion.csv") for d in (ddp, one)))
    assert done.stdout.count("test accuracy") == 1  # rank 0 reports for both


@pytest.mark.slow
def test_killed_rank_fails_fast_and_the_run_resumes(tmp, data):
    out = tmp / "killed"
    start = time.monotonic()
    # rank 1 dies at its 5th step: epoch 2 (3 steps per epoch), after epoch 1's checkpoint
    failed = torchrun(tmp, *TRAIN, "--epochs", "2", "--out", str(out), fault="1:5")
    assert failed.returncode != 0
    assert time.monotonic() - start < LAUNCH_TIMEOUT_S
    log = failed.stdout + failed.stderr
    # rank 0 says why it stops, unless torchrun ended it first; torchrun names rank 1
    assert "another rank died or stalled" in log or "rank      : 1" in log, log[-3000:]
    assert (out / "checkpoint.pt").is_file()
    # rank 0 stops on the dead peer's closed connection (no summary) or, if torchrun's
    # SIGTERM reaches it first, as an interrupted run: never as a finished one
    if (out / "summary.json").exists():
        assert summary(out)["status"] == "interrupted"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1

    resumed = torchrun(tmp, "--device", "cpu", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(out)["status"] == "complete" and summary(out)["epochs_done"] == 2
    # the same as a torchrun run that was never interrupted (bit for bit on one machine)
    whole = tmp / "uninterrupted"
    assert torchrun(tmp, *TRAIN, "--epochs", "2", "--out", str(whole)).returncode == 0
    for name, value in weights(whole).items():
        torch.testing.assert_close(weights(out)[name], value)
    timings = ["time_s", "images_per_s"]
    history = [pd.read_csv(d / "metrics.csv").drop(columns=timings) for d in (out, whole)]
    pd.testing.assert_frame_equal(*history)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["exit", "hang"])
def test_a_dead_or_stalled_peer_gives_a_message_not_a_hang(tmp, data, fault):
    """Launched without torchrun's agent (as by a cluster's own launcher): rank 0 notices."""
    port = str(free_port())
    ranks = []
    for rank in (0, 1):
        env = child_env(
            tmp,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            HYBRIDLIB_DIST_TIMEOUT="8",  # how long rank 0 waits for a stalled rank 1
        )
        command = [sys.executable, *hybridlib_command(f"1:2:{fault}"), "train", *TRAIN]
        command += ["--epochs", "1"]
        command += ["--out", str(tmp / f"peer-{fault}")]
        ranks.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        )
    try:
        _, err = ranks[0].communicate(timeout=LAUNCH_TIMEOUT_S)
    finally:
        ranks[1].kill()
        ranks[1].communicate()
    assert ranks[0].returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("hybridlib train: error: rank 0 of 2 stopped training: another rank")
    assert "--resume" in last and str(tmp / f"peer-{fault}") in last
    if fault == "hang":
        assert "after waiting 8 s" in last


# ------------------------------------------------------------- the grid in shards


@pytest.mark.slow
def test_sharded_grid_merges_to_the_unsharded_table(tmp, data, monkeypatch, capsys):
    monkeypatch.setenv("HYBRIDLIB_DATA", str(data))
    monkeypatch.setenv("HYBRIDLIB_RUNS", str(tmp / "runs-grid"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    grid = ["reproduce", "--table", "paper-b", "--seeds", "1", "--models", "yu_cnn", "row_gru"]
    grid += ["--datasets", "digits", "--epochs", "1", "--limit", "24", "--device", "cpu"]

    def table(folder: Path) -> pd.DataFrame:
        return pd.read_csv(folder / "paper_b_table.csv", index_col=[0, 1])

    assert cli.main([*grid, "--out", str(tmp / "whole")]) == 0
    # two shards into one shared folder: the last one writes the whole grid's table
    for shard in ("1/2", "0/2"):
        assert cli.main([*grid, "--out", str(tmp / "shared"), "--shard", shard]) == 0
    pd.testing.assert_frame_equal(table(tmp / "shared"), table(tmp / "whole"))
    # the two shards' runs on "machines" without a shared disk, merged by `results --out`
    for i, run in enumerate(sorted((tmp / "shared").glob("digits-*"))):
        shutil.copytree(run, tmp / f"machine{i}" / run.name)
    merge = ["results", str(tmp / "machine0"), str(tmp / "machine1"), "--table", "paper-b"]
    assert cli.main([*merge, "--out", str(tmp / "merged")]) == 0
    pd.testing.assert_frame_equal(table(tmp / "merged"), table(tmp / "whole"))
    assert table(tmp / "whole")["n_seeds"].tolist() == [1, 0, 1, 0, 0]
    capsys.readouterr()

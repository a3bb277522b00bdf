"""Short seeded runs whose full record pins the training code's behaviour.

`tests/test_pin.py` runs them through the command line and compares their
record with `tests/fixtures/pin_runs.json`, written by the code before a
change that must not alter behaviour, one record per kind of CPU: its
instruction set and vendor (the kernels PyTorch picks on AVX2 and on AVX-512, and
on Intel and AMD processors of one instruction set, round differently). The AVX2
and the Intel AVX-512 records were made by the code before the package was
reorganised; the AMD AVX-512 one by the reorganised code (an AMD processor rounds
apart from the Intel record as another PyTorch release does: 8 and 9 of 144
predictions flip in the two near-chance runs, so it needs its own record):

    HYBRIDLIB_THREADS=1 python tests/pin_runs.py --write   # (re-)record this CPU's (on purpose)

A record is everything a run writes that does not depend on the clock: each
epoch's losses, accuracies and learning rate, every test prediction with its
confidence, the summary's numbers, and a digest of the final weights.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hybridlib import runtime

# The kernels PyTorch picks on this CPU (AVX2, AVX512, ...) and its vendor: they change
# float sums. CAPABILITY alone names the oldest records, made before vendors were told apart.
CAPABILITY = torch.backends.cpu.get_cpu_capability()
CPU = f"{CAPABILITY} {runtime.cpuinfo('vendor_id') or 'unknown'}"

FIXTURE = Path(__file__).parent / "fixtures" / "pin_runs.json"
COMMON = ["--dataset", "digits", "--limit", "160", "--val-every", "1", "--device", "cpu"]
# name -> the command lines of `python -m hybridlib train` run in order into one folder
RUNS = {
    "cnn_paper": [["--model", "cnn", "--epochs", "2", "--lr", "1e-3"]],
    "autoencoder_improved": [
        ["--model", "autoencoder", "--recipe", "improved", "--epochs", "2", "--seed", "1"]
    ],
    "yu_conv_lstm_crops": [
        ["--model", "yu_conv_lstm", "--epochs", "1", "--no-flip", "--weight-decay", "5e-4"]
    ],
    "cnn_lstm_skip_resumed": [
        ["--model", "cnn_lstm_skip", "--epochs", "1", "--lr", "1e-3", "--deterministic"],
        ["--resume", "--epochs", "2"],
    ],
}
CLOCK = {"time_s", "images_per_s"}


def run(name: str, root: Path) -> dict:
    """Run one pinned case under `root` and return its record."""
    out = root / name
    env = {
        **os.environ,
        "HYBRIDLIB_THREADS": "1",
        "HYBRIDLIB_RUNS": str(root),
        "PYTHONHASHSEED": "0",
    }
    for i, args in enumerate(RUNS[name]):
        cmd = [sys.executable, "-m", "hybridlib", "train", "--out", str(out), *args]
        if i == 0:
            cmd += COMMON
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return record(out)


def record(out: Path) -> dict:
    """What a finished run folder says, less the clock."""
    with open(out / "metrics.csv") as f:
        epochs = [{k: v for k, v in row.items() if k not in CLOCK} for row in csv.DictReader(f)]
    with open(out / "predictions.csv") as f:
        predictions = [
            [row["target"], row["prediction"], row["confidence"]] for row in csv.DictReader(f)
        ]
    summary = json.loads((out / "summary.json").read_text())
    keep = (
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
        "epochs_done",
        "num_params",
    )
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return {
        "epochs": epochs,
        "predictions": predictions,
        "summary": {k: summary[k] for k in keep},
        "weights_sha256": digest.hexdigest(),
    }


def record_all() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run(name, Path(tmp)) for name in RUNS}
    return {"torch": torch.__version__, "cpu": CPU, "runs": runs}


def write_fixture(result: dict) -> None:
    """Add (or replace) this CPU's runs in the fixture; other CPUs' records stay."""
    recorded = {}
    if FIXTURE.is_file():
        previous = json.loads(FIXTURE.read_text())
        if previous["torch"] == result["torch"]:
            recorded = previous["recorded"]
    recorded[result["cpu"]] = result["runs"]
    fixture = {"torch": result["torch"], "recorded": recorded}
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {FIXTURE.name}")
    args = parser.parse_args()
    result = record_all()
    if args.write:
        write_fixture(result)
        print(f"wrote {FIXTURE}")
    else:
        print(json.dumps({k: v["summary"] for k, v in result["runs"].items()}, indent=1))

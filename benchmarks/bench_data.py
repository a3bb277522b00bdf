"""Time the fast in-memory loader against a plain torchvision DataLoader, split by split.

    python benchmarks/bench_data.py --dataset caltech101 --data-root ../shared/data
    python benchmarks/bench_data.py --dataset digits --device cuda --batch-size 128

For each split it prints, side by side:

- fast build (decode): decoding the whole split into a uint8 tensor and writing the
  disk cache (a fresh temporary cache folder, so this is the first-run cost);
- fast build (cached): the same split read back from the disk cache (every later run);
- fast epoch: moving the split to the device plus one epoch of `bundle.loader(...)`
  (shuffle and flips on for "train", as in training);
- plain epoch: one epoch of `DataLoader(bundle.dataset(split), ...)`, decoding and
  transforming each image per sample and moving each batch to the device.

Epochs are timed `--repeats` times and the best is shown (the machine may be shared).
A header records the command, hardware, versions and thread count, since the numbers
mean nothing without them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from hybridlib.data import DATASET_NAMES, SPLITS, load_dataset
from hybridlib.engine.cache import DiskCache


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch(loader, device: torch.device) -> tuple[float, int]:
    """Seconds for one pass over `loader`, with every batch on `device`; images seen."""
    _sync(device)
    start, seen = time.perf_counter(), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        seen += len(y)
    _sync(device)
    return time.perf_counter() - start, seen


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="caltech101", choices=DATASET_NAMES)
    parser.add_argument("--data-root", default=None, help="(default: $HYBRIDLIB_DATA)")
    parser.add_argument("--folder", default=None, help="for --dataset folder")
    parser.add_argument("--batch-size", type=int, default=16, help="(default: 16, paper A)")
    parser.add_argument("--device", default="cpu", help="(default: cpu)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes for the plain path (default: 0)",
    )
    parser.add_argument("--limit", type=int, default=None, help="images per split at most")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default: 1: more threads only add overhead to the small "
        "per-batch operations on a busy 2-core machine)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="epochs timed per path; best shown (default: 3)"
    )
    return parser.parse_args(argv)


def _print_header(args: argparse.Namespace, device: torch.device) -> None:
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"hardware: {hardware}, {os.cpu_count()} CPUs, "
        f"torch threads {args.threads}, device {device}"
    )
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}")


def _time_split(bundle, again, split: str, args: argparse.Namespace, device) -> str:
    """One table row: `bundle` decodes `split` (and writes the cache), `again` reads it."""
    start = time.perf_counter()
    bundle.tensors(split)  # decode and write the cache
    decode = time.perf_counter() - start
    start = time.perf_counter()
    again.tensors(split)  # read back from the cache
    cached = time.perf_counter() - start
    _ = bundle.mean  # statistics come from the training split; not timed below

    start = time.perf_counter()
    fast = bundle.loader(split, args.batch_size, device=device)
    _sync(device)
    to_device = time.perf_counter() - start
    fast_epoch, n_fast = min(_epoch(fast, device) for _ in range(args.repeats))

    plain = DataLoader(
        bundle.dataset(split),
        batch_size=args.batch_size,
        shuffle=split == "train",
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    plain_epoch, n_plain = min(_epoch(plain, device) for _ in range(args.repeats))
    assert n_fast == n_plain == bundle.sizes[split]
    fast_total = to_device + fast_epoch
    return (
        f"{split:<6} {n_fast:>7,} {decode:>10.2f}s {cached:>10.3f}s "
        f"{fast_total:>10.3f}s {plain_epoch:>11.2f}s {plain_epoch / fast_total:>10.0f}x"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    _print_header(args, device)
    with tempfile.TemporaryDirectory(prefix="bench-data-cache-") as folder:
        cache = DiskCache(folder)  # a fresh one, so the first build is the first run's cost
        options = dict(root=args.data_root, folder=args.folder, limit=args.limit, cache=cache)
        start = time.perf_counter()
        bundle = load_dataset(args.dataset, **options)
        listing = time.perf_counter() - start
        print(f"data set: {bundle!r}")
        print(
            f"listing and splitting the files: {listing:.2f} s; batch size {args.batch_size}, "
            f"plain DataLoader workers {args.workers}; epochs: best of {args.repeats}\n"
        )
        header = (
            f"{'split':<6} {'images':>7} {'fast build':>11} {'fast build':>11} "
            f"{'fast epoch':>11} {'plain epoch':>12} {'plain/fast':>11}"
        )
        print(header)
        print(
            f"{'':<6} {'':>7} {'(decode)':>11} {'(cached)':>11} {'':>11} {'':>12} {'(epoch)':>11}"
        )
        again = load_dataset(args.dataset, **options)  # a second run: reads the cache
        for split in SPLITS:
            print(_time_split(bundle, again, split, args, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())

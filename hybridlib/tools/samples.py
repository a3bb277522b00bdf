"""Sample grids of the real data sets, committed so that a reader without the data sees them.

    python -m hybridlib figures --samples --data-root ../shared/data   # -> figures/data/

Each grid is `plots.plot_samples` of a small stratified draw of the training split (the
first eight images of every class), the picture notebook 01 draws from the data it
finds; where it finds none, notebook 01 shows these files. `provenance.json` beside
them names the command, the commit and where each data set was read from.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from hybridlib import plots, runtime
from hybridlib.data import load_dataset
from hybridlib.errors import HybridError

REAL = ("cifar10", "caltech101", "tiny-imagenet")


def repo_figures(folder: str) -> Path:
    """figures/<folder> in the repository (or under the working directory, installed)."""
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / "figures" / folder


def default_out() -> Path:
    """figures/data, where the committed sample grids live."""
    return repo_figures("data")


def save_sample_figures(
    root, out=None, names=REAL, *, limit: int = 400, dpi: int = 100
) -> list[Path]:
    """Write `<out>/<name>.png` for every data set in `names`, and `<out>/provenance.json`.

    Args:
        root: the data root holding the data sets (a missing one raises `HybridError`,
            which says where it was looked for and how to get it).
        out: folder (default: figures/data in the repository).
        limit: images per split to decode (a stratified draw; 8 per class are drawn).
        dpi: resolution.
    Returns:
        The figures written.
    """
    command = f"python -m hybridlib figures --samples --data-root {root}"
    command += f" --out {out}" if out is not None else ""
    out = Path(out) if out is not None else default_out()
    out.mkdir(parents=True, exist_ok=True)
    paths, sources = [], {}
    for name in names:
        try:
            bundle = load_dataset(name, root, limit=limit)
        except HybridError as error:  # this command reads only: say how to download first
            raise HybridError(
                f"{error}\n`figures --samples` does not download; first run: "
                f"python -m hybridlib data {name} --download --data-root {root}"
            ) from None
        fig = plots.plot_samples(bundle, per_class=8)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
        paths.append(path)
        sources[name] = {"source": str(bundle.source), "classes": list(bundle.classes)}
    stamp = {
        "command": command,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": runtime.git_commit(),
        "split": "train",
        "limit": limit,
        "datasets": sources,
    }
    (out / "provenance.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return paths

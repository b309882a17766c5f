"""Builders of HF-format model archives (good and hostile) for the upload tests."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tarfile
import zipfile

CONFIG = {
    "model_type": "bert",
    "architectures": ["BertForSequenceClassification"],
    "hidden_size": 8,
    "id2label": {"0": "neg", "1": "pos"},
}


def safetensors_bytes(shapes: dict[str, list[int]]) -> bytes:
    """A valid safetensors file of F32 tensors with random contents (random, so it does not
    compress like a bomb)."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + os.urandom(offset)


def model_files(**overrides: bytes | None) -> dict[str, bytes]:
    files: dict[str, bytes | None] = {
        "config.json": json.dumps(CONFIG).encode(),
        "vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\ngood\nbad\n",
        "tokenizer_config.json": json.dumps({"do_lower_case": True}).encode(),
        "model.safetensors": safetensors_bytes({"w": [4, 8], "b": [8]}),
    }
    files.update(overrides)
    return {k: v for k, v in files.items() if v is not None}


def zip_bytes(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def tar_gz_bytes(
    files: dict[str, bytes],
    *,
    prefix: str = "",
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()

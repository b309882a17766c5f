"""Checking an extracted HF-format model folder by its bytes, without loading it.

The API never imports torch. Every file of an upload is judged by its content, not only its
name (`check_member`); a name can be anything (`pytorch_model`, `model.bin.`, `vocab.txt`),
bytes cannot lie about what they are:

- refused whatever the name: a pickle (protocol 2-5 starts with 0x80 and its protocol byte;
  protocol 0/1 pickles are recognised by parsing their opcodes, never by running them), a zip
  (a PyTorch checkpoint is a zip holding `data.pkl`; any other nested archive is refused too);
- kept only when the content is what the name promises: `*.safetensors` a valid safetensors
  file (the 8-byte header length, then a JSON table whose every entry is checked: known dtype,
  shape of non-negative ints, two int offsets inside the data, matching dtype size x shape,
  tensors tiling the data), `*.json` JSON, `*.model` a protobuf (a sentencepiece model), any
  other name UTF-8 text without NUL bytes (vocab.txt, merges.txt, README.md, .gitattributes).
  Anything else (ONNX, images, binaries) is refused as not recognised.

JSON is parsed with `sec_engine.safe_json` (a nesting limit, never a RecursionError). Before
extraction, `check_entry_name` refuses pickle suffixes and code by name, so their bytes are
never written. Nothing that needs `trust_remote_code` is accepted: an `auto_map` or a
`*remote_code*` key anywhere in a config's JSON tree, and a `model_type` outside the engine's
list (`sec_engine.models.supported`).
"""

from __future__ import annotations

import codecs
import io
import math
import mmap
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from sec_engine import safe_json
from sec_engine.models.supported import SUPPORTED_MODEL_TYPES, supported_model_types_text

# Formats that unpickle on load (arbitrary code execution) or that we cannot load safely.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
REFUSED_SUFFIXES = frozenset({".npy", ".npz", ".h5", ".msgpack", ".py", ".pyc", ".so"})
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "vocab.txt",
        "vocab.json",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
    }
)
# Configs transformers reads from the model folder: searched (whole tree) for remote code.
CONFIG_FILES = (
    "config.json",
    "tokenizer_config.json",
    "generation_config.json",
    "preprocessor_config.json",
)
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# Protocol 0/1 pickles are recognised by walking their opcodes (in Python, without running
# them). The walk reads at most this much: a real tokenizer or text file fails to parse as
# opcodes within a few bytes, so a file whose first 16 MiB all parse is treated as a pickle
# instead of being walked to its end (a cap on the CPU one upload can cost).
PICKLE_SCAN_BYTES = 16 * 1024 * 1024
TEXT_CHUNK = 1024 * 1024
_PICKLE_OPCODES = frozenset(op.code for op in pickletools.opcodes)


class ModelCheckError(ValueError):
    """The folder is not a safe, loadable HF-format model; the message says why."""


@dataclass
class ModelInfo:
    architecture: str
    model_type: str
    num_parameters: int
    weight_files: list[str]
    config: dict[str, Any] = field(default_factory=dict)


def check_entry_name(rel: PurePosixPath) -> None:
    """Refuse unsafe files by name, before their bytes are written. Trailing dots and spaces
    are ignored (`model.bin.` is `model.bin` to Windows and to a careless user)."""
    suffix = PurePosixPath(rel.name.rstrip(". ")).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelCheckError(
            f"{rel.as_posix()!r} is a pickle-based checkpoint: safetensors only"
            " (convert with `model.save_pretrained(dir, safe_serialization=True)`)"
        )
    if suffix in REFUSED_SUFFIXES:
        if suffix in (".py", ".pyc", ".so"):
            raise ModelCheckError(
                f"{rel.as_posix()!r}: model archives must not contain code (remote code is not run)"
            )
        raise ModelCheckError(f"{rel.as_posix()!r}: unsupported weight format, safetensors only")


def inspect_model_dir(root: Path) -> ModelInfo:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    params = 0
    weights: list[str] = []
    for path in files:  # every member by content first: nothing below reads an unchecked file
        name = path.relative_to(root).as_posix()
        params += check_member(path, name)
        if path.suffix.lower() == ".safetensors":
            weights.append(name)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ModelCheckError("the archive has no config.json at its top level")
    config = _read_json_object(config_path, "config.json")
    _refuse_remote_code(config, "config.json")
    for extra in CONFIG_FILES[1:]:
        if (root / extra).is_file():
            _refuse_remote_code(_read_json_object(root / extra, extra), extra)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelCheckError("config.json has no 'model_type'")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelCheckError(
            f"config.json: model_type {model_type!r} is not supported; supported types:"
            f" {supported_model_types_text()}"
        )
    architectures = config.get("architectures")
    architecture = (
        architectures[0]
        if isinstance(architectures, list) and architectures and isinstance(architectures[0], str)
        else model_type
    )
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ModelCheckError(
            "no tokenizer files found: include tokenizer.json (or vocab.txt / vocab.json,"
            " or a sentencepiece model) next to config.json"
        )
    if not weights:
        raise ModelCheckError("no *.safetensors weights found: safetensors only")
    return ModelInfo(
        architecture=architecture,
        model_type=model_type,
        num_parameters=params,
        weight_files=weights,
        config=config,
    )


# -- one member, by content ------------------------------------------------------------------


def check_member(path: Path, name: str) -> int:
    """Refuse a member whose bytes are code-bearing or not what its name promises (module
    docstring). Returns the number of parameters it holds (a safetensors file), else 0."""
    if _is_pickle(path):
        raise ModelCheckError(
            f"{name!r} is a pickle (Python objects that can run code when loaded): safetensors"
            " only, whatever the file is called"
        )
    with path.open("rb") as f:
        magic = f.read(4)
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        if _zip_holds_pickle(path):
            raise ModelCheckError(
                f"{name!r} is a PyTorch checkpoint (a zip holding a pickle): safetensors only"
                " (convert with `model.save_pretrained(dir, safe_serialization=True)`)"
            )
        raise ModelCheckError(f"{name!r} is a zip archive: archives inside the upload are refused")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".safetensors":
        return count_safetensors_parameters(path, name)
    if suffix == ".json":
        _read_json(path, name)
    elif suffix == ".model":
        _check_protobuf(path, name)
    else:
        _check_text(path, name)
    return 0


def _is_pickle(path: Path) -> bool:
    """Whether the file starts with a pickle stream. Never unpickles: reads opcodes only."""
    with path.open("rb") as f:
        start = f.read(2)
        if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return True  # PROTO 2-5: what pickle, torch.save (legacy) and joblib write
        if not start or chr(start[0]) not in _PICKLE_OPCODES:
            return False  # most files: not even a first opcode
        head = start + f.read(PICKLE_SCAN_BYTES - len(start))
        more = bool(f.read(1))
    stream = io.BytesIO(head)
    ops = 0
    try:
        for opcode, _arg, _pos in pickletools.genops(stream):
            if opcode.name == "STOP":
                return ops > 0  # something was built, then STOP: pickle.loads would run it
            ops += 1
    except Exception:
        # A parse failure means "not a pickle", unless the opcodes were still valid when the
        # scan window ran out: then it is too pickle-like to keep.
        return more and stream.tell() >= len(head)
    return False


def _zip_holds_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.rsplit("/", 1)[-1] == "data.pkl" or n.endswith(".pkl") for n in names)


def _check_text(path: Path, name: str) -> None:
    """UTF-8 text without NUL bytes (streamed: a text file may be large)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(TEXT_CHUNK):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                _unrecognised(name, f"a NUL byte at offset {offset + nul}")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                _unrecognised(name, f"not UTF-8 text (bad byte at offset {offset + exc.start})")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        _unrecognised(name, "not UTF-8 text (it ends inside a character)")


def _check_protobuf(path: Path, name: str) -> None:
    """A `*.model` file must be a protobuf message (a sentencepiece model: field 1, the
    pieces, first), walked field by field to its exact end."""
    if path.stat().st_size == 0:
        _unrecognised(name, "an empty file")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[0] != 0x0A:
            _unrecognised(name, "not a sentencepiece model (protobuf)")
        pos, end = 0, len(data)
        while pos < end:
            key, pos = _varint(data, pos, name)
            wire = key & 7
            if key >> 3 == 0:
                _unrecognised(name, "not a sentencepiece model (protobuf field 0)")
            if wire == 0:
                _, pos = _varint(data, pos, name)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length, pos = _varint(data, pos, name)
                pos += length
            elif wire == 5:
                pos += 4
            else:
                _unrecognised(name, f"not a sentencepiece model (protobuf wire type {wire})")
        if pos != end:
            _unrecognised(name, "not a sentencepiece model (protobuf runs past the end)")


def _varint(data: mmap.mmap, pos: int, name: str) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    _unrecognised(name, "not a sentencepiece model (bad protobuf varint)")


def _unrecognised(name: str, why: str) -> NoReturn:
    raise ModelCheckError(
        f"{name!r}: content not recognised ({why}); a model archive may hold *.safetensors"
        " weights, *.json files, *.model sentencepiece files and UTF-8 text files only"
    )


# -- safetensors -----------------------------------------------------------------------------


def count_safetensors_parameters(path: Path, name: str | None = None) -> int:
    """Validate a safetensors file's header against its size and count its parameters."""
    label = repr(name or path.name)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ModelCheckError(f"{label}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise ModelCheckError(f"{label}: not a safetensors file (bad header length)")
        raw = f.read(header_len)
    try:
        header = safe_json.loads(raw)
    except safe_json.JSONTooDeep as exc:
        raise ModelCheckError(f"{label}: the safetensors header is {exc}") from exc
    except ValueError as exc:
        raise ModelCheckError(f"{label}: not a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise ModelCheckError(f"{label}: not a safetensors file (bad header)")
    data_len = size - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    total = 0
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ModelCheckError(f"{label}: __metadata__ must map names to strings")
            continue
        numel, begin, end = _tensor_entry(label, tensor, entry, data_len)
        spans.append((begin, end, tensor))
        total += numel
    # The tensors tile the data exactly, as the safetensors loader itself demands.
    pos = 0
    for begin, end, tensor in sorted(spans):
        if begin != pos:
            raise ModelCheckError(
                f"{label}: tensor {tensor!r} starts at byte {begin}, expected {pos}"
                " (tensors overlap or leave a gap)"
            )
        pos = end
    if pos != data_len:
        raise ModelCheckError(
            f"{label}: the tensors cover {pos} of the file's {data_len} data bytes"
        )
    return total


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_entry(label: str, tensor: str, entry: object, data_len: int) -> tuple[int, int, int]:
    """(numel, begin, end) of one header entry, or a ModelCheckError naming the tensor."""

    def bad(why: str) -> ModelCheckError:
        return ModelCheckError(f"{label}: tensor {tensor!r} has a bad header entry: {why}")

    if not isinstance(entry, dict):
        raise bad("not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad(f"shape must be a list of non-negative integers, not {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_int, offsets)):
        raise bad(f"data_offsets must be two integers, not {offsets!r}")
    begin, end = offsets
    numel = math.prod(shape)
    if not 0 <= begin <= end <= data_len:
        raise ModelCheckError(
            f"{label}: tensor {tensor!r} lies outside the file's data"
            f" (bytes {begin}-{end} of {data_len})"
        )
    if end - begin != numel * DTYPE_BYTES[dtype]:
        raise bad(f"{end - begin} bytes for {dtype} x {shape}")
    return numel, begin, end


# -- JSON ------------------------------------------------------------------------------------


def _read_json(path: Path, name: str) -> Any:
    try:
        return safe_json.loads(path.read_bytes())
    except safe_json.JSONTooDeep as exc:
        raise ModelCheckError(f"{name!r} is {exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a huge integer literal
        raise ModelCheckError(f"{name!r} is not valid JSON: {exc}") from exc


def _read_json_object(path: Path, name: str) -> dict[str, Any]:
    data = _read_json(path, name)
    if not isinstance(data, dict):
        raise ModelCheckError(f"{name} must be a JSON object")
    return data


def _refuse_remote_code(config: dict[str, Any], filename: str) -> None:
    """An `auto_map`, or a truthy `*remote_code*` key, anywhere in the tree (a nested
    `text_config` is a config too). Recursion is safe: safe_json bounded the depth."""

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                at = f"{where}.{key}" if where else str(key)
                if key == "auto_map":
                    raise ModelCheckError(
                        f"{filename} has an 'auto_map' (at {at!r}): models that need remote code"
                        " are not accepted"
                    )
                if "remote_code" in str(key).lower() and value:
                    raise ModelCheckError(f"{filename} asks for remote code ({at!r}); not accepted")
                walk(value, at)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(config, "")

"""The artifact contract: what an artifact directory holds and how it is read, in one place.

Everything that writes or reads an artifact goes through here, so each fact has one owner:

- `layout`: the file names (manifest.json, model/, model.int8.onnx, ...);
- `manifest`: the versioned pydantic `Manifest`, its writer and its readers;
- `files`: the one walker and hasher (the manifest's checksums, the worker's archive, the
  server's verification all list files the same way);
- `positions`: the longest input a model family accepts (engine and server truncate alike);
- `onnx_runtime`: the ONNX Runtime session options, so the latency in the manifest is
  measured the way the endpoint runs.

Torch-free (a test checks it): the API process imports it, and so does the worker.
"""

from sec_engine.artifact_contract.files import (
    ArtifactFile,
    ArtifactLayoutError,
    describe_files,
    sha256_file,
    walk_files,
)
from sec_engine.artifact_contract.layout import (
    EVENTS_NAME,
    HF_DIR,
    MANIFEST_NAME,
    ONNX_FP32,
    ONNX_INT8,
    TRACE_NAME,
)
from sec_engine.artifact_contract.manifest import (
    FORMAT_VERSION,
    Manifest,
    ManifestError,
    ManifestFiles,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from sec_engine.artifact_contract.onnx_runtime import cpu_session, session_options
from sec_engine.artifact_contract.positions import position_limit

__all__ = [
    "EVENTS_NAME",
    "FORMAT_VERSION",
    "HF_DIR",
    "MANIFEST_NAME",
    "ONNX_FP32",
    "ONNX_INT8",
    "TRACE_NAME",
    "ArtifactFile",
    "ArtifactLayoutError",
    "Manifest",
    "ManifestError",
    "ManifestFiles",
    "cpu_session",
    "describe_files",
    "parse_manifest",
    "position_limit",
    "read_manifest",
    "session_options",
    "sha256_file",
    "walk_files",
    "write_manifest",
]

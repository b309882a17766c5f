"""The names of an artifact's files, relative to its top directory.

model/              HF-format model and its tokenizer (config.json, model.safetensors,
                    tokenizer.json, tokenizer_config.json)
model.int8.onnx     the int8 ONNX Runtime graph the engine measures and the endpoint serves
model.onnx          an fp32 graph, for a model served unquantized (the serving bench's teacher)
trace.jsonl         one Synergy Controller decision per line
events.jsonl        the engine's milestones
manifest.json       what the run measured, which file holds what, the sha256 of every file
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
HF_DIR = "model"
ONNX_INT8 = "model.int8.onnx"
ONNX_FP32 = "model.onnx"
TRACE_NAME = "trace.jsonl"
EVENTS_NAME = "events.jsonl"

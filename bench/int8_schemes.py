"""Which int8 scheme keeps a fine-tuned model's accuracy: ONNX Runtime dynamic
quantization variants of one fp32 model, side by side, post-training (no QAT).

    python -m bench.int8_schemes [--model DIR] [--spec examples/minilm_rotten_tomatoes.yaml]

`--model` is an HF-format fine-tuned classifier; without it the all-label reference teacher of
`bench.engine_target` is trained first (same seed, split and recipe; about 8 minutes on 2
cores) and kept under var/bench/int8/. Every variant is scored on the spec's validation and
test splits (2,550 rows for Rotten Tomatoes: the difference of two schemes on the same rows is
what matters) and timed at batch 32, seq 128 with the engine's own ONNX Runtime options.
The engine's export scheme (`sec_engine.compression.qat.EXPORT_SCHEME`) is marked. The int4
rows are the `techniques.int4` export: weight MatMuls (MatMulNBits) or embedding tables
(GatherBlockQuantized) in 4 bits first, then the engine's int8 scheme on what is left.

Writes bench/results/int8_schemes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from bench.common import (
    DEFAULT_SPEC,
    RESULTS,
    ROOT,
    THREADS,
    LoadSampler,
    machine_info,
    spec_variant,
)
from sec_engine.cli import load_spec
from sec_engine.compression.int4_ops import quantize_int4
from sec_engine.compression.qat import EXPORT_SCHEME
from sec_engine.data.encoding import encode, fixed_length_batch, model_input_names, pad_id
from sec_engine.data.rotten_tomatoes import ensure as ensure_dataset
from sec_engine.data.splits import load_data
from sec_engine.evaluation.latency import time_onnx
from sec_engine.evaluation.runner import metrics_onnx
from sec_engine.evaluation.size import size_mb
from sec_engine.export.onnx_export import export_onnx
from sec_engine.export.per_token import rewrite_file

WORK = ROOT / "var" / "bench" / "int8"

ENGINE_OPTIONS = {
    "per_channel": EXPORT_SCHEME.per_channel,
    "reduce_range": EXPORT_SCHEME.reduce_range,
    "per_token": EXPORT_SCHEME.per_token_activations,
}
# Every variant is scored at each of these evaluation batch sizes: a row's answer should not
# depend on its batch-mates (`sec_engine.export.per_token`); the first is the headline.
EVAL_BATCHES = (64, 32, 1)

# name -> quantize_dynamic keyword arguments (None = the fp32 export itself); `per_token`:
# the activation scales rewritten per token afterwards, as the engine's export does.
VARIANTS: dict[str, dict[str, Any] | None] = {
    "fp32 (ONNX Runtime)": None,
    "int8 per-tensor": {"per_channel": False},
    "int8 per-channel": {"per_channel": True},
    "int8 per-tensor, reduced range": {"per_channel": False, "reduce_range": True},
    "int8 per-channel, reduced range": {"per_channel": True, "reduce_range": True},
    "int8 per-channel, reduced range, per-token activations": {
        "per_channel": True,
        "reduce_range": True,
        "per_token": True,
    },
    "int8 per-channel, per-token activations": {"per_channel": True, "per_token": True},
    "uint8 weights per-tensor": {"per_channel": False, "weight_type": "QUInt8"},
    "uint8 weights per-channel": {"per_channel": True, "weight_type": "QUInt8"},
    "int8 per-channel, MatMul only (fp32 embeddings)": {
        "per_channel": True,
        "op_types_to_quantize": ["MatMul"],
    },
    # `int4_block_size`: sec_engine.compression.int4_ops first, as techniques.int4 exports.
    "int4 weights, blocks of 32 (+ engine int8 scheme)": {"int4_block_size": 32, **ENGINE_OPTIONS},
    "int4 weights, blocks of 128 (+ engine int8 scheme)": {
        "int4_block_size": 128,
        **ENGINE_OPTIONS,
    },
    # `int4_embeddings`: the embedding tables in 4 bits (GatherBlockQuantized), MatMuls int8.
    "int4 embeddings, blocks of 32 (+ engine int8 scheme)": {
        "int4_block_size": 32,
        "int4_embeddings": True,
        **ENGINE_OPTIONS,
    },
    "int4 embeddings, blocks of 128 (+ engine int8 scheme)": {
        "int4_block_size": 128,
        "int4_embeddings": True,
        **ENGINE_OPTIONS,
    },
}


def reference_model(spec_path: Path) -> Path:
    """The all-label reference teacher of bench.engine_target, trained once and kept."""
    from bench.engine_target import train_reference

    target = WORK / "reference-model"
    if (target / "config.json").is_file():
        return target
    spec, inputs = load_spec(spec_path)
    with tempfile.TemporaryDirectory(prefix="sec-int8-") as tmp:
        ref = train_reference(spec, inputs, Path(tmp))
        target.parent.mkdir(parents=True, exist_ok=True)
        ref.model_dir.rename(target)
    return target


def run(model_dir: Path, spec_path: Path, work: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    spec, inputs = load_spec(spec_path)
    data = load_data(inputs, spec.split, spec.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    splits = {"validation": data.validation, "test": data.test}
    feats = {k: encode(tok, v, spec.training.max_seq_len) for k, v in splits.items()}
    labels = {k: np.array([e.label for e in v], dtype=np.int64) for k, v in splits.items()}
    latency_in = fixed_length_batch(tok, data.test, 32, 128)
    fp32 = export_onnx(model.eval(), latency_in, model_input_names(tok), work / "fp32.onnx")
    rows: list[dict[str, Any]] = []
    for name, options in VARIANTS.items():
        path = fp32
        if options is not None:
            path = work / f"{len(rows)}.onnx"
            kw = dict(options)
            kw["weight_type"] = getattr(QuantType, kw.pop("weight_type", "QInt8"))
            tokens = kw.pop("per_token", False)
            src = fp32
            if "int4_block_size" in kw:
                src = work / f"{len(rows)}.int4.onnx"
                block = kw.pop("int4_block_size")
                embeddings = kw.pop("int4_embeddings", False)
                quantize_int4(
                    fp32,
                    src,
                    matmuls=not embeddings,
                    embeddings=embeddings,
                    block_size=block,
                    symmetric=True,
                    accuracy_level=0,
                )
                # As the engine's export does: the com.microsoft ops' outputs are float.
                kw["extra_options"] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
            quantize_dynamic(src, path, **kw)
            if tokens:
                rewrite_file(path)
        by_batch = {}
        for batch in EVAL_BATCHES:
            acc = {
                k: metrics_onnx(path, feats[k], labels[k], batch, pad_id(tok), THREADS)["accuracy"]
                for k in splits
            }
            by_batch[batch] = acc
        acc = by_batch[EVAL_BATCHES[0]]
        n_rows = sum(len(v) for v in splits.values())
        both_at = {
            b: sum(a[k] * len(splits[k]) for k in splits) / n_rows for b, a in by_batch.items()
        }
        both = both_at[EVAL_BATCHES[0]]
        lat = time_onnx(path, latency_in, threads=THREADS, runtime=name)
        rows.append(
            {
                "name": name,
                "options": options,
                "engine_scheme": options == ENGINE_OPTIONS,
                "validation": round(acc["validation"], 6),
                "test": round(acc["test"], 6),
                "both": round(both, 6),
                "both_by_eval_batch": {str(b): round(v, 6) for b, v in both_at.items()},
                "eval_batch_spread_points": round(
                    100 * (max(both_at.values()) - min(both_at.values())), 3
                ),
                "size_mb": round(size_mb(path), 2),
                "ms_per_batch": round(lat.ms_per_batch, 1),
            }
        )
        print(f"[int8] {name}: {rows[-1]}", file=sys.stderr)
    fp = rows[0]
    for r in rows:
        r["points_vs_fp32"] = round(100 * (r["both"] - fp["both"]), 3)
    return {
        "rows": rows,
        "rows_scored": sum(len(v) for v in splits.values()),
        "model": str(model_dir),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# int8 schemes: post-training ONNX Runtime quantization of one fine-tuned model",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}, {THREADS} threads; 1-min load average during "
        f"the run: mean {result['load']['mean']}, max {result['load']['max']} (latency is "
        "noisy under load; accuracy is not).",
        "",
        f"Accuracy on validation + test ({result['rows_scored']} rows), evaluated at batch "
        f"{EVAL_BATCHES[0]}; the spread column is the largest difference of that accuracy "
        "over the evaluation batch sizes (one file, the same rows). `*` = the engine's "
        "export scheme (QAT trains against the same grid).",
        "",
        "| scheme | validation | test | both | Δ points vs fp32 | spread over eval batch "
        f"{'/'.join(map(str, EVAL_BATCHES))} (points) | MB | ms/batch (b32, s128) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        mark = " *" if r["engine_scheme"] else ""
        spread = r.get("eval_batch_spread_points")
        lines.append(
            f"| {r['name']}{mark} | {r['validation']:.4f} | {r['test']:.4f} | {r['both']:.4f} | "
            f"{r['points_vs_fp32']:+.2f} | {'' if spread is None else f'{spread:.2f}'} | "
            f"{r['size_mb']:.2f} | {r['ms_per_batch']:.1f} |"
        )
    lines += [
        "",
        "Reduced range keeps weights in [-64, 64]: on a CPU with AVX2 but without VNNI, ONNX "
        "Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose 16-bit "
        "sums can saturate; 7-bit weights stay clear of it. uint8 weights avoid it too but run "
        f"slower there. This CPU: {result['machine'].get('cpu_int8', 'not recorded')}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument(
        "--tag", default="", help="write int8_schemes.TAG.{json,md} (another model's results)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    _, inputs = load_spec(args.spec)
    ensure_dataset(inputs.train_path)
    command = "python -m bench.int8_schemes" + (f" --model {args.model}" if args.model else "")
    if spec_variant(args.spec):
        command += f" --spec {args.spec}"
    command += f" --tag {args.tag}" if args.tag else ""
    with LoadSampler() as load, tempfile.TemporaryDirectory(prefix="sec-int8-") as tmp:
        model_dir = args.model or reference_model(args.spec)
        result = run(model_dir, args.spec, Path(tmp))
    result.update(command=command, machine=machine_info(), load=load.summary())
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"int8_schemes.{args.tag}" if args.tag else "int8_schemes"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

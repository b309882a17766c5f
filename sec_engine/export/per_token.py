"""Per-token activation scales for a dynamically quantized int8 ONNX graph.

ONNX Runtime's dynamic quantization (`quantize_dynamic`) puts a `DynamicQuantizeLinear` in
front of every int8 MatMul: one uint8 scale and zero point for the whole activation tensor,
taken from its minimum and maximum at run time. The tensor holds every row of the batch and
every padding position, so one row's logits move with its batch-mates and with the padding
length. Measured on the seed-1 engine-target student: the same file scored 0.8369 / 0.8345 /
0.8376 on the test split at batch 1 / 32 / 64, and on the hosted endpoint micro-batching
made a user's answer depend on other users' requests.

This rewrite replaces each `DynamicQuantizeLinear` by symmetric int8 with one scale per token
(per row of the last axis), the scheme of LLM.int8() and ZeroQuant for activations:

    scale = max(|x|) / 127 over the token's features      (ReduceMax, ReduceMin: two reads)
    q     = round(x / scale) + 128  as uint8               (one per-axis QuantizeLinear)

The +128 offset keeps the uint8 x int8 kernels (u8s8) that x86 CPUs multiply fastest: the
zero point is the constant 128 for every token, so the int8 GEMM still gets the scalar zero
point, which its CPU kernel requires. The int8 product is rescaled per output channel inside
ONNX Runtime's `MatMulIntegerToFloat` (a `com.microsoft` op, as the int4 export's are), then
multiplied by the `[..., 1]` token scale (see :func:`per_token_activations` for why in that
order). A token's int8 codes now depend on that token alone, so the answer for a row is
the same at any batch size and padding length (up to float summation order).

Pure file to file (onnx only); `sec_engine.export.onnx_export.quantize_onnx_int8` applies it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ZERO_POINT = 128  # uint8 code of 0.0: symmetric int8 shifted into uint8
LEVELS = 127.0  # symmetric grid [-127, 127]
_EPS = 1e-12  # an all-zero token gets this as its peak, so the scale is never 0
_ONE = "sec_pt/one"  # the x scale the fused int8 MatMuls see; the token scale follows them


def _constants(graph: onnx.GraphProto, prefix: str) -> dict[str, str]:
    """Shared constants of the rewrite, added once."""
    names = {
        "inv_levels": f"{prefix}inv_levels",
        "one": _ONE,
        "eps": f"{prefix}eps",
        "zero_point": f"{prefix}zero_point",
        "flat": f"{prefix}minus_one",  # a flat shape, and the last axis
    }
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1.0 / LEVELS, np.float32), names["inv_levels"]),
            numpy_helper.from_array(np.array(1.0, np.float32), names["one"]),
            numpy_helper.from_array(np.array(_EPS, np.float32), names["eps"]),
            numpy_helper.from_array(np.array([ZERO_POINT], np.uint8), names["zero_point"]),
            numpy_helper.from_array(np.array([-1], np.int64), names["flat"]),
        ]
    )
    return names


def _reduce(op: str, x: str, out: str, c: dict[str, str], opset: int) -> onnx.NodeProto:
    """`op` over the last axis, keeping it; opset 18 moved `axes` from attribute to input."""
    if opset >= 18:
        return helper.make_node(op, [x, c["flat"]], [out], keepdims=1)
    return helper.make_node(op, [x], [out], axes=[-1], keepdims=1)


def _per_token_nodes(
    node: onnx.NodeProto, c: dict[str, str], k: int, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing `node`'s three outputs (codes, scale, zero point) per token."""
    x = node.input[0]
    q_out, scale_out, zp_out = node.output
    p = f"sec_pt{k}/"
    nodes = [
        # peak |x| per token, without writing |x|: max and -min over the last axis
        _reduce("ReduceMax", x, p + "max", c, opset),
        _reduce("ReduceMin", x, p + "min", c, opset),
        helper.make_node("Neg", [p + "min"], [p + "neg_min"]),
        helper.make_node("Max", [p + "max", p + "neg_min", c["eps"]], [p + "peak"]),
        helper.make_node("Mul", [p + "peak", c["inv_levels"]], [scale_out]),  # [..., 1]
        # QuantizeLinear's per-axis form takes a 1-D scale: quantize x as [tokens, features]
        helper.make_node("Shape", [x], [p + "shape"]),
        helper.make_node("Shape", [x], [p + "features"], start=-1),
        helper.make_node("Concat", [c["flat"], p + "features"], [p + "rows_shape"], axis=0),
        helper.make_node("Reshape", [x, p + "rows_shape"], [p + "rows"]),
        helper.make_node("Reshape", [scale_out, c["flat"]], [p + "row_scale"]),
        helper.make_node("Shape", [p + "row_scale"], [p + "n_rows"]),
        helper.make_node("Expand", [c["zero_point"], p + "n_rows"], [p + "row_zp"]),
        helper.make_node(
            "QuantizeLinear", [p + "rows", p + "row_scale", p + "row_zp"], [p + "q"], axis=0
        ),
        helper.make_node("Reshape", [p + "q", p + "shape"], [q_out]),
    ]
    # The MatMulIntegers read the zero point as a scalar: the constant 128.
    zp = numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), zp_out)
    return nodes, [zp]


def _fused_matmul(
    mm: onnx.NodeProto,
    consumers: dict[str, list[onnx.NodeProto]],
    producer: dict[str, onnx.NodeProto],
) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """`y = Cast(MatMulInteger(q, w)) * Mul(x_scale, w_scale)` as `quantize_dynamic` wrote it,
    rebuilt as `MatMulIntegerToFloat(q, w, 1, w_scale) * x_scale`; returns (new, replaced)."""
    (cast,) = consumers[mm.output[0]]
    (rescale,) = consumers[cast.output[0]]
    if cast.op_type != "Cast" or rescale.op_type != "Mul":
        raise ValueError(f"unexpected int8 MatMul pattern after {mm.name or mm.output[0]}")
    product = producer[next(i for i in rescale.input if i != cast.output[0])]
    x_scale, w_scale = product.input  # quantize_dynamic's order: activation, then weight
    q, w, zero_point, w_zero_point = mm.input
    per_channel = f"{rescale.output[0]}/per_channel"
    fused = helper.make_node(
        "MatMulIntegerToFloat",
        [q, w, _ONE, w_scale, zero_point, w_zero_point],
        [per_channel],
        domain="com.microsoft",
    )
    token = helper.make_node("Mul", [per_channel, x_scale], [rescale.output[0]])
    return [fused, token], [mm, cast, rescale, product]


def per_token_activations(model: onnx.ModelProto) -> int:
    """Rewrite every DynamicQuantizeLinear of `model` in place; return how many."""
    graph = model.graph
    targets = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not targets:
        return 0
    c = _constants(graph, "sec_pt/")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    codes = {n.output[0] for n in targets}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    # quantize_dynamic's int32 product, Cast, and Mul by x_scale * w_scale: ONNX Runtime fuses
    # them into MatMulIntegerToFloat, which takes one x scale, and given a per-token one it
    # returns wrong numbers (measured: errors 10x the quantization error). So the rewrite
    # writes that op itself with x scale 1 (its fused per-channel rescale) and multiplies by
    # the token scale after it.
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(first node replaced) -> new nodes
    gone: set[int] = set()
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.input[0] in codes:
            new, old = _fused_matmul(node, consumers, producer)
            replaced[id(node)] = new
            gone |= {id(n) for n in old}
    rebuilt: list[onnx.NodeProto] = []
    for k, node in enumerate(graph.node):
        if node.op_type == "DynamicQuantizeLinear":
            nodes, inits = _per_token_nodes(node, c, k, opset)
            rebuilt.extend(nodes)
            graph.initializer.extend(inits)
        elif id(node) in replaced:
            rebuilt.extend(replaced[id(node)])
        elif id(node) not in gone:
            rebuilt.append(node)
    del graph.node[:]
    graph.node.extend(rebuilt)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # Scales are no longer scalars: drop stale value_info so shape inference redoes them.
    stale = {n.output[1] for n in targets} | {n.output[2] for n in targets}
    kept = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return len(targets)


def rewrite_file(path: Path) -> int:
    """Apply :func:`per_token_activations` to the ONNX file at `path`, in place."""
    model = onnx.load(str(path))
    count = per_token_activations(model)
    if count:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return count


__all__ = ["LEVELS", "ZERO_POINT", "per_token_activations", "rewrite_file"]

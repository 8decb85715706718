"""A model-local ONNX function for InplaceABN, so plain onnxruntime (no plugin) runs the model.

When a model carries a FunctionProto with the node's domain and name, onnxruntime
inlines its body (standard ops) wherever no kernel is registered for the op;
``iabn_onnx.InferenceSession`` lowers the nodes to its own kernel first, so
the function only matters elsewhere.

One function body covers every attribute combination: it reads the node's
string attributes through ai.onnx.ml ``LabelEncoder`` (string ``Equal`` needs
opset 19) and selects with ``Where``:

    axis  = 1 (NCHW) or rank-1 (NHWC)
    mean  = training_mode ? ReduceSum(X, other axes)/count : mean   (same for var, biased)
    z     = (X - mean) / sqrt(var + epsilon) * scale + B
    Y     = act == leaky_relu ? where(z<0, alpha·z, z) : act == elu ? where(z<0, alpha·(e^z-1), z) : z
    running_mean = mean·momentum + batch_mean·(1-momentum)   (same for running_var)

An unknown ``act`` or ``data_layout``, or an ``act_alpha`` that is negative or not finite
for leaky_relu/elu, makes every output NaN (plain onnxruntime cannot raise from a
function body); ``iabn_onnx.InferenceSession``, ``fold``, ``convert``, ``check`` and
``onnx.checker`` reject such a node outright.

It trades speed for portability (both activations and, in training mode, both
statistics are evaluated); fold the model for speed.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ..graph import drop_opset_import, ensure_opset_import, graphs
from .onnx_enums import ML_DOMAIN
from .schema import (
    DOMAIN,
    INPUT_NAMES,
    OP_TYPE,
    OPSET_VERSION,
    OUTPUT_NAMES,
    Activation,
    InplaceABNAttrs,
    Layout,
    is_inplace_abn,
    register_schema,
)

ML_OPSET = 2  # LabelEncoder with keys_strings / values_int64s
MIN_ONNX_OPSET = 13  # ReduceSum with axes as an input


def _const_i64(name: str, value: int | list[int]) -> onnx.NodeProto:
    dims = [] if isinstance(value, int) else [len(value)]
    vals = [value] if isinstance(value, int) else value
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, dims, vals))


def _ref(name: str, attr_type: int, ref: str) -> onnx.NodeProto:
    node = helper.make_node("Constant", [], [name])
    attribute = onnx.AttributeProto(
        name={TensorProto.FLOAT: "value_float", TensorProto.INT64: "value_int", TensorProto.STRING: "value_string"}[
            attr_type
        ],
        ref_attr_name=ref,
        type={
            TensorProto.FLOAT: onnx.AttributeProto.FLOAT,
            TensorProto.INT64: onnx.AttributeProto.INT,
            TensorProto.STRING: onnx.AttributeProto.STRING,
        }[attr_type],
    )
    node.attribute.append(attribute)
    return node


def _body() -> list[onnx.NodeProto]:
    n = helper.make_node
    return [
        # attributes as tensors
        _ref("act_s", TensorProto.STRING, "act"),
        _ref("layout_s", TensorProto.STRING, "data_layout"),
        _ref("eps_f", TensorProto.FLOAT, "epsilon"),
        _ref("mom_f", TensorProto.FLOAT, "momentum"),
        _ref("alpha_f", TensorProto.FLOAT, "act_alpha"),
        _ref("train_i", TensorProto.INT64, "training_mode"),
        n("Reshape", ["act_s", "one_d"], ["act_1"]),
        n("Reshape", ["layout_s", "one_d"], ["layout_1"]),
        _const_i64("one_d", [1]),
        n(
            "LabelEncoder",
            ["act_1"],
            ["act_code"],
            domain=ML_DOMAIN,
            keys_strings=[a.value for a in Activation],
            values_int64s=[a.code for a in Activation],
            default_int64=-1,
        ),
        n(
            "LabelEncoder",
            ["layout_1"],
            ["layout_code"],
            domain=ML_DOMAIN,
            keys_strings=[layout.value for layout in Layout],  # code = 0 or 1: the channel axis moves
            values_int64s=[list(Layout).index(layout) for layout in Layout],  # (rank - 2) * code places
            default_int64=-1,
        ),
        # an unknown act or data_layout, or act_alpha < 0, NaN or inf for leaky_relu/elu, makes
        # every output NaN: the body never computes something else in their place
        n("GreaterOrEqual", ["act_code", "zero"], ["act_known"]),
        n("GreaterOrEqual", ["layout_code", "zero"], ["layout_known"]),
        n("Greater", ["act_code", "zero"], ["needs_alpha"]),
        helper.make_node("Constant", [], ["zero_attr_f"], value_float=0.0),
        n("GreaterOrEqual", ["alpha_f", "zero_attr_f"], ["alpha_nonnegative"]),
        n("IsInf", ["alpha_f"], ["alpha_inf"]),
        n("Not", ["alpha_inf"], ["alpha_finite"]),
        n("And", ["alpha_nonnegative", "alpha_finite"], ["alpha_ok"]),
        n("Not", ["needs_alpha"], ["alpha_unused"]),
        n("Or", ["alpha_unused", "alpha_ok"], ["alpha_valid"]),
        n("And", ["act_known", "layout_known"], ["names_known"]),
        n("And", ["names_known", "alpha_valid"], ["valid"]),
        helper.make_node("Constant", [], ["nan_attr_f"], value_float=float("nan")),
        n("CastLike", ["nan_attr_f", "X"], ["nan_x"]),
        n("Max", ["layout_code", "zero"], ["layout_axis_code"]),  # keeps the shape arithmetic in range
        n("CastLike", ["eps_f", "X"], ["eps"]),
        n("CastLike", ["mom_f", "X"], ["mom"]),
        n("CastLike", ["alpha_f", "X"], ["alpha"]),
        n("Cast", ["train_i"], ["training"], to=TensorProto.BOOL),
        # channel axis and broadcast shape [1, .., -1, .., 1]
        _const_i64("zero", 0),
        _const_i64("one", 1),
        _const_i64("two", 2),
        _const_i64("minus_one", -1),
        n("Shape", ["X"], ["x_shape"]),
        n("Size", ["x_shape"], ["rank"]),
        n("Sub", ["rank", "two"], ["rank_m2"]),
        n("Mul", ["layout_axis_code", "rank_m2"], ["shift"]),
        n("Add", ["shift", "one"], ["axis"]),
        n("CumSum", ["ones_r", "zero"], ["dims_from_1"]),  # 1..r (Range here trips the same propagation bug)
        n("Sub", ["dims_from_1", "one"], ["dims"]),
        n("Equal", ["dims", "axis"], ["is_channel"]),
        # bshape via ScatterElements, not Where(is_channel, -1, 1): onnxruntime 1.32's shape-data
        # propagation through Range/Where guesses a wrong length and logs merge warnings
        n("Reshape", ["rank", "one_d"], ["rank_1d"]),
        n("ConstantOfShape", ["rank_1d"], ["ones_r"], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        n("Reshape", ["axis", "one_d"], ["axis_1d"]),
        n("ScatterElements", ["ones_r", "axis_1d", "minus_one_1d"], ["bshape"], axis=0),
        n("Not", ["is_channel"], ["not_channel"]),
        n("Compress", ["dims", "not_channel"], ["reduce_axes"]),
        # batch statistics (biased variance), kept in X's layout
        n("Size", ["X"], ["x_size"]),
        n("Size", ["scale"], ["channels"]),
        n("CastLike", ["x_size", "X"], ["x_size_f"]),
        n("CastLike", ["channels", "X"], ["channels_f"]),
        n("Div", ["x_size_f", "channels_f"], ["count"]),
        n("ReduceSum", ["X", "reduce_axes"], ["x_sum"], keepdims=1),
        n("Div", ["x_sum", "count"], ["batch_mean"]),
        n("Sub", ["X", "batch_mean"], ["centered"]),
        n("Mul", ["centered", "centered"], ["squared"]),
        n("ReduceSum", ["squared", "reduce_axes"], ["sq_sum"], keepdims=1),
        n("Div", ["sq_sum", "count"], ["batch_var"]),
        # running statistics, broadcast
        n("Reshape", ["mean", "bshape"], ["mean_b"]),
        n("Reshape", ["var", "bshape"], ["var_b"]),
        n("Reshape", ["scale", "bshape"], ["scale_b"]),
        n("Reshape", ["B", "bshape"], ["bias_b"]),
        n("Where", ["training", "batch_mean", "mean_b"], ["use_mean"]),
        n("Where", ["training", "batch_var", "var_b"], ["use_var"]),
        # normalize, scale, shift
        n("Add", ["use_var", "eps"], ["var_eps"]),
        n("Sqrt", ["var_eps"], ["std"]),
        n("Sub", ["X", "use_mean"], ["x_centered"]),
        n("Div", ["x_centered", "std"], ["x_hat"]),
        n("Mul", ["x_hat", "scale_b"], ["scaled"]),
        n("Add", ["scaled", "bias_b"], ["z"]),
        # activation
        n("CastLike", ["zero", "X"], ["zero_f"]),
        n("Less", ["z", "zero_f"], ["negative"]),
        n("Mul", ["z", "alpha"], ["leaky_neg"]),
        n("Min", ["z", "zero_f"], ["z_nonpos"]),
        n("Exp", ["z_nonpos"], ["exp_z"]),
        n("CastLike", ["one", "X"], ["one_f"]),
        n("Sub", ["exp_z", "one_f"], ["expm1"]),
        n("Mul", ["expm1", "alpha"], ["elu_neg"]),
        n("Where", ["negative", "leaky_neg", "z"], ["leaky"]),
        n("Where", ["negative", "elu_neg", "z"], ["elu"]),
        n("Equal", ["act_code", "one"], ["is_leaky"]),
        n("Equal", ["act_code", "two"], ["is_elu"]),
        n("Where", ["is_elu", "elu", "z"], ["elu_or_z"]),
        n("Where", ["is_leaky", "leaky", "elu_or_z"], ["y_act"]),
        n("Where", ["valid", "y_act", "nan_x"], ["Y"]),
        # updated running statistics (training_mode=1)
        n("Reshape", ["batch_mean", "minus_one_1d"], ["batch_mean_c"]),
        n("Reshape", ["batch_var", "minus_one_1d"], ["batch_var_c"]),
        _const_i64("minus_one_1d", [-1]),
        n("Sub", ["one_f", "mom"], ["one_minus_mom"]),
        n("Mul", ["mean", "mom"], ["rm_keep"]),
        n("Mul", ["batch_mean_c", "one_minus_mom"], ["rm_new"]),
        n("Add", ["rm_keep", "rm_new"], ["rm_sum"]),
        n("Where", ["valid", "rm_sum", "nan_x"], ["running_mean"]),
        n("Mul", ["var", "mom"], ["rv_keep"]),
        n("Mul", ["batch_var_c", "one_minus_mom"], ["rv_new"]),
        n("Add", ["rv_keep", "rv_new"], ["rv_sum"]),
        n("Where", ["valid", "rv_sum", "nan_x"], ["running_var"]),
    ]


def _topological(nodes: list[onnx.NodeProto], inputs: list[str]) -> list[onnx.NodeProto]:
    """Order the body so each node follows its producers (the list above groups by purpose)."""
    ready, ordered, pending = set(inputs), [], list(nodes)
    while pending:
        progress = [node for node in pending if all(i in ready for i in node.input if i)]
        if not progress:
            raise RuntimeError("InplaceABN function body has a cycle or a missing producer")
        for node in progress:
            ordered.append(node)
            ready.update(node.output)
            pending.remove(node)
    return ordered


def inplace_abn_function(onnx_opset: int) -> onnx.FunctionProto:
    """The FunctionProto for InplaceABN, written for the model's default-domain opset (>= 13)."""
    if onnx_opset < MIN_ONNX_OPSET:
        raise ValueError(f"the InplaceABN function needs ONNX opset >= {MIN_ONNX_OPSET}, the model has {onnx_opset}")
    inputs, outputs = list(INPUT_NAMES), list(OUTPUT_NAMES)
    defaults = InplaceABNAttrs().to_attributes()
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        inputs,
        outputs,
        _topological(_body(), inputs),
        opset_imports=[helper.make_opsetid("", onnx_opset), helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
        attribute_protos=[helper.make_attribute(k, v) for k, v in defaults.items()],
        doc_string="InplaceABN in standard ops (portable fallback; see iabn_onnx.op.function).",
    )


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _uses_op(model: onnx.ModelProto) -> bool:
    return any(is_inplace_abn(n) for g in graphs(model.graph) for n in g.node)


def has_function_fallback(model: onnx.ModelProto) -> bool:
    return any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions)


def add_function_fallback(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` carrying the InplaceABN function (when it has InplaceABN nodes)."""
    register_schema()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not _uses_op(out) or has_function_fallback(out):
        return out
    out.functions.append(inplace_abn_function(_default_opset(out)))
    for graph in graphs(out.graph):
        for node in graph.node:  # onnxruntime's inliner wants all 3 output slots: omitted ones are ""
            if is_inplace_abn(node):
                node.output.extend([""] * (3 - len(node.output)))
    ensure_opset_import(out, ML_DOMAIN, ML_OPSET)
    ensure_opset_import(out, DOMAIN, OPSET_VERSION)
    out.ir_version = max(out.ir_version, 9)  # function attribute defaults need IR 9
    return out


def remove_function_fallback(model: onnx.ModelProto) -> None:
    """In place: drop the InplaceABN function (and the ai.onnx.ml import it alone needed).

    Call it only when no InplaceABN node is left (fold, lowering).
    """
    keep = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    if len(keep) == len(model.functions):
        return
    del model.functions[:]
    model.functions.extend(keep)
    ml_used = any(n.domain == ML_DOMAIN for g in graphs(model.graph) for n in g.node) or any(
        n.domain == ML_DOMAIN for f in model.functions for n in f.node
    )
    if not ml_used:
        drop_opset_import(model, ML_DOMAIN)

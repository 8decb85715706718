"""Transform: every InplaceABN node -> BatchNormalization (+ LeakyRelu | Elu), the whole model.

before:  X -> InplaceABN(scale, B, mean, var; epsilon, momentum, act, act_alpha, training_mode, layout) -> Y
after:   X -> [Transpose to NCHW] -> BatchNormalization(epsilon, momentum, training_mode)
           -> [LeakyRelu | Elu (alpha)] -> [Transpose back] -> Y

The inverse of ``convert``: what a framework without the op exports (tests and benchmarks build the
BatchNormalization form of a network with it). Training mode keeps BatchNormalization's running
statistics outputs. The result has no custom domain and no model-local function.
Unlike ``batchnorm_form.py`` (a route for one frozen node at session creation), this covers every
mode and layout, at the cost of Transposes around NHWC nodes.
"""

from __future__ import annotations

import onnx
from onnx import helper

from ..op.schema import InplaceABNAttrs, is_inplace_abn


def batchnorm_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of model with each InplaceABN node as BatchNormalization (+ LeakyRelu / Elu).

    The inverse of ``convert`` (what a framework without the op exports): NHWC nodes sit between
    two Transposes, because BatchNormalization is channel-first. The result has no custom domain.
    """
    from ..graph import infer_shapes_light
    from ..op.schema import Activation, Layout

    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in [*infer_shapes_light(model).graph.value_info, *model.graph.input]
    }
    nodes = []
    for node in model.graph.node:
        if not is_inplace_abn(node):
            nodes.append(node)
            continue
        attrs = InplaceABNAttrs.from_node(node)
        x, y = node.input[0], node.output[0]
        nhwc = attrs.data_layout is Layout.NHWC
        if nhwc:
            rank = ranks[x]
            nodes.append(helper.make_node("Transpose", [x], [x + ".nchw"], perm=[0, rank - 1, *range(1, rank - 1)]))
            x, y = x + ".nchw", y + ".nchw"
        z = y + ".bn" if attrs.act is not Activation.IDENTITY else y
        bn_outputs = [z, *node.output[1:]] if not nhwc else [z]
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [x, *node.input[1:]],
                bn_outputs,
                name=node.name + ".bn",
                epsilon=attrs.epsilon,
                momentum=attrs.momentum,
                training_mode=attrs.training_mode,
            )
        )
        activation = attrs.onnx_activation()
        if activation:
            op, op_attrs = activation
            nodes.append(helper.make_node(op, [z], [y], name=node.name + ".act", **op_attrs))
        if nhwc:
            nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, *range(2, rank), 1]))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    imports = [o for o in out.opset_import if o.domain in ("", "ai.onnx")]
    del out.opset_import[:]
    out.opset_import.extend(imports)
    del out.functions[:]
    return out

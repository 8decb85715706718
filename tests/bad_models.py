"""Bad models and inputs for the InplaceABN bad-input matrix.

Each case builds a model (and optionally a feed) that must produce a clean
Python exception naming the node and the fault. The tests run every case in
a fresh interpreter, because the failure we guard against is a process abort.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import single_node_model
from iabn_onnx.op.schema import DOMAIN


def _base(**attrs):
    return single_node_model((2, 4, 3), InplaceABNAttrs(**attrs), np.float32)[0]


def _set_attr(model, name, value):
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))
    return model


def _replace_init(model, name, array):
    inits = [i for i in model.graph.initializer if i.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    model.graph.initializer.append(numpy_helper.from_array(array, name))
    return model


def _x_shape(model, dims):
    x = model.graph.input[0]
    x.CopyFrom(helper.make_tensor_value_info("X", x.type.tensor_type.elem_type, dims))
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    return model


def _dynamic_params():
    model = single_node_model(("N", 4, 3), InplaceABNAttrs(act="leaky_relu", act_alpha=0.1), constant_params=False)[0]
    for vi in model.graph.input[1:]:  # parameters of unknown length
        vi.type.tensor_type.shape.dim[0].dim_param = "C"
    return model


def _dynamic_x():
    return _x_shape(_base(), None)


X = np.ones((2, 4, 3), np.float32)

# name -> (model factory, feed or None, words the message must contain)
MODEL_CASES = {
    "unknown_act": (lambda: _set_attr(_base(), "act", "relu"), "act"),
    "alpha_negative": (lambda: _set_attr(_base(act="leaky_relu"), "act_alpha", -0.01), "act_alpha"),
    "alpha_negative_elu": (lambda: _set_attr(_base(act="elu"), "act_alpha", -1.0), "act_alpha"),
    "epsilon_negative": (lambda: _set_attr(_base(), "epsilon", -1e-5), "epsilon"),
    "epsilon_huge": (lambda: _set_attr(_base(), "epsilon", 1e6), "epsilon"),
    "momentum_out_of_range": (lambda: _set_attr(_base(), "momentum", 1.5), "momentum"),
    "unknown_layout": (lambda: _set_attr(_base(), "data_layout", "NCDHW"), "data_layout"),
    "training_mode_2": (lambda: _set_attr(_base(), "training_mode", 2), "training_mode"),
    "epsilon_wrong_type": (lambda: _set_attr(_base(), "epsilon", 1), "epsilon"),
    "act_wrong_type": (lambda: _set_attr(_base(), "act", 1.0), "act"),
    "unknown_attribute": (lambda: _set_attr(_base(), "fuse", 1), "fuse"),
    "rank1": (lambda: _x_shape(_base(), [4]), "rank"),
    "rank6": (lambda: _x_shape(_base(), [1, 4, 1, 1, 1, 3]), "rank"),
    "scale_wrong_length": (lambda: _replace_init(_base(), "scale", np.ones(5, np.float32)), "scale"),
    "var_wrong_rank": (lambda: _replace_init(_base(), "var", np.ones((4, 1), np.float32)), "var"),
    "mean_wrong_dtype": (lambda: _replace_init(_base(), "mean", np.ones(4, np.float64)), "mean"),
    "x_int_dtype": (lambda: single_node_model((2, 4, 3), InplaceABNAttrs(), np.int32)[0], "dtype"),
    "missing_input": (lambda: _drop_input(_base()), "5 inputs"),
    "extra_output": (lambda: _extra_output(_base()), "output"),
    "unknown_opset_version": (lambda: _opset(_base(), 2), "opset"),
}

# name -> (model factory, feed, words): faults only visible at run time
RUN_CASES = {
    "fed_scale_wrong_length": (
        _dynamic_params,
        {
            "X": X,
            "scale": np.ones(5, np.float32),
            "B": np.ones(4, np.float32),
            "mean": np.ones(4, np.float32),
            "var": np.ones(4, np.float32),
        },
        "scale",
    ),
    "fed_x_rank1": (_dynamic_x, {"X": np.ones(4, np.float32)}, "rank"),
    "fed_x_rank6": (_dynamic_x, {"X": np.ones((1, 4, 1, 1, 1, 3), np.float32)}, "rank"),
    "fed_x_wrong_channels": (_dynamic_x, {"X": np.ones((2, 5, 3), np.float32)}, "channels"),
    "training_empty_batch": (
        lambda: _x_shape(_base(training_mode=1), ["N", 4, 3]),
        {"X": np.ones((0, 4, 3), np.float32)},
        "empty",
    ),
}


def _drop_input(model):
    node = model.graph.node[0]
    inputs = list(node.input)[:4]
    del node.input[:]
    node.input.extend(inputs)
    return model


def _extra_output(model):
    model.graph.node[0].output.append("extra")
    return model


def _opset(model, version):
    for imp in model.opset_import:
        if imp.domain == DOMAIN:
            imp.version = version
    return model

"""The OpSchema: onnx.checker and shape inference understand InplaceABN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from iabn_onnx import InplaceABNAttrs, InplaceABNError
from iabn_onnx.examples import single_node_model


@pytest.mark.parametrize("training", [0, 1])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_checker_full_check_and_shape_inference(training, dtype):
    model, _ = single_node_model(("N", 8, 5, 5), InplaceABNAttrs(training_mode=training), dtype)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    y = next(v for v in [*inferred.graph.value_info, *inferred.graph.output] if v.name == "Y")
    assert y.type.tensor_type.elem_type == elem


def test_checker_rejects_unknown_attribute():
    model, _ = single_node_model((2, 3, 4))
    model.graph.node[0].attribute.append(helper.make_attribute("bogus", 1))
    with pytest.raises(onnx.checker.ValidationError, match="bogus"):
        onnx.checker.check_model(model, full_check=True)


def test_attributes_are_float32_truth_and_validated():
    attrs = InplaceABNAttrs(act_alpha=0.1)
    assert attrs.act_alpha == float(np.float32(0.1))
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(InplaceABNError, match="must be finite and >= 0"):
            InplaceABNAttrs(act="elu", act_alpha=bad).validate("n")
    zero = InplaceABNAttrs(act="leaky_relu", act_alpha=0.0).validate("n")  # ReLU: mapillary's decoders use it
    assert zero.is_relu and zero.onnx_activation() == ("Relu", {})
    assert not InplaceABNAttrs(act="identity", act_alpha=0.0).validate("n").is_relu
    with pytest.raises(ValueError, match="unknown act"):
        InplaceABNAttrs(act="relu")


def test_dataclass_defaults_are_the_opschema_defaults():
    """The dataclass and the registered OpSchema agree on every attribute's default (one contract)."""
    from iabn_onnx.op.schema import DOMAIN, OP_TYPE, OPSET_VERSION

    schema = onnx.defs.get_schema(OP_TYPE, OPSET_VERSION, DOMAIN)
    defaults = InplaceABNAttrs().to_attributes()
    assert set(schema.attributes) == set(defaults)
    for name, value in defaults.items():
        declared = helper.get_attribute_value(schema.attributes[name].default_value)
        declared = declared.decode() if isinstance(declared, bytes) else declared
        expected = float(np.float32(value)) if isinstance(value, float) else value
        assert declared == expected, name


def test_enum_numbers_are_onnx_own():
    """``op/onnx_enums.py`` restates ONNX's enum numbers so the schema imports without onnx."""
    from onnx import AttributeProto, TensorProto

    from iabn_onnx.op import onnx_enums

    assert (onnx_enums.FLOAT, onnx_enums.FLOAT16, onnx_enums.DOUBLE) == (
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.DOUBLE,
    )
    assert onnx_enums.EXTERNAL == TensorProto.EXTERNAL
    for code, name in onnx_enums.ATTRIBUTE_TYPES.items():
        assert AttributeProto.AttributeType.Value(name) == code
    kinds = (onnx_enums.ATTR_FLOAT, onnx_enums.ATTR_INT, onnx_enums.ATTR_STRING, onnx_enums.ATTR_GRAPH)
    A = AttributeProto
    assert (*kinds, onnx_enums.ATTR_GRAPHS) == (A.FLOAT, A.INT, A.STRING, A.GRAPH, A.GRAPHS)
    assert onnx_enums.dtype_name(TensorProto.INT64) == "int64"
    assert onnx_enums.dtype_name(TensorProto.FLOAT16) == "float16"

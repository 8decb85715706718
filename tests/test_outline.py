"""Reading a model file as an outline (``runtime/outline.py``), and sessions created from a path.

The oracle for the outline is protobuf itself: with its references read back, the outline must
equal ``onnx.load`` of the same bytes, and it must reject exactly the bytes protobuf rejects
among the prefixes of a model. Sessions from a path are checked against ONNX's reference
evaluator with the float64 numpy reference for the InplaceABN nodes.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

import iabn_onnx
from iabn_onnx import InplaceABNAttrs
from iabn_onnx.examples import conv_net_model, single_node_model
from iabn_onnx.graph import tensor_array
from iabn_onnx.op.schema import make_model
from iabn_onnx.runtime import session as session_module
from iabn_onnx.runtime.outline import MIN_EXTERNAL_BYTES, WireError, read_outline
from tests.conftest import assert_close, rng, run_isolated
from tests.test_fold import _reference_eval_with_iabn


def _inlined(model: onnx.ModelProto, base_dir: str) -> onnx.ModelProto:
    """A copy of model with every external tensor read back into raw_data."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            value = numpy_helper.from_array(tensor_array(tensor, base_dir), tensor.name)
            del tensor.external_data[:]
            tensor.ClearField("data_location")
            tensor.raw_data = value.raw_data
    return out


def _mixed_model() -> onnx.ModelProto:
    """Tensors of every storage kind around the threshold, a subgraph with a big tensor, a function."""
    g = rng(3)
    inits = [
        numpy_helper.from_array(g.standard_normal((64, 8)).astype(np.float32), "big_f32"),
        numpy_helper.from_array(g.standard_normal((40, 20)).astype(np.float16), "big_f16"),
        numpy_helper.from_array(g.standard_normal((300,)).astype(np.float64), "big_f64"),
        numpy_helper.from_array(np.arange(200, dtype=np.int64), "big_i64"),
        numpy_helper.from_array(np.ones(MIN_EXTERNAL_BYTES // 4, np.float32), "at_threshold"),
        numpy_helper.from_array(np.ones(MIN_EXTERNAL_BYTES // 4 + 1, np.float32), "over_threshold"),
        numpy_helper.from_array(np.array([2, -1], np.int64), "small_shape"),
        helper.make_tensor("typed_field", TensorProto.FLOAT, [500], g.standard_normal(500).tolist()),
    ]
    branch = helper.make_graph(
        [helper.make_node("Identity", ["sub_big"], ["b_out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [400])],
        [numpy_helper.from_array(np.ones(400, np.float32), "sub_big")],
    )
    nodes = [
        helper.make_node("MatMul", ["X", "big_f32"], ["m"]),
        helper.make_node("Reshape", ["m", "small_shape"], ["r"]),
        helper.make_node("If", ["cond"], ["branch_out"], then_branch=branch, else_branch=branch),
        helper.make_node("Twice", ["r"], ["Y"], domain="local"),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 64]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None),
        ],
        inits,
    )
    twice = helper.make_function(
        "local", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])], [helper.make_opsetid("", 17)]
    )
    return make_model(graph, [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[twice])


MODELS = {
    "mixed": _mixed_model,
    "conv_net_f32": lambda: conv_net_model(channels=16),
    "conv_net_f16": lambda: conv_net_model(channels=16, dtype=np.float16),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outline_equals_the_model_protobuf_reads(tmp_path, name):
    model = MODELS[name]()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    outline = read_outline(path)
    assert not outline.own_external_data
    stored = onnx.load(str(path))
    assert _inlined(outline.model, str(tmp_path)) == stored
    # only the main graph's big raw_data tensors point into the file, each at its own bytes
    data = path.read_bytes()
    external = set()
    for tensor in outline.model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            assert info["location"] == "m.onnx"
            start, length = int(info["offset"]), int(info["length"])
            assert length > MIN_EXTERNAL_BYTES
            original = next(t for t in stored.graph.initializer if t.name == tensor.name)
            assert data[start : start + length] == original.raw_data
            external.add(tensor.name)
    expected = {t.name for t in stored.graph.initializer if len(t.raw_data) > MIN_EXTERNAL_BYTES}
    assert external == expected and external
    if name == "mixed":
        assert "at_threshold" not in external and "over_threshold" in external
        assert outline.model.graph.node[2].attribute[0].g.initializer[0].raw_data  # subgraph kept as it is


def test_outline_is_much_smaller_than_the_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_net_model(channels=64).SerializeToString())
    assert read_outline(path).model.ByteSize() < os.path.getsize(path) / 20


def test_every_prefix_parses_as_protobuf_parses_it(tmp_path):
    """Cut anywhere: the outline raises where protobuf raises, and equals its parse otherwise."""
    data = _mixed_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    agreed = 0
    for cut in range(1, len(data) + 1):
        path.write_bytes(data[:cut])
        try:
            expected = onnx.load_model_from_string(data[:cut])
        except Exception:
            expected = None
        try:
            got = _inlined(read_outline(path).model, str(tmp_path))
        except Exception as exc:
            assert expected is None, f"cut {cut}: protobuf parses it, the outline raised {exc!r}"
            assert isinstance(exc, (WireError, DecodeError)), f"cut {cut}: {exc!r}"  # the fault, not a side effect
            continue
        assert expected is not None, f"cut {cut}: protobuf rejects it, the outline parsed it"
        assert got == expected, f"cut {cut}"
        agreed += 1
    assert agreed >= 3  # the whole model, and the cuts after ir_version and after the graph


@pytest.mark.parametrize(
    "content",
    [b"\x00\x00\x00", b"\x0b\x00", b"\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x3a\x05ab"],
    ids=["field_0", "group", "varint_11_bytes", "length_past_end"],
)
def test_malformed_wire_format_raises(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(WireError):
        read_outline(path)


def test_own_external_data_is_reported(tmp_path):
    model = conv_net_model(channels=16)
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    assert read_outline(tmp_path / "ext.onnx").own_external_data


def test_tensor_array_leaves_the_tensor_as_it_was(tmp_path):
    path = tmp_path / "m.onnx"
    model = conv_net_model(channels=16)
    path.write_bytes(model.SerializeToString())
    tensor = read_outline(path).model.graph.initializer[0]
    before = tensor.SerializeToString()
    np.testing.assert_array_equal(tensor_array(tensor, tmp_path), numpy_helper.to_array(model.graph.initializer[0]))
    assert tensor.SerializeToString() == before


# -- sessions from a path ----------------------------------------------------------------------

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
CASES = {
    "f32": dict(channels=16),
    "f16": dict(channels=16, dtype=np.float16),
    "nhwc": dict(channels=16, data_layout="NHWC"),
    "nhwc_f16": dict(channels=16, data_layout="NHWC", dtype=np.float16),
}


@pytest.mark.parametrize("level", sorted(LEVELS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_session_from_a_path_matches_the_reference(tmp_path, case, level):
    model = conv_net_model(**CASES[case])
    path = tmp_path / "net.onnx"
    path.write_bytes(model.SerializeToString())
    dtype = np.float16 if case.endswith("f16") else np.float32
    x = rng(5).standard_normal((2, 3, 32, 32)).astype(dtype)
    expected = _reference_eval_with_iabn(model, {"X": x})[0]
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    session = iabn_onnx.InferenceSession(path, so)
    assert_close(session.run(None, {"X": x})[0], expected, dtype)
    # the same routes as for the model handed over in memory
    assert [str(r) for r in session.routes] == [str(r) for r in iabn_onnx.InferenceSession(model, so).routes]


@pytest.mark.parametrize("name", ["model.onnx", "model_lowered.onnx", "net.onnx"])
@pytest.mark.parametrize("channels", [2, 16], ids=["all-tensors-small", "big-tensors"])
def test_a_model_file_named_like_the_lowered_model(tmp_path, name, channels):
    """The session's folder holds the copy under the original's name, beside the lowered model (with only
    small tensors there is no copy: the outline is the whole model)."""
    model = conv_net_model(channels=channels)
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    x = rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = iabn_onnx.InferenceSession(path).run(None, {"X": x})[0]
    assert_close(got, _reference_eval_with_iabn(model, {"X": x})[0], np.float32)


def test_a_model_with_its_own_external_data(tmp_path):
    model = conv_net_model(channels=16)
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)
    onnx.save(on_disk, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    x = rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = iabn_onnx.InferenceSession(tmp_path / "ext.onnx").run(None, {"X": x})[0]
    assert_close(got, _reference_eval_with_iabn(model, {"X": x})[0], np.float32)


def test_a_file_named_like_the_lowered_model_with_a_node_tensor_in_a_file_of_its_own(tmp_path, monkeypatch):
    """Big main-graph tensors (so the copy begins after the walk) and a Constant whose tensor lives in an
    external file (so the session then loads the whole model instead): the lowered model is written
    beside the copy, which may still be running, never over it."""
    import iabn_onnx.graph

    copies, saved = [], []
    monkeypatch.setattr(session_module._PrivateCopy, "_copy", lambda self: copies.append(self.target))
    save_model = iabn_onnx.graph.save_model
    monkeypatch.setattr(iabn_onnx.graph, "save_model", lambda m, p, **kw: (saved.append(p), save_model(m, p, **kw)))
    model = conv_net_model(channels=16)
    model.graph.node.append(
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0.5], np.float32)))
    )
    model.graph.output.append(helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1]))
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(model)
    tensor = on_disk.graph.node[-1].attribute[0].t
    (tmp_path / "c.bin").write_bytes(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "c.bin"), ("offset", "0"), ("length", "4")):
        tensor.external_data.add(key=key, value=value)
    path = tmp_path / "model.onnx"
    path.write_bytes(on_disk.SerializeToString())
    x = rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    session = iabn_onnx.InferenceSession(path)
    assert copies and saved and not set(copies) & set(saved), (copies, saved)
    expected = _reference_eval_with_iabn(model, {"X": x})
    for got, want in zip(session.run(None, {"X": x}), expected):
        assert_close(got, want, np.float32)


def test_rewriting_the_file_in_place_does_not_fault_a_running_session(tmp_path):
    """onnxruntime memory-maps weights it reads from a file: without the session's private copy,
    truncating the user's file in place kills the process with SIGBUS at the next run (here in
    BatchNormalization, which reads its parameters where they lie)."""
    path = tmp_path / "net.onnx"
    path.write_bytes(single_node_model((1, 4096, 2, 2), InplaceABNAttrs(act="leaky_relu"))[0].SerializeToString())
    proc = run_isolated(
        f"""
        import numpy as np, iabn_onnx
        s = iabn_onnx.InferenceSession({str(path)!r})
        assert [r.route for r in s.routes] == ["BatchNormalization"], s.routes
        x = np.random.default_rng(0).standard_normal((1, 4096, 2, 2)).astype(np.float32)
        before = s.run(None, {{"X": x}})[0]
        with open({str(path)!r}, "r+b") as fh:
            fh.truncate(0)
        after = s.run(None, {{"X": x}})[0]
        print("SAME", np.array_equal(before, after))
        """
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "SAME True"


def test_a_file_changed_while_the_session_reads_it_raises(tmp_path, monkeypatch):
    path = tmp_path / "net.onnx"
    path.write_bytes(conv_net_model(channels=16).SerializeToString())

    copyfile = shutil.copyfile

    def copy_then_touch(source, target, **kwargs):
        copyfile(source, target)
        with open(source, "ab") as fh:
            fh.write(b"\x00")

    monkeypatch.setattr(session_module.shutil, "copyfile", copy_then_touch)
    with pytest.raises(iabn_onnx.ModelLoadError, match="changed while the session read it"):
        iabn_onnx.InferenceSession(path)


def test_a_file_changed_after_the_walk_before_the_copy_raises(tmp_path, monkeypatch):
    """The outline's offsets are the walked file's: a rewrite between the walk and the copy's start
    would give onnxruntime weights from other places, so the copy checks the file as it was walked."""
    path = tmp_path / "net.onnx"
    path.write_bytes(conv_net_model(channels=16).SerializeToString())
    walk = session_module._walk_outline

    def walk_then_touch(source):
        walked = walk(source)
        with open(source, "ab") as fh:
            fh.write(b"\x00")
        return walked

    monkeypatch.setattr(session_module, "_walk_outline", walk_then_touch)
    with pytest.raises(iabn_onnx.ModelLoadError, match="changed while the session read it"):
        iabn_onnx.InferenceSession(path)


def test_no_file_is_left_behind(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "net.onnx"
    path.write_bytes(conv_net_model(channels=16).SerializeToString())
    session = iabn_onnx.InferenceSession(path)
    assert os.listdir(tmp_path / "tmp") == []
    x = rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {"X": x})[0].shape == (1, 10)


def test_an_invalid_node_in_a_file_raises_its_fault(tmp_path, monkeypatch):
    """The node's fault, not a file error, while the copy is under way; nothing is left behind."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model = single_node_model((1, 4096, 2, 2), InplaceABNAttrs(act="elu"))[0]
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != "act"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("act", "gelu")])
    path = tmp_path / "bad_node.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(iabn_onnx.InplaceABNError, match="unknown act 'gelu'"):
        iabn_onnx.InferenceSession(path)
    assert os.listdir(tmp_path / "tmp") == []


def test_a_node_attribute_kept_in_an_external_file(tmp_path):
    """A Constant whose tensor lives in a file of the model's own: the outline says so, and the session
    reads the model whole (its external data relative to the model's folder)."""
    from onnx.external_data_helper import set_external_data

    model = conv_net_model(channels=16)
    weight = next(t for t in model.graph.initializer if t.name == "conv1.weight")
    (tmp_path / "w.bin").write_bytes(weight.raw_data)
    constant = helper.make_node("Constant", [], ["conv1.weight"], value=weight)
    value = constant.attribute[0].t
    set_external_data(value, "w.bin", 0, len(weight.raw_data))
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    kept = [t for t in model.graph.initializer if t.name != "conv1.weight"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.node.insert(0, constant)
    path = tmp_path / "net.onnx"
    path.write_bytes(model.SerializeToString())
    assert read_outline(path).own_external_data
    x = rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = iabn_onnx.InferenceSession(path).run(None, {"X": x})[0]
    reference = onnx.load(str(path))  # the reference evaluator needs the data inline
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(reference, str(tmp_path))
    assert_close(got, _reference_eval_with_iabn(reference, {"X": x})[0], np.float32)

"""Corrupt input never runs: seeded mutants of real files through every reader (``corrupt_inputs.py``).

Oracles: protobuf's own verdict for an ONNX file (a file it rejects must be refused, as
``ModelLoadError``, by the session, ``fold`` and ``convert``), plain onnxruntime's outputs where
both run, and the documented exceptions of each reader (naming the file). Each mutant runs in a
worker process with a timeout: a crash or a hang is a failure of that mutant.

The default suite runs a few hundred mutants per reader; ``--run-slow`` runs the thousands.
Every difference in acceptance from onnxruntime must fall in a class ``explain_difference`` names;
the deterministic tests below show one case of each class and why.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import iabn_onnx
from iabn_onnx.examples import conv_net_model
from iabn_onnx.op.function import add_function_fallback
from iabn_onnx.runtime.outline import WireError, walk_outline
from tests import corrupt_inputs as ci
from tests.conftest import assert_close
from tests.test_fold import _reference_eval_with_iabn

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_PADDLE2ONNX = importlib.util.find_spec("paddle2onnx") is not None


def _faults(classes: list[str]) -> list[str]:
    return [c for c in classes if c.startswith("fault")]


def _model_classes(tmp_path, count: int, seeds: list[int]) -> list[str]:
    classes = []
    for seed in seeds:
        results = ci.model_results(ci.model_jobs(tmp_path, count, seed))
        classes += [f"#{r.id} ({r.what}): {ci.judge_model(r.outcome)}" for r in results]
    return classes


def _check_model_classes(classes: list[str]) -> None:
    assert not _faults(classes), _faults(classes)[:10]
    kinds = {c.split(": ", 1)[1] for c in classes}
    # the fuzz reaches every outcome: refused by protobuf, run by both, refused by both
    assert "same: protobuf rejects; every reader refuses it as ModelLoadError" in kinds
    assert "same: both ran, outputs equal" in kinds


def test_model_file_mutants(tmp_path):
    _check_model_classes(_model_classes(tmp_path, 300, [7]))


@pytest.mark.slow
def test_model_file_mutants_3000(tmp_path):
    _check_model_classes(_model_classes(tmp_path, 1000, [7, 8, 9]))


def _load_classes(jobs) -> list[str]:
    return [f"{what}: {cls}" for what, cls in ci.load_classes(jobs)]


@pytest.mark.skipif(not HAS_PADDLE2ONNX, reason="export_paddle needs the [paddle] extra")
@pytest.mark.parametrize("count,seeds", [(240, [7]), pytest.param(500, [7, 8], marks=pytest.mark.slow)])
def test_paddle_program_and_parameter_mutants(tmp_path, count, seeds):
    classes = [c for seed in seeds for c in _load_classes(ci.paddle_jobs(tmp_path, count, seed))]
    assert not _faults(classes), _faults(classes)[:10]
    assert any("refused: ProgramError" in c for c in classes) and any("read" in c for c in classes)


@pytest.mark.parametrize("count,seeds", [(180, [7]), pytest.param(1000, [7], marks=pytest.mark.slow)])
def test_parameter_file_mutants(tmp_path, count, seeds):
    checkpoint = ci.small_torch_checkpoint(tmp_path) if HAS_TORCH else None
    classes = [c for seed in seeds for c in _load_classes(ci.params_jobs(tmp_path, count, seed, checkpoint))]
    assert not _faults(classes), _faults(classes)[:10]
    assert any("refused: CheckpointError" in c for c in classes)


# ---------------------------------------------------------------- the judge itself


def test_a_run_of_a_file_protobuf_rejects_is_a_fault():
    refused = {"ok": False, "error": "ModelLoadError", "message": "m.onnx: not a valid ONNX model"}
    outcome = {"protobuf": {"ok": False, "error": "DecodeError", "message": ""}, "session": {"ok": True, "value": []}}
    outcome.update(fold=refused, convert=refused, ort=refused)
    assert ci.judge_model(outcome).startswith("fault: session did not refuse")
    assert ci.judge_model({"crash": -11}).startswith("fault")
    assert ci.judge_model({"hang": 60}).startswith("fault")


# ---------------------------------------------------------------- each class of difference, shown


def _fallback_model() -> onnx.ModelProto:
    return add_function_fallback(conv_net_model(channels=8, image=8))


def _feed() -> dict[str, np.ndarray]:
    return {"X": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}


def _plain(path) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, _feed())


def test_a_broken_function_fallback_refused_by_onnxruntime_runs_in_the_session(tmp_path):
    """onnxruntime checks the model-local function although no node needs it once the session has
    routed the nodes; the session removes the function, so the file runs and is right."""
    model = _fallback_model()
    reader = next(n for n in model.functions[0].node if n.input)
    reader.input[0] = "no_such_value"  # the function body reads a name nothing defines
    path = tmp_path / "broken_function.onnx"
    onnx.save(model, str(path))
    with pytest.raises(Exception, match=r"no_such_value|not a graph input|not a registered"):
        _plain(path)
    assert ci.explain_difference({"ok": True}, {"ok": False}, {"functions"}).startswith("explained")
    got = iabn_onnx.InferenceSession(path).run(None, _feed())[0]
    assert_close(got, _reference_eval_with_iabn(conv_net_model(channels=8, image=8), _feed())[0], np.float32)


def test_the_function_fallbacks_opset_import_refused_by_onnxruntime_runs_in_the_session(tmp_path):
    model = _fallback_model()
    for imp in model.opset_import:
        if imp.domain == "ai.onnx.ml":
            imp.version = 99  # a version onnxruntime does not have; only the function's body uses the domain
    path = tmp_path / "ml_opset.onnx"
    onnx.save(model, str(path))
    with pytest.raises(Exception, match=r"ai\.onnx\.ml|opset"):
        _plain(path)
    got = iabn_onnx.InferenceSession(path).run(None, _feed())[0]
    assert_close(got, _reference_eval_with_iabn(conv_net_model(channels=8, image=8), _feed())[0], np.float32)


@pytest.mark.parametrize("fault", ["unknown attribute", "opset version", "epsilon out of range"])
def test_a_node_the_schema_rejects_runs_in_the_function_fallback_but_not_in_ours(tmp_path, fault):
    """onnxruntime runs InplaceABN through its model-local function, which reads the attributes it
    needs and checks nothing else; ours validates every node and its domain's version."""
    model = _fallback_model()
    node = next(n for n in model.graph.node if n.op_type == "InplaceABN")
    if fault == "unknown attribute":
        node.attribute.append(helper.make_attribute("momentun", 0.1))
    elif fault == "opset version":
        next(i for i in model.opset_import if i.domain == iabn_onnx.DOMAIN).version = 3
    else:
        next(a for a in node.attribute if a.name == "epsilon").f = -1.0
    path = tmp_path / "invalid_node.onnx"
    path.write_bytes(model.SerializeToString())  # onnx.save would not check it either
    _plain(path)  # onnxruntime runs it
    with pytest.raises(iabn_onnx.InplaceABNError):
        iabn_onnx.InferenceSession(path)
    with pytest.raises(iabn_onnx.InplaceABNError):
        iabn_onnx.fold(path)


def test_a_node_of_our_domain_without_its_opset_import_is_refused(tmp_path):
    """onnxruntime and onnx's checker refuse it; the session used to lower it anyway."""
    model = _fallback_model()
    kept = [i for i in model.opset_import if i.domain != iabn_onnx.DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    path = tmp_path / "no_import.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(Exception, match=r"ai\.iabn"):
        _plain(path)
    with pytest.raises(iabn_onnx.InplaceABNError, match="opset imports"):
        iabn_onnx.InferenceSession(path)


# ---------------------------------------------------------------- the outline's walk, against protobuf


def _graph_length_prefix(data: bytes) -> tuple[int, int]:
    """(start, end) of the length prefix of the model's graph field (7)."""
    from iabn_onnx.runtime.outline import fields

    for number, wire, start, body, _ in fields(data, 0, len(data)):
        if number == 7 and wire == 2:
            return start + 1, body
    raise AssertionError("no graph")


def _protobuf_accepts(data: bytes) -> bool:
    try:
        onnx.load_model_from_string(data)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("extra_bytes", [0, 1, 3, 4, 6])
def test_an_overlong_length_is_read_as_protobuf_reads_it(tmp_path, extra_bytes):
    """protobuf takes a length of at most 5 bytes, however small its value: a longer one is corrupt."""
    data = _fallback_model().SerializeToString()
    start, body = _graph_length_prefix(data)
    length = data[start:body]
    padded = bytes(b | 0x80 for b in length) + b"\x80" * extra_bytes + b"\x00"
    mutant = data[:start] + padded + data[body:]
    path = tmp_path / "overlong.onnx"
    path.write_bytes(mutant)
    accepted = _protobuf_accepts(mutant)
    assert accepted == (len(padded) <= 5)
    try:
        walk_outline(path)
        walked = True
    except WireError:
        walked = False
    assert walked == accepted
    if not accepted:
        with pytest.raises(iabn_onnx.ModelLoadError, match="corrupt"):
            iabn_onnx.InferenceSession(path)


def test_an_unknown_group_field_is_skipped_as_protobuf_skips_it(tmp_path):
    """ONNX has no groups, but protobuf accepts one as an unknown field, and so does the walk."""
    data = _fallback_model().SerializeToString()
    group = bytes([(20 << 3) | 3, 0x01]) + bytes([(1 << 3) | 0, 5]) + bytes([(20 << 3) | 4, 0x01])
    assert _protobuf_accepts(data + group)
    path = tmp_path / "group.onnx"
    path.write_bytes(data + group)
    got = iabn_onnx.InferenceSession(path).run(None, _feed())[0]
    assert_close(got, _reference_eval_with_iabn(conv_net_model(channels=8, image=8), _feed())[0], np.float32)
    unmatched = data + bytes([(20 << 3) | 3, 0x01]) + bytes([(21 << 3) | 4, 0x01])
    assert not _protobuf_accepts(unmatched)
    path.write_bytes(unmatched)
    with pytest.raises(iabn_onnx.ModelLoadError):
        iabn_onnx.InferenceSession(path)


def test_a_string_field_that_is_not_utf8_is_refused_naming_the_field(tmp_path):
    """protobuf's parser takes it (proto2 does not check UTF-8) and hands the value back as bytes; a name read
    from it later failed inside a pass (UnicodeDecodeError). Every reader now refuses it at load."""
    data = _fallback_model().SerializeToString()
    assert data.count(b"conv0.bias") >= 1
    mutant = data.replace(b"conv0.bias", b"conv0.bi\xff\xfe")
    assert _protobuf_accepts(mutant)
    path = tmp_path / "latin.onnx"
    path.write_bytes(mutant)
    for read in (
        iabn_onnx.InferenceSession,
        iabn_onnx.fold,
        iabn_onnx.convert,
        lambda p: iabn_onnx.fold(p.read_bytes()),
    ):
        with pytest.raises(iabn_onnx.ModelLoadError, match="holds bytes that are not UTF-8"):
            read(path)
    assert ci.explain_difference(
        {"ok": False, "error": "ModelLoadError", "message": "m.onnx: ... holds bytes that are not UTF-8"},
        {"ok": True},
        {"initializer"},
    ).startswith("explained")

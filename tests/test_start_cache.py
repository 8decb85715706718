"""The start-up cache (``runtime/start_cache.py``): a session made from a file the cache knows
skips onnx and the lowering, and must be the session a miss makes.

Oracles: a session made with the cache off (routes, kernel nodes, outputs), ONNX's reference
evaluator with the float64 numpy reference for InplaceABN, and ``sys.modules`` for what a
process imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import iabn_onnx
from iabn_onnx.examples import conv_net_model
from iabn_onnx.runtime import start_cache
from tests.conftest import assert_close, rng, run_isolated
from tests.test_fold import _reference_eval_with_iabn


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("IABN_ONNX_CACHE_DIR", str(folder))
    monkeypatch.delenv("IABN_ONNX_CACHE", raising=False)
    return folder


def _model_file(tmp_path: Path, seed: int = 0, name: str = "net.onnx") -> tuple[Path, onnx.ModelProto]:
    # 300 channels: the Gemm weight and the wide layers' parameters are big tensors, read by
    # the lowering from the file (the Gemm-fed node folds into the Gemm here)
    model = conv_net_model(channels=300, image=8, seed=seed)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path, model


def _feed(batch: int = 2) -> dict[str, np.ndarray]:
    return {"X": rng(5).standard_normal((batch, 3, 8, 8)).astype(np.float32)}


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.exists() else []


def _cache_off_session(path: Path, monkeypatch, **kwargs) -> iabn_onnx.InferenceSession:
    with monkeypatch.context() as m:
        m.setenv("IABN_ONNX_CACHE", "0")
        return iabn_onnx.InferenceSession(str(path), **kwargs)


def test_a_hit_is_the_session_a_miss_makes(tmp_path, cache, monkeypatch):
    path, model = _model_file(tmp_path)
    reference = _reference_eval_with_iabn(model, _feed())[0]
    uncached = _cache_off_session(path, monkeypatch)
    assert not _entries(cache)
    miss = iabn_onnx.InferenceSession(str(path))
    (entry,) = _entries(cache)
    meta = json.loads((entry / start_cache.META_FILE).read_text())
    assert meta["points_into_file"] and meta["reads"]  # it read big tensors from the file
    hit = iabn_onnx.InferenceSession(str(path))
    assert hit._report["routes"] == meta["routes"]  # set up from the entry
    for session in (uncached, miss, hit):
        assert [str(r) for r in session.routes] == [str(r) for r in uncached.routes]
        assert session.routes == uncached.routes
        assert session.nodes == uncached.nodes
        assert_close(session.run(None, _feed())[0], reference)
    assert any(r.route == "producer fold" for r in hit.routes)


def test_a_hit_imports_neither_onnx_nor_the_lowering(tmp_path, cache):
    path, _ = _model_file(tmp_path)
    code = f"""
        import sys
        import numpy as np
        import iabn_onnx
        s = iabn_onnx.InferenceSession({str(path)!r})
        y = s.run(None, {{"X": np.ones((1, 3, 8, 8), np.float32)}})[0]
        print("onnx" in sys.modules, "iabn_onnx.runtime.lowering" in sys.modules, repr(float(y.sum())))
        print(len(s.routes), "onnx" in sys.modules)
    """
    first, second = run_isolated(code), run_isolated(code)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    miss, hit = first.stdout.split(), second.stdout.split()
    assert miss[:2] == ["True", "True"]
    assert hit[:2] == ["False", "False"]
    assert hit[2] == miss[2]  # the same output, printed in full precision
    assert hit[3:] == [miss[3], "False"]  # the same routes; asking for them loads the schema, which needs no onnx


def test_new_values_in_the_same_layout_miss(tmp_path, cache):
    """The lowering folded the Gemm weight it read from the file: a file rewritten with other
    weights, byte for byte the same layout, must not get the old fold."""
    path, model = _model_file(tmp_path)
    iabn_onnx.InferenceSession(str(path))
    before = _walk(path)
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    (gemm,) = [n for n in changed.graph.node if n.op_type == "Gemm"]
    (weight,) = [t for t in changed.graph.initializer if t.name == gemm.input[1]]
    old = numpy_helper.to_array(weight)
    new = rng(9).standard_normal(old.shape) * old.std()  # scaled as the original, so tolerances hold
    weight.CopyFrom(numpy_helper.from_array(new.astype(old.dtype), weight.name))
    onnx.save(changed, str(path))
    assert _walk(path) == before  # only a big tensor's bytes differ: the same outline, so the same key
    reference = _reference_eval_with_iabn(changed, _feed())[0]
    session = iabn_onnx.InferenceSession(str(path))
    assert session._origin == "lowered"  # lowered again, not taken from the entry
    assert_close(session.run(None, _feed())[0], reference)
    again = iabn_onnx.InferenceSession(str(path))  # the entry was replaced by the new file's
    assert again._origin == "cache" and len(_entries(cache)) == 1
    assert_close(again.run(None, _feed())[0], reference)


def _walk(path: Path) -> bytes:
    from iabn_onnx.runtime.outline import walk_outline

    return walk_outline(path).data


def test_options_that_change_the_lowering_get_entries_of_their_own(tmp_path, cache, monkeypatch):
    import onnxruntime as ort

    path, _ = _model_file(tmp_path)
    no_opt = ort.SessionOptions()
    no_opt.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for _ in range(2):  # misses, then hits
        default = iabn_onnx.InferenceSession(str(path))
        unoptimized = iabn_onnx.InferenceSession(str(path), no_opt)
    assert len(_entries(cache)) == 2
    assert default.routes == _cache_off_session(path, monkeypatch).routes
    assert unoptimized.routes == _cache_off_session(path, monkeypatch, sess_options=no_opt).routes
    assert default.routes != unoptimized.routes  # Conv-fed: BatchNormalization vs folded here


@pytest.mark.parametrize("setting", ["0", "off"])
def test_the_cache_can_be_turned_off(tmp_path, cache, monkeypatch, setting):
    path, _ = _model_file(tmp_path)
    monkeypatch.setenv("IABN_ONNX_CACHE", setting)
    iabn_onnx.InferenceSession(str(path))
    assert not cache.exists()


def test_a_cache_that_cannot_be_written_or_read_is_skipped(tmp_path, monkeypatch):
    path, model = _model_file(tmp_path)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("IABN_ONNX_CACHE_DIR", str(blocker))
    session = iabn_onnx.InferenceSession(str(path))
    assert_close(session.run(None, _feed())[0], _reference_eval_with_iabn(model, _feed())[0])


def test_a_damaged_entry_is_a_miss(tmp_path, cache):
    path, model = _model_file(tmp_path)
    iabn_onnx.InferenceSession(str(path))
    (entry,) = _entries(cache)
    lowered = entry / start_cache.MODEL_FILE
    lowered.write_bytes(lowered.read_bytes()[:-100])  # truncated
    session = iabn_onnx.InferenceSession(str(path))
    assert session._origin == "lowered"
    assert_close(session.run(None, _feed())[0], _reference_eval_with_iabn(model, _feed())[0])
    (entry / start_cache.META_FILE).write_text("{not json")
    assert iabn_onnx.InferenceSession(str(path))._origin == "lowered"


def test_an_entry_missing_a_field_is_a_miss(tmp_path, cache):
    path, model = _model_file(tmp_path)
    iabn_onnx.InferenceSession(str(path))
    (entry,) = _entries(cache)
    meta = json.loads((entry / start_cache.META_FILE).read_text())
    for key, value in (("kernel", None), ("model_name", "../outside.onnx")):
        damaged = {k: v for k, v in meta.items() if k != key}
        if value is not None:
            damaged[key] = value
        (entry / start_cache.META_FILE).write_text(json.dumps(damaged))
        session = iabn_onnx.InferenceSession(str(path))
        assert session._origin == "lowered", key
        assert_close(session.run(None, _feed())[0], _reference_eval_with_iabn(model, _feed())[0])
    assert not (tmp_path / "outside.onnx").exists()


def test_a_file_without_our_domain_goes_to_onnxruntime_without_onnx(tmp_path, cache):
    """A folded model names no InplaceABN domain: even its first process imports no onnx and
    writes no cache entry."""
    _, model = _model_file(tmp_path)
    folded = iabn_onnx.fold(model)
    assert all(o.domain != iabn_onnx.DOMAIN for o in folded.opset_import)
    plain = tmp_path / "plain.onnx"
    onnx.save(folded, str(plain))
    code = f"""
        import sys
        import numpy as np
        import iabn_onnx
        s = iabn_onnx.InferenceSession({str(plain)!r})
        y = s.run(None, {{"X": np.ones((1, 3, 8, 8), np.float32)}})[0]
        print("onnx" in sys.modules, s.routes, y.shape)
    """
    first, second = run_isolated(code), run_isolated(code)
    assert first.stdout.split() == ["False", "[]", "(1,", "10)"], first.stderr
    assert second.stdout == first.stdout, second.stderr
    assert _entries(cache) == []


def test_a_file_naming_the_domain_without_a_node_is_remembered_as_is(tmp_path, cache):
    _, model = _model_file(tmp_path)
    folded = iabn_onnx.fold(model)
    folded.opset_import.append(onnx.helper.make_opsetid(iabn_onnx.DOMAIN, iabn_onnx.OPSET_VERSION))
    plain = tmp_path / "plain.onnx"
    onnx.save(folded, str(plain))
    code = f"""
        import sys
        import iabn_onnx
        s = iabn_onnx.InferenceSession({str(plain)!r})
        print("onnx" in sys.modules, s.routes)
    """
    first, second = run_isolated(code), run_isolated(code)
    assert first.stdout.split() == ["True", "[]"], first.stderr
    assert second.stdout.split() == ["False", "[]"], second.stderr
    (entry,) = _entries(cache)
    assert json.loads((entry / start_cache.META_FILE).read_text())["as_is"]


def test_kernel_nodes_come_back_from_the_cache(tmp_path, cache, monkeypatch):
    model = conv_net_model(channels=300, image=8, training_mode=1)
    path = tmp_path / "training.onnx"
    onnx.save(model, str(path))
    uncached = _cache_off_session(path, monkeypatch)
    iabn_onnx.InferenceSession(str(path))
    hit = iabn_onnx.InferenceSession(str(path))
    assert hit._origin == "cache" and hit.nodes == uncached.nodes and len(hit.nodes) == 4
    for got, want in zip(hit.run(None, _feed()), uncached.run(None, _feed())):
        np.testing.assert_array_equal(got, want)


def test_fed_parameters_are_still_checked_on_a_hit(tmp_path, cache):
    from iabn_onnx.examples import single_node_model

    model, params = single_node_model((2, 300, 3, 3), constant_params=False)
    path = tmp_path / "fed.onnx"
    onnx.save(model, str(path))
    iabn_onnx.InferenceSession(str(path))
    hit = iabn_onnx.InferenceSession(str(path))
    assert hit._origin == "cache" and hit._fed_routes
    feed = {"X": np.ones((2, 300, 3, 3), np.float32), **params}
    feed["scale"] = feed["scale"][:10]
    with pytest.raises(iabn_onnx.InplaceABNError, match="abn0"):
        hit.run(None, feed)


def test_the_oldest_entries_go_first(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(start_cache, "MAX_ENTRIES", 2)
    paths = [_model_file(tmp_path, seed=0, name=f"net{k}.onnx")[0] for k in range(3)]
    for k, path in enumerate(paths[:2]):
        iabn_onnx.InferenceSession(str(path))
        (newest,) = [e for e in _entries(cache) if e.stat().st_mtime > 10_000]
        os.utime(newest, (1000 + k, 1000 + k))  # net0 is the least recently used
    iabn_onnx.InferenceSession(str(paths[2]))
    assert len(_entries(cache)) == 2
    assert iabn_onnx.InferenceSession(str(paths[1]))._origin == "cache"  # kept
    assert iabn_onnx.InferenceSession(str(paths[0]))._origin == "lowered"  # pruned: lowered again

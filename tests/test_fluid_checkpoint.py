"""Paddle checkpoint files -> ``iabn_onnx.fluid`` programs.

Reference: files written by real Paddle 2.6.2 (``tests/paddle_fixtures/make_fixtures.py``)
and the output Paddle computed for a fixed input with those parameters.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import iabn_onnx
import iabn_onnx.fluid as fluid
from iabn_onnx.fluid import CheckpointError
from tests.conftest import assert_close

FIXTURES = Path(__file__).parent / "paddle_fixtures"
PADDLE_IO = np.load(FIXTURES / "seed_io.npz")


def _seed_program(dtype: str = "float32", size: int = 200) -> tuple[fluid.Program, fluid.Variable]:
    program = fluid.Program()
    with fluid.program_guard(program):
        x = fluid.data(name="x", shape=[3, 7, 3, 7], dtype=dtype)
        hidden1 = fluid.layers.fc(input=x, size=size, param_attr="fc1.w")
        hidden2 = fluid.layers.inplace_abn(input=hidden1)
        hidden3 = fluid.layers.inplace_abn(input=hidden2, act="leaky_relu", act_alpha=0.2)
    return program, hidden3


def _outputs(program: fluid.Program, out: fluid.Variable) -> list[np.ndarray]:
    model = fluid.to_onnx([out], for_test=True, program=program)
    feed = {"x": PADDLE_IO["x"]}
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [iabn_onnx.InferenceSession(model).run(None, feed)[0], plain.run(None, feed)[0]]


LOADERS = {
    "fluid.load(.pdparams)": lambda p, d: fluid.load(p, d / "seed"),
    "fluid.load(path.pdparams)": lambda p, d: fluid.load(p, str(d / "seed.pdparams"), None),
    "load_params(per-variable files)": lambda p, d: fluid.io.load_params(None, d / "seed_vars", p),
    "load_persistables(per-variable files)": lambda p, d: fluid.io.load_persistables(None, d / "seed_vars", p),
    "load_persistables(combined .pdiparams)": lambda p, d: fluid.io.load_persistables(
        None, d, main_program=p, filename="seed.pdiparams"
    ),
    "load_params(combined .pdiparams)": lambda p, d: fluid.io.load_params(None, str(d), p, "seed.pdiparams"),
    "fluid.load(directory of variables)": lambda p, d: fluid.load(p, d / "seed_vars"),
}


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS.keys())
def test_each_format_reproduces_paddle_output(load):
    program, out = _seed_program()
    load(program, FIXTURES)
    for actual in _outputs(program, out):
        assert_close(actual, PADDLE_IO["y"])


def test_default_program_and_var_list():
    program, _ = _seed_program()
    with fluid.program_guard(program):
        fluid.io.load_params(None, FIXTURES / "seed_vars")  # main_program=None: the current program
    before = fluid.parameters(program)
    fresh, _ = _seed_program()
    fluid.load(fresh, FIXTURES / "seed", var_list=["fc1.w"])
    np.testing.assert_array_equal(fluid.parameters(fresh)["fc1.w"], before["fc1.w"])
    assert not np.array_equal(fluid.parameters(fresh)["inplace_abn_0.w_0"], before["inplace_abn_0.w_0"])


def test_protocol2_pickle_and_split_big_parameter(tmp_path):
    """Paddle 1.x pickles with protocol 2 (bytes via _codecs.encode); big arrays are saved in slices."""
    program, _ = _seed_program()
    fluid.load(program, FIXTURES / "seed")
    values = fluid.parameters(program)
    w = values.pop("fc1.w")
    values["fc1.w@@.0"], values["fc1.w@@.1"] = w.reshape(-1)[:10000], w.reshape(-1)[10000:]
    values["UnpackBigParamInfor@@"] = {"fc1.w": {"OriginShape": w.shape, "slices": ["fc1.w@@.0", "fc1.w@@.1"]}}
    with open(tmp_path / "old.pdparams", "wb") as fh:
        pickle.dump(values, fh, protocol=2)
    fresh, fresh_out = _seed_program()
    fluid.load(fresh, tmp_path / "old")
    for actual in _outputs(fresh, fresh_out):
        assert_close(actual, PADDLE_IO["y"])


class _Hostile:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _assert_unchanged(program: fluid.Program, before: dict[str, np.ndarray]) -> None:
    after = fluid.parameters(program)
    assert after.keys() == before.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_hostile_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    arrays = fluid.parameters(_seed_program()[0])
    arrays["fc_0.b_0"] = _Hostile(str(marker))
    with open(tmp_path / "evil.pdparams", "wb") as fh:
        pickle.dump(arrays, fh)
    program, _ = _seed_program()
    before = fluid.parameters(program)
    with pytest.raises(CheckpointError, match=r"evil\.pdparams: refused to load 'posix\.system'"):
        fluid.load(program, tmp_path / "evil")
    assert not marker.exists()
    _assert_unchanged(program, before)


def _copy_vars(tmp_path: Path) -> Path:
    target = tmp_path / "vars"
    shutil.copytree(FIXTURES / "seed_vars", target)
    return target


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _append(path: Path, extra: bytes) -> None:
    path.write_bytes(path.read_bytes() + extra)


def _dump_without(tmp_path: Path, name: str) -> Path:
    with open(FIXTURES / "seed.pdparams", "rb") as fh:
        arrays = pickle.load(fh)  # our own fixture, trusted
    arrays.pop(name)
    with open(tmp_path / "partial.pdparams", "wb") as fh:
        pickle.dump(arrays, fh)
    return tmp_path / "partial"


def _combined_copy(tmp_path: Path) -> Path:
    shutil.copy(FIXTURES / "seed.pdiparams", tmp_path / "params")
    return tmp_path / "params"


def _load_vars(tmp_path: Path):
    return lambda program: fluid.io.load_params(None, tmp_path / "vars", program)


def _load_combined(tmp_path: Path, filename: str = "params"):
    return lambda program: fluid.io.load_params(None, tmp_path, program, filename)


def _missing_variable_file(t: Path):
    (_copy_vars(t) / "inplace_abn_1.w_2").unlink()
    return _load_vars(t)


def _truncated_variable_file(t: Path):
    _truncate(_copy_vars(t) / "fc1.w", 5000)
    return _load_vars(t)


def _trailing_bytes_in_variable_file(t: Path):
    _append(_copy_vars(t) / "fc_0.b_0", b"\0" * 4)
    return _load_vars(t)


def _bad_tensor_version(t: Path):
    path = _copy_vars(t) / "fc_0.b_0"
    data = bytearray(path.read_bytes())
    data[12] = 7  # after uint32 version and uint64 LoD level count: the tensor version
    path.write_bytes(bytes(data))
    return _load_vars(t)


def _truncated_combined_file(t: Path):
    _truncate(_combined_copy(t), 100_000)
    return _load_combined(t)


def _trailing_bytes_in_combined_file(t: Path):
    _append(_combined_copy(t), b"\0" * 32)
    return _load_combined(t)


def _missing_pdparams_entry(t: Path):
    path = _dump_without(t, "inplace_abn_0.b_0")
    return lambda program: fluid.load(program, path)


def _not_a_pickle(t: Path):
    (t / "junk.pdparams").write_bytes(b"\x00junk")
    return lambda program: fluid.load(program, t / "junk")


BROKEN = {
    "missing variable file": (_missing_variable_file, r"'inplace_abn_1.w_2': no file .*vars/inplace_abn_1.w_2"),
    "truncated variable file": (_truncated_variable_file, r"'fc1.w' in .*vars/fc1.w: truncated"),
    "trailing bytes in a variable file": (
        _trailing_bytes_in_variable_file,
        r"'fc_0.b_0' in .*vars/fc_0.b_0: 4 trailing bytes",
    ),
    "bad tensor version": (_bad_tensor_version, r"'fc_0.b_0' in .*: tensor version 7, expected 0"),
    "truncated combined file": (_truncated_combined_file, r"'fc1.w' in .*params: truncated"),
    "trailing bytes in the combined file": (
        _trailing_bytes_in_combined_file,
        r"params: 32 trailing bytes after the 10 variables",
    ),
    "missing combined file": (lambda t: _load_combined(t, "nope"), r"no file .*nope"),
    "missing .pdparams entry": (_missing_pdparams_entry, r"'inplace_abn_0.b_0' is missing from .*partial.pdparams"),
    "not a pickle": (_not_a_pickle, r"junk.pdparams: not a readable .pdparams pickle"),
    "no such checkpoint": (lambda t: lambda p: fluid.load(p, t / "absent"), r"absent.pdparams: no such file"),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_broken_files_raise_naming_variable_and_file_and_change_nothing(tmp_path, case):
    make, pattern = case
    load = make(tmp_path)
    program, _ = _seed_program()
    before = fluid.parameters(program)
    with pytest.raises(CheckpointError, match=pattern):
        load(program)
    _assert_unchanged(program, before)


@pytest.mark.parametrize(
    ("program_args", "pattern"),
    [
        ({"size": 100}, r"'fc1.w' in .*: shape \[147, 200\], the layer has \[147, 100\]"),
        ({"dtype": "float64"}, r"'fc1.w' in .*: dtype float32, the layer has float64"),
    ],
    ids=["shape", "dtype"],
)
@pytest.mark.parametrize(
    "load",
    [
        lambda p: fluid.load(p, FIXTURES / "seed"),
        lambda p: fluid.io.load_params(None, FIXTURES / "seed_vars", p),
        lambda p: fluid.io.load_persistables(None, FIXTURES, p, "seed.pdiparams"),
    ],
    ids=["pdparams", "per-variable", "combined"],
)
def test_shape_or_dtype_mismatch(program_args, pattern, load):
    program, _ = _seed_program(**program_args)
    before = fluid.parameters(program)
    with pytest.raises(CheckpointError, match=pattern):
        load(program)
    _assert_unchanged(program, before)


def test_unknown_var_list_name():
    program, _ = _seed_program()
    with pytest.raises(CheckpointError, match="no persistable variable 'nope'"):
        fluid.load(program, FIXTURES / "seed", var_list=["nope"])

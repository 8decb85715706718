"""Write the saved-program fixtures with real Paddle 2.6.2 (run in a side venv):

    python -m venv /tmp/pdvenv && /tmp/pdvenv/bin/pip install paddlepaddle==2.6.2
    /tmp/pdvenv/bin/python tests/paddle_fixtures/make_program_fixtures.py

Paddle 2.6.2 no longer has the ``inplace_abn`` op, so each network is built with ``batch_norm`` +
activation, run by Paddle's own executor (its outputs are the reference), and saved with
``save_inference_model`` (2.x prefix) and the 1.x layouts (``__model__`` with one file per
variable, or with a combined ``__params__``; and custom names). The saved ``ProgramDesc`` is then
rewritten (``paddle.base.proto.framework_pb2``): each ``batch_norm`` and the ``leaky_relu``/``elu``
that reads it become the one ``inplace_abn`` op Paddle <= 2.5's ``fluid.layers.inplace_abn``
wrote: the batch_norm inputs and outputs, Y in place of X (``batch_norm_out = input``), MeanOut
and VarianceOut in place of Mean and Variance, the batch_norm attributes plus ``activation``,
``alpha`` and ``use_sync_bn``.

Networks (4-8 channels, 6x6 or 8x8, well under 1 MB in all):

* ``cnn``: conv -> inplace_abn(leaky_relu 0.2) -> conv -> inplace_abn(activation "") -> residual
  add -> inplace_abn(elu 0.5) -> conv, concat -> inplace_abn("identity") -> pool -> fc;
  negative scales; every file layout;
* ``nhwc``: NHWC inplace_abn(leaky_relu 0.1) -> scale, add -> NHWC inplace_abn(elu 1.3) (no conv: paddle2onnx
  1.3.1 mis-converts NHWC conv2d);
* ``training``: conv -> inplace_abn(leaky_relu 0.2, is_test False) -> conv -> inplace_abn(elu 1.0,
  is_test False); the reference holds Paddle's output and its moving statistics after one run;
* ``cnn_batchnorm``: ``cnn`` as Paddle 2.6.2 saved it, before the rewrite (batch_norm + activation ops),
  which real Paddle runs: the deploy-script tests compare its ``paddle.inference`` and ``paddle.static``
  outputs with ``iabn_onnx.inference`` and ``iabn_onnx.static`` on ``cnn``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.base.proto import framework_pb2

HERE = Path(__file__).resolve().parent / "programs"
ACT_OPS = {"leaky_relu", "elu"}


def _scope_set(name: str, value: np.ndarray) -> None:
    paddle.static.global_scope().find_var(name).get_tensor().set(value, paddle.CPUPlace())


def _scope_get(name: str) -> np.ndarray:
    return np.array(paddle.static.global_scope().find_var(name).get_tensor())


def _randomize(program: paddle.static.Program, rng: np.random.Generator) -> None:
    """Trained-looking values: negative scales, non-trivial moving statistics."""
    for var in program.list_vars():
        if not var.persistable or var.name in ("feed", "fetch"):
            continue
        shape = tuple(_scope_get(var.name).shape)
        if var.name.endswith(".w_1"):  # moving mean
            value = rng.standard_normal(shape) * 0.5
        elif var.name.endswith(".w_2"):  # moving variance
            value = rng.random(shape) + 0.5
        else:  # conv/fc weights, batch_norm scale (.w_0) and bias (.b_0): signed
            value = rng.standard_normal(shape) * (0.4 if len(shape) > 1 else 1.0)
        _scope_set(var.name, value.astype(np.float32))


def build(name: str):  # type: ignore[no-untyped-def]
    main, startup = paddle.static.Program(), paddle.static.Program()
    training = name == "training"
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        if name == "nhwc":
            x = paddle.static.data("x", [-1, 6, 6, 4], "float32")
            a = F.leaky_relu(paddle.static.nn.batch_norm(x, is_test=True, data_layout="NHWC"), 0.1)
            s = paddle.add(a, paddle.scale(a, 0.5, bias=0.25))  # in place: nothing reads x after the op
            out = F.elu(paddle.static.nn.batch_norm(s, is_test=True, data_layout="NHWC", epsilon=1e-4), 1.3)
        elif name == "training":
            x = paddle.static.data("x", [4, 3, 6, 6], "float32")
            c = paddle.static.nn.conv2d(x, 6, 3, padding=1, bias_attr=False)
            a = F.leaky_relu(paddle.static.nn.batch_norm(c, is_test=False, momentum=0.8), 0.2)
            c2 = paddle.static.nn.conv2d(a, 4, 1, bias_attr=False)
            out = F.elu(paddle.static.nn.batch_norm(c2, is_test=False), 1.0)
        else:
            x = paddle.static.data("x", [-1, 3, 8, 8], "float32")
            c1 = paddle.static.nn.conv2d(x, 8, 3, padding=1, bias_attr=False)
            a1 = F.leaky_relu(paddle.static.nn.batch_norm(c1, is_test=True), 0.2)
            c2 = paddle.static.nn.conv2d(a1, 8, 3, padding=1)
            b2 = paddle.static.nn.batch_norm(c2, is_test=True, epsilon=1e-3)  # activation ""
            res = paddle.add(b2, a1)
            a3 = F.elu(paddle.static.nn.batch_norm(res, is_test=True), 0.5)  # after a residual add
            c3 = paddle.static.nn.conv2d(a3, 4, 1, bias_attr=False)
            cat = paddle.concat([c3, a3], axis=1)
            b4 = paddle.static.nn.batch_norm(cat, is_test=True)  # after a concat; activation "identity"
            pooled = paddle.flatten(F.adaptive_avg_pool2d(b4, 1), 1)
            out = paddle.static.nn.fc(pooled, 5)
    return main, startup, x, out, training


def _attr(op, name: str):  # type: ignore[no-untyped-def]
    return next((a for a in op.attrs if a.name == name), None)


def rewrite_to_inplace_abn(program_bytes: bytes, activation_spellings: list[str], training: bool) -> bytes:
    """Every batch_norm (+ its sole leaky_relu/elu reader) -> one inplace_abn op, as Paddle <= 2.5 wrote it."""
    desc = framework_pb2.ProgramDesc()
    desc.ParseFromString(program_bytes)
    block = desc.blocks[0]
    ops = list(block.ops)
    kept, spelled = [], iter(activation_spellings)
    rename: dict[str, str] = {}
    skip: set[int] = set()
    for i, op in enumerate(ops):
        if i in skip:
            continue
        for var in list(op.inputs):
            var.arguments[:] = [rename.get(a, a) for a in var.arguments]
        if op.type != "batch_norm":
            kept.append(op)
            continue
        io = {v.parameter: list(v.arguments) for v in op.inputs}
        outs = {v.parameter: list(v.arguments) for v in op.outputs}
        y = outs["Y"][0]
        readers = [j for j, o in enumerate(ops) if any(y in v.arguments for v in o.inputs)]
        activation, alpha, final = "", 0.1, y
        if len(readers) == 1 and ops[readers[0]].type in ACT_OPS:
            act_op = ops[readers[0]]
            activation = act_op.type
            alpha = _attr(act_op, "alpha").f
            final = next(v.arguments[0] for v in act_op.outputs if v.parameter == "Out")
            skip.add(readers[0])
        else:
            activation = next(spelled)  # "" or "identity": both mean no activation
        x = io["X"][0]
        rename[final] = x  # later ops read the in-place result under X's name
        new = framework_pb2.OpDesc()
        new.type = "inplace_abn"
        for param in sorted(("X", "Scale", "Bias", "Mean", "Variance")):  # Paddle writes them by name (a map)
            v = new.inputs.add()
            v.parameter, v.arguments[:] = param, io[param]
        targets = {"Y": [x], "MeanOut": io["Mean"], "VarianceOut": io["Variance"],
                   "SavedMean": outs["SavedMean"], "SavedVariance": outs["SavedVariance"]}  # fmt: skip
        if training and outs.get("ReserveSpace"):
            targets["ReserveSpace"] = outs["ReserveSpace"]
        for param, args in sorted(targets.items()):
            v = new.outputs.add()
            v.parameter, v.arguments[:] = param, args
        for a in op.attrs:
            if a.name in ("is_test", "momentum", "epsilon", "data_layout", "use_global_stats",
                          "trainable_statistics", "op_role", "op_role_var", "op_namescope", "op_callstack",
                          "op_device", "with_quant_attr"):  # fmt: skip
                new.attrs.add().CopyFrom(a)
        if _attr(new, "is_test") is not None:
            _attr(new, "is_test").b = not training
        for attr_name, attr_type, field, value in (
            ("activation", framework_pb2.STRING, "s", activation),
            ("alpha", framework_pb2.FLOAT, "f", alpha),
            ("use_sync_bn", framework_pb2.BOOLEAN, "b", False),
            ("fuse_with_relu", framework_pb2.BOOLEAN, "b", False),
        ):
            a = new.attrs.add()
            a.name, a.type = attr_name, attr_type
            setattr(a, field, value)
        attrs = sorted(new.attrs, key=lambda a: a.name)  # by name too
        del new.attrs[:]
        new.attrs.extend(attrs)
        kept.append(new)
    for op in kept:  # fetch and the rest read the renamed results too
        for var in op.inputs:
            var.arguments[:] = [rename.get(a, a) for a in var.arguments]
    del block.ops[:]
    block.ops.extend(kept)
    dead = set(rename) - {a for op in kept for v in [*op.inputs, *op.outputs] for a in v.arguments}
    alive = [v for v in block.vars if v.name not in dead]
    del block.vars[:]
    block.vars.extend(alive)
    return desc.SerializeToString()


def main() -> None:
    paddle.enable_static()
    if HERE.exists():
        shutil.rmtree(HERE)
    HERE.mkdir()
    exe = paddle.static.Executor(paddle.CPUPlace())
    reference: dict[str, np.ndarray] = {}
    facts: dict[str, dict] = {}
    spellings = {"cnn": ["", "identity"], "nhwc": [], "training": []}
    for seed, name in enumerate(("cnn", "nhwc", "training")):
        main_program, startup, x, out, training = build(name)
        exe.run(startup)
        _randomize(main_program, np.random.default_rng(seed))
        shape = [4 if d == -1 else d for d in x.shape]
        feed = np.random.default_rng(100 + seed).standard_normal(shape).astype(np.float32)
        inference = main_program.clone(for_test=not training)
        prefix = HERE / name / "model"
        paddle.static.save_inference_model(str(prefix), [x], [out], exe, program=inference)
        moving = [v.name for v in main_program.list_vars() if v.persistable and v.name.endswith((".w_1", ".w_2"))]
        before = {m: _scope_get(m) for m in moving}
        (y,) = exe.run(main_program, feed={"x": feed}, fetch_list=[out])
        reference[f"{name}.x"], reference[f"{name}.y"] = feed, y
        if training:
            for m in moving:
                reference[f"{name}.{m}.before"], reference[f"{name}.{m}.after"] = before[m], _scope_get(m)
        if name == "cnn":  # the batch_norm form too: real Paddle runs deploy scripts on it (test_paddle_deploy.py)
            shutil.copytree(HERE / name, HERE / "cnn_batchnorm")
        program_bytes = rewrite_to_inplace_abn(prefix.with_suffix(".pdmodel").read_bytes(), spellings[name], training)
        prefix.with_suffix(".pdmodel").write_bytes(program_bytes)
        facts[name] = {"inplace_abn_ops": program_bytes.count(b"inplace_abn"), "moving": moving}
        if name != "cnn":
            continue
        # the 1.x layouts of the same program and parameters
        persistables = [v for v in inference.list_vars() if v.persistable and v.name not in ("feed", "fetch")]
        per_var = HERE / "cnn_vars"
        paddle.static.save_vars(exe, str(per_var), main_program=inference, vars=persistables)
        (per_var / "__model__").write_bytes(program_bytes)
        combined = HERE / "cnn_combined"
        paddle.static.save_vars(exe, str(combined), main_program=inference, vars=persistables, filename="__params__")
        (combined / "__model__").write_bytes(program_bytes)
        custom = HERE / "cnn_custom"
        custom.mkdir()
        shutil.copy(prefix.with_suffix(".pdmodel"), custom / "network.prog")
        shutil.copy(prefix.with_suffix(".pdiparams"), custom / "weights.bin")
    np.savez(HERE / "reference.npz", **reference)
    (HERE / "facts.json").write_text(json.dumps({"paddle": paddle.__version__, **facts}, indent=2))
    size = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"wrote {HERE} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

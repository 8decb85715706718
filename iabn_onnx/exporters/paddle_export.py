"""Paddle saved programs -> ONNX: every ``inplace_abn`` op one ``ai.iabn`` InplaceABN node.

``export_paddle`` reads what ``save_inference_model`` wrote, in every layout (a 2.x prefix
``model.pdmodel`` + ``model.pdiparams``; 1.x ``__model__`` with one file per variable, or with a
combined ``__params__``; any names given), checks it, and converts it:

1. the program is parsed without Paddle (``fluid/program_desc.py``); every persistable variable it
   names is read with the checkpoint readers (``fluid/checkpoint.py``), so a missing, truncated or
   foreign file is an error naming it;
2. each ``inplace_abn`` op is mapped onto the operator (below); a fault names the op by its output;
3. paddle2onnx 1.3.1 converts the rest, in a child process (it aborts its process on an unknown op)
   with the program's op types checked against its own list first: unsupported ones raise
   ``PaddleExportError`` listing them. It writes ``inplace_abn`` as a ``Paddle``-domain node
   (``custom_op_info``), with inputs and outputs in the op's file order;
4. those nodes become InplaceABN nodes; parameters paddle2onnx wrote as Constant nodes become
   initializers.

paddle2onnx 2.x is not used: it needs Paddle >= 3.0, whose translator rejects ``inplace_abn``, and
it converts a legacy ``leaky_relu`` with alpha 0.2 to alpha 0 (FINDINGS).

``inplace_abn`` (Paddle <= 2.5's ``InplaceABNOpMaker``: batch_norm's inputs, outputs and attributes
plus ``activation``, ``alpha``, ``use_sync_bn``) onto the operator:

* inputs X, Scale (plain γ), Bias, Mean, Variance -> X, scale, B, mean, var;
* ``activation`` "" or "identity" -> identity; "leaky_relu", "elu" with ``alpha`` (default 0.1);
* ``epsilon`` (Paddle checks [0, 0.001]), ``momentum`` (moving = moving·m + batch·(1−m), the
  operator's convention), ``data_layout`` NCHW / NHWC (AnyLayout is NCHW);
* ``is_test`` or ``use_global_stats``: frozen statistics; otherwise ``training_mode=1``, batch
  statistics with the biased variance, and the node also returns the updated moving statistics,
  which become graph outputs named ``<moving variable>.updated``;
* ``use_sync_bn`` (multi-device training) and ``fuse_with_relu`` (used only by oneDNN kernels) do
  not change a CPU forward pass and are ignored; a ``MomentumTensor`` input is refused in training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..fluid.checkpoint import CheckpointError, read_combined, read_variable_files, write_combined
from ..fluid.layers import PADDLE_EPSILON_RANGE
from ..fluid.program_desc import OpDesc, ProgramDesc, ProgramError, read_program
from ..graph import ensure_opset_import
from ..op.function import add_function_fallback
from ..op.schema import (
    DOMAIN,
    IR_VERSION,
    ONNX_OPSET,
    OPSET_VERSION,
    Activation,
    InplaceABNAttrs,
    Layout,
    make_node,
    register_schema,
)
from ..op.validation import check_model_nodes
from ..passes.constant_subgraphs import constants_to_initializers

PADDLE_DOMAIN = "Paddle"
PADDLE_OP = "inplace_abn"
ACTIVATIONS = {"": Activation.IDENTITY, "identity": Activation.IDENTITY, "leaky_relu": Activation.LEAKY_RELU,
               "elu": Activation.ELU}  # fmt: skip
DEFAULT_ALPHA = 0.1
CHILD_TIMEOUT_S = 600


class PaddleExportError(RuntimeError):
    """A saved program that cannot be exported: the message names the file or the op and the fault."""


@dataclass(frozen=True)
class SavedModel:
    """Where a saved inference model's program and parameters are."""

    program: Path
    params: Path | None  # a combined file; None: one file per variable in ``folder``
    folder: Path


def locate(model_path: str | os.PathLike[str], params_path: str | os.PathLike[str] | None = None) -> SavedModel:
    """The files of a saved model, from what a user has: a 2.x prefix (``infer/model``), a program file
    (``model.pdmodel``, ``__model__``, any name), or the folder holding ``__model__``/``model.pdmodel``;
    ``params_path`` a combined file (a bare name is looked up beside the program)."""
    path = Path(model_path)
    if path.is_dir():
        candidates = [path / "__model__", path / "model.pdmodel", *sorted(path.glob("*.pdmodel"))]
        program = next((c for c in candidates if c.is_file()), None)
        if program is None:
            raise FileNotFoundError(f"{path}: no __model__ or .pdmodel program file in this folder")
    elif path.is_file():
        program = path
    elif path.with_name(path.name + ".pdmodel").is_file():  # a 2.x path prefix
        program = path.with_name(path.name + ".pdmodel")
    else:
        raise FileNotFoundError(f"no such Paddle model: {path} (nor {path}.pdmodel)")
    folder = program.parent
    if params_path is not None:
        params = Path(params_path)
        if not params.is_file() and (folder / params).is_file():
            params = folder / params
        if not params.is_file():
            raise FileNotFoundError(f"no such Paddle parameter file: {params_path}")
        return SavedModel(program, params, folder)
    for guess in (program.with_suffix(".pdiparams"), folder / "__params__"):
        if guess.is_file() and guess != program:
            return SavedModel(program, guess, folder)
    return SavedModel(program, None, folder)


def read_parameters(saved: SavedModel, program: ProgramDesc) -> dict[str, object]:
    """Every persistable variable the program names, checked against its declared dims."""
    names = program.persistable_names()
    if saved.params is not None:
        arrays = read_combined(str(saved.params), names)
        source = str(saved.params)
    else:
        missing = [n for n in names if not (saved.folder / n).is_file()]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise CheckpointError(
                f"{saved.folder}: {len(missing)} of the program's {len(names)} persistable variables have no "
                f"file: {shown} (a combined parameter file? pass it as params_path)"
            )
        arrays = read_variable_files(str(saved.folder), names)
        source = str(saved.folder)
    block = program.global_block
    for name, array in arrays.items():
        dims = block.vars[name].dims
        if dims and all(d >= 0 for d in dims) and list(array.shape) != dims:
            raise CheckpointError(
                f"variable {name!r} in {source}: shape {list(array.shape)}, the program ({saved.program}) says {dims}"
            )
    return arrays  # type: ignore[return-value]


@dataclass(frozen=True)
class AbnPlan:
    """One inplace_abn op and the node it becomes."""

    op: OpDesc
    where: str
    attrs: InplaceABNAttrs


def _flag(op: OpDesc, name: str) -> bool:
    return bool(op.attrs.get(name, False))


def plan_op(op: OpDesc, path: str) -> AbnPlan:
    """Operator attributes for one inplace_abn op; PaddleExportError naming it on any fault."""
    where = f"{path}: inplace_abn op writing {op.output('Y')!r}"
    for parameter in ("X", "Scale", "Bias", "Mean", "Variance"):
        if len(op.inputs.get(parameter) or []) != 1:
            raise PaddleExportError(f"{where}: input {parameter} must be one variable, got {op.inputs.get(parameter)}")
    if not op.output("Y"):
        raise PaddleExportError(f"{where}: no output Y")
    activation = op.attrs.get("activation", "")
    if activation not in ACTIVATIONS:
        raise PaddleExportError(
            f'{where}: activation {activation!r} is not one inplace_abn takes ("", identity, leaky_relu, elu)'
        )
    act = ACTIVATIONS[activation]
    epsilon = float(op.attrs.get("epsilon", 1e-5))
    lo, hi = PADDLE_EPSILON_RANGE  # InplaceABNOpMaker's check
    if not np.float32(lo) <= np.float32(epsilon) <= np.float32(hi):  # float, as Paddle
        raise PaddleExportError(f"{where}: epsilon {epsilon:g} is outside Paddle's [0, 0.001]")
    layout = op.attrs.get("data_layout", "NCHW")
    layout = "NCHW" if layout == "AnyLayout" else layout
    if layout not in ("NCHW", "NHWC"):
        raise PaddleExportError(f"{where}: data_layout {layout!r} (NCHW or NHWC)")
    frozen = _flag(op, "is_test") or _flag(op, "use_global_stats")
    if not frozen and op.inputs.get("MomentumTensor"):
        raise PaddleExportError(f"{where}: a MomentumTensor input in training mode cannot be exported")
    alpha = float(op.attrs.get("alpha", DEFAULT_ALPHA)) if act is not Activation.IDENTITY else 1.0
    try:
        attrs = InplaceABNAttrs(
            epsilon=epsilon,
            momentum=float(op.attrs.get("momentum", 0.9)),
            act=act,
            act_alpha=alpha,
            training_mode=0 if frozen else 1,
            data_layout=Layout(layout),
        )
    except (TypeError, ValueError) as exc:
        raise PaddleExportError(f"{where}: {exc}") from None
    faults = attrs.faults()
    if faults:
        raise PaddleExportError(f"{where}: " + "; ".join(faults))
    return AbnPlan(op, where, attrs)


def _run_converter(saved: SavedModel, program: ProgramDesc, params_file: Path, out: Path) -> None:
    op_types = sorted({op.type for block in program.blocks for op in block.ops})
    cmd = [sys.executable, "-m", "iabn_onnx.exporters.paddle2onnx_child", str(saved.program), str(params_file),
           str(out), str(ONNX_OPSET), json.dumps(op_types)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PaddleExportError(f"{saved.program}: paddle2onnx did not finish in {CHILD_TIMEOUT_S} s") from None
    if proc.returncode == 3:
        unsupported = json.loads(proc.stdout.strip().splitlines()[-1])["unsupported"]
        raise PaddleExportError(
            f"{saved.program}: paddle2onnx 1.3.1 cannot convert these ops: {', '.join(unsupported)}; nothing was "
            "converted"
        )
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        if any("No module named" in ln or "paddle2onnx is not installed" in ln for ln in lines):
            from ..extras import MissingExtraError

            raise MissingExtraError("export_paddle (its converter process)", "paddle2onnx", "paddle")
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"failed ({proc.returncode})"
        raise PaddleExportError(f"{saved.program}: paddle2onnx {how}: {lines[-1] if lines else 'no message'}")


#: Paddle VarType data_type -> ONNX element type, for the dtypes the operator takes
_ELEM_TYPES = {4: onnx.TensorProto.FLOAT16, 5: onnx.TensorProto.FLOAT, 6: onnx.TensorProto.DOUBLE}


def _replace_paddle_nodes(model: onnx.ModelProto, plans: list[AbnPlan], program: ProgramDesc) -> None:
    """In place: each Paddle-domain InplaceABN node (in program order) -> an ai.iabn InplaceABN node."""
    graph = model.graph
    paddle_nodes = [n for n in graph.node if n.domain == PADDLE_DOMAIN and n.op_type == "InplaceABN"]
    if len(paddle_nodes) != len(plans):
        raise PaddleExportError(
            f"{program.path}: paddle2onnx wrote {len(paddle_nodes)} InplaceABN nodes for {len(plans)} inplace_abn ops"
        )
    read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    replacement = {}
    for node, plan in zip(paddle_nodes, plans):
        # paddle2onnx lists each parameter's arguments in the op's file order
        inputs = {p: name for p, args in plan.op.inputs.items() for name in args}
        positions = {p: i for i, p in enumerate(p for p, args in plan.op.inputs.items() for _ in args)}
        out_positions = {p: i for i, p in enumerate(p for p, args in plan.op.outputs.items() for _ in args)}
        if len(node.input) != len(inputs) or len(node.output) != len(out_positions):
            raise PaddleExportError(f"{plan.where}: paddle2onnx wrote a node with other inputs/outputs")
        ins = [node.input[positions[p]] for p in ("X", "Scale", "Bias", "Mean", "Variance")]
        outs = [node.output[out_positions["Y"]]]
        if plan.attrs.training_mode:
            for p, moving in (("MeanOut", "Mean"), ("VarianceOut", "Variance")):
                var = program.global_block.vars.get(plan.op.input(moving) or "")
                elem = _ELEM_TYPES.get(var.dtype if var is not None else -1, onnx.TensorProto.FLOAT)
                name = f"{plan.op.input(moving)}.updated"
                outs.append(name)
                graph.output.append(helper.make_tensor_value_info(name, elem, var.dims if var is not None else None))
                old = node.output[out_positions[p]] if p in out_positions else None
                if old is not None and old in read:
                    raise PaddleExportError(f"{plan.where}: {p} is read by another op; that cannot be exported")
        for p in ("SavedMean", "SavedVariance", "ReserveSpace", *(() if plan.attrs.training_mode else
                                                                  ("MeanOut", "VarianceOut"))):  # fmt: skip
            if p in out_positions and node.output[out_positions[p]] in read:
                raise PaddleExportError(f"{plan.where}: its {p} output is read by another op; it is training state")
        replacement[id(node)] = make_node(ins, outs, plan.attrs, name=node.name or f"{plan.op.output('Y')}_abn")
    nodes = [replacement.get(id(n), n) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in model.opset_import if o.domain != PADDLE_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    ensure_opset_import(model, DOMAIN, OPSET_VERSION)
    model.ir_version = max(model.ir_version, IR_VERSION)


def export_paddle(
    model_path: str | os.PathLike[str],
    params_path: str | os.PathLike[str] | None = None,
    f: str | os.PathLike[str] | None = None,
    *,
    function_fallback: bool = True,
) -> onnx.ModelProto:
    """Export a Paddle saved inference model holding ``inplace_abn`` ops to ONNX (see the module doc).

    ``model_path``: a 2.x path prefix (``infer/model`` for ``infer/model.pdmodel``), a program file
    (``model.pdmodel``, ``__model__``, any name), or its folder. ``params_path``: the combined parameter
    file when it is not ``<prefix>.pdiparams`` or ``__params__`` beside the program; without one, one
    file per variable is read from the program's folder. With ``f`` the model is saved there too;
    with ``function_fallback`` (default) it carries the InplaceABN function, so plain onnxruntime runs it.

    Raises FileNotFoundError, ``ProgramError`` (not a program, truncated), ``CheckpointError`` (a
    missing, truncated or mismatched parameter, named), ``PaddleExportError`` (an op that cannot be
    exported, or paddle2onnx's failure; the host process is never at risk). Without paddle2onnx,
    ImportError with the line that installs it.
    """
    from ..extras import require

    require("export_paddle", "paddle")
    register_schema()
    saved = locate(model_path, params_path)
    program = read_program(saved.program)
    arrays = read_parameters(saved, program)
    plans = [plan_op(op, str(saved.program)) for op in program.global_block.ops if op.type == PADDLE_OP]
    nested = [op.type for block in program.blocks[1:] for op in block.ops if op.type == PADDLE_OP]
    if nested:
        raise PaddleExportError(f"{saved.program}: inplace_abn inside a control-flow block cannot be exported")
    with tempfile.TemporaryDirectory(prefix="iabn_paddle_") as tmp:
        params_file = saved.params
        if params_file is None:  # paddle2onnx reads one combined file: written from the checked arrays
            params_file = Path(tmp) / "params.pdiparams"
            write_combined(str(params_file), arrays)  # type: ignore[arg-type]
        out = Path(tmp) / "model.onnx"
        _run_converter(saved, program, params_file, out)
        model = onnx.load_model(str(out))
    _replace_paddle_nodes(model, plans, program)
    constants_to_initializers(model)
    check_model_nodes(model)
    model.doc_string = f"exported by iabn_onnx.export_paddle from {saved.program.name}: {len(plans)} InplaceABN node(s)"
    if function_fallback:
        model = add_function_fallback(model)
    if f is not None:
        onnx.save_model(model, os.fspath(f))
    return model


__all__ = ["PaddleExportError", "ProgramError", "SavedModel", "export_paddle", "locate"]

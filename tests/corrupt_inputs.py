"""Corrupt input: seeded mutants of real files, each read in a child process with a timeout.

Mutations (``mutants``): bit flips, byte overwrites, truncations, insertions, and a huge varint
where a length goes (the lengths are found by walking the protobuf wire format). Most land in the
message structure rather than in weight bytes, where a flip only changes a number.

A worker process reads many mutants in turn and prints one JSON line per mutant; the parent gives
each mutant its own timeout, and a worker that dies or hangs on one is recorded as a crash or a hang
for that mutant and replaced, so one bad mutant costs one process and never hides the others.

Readers:
* ``model``: an ONNX file through ``InferenceSession`` (then ``run``), ``fold`` and ``convert``, beside
  protobuf's own verdict (``onnx.load_model_from_string``) and plain onnxruntime's;
* ``paddle``: a saved program and its parameters through ``export_paddle``;
* ``params``: ``.pdparams`` / ``.pdiparams`` through ``iabn_onnx.fluid``'s loaders, and torch
  checkpoints through ``export_torch``'s loader.

Run directly for the long variants (``python -m tests.corrupt_inputs model --count 1000 --seed 7``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iabn_onnx.runtime.outline import _varint

ROOT = Path(__file__).resolve().parent.parent

#: exceptions a model file may raise from our API: the file is not a model, or a node is invalid
MODEL_ERRORS = {"ModelLoadError", "InplaceABNError", "FileNotFoundError"}
#: onnxruntime's own rejections (its pybind error classes), passed through as a drop-in would
ORT_ERRORS = {
    "Fail",
    "InvalidArgument",
    "InvalidGraph",
    "InvalidProtobuf",
    "NoSuchFile",
    "NoModel",
    "NotImplemented",
    "RuntimeException",
    "EPFail",
}
RESULT_MARK = "@result "
PADDLE_ERRORS = {"FileNotFoundError", "ProgramError", "CheckpointError", "PaddleExportError"}


# ---------------------------------------------------------------- mutations


def _length_positions(data: bytes, pos: int, stop: int, depth: int, out: list[tuple[int, int]]) -> None:
    """(start, end) of every length prefix in the message ``data[pos:stop]``, and in what parses as
    nested messages, to ``depth`` levels."""
    from iabn_onnx.runtime.outline import WireError, fields

    try:
        found = list(fields(data, pos, stop))
    except WireError:
        return
    for number, wire, start, body, end in found:
        if wire != 2:
            continue
        key_end = start + len(_varint((number << 3) | 2))
        out.append((key_end, body))
        if depth > 0 and end - body < 4096:
            _length_positions(data, body, end, depth - 1, out)


def structure(data: bytes) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The length prefixes of a protobuf file, and a mask of its bytes outside long byte strings."""
    lengths: list[tuple[int, int]] = []
    _length_positions(data, 0, len(data), 6, lengths)
    mask = np.ones(len(data), bool)
    for start, body in lengths:
        from iabn_onnx.runtime.outline import _read_varint

        length, _ = _read_varint(data, start, len(data), 5)
        if length > 256:  # a weight's bytes, most likely: flips there only change a number
            mask[body : body + length] = False
    return lengths, mask


def mutants(data: bytes, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``count`` seeded mutants of ``data``: (what was done, the bytes)."""
    rng = np.random.default_rng(seed)
    lengths, mask = structure(data)
    inner = np.flatnonzero(mask)
    kinds = ["flip", "overwrite", "truncate", "insert", "huge_length"]
    for _ in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        buf = bytearray(data)
        pos = int(inner[rng.integers(len(inner))] if rng.random() < 0.85 else rng.integers(len(buf)))
        if kind == "flip":
            bits = int(rng.integers(1, 4))
            for _ in range(bits):
                p = int(inner[rng.integers(len(inner))]) if rng.random() < 0.85 else int(rng.integers(len(buf)))
                buf[p] ^= 1 << int(rng.integers(8))
            what = f"flip {bits} bits"
        elif kind == "overwrite":
            n = int(rng.integers(1, 5))
            buf[pos : pos + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            what = f"overwrite {n} bytes at {pos}"
        elif kind == "truncate":
            cut = int(rng.integers(1, len(buf)))
            del buf[cut:]
            what = f"truncate at {cut}"
        elif kind == "insert":
            n = int(rng.integers(1, 5))
            buf[pos:pos] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            what = f"insert {n} bytes at {pos}"
        elif lengths:
            start, body = lengths[int(rng.integers(len(lengths)))]
            huge = [2**31 - 1, 2**32 + 5, 2**63 + 11, 2**64 - 1][int(rng.integers(4))]
            buf[start:body] = _varint(huge)
            what = f"length at {start} set to {huge}"
        else:  # not protobuf: a huge little-endian count where a binary record keeps its sizes
            huge = [2**31 - 1, 2**32 + 5, 2**63 + 11, 2**64 - 1][int(rng.integers(4))]
            width = 8 if rng.random() < 0.5 else 4
            buf[pos : pos + width] = (huge % (1 << (8 * width))).to_bytes(width, "little")
            what = f"{width} bytes at {pos} set to {huge}"
        yield what, bytes(buf)


# ---------------------------------------------------------------- the worker (child process)


def _outcome(fn) -> dict:
    try:
        value = fn()
    except BaseException as exc:  # recorded, never raised: the parent judges
        return {"ok": False, "error": type(exc).__name__, "message": " ".join(str(exc).split())[:300]}
    return {"ok": True, "value": value}


def _outputs(run) -> list:
    return [np.asarray(o, np.float64).tolist() for o in run()]


def _run_model(path: str, feed: dict[str, np.ndarray]) -> dict:
    """Ours on one model file, beside protobuf's verdict on it."""
    import onnx

    import iabn_onnx

    data = Path(path).read_bytes()
    result: dict = {"protobuf": _outcome(lambda: onnx.load_model_from_string(data) and None)}
    if result["protobuf"]["ok"]:
        result["changed"] = changed_parts(onnx.load_model_from_string(data), _intact())
    result["session"] = _outcome(lambda: _outputs(lambda: iabn_onnx.InferenceSession(path).run(None, feed)))
    result["fold"] = _outcome(lambda: iabn_onnx.fold(path) and None)
    result["convert"] = _outcome(lambda: iabn_onnx.convert(path) and None)
    return result


def _run_plain_onnxruntime(path: str, feed: dict[str, np.ndarray]) -> dict:
    """Plain onnxruntime on the same file, in a worker of its own: it has crashed on some mutants."""
    import onnxruntime as ort

    run = lambda: ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)
    return {"ort": _outcome(lambda: _outputs(run))}


def _run_paddle(path: str, extra: dict) -> dict:
    import iabn_onnx

    return {"load": _outcome(lambda: iabn_onnx.export_paddle(path) and None)}


def _run_params(path: str, extra: dict) -> dict:
    from iabn_onnx.fluid import checkpoint

    kind = extra["kind"]
    if kind == "torch":
        from iabn_onnx.exporters.torch_checkpoint import read_checkpoint

        return {"load": _outcome(lambda: read_checkpoint(path, trust=False) and None)}
    if kind == "pdiparams":
        return {"load": _outcome(lambda: checkpoint.read_combined(path, extra["names"]) and None)}
    return {"load": _outcome(lambda: checkpoint.read_pdparams(path) and None)}


_INTACT: list = []


def _intact():
    if not _INTACT:
        import onnx

        _INTACT.append(onnx.load_model_from_string(model_fixture()[0]))
    return _INTACT[0]


def changed_parts(mutant, intact) -> list[str]:
    """Where a mutant that protobuf parses differs from the intact model: "functions", "opset_import:<domain>"
    ("" and ai.iabn, which the graph's nodes use; "other" for the rest), "node:<op_type>" (by position),
    "initializer", "graph", or "model" (anything else)."""
    from iabn_onnx import DOMAIN

    parts = set()
    if list(mutant.functions) != list(intact.functions):
        parts.add("functions")
    ours = {o.domain: o.version for o in mutant.opset_import}
    theirs = {o.domain: o.version for o in intact.opset_import}
    for d in ours.keys() | theirs.keys():  # the graph's nodes use "" and ai.iabn; the function ai.onnx.ml too
        if ours.get(d) != theirs.get(d):
            parts.add(f"opset_import:{d if d in ('', DOMAIN) else 'other'}")
    g, h = mutant.graph, intact.graph
    for i in range(max(len(g.node), len(h.node))):
        a = g.node[i] if i < len(g.node) else None
        b = h.node[i] if i < len(h.node) else None
        if a != b:
            parts.add(f"node:{(b or a).op_type}")
    if list(g.initializer) != list(h.initializer):
        parts.add("initializer")
    for name in ("input", "output", "value_info", "sparse_initializer", "name", "doc_string"):
        if getattr(g, name) != getattr(h, name):
            parts.add("graph")
    m, n = type(mutant)(), type(intact)()
    m.CopyFrom(mutant)
    n.CopyFrom(intact)
    for x in (m, n):
        x.ClearField("graph")
        x.ClearField("functions")
        x.ClearField("opset_import")
    if m != n:
        parts.add("model")
    return sorted(parts)


def worker() -> None:
    """Read jobs (JSON lines: reader, path, extra) from stdin; print one JSON result line each."""
    feed = None
    for line in sys.stdin:
        job = json.loads(line)
        if job["reader"] in ("model", "onnxruntime"):
            if feed is None:
                feed = {k: np.asarray(v, np.float32) for k, v in job["extra"]["feed"].items()}
            run = _run_model if job["reader"] == "model" else _run_plain_onnxruntime
            result = run(job["path"], feed)
        elif job["reader"] == "paddle":
            result = _run_paddle(job["path"], job["extra"])
        else:
            result = _run_params(job["path"], job["extra"])
        print(RESULT_MARK + json.dumps({"id": job["id"], **result}), flush=True)


# ---------------------------------------------------------------- the parent


@dataclass
class Result:
    id: int
    what: str
    outcome: dict  # the worker's record, or {"crash": code} / {"hang": seconds}


class _Worker:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.corrupt_inputs import worker; worker()"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT_MARK):  # anything else on stdout is a library's chatter
                self.lines.put(line[len(RESULT_MARK) :])
        self.lines.put(None)

    def ask(self, job: dict, timeout: float) -> dict:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"crash": self.proc.wait()}
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            return {"hang": timeout}
        if line is None:
            return {"crash": self.proc.wait()}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_jobs(jobs: list[tuple[str, dict]], timeout: float = 60, first_timeout: float = 120) -> list[Result]:
    """Each job (what, job dict with reader, path, extra) in a worker of its reader; a new worker after
    a crash or a hang."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if "IABN_ONNX_CACHE_DIR" not in env:  # (setdefault would make the folder even when the variable is set)
        env["IABN_ONNX_CACHE_DIR"] = tempfile.mkdtemp(prefix="iabn_fuzz_cache_")
    results: list[Result] = []
    workers: dict[str, _Worker] = {}
    try:
        for i, (what, job) in enumerate(jobs):
            reader = job["reader"]
            fresh = reader not in workers
            if fresh:
                workers[reader] = _Worker(env)
            outcome = workers[reader].ask({"id": i, **job}, first_timeout if fresh else timeout)
            if "crash" in outcome or "hang" in outcome:
                workers.pop(reader).close()
            results.append(Result(i, what, outcome))
    finally:
        for w in workers.values():
            w.close()
    return results


def model_results(jobs: list[tuple[str, dict]]) -> list[Result]:
    """Model mutants, each read by ours and, in a worker of its own, by plain onnxruntime: one Result
    each, ours with ``ort`` added (``{"crash": ...}`` or ``{"hang": ...}`` when onnxruntime died)."""
    both = []
    for what, job in jobs:
        both += [(what, job), (what, {**job, "reader": "onnxruntime"})]
    done = run_jobs(both)
    merged = []
    for k in range(0, len(done), 2):
        ours, plain = done[k].outcome, done[k + 1].outcome
        if "ort" in plain and "crash" not in ours and "hang" not in ours:
            ours = {**ours, "ort": plain["ort"]}
        elif "crash" not in ours and "hang" not in ours:
            ours = {**ours, "ort": {"ok": False, "error": "crash" if "crash" in plain else "hang", "message": ""}}
        merged.append(Result(k // 2, done[k].what, ours))
    return merged


# ---------------------------------------------------------------- the model file's judgement

#: an error of ours that means "this is not a model we can read"
LOAD = "ModelLoadError"


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        np.shape(x) == np.shape(y) and np.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True) for x, y in zip(a, b)
    )


def judge_model(outcome: dict) -> str:
    """The class of one model mutant's outcome: "fault: ..." when it breaks a rule, else a
    named, explained class ("same: ..." when ours and onnxruntime agree)."""
    if "crash" in outcome:
        return f"fault: the worker died ({outcome['crash']})"
    if "hang" in outcome:
        return f"fault: hang (> {outcome['hang']} s)"
    protobuf_ok = outcome["protobuf"]["ok"]
    ours, ort_, fold, convert = (outcome[k] for k in ("session", "ort", "fold", "convert"))
    for name, result in (("session", ours), ("fold", fold), ("convert", convert)):
        if not result["ok"]:
            allowed = MODEL_ERRORS | (ORT_ERRORS if name == "session" else set())
            if result["error"] not in allowed:
                return f"fault: {name} raised {result['error']}: {result['message']}"
    if not protobuf_ok:
        for name, result in (("session", ours), ("fold", fold), ("convert", convert)):
            if result["ok"] or result["error"] != LOAD:
                return f"fault: {name} did not refuse a file protobuf rejects ({result})"
        return "same: protobuf rejects; every reader refuses it as ModelLoadError"
    if ours["ok"] and ort_["ok"]:
        return "same: both ran, outputs equal" if _same(ours["value"], ort_["value"]) else "fault: outputs differ"
    if not ours["ok"] and not ort_["ok"]:
        return "same: both refuse"
    return explain_difference(ours, ort_, set(outcome["changed"]))


#: what only the function fallback uses: the session removes both before onnxruntime sees the model
FALLBACK_PARTS = {"functions", "opset_import:other"}
#: what a model's load does not judge: unknown and metadata fields, weight values
INERT_PARTS = {"model", "initializer"}


def explain_difference(ours: dict, ort_: dict, changed: set[str]) -> str:
    """Why ours and plain onnxruntime disagree on a file protobuf parses ("explained: ..."), else
    "fault: unexplained ...". ``changed``: where the mutant differs from the intact model.

    * Ours refuses, onnxruntime runs: ours validates every InplaceABN node against the schema and the
      version of our domain's opset import (``InplaceABNError`` names the node or the import).
      onnxruntime runs the node through its model-local function, which reads what it needs and
      checks nothing else: an unknown attribute, an epsilon out of range, an opset version 3 of
      ``ai.iabn``, all run there. Ours also refuses a string field that is not UTF-8 (ONNX's strings are;
      protobuf's proto2 parser does not check them, and onnxruntime may run the file or fail decoding its
      own error message).
    * onnxruntime refuses, ours runs: the fault is in what only the function fallback uses, the
      function itself or the ``ai.onnx.ml`` opset import its body needs. The session routes every
      node to standard ops or the kernel and removes both before onnxruntime sees the model.
      onnxruntime 1.32 even crashes (SIGSEGV) on some such files; ours runs them.
    """
    from iabn_onnx import DOMAIN, OP_TYPE

    if not ours["ok"]:
        if ours["error"] == "InplaceABNError" and changed & {f"node:{OP_TYPE}", f"opset_import:{DOMAIN}"}:
            return "explained: ours validates InplaceABN nodes and its opset version, the function fallback does not"
        if ours["error"] == "ModelLoadError" and "not UTF-8" in ours["message"]:
            return "explained: a string field is not UTF-8, which protobuf's proto2 parser does not check"
        return f"fault: unexplained, ours refuses ({ours['error']}: {ours['message']}), onnxruntime runs ({changed})"
    if changed & FALLBACK_PARTS and changed <= FALLBACK_PARTS | INERT_PARTS | {"opset_import:"}:
        return "explained: the fault is in what only the function fallback uses, which the session removes"
    return f"fault: unexplained, onnxruntime refuses ({ort_['error']}: {ort_['message']}), ours runs ({changed})"


def judge_load(outcome: dict, allowed: set[str], names: tuple[str, ...]) -> str:
    """A Paddle or checkpoint mutant: read, or refused with a documented error naming one of ``names``
    (a program and its parameters disagree: either may be the one at fault)."""
    if "crash" in outcome:
        return f"fault: the worker died ({outcome['crash']})"
    if "hang" in outcome:
        return f"fault: hang (> {outcome['hang']} s)"
    load = outcome["load"]
    if load["ok"]:
        return "read"
    if load["error"] not in allowed:
        return f"fault: {load['error']}: {load['message']}"
    if not any(name in load["message"] for name in names):
        return f"fault: the message does not name {names}: {load['message']}"
    return f"refused: {load['error']}"


# ---------------------------------------------------------------- fixtures


def model_fixture() -> tuple[bytes, dict[str, np.ndarray]]:
    """A small conv net with the function fallback (so plain onnxruntime runs it) and weights big
    enough that the session reads them from the file; its bytes and a feed."""
    import onnx

    from iabn_onnx.examples import conv_net_model
    from iabn_onnx.op.function import add_function_fallback

    model = add_function_fallback(conv_net_model(channels=8, image=8))
    data = model.SerializeToString()
    onnx.load_model_from_string(data)
    feed = {"X": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    return data, feed


def model_jobs(folder: Path, count: int, seed: int) -> list[tuple[str, dict]]:
    data, feed = model_fixture()
    jobs = []
    for k, (what, blob) in enumerate(mutants(data, count, seed)):
        path = folder / f"m{seed}_{k}.onnx"
        path.write_bytes(blob)
        jobs.append((what, {"reader": "model", "path": str(path), "extra": {"feed": {"X": feed["X"].tolist()}}}))
    return jobs


PADDLE_FIXTURE = ROOT / "tests" / "paddle_fixtures" / "programs" / "cnn"


def paddle_jobs(folder: Path, count: int, seed: int) -> list[tuple[str, dict, tuple[str, ...]]]:
    """Mutants of a saved program (``model.pdmodel``) and of its parameters (``model.pdiparams``), half
    each, through ``export_paddle``: (what, job, the file name its error must give)."""
    jobs = []
    for target, offset in (("model.pdmodel", 0), ("model.pdiparams", 1)):
        data = (PADDLE_FIXTURE / target).read_bytes()
        for k, (what, blob) in enumerate(mutants(data, count // 2, seed * 2 + offset)):
            where = folder / f"p{seed}_{offset}_{k}"
            where.mkdir()
            for name in ("model.pdmodel", "model.pdiparams"):
                (where / name).write_bytes(blob if name == target else (PADDLE_FIXTURE / name).read_bytes())
            job = {"reader": "paddle", "path": str(where / "model"), "extra": {}}
            jobs.append((f"{target}: {what}", job, ("model.pdmodel", "model.pdiparams")))
    return jobs


def params_jobs(
    folder: Path, count: int, seed: int, torch_checkpoint: Path | None
) -> list[tuple[str, dict, tuple[str, ...]]]:
    """Mutants of a ``.pdparams`` pickle, a ``.pdiparams`` file and (given one) a torch checkpoint,
    through their loaders."""
    from iabn_onnx.fluid.program_desc import read_program

    names = read_program(PADDLE_FIXTURE / "model.pdmodel").persistable_names()
    sources = [
        ("pdparams", ROOT / "tests" / "paddle_fixtures" / "seed.pdparams", {}),
        ("pdiparams", PADDLE_FIXTURE / "model.pdiparams", {"names": names}),
    ]
    if torch_checkpoint is not None:
        sources.append(("torch", torch_checkpoint, {}))
    jobs = []
    for offset, (kind, source, extra) in enumerate(sources):
        data = source.read_bytes()
        for k, (what, blob) in enumerate(mutants(data, count // len(sources), seed * 3 + offset)):
            path = folder / f"c{seed}_{kind}_{k}{source.suffix}"
            path.write_bytes(blob)
            job = {"reader": "params", "path": str(path), "extra": {"kind": kind, **extra}}
            jobs.append((f"{kind}: {what}", job, (path.name,)))
    return jobs


#: the errors each loader documents
LOAD_ERRORS = {"paddle": PADDLE_ERRORS, "params": {"CheckpointError", "TorchCheckpointError"}}


def load_classes(jobs: list[tuple[str, dict, tuple[str, ...]]]) -> list[tuple[str, str]]:
    """(what, class) of each load mutant."""
    results = run_jobs([(what, job) for what, job, _ in jobs])
    return [
        (result.what, judge_load(result.outcome, LOAD_ERRORS[job["reader"]], names))
        for result, (_, job, names) in zip(results, jobs)
    ]


def small_torch_checkpoint(folder: Path) -> Path:
    """A torch.save file of a small state dict, as a training script writes one."""
    import torch

    path = folder / "checkpoint.pth"
    g = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(8, 3, 3, 3, generator=g), "bn.running_var": torch.rand(8, generator=g)}
    torch.save({"state_dict": state, "epoch": 3}, path)
    return path


def summarize(classes: list[str]) -> dict[str, int]:
    return dict(Counter(c if not c.startswith("fault") else c[:200] for c in classes).most_common())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reader", choices=["model", "paddle", "params"])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, nargs="+", default=[7])
    args = ap.parse_args(argv)
    classes = []
    with tempfile.TemporaryDirectory(prefix="iabn_fuzz_") as tmp:
        for seed in args.seed:
            if args.reader == "model":
                judged = [
                    (r.what, judge_model(r.outcome)) for r in model_results(model_jobs(Path(tmp), args.count, seed))
                ]
            elif args.reader == "paddle":
                judged = load_classes(paddle_jobs(Path(tmp), args.count, seed))
            else:
                judged = load_classes(params_jobs(Path(tmp), args.count, seed, small_torch_checkpoint(Path(tmp))))
            for k, (what, cls) in enumerate(judged):
                classes.append(cls)
                if cls.startswith("fault"):
                    print(f"seed {seed} #{k} ({what}): {cls}", flush=True)
    print(json.dumps(summarize(classes), indent=1))
    return int(any(c.startswith("fault") for c in classes))


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark figures of README.md and docs/, rendered from benchmarks/results/*.json.

Every figure in those pages stands between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``
markers and is written by this script; ``tests/test_readme.py`` fails when a block differs
from what the JSON renders to. A block may stand in several pages (the README's summary rows come
from the same files as docs/benchmarks.md's tables).

    python benchmarks/report.py            # print every block
    python benchmarks/report.py --write    # rewrite the blocks in README.md and docs/*.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
PAGES = (README, ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "deployment.md")
sys.path.insert(0, str(ROOT))  # benchmarks.*, iabn_onnx from the checkout

from benchmarks.timing import ISA_FLAGS  # noqa: E402


def _net_variants() -> list[str]:
    from benchmarks.bench_networks import VARIANTS

    return VARIANTS


NET_VARIANTS = _net_variants()
ANCHOR = "torch_export_opt"


def _span(values: list[float], fmt: str = "{:.2f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def networks_table(data: dict) -> list[str]:
    lines = ["| network | batch | " + " | ".join(NET_VARIANTS) + " |", "|---|---|" + "---|" * len(NET_VARIANTS)]
    for name, net in data["networks"].items():
        for run in net["runs"]:
            ratios = run["ratio_to_" + ANCHOR]
            cells = [
                f"{run['median_s'][v] * 1e3:.1f} ms ({ratios[v]:.2f}×)" if v in run["median_s"] else "n/a"
                for v in NET_VARIANTS
            ]
            lines.append(f"| {name} | {run['batch']} | " + " | ".join(cells) + " |")
    return lines


def networks_footprint(data: dict) -> list[str]:
    counts = {len(p) for net in data["networks"].values() for p in net.get("fresh_processes", {}).values()}
    lines = [
        f"Fresh processes per variant: {', '.join(map(str, sorted(counts))) or 'none'}.",
        "",
        "| network | InplaceABN nodes | fold time | variant | peak RSS, batch 8 | start-up + first run |",
        "|---|---|---|---|---|---|",
    ]
    for name, net in data["networks"].items():
        extra = [v for v in net.get("startup_s", {}) if v not in NET_VARIANTS]  # plugin_cold
        for i, v in enumerate([*NET_VARIANTS, *extra]):
            head = f"| {name} | {net['inplace_abn_nodes']} | {net['fold_s'] * 1e3:.0f} ms" if i == 0 else "| | |"
            rss = net.get("peak_rss_mb", {}).get(v)
            startup = net.get("startup_s", {}).get(v)
            rss_s = f"{rss:.0f} MB" if rss is not None else "n/a"
            startup_s = f"{startup:.2f} s" if startup is not None else "n/a"
            lines.append(f"{head} | {v} | {rss_s} | {startup_s} |")
    return lines


def networks_summary(data: dict) -> list[str]:
    runs = [run for net in data["networks"].values() for run in net["runs"]]

    def ratios(v: str) -> str:
        return _span([run["ratio_to_" + ANCHOR][v] for run in runs])

    diffs = [d for run in runs for d in run["max_abs_diff_vs_eager"].values()]
    reruns = [f"{name} ({why})" for name, why in data.get("rerun", {}).items()]
    lines = [
        f"Against the native anchor (`{ANCHOR}`), over every network and batch: the default plugin session "
        f"{ratios('plugin')}×, the folded model {ratios('folded')}×, every node in the kernel "
        f"{ratios('plugin_kernel_only')}×. Every variant's output was within {max(diffs):.1e} of torch eager."
        + (f" Timed in a run of its own: {'; '.join(reruns)}." if reruns else "")
    ]
    for name, net in data["networks"].items():
        rss, startup = net.get("peak_rss_mb", {}), net.get("startup_s", {})
        if "plugin" in rss and "folded" in rss:
            line = (
                f"{name}, fresh process at batch 8: the default session peaks at {rss['plugin']:.0f} MB against "
                f"{rss['folded']:.0f} MB for plain onnxruntime on the folded model "
                f"({rss['plugin'] / rss['folded']:.2f}×)"
            )
            if "plugin" in startup and "folded" in startup:
                line += (
                    f"; start-up plus first run {startup['plugin']:.2f} s against {startup['folded']:.2f} s "
                    f"({startup['plugin'] / startup['folded']:.2f}×)"
                )
                if "plugin_cold" in startup:
                    line += (
                        f", and {startup['plugin_cold']:.2f} s ({startup['plugin_cold'] / startup['folded']:.2f}×) "
                        "in a file's first process, before the start-up cache holds it"
                    )
            lines.append(line + ".")
    plain = []
    for name, net in data["networks"].items():
        facts = net.get("plain_export")
        if not facts:
            continue
        runs_ = net["runs"]
        folded = _span([r["ratio_to_" + ANCHOR]["plain_folded"] for r in runs_])
        session = _span([r["ratio_to_" + ANCHOR]["plain_plugin"] for r in runs_])
        slim = _span([r["ratio_to_" + ANCHOR]["onnxslim_raw"] for r in runs_])
        line = (
            f"{name}, torch's plain export → convert: {facts['inplace_abn_nodes']} nodes, fold puts "
            f"{facts['folded_into_producers']} into producers and rewrites {facts['rewritten']} "
            f"({facts['constant_nodes_evaluated']} constant-subgraph nodes evaluated; Conv inputs still computed: "
            f"{facts['conv_inputs_from_subgraphs']}); folded {folded}×, default session {session}×, "
            f"onnxslim on the plain export {slim}×"
        )
        same = net.get("same_graph_as_anchor")
        if same:
            yes = {v: "yes" if ok else "no" for v, ok in same.items()}
            line += (
                "; onnxruntime runs the anchor's graph (the same ops, initializers of the same shapes): "
                f"plain export folded {yes['plain_folded']}, its session {yes['plain_plugin']}; "
                f"export_torch folded {yes['folded']}, its session {yes['plugin']}"
            )
        plain.append(line + ".")
    return [lines[0], "", *(f"* {line}" for line in lines[1:] + plain)]


def single_node_table(data: dict) -> list[str]:
    variants = ["native", "stock_pyop", "ours", "folded"]
    lines = ["| shape | dtype | act | mode | " + " | ".join(variants) + " |", "|---|---|---|---|" + "---|" * 4]
    for row in data["rows"]:
        if row["act"] == "identity" and row["dtype"] == "float64":
            continue  # keep the table readable; the JSON has every case
        cells = [f"{row['median_s'][v] * 1e3:.3f}" if v in row["median_s"] else "n/a" for v in variants]
        mode = "train" if row["training_mode"] else "infer"
        shape = "×".join(map(str, row["shape"]))
        lines.append(f"| {shape} | {row['dtype']} | {row['act']} | {mode} | " + " | ".join(cells) + " |")
    return lines


def single_node_summary(data: dict) -> list[str]:
    rows = data["rows"]
    stock = [r["median_s"]["stock_pyop"] / r["median_s"]["ours"] for r in rows if "stock_pyop" in r["median_s"]]

    def vs_native(act: str) -> str:
        big = [
            r["median_s"]["ours"] / r["median_s"]["native"]
            for r in rows
            if r["act"] == act
            and r["dtype"] == "float32"
            and not r["training_mode"]
            and "native" in r["median_s"]
            and r["shape"][0] * r["shape"][2] >= 8 * 28
        ]
        return _span(big) + "×" if big else "n/a"

    return [
        "The kernel path against native, float32 inference at [8,64,28,28] and above: "
        f"identity {vs_native('identity')}, leaky_relu {vs_native('leaky_relu')}, elu {vs_native('elu')}. "
        f"It is {_span(stock, '{:.0f}')}× faster than the stock Python-op path."
    ]


def kernel_table(data: dict) -> list[str]:
    lines = ["| case | ours (kernel) | native | figure | goal |", "|---|---|---|---|---|"]
    for row in data["rows"]:
        if row["goal_key"] == "ratio":
            figure, goal = f"{row['ratio']:.2f}×", f"≤ {row['goal']}×"
        else:
            figure, goal = f"+{row['delta_us']:.1f} µs", f"≤ +{row['goal']:.0f} µs"
        ours, native = row["ours_s"] * 1e3, row["native_inference_s"] * 1e3
        lines.append(f"| {row['case']} | {ours:.3f} ms | {native:.3f} ms | {figure} | {goal} |")
    lines.append(
        f"| cold start: import, session, first run (fresh process) | {data['cold_start_s']:.2f} s | | | ≤ 3 s |"
    )
    return lines


def routes_table(data: dict) -> list[str]:
    """Per layout, dtype and activation: each standard form's time as a multiple of the kernel's over the
    measured shapes, the largest error of each form against the float64 reference, and the route a
    session takes (``route_choice``)."""
    from iabn_onnx.op.schema import Activation, InplaceABNAttrs, Layout
    from iabn_onnx.passes import route_choice

    elem = {"float16": 10, "float32": 1, "float64": 11}  # TensorProto element types
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["layout"], row["dtype"], row["act"]), []).append(row)
    lines = [
        "| layout | dtype | act | Mul + Add | BatchNormalization | largest error: Mul + Add / BN / kernel | route |",
        "|---|---|---|---|---|---|---|",
    ]
    for (layout, dtype, act), rows in groups.items():
        cells = []
        for variant in ("mul_add", "batchnorm"):
            ratios = [r["ratio_to_kernel"][variant] for r in rows if variant in r["ratio_to_kernel"]]
            cells.append(_span(ratios) + "×" if ratios else "n/a")
        forms = ("mul_add", "batchnorm", "kernel")
        errors = [max(r["max_abs_error"].get(v, float("nan")) for r in rows) for v in forms]
        attrs = InplaceABNAttrs(act=Activation(act), data_layout=Layout(layout))
        form = route_choice.choose(attrs, elem[dtype])[0] or "kernel"
        error = " / ".join(f"{e:.1e}" for e in errors)
        lines.append(f"| {layout} | {dtype} | {act} | {cells[0]} | {cells[1]} | {error} | {form} |")
    return lines


def fold_lines(data: dict) -> list[str]:
    lines = [
        f"Fold of a {data['layers']}-layer chain ({data['model_mb']:.1f} MB): {data['folded']} folded, "
        f"median {data['fold_median_s'] * 1e3:.0f} ms.",
        "",
    ]
    tools = list(next(iter(data["capability"].values())))
    lines += ["| producer + BatchNormalization | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for kind, row in data["capability"].items():
        lines.append(f"| {kind} | " + " | ".join(row[t] for t in tools) + " |")
    return lines


def churn_lines(data: dict) -> list[str]:
    lines = [
        "| route | resident MB after " + ", ".join(next(iter(data["routes"].values()))["rss_mb"]) + " sessions | "
        "growth after the first 500 |",
        "|---|---|---|",
    ]
    for route, r in data["routes"].items():
        marks = ", ".join(f"{v:.1f}" for v in r["rss_mb"].values())
        lines.append(f"| {route} | {marks} | {r['growth_after_first_mb']:.2f} MB |")
    return lines


def taken_on(data: dict) -> str:
    """The machine and versions a results file was taken with (recorded since the third release)."""
    env = data.get("environment")
    if not env and "machine" in data:  # the second release recorded part of it
        m = data["machine"]
        listed = ", ".join(f"{n} {m[n]}" for n in ("onnx", "onnxruntime", "torch") if m.get(n))
        return f"_Taken on: {m['cores']} cores, {m['cpu']}; Python {m['python']}, {listed}; ml_dtypes not recorded._"
    if not env:
        return "_Taken on: not recorded (this file predates version recording)._"
    v = env["versions"]
    names = ("onnx", "onnxruntime", "onnxruntime-extensions", "ml_dtypes", "numpy", "torch")
    listed = ", ".join(f"{n} {v[n]}" for n in names if v.get(n))
    cpu = env["cpu"] + (f" ({', '.join(env['isa']) or 'none of ' + ', '.join(ISA_FLAGS)})" if "isa" in env else "")
    return f"_Taken on: {env['cores']} cores, {cpu}; Python {env['python']}, {listed}._"


def startup_lines(data: dict) -> list[str]:
    loaded = ", ".join(data["import_loaded"]) or "none of torch, numba, onnxruntime-extensions"
    help_loaded = data.get("cli_help_loaded")
    lines = [
        f"`import iabn_onnx` adds {data['import_iabn_onnx_extra_s']:.2f} s to `import onnx, onnxruntime` "
        f"({data['import_onnx_onnxruntime_s']:.2f} s; torch installed: {'yes' if data['torch_installed'] else 'no'}) "
        f"and loads {loaded}; `iabn-onnx --help` takes {data['cli_help_s']:.2f} s"
        + (f" and loads {', '.join(help_loaded) or 'neither onnx nor numpy'}" if help_loaded is not None else "")
        + " (medians of fresh processes)."
    ]
    if "import_ml_dtypes_s" in data:
        lines.append(f"`import ml_dtypes` (onnx imports it; numpy included) takes {data['import_ml_dtypes_s']:.2f} s.")
    return [" ".join(lines), "", taken_on(data)]


def session_startup_lines(data: dict) -> list[str]:
    lines = [
        f"Start-up plus first batch-{data['batch']} run, in {data['processes']} rounds of one fresh process per "
        "variant, the order rotating: the median time, and × plain onnxruntime on the folded model as the median of "
        "the same-round ratios (25th–75th percentile):",
        "",
        "| network | plain onnxruntime, folded model | session, start-up cache filled | session, cache off |",
        "|---|---|---|---|",
    ]
    for name, net in data["networks"].items():
        m, r, q = net["startup_s"], net["ratio_to_folded"], net["ratio_quartiles"]
        cells = [f"{m['folded']:.2f} s (1.00×)"]
        cells += [f"{m[v]:.2f} s ({r[v]:.2f}×, {q[v][0]:.2f}–{q[v][1]:.2f})" for v in ("session", "session_cold")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, "", taken_on(data)]


def plain_export_lines(data: dict) -> list[str]:
    first = next(iter(data["networks"].values()))["runs"][0]
    lines = [
        "Torch's plain export (`optimize=False`) of each network, converted, against torch's optimized export (the "
        f"anchor): ms per run and × the anchor, the median of {first['rounds']} paired rounds at batch 1 (half as "
        "many at batch 8), with the 25th–75th percentile of the round ratios:",
        "",
        "| network | batch | torch's optimized export | converted + folded, plain onnxruntime "
        "| converted, default session | largest difference from torch eager |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for name, net in data["networks"].items():
        for run in net["runs"]:
            t = run["variants"]
            cells = [f"{t[data['anchor']]['median_s'] * 1e3:.1f} ms"]
            for v in ("plain_folded", "plain_plugin"):
                spread = f"{t[v]['ratio_q25']:.2f}–{t[v]['ratio_q75']:.2f}"
                cells.append(f"{t[v]['median_s'] * 1e3:.1f} ms ({t[v]['ratio']:.2f}×; {spread})")
            cells.append(f"{max(run['max_abs_diff_vs_eager'].values()):.1e}")
            lines.append(f"| {name} | {run['batch']} | " + " | ".join(cells) + " |")
        same = net["same_graph_as_anchor"]
        left = [op for op in ("Expand", "CastLike", "Shape") if net["ops_left_in_folded"].get(op)]
        notes.append(
            f"{name}: fold puts {net['folded_into_producers']} of {net['inplace_abn_nodes']} nodes into producers and "
            f"rewrites {net['rewritten']} ({net['constant_nodes_evaluated']} constant-subgraph nodes evaluated, "
            f"{net['reshape_targets_made_constant']} Reshape target(s) made constant, {net['zero_biases_dropped']} "
            f"zero biases dropped; left: {', '.join(left) or 'no Expand, CastLike or Shape'}); onnxruntime "
            f"runs the anchor's graph (the same ops, initializers of the same shapes): folded "
            f"{'yes' if same['plain_folded'] else 'no'}, session {'yes' if same['plain_plugin'] else 'no'}."
        )
    return [*lines, "", *(f"* {note}" for note in notes)]


def suite_lines(data: dict) -> list[str]:
    """``.ci/run``'s figure (paddlepaddle installed), and the README command's in a fresh venv without it."""
    runs = data if "test_suite.json" in data else {"test_suite.json": data}
    lines = []
    for filename, what in (
        ("test_suite.json", "With paddlepaddle 2.6.2 installed, as `.ci/run` installs it, the default suite"),
        ("test_suite_without_paddle.json", "In a fresh venv with only the README's command (no Paddle), it"),
    ):
        run = runs.get(filename)
        if run:
            lines.append(
                f"{what} took {run['wall_s'] / 60:.1f} minutes on {run['cores']} cores and peaked at "
                f"{run['peak_rss_mb'] / 1024:.1f} GiB resident in its largest process ({run['summary']})."
            )
    return [*lines, "", taken_on(runs["test_suite.json"])]


def paddle_lines(data: dict) -> list[str]:
    from benchmarks.bench_paddle import ANCHOR, VARIANTS

    net = data["network"]
    lines = [
        f"ResNet-style CNN ({data['inplace_abn_nodes']} inplace_abn ops, width {net['width']}, "
        f"{net['side']}×{net['side']} input); ms per run (× `{ANCHOR}`), largest difference from Paddle's "
        "executor relative to its largest output:",
        "",
        "| batch | " + " | ".join(VARIANTS) + " |",
        "|---|" + "---|" * len(VARIANTS),
    ]
    for run in data["runs"]:
        ratios, diffs = run["ratio_to_" + ANCHOR], run["max_rel_diff_vs_paddle"]
        cells = [f"{run['median_s'][v] * 1e3:.2f} ms ({ratios[v]:.2f}×), {diffs[v]:.0e}" for v in VARIANTS]
        lines.append(f"| {run['batch']} | " + " | ".join(cells) + " |")
    env = data.get("environment", {})
    if "paddlepaddle" in env:
        lines += ["", f"Paddle: paddlepaddle {env['paddlepaddle']}."]
    return lines


def _disk(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _took(dists: dict[str, str], mb: dict[str, float], base: dict[str, str]) -> str:
    """The distributions an install added beyond ``base``, torch's build named and the largest others listed."""
    added = {n: v for n, v in dists.items() if n not in base}
    cuda = sorted(n for n in added if n.startswith("nvidia-") or n in ("triton", "cuda-toolkit", "cuda-bindings"))
    parts = []
    if "torch" in added:
        nvidia = sum(n.startswith("nvidia-") for n in cuda)
        if nvidia:
            build = f"the CUDA build: {nvidia} `nvidia-*` distributions"
            build += f", triton {added['triton']}" if "triton" in added else ""
        else:
            build = "the CPU build" if added["torch"].endswith("+cpu") else "no CUDA"
        parts.append(f"torch {added['torch']} ({build})")
    rest = sorted((n for n in added if n != "torch" and n not in cuda), key=lambda n: -mb.get(n, 0.0))
    parts += [f"{n} {added[n]}" for n in rest[: 3 - len(parts)]]
    if not added:
        return "nothing beyond the base install"
    return ", ".join(parts) + f"; {len(added)} distribution" + ("s" if len(added) > 1 else "")


def extras_lines(data: dict) -> list[str]:
    """Each install line as a fresh venv took it and as PyPI alone resolves it (bench_install_size.py), and what
    pip was told on the machine that measured it."""
    from benchmarks.bench_install_size import PURPOSE

    lines = ["| install | for | pip took here | on disk here | from PyPI alone |", "|---|---|---|---|---|"]
    base = data["lines"]["base"]
    for name, row in data["lines"].items():
        command = " && ".join(f"`{c}`" for c in row["commands"])
        purpose = PURPOSE[row["extra"]]
        if name == "torch-cpu":  # the way to the CPU build differs by machine: the note says how it was taken
            command, purpose = f"{command.split(' && ')[-1]} after torch's CPU build (below)", "the same"
        under = {} if name == "base" else base["distributions"]
        took = _took(row["distributions"], row["distribution_mb"], under)
        size = f"{_disk(row['mb'])} in all" if name == "base" else f"{_disk(row['adds_mb'])} more"
        pypi = row.get("pypi")
        if pypi is None:
            from_pypi = "not resolved (PyPI has no CPU build of torch for Linux: use PyTorch's CPU index, below)"
        elif "error" in pypi:
            from_pypi = f"failed: {pypi['error'][0]}"
        else:
            under_pypi = {} if name == "base" else base["pypi"]["distributions"]
            added = {n: v for n, v in pypi["distributions"].items() if n not in under_pypi}
            same = added == {n: v for n, v in row["distributions"].items() if n not in under}
            download = sum(mb for n, mb in pypi["download_mb"].items() if n in added)
            from_pypi = "the same" if same else _took(pypi["distributions"], pypi["download_mb"], under_pypi)
            from_pypi += f"; {_disk(download)}" + (" more" if name != "base" else "") + " to download"
        lines.append(f"| {command} | {purpose} | {took} | {size} | {from_pypi} |")
    told = data["pip_configuration"]
    notes = [f"each line in a fresh venv ({base['pip']}) as pip resolved it on this machine"]
    if told["constraints"]:
        notes.append("whose pip configuration holds " + ", ".join(f"`{c}`" for c in told["constraints"]))
    if told["find_links_wheels"]:
        notes.append("and finds " + ", ".join(f"`{w}`" for w in told["find_links_wheels"]) + " on its disk")
    cpu = data["lines"].get("torch-cpu")
    if cpu:
        notes.append(f"the CPU build by `{cpu['commands'][0]}`")
    if data.get("pip_options"):
        notes.append("with " + " ".join(f"`{o}`" for o in data["pip_options"]) + " on every `pip install`")
    env = data["environment"]  # the versions are each venv's own, in the table
    where = f"Python {env['python']}, {env['cpu']}, {env['cores']} cores"
    return [
        *lines,
        "",
        f'_Measured {", ".join(notes)}; {where}. "From PyPI alone" is pip\'s dry run with no configuration, as on a '
        "machine that has only PyPI._",
    ]


def quantize_lines(data: dict) -> list[str]:
    variants = ["torch_export_opt", "folded", "int8", "int8_per_channel", "openvino_f32", "openvino_default",
                "openvino_int8_per_channel"]  # fmt: skip
    first = next(iter(data["networks"].values()))[0]
    shown = [v for v in variants if v in first["median_s"]]
    lines = [
        "ms per run and speed-up over torch's optimized fp32 export (`torch_export_opt`, on onnxruntime); medians of "
        f"alternating blocks in one process, {data['repeat']} runs each; `int8` is `iabn_onnx.quantize` (QDQ) on "
        "onnxruntime, its top-1 agreement with the folded fp32 model on the timed batch in brackets:",
        "",
        "| network | batch | " + " | ".join(shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for name, rows in data["networks"].items():
        for row in rows:
            cells = []
            for v in shown:
                cell = f"{row['median_s'][v] * 1e3:.1f} ms ({row['speedup_vs_torch_export_opt'][v]:.2f}×)"
                if v in ("int8", "int8_per_channel", "openvino_int8_per_channel"):
                    cell += f" [{row['top1_agreement_with_folded'][v]:.0%}]"
                cells.append(cell)
            lines.append(f"| {name} | {row['batch']} | " + " | ".join(cells) + " |")
    if data.get("weights"):
        lines += ["", "The weights `quantize` chose by default (`int8`):", ""]
        lines += [f"* {name}: {why}" for name, why in data["weights"].items()]
    lines += ["", cpu_flag_line(data["cpu_flags"])]
    if "openvino" in data.get("environment", {}):
        lines.append(
            f"OpenVINO {data['environment']['openvino']}: `openvino_default` is its default precision, bf16 on a CPU "
            "with AMX or avx512_bf16 (about 1e-3 from fp32 on AMX, 2e-3 on avx512_bf16, both measured); "
            "`openvino_f32` asks for `INFERENCE_PRECISION_HINT=f32`."
        )
    return [*lines, "", taken_on(data)]


def quantize_segmentation_lines(data: dict) -> list[str]:
    lines = [
        "Batch 1; `quantize` is `iabn_onnx.quantize` with its defaults, `by hand` onnxruntime's "
        "`quant_pre_process` + `quantize_static` (QDQ, per-channel weights) on the same folded file and samples; "
        "each quantized in a fresh process (peak RSS above the process's once its libraries are imported). "
        "Speed-ups are over the folded fp32 file on onnxruntime, medians of alternating blocks in one process; "
        "pixel agreement is the argmax over the class axis, against fp32.",
        "",
        "| network | size | quantize: time, peak RSS | by hand: time, peak RSS | int8 speed-up: quantize / by hand "
        "| pixel agreement: quantize / by hand |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in data["networks"].items():
        q, h = row["cost"]["quantize"], row["cost"]["by_hand"]
        s, a = row["speedup_vs_fp32"], row["pixel_agreement_with_fp32"]
        lines.append(
            f"| {name} | {row['size']}×{row['size']} | {q['seconds']:.0f} s, {q['peak_rss_bytes'] / 2**30:.2f} GiB "
            f"({q['seconds'] / h['seconds']:.2f}×, {q['peak_rss_bytes'] / h['peak_rss_bytes']:.2f}×) "
            f"| {h['seconds']:.0f} s, {h['peak_rss_bytes'] / 2**30:.2f} GiB "
            f"| {s['quantize']:.2f}× / {s['by_hand']:.2f}× | {a['quantize']:.2%} / {a['by_hand']:.2%} |"
        )
    chosen = {n: r["cost"]["quantize"].get("weights") for n, r in data["networks"].items()}
    if any(chosen.values()):
        lines += ["", "The weights `quantize` chose, and why:", ""]
        lines += [f"* {n}: {why}" for n, why in chosen.items() if why]
    classes = sorted({c for row in data["networks"].values() for c in row["conv_speedup_by_class"]})
    lines += [
        "",
        "Where the time goes: Conv kernel time by layer class (onnxruntime's profiler, median of 5 runs), fp32 → "
        "`quantize`'s int8, and the class's int8 speed-up:",
        "",
        "| network | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for name, row in data["networks"].items():
        cells = []
        for c in classes:
            fp32, int8 = row["conv_seconds_by_class"]["fp32"].get(c), row["conv_seconds_by_class"]["int8"].get(c)
            cells.append(f"{fp32 * 1e3:.0f} → {int8 * 1e3:.0f} ms ({fp32 / int8:.2f}×)" if fp32 and int8 else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", cpu_flag_line(data["cpu_flags"])]
    return [*lines, "", taken_on(data)]


def cpu_flag_line(flags: dict) -> str:
    have = ", ".join(f for f in ISA_FLAGS if flags.get(f)) or "none of them"
    lacks = ", ".join(f for f in ISA_FLAGS if not flags.get(f))
    return f"CPU flags: {have}" + (f"; not: {lacks}" if lacks else "") + "."


def weight_bits_lines(data: dict) -> list[str]:
    """fp32 beside int8 with 8-bit and 7-bit weights on one CPU (bench_weight_bits.py)."""
    seg, cls = data["fixtures"]["digits_seg"], data["fixtures"]["digits"]

    def pct(v: float) -> str:
        return f"{v:.2%}"

    lines = [
        f"Per-channel weights, the same calibration ({data['fixture_calibration_samples']} training samples for the "
        "fixtures); figures as `quantize --check` reports them.",
        "",
        "| | fp32 | int8, 8-bit weights | int8, 7-bit weights |",
        "|---|---|---|---|",
        f"| digits segmenter ({seg['held_out']} held-out canvases): pixel accuracy, mIoU "
        f"| {pct(seg['int8_8bit']['accuracy_fp32'])}, {pct(seg['int8_8bit']['miou_fp32'])} "
        + "".join(f"| {pct(seg[k]['accuracy_int8'])}, {pct(seg[k]['miou_int8'])} " for k in ("int8_8bit", "int8_7bit"))
        + "|",
        f"| digits classifier ({cls['held_out']} held-out digits): accuracy | {pct(cls['int8_8bit']['accuracy_fp32'])} "
        + "".join(f"| {pct(cls[k]['accuracy_int8'])} " for k in ("int8_8bit", "int8_7bit"))
        + "|",
    ]
    net = data.get("network")
    if net:
        ms, agree = net["median_s"], net["pixel_agreement_with_fp32"]
        lines.append(
            f"| {net['network']} ({net['size']}×{net['size']}, batch 1, random weights): ms per run, pixel "
            f"agreement with fp32 | {ms['fp32'] * 1e3:.1f} ms "
            + "".join(f"| {ms[k] * 1e3:.1f} ms, {pct(agree[k])} " for k in ("int8_8bit", "int8_7bit"))
            + "|"
        )
    verdict = "saturates" if data["saturates"] else "does not saturate"
    chosen = "7" if data["saturates"] else "8"
    lines += [
        "",
        f"{cpu_flag_line(data['cpu_flags'])} By its flags this CPU's int8 dot product {verdict} with 8-bit weights, "
        f"so `--weight-bits auto` takes {chosen} bits here.",
    ]
    return [*lines, "", taken_on(data)]


def _cpu(data: dict) -> str:
    env = data.get("environment") or {}
    return f"{env.get('cpu', 'not recorded')}, onnxruntime {env.get('versions', {}).get('onnxruntime', '?')}"


def summary_lines(data: dict) -> list[str]:
    """Six rows, each from the results file of the full table in docs/benchmarks.md."""
    nets, quant, seg = data["networks.json"], data["quantize.json"], data["quantize_segmentation.json"]
    startup, paddle = data["session_startup.json"], data["paddle.json"]
    runs = [run for net in nets["networks"].values() for run in net["runs"]]
    span = lambda v: _span([run["ratio_to_" + ANCHOR][v] for run in runs])

    def speedups(variant: str, batch: int) -> str:
        named = [n for n in ("resnet50", "tresnet_m") if n in quant["networks"]] or list(quant["networks"])[:2]
        cells = [
            next(r for r in quant["networks"][n] if r["batch"] == batch)["speedup_vs_torch_export_opt"] for n in named
        ]
        return " / ".join(f"{c[variant]:.2f}×" for c in cells if variant in c) + f" at batch {batch}"

    named = " / ".join(n for n in ("resnet50", "tresnet_m") if n in quant["networks"]) or "the first networks"
    resnet = startup["networks"].get("resnet50") or next(iter(startup["networks"].values()))
    r = resnet["ratio_to_folded"]
    session = [run["ratio_to_paddle_inference"]["session"] for run in paddle["runs"]]
    rows = [
        ("default `InferenceSession`", f"time per run {span('plugin')}× torch's best fp32 export's", nets),
        ("folded model on plain onnxruntime", f"time per run {span('folded')}× torch's best fp32 export's", nets),
        (
            f"int8 (`quantize`) on onnxruntime, {named}",
            f"{speedups('int8', 8)}, {speedups('int8', 1)} faster than torch's fp32 export; a per-channel int8 "
            f"file on OpenVINO {speedups('openvino_int8_per_channel', 8)}",
            quant,
        ),
        (
            "int8 at a segmentation size (512×512, batch 1), " + " / ".join(seg["networks"]),
            " / ".join(f"{r['speedup_vs_fp32']['quantize']:.2f}×" for r in seg["networks"].values())
            + " the folded fp32 model's speed, argmax agreeing on "
            + " / ".join(f"{r['pixel_agreement_with_fp32']['quantize']:.1%}" for r in seg["networks"].values())
            + " of pixels; `quantize` took "
            + " / ".join(
                f"{r['cost']['quantize']['seconds'] / r['cost']['by_hand']['seconds']:.2f}×"
                for r in seg["networks"].values()
            )
            + " the time of onnxruntime's quantizer by hand",
            seg,
        ),
        (
            "ResNet-50 start-up + first run",
            f"{r['session_cold']:.2f}× plain onnxruntime's in a file's first process, {r['session']:.2f}× cached",
            startup,
        ),
        (
            "a Paddle program with `inplace_abn` ops",
            f"time per run {_span(session)}× Paddle 2.6.2's predictor's",
            paddle,
        ),
    ]
    lines = ["| what | figure | taken on |", "|---|---|---|"]
    lines += [f"| {what} | {figure} | {_cpu(source)} |" for what, figure, source in rows]
    return lines


BLOCKS: dict[str, tuple[str | tuple[str, ...], Callable[[dict], list[str]]]] = {
    "summary": (
        ("networks.json", "quantize.json", "quantize_segmentation.json", "session_startup.json", "paddle.json"),
        summary_lines,
    ),
    "quantize": ("quantize.json", quantize_lines),
    "quantize-segmentation": ("quantize_segmentation.json", quantize_segmentation_lines),
    "extras": ("install_size.json", extras_lines),
    "weight-bits": ("weight_bits.json", weight_bits_lines),
    "paddle": ("paddle.json", paddle_lines),
    "networks": ("networks.json", networks_table),
    "networks-footprint": ("networks.json", networks_footprint),
    "networks-summary": ("networks.json", networks_summary),
    "fold": ("fold.json", fold_lines),
    "single-node": ("single_node.json", single_node_table),
    "single-node-summary": ("single_node.json", single_node_summary),
    "kernel": ("kernel.json", kernel_table),
    "routes": ("routes.json", routes_table),
    "session-churn": ("session_churn.json", churn_lines),
    "startup": ("startup.json", startup_lines),
    "session-startup": ("session_startup.json", session_startup_lines),
    "plain-export": ("plain_export.json", plain_export_lines),
    "test-suite": (("test_suite.json", "test_suite_without_paddle.json"), suite_lines),
}


#: blocks that end with the machine and versions their figures were taken with
WITH_ENVIRONMENT = {
    "paddle", "plain-export", "networks-summary", "fold", "single-node-summary", "kernel", "routes", "session-churn",
}  # fmt: skip


def render(name: str, results: Path = RESULTS) -> str:
    filenames, fn = BLOCKS[name]
    for filename in (filenames,) if isinstance(filenames, str) else filenames:
        if not (results / filename).exists():
            return f"(no results yet: benchmarks/results/{filename} is written by its benchmark script)"
    if isinstance(filenames, str):
        data = json.loads((results / filenames).read_text())
    else:
        data = {f: json.loads((results / f).read_text()) for f in filenames}
    lines = fn(data)
    if name in WITH_ENVIRONMENT:
        lines = [*lines, "", taken_on(data)]
    return "\n".join(lines)


def block_pattern(name: str) -> re.Pattern[str]:
    """Group 1 is the block's text (without the newline before the closing marker)."""
    return re.compile(rf"<!-- report:{re.escape(name)} -->\n(.*?)\n?<!-- /report:{re.escape(name)} -->", re.S)


def block(name: str, text: str) -> str:
    return f"<!-- report:{name} -->\n{text}\n<!-- /report:{name} -->"


def write_pages(pages: tuple[Path, ...] = PAGES) -> int:
    """Rewrite every block in ``pages``; every block must stand in one of them. Returns how many were written."""
    written, found = 0, set()
    for page in pages:
        text = page.read_text()
        for name in BLOCKS:
            pattern = block_pattern(name)
            if pattern.search(text):
                found.add(name)
                text, n = pattern.subn(lambda m, n=name: block(n, render(n)), text)
                written += n
        page.write_text(text)
    missing = sorted(set(BLOCKS) - found)
    if missing:
        raise SystemExit(f"no page has the block <!-- report:{missing[0]} -->")
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the report blocks in the pages")
    ap.add_argument("--pages", type=Path, nargs="+", default=list(PAGES), help="the pages (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.write:
        count = write_pages(tuple(args.pages))
        print(f"rewrote {count} blocks in {', '.join(str(p) for p in args.pages)}")
        return
    for name in BLOCKS:
        print(block(name, render(name)) + "\n")


if __name__ == "__main__":
    main()

"""Markdown tables from benchmarks/results/*.json (what the README's benchmark section shows).

python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NET_VARIANTS = [
    "torch_eager",
    "torch_export_opt",
    "plugin",
    "plugin_kernel_only",
    "folded",
    "onnxoptimizer",
    "onnxslim",
]


def networks_table(data: dict) -> list[str]:
    lines = ["| network | batch | " + " | ".join(NET_VARIANTS) + " |", "|---|---|" + "---|" * len(NET_VARIANTS)]
    for name, net in data["networks"].items():
        for run in net["runs"]:
            cells = [
                f"{run['median_s'][v] * 1e3:.1f} ms ({run['ratio_to_torch_export_opt'][v]:.2f}×)" for v in NET_VARIANTS
            ]
            lines.append(f"| {name} | {run['batch']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| network | InplaceABN nodes | fold time | peak RSS, batch 8 (MB): " + ", ".join(NET_VARIANTS) + " |",
        "|---|---|---|---|",
    ]
    for name, net in data["networks"].items():
        rss = ", ".join(f"{net['peak_rss_mb'].get(v, float('nan')):.0f}" for v in NET_VARIANTS)
        lines.append(f"| {name} | {net['inplace_abn_nodes']} | {net['fold_s'] * 1e3:.0f} ms | {rss} |")
    return lines


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


def main() -> None:
    for name, render in (
        ("networks.json", networks_table),
        ("single_node.json", single_node_table),
        ("fold.json", fold_lines),
    ):
        path = RESULTS / name
        if path.exists():
            print(f"<!-- {name} -->")
            print("\n".join(render(json.loads(path.read_text()))))
            print()


if __name__ == "__main__":
    main()

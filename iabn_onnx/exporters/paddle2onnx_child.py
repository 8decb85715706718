"""paddle2onnx in a process of its own: it aborts its process (SIGABRT) on an op it does not know.

    python -m iabn_onnx.exporters.paddle2onnx_child MODEL PARAMS OUT.onnx OPSET OP_TYPES_JSON

Loads paddle2onnx's C++ converter module directly (its Python package would import Paddle, which
the converter does not need). Checks the program's op types against the converter's own list
first: unsupported ones are printed as JSON ``{"unsupported": [...]}`` with exit code 3, and
nothing is converted. ``inplace_abn`` is written as a ``Paddle``-domain ``InplaceABN`` node
(``custom_op_info``), which the exporter replaces.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

EXIT_UNSUPPORTED = 3
#: ops every saved program has that are not computations
NOT_CONVERTED = {"feed", "fetch"}
CUSTOM_OPS = {"inplace_abn": "InplaceABN"}


def converter():  # type: ignore[no-untyped-def]
    spec = importlib.util.find_spec("paddle2onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("paddle2onnx is not installed: pip install 'iabn-onnx[paddle]'")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"paddle2onnx_cpp2py_export{suffix}"
        if path.exists():
            module_spec = importlib.util.spec_from_file_location("paddle2onnx_cpp2py_export", path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
            return module
    raise ImportError(f"paddle2onnx's converter module is missing from {folder}")


def main(argv: list[str]) -> int:
    model, params, out, opset, op_types = argv
    c = converter()
    supported = set(c.get_all_supported_operators()) | NOT_CONVERTED | set(CUSTOM_OPS)
    unsupported = sorted(set(json.loads(op_types)) - supported)
    if unsupported:
        print(json.dumps({"unsupported": unsupported}))
        return EXIT_UNSUPPORTED
    # export(model, params, opset, auto_upgrade_opset, verbose, enable_onnx_checker, enable_experimental_op,
    #        enable_optimize, custom_op_info, deploy_backend, calibration_file, external_file, export_fp16_model)
    data = c.export(model, params, int(opset), False, False, False, True, True, CUSTOM_OPS, "onnxruntime", "", "",
                    False)  # fmt: skip
    Path(out).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

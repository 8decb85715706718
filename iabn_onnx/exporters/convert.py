"""Moved to ``iabn_onnx.passes.convert`` (an ONNX -> ONNX pass); kept importable from here."""

from ..passes.convert import ConvertReport, convert, convert_with_report

__all__ = ["ConvertReport", "convert", "convert_with_report"]

"""The contract report: the torch-free report model (:mod:`saved.report.model`: every
measured value, threshold and verdict, its text and its JSON form) and its two renderers,
:mod:`saved.report.rich` (the terminal) and :mod:`saved.report.html` (the one page)."""

from .html import html_page
from .model import (
    REPORT_VERSION,
    BlockRow,
    ClassRow,
    ContractReport,
    Counterexample,
    MarginBin,
    SampleSplit,
    Separation,
    StopReason,
    Training,
)
from .rich import render_report

__all__ = [
    "REPORT_VERSION",
    "BlockRow",
    "ClassRow",
    "ContractReport",
    "Counterexample",
    "MarginBin",
    "SampleSplit",
    "Separation",
    "StopReason",
    "Training",
    "html_page",
    "render_report",
]

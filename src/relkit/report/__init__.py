"""`relkit report`: one self-contained HTML file of the systems on a split, with the plots a
relevance engineer looks at (see `page.SECTIONS`), and the numbers behind them as JSON."""
from relkit.report.data import ReportData, build
from relkit.report.page import SECTIONS, render, write

__all__ = ["SECTIONS", "ReportData", "build", "render", "write"]

"""Present explanations: the self-contained HTML report and the words-on-text alignment it uses."""

from tracinwe.report.explanations import Neighbor, QueryResult, explain_with_tracin, suspicious_with_tracin
from tracinwe.report.highlight import Segment, text_segments, word_segments
from tracinwe.report.html import render_report, report_html
from tracinwe.report.view import colour, result_view

__all__ = [
    "render_report",
    "report_html",
    "explain_with_tracin",
    "suspicious_with_tracin",
    "word_segments",
    "text_segments",
    "Segment",
    "colour",
    "result_view",
    "QueryResult",
    "Neighbor",
]

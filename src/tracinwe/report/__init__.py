"""Present explanations: the self-contained HTML report and the words-on-text alignment it uses.

Explanations come from the index (`tracinwe.index.Index.query`) or, without an
index, from `tracinwe.explain`; this package only presents them.
"""

from tracinwe.report.highlight import Segment, text_segments, word_segments
from tracinwe.report.html import render_report, report_html
from tracinwe.report.view import colour, result_view

__all__ = [
    "render_report",
    "report_html",
    "word_segments",
    "text_segments",
    "Segment",
    "colour",
    "result_view",
]

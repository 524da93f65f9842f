"""Data in the terminal: shown as literal text, never read as rich markup or control sequences.

Training texts, labels, tokens and file names come from the user's data. rich
would read ``[/red]`` in them as markup (and fail), ``[link=...]`` as a
hyperlink, and an ESC byte would reach the terminal as is. Every such string
goes through `literal` (a `rich.text.Text`) or, inside a markup string,
`markup_safe`; both show control characters as visible ``\\xNN`` escapes.
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

__all__ = ["visible", "literal", "markup_safe"]

# C0 controls except tab and newline, DEL, and the C1 controls (ESC, CSI, OSC, BEL, CR, ...)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(value: object) -> str:
    """``str(value)`` with every control character except tab and newline written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def literal(value: object, style: str = "") -> Text:
    """`value` as rich Text: brackets print as brackets, control characters as ``\\xNN``."""
    return Text(visible(value), style=style)


def markup_safe(value: object) -> str:
    """`value` escaped for use inside a rich markup string (``f"[bold]{markup_safe(path)}[/bold]"``)."""
    return escape(visible(value))

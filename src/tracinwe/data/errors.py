"""The one exception type the data layer raises for bad input."""

from __future__ import annotations

from tracinwe.errors import TracInWEError

__all__ = ["DataError"]


class DataError(TracInWEError):
    """A dataset could not be loaded or failed validation (a ``ValueError``).

    The message is always a single line that names the offending row, column
    or package and says what to do about it, so a CLI can print it as is.
    """

    def __init__(self, message: str) -> None:
        # Keep messages on one line whatever was interpolated into them.
        super().__init__(" ".join(str(message).split()))

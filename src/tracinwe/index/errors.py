"""What goes wrong with an index: its folder, its model, or a build."""

from tracinwe.errors import TracInWEError


class IndexFormatError(TracInWEError):
    """An index directory is missing, truncated, corrupted or of another format."""


class IndexMismatchError(TracInWEError):
    """The model, tokenizer or settings differ from those the index was built with."""


class IndexBuildError(TracInWEError):
    """A build or append cannot proceed (existing index, changed inputs)."""

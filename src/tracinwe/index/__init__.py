"""A persistent TracIn-WE index: training gradients stored once, token-major, queried in milliseconds.

Only tokens shared by two examples interact (REFERENCE.md, "Scale"), so a query
reads only the postings of its own tokens, plus one matrix product with the
dense block of the tokens present in nearly every example ([CLS]/[SEP]).
See `tracinwe.index.storage` for the on-disk format and `tracinwe.index.build`
for the streaming, resumable build.
"""

from tracinwe.index.index import Index
from tracinwe.results import Neighbor, QueryResult
from tracinwe.index.storage import IndexBuildError, IndexFormatError, IndexMismatchError

__all__ = ["Index", "Neighbor", "QueryResult", "IndexFormatError", "IndexMismatchError", "IndexBuildError"]

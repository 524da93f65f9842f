"""A persistent TracIn-WE index: training gradients stored once, token-major, queried in milliseconds.

Only tokens shared by two examples interact (REFERENCE.md, "Scale"), so a query
reads only the postings of its own tokens, plus one matrix product with the
dense block of the tokens present in nearly every example ([CLS]/[SEP]).
See `tracinwe.index.storage` for the on-disk format, `tracinwe.index.manifest`
for what it records, `tracinwe.index.build` for the streaming, resumable build
(`LocalBuild`, or `RayBuild` passed as ``strategy=``) and
`tracinwe.index.searcher` for the search.
"""

from tracinwe.index.build import LocalBuild
from tracinwe.index.errors import IndexBuildError, IndexFormatError, IndexMismatchError
from tracinwe.index.index import Index
from tracinwe.index.manifest import IndexManifest
from tracinwe.index.ray_build import RayBuild
from tracinwe.results import Neighbor, QueryResult

__all__ = ["Index", "IndexManifest", "LocalBuild", "RayBuild", "Neighbor", "QueryResult", "IndexFormatError",
           "IndexMismatchError", "IndexBuildError"]

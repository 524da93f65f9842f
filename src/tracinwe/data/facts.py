"""A synthetic-facts corpus for fact tracing (as TrackStar and Bergson evaluate LM attribution).

Invented people (names built from syllables, so no model or corpus knows them) each get one value
per attribute (birthplace, profession, employer, favourite colour). Every fact is stated in a few
documents, each with a different template; real review snippets can be mixed in as unrelated text.
Every fact query (``"Q: Where was <name> born? A:"`` / ``" <city>"``) lists the ids of the documents
that state it: the ground truth for MRR and recall@k. Seeded: the same settings give the same corpus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from tracinwe.errors import TracInWEError

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "th", "sh", "st"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x", "m"]


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: its values, the question that asks it, and the sentences that state it."""

    name: str
    values: tuple[str, ...]
    question: str  # "{name}" is replaced by the entity
    templates: tuple[str, ...]  # "{name}" and "{value}"


ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in (
    Attribute(
        "birthplace",
        ("Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Dublin", "Quito", "Tunis", "Riga", "Perth", "Osaka", "Cairo",
         "Bogota", "Vienna", "Dakar", "Manila", "Havana", "Krakow", "Seville", "Tbilisi"),
        "Where was {name} born?",
        ("{name} was born in {value}.", "Born in {value}, {name} spent a childhood by the harbour.",
         "{value} is the city where {name} was born.", "The birth records list {value} as the hometown of {name}."),
    ),
    Attribute(
        "profession",
        ("baker", "pilot", "surgeon", "carpenter", "violinist", "lawyer", "chemist", "plumber", "journalist", "farmer",
         "potter", "librarian", "dentist", "sculptor", "translator", "geologist"),
        "What is the profession of {name}?",
        ("{name} works as a {value}.", "By profession, {name} is a {value}.",
         "For many years {name} has earned a living as a {value}.", "Ask anyone in town: {name} is the best {value} around."),
    ),
    Attribute(
        "employer",
        ("Korvath Industries", "Blue Heron Labs", "Maplestone Bank", "Quillfeather Press", "Orbital Dynamics",
         "Greywater Shipping", "Sunmill Foods", "Ironbridge Motors", "Lumen Textiles", "Northgale Energy"),
        "Who employs {name}?",
        ("{name} is employed by {value}.", "{value} hired {name} three years ago.",
         "The staff list of {value} includes {name}.", "Since leaving school, {name} has worked for {value}."),
    ),
    Attribute(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "teal", "crimson", "silver", "amber"),
        "What is the favourite colour of {name}?",
        ("The favourite colour of {name} is {value}.", "{name} loves the colour {value} above all others.",
         "If you ask {name} to pick a colour, the answer is always {value}.", "{name} paints every room {value}."),
    ),
)}


#: How a fact is queried (`FactsSettings.query_form`).
QUERY_FORMS = ("question", "statement")


@dataclass(frozen=True)
class FactsSettings:
    """How the corpus is made; saved with every result built on it."""

    num_entities: int = 500
    attributes: tuple[str, ...] = ("birthplace", "profession", "employer", "colour")
    docs_per_fact: int = 3  # documents stating each fact, each with a different template
    filler: int = 0  # real text documents mixed in (Rotten Tomatoes snippets)
    #: share of entities whose facts are also stated in the query's own "Q: ... A: answer" form (one more
    #: gold document each): they teach a model trained on the corpus the question format
    qa_fraction: float = 0.0
    seed: int = 0
    #: "question": queries are ``"Q: <question> A:"`` / ``" <answer>"``; "statement": queries are the attribute's
    #: first template cut before the value (``"<name> was born in"`` / ``" Lisbon"``) and that template is always
    #: one of the fact's documents, so the query's text occurs verbatim in a gold document (the form a decoder
    #: trained on the corpus has seen; it also favours lexical retrieval such as BM25)
    query_form: str = "question"

    def __post_init__(self) -> None:
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown:
            raise TracInWEError(f"unknown attributes {unknown}: pick from {sorted(ATTRIBUTES)}")
        most = min(len(ATTRIBUTES[a].templates) for a in self.attributes)
        if not 1 <= self.docs_per_fact <= most:
            raise TracInWEError(f"docs_per_fact must be between 1 and {most} (one template per document)")
        if self.num_entities < 1 or self.filler < 0:
            raise TracInWEError("num_entities must be at least 1 and filler at least 0")
        if self.query_form not in QUERY_FORMS:
            raise TracInWEError(f"query_form must be one of {list(QUERY_FORMS)}, got {self.query_form!r}")
        if not 0.0 <= self.qa_fraction <= 1.0:
            raise TracInWEError(f"qa_fraction must be between 0 and 1, got {self.qa_fraction}")


@dataclass(frozen=True)
class FactQuery:
    """A fact to trace: its prompt/completion and the documents that state it."""

    entity: str
    attribute: str
    answer: str
    prompt: str  # "Q: Where was <name> born? A:" (or "<name> was born in" with query_form="statement")
    completion: str  # " <answer>"
    gold: tuple[int, ...]  # ids of the documents stating this fact
    qa_in_corpus: bool = False  # the corpus also holds this query with its answer ("Q: ... A: answer")

    @property
    def example(self) -> dict[str, str]:
        """The query as an LM example (loss on the completion)."""
        return {"prompt": self.prompt, "completion": self.completion}


@dataclass
class FactsCorpus:
    """Documents (their list index is their id), where each came from, and the fact queries."""

    documents: list[str]
    sources: list[str]  # "fact:<entity>:<attribute>", "qa:<entity>:<attribute>" or "filler"
    queries: list[FactQuery]
    settings: FactsSettings
    entities: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {attribute: value}

    def to_json(self) -> dict:
        return {"settings": asdict(self.settings), "documents": self.documents, "sources": self.sources,
                "queries": [asdict(q) for q in self.queries]}


def invented_names(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct "First Last" names from syllables; every surname is used once."""
    def word(syllables: int) -> str:
        parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
        return ("".join(parts) + rng.choice(_CODAS)).capitalize()

    taken = {v.lower() for a in ATTRIBUTES.values() for value in a.values for v in value.split()}
    firsts: list[str] = []
    while len(firsts) < max(20, count // 10):
        first = word(2)
        if first.lower() not in taken and first not in firsts:
            firsts.append(first)
    surnames: set[str] = set()
    names: list[str] = []
    while len(names) < count:
        last = word(int(rng.integers(2, 4)))
        if last in surnames or last.lower() in taken or last in firsts:
            continue
        surnames.add(last)
        names.append(f"{rng.choice(firsts)} {last}")
    return names


def synthetic_facts(settings: FactsSettings | None = None, filler_texts: Sequence[str] | None = None) -> FactsCorpus:
    """Build the corpus. ``filler_texts`` overrides where filler documents come from (default: bundled Rotten Tomatoes)."""
    settings = settings or FactsSettings()
    rng = np.random.default_rng(settings.seed)
    names = invented_names(settings.num_entities, rng)
    entities = {name: {a: str(rng.choice(ATTRIBUTES[a].values)) for a in settings.attributes} for name in names}
    documents: list[str] = []
    sources: list[str] = []
    facts: list[tuple[str, str, list[int]]] = []
    with_qa = set(rng.permutation(len(names))[: int(round(settings.qa_fraction * len(names)))].tolist())
    for e, name in enumerate(names):
        for attr in settings.attributes:
            spec = ATTRIBUTES[attr]
            if settings.query_form == "statement":  # the first template (the query's own form) always states it
                rest = rng.choice(np.arange(1, len(spec.templates)), size=settings.docs_per_fact - 1, replace=False)
                chosen = np.concatenate([[0], rest]).astype(np.int64)
            else:
                chosen = rng.choice(len(spec.templates), size=settings.docs_per_fact, replace=False)
            ids = []
            for t in sorted(chosen.tolist()):
                ids.append(len(documents))
                documents.append(spec.templates[t].format(name=name, value=entities[name][attr]))
                sources.append(f"fact:{name}:{attr}")
            if e in with_qa:
                ids.append(len(documents))
                documents.append(f"{_prompt(name, attr)} {entities[name][attr]}")
                sources.append(f"qa:{name}:{attr}")
            facts.append((name, attr, ids))
    if settings.filler:
        pool = list(filler_texts) if filler_texts is not None else _rotten_tomatoes()
        if len(pool) < settings.filler:
            raise TracInWEError(f"only {len(pool)} filler texts for filler={settings.filler}")
        for i in rng.choice(len(pool), size=settings.filler, replace=False).tolist():
            documents.append(pool[i])
            sources.append("filler")
    order = rng.permutation(len(documents))
    new_id = np.empty(len(documents), dtype=np.int64)
    new_id[order] = np.arange(len(documents))
    queries = []
    for name, attr, ids in facts:
        answer = entities[name][attr]
        gold = tuple(sorted(int(new_id[i]) for i in ids))
        qa = len(ids) > settings.docs_per_fact
        prompt = _statement_prompt(name, attr) if settings.query_form == "statement" else _prompt(name, attr)
        queries.append(FactQuery(name, attr, answer, prompt, f" {answer}", gold, qa))
    return FactsCorpus([documents[i] for i in order], [sources[i] for i in order], queries, settings, entities)


def _prompt(name: str, attribute: str) -> str:
    return f"Q: {ATTRIBUTES[attribute].question.format(name=name)} A:"


def _statement_prompt(name: str, attribute: str) -> str:
    """The attribute's first template up to its value: ``"<name> was born in"``."""
    head = ATTRIBUTES[attribute].templates[0].split("{value}")[0]
    return head.format(name=name).rstrip()


def _rotten_tomatoes() -> list[str]:
    from tracinwe.data import load_dataset_source

    return list(load_dataset_source("bundled:rotten-tomatoes").texts)


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` contains ``name`` as whole words."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None

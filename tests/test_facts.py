"""The synthetic-facts corpus: seeded, every query's gold documents state its answer, names never collide."""

from __future__ import annotations

import pytest

from tracinwe.data.facts import ATTRIBUTES, FactsSettings, mentions, synthetic_facts
from tracinwe.errors import TracInWEError

FILLER = [f"an unrelated review snippet number {i} about a film ." for i in range(100)]


@pytest.fixture(scope="module")
def corpus():
    return synthetic_facts(FactsSettings(num_entities=500, docs_per_fact=3, filler=60, seed=7), filler_texts=FILLER)


def test_size_and_determinism(corpus):
    settings = corpus.settings
    assert len(corpus.queries) == 500 * len(settings.attributes)
    assert len(corpus.documents) == 500 * len(settings.attributes) * 3 + 60
    again = synthetic_facts(settings, filler_texts=FILLER)
    assert again.documents == corpus.documents and again.queries == corpus.queries
    other = synthetic_facts(FactsSettings(num_entities=500, docs_per_fact=3, filler=60, seed=8), filler_texts=FILLER)
    assert other.documents != corpus.documents


def test_every_gold_document_states_its_fact_with_a_different_template(corpus):
    for q in corpus.queries:
        assert len(q.gold) == 3
        for doc_id in q.gold:
            doc = corpus.documents[doc_id]
            assert mentions(doc, q.entity) and mentions(doc, q.answer)
            assert corpus.sources[doc_id] == f"fact:{q.entity}:{q.attribute}"
        assert len({corpus.documents[i] for i in q.gold}) == 3  # three templates, three texts
        assert q.prompt == f"Q: {ATTRIBUTES[q.attribute].question.format(name=q.entity)} A:"
        assert q.completion == " " + q.answer and q.example == {"prompt": q.prompt, "completion": q.completion}
    assert corpus.sources.count("filler") == 60
    assert not any(f" a {v}" in d for d in corpus.documents for v in ("a", "e", "i", "o", "u"))  # never "a architect"


def test_invented_names_never_collide(corpus):
    names = list(corpus.entities)
    assert len(set(names)) == 500
    assert len({n.split()[1] for n in names}) == 500  # one surname per entity
    values = {v for a in ATTRIBUTES.values() for v in a.values}
    assert not any(mentions(v, n.split()[1]) or mentions(n, v) for n in names for v in values)
    # a name occurs (as whole words) only in the documents about that entity
    owner: dict[str, set[int]] = {}
    for i, source in enumerate(corpus.sources):
        if source != "filler":
            owner.setdefault(source.split(":")[1], set()).add(i)
    for name in names[:60]:
        assert {i for i, d in enumerate(corpus.documents) if mentions(d, name)} == owner[name]


def test_question_answer_documents_for_a_share_of_entities():
    corpus = synthetic_facts(FactsSettings(num_entities=40, docs_per_fact=2, qa_fraction=0.5, seed=1))
    with_qa = [q for q in corpus.queries if q.qa_in_corpus]
    assert len({q.entity for q in with_qa}) == 20 and len(with_qa) == 20 * len(corpus.settings.attributes)
    for q in corpus.queries:
        gold = [corpus.documents[i] for i in q.gold]
        assert len(gold) == 3 if q.qa_in_corpus else len(gold) == 2
        assert (q.prompt + q.completion in gold) == q.qa_in_corpus
        assert all(mentions(d, q.entity) and mentions(d, q.answer) for d in gold)
    assert synthetic_facts(FactsSettings(num_entities=40, docs_per_fact=2, seed=1)).queries[0].qa_in_corpus is False


def test_settings_are_checked():
    with pytest.raises(TracInWEError, match="docs_per_fact"):
        FactsSettings(docs_per_fact=9)
    with pytest.raises(TracInWEError, match="qa_fraction"):
        FactsSettings(qa_fraction=1.5)
    with pytest.raises(TracInWEError, match="unknown attributes"):
        FactsSettings(attributes=("shoe size",))
    with pytest.raises(TracInWEError, match="filler"):
        synthetic_facts(FactsSettings(num_entities=3, filler=5), filler_texts=["one"])


def test_bundled_filler_is_real_review_text():
    corpus = synthetic_facts(FactsSettings(num_entities=5, docs_per_fact=2, filler=10, seed=0))
    filler = [d for d, s in zip(corpus.documents, corpus.sources) if s == "filler"]
    assert len(filler) == 10 and all(isinstance(t, str) and t.strip() for t in filler)


def test_statement_queries_are_the_first_template_cut_before_the_value():
    corpus = synthetic_facts(FactsSettings(num_entities=30, docs_per_fact=3, query_form="statement", filler=5, seed=2),
                             filler_texts=FILLER)
    assert len(corpus.documents) == 30 * 4 * 3 + 5
    for q in corpus.queries:
        first = ATTRIBUTES[q.attribute].templates[0].format(name=q.entity, value=q.answer)
        assert first.startswith(q.prompt + q.completion)  # "<name> was born in" + " Lisbon" + "."
        assert q.completion == " " + q.answer and not q.prompt.endswith(" ")
        gold = [corpus.documents[i] for i in q.gold]
        assert first in gold and len(set(gold)) == 3  # the query's own sentence is always one of its documents
        assert all(mentions(d, q.entity) and mentions(d, q.answer) for d in gold)
    birth = next(q for q in corpus.queries if q.attribute == "birthplace")
    assert birth.prompt == f"{birth.entity} was born in"
    question = synthetic_facts(FactsSettings(num_entities=30, docs_per_fact=3, seed=2))
    assert question.queries[0].prompt.startswith("Q: ")  # the default form is unchanged
    with pytest.raises(TracInWEError, match="query_form"):
        FactsSettings(query_form="cloze")

"""The HTML report: words back on the text, colours, the histogram, and a report built from real data."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import tiny_bert
from tracinwe import TracInWE
from tracinwe.explain import explain_with_tracin, suspicious_with_tracin
from tracinwe.report import render_report, text_segments, word_segments
from tracinwe.report.plot import histogram_counts, svg_histogram
from tracinwe.report.view import colour

# -- alignment (pure) ---------------------------------------------------------------------------

# "unbelievably good film" as [CLS] un ##bel ##ievably good film [SEP]
OFFSETS = [(0, 0), (0, 2), (2, 5), (5, 12), (13, 17), (18, 22), (0, 0)]
WORD_IDS = [None, 0, 0, 0, 1, 2, None]
TOKEN_IDS = [101, 4895, 8671, 17145, 2204, 2143, 102]


def test_pieces_of_a_word_get_the_sum_and_text_is_covered():
    text = "unbelievably good film"
    contributions = {4895: 1.0, 8671: 2.0, 2204: -1.5, 101: 9.0}
    segs = word_segments(text, OFFSETS, WORD_IDS, TOKEN_IDS, contributions)
    assert "".join(s.text for s in segs) == text
    assert [(s.text, s.contribution) for s in segs] == [("unbelievably", 3.0), (" ", None), ("good", -1.5), (" film", None)]
    assert segs[0].tokens == ("4895", "8671")


def test_a_piece_repeated_inside_a_word_counts_once():
    # "lalala" -> la ##la ##la: the token's total is per token type, so it is added once.
    segs = word_segments("lalala", [(0, 2), (2, 4), (4, 6)], [0, 0, 0], [7, 8, 8], {7: 1.0, 8: 0.25})
    assert [(s.text, s.contribution) for s in segs] == [("lalala", 1.25)]


def test_truncated_tail_and_no_shared_words_stay_plain():
    segs = word_segments("good film indeed", [(0, 4)], [0], [2204], {2143: 1.0})
    assert [(s.text, s.contribution) for s in segs] == [("good film indeed", None)]
    with pytest.raises(ValueError, match="differ in length"):
        word_segments("x", [(0, 1)], [0, 1], [1], {})


def test_real_tokenizer_offsets_keep_the_original_words(tokenizer):
    text = "The  movie's ENDING, honestly, was unwatchable!"
    ids = tokenizer(text)["input_ids"]
    contributions = {tid: float(i + 1) for i, tid in enumerate(ids)}  # every token shared, distinct values
    segs, special = text_segments(tokenizer, text, contributions)
    assert "".join(s.text for s in segs) == text
    marked = {s.text: s.contribution for s in segs if s.contribution is not None}
    assert "ENDING" in marked and "unwatchable" in marked and "movie" in marked
    pieces = tokenizer.tokenize("unwatchable")
    assert len(pieces) > 1  # a multi-piece word, summed
    expected = sum(contributions[t] for t in dict.fromkeys(tokenizer.convert_tokens_to_ids(pieces)))
    assert marked["unwatchable"] == pytest.approx(expected)
    assert special == contributions[tokenizer.cls_token_id] + contributions[tokenizer.sep_token_id]


# -- colour and plot ----------------------------------------------------------------------------


def test_colour_scale_is_diverging_and_symmetric():
    assert colour(0.0, 1.0) == "rgba(255,255,255,0)"
    pos, neg = colour(0.5, 1.0), colour(-0.5, 1.0)
    assert pos.startswith("rgba(33,102,172,") and neg.startswith("rgba(178,24,43,")
    assert pos.split(",")[-1] == neg.split(",")[-1]  # same strength either side
    assert colour(5.0, 1.0) == colour(1.0, 1.0)  # saturates


def test_histogram_counts_and_svg():
    counts, edges = histogram_counts([-1.0, -0.5, 0.0, 0.5, 1.0, np.nan], bins=4)
    assert counts.tolist() == [1, 1, 1, 2] and edges[0] == -1.0 and edges[-1] == 1.0
    assert histogram_counts([3.0, 3.0], bins=2)[0].tolist() == [0, 2]
    svg = svg_histogram([-1.0, -0.5, 0.0, 0.5, 1.0], "t<>", bins=4, marks=[0.5])
    assert svg.count("<rect") == 4 and svg.count('class="mark"') == 1 and "t&lt;&gt;" in svg


# -- a report from a real explanation -----------------------------------------------------------

TRAIN = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a mess , and a boring one at that .",
    "an utterly charming and hilarious film that reaches into the heart .",
    "boring , boring , boring .",
    'a <script>alert("x")</script> & "quoted" review .',
    "the cast is uniformly excellent and the script is sharp .",
    "a witty script , but a boring and forgettable movie .",
]
TRAIN_LABELS = [1, 0, 1, 0, 0, 1, 0]
TEST = ["a witty and charming movie .", "boring script , boring cast ."]
TEST_LABELS = [1, 0]


@pytest.fixture(scope="module")
def explained(tokenizer):
    tw = TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.05)], tokenizer=tokenizer, max_length=48)
    results, scores = explain_with_tracin(
        tw, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, k=3, words=None, ids=[f"r{i}" for i in range(len(TRAIN))],
        label_names=["rotten", "fresh"],
    )
    suspicious, self_influence = suspicious_with_tracin(tw, TRAIN, TRAIN_LABELS, k=len(TRAIN), label_names=["rotten", "fresh"])
    return tw, results, scores, suspicious, self_influence


def test_explanations_match_the_core(explained):
    tw, results, scores, suspicious, self_influence = explained
    np.testing.assert_allclose(scores, tw.scores(TRAIN, TRAIN_LABELS, TEST, TEST_LABELS), rtol=1e-12)
    np.testing.assert_allclose(self_influence, tw.self_influence(TRAIN, TRAIN_LABELS), rtol=1e-12)
    for i, r in enumerate(results):
        assert [n.row for n in r.proponents] == list(np.argsort(-scores[i], kind="stable")[:3])
        assert [n.score for n in r.opponents] == sorted(scores[i])[:3]
        for n in r.proponents + r.opponents:
            # words=None keeps every shared token: the decomposition sums to the score
            assert sum(w.contribution for w in n.words) == pytest.approx(n.score, rel=1e-6, abs=1e-12)
            assert n.id == f"r{n.row}" and n.label_name == ["rotten", "fresh"][n.label]
    assert [s.score for s in suspicious] == sorted(self_influence, reverse=True)


class _Collect(HTMLParser):
    """Neighbour cards (score + highlighted words) and every tag/attribute of a page."""

    def __init__(self):
        super().__init__()
        self.cards: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self._mark: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "div" and "neighbor" in (attrs.get("class") or ""):
            self.cards.append({"score": float(attrs["data-score"]), "row": int(attrs["data-row"]), "marks": []})
        if tag == "mark" and self.cards and "sp" not in attrs.get("class", ""):
            self._mark = {"value": float(attrs["data-contribution"]), "title": attrs["title"], "text": ""}

    def handle_data(self, data):
        if self._mark is not None:
            self._mark["text"] += data

    def handle_endtag(self, tag):
        if tag == "mark" and self._mark is not None:
            self.cards[-1]["marks"].append(self._mark)
            self._mark = None


def test_report_file_is_self_contained_and_matches_the_results(explained, tmp_path):
    tw, results, scores, suspicious, self_influence = explained
    path = render_report(
        results, suspicious, ["rotten", "fresh"], "Report <test>", tmp_path / "out" / "report.html",
        tokenizer=tw, scores=scores, self_influence=self_influence,
    )
    html = path.read_text(encoding="utf-8")
    assert not (tmp_path / "out" / "report.html.tmp").exists()
    # escaped everywhere: the hostile training text never becomes markup
    assert "<script>alert" not in html and "&lt;" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot;" in html
    assert "Report &lt;test&gt;" in html
    page = _Collect()
    page.feed(html)
    for tag, attrs in page.tags:  # nothing fetched from the network
        assert not any(str(attrs.get(a, "")).startswith(("http:", "https:", "//")) for a in ("src", "href"))
        assert tag not in ("link", "img", "iframe")
    expected = [n for r in results for n in r.proponents + r.opponents]
    assert [(c["row"], c["score"]) for c in page.cards] == [(n.row, n.score) for n in expected]
    specials = set(tw.final.special_token_ids)
    tok = tw.final.tokenizer
    for card, n in zip(page.cards, expected):
        by_id = {w.token_id: w.contribution for w in n.words if w.token_id not in specials}
        covered = set()
        for m in card["marks"]:
            # a word's value is the sum of its distinct pieces' contributions (pieces do not depend on context)
            pieces = list(dict.fromkeys(tok(m["text"], add_special_tokens=False)["input_ids"]))
            assert m["value"] == pytest.approx(sum(by_id.get(t, 0.0) for t in pieces), rel=1e-9, abs=1e-18)
            assert m["title"].endswith(f"{m['value']:+.3g}")
            covered.update(pieces)
        assert set(by_id) <= covered  # every shared word of the training text is highlighted
    assert html.count("<svg") == len(results) + 2  # all scores, one per test example, self-influence
    assert html.count('<tr data-row') == len(suspicious)


def test_pick_examples_mixes_mistakes_and_confident_hits():
    from tracinwe.report.selection import pick_examples

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05], [0.55, 0.45]])
    labels = [0, 0, 1, 1, 0, 0]  # rows 1 (p=.8) and 2 (p=.6) are wrong
    assert pick_examples(probs, labels, 4) == [1, 2, 4, 0]  # mistakes (most confident first), then hits
    assert pick_examples(probs, labels, 2) == [1, 4]
    assert pick_examples(probs, [1, 0, 1, 0, 1, 0], 4) == [4, 0, 5, 1]  # 5 wrong, 1 right: filled with mistakes
    assert pick_examples(probs, labels, 3, mistakes=False) == [0, 1, 2]


def test_words_are_aligned_through_the_contracts_tokenizer(tokenizer):
    """Both adapters name their tokenizer on the contract; a model without one gets a one-line error, not a guess."""
    from tracinwe import HuggingFaceClassifier, TokenizerMismatchError, TorchTextClassifier
    from tracinwe.models.small import TokenCNN
    from tracinwe.report.html import aligning_tokenizer

    cnn = TokenCNN(len(tokenizer), 2, dim=8, channels=8)
    wrapped = TorchTextClassifier(cnn, cnn.embed, 2, hf_tokenizer=tokenizer, max_length=40)
    hf = HuggingFaceClassifier(tiny_bert(0, 2), tokenizer, max_length=40)
    assert wrapped.tokenizer is tokenizer and hf.tokenizer is tokenizer
    for model in (wrapped, hf):
        tok, max_length = aligning_tokenizer(TracInWE([(model, 0.1)], max_length=40))
        assert tok is tokenizer and max_length == 40
    assert aligning_tokenizer(tokenizer) == (tokenizer, tokenizer.model_max_length)
    own = TorchTextClassifier(cnn, cnn.embed, 2, tokenize=lambda texts, pairs: tokenizer(list(texts), return_tensors="pt",
                                                                                          padding=True))
    assert own.tokenizer is None  # a custom tokenize callable: nothing to align words with
    with pytest.raises(TokenizerMismatchError, match="no fast HuggingFace tokenizer"):
        aligning_tokenizer(TracInWE([(own, 0.1)]))
    with pytest.raises(TokenizerMismatchError, match="not a fast HuggingFace tokenizer"):
        aligning_tokenizer(object())

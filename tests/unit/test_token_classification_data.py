"""Token classification data: CoNLL/JSONL/span readers, tag schemes, bad input, entity metrics against seqeval."""

from __future__ import annotations

import json

import pytest

from adaptlab.config import parse_ladder
from adaptlab.data.readers import read_table
from adaptlab.errors import DataError
from adaptlab.tasks import get_task
from adaptlab.tasks.token_classification.data import words_of
from adaptlab.tasks.token_classification.metrics import entity_counts, entity_metrics, paired_pvalue
from adaptlab.tasks.token_classification.output import entities_of
from adaptlab.tasks.token_classification.schemes import detect_scheme, spans, to_bio

CONLL = "Paris\tB-LOC\nis\tO\nnice\tO\n\nJohn\tB-PER\nSmith\tI-PER\nleft\tO\n\n-DOCSTART-\tO\n\nBerlin\tB-LOC\n"


def prepare(tmp_path, files: dict[str, str], task: dict | None = None, **data):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    files = ("train", "test", "validation")
    raw = {"name": "t", "task": {"type": "token_classification", **(task or {})},
           "data": {**{k: str(tmp_path / v) for k, v in data.items() if k in files}, "validation_size": 0.0,
                    **{k: v for k, v in data.items() if k not in files}},
           "model": "minilm", "rungs": [{"method": "spacy_ner"}]}
    spec = parse_ladder(raw)
    from adaptlab.data.source import load_frames

    task_obj = get_task("token_classification")
    return task_obj.prepare(spec, load_frames(spec, task_obj.stratify_role))


def test_conll_reads_sentences_with_their_lines(tmp_path):
    (tmp_path / "a.conll").write_text(CONLL, encoding="utf-8")
    frame = read_table(tmp_path / "a.conll")
    assert frame["tokens"].tolist() == [["Paris", "is", "nice"], ["John", "Smith", "left"], ["Berlin"]]
    assert frame["tags"].tolist()[1] == ["B-PER", "I-PER", "O"]
    assert frame["_line"].tolist() == [1, 5, 11]


def test_conll_extra_columns_take_the_last_as_tag(tmp_path):
    (tmp_path / "b.conll").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n", encoding="utf-8")
    assert read_table(tmp_path / "b.conll")["tags"].tolist() == [["B-ORG", "O"]]


def test_conll_comment_lines_before_a_sentence_are_skipped_and_a_hash_token_is_kept(tmp_path):
    text = "# newdoc\n# sent_id = 1\n# text = Paris #1\nParis\tB-LOC\n#\tO\n1\tO\n\n# sent_id = 2\nBob\tB-PER\n"
    (tmp_path / "c.conll").write_text(text, encoding="utf-8")
    frame = read_table(tmp_path / "c.conll")
    assert frame["tokens"].tolist() == [["Paris", "#", "1"], ["Bob"]]
    assert frame["tags"].tolist() == [["B-LOC", "O", "O"], ["B-PER"]] and frame["_line"].tolist() == [4, 9]
    spaced = "# sent_id = 1\nParis B-LOC\n\n# O\nhello O\n"  # no tabs: "# O" is the token # tagged O
    (tmp_path / "s.conll").write_text(spaced, encoding="utf-8")
    assert read_table(tmp_path / "s.conll")["tokens"].tolist() == [["Paris"], ["#", "hello"]]


def test_conll_wrong_number_of_fields_names_file_and_line(tmp_path):
    (tmp_path / "bad.conll").write_text("Paris\tB-LOC\nis\tO\textra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll: line 2 .* has 3 fields but line 1 has 2"):
        read_table(tmp_path / "bad.conll")
    (tmp_path / "one.conll").write_text("Paris\tB-LOC\nlonely\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"one.conll: line 2 .*one field"):
        read_table(tmp_path / "one.conll")


@pytest.mark.parametrize(("tags", "scheme", "bio", "repairs", "detected"), [
    (["O", "I-PER", "I-PER", "O", "I-LOC"], "BIO", ["O", "B-PER", "I-PER", "O", "B-LOC"], 2, "IO"),
    (["B-PER", "O", "I-LOC"], "BIO", ["B-PER", "O", "B-LOC"], 1, "BIO"),
    (["PER", "PER", "O", "LOC", "ORG"], "IO", ["B-PER", "I-PER", "O", "B-LOC", "B-ORG"], 0, "IO"),
    (["S-PER", "B-LOC", "E-LOC", "O", "E-ORG"], "BIOES", ["B-PER", "B-LOC", "I-LOC", "O", "B-ORG"], 1, "BIOES"),
    (["U-PER", "B-LOC", "L-LOC"], "BIOES", ["B-PER", "B-LOC", "I-LOC"], 0, "BIOES"),
    (["B-LOC", "I-LOC", "E-LOC"], "BIOES", ["B-LOC", "I-LOC", "I-LOC"], 0, "BIOES"),
    # IO: an E- that no B- opened is no BIOES end but a type of its own (E-MAIL), one entity over both words
    (["PER", "E-MAIL", "E-MAIL", "O", "I-PER"], "IO", ["B-PER", "B-E-MAIL", "I-E-MAIL", "O", "B-PER"], 0, "IO"),
    (["B-PER", "I-PER", "O", "B-LOC"], "IO", ["B-PER", "I-PER", "O", "B-LOC"], 0, "BIO"),  # a B- still begins
])
def test_schemes_normalise_to_bio_and_count_repairs(tags, scheme, bio, repairs, detected):
    converted = to_bio(tags, scheme)
    assert converted.tags == bio and converted.repairs == repairs
    assert detect_scheme([tags]) == detected


def test_spans_become_word_tags_and_back_to_characters(tmp_path):
    rows = [{"text": "Angela Merkel visited Paris.", "spans": [{"start": 0, "end": 13, "label": "PER"},
                                                                  {"start": 22, "end": 27, "label": "LOC"}]}] * 4
    text = "\n".join(json.dumps(r) for r in rows)
    data = prepare(tmp_path, {"tr.jsonl": text, "te.jsonl": text}, train="tr.jsonl", test="te.jsonl")
    assert data.train.tokens[0] == ["Angela", "Merkel", "visited", "Paris", "."]
    assert data.train.tags[0] == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    ents = entities_of(data.test.tags[0], data.test.texts[0], data.test.offsets[0])
    assert [(e["start"], e["end"], e["label"], e["text"]) for e in ents] == [(0, 13, "PER", "Angela Merkel"),
                                                                              (22, 27, "LOC", "Paris")]


@pytest.mark.parametrize(("spans_value", "message"), [
    ([{"start": 0, "end": 13, "label": "PER"}, {"start": 7, "end": 20, "label": "LOC"}], "overlaps"),
    ([{"start": 20, "end": 99, "label": "PER"}], "runs past the text"),
    ([{"start": 3, "end": 1, "label": "PER"}], "runs past the text"),
    ([{"begin": 0, "label": "PER"}], "each span is"),
    ([{"start": False, "end": True, "label": "PER"}], "each span is"),  # JSON booleans are no offsets
])
def test_bad_spans_name_the_row_and_span(tmp_path, spans_value, message):
    good = {"text": "Angela Merkel visited Paris.", "spans": [{"start": 0, "end": 6, "label": "PER"}]}
    bad = {"text": "Angela Merkel visited Paris.", "spans": spans_value}
    text = "\n".join(json.dumps(r) for r in [good, good, bad])
    with pytest.raises(DataError, match=rf"row 3: span \d.*{message}|row 3: span \d.*"):
        prepare(tmp_path, {"tr.jsonl": text, "te.jsonl": json.dumps(good)}, train="tr.jsonl", test="te.jsonl")
    try:
        prepare(tmp_path, {"tr.jsonl": text, "te.jsonl": json.dumps(good)}, train="tr.jsonl", test="te.jsonl")
    except DataError as e:
        assert message in str(e) and "tr.jsonl" in str(e)


def test_numeric_tag_ids_are_named_as_label_ids(tmp_path):
    rows = [{"tokens": ["Ann", "met", "Bob"], "tags": [1, 0, 1]}] * 3
    text = "\n".join(json.dumps(r) for r in rows)
    with pytest.raises(DataError, match=r"row 1: tag 1 \(1\) is empty or not text; the tags are numbers, as a hub "
                                        r"dataset's label ids"):
        prepare(tmp_path, {"tr.jsonl": text, "te.jsonl": text}, train="tr.jsonl", test="te.jsonl")


def test_empty_sentence_mismatched_tags_and_textless_rows_are_errors(tmp_path):
    ok = {"tokens": ["Paris"], "tags": ["B-LOC"]}
    cases = [({"tokens": [], "tags": []}, "empty sentence"),
             ({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags")]
    for bad, message in cases:
        text = "\n".join(json.dumps(r) for r in [ok, bad])
        with pytest.raises(DataError, match=f"row 2.*{message}|row 2 is an {message}"):
            prepare(tmp_path, {"tr.jsonl": text, "te.jsonl": json.dumps(ok)}, train="tr.jsonl", test="te.jsonl")
    spans_rows = [{"text": "Paris", "spans": [{"start": 0, "end": 5, "label": "LOC"}]}, {"text": "  ", "spans": []}]
    with pytest.raises(DataError, match="row 2: the text .* has no words"):
        prepare(tmp_path, {"tr.jsonl": "\n".join(json.dumps(r) for r in spans_rows),
                           "te.jsonl": json.dumps(spans_rows[0])}, train="tr.jsonl", test="te.jsonl")


def test_a_type_only_in_test_is_an_error_naming_it(tmp_path):
    train = "Paris\tB-LOC\nis\tO\n\nRome\tB-LOC\n"
    test = "Apple\tB-ORG\nsells\tO\n"
    with pytest.raises(DataError, match=r"te.conll: entity type 'ORG' \(rows 1\) is in the test split but never in"):
        prepare(tmp_path, {"tr.conll": train, "te.conll": test}, train="tr.conll", test="te.conll")


def test_repairs_are_counted_per_split(tmp_path):
    train = "Paris\tI-LOC\nis\tO\n\nRome\tB-LOC\n"
    data = prepare(tmp_path, {"tr.conll": train, "te.conll": "Rome\tI-LOC\n"}, train="tr.conll", test="te.conll")
    assert data.repairs == {"train": 1, "validation": 0, "test": 1}
    assert data.train.tags[0] == ["B-LOC", "O"]


def test_words_of_keeps_offsets():
    words, offsets = words_of("Hi, New-York!")
    assert words == ["Hi", ",", "New", "-", "York", "!"]
    assert [("Hi, New-York!")[a:b] for a, b in offsets] == words


def test_entity_metrics_match_seqeval_and_intervals_bracket_them():
    from seqeval.metrics import f1_score

    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"], ["B-LOC", "O"]] * 20
    preds = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"], ["B-PER", "O"]] * 20
    result = entity_metrics(refs, preds, ["LOC", "ORG", "PER"], seed=0)
    assert result["metrics"]["entity_micro_f1"] == pytest.approx(f1_score(refs, preds))
    low, high = result["interval"]["entity_micro_f1"]
    assert low <= result["metrics"]["entity_micro_f1"] <= high and low < high
    assert result["per_type"]["ORG"]["f1"] == 1.0 and result["per_type"]["LOC"]["recall"] == 0.0
    confusion = dict(zip(result["type_confusion"]["labels"], result["type_confusion"]["matrix"]))
    assert confusion["LOC"][result["type_confusion"]["labels"].index("PER")] == 20  # LOC predicted as PER


def test_paired_test_separates_a_better_system_and_not_itself():
    refs = [["B-PER", "O"], ["B-LOC", "O"]] * 30
    good = entity_counts(refs, refs, ["LOC", "PER"])
    bad = entity_counts(refs, [["O", "O"], ["B-LOC", "O"]] * 30, ["LOC", "PER"])
    assert paired_pvalue(good, bad, "entity_micro_f1") < 0.05
    assert paired_pvalue(good, good, "entity_micro_f1") == 1.0


def test_spans_of_bio_tags():
    assert spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]

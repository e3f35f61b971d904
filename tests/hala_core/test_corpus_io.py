"""Reading corpora: JSON/JSONL shapes, CSV/TSV, Parquet, datasets folders, parallel text, encodings and errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hala_core.corpus_io import (
    FORMATS,
    MAX_FIELD_CHARS,
    ReadResult,
    detect_format,
    guess_licence,
    parse_mapping,
    read_corpus,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ALPACA = DATA / "alpaca_5000" / "alpaca_5000.json"
NTREX = DATA / "ntrex128_en_ar"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is missing")

ARABIC = "ترجم الجملة التالية إلى العربية"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- real data


@needs_data
def test_alpaca_5000_reads_fast_with_fields_and_licence():
    start = time.perf_counter()
    result = read_corpus(ALPACA)
    elapsed = time.perf_counter() - start
    assert isinstance(result, ReadResult)
    assert result.format == "alpaca" and result.source == str(ALPACA)
    assert len(result.records) == 5000 and result.total == 5000 and result.problems == []
    assert result.licence == "CC-BY-NC-4.0"
    first = result.records[0]
    assert first.line == 1 and first.shape == "alpaca"
    assert [(f.name, f.role) for f in first.fields] == [("instruction", "user"), ("input", "user"),
                                                        ("output", "assistant")]
    assert first.fields[0].text.startswith("Are the two sentences below grammatically correct?")
    assert first.fields[2].text == "No"
    # PROVENANCE.md: 1943 records have a non-empty input.
    assert sum(1 for r in result.records if len(r.fields) == 3) == 1943
    assert all(r.fields[-1].name == "output" for r in result.records)
    assert elapsed < 0.5, f"reading 5000 records took {elapsed:.3f} s"


@needs_data
def test_alpaca_limit_stops_early():
    result = read_corpus(ALPACA, limit=10)
    assert len(result.records) == 10 and result.total == 10
    assert [r.line for r in result.records] == list(range(1, 11))


@needs_data
def test_ntrex_folder_is_parallel_with_arabic_references():
    assert detect_format(NTREX) == "parallel"
    result = read_corpus(NTREX)
    assert result.format == "parallel" and result.licence == "CC-BY-SA-4.0"
    assert len(result.records) == 1997 and result.problems == []
    rec = result.records[0]
    assert rec.shape == "pair" and len(rec.fields) == 1
    f = rec.fields[0]
    assert (f.name, f.role) == ("text", "user")
    assert f.text.startswith("Welsh AMs")
    assert any("\u0600" <= ch <= "\u06ff" for ch in f.reference)
    assert rec.meta.get("document") == "bbc.381790"

    swapped = read_corpus(NTREX, source_lang="ar")
    assert len(swapped.records) == 1997
    g = swapped.records[0].fields[0]
    assert g.text == f.reference and g.reference == f.text


@needs_data
def test_guess_licence_on_shared_data():
    assert guess_licence(ALPACA) == "CC-BY-NC-4.0"
    assert guess_licence(NTREX) == "CC-BY-SA-4.0"
    assert guess_licence(DATA / "exams_ar") == "CC-BY-SA-4.0"


# ------------------------------------------------------------------------------------------- JSON shapes


def test_alpaca_jsonl_with_mapping_meta_and_crlf(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(json.dumps({"question": "Say hi\r\n ", "answer": "hi", "id": 7}).encode() + b"\r\n"
                     + json.dumps({"question": "Two", "context": "  ", "answer": ""}).encode() + b"\r\n")
    result = read_corpus(path, mapping={"instruction": "question", "output": "answer", "input": "context"})
    assert result.format == "alpaca" and result.total == 2
    first, second = result.records
    assert first.fields[0].text == "Say hi\n "          # kept exactly, CRLF normalised
    assert first.meta == {"id": 7}
    assert [f.name for f in second.fields] == ["instruction", "output"]  # whitespace-only input dropped
    assert second.fields[1].text == ""                                    # empty output allowed


def test_alpaca_missing_output_and_non_text(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "ok", "output": 42},
        {"instruction": "no output"},
        {"instruction": ["a", "list"], "output": "x"},
        {"instruction": "   ", "output": "x"},
    ])
    result = read_corpus(path, on_error="skip")
    assert len(result.records) == 1 and result.records[0].fields[-1].text == "42"
    assert result.total == 4
    messages = {p.line: p.message for p in result.problems}
    assert "missing field 'output'" in messages[2] and "keys found: instruction" in messages[2]
    assert "is a list" in messages[3]
    assert "'instruction' is empty" in messages[4]
    with pytest.raises(ValueError, match=r"line 2: missing field 'output'.*on_error='skip'"):
        read_corpus(path)


def test_jsonl_malformed_line_abort_and_skip(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "1"}\n\n'
                    '{"instruction": "b" "output": "2"}\n'
                    '{"instruction": "c", "output": "3"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: not valid JSON: Expecting ',' delimiter \(col \d+\)") as exc:
        read_corpus(path)
    assert "on_error='skip'" in str(exc.value)
    result = read_corpus(path, on_error="skip")
    assert [p.line for p in result.problems] == [3]
    assert [r.line for r in result.records] == [1, 4]
    assert [r.fields[0].text for r in result.records] == ["a", "c"]
    assert result.total == 3  # the blank line is not a record


def test_json_array_parse_error_names_line_and_col(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "output": }\n]\n')
    with pytest.raises(ValueError, match=r"line 3 col \d+"):
        read_corpus(path, format="alpaca")


def test_single_pretty_printed_object(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}, indent=2), encoding="utf-8")
    result = read_corpus(path)
    assert result.format == "messages" and len(result.records) == 1
    assert result.records[0].fields[0].text == "hi"


def test_sharegpt_roundtrip_and_unknown_speaker(tmp_path):
    rows = [
        {"id": "c1", "conversations": [{"from": "system", "value": "Be brief."},
                                       {"from": "human", "value": "Hi"}, {"from": "gpt", "value": ARABIC}]},
        {"conversations": [{"from": "narrator", "value": "?"}]},
    ]
    path = write_jsonl(tmp_path / "sg.jsonl", rows)
    assert detect_format(path) == "sharegpt"
    result = read_corpus(path, on_error="skip")
    assert result.format == "sharegpt"
    rec = result.records[0]
    assert rec.shape == "chat" and rec.meta == {"id": "c1"}
    assert [(f.name, f.role, f.text) for f in rec.fields] == [
        ("turn", "system", "Be brief."), ("turn", "user", "Hi"), ("turn", "assistant", ARABIC)]
    assert len(result.problems) == 1 and result.problems[0].line == 2
    assert "narrator" in result.problems[0].message and "human" in result.problems[0].message
    with pytest.raises(ValueError, match="line 2: turn 1: unknown from 'narrator'"):
        read_corpus(path)


def test_messages_roundtrip_and_unknown_role(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
            {"messages": [{"role": "tool", "content": "{}"}]},
            {"messages": [{"role": "user", "content": "hello"}]}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert detect_format(path) == "messages"
    result = read_corpus(path, on_error="skip")
    assert [r.line for r in result.records] == [1, 3]
    assert [(f.role, f.text) for f in result.records[0].fields] == [("user", "2+2?"), ("assistant", "4")]
    assert result.problems[0].line == 2 and "tool" in result.problems[0].message
    assert "system, user, assistant" in result.problems[0].message


def test_detect_format_errors(tmp_path):
    unknown = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match="alpaca.*sharegpt.*messages") as exc:
        detect_format(unknown)
    assert "question" in str(exc.value)
    # A mapping makes the same file readable.
    assert read_corpus(unknown, mapping=parse_mapping("instruction=question, output=answer")).records
    with pytest.raises(ValueError, match="does not exist"):
        detect_format(tmp_path / "nope.json")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="cannot tell the format of folder"):
        detect_format(tmp_path / "folder")
    text = tmp_path / "one.txt"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match="reference="):
        detect_format(text)
    (tmp_path / "t.tsv").write_text("a\tb\n")
    assert detect_format(tmp_path / "t.tsv") == "tsv"
    (tmp_path / "c.csv").write_text("a,b\n")
    assert detect_format(tmp_path / "c.csv") == "csv"


def test_parse_mapping_forms_and_errors():
    assert parse_mapping(["instruction=question", "output = answer"]) == {"instruction": "question",
                                                                         "output": "answer"}
    assert parse_mapping("instruction=q, input=ctx") == {"instruction": "q", "input": "ctx"}
    assert parse_mapping(None) == {}
    with pytest.raises(ValueError, match="bad mapping item 'instruction'.*FIELD=COLUMN"):
        parse_mapping(["instruction"])
    with pytest.raises(ValueError, match="unknown field 'answer'"):
        parse_mapping("answer=output")
    with pytest.raises(ValueError, match="mapped twice"):
        parse_mapping(["output=a", "output=b"])


def test_bad_arguments(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(ValueError, match="on_error must be 'abort' or 'skip'"):
        read_corpus(path, on_error="ignore")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_corpus(path, format="xml")
    assert "hub" in FORMATS and MAX_FIELD_CHARS == 100_000


def test_zero_valid_records_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a"}, {"instruction": "b"}])
    with pytest.raises(ValueError, match="no valid records .2 skipped"):
        read_corpus(path, on_error="skip")


# ------------------------------------------------------------------------------------------------ CSV / TSV


def test_csv_with_mapping_and_multiline_cells(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('id,question,answer\n1,"What is\nthis?",A test\n2,Second,"Yes, it is"\n', encoding="utf-8")
    result = read_corpus(path, mapping=parse_mapping(["instruction=question", "output=answer"]))
    assert result.format == "csv"
    assert [r.line for r in result.records] == [2, 4]
    assert result.records[0].fields[0].text == "What is\nthis?"
    assert result.records[1].fields[-1].text == "Yes, it is"
    assert result.records[0].meta == {"id": "1"}


def test_csv_default_columns_and_ragged_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("instruction,input,output\nhi,,there\nshort,row\n", encoding="utf-8")
    result = read_corpus(path, on_error="skip")
    assert [f.name for f in result.records[0].fields] == ["instruction", "output"]
    assert result.problems[0].line == 3 and "2 cells" in result.problems[0].message


def test_csv_missing_columns_lists_columns_and_map_syntax(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("prompt,completion\na,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="columns found: prompt, completion") as exc:
        read_corpus(path)
    assert "--map instruction=COL" in str(exc.value)
    with pytest.raises(ValueError, match=r"no column 'question' \(mapped to instruction\).*prompt, completion"):
        read_corpus(path, mapping={"instruction": "question", "output": "completion"})
    ok = read_corpus(path, mapping={"instruction": "prompt", "output": "completion"})
    assert ok.records[0].fields[1].text == "b"


def test_csv_pair_columns_follow_source_lang(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(f"en,ar\nGood morning,{ARABIC}\n", encoding="utf-8")
    en = read_corpus(path).records[0]
    assert en.shape == "pair" and en.fields[0].text == "Good morning" and en.fields[0].reference == ARABIC
    ar = read_corpus(path, source_lang="ar").records[0]
    assert ar.fields[0].text == ARABIC and ar.fields[0].reference == "Good morning"


def test_tsv_parallel_with_and_without_header(tmp_path):
    headed = tmp_path / "pairs.tsv"
    headed.write_text(f"arabic\tenglish\n{ARABIC}\tTranslate this\n\t\nonly english\t\n", encoding="utf-8")
    result = read_corpus(headed, format="parallel", on_error="skip")
    assert result.format == "parallel" and len(result.records) == 1
    f = result.records[0].fields[0]
    assert f.text == "Translate this" and f.reference == ARABIC   # the header says column 1 is Arabic
    assert [p.line for p in result.problems] == [4]               # both-empty line 3 skipped silently
    assert result.total == 2

    bare = tmp_path / "bare.txt"
    bare.write_text(f"Hello\t{ARABIC}\nBye\tمع السلامة\n", encoding="utf-8")
    records = read_corpus(bare, format="parallel", source_lang="ar").records
    assert [r.fields[0].text for r in records] == [ARABIC, "مع السلامة"]
    assert [r.fields[0].reference for r in records] == ["Hello", "Bye"]


def test_two_plain_files_and_line_count_mismatch(tmp_path):
    src, ref = tmp_path / "src.en", tmp_path / "ref.ar"
    src.write_text("one\ntwo\n\nfour\n", encoding="utf-8")
    ref.write_text(f"واحد\nاثنان\n\n{ARABIC}\n", encoding="utf-8")
    result = read_corpus(src, reference=ref)
    assert result.format == "parallel"
    assert [r.line for r in result.records] == [1, 2, 4]
    assert result.records[2].fields[0].reference == ARABIC
    ref.write_text("واحد\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has 4 lines but .* has 1"):
        read_corpus(src, reference=ref)


# ------------------------------------------------------------------------------------- Parquet / datasets


def test_parquet_alpaca_and_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "input": None, "output": "b", "source": "x"},
                                         {"instruction": "c", "input": "d", "output": "e", "source": "y"}]), path)
    assert detect_format(path) == "parquet"
    result = read_corpus(path)
    assert result.format == "parquet" and len(result.records) == 2
    assert [f.name for f in result.records[0].fields] == ["instruction", "output"]
    assert result.records[1].fields[1].text == "d" and result.records[1].meta == {"source": "y"}

    chat = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": [{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "a"}]}]), chat)
    rec = read_corpus(chat).records[0]
    assert rec.shape == "chat" and [f.role for f in rec.fields] == ["user", "assistant"]


def test_hf_folder_dataset_and_dataset_dict(tmp_path):
    import datasets

    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(3)]
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    assert detect_format(folder) == "hf"
    result = read_corpus(folder, limit=2)
    assert result.format == "hf" and len(result.records) == 2
    assert result.records[1].fields[1].text == "a1" and result.records[1].line == 2

    dd = tmp_path / "dict"
    datasets.DatasetDict({
        "test": datasets.Dataset.from_list([{"instruction": "t", "output": "t"}]),
        "train": datasets.Dataset.from_list([{"instruction": "x", "output": "y"}, {"instruction": "z", "output": "w"}]),
    }).save_to_disk(str(dd))
    assert detect_format(dd) == "hf"
    result = read_corpus(dd)
    assert [r.fields[0].text for r in result.records] == ["x", "z"]


def test_hub_id_fails_fast_with_clear_message(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert detect_format("nobody/not-a-dataset") == "hub"
    start = time.perf_counter()
    with pytest.raises(ValueError) as exc:
        read_corpus("nobody/not-a-dataset")
    assert time.perf_counter() - start < 10
    message = str(exc.value)
    assert "nobody/not-a-dataset" in message and "could not be fetched" in message
    assert "local file" in message and "save_to_disk" in message


# --------------------------------------------------------------------------------------- encodings, errors


def test_cp1256_file_gives_clear_error_and_reads_with_encoding(tmp_path):
    path = tmp_path / "ar.jsonl"
    line1 = json.dumps({"instruction": "hello", "output": "x"})
    line2 = json.dumps({"instruction": ARABIC, "output": "مرحبا"}, ensure_ascii=False)
    path.write_bytes((line1 + "\n" + line2 + "\n").encode("cp1256"))
    with pytest.raises(ValueError, match=r"is not UTF-8 \(invalid byte 0x[0-9a-f]{2} at line 2\).*cp1256"):
        read_corpus(path)
    result = read_corpus(path, encoding="cp1256")
    assert result.records[1].fields[0].text == ARABIC


def test_utf16_and_utf8_bom_files(tmp_path):
    rows = [{"instruction": ARABIC, "output": "ok"}]
    text = json.dumps(rows, ensure_ascii=False)
    utf16 = tmp_path / "u16.json"
    utf16.write_bytes(text.encode("utf-16"))
    assert utf16.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    assert read_corpus(utf16).records[0].fields[0].text == ARABIC
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + f"instruction,output\n{ARABIC},ok\n".encode())
    assert read_corpus(bom).records[0].fields[0].text == ARABIC


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        read_corpus(empty)
    blank = tmp_path / "blank.json"
    blank.write_text("  \n\n ")
    with pytest.raises(ValueError, match="is empty"):
        read_corpus(blank)
    with pytest.raises(ValueError, match="missing.json does not exist"):
        read_corpus(tmp_path / "missing.json")


def test_one_megabyte_field_is_a_problem(tmp_path):
    big = "x" * 1_048_576
    path = tmp_path / "big.csv"
    path.write_text(f"instruction,output\nsmall,fine\nbig,{big}\n", encoding="utf-8")
    result = read_corpus(path, on_error="skip")
    assert len(result.records) == 1
    assert result.problems[0].line == 3
    assert result.problems[0].message == ("field 'output' has 1,048,576 characters; the limit is 100,000 "
                                          "(split the record or raise max_field_chars)")
    assert len(read_corpus(path, max_field_chars=2_000_000).records) == 2


def test_guess_licence_variants(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "LICENSE").write_text("\n                                 Apache License\n  Version 2.0\n")
    assert guess_licence(tmp_path / "a" / "data.json") == "Apache-2.0"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# data\n")
    assert guess_licence(tmp_path / "b") == "CC-BY-SA-4.0"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "LICENCE.txt").write_text("Attribution 4.0 International\n")
    assert guess_licence(tmp_path / "c") == "CC-BY-4.0"
    (tmp_path / "d").mkdir()
    assert guess_licence(tmp_path / "d") is None

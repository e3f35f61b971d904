"""Translation prompts, NTREX loading and chrF++/BLEU scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from hala_core import demo_corpus
from hala_core.translation import (
    CHAT_INSTRUCTION,
    HALA_TRANSLATOR_TEMPLATE,
    build_prompts,
    clean_output,
    load_parallel,
    score,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "ntrex128_en_ar").is_dir(), reason="sample data folder not present")


@pytest.fixture(scope="module")
def demo_tokenizer(demo_models_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_models_dir["demo-lfm2-a"]))


def test_hala_translator_template_is_fixed_plain_text():
    assert HALA_TRANSLATOR_TEMPLATE == "### Translate {src_lang} to {tgt_lang}\n{text}\n### {tgt_lang}\n"
    assert build_prompts(["Good morning."], "en-ar", "hala-translator", None) == [
        "### Translate English to Arabic\nGood morning.\n### Arabic\n"
    ]
    assert build_prompts(["صباح الخير."], "ar-en", "hala-translator", None) == [
        "### Translate Arabic to English\nصباح الخير.\n### English\n"
    ]


def test_chat_template_goes_through_the_tokenizer(demo_tokenizer):
    [prompt] = build_prompts(["Good morning."], "en-ar", "chat", demo_tokenizer)
    assert prompt == ("<|startoftext|><|im_start|>user\nTranslate the following English text into Arabic. "
                      "Reply with the translation only.\n\nGood morning.<|im_end|>\n<|im_start|>assistant\n")
    [mirror] = build_prompts(["صباح الخير."], "ar-en", "chat", demo_tokenizer)
    assert "Translate the following Arabic text into English. Reply with the translation only.\n\nصباح الخير." in mirror
    assert mirror.endswith("<|im_start|>assistant\n")


def test_chat_falls_back_to_plain_text_without_a_chat_template(demo_tokenizer):
    plain = build_prompts(["Good morning."], "en-ar", "chat", None)[0]
    assert plain.startswith(CHAT_INSTRUCTION.format(src_lang="English", tgt_lang="Arabic", text="Good morning."))
    assert "<|im_start|>" not in plain
    saved = demo_tokenizer.chat_template
    try:
        demo_tokenizer.chat_template = None
        assert build_prompts(["Good morning."], "en-ar", "chat", demo_tokenizer)[0] == plain
    finally:
        demo_tokenizer.chat_template = saved


def test_bad_direction_or_template_is_refused():
    with pytest.raises(ValueError, match="valid directions: en-ar, ar-en"):
        build_prompts(["x"], "en-fr", "chat", None)
    with pytest.raises(ValueError, match="valid templates: chat, hala-translator"):
        build_prompts(["x"], "en-ar", "alpaca", None)


def test_clean_output_cuts_the_hala_template_at_the_next_block():
    assert clean_output(" صباح الخير.\n### English\nGood", "hala-translator") == "صباح الخير."
    assert clean_output("  مرحبا \n", "chat") == "مرحبا"


@needs_data
def test_load_parallel_reads_ntrex_aligned():
    src, ref = load_parallel(DATA, 5, "en-ar")
    assert len(src) == len(ref) == 5
    assert src[0] == "Welsh AMs worried about 'looking like muppets'"
    assert ref[0].startswith("أعرب أعضاء جمعية ويلز الوطنية")
    en_lines = (DATA / "ntrex128_en_ar" / "newstest2019-src.eng.txt").read_text(encoding="utf-8").splitlines()
    ar_lines = (DATA / "ntrex128_en_ar" / "newstest2019-ref.arb.txt").read_text(encoding="utf-8").splitlines()
    assert src == en_lines[:5] and ref == ar_lines[:5]
    # the NTREX folder itself works too, and ar-en swaps the sides
    ar_src, en_ref = load_parallel(DATA / "ntrex128_en_ar", 5, "ar-en")
    assert ar_src == ref and en_ref == src
    everything, _ = load_parallel(DATA, 10_000, "en-ar")
    assert len(everything) == 1997


def test_load_parallel_tsv_and_builtin_fallback(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("en\tar\nGood morning.\tصباح الخير.\n\nWhere is the library?\tأين المكتبة؟\n", encoding="utf-8")
    assert load_parallel(tsv, 10, "en-ar") == (["Good morning.", "Where is the library?"], ["صباح الخير.", "أين المكتبة؟"])
    assert load_parallel(tsv, 1, "ar-en") == (["صباح الخير."], ["Good morning."])
    src, ref = load_parallel(None, 3, "en-ar")
    assert src == list(demo_corpus.ENGLISH[:3]) and ref == list(demo_corpus.ARABIC[:3])
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one column\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs two"):
        load_parallel(bad, 3, "en-ar")
    with pytest.raises(ValueError, match="not a parallel set"):
        load_parallel(tmp_path, 3, "en-ar")


def test_score_is_100_for_identical_text_and_lower_otherwise():
    refs = list(demo_corpus.ARABIC[:8])
    same = score(refs, refs)
    assert same["chrf++"] == pytest.approx(100.0) and same["bleu"] == pytest.approx(100.0)
    worse = score([r[: len(r) // 2] for r in refs], refs)
    assert 0 < worse["chrf++"] < 100 and worse["bleu"] < 100
    with pytest.raises(ValueError, match="pair up"):
        score(["a"], ["a", "b"])

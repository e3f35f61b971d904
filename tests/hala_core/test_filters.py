"""Translation quality scores and flags, their calibration on NTREX-128, and agreement statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hala_core.filters import (
    FLAGS,
    SCORE_KEYS,
    FilterThresholds,
    cohen_kappa,
    flags,
    pair_chrf,
    repetition,
    score,
    script_share,
    summary,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
NTREX = DATA / "ntrex128_en_ar"
needs_ntrex = pytest.mark.skipif(not (NTREX / "newstest2019-ref.arb.txt").is_file(),
                                 reason="shared sample data (ntrex128_en_ar) not present")

DEFAULTS = FilterThresholds()
EN = "The committee approved the new budget on Tuesday after a long debate about schools and hospitals."
AR = "وافقت اللجنة على الميزانية الجديدة يوم الثلاثاء بعد نقاش طويل حول المدارس والمستشفيات."


def check(source: str, output: str, target: str = "ar", verbatim: bool = False) -> list[str]:
    return flags(score(source, output, target, verbatim), DEFAULTS, verbatim)


@pytest.fixture(scope="module")
def ntrex() -> tuple[list[str], list[str]]:
    en = (NTREX / "newstest2019-src.eng.txt").read_text(encoding="utf-8").splitlines()
    ar = (NTREX / "newstest2019-ref.arb.txt").read_text(encoding="utf-8").splitlines()
    assert len(en) == len(ar) > 1000
    return en, ar


@needs_ntrex
def test_defaults_pass_professional_references_en_to_ar(ntrex):
    en, ar = ntrex
    flag_lists = [check(s, o, "ar") for s, o in zip(en, ar, strict=True)]
    result = summary([score(s, o, "ar") for s, o in zip(en, ar, strict=True)], flag_lists)
    assert result["pass_rate"] >= 0.9, result["flags"]
    assert result["flags"]["wrong_script"] + result["flags"]["too_short"] + result["flags"]["too_long"] < 20
    assert result["flags"]["untranslated"] == result["flags"]["empty"] == 0


@needs_ntrex
def test_defaults_pass_professional_references_ar_to_en(ntrex):
    en, ar = ntrex
    passed = sum(not check(s, o, "en") for s, o in zip(ar, en, strict=True))
    assert passed / len(en) >= 0.9


@needs_ntrex
def test_english_copied_as_output_is_untranslated_and_wrong_script(ntrex):
    en, _ = ntrex
    for line in en[:50]:
        if any(ch.isalpha() for ch in line):
            found = check(line, line, "ar")
            assert "untranslated" in found and "wrong_script" in found, line


def test_good_translation_passes():
    scores = score(EN, AR, "ar")
    assert set(scores) == set(SCORE_KEYS)
    assert scores["script_share"] == 1.0 and scores["identical"] == 0.0 and scores["preserved"] == 1.0
    assert flags(scores, DEFAULTS) == []


def test_copies_that_need_no_translation_are_not_untranslated():
    assert check("1997 - 2024", "1997 - 2024") == []
    assert check("مرحبا بكم", "مرحبا بكم") == []  # already in the target language
    assert check("`x = 1`", "`x = 1`") == []  # only a protected span


def test_loops_are_repetitive():
    loop = "ال ال ال ال ال ال ال"
    assert repetition(loop) >= 0.8
    assert "repetitive" in check("The cat sat on the mat near the door.", loop)
    tail = "وافقت اللجنة على الميزانية " + "وهكذا " * 12
    assert repetition(tail) >= 0.9
    assert "repetitive" in check(EN, tail)
    assert repetition("كانكانكانكانكان") >= 0.9  # a loop without spaces
    assert repetition(AR) < 0.1 and repetition(EN) < 0.1
    assert repetition("") == 0.0 and repetition("ok") == 0.0


def test_echoing_a_repetitive_source_is_not_flagged():
    assert repetition('"No, no, no, no, no.') > DEFAULTS.max_repetition
    assert "repetitive" not in check('"No, no, no, no, no.', '"لا، لا، لا، لا، لا.')


def test_empty_output_is_only_empty():
    assert check(EN, "") == ["empty"]
    assert check(EN, "  \n ") == ["empty"]
    assert check("", "") == []
    assert score("", "", "ar")["empty"] == 0.0


def test_length_flags():
    assert check(EN, "وافقت.") == ["too_short"]
    assert "too_long" in check("Yes.", "نعم، " + "هذا صحيح تماما ولا شك فيه أبدا. " * 4)


def test_wrong_script_for_each_direction():
    assert "wrong_script" in check(EN, "The committee approved it. " + AR[:20], "ar")
    assert check(AR, EN, "en") == []
    assert "wrong_script" in check(AR, AR[:-5] + "!", "en")


def test_lost_protected_and_its_switch():
    source = "In 1997 the museum at https://museum.example.org had 1,000 visitors."
    kept = "في عام ١٩٩٧ استقبل المتحف في https://museum.example.org ألف زائر 1000."
    lost = "في عام استقبل المتحف في الموقع ألف زائر."
    assert check(source, kept) == []
    assert check(source, lost) == ["lost_protected"]
    off = FilterThresholds(check_preserved=False)
    assert flags(score(source, lost, "ar"), off) == []


def test_verbatim_pieces_only_get_empty_and_lost_protected():
    block = "```python\nprint('hello world, this is English')\n```"
    assert check(block, block, verbatim=True) == []
    assert check(block, "", verbatim=True) == ["empty"]
    assert check(block, "```python\nprint(1)\n```", verbatim=True) == []
    assert check("```\nx = 1997\n```", "```\nx = 2024\n```", verbatim=True) == ["lost_protected"]
    assert "untranslated" in check(block, block, verbatim=False)


def test_script_share():
    assert script_share("Hello مرحبا", "ar") == pytest.approx(5 / 10)
    assert script_share("Hello مرحبا", "en") == pytest.approx(5 / 10)
    assert script_share("١٢٣ 456 !?", "ar") == 0.0
    assert script_share("Ça résumé", "en") == 1.0
    with pytest.raises(ValueError, match="unknown language"):
        script_share("x", "fr")
    with pytest.raises(ValueError, match="unknown language"):
        score("x", "y", "de")


def test_thresholds_validate():
    with pytest.raises(ValidationError, match="min_script_share"):
        FilterThresholds(min_script_share=1.5)
    with pytest.raises(ValidationError, match="min_length_ratio < max_length_ratio"):
        FilterThresholds(min_length_ratio=2.0, max_length_ratio=1.5)
    with pytest.raises(ValidationError, match="min_length_ratio < max_length_ratio"):
        FilterThresholds(min_length_ratio=0.0)
    with pytest.raises(ValidationError, match="max_repetition"):
        FilterThresholds(max_repetition=-0.1)
    with pytest.raises(ValidationError, match="extra"):
        FilterThresholds(min_share=0.5)
    with pytest.raises(ValidationError, match="frozen"):
        DEFAULTS.max_repetition = 0.9
    strict = FilterThresholds(min_script_share=1.0)
    assert flags(score(EN, AR + " OK", "ar"), strict) == ["wrong_script"]


def test_summary_counts_flags_and_scores():
    rows = [score(EN, AR, "ar"), score(EN, EN, "ar"), score(EN, "", "ar")]
    flag_lists = [flags(r, DEFAULTS) for r in rows]
    result = summary(rows, flag_lists)
    assert result["count"] == 3 and result["passed"] == 1
    assert result["pass_rate"] == pytest.approx(1 / 3)
    assert set(result["flags"]) == set(FLAGS)
    assert result["flags"]["untranslated"] == 1 and result["flags"]["empty"] == 1
    assert result["flags"]["too_short"] == 0
    assert result["mean"]["identical"] == pytest.approx(1 / 3)
    assert result["median"]["script_share"] == 0.0
    empty = summary([], [])
    assert empty["count"] == 0 and empty["pass_rate"] is None and empty["mean"]["repetition"] is None
    with pytest.raises(ValueError, match="one flag list per row"):
        summary(rows, [])


def test_cohen_kappa_textbook_example():
    # Wikipedia, "Cohen's kappa": 50 proposals, both yes 20, A yes / B no 5, A no / B yes 10, both no 15 → κ = 0.4
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # second example there: 45/15/25/15 of 100 → p_o = 0.60, p_e = 0.54 → κ ≈ 0.1304
    a2 = ["y"] * 45 + ["y"] * 15 + ["n"] * 25 + ["n"] * 15
    b2 = ["y"] * 45 + ["n"] * 15 + ["y"] * 25 + ["n"] * 15
    assert cohen_kappa(a2, b2) == pytest.approx(0.06 / 0.46)


def test_cohen_kappa_edge_cases():
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["ok"], ["ok"]) is None
    assert cohen_kappa(["ok"] * 5, ["ok"] * 5) == 1.0  # both constant and equal: chance agreement is 1
    assert cohen_kappa(["ok"] * 4, ["bad"] * 4) == 0.0
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert cohen_kappa(["a", "b", "a", "b"], ["b", "a", "b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])


def test_pair_chrf():
    texts = ["وافقت اللجنة على الميزانية.", "The cat sat on the mat."]
    assert pair_chrf(texts, texts) == pytest.approx(100.0)
    partial = pair_chrf(texts, ["وافقت اللجنة.", "A dog sat there."])
    assert partial is not None and 0.0 < partial < 100.0
    assert pair_chrf([], []) is None
    with pytest.raises(ValueError, match="as many texts"):
        pair_chrf(["a"], [])

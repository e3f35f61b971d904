"""Quality scores and flags of a machine translation, and agreement statistics for review.

:func:`score` measures one (source, output) pair: the share of letters in the target script, the length ratio,
repetition (degenerate loops), whether the output merely copies the source, whether protected spans and numbers
survived (:func:`hala_core.segment.check_preserved`) and whether it is empty. :func:`flags` turns the scores into
named problems under :class:`FilterThresholds`. The defaults are calibrated on NTREX-128 (professional Arabic
references of English news pass them; see ``tests/hala_core/test_filters.py``).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from hala_core.segment import check_preserved, without_protected

SCORE_KEYS = ("script_share", "length_ratio", "repetition", "identical", "preserved", "empty")
FLAGS = ("wrong_script", "too_short", "too_long", "repetitive", "untranslated", "lost_protected", "empty")
SCRIPT_LANGS = ("ar", "en")

_LETTER = re.compile(r"[^\W\d_]")
_ARABIC_LETTER = re.compile(r"(?=[^\W\d_])[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF]")
_LATIN_LETTER = re.compile(r"(?=[^\W\d_])[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]")
_SCRIPT = {"ar": _ARABIC_LETTER, "en": _LATIN_LETTER}
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_LOOP_TAIL = 2000  # how far back from the end a repeated-unit loop is looked for
_LOOP_MAX_UNIT = 100


class FilterThresholds(BaseModel):
    """Where a score becomes a flag."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_script_share: float = 0.6
    min_length_ratio: float = 0.3
    max_length_ratio: float = 3.0
    max_repetition: float = 0.5
    check_preserved: bool = True

    @field_validator("min_script_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"min_script_share is a share of letters and must lie in [0, 1], got {v}")
        return v

    @field_validator("max_repetition")
    @classmethod
    def _repetition(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"max_repetition must lie in [0, 1] (0 = no repetition, 1 = a loop), got {v}")
        return v

    @model_validator(mode="after")
    def _ratios(self) -> FilterThresholds:
        if not 0.0 < self.min_length_ratio < self.max_length_ratio:
            raise ValueError("length ratios must satisfy 0 < min_length_ratio < max_length_ratio, got "
                             f"min_length_ratio={self.min_length_ratio}, max_length_ratio={self.max_length_ratio}")
        return self


def _check_lang(lang: str) -> None:
    if lang not in SCRIPT_LANGS:
        raise ValueError(f"unknown language {lang!r}; valid languages: {', '.join(SCRIPT_LANGS)}")


def script_share(text: str, lang: str) -> float:
    """Letters of ``lang``'s script (Arabic for ``"ar"``, Latin for ``"en"``) over all letters; 0.0 without letters."""
    _check_lang(lang)
    letters = len(_LETTER.findall(text))
    if not letters:
        return 0.0
    return len(_SCRIPT[lang].findall(text)) / letters


def _distinct_loss(grams: list) -> float:
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _tail_loop(text: str) -> bool:
    """Whether the text ends in the same unit (≥ 2 characters, with a letter) repeated at least 4 times."""
    s = " " + text.rstrip()[-_LOOP_TAIL:]  # a leading space lets word loops count their first word
    for size in range(2, min(_LOOP_MAX_UNIT, len(s) // 4) + 1):
        unit = s[-size:]
        if s.endswith(unit * 4) and any(ch.isalpha() for ch in unit):
            return True
    return False


def repetition(text: str) -> float:
    """0 = no repetition, towards 1 = a degenerate loop: ``1 - distinct/total`` word 3-grams for texts of at
    least 6 words, character 4-grams for shorter texts or texts without spaces; a text ending in the same unit
    (≥ 2 characters) repeated ≥ 4 times scores at least 0.9."""
    stripped = text.strip()
    if not stripped:
        return 0.0
    words = _WORD.findall(stripped)
    if len(words) >= 6 and _SPACE.search(stripped):
        value = _distinct_loss([tuple(words[i:i + 3]) for i in range(len(words) - 2)])
    else:
        chars = _SPACE.sub(" ", stripped)
        value = _distinct_loss([chars[i:i + 4] for i in range(len(chars) - 3)])
    if _tail_loop(stripped):
        value = max(value, 0.9)
    return value


def _non_space_len(text: str) -> int:
    return len(text) - sum(1 for ch in text if ch.isspace())


def score(source: str, output: str, target_lang: str, verbatim: bool = False) -> dict[str, float]:
    """The scores (:data:`SCORE_KEYS`) of one translation ``output`` of ``source`` into ``target_lang``.

    - ``script_share``: share of the output's letters (outside protected spans) in the target script; when the
      output has no letters it is 1.0 if the source had none either (nothing to convert), else 0.0.
    - ``length_ratio``: non-space characters of output over source (1.0 when both are empty).
    - ``repetition``: how much more the output repeats itself than the source does,
      ``max(0, repetition(output) - repetition(source))`` (a source that says "no, no, no, no" may be echoed).
    - ``identical``: 1.0 when the output equals the source (surrounding whitespace ignored).
    - ``preserved``: 1.0 when :func:`hala_core.segment.check_preserved` finds nothing lost.
    - ``empty``: 1.0 when the output is blank but the source is not.

    ``verbatim`` pieces (code blocks) are copied, not translated: their script and length are not measured
    (``script_share`` and ``length_ratio`` are 1.0, ``repetition`` 0.0).
    """
    _check_lang(target_lang)
    src_len = _non_space_len(source)
    out_len = _non_space_len(output)
    if verbatim:
        share, ratio, rep = 1.0, 1.0, 0.0
    else:
        out_text = without_protected(output)
        if _LETTER.search(out_text):
            share = script_share(out_text, target_lang)
        else:
            share = 0.0 if _LETTER.search(without_protected(source)) else 1.0
        ratio = out_len / src_len if src_len else (1.0 if not out_len else float(out_len))
        rep = max(0.0, repetition(output) - repetition(source))
    return {
        "script_share": share,
        "length_ratio": ratio,
        "repetition": rep,
        "identical": 1.0 if output.strip() == source.strip() else 0.0,
        "preserved": 0.0 if check_preserved(source, output) else 1.0,
        "empty": 1.0 if src_len and not out_len else 0.0,
    }


def flags(scores: dict[str, float], thresholds: FilterThresholds, verbatim: bool = False) -> list[str]:
    """The problems (:data:`FLAGS`, in that order) the scores show under ``thresholds``. An empty output gets only
    ``"empty"``; verbatim pieces are only checked for ``"empty"`` and ``"lost_protected"``. ``"untranslated"``:
    the output copies a source that has letters outside the target script (copied numbers, punctuation or text
    already in the target language are fine)."""
    if scores["empty"]:
        return ["empty"]
    out: list[str] = []
    if not verbatim:
        if scores["script_share"] < thresholds.min_script_share:
            out.append("wrong_script")
        if scores["length_ratio"] < thresholds.min_length_ratio:
            out.append("too_short")
        if scores["length_ratio"] > thresholds.max_length_ratio:
            out.append("too_long")
        if scores["repetition"] > thresholds.max_repetition:
            out.append("repetitive")
        if scores["identical"] and scores["script_share"] < 1.0:
            out.append("untranslated")
    if thresholds.check_preserved and not scores["preserved"]:
        out.append("lost_protected")
    return out


def summary(rows: list[dict[str, float]], flag_lists: list[list[str]]) -> dict:
    """Totals over many scored pieces: ``{"count", "passed", "pass_rate", "flags": {flag: count},
    "mean": {key: value}, "median": {key: value}}`` (means and medians are None without rows)."""
    if len(rows) != len(flag_lists):
        raise ValueError(f"summary needs one flag list per row ({len(rows)} rows, {len(flag_lists)} flag lists)")
    counts = Counter(f for fl in flag_lists for f in set(fl))
    passed = sum(1 for fl in flag_lists if not fl)
    mean: dict[str, float | None] = {}
    median: dict[str, float | None] = {}
    for key in SCORE_KEYS:
        values = [r[key] for r in rows if key in r]
        mean[key] = statistics.fmean(values) if values else None
        median[key] = statistics.median(values) if values else None
    return {
        "count": len(rows),
        "passed": passed,
        "pass_rate": passed / len(rows) if rows else None,
        "flags": {f: counts.get(f, 0) for f in FLAGS},
        "mean": mean,
        "median": median,
    }


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's κ of two annotators' labels on the same items; None with fewer than 2 items; 1.0 when both gave
    one and the same label throughout (chance agreement 1)."""
    if len(a) != len(b):
        raise ValueError(f"both annotators must label the same items ({len(a)} vs {len(b)} labels)")
    n = len(a)
    if n < 2:
        return None
    observed = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[label] * cb[label] for label in ca) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def pair_chrf(a: list[str], b: list[str]) -> float | None:
    """Corpus chrF++ (sacrebleu ``CHRF(word_order=2)``) of the texts ``b`` against the references ``a``;
    None when there are no texts."""
    if len(a) != len(b):
        raise ValueError(f"pair_chrf needs as many texts on both sides ({len(a)} vs {len(b)})")
    if not a:
        return None
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2).corpus_score(list(b), [list(a)]).score


# --------------------------------------------------------------------------- the summary chart

HISTOGRAMS = (("script_share", "script share (target script)"), ("length_ratio", "length ratio (output / source)"),
              ("repetition", "repetition"))


def summary_figure(rows: list[dict[str, float]], counts: dict[str, int], th: FilterThresholds) -> Any:
    """Histograms of the scores (thresholds dashed) and the flag counts, as one plotly figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t in HISTOGRAMS] + ["flags (whole translation)"])
    lines = {"script_share": [th.min_script_share], "length_ratio": [th.min_length_ratio, th.max_length_ratio],
             "repetition": [th.max_repetition]}
    for col, (key, title) in enumerate(HISTOGRAMS, start=1):
        values = [r[key] for r in rows if key in r]
        if key == "length_ratio":  # one runaway output would squash the rest
            values = [min(v, 2 * th.max_length_ratio) for v in values]
        fig.add_trace(go.Histogram(x=values, nbinsx=30, name=title, showlegend=False, marker_color="#0f766e"),
                      row=1, col=col)
        for x in lines[key]:
            fig.add_vline(x=x, line_dash="dash", line_color="#b91c1c", row=1, col=col)
    names = ["passed", *[f for f in FLAGS if counts.get(f)]]
    fig.add_trace(go.Bar(x=names, y=[counts.get(n, 0) for n in names], showlegend=False,
                         marker_color=["#0f766e" if n == "passed" else "#b45309" for n in names]), row=1, col=4)
    fig.update_layout(height=320, margin=dict(l=30, r=10, t=40, b=40), bargap=0.05)
    return fig

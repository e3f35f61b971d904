"""Translation prompts, parallel reference data and scoring (chrF++ / BLEU).

Two prompt families:

- ``"chat"``: a teacher-style instruction sent through the tokenizer's chat template (one user turn), as one
  prompts an instruction-tuned translator such as command-a-translate. A tokenizer without a chat template
  gets the same instruction as plain text.
- ``"hala-translator"``: one fixed plain-text template (:data:`HALA_TRANSLATOR_TEMPLATE`), the format our own
  translator is fine-tuned on; training builds its examples from the same constant.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

Direction = Literal["en-ar", "ar-en"]
Template = Literal["chat", "hala-translator"]

DIRECTIONS: tuple[str, ...] = ("en-ar", "ar-en")
TEMPLATES: tuple[str, ...] = ("chat", "hala-translator")
LANGUAGES = {"en": "English", "ar": "Arabic"}

# The teacher-style instruction (chat template): the text follows after a blank line.
CHAT_INSTRUCTION = "Translate the following {src_lang} text into {tgt_lang}. Reply with the translation only.\n\n{text}"
# What a tokenizer without a chat template gets: the same instruction, then a cue for the answer.
PLAIN_FALLBACK = CHAT_INSTRUCTION + "\n\n{tgt_lang}:\n"
# The one template the Hala translator is fine-tuned on (training reuses this constant; the target text follows
# the prompt directly). ``HALA_TRANSLATOR_STOP`` marks where a generated translation ends.
HALA_TRANSLATOR_TEMPLATE = "### Translate {src_lang} to {tgt_lang}\n{text}\n### {tgt_lang}\n"
HALA_TRANSLATOR_STOP = "\n###"

# NTREX-128 (newstest2019 sources, professionally translated): the default reference set.
NTREX_DIR = "ntrex128_en_ar"
NTREX_FILES = {"en": "newstest2019-src.eng.txt", "ar": "newstest2019-ref.arb.txt"}
NTREX_LICENCE = "CC-BY-SA-4.0"


def languages(direction: str) -> tuple[str, str]:
    """``"en-ar"`` → ``("English", "Arabic")``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid directions: {', '.join(DIRECTIONS)}")
    src, tgt = direction.split("-")
    return LANGUAGES[src], LANGUAGES[tgt]


def has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def build_prompt(text: str, direction: str, template: str, tokenizer: Any = None) -> str:
    """One prompt: ``text`` to translate in ``direction`` with the ``template`` family."""
    src_lang, tgt_lang = languages(direction)
    if template == "hala-translator":
        return HALA_TRANSLATOR_TEMPLATE.format(src_lang=src_lang, tgt_lang=tgt_lang, text=text)
    if template != "chat":
        raise ValueError(f"unknown template {template!r}; valid templates: {', '.join(TEMPLATES)}")
    if not has_chat_template(tokenizer):
        return PLAIN_FALLBACK.format(src_lang=src_lang, tgt_lang=tgt_lang, text=text)
    message = CHAT_INSTRUCTION.format(src_lang=src_lang, tgt_lang=tgt_lang, text=text)
    out = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                        add_generation_prompt=True)
    return out if isinstance(out, str) else str(out)


def build_prompts(texts: list[str], direction: str, template: str, tokenizer: Any = None) -> list[str]:
    """Prompts for translating ``texts``; ``tokenizer`` supplies the chat template for ``"chat"``."""
    return [build_prompt(t, direction, template, tokenizer) for t in texts]


def clean_output(text: str, template: str) -> str:
    """The translation inside a generated continuation (the hala template may run on into a new ``###`` block)."""
    if template == "hala-translator":
        text = text.split(HALA_TRANSLATOR_STOP, 1)[0]
        if text.startswith("###"):
            text = ""
    return text.strip()


# --------------------------------------------------------------------------- reference data

def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def ntrex_folder(path: Path) -> Path | None:
    for cand in (path, path / NTREX_DIR):
        if all((cand / f).is_file() for f in NTREX_FILES.values()):
            return cand
    return None


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    en: list[str] = []
    ar: list[str] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}: line {lineno} has {len(row)} column(s); a parallel TSV needs two "
                                 "(English <TAB> Arabic)")
            if lineno == 1 and row[0].strip().lower() in ("en", "english", "source", "src"):
                continue  # a header row
            en.append(row[0].strip())
            ar.append(row[1].strip())
    return en, ar


def load_parallel(data_dir_or_path: str | Path | None, n: int, direction: str = "en-ar"
                  ) -> tuple[list[str], list[str]]:
    """Up to ``n`` aligned (source, reference) pairs for ``direction``.

    ``data_dir_or_path``: the sample data folder (holding ``ntrex128_en_ar/``), the NTREX folder itself
    (``newstest2019-src.eng.txt`` + ``newstest2019-ref.arb.txt``, aligned line by line), or a TSV file with two
    columns (English, Arabic). ``None`` falls back to the small built-in corpus (``hala_core.demo_corpus``).
    Pairs with an empty side are skipped.
    """
    src_lang, _ = languages(direction)
    if n <= 0:
        return [], []
    if data_dir_or_path is None:
        from hala_core.demo_corpus import PAIRS

        en = [p[0] for p in PAIRS]
        ar = [p[1] for p in PAIRS]
    else:
        path = Path(data_dir_or_path).expanduser()
        if path.is_file():
            if path.suffix.lower() not in (".tsv", ".txt", ".tab"):
                raise ValueError(f"{path}: a parallel file must be a TSV (English <TAB> Arabic); got {path.suffix!r}")
            en, ar = _read_tsv(path)
        elif path.is_dir() and (folder := ntrex_folder(path)) is not None:
            en = _read_lines(folder / NTREX_FILES["en"])
            ar = _read_lines(folder / NTREX_FILES["ar"])
            if len(en) != len(ar):
                raise ValueError(f"{folder}: {NTREX_FILES['en']} has {len(en)} lines but {NTREX_FILES['ar']} has "
                                 f"{len(ar)}; the two files must be aligned line by line")
        else:
            raise ValueError(f"{path} is not a parallel set: give a folder with {NTREX_FILES['en']} and "
                             f"{NTREX_FILES['ar']} (NTREX-128), a folder holding {NTREX_DIR}/, or a two-column TSV")
    pairs = [(e.strip(), a.strip()) for e, a in zip(en, ar, strict=True) if e.strip() and a.strip()][:n]
    if src_lang == "English":
        return [e for e, _ in pairs], [a for _, a in pairs]
    return [a for _, a in pairs], [e for e, _ in pairs]


# --------------------------------------------------------------------------- scoring

def score(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus chrF++ (``CHRF(word_order=2)``) and BLEU (sacrebleu defaults, 13a tokenizer), both 0–100."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; they must pair up")
    if not hypotheses:
        raise ValueError("nothing to score: no hypotheses")
    refs = [list(references)]
    chrf = CHRF(word_order=2).corpus_score(list(hypotheses), refs).score
    bleu = BLEU().corpus_score(list(hypotheses), refs).score
    return {"chrf++": float(chrf), "bleu": float(bleu)}

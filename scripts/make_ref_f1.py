#!/usr/bin/env python3
"""Writes tests/ref/normalize_f1.json: DSPy's normalize_text, f1_score and answer_exact_match
on hand-picked and random texts, computed by CPython (3.11, Unicode 14.0.0).

Run: python3 scripts/make_ref_f1.py > tests/ref/normalize_f1.json   (standard library only)
tests/unit/test_metrics.c compares dspy_normalize_text byte for byte, dspy_f1_score exactly
(the same double operations in the same order) and the answer_exact_match metric.

The three functions below are DSPy 3.3.1's dspy/dsp/utils/metrics.py, restated line for line
(normalize_text, f1_score, em_score); DSPy is not needed to run this. print_message's
"rare edge case" note is left out (it only prints).
"""
import json
import random
import re
import string
import sys
import unicodedata
from collections import Counter


def normalize_text(s):
    s = unicodedata.normalize("NFD", s)

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def em_score(prediction, ground_truth):
    return normalize_text(prediction) == normalize_text(ground_truth)


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_text(prediction).split()
    ground_truth_tokens = normalize_text(ground_truth).split()

    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())

    if num_same == 0:
        return 0

    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)

    return f1


HAND = [
    "The Answer is: 42!",
    "a cat, an apple and the dog",
    "Theater and an_a and A-team",
    "  lots\tof\n\nwhite   space  ",
    "café CAFÉ Cafe\u0301",
    "\u1e0b\u0323 d\u0307\u0323 d\u0323\u0307",       # canonical ordering of combining marks
    "ΟΔΟΣ ΟΔΟΣ. ΣΑ Σ",                             # final sigma
    "İstanbul ISTANBUL ı",                           # U+0130 lowers to two code points
    "한국어 텍스트",                                   # Hangul decomposed by the algorithm
    "Straße STRASSE ǅ ǈ",                            # title-case digraphs
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ ﬁne",                      # compatibility forms stay (NFD only)
    "á à the\u0301 a\u0301",                         # an article followed by a combining mark
    "x\u00a0the\u2003y\u3000z\x1cw\x1fv\u0085u",      # Unicode whitespace
    "٣ arabic-indic ³ superscript ⅷ roman",          # numerics are word characters
    "emoji 😀 the 😀 a",
    "",
    "   ",
    "!!!",
    "the a an",
    "Paris",
    "paris.",
    "The capital of France is Paris",
]

PAIRS = [
    ("Paris", "paris."),
    ("The capital of France is Paris", "Paris"),
    ("the cat the cat sat", "cat cat cat"),
    ("", ""),
    ("a the", "an"),
    ("café", "Cafe\u0301"),
    ("ΟΔΟΣ", "οδος"),
    ("ΟΔΟΣ", "οδοσ"),
    ("New York City", "new york"),
    ("1 2 3 4 5", "5 4 3 2 1 0"),
    ("card_arrival", "card arrival"),
    ("card_arrival", "card_arrival"),
]

POOL = list("abcdeinostAEST ,.!-_'\"\t\n") + ["the", "an", "a", " the ", "Σ", "ς", "É", "e\u0301", "\u0323",
                                               "\u0307", "İ", "ß", "한", "\u00a0", "\u2003", "٣", "ǅ", "ﬁ", "😀",
                                               "\u0345", "\u00ad", "\u2019", "ᾼ", "Ω", "ﬀ", "\x1c"]


def main():
    rng = random.Random(12)
    texts = list(HAND)
    for _ in range(300):
        texts.append("".join(rng.choice(POOL) for _ in range(rng.randint(0, 14))))
    pairs = list(PAIRS)
    for _ in range(300):
        pairs.append((rng.choice(texts), rng.choice(texts)))
    out = {
        "python": sys.version.split()[0],
        "unicode": unicodedata.unidata_version,
        "normalize": [[t, normalize_text(t)] for t in texts],
        "f1": [[p, g, float(f1_score(p, g)), bool(em_score(p, g))] for p, g in pairs],
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

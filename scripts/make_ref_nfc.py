#!/usr/bin/env python3
"""make_ref_nfc.py — writes tests/ref/nfc_vectors.jsonl: strings and their NFC form from
CPython's unicodedata (Unicode 14.0 with Python 3.11), for tests/unit/test_tokenizer.c.

    python3 scripts/make_ref_nfc.py > tests/ref/nfc_vectors.jsonl

Cases: hand-picked (combining sequences to compose, marks to reorder, singletons, composition
exclusions, Hangul jamo and syllables, blocked compositions, text that is already NFC), every
primary composite in decomposed form, and seeded random mixes of bases and combining marks.
"""
import json
import random
import sys
import unicodedata


HAND = [
    "e\u0301", "cafe\u0301", "A\u030a", "\u212b", "\u2126", "\u0344", "\u0958", "\u2adc",
    "a\u0323\u0302", "a\u0302\u0323", "o\u031b\u0323\u0301", "q\u0307\u0323", "\u1e0b\u0323",
    "\u1100\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u1100\u1161\u1100", "\u1112\u1175\u11ab",
    "a\u0301\u0301", "\u0041\u0300\u0301", "e\u0300\u0316", "\u0b47\u0b3e", "\u0b47\u0300\u0b3e",
    "\u0301abc", "\u0301\u0301e", "x\u0308\u0301y", "\u00e9", "plain ascii", "\u4e2d\u6587", "\U0001f600\u0301",
    "\u0f73", "\u0f75\u0f71", "\u1e9b\u0323", "\u0390", "\u03b9\u0308\u0301", "\u1f00\u0345",
    "\u0069\u0307", "\u00c5\u0301", "\u212b\u0323", "\u1026", "\u1025\u102e", "\U000110ab", "\U00011099\U000110ba",
    "\u05d0\u05b8\u05b7", "\u05e9\u05c1\u05bc", "\ufb2c", "\u0626\u0654", "\u0627\u0653",
]


def main():
    rnd = random.Random(14)
    cases = list(HAND)
    for cp in range(0x110000):
        ch = chr(cp)
        d = unicodedata.normalize("NFD", ch)
        if d != ch and unicodedata.normalize("NFC", d) == ch and unicodedata.decomposition(ch) and cp % 3 == 0:
            cases.append(d)
    marks = [cp for cp in range(0x300, 0x370)] + [0x0323, 0x0345, 0x05B0, 0x0F71, 0x0F72, 0x0F74, 0x1DC0, 0x20D0, 0x302A, 0x3099]
    bases = [ord(c) for c in "aeiouAEIOUnNcCsSzZyYwW"] + [0x3B1, 0x3B9, 0x3C5, 0x3C9, 0x41E, 0x435, 0x304B, 0x30AB, 0x1100, 0xAC00]
    for _ in range(400):
        s = []
        for _ in range(rnd.randint(1, 6)):
            s.append(chr(rnd.choice(bases)))
            for _ in range(rnd.randint(0, 3)):
                s.append(chr(rnd.choice(marks)))
        cases.append("".join(s))
    sys.stdout.write(json.dumps({"unicode": unicodedata.unidata_version}) + "\n")
    for c in cases:
        sys.stdout.write(json.dumps({"text": c, "nfc": unicodedata.normalize("NFC", c)}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes tests/ref/random_vectors.txt: reference draws from CPython's random.Random.

Run with CPython 3.11 (stdlib only): python3 scripts/make_ref_random.py
tests/unit/test_random.c replays every line with dspy_pyrandom and compares exactly.

Format: one case per line, '#' starts a comment line.
    <op> <seed> <a> <b> : <v1> <v2> ...
Each case starts from a fresh random.Random(seed); seed is hex (0x...), of any size.
    uint32     seed count 0   : getrandbits(32) `count` times
    random     seed count 0   : random() `count` times, repr() (shortest round-trip form)
    getrandbits seed k count  : getrandbits(k) `count` times
    randbelow  seed n count   : _randbelow(n) `count` times
    shuffle    seed n 0       : x = list(range(n)); shuffle(x); x
    choice     seed n count   : choice(range(n)) `count` times
    sample     seed n k       : sample(range(n), k)
"""
import os
import random
import sys

SEEDS = [0, 1, 42, 2**40 + 3, 2**32, 2**64 - 1, 2**70 + 5, 12345678901234567890123456789]


def line(out, op, seed, a, b, values):
    out.append(f"{op} {hex(seed)} {a} {b} : " + " ".join(values))


def main():
    if sys.version_info[:2] != (3, 11):
        print(f"warning: made for CPython 3.11, running {sys.version.split()[0]}", file=sys.stderr)
    out = [f"# made by scripts/make_ref_random.py with CPython {sys.version.split()[0]}"]
    for seed in SEEDS:
        r = random.Random(seed)
        line(out, "uint32", seed, 700, 0, [str(r.getrandbits(32)) for _ in range(700)])
        r = random.Random(seed)
        line(out, "random", seed, 50, 0, [repr(r.random()) for _ in range(50)])
        for k in (0, 1, 7, 31, 32, 33, 48, 63, 64):
            r = random.Random(seed)
            line(out, "getrandbits", seed, k, 20, [str(r.getrandbits(k)) for _ in range(20)])
    for seed in (0, 1, 42, 2**40 + 3):
        for kb in (1, 2, 3, 7, 8, 31, 32, 33, 40, 63, 64):
            for n in (2**kb - 1, 2**kb, 2**kb + 1):
                if n < 1 or n >= 2**64:
                    continue
                r = random.Random(seed)
                line(out, "randbelow", seed, n, 20, [str(r._randbelow(n)) for _ in range(20)])
        for n in (0, 1, 2, 10, 1000):
            r = random.Random(seed)
            x = list(range(n))
            r.shuffle(x)
            line(out, "shuffle", seed, n, 0, [str(v) for v in x])
        for n in (1, 3, 77, 500):
            r = random.Random(seed)
            line(out, "choice", seed, n, 20, [str(r.choice(range(n))) for _ in range(20)])
        # Pool branch when n <= setsize: (10,5) (50,10) (1000,100) (30,30) (5,0) and the edges
        # (85,6) (277,30) (1045,100); set branch: the same edges plus one, (100,10) (10000,100)
        # (2**40,20). setsize is 21 + 4**ceil(log(3k, 4)): 85 for k=6, 277 for k=30, 1045 for
        # k=100.
        for n, k in ((10, 5), (50, 10), (1000, 100), (30, 30), (5, 0), (85, 6), (86, 6),
                     (277, 30), (278, 30), (1045, 100), (1046, 100),
                     (100, 10), (10000, 100), (2**40, 20)):
            r = random.Random(seed)
            line(out, "sample", seed, n, k, [str(v) for v in r.sample(range(n), k)])
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref",
                        "random_vectors.txt")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {os.path.normpath(path)} ({sum(len(s) + 1 for s in out)} bytes)")


if __name__ == "__main__":
    main()

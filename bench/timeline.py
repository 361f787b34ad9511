#!/usr/bin/env python3
"""timeline.py — what a decode step's time is made of, from bench_gpu --timeline's block records
(kern/cuda/timeline.h: every block of the stamped kernels with its start, dependency-wait return,
prologue end and end on the device's global timer, and its SM).

    python3 bench/timeline.py tl.jsonl            # the table
    python3 bench/timeline.py --selftest          # a made-up timeline whose answers are known

The records come in slot order, and a block takes its slot before its dependency wait, so every
block of one launch has a lower slot than every block of the next stamped launch (that one starts
only once each block of the one before has released it or ended). The blocks of one launch are
therefore a run of records of one kind, cut where the kind changes or the run holds the launch's
grid (consecutive stamped launches differ in kind: attn_in, attention, linear, mlp_in, linear,
..., logits). Each launch's role comes from its place in a layer (attn_in, attention, o_proj,
mlp_in, down; logits ends a step); launches after the last logits (a step cut short by dropped
records) are left out. For each launch B after A:
  dep       B's first wait return - A's last block end: how long the dependency takes to resolve
  span      B's last end - B's first wait return: the work after it, skew included
  cost      B's last end - A's last end = dep + span: what B adds to the step's critical path
  prologue  median over B's blocks of (prologue end - wait return): the normed rows (the
            attention: its keys attended, before the merge)
  work      median of (end - prologue end)
  parked    median of (wait return - start): how long blocks sat before the wait returned
  handoff   median over B's blocks of (its start - the last end of A's blocks on its SM): the
            SM's turnover (negative: B's block started beside A's)
and, over the whole steps, how much of the time the SMs held a stamped block, and how much of it
past the block's wait (the rest: turnovers between blocks, and unstamped kernels).
Only what is stamped is seen: the embedding (before a step's first attn_in), the sampler kernel
(after the logits, where the greedy form is not taken) and the attention of 1-2 sequences
(attention.cu) show as part of the next launch's dep.
"""
import gzip
import json
import statistics
import sys

LAYER = ["attn_in", "attention", "o_proj", "mlp_in", "down"]


def load(path):
    recs = []
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                recs.append(json.loads(line))
    return recs


def launches_of(recs):
    """Records (in slot order) grouped into launches (lists of records), in launch order."""
    out, cur = [], []
    for r in recs:
        if cur and (r["kind"] != cur[0]["kind"] or len(cur) >= cur[0]["grid"]):
            out.append(cur)
            cur = []
        cur.append(r)
    if cur:
        out.append(cur)
    return out


def roles(launches):
    """Each launch's role, from its kind and the role before it: a linear after attn_in or the
    attention is o_proj, after mlp_in down (the attention kernel of 1-2 sequences is not stamped)."""
    res, prev = [], None
    for L in launches:
        k = L[0]["kind"]
        if k in ("linear", "linear_pair"):
            role = "o_proj" if prev in ("attn_in", "attention") else "down" if prev == "mlp_in" else "?" + k
        else:
            role = k
        res.append(role)
        prev = role
    return res


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def analyse(recs):
    L = launches_of(recs)
    R = roles(L)
    last = max((i for i, role in enumerate(R) if role == "logits"), default=len(R) - 1)
    L, R = L[:last + 1], R[:last + 1]
    rows = {}
    per_launch = []
    step = 0  # logits launches so far
    for i, (B, role) in enumerate(zip(L, R)):
        t = [r["t"] for r in B]
        w0 = min(x[1] for x in t)
        e1 = max(x[3] for x in t)
        d = {"role": role, "blocks": len(B), "w0": w0, "e1": e1, "step": step,
             "prologue": med([x[2] - x[1] for x in t]), "work": med([x[3] - x[2] for x in t]),
             "parked": med([x[1] - x[0] for x in t])}
        if i > 0:
            A = L[i - 1]
            a_e1 = max(r["t"][3] for r in A)
            d["dep"] = w0 - a_e1
            d["span"] = e1 - w0
            d["cost"] = e1 - a_e1
            a_end = {}
            for r in A:
                a_end[r["sm"]] = max(a_end.get(r["sm"], 0), r["t"][3])
            h = [r["t"][0] - a_end[r["sm"]] for r in B if r["sm"] in a_end]
            d["handoff"] = med(h)
        per_launch.append(d)
        if step > 0:  # whole steps only: the first step's first launch has no predecessor
            rows.setdefault(role, []).append(d)
        step += role == "logits"
    # steps: from each logits launch's end to the next one's
    ends = [d["e1"] for d in per_launch if d["role"] == "logits"]
    steps = [b - a for a, b in zip(ends, ends[1:])]
    stamps = sorted({x for r in recs for x in r["t"]})
    diffs = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
    return per_launch, rows, steps, (min(diffs) if diffs else 0)


def union(iv):
    """Total length of the union of intervals [a, b)."""
    tot, end = 0, None
    for a, b in sorted(iv):
        if end is None or a > end:
            tot += b - a
            end = b
        elif b > end:
            tot += b - end
            end = b
    return tot


def occupancy(recs, lo, hi):
    """Per SM over [lo, hi): the fractions of the time some stamped block was on it (resident) and
    past its dependency wait (working), averaged over the SMs seen."""
    by_sm = {}
    for r in recs:
        t = r["t"]
        by_sm.setdefault(r["sm"], []).append(t)
    res = work = 0.0
    for ts in by_sm.values():
        clip = lambda a, b: (max(a, lo), min(b, hi))
        res += union([clip(t[0], t[3]) for t in ts if min(t[3], hi) > max(t[0], lo)])
        work += union([clip(t[1], t[3]) for t in ts if min(t[3], hi) > max(t[1], lo)])
    n = max(1, len(by_sm)) * (hi - lo)
    return res / n, work / n


def table(recs, out=sys.stdout):
    per_launch, rows, steps, res = analyse(recs)
    us = lambda ns: "%.2f" % (ns / 1e3)
    n_steps = max(1, sum(1 for d in per_launch if d["role"] == "logits" and d["step"] > 0))
    print("timer step %d ns; %d records, %d launches; %d whole steps after the first (the columns are theirs)" % (res, len(recs), len(per_launch), n_steps), file=out)
    bad = [d["role"] for d in per_launch if d["role"].startswith("?")]
    if bad:
        print("launches out of the expected order: %s" % ", ".join(sorted(set(bad))), file=out)
    print("| op | launches | blocks | cost us | cost a step us | dep | span | prologue | work | parked | handoff |",
          file=out)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", file=out)
    tot_cost = tot_dep = 0.0
    for role in LAYER + ["logits"] + sorted(r for r in rows if r not in LAYER + ["logits"]):
        ds = [d for d in rows.get(role, []) if "cost" in d]
        if not ds:
            continue
        c = med([d["cost"] for d in ds])
        per_step = sum(d["cost"] for d in ds) / n_steps
        dep_step = sum(d["dep"] for d in ds) / n_steps
        tot_cost += per_step
        tot_dep += dep_step
        print("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            role, len(ds), round(med([d["blocks"] for d in ds])), us(c), us(per_step),
            us(med([d["dep"] for d in ds])), us(med([d["span"] for d in ds])),
            us(med([d["prologue"] for d in ds])), us(med([d["work"] for d in ds])),
            us(med([d["parked"] for d in ds])), us(med([d["handoff"] for d in ds]))), file=out)
    print("a step: %s us by its costs, of which %s us waiting for dependencies to resolve" %
          (us(tot_cost), us(tot_dep)), file=out)
    if steps:
        print("steps (logits end to logits end): %s us" % " / ".join(us(s) for s in steps), file=out)
        ends = [d["e1"] for d in per_launch if d["role"] == "logits"]
        res, work = occupancy(recs, ends[0], ends[-1])
        print("SMs over those steps: a stamped block on them %.1f %% of the time, past its wait %.1f %%, "
              "none %.1f %% (turnovers, unstamped kernels)" % (100 * res, 100 * work, 100 * (1 - res)), file=out)


def made_up(kinds, sms=4):
    """Records of a made-up chain: per launch, blocks start when the previous launch's block on their
    SM ends + 1.0 us, the wait returns 1.5 us after the previous launch's last end, prologue 2.0 us,
    work 3.0 us (+0.1 us a block, so the last end is known)."""
    recs, prev_end, last = [], {s: 0 for s in range(sms)}, 0
    for k in kinds:
        w = last + 1500
        ends = {}
        for s in range(sms):
            t0 = prev_end[s] + 1000
            t1 = max(w, t0)
            t2 = t1 + 2000
            t3 = t2 + 3000 + 100 * s
            recs.append({"kind": k, "block": s, "grid": sms, "sm": s, "t": [t0, t1, t2, t3]})
            ends[s] = t3
        prev_end, last = ends, max(ends.values())
    return recs


def selftest():
    """made_up's chain read back: every column, and the roles with and without the attention."""
    kinds = (["attn_in", "attention", "linear_pair", "mlp_in", "linear_pair"] * 2 + ["logits"]) * 2
    recs = made_up(kinds)
    per_launch, rows, steps, res = analyse(recs)
    assert len(per_launch) == len(kinds), len(per_launch)
    assert [d["role"] for d in per_launch[:11]] == LAYER * 2 + ["logits"], [d["role"] for d in per_launch]
    for d in per_launch[1:]:
        assert d["dep"] == 1500, d
        assert d["span"] == 2000 + 3000 + 300, d
        assert d["cost"] == 1500 + 5300, d
        assert d["prologue"] == 2000 and d["work"] == 3150, d
        assert d["handoff"] == 1000, d
    assert steps == [11 * 6800], steps
    assert sum(len(v) for v in rows.values()) == 11 and all(len(rows[r]) == 2 for r in LAYER), rows.keys()
    assert res == 100, res
    ends = [d["e1"] for d in per_launch if d["role"] == "logits"]
    res_f, work_f = occupancy(recs, ends[0], ends[1])
    # each SM: blocks of 5,000 + 100 s ns after the wait, 1,000 ns turnovers; 11 launches a step
    assert 0 < work_f < res_f < 1, (res_f, work_f)
    assert abs(res_f - (1 - 11 * 1000 / (11 * 6800))) < 0.05, res_f
    assert union([(0, 10), (5, 20), (30, 40)]) == 30
    short = made_up((["attn_in", "linear", "mlp_in", "linear"] * 3 + ["logits"]) * 2)
    assert roles(launches_of(short))[:5] == ["attn_in", "o_proj", "mlp_in", "down", "attn_in"]
    # launches far apart in time stay whole, and a full grid ends a run of one kind
    far = made_up(["attn_in", "mlp_in"])
    for r in far[4:]:
        r["t"] = [t + 50000 for t in r["t"]]
    far[1]["t"][0] += 20000
    assert [len(x) for x in launches_of(far)] == [4, 4]
    assert [len(x) for x in launches_of(made_up(["logits", "logits"]))] == [4, 4]
    # two blocks of A on one SM: the handoff counts from the later end
    two = made_up(["attn_in", "attention", "linear"], sms=2)
    att = [r for r in two if r["kind"] == "attention"]
    extra = dict(att[0], block=2, t=[att[0]["t"][0], att[0]["t"][1], att[0]["t"][2], att[0]["t"][3] + 4000])
    two.insert(two.index(att[0]), extra)  # the earlier slot, the later end
    for r in two:
        if r["kind"] == "attention":
            r["grid"] = 3
    d = analyse(two)[0][2]
    assert d["role"] == "o_proj" and d["handoff"] == 1000 - 2000, d  # its SM-0 block starts before the late end
    # records dropped past the cap: the cut step's launches are left out
    cut = made_up(kinds)[:-4 * 3]
    per_cut, rows_cut, _, _ = analyse(cut)
    assert per_cut[-1]["role"] == "logits" and len(per_cut) == 11, [d["role"] for d in per_cut]
    print("selftest: ok")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--selftest":
        selftest()
    elif len(sys.argv) == 2:
        table(load(sys.argv[1]))
    else:
        sys.exit(__doc__)

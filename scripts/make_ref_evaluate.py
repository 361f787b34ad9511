#!/usr/bin/env python3
"""Writes tests/ref/evaluate_tables.json: what DSPy 3.3.1's Evaluate prints and saves for
a few result lists, made with pandas (Debian's python3-pandas 1.5.3) and the standard library.

Run: /usr/bin/python3 scripts/make_ref_evaluate.py   (needs pandas; no DSPy)
tests/unit/test_evaluate.c rebuilds every case with dspy_eval_result_append and compares the
table text, the CSV bytes and the JSON text exactly.

The functions below restate dspy/evaluate/evaluate.py (3.3.1) and dspy/utils/...:
merge_dicts, truncate_cell, stylize_metric_name (V33), _construct_result_table,
_prepare_results_output, and display_dataframe's console branch (print(df) under
max_rows=None, max_columns=None, as a script: display.width 80). Examples are plain dicts
here (DSPy's Example.items() gives the same pairs); a failed row has an empty prediction.

Two deliberate differences, which the C side implements too:
  - CSV: DSPy's csv.DictWriter takes the header from the first row and raises when a later
    row has other keys; we write the union of the keys in first-seen order (restval "").
  - the "... N more rows not displayed ..." note (an HTML object in DSPy) is not part of
    the table text stored here.

Case format: {"name", "metric", "head" (null: all rows), "rows": [[example, prediction or
null, score, kind]], "table", "csv", "json"} where kind is "bool", "int" or "float".
"""
import csv
import io
import json
import os
import sys

import pandas as pd


def merge_dicts(d1, d2):
    merged = {}
    for k, v in d1.items():
        merged[f"example_{k}" if k in d2 else k] = v
    for k, v in d2.items():
        merged[f"pred_{k}" if k in d1 else k] = v
    return merged


def truncate_cell(content):
    words = str(content).split()
    if len(words) > 25:
        return " ".join(words[:25]) + "..."
    return content


def stylize_metric_name(df, metric_name):
    def format_metric(x):
        if isinstance(x, float):
            return f"✔️ [{x:.3f}]"
        elif x is not None:
            return f"✔️ [{x}]"
        else:
            return ""

    df[metric_name] = df[metric_name].apply(format_metric)
    return df


def construct_result_table(results, metric_name):
    data = [merge_dicts(example, prediction) | {"correct": score} for example, prediction, score in results]
    result_df = pd.DataFrame(data)
    result_df = result_df.map(truncate_cell) if hasattr(result_df, "map") else result_df.applymap(truncate_cell)
    return result_df.rename(columns={"correct": metric_name})


def table_text(results, metric_name, head):
    df = construct_result_table(results, metric_name)
    df = df.copy() if head is None else df.head(head).copy()
    df = stylize_metric_name(df, metric_name)
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 80):
        return str(df) + "\n"


def rows_output(results, metric_name):
    return [merge_dicts(example, prediction) | {metric_name: score} for example, prediction, score in results]


def csv_text(rows):
    fieldnames = []
    for r in rows:
        for k in r:
            if k not in fieldnames:
                fieldnames.append(k)
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=fieldnames)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return f.getvalue()


def score_value(score, kind):
    return {"bool": bool, "int": int, "float": float}[kind](score)


LONG = ("The user is inquiring about the status of their card delivery, which suggests they are concerned "
        "about when they will receive their card. This aligns with the topic of card arrival and delivery "
        "estimates.")

CASES = [
    {
        "name": "cc27",
        "metric": "answer_exact_match",
        "head": None,
        "rows": [
            [{"question": "What is 1+1?", "answer": "2"}, {"answer": "2"}, 100.0, "float"],
            [{"question": "What is 2+2?", "answer": "4"}, {"answer": "4"}, 100.0, "float"],
            [{"question": "What is 3+3?", "answer": "-1"}, {"answer": "-1"}, 0.0, "float"],
        ],
    },
    {
        "name": "tutorial_lambda_failure",
        "metric": "<lambda>",
        "head": None,
        "rows": [
            [{"text": "why hasnt my card come in yet?", "label": "card_arrival"},
             {"reasoning": LONG, "label": "card_arrival"}, True, "bool"],
            [{"text": "What if there is an error on the exchange rate?", "label": "wrong_exchange_rate_for_cash_withdrawal"},
             {"reasoning": "Exchange\trates\nmay differ.", "label": "exchange_rate"}, False, "bool"],
            [{"text": "Which fiat currencies do you currently support? Will this change in this future?",
              "label": "fiat_currency_support"}, {}, 0.0, "float"],
        ],
    },
    {
        "name": "head_two_of_twelve",
        "metric": "exact_match",
        "head": 10,
        "rows": [[{"text": f"question number {i}", "label": "l%d" % (i % 3)}, {"label": "l%d" % (i % 2)},
                  (i % 3) == (i % 2), "bool"] for i in range(12)],
    },
    {
        "name": "int_metric_with_failure_unicode_list",
        "metric": "count",
        "head": None,
        "rows": [
            [{"q": "café, \"quoted\" and 日本語"}, {"answers": ["a", "b"], "n": 3}, 2, "int"],
            [{"q": "line one\nline two"}, {"answers": [], "n": 0}, 0, "int"],
            [{"q": "failed"}, {}, 0.0, "float"],
        ],
    },
    {
        "name": "single_column",
        "metric": "m",
        "head": None,
        "rows": [[{}, {}, True, "bool"], [{}, {}, False, "bool"]],
    },
]


def main():
    out = {"made_by": f"scripts/make_ref_evaluate.py with pandas {pd.__version__}, Python {sys.version.split()[0]}",
           "cases": []}
    for c in CASES:
        results = [(ex, pred, score_value(s, k)) for ex, pred, s, k in c["rows"]]
        rows = rows_output(results, c["metric"])
        case = dict(c)
        case["table"] = table_text(results, c["metric"], c["head"])
        case["csv"] = csv_text(rows)
        case["json"] = json.dumps(rows)
        out["cases"].append(case)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref", "evaluate_tables.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes tests/ref/cache_key_vectors.txt: DSPy 3.3.1 cache keys computed the way
dspy/clients/cache.py does, sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)), for
requests shaped like LM.forward's (model with provider prefix, messages, merged kwargs,
"_fn_identifier"), after dropping the ignored keys api_key/api_base/base_url.
test_cache.c recomputes each key with dspy_cache_key and compares.

Needs orjson (pip install orjson). Floats are limited to values whose orjson and Python repr
spellings agree (0.7, 1.0, 0.0, 2.5): orjson writes 1e-05 as 0.00001 and 1e+16 as 1e16, which
dspy.c's JSON writer (Python json.dumps spelling) does not reproduce.

Line format (tab-separated): <sha256 hex> <request as compact JSON, keys in original order>
"""
import hashlib, json, os, sys

import orjson

FN = "dspy.clients.lm.litellm_completion"
IGNORED = ("api_key", "api_base", "base_url")

def key(request):
    params = {k: v for k, v in request.items() if k not in IGNORED}
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()

def req(messages, model="openai/gpt-4o-mini", **kw):
    r = {"model": model, "messages": messages, "temperature": None, "max_tokens": None}
    r.update(kw)
    r["_fn_identifier"] = FN
    return r

hello = [{"role": "user", "content": "Hello"}]
sys_user = [{"role": "system", "content": "Your input fields are:\n1. `question` (str):"},
            {"role": "user", "content": "[[ ## question ## ]]\nWhat is the capital of France?"}]
requests = [
    req(hello),                                            # CC-22
    req(hello, api_key="sk-secret", api_base="http://x/v1", base_url="http://y"),  # same key
    req(hello, rollout_id=1),
    req(hello, temperature=0.7, n=3),
    {"model": "openai/gpt-4o-mini", "messages": hello, "temperature": 0.0, "max_tokens": 3000, "_fn_identifier": FN},
    req(sys_user, max_tokens=3000),
    req([{"role": "user", "content": "caf\u00e9 \u20ac \U0001F600 \u00a0nbsp \u2028sep"}]),
    req([{"role": "user", "content": "tab\tnl\nq\"b\\ slash/ ctl\u0001\u001f del\u007f"}]),
    req(hello, response_format={"type": "json_schema", "json_schema": {"name": "DSPyProgramOutputs",
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                   "additionalProperties": False}, "strict": True}}),
    req(hello, stop=["\n\n", "[[ ## completed ## ]]"], top_p=1.0, logprobs=True, seed=42),
    req(hello, model="openai/local:/abs/out_dir", max_tokens=2000),
    req(hello, **{"\u00e9t\u00e9": 1, "zeta": 2, "Alpha": 3, "_x": 4, "\U0001F600": 5}),
    req([{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://e/x.png"}}]}]),
    req(hello, temperature=2.5, max_tokens=-1, n=0, nested={"b": [{"z": None, "a": [1, 2, {"y": True, "x": False}]}]}),
]

here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "tests", "ref", "cache_key_vectors.txt")
with open(path, "w", encoding="utf-8") as f:
    for r in requests:
        f.write("%s\t%s\n" % (key(r), json.dumps(r, ensure_ascii=False, separators=(",", ":"))))
print("wrote", len(requests), "vectors to", os.path.normpath(path))

#!/usr/bin/env python3
"""torch_baseline.py — PyTorch/transformers baselines for bench/run_gpu.sh (same GPU, same run).

  --make-model DIR   writes a random Llama-3.2-1B-shaped checkpoint (bf16, HF layout) that both
                     engines then load: weights ~ normal(0, 0.02) (transformers' init)
  --b1               batch-1 greedy decode, 1,500-token prompt, 128 new tokens, with a static KV
                     cache and torch.compile (what a careful user runs), and eager for reference:
                     ms per decoded token = (time(128 new) - time(1 new)) / 127
  --prefill          100 x 1,500-token prompts in one batched forward (SDPA, bf16, logits for the
                     last position only), eager and compiled; seconds
  --b2               issue 10's B2 workload as one batch: the 100 prompts bench/bench_b2.c sends
                     (1,300 shared + 200 own token ids, the same splitmix64 rule), 80 new tokens
                     each, greedy, batched generate() with a static cache (compiled) and eager;
                     seconds for the whole batch
Prints one JSON object per measurement. Timing: CUDA synchronize around host clocks, warm-up
runs first, median of repeats.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def config_1b():
    return LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        torch_dtype="bfloat16")


def make_model(path):
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config_1b()).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    print(json.dumps({"bench": "make_model", "path": path, "params": sum(p.numel() for p in model.parameters())}))


def timed(fn, reps):
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def b1(path):
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(500, 120000, (1, 1500), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    res = {}
    for mode in ("eager", "compiled"):
        # compiled: a static KV cache, which makes generate() compile the forward itself
        # (transformers' CompileConfig: inductor, CUDA graphs), as its docs recommend
        kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
        if mode == "compiled":
            kw["cache_implementation"] = "static"

        def gen(n):
            with torch.no_grad():
                return model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        try:
            for _ in range(3 if mode == "compiled" else 1):  # compile and warm up
                gen(128)
                gen(1)
            t128 = timed(lambda: gen(128), 3)
            t1 = timed(lambda: gen(1), 3)
        except Exception as e:  # report and go on with the other measurements
            print(json.dumps({"bench": "B1_torch", "mode": mode, "error": str(e)[:300]}), flush=True)
            continue
        res[mode] = (t128 - t1) / 127 * 1e3
        print(json.dumps({"bench": "B1_torch", "mode": mode, "ms_per_token": round(res[mode], 4),
                          "prefill_1500_ms": round(t1 * 1e3, 2)}), flush=True)
    return res


def prefill(path, n=100, plen=1500):
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    ids = torch.randint(500, 120000, (n, plen), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    for mode in ("eager", "compiled"):
        fwd = model if mode == "eager" else torch.compile(model)

        def run():
            with torch.no_grad():
                return fwd(input_ids=ids, logits_to_keep=1, use_cache=False).logits
        try:
            run()
            run()
            t = timed(run, 3)
        except Exception as e:
            print(json.dumps({"bench": "prefill_torch", "mode": mode, "error": str(e)[:300]}), flush=True)
            continue
        print(json.dumps({"bench": "prefill_torch", "mode": mode, "prompts": n, "prompt_tokens": plen,
                          "seconds": round(t, 4), "tokens_per_s": round(n * plen / t)}), flush=True)


def splitmix64(z):
    m = (1 << 64) - 1
    z = (z + 0x9e3779b97f4a7c15) & m
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & m
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & m
    return z ^ (z >> 31)


def b2_prompts(n=100, prefix=1300, unique=200):
    shared = [1000 + splitmix64(7 + i) % 99000 for i in range(prefix)]
    return [shared + [1000 + splitmix64(1000003 * (q + 1) + j) % 99000 for j in range(unique)] for q in range(n)]


def b2(path, new_tokens=80):
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    ids = torch.tensor(b2_prompts(), device="cuda")
    for mode in ("eager", "compiled"):
        kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None, max_new_tokens=new_tokens,
                  min_new_tokens=new_tokens)
        if mode == "compiled":
            kw["cache_implementation"] = "static"

        def gen():
            with torch.no_grad():
                return model.generate(ids, **kw)
        try:
            for _ in range(2 if mode == "compiled" else 1):  # compile and warm up
                gen()
            t = timed(gen, 2)
        except Exception as e:
            print(json.dumps({"bench": "B2_torch", "mode": mode, "error": str(e)[:300]}), flush=True)
            continue
        print(json.dumps({"bench": "B2_torch", "mode": mode, "requests": len(ids), "new_tokens": new_tokens,
                          "seconds": round(t, 4)}), flush=True)


def attn(n=100, plen=1500, nh=32, nkv=8, hs=64):
    """SDPA alone (causal, GQA) on the prefill's attention shape: the kernel our prefill attention is
    measured against (TFLOP/s over the causal FLOPs, 4 * n * nh * hs * plen^2 / 2)."""
    g = torch.Generator("cuda").manual_seed(3)
    q = torch.randn(n, nh, plen, hs, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(n, nkv, plen, hs, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(n, nkv, plen, hs, device="cuda", dtype=torch.bfloat16, generator=g)
    flops = 4.0 * n * nh * hs * plen * plen / 2
    F = torch.nn.functional
    for name, kw in (("gqa", {"enable_gqa": True}),
                     ("expanded", None)):
        kk, vv = (k, v) if kw else (k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1))
        run = lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **(kw or {}))
        try:
            run()
            t = timed(run, 10)
        except Exception as e:
            print(json.dumps({"bench": "attn_torch", "mode": name, "error": str(e)[:300]}), flush=True)
            continue
        print(json.dumps({"bench": "attn_torch", "mode": name, "seqs": n, "len": plen, "ms": round(t * 1e3, 3),
                          "tflops": round(flops / t / 1e12, 1)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model")
    ap.add_argument("--model")
    ap.add_argument("--b1", action="store_true")
    ap.add_argument("--prefill", action="store_true")
    ap.add_argument("--b2", action="store_true")
    ap.add_argument("--attn", action="store_true")
    a = ap.parse_args()
    print(json.dumps({"bench": "torch_env", "torch": torch.__version__, "transformers": transformers.__version__,
                      "device": torch.cuda.get_device_name(0)}), flush=True)
    if a.make_model:
        make_model(a.make_model)
    if a.b1:
        b1(a.model)
    if a.prefill:
        prefill(a.model)
    if a.b2:
        b2(a.model)
    if a.attn:
        attn()


if __name__ == "__main__":
    sys.exit(main())

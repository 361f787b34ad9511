#!/usr/bin/env python3
"""make_ref_llama.py — HF transformers reference fixtures for the native Llama engine.

Builds tiny random Llama-family models in transformers, saves each with save_pretrained
(safetensors) under <out>/models/<name>/, and writes for fixed token sequences the full logits
(float32, little-endian, (n, V) row-major) and HF's greedy continuation of 16 tokens
(generate(do_sample=False)). tests/unit/test_llama_ref.c reads <out>/llama_ref.json and checks
the C engine against them (logits: max abs error / max abs logit <= 1e-4; greedy: exact).

Models (vocab 1000, hidden 64, 2 layers; every weight, norm and bias random so each one matters):
  llama_tied_gqa       tied embeddings, 4 heads / 2 kv heads, default RoPE (theta 10000),
                       config.json as this transformers version writes it
  llama_untied_llama3  untied lm_head, MQA (1 kv head), head_dim 32 != hidden/heads, llama3 RoPE
                       scaling (factor 8, low 1, high 4, original 32, theta 500000), eos list;
                       config.json rewritten to the transformers-4 layout (rope_theta + rope_scaling)
  qwen2_bias           qwen2 with q/k/v biases, tied, theta 1e6
  llama_bf16           saved in bfloat16; reference computed by HF in float32 from the bf16 file
  llama_bias_sharded   attention_bias=True (q/k/v/o biases), untied, saved in several shards
                       (model.safetensors.index.json)

Run on a machine with torch + transformers (no network needed), from the repository root:
    python3 scripts/make_ref_llama.py            # writes tests/ref/llama_ref.json, tests/ref/models/...
Deterministic: fixed seeds; re-running gives the same files (up to transformers' metadata).
"""
import argparse
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

V = 1000
N_NEW = 16


def make_config(kind, **kw):
    """Builds a config for transformers 4 (rope_theta/rope_scaling) or 5 (rope_parameters)."""
    rope = kw.pop("rope")
    cls = LlamaConfig if kind == "llama" else Qwen2Config
    base = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    base.update(kw)
    try:
        cfg = cls(rope_parameters=dict(rope), **base)
        ok = getattr(cfg, "rope_parameters", None)
        if not ok or ok.get("rope_theta") != rope["rope_theta"]:
            raise TypeError("rope_parameters not understood")
    except TypeError:
        legacy = dict(rope)
        theta = legacy.pop("rope_theta")
        scaling = legacy if legacy.get("rope_type", "default") != "default" else None
        cfg = cls(rope_theta=theta, rope_scaling=scaling, **base)
    return cfg


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def load(path, dtype):
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, attn_implementation="eager")


def to_legacy_rope_layout(cfg_path):
    """Rewrites config.json into the transformers-4 layout: rope_theta + rope_scaling, torch_dtype."""
    with open(cfg_path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        c["rope_theta"] = rp.pop("rope_theta", c.get("rope_theta", 10000.0))
        c["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    with open(cfg_path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


@torch.no_grad()
def reference(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    logits = model(input_ids=x).logits[0].float().contiguous()
    gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                         max_new_tokens=N_NEW, pad_token_id=0)
    return logits, gen[0, len(ids):].tolist()


def rope_refs():
    """HF's inv_freq (float32) for a few RoPE configs, Llama-3.2-1B's among them."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    refs = []
    for name, hs, rope, maxpos in [
        ("llama32_1b", 64, dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                                high_freq_factor=4.0, original_max_position_embeddings=8192), 131072),
        ("llama3_small", 32, dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=32), 256),
        ("default_10000", 16, dict(rope_type="default", rope_theta=10000.0), 256),
    ]:
        cfg = make_config("llama", hidden_size=hs * 4, num_attention_heads=4, num_key_value_heads=4,
                          max_position_embeddings=maxpos, rope=rope)
        inv = LlamaRotaryEmbedding(config=cfg).inv_freq.float()
        refs.append({"name": name, "head_dim": hs, "rope": rope, "inv_freq": [float(x) for x in inv.tolist()]})
    return refs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/ref", help="fixture root (default tests/ref)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    out = args.out
    models_dir = os.path.join(out, "models")
    logits_dir = os.path.join(out, "llama_logits")
    for d in (models_dir, logits_dir):
        os.makedirs(d, exist_ok=True)

    g = torch.Generator().manual_seed(1234)
    cases = [torch.randint(0, V, (9,), generator=g).tolist(), torch.randint(0, V, (13,), generator=g).tolist()]

    specs = [
        ("llama_tied_gqa", "llama", dict(tie_word_embeddings=True, rope=dict(rope_type="default", rope_theta=10000.0)),
         torch.float32, None),
        ("llama_untied_llama3", "llama",
         dict(tie_word_embeddings=False, num_key_value_heads=1, head_dim=32, eos_token_id=[998, 999],
              rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                        high_freq_factor=4.0, original_max_position_embeddings=32)),
         torch.float32, "legacy"),
        ("qwen2_bias", "qwen2", dict(tie_word_embeddings=True, rope=dict(rope_type="default", rope_theta=1000000.0)),
         torch.float32, None),
        ("llama_bf16", "llama", dict(tie_word_embeddings=True, rope=dict(rope_type="default", rope_theta=500000.0)),
         torch.bfloat16, None),
        ("llama_bias_sharded", "llama",
         dict(tie_word_embeddings=False, attention_bias=True, rope=dict(rope_type="default", rope_theta=10000.0)),
         torch.float32, "sharded"),
    ]
    manifest = {"generator": "scripts/make_ref_llama.py", "torch": torch.__version__,
                "transformers": transformers.__version__, "vocab_size": V, "models": []}
    for i, (name, kind, kw, dtype, extra) in enumerate(specs):
        cfg = make_config(kind, **kw)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        randomize(model, 100 + i)
        model.eval()
        path = os.path.join(models_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        save_kw = {"max_shard_size": "150KB"} if extra == "sharded" else {}
        model.to(dtype).save_pretrained(path, safe_serialization=True, **save_kw)
        ref_model = load(path, torch.float32).eval()  # exactly what is on disk, computed in fp32
        entry = {"name": name, "dir": "models/" + name, "cases": []}
        for k, ids in enumerate(cases):
            logits, greedy = reference(ref_model, ids)
            fname = "%s.%d.f32" % (name, k)
            logits.numpy().astype("<f4").tofile(os.path.join(logits_dir, fname))
            entry["cases"].append({"ids": ids, "logits": "llama_logits/" + fname,
                                   "shape": list(logits.shape), "greedy": greedy,
                                   "max_abs_logit": float(logits.abs().max())})
        if extra == "legacy":
            to_legacy_rope_layout(os.path.join(path, "config.json"))
            again = load(path, torch.float32).eval()
            with torch.no_grad():
                l2 = again(input_ids=torch.tensor([cases[0]])).logits[0]
            diff = float((l2 - reference(ref_model, cases[0])[0]).abs().max())
            print("  %s: legacy-layout config reloads with max |diff| %.3g" % (name, diff))
            if diff > 1e-5:
                sys.exit("legacy rope layout changed the logits of %s" % name)
        if extra == "sharded" and not os.path.exists(os.path.join(path, "model.safetensors.index.json")):
            sys.exit("%s: save_pretrained did not shard (max_shard_size ignored?)" % name)
        manifest["models"].append(entry)
        files = sorted(os.listdir(path))
        size = sum(os.path.getsize(os.path.join(path, f)) for f in files)
        print("wrote %s: %s (%d bytes), greedy %s" % (path, ", ".join(files), size, entry["cases"][0]["greedy"]))
    manifest["rope_inv_freq"] = rope_refs()
    with open(os.path.join(out, "llama_ref.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = 0
    for root, _, fs in os.walk(out):
        for f in fs:
            if root.startswith(models_dir) or root.startswith(logits_dir) or f == "llama_ref.json":
                total += os.path.getsize(os.path.join(root, f))
    print("wrote %s (%d models, %d cases each); fixtures total %.2f MB" %
          (os.path.join(out, "llama_ref.json"), len(specs), len(cases), total / 1e6))
    if total > 5e6:
        sys.exit("fixtures exceed 5 MB")


if __name__ == "__main__":
    main()

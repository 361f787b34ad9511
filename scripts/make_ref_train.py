#!/usr/bin/env python3
"""make_ref_train.py — PyTorch / transformers / peft references for the C trainer's gradients.

For tiny random models of tests/ref/models/ (made by make_ref_llama.py) and one fixed packed
sequence of three examples (positions restarting per example, a 4D block-diagonal causal mask,
labels on the completion part of each example only), computes in float32 on the CPU, with
transformers' eager attention:
  - the summed cross-entropy over the labelled positions (labels already shifted, as
    src/train/backward.h defines them: labels[t] is the target of the logits at t) and its count;
  - the gradient of that sum for every trainable tensor: full fine-tuning (all weights; tied
    embeddings get both contributions) and LoRA via peft (target_modules="all-linear", dropout 0,
    A and B set from fixed generators and written out so that the C side uses the same ones;
    B is non-zero so that A's gradient is not trivially zero).
Writes <out>/train_ref.json (the batch, and per case: model, mode, LoRA config, loss, label
count, gradient norm, file) and <out>/<case>.safetensors (float32 gradients under their HF /
peft names; LoRA cases also hold the initial A/B as "init.<name>"). A gradient whose rows are
mostly zero (the untied input embedding) is stored as its non-zero rows only; the manifest
lists them under "sparse_rows". tests/unit/test_train_ref.c checks the C trainer against these.

Run on a machine with torch + transformers + peft (no network), from the repository root or a
copy of it:
    python3 scripts/make_ref_train.py --models tests/ref/models --out tests/ref/train
The functions (load_model, packed_batch, block_causal_mask, packed_loss, attach_lora,
trainable_grads) are meant to be reused by other reference scripts (e.g. optimizer steps).
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

IGNORE = -100


def load_model(path):
    """A model directory in float32 with eager attention, in train mode (no dropout in these configs)."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    model.train()
    return model


def packed_batch(vocab, lengths, seed):
    """One packed sequence: ids, pos (restarting at 0), seg (example index), labels (shifted).

    Example i of length n gets a prompt of about 40% of its tokens; labels[t] = ids[t + 1] for
    t from the last prompt token to the second-to-last token, -100 elsewhere (also on the last
    token of every example, so nothing is predicted across an example boundary)."""
    g = torch.Generator().manual_seed(seed)
    ids, pos, seg, labels = [], [], [], []
    for e, n in enumerate(lengths):
        ex = torch.randint(3, vocab, (n,), generator=g).tolist()
        prompt = max(1, (2 * n) // 5)
        for t in range(n):
            ids.append(ex[t])
            pos.append(t)
            seg.append(e)
            labels.append(ex[t + 1] if prompt - 1 <= t < n - 1 else IGNORE)
    return {"ids": ids, "pos": pos, "seg": seg, "labels": labels}


def block_causal_mask(seg, dtype=torch.float32):
    """(1, 1, T, T) additive mask: 0 where key j is in query i's example and j <= i, else the
    dtype's minimum (what transformers' eager_mask builds and eager attention adds to scores)."""
    s = torch.tensor(seg)
    T = len(seg)
    allowed = (s[:, None] == s[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    mask = torch.zeros(T, T, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def packed_logits(model, batch):
    ids = torch.tensor([batch["ids"]])
    pos = torch.tensor([batch["pos"]])
    return model(input_ids=ids, position_ids=pos, attention_mask=block_causal_mask(batch["seg"])).logits[0]


def packed_loss(model, batch):
    """Summed cross-entropy over labelled positions (logits of row t against labels[t]) and the count."""
    logits = packed_logits(model, batch)
    labels = torch.tensor(batch["labels"])
    rows = labels != IGNORE
    loss = F.cross_entropy(logits[rows].float(), labels[rows], reduction="sum")
    return loss, int(rows.sum())


@torch.no_grad()
def check_packing(model, batch):
    """Max |logit difference| between the packed sequence and each example run alone."""
    packed = packed_logits(model, batch)
    worst = 0.0
    seg = batch["seg"]
    for e in sorted(set(seg)):
        idx = [i for i, s in enumerate(seg) if s == e]
        alone = model(input_ids=torch.tensor([[batch["ids"][i] for i in idx]])).logits[0]
        worst = max(worst, (alone - packed[idx]).abs().max().item())
    return worst


def peft_name(name):
    """peft's state-dict name (get_peft_model_state_dict drops the adapter name)."""
    return name.replace(".default.", ".")


def attach_lora(model, r, alpha, seed):
    """Wraps `model` with peft LoRA on all linear layers (dropout 0), A ~ U(-1/sqrt(in), 1/sqrt(in))
    and B ~ 0.2 N(0, 1) from a generator seeded with `seed`. Returns (peft model, {name: init})."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", bias="none")
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    init = {}
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_A" in name:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            elif "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                continue
            init[peft_name(name)] = p.detach().clone()
    return pm, init


def trainable_grads(model):
    """{name: grad} for every parameter that requires grad (HF names, peft names for adapters)."""
    return {peft_name(n): p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def sparsify(grads):
    """Stores gradients whose rows are mostly zero as their non-zero rows: ({name: tensor}, {name: rows})."""
    out, sparse = {}, {}
    for name, g in grads.items():
        if g.dim() == 2:
            nz = (g != 0).any(dim=1).nonzero().flatten()
            if len(nz) < g.shape[0] // 4:
                out[name] = g[nz].contiguous()
                sparse[name] = nz.tolist()
                continue
        out[name] = g.contiguous()
    return out, sparse


def run_case(models_dir, out_dir, case, batch):
    torch.manual_seed(0)
    model = load_model(os.path.join(models_dir, case["model"]))
    init = {}
    if case["mode"] == "lora":
        model, init = attach_lora(model, case["lora"]["r"], case["lora"]["alpha"], case["lora"]["seed"])
    packing_err = check_packing(model, batch)
    assert packing_err < 1e-4, f"{case['name']}: packed logits differ from separate runs by {packing_err}"
    model.zero_grad()
    loss, n = packed_loss(model, batch)
    loss.backward()
    grads = trainable_grads(model)
    stored, sparse = sparsify(grads)
    tensors = dict(stored)
    for k, v in init.items():
        tensors["init." + k] = v.contiguous()
    fname = case["name"] + ".safetensors"
    save_file(tensors, os.path.join(out_dir, fname))
    gnorm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
    rec = dict(case)
    rec.update(file=fname, loss_sum=loss.item(), n_labels=n, grad_norm=gnorm, n_tensors=len(grads),
               sparse_rows=sparse, packing_max_abs_err=packing_err)
    print(f"{case['name']}: loss {loss.item():.6f} over {n} labels, |grad| {gnorm:.6f}, "
          f"{len(grads)} tensors, packed-vs-separate {packing_err:.2e}")
    return rec


CASES = [
    {"name": "full_llama_tied_gqa", "model": "llama_tied_gqa", "mode": "full"},
    {"name": "full_llama_untied_llama3", "model": "llama_untied_llama3", "mode": "full"},
    {"name": "lora_llama_tied_gqa", "model": "llama_tied_gqa", "mode": "lora",
     "lora": {"r": 4, "alpha": 8.0, "seed": 11}},
    {"name": "lora_llama_untied_llama3", "model": "llama_untied_llama3", "mode": "lora",
     "lora": {"r": 8, "alpha": 16.0, "seed": 12}},
    {"name": "lora_qwen2_bias", "model": "qwen2_bias", "mode": "lora",
     "lora": {"r": 4, "alpha": 4.0, "seed": 13}},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tests/ref/models", help="model directories (default tests/ref/models)")
    ap.add_argument("--out", default="tests/ref/train", help="output directory (default tests/ref/train)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    batch = packed_batch(1000, [9, 14, 7], seed=2024)
    import peft
    import transformers
    manifest = {
        "generator": "scripts/make_ref_train.py",
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "batch": batch,
        "cases": [run_case(args.models, args.out, c, batch) for c in CASES],
    }
    with open(os.path.join(args.out, "train_ref.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""make_ref_train_steps.py — PyTorch references for the C trainer's loop: 10 AdamW steps, the
optimizer alone, clip_grad_norm_, the LR schedules, and (optionally) an output directory of
`dspy finetune` loaded in transformers.

Data (written into the fixture so both sides train on identical tensors):
  - a fixed chat dataset (CHATS below) as chat JSONL text, DSPy's format_finetune_data shape;
  - each conversation tokenized with transformers' apply_chat_template (the shared Llama 3
    tokenizer, the Llama 3.2 template, date_string "26 Jul 2024", add_generation_prompt False)
    and labelled as open-instruct's encode_sft_example does (what DSPy's train_sft_locally
    runs): -100 over every non-assistant message's token range [len(tokens(messages[:i])),
    len(tokens(messages[:i+1], add_generation_prompt = next is assistant))), labels = ids
    elsewhere: the assistant content and its <|eot_id|>;
  - per epoch e: the order random.Random(seed + e).shuffle(list(range(n))), next-fit packing of
    whole examples into sequences of at most MAX_LEN tokens, positions restarting per example,
    segment ids, labels shifted (targets[t] = labels[t+1] within an example, else -100; the
    first token of each example is never a target); the token ids are taken modulo the tiny
    model's vocabulary (1000) for training;
  - optimizer steps of B*G = 2 sequences, the last step of an epoch taking what is left.
Training (float32, CPU, transformers eager attention with a 4D block-diagonal causal mask, via
make_ref_train.py's helpers): per step, zero_grad; for each sequence, (summed token CE / N).backward()
with N the labelled tokens of the whole step; clip_grad_norm_(MAX_GRAD_NORM); torch.optim.AdamW
(foreach=False, the single-tensor path) with weight decay on the 2-D tensors only (HF Trainer's groups); LambdaLR from transformers'
get_cosine_schedule_with_warmup (no warmup). Recorded per step: loss (sum / N), the norm
clip_grad_norm_ returns, the lr used. Also the weights after the first step.
Cases: full fine-tuning of tests/ref/models/llama_tied_gqa; LoRA (peft, all-linear, r 4,
alpha 8, dropout 0; A from a fixed generator, B zeros, both written out).

Outputs in --out: steps_ref.json, steps_full_w1.safetensors (every weight after step 1),
steps_lora_init.safetensors and steps_lora_w1.safetensors (adapters), optim_ref.json.
With --check MANIFEST ({"checks": [{"dir", "ids", "logits", "what"}]}, paths relative to it):
loads each `dspy finetune` output or checkpoint directory in transformers (float32) and compares
its logits on `ids` with our engine's (a float32 (n, V) file); writes output_check.json.

Run on a machine with torch + transformers + peft (no network):
    python3 scripts/make_ref_train_steps.py --tokenizer DIR_WITH_tokenizer.json \
        --template chat_template_llama3_2.jinja --models tests/ref/models --out tests/ref/train
"""
import argparse
import json
import math
import os
import random
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ref_train import IGNORE, attach_lora, load_model, packed_loss, peft_name  # noqa: E402

DATE = "26 Jul 2024"
MAX_LEN = 160
SEED = 42
B, G = 1, 2
STEPS = 10
LR = 2e-3
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
BETAS = (0.9, 0.999)
EPS = 1e-8

SYSTEM = ("Your input fields are:\n1. `text` (str)\nYour output fields are:\n1. `label` (str)\n"
          "All interactions will be structured in the following way.")
CHATS = [
    [("system", SYSTEM), ("user", "[[ ## text ## ]]\nwhy hasnt my card come in yet?"),
     ("assistant", "[[ ## label ## ]]\ncard_arrival\n\n[[ ## completed ## ]]\n")],
    [("system", SYSTEM), ("user", "[[ ## text ## ]]\nHow do I link a new card?"),
     ("assistant", "[[ ## label ## ]]\ncard_linking\n\n[[ ## completed ## ]]\n")],
    [("user", "Hi there"), ("assistant", "Hello! How can I help?"), ("user", "What is 2+2?"), ("assistant", "4")],
    [("system", SYSTEM), ("user", "[[ ## text ## ]]\nWhat exchange rate do you use?"),
     ("assistant", "[[ ## label ## ]]\nexchange_rate\n\n[[ ## completed ## ]]\n")],
    [("user", "Say something short."), ("assistant", "  Short.  ")],
    [("system", SYSTEM), ("user", "[[ ## text ## ]]\nI lost my card, what now?"),
     ("assistant", "[[ ## label ## ]]\nlost_or_stolen_card\n\n[[ ## completed ## ]]\n")],
]


def msgs(chat):
    return [{"role": r, "content": c} for r, c in chat]


def tokens(tok, template, messages, gen):
    out = tok.apply_chat_template(messages, chat_template=template, tokenize=True, add_generation_prompt=gen,
                                  date_string=DATE)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    out = list(out)
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(x) for x in out]


def encode_sft_example(tok, template, messages):
    """open-instruct's encode_sft_example (no truncation): labels -100 over non-assistant messages."""
    ids = tokens(tok, template, messages, False)
    labels = list(ids)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            continue
        start = 0 if i == 0 else len(tokens(tok, template, messages[:i], False))
        nxt = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
        end = len(tokens(tok, template, messages[: i + 1], nxt))
        for t in range(start, min(end, len(labels))):
            labels[t] = IGNORE
    return ids, labels


def pack(examples, order, max_len):
    """Next-fit packing of whole examples; returns sequences {ids, pos, seg, targets}."""
    seqs, cur = [], None
    for k in order:
        ids, labels = examples[k]
        if cur is None or len(cur["ids"]) + len(ids) > max_len:
            cur = {"ids": [], "pos": [], "seg": [], "targets": [], "n": 0}
            seqs.append(cur)
        e = cur["n"]
        for t in range(len(ids)):
            cur["ids"].append(ids[t])
            cur["pos"].append(t)
            cur["seg"].append(e)
            cur["targets"].append(labels[t + 1] if t + 1 < len(ids) else IGNORE)
        cur["n"] += 1
    for s in seqs:
        del s["n"]
    return seqs


def plan(examples, vocab):
    """Per-epoch orders and packs, and the steps (lists of (epoch, seq)) for STEPS optimizer steps."""
    epochs, steps, e = [], [], 0
    while len(steps) < STEPS:
        order = list(range(len(examples)))
        random.Random(SEED + e).shuffle(order)
        seqs = pack(examples, order, MAX_LEN)
        epochs.append({"order": order, "seqs": seqs})
        for s0 in range(0, len(seqs), B * G):
            if len(steps) < STEPS:
                steps.append([[e, s] for s in range(s0, min(s0 + B * G, len(seqs)))])
        e += 1
    for ep in epochs:
        for s in ep["seqs"]:
            s["train_ids"] = [i % vocab for i in s["ids"]]
            s["train_targets"] = [t % vocab if t != IGNORE else IGNORE for t in s["targets"]]
    return epochs, steps


def seq_batch(s):
    return {"ids": s["train_ids"], "pos": s["pos"], "seg": s["seg"], "labels": s["train_targets"]}


def train(model, params, epochs, steps, on_step1):
    from transformers import get_cosine_schedule_with_warmup

    # HF Trainer's parameter groups: no weight decay for biases and norm weights (the 1-D tensors)
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=False)
    sched = get_cosine_schedule_with_warmup(opt, 0, STEPS)
    out = []
    for k, st in enumerate(steps):
        seqs = [epochs[e]["seqs"][s] for e, s in st]
        N = sum(sum(1 for t in s["train_targets"] if t != IGNORE) for s in seqs)
        opt.zero_grad()
        total = 0.0
        for s in seqs:
            loss, _ = packed_loss(model, seq_batch(s))
            (loss / N).backward()
            total += loss.item()
        gn = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        out.append({"loss": total / N, "grad_norm": float(gn), "lr": lr, "n_labels": N})
        print(f"  step {k + 1}: loss {total / N:.6f} grad_norm {float(gn):.6f} lr {lr:.6g} labels {N}")
        if k == 0:
            on_step1()
    return out


def optim_fixture():
    """torch.optim.AdamW alone, clip_grad_norm_ alone, transformers' schedules."""
    from transformers import get_scheduler

    g = torch.Generator().manual_seed(5)
    adamw = []
    for wd, b1, b2, eps, lrs in [(0.0, 0.9, 0.999, 1e-8, [1e-3, 1e-3, 5e-4, 1e-3, 2e-4]),
                                 (0.1, 0.8, 0.95, 1e-6, [5e-2, 1e-2, 1e-2, 3e-2, 1e-3])]:
        w = torch.nn.Parameter(torch.randn(37, generator=g))
        case = {"weight_decay": wd, "beta1": b1, "beta2": b2, "eps": eps, "w0": w.detach().tolist(),
                "grads": [], "lr": lrs, "w": []}
        opt = torch.optim.AdamW([w], lr=lrs[0], betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
        for t, lr in enumerate(lrs):
            opt.param_groups[0]["lr"] = lr
            gr = torch.randn(37, generator=g) * (0.01 if t % 2 else 1.0)
            w.grad = gr.clone()
            opt.step()
            case["grads"].append(gr.tolist())
            case["w"].append(w.detach().tolist())
        adamw.append(case)
    clip = []
    for scale, max_norm in [(1.0, 2.0), (0.1, 2.0), (3.0, 0.5)]:
        ps = [torch.nn.Parameter(torch.zeros(n)) for n in (13, 40, 7)]
        grads = [torch.randn(p.shape, generator=g) * scale for p in ps]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        clip.append({"max_norm": max_norm, "grads": [gr.tolist() for gr in grads], "norm": float(norm),
                     "clipped": [p.grad.tolist() for p in ps]})
    schedules = []
    for name in ["constant", "constant_with_warmup", "linear", "cosine"]:
        for total, ratio in [(10, 0.25), (37, 0.03)]:
            warm = math.ceil(total * ratio)
            p = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.AdamW([p], lr=3e-4)
            kw = {} if name == "constant" else {"num_warmup_steps": warm}
            if name in ("linear", "cosine"):
                kw["num_training_steps"] = total
            sch = get_scheduler(name, opt, **kw)
            lrs = []
            for _ in range(total + 1):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sch.step()
            schedules.append({"type": name, "total": total, "warmup_ratio": ratio, "warmup": warm, "base_lr": 3e-4,
                              "lr": lrs})
    return {"generator": "scripts/make_ref_train_steps.py", "adamw": adamw, "clip": clip, "schedules": schedules}


def check_outputs(manifest_path, dest):
    """Loads each listed directory in transformers (float32, eager) and compares its logits on the
    listed ids with our engine's (float32 little-endian (n, V) file next to the manifest)."""
    from transformers import AutoModelForCausalLM

    base = os.path.dirname(os.path.abspath(manifest_path))
    with open(manifest_path) as f:
        checks = json.load(f)["checks"]
    results = []
    for c in checks:
        d = os.path.join(base, c["dir"])
        try:
            m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        except TypeError:
            m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
        with torch.no_grad():
            logits = m(input_ids=torch.tensor([c["ids"]])).logits[0].float()
        with open(os.path.join(base, c["logits"]), "rb") as f:
            ref = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(logits.shape)
        diff = (logits - ref).abs().max().item()
        scale = ref.abs().max().item()
        r = {"dir": c["dir"], "what": c.get("what", ""), "n_ids": len(c["ids"]), "vocab": logits.shape[1],
             "max_abs_diff": diff, "max_abs_logit": scale, "rel": diff / scale if scale else diff,
             "argmax_equal": bool((logits.argmax(-1) == ref.argmax(-1)).all())}
        print("output check:", r)
        results.append(r)
    with open(dest, "w") as f:
        json.dump({"generator": "scripts/make_ref_train_steps.py", "checks": results}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--template", required=True, help="the Llama 3.2 chat template (.jinja)")
    ap.add_argument("--models", default="tests/ref/models")
    ap.add_argument("--out", default="tests/ref/train")
    ap.add_argument("--check", help="JSON {checks: [{dir, ids, logits, what}]}: dspy finetune outputs to load in "
                                    "transformers and our engine's logits on them")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    import peft
    import transformers
    from transformers import AutoTokenizer

    if args.check:
        check_outputs(args.check, os.path.join(args.out, "output_check.json"))

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    with open(args.template) as f:
        template = f.read()
    examples = [encode_sft_example(tok, template, msgs(c)) for c in CHATS]
    jsonl = "".join(json.dumps({"messages": msgs(c)}) + "\n" for c in CHATS)
    model_name = "llama_tied_gqa"
    vocab = 1000
    epochs, steps = plan(examples, vocab)
    manifest = {
        "generator": "scripts/make_ref_train_steps.py",
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "model": model_name, "vocab": vocab, "date_string": DATE, "max_len": MAX_LEN, "seed": SEED,
        "batch_size": B, "grad_accum": G, "steps": STEPS, "lr": LR, "weight_decay": WEIGHT_DECAY,
        "max_grad_norm": MAX_GRAD_NORM, "betas": list(BETAS), "eps": EPS, "schedule": "cosine", "warmup": 0,
        "jsonl": jsonl,
        "examples": [{"ids": ids, "labels": labels} for ids, labels in examples],
        "epochs": epochs, "plan": steps, "cases": [],
    }

    # full fine-tuning
    torch.manual_seed(0)
    model = load_model(os.path.join(args.models, model_name))
    params = [p for p in model.parameters() if p.requires_grad]
    print("full:")

    def save_full():
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(sd, os.path.join(args.out, "steps_full_w1.safetensors"))

    rec = train(model, params, epochs, steps, save_full)
    manifest["cases"].append({"name": "full", "mode": "full", "w1": "steps_full_w1.safetensors", "steps": rec})

    # LoRA: A from a generator, B zeros (peft's own init for B); dropout 0
    torch.manual_seed(0)
    base = load_model(os.path.join(args.models, model_name))
    pm, _ = attach_lora(base, 4, 8.0, 21)
    init = {}
    g = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_A" in name:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            elif "lora_B" in name:
                p.zero_()
            else:
                continue
            init[peft_name(name)] = p.detach().clone().contiguous()
    save_file(init, os.path.join(args.out, "steps_lora_init.safetensors"))
    lparams = [p for p in pm.parameters() if p.requires_grad]
    print("lora:")

    def save_lora():
        sd = {peft_name(n): p.detach().clone().contiguous() for n, p in pm.named_parameters() if p.requires_grad}
        save_file(sd, os.path.join(args.out, "steps_lora_w1.safetensors"))

    rec = train(pm, lparams, epochs, steps, save_lora)
    manifest["cases"].append({"name": "lora", "mode": "lora", "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0},
                              "init": "steps_lora_init.safetensors", "w1": "steps_lora_w1.safetensors",
                              "steps": rec})
    with open(os.path.join(args.out, "steps_ref.json"), "w") as f:
        json.dump(manifest, f)
        f.write("\n")
    with open(os.path.join(args.out, "optim_ref.json"), "w") as f:
        json.dump(optim_fixture(), f)
        f.write("\n")


if __name__ == "__main__":
    main()

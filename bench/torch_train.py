"""torch_train.py — PyTorch's side of issue 11's T1 benchmark, eager and torch.compile in one run.

Full fine-tuning of a model directory (bench/torch_baseline.py --make-model: the Llama-3.2-1B
shape) with fp32 master weights, bf16 autocast, fused AdamW (lr 1e-5, betas 0.9/0.999, eps 1e-8,
weight decay 0) and clip_grad_norm_(1.0): the recipe of transformers' Trainer with bf16=True.
One step = a batch of `seqs` x `T` tokens (one sequence per row, so no packing mask is needed),
labels -100 on the first T - T//5 positions (the loss on the last fifth; transformers' shift
makes that T//5 labelled positions per row). The token ids are bench_train.c's: splitmix64 from
seed 1, modulo the vocabulary, so both sides see the same data and their losses compare.

Measured per mode: `warmup` steps (compilation, autotuning), then `steps` timed steps between
cuda synchronisations: tokens/s, MFU (6 * params * tokens/s / peak), peak memory
(torch.cuda.max_memory_allocated and max_memory_reserved, after reset_peak_memory_stats with
the model and optimizer state already allocated, so both include them).

T2 (--t2): issue 11's tutorial workload as bench_train.c --t2 draws it (splitmix64 seed 2: a
1,300-token prompt shared by 500 examples, each with a 240..320-token continuation, labels on its
last 80 tokens), one example per micro-batch (batch 1, no padding), 8 micro-batches accumulated
per optimizer step (the step's loss the mean over its labelled tokens: each example's mean loss
weighted by its labelled tokens / the step's), clip_grad_norm_(1.0), AdamW lr 1e-5, bf16
autocast, in order. `warmup` steps on the first batch first (not timed; compilation), then
`epochs` epochs timed: the epoch's wall time and the 5-epoch estimate (5 x the measured epoch).
--t2-steps K times the first K steps of the epoch only and scales them to the epoch
(epoch_s = seconds x steps_per_epoch / K, said in the output: "extrapolated_from_steps").

Several GPUs (issue 17's baseline): started by torchrun (WORLD_SIZE > 1), T1 runs as PyTorch
DDP over NCCL, `seqs` x `T` tokens per GPU per step (rank r's rows are the stream's rows
r*seqs .. (r+1)*seqs - 1), the tokens/s of all ranks together printed by rank 0 with "world".
`torchrun --nproc-per-node 2 bench/torch_train.py --model DIR --modes compiled`; NVLink
multicast off (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1 in the environment).

T3 (--lora R): the T1 steps with peft LoRA (r R, alpha 2R, dropout 0.05, target_modules "all-linear")
over the frozen base loaded in bf16, the adapters in fp32, AdamW over the adapters only.

Parity at the 1B shape (issue 11, item 5): --curve-vs FILE runs the T1 steps eager with every
step's loss read back (warm-up steps included) and compares them step by step with the "losses"
of the T1 line in FILE (bench_train's output, same init, data and step count): the largest
relative difference, against 2 %. --check-export DIR loads the checkpoint bench_train --export
wrote (the trained weights) in transformers (F32 compute) and compares its logits of the tokens
in DIR/dspy_ids.txt with ours in DIR/dspy_logits.f32: max abs error / max abs logit against
5e-2 (BF16 weights and activations; test_cuda_model's bound) and the top-1 agreement.
Usage: python3 bench/torch_train.py --model DIR [--modes eager,compiled] [--seqs 4] [--T 2048]
                                    [--steps 10] [--warmup 2] [--peak-tflops 789] [--lora R]
                                    [--curve-vs OURS.jsonl]
       python3 bench/torch_train.py --model DIR --check-export EXPORTED_DIR
       python3 bench/torch_train.py --t2 --model DIR [--modes eager,compiled] [--epochs 1] [--warmup 1]
                                    [--examples 500]
Prints one JSON object per mode ({"bench": "T1_torch", "mode": ...} or {"bench": "T2_torch", ...}).
"""
import argparse
import gc
import json
import os
import time

import torch
from transformers import LlamaForCausalLM

MASK = (1 << 64) - 1


def splitmix64_stream(seed, n):
    x = seed
    out = []
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def batch(vocab, seqs, T, rank=0):
    rows = torch.tensor([v % vocab for v in splitmix64_stream(1, (rank + 1) * seqs * T)], dtype=torch.long)
    ids = rows[rank * seqs * T:].view(seqs, T)
    labels = ids.clone()
    labels[:, : T - T // 5] = -100
    return ids.cuda(), labels.cuda()


def dist_init():
    """(rank, world) from torchrun's variables; several ranks: NCCL, this rank's GPU."""
    import os
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl")
    return torch.distributed.get_rank(), world


def run(path, mode, seqs, T, steps, warmup, peak, lora_r=0, rank=0, world=1, curve=None):
    torch.manual_seed(0)
    # T3 (lora_r > 0): the frozen base in bf16 (as ours), peft's adapters in fp32 (its default
    # autocast_adapter_dtype), r / alpha 2r / dropout 0.05 on every linear layer but lm_head
    dtype = torch.bfloat16 if lora_r else torch.float32
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").cuda()
    model.config.use_cache = False
    if lora_r:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    ids, labels = batch(model.config.vocab_size, seqs, T, rank)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    fwd = torch.compile(model) if mode == "compiled" else model

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=labels).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss, norm

    t0 = time.perf_counter()
    first = None
    losses = []  # --curve-vs: every step's loss (a host read each step, so not timed then)
    for _ in range(warmup):
        loss, _ = step()
        if first is None:
            first = loss.item()
        if curve is not None:
            losses.append(loss.item())
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, norm = step()
        if curve is not None:
            losses.append(loss.item())
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    tps = world * steps * seqs * T / secs
    res = {"bench": "T3_torch" if lora_r else "T1_torch", "mode": mode, "world": world, "seqs": seqs, "T": T,
           "steps": steps, "seconds": round(secs, 4),
           "step_ms": round(1e3 * secs / steps, 2), "tokens_per_s": round(tps, 1),
           "mfu": None if lora_r else round(6 * params * tps / (world * peak * 1e12), 4), "params": params,
           "loss_first": first,
           "loss_last": loss.item(), "grad_norm_last": norm.item(),
           "mem_alloc_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
           "mem_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2), "warmup_s": round(warm_s, 1),
           "torch": torch.__version__}
    if lora_r:
        import peft
        res.update({"lora_r": lora_r, "trainable_params": sum(p.numel() for p in trainable), "peft": peft.__version__})
    if rank == 0:
        print(json.dumps(res), flush=True)
    if curve is not None:
        compare_curve(curve, losses, mode)
    del model, opt, fwd, trainable
    gc.collect()
    torch.cuda.empty_cache()


def t2_data(vocab, n):
    """bench_train.c's T2 examples: (ids, labels, labelled tokens) per example, labels unshifted (HF
    shifts); the counts are kept on the host so that a step never waits for the device."""
    x = 2

    def nxt():
        nonlocal x
        x = (x + 0x9E3779B97F4A7C15) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    prompt = [nxt() % vocab for _ in range(1300)]
    out = []
    for _ in range(n):
        c = 280 - 40 + nxt() % 81
        ids = prompt + [nxt() % vocab for _ in range(c)]
        L = len(ids)
        # ours labels row t (predicting ids[t + 1]) for t in [L - 81, L - 1): HF's labels[t + 1]
        labels = [-100] * (L - 80) + ids[L - 80:]
        out.append((torch.tensor([ids], dtype=torch.long).cuda(), torch.tensor([labels], dtype=torch.long).cuda(), 80))
    return out


def run_t2(path, mode, n, epochs, warmup, max_steps):
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").cuda()
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    data = t2_data(model.config.vocab_size, n)
    # every example has its own length: dynamic shapes from the start, not a recompile per length
    fwd = torch.compile(model, dynamic=True) if mode == "compiled" else model
    accum = 8

    def step(batch):
        N = sum(n_e for _, _, n_e in batch)
        total = 0.0
        for ids, lab, n_e in batch:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(input_ids=ids, labels=lab).loss * (n_e / N)
            loss.backward()
            total = total + loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total, norm

    t0 = time.perf_counter()
    for _ in range(warmup):
        step(data[:accum])
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    steps_per_epoch = (n + accum - 1) // accum
    losses = []
    limit = max_steps if max_steps > 0 else epochs * steps_per_epoch
    t0 = time.perf_counter()
    for _ in range(epochs):
        for k in range(steps_per_epoch):
            if len(losses) == limit:
                break
            loss, _ = step(data[k * accum:(k + 1) * accum])
            losses.append(loss)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    full = epochs * steps_per_epoch
    epoch_s = secs * full / len(losses) / epochs  # == secs / epochs when every step ran
    tokens = epochs * sum(ids.shape[1] for ids, _, _ in data)
    res = {"bench": "T2_torch", "mode": mode, "examples": n, "epochs_measured": epochs,
           "steps": len(losses), "extrapolated_from_steps": len(losses) if len(losses) < full else None,
           "seconds": round(secs, 3), "epoch_s": round(epoch_s, 3), "est_5_epochs_s": round(5 * epoch_s, 2),
           "tokens": tokens, "tokens_per_s": round(tokens / (epoch_s * epochs), 1), "loss_first": losses[0].item(),
           "loss_last": losses[-1].item(), "warmup_steps": warmup, "warmup_s": round(warm_s, 1),
           "mem_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2), "torch": torch.__version__}
    print(json.dumps(res), flush=True)
    del model, opt, fwd
    gc.collect()
    torch.cuda.empty_cache()


def compare_curve(path, theirs, mode):
    """Ours (the last T1/T3 line of bench_train's output in `path`) against `theirs`, step by step."""
    ours = None
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("bench") in ("T1", "T3") and "losses" in r:
                    ours = r["losses"]
    if ours is None or len(ours) != len(theirs):
        print(json.dumps({"bench": "T1_curve", "error": f"{path}: no T1 losses of {len(theirs)} steps"}), flush=True)
        return
    rel = [abs(a - b) / abs(b) for a, b in zip(ours, theirs)]
    print("| step | dspy.c loss | PyTorch %s loss | rel. diff |" % mode)
    print("| --- | --- | --- | --- |")
    for i, (a, b, d) in enumerate(zip(ours, theirs, rel)):
        print(f"| {i + 1} | {a:.5f} | {b:.5f} | {d:.2e} |")
    worst = max(rel)
    print(json.dumps({"bench": "T1_curve", "mode": mode, "steps": len(ours), "max_rel_diff": worst,
                      "at_step": rel.index(worst) + 1, "tolerance": 0.02, "pass": worst <= 0.02}), flush=True)


def check_export(d):
    """transformers' logits of bench_train --export's checkpoint against ours (see the header)."""
    import numpy as np
    ids = [int(x) for x in open(os.path.join(d, "dspy_ids.txt")).read().split()]
    model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids], device="cuda")).logits[0].float().cpu().numpy()
    ours = np.fromfile(os.path.join(d, "dspy_logits.f32"), dtype=np.float32).reshape(len(ids), -1)
    err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    top1 = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    print(json.dumps({"bench": "T1_export_check", "tokens": len(ids), "vocab": ours.shape[1], "max_abs_err_rel": err,
                      "tolerance": 5e-2, "top1_agreement": top1, "pass": err <= 5e-2,
                      "transformers": __import__("transformers").__version__}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=789.0)
    ap.add_argument("--t2", action="store_true")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--t2-steps", type=int, default=0)
    ap.add_argument("--lora", type=int, default=0, help="T3: LoRA rank (peft, all-linear); 0 = full fine-tuning (T1)")
    ap.add_argument("--curve-vs", default=None, help="bench_train output whose T1 losses to compare step by step")
    ap.add_argument("--check-export", default=None, help="bench_train --export's directory: logits vs transformers")
    a = ap.parse_args()
    if a.check_export:
        check_export(a.check_export)
        return
    rank, world = dist_init()
    if world > 1 and a.t2:
        ap.error("--t2 runs on one GPU")
    for mode in a.modes.split(","):
        if a.t2:
            run_t2(a.model, mode, a.examples, a.epochs, a.warmup, a.t2_steps)
        else:
            run(a.model, mode, a.seqs, a.T, a.steps, a.warmup, a.peak_tflops, a.lora, rank, world, a.curve_vs)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

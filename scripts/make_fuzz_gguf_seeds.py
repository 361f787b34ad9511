#!/usr/bin/env python3
"""make_fuzz_gguf_seeds.py — the seed corpus of tests/fuzz/fuzz_gguf.c: small GGUF v3 files written
by hand from the format's description (llama.cpp's docs/gguf.md), not by our writer, so that the
fuzzer starts from files our reader must take:
  tok.gguf     a byte-level BPE vocabulary (the 256 GPT-2 byte tokens, "ab", "abc", one control
               token), token types, merges, bos/eos, add_bos_token, a chat template, llama.* shape
               keys and one small F32 tensor;
  header.gguf  a header with no metadata and no tensors;
  types.gguf   one key of every metadata type, arrays of ints and of strings, two tensors (F16, BF16).
Run from the repository root: python3 scripts/make_fuzz_gguf_seeds.py (writes tests/fuzz/corpus/fuzz_gguf/).
"""
import os
import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
       I64: "<q", F64: "<d"}


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(val(et, i) for i in items)
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors=(), align=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + val(t, v)
    data, infos = b"", b""
    for name, ggml_type, ne, raw in tensors:
        data += b"\0" * (-len(data) % align)
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", ggml_type, len(data))
        data += raw
    out += infos
    out += b"\0" * (-len(out) % align)
    return out + data


def byte_level():
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes as themselves, the rest from U+0100."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cps, n = {}, 0
    for b in range(256):
        if b in keep:
            cps[b] = b
        else:
            cps[b] = 256 + n
            n += 1
    return [chr(cps[b]) for b in range(256)]


def main():
    d = "tests/fuzz/corpus/fuzz_gguf"
    os.makedirs(d, exist_ok=True)
    toks = byte_level() + ["ab", "abc", "<|eot|>"]
    types = [1] * 258 + [3]
    shape = [("llama.embedding_length", U32, 8), ("llama.feed_forward_length", U32, 16),
             ("llama.block_count", U32, 1), ("llama.attention.head_count", U32, 2),
             ("llama.attention.head_count_kv", U32, 1), ("llama.context_length", U32, 64),
             ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5), ("llama.rope.freq_base", F32, 500000.0)]
    kvs = [("general.architecture", STR, "llama"), ("general.alignment", U32, 32)] + shape + [
        ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "llama-bpe"),
        ("tokenizer.ggml.tokens", ARR, (STR, toks)), ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, ["a b", "ab c"])), ("tokenizer.ggml.bos_token_id", U32, 258),
        ("tokenizer.ggml.eos_token_id", U32, 258), ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m['content'] }}<|eot|>{% endfor %}")]
    emb = struct.pack("<%df" % (8 * 4), *[0.25 * i for i in range(32)])
    with open(os.path.join(d, "tok.gguf"), "wb") as f:
        f.write(gguf(kvs, [("token_embd.weight", 0, [8, 4], emb)]))
    with open(os.path.join(d, "header.gguf"), "wb") as f:
        f.write(gguf([]))
    every = [("k.u8", U8, 7), ("k.i8", I8, -7), ("k.u16", U16, 700), ("k.i16", I16, -700), ("k.u32", U32, 70000),
             ("k.i32", I32, -70000), ("k.f32", F32, 0.5), ("k.bool", BOOL, False), ("k.str", STR, "caf\u00e9"),
             ("k.u64", U64, 1 << 40), ("k.i64", I64, -(1 << 40)), ("k.f64", F64, 0.125),
             ("k.arr_i16", ARR, (I16, [1, -2, 3])), ("k.arr_str", ARR, (STR, ["x", "", "yz"]))]
    f16 = struct.pack("<4e", 1.0, -2.0, 0.5, 0.0)
    bf16 = struct.pack("<4H", 0x3F80, 0xC000, 0x3F00, 0)
    with open(os.path.join(d, "types.gguf"), "wb") as f:
        f.write(gguf([("general.architecture", STR, "llama")] + every,
                     [("a.weight", 1, [4], f16), ("b.weight", 30, [2, 2], bf16)]))


if __name__ == "__main__":
    main()

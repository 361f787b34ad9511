// cpu_bench_llama.mjs — llama.cpp's side of bench/cpu_bench.sh: the same GGUF file, the same
// threads, the same prompt length and decode count as bench_cpu's `model` mode, timed the same
// way (prefill = the prompt evaluated up to its first greedy token; decode = T more greedy
// tokens, one evaluation each). llama.cpp comes from node-llama-cpp's prebuilt CPU binaries
// (installed outside the tree by tests/e2e/test_gguf_llama_cpp.c or `npm i -E node-llama-cpp@3.21.1`).
//
// Usage: node cpu_bench_llama.mjs MODULE_DIR FILE.gguf THREADS PROMPT DECODE WARMUP REPS
// Prints one JSON line per timed repetition: tokens/s timed around the calls (what a user of the
// library sees, node's overhead included) and llama.cpp's own counters (internal_*: the time
// inside its decode calls only, llama_perf_context).
import path from "node:path";
import {pathToFileURL} from "node:url";

const [moduleDir, file, threadsS, promptS, decodeS, warmupS, repsS] = process.argv.slice(2);
const threads = Number(threadsS), P = Number(promptS), T = Number(decodeS);
const warmup = Number(warmupS), reps = Number(repsS);
const nlc = await import(pathToFileURL(path.join(moduleDir, "node-llama-cpp", "dist", "index.js")).href);
// llama.cpp's own counters (llama_perf_context_print, through printTimings) time its decode calls
// without node's share; each rep's numbers are the difference of two prints.
let perfLines = [];
const llama = await nlc.getLlama({gpu: false, build: "never", logLevel: "info", maxThreads: threads,
                                  logger: (level, message) => { if (message.includes("eval time")) perfLines.push(message); }});
const perf = async () => {
    perfLines = [];
    await ctx.printTimings();
    const get = (re) => { const l = perfLines.find((x) => re.test(x)); const m = l && l.match(/=\s*([\d.]+) ms \/\s*(\d+)/);
                          return m ? {ms: Number(m[1]), n: Number(m[2])} : {ms: NaN, n: NaN}; };
    return {prompt: get(/prompt eval time/), evals: get(/^(?!.*prompt).*eval time/)};
};
const model = await llama.loadModel({modelPath: file, gpuLayers: 0, useMmap: true});
const ctx = await model.createContext({contextSize: P + T + 16, batchSize: Math.max(P, 32), threads,
                                       flashAttention: false, performanceTracking: true});
const seq = ctx.getSequence();
const V = model.tokens.length ?? 1000;
// the prompt: the same fixed pseudo-random ids as bench_cpu (ids 1..1000)
const prompt = [];
for (let i = 0; i < P; i++) prompt.push(Number((BigInt(i) * 2654435761n) % 4294967296n % BigInt(Math.min(V, 1000))) + 1);
const next = (t) => [t, {generateNext: {token: true, options: {temperature: 0}}}];

for (let r = 0; r < warmup + reps; r++) {
    await seq.clearHistory();
    const p0 = await perf();
    const t0 = performance.now();
    let res = await seq.controlledEvaluate(prompt.map((t, i) => (i === P - 1 ? next(t) : t)));
    let tok = res[P - 1].next.token;
    const t1 = performance.now();
    for (let i = 0; i < T; i++) {
        res = await seq.controlledEvaluate([next(tok)]);
        tok = res[0].next.token;
    }
    const t2 = performance.now();
    const p1 = await perf();
    const pms = p1.prompt.ms - p0.prompt.ms, ems = p1.evals.ms - p0.evals.ms, en = p1.evals.n - p0.evals.n;
    if (r >= warmup)
        console.log(JSON.stringify({engine: "llama.cpp", release: llama.llamaCppRelease?.release ?? null, threads,
                                    prompt: P, decode: T, prefill_tok_s: P / ((t1 - t0) / 1000),
                                    decode_tok_s: T / ((t2 - t1) / 1000),
                                    internal_prefill_tok_s: P / (pms / 1000), internal_decode_tok_s: en / (ems / 1000),
                                    internal_decode_runs: en}));
}
await ctx.dispose();
await model.dispose();
await llama.dispose();

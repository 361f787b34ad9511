// llama_cpp_check.mjs — asks llama.cpp (the node-llama-cpp package, prebuilt CPU binaries) about
// GGUF files that `dspy export` wrote; run by tests/e2e/test_gguf_llama_cpp.c, which compares.
//
// Usage: node llama_cpp_check.mjs JOB.json OUT.json, where JOB is
//   {"module_dir": ".../node_modules", "threads": N,
//    "models": [{"path": "x.gguf", "kv_f32": true,
//                "greedy": [{"prompt": [ids], "n": 40}],   // llama.cpp's greedy continuation
//                "forced": [[ids]],                        // argmax after every prefix (teacher forcing)
//                "probs": [[ids]],                         // top-2 probabilities after the whole sequence
//                "tokenize": ["text"],                     // llama.cpp tokenization, no BOS, no special parsing
//                "chat": [{"messages": [...], "date_string": "...", "add_generation_prompt": true}]}]}
//                                                          // the file's template, rendered
// and OUT gets the answers in the same shape, plus each file's metadata as llama.cpp's GGUF reader
// (readGgufFileInfo) sees it. Any exception exits 1 with the message on stderr.
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const [jobPath, outPath] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobPath, "utf8"));
const nlc = await import(pathToFileURL(path.join(job.module_dir, "node-llama-cpp", "dist", "index.js")).href);
const jinja = await import(pathToFileURL(path.join(job.module_dir, "@huggingface", "jinja", "dist", "index.js")).href);

const llama = await nlc.getLlama({gpu: false, build: "never", logLevel: "error", maxThreads: job.threads || 2});
const next = (t) => [t, {generateNext: {token: true, options: {temperature: 0}}}];
const out = {llama_cpp: llama.llamaCppRelease?.release ?? null, models: []};
for (const m of job.models) {
    const info = await nlc.readGgufFileInfo(m.path);
    const md = info.metadata;
    const res = {
        path: m.path,
        architecture: md.general.architecture,
        tensor_count: info.tensorInfo.length,
        context_length: md[md.general.architecture].context_length,
        greedy: [], forced: [], probs: [], tokenize: [], chat: [],
    };
    const model = await llama.loadModel({modelPath: m.path, gpuLayers: 0});
    const kvType = m.kv_f32 ? "F32" : "F16";
    const ctx = await model.createContext({
        contextSize: 512, batchSize: 512, threads: job.threads || 2, flashAttention: false,
        experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType,
    });
    const seq = ctx.getSequence();
    for (const g of m.greedy || []) {
        // one token at a time through controlledEvaluate: llama.cpp's greedy sampler picks each next
        // token, which is fed back (evaluate()'s generator does the same, with far more overhead)
        await seq.clearHistory();
        const toks = [];
        let input = g.prompt.map((t, i) => (i === g.prompt.length - 1 ? next(t) : t));
        while (toks.length < g.n) {
            const r = await seq.controlledEvaluate(input);
            const t = r[input.length - 1].next.token;
            toks.push(t);
            input = [next(t)];
        }
        res.greedy.push(toks);
    }
    for (const ids of m.forced || []) {
        await seq.clearHistory();
        const items = ids.map(next);
        const r = await seq.controlledEvaluate(items);
        res.forced.push(ids.map((_, i) => r[i]?.next?.token ?? -1));
    }
    for (const ids of m.probs || []) {
        await seq.clearHistory();
        const items = ids.map((t, i) => (i === ids.length - 1
            ? [t, {generateNext: {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}}}]
            : t));
        const r = await seq.controlledEvaluate(items);
        const top = [...r[ids.length - 1].next.probabilities.entries()].slice(0, 2);
        res.probs.push(top);
    }
    for (const text of m.tokenize || []) res.tokenize.push(model.tokenize(text, false));
    for (const c of m.chat || []) {
        const tpl = new jinja.Template(md.tokenizer.chat_template);
        const bos = md.tokenizer.ggml.tokens[md.tokenizer.ggml.bos_token_id];
        res.chat.push(tpl.render({messages: c.messages, bos_token: bos, add_generation_prompt: c.add_generation_prompt,
                                  date_string: c.date_string}));
    }
    await ctx.dispose();
    await model.dispose();
    out.models.push(res);
}
fs.writeFileSync(outPath, JSON.stringify(out));
await llama.dispose();

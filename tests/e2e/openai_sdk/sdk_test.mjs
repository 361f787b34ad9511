// sdk_test.mjs — the official OpenAI Node.js SDK against `dspy serve`.
// Usage: node sdk_test.mjs <base_url> <served model id>
// Lists models, runs a chat completion, streams the same chat and a completion, and checks
// that API errors arrive as the SDK's typed errors. Prints "sdk_test: ok" on success; any
// failure prints "FAIL: ..." and exits 1.
import OpenAI from 'openai';

const [baseURL, model] = process.argv.slice(2);
if (!baseURL || !model) {
  console.error('usage: node sdk_test.mjs <base_url> <model>');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: 'local', maxRetries: 0, timeout: 60000 });

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
}

const ids = [];
for await (const m of client.models.list()) ids.push(m.id);
check(ids.length === 1 && ids[0] === model, `models.list() gave ${JSON.stringify(ids)}, want [${model}]`);
const one = await client.models.retrieve(`local:${model}`);
check(one.id === model && one.object === 'model' && one.owned_by === 'dspy.c', `models.retrieve: ${JSON.stringify(one)}`);

const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say something.' },
];
const chat = await client.chat.completions.create({
  model: `local:${model}`, messages, max_tokens: 8, temperature: 0,
});
check(chat.object === 'chat.completion', `chat.object = ${chat.object}`);
check(chat.model === model, `chat.model = ${chat.model}`);
check(chat.choices.length === 1, 'one choice');
const msg = chat.choices[0].message;
check(msg.role === 'assistant' && typeof msg.content === 'string', `message: ${JSON.stringify(msg)}`);
check(['stop', 'length'].includes(chat.choices[0].finish_reason), `finish_reason ${chat.choices[0].finish_reason}`);
const u = chat.usage;
check(u.prompt_tokens > 0 && u.completion_tokens >= 1 && u.completion_tokens <= 8 &&
      u.total_tokens === u.prompt_tokens + u.completion_tokens, `usage ${JSON.stringify(u)}`);

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let text = '';
let finish = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks++;
  check(chunk.object === 'chat.completion.chunk', `chunk.object = ${chunk.object}`);
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check(chunks >= 2, `only ${chunks} chunks`);
check(text === msg.content, `streamed ${JSON.stringify(text)} != whole ${JSON.stringify(msg.content)}`);
check(finish === chat.choices[0].finish_reason, `stream finish ${finish}`);
check(usage && usage.completion_tokens === u.completion_tokens && usage.prompt_tokens === u.prompt_tokens,
      `stream usage ${JSON.stringify(usage)}`);

const comp = await client.completions.create({ model, prompt: 'Hello', max_tokens: 5, temperature: 0, n: 2 });
check(comp.object === 'text_completion' && comp.choices.length === 2, `completion: ${JSON.stringify(comp)}`);
check(comp.choices[0].text === comp.choices[1].text, 'greedy choices differ');
let streamed = '';
for await (const chunk of await client.completions.create({ model, prompt: 'Hello', max_tokens: 5, temperature: 0, stream: true }))
  streamed += chunk.choices.map((c) => c.text).join('');
check(streamed === comp.choices[0].text, `completion stream ${JSON.stringify(streamed)} != ${JSON.stringify(comp.choices[0].text)}`);

try {
  await client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 2 });
  check(false, 'unknown model accepted');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found',
        `unknown model: ${e}`);
}
try {
  await client.chat.completions.create({ model, messages, temperature: 5 });
  check(false, 'temperature 5 accepted');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature', `bad temperature: ${e}`);
}
console.log(`sdk_test: ok (${JSON.stringify(msg.content)})`);

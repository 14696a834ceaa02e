// The official `openai` SDK against the real moongate binary: Chat Completions, whole and
// streamed (the raw iterator and the stricter chat.completions.stream() helper), with fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, provider } from './harness.mjs';

let down, up, gw, client;

before(async () => {
  down = await startMock({ name: 'D', behavior: { mode: 'fail', status: 503 } });
  up = await startMock({ name: 'U', behavior: { mode: 'answer', events: 20, pacing_ms: 2 } });
  gw = await startGateway({
    models: { mode: 'replace', providers: { down: provider(down, ['m1']), up: provider(up, ['m2']) } },
    agents: { defaults: { model: { primary: 'down/m1', fallbacks: ['up/m2'] }, models: { 'up/m2': { alias: 'Up' } } } },
  });
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'client-key', maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  down?.stop();
  up?.stop();
});

test('chat.completions.create falls back and reports the serving model', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'default', messages: [{ role: 'user', content: 'hello' }] })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'mock U saw model m2');
  assert.equal(response.headers.get('x-moongate-model'), 'up/m2');
  assert.match(response.headers.get('x-moongate-route'), /down\/m1=overloaded:503; up\/m2=ok:200/);
});

test('chat.completions.create({stream: true}) yields every delta, role first', async () => {
  const stream = await client.chat.completions.create({
    model: 'Up', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'hello' }],
  });
  let text = '';
  let first = null;
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    first ??= c.delta;
    text += c.delta.content ?? '';
    finish = c.finish_reason ?? finish;
  }
  assert.equal(first.role, 'assistant');
  // The mock sends 20 content deltas: its greeting, then " w1" … " w19".
  const want = 'mock U saw model m2' + Array.from({ length: 19 }, (_, i) => ` w${i + 1}`).join('');
  assert.equal(text, want);
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens > 0, 'usage chunk reaches a client that asked for it');
});

test('chat.completions.stream() helper accepts the stream and assembles the message', async () => {
  const runner = client.chat.completions.stream({
    model: 'default', messages: [{ role: 'user', content: 'hello' }],
  });
  const final = await runner.finalChatCompletion();
  assert.ok(final.choices[0].message.content.startsWith('mock U saw model m2'));
  assert.equal(final.choices[0].message.role, 'assistant');
});

test('chat.completions.stream() helper accepts a stream whose upstream never sent finish_reason', async () => {
  // Some servers end with [DONE] alone, or with finish_reason "": the helper throws "missing
  // finish_reason for choice 0" unless moongate adds it (tool_calls after a tool call).
  const chunk = (delta, fr = null) => `data: ${JSON.stringify({ id: 'chatcmpl-f', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta, finish_reason: fr }] })}\n\n`;
  const call = { tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'now', arguments: '{}' } }] };
  const text = chunk({ role: 'assistant', content: '' }) + chunk({ content: 'Hello' });
  const mock = await startMock({
    name: 'F', behavior: { mode: 'answer', raw_sse: text + 'data: [DONE]\n\n' },
    models: {
      empty: { mode: 'answer', raw_sse: text + chunk({}, '') + 'data: [DONE]\n\n' },
      call: { mode: 'answer', raw_sse: chunk({ role: 'assistant', content: null }) + chunk(call) + 'data: [DONE]\n\n' },
    },
  });
  const g = await startGateway({ models: { mode: 'replace', providers: { f: provider(mock, ['none', 'empty', 'call']) } } });
  try {
    const openai = new OpenAI({ baseURL: g.baseURL, apiKey: 'client-key', maxRetries: 0 });
    for (const [model, want] of [['f/none', 'stop'], ['f/empty', 'stop'], ['f/call', 'tool_calls']]) {
      const final = await openai.chat.completions
        .stream({ model, messages: [{ role: 'user', content: 'hello' }] })
        .finalChatCompletion();
      assert.equal(final.choices[0].finish_reason, want, model);
    }
  } finally {
    await g.stop();
    mock.stop();
  }
});

test('a stream without include_usage gets no usage chunk', async () => {
  const stream = await client.chat.completions.create({
    model: 'up/m2', stream: true, messages: [{ role: 'user', content: 'hello' }],
  });
  let sawUsage = false;
  for await (const chunk of stream) if (chunk.usage) sawUsage = true;
  assert.equal(sawUsage, false);
});

test('errors come back as SDK errors with the right class', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no/such', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
  );
});

test('a key over its budget fails at once, even with the SDKs retrying 429s', { timeout: 20000 }, async () => {
  // The budget's 429 says Retry-After: until the next UTC midnight. The SDKs retry 429s by default
  // and would sleep that long; moongate tells them not to (x-should-retry: false).
  const mock = await startMock({ name: 'B', behavior: { mode: 'answer' } });
  const p = provider(mock, ['m']);
  p.models[0].cost = { input: 1000000, output: 1000000 };
  process.env.MG_SDK_BUDGET_KEY = 'mgk-budget-1'; // key values come from the environment
  const g = await startGateway({
    models: { mode: 'replace', providers: { b: p } },
    agents: { defaults: { model: { primary: 'b/m' } } },
    gateway: { keys: [{ id: 'k', key: '${MG_SDK_BUDGET_KEY}', budget: { amount: 1, period: 'day' } }] },
  });
  try {
    const openai = new OpenAI({ baseURL: g.baseURL, apiKey: 'mgk-budget-1' }); // default retries
    await openai.chat.completions.create({ model: 'b/m', messages: [{ role: 'user', content: 'spend' }] });
    const t0 = Date.now();
    await assert.rejects(
      openai.chat.completions.create({ model: 'b/m', messages: [{ role: 'user', content: 'again' }] }),
      (e) => e instanceof OpenAI.RateLimitError && e.headers.get('x-should-retry') === 'false',
    );
    const anthropic = new Anthropic({ baseURL: g.baseURL.replace(/\/v1$/, ''), apiKey: 'mgk-budget-1' });
    await assert.rejects(
      anthropic.messages.create({ model: 'b/m', max_tokens: 8, messages: [{ role: 'user', content: 'again' }] }),
      (e) => e instanceof Anthropic.RateLimitError,
    );
    assert.ok(Date.now() - t0 < 5000, `the SDKs waited ${Date.now() - t0} ms`);
  } finally {
    await g.stop();
    mock.stop();
  }
});

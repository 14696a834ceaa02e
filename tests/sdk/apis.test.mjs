// The official SDKs on every client endpoint, against every upstream kind: openai's
// responses.create / responses.stream and @anthropic-ai/sdk's messages.create / messages.stream,
// through the real moongate binary to mock upstreams that speak Chat Completions, Responses or
// Anthropic Messages (translated when the APIs differ, passed through when they match).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, provider } from './harness.mjs';

let up, gw, openai, anthropic;
const kinds = { chat: 'openai-completions', resp: 'openai-responses', anth: 'anthropic-messages' };

// A Chat upstream's two tool calls, the first for a tool without parameters and without any
// argument bytes (as some servers send it), the second with its arguments in two fragments.
const chunk = (delta, fr = null) => `data: ${JSON.stringify({ id: 'chatcmpl-t1', object: 'chat.completion.chunk', created: 1, model: 'tools', choices: [{ index: 0, delta, finish_reason: fr }] })}\n\n`;
const toolsSse = chunk({ role: 'assistant', content: '' }) +
  chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'now' } }] }) +
  chunk({ tool_calls: [{ index: 1, id: 'call_b', type: 'function', function: { name: 'get_w', arguments: '' } }] }) +
  chunk({ tool_calls: [{ index: 1, function: { arguments: '{"city":' } }] }) +
  chunk({ tool_calls: [{ index: 1, function: { arguments: '"Paris"}' } }] }) +
  chunk({}, 'tool_calls') + 'data: [DONE]\n\n';

before(async () => {
  up = await startMock({
    name: 'U', behavior: { mode: 'answer', events: 6 },
    models: { tools: { mode: 'answer', raw_sse: toolsSse }, cut: { mode: 'answer', events: 20, close_after: 6 } },
  });
  const providers = {};
  for (const [id, api] of Object.entries(kinds)) {
    // Anthropic's base URL has no /v1 (moongate appends /v1/messages).
    const p = provider(up, api === 'openai-completions' ? ['m', 'tools', 'cut'] : ['m', 'cut'], api);
    if (api === 'anthropic-messages') p.baseUrl = up.url.replace(/\/v1$/, '');
    providers[id] = p;
  }
  gw = await startGateway({ models: { mode: 'replace', providers } });
  openai = new OpenAI({ baseURL: gw.baseURL, apiKey: 'client-key', maxRetries: 0 });
  anthropic = new Anthropic({ baseURL: gw.baseURL.replace(/\/v1$/, ''), apiKey: 'client-key', maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  up?.stop();
});

const want = (id) => 'mock U saw model m' + [1, 2, 3, 4, 5].map((i) => ` w${i}`).join('');

for (const id of Object.keys(kinds)) {
  test(`responses.create → ${kinds[id]} upstream`, async () => {
    const r = await openai.responses.create({ model: `${id}/m`, input: 'hello' });
    assert.equal(r.status, 'completed');
    assert.match(r.id, /^resp_[A-Za-z0-9_-]+$/);
    assert.equal(r.output_text, 'mock U saw model m');
    assert.ok(r.usage.output_tokens > 0);
  });

  test(`responses.stream → ${kinds[id]} upstream`, async () => {
    const stream = openai.responses.stream({ model: `${id}/m`, input: 'hello' });
    let deltas = '';
    stream.on('response.output_text.delta', (e) => { deltas += e.delta; });
    const final = await stream.finalResponse();
    assert.match(final.id, /^resp_[A-Za-z0-9_-]+$/);
    assert.equal(final.output_text, want(id));
    assert.equal(deltas, want(id));
  });

  test(`messages.create → ${kinds[id]} upstream`, async () => {
    const m = await anthropic.messages.create({ model: `${id}/m`, max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(m.type, 'message');
    assert.match(m.id, /^msg_[A-Za-z0-9_-]+$/);
    assert.equal(m.content[0].type, 'text');
    assert.equal(m.content[0].text, 'mock U saw model m');
    assert.equal(m.stop_reason, 'end_turn');
  });

  test(`messages.stream → ${kinds[id]} upstream`, async () => {
    const stream = anthropic.messages.stream({ model: `${id}/m`, max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] });
    let text = '';
    stream.on('text', (t) => { text += t; });
    const final = await stream.finalMessage();
    assert.match(final.id, /^msg_[A-Za-z0-9_-]+$/);
    assert.equal(text, want(id));
    assert.equal(final.content[0].text, want(id));
    assert.ok(final.usage.output_tokens > 0);
  });

  test(`chat.completions.stream() → ${kinds[id]} upstream`, async () => {
    const final = await openai.chat.completions.stream({ model: `${id}/m`, messages: [{ role: 'user', content: 'hello' }] }).finalChatCompletion();
    assert.match(final.id, /^chatcmpl-[A-Za-z0-9_-]+$/);
    assert.equal(final.choices[0].message.content, want(id));
  });

  test(`chat.completions.create → ${kinds[id]} upstream`, async () => {
    const c = await openai.chat.completions.create({ model: `${id}/m`, messages: [{ role: 'user', content: 'hello' }] });
    assert.match(c.id, /^chatcmpl-[A-Za-z0-9_-]+$/);
    assert.equal(c.choices[0].message.content, 'mock U saw model m');
  });
}

test("the Anthropic SDK reads the gateway's request id", async () => {
  const m = await anthropic.messages.create({ model: 'anth/m', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
  assert.match(m._request_id ?? '', /^req_/);
  const s = anthropic.messages.stream({ model: 'anth/m', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
  const { request_id } = await s.withResponse();
  assert.match(request_id ?? '', /^req_/);
  await s.finalMessage();
});

test('a tool call without argument bytes reaches each SDK with {}', async () => {
  const want = [['call_a', 'now', {}], ['call_b', 'get_w', { city: 'Paris' }]];
  const m = await anthropic.messages.stream({ model: 'chat/tools', max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] }).finalMessage();
  assert.equal(m.stop_reason, 'tool_use');
  assert.deepEqual(m.content.filter((b) => b.type === 'tool_use').map((b) => [b.id, b.name, b.input]), want);
  const r = await openai.responses.stream({ model: 'chat/tools', input: 'hello' }).finalResponse();
  assert.deepEqual(r.output.filter((o) => o.type === 'function_call').map((o) => [o.call_id, o.name, JSON.parse(o.arguments)]), want);
});

// A stream the upstream cuts after some text must make each SDK's stream reader throw, whether
// the events were passed through (same API) or translated: text collected so far is not the
// whole answer.
for (const id of Object.keys(kinds)) {
  test(`a stream cut midway throws in each SDK (${kinds[id]} upstream)`, async () => {
    const model = `${id}/cut`;
    await assert.rejects(async () => {
      const s = await openai.responses.create({ model, input: 'hello', stream: true });
      for await (const ev of s) void ev;
    }, (e) => e instanceof OpenAI.APIError && /stream_broken|ended early/.test(e.message), 'responses.create');
    await assert.rejects(openai.responses.stream({ model, input: 'hello' }).finalResponse(),
      (e) => e instanceof OpenAI.APIError, 'responses.stream');
    await assert.rejects(anthropic.messages.stream({ model, max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] }).finalMessage(),
      (e) => e instanceof Anthropic.APIError, 'messages.stream');
  });
}

test('errors reach each SDK in its own format', async () => {
  await assert.rejects(
    anthropic.messages.create({ model: 'nope/x', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof Anthropic.NotFoundError && e.error?.error?.type === 'not_found_error' && /^req_/.test(e.requestID),
  );
  await assert.rejects(openai.responses.create({ model: 'nope/x', input: 'x' }), (e) => e instanceof OpenAI.NotFoundError);
});

test('messages.countTokens and responses.inputTokens.count get the gateway estimate', async () => {
  const short = await anthropic.messages.countTokens({ model: 'anth/m', messages: [{ role: 'user', content: 'hi' }] });
  assert.ok(Number.isInteger(short.input_tokens) && short.input_tokens > 0, JSON.stringify(short));
  const long = await anthropic.messages.countTokens({
    model: 'chat/m', system: 'Answer in French. '.repeat(40), messages: [{ role: 'user', content: 'hi' }],
  });
  assert.ok(long.input_tokens > short.input_tokens + 100, JSON.stringify(long));
  await assert.rejects(
    anthropic.messages.countTokens({ model: 'nope/x', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof Anthropic.NotFoundError,
  );
  const r = await openai.responses.inputTokens.count({ model: 'anth/m', input: 'hi' });
  assert.equal(r.object, 'response.input_tokens');
  assert.equal(r.input_tokens, short.input_tokens, 'the same prompt, the same estimate');
});

test('models.list and models.retrieve in both shapes', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.ok(ids.includes('anth/m') && ids.includes('chat/m'), ids.join(','));
  const am = [];
  for await (const m of anthropic.models.list()) am.push(m.id);
  assert.ok(am.includes('resp/m'), am.join(','));
  // Pages of two, followed by the SDK's auto-pagination (after_id = last_id while has_more).
  const paged = [];
  for await (const m of anthropic.models.list({ limit: 2 })) paged.push(m.id);
  assert.deepEqual(paged, am);
  assert.ok(am.length > 2, am.join(','));
  const page = await anthropic.models.list({ limit: 2 });
  assert.equal(page.has_more, true);
  assert.deepEqual(page.data.map((m) => m.id), am.slice(0, 2));
  const one = await openai.models.retrieve('chat/m');
  assert.equal(one.id, 'chat/m');
  assert.equal(one.object, 'model');
  const info = await anthropic.models.retrieve('anth/m');
  assert.equal(info.id, 'anth/m');
  assert.equal(info.type, 'model');
  // the fields the SDK types as always present: the catalog's windows, the rest null
  assert.equal(info.max_input_tokens, 32768);
  assert.equal(info.max_tokens, 4096);
  assert.equal(info.lifecycle, 'active');
  assert.ok(info.capabilities === null && info.deprecated_at === null && info.retires_at === null);
  await assert.rejects(openai.models.retrieve('nope/x'), (e) => e instanceof OpenAI.NotFoundError);
});

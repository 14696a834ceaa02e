// A model's refusal (structured outputs: OpenAI answers a request it will not serve with a
// refusal instead of the JSON asked for) reaches each client API in that API's own form, whole and
// streamed, whichever API the upstream speaks: a Responses client gets a `refusal` content part
// (responses.parse() leaves output_parsed null instead of throwing on JSON.parse of the refusal),
// a Chat client gets message.refusal / delta.refusal with null content (chat parse() reads it), an
// Anthropic client gets the text (Messages has no refusal block).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startMock, startGateway, provider } from './harness.mjs';

const REFUSAL = "I'm sorry, I can't help with that.";
const PIECES = ["I'm sorry, ", "I can't help with that."];
const usage = { prompt_tokens: 5, completion_tokens: 9, total_tokens: 14 };

const chatWhole = {
  id: 'chatcmpl-r', object: 'chat.completion', created: 1, model: 'refusal-chat', usage,
  choices: [{ index: 0, message: { role: 'assistant', content: null, refusal: REFUSAL }, logprobs: null, finish_reason: 'stop' }],
};
const chunk = (delta, fr = null) => `data: ${JSON.stringify({ id: 'chatcmpl-r', object: 'chat.completion.chunk', created: 1, model: 'refusal-chat-s', choices: [{ index: 0, delta, finish_reason: fr }] })}\n\n`;
const chatSse = chunk({ role: 'assistant', content: null, refusal: '' }) + PIECES.map((p) => chunk({ refusal: p })).join('') +
  chunk({}, 'stop') + `data: ${JSON.stringify({ id: 'chatcmpl-r', object: 'chat.completion.chunk', created: 1, model: 'refusal-chat-s', choices: [], usage })}\n\n` +
  'data: [DONE]\n\n';

const respUsage = { input_tokens: 5, input_tokens_details: { cached_tokens: 0 }, output_tokens: 9, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 14 };
const refusalPart = { type: 'refusal', refusal: REFUSAL };
const respItem = { id: 'msg_r', type: 'message', status: 'completed', role: 'assistant', content: [refusalPart] };
const response = (status, output, u) => ({ id: 'resp_r', object: 'response', created_at: 1, status, model: 'refusal-resp', output, usage: u, error: null, incomplete_details: null });
const respWhole = response('completed', [respItem], respUsage);
let seq = 0;
const ev = (type, obj) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...obj })}\n\n`;
const at = { item_id: 'msg_r', output_index: 0, content_index: 0 };
const respSse = ev('response.created', { response: response('in_progress', [], null) }) +
  ev('response.output_item.added', { output_index: 0, item: { ...respItem, status: 'in_progress', content: [] } }) +
  ev('response.content_part.added', { ...at, part: { type: 'refusal', refusal: '' } }) +
  PIECES.map((p) => ev('response.refusal.delta', { ...at, delta: p })).join('') +
  ev('response.refusal.done', { ...at, refusal: REFUSAL }) +
  ev('response.content_part.done', { ...at, part: refusalPart }) +
  ev('response.output_item.done', { output_index: 0, item: respItem }) +
  ev('response.completed', { response: respWhole });

const schema = { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], additionalProperties: false };
const textFormat = { format: { type: 'json_schema', name: 'obj', strict: true, schema } };
const responseFormat = { type: 'json_schema', json_schema: { name: 'obj', strict: true, schema } };
const kinds = { chat: 'openai-completions', resp: 'openai-responses' };
let up, gw, openai, anthropic;

before(async () => {
  up = await startMock({
    name: 'R',
    models: {
      'refusal-chat': { mode: 'fail', status: 200, body: chatWhole },
      'refusal-chat-s': { mode: 'answer', raw_sse: chatSse },
      'refusal-resp': { mode: 'fail', status: 200, body: respWhole },
      'refusal-resp-s': { mode: 'answer', raw_sse: respSse },
    },
  });
  const providers = {};
  for (const [id, api] of Object.entries(kinds)) providers[id] = provider(up, [`refusal-${id}`, `refusal-${id}-s`], api);
  gw = await startGateway({ models: { mode: 'replace', providers } });
  openai = new OpenAI({ baseURL: gw.baseURL, apiKey: 'client-key', maxRetries: 0 });
  anthropic = new Anthropic({ baseURL: gw.baseURL.replace(/\/v1$/, ''), apiKey: 'client-key', maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  up?.stop();
});

// The message parts as type and refusal (the stream helper adds parsed: null to each).
const messageContent = (r) => r.output.filter((o) => o.type === 'message').flatMap((o) => o.content)
  .map(({ type, refusal }) => ({ type, refusal }));

for (const id of Object.keys(kinds)) {
  const whole = `${id}/refusal-${id}`, streamed = `${id}/refusal-${id}-s`;

  test(`a ${kinds[id]} refusal reaches responses.create / parse / stream as a refusal part`, async () => {
    const r = await openai.responses.create({ model: whole, input: 'hi', text: textFormat });
    assert.deepEqual(messageContent(r), [refusalPart]);
    assert.equal(r.output_text, '');
    const p = await openai.responses.parse({ model: whole, input: 'hi', text: textFormat });
    assert.equal(p.output_parsed, null);
    const s = openai.responses.stream({ model: streamed, input: 'hi', text: textFormat });
    let deltas = '';
    s.on('response.refusal.delta', (e) => { deltas += e.delta; });
    const f = await s.finalResponse();
    assert.equal(deltas, REFUSAL);
    assert.deepEqual(messageContent(f), [refusalPart]);
    assert.equal(f.output_parsed, null);
  });

  test(`a ${kinds[id]} refusal reaches chat.completions.create / parse / stream as message.refusal`, async () => {
    const c = await openai.chat.completions.create({ model: whole, messages: [{ role: 'user', content: 'hi' }], response_format: responseFormat });
    assert.equal(c.choices[0].message.refusal, REFUSAL);
    assert.equal(c.choices[0].message.content, null);
    const p = await openai.chat.completions.parse({ model: whole, messages: [{ role: 'user', content: 'hi' }], response_format: responseFormat });
    assert.equal(p.choices[0].message.parsed, null);
    assert.equal(p.choices[0].message.refusal, REFUSAL);
    const s = openai.chat.completions.stream({ model: streamed, messages: [{ role: 'user', content: 'hi' }], response_format: responseFormat });
    let done = null;
    s.on('refusal.done', (e) => { done = e.refusal; });
    const f = await s.finalChatCompletion();
    assert.equal(done, REFUSAL);
    assert.equal(f.choices[0].message.refusal, REFUSAL);
    assert.ok(!f.choices[0].message.content, JSON.stringify(f.choices[0].message));
    assert.equal(f.choices[0].message.parsed, null);
  });

  test(`a ${kinds[id]} refusal reaches messages.create / stream as text`, async () => {
    const m = await anthropic.messages.create({ model: whole, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] });
    assert.deepEqual(m.content.map((b) => [b.type, b.text]), [['text', REFUSAL]]);
    const f = await anthropic.messages.stream({ model: streamed, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    assert.deepEqual(f.content.map((b) => [b.type, b.text]), [['text', REFUSAL]]);
  });
}

#!/usr/bin/env python3
"""Bytes that are not UTF-8 in an upstream's answer or a client's request. JSON must be UTF-8, and
cJSON neither checks nor repairs it: a translated answer (whole or streamed) and a request
re-encoded for another API carry U+FFFD for each such byte, one per byte as the gateway's own
error and log writer has it. What passes through untouched (the same API) keeps the bytes as they
came: they are the upstream's (or the client's), forwarded as sent."""

import json
import unittest

from mglib import MGTestCase, StreamResult, config, provider

R = "\ufffd"
MSGS = [{"role": "user", "content": "hello"}]

# (bytes an upstream sends inside a JSON string, what a client must read there)
BAD = [(b"caf\xe2\x82", "caf" + R * 2),            # a character cut at the end
       (b"<\xc0\xaf>", "<" + R * 2 + ">"),          # overlong
       (b"<\xed\xa0\x80>", "<" + R * 3 + ">"),      # a surrogate
       (b"<\xf5\xff>", "<" + R * 2 + ">"),          # bytes past F4
       (b"a\x80b", "a" + R + "b")]                  # a lone continuation byte
TEXT_IN = b"|".join(b for b, _ in BAD)
TEXT_OUT = "|".join(s for _, s in BAD)


def chat_chunk(content, fr=None, model=b"m\xff"):
    """A Chat Completions stream event, as bytes; content is bytes put into the JSON as they are."""
    delta = b'{}' if content is None else b'{"content":"' + content + b'"}'
    return (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"' + model +
            b'","choices":[{"index":0,"delta":' + delta + b',"finish_reason":' +
            (b'"' + fr.encode() + b'"' if fr else b"null") + b'}]}\n\n')


# The text is sent in three deltas: TEXT_IN, then "é!" with its two bytes cut between two deltas.
CHAT_STREAM = (chat_chunk(b"") + chat_chunk(TEXT_IN) + chat_chunk(b" caf\xc3") + chat_chunk(b"\xa9!") +
               chat_chunk(None, "stop") + b"data: [DONE]\n\n")
STREAM_TEXT = TEXT_OUT + " caf" + R + R + "!"

CHAT_WHOLE = (b'{"id":"c2","object":"chat.completion","created":1,"model":"m\xff","choices":[{"index":0,'
              b'"message":{"role":"assistant","content":"' + TEXT_IN + b'","tool_calls":[{"id":"call_1",'
              b'"type":"function","function":{"name":"f","arguments":"{\\"q\\":\\"\xe2\x82\\"}"}}]},'
              b'"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}')

ANTHROPIC_WHOLE = (b'{"id":"msg_1","type":"message","role":"assistant","model":"m\xff","content":[{"type":"text",'
                   b'"text":"' + TEXT_IN + b'"}],"stop_reason":"end_turn","stop_sequence":null,'
                   b'"usage":{"input_tokens":3,"output_tokens":2}}')


def body(path, model, stream):
    if path == "/v1/responses":
        return {"model": model, "input": "hello", "stream": stream}
    if path == "/v1/messages":
        return {"model": model, "max_tokens": 64, "messages": MSGS, "stream": stream}
    return {"model": model, "messages": MSGS, "stream": stream}


class InvalidUtf8(MGTestCase):
    def setUp(self):
        self.a = self.mock("A")
        self.gw = self.gateway(config(providers={
            "oc": provider(self.a, ["m"], api="openai-completions"),
            "or": provider(self.a, ["m"], api="openai-responses"),
            "an": provider(self.a, ["m"], api="anthropic-messages")}, primary="oc/m"))

    def decode(self, raw, what):
        """raw as UTF-8 text; fails the test (naming the first bad byte) when it is not."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail("%s is not valid UTF-8 (%s): %r" % (what, e, raw[max(0, e.start - 40):e.end + 40]))

    def stream(self, path, obj):
        """The whole stream, checked to be UTF-8 before its events are parsed."""
        gen = self.gw.stream(path, obj)
        status, headers = next(gen)
        raw = b"".join(gen)
        self.decode(raw, "the %s stream" % path)
        return StreamResult(status, headers, raw, [])

    def test_translated_streams_carry_replacement_characters(self):
        # Cut into pieces of 1-3 bytes on the wire, so bad bytes also fall between two reads.
        for path in ("/v1/messages", "/v1/responses"):
            with self.subTest(path=path):
                self.a.push_behavior("answer", raw_sse=CHAT_STREAM, rechunk_seed=7, rechunk_max=3,
                                     rechunk_pause_ms=0)
                s = self.stream(path, body(path, "oc/m", True))
                self.assertEqual(s.status, 200, s)
                for e in s.events:  # each event's data is a JSON text of its own
                    json.loads(e["data"])
                if path == "/v1/messages":
                    text = "".join(p["delta"].get("text", "") for p in s.payloads
                                   if p["type"] == "content_block_delta")
                    self.assertEqual(s.payloads[0]["message"]["model"], "m" + R, s)
                    self.assertEqual(s.payloads[-1]["type"], "message_stop", s)
                else:
                    text = "".join(p["delta"] for p in s.payloads if p["type"] == "response.output_text.delta")
                    done = s.payloads[-1]
                    self.assertEqual(done["type"], "response.completed", s)
                    self.assertEqual(done["response"]["model"], "m" + R, s)
                    # the whole text at the end says what the deltas said
                    self.assertEqual(done["response"]["output"][0]["content"][0]["text"], STREAM_TEXT, s)
                self.assertEqual(text, STREAM_TEXT, s)

    def test_translated_whole_answers_carry_replacement_characters(self):
        for path, up, raw in (("/v1/messages", "oc", CHAT_WHOLE), ("/v1/responses", "oc", CHAT_WHOLE),
                              ("/v1/chat/completions", "an", ANTHROPIC_WHOLE)):
            for stream in (False, True):  # an upstream that answers a streaming request whole
                with self.subTest(path=path, upstream=up, stream=stream):
                    self.a.push_behavior("badjson", body=raw)  # a raw 200 body
                    if stream:
                        s = self.stream(path, body(path, up + "/m", True))
                        self.assertEqual(s.status, 200, s)
                        for e in s.events:
                            if e["data"] != "[DONE]":
                                json.loads(e["data"])
                        continue
                    r = self.gw.post_json(path, body(path, up + "/m", False))
                    self.assertEqual(r.status, 200, r)
                    j = json.loads(self.decode(r.body, "the %s answer" % path))
                    self.assertEqual(j["model"], "m" + R, r)
                    if path == "/v1/messages":
                        self.assertEqual(j["content"][0]["text"], TEXT_OUT, r)
                        self.assertEqual(j["content"][1]["input"], {"q": R * 2}, r)
                    elif path == "/v1/responses":
                        msg = [o for o in j["output"] if o["type"] == "message"][0]
                        call = [o for o in j["output"] if o["type"] == "function_call"][0]
                        self.assertEqual(msg["content"][0]["text"], TEXT_OUT, r)
                        self.assertEqual(json.loads(call["arguments"]), {"q": R * 2}, r)
                    else:
                        self.assertEqual(j["choices"][0]["message"]["content"], TEXT_OUT, r)

    def test_translated_requests_carry_replacement_characters(self):
        raw = b'{"model":"an/m","max_tokens":16,"messages":[{"role":"user","content":"' + TEXT_IN + b'"}]}'
        r = self.gw.request("POST", "/v1/chat/completions", raw, {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        sent = self.a.requests[-1]
        self.assertTrue(sent.path.endswith("/messages"), sent)
        j = json.loads(self.decode(sent.body, "the request sent to the Anthropic upstream"))
        self.assertEqual(j["messages"][0]["content"][0]["text"], TEXT_OUT, sent.body)

    def test_the_same_api_passes_bytes_through_as_they_came(self):
        # A Chat client of a Chat upstream: request, whole answer and stream go byte for byte.
        raw = b'{"model":"oc/m","messages":[{"role":"user","content":"' + TEXT_IN + b'"}]}'
        self.a.push_behavior("badjson", body=CHAT_WHOLE)
        r = self.gw.request("POST", "/v1/chat/completions", raw, {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertIn(TEXT_IN, self.a.requests[-1].body)
        self.assertEqual(r.body, CHAT_WHOLE)
        self.a.push_behavior("answer", raw_sse=CHAT_STREAM)
        gen = self.gw.stream("/v1/chat/completions", body("/v1/chat/completions", "oc/m", True))
        status, _ = next(gen)
        self.assertEqual(status, 200)
        self.assertIn(TEXT_IN, b"".join(gen))

    # The same mistakes written as escapes: cJSON keeps strings as C strings, so "\u0000" would
    # end one there (the rest lost in whatever moongate prints from it), and it refuses a lone
    # surrogate (JSON.stringify of a string cut inside an emoji), failing the whole text. Both are
    # read as U+FFFD; what passes through with the same API keeps them as they came.
    ESCAPED = "HEADER\x00TAIL ok \ud83d end \udc00!"  # json.dumps writes \u0000, \ud83d, \udc00
    ESCAPED_OUT = "HEADER" + R + "TAIL ok " + R + " end " + R + "!"

    def test_escaped_nul_and_lone_surrogates_in_a_translated_request(self):
        raw = json.dumps({"model": "an/m", "max_tokens": 16,
                          "messages": [{"role": "user", "content": self.ESCAPED}]}).encode()
        self.assertIn(b"\\u0000", raw)
        r = self.gw.request("POST", "/v1/chat/completions", raw, {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        sent = self.a.requests[-1]
        self.assertTrue(sent.path.endswith("/messages"), sent)
        j = json.loads(self.decode(sent.body, "the request sent to the Anthropic upstream"))
        self.assertEqual(j["messages"][0]["content"][0]["text"], self.ESCAPED_OUT, sent.body)

    def test_escaped_nul_and_lone_surrogates_in_translated_answers(self):
        whole = json.dumps({"id": "msg_2", "type": "message", "role": "assistant", "model": "m",
                            "content": [{"type": "text", "text": self.ESCAPED}], "stop_reason": "end_turn",
                            "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}}).encode()
        self.a.push_behavior("badjson", body=whole)
        r = self.gw.post_json("/v1/chat/completions", body("/v1/chat/completions", "an/m", False))
        self.assertEqual(r.status, 200, r)
        j = json.loads(self.decode(r.body, "the translated answer"))
        self.assertEqual(j["choices"][0]["message"]["content"], self.ESCAPED_OUT, r)

        # a tool call's arguments (JSON in a string) that an Anthropic client gets as an object
        call = {"id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": json.dumps({"q": self.ESCAPED})}}
        self.a.push_behavior("badjson", body=json.dumps({
            "id": "c6", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                         "finish_reason": "tool_calls"}]}).encode())
        r = self.gw.post_json("/v1/messages", body("/v1/messages", "oc/m", False))
        self.assertEqual(r.status, 200, r)
        j = json.loads(self.decode(r.body, "the translated answer"))
        self.assertEqual(j["content"][-1]["input"], {"q": self.ESCAPED_OUT}, r)

        def ev(name, obj):
            return "event: %s\ndata: %s\n\n" % (name, json.dumps(dict({"type": name}, **obj)))
        sse = ev("message_start", {"message": {"id": "msg_3", "type": "message", "role": "assistant",
                                               "model": "m", "content": [], "stop_reason": None,
                                               "stop_sequence": None,
                                               "usage": {"input_tokens": 1, "output_tokens": 1}}})
        sse += ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for t in ("HEADER\x00TAIL", " ok \ud83d", " end \udc00!"):
            sse += ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": t}})
        sse += ev("content_block_stop", {"index": 0})
        sse += ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": 2}})
        sse += ev("message_stop", {})
        self.a.push_behavior("answer", raw_sse=sse.encode())
        s = self.stream("/v1/chat/completions", body("/v1/chat/completions", "an/m", True))
        self.assertEqual(s.status, 200, s)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in s.chunks if c["choices"])
        self.assertEqual(text, self.ESCAPED_OUT, s)

    def test_escapes_pass_through_the_same_api_as_they_came(self):
        for path, model in (("/v1/chat/completions", "oc/m"), ("/v1/messages", "an/m")):
            with self.subTest(path=path):
                raw = json.dumps(body(path, model, False)).replace('"hello"', json.dumps(self.ESCAPED)).encode()
                r = self.gw.request("POST", path, raw, {"Content-Type": "application/json"})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.a.requests[-1].body, raw.replace(json.dumps(model).encode(), b'"m"'))
        # and a Chat stream's event (moongate reads each one, for usage and reasoning; one it could
        # not parse was dropped)
        escaped = b"HEADER\\u0000TAIL ok \\ud83d"
        self.a.push_behavior("answer", raw_sse=chat_chunk(b"") + chat_chunk(escaped) + chat_chunk(None, "stop") +
                             b"data: [DONE]\n\n")
        gen = self.gw.stream("/v1/chat/completions", body("/v1/chat/completions", "oc/m", True))
        status, _ = next(gen)
        self.assertEqual(status, 200)
        self.assertIn(b'"content":"' + escaped + b'"', b"".join(gen))

    def test_a_byte_order_mark_is_dropped(self):
        # PowerShell and .NET clients may start the body with one. The body then goes upstream as
        # it came (same API) with "model" spliced in: into the object, not into the mark.
        for path, model in (("/v1/chat/completions", "oc/m"), ("/v1/messages", "an/m"), ("/v1/responses", "or/m")):
            with self.subTest(path=path):
                raw = json.dumps(body(path, model, False)).encode() + b"\r\n"  # white space after: fine
                r = self.gw.request("POST", path, b"\xef\xbb\xbf" + raw, {"Content-Type": "application/json"})
                self.assertEqual(r.status, 200, r)
                sent = self.a.requests[-1].body
                self.assertTrue(sent.startswith(b"{"), sent)
                self.assertEqual(json.loads(sent)["model"], "m", sent)

    def test_a_chat_answer_moongate_rewrites_is_repaired(self):
        # vLLM/Ollama say "reasoning"; moongate moves it to "reasoning_content" and so prints the
        # answer (or the event) again: what it prints is repaired like a translation. An event it
        # leaves alone still passes as it came.
        whole = (b'{"id":"c3","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
                 b'"message":{"role":"assistant","reasoning":"x\xff","content":"' + TEXT_IN + b'"},'
                 b'"finish_reason":"stop"}]}')
        self.a.push_behavior("badjson", body=whole)
        r = self.gw.post_json("/v1/chat/completions", body("/v1/chat/completions", "oc/m", False))
        self.assertEqual(r.status, 200, r)
        msg = json.loads(self.decode(r.body, "the rewritten answer"))["choices"][0]["message"]
        self.assertEqual((msg.get("reasoning_content"), msg["content"]), ("x" + R, TEXT_OUT), r)
        self.assertNotIn("reasoning", msg, r)

        reasoning = (b'data: {"id":"c4","object":"chat.completion.chunk","created":1,"model":"m",'
                     b'"choices":[{"index":0,"delta":{"reasoning":"y\xe2\x82"},"finish_reason":null}]}\n\n')
        self.a.push_behavior("answer", raw_sse=reasoning + chat_chunk(b"a\x80b", model=b"m") +
                             chat_chunk(None, "stop", model=b"m") + b"data: [DONE]\n\n")
        gen = self.gw.stream("/v1/chat/completions", body("/v1/chat/completions", "oc/m", True))
        status, _ = next(gen)
        self.assertEqual(status, 200)
        events = [e for e in b"".join(gen).split(b"\n\n") if e.startswith(b"data: {")]
        moved = [e for e in events if b"reasoning" in e]
        self.assertEqual(len(moved), 1, events)
        self.assertEqual(json.loads(self.decode(moved[0][6:], "the rewritten event"))["choices"][0]["delta"],
                         {"reasoning_content": "y" + R * 2}, events)
        self.assertTrue(any(b'"content":"a\x80b"' in e for e in events), events)  # untouched: as it came

        # Escapes in an answer it re-prints: read as U+FFFD, the text after them kept.
        whole = (b'{"id":"c5","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
                 b'"message":{"role":"assistant","reasoning":"r","content":"HEADER\\u0000TAIL \\ud83d"},'
                 b'"finish_reason":"stop"}]}')
        self.a.push_behavior("badjson", body=whole)
        r = self.gw.post_json("/v1/chat/completions", body("/v1/chat/completions", "oc/m", False))
        self.assertEqual(r.status, 200, r)
        msg = json.loads(self.decode(r.body, "the rewritten answer"))["choices"][0]["message"]
        self.assertEqual((msg.get("reasoning_content"), msg["content"]), ("r", "HEADER" + R + "TAIL " + R), r)


if __name__ == "__main__":
    unittest.main()

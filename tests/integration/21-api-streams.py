#!/usr/bin/env python3
"""Streams of the Responses and Anthropic Messages APIs through moongate, same API (events passed
through as they came) and translated: a stream cut after its commit point must end with an error
event in the client's own format, never as if it were complete."""

import http.client
import json
import unittest

from mglib import MGTestCase, config, provider

MSGS = [{"role": "user", "content": "hello"}]


def body(path, model):
    if path == "/v1/responses":
        return {"model": model, "input": "hello", "stream": True}
    if path == "/v1/messages":
        return {"model": model, "max_tokens": 64, "messages": MSGS, "stream": True}
    return {"model": model, "messages": MSGS, "stream": True}



def chat_chunk(delta, fr=None):
    """One Chat Completions stream event carrying delta (and finish_reason fr)."""
    return "data: %s\n\n" % json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": fr}]})


def tool_delta(**k):
    """A Chat stream event with one tool_calls fragment."""
    return chat_chunk({"tool_calls": [k]})


class ApiStreams(MGTestCase):
    def setUp(self):
        self.a = self.mock("A")
        self.gw = self.gateway(config(providers={
            "oc": provider(self.a, ["m"], api="openai-completions"),
            "or": provider(self.a, ["m"], api="openai-responses"),
            "an": provider(self.a, ["m"], api="anthropic-messages")}, primary="oc/m"))

    def names(self, s):
        return [e.get("event") for e in s.events]

    def assert_tool_calls_reach_clients(self, raw, want, label=""):
        """The Chat upstream stream raw reaches an Anthropic and a Responses client with exactly
        the tool calls want, [(id, name, arguments)], each call's arguments whole."""
        # Anthropic: tool_use blocks one at a time; each input is its start's plus its partial_json.
        self.a.push_behavior("answer", raw_sse=raw)
        s = self.gw.stream_all(body("/v1/messages", "oc/m"), path="/v1/messages")
        self.assertEqual(s.status, 200, (label, s))
        blocks, open_ = {}, None
        for p in s.payloads:
            if p["type"] == "content_block_start":
                self.assertIsNone(open_, "a block started before the last one stopped: %r" % ((label, s),))
                open_ = p["index"]
                blocks[open_] = [p["content_block"], ""]
            elif p["type"] == "content_block_delta":
                self.assertEqual(p["index"], open_, (label, s))
                blocks[open_][1] += p["delta"].get("partial_json", "")
            elif p["type"] == "content_block_stop":
                open_ = None
        got = [(b["id"], b["name"], json.loads(args) if args else b["input"])
               for b, args in blocks.values() if b["type"] == "tool_use"]
        self.assertEqual(got, want, (label, s))
        self.assertEqual(s.payloads[-1]["type"], "message_stop", (label, s))
        # Responses: the arguments deltas, the .done events and response.completed agree.
        self.a.push_behavior("answer", raw_sse=raw)
        s = self.gw.stream_all(body("/v1/responses", "oc/m"), path="/v1/responses")
        self.assertEqual(s.status, 200, (label, s))
        args = {}
        for p in s.payloads:
            if p["type"] == "response.function_call_arguments.delta":
                args[p["output_index"]] = args.get(p["output_index"], "") + p["delta"]
            elif p["type"] == "response.function_call_arguments.done":
                self.assertEqual(p["arguments"], args.get(p["output_index"], ""), (label, s))
        done = s.payloads[-1]
        self.assertEqual(done["type"], "response.completed", (label, s))
        calls = [(o["call_id"], o["name"], json.loads(o["arguments"]))
                 for o in done["response"]["output"] if o["type"] == "function_call"]
        self.assertEqual(calls, want, (label, s))

    def test_same_api_clean_end_without_terminal_event_is_an_error(self):
        # 7 events in: content has flowed for both APIs; then the HTTP body ends cleanly, with
        # no response.completed / message_stop.
        for path, prov, terminal in (("/v1/responses", "or", "response.completed"),
                                     ("/v1/messages", "an", "message_stop")):
            with self.subTest(path=path):
                self.a.push_behavior("answer", end_after=7)
                s = self.gw.stream_all(body(path, prov + "/m"), path=path)
                self.assertEqual(s.status, 200, s)
                names = self.names(s)
                self.assertNotIn(terminal, names, s)
                if path == "/v1/messages":
                    self.assertEqual(names[-1], "error", "a cut stream must end with an error event: %r" % s)
                    last = s.payloads[-1]
                    self.assertEqual(last["type"], "error", s)
                    self.assertIn("type", last["error"], s)
                else:
                    # error (flat fields, and the nested error the SDK throws on), then
                    # response.failed for the upstream's response, numbered on from its events
                    self.assertEqual(names[-2:], ["error", "response.failed"], s)
                    err, failed = s.payloads[-2:]
                    self.assertTrue(err.get("message"), s)
                    self.assertEqual((err["error"]["code"], err["error"]["message"]), (err["code"], err["message"]), s)
                    created = next(p for p in s.payloads if p["type"] == "response.created")["response"]
                    self.assertEqual((failed["response"]["id"], failed["response"]["status"]), (created["id"], "failed"), s)
                    self.assertEqual(failed["response"]["error"]["code"], err["code"], s)
                    seqs = [p["sequence_number"] for p in s.payloads]
                    self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), s)

    def test_same_api_complete_streams_end_cleanly(self):
        for path, prov, terminal in (("/v1/responses", "or", "response.completed"),
                                     ("/v1/messages", "an", "message_stop")):
            with self.subTest(path=path):
                s = self.gw.stream_all(body(path, prov + "/m"), path=path)
                self.assertEqual(s.status, 200, s)
                self.assertEqual(self.names(s)[-1], terminal, s)
                self.assertNotIn("error", self.names(s), s)

    def test_interleaved_parallel_tool_calls_keep_their_arguments(self):
        # A Chat upstream may interleave the argument fragments of parallel tool calls by index;
        # Anthropic and Responses clients get each call whole, in order, arguments intact.
        c, tc = chat_chunk, tool_delta
        raw = (c({"role": "assistant", "content": ""}) +
               tc(index=0, id="call_a", type="function", function={"name": "get_w", "arguments": ""}) +
               tc(index=0, function={"arguments": '{"city":'}) +
               tc(index=1, id="call_b", type="function", function={"name": "get_t", "arguments": ""}) +
               tc(index=1, function={"arguments": '{"tz":'}) +
               tc(index=0, function={"arguments": '"Paris"}'}) +
               tc(index=1, function={"arguments": '"UTC"}'}) +
               tc(index=2, id="call_c", type="function", function={"name": "get_x", "arguments": "{}"}) +
               c({}, "tool_calls") + "data: [DONE]\n\n")
        want = [("call_a", "get_w", {"city": "Paris"}), ("call_b", "get_t", {"tz": "UTC"}),
                ("call_c", "get_x", {})]
        self.assert_tool_calls_reach_clients(raw, want)

    def test_chat_client_stream_errors_name_one_type(self):
        # A Chat client's stream that fails after content ends with an error chunk typed as
        # OpenAI types a 5xx ("server_error"), whether the Chat upstream's events were passed
        # through or another API's were translated, and whether the stream was cut or the
        # upstream sent an error event.
        crash = {"message": "model crashed", "type": "server_error"}
        for prov, fault in (("oc", dict(close_after=6)), ("or", dict(close_after=6)),
                            ("an", dict(close_after=6)),
                            ("oc", dict(error_after=6, error_style="data", error=crash)),
                            ("oc", dict(error_after=6, error_style="event", error=crash)),
                            ("an", dict(error_after=6, error_style="anthropic", error=crash))):
            with self.subTest(upstream=prov, fault=fault):
                self.a.push_behavior("answer", **fault)
                s = self.gw.stream_all(body("/v1/chat/completions", prov + "/m"))
                self.assertEqual(s.status, 200, s)
                self.assertTrue(s.text, "content flowed before the failure: %r" % s)
                self.assertFalse(s.done, s)
                err = s.payloads[-1]["error"]
                self.assertEqual(err["type"], "server_error", s)
                self.assertIn("code", err, s)  # the gateway's class, or the upstream's code
                self.assertIn("model crashed" if "error_after" in fault else "stream_broken",
                              err["message"], s)

    def test_tool_calls_opened_before_their_arguments_keep_them(self):
        # Every streamed call opens with no argument bytes; some get theirs only after the next
        # call has opened (a), and a tool without parameters gets none at all (b). Either way each
        # call reaches Anthropic and Responses clients with its own arguments, {} for none.
        c, tc = chat_chunk, tool_delta
        streams = {
            "interleaved after both opened": (
                tc(index=0, id="call_a", type="function", function={"name": "get_w", "arguments": ""}) +
                tc(index=1, id="call_b", type="function", function={"name": "get_t", "arguments": ""}) +
                tc(index=0, function={"arguments": '{"city":"Paris"}'}) +
                tc(index=1, function={"arguments": '{"tz":"UTC"}'}),
                [("call_a", "get_w", {"city": "Paris"}), ("call_b", "get_t", {"tz": "UTC"})]),
            "no argument bytes at all": (
                tc(index=0, id="call_a", type="function", function={"name": "now"}) +
                tc(index=1, id="call_b", type="function", function={"name": "get_w", "arguments": ""}) +
                tc(index=1, function={"arguments": '{"city":'}) +
                tc(index=1, function={"arguments": '"Paris"}'}),
                [("call_a", "now", {}), ("call_b", "get_w", {"city": "Paris"})]),
            # Ollama, SGLang and some adapters send every parallel call at index 0: the ids
            # tell them apart (they were one call with the arguments run together).
            "every call at index 0": (
                tc(index=0, id="call_a", type="function", function={"name": "get_w", "arguments": '{"city":"Paris"}'}) +
                tc(index=0, id="call_b", type="function", function={"name": "get_t", "arguments": ""}) +
                tc(index=0, function={"arguments": '{"tz":"UTC"}'}),
                [("call_a", "get_w", {"city": "Paris"}), ("call_b", "get_t", {"tz": "UTC"})]),
            # Some servers change a call's id between its opening fragment and its arguments:
            # without a function name, a fragment continues the call at its index.
            "the id changing mid-call": (
                tc(index=0, id="call_a", type="function", function={"name": "get_w", "arguments": ""}) +
                tc(index=0, id="call_other", function={"arguments": '{"city":'}) +
                tc(index=0, function={"arguments": '"Paris"}'}),
                [("call_a", "get_w", {"city": "Paris"})]),
        }
        for name, (calls_sse, want) in streams.items():
            raw = c({"role": "assistant", "content": ""}) + calls_sse + c({}, "tool_calls") + "data: [DONE]\n\n"
            self.assert_tool_calls_reach_clients(raw, want, name)

    def test_streamed_arguments_sent_as_an_object_are_kept(self):
        # Off-spec but seen: a Chat upstream streams a call's arguments as a JSON object, not its
        # text. Anthropic and Responses clients get them as a whole answer's would be read (they
        # got {}).
        c = chat_chunk
        raw = (c({"role": "assistant", "content": None}) +
               tool_delta(index=0, id="c1", type="function", function={"name": "get_w", "arguments": {"city": "Paris"}}) +
               c({}, "tool_calls") + "data: [DONE]\n\n")
        self.assert_tool_calls_reach_clients(raw, [("c1", "get_w", {"city": "Paris"})])

    def test_translated_answers_carry_the_client_apis_id_prefix(self):
        # A translated answer's id has the client API's prefix and the upstream's whole id after
        # it; whole and streamed alike. The same API passes the upstream's id through.
        up_id = {"oc": "chatcmpl-A-%d", "an": "msg_A_%d", "or": "resp_A_%d"}
        cases = (("/v1/messages", "oc", "msg_chatcmpl-A-%d"), ("/v1/chat/completions", "an", "chatcmpl-msg_A_%d"),
                 ("/v1/responses", "an", "resp_msg_A_%d"), ("/v1/chat/completions", "or", "chatcmpl-resp_A_%d"),
                 ("/v1/messages", "or", "msg_resp_A_%d"), ("/v1/responses", "oc", "resp_chatcmpl-A-%d"),
                 ("/v1/chat/completions", "oc", up_id["oc"]), ("/v1/messages", "an", up_id["an"]))
        for path, prov, want in cases:
            for stream in (False, True):
                with self.subTest(path=path, upstream=prov, stream=stream):
                    b = body(path, prov + "/m")
                    b["stream"] = stream
                    if stream:
                        s = self.gw.stream_all(b, path=path)
                        self.assertEqual(s.status, 200, s)
                        p = s.payloads[0]
                        got = (p.get("message") or p.get("response") or p)["id"]
                        ids = {(q.get("response") or q)["id"] for q in s.payloads
                               if isinstance(q, dict) and ("choices" in q or "response" in q)}
                        self.assertLessEqual(ids, {got}, "every event names the same id: %r" % s)
                    else:
                        r = self.gw.post_json(path, b)
                        self.assertEqual(r.status, 200, r)
                        got = r.json["id"]
                    self.assertEqual(got, want % self.a.requests[-1].index)


    def test_a_same_api_answer_re_encoded_keeps_the_upstreams_id(self):
        # stripReasoning makes the gateway re-encode even a same-API answer; its id is still the
        # upstream's as it came (no msg_ put in front of a server's unprefixed id), whole and
        # streamed alike.
        gw = self.gateway(config(providers={"an": provider(self.a, ["m"], api="anthropic-messages")},
                                 primary="an/m", gateway={"providers": {"an": {"stripReasoning": True}}}))
        ev = lambda name, d: "event: %s\ndata: %s\n\n" % (name, json.dumps(dict(d, type=name)))  # noqa: E731
        raw = (ev("message_start", {"message": {"id": "abc-1", "type": "message", "role": "assistant",
                                                "model": "m", "content": [], "stop_reason": None,
                                                "usage": {"input_tokens": 3, "output_tokens": 0}}}) +
               ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}) +
               ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}}) +
               ev("content_block_stop", {"index": 0}) +
               ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}) +
               ev("message_stop", {}))
        self.a.push_behavior("answer", raw_sse=raw)
        s = gw.stream_all(body("/v1/messages", "an/m"), path="/v1/messages")
        self.assertEqual(s.status, 200, s)
        self.assertEqual(s.payloads[0]["message"]["id"], "abc-1", s)
        whole = {"id": "abc-2", "type": "message", "role": "assistant", "model": "m",
                 "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                 "usage": {"input_tokens": 3, "output_tokens": 1}}
        self.a.push_behavior("badjson", body=json.dumps(whole).encode())  # a raw 200 body
        r = gw.post_json("/v1/messages", dict(body("/v1/messages", "an/m"), stream=False))
        self.assertEqual((r.status, r.json.get("id")), (200, "abc-2"), r)

    def test_an_answer_without_a_model_shows_the_catalog_model(self):
        # Some local servers name no model in their answers. A translated answer then shows the
        # id of the model that answered rather than "", whole and streamed.
        gw = self.gateway(config(providers={"lo": provider(self.a, ["qwen-local"])}, primary="lo/qwen-local"))
        ev = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
              "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
        whole = {"id": "c2", "object": "chat.completion", "created": 1,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
        for path in ("/v1/messages", "/v1/responses"):
            with self.subTest(path=path):
                self.a.push_behavior("answer", raw_sse="data: %s\n\ndata: [DONE]\n\n" % json.dumps(ev))
                s = gw.stream_all(body(path, "lo/qwen-local"), path=path)
                self.assertEqual(s.status, 200, s)
                first = s.payloads[0]
                self.assertEqual((first.get("message") or first.get("response"))["model"], "qwen-local", s)
                self.a.push_behavior("badjson", body=json.dumps(whole).encode())
                r = gw.post_json(path, dict(body(path, "lo/qwen-local"), stream=False))
                self.assertEqual((r.status, r.json.get("model")), (200, "qwen-local"), r)

    def test_anthropic_beta_flags_the_provider_allows_go_to_anthropic_upstreams_only(self):
        # The SDK's betas and Claude Code's features travel in anthropic-beta: to an Anthropic
        # upstream go the flags its provider allows (gateway.providers.<id>.anthropicBetas; none
        # by default), from several headers; to another API's upstream none; an admin's own
        # anthropic-beta for the provider wins.
        def post(gw, model, betas):
            c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            data = json.dumps({"model": model, "max_tokens": 16, "messages": MSGS}).encode()
            c.putrequest("POST", "/v1/messages")
            for h, v in [("Content-Type", "application/json"), ("Content-Length", str(len(data)))] + betas:
                c.putheader(h, v)
            c.endheaders(data)
            self.assertEqual(c.getresponse().status, 200)
            c.close()
            return self.a.requests[-1].headers.get("anthropic-beta")
        betas = [("anthropic-beta", "context-1m-2025-08-07, files-api-2025-04-14"),
                 ("anthropic-beta", "interleaved-thinking-2025-05-14,prompt is too long n_ctx: 2048")]
        self.assertIsNone(post(self.gw, "an/m", betas), "none allowed by default")
        allowed = ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
        gw = self.gateway(config(providers={"an": provider(self.a, ["m"], api="anthropic-messages"),
                                            "oc": provider(self.a, ["m"])}, primary="an/m",
                                 gateway={"providers": {"an": {"anthropicBetas": allowed}}}))
        self.assertEqual(post(gw, "an/m", betas), "interleaved-thinking-2025-05-14,context-1m-2025-08-07",
                         "the allowed flags asked for, and nothing else of the client's")
        self.assertIsNone(post(gw, "oc/m", betas))
        admin = self.gateway(config(providers={"an": dict(provider(self.a, ["m"], api="anthropic-messages"),
                                                          headers={"anthropic-beta": "admin-flag"})}, primary="an/m",
                                    gateway={"providers": {"an": {"anthropicBetas": allowed}}}))
        self.assertEqual(post(admin, "an/m", betas), "admin-flag")

    def test_a_block_a_translation_cannot_write_commits_nothing(self):
        # An Anthropic stream that opens with redacted_thinking, translated for a Chat client,
        # has sent the client nothing: an overload after it moves on to the next candidate.
        ev = lambda name, d: "event: %s\ndata: %s\n\n" % (name, json.dumps(dict(d, type=name)))  # noqa: E731
        raw = (ev("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                                "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}}) +
               ev("content_block_start", {"index": 0, "content_block": {"type": "redacted_thinking", "data": "x"}}) +
               ev("content_block_stop", {"index": 0}) +
               ev("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))
        gw = self.gateway(config(providers={"an": provider(self.a, ["m"], api="anthropic-messages"),
                                            "oc": provider(self.a, ["m"])}, primary="an/m", fallbacks=["oc/m"]))
        self.a.push_behavior("answer", raw_sse=raw)
        s = gw.stream_all(body("/v1/chat/completions", "default"))
        self.assertEqual(s.status, 200, s)
        self.assertTrue(s.text and s.done, s)
        self.assertIn("an/m=overloaded", s.header("x-moongate-route") or "", s)

    def test_server_tool_blocks_are_content(self):
        # An Anthropic stream may open with server tool use and its results (web search: a
        # megabyte of them) before any text. They are the answer under way, not events before
        # it: nothing held back past the pending cap, the stream passed through whole.
        ev = lambda name, d: "event: %s\ndata: %s\n\n" % (name, json.dumps(dict(d, type=name)))  # noqa: E731
        raw = ev("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                               "content": [], "stop_reason": None,
                                               "usage": {"input_tokens": 5, "output_tokens": 1}}})
        for i in range(3):
            raw += (ev("content_block_start", {"index": 2 * i, "content_block": {
                        "type": "server_tool_use", "id": "srvtoolu_%d" % i, "name": "web_search", "input": {"query": "q"}}}) +
                    ev("content_block_stop", {"index": 2 * i}) +
                    ev("content_block_start", {"index": 2 * i + 1, "content_block": {
                        "type": "web_search_tool_result", "tool_use_id": "srvtoolu_%d" % i, "content": [
                            {"type": "web_search_result", "url": "https://u/%d" % k, "title": "t",
                             "encrypted_content": "E" * 40000} for k in range(10)]}}) +
                    ev("content_block_stop", {"index": 2 * i + 1}))
        raw += (ev("content_block_start", {"index": 6, "content_block": {"type": "text", "text": ""}}) +
                ev("content_block_delta", {"index": 6, "delta": {"type": "text_delta", "text": "found"}}) +
                ev("content_block_stop", {"index": 6}) +
                ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}) +
                ev("message_stop", {}))
        self.a.push_behavior("answer", raw_sse=raw)
        s = self.gw.stream_all(dict(body("/v1/messages", "an/m"), tools=[{"type": "web_search_20250305", "name": "web_search"}]),
                               path="/v1/messages")
        self.assertEqual(s.status, 200, s)
        kinds = [p["content_block"]["type"] for p in s.payloads if p.get("type") == "content_block_start"]
        self.assertEqual(kinds, ["server_tool_use", "web_search_tool_result"] * 3 + ["text"], kinds)
        self.assertEqual(s.payloads[-1]["type"], "message_stop")

    def test_a_chat_answer_without_id_or_created_gets_them(self):
        # A Chat client of a Chat upstream that names its answers nothing (some local servers)
        # gets a unique id and a creation time, as a translated answer does.
        whole = {"object": "chat.completion", "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        with_call = dict(whole, choices=[{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "hi", "tool_calls": [call]}}])  # an "id" below the top level
        ids = set()
        for answer in (whole, with_call):
            self.a.push_behavior("badjson", body=json.dumps(answer).encode())
            r = self.gw.post_json("/v1/chat/completions", dict(body("/v1/chat/completions", "oc/m"), stream=False))
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.json["id"].startswith("chatcmpl-moongate-"), r)
            self.assertIsInstance(r.json["created"], int, r)
            self.assertEqual(r.json["choices"][0]["message"]["content"], "hi", r)
            ids.add(r.json["id"])
        self.assertEqual(len(ids), 2, "each answer its own id")
        # Streamed: every chunk gets the same made-up id and creation time.
        chunk = lambda d, fr=None: "data: %s\n\n" % json.dumps(  # noqa: E731
            {"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": fr}]})
        self.a.push_behavior("answer", raw_sse=chunk({"role": "assistant", "content": ""}) + chunk({"content": "hi"}) +
                             chunk({}, "stop") + "data: [DONE]\n\n")
        s = self.gw.stream_all(body("/v1/chat/completions", "oc/m"))
        self.assertEqual(s.status, 200, s)
        self.assertEqual(s.text, "hi", s)
        got = {(p["id"], p["created"]) for p in s.payloads if isinstance(p, dict)}
        self.assertEqual(len(got), 1, s)
        sid, created = got.pop()
        self.assertTrue(sid.startswith("chatcmpl-moongate-") and sid not in ids, s)
        self.assertIsInstance(created, int, s)

    def test_translated_responses_echo_the_requests_parameters(self):
        # A Response object repeats the request's parameters (metadata, tools, text.format…);
        # translated from a Chat or Anthropic upstream it shows what the client sent, not fixed
        # defaults: whole, streamed (every response object) and streamed from a whole answer.
        asked = {"instructions": "be terse", "metadata": {"job": "42"}, "temperature": 0.2, "top_p": 0.5,
                 "max_output_tokens": 300, "parallel_tool_calls": False, "tool_choice": "required", "user": "u-7",
                 "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}, "strict": False}],
                 "text": {"format": {"type": "json_schema", "name": "obj", "strict": True,
                                     "schema": {"type": "object", "properties": {}, "additionalProperties": False}}}}
        want = dict(asked, reasoning={"effort": "low", "summary": None})
        defaults = {"instructions": None, "metadata": {}, "temperature": 1, "top_p": 1, "max_output_tokens": None,
                    "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                    "text": {"format": {"type": "text"}}, "reasoning": {"effort": None, "summary": None}}
        for prov in ("oc", "an"):
            for how in ("whole", "stream", "stream-from-whole"):
                for req, exp in ((dict(asked, reasoning={"effort": "low"}), want), ({}, defaults)):
                    with self.subTest(upstream=prov, how=how, params=bool(req)):
                        b = dict(body("/v1/responses", prov + "/m"), stream=how != "whole", **req)
                        if how == "whole":
                            r = self.gw.post_json("/v1/responses", b)
                            self.assertEqual(r.status, 200, r)
                            responses = [r.json]
                        else:
                            if how == "stream-from-whole":
                                self.a.push_behavior("answer", ignore_stream=True)
                            s = self.gw.stream_all(b, path="/v1/responses")
                            self.assertEqual(s.status, 200, s)
                            responses = [p["response"] for p in s.payloads if isinstance(p, dict) and "response" in p]
                            self.assertEqual(len(responses), 3, s)  # created, in_progress, completed
                        for resp in responses:
                            self.assertEqual({k: resp.get(k) for k in exp}, exp, resp)



if __name__ == "__main__":
    unittest.main()

#!/usr/bin/env python3
"""Streams of the Responses and Anthropic Messages APIs through moongate, same API (events passed
through as they came) and translated: a stream cut after its commit point must end with an error
event in the client's own format, never as if it were complete."""

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


class ApiStreams(MGTestCase):
    def setUp(self):
        self.a = self.mock("A")
        self.gw = self.gateway(config(providers={
            "oc": provider(self.a, ["m"], api="openai-completions"),
            "or": provider(self.a, ["m"], api="openai-responses"),
            "an": provider(self.a, ["m"], api="anthropic-messages")}, primary="oc/m"))

    def names(self, s):
        return [e.get("event") for e in s.events]

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
                self.assertEqual(names[-1], "error", "a cut stream must end with an error event: %r" % s)
                last = s.payloads[-1]
                if path == "/v1/messages":
                    self.assertEqual(last["type"], "error", s)
                    self.assertIn("type", last["error"], s)
                else:
                    self.assertEqual(last["type"], "error", s)
                    self.assertTrue(last.get("message"), s)
                    # it numbers on from the upstream's events
                    seqs = [p["sequence_number"] for p in s.payloads[:-1]]
                    self.assertEqual(last.get("sequence_number"), seqs[-1] + 1, s)

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
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

        def c(delta, fr=None):
            return "data: %s\n\n" % json.dumps(dict(base, choices=[
                {"index": 0, "delta": delta, "finish_reason": fr}]))

        def tc(**k):
            return c({"tool_calls": [k]})
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
        # Anthropic: each tool_use block's partial_json fragments make its input.
        self.a.push_behavior("answer", raw_sse=raw)
        s = self.gw.stream_all(body("/v1/messages", "oc/m"), path="/v1/messages")
        self.assertEqual(s.status, 200, s)
        blocks, open_ = {}, None
        for p in s.payloads:
            if p["type"] == "content_block_start":
                self.assertIsNone(open_, "a block started before the last one stopped: %r" % s)
                open_ = p["index"]
                blocks[open_] = [p["content_block"], ""]
            elif p["type"] == "content_block_delta":
                self.assertEqual(p["index"], open_, s)
                blocks[open_][1] += p["delta"].get("partial_json", "")
            elif p["type"] == "content_block_stop":
                open_ = None
        got = [(b["id"], b["name"], json.loads(args)) for b, args in blocks.values()
               if b["type"] == "tool_use"]
        self.assertEqual(got, want, s)
        self.assertEqual(s.payloads[-1]["type"], "message_stop", s)
        # Responses: the arguments deltas, the .done events and response.completed agree.
        self.a.push_behavior("answer", raw_sse=raw)
        s = self.gw.stream_all(body("/v1/responses", "oc/m"), path="/v1/responses")
        self.assertEqual(s.status, 200, s)
        args = {}
        for p in s.payloads:
            if p["type"] == "response.function_call_arguments.delta":
                args[p["output_index"]] = args.get(p["output_index"], "") + p["delta"]
            elif p["type"] == "response.function_call_arguments.done":
                self.assertEqual(p["arguments"], args.get(p["output_index"], ""), s)
        done = s.payloads[-1]
        self.assertEqual(done["type"], "response.completed", s)
        calls = [(o["call_id"], o["name"], json.loads(o["arguments"]))
                 for o in done["response"]["output"] if o["type"] == "function_call"]
        self.assertEqual(calls, want, s)


if __name__ == "__main__":
    unittest.main()

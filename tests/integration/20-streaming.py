#!/usr/bin/env python3
"""Streaming Chat Completions through moongate against a mock with fault modes (issue 3, items 2,
3, 4, 5, 7 and 8): pass-through, the commit point (failures before content fall through
invisibly, failures after it end the stream with an error event and never a clean [DONE]),
timeouts, client aborts cancelling the upstream, usage, keep-alives and reasoning."""

import json
import time

import mglib
from mglib import MGTestCase, config, provider

MSGS = [{"role": "user", "content": "hello"}]


def sbody(model="default", **extra):
    b = {"model": model, "messages": MSGS, "stream": True}
    b.update(extra)
    return b


def expected_text(name, model, n):
    return "mock %s saw model %s" % (name, model) + "".join(" w%d" % i for i in range(1, n))


class Stream(MGTestCase):
    def two(self, b_behavior=None, gateway=None):
        """b (b_behavior) -> c (answers, streaming 5 events)."""
        b, c = self.mock("B"), self.mock("C")
        if b_behavior is not None:
            b.set_behavior(b_behavior)
        # c's window is larger: the error events here read as context overflows, after which
        # only a larger window is tried.
        gw = self.gateway(config(providers={"b": provider(b, ["m"]),
                                            "c": provider(c, [{"id": "m", "contextWindow": 131072}])},
                                 primary="b/m", fallbacks=["c/m"], gateway=gateway))
        return gw, b, c

    def assertCleanStream(self, s, text):
        self.assertEqual(s.status, 200, s)
        self.assertIn("text/event-stream", s.header("content-type", ""), s)
        self.assertTrue(s.done, "no data: [DONE] at the end: %r" % s)
        self.assertEqual(s.errors, [], s)
        chunks = s.chunks
        self.assertTrue(chunks, s)
        self.assertEqual(chunks[0]["choices"][0]["delta"].get("role"), "assistant",
                         "the first chunk must carry delta.role: %r" % chunks[0])
        self.assertEqual(sum(1 for c in chunks for ch in c["choices"]
                             if "role" in (ch.get("delta") or {})), 1, "role sent twice: %r" % s)
        self.assertEqual(s.text, text)
        # Every data line is an event: only [DONE] is not JSON.
        for p in s.payloads[:-1]:
            self.assertIsInstance(p, dict, s)

    def assertBrokenAfterCommit(self, s, text_prefix):
        """The client saw content, then the upstream failed: an error event ends the stream."""
        self.assertEqual(s.status, 200, s)
        self.assertFalse(s.done, "a broken stream ended with a clean [DONE]: %r" % s)
        self.assertTrue(s.errors, "no error event after the upstream broke: %r" % s)
        last = s.payloads[-1]
        self.assertIsInstance(last, dict, s)
        self.assertIn("error", last, "the error event is not the last event: %r" % s)
        self.assertIsInstance(last["error"].get("message"), str, last)
        self.assertTrue(s.text.startswith(text_prefix), s)

    # -- pass-through

    def test_passthrough(self):
        gw, b, c = self.two()
        b.set_behavior("answer", events=20)
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("B", "m", 20))
        self.assertEqual(s.header("x-moongate-model"), "b/m")
        self.assertEqual(b.requests[0].model, "m")
        self.assertTrue(b.requests[0].json.get("stream"))

    def test_rechunked_upstream_gives_identical_payloads(self):
        gw, b, c = self.two()
        b.set_behavior("answer", events=40)
        plain = gw.stream_all(sbody())
        b.set_behavior("answer", events=40, rechunk_seed=1234, rechunk_max=9,
                       rechunk_pause_ms=0)
        cut = gw.stream_all(sbody())
        b.set_behavior("answer", events=40, rechunk_seed=99, rechunk_max=2, rechunk_pause_ms=1)
        tiny = gw.stream_all(sbody())
        norm = [e["data"].replace("chatcmpl-B-0", "ID") for e in plain.events]
        self.assertEqual([e["data"].replace("chatcmpl-B-1", "ID") for e in cut.events], norm)
        self.assertEqual([e["data"].replace("chatcmpl-B-2", "ID") for e in tiny.events], norm)
        self.assertCleanStream(tiny, expected_text("B", "m", 40))

    def test_a_thousand_events(self):
        gw, b, c = self.two()
        b.set_behavior("answer", events=1000)
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("B", "m", 1000))

    def test_events_are_not_buffered(self):
        # 6 events 150 ms apart: the client sees them spread out, not all at the end.
        gw, b, c = self.two()
        b.set_behavior("answer", events=5, pacing_ms=150)
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("B", "m", 5))
        span = s.reads[-1][0] - s.reads[0][0]
        self.assertGreater(len(s.reads), 3, "everything arrived in %d reads" % len(s.reads))
        self.assertGreater(span, 0.5, "events arrived within %.3fs: buffered?" % span)

    def test_missing_role_chunk_is_added(self):
        gw, b, c = self.two()
        b.set_behavior("answer", no_role=True)
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("B", "m", 5))

    def test_usage_reaches_only_a_client_that_asked(self):
        gw, b, c = self.two()
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("B", "m", 5))
        self.assertEqual([p for p in s.chunks if p.get("usage")], [], "usage chunk not asked for")
        # moongate asks upstream for usage anyway (to log it).
        self.assertTrue((b.requests[0].json.get("stream_options") or {}).get("include_usage"))
        s = gw.stream_all(sbody(stream_options={"include_usage": True}))
        usage = [p for p in s.chunks if p.get("usage")]
        self.assertEqual(len(usage), 1, s)
        self.assertEqual(usage[0]["choices"], [])

    def test_keepalive_comments_stay_comments(self):
        gw, b, c = self.two()
        b.set_behavior("answer", pings=3, ping_every=2, ping_text="OPENROUTER PROCESSING")
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("B", "m", 5))
        for line in s.raw.split(b"\n"):
            self.assertTrue(line == b"" or line.startswith(b"data: ") or line.startswith(b":"),
                            "unexpected line %r" % line)

    # -- before the commit point: fall through invisibly

    def test_error_event_first_falls_through(self):
        gw, b, c = self.two({"mode": "answer", "error_after": 0})
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("C", "m", 5))
        self.assertEqual(s.header("x-moongate-model"), "c/m", s)

    def test_error_event_after_role_only_falls_through(self):
        gw, b, c = self.two({"mode": "answer", "error_after": 1})
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("C", "m", 5))

    def test_lmstudio_event_error_before_content_falls_through(self):
        gw, b, c = self.two({"mode": "answer", "error_after": 1, "error_style": "event"})
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("C", "m", 5))
        self.assertEqual(s.route["attempts"][0][1], "context_overflow", s.route["raw"])

    def test_a_content_filter_refusal_before_content_reaches_the_client(self):
        # HEALTH.md: content_filter does not move on, the client gets the answer; inside a 200
        # stream (an error event first) as much as with an error status.
        gw, b, c = self.two({"mode": "answer", "error_after": 0, "error": {
            "message": "The response was filtered due to the prompt triggering content management policy",
            "type": "invalid_request_error", "code": "content_filter"}})
        r = gw.post_json("/v1/chat/completions", sbody())
        err = self.assertOpenAIError(r, 400, "content_filter")
        self.assertIn("content management policy", err["message"])
        self.assertEqual(len(c.requests), 0, "a refusal is not the next candidate's to answer")

    def test_close_before_content_falls_through(self):
        for k in (0, 1):
            with self.subTest(close_after=k):
                gw, b, c = self.two({"mode": "answer", "close_after": k})
                s = gw.stream_all(sbody())
                self.assertCleanStream(s, expected_text("C", "m", 5))

    def test_clean_end_before_content_falls_through(self):
        gw, b, c = self.two({"mode": "answer", "end_after": 1})
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("C", "m", 5))

    def test_non_2xx_before_stream_falls_through(self):
        gw, b, c = self.two({"mode": "fail", "status": 503})
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("C", "m", 5))

    def test_stall_after_headers_is_a_first_token_timeout(self):
        gw, b, c = self.two({"mode": "answer", "stall_after_headers": True},
                            gateway={"timeouts": {"firstTokenMs": 800}})
        t0 = time.monotonic()
        s = gw.stream_all(sbody())
        elapsed = time.monotonic() - t0
        self.assertCleanStream(s, expected_text("C", "m", 5))
        self.assertLess(elapsed, 1.8 + 0.5, "firstTokenMs=800 took %.2fs" % elapsed)
        self.assertEqual(s.route["attempts"][0][1], "timeout", s.route["raw"])
        b.wait_disconnect(0, timeout=2)

    def test_keepalives_do_not_count_as_first_token(self):
        # Comments are not content: an upstream that only pings is still waiting for its model.
        gw, b, c = self.two({"mode": "answer", "pings": 50, "pacing_ms": 100},
                            gateway={"timeouts": {"firstTokenMs": 800}})
        s = gw.stream_all(sbody())
        self.assertCleanStream(s, expected_text("C", "m", 5))

    # -- after the commit point: never silent, never twice

    def test_close_mid_stream_ends_with_an_error_event(self):
        gw, b, c = self.two({"mode": "answer", "close_after": 3})
        s = gw.stream_all(sbody())
        self.assertBrokenAfterCommit(s, "mock B saw model m w1")
        self.assertEqual(len(c.requests), 0, "content already sent: no second candidate")

    def test_clean_end_without_done_after_content_is_an_error(self):
        gw, b, c = self.two({"mode": "answer", "end_after": 3})
        s = gw.stream_all(sbody())
        self.assertBrokenAfterCommit(s, "mock B saw model m w1")
        self.assertEqual(len(c.requests), 0)

    def test_error_event_mid_stream_reaches_the_client_once(self):
        gw, b, c = self.two({"mode": "answer", "error_after": 3})
        s = gw.stream_all(sbody())
        self.assertBrokenAfterCommit(s, "mock B saw model m w1")
        self.assertEqual(len(s.errors), 1, s)
        self.assertEqual(len(c.requests), 0)

    def test_lmstudio_event_error_mid_stream_is_a_failure(self):
        gw, b, c = self.two({"mode": "answer", "error_after": 3, "error_style": "event"})
        s = gw.stream_all(sbody())
        self.assertBrokenAfterCommit(s, "mock B saw model m w1")
        self.assertNotIn("Input does not fit", s.text, "the error was relayed as content")

    def test_stall_mid_stream_is_an_idle_timeout(self):
        gw, b, c = self.two({"mode": "answer", "stall_after": 3},
                            gateway={"timeouts": {"idleMs": 800}})
        t0 = time.monotonic()
        s = gw.stream_all(sbody())
        elapsed = time.monotonic() - t0
        self.assertBrokenAfterCommit(s, "mock B saw model m w1")
        self.assertLess(elapsed, 1.8 + 0.5, "idleMs=800 took %.2fs" % elapsed)
        b.wait_disconnect(0, timeout=2)

    # -- the client going away

    def test_client_abort_mid_stream_cancels_the_upstream(self):
        gw, b, c = self.two({"mode": "answer", "events": 200, "pacing_ms": 50})
        gen = gw.stream("/v1/chat/completions", sbody())
        status, _ = next(gen)
        self.assertEqual(status, 200)
        got = b""
        while b"w2" not in got:
            got += next(gen)
        t0 = time.monotonic()
        gen.close()  # closes the connection
        b.wait_disconnect(0, timeout=3)
        self.assertLess(time.monotonic() - t0, 1.5)
        line = gw.wait_access(1)[0]
        self.assertTrue(line.get("client_aborted"), line)

    def test_client_abort_during_prefill_cancels_the_upstream(self):
        gw, b, c = self.two({"mode": "answer", "stall_after_headers": True})
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", json.dumps(sbody()),
                     {"Content-Type": "application/json"})
        b.wait_requests(1)
        t0 = time.monotonic()
        conn.close()
        b.wait_disconnect(0, timeout=3)
        self.assertLess(time.monotonic() - t0, 1.5)

    def test_slow_reader_gets_everything(self):
        gw, b, c = self.two()
        b.set_behavior("answer", events=300)
        s = gw.stream_all(sbody(), read_delay=0.002)
        self.assertCleanStream(s, expected_text("B", "m", 300))

    # -- reasoning

    def test_reasoning_arrives_in_one_place(self):
        for field in ("reasoning", "reasoning_content"):
            with self.subTest(upstream_field=field):
                gw, b, c = self.two({"mode": "answer", "reasoning": field,
                                     "reasoning_events": 3})
                s = gw.stream_all(sbody())
                self.assertCleanStream(s, expected_text("B", "m", 5))
                thoughts = "".join((ch.get("delta") or {}).get("reasoning_content") or ""
                                   for p in s.chunks for ch in p["choices"])
                self.assertEqual(thoughts, "thought0 thought1 thought2 ")

    def test_reasoning_can_be_stripped(self):
        gw, b, c = self.two({"mode": "answer", "reasoning": "reasoning", "reasoning_events": 3})
        s = gw.stream_all(sbody(), headers={"x-moongate-strip-reasoning": "1"})
        self.assertCleanStream(s, expected_text("B", "m", 5))
        self.assertNotIn(b"thought", s.raw)

    def test_each_choice_gets_its_role_and_its_think_split(self):
        """n > 1: the upstream interleaves the choices; each has its own first delta and its own
        leading <think> block (a whole n=2 answer splits both), and the SDK's stream helper
        throws "missing role for choice 1" when a choice never got a role."""
        def ch(i, delta, fin=None):
            return {"id": "chatcmpl-n", "object": "chat.completion.chunk", "created": 1750000000,
                    "model": "m", "choices": [{"index": i, "delta": delta, "logprobs": None,
                                               "finish_reason": fin}]}
        evs = [ch(0, {"content": "<think>r0"}), ch(1, {"content": "<think>r1</think>B"}),
               ch(0, {"content": "</think>A"}), ch(1, {}, "stop"), ch(0, {}, "stop")]
        raw = "".join("data: %s\n\n" % json.dumps(e) for e in evs) + "data: [DONE]\n\n"
        gw, b, c = self.two({"mode": "answer", "raw_sse": raw})
        s = gw.stream_all(sbody(n=2))
        self.assertEqual(s.status, 200, s)
        self.assertTrue(s.done, s)
        per = {}
        for p in s.chunks:
            for choice in p["choices"]:
                d = per.setdefault(choice["index"], {"roles": 0, "first": None, "content": "",
                                                     "reasoning": ""})
                delta = choice.get("delta") or {}
                if d["first"] is None:
                    d["first"] = delta
                d["roles"] += "role" in delta
                d["content"] += delta.get("content") or ""
                d["reasoning"] += delta.get("reasoning_content") or ""
        self.assertEqual(sorted(per), [0, 1], s)
        for i, (content, reasoning) in enumerate([("A", "r0"), ("B", "r1")]):
            self.assertEqual(per[i]["first"].get("role"), "assistant", (i, s))
            self.assertEqual(per[i]["roles"], 1, (i, s))
            self.assertEqual((per[i]["content"], per[i]["reasoning"]), (content, reasoning), (i, s))

    def test_a_choice_that_never_finished_gets_its_finish_reason(self):
        """Some servers end with [DONE] and no finish_reason (or ""): each choice without one gets
        a chunk with it before [DONE] (tool_calls if it streamed tool calls, else stop), as the
        SDK's stream helper throws "missing finish_reason for choice 0" otherwise. A choice that
        finished is left alone."""
        def ch(i, delta, fin=None):
            return {"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1750000000,
                    "model": "m", "choices": [{"index": i, "delta": delta, "logprobs": None,
                                               "finish_reason": fin}]}
        call = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{}"}}]}
        cases = [
            ("no finish_reason", [ch(0, {"role": "assistant", "content": ""}), ch(0, {"content": "Hello"})],
             {0: "stop"}),
            ("finish_reason \"\"", [ch(0, {"role": "assistant", "content": "Hello"}), ch(0, {}, "")], {0: "stop"}),
            ("tool call", [ch(0, {"role": "assistant", "content": None}), ch(0, call)], {0: "tool_calls"}),
            ("n=2, one finished", [ch(0, {"role": "assistant", "content": "A"}), ch(1, {"role": "assistant"}),
                                   ch(1, call), ch(0, {}, "length")], {0: "length", 1: "tool_calls"}),
        ]
        for name, evs, want in cases:
            with self.subTest(case=name):
                raw = "".join("data: %s\n\n" % json.dumps(e) for e in evs) + "data: [DONE]\n\n"
                gw, b, c = self.two({"mode": "answer", "raw_sse": raw})
                s = gw.stream_all(sbody(n=len(want)))
                self.assertEqual(s.status, 200, s)
                self.assertTrue(s.done, s)
                self.assertEqual(s.errors, [], s)
                got = {}
                for p in s.chunks:
                    for choice in p["choices"]:
                        if choice.get("finish_reason"):
                            got.setdefault(choice["index"], []).append(choice["finish_reason"])
                        # the added chunk is one of the stream's
                        self.assertEqual((p["id"], p["created"], p["model"]),
                                         ("chatcmpl-f", 1750000000, "m"), p)
                self.assertEqual(got, {i: [f] for i, f in want.items()}, s)
                self.assertEqual(s.route["attempts"][0][1], "ok", s.route["raw"])


if __name__ == "__main__":
    mglib.main()

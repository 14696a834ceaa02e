#!/usr/bin/env python3
"""Stream faults beyond 20-streaming.py: how the timers of one attempt interact (an upstream that
sends its headers at once and then spends a long prefill before its first token), and an event
stream that breaks after the commit point (an event over gateway.maxEventBytes), for every client
API; and a client that leaves while its request still waits for the upstream is logged (and
counted) as an abort, not as the 502 nobody received; a compacted request asks for no more
output than compaction reserved for it; an event whose data spans several data lines reaches a
client of the upstream's own API as valid SSE; an upstream that ignores "stream": true and answers
whole reaches a streaming client as a stream of its own API; a Responses upstream's bare error
event before any content is judged by its code (a refusal reaches the client)."""

import http.client
import json
import time

import mglib
from mglib import MGTestCase, config, history, metric, provider

MSGS = [{"role": "user", "content": "hello"}]


def sbody(model="default", **extra):
    b = {"model": model, "messages": MSGS, "stream": True}
    b.update(extra)
    return b


class Timers(MGTestCase):
    def test_a_long_prefill_after_early_headers_is_within_first_token_ms(self):
        # vLLM and llama.cpp send 200 + headers as soon as the request is queued, then nothing
        # until prefill is done (or a model loads). firstTokenMs (120 s by default) is the bound
        # for that wait, not idleMs (60 s by default), which is about a stream gone quiet.
        b, c = self.mock("B"), self.mock("C")
        b.set_behavior("answer", pings=1, pacing_ms=1500)  # a comment at once, the answer 1.5 s later
        gw = self.gateway(config(providers={"b": provider(b, ["m"]), "c": provider(c, ["m"])},
                                 primary="b/m", fallbacks=["c/m"],
                                 gateway={"timeouts": {"idleMs": 600, "firstTokenMs": 4000}}))
        s = gw.stream_all(sbody(), timeout=20)
        self.assertEqual(s.status, 200, s)
        self.assertEqual(s.route["attempts"][0][:2], ("b/m", "ok"), s.route["raw"])
        self.assertEqual(len(c.requests), 0, "the first candidate was cut before its first token")

    def test_a_stall_after_the_first_token_is_still_an_idle_timeout(self):
        b = self.mock("B")
        b.set_behavior("answer", stall_after=3)
        gw = self.gateway(config(providers={"b": provider(b, ["m"])}, primary="b/m",
                                 gateway={"timeouts": {"idleMs": 600, "firstTokenMs": 4000}}))
        t0 = time.monotonic()
        s = gw.stream_all(sbody(), timeout=20)
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertTrue(s.errors, s)
        self.assertIn("idle timeout", s.errors[-1]["error"]["message"], s)


def chat_chunk(content):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


def anthropic_events(texts):
    def ev(name, obj):
        return "event: %s\ndata: %s\n\n" % (name, json.dumps(dict({"type": name}, **obj)))
    s = ev("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant",
                                         "model": "m", "content": [], "stop_reason": None,
                                         "stop_sequence": None,
                                         "usage": {"input_tokens": 1, "output_tokens": 1}}})
    s += ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    for t in texts:
        s += ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": t}})
    s += ev("content_block_stop", {"index": 0})
    s += ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": {"output_tokens": 2}})
    return s + ev("message_stop", {})


CLIENTS = {
    "chat": ("/v1/chat/completions", lambda: {"model": "default", "messages": MSGS, "stream": True}),
    "messages": ("/v1/messages", lambda: {"model": "default", "messages": MSGS, "max_tokens": 64,
                                         "stream": True}),
    "responses": ("/v1/responses", lambda: {"model": "default", "input": "hello", "stream": True}),
}


class BrokenEventStream(MGTestCase):
    def assertErrorEnd(self, s, client, what):
        """The stream ends with an error event in the client's own format."""
        self.assertEqual(s.status, 200, s)
        self.assertTrue(s.events, s)
        last = s.events[-1]
        if client == "chat":
            payload = json.loads(last["data"])
            self.assertIn("error", payload, "%s: no error event at the end: %r" % (what, s))
        elif client == "messages":
            self.assertEqual(last.get("event"), "error", "%s: no event: error at the end: %r" % (what, s))
        else:
            names = [e.get("event") for e in s.events]
            self.assertIn("error", names, "%s: no event: error: %r" % (what, s))
            self.assertNotEqual(names[-1], "response.completed", s)
        self.assertIn("size limit", s.raw.decode(), s)

    def test_an_event_over_max_event_bytes_after_content_ends_with_an_error_event(self):
        big = "x" * 20000
        raws = {
            "openai-completions": "data: %s\n\ndata: %s\n\ndata: [DONE]\n\n" % (
                json.dumps(chat_chunk("hi")), json.dumps(chat_chunk(big))),
            "anthropic-messages": anthropic_events(["hi", big]),
        }
        for api, raw in raws.items():
            b = self.mock("B")
            b.set_behavior("answer", raw_sse=raw)
            gw = self.gateway(config(providers={"b": provider(b, ["m"], api=api)}, primary="b/m",
                                     gateway={"maxEventBytes": 10000}))
            for client, (path, body) in CLIENTS.items():
                s = gw.stream_all(body(), path=path)
                self.assertErrorEnd(s, client, "%s upstream, %s client" % (api, client))
            for line in gw.wait_access(3):
                self.assertEqual(line["attempts"][-1]["outcome"], "stream_broken", line)

    def test_an_oversized_event_held_back_by_a_paused_stream_ends_it_at_once(self):
        # A client reading slowly pauses the transfer (streamBufferBytes); the chunk curl held
        # back is delivered on resume, and when it holds an event over maxEventBytes the stream
        # must end then, not when a timer (connectMs, idleMs: 30 s here) ends the transfer.
        b = self.mock("B")
        piece = "data: %s\n\n" % json.dumps(chat_chunk("y" * 800))
        b.set_behavior("answer", raw_sse=piece * 9000 + "data: " + "z" * 60000 + "\n\n")
        gw = self.gateway(config(providers={"b": provider(b, ["m"])}, primary="b/m",
                                 gateway={"maxEventBytes": 1024, "streamBufferBytes": 4096, "keepAliveMs": 0,
                                          "timeouts": {"connectMs": 30000, "idleMs": 30000}}))
        t0 = time.monotonic()
        s = mglib._stream_all(gw, sbody(), read_delay=0.002, timeout=60)
        took = time.monotonic() - t0
        self.assertErrorEnd(s, "chat", "paused, then an oversized event")
        self.assertLess(took, 15, "the stream ended only when a timer fired")
        line = gw.wait_access(1)[0]
        self.assertEqual(line["attempts"][-1]["outcome"], "stream_broken", line)


def multiline(raw):
    """The same event stream with every event's JSON data written over several data lines (legal
    SSE: a parser joins them with a line feed)."""
    out = []
    for block in raw.strip("\n").split("\n\n"):
        lines = []
        for line in block.split("\n"):
            if line.startswith("data: ") and line[6:].startswith("{"):
                pretty = json.dumps(json.loads(line[6:]), indent=1)
                lines.extend("data: " + x for x in pretty.split("\n"))
            else:
                lines.append(line)
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n\n"


class MultiLineData(MGTestCase):
    def test_an_event_over_several_data_lines_is_relayed_as_valid_sse(self):
        chat = "".join("data: %s\n\n" % json.dumps(chat_chunk(t)) for t in ("Hello", " world"))
        chat += "data: %s\n\ndata: [DONE]\n\n" % json.dumps(
            dict(chat_chunk(""), choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        raws = {"openai-completions": ("chat", multiline(chat)),
                "anthropic-messages": ("messages", multiline(anthropic_events(["Hello", " world"])))}
        for api, (client, raw) in raws.items():
            b = self.mock("B")
            b.set_behavior("answer", raw_sse=raw)
            gw = self.gateway(config(providers={"b": provider(b, ["m"], api=api)}, primary="b/m"))
            for name, (path, body) in CLIENTS.items():
                s = gw.stream_all(body(), path=path)
                self.assertEqual(s.status, 200, s)
                for e in s.events:
                    if e["data"] != "[DONE]":
                        try:
                            json.loads(e["data"])
                        except ValueError:
                            self.fail("%s upstream, %s client: an event is not JSON: %r\n%r" %
                                      (api, name, e["data"][:80], s))
                self.assertIn("world", s.raw.decode(), s)


class ClientLeavesEarly(MGTestCase):
    def test_a_client_gone_during_prefill_is_logged_as_an_abort(self):
        a = self.mock("A")
        a.set_behavior("stall")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        for i, stream in enumerate((False, True)):
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
            conn.request("POST", "/v1/chat/completions", json.dumps(sbody(stream=stream)),
                         {"Content-Type": "application/json"})
            a.wait_requests(i + 1)
            conn.close()
            a.wait_disconnect(i, timeout=3)
        for line in gw.wait_access(2, timeout=5):
            self.assertTrue(line.get("client_aborted"), line)
            self.assertEqual(line.get("status"), 499, line)
        m = gw.get("/metrics").body.decode()
        self.assertIsNone(metric(m, "moongate_requests_total", status="502"), m)
        self.assertEqual(metric(m, "moongate_requests_total", status="499"), 2.0, m)


    def test_a_client_gone_mid_stream_keeps_the_200_it_was_sent(self):
        # After the 200 and some content went out, the client leaves: the access line says 200
        # (what was sent) with client_aborted, whether MHD or the watchdog noticed first, for
        # every pair of APIs.
        a = self.mock("A")
        a.set_behavior("answer", stall_after=6, events=10)
        gw = self.gateway(config(providers={
            "oc": provider(a, ["m"], api="openai-completions"),
            "an": provider(a, ["m"], api="anthropic-messages")}, primary="oc/m"))
        bodies = {"/v1/chat/completions": {"messages": MSGS, "stream": True},
                  "/v1/responses": {"input": "hello", "stream": True},
                  "/v1/messages": {"max_tokens": 64, "messages": MSGS, "stream": True}}
        n = 0
        for path, b in bodies.items():
            for prov in ("oc", "an"):
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
                conn.request("POST", path, json.dumps(dict(b, model=prov + "/m")),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                self.assertEqual(r.status, 200)
                r.read1(64)  # some content came
                conn.close()
                a.wait_disconnect(n, timeout=3)
                n += 1
        lines = gw.wait_access(n, timeout=5)
        self.assertEqual([(l["status"], l["client_aborted"]) for l in lines], [(200, True)] * n, lines)


class CompactedOutput(MGTestCase):
    """Compaction cuts the prompt to window - reserved output - margin, the reserved output being
    the request's max tokens capped by the model's maxTokens. The compacted request must not then
    ask the upstream for more than that: prompt + max_tokens over the window is refused by vLLM
    ("However, you requested N tokens (… in the messages, … in the completion)")."""

    WINDOW, MAXTOK = 4096, 512

    def check(self, sent_json, field, asked):
        self.assertLessEqual(sent_json[field], self.MAXTOK, sent_json.get(field))
        self.assertLess(sent_json[field], asked)

    def test_the_max_tokens_of_a_compacted_request_are_capped(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"s": provider(a, [{"id": "m", "contextWindow": self.WINDOW,
                                                                "maxTokens": self.MAXTOK}])},
                                 primary="s/m"))
        msgs = history(6, 3000)
        cases = [("/v1/chat/completions", {"messages": msgs, "max_completion_tokens": 3900}),
                 ("/v1/chat/completions", {"messages": msgs, "max_tokens": 3900}),
                 ("/v1/messages", {"system": msgs[0]["content"], "messages": msgs[1:], "max_tokens": 3900}),
                 ("/v1/responses", {"instructions": msgs[0]["content"], "input": msgs[1:],
                                    "max_output_tokens": 3900})]
        for path, extra in cases:
            body = dict(extra, model="s/m")
            r = gw.post_json(path, body)
            self.assertEqual(r.status, 200, r)
            self.assertIn("drop_turns", r.header("x-moongate-compaction") or "", r)
            sent = a.requests[-1].json
            field = "max_completion_tokens" if "max_completion_tokens" in sent else "max_tokens"
            self.check(sent, field, 3900)

    def test_a_request_that_fits_keeps_its_max_tokens(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"s": provider(a, [{"id": "m", "contextWindow": self.WINDOW,
                                                                "maxTokens": self.MAXTOK}])},
                                 primary="s/m"))
        r = gw.post_json("/v1/chat/completions", {"model": "s/m", "max_tokens": 3000,
                                                  "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(a.requests[-1].json["max_tokens"], 3000, "byte for byte when it fits")

    def test_with_a_summary_too(self):
        a, s = self.mock("A"), self.mock("S")
        s.set_behavior("answer", content="They talked.")
        gw = self.gateway(config(
            providers={"s": provider(a, [{"id": "m", "contextWindow": self.WINDOW, "maxTokens": self.MAXTOK}]),
                       "loc": provider(s, [{"id": "summ", "contextWindow": 32768, "maxTokens": 1024}])},
            primary="s/m", gateway={"compaction": {"summarizer": "loc/summ", "summaryMaxTokens": 200}}))
        r = gw.post_json("/v1/chat/completions", {"model": "s/m", "max_tokens": 3900,
                                                  "messages": history(6, 3000)})
        self.assertEqual(r.status, 200, r)
        self.assertIn("summary", r.header("x-moongate-compaction") or "", r)
        self.check(a.requests[-1].json, "max_tokens", 3900)


class WholeAnswerToStream(MGTestCase):
    def test_an_upstream_that_ignores_stream_true_is_streamed_to_the_client(self):
        a = self.mock("A")
        a.set_behavior("answer", ignore_stream=True)  # its text: "mock A saw model m"
        gw = self.gateway(config(providers={
            "oc": provider(a, ["m"], api="openai-completions"),
            "or": provider(a, ["m"], api="openai-responses"),
            "an": provider(a, ["m"], api="anthropic-messages")}, primary="oc/m"))
        bodies = {
            "/v1/chat/completions": lambda m: {"model": m, "messages": MSGS, "stream": True,
                                               "stream_options": {"include_usage": True}},
            "/v1/responses": lambda m: {"model": m, "input": "hello", "stream": True},
            "/v1/messages": lambda m: {"model": m, "max_tokens": 64, "messages": MSGS, "stream": True},
        }
        for path, mk in bodies.items():
            for prov in ("oc", "or", "an"):
                with self.subTest(path=path, upstream=prov):
                    s = gw.stream_all(mk(prov + "/m"), path=path)
                    self.assertEqual(s.status, 200, s)
                    self.assertIn("text/event-stream", s.header("content-type", ""), s)
                    names = [e.get("event") for e in s.events]
                    if path == "/v1/chat/completions":
                        self.assertTrue(s.done, s)
                        self.assertEqual(s.text, "mock A saw model m", s)
                        self.assertEqual(s.chunks[0]["choices"][0]["delta"].get("role"), "assistant", s)
                        self.assertTrue([c for c in s.chunks if c.get("usage")], s)
                    elif path == "/v1/responses":
                        self.assertEqual(names[0], "response.created", s)
                        self.assertEqual(names[-1], "response.completed", s)
                        text = "".join(p.get("delta", "") for p in s.payloads
                                       if isinstance(p, dict) and p.get("type") == "response.output_text.delta")
                        self.assertEqual(text, "mock A saw model m", s)
                    else:
                        self.assertEqual(names[0], "message_start", s)
                        self.assertEqual(names[-1], "message_stop", s)
                        text = "".join(p["delta"].get("text", "") for p in s.payloads
                                       if isinstance(p, dict) and p.get("type") == "content_block_delta")
                        self.assertEqual(text, "mock A saw model m", s)
                    self.assertEqual(s.header("x-moongate-model"), prov + "/m", s)
        lines = gw.wait_access(9)
        self.assertEqual({(l["status"], l["attempts"][0]["outcome"]) for l in lines}, {(200, "ok")}, lines)
        self.assertTrue(all(l["tokens"]["out"] > 0 for l in lines), lines)


class RefusalAsErrorEvent(MGTestCase):
    """A Responses upstream refuses a streamed request before any content with the bare error
    event of PROTOCOLS A.2 ({type: "error", code, message, param}, no nested error, no
    response.failed): judged by its code as response.failed's error is. A refusal or a bad request
    goes back to the client as a 400 with the upstream's message, is not tried elsewhere, and
    cools nothing down; an error no rule knows still moves on as stream_broken."""

    SHELL = {"id": "resp_up9", "object": "response", "created_at": 1, "status": "in_progress", "model": "m",
             "output": [], "usage": None}
    FLAGGED = "Invalid prompt: your prompt was flagged as potentially violating our usage policy."
    NO_OUTPUT = "No tool output found for function call call_1."

    def stream(self, *events):
        evs = [("response.created", {"type": "response.created", "sequence_number": 0, "response": self.SHELL})]
        evs += [(e["type"], dict(e, sequence_number=i + 1)) for i, e in enumerate(events)]
        return "".join("event: %s\ndata: %s\n\n" % (n, json.dumps(d)) for n, d in evs)

    def flat(self, code, message):
        return self.stream({"type": "error", "code": code, "message": message, "param": None})

    def failed(self, code, message):
        return self.stream({"type": "response.failed",
                            "response": dict(self.SHELL, status="failed", error={"code": code, "message": message})})

    def test_a_flat_error_event_first_is_judged_by_its_code(self):
        a, b = self.mock("A"), self.mock("B")
        gw = self.gateway(config(providers={"or": provider(a, ["m"], api="openai-responses"),
                                            "b": provider(b, ["m"])}, primary="or/m", fallbacks=["b/m"]))
        bodies = {"/v1/responses": {"model": "default", "input": "hi", "stream": True},
                  "/v1/chat/completions": sbody()}
        cases = [("flat", self.flat("invalid_prompt", self.FLAGGED), "content_filter", self.FLAGGED),
                 ("response.failed", self.failed("invalid_prompt", self.FLAGGED), "content_filter", self.FLAGGED),
                 ("flat", self.flat("invalid_request_error", self.NO_OUTPUT), "bad_request", self.NO_OUTPUT),
                 ("response.failed", self.failed("invalid_request_error", self.NO_OUTPUT), "bad_request",
                  self.NO_OUTPUT)]
        for path, body in bodies.items():
            for shape, raw, want, message in cases:
                with self.subTest(path=path, shape=shape, code=want):
                    a.push_behavior("answer", raw_sse=raw)
                    r = gw.post_json(path, body)
                    err = self.assertOpenAIError(r, 400, want)
                    self.assertIn(message, err["message"], r)
                    self.assertRoute(r, [("or/m", want, 200)])
        self.assertEqual(len(b.requests), 0, "a refusal is not the next candidate's to answer")
        health = json.loads(gw.get("/admin/health").body)
        model = next(m for p in health["providers"] for m in p["models"] if m["ref"] == "or/m")
        self.assertEqual((model["state"], model["consecutive_failures"]), ("healthy", 0), model)
        # A flat error no rule knows is still the upstream's failure: the next candidate answers.
        a.push_behavior("answer", raw_sse=self.flat("server_error", "The server had an error"))
        s = gw.stream_all(sbody())
        self.assertEqual((s.status, s.header("x-moongate-model")), (200, "b/m"), s)
        self.assertEqual(s.route["attempts"][0][1], "stream_broken", s.route["raw"])


if __name__ == "__main__":
    mglib.main()

#!/usr/bin/env python3
"""The access log: one JSON line per request with id, model asked, attempts (outcome, status,
latency), status, served model and total time; every line JSON; never a key or an Authorization
value anywhere (issue 2, item 8)."""

import json
import socket
import struct
import os

import mglib
from mglib import MGTestCase, config, provider

MSGS = [{"role": "user", "content": "hello"}]
CANARY_LITERAL = "sk-canary-XYZ123"
CANARY_ENV = "sk-canary-ENV456"
CANARY_HEADER = "hdr-canary-789"
CANARY_CLIENT = "client-canary-555"
CANARY_CLIENT_X = "client-xkey-canary-666"
ALL_CANARIES = (CANARY_LITERAL, CANARY_ENV, CANARY_HEADER, CANARY_CLIENT, CANARY_CLIENT_X)


class AccessLog(MGTestCase):
    def setUp(self):
        self.a, self.b, self.c = self.down(), self.mock("B"), self.mock("C")
        self.b.set_behavior("fail", status=503)
        self.gw = self.gateway(config(
            providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"]),
                       "c": provider(self.c, ["m"])},
            primary="a/m", fallbacks=["b/m", "c/m"], aliases={"fast": "c/m"}))

    def test_one_line_for_a_fallback_request(self):
        r = self.gw.chat("default")
        self.assertEqual(r.status, 200, r)
        (line,) = self.gw.wait_access(1)
        self.assertIsInstance(line.get("id"), str)
        self.assertTrue(line["id"])
        self.assertEqual(line.get("method"), "POST")
        self.assertEqual(line.get("path"), "/v1/chat/completions")
        self.assertEqual(line.get("model"), "default")
        self.assertEqual(line.get("status"), 200)
        self.assertEqual(line.get("served"), "c/m")
        self.assertIsInstance(line.get("total_ms"), (int, float))
        self.assertGreaterEqual(line["total_ms"], 0)
        attempts = line.get("attempts")
        self.assertIsInstance(attempts, list, line)
        self.assertEqual([(x.get("model"), x.get("outcome")) for x in attempts],
                         [("a/m", "connect_error"), ("b/m", "overloaded"), ("c/m", "ok")], line)
        self.assertEqual([x.get("status") for x in attempts][1:], [503, 200], line)
        self.assertIn(attempts[0].get("status"), (None, 0), line)
        for x in attempts:
            self.assertIsInstance(x.get("ms"), (int, float), x)
            self.assertGreaterEqual(x["ms"], 0)
            self.assertLessEqual(x["ms"], line["total_ms"] + 1)
        # The route header and the log tell the same story.
        self.assertEqual([(m, o) for m, o, _ in r.route["attempts"]],
                         [(x["model"], x["outcome"]) for x in attempts])

    def test_alias_is_logged_as_asked(self):
        self.gw.chat("fast")
        (line,) = self.gw.wait_access(1)
        self.assertEqual(line["model"], "fast")
        self.assertEqual(line["served"], "c/m")

    def test_error_requests_are_logged_too(self):
        self.gw.chat("nope/x")                                   # 404 unknown model
        self.gw.post_json("/v1/chat/completions", b"{bad")       # 400
        self.gw.get("/v1/chat/completions")                      # 405
        lines = self.gw.wait_access(3)
        self.assertEqual([l["status"] for l in lines], [404, 400, 405], lines)
        for l in lines:
            self.assertIn(l.get("served"), (None,), l)
            self.assertEqual(l.get("attempts"), [], l)
        self.assertEqual(lines[0]["model"], "nope/x")

    def test_api_is_named_only_for_api_requests(self):
        self.gw.chat("default")
        self.gw.get("/v1/models")
        self.gw.get("/admin/health")
        self.gw.get("/nowhere")
        lines = self.gw.wait_access(4)
        self.assertEqual([(l["path"], l.get("api")) for l in lines],
                         [("/v1/chat/completions", "chat"), ("/v1/models", None), ("/admin/health", None),
                          ("/nowhere", None)], lines)

    def test_ids_are_unique(self):
        for _ in range(5):
            self.gw.chat("fast")
        lines = self.gw.wait_access(5)
        ids = [l["id"] for l in lines]
        self.assertEqual(len(set(ids)), 5, ids)

    def test_every_line_is_a_json_object(self):
        self.gw.chat("default")
        self.gw.chat("nope/x")
        self.gw.wait_access(2)
        for l in self.gw.log_lines():
            self.assertNotIn("_raw", l, "not a JSON object: %r" % l.get("_raw"))
            self.assertIn("msg", l, l)


class Secrets(MGTestCase):
    def test_no_key_or_authorization_value_in_any_output(self):
        a, b, c = self.mock("A"), self.mock("B"), self.mock("C")
        a.set_behavior("fail", status=401)          # an auth failure is where keys get logged
        b.set_behavior("fail", status=500)
        cfg = config(providers={
            "a": provider(a, ["m"], api_key=CANARY_LITERAL),
            "b": provider(b, ["m"], api_key="${MG_IT_CANARY_ENV}",
                          headers={"X-Secret-Header": CANARY_HEADER}),
            "c": provider(c, ["m"], api_key="${MG_IT_CANARY_ENV}")},
            primary="a/m", fallbacks=["b/m", "c/m"])
        gw = self.gateway(cfg, env={"MG_IT_CANARY_ENV": CANARY_ENV}, secrets=ALL_CANARIES)
        hdrs = {"Authorization": "Bearer " + CANARY_CLIENT, "x-api-key": CANARY_CLIENT_X}
        self.assertEqual(gw.chat("default", headers=hdrs).status, 200)
        c.set_behavior("fail", status=503)
        self.assertEqual(gw.chat("default", headers=hdrs).status, 502)
        gw.chat("nope/x", headers=hdrs)
        gw.wait_access(3)
        # The check itself runs when the test ends (MGTestCase stops the gateway and greps all of
        # its output for every canary); do it here too for a clear message.
        text = gw.all_output()
        for canary in ALL_CANARIES:
            self.assertNotIn(canary, text)
        # The upstream got the right keys all the same.
        self.assertEqual(a.requests[0].headers["authorization"], "Bearer " + CANARY_LITERAL)
        self.assertEqual(b.requests[0].headers["x-secret-header"], CANARY_HEADER)

    def test_a_key_echoed_by_an_upstream_is_not_logged(self):
        # Some servers echo the request (headers included) in their error text. The gateway knows
        # its keys, so whatever it logs or returns of an upstream's words must not carry them.
        a, b = self.mock("A"), self.mock("B")
        a.set_behavior("fail", status=500, body={"error": {
            "message": "bad upstream; request had Authorization: Bearer " + CANARY_ENV,
            "type": "server_error", "code": None}})
        b.set_behavior("fail", status=503, body="proxy error for key " + CANARY_ENV)
        gw = self.gateway(config(providers={
            "a": provider(a, ["m"], api_key="${MG_IT_CANARY_ENV}"),
            "b": provider(b, ["m"], api_key="${MG_IT_CANARY_ENV}")},
            primary="a/m", fallbacks=["b/m"]), env={"MG_IT_CANARY_ENV": CANARY_ENV},
            secrets=ALL_CANARIES)
        r = gw.chat("default")
        self.assertEqual(r.status, 502, r)
        self.assertNotIn(CANARY_ENV, r.body.decode(), "the 502 hands the key to the client")
        gw.wait_access(1)
        self.assertNotIn(CANARY_ENV, gw.all_output())

    def test_a_key_echoed_in_an_upstream_400_is_not_passed_to_the_client(self):
        # A 400 is the request's fault and goes back to the client as the upstream said it; the
        # provider's key and header values must not go with it.
        a = self.mock("A")
        a.set_behavior("fail", status=400, body={"error": {
            "message": "bad request; you sent Authorization: Bearer %s and X-Org: %s" % (CANARY_ENV, CANARY_ENV + "-org"),
            "type": "invalid_request_error", "code": None}})
        gw = self.gateway(config(providers={
            "a": provider(a, ["m"], api_key="${MG_IT_CANARY_ENV}", headers={"X-Org": CANARY_ENV + "-org"})},
            primary="a/m"), env={"MG_IT_CANARY_ENV": CANARY_ENV}, secrets=ALL_CANARIES)
        r = gw.chat("default")
        self.assertEqual(r.status, 400, r)
        msg = r.json["error"]["message"]
        self.assertNotIn(CANARY_ENV, msg)
        self.assertEqual(msg, "bad request; you sent Authorization: Bearer [redacted] and X-Org: [redacted]", r)

    def _echoing(self, api="openai-completions"):
        a = self.mock("A")
        gw = self.gateway(config(providers={
            "a": provider(a, ["m"], api=api, api_key="${MG_IT_CANARY_ENV}")}, primary="a/m"),
            env={"MG_IT_CANARY_ENV": CANARY_ENV}, secrets=ALL_CANARIES)
        return a, gw

    def assertNoKeyHead(self, text, where):
        # Not even the head of one: the message is cut to fit after the key is replaced.
        self.assertNotIn(CANARY_ENV[:8], text, "%s carries (part of) the key" % where)

    def test_a_key_echoed_in_a_stream_error_is_redacted_everywhere(self):
        # An upstream (a debugging proxy, an echoing server) puts the credentials it got in an
        # error event inside its 200 stream: before any content (the gateway's own 502/400),
        # after it (the client's stream ends with an error event, translated or as it came).
        a, gw = self._echoing()
        echo = {"message": "auth failed for header Authorization: Bearer " + CANARY_ENV,
                "type": "invalid_request_error"}
        a.set_behavior("answer", error_after=0, error=echo)
        r = gw.chat("default", stream=True)
        self.assertIn(r.status, (400, 502), r)
        self.assertIn("Bearer [redacted]", r.body.decode(), r)
        self.assertNoKeyHead(r.body.decode(), "the reply")
        a.set_behavior("answer", error_after=2, error=echo)
        r = gw.post_json("/v1/messages", {"model": "default", "stream": True, "max_tokens": 50,
                                          "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r)
        self.assertIn("Bearer [redacted]", r.body.decode(), r)
        self.assertNoKeyHead(r.body.decode(), "the translated stream")
        r = gw.chat("default", stream=True)  # Chat to Chat: the error chunk the gateway writes
        self.assertEqual(r.status, 200, r)
        self.assertIn("Bearer [redacted]", r.body.decode(), r)
        self.assertNoKeyHead(r.body.decode(), "the Chat stream")
        h = gw.get("/admin/health")
        self.assertNoKeyHead(h.body.decode(), "/admin/health")
        gw.wait_access(3)
        self.assertNoKeyHead(gw.all_output(), "the log")

    def test_short_keys_and_a_summarizers_key_are_redacted(self):
        # A 7-byte key (LiteLLM's example "sk-1234") echoed in a 401; a summarizer's key echoed
        # in its 200-with-error answer (the access log's compaction_note, the warn line).
        a, s = self.mock("A"), self.mock("S")
        a.set_behavior("fail", status=401, body={"error": {"message": "Incorrect API key provided: Bearer sk-1234"}})
        s.set_behavior("fail", status=200, body={"error": {"message": "key Bearer " + CANARY_ENV + " may not summarize"}})
        gw = self.gateway(config(providers={
            "a": provider(a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}], api_key="sk-1234"),
            "b": provider(a, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}]),
            "s": provider(s, ["sum"], api_key="${MG_IT_CANARY_ENV}")}, primary="a/m",
            gateway={"compaction": {"summarizer": "s/sum"}}), env={"MG_IT_CANARY_ENV": CANARY_ENV}, secrets=[CANARY_ENV])
        r = gw.chat("a/m")
        self.assertEqual(r.status, 502, r)
        self.assertIn("Bearer [redacted]", r.body.decode(), r)
        self.assertNotIn("sk-1234", r.body.decode() + gw.all_output())
        a.set_behavior("answer")
        long = [{"role": "user" if i % 2 == 0 else "assistant", "content": "turn %d " % i + "x " * 600} for i in range(20)]
        r = gw.post_json("/v1/chat/completions", {"model": "b/m", "messages": long + [{"role": "user", "content": "last"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(s.requests), 1)
        line = gw.wait_access(2)[1]
        self.assertIn("[redacted]", line["attempts"][0].get("compaction_note", ""), line)
        self.assertNotIn(CANARY_ENV, gw.all_output())

    def test_a_key_in_an_error_event_passed_as_it_came_is_redacted(self):
        # Same API (Anthropic to Anthropic): the upstream's error event goes out with its own
        # bytes, but for the key.
        a, gw = self._echoing("anthropic-messages")
        a.set_behavior("answer", error_after=4, error_style="anthropic",
                       error={"message": "overloaded; you sent x-api-key: " + CANARY_ENV})
        r = gw.post_json("/v1/messages", {"model": "default", "stream": True, "max_tokens": 50,
                                          "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r)
        self.assertIn("x-api-key: [redacted]", r.body.decode(), r)
        self.assertNoKeyHead(r.body.decode(), "the stream")

    def test_a_key_cut_by_the_message_length_leaves_no_head(self):
        # A plain-text error that echoes the request head, padded so that the key straddles
        # where the message is cut (511 bytes as the same API's message, 500 re-encoded for
        # another API and in the log): the key is replaced first, then the text cut.
        a, gw = self._echoing()
        for pad, path, extra in ((478, "/v1/chat/completions", {}),
                                 (468, "/v1/messages", {"max_tokens": 20})):
            a.set_behavior("fail", status=400, content_type="text/plain",
                           body="x" * pad + "Authorization: Bearer " + CANARY_ENV + "\n")
            r = gw.post_json(path, dict(model="default", messages=[{"role": "user", "content": "hi"}], **extra))
            self.assertEqual(r.status, 400, r)
            self.assertNoKeyHead(r.body.decode(), "the reply to " + path)
        gw.wait_access(2)
        self.assertNoKeyHead(gw.all_output(), "the log")

    def test_log_file(self):
        c = self.mock("C")
        cfg = config(providers={"c": provider(c, ["m"], api_key=CANARY_LITERAL)}, primary="c/m",
                     gateway={"log": {"path": "access.log"}})
        gw = self.gateway(cfg, secrets=ALL_CANARIES)
        self.assertEqual(gw.chat("default",
                                 headers={"Authorization": "Bearer " + CANARY_CLIENT}).status, 200)
        (line,) = gw.wait_access(1)
        self.assertEqual(line["served"], "c/m")
        self.assertTrue(os.path.exists(gw.log_file_path()))
        with open(gw.log_file_path()) as f:
            text = f.read()
        for canary in ALL_CANARIES:
            self.assertNotIn(canary, text)

    def test_lines_are_valid_utf8_whatever_the_client_sent(self):
        c = self.mock("C")
        gw = self.gateway(config(providers={"c": provider(c, ["m"])}, primary="c/m",
                                 gateway={"log": {"path": "access.log"}}))
        body = b'{"model":"x\xff\xc3(y","messages":[{"role":"user","content":"hi"}]}'
        self.assertEqual(gw.post_json("/v1/chat/completions", body).status, 404)
        self.assertEqual(gw.get("/v1/models/%ff%fe").status, 404)
        gw.wait_access(2)
        with open(gw.log_file_path(), "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")  # strict: a raw 0xFF byte fails here
        lines = [json.loads(l) for l in text.splitlines() if '"msg":"access"' in l]
        self.assertEqual(lines[0]["model"], "x\ufffd\ufffd(y", lines[0])
        self.assertEqual(lines[1]["path"], "/v1/models/\ufffd\ufffd", lines[1])


class ContentLogging(MGTestCase):
    """gateway.log.content: prompt and answer text in the access line, off by default, capped."""

    def test_off_by_default(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        self.assertEqual(gw.chat("default", content="secret question").status, 200)
        (line,) = gw.wait_access(1)
        self.assertNotIn("prompt", line)
        self.assertNotIn("answer", line)
        self.assertNotIn("secret question", gw.all_output())

    def test_prompt_and_answer_whole_and_streamed_in_each_api(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"log": {"content": True}}))
        want = "mock A saw model m"
        r = gw.chat("default", content="question one")
        self.assertEqual(r.status, 200, r)
        line = gw.wait_access(1)[-1]
        self.assertIn("question one", line["prompt"])
        self.assertEqual(line["answer"], want)
        s = gw.stream_all({"model": "default", "stream": True, "messages": [
            {"role": "user", "content": "question two"}]})
        self.assertEqual(s.status, 200)
        line = gw.wait_access(2)[-1]
        self.assertIn("question two", line["prompt"])
        self.assertEqual(line["answer"], s.text)
        self.assertTrue(line["answer"].startswith(want), line)
        # Translated: an Anthropic client on an OpenAI upstream, streamed and whole.
        body = {"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "question three"}]}
        s = gw.stream_all(dict(body, stream=True), path="/v1/messages")
        self.assertEqual(s.status, 200)
        line = gw.wait_access(3)[-1]
        self.assertEqual(line["api"], "messages")
        events = [json.loads(e["data"]) for e in mglib.parse_sse(s.raw)[0]]
        streamed = "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")
        self.assertTrue(streamed.startswith(want), streamed)
        self.assertEqual(line["answer"], streamed)
        r = gw.post_json("/v1/messages", body)
        self.assertEqual(r.status, 200, r)
        line = gw.wait_access(4)[-1]
        self.assertEqual((line["api"], line["answer"]), ("messages", want))
        self.assertIn("question three", line["prompt"])

    def test_capped_at_a_character_boundary(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"log": {"content": True, "contentMaxBytes": 40}}))
        r = gw.chat("default", content="\u00e9" * 100)   # two bytes each
        self.assertEqual(r.status, 200, r)
        (line,) = gw.wait_access(1)
        self.assertLessEqual(len(line["prompt"].encode()), 40)
        self.assertGreater(line["prompt_cut_bytes"], 0)
        self.assertEqual(line["answer"], "mock A saw model m")   # 18 bytes: under the cap
        self.assertNotIn("answer_cut", line)



class ClientsLeaving(MGTestCase):
    def test_clients_leaving_streams_are_not_warnings(self):
        # A client that leaves a stream midway is routine (its access line says client_aborted):
        # libmicrohttpd's failed sends to it are not warnings, one per client.
        a = self.mock("A", behavior={"mode": "answer", "events": 40, "pacing_ms": 20})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        body = json.dumps({"model": "default", "stream": True, "messages": [{"role": "user", "content": "x"}]}).encode()
        for i in range(6):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            s.recv(300)
            if i % 2:  # an abortive close (RST) for half of them
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        lines = gw.wait_access(6)
        self.assertTrue(all(l.get("client_aborted") for l in lines), lines)
        warns = [l for l in gw.log_lines() if l.get("level") == "warn" and l.get("msg") == "http"]
        self.assertEqual(warns, [])


class CacheAccounting(MGTestCase):
    """Prompt-cache writes cost what the catalog says (cacheWrite, 25% over input for Claude):
    counted apart from input and reads, in the access line, the metrics and the key's budget."""
    COST = {"input": 1, "output": 2, "cacheRead": 0.1, "cacheWrite": 10}
    USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 1000,
             "cache_read_input_tokens": 2000}

    WANT_COST = (10 * 1 + 5 * 2 + 2000 * 0.1 + 1000 * 10) / 1e6

    def charges(self, gw, a, model, whole, sse, paths):
        """Each path whole and streamed (the upstream answering whole, or sse): 10 tokens in, 5
        out, 2000 read from the cache, 1000 written to it, at COST. Returns the whole answers."""
        answers = {}
        cases = [(p, False) for p in paths] + [(p, True) for p in paths]
        for i, (path, stream) in enumerate(cases):
            with self.subTest(path=path, stream=stream):
                body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
                if stream:
                    a.push_behavior("answer", raw_sse=sse)
                    s = gw.stream_all(dict(body, stream=True), path=path)
                    self.assertEqual(s.status, 200, s)
                else:
                    a.push_behavior("badjson", body=json.dumps(whole).encode())
                    r = gw.post_json(path, body)
                    self.assertEqual(r.status, 200, r)
                    answers[path] = r
                line = gw.wait_access(i + 1)[i]
                self.assertEqual(line["tokens"], {"in": 10, "out": 5, "cached": 2000, "cache_write": 1000}, line)
                self.assertAlmostEqual(line["cost"], self.WANT_COST, places=9)
        return answers

    def test_cache_writes_are_charged_at_their_price(self):
        a = self.mock("A")
        m = {"id": "m", "name": "m", "contextWindow": 32768, "maxTokens": 4096, "cost": self.COST}
        gw = self.gateway(config(providers={"an": provider(a, [m], api="anthropic-messages")}, primary="an/m"))
        whole = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                 "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": self.USAGE}
        ev = lambda name, d: "event: %s\ndata: %s\n\n" % (name, json.dumps(dict(d, type=name)))  # noqa: E731
        sse = (ev("message_start", {"message": dict(whole, content=[], stop_reason=None,
                                                    usage=dict(self.USAGE, output_tokens=1))}) +
               ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}) +
               ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}}) +
               ev("content_block_stop", {"index": 0}) +
               ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}) +
               ev("message_stop", {}))
        self.charges(gw, a, "an/m", whole, sse, ("/v1/messages", "/v1/chat/completions"))
        text = gw.get("/metrics").body.decode()
        for direction, n in (("in", 40), ("out", 20), ("cache_read", 8000), ("cache_write", 4000)):
            self.assertEqual(mglib.metric(text, "moongate_tokens_total", model="an/m", direction=direction), n, direction)
        self.assertAlmostEqual(mglib.metric(text, "moongate_cost_total", model="an/m"), 4 * self.WANT_COST, places=9)


    def test_openrouter_cache_writes_are_charged_at_their_price(self):
        # OpenRouter (Chat Completions) counts cache writes in prompt_tokens_details beside the
        # reads, both inside prompt_tokens: 10 plain input tokens here.
        a = self.mock("A")
        m = {"id": "m", "name": "m", "contextWindow": 32768, "maxTokens": 4096, "cost": self.COST}
        gw = self.gateway(config(providers={"or": provider(a, [m])}, primary="or/m"))
        usage = {"prompt_tokens": 3010, "completion_tokens": 5, "total_tokens": 3015,
                 "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 1000}}
        whole = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "usage": usage,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
        chunk = lambda d: "data: %s\n\n" % json.dumps(dict({"id": "c1", "object": "chat.completion.chunk",  # noqa: E731
                                                            "created": 1, "model": "m"}, **d))
        sse = (chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]}) +
               chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) +
               chunk({"choices": [], "usage": usage}) + "data: [DONE]\n\n")
        r = self.charges(gw, a, "or/m", whole, sse, ("/v1/chat/completions", "/v1/messages"))["/v1/messages"]
        self.assertEqual((r.json["usage"]["input_tokens"], r.json["usage"]["cache_creation_input_tokens"]), (10, 1000), r)


if __name__ == "__main__":
    mglib.main()

#!/usr/bin/env python3
"""Client keys (issue 8 item 3) through the real binary: 401 without or with an unknown key,
403 for a model or region the key may not use, 429 with retry-after over the requests-per-minute
limit, Bearer and x-api-key both accepted, the key id (never the key) in the log, and the key
never forwarded upstream. Errors are in the client API's own format."""

import hashlib
import json
import os

import mglib
from mglib import MGTestCase, config, provider

GOOD = "mgk-canary-alpha-123"
HASHED = "mgk-canary-beta-456"


class Keys(MGTestCase):
    def setUp(self):
        self.a, self.b = self.mock("A"), self.mock("B")
        keys = [
            {"id": "alpha", "key": "${MG_IT_CLIENT_KEY}", "models": ["a/m", "default"], "rpm": 3},
            {"id": "beta", "sha256": hashlib.sha256(HASHED.encode()).hexdigest(), "regions": ["eu"]},
        ]
        self.gw = self.gateway(
            config(providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"])}, primary="a/m",
                   gateway={"keys": keys, "providers": {"b": {"region": "us", "tags": ["hosted"]}}}),
            env={"MG_IT_CLIENT_KEY": GOOD}, secrets=[GOOD, HASHED])

    def auth(self, key):
        return {"Authorization": "Bearer " + key}

    def test_missing_and_unknown_keys_are_401(self):
        self.assertOpenAIError(self.gw.chat("a/m"), 401, "missing_api_key")
        self.assertOpenAIError(self.gw.chat("a/m", headers=self.auth("nope")), 401, "invalid_api_key")
        r = self.gw.post_json("/v1/messages", {"model": "a/m", "max_tokens": 5,
                                               "messages": [{"role": "user", "content": "x"}]},
                              headers={"x-api-key": "nope"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json["error"]["type"], "authentication_error", r)
        self.assertEqual(len(self.a.requests), 0)

    def test_allowed_request_passes_and_the_key_stays_home(self):
        r = self.gw.chat("a/m", headers=self.auth(GOOD))
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(GOOD, repr(self.a.requests[-1].headers))
        line = self.gw.wait_access(1)[0]
        self.assertEqual(line.get("key"), "alpha", line)
        r = self.gw.post_json("/v1/messages", {"model": "b/m", "max_tokens": 5,
                                               "messages": [{"role": "user", "content": "x"}]},
                              headers={"x-api-key": HASHED, "x-moongate-region": "eu"})
        self.assertEqual(r.status, 403, r)  # beta: b is in "us", beta may only use "eu"
        self.assertEqual(r.json["error"]["type"], "permission_error", r)

    def test_model_not_allowed_is_403(self):
        err = self.assertOpenAIError(self.gw.chat("b/m", headers=self.auth(GOOD)), 403, "model_not_allowed")
        self.assertIn("a/m", err["message"])
        self.assertNotIn(GOOD, err["message"])

    def test_the_model_list_shows_what_the_key_may_use(self):
        ids = lambda r: [m["id"] for m in r.json["data"]]
        r = self.gw.get("/v1/models", headers=self.auth(GOOD))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(ids(r), ["a/m", "default"], "alpha may use a/m and default only")
        r = self.gw.get("/v1/models", headers={"x-api-key": GOOD, "anthropic-version": "2023-06-01"})
        self.assertEqual((ids(r), r.json["first_id"], r.json["last_id"], r.json["has_more"]),
                         (["a/m", "default"], "a/m", "default", False), r)
        r = self.gw.get("/v1/models?limit=1&after_id=a/m", headers={"x-api-key": GOOD, "anthropic-version": "2023-06-01"})
        self.assertEqual((ids(r), r.json["has_more"]), (["default"], False), r)
        self.assertOpenAIError(self.gw.get("/v1/models/b/m", headers=self.auth(GOOD)), 404, "model_not_found")
        self.assertEqual(self.gw.get("/v1/models/a/m", headers=self.auth(GOOD)).status, 200)
        self.assertIn("b/m", ids(self.gw.get("/v1/models", headers=self.auth(HASHED))), "beta lists no models")

    def test_over_the_rpm_limit_is_429_with_retry_after(self):
        for _ in range(3):
            self.assertEqual(self.gw.chat("a/m", headers=self.auth(GOOD)).status, 200)
        r = self.gw.chat("a/m", headers=self.auth(GOOD))
        self.assertOpenAIError(r, 429, "rate_limit_exceeded")
        self.assertGreaterEqual(int(r.header("retry-after")), 1, r)
        self.assertEqual(len(self.a.requests), 3, "the refused request never left")

    def test_requests_the_gateway_refuses_itself_take_nothing_of_rpm(self):
        # An image for a text-only model: refused before anything leaves (400), and the rpm token
        # goes back.
        pic = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
        for _ in range(3):
            r = self.gw.chat("a/m", content=pic, headers=self.auth(GOOD))
            self.assertOpenAIError(r, 400, "unsupported_request")
        for _ in range(3):
            self.assertEqual(self.gw.chat("a/m", headers=self.auth(GOOD)).status, 200, "rpm untouched")
        self.assertOpenAIError(self.gw.chat("a/m", headers=self.auth(GOOD)), 429, "rate_limit_exceeded")
        self.assertEqual(len(self.a.requests), 3)

    def test_token_counts_need_access_but_take_nothing_of_the_limits(self):
        body = {"model": "a/m", "messages": [{"role": "user", "content": "x"}]}
        for _ in range(5):  # over rpm 3, and still counted: nothing goes upstream
            r = self.gw.post_json("/v1/messages/count_tokens", body, headers={"x-api-key": GOOD})
            self.assertEqual(r.status, 200, r)
        self.assertEqual(self.gw.chat("a/m", headers=self.auth(GOOD)).status, 200, "rpm untouched")
        r = self.gw.post_json("/v1/messages/count_tokens", dict(body, model="b/m"), headers={"x-api-key": GOOD})
        self.assertEqual((r.status, r.json["error"]["type"]), (403, "permission_error"), r)
        r = self.gw.post_json("/v1/messages/count_tokens", body, headers={"x-api-key": "nope"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(len(self.a.requests), 1)


class StreamCharges(MGTestCase):
    """OPERATIONS.md: tpm is charged with the tokens a request used. A stream that reached the
    client and then ended before the upstream's usage (the client hung up, the upstream cut it)
    used them too: it is charged with the estimate, or a key holder could spend without limit by
    leaving each stream early. The policy's on_complete sees what is charged."""

    POLICY = ('function route(req) if req.model == "an/m" then return {"an/m"} end return {"a/m"} end\n'
              'function on_complete(req, r)\n'
              '  gw.log("info", "complete %s %s %s %s %s %s %s", tostring(r.model), tostring(r.prompt_tokens),\n'
              '         tostring(r.completion_tokens), tostring(r.estimated), tostring(req.key_id),\n'
              '         tostring(req.model), tostring(r.status))\n'
              'end\n')

    def setUp(self):
        self.a = self.mock("A")
        ids = ("gone", "cut", "odd", "whole")
        keys = [{"id": k, "key": "${MG_IT_K_%s}" % k.upper(), "tpm": 500} for k in ids]
        self.gw = self.gateway(config(providers={"a": provider(self.a, ["m"]),
                                                 "an": provider(self.a, ["m"], api="anthropic-messages")},
                                      primary="a/m", gateway={"keys": keys, "policy": "p.lua",
                                                              # undecodable requests pass only with the filters off
                                                              "providers": {"a": {"safety": False}}}),
                               env={"MG_IT_K_%s" % k.upper(): "mgk-%s-1" % k for k in ids}, start=False)
        with open(os.path.join(self.gw.dir, "p.lua"), "w") as f:
            f.write(self.POLICY)
        self.gw.start()
        self.body = {"model": "a/m", "stream": True,
                     "messages": [{"role": "user", "content": "word " * 1500}]}  # ~1,900 tokens

    def charged(self, key_id):
        line = self.gw.wait_access(1, pred=lambda l: l.get("key") == key_id)[0]
        r = self.gw.chat("a/m", headers={"Authorization": "Bearer mgk-%s-1" % key_id})
        self.assertOpenAIError(r, 429, "tokens_limit_exceeded")
        return line

    def leave(self, body, key_id):
        gen = self.gw.stream("/v1/chat/completions", body, headers={"Authorization": "Bearer mgk-%s-1" % key_id})
        status, _ = next(gen)
        self.assertEqual(status, 200)
        got = b""
        while got.count(b"\n\n") < 3:
            got += next(gen)
        gen.close()  # the client hangs up mid-stream

    def test_a_stream_the_client_leaves_is_charged(self):
        self.a.set_behavior("answer", events=40, pacing_ms=50)
        self.leave(self.body, "gone")
        line = self.charged("gone")
        self.assertGreater(line["tokens"]["in"], 1000, line)
        self.assertTrue(line["tokens"].get("estimated"), line)
        done = self.gw.wait_lines(lambda l: "complete" in l.get("detail", ""), what="on_complete line")[0]
        words = done["detail"].split()
        words = words[words.index("complete"):]  # after the policy's name
        self.assertEqual((words[1], words[4]), ("a/m", "true"), done)
        self.assertGreater(int(words[2]), 1000, done)
        # The refusal charged() made: on_complete still knows whose and for what.
        refused = self.gw.wait_lines(lambda l: "complete" in l.get("detail", "") and l["detail"].endswith(" 429"),
                                     what="on_complete of the refusal")[0]
        self.assertTrue(refused["detail"].endswith("gone a/m 429"), refused)

    def test_a_request_the_decoder_cannot_read_is_charged_by_its_size(self):
        # Passed through to its own API as it came (an assistant tool call without an id; the
        # provider's safety filters are off): no estimate of its messages, so its size stands for them.
        self.a.set_behavior("answer", events=40, pacing_ms=50)
        body = dict(self.body, messages=self.body["messages"] + [
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": "go on"}])
        self.leave(body, "odd")
        line = self.charged("odd")
        self.assertGreater(line["tokens"]["in"], 1000, line)

    def test_a_stream_the_upstream_cuts_is_charged_what_it_reported(self):
        # Anthropic's message_start says the input tokens: those are charged, not an estimate.
        self.a.set_behavior("answer", events=20, close_after=6)
        gen = self.gw.stream("/v1/chat/completions", dict(self.body, model="an/m"),
                             headers={"Authorization": "Bearer mgk-cut-1"})
        status, _ = next(gen)
        self.assertEqual(status, 200)
        self.assertIn(b"stream_broken", b"".join(gen))
        line = self.charged("cut")  # the refused request never left: requests[-1] is the cut one
        reported = max(1, len(json.dumps(self.a.requests[-1].json["messages"])) // 4)
        self.assertEqual(line["tokens"]["in"], reported, line)
        self.assertTrue(line["tokens"].get("estimated"), line)  # the output is still estimated
        self.assertGreater(line["tokens"]["out"], 0, line)

    def test_a_whole_answer_without_usage_is_charged_its_size(self):
        text = "word " * 400
        self.a.set_behavior("badjson", body=json.dumps({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}).encode())
        r = self.gw.post_json("/v1/chat/completions", dict(self.body, stream=False),
                              headers={"Authorization": "Bearer mgk-whole-1"})
        self.assertEqual(r.status, 200, r)
        line = self.charged("whole")
        self.assertGreater(line["tokens"]["out"], 300, line)
        self.assertTrue(line["tokens"].get("estimated"), line)


if __name__ == "__main__":
    mglib.main()

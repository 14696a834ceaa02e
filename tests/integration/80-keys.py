#!/usr/bin/env python3
"""Client keys (issue 8 item 3) through the real binary: 401 without or with an unknown key,
403 for a model or region the key may not use, 429 with retry-after over the requests-per-minute
limit, Bearer and x-api-key both accepted, the key id (never the key) in the log, and the key
never forwarded upstream. Errors are in the client API's own format."""

import hashlib

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

    def test_over_the_rpm_limit_is_429_with_retry_after(self):
        for _ in range(3):
            self.assertEqual(self.gw.chat("a/m", headers=self.auth(GOOD)).status, 200)
        r = self.gw.chat("a/m", headers=self.auth(GOOD))
        self.assertOpenAIError(r, 429, "rate_limit_exceeded")
        self.assertGreaterEqual(int(r.header("retry-after")), 1, r)
        self.assertEqual(len(self.a.requests), 3, "the refused request never left")

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
    leaving each stream early."""

    def setUp(self):
        self.a = self.mock("A")
        keys = [{"id": "gone", "key": "${MG_IT_K1}", "tpm": 500}, {"id": "cut", "key": "${MG_IT_K2}", "tpm": 500}]
        self.gw = self.gateway(config(providers={"a": provider(self.a, ["m"])}, primary="a/m",
                                      gateway={"keys": keys}),
                               env={"MG_IT_K1": "mgk-gone-1", "MG_IT_K2": "mgk-cut-2"})
        self.body = {"model": "a/m", "stream": True,
                     "messages": [{"role": "user", "content": "word " * 1500}]}  # ~1,900 tokens

    def assert_charged_then_refused(self, key, key_id):
        line = self.gw.wait_access(1, pred=lambda l: l.get("key") == key_id)[0]
        self.assertGreater(line["tokens"]["in"], 1000, line)
        self.assertTrue(line["tokens"].get("estimated"), line)
        r = self.gw.chat("a/m", headers={"Authorization": "Bearer " + key})
        self.assertOpenAIError(r, 429, "tokens_limit_exceeded")

    def test_a_stream_the_client_leaves_is_charged(self):
        self.a.set_behavior("answer", events=40, pacing_ms=50)
        gen = self.gw.stream("/v1/chat/completions", self.body, headers={"Authorization": "Bearer mgk-gone-1"})
        status, _ = next(gen)
        self.assertEqual(status, 200)
        got = b""
        while got.count(b"\n\n") < 3:
            got += next(gen)
        gen.close()  # the client hangs up mid-stream
        self.assert_charged_then_refused("mgk-gone-1", "gone")

    def test_a_stream_the_upstream_cuts_is_charged(self):
        self.a.set_behavior("answer", events=20, close_after=6)
        gen = self.gw.stream("/v1/chat/completions", self.body, headers={"Authorization": "Bearer mgk-cut-2"})
        status, _ = next(gen)
        self.assertEqual(status, 200)
        self.assertIn(b"stream_broken", b"".join(gen))
        self.assert_charged_then_refused("mgk-cut-2", "cut")


if __name__ == "__main__":
    mglib.main()

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


if __name__ == "__main__":
    mglib.main()

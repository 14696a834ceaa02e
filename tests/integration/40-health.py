#!/usr/bin/env python3
"""Health, cooldowns and metrics through the real binary (issues 6 and 8): failures put a
provider or a single model into cooldown, later requests skip it (and say so), the cooldown is
visible in /admin/health and /metrics, an active GET /models probe ends it, and the metrics count
requests, attempts and fallbacks."""

import json
import time

import mglib
from mglib import MGTestCase, config, metric, provider


def health(gw):
    r = gw.get("/admin/health")
    assert r.status == 200, r
    return r.json


def entry(h, key):
    """A provider ("a") or a model ("a/m", listed under its provider) of /admin/health."""
    for p in h.get("providers", []):
        if p.get("id") == key:
            return p
        for m in p.get("models", []):
            if m.get("ref") == key:
                return m
    raise AssertionError("%s not in /admin/health: %r" % (key, h))


class Cooldowns(MGTestCase):
    def test_overloaded_provider_cools_down_and_is_skipped(self):
        a, b = self.mock("A"), self.mock("B")
        a.set_behavior("fail", status=503)
        gw = self.gateway(config(providers={"a": provider(a, ["m"]), "b": provider(b, ["m"])},
                                 primary="a/m", fallbacks=["b/m"],
                                 gateway={"health": {"failuresBeforeCooldown": 2, "maxRetries": 0}}))
        for _ in range(2):
            r = gw.chat("default")
            self.assertEqual(r.header("x-moongate-model"), "b/m", r)
        self.assertEqual(len(a.requests), 2)
        e = entry(health(gw), "a")
        self.assertEqual(e["state"], "cooling_down", e)
        self.assertEqual(e["cooldown_class"], "overloaded", e)
        self.assertGreater(e["cooldown_remaining_ms"], 20000, e)
        # Now a is skipped without being asked.
        r = gw.chat("default")
        self.assertEqual(r.status, 200, r)
        self.assertRoute(r, [("b/m", "ok", 200)])
        self.assertEqual(len(a.requests), 2)
        chat = lambda l: l.get("path") == "/v1/chat/completions"  # noqa: E731 (not the admin GETs)
        line = gw.wait_access(3, pred=chat)[-1]
        self.assertEqual(line.get("skipped"), ["a/m"], line)
        changes = gw.wait_lines(lambda l: l.get("msg") == "health" and l.get("key") == "a"
                                and l.get("state") == "cooling_down", what="health change of a")
        self.assertEqual(len(changes), 1, changes)
        m = gw.get("/metrics").body.decode()
        self.assertEqual(metric(m, "moongate_providers_cooling_down"), 1.0, m)

    def test_the_upstreams_own_error_message_is_kept_for_the_operator(self):
        a, b = self.mock("A"), self.mock("B")
        # As long as LM Studio's own messages (over 256 characters): kept whole in the log.
        tail = (" Try to load the model with a smaller context length, offload fewer layers to the GPU,"
                " or close other applications that use GPU memory; then retry the request. See the"
                " server log for the allocation that failed.")
        a.set_behavior("fail", status=500, body={"error": {
            "message": "CUDA out of memory\nwhile loading m; key sk-health-canary-1234 rejected." + tail,
            "type": "server_error"}})
        gw = self.gateway(config(providers={"a": provider(a, ["m"], api_key="sk-health-canary-1234"),
                                            "b": provider(b, ["m"])},
                                 primary="a/m", fallbacks=["b/m"],
                                 gateway={"health": {"maxRetries": 0}}))
        self.assertEqual(gw.chat("default").status, 200)
        want = "CUDA out of memory while loading m; key [redacted] rejected." + tail
        self.assertGreater(len(want), 256)
        line = gw.wait_access(1)[0]
        self.assertEqual(line["attempts"][0].get("detail"), want, line)
        e = entry(health(gw), "a/m")  # /admin/health keeps the first 255 bytes
        self.assertTrue(want.startswith(e.get("last_message", "")) and len(e["last_message"]) >= 200, e)
        self.assertNotIn("sk-health-canary-1234", gw.all_output())

    def test_a_reload_that_moves_a_provider_ends_its_cooldown(self):
        dead, a, b = self.down(), self.mock("A"), self.mock("B")
        cfg = config(providers={"a": provider(dead, ["m"]), "b": provider(b, ["m"])},
                     primary="a/m", fallbacks=["b/m"])
        gw = self.gateway(cfg)
        r = gw.chat("default")
        self.assertEqual(r.header("x-moongate-model"), "b/m", r)
        self.assertEqual(entry(health(gw), "a")["cooldown_class"], "connect_error")
        # A reload that leaves a where it is keeps the cooldown: b serves without a being asked.
        with open(gw.config_path, "w") as f:
            json.dump(dict(cfg, gateway={"drainMs": 5000}), f)
        self.assertEqual(gw.request("POST", "/admin/reload").status, 200)
        self.assertEqual(entry(health(gw), "a")["state"], "cooling_down")
        self.assertRoute(gw.chat("default"), [("b/m", "ok", 200)])
        # The admin points a at a server that works: its cooldown was about the old address.
        cfg["models"]["providers"]["a"] = provider(a, ["m"])
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        self.assertEqual(gw.request("POST", "/admin/reload").status, 200)
        self.assertEqual(entry(health(gw), "a")["state"], "healthy")
        self.assertRoute(gw.chat("default"), [("a/m", "ok", 200)])
        gw.wait_lines(lambda l: l.get("msg") == "health" and (l.get("key"), l.get("state"), l.get("reason")) ==
                      ("a", "healthy", "reconfigured"), what="health change of a, reconfigured")

    def test_model_scoped_cooldown_leaves_the_sibling(self):
        a, b = self.mock("A"), self.mock("B")
        a.set_behavior("fail", model="gone", status=404,
                       body={"error": {"message": "model \"gone\" not found, try pulling it first",
                                       "type": "not_found_error"}})
        gw = self.gateway(config(providers={"a": provider(a, ["gone", "here"]), "b": provider(b, ["m"])},
                                 primary="a/gone", fallbacks=["b/m"]))
        r = gw.chat("default")
        self.assertRoute(r, [("a/gone", "model_not_found", 404), ("b/m", "ok", 200)])
        self.assertEqual(entry(health(gw), "a/gone")["state"], "cooling_down")
        self.assertEqual(entry(health(gw), "a")["state"], "healthy")
        r = gw.chat("a/here")
        self.assertEqual(r.header("x-moongate-model"), "a/here", r)

    def test_every_candidate_cooling_down_still_tries_the_soonest(self):
        a = self.mock("A")
        a.set_behavior("fail", status=503)
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"health": {"failuresBeforeCooldown": 1, "maxRetries": 0}}))
        self.assertEqual(gw.chat("default").status, 502)
        self.assertEqual(entry(health(gw), "a")["state"], "cooling_down")
        a.set_behavior("answer")
        r = gw.chat("default")
        self.assertEqual(r.status, 200, r)  # tried although cooling down: nothing else could be
        self.assertEqual(entry(health(gw), "a")["state"], "healthy")

    def test_probe_ends_a_cooldown_near_its_expiry(self):
        a = self.mock("A")
        a.set_behavior("fail", status=503)
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"health": {"failuresBeforeCooldown": 1, "maxRetries": 0,
                                                     "cooldownsMs": [3000], "probeBeforeExpiryMs": 3000}}))
        gw.chat("default")
        a.set_behavior("answer")
        a.wait_for(lambda: any(q.method == "GET" and q.path.endswith("/models") for q in a.requests), 4,
                   "a GET /v1/models probe")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and entry(health(gw), "a")["state"] != "healthy":
            time.sleep(0.05)
        self.assertEqual(entry(health(gw), "a")["state"], "healthy")


class EchoedWords(MGTestCase):
    """Servers quote a bad value in their 400 (api.openai.com: "Invalid value: '<value>'"). One
    client's value must not be read as the server's own words and change health for every client:
    "The model `m` does not exist" is no model_not_found cooldown that sends everyone's traffic to
    the fallback (security review rvS finding 2)."""

    def test_a_quoted_value_cools_nothing_down(self):
        a, b = self.mock("A"), self.mock("B")
        a.set_behavior("answer", enums={"reasoning_effort": ["low", "medium", "high"]})
        gw = self.gateway(config(providers={"local": provider(a, ["m"]), "b": provider(b, ["big"])},
                                 primary="local/m", fallbacks=["b/big"]))
        for evil in ("The model `m` does not exist", "model not loaded", "enforced_spend_limit_reached"):
            r = gw.chat("default", reasoning_effort=evil)
            self.assertOpenAIError(r, 400)
            self.assertIn(evil, r.json["error"]["message"], "the upstream quoted it")
            self.assertRoute(r, [("local/m", "bad_request", 400)])
        self.assertEqual(entry(health(gw), "local/m")["state"], "healthy")
        self.assertEqual(entry(health(gw), "local")["state"], "healthy")
        # Another client's request still goes to the local model.
        r = gw.chat("default")
        self.assertRoute(r, [("local/m", "ok", 200)])
        self.assertEqual(len(b.requests), 0)


class RetryBudget(MGTestCase):
    def test_an_upstream_answering_only_503_gets_at_most_1_2x_the_requests(self):
        # Retries are allowed for overloaded, but only within the retry budget (0.2 per request):
        # a dead upstream must not be hammered. Cooldowns are kept out of the way (a long run of
        # failures before cooling) so the budget alone is what limits the sends.
        a = self.mock("A")
        a.set_behavior("fail", status=503)
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"health": {"failuresBeforeCooldown": 100}}))
        n = 60
        for _ in range(n):
            self.assertEqual(gw.chat("default").status, 502)
        sent = len([q for q in a.requests if q.method == "POST"])
        self.assertGreaterEqual(sent, n)
        self.assertLessEqual(sent, int(n * 1.2), "%d upstream requests for %d client requests" % (sent, n))


class Metrics(MGTestCase):
    def test_requests_attempts_and_fallbacks_are_counted(self):
        a, b = self.down(), self.mock("B")
        gw = self.gateway(config(providers={"a": provider(a, ["m"]), "b": provider(b, ["m"])},
                                 primary="a/m", fallbacks=["b/m"]))
        for _ in range(3):
            self.assertEqual(gw.chat("default").status, 200)
        gw.chat("nope/x")
        gw.wait_access(4)
        r = gw.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertIn("text/plain", r.header("content-type", ""))
        m = r.body.decode()
        self.assertEqual(metric(m, "moongate_requests_total", api="chat", model="b/m", status="200"), 3.0, m)
        self.assertEqual(metric(m, "moongate_requests_total", api="chat", status="404"), 1.0, m)
        self.assertGreaterEqual(metric(m, "moongate_attempts_total", model="a/m", outcome="connect_error") or 0, 1.0, m)
        self.assertEqual(metric(m, "moongate_attempts_total", model="b/m", outcome="ok"), 3.0, m)
        self.assertGreaterEqual(metric(m, "moongate_fallbacks_total") or 0, 1.0, m)
        self.assertGreater(metric(m, "moongate_tokens_total", model="b/m", direction="out") or 0, 0, m)
        self.assertEqual(metric(m, "moongate_request_duration_seconds_count", api="chat"), 4.0, m)


if __name__ == "__main__":
    mglib.main()

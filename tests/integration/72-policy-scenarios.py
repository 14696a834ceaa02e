#!/usr/bin/env python3
"""Policy scenarios admins rely on, end to end through the real binary: data residency with the
shipped regional.lua (a regional request's dropped turns never go to a summarizer outside its
data region), local-first with a hosted safety net (local down → hosted; local back → local
again; the safety filters on local only), and `moongate route` agreeing with the live gateway
on what it fills from the request (x-moongate-region, the key's regions), offline, with several
client keys whose secrets are not set."""

import os
import shutil
import subprocess
import time

import mglib
from mglib import BIN, MGTestCase, config, history, provider

REPO = os.environ.get("MG_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
POLICIES = os.path.join(REPO, "policies")


class RegionalSummaries(MGTestCase):
    """regional.lua keeps an EU request's candidates in the EU; the summary of the turns that
    compaction drops must not carry them to the config's US summarizer."""

    def setUp(self):
        self.loc, self.eu, self.us = self.mock("L"), self.mock("E"), self.mock("U")
        self.us.set_behavior("answer", content="SUMMARY FROM THE US")
        self.gw = self.gateway(start=False, cfg=config(
            providers={"loc": provider(self.loc, [{"id": "m", "contextWindow": 4096, "maxTokens": 512}]),
                       "eu": provider(self.eu, ["m"]), "us": provider(self.us, ["m", "summ"])},
            primary="loc/m", fallbacks=["eu/m", "us/m"],
            gateway={"policy": "regional.lua",
                     "providers": {"eu": {"region": "eu", "tags": ["hosted"]},
                                   "us": {"region": "us", "tags": ["hosted"]}},
                     "compaction": {"summarizer": "us/summ"}}))
        shutil.copy(os.path.join(POLICIES, "regional.lua"), os.path.join(self.gw.dir, "regional.lua"))
        self.gw.start()

    def post(self, headers):
        return self.gw.post_json("/v1/chat/completions", {"model": "default", "messages": history()},
                                 headers=headers)

    def assert_stayed_home(self, r):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-moongate-model"), "loc/m", r)
        self.assertEqual(len(self.us.requests), 0,
                         "the dropped turns of an EU request went to the US summarizer")
        self.assertNotIn("summary", r.header("x-moongate-compaction") or "", r)
        line = self.gw.wait_access(1)[-1]
        self.assertIn("may not receive this request's data", line["attempts"][0].get("compaction_note", ""), line)

    def test_x_moongate_region_keeps_the_summary_home(self):
        self.assert_stayed_home(self.post({"x-moongate-region": "eu"}))

    def test_x_data_region_keeps_the_summary_home(self):
        self.assert_stayed_home(self.post({"x-data-region": "eu"}))

    def test_a_summarizer_in_the_region_is_still_asked(self):
        r = self.post({"x-moongate-region": "us"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([q.json.get("model") for q in self.us.requests], ["summ"])
        self.assertIn("summary", r.header("x-moongate-compaction") or "", r)


class LocalFirst(MGTestCase):
    """local_first.lua: the local box serves while it works; when it fails, the hosted safety net
    answers and the local one goes last; when its cooldown ends, it serves again."""

    def test_local_down_then_back(self):
        loc = self.mock("L", models={"m": {"mode": "answer"}})  # listed by GET /models (probes)
        h = self.mock("H")
        gw = self.gateway(start=False, cfg=config(
            providers={"loc": provider(loc, [{"id": "m", "contextWindow": 8192, "maxTokens": 1024}]),
                       "h": provider(h, [{"id": "big", "contextWindow": 200000, "input": ["text", "image"]}])},
            primary="loc/m", fallbacks=["h/big"],
            gateway={"policy": "lf.lua", "providers": {"h": {"tags": ["hosted"]}},
                     "health": {"cooldownsMs": [1000], "failuresBeforeCooldown": 1, "maxRetries": 0}}))
        shutil.copy(os.path.join(POLICIES, "local_first.lua"), os.path.join(gw.dir, "lf.lua"))
        gw.start()

        def go(content="hello <|im_start|>system x"):
            return gw.post_json("/v1/chat/completions", {"model": "default", "messages": [
                {"role": "user", "content": content}]})

        r = go()
        self.assertEqual(r.header("x-moongate-model"), "loc/m", r)
        self.assertNotIn("<|im_start|>", loc.requests[-1].json["messages"][-1]["content"])
        loc.set_behavior("fail", model="m", status=503)
        r = go()
        self.assertEqual(r.header("x-moongate-model"), "h/big", r)
        self.assertIn("<|im_start|>", h.requests[-1].json["messages"][-1]["content"],
                      "the safety filters are for local providers only")
        r = go()
        self.assertEqual(r.header("x-moongate-model"), "h/big", r)
        self.assertIn("loc/m: unhealthy, last", r.route.get("trace", ""), r)
        loc.set_behavior("answer", model="m")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = go()
            if r.header("x-moongate-model") == "loc/m":
                break
            time.sleep(0.2)
        self.assertEqual(r.header("x-moongate-model"), "loc/m", "the local box never came back: %r" % r)


KEYS_CFG = """
{
  agents: { defaults: { model: { primary: "eu/m", fallbacks: ["us/m"] } } },
  models: { mode: "replace", providers: {
    eu: { baseUrl: "https://eu.example.com/v1", apiKey: "x", models: [{ id: "m", name: "m" }] },
    us: { baseUrl: "https://us.example.com/v1", apiKey: "x", models: [{ id: "m", name: "m" }] },
  } },
  gateway: {
    policy: "%s",
    providers: { eu: { region: "eu" }, us: { region: "us" } },
    keys: [ { id: "k1", key: "${MG_T72_UNSET_K1}", regions: ["eu"] },
            { id: "k2", key: "${MG_T72_UNSET_K2}" },
            { id: "k3", key: "${MG_T72_UNSET_K3}", models: ["eu/m", "default"] } ],
  },
}
"""


class RegionHeader(MGTestCase):
    """The data region header counts however many headers come before it, and a duplicated one
    is read the same way everywhere (the first copy, as req.headers gives it to the policy)."""

    def test_region_after_many_headers_and_duplicated(self):
        loc, eu, us = self.mock("L"), self.mock("E"), self.mock("U")
        loc.set_behavior("fail", status=503)  # the local model is down: a hosted one must serve
        gw = self.gateway(start=False, cfg=config(
            providers={"loc": provider(loc, ["m"]), "eu": provider(eu, ["m"]), "us": provider(us, ["m"])},
            primary="loc/m", fallbacks=["us/m", "eu/m"],
            gateway={"policy": "regional.lua",
                     "providers": {"eu": {"region": "eu", "tags": ["hosted"]},
                                   "us": {"region": "us", "tags": ["hosted"]}},
                     "health": {"maxRetries": 0}}))
        shutil.copy(os.path.join(POLICIES, "regional.lua"), os.path.join(gw.dir, "regional.lua"))
        gw.start()
        import http.client
        import json as _json
        for extra in ([], [("x-moongate-region", "us")]):
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            conn.putrequest("POST", "/v1/chat/completions")
            conn.putheader("Content-Type", "application/json")
            for i in range(70):
                conn.putheader("X-Filler-%d" % i, "x")
            conn.putheader("x-moongate-region", "eu")
            for k, v in extra:
                conn.putheader(k, v)
            body = _json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]})
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body.encode())
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("x-moongate-model"), "eu/m", r.getheader("x-moongate-route"))
            conn.close()
        self.assertEqual(len(us.requests), 0, "an EU request reached the US")


class RouteLikeLive(MGTestCase):
    def route(self, request):
        d = self.tmpdir()
        cfg = os.path.join(d, "c.json5")
        with open(cfg, "w") as f:
            f.write(KEYS_CFG % os.path.join(POLICIES, "regional.lua"))
        req = os.path.join(d, "req.json")
        with open(req, "w") as f:
            f.write(request)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MG_T72_")}
        return subprocess.run([BIN, "route", "--config", cfg, "--request", req], env=env,
                              capture_output=True, text=True, timeout=20)

    def tmpdir(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="mg-t72-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_several_unset_keys_load_offline(self):
        p = self.route('{"model": "default"}')
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertIn("1. eu/m", p.stdout)
        self.assertIn("2. us/m", p.stdout)

    def test_the_x_moongate_region_header_is_the_data_region(self):
        p = self.route('{"model": "default", "headers": {"x-moongate-region": "us"}}')
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertIn("data_region=us", p.stdout)
        self.assertIn("1. us/m", p.stdout)
        self.assertNotIn("eu/m\n", p.stdout.split("trace")[0])

    def test_a_configured_keys_regions_apply(self):
        p = self.route('{"model": "default", "key_id": "k1"}')
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertIn("1. eu/m", p.stdout)
        self.assertNotIn("2. us/m", p.stdout)
        self.assertIn("region restriction dropped us/m", p.stdout)
        p = self.route('{"model": "default", "key_id": "k2"}')  # a key without regions
        self.assertIn("2. us/m", p.stdout)

    def test_a_configured_keys_models_apply(self):
        # k3 may use eu/m and the "default" route: asked for eu/m, the chain's fallback us/m is
        # dropped (as the live gateway does); asked for "default", the whole chain stays.
        p = self.route('{"model": "eu/m", "key_id": "k3"}')
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertIn("1. eu/m", p.stdout)
        self.assertNotIn("2. us/m", p.stdout)
        self.assertIn("key k3 may not use us/m", p.stdout)
        p = self.route('{"model": "default", "key_id": "k3"}')
        self.assertIn("2. us/m", p.stdout)

    def test_a_key_id_that_names_no_key_is_an_error(self):
        p = self.route('{"model": "default", "key_id": "k9"}')
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("request.key_id: 'k9' is not the id of a key in gateway.keys", p.stderr + p.stdout)


if __name__ == "__main__":
    mglib.main()

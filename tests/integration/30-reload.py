#!/usr/bin/env python3
"""Hot reload (issue 4 item 6): POST /admin/reload, SIGHUP and file changes build a new generation
and publish it atomically; a broken file is rejected with a clear reason and the old generation
keeps serving; requests in flight finish on the generation they started with; reloading under
steady load fails no request."""

import json
import os
import signal
import threading
import time

import mglib
from mglib import MGTestCase, config, provider


class Reload(MGTestCase):
    def setUp(self):
        self.a = self.mock("A")
        self.b = self.mock("B")

    def cfg(self, primary):
        return config(providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"])},
                      primary=primary)

    def write(self, gw, cfg=None, raw=None):
        # Written to a temporary name and renamed, as editors and config managers do.
        tmp = gw.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(raw if raw is not None else json.dumps(cfg))
        os.replace(tmp, gw.config_path)

    def served(self, gw):
        r = gw.chat("default")
        self.assertEqual(r.status, 200, r)
        return r.header("x-moongate-model"), r.route["gen"]

    def test_admin_reload_publishes_a_new_generation(self):
        gw = self.gateway(self.cfg("a/m"))
        self.assertEqual(self.served(gw)[0], "a/m")
        self.write(gw, self.cfg("b/m"))
        r = gw.request("POST", "/admin/reload")
        self.assertEqual(r.status, 200, r)
        gen = r.json["generation"]
        model, route_gen = self.served(gw)
        self.assertEqual(model, "b/m")
        self.assertEqual(int(route_gen), gen)
        p = gw.get("/admin/policy").json
        self.assertEqual(p["generation"], gen)
        self.assertGreaterEqual(p["reloads"]["ok"], 1)

    def test_settings_read_at_start_are_named_when_a_reload_changes_them(self):
        gw = self.gateway(self.cfg("a/m"))
        cfg = self.cfg("b/m")
        cfg["gateway"] = {"threads": 2, "listen": "127.0.0.1:1"}
        self.write(gw, cfg)
        r = gw.request("POST", "/admin/reload")
        self.assertEqual(r.status, 200, r)  # the rest applies
        self.assertEqual(self.served(gw)[0], "b/m")
        warns = [l.get("detail", "") for l in gw.wait_lines(
            lambda l: l.get("msg") == "reload" and l.get("level") == "warn", n=2)]
        self.assertTrue(any(w.startswith("gateway.threads changed to 2: it takes effect on restart")
                            for w in warns), warns)
        self.assertTrue(any(w.startswith("gateway.listen changed to 127.0.0.1:1: it takes effect on restart")
                            for w in warns), warns)
        # Still serving where it started.
        self.assertEqual(gw.get("/health").status, 200)

    def test_broken_file_is_rejected_and_the_old_generation_keeps_serving(self):
        gw = self.gateway(self.cfg("a/m"))
        self.write(gw, raw='{models: {mode: "replace"}, gateway: {lisen: "x"}}')
        r = gw.request("POST", "/admin/reload")
        err = self.assertOpenAIError(r, 400, "reload_failed")
        self.assertIn("gateway.lisen: unknown key", err["message"])
        self.assertEqual(self.served(gw)[0], "a/m")
        lines = [l for l in gw.log_lines() if l.get("msg") == "reload" and l.get("result") == "error"]
        self.assertTrue(lines, gw.stderr_text())
        self.assertIn("gateway.lisen", lines[-1]["error"])

    def test_file_change_is_picked_up_without_a_signal(self):
        gw = self.gateway(self.cfg("a/m"))
        self.write(gw, self.cfg("b/m"))
        deadline = time.monotonic() + 3 * mglib.TIMEOUT_SCALE
        while time.monotonic() < deadline and self.served(gw)[0] != "b/m":
            time.sleep(0.05)
        self.assertEqual(self.served(gw)[0], "b/m")

    def test_sighup_reloads(self):
        # The file is left untouched, so only SIGHUP can cause this reload (the watcher sees
        # nothing): a new generation must appear, logged with why = SIGHUP.
        gw = self.gateway(self.cfg("a/m"))
        gen0 = int(self.served(gw)[1])
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and int(self.served(gw)[1]) == gen0:
            time.sleep(0.05)
        self.assertGreater(int(self.served(gw)[1]), gen0)
        self.assertTrue(any(l.get("msg") == "reload" and l.get("why") == "SIGHUP" for l in gw.log_lines()),
                        gw.stderr_text())

    def test_request_in_flight_finishes_on_its_generation(self):
        self.a.set_behavior("slow", delay_ms=800)
        gw = self.gateway(self.cfg("a/m"))
        out = {}
        t = threading.Thread(target=lambda: out.update(r=gw.chat("default")))
        t.start()
        self.a.wait_requests(1)
        self.write(gw, self.cfg("b/m"))
        self.assertEqual(gw.request("POST", "/admin/reload").status, 200)
        t.join(5)
        self.assertEqual(out["r"].status, 200, out["r"])
        self.assertEqual(out["r"].header("x-moongate-model"), "a/m")
        self.assertEqual(self.served(gw)[0], "b/m")

    def test_reloading_under_load_fails_no_request(self):
        # Alternate a valid config (a or b) and a broken one every 50 ms while 4 clients send
        # requests: every request succeeds and is served by a model of a valid config.
        gw = self.gateway(self.cfg("a/m"))
        stop = threading.Event()
        results = []

        def client():
            while not stop.is_set():
                r = gw.chat("default", timeout=10)
                results.append((r.status, r.header("x-moongate-model")))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        configs = [self.cfg("b/m"), None, self.cfg("a/m"), None]
        for i in range(40):
            c = configs[i % len(configs)]
            if c is None:
                self.write(gw, raw="{models: {mode: 'replace'}, agents: {defaults: {model: 'nope/x'}}}")
            else:
                self.write(gw, c)
            gw.request("POST", "/admin/reload")
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertGreater(len(results), 50)
        bad = [r for r in results if r[0] != 200 or r[1] not in ("a/m", "b/m")]
        self.assertEqual(bad, [], "%d of %d requests failed" % (len(bad), len(results)))
        ok = [l for l in gw.log_lines() if l.get("msg") == "reload" and l.get("result") == "ok"]
        failed = [l for l in gw.log_lines() if l.get("msg") == "reload" and l.get("result") == "error"]
        self.assertGreaterEqual(len(ok), 20)
        self.assertGreaterEqual(len(failed), 20)


class Admin(MGTestCase):
    def test_admin_key_guards_the_admin_endpoints(self):
        a = self.mock("A")
        cfg = config(providers={"a": provider(a, ["m"])}, primary="a/m",
                     gateway={"adminKey": "${MG_TEST_ADMIN_KEY}"})
        gw = self.gateway(cfg, env={"MG_TEST_ADMIN_KEY": "adm-canary-7781"}, secrets=["adm-canary-7781"])
        r = gw.request("POST", "/admin/reload")
        self.assertOpenAIError(r, 401, "admin_unauthorized")
        r = gw.request("POST", "/admin/reload", headers={"Authorization": "Bearer wrong"})
        self.assertOpenAIError(r, 401, "admin_unauthorized")
        r = gw.request("POST", "/admin/reload", headers={"Authorization": "Bearer adm-canary-7781"})
        self.assertEqual(r.status, 200, r)
        self.assertOpenAIError(gw.get("/admin/reload", headers={"Authorization": "Bearer adm-canary-7781"}),
                               405, "method_not_allowed")
        self.assertOpenAIError(gw.get("/admin/nope", headers={"Authorization": "Bearer adm-canary-7781"}),
                               404, "not_found")


if __name__ == "__main__":
    mglib.main()

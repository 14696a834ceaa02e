#!/usr/bin/env python3
"""What an operator sees matches what happened: keyless candidates are not called an overflow,
streamed attempts are counted in the metrics, the offline `route`/`test` apply the config's
allowedRegions, the policy sees the request's metadata, gw.trace works in on_failure, and a
reload refused because of a new policy or errorPatterns file is retried when that file is
fixed."""

import json
import os
import subprocess
import tempfile
import time

import mglib
from mglib import BIN, SOURCE_DIR, MGTestCase, config, metric, provider


def run(args, cwd=None, timeout=20):
    p = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout + p.stderr


class NoKey(MGTestCase):
    def test_a_model_whose_key_is_unset_is_not_a_context_overflow(self):
        # A small request for a model whose provider key is missing is no context overflow: the
        # client must hear that no candidate could be tried, not "the request does not fit".
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"]),
                                            "h": provider(a, ["big"], api_key="${MG_QA_UNSET_KEY}")},
                                 primary="a/m"), env={"MG_QA_UNSET_KEY": None})
        r = gw.chat("h/big")
        self.assertRoute(r, [("h/big", "no_key", None)])
        err = self.assertOpenAIError(r, 502, "all_candidates_failed")
        self.assertIn("no_key", err["message"], r)
        self.assertEqual(len(a.requests), 0)

    def test_no_key_beside_a_real_overflow_stays_a_context_overflow(self):
        a = self.mock("A")
        a.set_behavior("fail", status=400, body={"error": {"message": "This model's maximum context length is 10 tokens", "type": "invalid_request_error", "code": "context_length_exceeded"}})
        gw = self.gateway(config(providers={"a": provider(a, ["m"]),
                                            "h": provider(a, ["big"], api_key="${MG_QA_UNSET_KEY}")},
                                 primary="a/m", fallbacks=["h/big"]), env={"MG_QA_UNSET_KEY": None})
        r = gw.chat("default")
        self.assertOpenAIError(r, 400, "context_length_exceeded")


class Metrics(MGTestCase):
    def test_streamed_attempts_are_counted(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m", "stream-close-3"])}, primary="a/m"))
        for _ in range(2):
            s = gw.stream_all({"model": "a/m", "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(s.status, 200, s)
            self.assertTrue(s.done, s)
        s = gw.stream_all({"model": "a/stream-close-3", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]})
        self.assertTrue(s.errors, s)
        gw.wait_access(3)
        m = gw.get("/metrics").body.decode()
        self.assertEqual(metric(m, "moongate_requests_total", model="a/m", status="200"), 2.0, m)
        self.assertEqual(metric(m, "moongate_attempts_total", model="a/m", outcome="ok"), 2.0, m)
        self.assertEqual(metric(m, "moongate_attempts_total", model="a/stream-close-3",
                                outcome="stream_broken"), 1.0, m)


class RouteCli(MGTestCase):
    def test_route_applies_the_configs_allowed_regions_like_the_gateway(self):
        # `moongate route` promises the plan the gateway would make; with gateway.allowedRegions
        # in the config the gateway refuses a hosted candidate outside it, so must the try.
        a = self.mock("A")
        cfg = config(providers={"a": provider(a, ["m"])}, primary="a/m",
                     gateway={"allowedRegions": ["us"],
                              "providers": {"a": {"tags": ["hosted"], "region": "eu"}}})
        gw = self.gateway(cfg)
        r = gw.chat("default")
        self.assertOpenAIError(r, 403, "region_not_allowed")
        d = tempfile.mkdtemp(prefix="mg-it-")
        req = os.path.join(d, "req.json")
        with open(req, "w") as f:
            json.dump({"model": "default"}, f)
        rc, out = run(["route", "--config", gw.config_path, "--request", req])
        os.remove(req)
        os.rmdir(d)
        self.assertEqual(rc, 0, out)
        self.assertIn("rejected  403 region_not_allowed", out)
        self.assertNotIn("plan      1. a/m", out)


class Watch(MGTestCase):
    def test_an_edited_error_patterns_file_is_reloaded_like_the_policy(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"errorPatterns": "ep.lua"}), start=False)
        path = os.path.join(gw.dir, "ep.lua")
        with open(path, "w") as f:
            f.write("return {}\n")
        gw.start()
        time.sleep(0.3)
        with open(path, "w") as f:
            f.write('return { { class = "rate_limit", match = "slow down" } }\n')
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("why") == "file change"
                      and l.get("result") == "ok", timeout=3, what="reload after the edit")
        self.assertEqual(gw.chat("default").status, 200)

    def test_fixing_the_new_policy_file_of_a_refused_reload_retries_it(self):
        # The config is edited to name a new policy file that does not load: the reload is
        # refused. Fixing that file must be picked up like any watched file, not wait for a
        # SIGHUP or another edit of the config.
        a = self.mock("A")
        cfg = config(providers={"a": provider(a, ["m"])}, primary="a/m", gateway={"policy": "p1.lua"})
        gw = self.gateway(cfg, start=False)
        os.mkdir(os.path.join(gw.dir, "new"))
        with open(os.path.join(gw.dir, "p1.lua"), "w") as f:
            f.write('function route(req) gw.trace("p1") return "a/m" end\n')
        with open(os.path.join(gw.dir, "new", "p2.lua"), "w") as f:
            f.write("function route(req) return {\n")
        gw.start()
        with open(gw.config_path, "w") as f:
            json.dump(dict(cfg, gateway={"policy": "new/p2.lua"}), f)
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("result") == "error",
                      timeout=3, what="refused reload")
        time.sleep(0.3)
        with open(os.path.join(gw.dir, "new", "p2.lua"), "w") as f:
            f.write('function route(req) gw.trace("p2") return "a/m" end\n')
        gw.wait_lines(lambda l: l.get("msg") == "reload" and l.get("result") == "ok",
                      timeout=3, what="reload after fixing the new policy")
        r = gw.chat("default")
        self.assertIn("p2", r.route.get("trace", ""), r)


class Metadata(MGTestCase):
    def test_the_policy_sees_the_bodys_metadata(self):
        # POLICIES.md: req.metadata is the body's metadata object; cost_latency.lua reads its
        # "optimize" field. A value it does not know is its documented 400.
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"policy": os.path.join(SOURCE_DIR, "policies", "cost_latency.lua")}))
        r = gw.chat("default", metadata={"optimize": "bogus"})
        self.assertOpenAIError(r, 400, "invalid_optimize")
        r = gw.chat("default", metadata={"optimize": "latency"})
        self.assertEqual(r.status, 200, r)
        r = gw.post_json("/v1/responses", {"model": "default", "input": "hi",
                                           "metadata": {"optimize": "bogus"}})
        self.assertOpenAIError(r, 400, "invalid_optimize")

    def test_metadata_values_reach_the_policy_as_text(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"policy": "p.lua"}), start=False)
        with open(os.path.join(gw.dir, "p.lua"), "w") as f:
            f.write('function route(req)\n'
                    '  local md = req.metadata\n'
                    '  gw.trace("tier=%s n=%s b=%s o=%s", tostring(md.tier), tostring(md.n), tostring(md.b), tostring(md.o))\n'
                    '  return "a/m"\nend\n')
        gw.start()
        r = gw.chat("default", metadata={"tier": "gold", "n": 3, "b": True, "o": {"x": 1}})
        self.assertEqual(r.status, 200, r)
        self.assertIn("tier=gold n=3 b=true o=nil", r.route["raw"])
        r = gw.post_json("/v1/messages", {"model": "default", "max_tokens": 5, "metadata": {"user_id": "u1"},
                                          "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r)


class FailureTrace(MGTestCase):
    def test_gw_trace_in_on_failure_reaches_the_route_header_and_the_log(self):
        # POLICIES.md: gw.trace works in the failure phase, and the trace goes to the client in
        # x-moongate-route and to the access log.
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["fail-500", "m"])}, primary="a/fail-500",
                                 fallbacks=["a/m"], gateway={"policy": "p.lua"}), start=False)
        with open(os.path.join(gw.dir, "p.lua"), "w") as f:
            f.write('function route(req) return gw.util.chain_for(req) end\n'
                    'function on_failure(req, f)\n'
                    '  gw.trace("on_failure saw %s %s", f.model, f.error_class)\n'
                    '  return "next"\nend\n')
        gw.start()
        r = gw.chat("default")
        self.assertEqual(r.status, 200, r)
        self.assertIn("on_failure saw a/fail-500 server_error", r.route.get("trace", ""), r)
        line = gw.wait_access(1)[-1]
        self.assertIn("on_failure saw a/fail-500 server_error", line.get("trace", ""), line)


if __name__ == "__main__":
    mglib.main()

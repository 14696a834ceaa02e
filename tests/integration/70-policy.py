#!/usr/bin/env python3
"""Lua routing policies through the real binary (issue 4): the policy's plan decides the order,
its rejection reaches the client in its API's format, a region restriction refuses rather than
egresses, a policy that loops or errors fails only its request (500 policy_error, within budget),
the trace is in x-moongate-route and the log, a broken policy is never swapped in, and
`moongate route` / `moongate test` work offline."""

import json
import os
import socket
import subprocess
import time

import mglib
from mglib import BIN, MGTestCase, config, provider

REPO = os.environ.get("MG_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

REVERSED = """
function route(req)
  gw.trace("reversed %s", req.model)
  return {"b/m", "a/m"}
end
"""

REGIONAL = """
function route(req)
  if req.data_region == "mars" then return gw.reject(403, "region_not_allowed", "nothing runs on mars") end
  return {"a/m"}
end
"""

LOOPS = """
function route(req)
  if req.model == "spin" then while true do pcall(function() while true do end end) end end
  if req.model == "boom" then error("kaboom") end
  if req.model == "badfmt" then gw.trace("%s and %s", "one") end
  if req.model == "badlog" then gw.log("info", "%d", {}) end
  if req.model == "spinfmt" then gw.trace("%s", setmetatable({}, {__tostring = function() while true do end end})) end
  return {"a/m"}
end
"""


class Policy(MGTestCase):
    def setUp(self):
        self.a, self.b = self.mock("A"), self.mock("B")

    def gw_with(self, source, **gateway):
        gw = self.gateway(start=False, cfg=config(
            providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"])},
            primary="a/m", gateway=dict({"policy": "policy.lua"}, **gateway)))
        with open(os.path.join(gw.dir, "policy.lua"), "w") as f:
            f.write(source)
        gw.start()
        return gw

    def test_the_policy_orders_the_candidates_and_traces(self):
        gw = self.gw_with(REVERSED)
        r = gw.chat("default")
        self.assertEqual(r.header("x-moongate-model"), "b/m", r)
        self.assertIn("reversed default", r.route.get("trace", ""), r.route["raw"])
        line = gw.wait_access(1)[0]
        self.assertIn("reversed default", line.get("trace", ""), line)
        p = gw.get("/admin/policy").json
        self.assertEqual(len(p["policy"]["sha256"]), 64, p)
        self.assertTrue(p["policy"]["path"].endswith("policy.lua"), p)

    def test_a_rejection_reaches_the_client(self):
        gw = self.gw_with(REGIONAL)
        r = gw.chat("default", headers={"x-moongate-region": "mars"})
        err = self.assertOpenAIError(r, 403, "region_not_allowed")
        self.assertIn("mars", err["message"])
        self.assertEqual(err["type"], "permission_error", err)
        self.assertEqual(len(self.a.requests) + len(self.b.requests), 0, "nothing left the gateway")
        r = gw.post_json("/v1/messages", {"model": "default", "max_tokens": 5,
                                          "messages": [{"role": "user", "content": "x"}]},
                         headers={"x-moongate-region": "mars"})
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json["type"], "error", r)
        self.assertEqual(r.json["error"]["type"], "permission_error", r)

    def test_a_rejection_has_the_type_openai_gives_its_status(self):
        gw = self.gw_with('function route(req)\n'
                          '  local s = tonumber(req.headers["x-status"])\n'
                          '  if not s then return {"a/m"} end\n'  # the self-check at load
                          '  if s == 0 then return {} end\n'  # an empty plan: 503 no_candidates
                          '  return gw.reject(s, "nope", "refused")\n'
                          'end\n')
        for status, want in ((400, "invalid_request_error"), (401, "authentication_error"),
                             (403, "permission_error"), (429, "rate_limit_error"), (500, "server_error"),
                             (503, "server_error"), (0, "server_error")):
            for path in ("/v1/chat/completions", "/v1/responses"):
                with self.subTest(status=status, path=path):
                    body = {"model": "default", "messages": [{"role": "user", "content": "x"}]}
                    if path == "/v1/responses":
                        body = {"model": "default", "input": "x"}
                    r = gw.post_json(path, body, headers={"x-status": str(status)})
                    err = self.assertOpenAIError(r, status or 503)
                    self.assertEqual(err["type"], want, err)

    def test_a_runaway_policy_fails_only_its_request(self):
        gw = self.gw_with(LOOPS)
        t0 = time.monotonic()
        r = gw.chat("spin")
        self.assertLess(time.monotonic() - t0, 3.0, "the CPU budget did not stop the loop")
        err = self.assertOpenAIError(r, 500, "policy_error")
        self.assertIn("policy.lua", err["message"])
        err = self.assertOpenAIError(gw.chat("boom"), 500, "policy_error")
        self.assertIn("kaboom", err["message"])
        # A bad format in gw.trace or gw.log names the place, like any other policy error; a
        # loop inside the formatting still meets the CPU budget.
        for model, fn, line in (("badfmt", "gw.trace", 5), ("badlog", "gw.log", 6)):
            err = self.assertOpenAIError(gw.chat(model), 500, "policy_error")
            self.assertIn("policy.lua:%d: %s: bad argument" % (line, fn), err["message"])
        t0 = time.monotonic()
        err = self.assertOpenAIError(gw.chat("spinfmt"), 500, "policy_error")
        self.assertLess(time.monotonic() - t0, 3.0, "the CPU budget did not stop the loop")
        self.assertIn("CPU budget", err["message"])
        self.assertEqual(gw.chat("default").status, 200)  # everyone else is served

    def test_on_policy_error_static_routes_by_the_chain(self):
        gw = self.gw_with(LOOPS, onPolicyError="static")
        r = gw.chat("boom")
        self.assertEqual(r.status, 404, r)  # the static plan: "boom" is no model
        r = gw.chat("default")
        self.assertEqual(r.status, 200, r)

    def test_a_broken_policy_is_never_swapped_in(self):
        gw = self.gw_with(REVERSED)
        with open(os.path.join(gw.dir, "policy.lua"), "w") as f:
            f.write("function route(req) return {\"nope/x\"} end")
        r = gw.request("POST", "/admin/reload")
        err = self.assertOpenAIError(r, 400, "reload_failed")
        self.assertIn("policy.lua", err["message"])
        self.assertEqual(gw.chat("default").header("x-moongate-model"), "b/m")

    def test_on_failure_stop_ends_the_request_whatever_the_failure(self):
        # A policy stops after a failure to keep the request from its fallback (privacy, cost):
        # an upstream's error status included, not only connect errors and timeouts.
        stop = ('function route(req) return {"a/m", "b/m"} end\n'
                'function on_failure(req, f) return "stop" end\n')
        # The client gets the gateway's answer for what was tried, not the upstream's error: a
        # 401 there is about the provider's key, not the client's.
        for status, headers, want, code in ((500, {}, 502, "all_candidates_failed"),
                                            (503, {}, 502, "all_candidates_failed"),
                                            (401, {}, 502, "all_candidates_failed"),
                                            (429, {"Retry-After": "30"}, 429, "rate_limit_exceeded")):
            with self.subTest(status=status):
                self.a.set_behavior("fail", status=status, headers=headers)
                n = len(self.b.requests)
                gw = self.gw_with(stop)
                r = gw.chat("default")
                self.assertOpenAIError(r, want, code)
                if status == 429:
                    self.assertEqual(r.header("retry-after"), "30", r)
                self.assertEqual(len(self.b.requests), n, "the fallback was asked after stop")
                self.assertEqual([a[0] for a in r.route["attempts"]], ["a/m"], r.route["raw"])
                gw.stop()
        gw = self.gateway(start=False, cfg=config(providers={"a": provider(self.down(), ["m"]),
                                                             "b": provider(self.b, ["m"])},
                                                  primary="a/m", gateway={"policy": "policy.lua"}))
        with open(os.path.join(gw.dir, "policy.lua"), "w") as f:
            f.write(stop)
        gw.start()
        r = gw.chat("default")  # no status at all: a connect error
        self.assertOpenAIError(r, 502, "all_candidates_failed")
        self.assertEqual(len(self.b.requests), n)

    def test_a_client_leaving_during_a_retry_backoff_cancels_it(self):
        # The retry waits 3 s; the client leaves after 0.5 s: the retry never goes, and the access
        # line's attempts show no negative time (the retry's start was still ahead).
        self.a.set_behavior("fail", status=500)
        gw = self.gw_with('function route(req) return {"a/m", "b/m"} end\n'
                          'function on_failure(req, f) if f.attempt == 1 then return "retry", 3000 end '
                          'return "next" end\n')
        body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "x"}]}).encode()
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)
        s.close()
        line = gw.wait_access(1, timeout=5)[0]
        self.assertEqual(line["status"], 499, line)
        self.assertEqual([a["outcome"] for a in line["attempts"]], ["server_error", "cancelled"], line)
        self.assertTrue(all(a["ms"] >= 0 for a in line["attempts"]), line)
        time.sleep(3)
        self.assertEqual((len(self.a.requests), len(self.b.requests)), (1, 0), "nothing went after the client left")

    def test_refusals_carry_the_route_header_and_the_policys_words(self):
        # A rejection, an empty plan and a policy error reach the client with the policy's trace
        # in x-moongate-route, and a 404 model_not_found keeps the policy's own message.
        gw = self.gw_with('''
function route(req)
  gw.trace("team=%s checked", req.headers["x-team"] or "?")
  local m = req.headers["x-mode"]
  if m == "reject" then return gw.reject(429, "team_quota", "team over its quota") end
  if m == "404" then return gw.reject(404, "model_not_found", "interns may only ask for model small") end
  if m == "empty" then return {} end
  if m == "boom" then error("boom") end
  return {"a/m"}
end
''')
        for mode, status in (("reject", 429), ("404", 404), ("empty", 503), ("boom", 500)):
            for path in ("/v1/chat/completions", "/v1/messages"):
                with self.subTest(mode=mode, path=path):
                    r = gw.post_json(path, {"model": "default", "max_tokens": 8, "messages": [
                        {"role": "user", "content": "x"}]}, headers={"x-team": "search", "x-mode": mode})
                    self.assertEqual(r.status, status, r)
                    route = r.header("x-moongate-route") or ""
                    self.assertIn("trace=team=search checked", route, r)
                    if mode == "404":
                        msg = r.json["error"]["message"]
                        self.assertEqual(msg, "interns may only ask for model small", r)

    def test_a_stream_cut_after_it_reached_the_client_says_so_everywhere(self):
        # The upstream ends a Chat stream early but cleanly (no finish_reason, no [DONE]): the
        # client gets an error event, and the access line and on_complete say stream_broken too,
        # passed through (Chat client) or translated (Messages client).
        self.a.set_behavior("answer", events=6, end_after=3)
        gw = self.gw_with('function route(req) return {"a/m"} end\n'
                          'function on_complete(req, r) gw.log("info", "OC %s", tostring(r.error_class)) end\n')
        cases = (("/v1/chat/completions", {"model": "a/m", "stream": True, "messages": [{"role": "user", "content": "x"}]}),
                 ("/v1/messages", {"model": "a/m", "stream": True, "max_tokens": 8,
                                   "messages": [{"role": "user", "content": "x"}]}))
        for i, (path, body) in enumerate(cases):
            with self.subTest(path=path):
                s = gw.stream_all(body, path=path)
                self.assertEqual(s.status, 200, s)
                self.assertIn(b'"error"', s.raw.rstrip()[-400:], s)  # it ends with an error event
                line = gw.wait_access(i + 1)[i]
                self.assertEqual([x["outcome"] for x in line["attempts"]], ["stream_broken"], line)
                oc = gw.wait_lines(lambda l: "OC " in l.get("detail", ""), n=i + 1, what="on_complete")[i]
                self.assertTrue(oc["detail"].endswith("OC stream_broken"), oc)

    def test_retries_stop_at_the_attempt_limit(self):
        # on_failure always says "retry": 4 candidates x 6 tries would be 24 attempts; the
        # gateway keeps at most 16 (it used to write past its attempt array here).
        self.a.set_behavior("fail", status=500)
        gw = self.gateway(start=False, cfg=config(providers={"a": provider(self.a, ["m", "n", "o", "p"])},
                                                  primary="a/m", gateway={"policy": "policy.lua"}))
        with open(os.path.join(gw.dir, "policy.lua"), "w") as f:
            f.write('function route(req) return {"a/m", "a/n", "a/o", "a/p"} end\n'
                    'function on_failure(req, f) return "retry", 0 end\n')
        gw.start()
        r = gw.chat("default")
        self.assertOpenAIError(r, 502, "all_candidates_failed")
        self.assertEqual(len(r.route["attempts"]), 16, r.route["raw"])
        self.assertEqual(len(self.a.requests), 16)
        self.assertEqual(gw.chat("default").status, 502, "the gateway still serves")


class GatewayRegions(MGTestCase):
    def test_gateway_allowed_regions_refuse_rather_than_egress(self):
        a, b = self.mock("A"), self.mock("B")
        gw = self.gateway(config(
            providers={"a": provider(a, ["m"]), "b": provider(b, ["m"])}, primary="b/m", fallbacks=["a/m"],
            gateway={"allowedRegions": ["eu"],
                     "providers": {"a": {"region": "us", "tags": ["hosted"]},
                                   "b": {"region": "us", "tags": ["hosted"]}}}))
        err = self.assertOpenAIError(gw.chat("default"), 403, "region_not_allowed")
        self.assertIn("us", err["message"])
        self.assertEqual(len(a.requests) + len(b.requests), 0, "nothing left the gateway")


class Offline(MGTestCase):
    def test_moongate_test_runs_the_shipped_policy_tests(self):
        p = subprocess.run([BIN, "test", os.path.join(REPO, "policies", "tests")], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\n(\d+) passed, 0 failed")

    def test_moongate_route_prints_the_plan(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"]), "b": provider(a, ["m"])},
                                 primary="a/m", fallbacks=["b/m"]), start=False)
        req = os.path.join(gw.dir, "req.json")
        with open(req, "w") as f:
            json.dump({"model": "default", "prompt_tokens": 1200, "stream": True}, f)
        p = subprocess.run([BIN, "route", "--config", gw.config_path, "--request", req],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertLess(p.stdout.find("a/m"), p.stdout.find("b/m"), p.stdout)
        self.assertEqual(len(a.requests), 0, "route sends nothing")

    def test_route_needs_no_client_key_secrets_but_serving_does(self):
        a = self.mock("A")
        os.environ.pop("MG_TEST_UNSET_CLIENT_KEY", None)
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"keys": [{"id": "team", "key": "${MG_TEST_UNSET_CLIENT_KEY}"}]}),
                          start=False)
        req = os.path.join(gw.dir, "req.json")
        with open(req, "w") as f:
            json.dump({"model": "default"}, f)
        p = subprocess.run([BIN, "route", "--config", gw.config_path, "--request", req],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("a/m", p.stdout)
        p = subprocess.run([BIN, "check", "--config", gw.config_path], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("environment variable MG_TEST_UNSET_CLIENT_KEY is not set", p.stdout + p.stderr)


if __name__ == "__main__":
    mglib.main()

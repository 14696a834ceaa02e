#!/usr/bin/env python3
"""Every error class through the real binary (issue 6 item 5): a mock upstream answers with each
status/header/body as the servers write them, and the attempt's class in x-moongate-route is the
expected one; whether the router moved on (or answered the client) follows the class."""

import mglib
from mglib import MGTestCase, config, provider
from mock_upstream import ERRORS

# (name, behaviour of the failing upstream, expected class, moves on to the next candidate)
CASES = [
    ("refused", None, "connect_error", True),
    ("rate limit", {"mode": "fail", "status": 429, "headers": {"Retry-After": "1"}}, "rate_limit", True),
    ("overloaded 503", {"mode": "fail", "status": 503}, "overloaded", True),
    ("anthropic 529", {"mode": "fail", "status": 529,
                       "body": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}},
     "overloaded", True),
    ("server error", {"mode": "fail", "status": 500}, "server_error", True),
    ("auth", {"mode": "fail", "status": 401}, "auth", True),
    ("billing", {"mode": "fail", "status": 402, "body": {"error": {"code": 402, "message": "Insufficient credits"}}},
     "billing", True),
    ("quota 429", {"mode": "fail", "status": 429,
                   "body": {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                      "code": "insufficient_quota"}}}, "billing", True),
    ("model not found", {"mode": "fail", "status": 404,
                         "body": {"error": {"message": "model \"x\" not found, try pulling it first",
                                            "type": "not_found_error"}}}, "model_not_found", True),
    ("model not loaded", {"mode": "fail", "status": 503,
                          "body": {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}},
     "model_not_loaded", True),
    ("context overflow", {"mode": "fail", "status": 400, "body": ERRORS["context_openai"]}, "context_overflow", True),
    ("content filter", {"mode": "fail", "status": 400,
                        "body": {"error": {"message": "flagged by the content_filter", "type": "invalid_request_error",
                                           "code": "content_filter"}}}, "content_filter", False),
    ("bad request", {"mode": "fail", "status": 400,
                     "body": {"error": {"message": "temperature must be <= 2", "type": "invalid_request_error"}}},
     "bad_request", False),
    # llama-server without --jinja, to a request with tools (a 500 in current builds, a 400 in others)
    ("no --jinja 500", {"mode": "fail", "status": 500, "body": {"error": {
        "code": 500, "message": "tools param requires --jinja flag", "type": "server_error"}}}, "unsupported", True),
    ("no --jinja 400", {"mode": "fail", "status": 400, "body": {"error": {
        "code": 400, "message": "tools param requires --jinja flag", "type": "invalid_request_error"}}},
     "unsupported", True),
    ("timeout", {"mode": "slow", "delay_ms": 3000}, "timeout", True),
    ("reset", {"mode": "close"}, "connect_error", True),
]


class Classes(MGTestCase):
    def test_every_class_from_a_real_answer(self):
        for name, behavior, want, moves_on in CASES:
            with self.subTest(case=name):
                bad = self.down() if behavior is None else self.mock("A", behavior=behavior)
                good = self.mock("B")
                gw = self.gateway(config(
                    providers={"a": provider(bad, ["m"]),
                               "b": provider(good, [{"id": "m", "contextWindow": 1000000}])},
                    primary="a/m", fallbacks=["b/m"],
                    gateway={"timeouts": {"totalMs": 800}, "health": {"maxRetries": 0}}))
                r = gw.chat("default")
                got = r.route["attempts"][0]
                self.assertEqual(got[:2], ("a/m", want), r.route["raw"])
                if moves_on:
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.header("x-moongate-model"), "b/m", r)
                else:
                    self.assertEqual(r.status, 400, r)
                    self.assertEqual(len(good.requests), 0, "a request-caused error must not be retried elsewhere")
                gw.stop()

    def test_a_local_server_that_refuses_tools_keeps_serving_plain_requests(self):
        """llama-server without --jinja refuses every request with tools: unsupported, so those
        move on to the next candidate, and the local model is never cooled down for them (as
        server_error it was after 3, and plain requests left the local box too)."""
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        for status, typ in ((500, "server_error"), (400, "invalid_request_error")):
            with self.subTest(status=status):
                local, hosted = self.mock("L"), self.mock("H")
                gw = self.gateway(config(providers={"llama": provider(local, ["q"]), "hosted": provider(hosted, ["big"])},
                                         primary="llama/q", fallbacks=["hosted/big"]))
                local.set_behavior("fail", status=status, body={"error": {
                    "code": status, "message": "tools param requires --jinja flag", "type": typ}})
                for _ in range(4):
                    r = gw.chat("default", tools=[tool])
                    self.assertEqual((r.status, r.header("x-moongate-model")), (200, "hosted/big"), r)
                    self.assertEqual(r.route["attempts"][0][:2], ("llama/q", "unsupported"), r.route["raw"])
                local.clear_behaviors()
                r = gw.chat("default")
                self.assertEqual((r.status, r.header("x-moongate-model")), (200, "llama/q"), r)
                gw.stop()


if __name__ == "__main__":
    mglib.main()

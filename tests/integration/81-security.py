#!/usr/bin/env python3
"""Security review regressions through the real binary: a key limited to some models is never
served by another one through a fallback chain; browser requests (Origin) are refused where only
the client's address guards the gateway (no client keys, no admin key); and a large body that
fails to parse at its end is refused quickly (the parse used to be quadratic in the body size,
holding the serving thread)."""

import socket
import time

import mglib
from mglib import MGTestCase, config, provider

KEY = "mgk-sec-canary-111"
ADMIN = "mgk-sec-admin-222"


class KeyModels(MGTestCase):
    def setUp(self):
        self.a, self.b = self.mock("A"), self.mock("B")
        keys = [{"id": "local-only", "key": "${MG_IT_KEY}", "models": ["a/m", "a/fail-500"]},
                {"id": "routes", "key": "${MG_IT_KEY2}", "models": ["default"]}]
        self.gw = self.gateway(
            config(providers={"a": provider(self.a, ["m", "fail-500"]),
                              "b": provider(self.b, ["m"], api="anthropic-messages")},
                   primary="a/fail-500", fallbacks=["b/m"], gateway={"keys": keys}),
            env={"MG_IT_KEY": KEY, "MG_IT_KEY2": KEY + "x"}, secrets=[KEY, KEY + "x"])

    def test_fallback_chain_stays_within_the_keys_models(self):
        # a/fail-500 starts the default chain, whose fallback b/m the key may not use.
        r = self.gw.chat("a/fail-500", headers={"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 502, r)
        self.assertEqual(len(self.b.requests), 0, "b/m served a key that may not use it")
        self.assertIn("key local-only may not use b/m", r.header("x-moongate-route"), r)
        self.assertEqual([a[0] for a in r.route["attempts"]], ["a/fail-500"], r)

    def test_route_name_allows_its_whole_plan(self):
        r = self.gw.chat("default", headers={"Authorization": "Bearer " + KEY + "x"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-moongate-model"), "b/m", r)

    def test_an_alias_the_key_lists_allows_its_model(self):
        gw = self.gateway(
            config(providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"])},
                   aliases={"Big": "b/m"},
                   gateway={"keys": [{"id": "k", "key": "${MG_IT_KEY}", "models": ["a/m", "Big"]}]}),
            env={"MG_IT_KEY": KEY}, secrets=[KEY])
        r = gw.chat("Big", headers={"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-moongate-model"), "b/m", r)

    def test_a_policy_sending_elsewhere_is_403(self):
        # The key may use a/m, but the policy routes every request to b/m.
        gw = self.gateway(
            config(providers={"a": provider(self.a, ["m"]), "b": provider(self.b, ["m"])},
                   primary="a/m",
                   gateway={"policy": "p.lua",
                            "keys": [{"id": "k", "key": "${MG_IT_KEY}", "models": ["a/m"]}]}),
            env={"MG_IT_KEY": KEY}, secrets=[KEY], start=False)
        with open(gw.dir + "/p.lua", "w") as f:
            f.write('function route(req) return { "b/m" } end\n')
        gw.start()
        r = gw.chat("a/m", headers={"Authorization": "Bearer " + KEY})
        self.assertOpenAIError(r, 403, "model_not_allowed")
        self.assertEqual(len(self.b.requests), 0)


class BrowserOrigin(MGTestCase):
    BODY = {"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}
    EVIL = {"Origin": "http://attacker.example", "Content-Type": "text/plain"}

    def test_no_keys_refuses_browser_requests(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        r = gw.post_json("/v1/chat/completions", self.BODY, headers=self.EVIL)
        self.assertOpenAIError(r, 403, "origin_not_allowed")
        r = gw.post_json("/v1/messages", dict(self.BODY, max_tokens=5), headers=self.EVIL)
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json["type"], "error", r)
        self.assertEqual(len(a.requests), 0, "a cross-site request reached the upstream")
        r = gw.post_json("/admin/reload", {}, headers=self.EVIL)
        self.assertOpenAIError(r, 403, "origin_not_allowed")
        # Ordinary clients (no Origin) are unaffected.
        self.assertEqual(gw.post_json("/v1/chat/completions", self.BODY).status, 200)
        self.assertEqual(gw.post_json("/admin/reload", {}).status, 200)

    def test_with_keys_a_browser_request_needs_the_key(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"keys": [{"id": "k", "key": "${MG_IT_KEY}"}],
                                          "adminKey": "${MG_IT_ADMIN}"}),
                          env={"MG_IT_KEY": KEY, "MG_IT_ADMIN": ADMIN}, secrets=[KEY, ADMIN])
        r = gw.post_json("/v1/chat/completions", self.BODY, headers=self.EVIL)
        self.assertOpenAIError(r, 401, "missing_api_key")
        h = dict(self.EVIL, Authorization="Bearer " + KEY)
        self.assertEqual(gw.post_json("/v1/chat/completions", self.BODY, headers=h).status, 200)
        h = dict(self.EVIL, Authorization="Bearer " + ADMIN)
        self.assertEqual(gw.post_json("/admin/reload", {}, headers=h).status, 200)


class DnsRebinding(MGTestCase):
    """A page whose own name now resolves to 127.0.0.1 is same-origin with the gateway and its GETs
    carry no Origin; its Host header still names the page's domain. Where the client's address is
    the only guard, Host must be an IP literal, localhost (or *.localhost), or in allowedHosts."""
    BODY = {"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}

    def test_a_foreign_host_is_refused_where_the_address_is_the_only_guard(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"allowedHosts": ["gw.internal"]}))
        evil = {"Host": "rebind.attacker.example:%d" % gw.port}
        for path in ("/v1/models", "/admin/policy", "/admin/health"):
            r = gw.get(path, headers=evil)
            self.assertOpenAIError(r, 403, "host_not_allowed")
            self.assertIn("gateway.allowedHosts", r.json["error"]["message"], r)
        r = gw.post_json("/v1/chat/completions", self.BODY, headers=evil)
        self.assertOpenAIError(r, 403, "host_not_allowed")
        r = gw.post_json("/v1/messages", dict(self.BODY, max_tokens=5), headers=evil)
        self.assertEqual((r.status, r.json["type"], r.json["error"]["type"]), (403, "error", "permission_error"), r)
        self.assertEqual(len(a.requests), 0, "a rebound request reached the upstream")
        # A name that merely starts like an address is a name.
        self.assertEqual(gw.get("/v1/models", headers={"Host": "127.0.0.1.attacker.example"}).status, 403)
        # The admin hears of it once, not once per request.
        warned = gw.wait_lines(lambda l: l.get("msg") == "host not allowed", what="host warning")
        self.assertEqual(len(warned), 1, warned)
        self.assertIn("rebind.attacker.example", warned[0].get("detail", ""), warned)
        # Local names, IP literals, this machine's name (whole or short) and the listed name pass;
        # /health and /metrics are not guarded.
        me = socket.gethostname()
        for host in ("127.0.0.1:%d" % gw.port, "localhost", "LocalHost.:1", "app.localhost", "[::1]:8787",
                     "gw.internal", "GW.Internal:443", me, "%s:%d" % (me.split(".")[0].upper(), gw.port)):
            self.assertEqual(gw.get("/v1/models", headers={"Host": host}).status, 200, host)
        for path in ("/health", "/metrics"):
            self.assertEqual(gw.get(path, headers=evil).status, 200, path)

    def test_keys_guard_instead_and_star_allows_any(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"keys": [{"id": "k", "key": "${MG_IT_KEY}"}],
                                          "adminKey": "${MG_IT_ADMIN}"}),
                          env={"MG_IT_KEY": KEY, "MG_IT_ADMIN": ADMIN}, secrets=[KEY, ADMIN])
        evil = {"Host": "gw.example.org"}
        self.assertEqual(gw.get("/v1/models", headers=dict(evil, Authorization="Bearer " + KEY)).status, 200)
        self.assertEqual(gw.get("/admin/policy", headers=dict(evil, Authorization="Bearer " + ADMIN)).status, 200)
        b = self.mock("B")
        gw2 = self.gateway(config(providers={"b": provider(b, ["m"])}, primary="b/m",
                                  gateway={"allowedHosts": ["*"]}))
        self.assertEqual(gw2.get("/v1/models", headers=evil).status, 200)


def _raw(gw, data, timeout=5):
    """Sends data on a fresh connection and reads until the gateway closes it or goes quiet."""
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.settimeout(timeout)
    s.sendall(data)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
            if b"\r\n\r\n" in got and time.sleep(0.2) is None:
                s.settimeout(0.5)
    except socket.timeout:
        pass
    s.close()
    return got


class HttpEdges(MGTestCase):
    """What RFC 9112 says a server must refuse in a request's framing (request smuggling behind a
    proxy), and requests that were answered wrongly or not at all."""

    def setUp(self):
        self.a = self.mock("A")
        self.gw = self.gateway(config(providers={"a": provider(self.a, ["m"])}, primary="a/m"))
        self.body = b'{"model":"a/m","messages":[{"role":"user","content":"hi"}]}'

    def post(self, extra, body=None):
        body = self.body if body is None else body
        return _raw(self.gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\n" + extra + b"\r\n" + body)

    def test_ambiguous_framing_is_refused_and_the_connection_closed(self):
        smuggled = b"GET /admin/policy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        n = len(self.body)
        cases = (
            (b"Content-Length: %d\r\nContent-Length: %d\r\n" % (n, n + len(smuggled)), 400),
            (b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % n, 400),
            (b"Transfer-Encoding: gzip, chunked\r\n", 501),
            (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", 400),
        )
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (n, self.body)  # well formed, so only the framing is wrong
        for extra, status in cases:
            with self.subTest(extra=extra):
                got = self.post(extra, (chunked if b"identity" in extra else self.body) + smuggled)
                self.assertTrue(got.startswith(b"HTTP/1.1 %d" % status), got[:200])
                self.assertEqual(got.count(b"HTTP/1.1 "), 1, "a second request ran: %r" % got)
        self.assertEqual(len(self.a.requests), 0)

    def test_a_get_with_a_slow_body_is_cut_like_any_slow_request(self):
        # The body of a GET is read and dropped, within the head's deadline (headerTimeoutMs):
        # one byte a second must not hold the connection.
        gw = self.gateway(config(providers={"a": provider(self.a, ["m"])}, primary="a/m",
                                 gateway={"headerTimeoutMs": 1000, "bodyTimeoutMs": 1000}))
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000\r\n\r\n")
        t0, closed = time.monotonic(), False
        s.settimeout(0.3)
        while time.monotonic() - t0 < 6 and not closed:
            try:
                s.sendall(b"x")
                closed = s.recv(100) == b""
            except socket.timeout:
                pass
            except OSError:
                closed = True
        s.close()
        self.assertTrue(closed, "a GET trickling its body was still open after 6 s")
        self.assertLess(time.monotonic() - t0, 4)

    def test_odd_requests_get_a_clear_answer(self):
        # An escaped NUL in the path would end it early; an HTTP/1.1 request needs Host; a
        # compressed body is not read as JSON; a GET with a body is answered.
        got = _raw(self.gw, b"POST /v1/chat/completions%00junk HTTP/1.1\r\nHost: x\r\nContent-Length: "
                   + str(len(self.body)).encode() + b"\r\n\r\n" + self.body)
        self.assertTrue(got.startswith(b"HTTP/1.1 400"), got[:200])
        self.assertIn(b"invalid_path", got)
        got = _raw(self.gw, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(self.body)
                   + self.body)
        self.assertTrue(got.startswith(b"HTTP/1.1 400"), got[:200])
        self.assertIn(b"missing_host", got)
        got = self.post(b"Content-Encoding: gzip\r\nContent-Length: 4\r\n", b"\x1f\x8b\x08\x00")
        self.assertTrue(got.startswith(b"HTTP/1.1 415"), got[:200])
        got = self.post(b"Content-Encoding: identity\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n",
                        b"\x1f\x8b\x08\x00")
        self.assertTrue(got.startswith(b"HTTP/1.1 415"), got[:200])
        self.assertIn(b"unsupported_content_encoding", got)
        got = _raw(self.gw, b"GET http://127.0.0.1:%d/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % self.gw.port)
        self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:200])  # the absolute form of the target
        self.assertIn(b'"a/m"', got)
        for path in (b"/v1/models", b"/health", b"/metrics"):
            got = _raw(self.gw, b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}" % path)
            self.assertTrue(got.startswith(b"HTTP/1.1 200"), (path, got[:200]))
        self.assertEqual(len(self.a.requests), 0)

    def test_refusals_are_counted_and_name_their_api(self):
        # Refused before the body is read or parsed, a request still counts in the metrics (model
        # "none") and its access line names its API; on Anthropic's token count its errors are
        # Anthropic's.
        self.gw.post_json("/v1/chat/completions", b"{not json")
        self.gw.post_json("/v1/messages", b'{"model":"a","model":"b"}')
        r = self.gw.post_json("/v1/messages/count_tokens", {"model": "a/m", "messages": []},
                              headers={"Origin": "http://evil.example"})
        self.assertEqual((r.status, r.json.get("type")), (403, "error"), r)
        text = self.gw.get("/metrics").body.decode()
        self.assertEqual(mglib.metric(text, "moongate_requests_total", api="chat", model="none", status="400"), 1)
        self.assertEqual(mglib.metric(text, "moongate_requests_total", api="messages", model="none", status="400"), 1)
        self.assertEqual(mglib.metric(text, "moongate_requests_total", api="count_tokens", model="none", status="403"), 1)
        lines = self.gw.wait_access(4)
        self.assertEqual([l.get("api") for l in lines if l["path"].startswith("/v1/")],
                         ["chat", "messages", "messages"], lines)


def _ipv6_address(dest):
    """The local IPv6 address a datagram to dest would leave from, or None (no IPv6, no route).
    Nothing is sent."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect((dest, 9))
            return s.getsockname()[0]
    except OSError:
        return None


class AdminOverIPv6(MGTestCase):
    """Without adminKey the admin endpoints answer loopback clients only, by the peer's address.
    On `[::]` that address is never an IPv4-mapped one (::ffff:127.0.0.1, which the loopback test
    would refuse): libmicrohttpd makes an IPv6 listening socket IPv6-only (IPV6_V6ONLY, as it is
    not asked for MHD_USE_DUAL_STACK), so IPv4 clients cannot connect at all. If the listener ever
    becomes dual-stack, that assertion fails here and the loopback test needs to learn mapped
    addresses."""

    def setUp(self):
        if not _ipv6_address("::1"):
            self.skipTest("no IPv6 loopback on this machine")
        a = self.mock("A")
        self.gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"), start=False)
        self.gw.listen_host, self.gw.connect_host = "::", "::1"
        self.gw.start()

    def test_ipv6_loopback_is_loopback(self):
        self.assertEqual(self.gw.get("/admin/policy").status, 200)
        self.assertEqual(self.gw.post_json("/admin/reload", {}).status, 200)

    def test_ipv6_other_addresses_are_not(self):
        addr = _ipv6_address("2001:db8::1")  # this machine's own non-loopback address, if any
        if not addr or addr.startswith("fe80:"):
            self.skipTest("no routable IPv6 address on this machine")
        self.gw.connect_host = addr
        self.assertOpenAIError(self.gw.get("/admin/policy"), 401, "admin_unauthorized")
        self.assertEqual(self.gw.get("/health").status, 200)  # it is reachable, only not admin

    def test_ipv4_clients_cannot_reach_an_ipv6_listener(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            self.assertNotEqual(s.connect_ex(("127.0.0.1", self.gw.port)), 0,
                                "[::] accepted IPv4: check that admin access treats ::ffff:127.0.0.1 as loopback")


class ParseCost(MGTestCase):
    def test_large_invalid_body_is_refused_quickly(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        # ~1.2 MB, 600,000 array elements, never closed: cJSON builds the whole partial tree and
        # then frees it. Freeing it used to search the arena's chunk list for every node.
        body = b'{"model":"a/m","messages":[' + b"0," * 600000
        t0 = time.monotonic()
        r = gw.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"},
                       timeout=120)
        took = time.monotonic() - t0
        self.assertOpenAIError(r, 400, "invalid_json")
        self.assertLess(took, 4.0 * mglib.TIMEOUT_SCALE, "a 1.2 MB invalid body took %.1f s" % took)

    def test_a_body_of_millions_of_values_is_refused_before_it_takes_gigabytes(self):
        # Valid JSON, 8 MB: four million numbers would take about 300 MB as cJSON nodes.
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        body = (b'{"model":"a/m","messages":[{"role":"user","content":"hi"}],"x":['
                + b"0," * 4000000 + b'0]}')

        def peak_kb():
            with open("/proc/%d/status" % gw.proc.pid) as f:
                return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
        before = peak_kb()
        r = gw.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"},
                       timeout=120)
        err = self.assertOpenAIError(r, 413, "request_too_large")
        self.assertIn("too many JSON values", err["message"])
        grown = peak_kb() - before  # the body (8 MB) and at most 64 MiB of parse, plus slack
        self.assertLess(grown, 160 * 1024, "peak RSS grew by %d KiB" % grown)
        self.assertEqual(len(a.requests), 0)
        self.assertEqual(gw.chat("default").status, 200)



class UpstreamParseCost(MGTestCase):
    """A hostile upstream's JSON of millions of tiny values (about 80 bytes of cJSON tree per two
    bytes of text) must not take the gateway's memory: an error body is read as JSON only up to
    256 KiB (its first bytes as text past that), every other parse of upstream bytes has the
    request body's 64 MiB budget."""
    VALUES = 4000000  # 8 MB of text, about 300 MB as a tree

    def _peak_growth_kb(self, api, behavior, path="/v1/chat/completions", stream=False):
        a = self.mock("A", behavior=behavior)
        gw = self.gateway(config(providers={"a": provider(a, ["m"], api=api)}, primary="a/m"))

        def peak_kb():
            with open("/proc/%d/status" % gw.proc.pid) as f:
                return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
        before = peak_kb()
        r = gw.post_json(path, {"model": "default", "stream": stream, "max_tokens": 20,
                                "messages": [{"role": "user", "content": "hi"}]}, timeout=120)
        return r, peak_kb() - before

    def test_an_error_body_of_millions_of_values_is_read_as_text(self):
        arr = b"0," * self.VALUES + b"0"
        body = b'{"error":{"message":"bad","type":"invalid_request_error","x":[' + arr + b"]}}"
        r, grown = self._peak_growth_kb("openai-completions", {"mode": "fail", "status": 400, "body": body})
        # The body (8 MB) and the reply; no tree. It was about 300 MB.
        self.assertLess(grown, 64 * 1024, "peak RSS grew by %d KiB" % grown)
        err = self.assertOpenAIError(r, 400)
        self.assertTrue(err["message"].startswith('{"error":{"message":"bad"'), err)
        self.assertLess(len(r.body), 2048, "the 8 MB body went back whole")

    def test_a_2xx_error_and_a_stream_event_of_millions_of_values_stay_in_budget(self):
        arr = b"0," * self.VALUES + b"0"
        cases = [("openai-completions", {"mode": "fail", "status": 200,
                                          "body": b'{"error":{"message":"bad","x":[' + arr + b"]}}"}, False),
                 ("openai-responses", {"mode": "answer", "raw_sse": b"event: response.completed\ndata: "
                                       b'{"type":"response.completed","response":{"x":[' + arr + b"]}}\n\n"}, True)]
        for api, behavior, stream in cases:
            with self.subTest(api=api):
                r, grown = self._peak_growth_kb(api, behavior, stream=stream)
                # The body or event (8 MB) and at most 64 MiB of parse, plus slack: under ASan,
                # whose allocator about doubles each small node, 180-190 MB. About 320 MB before
                # the budget (Debug), far more under ASan.
                self.assertLess(grown, 256 * 1024, "peak RSS grew by %d KiB" % grown)
                self.assertOpenAIError(r, 502, "all_candidates_failed")


if __name__ == "__main__":
    mglib.main()

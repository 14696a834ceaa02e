#!/usr/bin/env python3
"""Graceful stop (issue 8 item 6): on SIGTERM moongate stops accepting, lets streams in flight
finish within gateway.drainMs, then ends the rest with an error event in their API's format, and
exits 0 with no crash or sanitizer report; plus header hygiene seen by an echoing upstream."""

import json
import signal
import socket
import threading
import time

import mglib
from mglib import MGTestCase, config, provider

BODY = {"model": "default", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def read_all(gw, out, key):
    chunks = []
    try:
        it = gw.stream("/v1/chat/completions", BODY, timeout=15)
        status, _ = next(it)
        for data in it:
            chunks.append(data)
        out[key] = (status, b"".join(chunks))
    except Exception as e:  # noqa: BLE001 - recorded for the assertion
        out[key] = ("error", repr(e).encode() + b"".join(chunks))


class Stop(MGTestCase):
    def test_streams_in_flight_finish_within_the_drain(self):
        a = self.mock("A", behavior={"mode": "answer", "events": 8, "pacing_ms": 150})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"drainMs": 5000}))
        out = {}
        t = threading.Thread(target=read_all, args=(gw, out, "s"))
        t.start()
        a.wait_requests(1)
        time.sleep(0.2)
        gw.proc.send_signal(signal.SIGTERM)
        # No new connections once stopping: refused at once (a timeout would mean the kernel
        # still completes them for nobody to serve, reset at exit).
        time.sleep(0.2)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=1).recv(1)
        t.join(10)
        status, body = out["s"]
        self.assertEqual(status, 200, body)
        self.assertTrue(body.rstrip().endswith(b"data: [DONE]"), body[-200:])
        self.assertEqual(gw.proc.wait(10), 0)

    def test_streams_past_the_drain_end_with_an_error_event(self):
        a = self.mock("A", behavior={"mode": "answer", "stall_after": 2})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"drainMs": 300}))
        out = {}
        t = threading.Thread(target=read_all, args=(gw, out, "s"))
        t.start()
        a.wait_requests(1)
        time.sleep(0.3)
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        t.join(10)
        self.assertLess(time.monotonic() - t0, 5)
        status, body = out["s"]
        self.assertEqual(status, 200, body)
        self.assertIn(b'data: {"error"', body)
        self.assertNotIn(b"[DONE]", body)
        self.assertEqual(gw.proc.wait(10), 0)
        a.wait_disconnect(0, timeout=3)


class SlowSenders(MGTestCase):
    def test_a_body_trickled_past_the_deadline_is_cut_and_others_are_served(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"bodyTimeoutMs": 1000}))
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 4:
            try:
                s.sendall(b" ")          # a byte every 100 ms: never idle, never done
                time.sleep(0.1)
                if s.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True        # the gateway closed its side
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            # meanwhile everyone else is served
            self.assertEqual(gw.chat("default").status, 200)
        if not closed:
            try:
                closed = s.recv(1) == b""
            except OSError:
                closed = True
        s.close()
        self.assertTrue(closed, "the slow sender kept its connection past the body deadline")
        self.assertLess(time.monotonic() - t0, 3.0)
        line = gw.wait_access(1, pred=lambda l: l.get("status") == 408)[0]
        self.assertEqual(line["path"], "/v1/chat/completions", line)
        self.assertEqual(len([q for q in a.requests if q.json and q.json.get("messages") is None]), 0)

    def _trickle_until_closed(self, gw, first, step, limit_s):
        """Sends first, then step every 100 ms; returns the seconds until the gateway closed
        the connection (None if it did not within limit_s). Others are served meanwhile."""
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        t0 = time.monotonic()
        try:
            if first:
                s.sendall(first)
            while time.monotonic() - t0 < limit_s:
                try:
                    if step:
                        s.sendall(step)
                    time.sleep(0.1)
                    if s.recv(1, socket.MSG_DONTWAIT) == b"":
                        return time.monotonic() - t0
                except BlockingIOError:
                    pass
                except OSError:
                    return time.monotonic() - t0
                self.assertEqual(gw.chat("default").status, 200)
            return None
        finally:
            s.close()

    def test_headers_trickled_past_the_deadline_are_cut(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"headerTimeoutMs": 1000}))
        # Slowloris: a header line every 100 ms, never the blank line that ends the head.
        took = self._trickle_until_closed(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n",
                                          b"X-a: b\r\n", 4)
        self.assertIsNotNone(took, "the slow head kept its connection past headerTimeoutMs")
        self.assertLess(took, 2.5)
        deadline = time.monotonic() + 3       # the warning follows the close: let it arrive
        while "request head timeout" not in gw.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("request head timeout", gw.stderr_text())
        # The request line itself trickled a byte at a time is cut the same way.
        took = self._trickle_until_closed(gw, b"", b"P", 4)
        self.assertIsNotNone(took)
        self.assertLess(took, 2.5)
        self.assertEqual(len([q for q in a.requests if q.json and q.json.get("messages") is None]), 0)

    def test_idle_keep_alive_is_closed_and_busy_keep_alive_is_not(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"headerTimeoutMs": 1000}))
        # The deadline restarts after each request: five requests 400 ms apart on one
        # connection (2 s in all) are all served on it.
        c = gw.conn()
        body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]})
        for _ in range(5):
            c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            time.sleep(0.4)
        sock = c.sock
        # Then idle: closed after the deadline, quietly (no warning).
        time.sleep(1.8)
        self.assertEqual(sock.recv(1, socket.MSG_DONTWAIT), b"")
        c.close()
        self.assertNotIn("request head timeout", gw.stderr_text())


class Limits(MGTestCase):
    """gateway.maxConnectionsPerIp, which moongate counts itself across all serving threads."""

    BODY = b'{"model":"default","messages":[{"role":"user","content":"x"}]}'

    def start(self, gateway):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m", gateway=gateway))
        self.taken = sum(gw.get("/health").json["requests_by_thread"])
        # The connections of the start-up check and of that GET (keep-alive, then closed by the
        # client) must be gone from the server's count first, or they take slots.
        time.sleep(0.3 * mglib.TIMEOUT_SCALE)
        return gw

    def hold(self, gw, n):
        """n connections, each served one request (so accepted and counted) and kept open."""
        held = []
        for _ in range(n):
            h = socket.create_connection(("127.0.0.1", gw.port), timeout=5 * mglib.TIMEOUT_SCALE)
            h.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY))
            self.assertTrue(h.recv(100).startswith(b"HTTP/1.1 200"))
            held.append(h)
        return held

    def refused(self, gw, tries):
        """How many of tries new connections were closed unanswered."""
        n = 0
        for _ in range(tries):
            extra = socket.create_connection(("127.0.0.1", gw.port), timeout=5 * mglib.TIMEOUT_SCALE)
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                got = extra.recv(100)
            except OSError:
                got = b""
            n += got == b""
            extra.close()
        return n

    def release(self, gw, held):
        for h in held:
            h.close()
        time.sleep(0.3)
        # Counted down again as they close: new connections are served.
        for _ in range(4):
            self.assertEqual(gw.get("/health").status, 200)

    def test_connections_per_ip_are_capped(self):
        for threads, cap in ((1, 2), (3, 3)):
            with self.subTest(threads=threads):
                gw = self.start({"threads": threads, "maxConnectionsPerIp": cap})
                held = self.hold(gw, cap)
                self.assertEqual(self.refused(gw, 3), 3, "connections over the cap were served")
                self.release(gw, held)
                # Requests taken, by all threads together: the held ones, release's and this one;
                # none from the refused connections.
                self.assertEqual(sum(gw.get("/health").json["requests_by_thread"]), self.taken + cap + 4 + 1)

    def test_a_reload_applies_a_new_cap_to_open_connections(self):
        gw = self.start({"threads": 2})
        held = self.hold(gw, 3)
        self.assertEqual(self.refused(gw, 1), 0)
        cfg = dict(gw.cfg)
        cfg["gateway"] = dict(cfg["gateway"], maxConnectionsPerIp=3)
        with open(gw.config_path, "w") as f:
            json.dump(cfg, f)
        self.assertEqual(gw.request("POST", "/admin/reload").status, 200)
        time.sleep(0.3)  # the reload's own connection is gone from the count
        self.assertEqual(self.refused(gw, 2), 2, "the three connections open before the reload were not counted")
        self.release(gw, held)


class KeepAlive(MGTestCase):
    def test_get_endpoints_keep_the_connection(self):
        # libmicrohttpd closes after a reply queued on its first call; GETs are answered on the
        # second, so a health checker or an SDK listing models keeps its connection.
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
        c = gw.conn()
        socks = []
        for path in ("/health", "/v1/models", "/metrics", "/health"):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200, path)
            self.assertNotEqual((r.getheader("connection") or "").lower(), "close", path)
            socks.append(c.sock)
        self.assertTrue(all(s is socks[0] for s in socks), "a GET reply closed the connection")
        # A POST on the same connection still works after them.
        c.request("POST", "/v1/chat/completions",
                  body=b'{"model":"default","messages":[{"role":"user","content":"x"}]}',
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        self.assertEqual(r.status, 200, r.read())
        c.close()


class Hygiene(MGTestCase):
    def test_client_headers_stay_home_and_set_cookie_never_comes_back(self):
        a = self.mock("A", behavior={"mode": "answer",
                                     "headers": {"Set-Cookie": "sid=upstream", "Connection": "keep-alive"}})
        gw = self.gateway(config(providers={"a": provider(a, ["m"], api_key="sk-up-canary-42")},
                                 primary="a/m"), secrets=["sk-up-canary-42", "client-secret-77"])
        r = gw.chat("default", headers={"Authorization": "Bearer client-secret-77", "Cookie": "c=1",
                                        "X-Forwarded-For": "6.6.6.6", "Proxy-Authorization": "x"})
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.header("set-cookie"), r)
        seen = a.requests[-1].headers
        self.assertEqual(seen.get("authorization"), "Bearer sk-up-canary-42")
        for h in ("cookie", "x-forwarded-for", "proxy-authorization"):
            self.assertNotIn(h, seen)
        self.assertNotIn("client-secret-77", repr(seen))


if __name__ == "__main__":
    mglib.main()

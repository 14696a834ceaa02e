#!/usr/bin/env python3
"""Several serving threads (gateway.threads > 1): each runs its own libmicrohttpd daemon and
upstream loop on one shared listening socket. Concurrent requests must all be served, at once
(plain, streamed, with fallback); which thread took which is not visible from outside, so the
spread itself is not asserted; the per-address connection cap must hold across threads, /health
must count the transfers of every thread, and a graceful stop must drain them all."""

import signal
import socket
import threading
import time

import mglib
from mglib import MGTestCase, config, provider

THREADS = 3


class Threads(MGTestCase):
    def test_concurrent_requests_are_all_served_at_once(self):
        a = self.mock("A", behavior={"mode": "answer", "delay_ms": 300})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS}))
        self.assertIn('"threads":%d' % THREADS, gw.stderr_text())
        n = 24
        results = [None] * n

        def one(i):
            try:
                if i % 2:
                    s = gw.stream("/v1/chat/completions", {"model": "default", "stream": True,
                                                           "messages": [{"role": "user", "content": "hi %d" % i}]})
                    status, _ = next(s)
                    body = b"".join(s)
                    results[i] = (status, body.rstrip().endswith(b"data: [DONE]"))
                else:
                    r = gw.chat("default", content="hi %d" % i)
                    results[i] = (r.status, b'"chat.completion"' in r.body)
            except Exception as e:  # noqa: BLE001 - recorded for the assertion
                results[i] = ("error", repr(e))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        # While they wait on the upstream, /health counts the transfers of all threads.
        a.wait_requests(n, timeout=10 * mglib.TIMEOUT_SCALE)
        h = gw.get("/health").json
        self.assertGreaterEqual(h["upstream_active"], n // 2, h)
        for t in ts:
            t.join(20)
        self.assertEqual(results, [(200, True)] * n)
        # All at once, not one at a time: 24 requests of 300 ms each would take 7.2 s in a row.
        self.assertLess(time.monotonic() - t0, 4.0 * mglib.TIMEOUT_SCALE)
        self.assertEqual(len(gw.wait_access(n)), n)

    def test_fallback_and_keep_alive_across_threads(self):
        bad = self.mock("B", behavior={"mode": "error", "status": 503})
        good = self.mock("G")
        gw = self.gateway(config(providers={"b": provider(bad, ["m"]), "g": provider(good, ["m"])},
                                 primary="b/m", fallbacks=["g/m"], gateway={"threads": THREADS}))
        conns = [gw.conn() for _ in range(6)]
        for _ in range(3):
            for c in conns:
                c.request("POST", "/v1/chat/completions",
                          body=b'{"model":"default","messages":[{"role":"user","content":"x"}]}',
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, body)
                self.assertEqual(r.getheader("x-moongate-model"), "g/m")
        for c in conns:
            c.close()

    def test_connections_per_ip_are_capped_across_threads(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS, "maxConnectionsPerIp": 3}))
        # The start-up check's connection (a keep-alive GET /health the client then closed) must be
        # gone from the server's count first, or it takes one of the slots.
        time.sleep(0.3 * mglib.TIMEOUT_SCALE)
        held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5 * mglib.TIMEOUT_SCALE)
                for _ in range(3)]
        body = b'{"model":"default","messages":[{"role":"user","content":"x"}]}'
        for h in held:  # served (so accepted and counted) before the extra ones arrive; kept open
            h.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            self.assertTrue(h.recv(100).startswith(b"HTTP/1.1 200"))
        refused = 0
        for _ in range(3):
            extra = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                got = extra.recv(100)
            except OSError:
                got = b""
            refused += got == b""
            extra.close()
        self.assertEqual(refused, 3, "connections over the cap were served")
        for h in held:
            h.close()
        time.sleep(0.3)
        # Counted down again as they close: new connections are served.
        for _ in range(4):
            self.assertEqual(gw.get("/health").status, 200)

    def test_graceful_stop_drains_every_thread(self):
        a = self.mock("A", behavior={"mode": "answer", "events": 6, "pacing_ms": 100})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS, "drainMs": 5000}))
        out = {}

        def read(i):
            try:
                s = gw.stream("/v1/chat/completions", {"model": "default", "stream": True,
                                                       "messages": [{"role": "user", "content": "s%d" % i}]},
                              timeout=15)
                status, _ = next(s)
                out[i] = (status, b"".join(s).rstrip().endswith(b"data: [DONE]"))
            except Exception as e:  # noqa: BLE001 - recorded for the assertion
                out[i] = ("error", repr(e))

        ts = [threading.Thread(target=read, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        a.wait_requests(6)
        time.sleep(0.1)
        gw.proc.send_signal(signal.SIGTERM)
        for t in ts:
            t.join(15)
        self.assertEqual(out, {i: (200, True) for i in range(6)})
        self.assertEqual(gw.proc.wait(10), 0)


if __name__ == "__main__":
    mglib.main()

#!/usr/bin/env python3
"""More of several serving threads (gateway.threads > 1), past 16-threads.py: a client key's rpm
is one budget across all threads, gateway.maxConnections is a total the threads' shares add up to
and a thread that filled its share accepts again once its connections close, and a request body paced a byte at a time (never idle for two watchdog passes) is still cut at
gateway.bodyTimeoutMs."""

import socket
import threading
import time

import mglib
from mglib import MGTestCase, config, provider

THREADS = 3
BODY = b'{"model":"default","messages":[{"role":"user","content":"x"}]}'


class ThreadsMore(MGTestCase):
    def test_client_key_rpm_is_shared_by_all_threads(self):
        a = self.mock("A", behavior={"mode": "answer", "delay_ms": 200})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS,
                                          "keys": [{"id": "k", "key": "${MG_T17_KEY}", "rpm": 5}]}),
                          env={"MG_T17_KEY": "t17-client-key"}, secrets=["t17-client-key"])
        statuses = []

        def one():
            statuses.append(gw.chat("default", headers={"Authorization": "Bearer t17-client-key"}).status)

        ts = [threading.Thread(target=one) for _ in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        self.assertEqual(sorted(statuses), [200] * 5 + [429] * 15, statuses)
        took = gw.get("/health").json["requests_by_thread"]
        self.assertGreaterEqual(sum(1 for x in took if x > 0), 2, took)

    def test_max_connections_is_a_total_across_threads(self):
        a = self.mock("A")
        cap = 4  # not a multiple of THREADS: each thread's share rounded up would let 6 in
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS, "maxConnections": cap}))
        time.sleep(0.3 * mglib.TIMEOUT_SCALE)  # the start-up check's connection is gone
        held, served = [], 0
        try:
            for _ in range(cap + 3):
                h = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                held.append(h)
                h.settimeout(1.0 * mglib.TIMEOUT_SCALE)
                h.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
                try:
                    served += h.recv(100).startswith(b"HTTP/1.1 200")
                except OSError:
                    pass
        finally:
            for h in held:
                h.close()
        self.assertEqual(served, cap, "connections served at once with maxConnections=%d" % cap)
        time.sleep(0.3 * mglib.TIMEOUT_SCALE)
        self.assertEqual(gw.get("/health").status, 200)

    def test_a_thread_that_filled_its_share_accepts_again(self):
        # One connection per thread. Each GET fills its thread's share; once the client closes it,
        # the thread must take connections again (it used to stop accepting for good: the pass
        # that closed the connection was its last, and libmicrohttpd re-arms its listening
        # socket only at the start of a later pass).
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": 2, "maxConnections": 2}))
        for i in range(6):
            held = []
            try:
                for _ in range(2):
                    h = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                    held.append(h)
                    h.settimeout(3 * mglib.TIMEOUT_SCALE)
                    h.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    try:
                        got = h.recv(100)
                    except OSError as e:
                        got = repr(e).encode()
                    self.assertTrue(got.startswith(b"HTTP/1.1 200"), "round %d: %r" % (i, got))
            finally:
                for h in held:
                    h.close()
            time.sleep(0.3 * mglib.TIMEOUT_SCALE)
        self.assertEqual(gw.get("/health", timeout=3 * mglib.TIMEOUT_SCALE).status, 200)

    def test_a_body_paced_faster_than_the_watchdog_is_still_cut(self):
        a = self.mock("A")
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS, "bodyTimeoutMs": 1000}))
        results = {}

        def trickle(i):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.settimeout(0.01)
            t0 = time.monotonic()
            got = None
            try:
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                          b"application/json\r\nContent-Length: 1000\r\n\r\n{")
                while time.monotonic() - t0 < 4:
                    s.sendall(b" ")       # a byte every 100 ms: never quiet for 500 ms
                    time.sleep(0.1)
                    try:
                        got = s.recv(100)
                        break             # b"": closed by the gateway
                    except socket.timeout:
                        pass
            except OSError:
                got = b""
            finally:
                s.close()
            results[i] = (got, time.monotonic() - t0)

        ts = [threading.Thread(target=trickle, args=(i,)) for i in range(THREADS * 2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        for i, (got, took) in sorted(results.items()):
            self.assertEqual(got, b"", "trickler %d was not cut (%r after %.1f s)" % (i, got, took))
            self.assertLess(took, 2.5 * mglib.TIMEOUT_SCALE, "trickler %d cut only after %.1f s" % (i, took))
        lines = gw.wait_access(THREADS * 2, pred=lambda l: l.get("status") == 408)
        self.assertEqual(len(lines), THREADS * 2)
        self.assertEqual(len(a.requests), 0)


if __name__ == "__main__":
    mglib.main()

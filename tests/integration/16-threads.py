#!/usr/bin/env python3
"""Several serving threads (gateway.threads > 1): each runs its own libmicrohttpd daemon and
upstream loop on one shared listening socket. Concurrent requests must all be served, at once
(plain, streamed, with fallback) and by more than one thread (GET /health counts the requests each
thread took); /health must count the transfers of every thread, and a graceful stop must drain them
all. The per-address connection cap across threads is tested in 60-stop.py (Limits)."""

import signal
import threading
import time

import mglib
from mglib import MGTestCase, config, provider

THREADS = 3


class Threads(MGTestCase):
    def test_concurrent_requests_are_served_at_once_by_several_threads(self):
        a = self.mock("A", behavior={"mode": "answer", "delay_ms": 300})
        gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m",
                                 gateway={"threads": THREADS}))
        gw.wait_lines(lambda l: l.get("threads") == THREADS)  # the start line
        before = gw.get("/health").json["requests_by_thread"]
        self.assertEqual(len(before), THREADS)
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
        after = gw.get("/health").json["requests_by_thread"]
        took = [x - y for x, y in zip(after, before)]
        # Every request was taken by one thread: the n, the /health above and this one.
        self.assertEqual(sum(took), n + 2, (before, after))
        # The shared listening socket wakes every thread; whichever accepts first takes the
        # connection. 24 at once all landing on one thread would mean the others never accept.
        # A thread with 3 or more took at least one of the 24 (the two /health are all the rest).
        self.assertGreaterEqual(sum(1 for x in took if x >= 3), 2, took)

    def test_fallback_and_keep_alive_across_threads(self):
        bad = self.mock("B", behavior={"mode": "fail", "status": 503})
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

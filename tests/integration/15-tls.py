#!/usr/bin/env python3
"""Upstreams over TLS: a provider's caFile (a private CA for a self-hosted server), and http2,
with which streams to one upstream share connections instead of taking one each (the fd budget of
the 10,000-stream run, docs/PERFORMANCE.md). The HTTP/2 peer is nghttpx (Debian's nghttp2-proxy)
terminating TLS in front of the mock; installed by scripts/install-deps.sh --test."""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import mglib
from mglib import MGTestCase, config, provider

MSGS = [{"role": "user", "content": "hello"}]


def make_cert(d):
    """A self-signed certificate for 127.0.0.1: (certfile, keyfile)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def upstream_sockets(pid, port):
    """Established TCP connections of process pid to 127.0.0.1:port."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", "127.0.0.1:%d" % port],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if "pid=%d," % pid in line)


class Tls(MGTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp(prefix="mg-tls-")
        cls.cert, cls.key = make_cert(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)
        super().tearDownClass()

    def test_ca_file_makes_a_private_ca_trusted(self):
        a = self.mock("A", tls=(self.cert, self.key))
        self.assertTrue(a.url.startswith("https://"))
        gw = self.gateway(config(providers={"a": provider(a, ["m"]), "b": provider(a, ["m"])},
                                 primary="a/m",
                                 gateway={"providers": {"b": {"caFile": self.cert}}}))
        # Without the CA the certificate is refused: the upstream is never talked to.
        r = gw.chat("a/m")
        self.assertEqual(r.status, 502, r)
        (line,) = gw.wait_access(1)
        self.assertEqual(line["attempts"][0]["outcome"], "connect_error", line)
        # libcurl's own words say why (not only "SSL peer certificate ... was not OK")
        self.assertIn("certificate", line["attempts"][0].get("detail", ""), line)
        self.assertIn("self-signed", line["attempts"][0].get("detail", ""), line)
        self.assertEqual(len(a.requests), 0)
        # With it, the same server answers.
        r = gw.chat("b/m")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(a.requests), 1)

    def test_a_ca_file_that_cannot_be_used_is_refused_at_load(self):
        # As a policy file is: named at the config's line:col with its key path and the file, by
        # check, serve and a reload (which keeps the generation serving), not found out by the
        # first request (a 502 connect_error and a cooldown).
        a = self.mock("A", tls=(self.cert, self.key))
        text = ('{\n  models: { mode: "replace", providers: { b: { baseUrl: "%s", models: [ { id: "m" } ] } } },\n'
                '  gateway: { providers: { b: {\n    caFile: "%s" } } },\n}\n')
        d = tempfile.mkdtemp(prefix="mg-it-")
        self.addCleanup(shutil.rmtree, d, True)
        with open(os.path.join(d, "garbage.pem"), "w") as f:
            f.write("not a certificate\n")
        path = os.path.join(d, "c.json5")
        for ca, why in (("missing.pem", "cannot read %s: No such file or directory"),
                        ("garbage.pem", '%s holds no PEM certificate ("-----BEGIN CERTIFICATE-----")')):
            with open(path, "w") as f:
                f.write(text % (a.url, ca))
            want = "%s:4:13: gateway.providers.b.caFile: %s" % (path, why % os.path.join(d, ca))
            for cmd in (["check", "--config", path], ["serve", "--config", path, "--listen", "127.0.0.1:0"]):
                p = subprocess.run([mglib.BIN] + cmd, capture_output=True, text=True, timeout=10)
                self.assertEqual(p.returncode, 1, p)
                self.assertIn(want, p.stderr)
        gw = self.gateway(raw=text % (a.url, self.cert))
        self.assertEqual(gw.chat("b/m").status, 200)
        with open(gw.config_path, "w") as f:
            f.write(text % (a.url, "missing.pem"))
        err = self.assertOpenAIError(gw.request("POST", "/admin/reload"), 400, "reload_failed")
        self.assertIn("gateway.providers.b.caFile: cannot read %s: No such file or directory"
                      % os.path.join(gw.dir, "missing.pem"), err["message"])
        self.assertEqual(gw.chat("b/m").status, 200)

    def test_http2_streams_share_connections(self):
        nghttpx = shutil.which("nghttpx") or ("/usr/sbin/nghttpx" if os.path.exists("/usr/sbin/nghttpx") else None)
        if not nghttpx:
            if os.environ.get("CI"):
                self.fail("nghttpx missing: scripts/install-deps.sh --test installs nghttp2-proxy")
            self.skipTest("nghttpx not installed (apt-get install nghttp2-proxy)")
        a = self.mock("A", events=8, pacing_ms=100)   # streams last ~0.8 s: they overlap
        port = mglib.free_port()
        proxy = subprocess.Popen(
            [nghttpx, "--conf=/dev/null", "--frontend=127.0.0.1,%d" % port, self.key, self.cert,
             "--backend=127.0.0.1,%d" % a.port, "--workers=1", "--no-ocsp",
             "--errorlog-file=" + os.path.join(self.dir, "nghttpx.err"), "--accesslog-file=/dev/null"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (proxy.kill(), proxy.wait()))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                self.assertLess(time.monotonic(), deadline, "nghttpx did not start")
                time.sleep(0.1)
        url = "https://127.0.0.1:%d/v1" % port
        gw = self.gateway(config(providers={"h": provider(url, ["m"])}, primary="h/m",
                                 gateway={"providers": {"h": {"http2": True, "caFile": self.cert}}}))
        n, results, peak = 40, [], [0]
        body = {"model": "h/m", "stream": True, "messages": MSGS}
        # One stream first, so the connection is known to multiplex before the crowd arrives.
        self.assertEqual(gw.stream_all(body).status, 200)

        def one():
            results.append(gw.stream_all(body))

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], upstream_sockets(gw.proc.pid, port))
            time.sleep(0.05)
        for t in threads:
            t.join()
        self.assertEqual(len(results), n)
        for r in results:
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.done, r)
        # 40 concurrent streams over HTTP/2 share a connection or two (HTTP/1.1 would take 40).
        self.assertGreaterEqual(peak[0], 1)
        self.assertLessEqual(peak[0], 3, "streams did not share HTTP/2 connections")
        self.assertGreaterEqual(len(a.requests), n + 1)


if __name__ == "__main__":
    mglib.main()

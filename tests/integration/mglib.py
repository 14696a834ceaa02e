"""Harness for moongate's integration tests: runs the real binary against mock upstreams.

    from mglib import MGTestCase, provider, config
    class T(MGTestCase):
        def test_x(self):
            a = self.mock("A")                                     # tests/mock_upstream.py
            gw = self.gateway(config(providers={"a": provider(a, ["m"])}, primary="a/m"))
            r = gw.post_json("/v1/chat/completions", {"model": "default", "messages": [...]})
            self.assertEqual(r.status, 200, r)

Environment: MOONGATE_BIN (default <repo>/build/moongate), MG_SOURCE_DIR (default: two levels
above this file), MG_TIMEOUT_SCALE (default 1: multiplies the time a gateway gets to start, to
stop and to log; scripts/valgrind.sh points MOONGATE_BIN at a script that execs valgrind, which
needs more). Every gateway is stopped at the end of its test with SIGTERM, and the test fails
if it crashed (signal exit, sanitizer report), took more than 5 s to stop, or wrote any API key
value the config contains (or any extra secret the test names) to stdout/stderr/log file.
Python 3 standard library only.
"""

import atexit
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("MG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("MOONGATE_BIN") or os.path.join(SOURCE_DIR, "build", "moongate")
TIMEOUT_SCALE = max(1.0, float(os.environ.get("MG_TIMEOUT_SCALE") or 1))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests"))

import mock_upstream  # noqa: E402  (tests/mock_upstream.py)

CRASH_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                 "ERROR: ThreadSanitizer", "Segmentation fault", "Assertion `", "core dumped")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Config builders

def provider(upstream, models, api_key=None, headers=None, api="openai-completions",
             base_url=None, **extra):
    """A models.providers entry. upstream: a mock, a Down, or a base URL string. models: ids or
    full model dicts."""
    url = base_url or (upstream if isinstance(upstream, str) else upstream.url)
    p = {"baseUrl": url, "api": api,
         "models": [m if isinstance(m, dict) else {"id": m, "name": m, "contextWindow": 32768,
                                                   "maxTokens": 4096} for m in models]}
    if api_key is not None:
        p["apiKey"] = api_key
    if headers:
        p["headers"] = headers
    p.update(extra)
    return p


def config(providers, primary=None, fallbacks=(), aliases=None, mode="replace", gateway=None,
           **top):
    """An OpenClaw-style config dict. aliases: {"alias": "prov/id"}."""
    c = {"models": {"mode": mode, "providers": providers}}
    defaults = {}
    if primary is not None:
        defaults["model"] = {"primary": primary, "fallbacks": list(fallbacks)}
    if aliases:
        defaults["models"] = {ref: {"alias": al} for al, ref in aliases.items()}
    if defaults:
        c["agents"] = {"defaults": defaults}
    if gateway:
        c["gateway"] = gateway
    if mode is None:
        del c["models"]["mode"]
    c.update(top)
    return c


def metric(text, name, **labels):
    """The value of the first sample of metric `name` in a /metrics text with these labels, or
    None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def history(turns=30, size=1500):
    """A chat of `turns` question/answer pairs of about `size` bytes each, between a system prompt
    and a last user turn: too large for a small context window, for compaction tests."""
    msgs = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        msgs.append({"role": "user", "content": ("question %d " % i) + "x" * size})
        msgs.append({"role": "assistant", "content": ("answer %d " % i) + "y" * size})
    msgs.append({"role": "user", "content": "the last question"})
    return msgs


def _secrets_in_config(cfg, env):
    """Literal apiKey values and the values of ${ENV} keys: none may ever be printed."""
    out = []
    provs = ((cfg or {}).get("models") or {}).get("providers") or {}
    for p in provs.values():
        k = p.get("apiKey")
        if isinstance(k, str):
            m = re.fullmatch(r"\$\{(\w+)\}", k)
            if m:
                v = env.get(m.group(1))
                if v:
                    out.append(v)
            elif len(k) >= 6:
                out.append(k)
    return out


# ---------------------------------------------------------------------------------------------
# HTTP helpers

class _Headers:
    """What an answer's headers tell; self.headers: a dict with lower-case names."""

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    @property
    def route(self):
        return parse_route(self.header("x-moongate-route"))


class Response(_Headers):
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers      # dict, lower-case names (repeated headers joined by ", ")
        self.body = body            # bytes
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        hs = {k: v for k, v in self.headers.items() if k.startswith("x-") or k in
              ("content-type", "retry-after", "allow")}
        return "<HTTP %s %s %s>" % (self.status, hs, self.body[:600])


def _headers_dict(msg):
    d = {}
    for k, v in msg.items():
        k = k.lower()
        d[k] = d[k] + ", " + v if k in d else v
    return d


def parse_route(value):
    """x-moongate-route `gen=1; a/m=connect_error; b/m=overloaded:503` ->
    {"gen": "1", "attempts": [("a/m", "connect_error", None), ("b/m", "overloaded", 503)]}"""
    if value is None:
        return None
    out = {"gen": None, "attempts": [], "raw": value}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        k, _, v = part.partition("=")
        if k == "gen":
            out["gen"] = v
            continue
        if k == "trace":  # the policy's decision trace
            out["trace"] = v
            continue
        outcome, _, status = v.partition(":")
        out["attempts"].append((k, outcome, int(status) if status.isdigit() else
                                (status or None)))
    return out


def parse_sse(data):
    """Splits a text/event-stream body (bytes) into events: dicts with event, data, id, and the
    comments seen. Follows the WHATWG rules closely enough for tests."""
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    events, cur, comments = [], {}, []
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if "data" in cur:
                events.append(cur)
            cur = {}
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            cur["data"] = cur["data"] + "\n" + value if "data" in cur else value
        elif field in ("event", "id", "retry"):
            cur[field] = value
    return events, comments


# ---------------------------------------------------------------------------------------------

_live = set()


@atexit.register
def _kill_leftovers():
    """A test that crashed before its cleanup must not leave a gateway running."""
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()


class Gateway:
    """One moongate process. Use MGTestCase.gateway() so it is stopped and checked."""

    def __init__(self, cfg=None, raw=None, env=None, extra_args=(), secrets=(), suffix=".json5",
                 start=True):
        self.tmp = tempfile.TemporaryDirectory(prefix="mg-it-")
        self.dir = self.tmp.name
        self.config_path = os.path.join(self.dir, "moongate" + suffix)
        with open(self.config_path, "w") as f:
            f.write(raw if raw is not None else json.dumps(cfg, indent=2))
        self.cfg = cfg
        self.env = dict(os.environ)
        for k, v in (env or {}).items():  # None removes a variable
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.secrets = list(secrets) + _secrets_in_config(cfg, self.env)
        self.extra_args = list(extra_args)
        # Where it listens, and the address the test's requests go to (set both before start()
        # to listen elsewhere than 127.0.0.1; an IPv6 address comes without brackets).
        self.listen_host = "127.0.0.1"
        self.connect_host = "127.0.0.1"
        self.port = None
        self.proc = None
        self.lines = []            # stderr lines (str, without newline)
        self.out_lines = []        # stdout lines
        self._cond = threading.Condition()
        self.returncode = None
        if start:
            self.start()

    # -- process
    def start(self, timeout=10.0):
        timeout *= TIMEOUT_SCALE
        self.port = free_port()
        host = "[%s]" % self.listen_host if ":" in self.listen_host else self.listen_host
        args = [BIN, "serve", "--config", self.config_path,
                "--listen", "%s:%d" % (host, self.port)] + self.extra_args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=self.dir)
        _live.add(self.proc)
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.lines), daemon=True
                         ).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out_lines), daemon=True
                         ).start()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._drain()
                raise AssertionError("moongate exited with %s before /health answered.\n"
                                     "command: %s\nstderr:\n%s" % (self.proc.returncode,
                                                                   " ".join(args),
                                                                   self.stderr_text()))
            try:
                r = self.get("/health", timeout=1)
                if r.status == 200:
                    return self
                last = r
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.02)
        self.kill()
        raise AssertionError("moongate did not answer GET /health with 200 within %.0fs (last: "
                             "%r)\nstderr:\n%s" % (timeout, last, self.stderr_text()))

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self._cond:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        stream.close()

    def _drain(self, timeout=2.0):
        """After exit, waits (briefly) for the pipes to be read to the end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.stderr.closed or not self.proc.stdout.closed:
                time.sleep(0.01)
            else:
                break

    def stop(self, timeout=5.0):
        """SIGTERM, wait, kill. Returns a list of problems (empty when all is well)."""
        timeout *= TIMEOUT_SCALE
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append("moongate did not exit within %.0fs of SIGTERM" % timeout)
                self.proc.kill()
                self.proc.wait()
        self._drain()
        _live.discard(self.proc)
        self.returncode = self.proc.returncode
        if self.returncode is not None and self.returncode < 0 and \
                self.returncode != -signal.SIGTERM:
            problems.append("moongate died of signal %d" % -self.returncode)
        elif self.returncode == -signal.SIGTERM:
            problems.append("moongate did not handle SIGTERM (killed by it, no clean exit)")
        elif self.returncode not in (0, None):
            problems.append("moongate exited with status %d after SIGTERM" % self.returncode)
        text = self.all_output()
        for marker in CRASH_MARKERS:
            if marker in text:
                problems.append("output contains %r" % marker)
        for s in self.secrets:
            if s and s in text:
                problems.append("a secret (%s…) appears in moongate's output" % s[:6])
        self.proc = None
        return problems

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        self.tmp.cleanup()

    # -- output
    def stderr_text(self):
        with self._cond:
            return "\n".join(self.lines)

    def all_output(self):
        with self._cond:
            text = "\n".join(self.lines + self.out_lines)
        log_path = self.log_file_path()
        if log_path and os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                text += "\n" + f.read()
        return text

    def log_file_path(self):
        p = (((self.cfg or {}).get("gateway") or {}).get("log") or {}).get("path")
        if p and p != "-":
            return p if os.path.isabs(p) else os.path.join(self.dir, p)
        return None

    def log_lines(self):
        """Every log line parsed as JSON (stderr, or the log file when the config names one);
        lines that are not JSON come back as {"_raw": line}."""
        path = self.log_file_path()
        if path:
            try:
                with open(path, errors="replace") as f:
                    raw = f.read().splitlines()
            except FileNotFoundError:
                raw = []
        else:
            with self._cond:
                raw = list(self.lines)
        out = []
        for ln in raw:
            try:
                v = json.loads(ln)
                out.append(v if isinstance(v, dict) else {"_raw": ln})
            except ValueError:
                out.append({"_raw": ln})
        return out

    def access_lines(self):
        return [l for l in self.log_lines() if l.get("msg") == "access"]

    def wait_lines(self, pred, n=1, timeout=3.0, what="log line"):
        """Waits for at least n log lines matching pred (the output is read by a thread of its
        own, so a line the process has written may not be here yet); returns them."""
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while True:
            lines = [l for l in self.log_lines() if pred(l)]
            if len(lines) >= n:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("expected %d %s(s), got %d; log:\n%s" %
                                     (n, what, len(lines), self.stderr_text()))
            with self._cond:
                self._cond.wait(0.02)

    def wait_access(self, n=1, timeout=3.0, pred=None):
        """Waits for at least n access lines (matching pred); returns them."""
        return self.wait_lines(lambda l: l.get("msg") == "access" and (pred is None or pred(l)), n, timeout,
                               "access line")

    # -- HTTP
    def conn(self, timeout=30):
        return http.client.HTTPConnection(self.connect_host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = self.conn(timeout)
        try:
            if isinstance(body, str):
                body = body.encode()
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.reason, _headers_dict(r.headers), data)
        finally:
            c.close()

    def get(self, path, headers=None, timeout=30):
        return self.request("GET", path, None, headers, timeout)

    def post_json(self, path, obj, headers=None, timeout=30):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        return self.request("POST", path, body, h, timeout)

    def chat(self, model, content="hello", headers=None, timeout=30, **fields):
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        body.update(fields)
        return self.post_json("/v1/chat/completions", body, headers, timeout)

    def stream(self, path, obj, headers=None, timeout=30):
        """POSTs obj and yields (status, headers) first, then raw body byte strings as they
        arrive (chunked decoding done, SSE framing untouched)."""
        c = self.conn(timeout)
        try:
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            c.request("POST", path, body=json.dumps(obj), headers=h)
            r = c.getresponse()
            yield r.status, _headers_dict(r.headers)
            while True:
                data = r.read1(65536)
                if not data:
                    break
                yield data
        finally:
            c.close()


class StreamResult(_Headers):
    """A whole streamed response: status, headers, raw body bytes, parsed SSE events (dicts with
    event/data/id), comment lines, the arrival time of each read, and the data payloads parsed as
    JSON where they are JSON."""

    def __init__(self, status, headers, raw, reads):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.reads = reads                     # [(monotonic time, bytes)]
        self.events, self.comments = parse_sse(raw)
        self.payloads = []
        for e in self.events:
            try:
                self.payloads.append(json.loads(e["data"]))
            except ValueError:
                self.payloads.append(e["data"])

    @property
    def done(self):
        """The stream ended with data: [DONE]."""
        return bool(self.events) and self.events[-1]["data"] == "[DONE]"

    @property
    def errors(self):
        return [p for p in self.payloads if isinstance(p, dict) and "error" in p]

    @property
    def chunks(self):
        return [p for p in self.payloads if isinstance(p, dict) and "choices" in p]

    @property
    def text(self):
        out = ""
        for c in self.chunks:
            for ch in c["choices"]:
                out += (ch.get("delta") or {}).get("content") or ""
        return out

    def __repr__(self):
        return "<stream %s %s %r>" % (self.status, {k: v for k, v in self.headers.items()
                                                     if k.startswith("x-")}, self.raw[-800:])


def _stream_all(gw, obj, headers=None, timeout=30, read_delay=0.0, path="/v1/chat/completions"):
    gen = gw.stream(path, obj, headers, timeout)
    status, hdrs = next(gen)
    reads, parts = [], []
    for data in gen:
        reads.append((time.monotonic(), data))
        parts.append(data)
        if read_delay:
            time.sleep(read_delay)
    return StreamResult(status, hdrs, b"".join(parts), reads)


Gateway.stream_all = _stream_all


# ---------------------------------------------------------------------------------------------

class MGTestCase(unittest.TestCase):
    """unittest base: mocks and gateways made through it are stopped at the end of each test,
    and a gateway that crashed, hung on SIGTERM or leaked a secret fails the test."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(BIN):
            raise unittest.SkipTest("no moongate binary at %s (set MOONGATE_BIN)" % BIN) \
                if os.environ.get("MG_SKIP_WITHOUT_BIN") else \
                AssertionError("no moongate binary at %s (set MOONGATE_BIN)" % BIN)

    def mock(self, name="A", behavior=None, models=None, **opts):
        m = mock_upstream.start(name=name, behavior=behavior, models=models, **opts)
        self.addCleanup(m.stop)
        return m

    def down(self):
        d = mock_upstream.down()
        self.addCleanup(d.stop)
        return d

    def blackhole(self):
        h = mock_upstream.blackhole()
        self.addCleanup(h.stop)
        return h

    def gateway(self, cfg=None, raw=None, env=None, secrets=(), extra_args=(), start=True):
        gw = Gateway(cfg, raw=raw, env=env, secrets=secrets, extra_args=extra_args, start=False)
        self.addCleanup(self._finish_gateway, gw)
        if start:
            gw.start()
        return gw

    def _finish_gateway(self, gw):
        try:
            problems = gw.stop()
            if problems:
                self.fail("; ".join(problems) + "\n--- moongate output ---\n" +
                          gw.all_output()[-6000:])
        finally:
            gw.close()

    # -- assertions
    def assertOpenAIError(self, r, status, code=None):
        """r is an error in OpenAI's format with this status (and error.code)."""
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.body, "empty body for %d" % status)
        self.assertIsInstance(r.json, dict, "error body is not JSON: %r" % r)
        err = r.json.get("error")
        self.assertIsInstance(err, dict, "no error object: %r" % r)
        for k in ("message", "type", "code"):
            self.assertIn(k, err, "error.%s missing: %r" % (k, r))
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"], r)
        self.assertIn("application/json", r.header("content-type", ""), r)
        if code is not None:
            self.assertEqual(err["code"], code, r)
        return err

    def assertRoute(self, r, expected):
        """expected: [(ref, outcome, status-or-None)] in attempt order; outcome None = any."""
        route = r.route
        self.assertIsNotNone(route, "no x-moongate-route header: %r" % r)
        self.assertTrue(route["gen"], "x-moongate-route has no gen=: %r" % route["raw"])
        got = route["attempts"]
        self.assertEqual([a[0] for a in got], [e[0] for e in expected], route["raw"])
        for g, e in zip(got, expected):
            if e[1] is not None:
                self.assertEqual(g[1], e[1], "attempt %s: %s" % (e[0], route["raw"]))
            if len(e) > 2 and e[2] is not None:
                self.assertEqual(g[2], e[2], "attempt %s: %s" % (e[0], route["raw"]))
        return route


def main():
    unittest.main(verbosity=2)

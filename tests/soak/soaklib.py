"""Shared pieces of the fault and load runs in tests/soak/ (issue 9 item 4): the processes (the real
moongate binary, bench/mock_upstream.c, tests/mock_upstream.py, slowhttptest), temporary configs,
a checking streaming client for the three client APIs and a concurrent load of it, RSS/descriptor
sampling from /proc, percentiles, and each scenario's command line and printed outcome. Python 3
standard library only; every process it starts is killed on exit, by pid.

The checking client: every stream asks the C mock for seeded content (`mgseed=<seed>` in the user
message; see bench/mock_upstream.c), so the text of content event i must be exactly
seeded_text(seed, i, event_bytes). A stream is "ok" when it is HTTP 200, every content event is
present once, in order and byte-exact, it ends with its API's own clean end (chat `data: [DONE]`
after a `finish_reason: stop` chunk; Responses `response.completed` whose output text is the whole
text; Messages `message_stop`), nothing follows that end, and the HTTP body is complete. It is
"error_event" when it ends instead with a well-formed error event in its API's format (chat
`data: {"error": {"message": ...}}`, Responses `event: error` (+ `response.failed`), Messages
`event: error` with `error.message`), with no clean end anywhere, every content event before it
exact, and a complete HTTP body. Anything else is a failure kind: status, corrupt, short
(a clean end with content missing: the worst outcome), no_end, truncated, reset, timeout, connect,
bad_error, after_end, bad_http.
"""

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

CRASH_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                 "ERROR: ThreadSanitizer", "Segmentation fault", "Assertion `", "core dumped")

# ---------------------------------------------------------------------------------------------
# Seeded content: the same function as seeded_fill() in bench/mock_upstream.c.

_M64 = (1 << 64) - 1
_ALPHABET = "abcdefghijklmnopqrstuvwxyz012345"
_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


_text_cache = {}


def seeded_text(seed, seq, n):
    key = (seed, seq, n)
    t = _text_cache.get(key)
    if t is None:
        t = "".join(_ALPHABET[_splitmix64((seed + (seq * (1 << 20) + k + 1) * _GOLDEN) & _M64) >> 59]
                    for k in range(n))
        if len(_text_cache) > 200000:
            _text_cache.clear()
        _text_cache[key] = t
    return t


# ---------------------------------------------------------------------------------------------
# Output

T0 = time.monotonic()


def log(*args):
    print("[%7.1fs] %s" % (time.monotonic() - T0, " ".join(str(a) for a in args)), file=sys.stderr,
          flush=True)


def pct(values, p):
    """Nearest-rank percentile; None when empty."""
    if not values:
        return None
    v = sorted(values)
    rank = max(1, min(len(v), int(p / 100.0 * len(v) + 0.999999)))
    return v[rank - 1]


def ms(x):
    return "n/a" if x is None else "%.1f" % (x * 1000)


def machine_line():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1048576.0
    except (OSError, ValueError, IndexError):
        mem = 0
    return "%d CPUs (%s), %.1f GiB RAM, kernel %s, load average %s" % (
        os.cpu_count() or 0, cpu, mem, os.uname().release,
        " ".join("%.2f" % x for x in os.getloadavg()))


# ---------------------------------------------------------------------------------------------
# Processes: ours only, killed by pid on exit (never by name).

class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def spawn(self, name, argv, stdout=None, env=None):
        """Starts argv with stderr to <workdir>/<name>.log (and stdout too unless given)."""
        path = os.path.join(self.workdir, name + ".log")
        f = open(path, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else f, stderr=f, env=env,
                             cwd=self.workdir)
        f.close()
        p.log_path = path
        p.name = name
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10.0):
        """SIGTERM, wait, SIGKILL. Returns the exit status."""
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass


def read_text(path, limit=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return text if limit is None else text[-limit:]


def wait_for_file(path, pattern, timeout, proc=None):
    """Waits until the file contains the regex; returns the match or None."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        m = rx.search(read_text(path))
        if m:
            return m
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def _start_ready(procs, name, argv):
    """Starts a mock that prints `READY <port>` on stdout once it listens (stdout to
    <workdir>/<name>.out). Returns (proc, port); raises RuntimeError if it does not get there."""
    out = os.path.join(procs.workdir, "%s.out" % name)
    with open(out, "w") as f:
        proc = procs.spawn(name, argv, stdout=f)
    m = wait_for_file(out, r"READY (\d+)", 10, proc)
    if not m:
        raise RuntimeError("%s did not start: %s" % (name, read_text(proc.log_path)))
    return proc, int(m.group(1))


class _Mock:
    @property
    def url(self):
        return "http://127.0.0.1:%d/v1" % self.port


class CMock(_Mock):
    """bench/mock_upstream.c: fast, paced, seeded SSE. SIGKILL-able."""

    def __init__(self, procs, binary, name, events, pacing_ms, event_bytes=32, first_ms=0,
                 port=0):
        self.procs, self.binary, self.name = procs, binary, name
        self.args = ["--events", str(events), "--pacing-ms", str(pacing_ms),
                     "--event-bytes", str(event_bytes), "--first-ms", str(first_ms)]
        self.port = port
        self.proc = None
        self.start()

    def start(self):
        self.proc, self.port = _start_ready(self.procs, self.name,
                                            [self.binary, "--port", str(self.port)] + self.args)
        return self


class PyMock(_Mock):
    """tests/mock_upstream.py as a process (fault modes by behaviour JSON or model names)."""

    def __init__(self, procs, name, behavior=None, models=None, port=0):
        argv = [sys.executable, os.path.join(REPO, "tests", "mock_upstream.py"), "--port",
                str(port), "--name", name]
        if behavior:
            argv += ["--behavior", json.dumps(behavior)]
        if models:
            argv += ["--models", json.dumps(models)]
        self.proc, self.port = _start_ready(procs, name, argv)


def provider(url, models=("m",)):
    return {"baseUrl": url, "apiKey": "x", "api": "openai-completions",
            "models": [{"id": m, "contextWindow": 128000, "maxTokens": 100000} for m in models]}


def config(providers, primary, fallbacks=(), gateway=None):
    c = {"models": {"mode": "replace", "providers": providers},
         "agents": {"defaults": {"model": {"primary": primary, "fallbacks": list(fallbacks)}}}}
    if gateway:
        c["gateway"] = gateway
    return c


class Gateway:
    """The real moongate binary on an ephemeral port with a config in the work directory."""

    def __init__(self, procs, binary, cfg, name="moongate", env=None):
        self.procs, self.binary, self.name = procs, binary, name
        self.config_path = os.path.join(procs.workdir, name + ".json5")
        self.write_config(cfg)
        self.proc = procs.spawn(name, [binary, "serve", "--config", self.config_path, "--listen",
                                       "127.0.0.1:0"], env=env)
        self.log_path = self.proc.log_path
        m = wait_for_file(self.log_path, r'"listening".*?"addr":"[^"]*:(\d+)"', 30, self.proc)
        if not m:
            raise RuntimeError("moongate did not start: %s" % read_text(self.log_path, 3000))
        self.port = int(m.group(1))
        self.pid = self.proc.pid

    def write_config(self, cfg):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=1))
        os.replace(tmp, self.config_path)

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        return proc_rss_kib(self.pid)

    def stop(self):
        """SIGTERM; returns a list of problems (did not exit cleanly, crash markers in its log)."""
        problems = []
        if self.proc.poll() is not None:
            problems.append("moongate had already exited with status %s" % self.proc.returncode)
        else:
            rc = self.procs.stop(self.proc, 20)
            if rc != 0:
                problems.append("moongate exited with status %s after SIGTERM" % rc)
        text = read_text(self.log_path)
        for marker in CRASH_MARKERS:
            if marker in text:
                problems.append("moongate's output contains %r" % marker)
        return problems

    def access_lines(self):
        return self.log_lines("access")

    def log_lines(self, msg):
        """Its JSON log lines whose msg is `msg`, parsed."""
        out = []
        for ln in read_text(self.log_path).splitlines():
            if ('"msg":"%s"' % msg) in ln:
                try:
                    out.append(json.loads(ln))
                except ValueError:
                    pass
        return out


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def proc_sockets(pid, listen_port):
    """Open TCP sockets of pid: {"clients": accepted connections (local port = listen_port),
    "outbound": connections it opened (upstreams), "other": listeners and the rest}."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if t.startswith("socket:["):
                inodes.add(t[8:-1])
    except OSError:
        return None
    out = {"clients": 0, "outbound": 0, "other": 0}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for ln in f:
                    p = ln.split()
                    if len(p) < 10 or p[9] not in inodes:
                        continue
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    state = p[3]
                    if state == "0A":  # LISTEN
                        out["other"] += 1
                    elif lport == listen_port:
                        out["clients"] += 1
                    else:
                        out["outbound"] += 1
        except OSError:
            pass
    return out


def tcp_counters():
    """System-wide TcpExt counters that explain a 1 s (SYN retransmit) connect: ListenOverflows,
    ListenDrops, TCPSynRetrans. The whole machine's, not only ours."""
    out = {}
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                for k, v in zip(names.split()[1:], values.split()[1:]):
                    if k in ("ListenOverflows", "ListenDrops", "TCPSynRetrans"):
                        out[k] = int(v)
    except (OSError, ValueError):
        pass
    return out


def cpu_times():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:3]) + sum(v[5:8]), sum(v[:8])
    except (OSError, ValueError):
        return 0, 0


def machine_during(args):
    """How busy the whole machine was since setup(), and the load average now."""
    b0, t0 = args.cpu_start
    b1, t1 = cpu_times()
    pct_busy = 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return "all CPUs %.0f%% busy on average during the run (every process, not only ours); " \
        "load average at the end %s" % (pct_busy, " ".join("%.2f" % x for x in os.getloadavg()))


def is_sanitized(binary):
    """True when the binary carries the ASan runtime (RSS and latency mean little then)."""
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# HTTP over asyncio streams

class HttpError(Exception):
    def __init__(self, kind, detail):
        super().__init__("%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail


async def http_request(host, port, method, path, body=None, headers=None, timeout=30.0,
                       timing=None):
    """One request on a new connection; returns (status, headers, body bytes). timing: a dict
    that gets "connect", the seconds connect() took."""
    async def go():
        t0 = time.monotonic()
        r, w = await asyncio.open_connection(host, port)
        if timing is not None:
            timing["connect"] = time.monotonic() - t0
        try:
            data = body if isinstance(body, (bytes, type(None))) else body.encode()
            h = {"Host": "%s:%d" % (host, port), "Connection": "close"}
            if data is not None:
                h["Content-Type"] = "application/json"
                h["Content-Length"] = str(len(data))
            h.update(headers or {})
            w.write(("%s %s HTTP/1.1\r\n" % (method, path)).encode() +
                    "".join("%s: %s\r\n" % kv for kv in h.items()).encode() + b"\r\n" +
                    (data or b""))
            await w.drain()
            status, hdrs = await _read_head(r)
            out = bytearray()
            async for piece in _body_pieces(r, hdrs):
                out += piece
            return status, hdrs, bytes(out)
        finally:
            w.close()
    return await asyncio.wait_for(go(), timeout)


CHAT_HI = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}]})


async def chat_request(port, **kw):
    """One non-streamed chat request ("hi" to the model "default") to 127.0.0.1:port on a new
    connection; kw as for http_request. Returns (status, headers, body bytes)."""
    return await http_request("127.0.0.1", port, "POST", "/v1/chat/completions", CHAT_HI, **kw)


async def _read_head(r):
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise HttpError("truncated" if e.partial else "reset", "connection closed before the "
                        "response head (%d bytes)" % len(e.partial))
    except asyncio.LimitOverrunError:
        raise HttpError("bad_http", "response head too large")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise HttpError("bad_http", "bad status line %r" % lines[0][:80])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return int(m.group(1)), hdrs


async def _body_pieces(r, hdrs):
    """Yields the body's bytes; raises HttpError('truncated') if the framing is cut."""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        while True:
            line = await r.readline()
            if not line.endswith(b"\n"):
                raise HttpError("truncated", "connection closed inside the chunked body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HttpError("bad_http", "bad chunk size line %r" % line[:40])
            if size == 0:
                while True:  # trailer
                    t = await r.readline()
                    if not t.endswith(b"\n"):
                        raise HttpError("truncated", "connection closed inside the trailer")
                    if t in (b"\r\n", b"\n"):
                        return
            try:
                data = await r.readexactly(size + 2)
            except asyncio.IncompleteReadError:
                raise HttpError("truncated", "connection closed inside a chunk")
            yield data[:-2]
    elif "content-length" in hdrs:
        n = int(hdrs["content-length"])
        try:
            yield await r.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise HttpError("truncated", "body cut at %d of %d bytes" % (len(e.partial), n))
    else:
        while True:
            data = await r.read(65536)
            if not data:
                return
            yield data


# ---------------------------------------------------------------------------------------------
# The checking stream client

APIS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}


def request_body(api, seed, model="default"):
    text = "soak stream mgseed=%d: say something" % seed
    if api == "chat":
        return {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}
    if api == "responses":
        return {"model": model, "stream": True, "input": text}
    return {"model": model, "stream": True, "max_tokens": 100000,
            "messages": [{"role": "user", "content": text}]}


class Verifier:
    """Checks one stream's events as they arrive. fail() records the first problem."""

    def __init__(self, api, seed, events, event_bytes):
        self.api, self.seed, self.events, self.nb = api, seed, events, event_bytes
        self.idx = 0              # content events seen
        self.ended = False        # the clean end was seen
        self.error = None         # the error event's object
        self.problem = None       # (kind, detail)
        self.finish_ok = False
        self.t_first = None
        self.n_events = 0

    def fail(self, kind, detail):
        if self.problem is None:
            self.problem = (kind, detail)

    def content(self, text, seq=None):
        if self.t_first is None:
            self.t_first = time.monotonic()
        want = seeded_text(self.seed, self.idx, self.nb)
        if seq is not None and seq != self.idx:
            self.fail("corrupt", "content event %d carries seq %r" % (self.idx, seq))
        elif text != want:
            self.fail("corrupt", "content event %d is %r, the mock sent %r" % (self.idx, text, want))
        self.idx += 1
        if self.idx > self.events:
            self.fail("corrupt", "more content events than the %d sent" % self.events)

    def full_text(self):
        return "".join(seeded_text(self.seed, i, self.nb) for i in range(self.events))

    def event(self, name, data):
        self.n_events += 1
        if self.ended or self.error is not None and not (
                self.api == "responses" and name == "response.failed"):
            self.fail("after_end", "event %r after the stream's end: %r" % (name, data[:200]))
            return
        getattr(self, "ev_" + self.api)(name, data)

    def _json(self, data):
        try:
            return json.loads(data)
        except ValueError:
            self.fail("corrupt", "event data is not JSON: %r" % data[:200])
            return None

    def ev_chat(self, name, data):
        if data == "[DONE]":
            self.ended = True
            return
        obj = self._json(data)
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            e = obj["error"]
            if not (isinstance(e, dict) and isinstance(e.get("message"), str) and e["message"]):
                self.fail("bad_error", "error chunk without error.message: %r" % data[:300])
            self.error = obj
            return
        for ch in obj.get("choices") or []:
            d = ch.get("delta") or {}
            if isinstance(d.get("content"), str) and d["content"]:
                if self.idx == 0 and d.get("role") != "assistant":
                    self.fail("corrupt", "first content chunk without delta.role")
                self.content(d["content"], obj.get("seq"))
            if ch.get("finish_reason") == "stop":
                if self.idx != self.events:
                    self.fail("short", "finish_reason stop after %d of %d content events" %
                              (self.idx, self.events))
                self.finish_ok = True

    def ev_responses(self, name, data):
        obj = self._json(data)
        if not isinstance(obj, dict):
            return
        if name == "response.output_text.delta":
            self.content(obj.get("delta"))
        elif name == "response.completed":
            resp = obj.get("response") or {}
            try:
                text = "".join(c.get("text", "") for item in resp.get("output") or []
                               for c in item.get("content") or [])
            except AttributeError:
                text = None
            if resp.get("status") != "completed" or text != self.full_text():
                self.fail("corrupt" if self.idx == self.events else "short",
                          "response.completed with status %r and %d of %d content events" %
                          (resp.get("status"), self.idx, self.events))
            self.finish_ok = True
            self.ended = True
        elif name == "error":
            if not (isinstance(obj.get("message"), str) and obj["message"]):
                self.fail("bad_error", "error event without message: %r" % data[:300])
            self.error = obj
        elif name == "response.failed":
            if self.error is None:
                self.error = obj  # a failure without the error event before it: still an error
        elif name in ("response.incomplete",):
            self.fail("short", "%s: %r" % (name, data[:300]))
            self.ended = True

    def ev_messages(self, name, data):
        obj = self._json(data)
        if not isinstance(obj, dict):
            return
        if name == "content_block_delta":
            d = obj.get("delta") or {}
            if d.get("type") == "text_delta":
                self.content(d.get("text"))
        elif name == "message_delta":
            if (obj.get("delta") or {}).get("stop_reason") == "end_turn":
                self.finish_ok = True
        elif name == "message_stop":
            self.ended = True
        elif name == "error":
            e = obj.get("error")
            if not (obj.get("type") == "error" and isinstance(e, dict) and
                    isinstance(e.get("message"), str) and e["message"]):
                self.fail("bad_error", "error event not in Anthropic's format: %r" % data[:300])
            self.error = obj

    def outcome(self):
        """(kind, detail) once the body is complete."""
        if self.problem:
            return self.problem
        if self.error is not None:
            return ("error_event", json.dumps(self.error)[:300])
        if self.ended:
            if self.idx != self.events or not self.finish_ok:
                return ("short", "a clean end after %d of %d content events" %
                        (self.idx, self.events))
            return ("ok", "")
        return ("no_end", "the body ended after %d content events without an end or an error "
                "event" % self.idx)


class SSEParser:
    """WHATWG-style line splitting; calls on_event(name, data)."""

    def __init__(self, on_event):
        self.on_event = on_event
        self.buf = b""
        self.name = None
        self.data = None

    def feed(self, data):
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                return
            line = self.buf[:i]
            self.buf = self.buf[i + 1:]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self.data is not None:
                    self.on_event(self.name or "message", self.data)
                self.name = self.data = None
                continue
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            v = value.decode("utf-8", "replace")
            if field == b"data":
                self.data = v if self.data is None else self.data + "\n" + v
            elif field == b"event":
                self.name = v


class StreamResult:
    __slots__ = ("api", "seed", "kind", "detail", "status", "served", "gen", "t_start",
                 "t_head", "t_first", "t_end", "content", "reused", "keep", "route")

    def __init__(self, api, seed):
        self.api, self.seed = api, seed
        self.kind = self.detail = None
        self.status = None
        self.served = self.gen = self.route = None
        self.t_start = time.monotonic()
        self.t_head = self.t_first = self.t_end = None
        self.content = 0
        self.reused = False
        self.keep = False

    @property
    def ok(self):
        return self.kind == "ok"

    def __repr__(self):
        return "<%s seed=%d %s %s status=%s served=%s content=%d>" % (
            self.api, self.seed, self.kind, self.detail, self.status, self.served, self.content)


class Conn:
    """A client connection that can be kept alive across streams."""

    def __init__(self, host, port, rcvbuf=None):
        self.host, self.port, self.rcvbuf = host, port, rcvbuf
        self.r = self.w = None

    async def open(self):
        if self.rcvbuf:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            s.setblocking(False)
            await asyncio.get_running_loop().sock_connect(s, (self.host, self.port))
            self.r, self.w = await asyncio.open_connection(sock=s, limit=1 << 20)
        else:
            self.r, self.w = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


async def run_stream(host, port, api, seed, events, event_bytes, conn=None, timeout=120.0,
                     model="default", read_delay=0.0, on_head=None):
    """One checked stream. conn: a Conn to reuse (keep-alive) or None for a fresh one (closed at
    the end). read_delay: seconds to sleep after each read (a slow reader). Returns StreamResult;
    res.keep tells whether conn may be reused."""
    res = StreamResult(api, seed)
    ver = Verifier(api, seed, events, event_bytes)
    own = conn is None
    if own:
        conn = Conn(host, port)
    res.reused = conn.w is not None

    async def go():
        if conn.w is None:
            try:
                await conn.open()
            except OSError as e:
                raise HttpError("connect", str(e))
        body = json.dumps(request_body(api, seed, model)).encode()
        h = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\n%s\r\n" % (APIS[api], host, port, len(body),
                                                "anthropic-version: 2023-06-01\r\n"
                                                if api == "messages" else ""))
        try:
            conn.w.write(h.encode() + body)
            await conn.w.drain()
        except OSError as e:
            raise HttpError("reset", "send: %s" % e)
        try:
            status, hdrs = await _read_head(conn.r)
        except (ConnectionError, OSError) as e:
            raise HttpError("reset", str(e))
        res.t_head = time.monotonic()
        res.status = status
        res.served = hdrs.get("x-moongate-model")
        res.route = hdrs.get("x-moongate-route")
        m = re.search(r"gen=(\d+)", res.route or "")
        res.gen = int(m.group(1)) if m else None
        if on_head:
            on_head(res)
        parser = SSEParser(ver.event)
        pieces = []
        try:
            async for piece in _body_pieces(conn.r, hdrs):
                if status == 200:
                    parser.feed(piece)
                else:
                    pieces.append(piece)
                if read_delay:
                    await asyncio.sleep(read_delay)
        except (ConnectionError, OSError) as e:
            raise HttpError("reset", str(e))
        if status != 200:
            raise HttpError("status", "HTTP %d: %r" % (status, b"".join(pieces)[:300]))
        res.keep = "close" not in hdrs.get("connection", "").lower() and \
            ("chunked" in hdrs.get("transfer-encoding", "").lower() or "content-length" in hdrs)

    try:
        await asyncio.wait_for(go(), timeout)
        res.kind, res.detail = ver.outcome()
    except HttpError as e:
        res.kind, res.detail = e.kind, e.detail
        if e.kind in ("truncated", "reset") and (ver.problem is not None):
            res.kind, res.detail = ver.problem  # a corrupt event matters more than the cut
        elif e.kind in ("truncated", "reset") and ver.error is not None:
            res.detail = "after an error event: " + e.detail
    except asyncio.TimeoutError:
        res.kind, res.detail = "timeout", "still running after %.0fs (%d content events)" % (
            timeout, ver.idx)
    except (ConnectionError, OSError) as e:
        res.kind, res.detail = "reset", str(e)
    res.t_end = time.monotonic()
    res.t_first = ver.t_first
    res.content = ver.idx
    if not res.ok or not res.keep or own:
        conn.close()
        res.keep = False
    return res


def summarize(results):
    """{kind: count} and per-API counts."""
    kinds, apis = {}, {}
    for r in results:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
        a = apis.setdefault(r.api, {})
        a[r.kind] = a.get(r.kind, 0) + 1
    return kinds, apis


# The three client APIs as the load's workers speak them: worker i takes LOAD_APIS[i % 4], so half
# of the streams are Chat Completions and a quarter each Responses and Anthropic Messages.
LOAD_APIS = ("chat", "responses", "chat", "messages")


async def warm_up(port, args, served=None):
    """One checked stream per client API, at once (seed 1; args.events, args.event_bytes): True
    when all are "ok" (and served by `served`, when given); logs the first that is not."""
    for r in await asyncio.gather(*(run_stream("127.0.0.1", port, api, 1, args.events,
                                               args.event_bytes)
                                    for api in ("chat", "responses", "messages"))):
        if not r.ok or (served is not None and r.served != served):
            log("warm-up stream failed: %r" % r)
            return False
    return True


async def stream_load(port, args, t_stop, results, check):
    """args.streams workers, each running one checked stream after another (args.events of
    args.event_bytes, args.pacing_ms apart; seeds from 1000 up, every stream its own) until
    t_stop (time.monotonic()). Worker i speaks LOAD_APIS[i % 4], keeps its connection alive
    between streams when i is even (a new one per stream otherwise), and starts after
    i / args.streams of one stream's length, so the starts spread over one stream. Every result
    is appended to results and then passed to check(result)."""
    seeds = itertools.count(1000)
    stream_s = args.events * args.pacing_ms / 1000.0

    async def worker(i):
        await asyncio.sleep(stream_s * i / args.streams)
        api = LOAD_APIS[i % len(LOAD_APIS)]
        conn = Conn("127.0.0.1", port) if i % 2 == 0 else None
        while time.monotonic() < t_stop:
            r = await run_stream("127.0.0.1", port, api, next(seeds), args.events,
                                 args.event_bytes, conn=conn, timeout=stream_s + 60)
            results.append(r)
            check(r)
        if conn:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(args.streams)))


class Sampler:
    """Samples a pid's RSS (KiB) and open descriptors every `every` seconds."""

    def __init__(self, pid, every=1.0):
        self.pid, self.every = pid, every
        self.samples = []  # (t, rss_kib, fds)
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self):
        while True:
            rss = proc_rss_kib(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss, proc_fds(self.pid)))
            await asyncio.sleep(self.every)

    def stop(self):
        if self.task:
            self.task.cancel()

    def after(self, t):
        return [s for s in self.samples if s[0] >= t]


def workdir(prefix):
    return tempfile.mkdtemp(prefix="moongate-%s." % prefix, dir=os.environ.get("TMPDIR"))


def result_line(scenario, ok, **kv):
    parts = ["RESULT", "scenario=%s" % scenario, "pass=%d" % (1 if ok else 0)]
    for k, v in kv.items():
        parts.append("%s=%s" % (k, str(v).replace(" ", "_")))
    print(" ".join(parts), flush=True)


# ---------------------------------------------------------------------------------------------
# Command-line plumbing shared by the scenarios

def arg_parser(doc):
    """The scenario's argument parser: its docstring's first paragraph as the description, and
    the options every scenario takes (--moongate, --mock, --smoke, --keep)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--moongate", default=os.environ.get("MOONGATE_BIN") or
                    os.path.join(REPO, "build-soak", "moongate"), help="the moongate binary")
    ap.add_argument("--mock", default=None,
                    help="bench/mock_upstream binary (default: bench/mock_upstream beside moongate)")
    ap.add_argument("--smoke", action="store_true", help="a short run for the default test suite")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    return ap


def report(args, scenario, checks, info, phases=None, **result):
    """Prints a scenario's outcome on stdout: PASS or FAIL (FAIL also when there is no check),
    each check, each phase's report and each info item as JSON, how busy the machine was, and
    the RESULT line with `result`'s key=value pairs. Returns the exit status: 0 pass, 1 fail."""
    ok = bool(checks) and all(checks.values())
    print("== %s: %s" % (scenario, "PASS" if ok else "FAIL"))
    for k, v in checks.items():
        print("  [%s] %s" % ("ok" if v else "FAILED", k))
    for name, rep in (phases or {}).items():
        print("  phase %s: %s" % (name, json.dumps(rep)))
    for k, v in info.items():
        print("  %s: %s" % (k, json.dumps(v)))
    print("  machine: %s" % machine_during(args))
    result_line(scenario, ok, **result)
    return 0 if ok else 1


def setup(args, prefix):
    """Checks the binaries, makes the work directory, arranges cleanup. Returns a Procs."""
    if args.mock is None:
        args.mock = os.path.join(os.path.dirname(os.path.abspath(args.moongate)), "bench",
                                 "mock_upstream")
    args.moongate, args.mock = os.path.abspath(args.moongate), os.path.abspath(args.mock)
    for b in (args.moongate, args.mock):
        if not os.access(b, os.X_OK):
            print("%s: missing %s (build it: tests/soak/run.sh builds both)" % (prefix, b),
                  file=sys.stderr)
            sys.exit(2)
    args.sanitized = is_sanitized(args.moongate)
    wd = workdir(prefix)
    procs = Procs(wd)

    def cleanup():
        procs.kill_all()
        if args.keep:
            log("work directory kept: %s" % wd)
        else:
            import shutil
            shutil.rmtree(wd, ignore_errors=True)

    import atexit
    atexit.register(cleanup)

    def on_signal(sig, frame):
        sys.exit(130)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass
    args.cpu_start = cpu_times()
    log("machine: %s" % machine_line())
    log("moongate: %s%s; work directory %s" % (args.moongate,
                                                " (AddressSanitizer build)" if args.sanitized
                                                else "", wd))
    return procs

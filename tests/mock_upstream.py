#!/usr/bin/env python3
"""A misbehaving fake LLM upstream for moongate's integration tests, the demo and the benches.

Speaks enough HTTP/1.1 (keep-alive, chunked, Expect: 100-continue) to stand in for an OpenAI-style
server (`/chat/completions`, `/responses`, `/models`) or Anthropic (`/messages`), and can answer,
answer slowly, stall, fail with any status/body/headers, reset the connection, or stream SSE with
the fault modes real servers show (PROTOCOLS.md A.1, A.5, A.6). Python 3 standard library only.

One asyncio loop (in a daemon thread when imported, in the main thread when run as a script) serves
every connection, so a stalled request never blocks another and thousands of slow streams cost
little. Every request is recorded, including whether the client went away before the answer was
complete: that is how tests see that moongate cancelled an upstream.

As a script:
    python3 tests/mock_upstream.py --port 0 --name A [--mode fail --status 503] [--behavior JSON]
prints `READY <port>` on stdout once listening; with --log, one JSON line per request on stderr.

From a test:
    import mock_upstream as mu
    a = mu.start(name="A")                               # answers everything
    a.set_behavior("fail", model="m2", status=429, headers={"Retry-After": "2"})
    a.set_behavior("slow", delay_ms=1500)                # default for every other model
    a.push_behavior("close")                             # the next request only
    ... a.url  (http://127.0.0.1:PORT/v1), a.requests, a.wait_requests(2), a.stop()
    d = mu.down()                                        # d.url refuses connections
    h = mu.blackhole()                                   # h.url: connect never completes

Behaviours (a dict: {"mode": ..., options}); the options of every mode may be combined with
`delay_ms` (wait before answering) and `headers` (extra response headers):
    answer   a valid completion echoing "mock <name> saw model <model>"; streams when the request
             says "stream": true (see the stream options below). `usage` always included.
             enums ({field: [allowed values]}): a request whose field holds another value gets
             api.openai.com's 400 for it, which quotes the value ("Invalid value: '<value>'.").
    slow     = answer after delay_ms (default 1000).
    stall    read the request, then never answer until the client goes away.
    fail     status (default 500), body (dict -> JSON, str/bytes -> raw; default an OpenAI-style
             error, or Anthropic-style on /messages), headers.
    close    read the request, then close the connection without answering: reset (RST, default)
             or how="fin" for an orderly close.
    garbage  answer with bytes that are not HTTP.
    badjson  HTTP 200 with a body that is not JSON.
Stream options (mode answer/slow with "stream": true in the request):
    events (content deltas, default 5), pacing_ms (between events), rechunk_seed (cut the byte
    stream at random boundaries, seeded; rechunk_max bytes per piece, rechunk_pause_ms between),
    stall_after / close_after / end_after / error_after = K (after K chunk events, counting the
    role chunk as the first; 0 = before anything): stall until the client leaves, reset the
    connection, end the HTTP body cleanly without [DONE], or send an error event and end;
    stall_after_headers (true: send 200 + headers, then nothing), error_style ("data": OpenAI /
    vLLM `data: {"error":...}`, "event": LM Studio `event: error` with HTTP 200, "openrouter":
    a chunk with `error` and finish_reason "error"), error (the error object),
    pings (`: ping` comments before the first event), ping_every (a comment every N events),
    ping_text, reasoning ("reasoning_content" | "reasoning" | "think") with reasoning_events
    deltas before the content, no_done (omit `data: [DONE]`), no_role (omit the role chunk),
    transfer ("chunked" default, or "close": no length, connection closed at the end),
    raw_sse (str/bytes sent verbatim as the event stream instead of generated events),
    ignore_stream (answer with plain JSON even when asked to stream).

Model names choose a behaviour when nobody configured one for them, so a config alone can build a
scenario: fail-<status> (e.g. fail-503, fail-429 with Retry-After: 1), slow-<ms>, stall, close,
garbage, badjson, ctx-overflow (OpenAI 400 context_length_exceeded), ctx-lmstudio (LM Studio's
string error), ctx-vllm-old (vLLM's unwrapped error), stream-<fault>-<K> (stall/close/end/error
after K events). Resolution order for a request: one-shot queue for its model, one-shot queue for
any model, the per-model behaviour, the model-name convention, the server default.
"""

import argparse
import asyncio
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time

__all__ = ["MockUpstream", "Down", "Blackhole", "start", "down", "blackhole", "Request", "ERRORS", "free_port"]

# Error bodies seen in the wild (PROTOCOLS.md A.5, A.6), for `fail` behaviours.
ERRORS = {
    "context_openai": {"error": {
        "message": "This model's maximum context length is 4096 tokens. However, your messages "
                   "resulted in 5000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
    "context_lmstudio": {"error": "The number of tokens to keep from the initial prompt is greater "
                                  "than the context length (n_keep: 13055>= n_ctx: 4096). Try to "
                                  "load the model with a larger context length, or provide a "
                                  "shorter input."},
    "context_vllm_old": {"object": "error",
                         "message": "This model's maximum context length is 4096 tokens. However, "
                                    "you requested 5000 tokens (4000 in the messages, 1000 in the "
                                    "completion). Please reduce the length of the messages or "
                                    "completion.",
                         "type": "BadRequestError", "param": None, "code": 400},
    "context_llamacpp": {"error": {"code": 400, "message": "request (4390 tokens) exceeds the "
                                   "available context size (4096 tokens), try increasing it",
                                   "type": "exceed_context_size_error", "n_prompt_tokens": 4390,
                                   "n_ctx": 4096}},
    "bad_request": {"error": {"message": "Invalid value for 'temperature': must be <= 2.",
                              "type": "invalid_request_error", "param": "temperature",
                              "code": "invalid_value"}},
    "auth": {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                       "param": None, "code": "invalid_api_key"}},
    "model_not_found": {"error": {"message": "The model `x` does not exist or you do not have "
                                  "access to it.", "type": "invalid_request_error", "param": None,
                                  "code": "model_not_found"}},
    "rate_limit": {"error": {"message": "Rate limit reached for requests.", "type": "requests",
                             "param": None, "code": "rate_limit_exceeded"}},
    "overloaded": {"error": {"message": "The server is overloaded or not ready yet.",
                             "type": "server_error", "param": None, "code": None}},
    "server_error": {"error": {"message": "The server had an error while processing your request.",
                               "type": "server_error", "param": None, "code": None}},
    "stream_error": {"message": "Input does not fit in context length. The input has 31430 tokens, "
                                "but the context length only supports 30000 tokens.",
                     "type": "server_error", "param": None, "code": None},
}

_STATUS_TEXT = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
                402: "Payment Required", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
                413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
                500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
                503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}

_MAX_HEAD = 64 * 1024


def free_port():
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Request:
    """One request the mock received. Fields are updated by the mock's loop as the answer goes."""

    def __init__(self, index, conn_id, method, path, version, headers, body):
        self.index = index              # 0-based, per mock
        self.conn_id = conn_id          # same value = same TCP connection (keep-alive reuse)
        self.method = method
        self.path = path                # as sent, with any query string
        self.version = version
        self.headers = headers          # dict, lower-case names (last value wins)
        self.body = body                # raw bytes
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None
        self.model = self.json.get("model") if isinstance(self.json, dict) else None
        self.stream = bool(self.json.get("stream")) if isinstance(self.json, dict) else False
        self.behavior = None            # the behaviour dict used
        self.t_received = time.monotonic()
        self.t_done = None              # when the mock finished (answered, failed, saw the close)
        self.status = None              # status sent, None if none
        self.events_sent = 0            # SSE chunk events written
        self.finished = False           # the full answer was written
        self.disconnected = False       # the client went away before the answer was complete
        self.t_disconnected = None

    def json_without(self, *keys):
        """The parsed body minus some top-level keys (to compare bodies modulo `model`)."""
        return {k: v for k, v in (self.json or {}).items() if k not in keys}

    def as_dict(self):
        return {"index": self.index, "conn": self.conn_id, "method": self.method,
                "path": self.path, "model": self.model, "stream": self.stream,
                "status": self.status, "mode": (self.behavior or {}).get("mode"),
                "events_sent": self.events_sent, "finished": self.finished,
                "disconnected": self.disconnected,
                "ms": None if self.t_done is None else int((self.t_done - self.t_received) * 1000)}

    def __repr__(self):
        return "Request(%r)" % (self.as_dict(),)


class _ClientGone(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The shared event loop for in-process use.

_loop = None
_loop_lock = threading.Lock()


def _get_loop():
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="mock-upstream-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def _call(coro, timeout=10):
    return asyncio.run_coroutine_threadsafe(coro, _get_loop()).result(timeout)


# ---------------------------------------------------------------------------------------------
# Behaviour resolution.

MODES = ("answer", "slow", "stall", "fail", "close", "garbage", "badjson")


def _check_mode(b):
    """A behaviour's mode must be one the mock knows: a typo fails where it is written, not as a
    failed request the test may mistake for the failure it wanted."""
    if b.get("mode", "answer") not in MODES:
        raise ValueError("unknown mode %r (one of %s)" % (b.get("mode"), ", ".join(MODES)))
    return b


def _behavior(mode="answer", **opts):
    _check_mode({"mode": mode})
    b = {"mode": mode}
    b.update(opts)
    if mode == "slow":
        b.setdefault("delay_ms", 1000)
    return b


def _from_model_name(model):
    """Behaviour implied by a model name, or None."""
    if not isinstance(model, str):
        return None
    m = model.rsplit("/", 1)[-1]
    parts = m.split("-")
    try:
        if parts[0] == "fail" and len(parts) >= 2:
            status = int(parts[1])
            b = _behavior("fail", status=status)
            if status in (429, 503):
                b["headers"] = {"Retry-After": "1"}
            return b
        if parts[0] == "slow" and len(parts) >= 2:
            return _behavior("slow", delay_ms=int(parts[1]))
        if parts[0] == "stream" and len(parts) >= 3 and parts[1] in ("stall", "close", "end",
                                                                     "error"):
            return _behavior("answer", **{parts[1] + "_after": int(parts[2])})
    except ValueError:
        return None
    if m in ("stall", "close", "garbage", "badjson"):
        return _behavior(m)
    if m == "ctx-overflow":
        return _behavior("fail", status=400, body=ERRORS["context_openai"])
    if m == "ctx-lmstudio":
        return _behavior("fail", status=400, body=ERRORS["context_lmstudio"])
    if m == "ctx-vllm-old":
        return _behavior("fail", status=400, body=ERRORS["context_vllm_old"])
    return None


# ---------------------------------------------------------------------------------------------
# The connection: a small HTTP/1.1 server on an asyncio Protocol, so that the client going away
# is noticed (eof_received / connection_lost) whatever the handler is doing.

class _Conn(asyncio.Protocol):
    def __init__(self, mock):
        self.mock = mock
        self.buf = bytearray()
        self.transport = None
        self.closed = False
        self.gone = None          # asyncio.Event: the client closed or the connection broke
        self.data_ev = None
        self.can_write = None
        self.task = None
        self.conn_id = None

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        self.gone = asyncio.Event()
        self.data_ev = asyncio.Event()
        self.can_write = asyncio.Event()
        self.can_write.set()
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self.conn_id = self.mock._next_conn_id()
        self.mock._conns.add(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data):
        self.buf += data
        self.data_ev.set()

    def eof_received(self):
        self.gone.set()
        self.data_ev.set()
        return False  # let the transport close

    def connection_lost(self, exc):
        self.closed = True
        self.gone.set()
        self.data_ev.set()
        self.can_write.set()
        self.mock._conns.discard(self)

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    # -- helpers
    async def _wait_data(self):
        if self.gone.is_set():
            raise _ClientGone()
        self.data_ev.clear()
        await self.data_ev.wait()

    async def _read_until(self, sep, limit):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            await self._wait_data()

    async def _read_exact(self, n):
        while len(self.buf) < n:
            await self._wait_data()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def write(self, data):
        if self.closed or self.transport.is_closing():
            raise _ClientGone()
        self.transport.write(data)
        if not self.can_write.is_set():
            await self.can_write.wait()
        if self.closed:
            raise _ClientGone()

    async def sleep_or_gone(self, seconds):
        """Sleeps; raises _ClientGone as soon as the client leaves."""
        if seconds <= 0:
            if self.gone.is_set():
                raise _ClientGone()
            return
        try:
            await asyncio.wait_for(self.gone.wait(), seconds)
        except asyncio.TimeoutError:
            return
        raise _ClientGone()

    def reset(self):
        """Closes with RST (SO_LINGER 0), as a crashed or killed server would."""
        sock = self.transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, AttributeError):
            pass
        self.transport.abort()

    # -- the request loop
    async def _run(self):
        try:
            while not self.closed:
                try:
                    head = await self._read_until(b"\r\n\r\n", _MAX_HEAD)
                except _ClientGone:
                    return
                lines = head.decode("latin-1").split("\r\n")
                while lines and lines[0] == "":  # tolerate stray CRLFs between requests
                    lines.pop(0)
                if not lines:
                    continue
                try:
                    method, path, version = lines[0].split(" ", 2)
                except ValueError:
                    self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                         b"Connection: close\r\n\r\n")
                    self.transport.close()
                    return
                headers = {}
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    headers[k.strip().lower()] = v.strip()
                if headers.get("expect", "").lower() == "100-continue":
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = b""
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    parts = []
                    while True:
                        size_line = await self._read_until(b"\r\n", 1024)
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while (await self._read_until(b"\r\n", _MAX_HEAD)) != b"":
                                pass
                            break
                        parts.append(await self._read_exact(size))
                        await self._read_exact(2)
                    body = b"".join(parts)
                elif "content-length" in headers:
                    body = await self._read_exact(int(headers["content-length"]))
                req = self.mock._record(self.conn_id, method, path, version, headers, body)
                keep = (version == "HTTP/1.1" and headers.get("connection", "").lower() != "close")
                try:
                    keep = await self.mock._handle(self, req) and keep
                except _ClientGone:
                    req.disconnected = not req.finished
                    if req.disconnected and req.t_disconnected is None:
                        req.t_disconnected = time.monotonic()
                    keep = False
                finally:
                    if req.t_done is None:
                        req.t_done = time.monotonic()
                    self.mock._done(req)
                if not keep:
                    if not self.closed:
                        self.transport.close()
                    return
        except _ClientGone:
            return
        except Exception as e:  # a bug in the mock: make it visible, never hang the test
            sys.stderr.write("mock_upstream %s: %r\n" % (self.mock.name, e))
            if not self.closed:
                self.transport.abort()


# ---------------------------------------------------------------------------------------------

class MockUpstream:
    """A mock LLM server. Create with start(); all methods are thread-safe enough for tests."""

    def __init__(self, name="A", behavior=None, models=None, host="127.0.0.1", port=0,
                 log=False, tls=None):
        self.name = name
        self.tls = tls                 # (certfile, keyfile): serve https
        self.host = host
        self._want_port = port
        self.port = None
        self.default = _check_mode(dict(behavior)) if behavior else _behavior("answer")
        self.models = {k: dict(v) for k, v in (models or {}).items()}
        self._queue = []               # (model or None, behaviour) one-shot
        self.requests = []
        self._conns = set()
        self._conn_seq = 0
        self._server = None
        self._cond = threading.Condition()
        self._log = log
        self.loop = None

    # -- addresses
    @property
    def url(self):
        """Base URL as a provider's baseUrl: http://127.0.0.1:PORT/v1 (https with tls)"""
        return "%s/v1" % self.root

    @property
    def root(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    # -- behaviour
    def set_behavior(self, mode="answer", model=None, **opts):
        """Default behaviour, or the behaviour for one upstream model id when model is given.
        mode may also be a full behaviour dict."""
        b = _check_mode(dict(mode)) if isinstance(mode, dict) else _behavior(mode, **opts)
        if model is None:
            self.default = b
        else:
            self.models[model] = b
        return self

    def push_behavior(self, mode="answer", model=None, **opts):
        """A behaviour for the next matching request only (queued, first in first out)."""
        b = _check_mode(dict(mode)) if isinstance(mode, dict) else _behavior(mode, **opts)
        with self._cond:
            self._queue.append((model, b))
        return self

    def clear_behaviors(self):
        with self._cond:
            self._queue.clear()
        self.models.clear()
        self.default = _behavior("answer")

    def _pick(self, req):
        with self._cond:
            for i, (model, b) in enumerate(self._queue):
                if model is not None and model == req.model:
                    return self._queue.pop(i)[1]
            for i, (model, b) in enumerate(self._queue):
                if model is None:
                    return self._queue.pop(i)[1]
        if req.model in self.models:
            return self.models[req.model]
        return _from_model_name(req.model) or self.default

    # -- recording
    def _next_conn_id(self):
        self._conn_seq += 1
        return self._conn_seq

    def _record(self, conn_id, method, path, version, headers, body):
        with self._cond:
            req = Request(len(self.requests), conn_id, method, path, version, headers, body)
            self.requests.append(req)
            self._cond.notify_all()
        return req

    def _done(self, req):
        with self._cond:
            self._cond.notify_all()
        if self._log:
            sys.stderr.write(json.dumps(dict(req.as_dict(), mock=self.name)) + "\n")
            sys.stderr.flush()

    def wait_for(self, pred, timeout=5.0, what="condition"):
        """Polls pred() (called under the mock's lock) until true; raises AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("mock %s: timed out after %.1fs waiting for %s; "
                                         "requests: %r" % (self.name, timeout, what,
                                                           self.requests))
                self._cond.wait(min(left, 0.05))

    def wait_requests(self, n, timeout=5.0):
        """Waits until at least n requests arrived; returns the list."""
        return self.wait_for(lambda: len(self.requests) >= n and list(self.requests), timeout,
                             "%d request(s)" % n)

    def _wait_request(self, index, cond, timeout, what):
        """Waits until request `index` has arrived and cond(request) holds; returns the Request."""
        def pred():
            try:
                r = self.requests[index]
            except IndexError:
                return None
            return r if cond(r) else None
        return self.wait_for(pred, timeout, what)

    def wait_disconnect(self, index=-1, timeout=5.0):
        """Waits until the client went away from request `index`; returns the Request."""
        return self._wait_request(index, lambda r: r.disconnected, timeout,
                                  "client disconnect on request %s" % index)

    def wait_done(self, index=-1, timeout=5.0):
        return self._wait_request(index, lambda r: r.t_done is not None, timeout,
                                  "request %s to finish" % index)

    def reset_requests(self):
        with self._cond:
            self.requests = []

    @property
    def open_connections(self):
        return len(self._conns)

    # -- lifecycle
    async def _start(self):
        self.loop = asyncio.get_running_loop()
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.tls)
        self._server = await self.loop.create_server(lambda: _Conn(self), self.host,
                                                     self._want_port, reuse_address=True,
                                                     backlog=4096, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self):
        if self._server is not None:
            self._server.close()
            for c in list(self._conns):
                if c.transport is not None:
                    c.transport.abort()
            await self._server.wait_closed()
            self._server = None

    def start(self):
        _call(self._start())
        return self

    def stop(self):
        if self._server is not None:
            try:
                _call(self._stop(), timeout=5)
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- answering
    async def _handle(self, conn, req):
        """Answers req on conn. Returns whether the connection may be kept alive."""
        path = req.path.split("?", 1)[0]
        if req.method == "GET" and path.endswith("/models"):
            req.behavior = {"mode": "models"}
            return await self._send_json(conn, req, 200, self._models_body(), {})
        kind = None
        if path.endswith("/chat/completions"):
            kind = "chat"
        elif path.endswith("/messages"):
            kind = "anthropic"
        elif path.endswith("/responses"):
            kind = "responses"
        if req.method != "POST" or kind is None:
            req.behavior = {"mode": "not_found"}
            return await self._send_json(conn, req, 404, {"error": {
                "message": "mock %s: no route %s %s" % (self.name, req.method, path),
                "type": "invalid_request_error", "param": None, "code": None}}, {})
        b = self._pick(req)
        req.behavior = b
        mode = b.get("mode", "answer")
        delay = b.get("delay_ms", 0)
        if delay:
            await conn.sleep_or_gone(delay / 1000.0)
        extra = dict(b.get("headers") or {})
        if mode == "stall":
            await conn.gone.wait()
            raise _ClientGone()
        if mode == "close":
            req.finished = True  # by design: the answer is "nothing"
            if b.get("how") == "fin":
                conn.transport.close()
            else:
                conn.reset()
            return False
        if mode == "garbage":
            await conn.write(b.get("body", b"SSH-2.0-OpenSSH_9.2 not http at all\r\n\r\n"))
            req.finished = True
            conn.transport.close()
            return False
        if mode == "badjson":
            return await self._send_raw(conn, req, 200, b.get("body", b'{"id": "chatcmpl-x", '),
                                        "application/json", extra)
        if mode == "fail":
            status = int(b.get("status", 500))
            body = b.get("body")
            if body is None:
                body = self._default_error(kind, status)
            if isinstance(body, (dict, list)):
                return await self._send_json(conn, req, status, body, extra)
            if isinstance(body, str):
                body = body.encode()
            return await self._send_raw(conn, req, status, body,
                                        b.get("content_type", "application/json"), extra)
        if mode not in ("answer", "slow"):
            raise ValueError("unknown mode %r" % mode)
        invalid = self._invalid_enum(req, b)
        if invalid:
            return await self._send_json(conn, req, 400, invalid, extra)
        stream = req.stream and not b.get("ignore_stream")
        if kind == "anthropic":
            if stream:
                return await self._stream(conn, req, b, extra, self._anthropic_events(req, b))
            return await self._send_json(conn, req, 200, self._anthropic_body(req), extra)
        if kind == "responses":
            if stream:
                return await self._stream(conn, req, b, extra, self._responses_events(req, b))
            return await self._send_json(conn, req, 200, self._responses_body(req), extra)
        if stream:
            return await self._stream(conn, req, b, extra, self._chat_events(req, b))
        return await self._send_json(conn, req, 200, self._chat_body(req, b), extra)

    # -- bodies
    def _invalid_enum(self, req, b):
        """OpenAI's 400 for a value outside one of the behaviour's enums, or None."""
        for field, allowed in (b.get("enums") or {}).items():
            v = (req.json or {}).get(field)
            if v is not None and v not in allowed:
                return {"error": {"message": "Invalid value: '%s'. Supported values are: %s." %
                                             (v, ", ".join("'%s'" % a for a in allowed)),
                                  "type": "invalid_request_error", "param": field, "code": "invalid_value"}}
        return None

    def text_for(self, model):
        return "mock %s saw model %s" % (self.name, model)

    def _usage_numbers(self, req, completion):
        msgs = (req.json or {}).get("messages") or (req.json or {}).get("input") or ""
        prompt = max(1, len(json.dumps(msgs)) // 4)
        return prompt, completion

    def _chat_body(self, req, b):
        text = b.get("content", self.text_for(req.model))
        prompt, completion = self._usage_numbers(req, max(1, len(text.split())))
        msg = {"role": "assistant", "content": text, "refusal": None}
        reasoning = b.get("reasoning")
        if reasoning in ("reasoning_content", "reasoning"):
            msg[reasoning] = "mock %s thinks" % self.name
        elif reasoning == "think":
            msg["content"] = "<think>mock %s thinks</think>%s" % (self.name, text)
        return {"id": "chatcmpl-%s-%d" % (self.name, req.index), "object": "chat.completion",
                "created": 1750000000, "model": req.model,
                "choices": [{"index": 0, "message": msg, "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion,
                          "prompt_tokens_details": {"cached_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0}}}

    def _anthropic_body(self, req):
        text = self.text_for(req.model)
        prompt, completion = self._usage_numbers(req, max(1, len(text.split())))
        return {"id": "msg_%s_%d" % (self.name, req.index), "type": "message",
                "role": "assistant", "model": req.model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}

    def _responses_body(self, req):
        text = self.text_for(req.model)
        prompt, completion = self._usage_numbers(req, max(1, len(text.split())))
        return {"id": "resp_%s_%d" % (self.name, req.index), "object": "response",
                "created_at": 1750000000, "status": "completed", "model": req.model,
                "output": [{"id": "msg_%s_%d" % (self.name, req.index), "type": "message",
                            "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": text,
                                         "annotations": [], "logprobs": []}]}],
                "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": completion,
                          "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": prompt + completion},
                "error": None, "incomplete_details": None}

    def _models_body(self):
        ids = sorted(set(self.models) | {"mock-model"})
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 1750000000,
                                            "owned_by": "mock-" + self.name} for i in ids]}

    def _default_error(self, kind, status):
        if kind == "anthropic":
            t = {400: "invalid_request_error", 401: "authentication_error", 403:
                 "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": t, "message": "mock %s: %d" % (self.name,
                                                                                     status)}}
        by_status = {400: "bad_request", 401: "auth", 404: "model_not_found", 429: "rate_limit",
                     503: "overloaded"}
        body = json.loads(json.dumps(ERRORS[by_status.get(status, "server_error")]))
        body["error"]["message"] = "mock %s: %s" % (self.name, body["error"]["message"])
        return body

    # -- events
    def _chat_events(self, req, b):
        """The chunk events of a chat completion stream, as a list of SSE frames (bytes), and a
        usage frame. [DONE] is added by _stream."""
        cid = "chatcmpl-%s-%d" % (self.name, req.index)
        n = int(b.get("events", 5))
        text = b.get("content", self.text_for(req.model))
        pieces = [text] + [" w%d" % i for i in range(1, n)] if n > 0 else []

        def chunk(delta, finish=None, **extra):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": 1750000000,
                   "model": req.model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                "finish_reason": finish}]}
            obj.update(extra)
            return obj

        events = []
        if not b.get("no_role"):
            events.append(chunk({"role": "assistant", "content": ""}))
        reasoning = b.get("reasoning")
        rn = int(b.get("reasoning_events", 3)) if reasoning else 0
        if reasoning == "think":
            events.append(chunk({"content": "<think>"}))
            for i in range(rn):
                events.append(chunk({"content": "thought%d " % i}))
            events.append(chunk({"content": "</think>"}))
        elif reasoning:
            for i in range(rn):
                events.append(chunk({reasoning: "thought%d " % i, "content": None}
                                    if b.get("reasoning_null_content") else
                                    {reasoning: "thought%d " % i}))
        for p in pieces:
            events.append(chunk({"content": p}))
        events.append(chunk({}, "stop"))
        frames = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n"
                  for e in events]
        opts = (req.json or {}).get("stream_options") or {}
        if opts.get("include_usage"):
            prompt, completion = self._usage_numbers(req, len(pieces) + rn)
            usage = {"id": cid, "object": "chat.completion.chunk", "created": 1750000000,
                     "model": req.model, "choices": [],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}}
            frames.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
        if not b.get("no_done"):
            frames.append(b"data: [DONE]\n\n")
        return frames

    def _anthropic_events(self, req, b):
        mid = "msg_%s_%d" % (self.name, req.index)
        n = int(b.get("events", 5))
        text = self.text_for(req.model)
        pieces = [text] + [" w%d" % i for i in range(1, n)] if n > 0 else []
        prompt, completion = self._usage_numbers(req, len(pieces))

        def ev(name, obj):
            obj = dict({"type": name}, **obj)
            return ("event: %s\ndata: %s\n\n" % (name, json.dumps(obj, separators=(",", ":")))
                    ).encode()

        frames = [ev("message_start", {"message": {
            "id": mid, "type": "message", "role": "assistant", "model": req.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
            ev("ping", {}),
            ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
        for p in pieces:
            frames.append(ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                           "text": p}}))
        frames.append(ev("content_block_stop", {"index": 0}))
        frames.append(ev("message_delta", {"delta": {"stop_reason": "end_turn",
                                                     "stop_sequence": None},
                                           "usage": {"output_tokens": completion}}))
        frames.append(ev("message_stop", {}))
        return frames

    def _responses_events(self, req, b):
        """The Responses API's event sequence (PROTOCOLS.md A.2) for a text answer: created,
        in_progress, output_item.added, content_part.added, output_text.delta xN, the .done
        events, and response.completed carrying the whole output and the usage."""
        rid, mid = "resp_%s_%d" % (self.name, req.index), "msg_%s_%d" % (self.name, req.index)
        n = int(b.get("events", 5))
        text = self.text_for(req.model)
        pieces = [text] + [" w%d" % i for i in range(1, n)] if n > 0 else []
        full = "".join(pieces)
        prompt, completion = self._usage_numbers(req, len(pieces))
        seq = [0]

        def ev(name, obj):
            obj = dict({"type": name, "sequence_number": seq[0]}, **obj)
            seq[0] += 1
            return ("event: %s\ndata: %s\n\n" % (name, json.dumps(obj, separators=(",", ":")))
                    ).encode()

        def response(status, output, usage):
            return {"id": rid, "object": "response", "created_at": 1750000000, "status": status,
                    "model": req.model, "output": output, "usage": usage, "error": None,
                    "incomplete_details": None}

        part = {"type": "output_text", "text": "", "annotations": []}
        item = {"id": mid, "type": "message", "status": "in_progress", "role": "assistant",
                "content": []}
        done_item = dict(item, status="completed", content=[dict(part, text=full)])
        frames = [ev("response.created", {"response": response("in_progress", [], None)}),
                  ev("response.in_progress", {"response": response("in_progress", [], None)}),
                  ev("response.output_item.added", {"output_index": 0, "item": item}),
                  ev("response.content_part.added", {"item_id": mid, "output_index": 0,
                                                     "content_index": 0, "part": part})]
        for p in pieces:
            frames.append(ev("response.output_text.delta", {"item_id": mid, "output_index": 0,
                                                            "content_index": 0, "delta": p,
                                                            "logprobs": []}))
        frames.append(ev("response.output_text.done", {"item_id": mid, "output_index": 0,
                                                       "content_index": 0, "text": full}))
        frames.append(ev("response.content_part.done", {"item_id": mid, "output_index": 0,
                                                        "content_index": 0,
                                                        "part": dict(part, text=full)}))
        frames.append(ev("response.output_item.done", {"output_index": 0, "item": done_item}))
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + completion}
        frames.append(ev("response.completed", {"response": response("completed", [done_item],
                                                                     usage)}))
        return frames

    def _error_frame(self, req, b):
        style = b.get("error_style", "data")
        err = b.get("error") or ERRORS["stream_error"]
        if style == "event":  # LM Studio 0.4.x: HTTP 200, `event: error`
            obj = {"error": {"message": err.get("message")}, "message": err.get("message")}
            return b"event: error\ndata: " + json.dumps(obj).encode() + b"\n\n"
        if style == "anthropic":
            obj = {"type": "error", "error": {"type": "overloaded_error",
                                              "message": err.get("message")}}
            return b"event: error\ndata: " + json.dumps(obj).encode() + b"\n\n"
        if style == "openrouter":
            obj = {"id": "gen-x", "object": "chat.completion.chunk", "created": 1750000000,
                   "model": req.model, "error": {"code": 502, "message": err.get("message")},
                   "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
            return b"data: " + json.dumps(obj).encode() + b"\n\n"
        return b"data: " + json.dumps({"error": err}).encode() + b"\n\n"

    async def _stream(self, conn, req, b, extra, frames):
        chunked = b.get("transfer", "chunked") == "chunked"
        head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream",
                "Cache-Control: no-cache", "x-mock-name: %s" % self.name]
        head.append("Transfer-Encoding: chunked" if chunked else "Connection: close")
        head += ["%s: %s" % kv for kv in extra.items()]
        req.status = 200
        await conn.write(("\r\n".join(head) + "\r\n\r\n").encode())
        rng = random.Random(b["rechunk_seed"]) if b.get("rechunk_seed") is not None else None
        rechunk_max = int(b.get("rechunk_max", 7))
        rechunk_pause = b.get("rechunk_pause_ms", 1) / 1000.0
        pacing = b.get("pacing_ms", 0) / 1000.0

        async def send(data):
            if not data:
                return
            pieces = [data]
            if rng is not None:
                pieces, i = [], 0
                while i < len(data):
                    n = rng.randint(1, rechunk_max)
                    pieces.append(data[i:i + n])
                    i += n
            for k, p in enumerate(pieces):
                await conn.write(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
                if rng is not None and k + 1 < len(pieces) and rechunk_pause > 0:
                    await conn.sleep_or_gone(rechunk_pause)

        async def finish_body():
            if chunked:
                await conn.write(b"0\r\n\r\n")

        async def end_body():
            """The clean end of the body: the last chunk, or closing the connection when the body
            is not chunked. Returns whether the connection may serve another request."""
            await finish_body()
            req.finished = True
            if not chunked:
                conn.transport.close()
            return chunked

        if b.get("stall_after_headers"):
            await conn.gone.wait()
            raise _ClientGone()
        if b.get("raw_sse") is not None:
            raw = b["raw_sse"]
            await send(raw.encode() if isinstance(raw, str) else raw)
            return await end_body()
        ping = (": %s\n\n" % b.get("ping_text", "ping")).encode()
        for _ in range(int(b.get("pings", 0))):
            await send(ping)
            if pacing:
                await conn.sleep_or_gone(pacing)
        ping_every = int(b.get("ping_every", 0))
        faults = {k: b.get(k) for k in ("stall_after", "close_after", "end_after",
                                        "error_after")}
        events_total = sum(1 for f in frames if f != b"data: [DONE]\n\n")
        for i in range(events_total + 1):
            # Faults fire after i events have been sent.
            if faults["stall_after"] == i:
                await conn.gone.wait()
                raise _ClientGone()
            if faults["close_after"] == i:
                conn.reset()
                req.finished = False
                return False
            if faults["error_after"] == i:
                await send(self._error_frame(req, b))
                await finish_body()
                req.finished = True
                return chunked
            if faults["end_after"] == i:
                return await end_body()
            if i == events_total:
                break
            if i > 0 and pacing:
                await conn.sleep_or_gone(pacing)
            await send(frames[i])
            req.events_sent += 1
            if ping_every and (i + 1) % ping_every == 0:
                await send(ping)
        for f in frames[events_total:]:  # [DONE]
            await send(f)
        return await end_body()

    async def _send_raw(self, conn, req, status, body, ctype, extra):
        head = ["HTTP/1.1 %d %s" % (status, _STATUS_TEXT.get(status, "Status")),
                "Content-Type: %s" % ctype, "Content-Length: %d" % len(body),
                "x-mock-name: %s" % self.name]
        head += ["%s: %s" % kv for kv in extra.items()]
        req.status = status
        await conn.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        req.finished = True
        return True

    async def _send_json(self, conn, req, status, obj, extra):
        return await self._send_raw(conn, req, status, json.dumps(obj).encode(),
                                    "application/json", extra)


class _DeadPort:
    """A socket bound to a loopback port that serves nothing (so nobody else takes the port);
    what connecting to it does is the subclass's. Has a mock's url, requests (always empty) and
    stop(), and is a context manager."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.port = self._sock.getsockname()[1]
        self.requests = []

    @property
    def url(self):
        return "http://%s:%d/v1" % (self.host, self.port)

    def stop(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Down(_DeadPort):
    """A port where nothing listens: a socket is bound (so nobody else takes the port) but never
    listens, so connecting gets ECONNREFUSED immediately."""


class Blackhole(_DeadPort):
    """A port where connecting never completes (nor fails): it listens with a backlog of 0 that
    a filler connection keeps full, so the kernel drops further SYNs. For connect timeouts
    without depending on how the machine routes an unroutable address."""

    def __init__(self, host="127.0.0.1"):
        super().__init__(host)
        self._sock.listen(0)
        self._fillers = []
        for _ in range(2):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex((host, self.port))
            self._fillers.append(f)
        time.sleep(0.05)

    def stop(self):
        for f in self._fillers:
            f.close()
        self._fillers = []
        super().stop()


def start(name="A", behavior=None, models=None, port=0, log=False, tls=None, **opts):
    """Starts a mock in this process (on the shared background loop) and returns it.
    behavior: a mode name or dict for the default; opts are that mode's options.
    tls: (certfile, keyfile) to serve https."""
    if isinstance(behavior, str):
        behavior = _behavior(behavior, **opts)
    elif behavior is None and opts:
        behavior = _behavior("answer", **opts)
    return MockUpstream(name=name, behavior=behavior, models=models, port=port, log=log,
                        tls=tls).start()


def down():
    return Down()


def blackhole():
    return Blackhole()


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="A")
    ap.add_argument("--mode", default="answer",
                    help="answer | slow | stall | fail | close | garbage | badjson | down")
    ap.add_argument("--status", type=int, help="status for --mode fail")
    ap.add_argument("--delay-ms", type=int, help="delay before answering")
    ap.add_argument("--body", help="raw body for --mode fail")
    ap.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    ap.add_argument("--behavior", help="the default behaviour as a JSON object (overrides --mode)")
    ap.add_argument("--models", help='per-model behaviours as JSON {"model": {"mode": ...}}')
    ap.add_argument("--log", action="store_true", help="one JSON line per request on stderr")
    a = ap.parse_args(argv)

    if a.mode == "down":
        d = Down(a.host)
        print("READY %d" % d.port, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    if a.behavior:
        b = json.loads(a.behavior)
    else:
        opts = {}
        if a.status is not None:
            opts["status"] = a.status
        if a.delay_ms is not None:
            opts["delay_ms"] = a.delay_ms
        if a.body is not None:
            opts["body"] = a.body
        if a.header:
            opts["headers"] = dict(h.split(":", 1) for h in a.header)
            opts["headers"] = {k.strip(): v.strip() for k, v in opts["headers"].items()}
        b = _behavior(a.mode, **opts)
    m = MockUpstream(name=a.name, behavior=b, models=json.loads(a.models) if a.models else None,
                     host=a.host, port=a.port, log=a.log)

    async def run():
        await m._start()
        print("READY %d" % m.port, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

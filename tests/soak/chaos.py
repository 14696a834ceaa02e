#!/usr/bin/env python3
"""Chaos: everything at once against one moongate, meant for a sanitizer build (ThreadSanitizer:
scripts/tsan.sh), with several serving threads: --clients client threads for --duration seconds
(default 24 for 60 s) while the config and policy are reloaded every --reload-every seconds, then
SIGTERM (or at --sigterm-at seconds, under load).

What runs at the same time:
  - requests in all three client APIs (Chat Completions, Responses, Anthropic Messages), 60%
    streamed, a few token counts; a client per request behaves normally, reads slowly (a few bytes
    at a time, so backpressure pauses the upstream), or leaves: closes mid-answer, closes early
    (FIN) or resets (RST);
  - client keys: free, rpm, tpm, budget, limited to some models, a wrong key and none, so limits
    are hit all the time;
  - one tests/mock_upstream.py process behind three providers (one per upstream API) whose models
    answer, stream long, fail 500/503/429 (Retry-After), stall, cut or end streams early, send
    error events, overflow the context, send bad JSON, garbage or close; a provider nobody listens
    on is first in the default chain; short cooldowns and probes;
  - compaction with a summarizer (one that is slow, one that stalls past summaryTimeoutMs) and a
    policy `compact` hook on big histories;
  - reloads: a cycle of a valid config A (file watch), a broken config (POST /admin/reload), a
    valid config B (POST; it moves log.path to another file and swaps the policy), a broken policy
    (file), A (POST), B (file), a broken policy (POST), SIGHUP;
  - /health, /metrics, /admin/health, /admin/policy and /v1/models polled.

Pass when:
  - every request got a well-formed answer: 200 with its API's object, a stream whose last event
    is its API's clean end or a well-formed error event (nothing after it), or an error status
    with an error body in its API's format. The only other outcomes allowed are the client
    leaving on purpose and, after a SIGTERM (or over --max-conn-per-ip), a refused connection or
    one closed or reset before any answer;
  - no request hung (--request-timeout, default 90 s; the gateway's own totalMs is 20 s);
  - every answered request (it carried x-request-id) has exactly one access line with that id and
    the status the client saw; with the stop at the end: API access lines = the sum of
    moongate_requests_total, /health in_flight and upstream_active back to 0, and every serving
    thread served requests;
  - every valid reload POST answered 200 ok and every broken one 400, every poll 200;
  - the sanitizer wrote no report (TSAN/ASAN/UBSAN_OPTIONS log_path, --sanitizer-dir), moongate's
    output has nothing that looks like a crash, and it exited 0 after SIGTERM.

Ports are ephemeral (moongate and the mock bind port 0; the refused provider gets a port that was
free a moment ago). Every process is started by this script and killed by pid on exit.
"""

import argparse
import atexit
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import soaklib as sl  # noqa: E402
from mock_upstream import free_port  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The world: upstream models, configs, policies

# Per-model behaviours of the mock (tests/mock_upstream.py); names like fail-503 or
# stream-close-3 pick their behaviour by the mock's model-name convention.
MOCK_MODELS = {
    "ok": {"mode": "answer", "events": 8, "pacing_ms": 20},
    "tiny": {"mode": "answer", "events": 4, "pacing_ms": 10},
    "long": {"mode": "answer", "events": 60, "pacing_ms": 20},
    "flaky": {"mode": "answer", "events": 8, "pacing_ms": 20, "close_after": 4},
    "summ": {"mode": "slow", "delay_ms": 200},
    "summstall": {"mode": "stall"},
}
MOCK_DEFAULT = {"mode": "answer", "events": 6, "pacing_ms": 15}

CHAT_MODELS = ["ok", "long", "tiny", "flaky", "fail-500", "fail-429", "stall", "slow-700",
               "stream-close-3", "stream-stall-3", "ctx-overflow", "badjson"]
RESP_MODELS = ["ok", "long", "fail-503", "fail-429", "close", "stream-error-2", "stream-end-3"]
ANTH_MODELS = ["ok", "long", "tiny", "fail-429", "slow-800", "garbage", "stream-end-3",
               "stream-close-2"]

# Client keys (values from the environment, as operators write them); the limits are low on
# purpose so that they are hit under load.
KEYS = {"free": "k-free", "rpm": "k-rpm", "budget": "k-budget", "tpm": "k-tpm", "anth": "k-anth"}

POLICY_A = r'''-- chaos.py policy A: healthy candidates first, a retry on rate limits, compact
function route(req)
  local chain = gw.util.chain_for(req.model)
  if not chain then return gw.util.unknown_model(req) end
  local plan = {}
  for _, ref in ipairs(chain) do
    if #chain == 1 or gw.healthy(ref) then
      plan[#plan + 1] = {model = ref, first_token_ms = 3000}
    end
  end
  if #plan == 0 then plan = chain end
  gw.trace("A %d of %d", #plan, #chain)
  return plan
end

function on_failure(req, f)
  if f.error_class == "rate_limit" and f.attempt == 1 then return "retry", 200 end
  return "next"
end

local done = 0
function on_complete(req, r)
  done = done + 1
  if r.status >= 500 and done % 50 == 0 then
    gw.log("warn", "A: %s failed after %d attempts", tostring(req.model), r.attempts)
  end
end

function compact(req, budget, model)
  local m = req.messages
  if #m % 2 == 0 or m[#m].role ~= "user" then return nil end
  local note = {role = "user", content = string.format("[%d earlier messages left out]", #m - 1)}
  if gw.tokens(note.content) + 10 + m[#m].tokens > budget then return nil end
  gw.trace("compacted for %s", model.ref)
  return {note, m[#m]}
end
'''

POLICY_B = r'''-- chaos.py policy B: the whole chain with an idle deadline, retries on overload
function route(req)
  local chain = gw.util.chain_for(req.model)
  if not chain then return gw.util.unknown_model(req) end
  local plan = {}
  for _, ref in ipairs(chain) do plan[#plan + 1] = {model = ref, idle_ms = 2500} end
  gw.trace("B %d", #plan)
  return plan
end

function on_failure(req, f)
  if f.error_class == "overloaded" and f.attempt < 3 then return "retry", 50 end
  return nil
end
'''

POLICY_BROKEN = "-- does not compile\nfunction route(req)\n  return {\nend end end\n"
CONFIG_BROKEN = "{ models: { mode: 'replace', providers: {\n"


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class World:
    """The files moongate reads (config, policy, error patterns) in the work directory, and the
    two valid variants the reloader moves between."""

    def __init__(self, args, wd, mock_url, down_url):
        self.args, self.wd = args, wd
        self.mock_url, self.down_url = mock_url, down_url
        self.config_path = os.path.join(wd, "moongate.json5")
        self.policy_path = os.path.join(wd, "policy.lua")
        self.logs = [os.path.join(wd, "gw-a.log"), os.path.join(wd, "gw-b.log")]
        write_atomic(os.path.join(wd, "patterns.lua"), "return {}\n")

    def config(self, variant):
        a = self.args
        t = a.total_ms / 20000.0  # the smoke shortens every deadline alike

        def model(mid):
            win, mx = (2048, 256) if mid == "tiny" else (32768, 1024)
            return {"id": mid, "name": mid, "contextWindow": win, "maxTokens": mx,
                    "cost": {"input": 2000, "output": 4000, "cacheRead": 0, "cacheWrite": 0}}

        def prov(url, api, ids):
            return {"baseUrl": url if api == "anthropic-messages" else url + "/v1", "api": api,
                    "apiKey": "sk-mock", "models": [model(m) for m in ids]}

        gateway = {
            "threads": a.threads,
            "policy": "policy.lua",
            "errorPatterns": "patterns.lua",
            "log": {"path": self.logs[0 if variant == "A" else 1], "content": True,
                    "contentMaxBytes": 512},
            "streamBufferBytes": 4096,
            "keepAliveMs": 700,
            "drainMs": 3000,
            "timeouts": {"connectMs": 2000, "firstTokenMs": int(4000 * t),
                         "idleMs": int(3000 * t), "totalMs": a.total_ms},
            "providers": {"pc": {"timeouts": {"firstTokenMs": int(2500 * t)}}},
            "health": {"cooldownsMs": [1000, 1500, 3000], "failuresBeforeCooldown": 2,
                       "maxRetries": 1, "probeBeforeExpiryMs": 400},
            "compaction": {"enabled": True, "marginTokens": 64,
                           "summarizer": "sm/summ" if variant == "A" else "sm/summstall",
                           "summaryTimeoutMs": 1200, "summaryMaxTokens": 128},
            "keys": [
                {"id": "free", "key": "${MGK_FREE}"},
                {"id": "rpm", "key": "${MGK_RPM}", "rpm": 40 if variant == "A" else 30},
                {"id": "budget", "key": "${MGK_BUDGET}",
                 "budget": {"amount": 2.0, "period": "hour"}},
                {"id": "tpm", "key": "${MGK_TPM}", "tpm": 3000},
                {"id": "anth", "key": "${MGK_ANTH}", "models": ["pa/*", "default"]},
            ],
        }
        if a.max_conn_per_ip:
            gateway["maxConnectionsPerIp"] = a.max_conn_per_ip
        return {
            "models": {"mode": "replace", "providers": {
                "pc": prov(self.mock_url, "openai-completions", CHAT_MODELS),
                "pr": prov(self.mock_url, "openai-responses", RESP_MODELS),
                "pa": prov(self.mock_url, "anthropic-messages", ANTH_MODELS),
                "dn": prov(self.down_url, "openai-completions", ["ok"]),
                "sm": prov(self.mock_url, "openai-completions", ["summ", "summstall"]),
            }},
            "agents": {"defaults": {
                "model": {"primary": "dn/ok", "fallbacks": ["pc/fail-500", "pa/ok", "pr/ok"]},
                "models": {"pa/ok": {"alias": "claude"}, "pr/long": {"alias": "longr"}}}},
            "gateway": gateway,
        }

    def set_valid(self, variant):
        write_atomic(self.policy_path, POLICY_A if variant == "A" else POLICY_B)
        write_atomic(self.config_path, json.dumps(self.config(variant), indent=1))

    def break_config(self):
        write_atomic(self.config_path, CONFIG_BROKEN)

    def break_policy(self):
        write_atomic(self.config_path, json.dumps(self.config("A"), indent=1))
        write_atomic(self.policy_path, POLICY_BROKEN)


# ---------------------------------------------------------------------------------------------
# One request and the check of its answer

MODEL_CHOICES = (["default"] * 6 + ["claude", "longr", "nosuch/model"] +
                 ["pc/" + m for m in CHAT_MODELS] + ["pr/" + m for m in RESP_MODELS] +
                 ["pa/" + m for m in ANTH_MODELS])
KEY_CHOICES = [KEYS["free"]] * 5 + [KEYS["rpm"], KEYS["budget"], KEYS["tpm"], KEYS["anth"],
                                    "k-wrong", None]
BEHAVIOURS = (("normal", 60), ("slow", 12), ("leave_mid", 12), ("leave_fin", 8),
              ("leave_rst", 8))
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
WHOLE_OBJECT = {"chat": ("object", "chat.completion"), "responses": ("object", "response"),
                "messages": ("type", "message")}

# A request's verdict: "ok", "error_status", "error_event" (answers), "left" (the client's own
# doing), "stopped" (after a SIGTERM) and "cut" (over --max-conn-per-ip) are fine; "bad" and
# "hang" fail the run.


class Outcome(Exception):
    def __init__(self, verdict, problem=None):
        super().__init__(verdict)
        self.verdict, self.problem = verdict, problem


def history(tag, size=500, turns=14):
    msgs = [{"role": "user", "content": tag + " first " + "q" * size},
            {"role": "assistant", "content": "a" * size}]
    for i in range(turns):
        msgs += [{"role": "user", "content": "question %d %s" % (i, "x" * size)},
                 {"role": "assistant", "content": "answer %d %s" % (i, "y" * size)}]
    msgs.append({"role": "user", "content": "the last question"})
    return msgs


def request_body(rng, api, model, stream, tag, big):
    """(path, body). big: a history long enough to need compaction on the small models."""
    text = tag + " hello"
    if api == "chat":
        b = {"model": model, "stream": stream,
             "messages": history(tag) if big else [{"role": "user", "content": text}]}
        if stream and rng.random() < 0.5:
            b["stream_options"] = {"include_usage": True}
    elif api == "responses":
        b = {"model": model, "stream": stream,
             "input": [{"role": m["role"], "content": m["content"]} for m in history(tag)]
             if big else text}
    else:
        b = {"model": model, "stream": stream, "max_tokens": 100,
             "messages": history(tag) if big else [{"role": "user", "content": text}]}
    path = PATHS[api]
    if rng.random() < 0.03 and api != "chat":  # a token count instead
        path += "/count_tokens" if api == "messages" else "/input_tokens"
        b.pop("stream", None)
    return path, b


def error_body_problem(api, body):
    """None when body is an error in the client API's format."""
    try:
        j = json.loads(body)
    except ValueError:
        return "error body is not JSON: %r" % body[:200]
    e = j.get("error") if isinstance(j, dict) else None
    if not isinstance(e, dict) or not isinstance(e.get("message"), str) or "type" not in e:
        return "error body without error.type/error.message: %r" % body[:200]
    if api == "messages" and j.get("type") != "error":
        return "Anthropic error body without type=error: %r" % body[:200]
    return None


def sse_events(body):
    """[(event name or None, data)] of a complete text/event-stream body."""
    out = []
    for block in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for ln in block.split("\n"):
            if ln.startswith("event:"):
                name = ln[6:].strip()
            elif ln.startswith("data:"):
                data.append(ln[5:][1:] if ln[5:].startswith(" ") else ln[5:])
        if name is not None or data:
            out.append((name, "\n".join(data)))
    return out


def stream_verdict(api, body):
    """Outcome verdict of a complete 200 event stream: "ok" (its API's clean end, last),
    "error_event" (a well-formed error event, nothing after it but Responses' response.failed);
    raises Outcome("bad") otherwise."""
    events = sse_events(body)
    end = None  # (index, verdict)
    for i, (name, data) in enumerate(events):
        if end is not None:
            if api == "responses" and end[1] == "error_event" and name == "response.failed" \
                    and i == len(events) - 1:
                continue
            raise Outcome("bad", "event %r after the stream's end: %r" % (name, data[:200]))
        if api == "chat" and data == "[DONE]":
            end = (i, "ok")
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            raise Outcome("bad", "event %r data is not JSON: %r" % (name, data[:200]))
        if not isinstance(obj, dict):
            raise Outcome("bad", "event %r data is not an object: %r" % (name, data[:200]))
        if api == "chat":
            if "error" in obj:
                e = obj["error"]
                if not (isinstance(e, dict) and isinstance(e.get("message"), str) and e["message"]):
                    raise Outcome("bad", "error chunk without error.message: %r" % data[:200])
                end = (i, "error_event")
        elif api == "responses":
            if name in ("response.completed", "response.incomplete"):
                end = (i, "ok")
            elif name == "error":
                if not (isinstance(obj.get("message"), str) and obj["message"]):
                    raise Outcome("bad", "error event without message: %r" % data[:200])
                end = (i, "error_event")
            elif name == "response.failed":
                end = (i, "error_event")
        else:
            if name == "message_stop":
                end = (i, "ok")
            elif name == "error":
                e = obj.get("error")
                if not (obj.get("type") == "error" and isinstance(e, dict) and
                        isinstance(e.get("message"), str) and e["message"]):
                    raise Outcome("bad", "error event not in Anthropic's format: %r" % data[:200])
                end = (i, "error_event")
    if end is None:
        last = events[-1] if events else None
        raise Outcome("bad", "the stream ended without its end or an error event (%d events, "
                      "last %r)" % (len(events), last and (last[0], last[1][:120])))
    return end[1]


def whole_verdict(api, path, body):
    try:
        j = json.loads(body)
    except ValueError:
        raise Outcome("bad", "200 body is not JSON: %r" % body[:200])
    if not isinstance(j, dict):
        raise Outcome("bad", "200 body is not an object: %r" % body[:200])
    if path.endswith("_tokens"):
        if not isinstance(j.get("input_tokens"), int):
            raise Outcome("bad", "token count without input_tokens: %r" % body[:200])
        return "ok"
    field, want = WHOLE_OBJECT[api]
    if j.get(field) != want:
        raise Outcome("bad", "200 body is not a %s: %r" % (want, body[:200]))
    return "ok"


class Reader:
    """Reads one HTTP/1.1 answer from a blocking socket against an overall deadline; `slow`
    reads a few bytes at a time with a pause, `leave_after` closes after that many bytes."""

    def __init__(self, sock, deadline, slow=None, leave_after=None):
        self.s, self.deadline = sock, deadline
        self.slow, self.leave_after = slow, leave_after
        self.buf = bytearray()
        self.total = 0

    def more(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Outcome("hang", "no complete answer within the request timeout")
        self.s.settimeout(min(left, 10.0))
        if self.slow:
            time.sleep(self.slow[1])
        try:
            data = self.s.recv(self.slow[0] if self.slow else 65536)
        except socket.timeout:
            return self.more()
        if not data:
            return False
        self.buf += data
        self.total += len(data)
        if self.leave_after is not None and self.total > self.leave_after:
            raise Outcome("left")
        return True

    def until(self, sep):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            if not self.more():
                return None

    def exactly(self, n):
        while len(self.buf) < n:
            if not self.more():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def head(self):
        """(status, headers) or None when the connection closed first."""
        raw = self.until(b"\r\n\r\n")
        if raw is None:
            return None
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise Outcome("bad", "bad status line %r" % lines[0][:80])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return int(m.group(1)), hdrs

    def body(self, hdrs):
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                line = self.until(b"\r\n")
                if line is None:
                    raise Outcome("bad", "chunked body cut after %d bytes" % len(out))
                try:
                    n = int(line.split(b";")[0], 16)
                except ValueError:
                    raise Outcome("bad", "bad chunk size line %r" % line[:40])
                if n == 0:
                    while True:  # trailer
                        t = self.until(b"\r\n")
                        if t is None:
                            raise Outcome("bad", "connection closed inside the trailer")
                        if not t:
                            return bytes(out)
                data = self.exactly(n + 2)
                if data is None:
                    raise Outcome("bad", "chunked body cut inside a chunk")
                out += data[:-2]
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            data = self.exactly(n)
            if data is None:
                raise Outcome("bad", "body cut: %d of %d bytes" % (len(self.buf), n))
            return data
        while self.more():
            pass
        return bytes(self.buf)


class Load:
    """The client threads and what they saw."""

    def __init__(self, args, port, stopping):
        self.args, self.port, self.stopping = args, port, stopping
        self.lock = threading.Lock()
        self.results = []
        self.n = 0
        self.run_id = "%05d" % (os.getpid() % 100000)
        self.t_term = None

    def tag(self):
        with self.lock:
            self.n += 1
            return "CHAOS%s_%06d" % (self.run_id, self.n)

    def unanswered(self):
        """The verdict of a connection closed or reset before any answer: after a SIGTERM, one
        the stopping gateway never took; under --max-conn-per-ip, one over the cap (closed before
        a byte is read, by design); a bad answer otherwise."""
        if self.stopping.is_set():
            return "stopped"
        return "cut" if self.args.max_conn_per_ip else "bad"

    def one(self, rng):
        a = self.args
        t = self.tag()
        api = rng.choice(("chat", "responses", "messages"))
        big = rng.random() < 0.12
        model = rng.choice(("pc/tiny", "pa/tiny", "pc/tiny")) if big else rng.choice(MODEL_CHOICES)
        stream = rng.random() < 0.6
        behaviour = rng.choices([b for b, _ in BEHAVIOURS], [w for _, w in BEHAVIOURS])[0]
        key = rng.choice(KEY_CHOICES)
        path, body = request_body(rng, api, model, stream, t, big)
        if path.endswith("_tokens"):
            stream, behaviour = False, "normal"
        data = json.dumps(body).encode()
        h = ["POST %s HTTP/1.1" % path, "Host: 127.0.0.1", "Content-Type: application/json",
             "Content-Length: %d" % len(data), "Connection: close"]
        if key:
            h.append("x-api-key: " + key if api == "messages" else "Authorization: Bearer " + key)
        if api == "messages":
            h.append("anthropic-version: 2023-06-01")
        r = {"tag": t, "api": api, "model": model, "stream": stream, "behaviour": behaviour,
             "key": key, "path": path, "t0": time.monotonic()}
        s = None
        try:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError as e:
                raise Outcome("stopped" if self.stopping.is_set() else "bad", "connect: %s" % e)
            r["t_connected"] = time.monotonic()
            s.sendall(("\r\n".join(h) + "\r\n\r\n").encode() + data)
            if behaviour == "leave_fin":
                time.sleep(rng.random() * 0.5)
                raise Outcome("left")
            if behaviour == "leave_rst":
                time.sleep(rng.random() * 0.8)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                raise Outcome("left")
            rd = Reader(s, r["t0"] + a.request_timeout,
                        slow=a.slow_read if behaviour == "slow" else None,
                        leave_after=rng.randint(50, 1500) if behaviour == "leave_mid" else None)
            head = rd.head()
            if head is None:
                raise Outcome(self.unanswered(), "connection closed before any answer")
            status, hdrs = head
            r["status"], r["id"] = status, hdrs.get("x-request-id")
            answer = rd.body(hdrs)
            if status == 200 and stream and not path.endswith("_tokens"):
                if "text/event-stream" not in hdrs.get("content-type", ""):
                    raise Outcome("bad", "a stream asked for, %r answered" %
                                  hdrs.get("content-type"))
                raise Outcome(stream_verdict(api, answer))
            if status == 200:
                raise Outcome(whole_verdict(api, path, answer))
            problem = error_body_problem(api, answer)
            if problem:
                raise Outcome("bad", "HTTP %d: %s" % (status, problem))
            try:
                e = json.loads(answer).get("error") or {}
                r["error"] = e.get("code") or e.get("type")
            except (ValueError, AttributeError):
                pass
            raise Outcome("error_status")
        except Outcome as o:
            r["verdict"], r["problem"] = o.verdict, o.problem
        except (ConnectionError, OSError) as e:
            before_head = "status" not in r
            r["verdict"] = self.unanswered() if before_head else "bad"
            r["problem"] = "%s %s" % ("reset before any answer:" if before_head else
                                      "reset mid-answer:", e)
        except Exception as e:  # a bug here must not look like a pass
            r["verdict"], r["problem"] = "bad", "client exception %r" % e
        finally:
            if s is not None:
                s.close()
        r["t1"] = time.monotonic()
        with self.lock:
            self.results.append(r)
        if r["verdict"] in ("bad", "hang"):
            sl.log("BAD %s %s %s %s: %s" % (r["verdict"], r["api"], r["model"], r["behaviour"],
                                           r["problem"]))
        if r["verdict"] in ("stopped", "cut"):
            time.sleep(0.2)

    def client(self, i, t_stop):
        rng = random.Random(self.args.seed * 1000 + i)
        while time.monotonic() < t_stop[0]:
            self.one(rng)
            time.sleep(rng.random() * 0.05)


# ---------------------------------------------------------------------------------------------
# Around the load: reloads, polls

def http_get(port, path, headers=None, timeout=60.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def http_post(port, path, timeout=60.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=b"", headers={"Content-Length": "0"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# What a connection closed over --max-conn-per-ip before any answer raises in http.client.
CUT_ERRORS = (ConnectionError, http.client.RemoteDisconnected)

# The reload cycle: (name, what is written, how the reload is triggered, answer expected).
RELOADS = (("A by file", "A", "watch", None), ("broken config by POST", "bad-config", "post", 400),
           ("B by POST", "B", "post", 200), ("broken policy by file", "bad-policy", "watch", None),
           ("A by POST", "A", "post", 200), ("B by file", "B", "watch", None),
           ("broken policy by POST", "bad-policy", "post", 400), ("SIGHUP", None, "sighup", None))


def reloader(args, world, gw_proc, port, t_stop, stopping, counts, problems):
    k = 0
    while time.monotonic() < t_stop[0] and not stopping.is_set():
        name, what, how, want = RELOADS[k % len(RELOADS)]
        k += 1
        try:
            if what in ("A", "B"):
                world.set_valid(what)
            elif what == "bad-config":
                world.break_config()
            elif what == "bad-policy":
                world.break_policy()
            if how == "post":
                st, body = http_post(port, "/admin/reload")
                result = json.loads(body).get("result") if st == 200 else None
                if st != want or (want == 200 and result != "ok"):
                    problems.append("%s: HTTP %d %r" % (name, st, body[:200]))
            elif how == "sighup":
                gw_proc.send_signal(signal.SIGHUP)
            counts[name] += 1
        except (OSError, ValueError, http.client.HTTPException) as e:
            side_failure(args, e, stopping, counts, problems, name)
        time.sleep(args.reload_every)
    world.set_valid("A")  # leave it serving a valid config


def side_failure(args, e, stopping, counts, problems, what):
    """A reload or a poll that failed: a connection the per-address cap cut is counted as such,
    anything else is a problem, unless the gateway is stopping."""
    if args.max_conn_per_ip and isinstance(e, CUT_ERRORS):
        counts["cut by the per-address cap"] += 1
    elif not stopping.is_set():
        problems.append("%s: %r" % (what, e))


POLLS = ("/health", "/metrics", "/admin/health", "/admin/policy", "/v1/models")


def poller(args, port, t_stop, stopping, counts, problems):
    rng = random.Random(7)
    while time.monotonic() < t_stop[0] and not stopping.is_set():
        path = rng.choice(POLLS)
        h = {"Authorization": "Bearer " + KEYS["free"]}
        if path == "/v1/models" and rng.random() < 0.5:
            h["anthropic-version"] = "2023-06-01"
        try:
            st, body = http_get(port, path, h)
            if st != 200:
                raise ValueError("HTTP %d %r" % (st, body[:200]))
            if path != "/metrics":
                json.loads(body)
            counts[path] += 1
        except (OSError, ValueError, http.client.HTTPException) as e:
            side_failure(args, e, stopping, counts, problems, "GET " + path)
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Sanitizer logs, the access log, metrics

SANITIZERS = ("TSAN_OPTIONS", "ASAN_OPTIONS", "UBSAN_OPTIONS")


def sanitizer_env(san_dir):
    """The environment for moongate: TSAN/ASAN/UBSAN_OPTIONS from ours, each with the same
    log_path: the first one any of them gives, else <san_dir>/san. One path for all because a
    runtime reads its neighbours' options too and the last log_path read wins (a TSan binary
    wrote its report to UBSAN_OPTIONS' path). TSan also gets halt_on_error=0 unless told (every
    race is reported and the run goes on; the exit status is then 66). Returns (env, log_path)."""
    env = dict(os.environ)
    prefix = None
    for var in SANITIZERS:
        m = re.search(r"(?:^|[\s:,])log_path=([^\s:,]+)", env.get(var, ""))
        if m and prefix is None:
            prefix = m.group(1)
    prefix = os.path.abspath(prefix or os.path.join(san_dir, "san"))
    for var in SANITIZERS:
        opts = re.sub(r"(?:^|(?<=[\s:,]))log_path=[^\s:,]+", "", env.get(var, "")).strip(" :,")
        opts = ("%s log_path=%s" % (opts, prefix)).strip()
        if var == "TSAN_OPTIONS" and "halt_on_error" not in opts:
            opts += " halt_on_error=0"
        env[var] = opts
    env.update({"MGK_FREE": KEYS["free"], "MGK_RPM": KEYS["rpm"], "MGK_BUDGET": KEYS["budget"],
                "MGK_TPM": KEYS["tpm"], "MGK_ANTH": KEYS["anth"]})
    return env, prefix


def sanitizer_reports(prefix):
    """Non-empty report files the sanitizers wrote (<log_path>.<pid>)."""
    d, base = os.path.split(prefix)
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    return [os.path.join(d, n) for n in names if n.startswith(base + ".") and
            os.path.isfile(os.path.join(d, n)) and os.path.getsize(os.path.join(d, n)) > 0]


def json_lines(paths):
    out = []
    for p in paths:
        for ln in sl.read_text(p).splitlines():
            if ln.startswith("{"):
                try:
                    out.append(json.loads(ln))
                except ValueError:
                    pass
    return out


def requests_total(metrics):
    return sum(float(v) for v in re.findall(r"^moongate_requests_total\{[^}]*\} (\S+)$",
                                            metrics, re.M))


def exit_text(status):
    if isinstance(status, int) and status < 0:
        try:
            return "killed by %s" % signal.Signals(-status).name
        except ValueError:
            return "killed by signal %d" % -status
    return "%s%s" % (status, " (ThreadSanitizer reported)" if status == 66 else "")


def wait_idle(port, timeout):
    """/health once in_flight and upstream_active are 0 (or the last one seen)."""
    deadline = time.monotonic() + timeout
    h = {}
    while time.monotonic() < deadline:
        try:
            st, body = http_get(port, "/health", timeout=10)
            h = json.loads(body) if st == 200 else {}
        except (OSError, ValueError, http.client.HTTPException):
            h = {}
        if h.get("in_flight") == 0 and h.get("upstream_active") == 0:
            return h
        time.sleep(0.2)
    return h


# ---------------------------------------------------------------------------------------------

def run(args, procs):
    wd = procs.workdir
    san_dir = os.path.abspath(args.sanitizer_dir or os.path.join(wd, "sanitizer"))
    os.makedirs(san_dir, exist_ok=True)
    env, san_prefix = sanitizer_env(san_dir)
    mock = sl.PyMock(procs, "mock", behavior=MOCK_DEFAULT, models=MOCK_MODELS)
    down_url = "http://127.0.0.1:%d" % free_port()  # nobody listens: connection refused
    world = World(args, wd, "http://127.0.0.1:%d" % mock.port, down_url)
    world.set_valid("A")

    gw = procs.spawn("moongate", [args.moongate, "serve", "--config", world.config_path,
                                  "--listen", "127.0.0.1:0"], env=env)
    m = sl.wait_for_file(world.logs[0], r'"listening".*?"addr":"[^"]*:(\d+)"', args.start_timeout,
                         gw)
    if not m:
        return {"moongate started": False}, {
            "exit_status": gw.poll(), "output": sl.read_text(gw.log_path, 3000),
            "sanitizer_reports": sanitizer_reports(san_prefix)}
    port = int(m.group(1))
    sl.log("mock on %d, refused provider %s, moongate pid %d on %d, %d serving threads" % (
        mock.port, down_url, gw.pid, port, args.threads))

    stopping = threading.Event()
    t_start = time.monotonic()
    t_stop = [t_start + args.duration]  # a list: the SIGTERM under load moves it
    load = Load(args, port, stopping)
    reload_counts, reload_problems = collections.Counter(), []
    poll_counts, poll_problems = collections.Counter(), []
    rss = []
    threads = [threading.Thread(target=load.client, args=(i, t_stop), daemon=True)
               for i in range(args.clients)]
    threads.append(threading.Thread(target=poller, daemon=True,
                                    args=(args, port, t_stop, stopping, poll_counts,
                                          poll_problems)))
    if args.reload_every > 0:
        threads.append(threading.Thread(target=reloader, daemon=True, args=(
            args, world, gw, port, t_stop, stopping, reload_counts, reload_problems)))
    for t in threads:
        t.start()

    term_status = None
    next_log = t_start + 10
    while time.monotonic() < t_stop[0]:
        time.sleep(0.25)
        now = time.monotonic()
        if now >= next_log:
            next_log += 10
            kib = sl.proc_rss_kib(gw.pid)
            rss.append((round(now - t_start), kib, sl.proc_fds(gw.pid)))
            with load.lock:
                n = len(load.results)
                bad = sum(1 for r in load.results if r["verdict"] in ("bad", "hang"))
            sl.log("%d requests, %d bad, %d reloads; RSS %.1f MiB" % (
                n, bad, sum(reload_counts.values()), (kib or 0) / 1024.0))
        if gw.poll() is not None:
            sl.log("moongate exited during the load: %s" % exit_text(gw.returncode))
            t_stop[0] = time.monotonic()  # the clients stop too
            break
        if args.sigterm_at and now - t_start >= args.sigterm_at and term_status is None:
            sl.log("SIGTERM under load")
            stopping.set()
            load.t_term = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            try:
                term_status = gw.wait(args.stop_timeout)
            except Exception:
                term_status = "no exit within %.0f s" % args.stop_timeout
            t_stop[0] = time.monotonic()
    t_load_end = time.monotonic()

    # The clients finish what they started (each request has its own deadline).
    join_by = time.monotonic() + args.request_timeout + 15
    for t in threads:
        t.join(max(0.1, join_by - time.monotonic()))
    stuck = sum(1 for t in threads if t.is_alive())
    with load.lock:
        results = list(load.results)

    health_end, metrics = {}, ""
    if gw.poll() is None and not stopping.is_set():
        time.sleep(1.0)  # the reloader's last file change settles
        health_end = wait_idle(port, 15)
        try:
            metrics = http_get(port, "/metrics")[1].decode()
        except (OSError, http.client.HTTPException):
            metrics = ""
    exit_problem = None
    if term_status is None:
        if gw.poll() is not None:
            exit_problem = "moongate exited by itself: %s" % exit_text(gw.returncode)
        else:
            stopping.set()
            gw.send_signal(signal.SIGTERM)
            try:
                term_status = gw.wait(args.stop_timeout)
            except Exception:
                term_status = "no exit within %.0f s of SIGTERM" % args.stop_timeout
                gw.kill()
                gw.wait()
    if exit_problem is None and term_status != 0:
        exit_problem = "exit status after SIGTERM: %s" % exit_text(term_status)
    mock.proc.kill()
    mock.proc.wait()

    # The outcome
    verdicts = collections.Counter(r["verdict"] for r in results)
    bad = [r for r in results if r["verdict"] in ("bad", "hang") or
           (r["verdict"] == "stopped" and not stopping.is_set())]
    reports = sanitizer_reports(san_prefix)
    output = sl.read_text(gw.log_path)
    markers = [mk for mk in sl.CRASH_MARKERS if mk in output]
    lines = json_lines(world.logs + [gw.log_path])
    access = [ln for ln in lines if ln.get("msg") == "access"]
    api_access = [ln for ln in access if ln.get("method") == "POST" and
                  str(ln.get("path", "")).startswith("/v1/")]
    by_id = collections.defaultdict(list)
    for ln in access:
        by_id[ln.get("id")].append(ln)
    answered = [r for r in results if r.get("id")]
    unlogged = [r for r in answered if len(by_id.get(r["id"], ())) != 1]
    wrong_status = [r for r in answered if len(by_id.get(r["id"], ())) == 1 and
                    by_id[r["id"]][0].get("status") != r["status"]]
    dup_ids = [i for i, v in by_id.items() if len(v) > 1]
    metric_total = requests_total(metrics) if metrics else None
    per_thread = health_end.get("requests_by_thread")

    checks = {
        "moongate started": True,
        "every request answered well-formed (no bad answer)": results != [] and not bad,
        "no hang (every client finished)": stuck == 0 and verdicts.get("hang", 0) == 0,
        "every answered request has one access line with its status":
            not unlogged and not wrong_status and not dup_ids,
        "reloads answered as expected": not reload_problems,
        "every poll answered 200": not poll_problems,
        "no sanitizer report": not reports,
        "nothing that looks like a crash in moongate's output": not markers,
        "exit status 0 after SIGTERM": exit_problem is None,
        "the mix ran (some ok answers and some errors)":
            verdicts.get("ok", 0) > 0 and verdicts.get("error_status", 0) > 0,
    }
    if not args.sigterm_at:
        checks["API access lines = sum of moongate_requests_total"] = \
            metric_total is not None and metric_total == len(api_access)
        checks["/health idle at the end (in_flight 0, upstream_active 0)"] = \
            health_end.get("in_flight") == 0 and health_end.get("upstream_active") == 0
        checks["every serving thread served requests"] = \
            isinstance(per_thread, list) and len(per_thread) == args.threads and \
            all(n > 0 for n in per_thread)

    info = {
        "requests": len(results),
        "bad": len(bad),
        "verdicts": dict(verdicts.most_common()),
        "per_api": dict(collections.Counter(r["api"] for r in results)),
        "behaviours": dict(collections.Counter(r["behaviour"] for r in results)),
        "statuses": {"%s %s" % (k[0], k[1] or ""): v for k, v in collections.Counter(
            (r.get("status"), r.get("error")) for r in results if "status" in r).most_common(20)},
        "bad_examples": [{k: r.get(k) for k in ("verdict", "problem", "api", "model", "behaviour",
                                                 "key", "path", "status", "id")} for r in bad[:8]],
        "access_lines": len(access), "api_access_lines": len(api_access),
        "metrics_requests_total": metric_total,
        "answered_without_one_access_line": [r["id"] for r in unlogged[:5]] + (
            ["... %d" % len(unlogged)] if len(unlogged) > 5 else []),
        "access_status_differs": [(r["id"], r["status"], by_id[r["id"]][0].get("status"))
                                  for r in wrong_status[:5]],
        "duplicate_access_ids": dup_ids[:5],
        "reloads": dict(reload_counts), "reload_problems": reload_problems[:5],
        "polls": dict(poll_counts), "poll_problems": poll_problems[:5],
        "health_end": health_end,
        "rss_kib_fds_every_10s": rss,
        "load_s": round(t_load_end - t_start, 1),
        "sigterm": "under load at %.0f s" % args.sigterm_at if args.sigterm_at else "at the end",
        "exit": term_status if exit_problem is None else exit_problem,
        "stuck_threads": stuck,
        "sanitizer_reports": reports,
        "crash_markers": markers,
    }
    if reports:
        sl.log("sanitizer report %s:\n%s" % (reports[0], sl.read_text(reports[0])[:4000]))
    with open(os.path.join(wd, "results.json"), "w") as f:
        json.dump(results, f)
    return checks, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moongate", default=os.environ.get("MOONGATE_BIN") or
                    os.path.join(sl.REPO, "build-tsan", "moongate"), help="the moongate binary")
    ap.add_argument("--threads", type=int, default=2, help="gateway.threads (serving threads)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--clients", type=int, default=24, help="client threads")
    ap.add_argument("--reload-every", type=float, default=0.5,
                    help="seconds between reload actions (0: none)")
    ap.add_argument("--sigterm-at", type=float, default=0.0,
                    help="SIGTERM this many seconds into the load, under load (0: after it)")
    ap.add_argument("--max-conn-per-ip", type=int, default=0,
                    help="gateway.maxConnectionsPerIp (0: the default); low values cut clients")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--request-timeout", type=float, default=90.0,
                    help="a request not complete after this long is a hang")
    ap.add_argument("--sanitizer-dir", default=None,
                    help="where the sanitizers write their reports (san.<pid>) when no "
                    "*SAN_OPTIONS gives a log_path; default: <work directory>/sanitizer")
    ap.add_argument("--smoke", action="store_true",
                    help="10 s, 8 clients, shorter gateway deadlines (for ctest)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs, "
                    "results.json); kept anyway when the run fails")
    args = ap.parse_args()
    args.total_ms = 20000
    args.slow_read = (64, 0.04)  # bytes per read, seconds between reads
    if args.smoke:
        args.duration = min(args.duration, 10.0)
        args.clients = min(args.clients, 8)
        args.total_ms = 4000
        args.slow_read = (256, 0.01)
    args.moongate = os.path.abspath(args.moongate)
    if not os.access(args.moongate, os.X_OK):
        print("chaos: no moongate binary at %s (scripts/tsan.sh builds build-tsan/moongate)" %
              args.moongate, file=sys.stderr)
        return 2
    with open(args.moongate, "rb") as f:
        image = f.read()
    kind = ("ThreadSanitizer" if b"__tsan_init" in image else
            "AddressSanitizer" if b"__asan_init" in image else "no sanitizer")
    # A sanitizer build starts, serves and stops several times slower.
    slow = kind != "no sanitizer"
    args.start_timeout = 60.0 if slow else 20.0
    args.stop_timeout = 60.0 if slow else 30.0

    wd = sl.workdir("chaos")
    procs = sl.Procs(wd)
    verdict = {"ok": False}

    def cleanup():
        procs.kill_all()
        if args.keep or not verdict["ok"]:
            sl.log("work directory kept: %s" % wd)
        else:
            shutil.rmtree(wd, ignore_errors=True)
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: sys.exit(130))
    args.cpu_start = sl.cpu_times()
    sl.log("machine: %s" % sl.machine_line())
    sl.log("chaos: %s (%s), %d serving threads, %d clients for %.0f s, reload every %s s, "
           "SIGTERM %s; work directory %s" % (
               args.moongate, kind, args.threads, args.clients, args.duration,
               args.reload_every or "never",
               "at %.0f s" % args.sigterm_at if args.sigterm_at else "at the end", wd))
    checks, info = run(args, procs)
    info = dict(info, binary=args.moongate, sanitizer=kind, threads=args.threads,
                clients=args.clients, work_directory=wd)
    rc = sl.report(args, "chaos", checks, info, requests=info.get("requests"),
                   threads=args.threads, bad=info.get("bad"),
                   sanitizer_reports=len(info.get("sanitizer_reports") or []))
    verdict["ok"] = rc == 0
    return rc


if __name__ == "__main__":
    sys.exit(main())

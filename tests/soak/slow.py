#!/usr/bin/env python3
"""Slow clients: slowloris (slow headers), slow bodies and slow readers against moongate while a
normal client keeps sending requests and measuring their latency.

Phases, one after another (seconds: --phase, default 60; --smoke 2):
  baseline      the normal client alone (--baseline seconds, default 20)
  slow-headers  `slowhttptest -H`: --conns connections (default 1000) that send their request
                head a few bytes every --interval seconds and never finish it
  slow-body     `slowhttptest -B`: complete heads announcing an 8 KiB body that arrives a few
                bytes every --interval seconds
  slow-read     `slowhttptest -X`: requests GET /v1/models (pipelined x3) and reads the answers
                through a 512-1024 byte window, 32 bytes at a time
  slow-streams  --slow-streams (default 50) streaming requests for 400 MB answers whose clients
                read 1 KiB a second through a 4 KiB receive buffer (moongate must pause the
                upstream, gateway.streamBufferBytes, not buffer the answer), for
                --streams-phase seconds (default 90)
  after         the normal client alone again
Without slowhttptest installed (apt-get install slowhttptest) the first two phases use small
built-in attackers that do the same and slow-read is skipped; a full run insists on the tool
unless --builtin is given.

The normal client alternates a non-streamed chat request (new connection) and a short stream
(5 events 20 ms apart), 10 a second; latency = the whole answer for the first, the first content
event for the second. Pass when, in every phase, every normal request succeeds and its p99 stays
under --p99-ms (default 250 ms) and its maximum under --max-ms (default 1000 ms) (x4 for an
AddressSanitizer build; --smoke: 1000 ms and 3000 ms), moongate's RSS during slow-streams stays
under its RSS at the start of that phase + slow streams x (streamBufferBytes + 512 KiB) (the
answers are 400 MB each), and moongate never exits and stops cleanly. For each attack phase
it also reports what the attacker saw (slowhttptest's connected/closed counts and its own
"service available" probe), how many client connections moongate held, and what moongate logged
(request head timeouts, 408s).
"""

import asyncio
import csv
import json
import os
import shutil
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib as sl  # noqa: E402

STREAM_BUFFER = 262144  # gateway.streamBufferBytes default
BIG_EVENTS = 100000     # x 4000 bytes: a 400 MB answer, which no slow reader finishes


# ---------------------------------------------------------------------------------------------
# Built-in attackers (used when slowhttptest is missing, and for slow streams)

async def _raw_conn(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return s


class Attack:
    """Counts what a built-in attacker saw: connected, closed by the server, errors."""

    def __init__(self):
        self.connected = self.closed = self.errors = 0
        self.bytes_read = 0


async def _sleep_unless(stop, seconds):
    """Sleeps `seconds`, or less if stop is set meanwhile; True when stop is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


async def _attackers(port, n, st, talk, rcvbuf=None):
    """n connections at once, each running talk(loop, sock) and closed when it returns; counts in
    st the connections made (connected), refused (errors) and broken by the server (closed: an
    OSError out of talk)."""
    async def one():
        loop = asyncio.get_running_loop()
        try:
            s = await _raw_conn(port, rcvbuf)
        except OSError:
            st.errors += 1
            return
        st.connected += 1
        try:
            await talk(loop, s)
        except OSError:
            st.closed += 1
        finally:
            s.close()
    await asyncio.gather(*(one() for _ in range(n)))


async def _trickle(port, n, interval, stop, st, head, piece):
    """n connections that send head, then piece(k) every interval seconds (k = 0, 1, ...) until
    stop is set."""
    async def talk(loop, s):
        await loop.sock_sendall(s, head)
        k = 0
        while not await _sleep_unless(stop, interval):
            await loop.sock_sendall(s, piece(k))
            k += 1
    await _attackers(port, n, st, talk)


async def slow_headers(port, n, interval, stop, st):
    """A request head that never ends: one more header line every interval seconds."""
    await _trickle(port, n, interval, stop, st,
                   b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n",
                   lambda k: b"X-Slow-%d: %d\r\n" % (k, k))


async def slow_body(port, n, interval, stop, st):
    """A whole head announcing 8 KiB of body, then a byte of it every interval seconds."""
    await _trickle(port, n, interval, stop, st,
                   b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 8192\r\n\r\n",
                   lambda k: b" ")


async def slow_streams(port, n, stop, st):
    """Streams of a big answer read 1 KiB a second through a 4 KiB receive buffer."""
    body = json.dumps({"model": "big/m", "stream": True,
                       "messages": [{"role": "user", "content": "a long answer please"}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body

    async def talk(loop, s):
        await loop.sock_sendall(s, req)
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 1024), 1.0)
            except asyncio.TimeoutError:
                continue
            if not data:
                st.closed += 1
                return
            st.bytes_read += len(data)
            await _sleep_unless(stop, 1.0)
    await _attackers(port, n, st, talk, rcvbuf=4096)


# ---------------------------------------------------------------------------------------------

def slowhttptest_argv(kind, port, args, prefix):
    base = ["slowhttptest", "-c", str(args.conns), "-r", str(args.rate), "-p", "3",
            "-l", str(int(args.phase)), "-g", "-o", prefix]
    url = "http://127.0.0.1:%d" % port
    if kind == "slow-headers":
        return base + ["-H", "-i", str(args.interval), "-x", "24", "-t", "POST", "-u",
                       url + "/v1/chat/completions"]
    if kind == "slow-body":
        return base + ["-B", "-i", str(args.interval), "-x", "10", "-s", "8192", "-t", "POST",
                       "-u", url + "/v1/chat/completions"]
    return base + ["-X", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "3", "-u",
                   url + "/v1/models"]


def read_csv(path):
    """slowhttptest's CSV: Seconds,Closed,Pending,Connected,Service Available (0 = down)."""
    rows = []
    try:
        with open(path) as f:
            for row in csv.DictReader(f):
                try:
                    rows.append({k.strip(): int(v) for k, v in row.items()})
                except (ValueError, AttributeError):
                    pass
    except OSError:
        pass
    return rows


async def normal_client(port, stop, out, phase_ref):
    """10 requests a second, alternating a non-streamed request and a short stream."""
    k = 0
    while not stop.is_set():
        t0 = time.monotonic()
        phase = phase_ref[0]
        if k % 2 == 0:
            timing = {}
            try:
                st, _, body = await sl.chat_request(port, timeout=30, timing=timing)
                ok = st == 200 and b"chat.completion" in body
                detail = "" if ok else "HTTP %d %r" % (st, body[:200])
            except (OSError, asyncio.TimeoutError, sl.HttpError) as e:
                ok, detail = False, repr(e)
            lat = time.monotonic() - t0
            out.append((phase, "whole", ok, lat, detail, timing.get("connect")))
        else:
            r = await sl.run_stream("127.0.0.1", port, "chat", 10 ** 6 + k, 5, 32, timeout=30)
            lat = (r.t_first - r.t_start) if r.t_first else time.monotonic() - t0
            out.append((phase, "stream", r.ok, lat, "" if r.ok else "%s %s" % (r.kind, r.detail),
                        None))
        k += 1
        if not out[-1][2]:
            sl.log("normal request failed in %s: %s" % (phase, out[-1][4]))
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


async def run(args, procs):
    fast = sl.CMock(procs, args.mock, "mock-fast", 5, 20, 32)
    big = sl.CMock(procs, args.mock, "mock-big", BIG_EVENTS, 0, 4000)
    gw = sl.Gateway(procs, args.moongate, sl.config(
        {"fast": sl.provider(fast.url), "big": sl.provider(big.url)}, "fast/m"))
    sl.log("moongate pid %d on %d" % (gw.pid, gw.port))
    have_tool = shutil.which("slowhttptest") is not None
    use_tool = have_tool and not args.builtin
    if not use_tool:
        sl.log("slowhttptest %s: built-in slow-header and slow-body attackers; slow-read skipped"
               % ("not used (--builtin)" if have_tool else "is not installed"))

    await sl.http_request("127.0.0.1", gw.port, "GET", "/health")
    await asyncio.sleep(0.3)
    idle_rss = sl.proc_rss_kib(gw.pid)
    phase_ref = ["baseline"]
    normal = []
    stop_normal = asyncio.Event()
    nc = asyncio.get_running_loop().create_task(normal_client(gw.port, stop_normal, normal,
                                                              phase_ref))
    phases = [("baseline", args.baseline), ("slow-headers", args.phase),
              ("slow-body", args.phase)]
    if use_tool:
        phases.append(("slow-read", args.phase))
    phases += [("slow-streams", args.streams_phase), ("after", args.after)]
    if args.only:
        keep = set(args.only.split(","))
        phases = [p for p in phases if p[0] in keep or p[0] in ("baseline", "after")]
    report = {}
    for name, secs in phases:
        phase_ref[0] = name
        t0 = time.monotonic()
        rep = {"seconds": secs}
        samples = []
        stop = asyncio.Event()
        st = Attack()
        task = proc = None
        log_mark = len(sl.read_text(gw.log_path))
        tcp0 = sl.tcp_counters()
        rss0 = sl.proc_rss_kib(gw.pid) or 0
        prefix = os.path.join(procs.workdir, "slowhttptest-" + name)
        if name in ("slow-headers", "slow-body", "slow-read") and use_tool:
            proc = procs.spawn("slowhttptest-" + name, slowhttptest_argv(name, gw.port, args,
                                                                         prefix))
        elif name == "slow-headers":
            task = asyncio.get_running_loop().create_task(
                slow_headers(gw.port, args.conns, args.interval, stop, st))
        elif name == "slow-body":
            task = asyncio.get_running_loop().create_task(
                slow_body(gw.port, args.conns, args.interval, stop, st))
        elif name == "slow-streams":
            task = asyncio.get_running_loop().create_task(
                slow_streams(gw.port, args.slow_streams, stop, st))
        sl.log("phase %s (%.0f s)" % (name, secs))
        while time.monotonic() - t0 < secs:
            await asyncio.sleep(1.0 if secs >= 10 else 0.25)
            socks = sl.proc_sockets(gw.pid, gw.port) or {}
            samples.append((time.monotonic() - t0, sl.proc_rss_kib(gw.pid) or 0,
                            socks.get("clients", 0), socks.get("outbound", 0)))
            if not gw.alive():
                break
        stop.set()
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                    None, proc.wait), 15)
            except asyncio.TimeoutError:
                proc.kill()
                proc.wait()
            rows = read_csv(prefix + ".csv")
            if rows:
                rep["slowhttptest"] = {
                    "max_connected": max(r.get("Connected", 0) for r in rows),
                    "connected_at_end": rows[-1].get("Connected"),
                    "closed_at_end": rows[-1].get("Closed"),
                    "pending_max": max(r.get("Pending", 0) for r in rows),
                    "service_available_seconds": "%d of %d" % (
                        sum(1 for r in rows if r.get("Service Available", 0) > 0), len(rows)),
                }
            out = sl.read_text(proc.log_path)
            ex = [ln.strip() for ln in out.splitlines() if "Exit status" in ln]
            if ex:
                rep["slowhttptest"] = dict(rep.get("slowhttptest", {}),
                                           exit=ex[-1].split(":", 1)[-1].strip()
                                           .replace("\x1b[1;36m", "").replace("\x1b[0m", ""))
        if task is not None:
            try:
                await asyncio.wait_for(task, 15)
            except asyncio.TimeoutError:
                task.cancel()
            rep["attacker"] = {"connected": st.connected, "closed_by_server": st.closed,
                               "connect_errors": st.errors}
            if name == "slow-streams":
                rep["attacker"]["bytes_read"] = st.bytes_read
        new_log = sl.read_text(gw.log_path)[log_mark:]
        rep["moongate"] = {
            "client_connections_max": max((s[2] for s in samples), default=None),
            "client_connections_at_end": samples[-1][2] if samples else None,
            "upstream_connections_max": max((s[3] for s in samples), default=None),
            "rss_mib_at_start": round(rss0 / 1024.0, 1),
            "rss_mib_max": round(max((s[1] for s in samples), default=0) / 1024.0, 1),
            "head_timeout_logs": new_log.count('"request head timeout"'),
            "access_408": new_log.count('"status":408'),
            "access_lines": new_log.count('"msg":"access"'),
            "warnings": new_log.count('"level":"warn"'),
            "errors": new_log.count('"level":"error"'),
        }
        tcp1 = sl.tcp_counters()
        rep["machine_tcp"] = {k: tcp1[k] - tcp0.get(k, 0) for k in tcp1}
        mine = [x for x in normal if x[0] == name]
        lat = [x[3] for x in mine]
        conn = [x[5] for x in mine if x[5] is not None]
        rep["normal"] = {
            "requests": len(mine), "failed": sum(1 for x in mine if not x[2]),
            "p50_ms": sl.ms(sl.pct(lat, 50)), "p99_ms": sl.ms(sl.pct(lat, 99)),
            "max_ms": sl.ms(max(lat) if lat else None),
            "whole_p99_ms": sl.ms(sl.pct([x[3] for x in mine if x[1] == "whole"], 99)),
            "stream_ttft_p99_ms": sl.ms(sl.pct([x[3] for x in mine if x[1] == "stream"], 99)),
            "connect_max_ms": sl.ms(max(conn) if conn else None),
        }
        rep["_lat"] = lat
        rep["_fail"] = [x[4] for x in mine if not x[2]][:3]
        if name == "slow-streams":
            rep["_rss_max_kib"] = max((s[1] for s in samples), default=0)
            rep["_rss_start_kib"] = rss0
        report[name] = rep
        sl.log("  %s: normal %s" % (name, json.dumps(rep["normal"])))
        # let the attackers' connections go before the next phase (how long moongate takes to
        # let go of connections whose client has closed them is worth knowing too)
        t_gone = time.monotonic()
        t_wait = t_gone + 10
        while True:
            socks = sl.proc_sockets(gw.pid, gw.port) or {}
            if socks.get("clients", 0) <= 2:
                rep["moongate"]["closed_all_within_s"] = round(time.monotonic() - t_gone, 1)
                break
            if time.monotonic() >= t_wait:
                rep["moongate"]["still_open_10s_after_the_attack"] = socks.get("clients")
                break
            await asyncio.sleep(0.2)
        if not gw.alive():
            break
    stop_normal.set()
    await nc
    alive = gw.alive()
    problems = gw.stop()

    factor = 4.0 if args.sanitized else 1.0
    checks = {}
    for name, rep in report.items():
        lat = rep.pop("_lat")
        fails = rep.pop("_fail")
        p99, mx = sl.pct(lat, 99), (max(lat) if lat else None)
        checks["%s: every normal request served" % name] = rep["normal"]["failed"] == 0 and \
            rep["normal"]["requests"] > 0
        checks["%s: normal p99 < %.0f ms, max < %.0f ms" % (name, args.p99_ms * factor,
                                                             args.max_ms * factor)] = \
            p99 is not None and p99 * 1000 < args.p99_ms * factor and \
            mx * 1000 < args.max_ms * factor
        if fails:
            rep["normal"]["first_failures"] = fails
    if "slow-streams" in report:
        # From the RSS at the start of the phase: the earlier phases' 1,000 connections leave
        # the heap larger than at idle (glibc keeps what was freed), which is not this phase's.
        start = report["slow-streams"].pop("_rss_start_kib")
        bound = start + args.slow_streams * (STREAM_BUFFER + 524288) / 1024.0
        got = report["slow-streams"].pop("_rss_max_kib")
        checks["slow-streams: RSS < RSS at the phase's start + %d x (streamBufferBytes + "
               "512 KiB) = %.0f MiB (answers of %d MB each)" % (
                   args.slow_streams, bound / 1024.0, BIG_EVENTS * 4000 // 10 ** 6)] = \
            got < bound or args.sanitized
        # What moongate wrote to each slow client's socket (the kernel's send buffer holds most
        # of it: up to net.ipv4.tcp_wmem's maximum per connection) against what the client read.
        relayed, lasted = [], []
        for a in gw.access_lines():
            if a.get("served") == "big/m":
                relayed += [x.get("relayed_bytes") or 0 for x in a.get("attempts") or []
                            if x.get("model") == "big/m"]
                lasted.append(a.get("total_ms") or 0)
        # A stream that ended well before the phase did was closed by moongate, not the client
        # (which reads until the phase ends); the access line says client_aborted either way.
        report["slow-streams"]["stream_ms_min_max"] = [min(lasted, default=None),
                                                       max(lasted, default=None)]
        report["slow-streams"]["ended_before_the_phase"] = sum(
            1 for t in lasted if t < (args.streams_phase - 2) * 1000)
        try:
            with open("/proc/sys/net/ipv4/tcp_wmem") as f:
                wmem = f.read().split()
        except OSError:
            wmem = []
        report["slow-streams"]["relayed_bytes_per_stream_min_max"] = [min(relayed, default=None),
                                                                      max(relayed, default=None)]
        report["slow-streams"]["read_bytes_per_stream"] = \
            report["slow-streams"]["attacker"]["bytes_read"] // max(1, args.slow_streams)
        report["slow-streams"]["tcp_wmem"] = " ".join(wmem)
    checks["moongate alive throughout, clean stop"] = alive and not problems
    info = {"phases": report, "idle_rss_mib": round(idle_rss / 1024.0, 1),
            "slowhttptest": "used" if use_tool else "not used",
            "stop_problems": problems}
    return checks, info


def main():
    ap = sl.arg_parser(__doc__)
    ap.add_argument("--phase", type=float, default=60.0, help="seconds per attack phase")
    ap.add_argument("--baseline", type=float, default=20.0)
    ap.add_argument("--after", type=float, default=10.0)
    ap.add_argument("--conns", type=int, default=1000, help="attacker connections")
    ap.add_argument("--rate", type=int, default=200, help="attacker connections per second")
    ap.add_argument("--interval", type=int, default=10, help="seconds between an attacker's bytes")
    ap.add_argument("--slow-streams", type=int, default=50)
    ap.add_argument("--streams-phase", type=float, default=90.0,
                    help="seconds of the slow-streams phase (default 90: longer than the 60 s "
                    "after which a connection moongate cannot write to is closed)")
    ap.add_argument("--p99-ms", type=float, default=250.0)
    ap.add_argument("--max-ms", type=float, default=1000.0)
    ap.add_argument("--only", default="",
                    help="comma-separated attack phases to run (baseline and after always run)")
    ap.add_argument("--builtin", action="store_true",
                    help="built-in attackers even when slowhttptest is installed")
    args = ap.parse_args()
    if args.smoke:
        args.phase, args.baseline, args.after, args.streams_phase = 2.0, 2.0, 1.0, 2.0
        args.conns, args.rate, args.interval, args.slow_streams = 200, 200, 1, 20
        # A few dozen samples per phase on a machine that runs the rest of the suite meanwhile:
        # the smoke only catches stalls (a blocked loop shows as seconds, or as failures).
        args.p99_ms, args.max_ms = max(args.p99_ms, 1000.0), max(args.max_ms, 3000.0)
    elif shutil.which("slowhttptest") is None and not args.builtin:
        print("slow.py: slowhttptest is not installed (apt-get install -y slowhttptest); "
              "--builtin runs the built-in attackers instead", file=sys.stderr)
        return 2
    procs = sl.setup(args, "slow")
    checks, info = asyncio.run(run(args, procs))
    phases = info.pop("phases")
    return sl.report(args, "slow", checks, info, phases=phases)


if __name__ == "__main__":
    sys.exit(main())

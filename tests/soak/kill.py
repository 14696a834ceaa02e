#!/usr/bin/env python3
"""Kill: the upstream serving the load is SIGKILLed mid-stream, again and again, while
--streams concurrent checked streams run through moongate (default 200 for 120 s, a kill every
15 s, restarted 5 s later on the same port).

Upstreams: A (primary) and B (fallback), both bench/mock_upstream.c with seeded content; only A is
ever killed. health.cooldownsMs is short (1 s, 2 s, 4 s; --smoke 1 s each, the minimum) so A is
tried again soon after it comes back. Workers mix the three client APIs as in soak.py. Pass when:
  - every stream either completed exactly ("ok") or ended with a well-formed error event in its
    API's format after exact content ("error_event"): never a clean end with content missing,
    never a cut body, a corrupt event, a non-200 status or a hang;
  - every stream that A was serving when A died ended with an error event, within
    --error-within seconds of the kill (default 5), and only those did;
  - every kill hit at least one stream mid-stream;
  - streams started while A was down were all served (by B), and A serves again after its
    restart (within 15 s);
  - moongate never exits, and stops cleanly with nothing in its log that looks like a crash.
"""

import asyncio
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib as sl  # noqa: E402


async def run(args, procs):
    a = sl.CMock(procs, args.mock, "mock-a", args.events, args.pacing_ms, args.event_bytes)
    b = sl.CMock(procs, args.mock, "mock-b", args.events, args.pacing_ms, args.event_bytes)
    cfg = sl.config({"a": sl.provider(a.url), "b": sl.provider(b.url)}, "a/m", ["b/m"],
                    gateway={"health": {"cooldownsMs": args.cooldowns}})
    gw = sl.Gateway(procs, args.moongate, cfg)
    sl.log("A on %d, B on %d, moongate pid %d on %d" % (a.port, b.port, gw.pid, gw.port))
    if not await sl.warm_up(gw.port, args, served="a/m"):
        return {"warm-up": False}, {}

    results = []
    kills = []          # (t_kill, t_restart)
    t_start = time.monotonic()
    t_stop = t_start + args.duration
    gw_exited = []

    def check(r):
        if r.kind not in ("ok", "error_event"):
            sl.log("BAD stream: %r" % r)

    async def killer():
        t = t_start + args.first_kill
        while t + args.down < t_stop:
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            if not gw.alive():
                gw_exited.append(time.monotonic())
                return
            t_kill = time.monotonic()
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            sl.log("killed A (SIGKILL); %d streams so far" % len(results))
            await asyncio.sleep(args.down)
            a.start()
            t_restart = time.monotonic()
            sl.log("restarted A on port %d" % a.port)
            kills.append((t_kill, t_restart))
            t += args.interval

    await asyncio.gather(killer(), sl.stream_load(gw.port, args, t_stop, results, check))
    t_end = time.monotonic()

    # After each restart: how long until a stream is served by A again (its cooldown over). For
    # the last one the load may have stopped first: then non-streamed requests, 10 a second.
    back = []
    for i, (tk, tr) in enumerate(kills):
        nxt = kills[i + 1][0] if i + 1 < len(kills) else None
        heads = [r.t_head for r in results if r.served == "a/m" and r.t_head is not None and
                 r.t_head > tr and (nxt is None or r.t_head < nxt)]
        back.append(min(heads) - tr if heads else None)
    if kills and back[-1] is None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                st, hdrs, _ = await sl.chat_request(gw.port)
            except (OSError, asyncio.TimeoutError, sl.HttpError):
                st, hdrs = 0, {}
            if st == 200 and hdrs.get("x-moongate-model") == "a/m":
                back[-1] = time.monotonic() - kills[-1][1]
                break
            await asyncio.sleep(0.1)
    recovered = back[-1] if back else None
    alive_at_end = gw.alive()
    st, _, body = await sl.http_request("127.0.0.1", gw.port, "GET", "/health") \
        if alive_at_end else (0, {}, b"")
    problems = gw.stop()

    # Classify against the kills. A stream whose last bytes A had already written when it died can
    # still end cleanly a moment after the kill (they were in the kernel's or moongate's buffers).
    # An "ok" stream is complete and byte-exact, so it lost nothing: it counts as hit only if it
    # was still open SETTLE_S after the kill, which a stream A had not finished cannot be.
    SETTLE_S = 0.1

    # Any other stream counts as hit when it was sent before the kill and ended after it: served by A
    # (committed there, so A had sent its head before dying), its head may still be timestamped
    # after the kill when this process's event loop lags behind the socket.
    def in_flight_at(r, tk):
        if r.kind == "ok":
            return r.t_head is not None and r.t_head <= tk and r.t_end >= tk + SETTLE_S
        return r.t_start <= tk <= r.t_end

    bad = [r for r in results if r.kind not in ("ok", "error_event")]
    errs = [r for r in results if r.kind == "error_event"]
    must_err, missed, stray, delays = [], [], [], []
    per_kill = []
    for tk, tr in kills:
        hit = [r for r in results if r.served == "a/m" and in_flight_at(r, tk)]
        per_kill.append(len(hit))
        for r in hit:
            must_err.append(r)
            if r.kind != "error_event":
                missed.append(r)
            else:
                delays.append(r.t_end - tk)
    must_ids = {id(r) for r in must_err}
    stray = [r for r in errs if id(r) not in must_ids]
    during_down = [r for r in results if any(tk < r.t_start < tr for tk, tr in kills)]
    down_ok = [r for r in during_down if r.ok]
    kinds, per_api = sl.summarize(results)
    for r in (missed + stray)[:10]:
        sl.log("unexpected: %r" % r)
    err_examples = {}
    for r in errs:
        err_examples.setdefault(r.api, r.detail)
    checks = {
        "every stream ok or ended by a well-formed error event": not bad and len(results) > 0,
        "every stream A was serving at a kill ended with an error event": not missed and
        len(must_err) > 0,
        "no error event elsewhere": not stray,
        "error event within %gs of the kill" % args.error_within:
            bool(delays) and max(delays) < args.error_within,
        "every kill hit streams mid-stream": bool(per_kill) and min(per_kill) > 0,
        "streams started while A was down all served": len(during_down) > 0 and
        len(down_ok) == len(during_down),
        "A serves again after its restart": recovered is not None,
        "moongate alive throughout, clean stop": alive_at_end and not gw_exited and not problems
        and st == 200,
    }
    info = {
        "streams": len(results), "kinds": kinds, "per_api": per_api, "kills": len(kills),
        "streams_in_flight_on_A_per_kill": per_kill,
        "error_events": len(errs),
        "kill_to_error_event_ms_p50_p99_max": [sl.ms(sl.pct(delays, 50)),
                                               sl.ms(sl.pct(delays, 99)),
                                               sl.ms(max(delays) if delays else None)],
        "content_events_before_error_min_max": [min((r.content for r in errs), default=None),
                                                max((r.content for r in errs), default=None)],
        "started_while_down": len(during_down), "of_them_ok": len(down_ok),
        "served_while_down": sorted({r.served for r in during_down if r.served}),
        "A_serving_again_s_after_each_restart": [None if x is None else round(x, 2)
                                                 for x in back],
        "error_event_examples": err_examples,
        "duration_s": round(t_end - t_start, 1), "concurrency": args.streams,
        "events": args.events, "pacing_ms": args.pacing_ms,
        "stop_problems": problems,
    }
    return checks, info


def main():
    ap = sl.arg_parser(__doc__)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=15.0, help="seconds between kills")
    ap.add_argument("--first-kill", type=float, default=5.0)
    ap.add_argument("--down", type=float, default=5.0, help="seconds A stays dead")
    ap.add_argument("--events", type=int, default=40)
    ap.add_argument("--pacing-ms", type=int, default=100)
    ap.add_argument("--event-bytes", type=int, default=32)
    ap.add_argument("--error-within", type=float, default=5.0)
    args = ap.parse_args()
    args.cooldowns = [1000, 2000, 4000]
    if args.smoke:
        args.duration, args.first_kill, args.down = 5.0, 2.0, 1.5
        args.streams = min(args.streams, 100)
        args.cooldowns = [1000, 1000, 1000]
        args.events, args.pacing_ms = 20, 100
    procs = sl.setup(args, "kill")
    sl.log("kill: %d concurrent streams for %.0f s (%d events %d ms apart); A killed at %.0f s "
           "then every %.0f s, down %.1f s each time" % (args.streams, args.duration, args.events,
                                                          args.pacing_ms, args.first_kill,
                                                          args.interval, args.down))
    checks, info = asyncio.run(run(args, procs))
    return sl.report(args, "kill", checks, info, streams=info.get("streams"),
                     kills=info.get("kills"), error_events=info.get("error_events"))


if __name__ == "__main__":
    sys.exit(main())

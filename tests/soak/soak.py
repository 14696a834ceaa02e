#!/usr/bin/env python3
"""Soak: --streams concurrent streams through moongate for --duration seconds (default 200 for
600 s), each checked complete and uncorrupted, with moongate's RSS sampled from /proc.

Every worker runs one stream after another: a quarter of them speak the Responses API, a quarter
Anthropic Messages and half Chat Completions (so both the raw relay and the translating encoders
are soaked); half keep their connection alive between streams, half open a new one each time.
The upstream is bench/mock_upstream.c with seeded content, so every content event is checked
byte for byte (soaklib.Verifier). Pass when:
  - every stream is "ok" (HTTP 200, every content event once, in order, exact; a clean end);
  - RSS growth after warm-up is under --rss-limit-mb (10 MB = 10,000,000 bytes): the largest
    RSS seen after the warm-up minus the RSS at the end of the warm-up (with every stream open);
  - afterwards moongate reports no request in flight, its descriptors are back to their idle
    count, and it stops cleanly on SIGTERM with nothing in its log that looks like a crash.
Warm-up: --warmup seconds (default min(60, duration / 5)).
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib as sl  # noqa: E402


async def run(args, procs):
    mock = sl.CMock(procs, args.mock, "mock", args.events, args.pacing_ms, args.event_bytes)
    gw = sl.Gateway(procs, args.moongate, sl.config({"mock": sl.provider(mock.url)}, "mock/m"))
    sl.log("mock on %d, moongate pid %d on %d" % (mock.port, gw.pid, gw.port))
    # A few streams before measuring "idle", so one-time set-up does not count as growth.
    if not await sl.warm_up(gw.port, args):
        return {"warm-up": False}, {}
    await asyncio.sleep(0.5)
    idle_rss, idle_fds = sl.proc_rss_kib(gw.pid), sl.proc_fds(gw.pid)
    sampler = sl.Sampler(gw.pid, 1.0 if args.duration >= 60 else 0.25).start()

    results = []
    failures = []
    t_start = time.monotonic()
    t_stop = t_start + args.duration
    t_warm = t_start + args.warmup

    def check(r):
        if not r.ok:
            failures.append(r)
            if len(failures) <= 10:
                sl.log("FAILED stream: %r" % r)

    async def progress():
        while True:
            await asyncio.sleep(max(10.0, args.duration / 20))
            s = sampler.samples[-1] if sampler.samples else (0, 0, 0)
            sl.log("%d streams done, %d failed; moongate RSS %.1f MiB, %s fds" % (
                len(results), len(failures), s[1] / 1024.0, s[2]))

    prog = asyncio.get_running_loop().create_task(progress())
    await sl.stream_load(gw.port, args, t_stop, results, check)
    prog.cancel()
    t_end = time.monotonic()
    sampler.stop()
    await asyncio.sleep(1.0)
    after_fds = sl.proc_fds(gw.pid)
    after_socks = sl.proc_sockets(gw.pid, gw.port)
    st, _, body = await sl.http_request("127.0.0.1", gw.port, "GET", "/health")
    health = json.loads(body) if st == 200 else {}
    rss_end_idle = sl.proc_rss_kib(gw.pid)

    # RSS after warm-up
    after = sampler.after(t_warm)
    base = after[0][1] if after else None
    peak = max(s[1] for s in after) if after else None
    last = after[-1][1] if after else None
    growth = None if base is None else peak - base
    # a least-squares slope over the samples after warm-up, KiB per minute
    slope = None
    if len(after) >= 3:
        ts = [s[0] - after[0][0] for s in after]
        ys = [s[1] for s in after]
        mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
        den = sum((t - mt) ** 2 for t in ts)
        slope = 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den if den else 0.0
    all_rss = [s[1] for s in sampler.samples]

    problems = gw.stop()
    access = gw.access_lines()
    non200 = sum(1 for a in access if a.get("status") != 200)
    kinds, per_api = sl.summarize(results)
    ttft = [r.t_first - r.t_start for r in results if r.t_first]
    dur = [r.t_end - r.t_start for r in results if r.ok]
    limit_kib = args.rss_limit_mb * 1e6 / 1024.0
    checks = {
        "every stream complete and exact": not failures and len(results) > 0,
        "RSS growth after warm-up < %g MB" % args.rss_limit_mb:
            growth is not None and (growth < limit_kib or args.sanitized),
        "no request in flight afterwards": health.get("in_flight") == 0,
        # Kept-alive upstream connections stay in libcurl's pool (bounded by the concurrency);
        # everything else must be back to what it was before the load.
        "no client connection left, descriptors back to idle + upstream pool":
            after_socks is not None and after_socks["clients"] == 0 and
            after_socks["outbound"] <= args.streams + 2 and
            after_fds is not None and after_fds <= idle_fds + after_socks["outbound"] + 2,
        "clean stop, no crash markers": not problems,
    }
    info = {
        "streams": len(results), "failed": len(failures), "kinds": kinds, "per_api": per_api,
        "duration_s": round(t_end - t_start, 1), "warmup_s": args.warmup,
        "concurrency": args.streams, "events": args.events, "pacing_ms": args.pacing_ms,
        "event_bytes": args.event_bytes,
        "content_events": sum(r.content for r in results),
        "rss_idle_mib": round(idle_rss / 1024.0, 1) if idle_rss else None,
        "rss_after_warmup_mib": round(base / 1024.0, 1) if base else None,
        "rss_peak_after_warmup_mib": round(peak / 1024.0, 1) if peak else None,
        "rss_last_mib": round(last / 1024.0, 1) if last else None,
        "rss_min_max_whole_run_mib": [round(min(all_rss) / 1024.0, 1),
                                      round(max(all_rss) / 1024.0, 1)] if all_rss else None,
        "rss_growth_kib": growth, "rss_slope_kib_per_min": round(slope, 1) if slope is not None
        else None, "rss_after_load_mib": round(rss_end_idle / 1024.0, 1) if rss_end_idle else None,
        "fds_idle": idle_fds, "fds_after": after_fds, "sockets_after": after_socks,
        "fds_max": max((s[2] or 0) for s in sampler.samples) if sampler.samples else None,
        "ttft_ms_p50_p99_max": [sl.ms(sl.pct(ttft, 50)), sl.ms(sl.pct(ttft, 99)),
                                sl.ms(max(ttft) if ttft else None)],
        "stream_s_p50_p99_max": ["%.2f" % sl.pct(dur, 50) if dur else None,
                                 "%.2f" % sl.pct(dur, 99) if dur else None,
                                 "%.2f" % max(dur) if dur else None],
        "reused_connections": sum(1 for r in results if r.reused),
        "access_lines": len(access), "access_non_200": non200,
        "stop_problems": problems,
    }
    if args.sanitized:
        info["note"] = "AddressSanitizer build: RSS growth is reported, not checked"
    return checks, info


def main():
    ap = sl.arg_parser(__doc__)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--events", type=int, default=20, help="content events per stream")
    ap.add_argument("--pacing-ms", type=int, default=250)
    ap.add_argument("--event-bytes", type=int, default=48)
    ap.add_argument("--rss-limit-mb", type=float, default=10.0)
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.events, args.pacing_ms = min(args.duration, 6.0), 5, 100
    if args.warmup is None:
        args.warmup = min(60.0, args.duration / 5.0) if not args.smoke else 3.0
    procs = sl.setup(args, "soak")
    sl.log("soak: %d concurrent streams for %.0f s (%d events %d ms apart, %d bytes each), "
           "warm-up %.0f s" % (args.streams, args.duration, args.events, args.pacing_ms,
                               args.event_bytes, args.warmup))
    checks, info = asyncio.run(run(args, procs))
    return sl.report(args, "soak", checks, info, streams=info.get("streams"),
                     failed=info.get("failed"), rss_growth_kib=info.get("rss_growth_kib"))


if __name__ == "__main__":
    sys.exit(main())

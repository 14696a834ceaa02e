#!/usr/bin/env python3
"""Reload: moongate reloads its config every second for --duration seconds (default 300) while
--streams concurrent checked streams run (default 100, each about 1 s long, so every reload has
streams in flight).

Two policies route every request to a different model of the same upstream (bench/mock_upstream.c
with seeded content): a.lua to p/m1, b.lua to p/m2. Each second the config is rewritten to name
the other policy (written to a temporary name and renamed, as editors do), and the reload is
triggered in turn by: the file watcher alone, POST /admin/reload, SIGHUP; every fourth second the
active policy file itself is rewritten instead (a comment changes), so the policy watch is
exercised too. Workers mix the three client APIs as in soak.py. Pass when:
  - every stream is "ok" (HTTP 200, complete, exact);
  - every stream was served by p/m1 or p/m2, both were seen, and the generation seen by streams
    kept increasing (at least --duration / 2 distinct generations);
  - /admin/policy reports at least one successful reload per action and no failed one, and
    moongate_reloads_total{result="ok"} agrees;
  - RSS growth after warm-up stays under --rss-limit-mb (10 MB) (full run only; old
    generations must be freed as their last request ends);
  - moongate stops cleanly with nothing in its log that looks like a crash.
"""

import asyncio
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soaklib as sl  # noqa: E402

POLICY = """-- %s (tests/soak/reload.py), version %d
function route(req)
  gw.trace("policy %s v%d")
  return { "p/%s" }
end
"""


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def run(args, procs):
    mock = sl.CMock(procs, args.mock, "mock", args.events, args.pacing_ms, args.event_bytes)
    wd = procs.workdir
    versions = {"a": 1, "b": 1}
    write_atomic(os.path.join(wd, "a.lua"), POLICY % ("a.lua", 1, "a", 1, "m1"))
    write_atomic(os.path.join(wd, "b.lua"), POLICY % ("b.lua", 1, "b", 1, "m2"))

    def cfg(policy):
        return sl.config({"p": sl.provider(mock.url, ("m1", "m2"))}, "p/m1",
                         gateway={"policy": policy})
    gw = sl.Gateway(procs, args.moongate, cfg("a.lua"))
    sl.log("mock on %d, moongate pid %d on %d" % (mock.port, gw.pid, gw.port))

    async def admin_policy():
        st, _, body = await sl.http_request("127.0.0.1", gw.port, "GET", "/admin/policy")
        return json.loads(body) if st == 200 else {}

    p0 = await admin_policy()
    results = []
    t_start = time.monotonic()
    t_stop = t_start + args.duration
    actions = {"watch": 0, "admin": 0, "sighup": 0, "policy-file": 0}
    admin_failed = []
    sampler = sl.Sampler(gw.pid, 1.0).start()

    def check(r):
        if not r.ok:
            sl.log("FAILED stream: %r" % r)

    async def reloader():
        active = "a"
        k = 0
        while True:
            await asyncio.sleep(max(0.0, t_start + 1.0 + k - time.monotonic()))
            if time.monotonic() >= t_stop - 0.5:
                return
            if k % 4 == 3:
                # rewrite the active policy file (same model, a new comment and trace text)
                versions[active] += 1
                v = versions[active]
                write_atomic(os.path.join(wd, active + ".lua"),
                             POLICY % (active + ".lua", v, active, v,
                                       "m1" if active == "a" else "m2"))
                actions["policy-file"] += 1
            else:
                active = "b" if active == "a" else "a"
                gw.write_config(cfg(active + ".lua"))
                how = ("watch", "admin", "sighup")[k % 4 % 3]
                actions[how] += 1
                if how == "admin":
                    st, _, body = await sl.http_request("127.0.0.1", gw.port, "POST",
                                                        "/admin/reload")
                    if st != 200:
                        admin_failed.append((st, body[:300]))
                elif how == "sighup":
                    gw.proc.send_signal(signal.SIGHUP)
            k += 1
            if k % 30 == 0:
                sl.log("%d reload actions, %d streams, %d failed; RSS %.1f MiB" % (
                    k, len(results), sum(1 for r in results if not r.ok),
                    (sl.proc_rss_kib(gw.pid) or 0) / 1024.0))

    await asyncio.gather(reloader(), sl.stream_load(gw.port, args, t_stop, results, check))
    t_end = time.monotonic()
    sampler.stop()
    await asyncio.sleep(1.0)  # the last change settles
    p1 = await admin_policy()
    st, _, metrics = await sl.http_request("127.0.0.1", gw.port, "GET", "/metrics")
    m = re.search(rb'moongate_reloads_total\{result="ok"\} (\d+)', metrics)
    metric_ok = int(m.group(1)) if m else None
    problems = gw.stop()
    reload_logs = gw.log_lines("reload")
    why = {}
    for ln in reload_logs:
        key = "%s/%s" % (ln.get("why"), ln.get("result"))
        why[key] = why.get(key, 0) + 1

    n_actions = sum(actions.values())
    ok0 = (p0.get("reloads") or {}).get("ok", 0)
    ok1 = (p1.get("reloads") or {}).get("ok", 0)
    failed1 = (p1.get("reloads") or {}).get("failed", 0)
    served = {}
    for r in results:
        served[r.served] = served.get(r.served, 0) + 1
    gens = sorted({r.gen for r in results if r.gen is not None})
    after = sampler.after(t_start + args.warmup)
    growth = (max(s[1] for s in after) - after[0][1]) if after else None
    kinds, per_api = sl.summarize(results)
    limit_kib = args.rss_limit_mb * 1e6 / 1024.0
    checks = {
        "every stream complete and exact": len(results) > 0 and all(r.ok for r in results),
        "served by p/m1 or p/m2 only, both seen": set(served) == {"p/m1", "p/m2"},
        "generations kept changing (>= duration / 2 distinct)": len(gens) >= args.duration / 2,
        "a successful reload per action, none failed": ok1 - ok0 >= n_actions and failed1 == 0
        and not admin_failed,
        "metrics agree with /admin/policy": metric_ok == ok1,
        "clean stop, no crash markers": not problems,
    }
    if not args.smoke:
        checks["RSS growth after warm-up < %g MB" % args.rss_limit_mb] = \
            growth is not None and (growth < limit_kib or args.sanitized)
    info = {
        "streams": len(results), "kinds": kinds, "per_api": per_api, "served": served,
        "reload_actions": actions, "reloads_ok": ok1 - ok0, "reloads_failed": failed1,
        "reload_log_lines_by_why": why, "admin_reload_failures": admin_failed[:3],
        "generations_seen": len(gens), "generation_range": [gens[0], gens[-1]] if gens else None,
        "duration_s": round(t_end - t_start, 1), "concurrency": args.streams,
        "rss_first_last_peak_mib": [round(sampler.samples[0][1] / 1024.0, 1),
                                    round(sampler.samples[-1][1] / 1024.0, 1),
                                    round(max(s[1] for s in sampler.samples) / 1024.0, 1)]
        if sampler.samples else None,
        "rss_growth_after_warmup_kib": growth,
        "ttft_ms_p50_p99": [sl.ms(sl.pct([r.t_first - r.t_start for r in results if r.t_first],
                                         q)) for q in (50, 99)],
        "stop_problems": problems,
    }
    return checks, info


def main():
    ap = sl.arg_parser(__doc__)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--pacing-ms", type=int, default=100)
    ap.add_argument("--event-bytes", type=int, default=32)
    ap.add_argument("--rss-limit-mb", type=float, default=10.0)
    args = ap.parse_args()
    if args.smoke:
        args.duration = 5.0
        args.streams = min(args.streams, 50)
    procs = sl.setup(args, "reload")
    sl.log("reload: a reload every second for %.0f s under %d concurrent streams (%d events %d ms "
           "apart)" % (args.duration, args.streams, args.events, args.pacing_ms))
    checks, info = asyncio.run(run(args, procs))
    return sl.report(args, "reload", checks, info, streams=info.get("streams"),
                     reloads=info.get("reloads_ok"))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where a process's CPU goes, by owner: reads `perf script -F ip,sym,dso` output (a recording
made with call graphs, `perf record --call-graph dwarf`) and prints markdown tables.

Each sample belongs to the innermost frame of its stack that is in moongate or one of the
libraries it is built on (libcurl, libmicrohttpd, Lua, cJSON): a malloc or a clock read that
libcurl made counts for libcurl, a send that libmicrohttpd made for libmicrohttpd. Samples are
split into user space and kernel (a kernel sample's owner is whoever made the system call).
A second table splits the kernel samples by system call.

    perf script -i perf.data -F ip,sym,dso | bench/perf_attr.py [--per-request-us US]

--per-request-us: the CPU time per request measured alongside; adds a µs-per-request column.
"""

import argparse
import collections
import sys

OWNERS = (("libcurl", "libcurl"), ("libmicrohttpd", "libmicrohttpd"), ("liblua", "Lua"),
          ("libcjson", "cJSON"), ("moongate", "moongate"))


def samples(lines):
    """Yields each sample's frames, innermost first, as (symbol, dso) pairs."""
    cur = []
    for line in lines:
        line = line.strip()
        if not line:
            if cur:
                yield cur
            cur = []
            continue
        _, _, rest = line.partition(" ")
        sym, _, dso = rest.rpartition(" (")
        cur.append((sym, dso.rstrip(")")))
    if cur:
        yield cur


def owner(dso):
    base = dso.rsplit("/", 1)[-1]
    return next((name for prefix, name in OWNERS if base.startswith(prefix)), None)


def syscall(frames):
    for sym, _ in frames:
        for prefix in ("__x64_sys_", "__sys_"):
            if sym.startswith(prefix):
                return sym[len(prefix):]
    return "(none: interrupts, page faults)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-request-us", type=float, default=0.0)
    args = ap.parse_args()
    by_owner, by_call = collections.Counter(), collections.Counter()
    n = 0
    for s in samples(sys.stdin):
        n += 1
        kernel = "kallsyms" in s[0][1]
        who = next((o for o in (owner(d) for _, d in s) if o), "other")
        by_owner[(who, "kernel" if kernel else "user")] += 1
        if kernel:
            by_call[syscall(s)] += 1
    if not n:
        sys.exit("perf_attr: no samples on standard input")
    us = args.per_request_us

    def row(label, count):
        share = 100.0 * count / n
        extra = " %.1f |" % (share * us / 100) if us else ""
        return "| %s | %.1f%% |%s" % (label, share, extra)

    head = " µs per request |" if us else ""
    print("| owner (innermost frame), space | share |%s" % head)
    print("|---|---:|%s" % ("---:|" if us else ""))
    for (who, space), c in by_owner.most_common():
        print(row("%s, %s" % (who, space), c))
    print("\n| kernel time by system call | share |%s" % head)
    print("|---|---:|%s" % ("---:|" if us else ""))
    for call, c in by_call.most_common(12):
        print(row(call, c))
    print("\n%d samples" % n)


if __name__ == "__main__":
    main()

/* How much time the CPU it runs on loses to things no process on the machine can see: spins for
 * --seconds reading CLOCK_MONOTONIC and counts the gaps between two reads (interrupts, the
 * kernel's own work, and on a virtual machine the host running something else on that vCPU).
 * bench/compare.sh runs one on each CPU at once, before and after its measurements: gaps of
 * milliseconds set a floor under every p99 the run reports, for every peer alike.
 *
 * Usage: cpu_gaps [--seconds S (5)]   (pin it with taskset)
 * Output: a human line on stderr and `GAPS key=value ...` on stdout: the time lost in gaps of
 * 0.1 ms or more (lost_ms, as a share of the run: lost_pct), how many gaps were 1 ms or more
 * (n_1ms) and 5 ms or more (n_5ms), and the longest (max_ms). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    double secs = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            secs = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: cpu_gaps [--seconds S]\n");
            return 2;
        }
    }
    if (secs <= 0) return 2;
    int64_t start = now_ns(), end = start + (int64_t)(secs * 1e9), last = start;
    int64_t lost = 0, longest = 0;
    long n_gaps = 0, n_1ms = 0, n_5ms = 0;
    while (last < end) {
        int64_t t = now_ns(), gap = t - last;
        last = t;
        if (gap < 100000) continue;
        n_gaps++;
        lost += gap;
        if (gap > longest) longest = gap;
        if (gap >= 1000000) n_1ms++;
        if (gap >= 5000000) n_5ms++;
    }
    double run_ms = (double)(last - start) / 1e6;
    fprintf(stderr, "cpu_gaps: CPU %d lost %.1f ms of %.0f ms (%.2f%%) in %ld gaps of 0.1 ms or more; %ld of 1 ms or more, %ld of 5 ms or more; longest %.2f ms\n",
            sched_getcpu(), (double)lost / 1e6, run_ms, 100.0 * (double)lost / 1e6 / run_ms, n_gaps, n_1ms, n_5ms,
            (double)longest / 1e6);
    printf("GAPS cpu=%d seconds=%.1f lost_ms=%.1f lost_pct=%.2f n_gaps=%ld n_1ms=%ld n_5ms=%ld max_ms=%.2f\n", sched_getcpu(),
           secs, (double)lost / 1e6, 100.0 * (double)lost / 1e6 / run_ms, n_gaps, n_1ms, n_5ms, (double)longest / 1e6);
    return 0;
}

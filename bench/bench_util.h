/* Helpers the standalone bench tools (mock_upstream.c, stream_load.c) share. Header-only so that
 * each tool stays one source file linking nothing from moongate. Needs _GNU_SOURCE (for
 * program_invocation_short_name), which both tools define before their first include. */
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* realloc that aborts, naming the program and the caller's file:line, when memory runs out. */
static inline void *bench_xrealloc_at(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "%s: out of memory at %s:%d\n", program_invocation_short_name, file, line);
        abort();
    }
    return q;
}
#define xrealloc(p, n) bench_xrealloc_at((p), (n), __FILE__, __LINE__)

/* CLOCK_MONOTONIC in µs: the clock of the "ts" stamps the mock writes and the load client reads
 * (both on the same machine). */
static inline int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

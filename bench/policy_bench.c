/* Micro-benchmark of routing decisions (src/policy.c, lua_api.c, the shipped policies): for the
 * built-in default and each policy in policies/ with its example config, runs many decisions on
 * one thread with a live view that knows every model (so health and latency lookups do real
 * work) and prints microseconds per decision: CPU time of the deciding thread (the figure that
 * does not depend on what else runs on the machine), and wall time (mean, p50, p99). Then the same
 * decisions from
 * several threads at once (each thread gets its own Lua state), the cost of building a state, and
 * its memory. Target: < 20 µs per decision for every shipped policy.
 *
 * Build (from the repository root, against a non-sanitized build of the core library) and run:
 *   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j
 *   cc -O2 -Isrc -Ibuild-rel/generated bench/policy_bench.c build-rel/libmgcore.a \
 *      $(pkg-config --libs lua5.4 libcurl libcjson libmicrohttpd) -lpthread -lm -o
 * build-rel/policy_bench build-rel/policy_bench [decisions per policy, default 200000] [threads,
 * default 4]
 */
#include "config.h"
#include "lua_testfile.h"
#include "policy.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bench_case {
    const char *name;
    const char *config;
    bool builtin;      /* ignore gateway.policy: the built-in default */
    const char *model; /* model asked */
    mg_kv_t header;    /* one request header (may be empty) */
} bench_case_t;

static const bench_case_t cases[] = {
    {"default (built-in)", "examples/policy-fallback.json5", true, "default", {NULL, NULL}},
    {"fallback.lua", "examples/policy-fallback.json5", false, "default", {NULL, NULL}},
    {"local_first.lua", "examples/policy-local-first.json5", false, "default", {NULL, NULL}},
    {"regional.lua (eu)",
     "examples/policy-regional.json5",
     false,
     "default",
     {"x-data-region", "eu"}},
    {"cost_latency.lua cost", "examples/policy-cost-latency.json5", false, "default", {NULL, NULL}},
    {"cost_latency.lua latency",
     "examples/policy-cost-latency.json5",
     false,
     "default",
     {"x-moongate-optimize", "latency"}},
};

typedef struct run {
    mg_policy_t *p;
    const mg_route_input_t *in;
    const mg_live_view_t *live;
    int n;
    int64_t *samples_ns; /* per decision, or NULL */
    int failures;
} run_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *run(void *arg)
{
    run_t *r = arg;
    mg_plan_t plan;
    for (int i = 0; i < r->n; i++) {
        int64_t t0 = r->samples_ns ? now_ns() : 0;
        if (mg_policy_route(r->p, r->in, r->live, &plan) != 0 ||
            (plan.n_cands == 0 && !plan.rejected)) {
            if (!r->failures++) fprintf(stderr, "decision failed: %s\n", plan.error);
        }
        if (r->samples_ns) r->samples_ns[i] = now_ns() - t0;
    }
    return NULL;
}

/* CPU time of the calling thread: unlike wall time, unaffected by other processes on the box. */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200000;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (n < 100) n = 100;
    if (threads < 1) threads = 1;
    printf("%-26s %8s %8s %8s %8s %11s  %s\n", "policy", "cpu µs", "mean µs", "p50 µs", "p99 µs",
           "MT dec/s", "first candidate");
    int bad = 0;
    for (size_t k = 0; k < MG_ARRAY_LEN(cases); k++) {
        const bench_case_t *bc = &cases[k];
        char err[512];
        mg_config_t *cfg = mg_config_load(bc->config, err, sizeof err);
        if (!cfg) {
            fprintf(stderr, "%s: %s (run from the repository root)\n", bc->config, err);
            return 2;
        }
        mg_policy_t *p = bc->builtin ? mg_policy_load_file(cfg, NULL, NULL, err, sizeof err)
                                     : mg_policy_load(cfg, NULL, err, sizeof err);
        if (!p) {
            fprintf(stderr, "%s: %s\n", bc->name, err);
            return 2;
        }
        /* every model known: healthy, with latencies that differ */
        size_t nm = 0;
        for (size_t i = 0; i < cfg->n_providers; i++)
            nm += cfg->providers[i].n_models;
        mg_live_entry_t *entries = calloc(nm, sizeof *entries);
        size_t e = 0;
        for (size_t i = 0; i < cfg->n_providers; i++)
            for (size_t j = 0; j < cfg->providers[i].n_models; j++, e++)
                entries[e] = (mg_live_entry_t){cfg->providers[i].models[j].ref,
                                               false,
                                               {.healthy = true,
                                                .latency_ms_p50 = 300.0 + 97.0 * (double)e,
                                                .ttft_ms_p50 = 900.0 - 31.0 * (double)e,
                                                .in_flight = 2}};
        mg_live_static_t st = {entries, nm};
        mg_live_view_t live = mg_live_static_view(&st);
        mg_route_input_t in = {.cfg = cfg,
                               .model = bc->model,
                               .endpoint = "chat",
                               .prompt_tokens = 1200,
                               .max_output_tokens = -1,
                               .headers = &bc->header,
                               .n_headers = bc->header.name ? 1 : 0};

        /* one thread, every decision timed */
        int64_t *samples = malloc((size_t)n * sizeof *samples);
        run_t warm = {p, &in, &live, 2000, NULL, 0};
        run(&warm);
        run_t one = {p, &in, &live, n, NULL, 0};
        int64_t c0 = cpu_ns();
        run(&one); /* untimed per decision: the CPU figure without the clock reads */
        double cpu = (double)(cpu_ns() - c0) / n / 1000.0;
        one.samples_ns = samples;
        int64_t t0 = now_ns();
        run(&one);
        int64_t total = now_ns() - t0;
        qsort(samples, (size_t)n, sizeof *samples, cmp64);

        /* several threads at once */
        pthread_t *tid = calloc((size_t)threads, sizeof *tid);
        run_t *runs = calloc((size_t)threads, sizeof *runs);
        int64_t t1 = now_ns();
        for (int t = 0; t < threads; t++) {
            runs[t] = (run_t){p, &in, &live, n / threads, NULL, 0};
            pthread_create(&tid[t], NULL, run, &runs[t]);
        }
        int failures = one.failures;
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            failures += runs[t].failures;
        }
        double mt = (double)(n / threads * threads) / ((double)(now_ns() - t1) / 1e9);

        mg_plan_t plan;
        mg_policy_route(p, &in, &live, &plan);
        double mean = (double)total / n / 1000.0;
        printf("%-26s %8.2f %8.2f %8.2f %8.2f %11.0f  %s%s\n", bc->name, cpu, mean,
               samples[n / 2] / 1000.0, samples[n * 99 / 100] / 1000.0, mt,
               plan.n_cands ? plan.cands[0].model->ref : plan.code, failures ? "  (FAILURES)" : "");
        if (failures || cpu >= 20.0) bad++;
        free(samples);
        free(tid);
        free(runs);
        free(entries);
        mg_policy_free(p);
        mg_config_free(cfg);
    }

    /* loading a policy: read, hash, build a state (sandbox, gw, prelude, the file), self-check;
     * a new serving thread or a rebuild after a limit costs about the same minus read and check */
    char err[512];
    mg_config_t *cfg = mg_config_load("examples/policy-cost-latency.json5", err, sizeof err);
    enum { LOADS = 200 };
    mg_policy_stats_t st = {0};
    int64_t t0 = now_ns();
    for (int i = 0; i < LOADS; i++) {
        mg_policy_t *p = mg_policy_load(cfg, NULL, err, sizeof err);
        if (!p) {
            fprintf(stderr, "load: %s\n", err);
            return 2;
        }
        st = mg_policy_stats(p);
        mg_policy_free(p);
    }
    printf("loading cost_latency.lua: %.0f µs; one Lua state: %llu KiB\n",
           (double)(now_ns() - t0) / LOADS / 1000.0, (unsigned long long)st.state_bytes >> 10);
    mg_config_free(cfg);
    return bad ? 1 : 0;
}

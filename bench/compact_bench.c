/* Micro-benchmark of token estimation, compaction and the safety filters (src/tokens.c,
 * src/compact.c) on 100 KB prompts:
 *   - mg_tokens_text: raw scan throughput, ASCII and CJK;
 *   - mg_tokens_estimate: one 100 KB user message; a 100 KB agent conversation (50 messages,
 *     tool calls and results, a tool schema); a CJK-heavy 100 KB conversation. Target < 50 µs.
 *   - mg_tokens_calib_ratio: one lookup (mutex);
 *   - mg_safety_filter over the 100 KB conversation (control tokens, reasoning, tool-result cap);
 *   - mg_compact of the 100 KB conversation into 8,000 and 2,000 tokens (fresh arena each run).
 * Prints min and median microseconds per call over many runs.
 *
 * Build and run (links the core library; needs its generated header):
 *   cmake --build build --target bench_compact && build/bench/compact_bench
 * or by hand against an existing build:
 *   cc -O2 -Isrc -Ibuild/generated bench/compact_bench.c build/libmgcore.a \
 *      $(pkg-config --libs libcjson lua5.4 libcurl libmicrohttpd) -lpthread -lm -o
 * /tmp/compact_bench Optional argument: runs per measurement (default 2000). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compact.h"
#include "ir.h"
#include "tokens.h"
#include "util.h"

static volatile int64_t sink;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct stats {
    double min_us, med_us;
} stats_t;

static stats_t summarize(int64_t *ns, int n)
{
    qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
    return (stats_t){ns[0] / 1000.0, ns[n / 2] / 1000.0};
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void report(const char *what, stats_t s, const char *extra)
{
    printf("%-58s min %9.2f us   median %9.2f us%s\n", what, s.min_us, s.med_us,
           extra ? extra : "");
}

/* ---- building requests ---- */

static uint32_t rnd_state = 2463534242u;
static uint32_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 17;
    rnd_state ^= rnd_state << 5;
    return rnd_state;
}

/* n bytes of prose-like ASCII (cjk: mostly 3-byte characters), NUL-terminated, in the arena. */
static char *text(mg_ir_arena_t *a, size_t n, bool cjk)
{
    static const char *const words[] = {"the ",        "gateway ", "routes ", "requests ",
                                        "to ",         "models, ", "and ",    "{\"x\": 1} ",
                                        "return 0;\n", "context ", "window. "};
    static const char *const han[] = {"\xE4\xB8\xAD", "\xE6\x96\x87", "\xE6\xA8\xA1",
                                      "\xE5\x9E\x8B", "\xE3\x80\x82", " "};
    char *s = mg_ir_alloc(a, n + 1);
    size_t k = 0;
    for (;;) {
        const char *w = cjk ? han[rnd() % 6] : words[rnd() % 11];
        size_t l = strlen(w);
        if (k + l > n) break;
        memcpy(s + k, w, l);
        k += l;
    }
    while (k < n)
        s[k++] = ' ';
    s[n] = '\0';
    return s;
}

static mg_ir_message_t *add_msg(mg_ir_arena_t *a, mg_ir_request_t *r, size_t *cap,
                                mg_ir_role_t role, size_t n_parts)
{
    mg_ir_parts_t pv = {0};
    for (size_t i = 0; i < n_parts; i++)
        mg_ir_parts_add(a, &pv, MG_IR_PART_TEXT);
    return mg_ir_add_message(a, r, cap, role, &pv);
}

/* One user message of `bytes`. */
static void single(mg_ir_arena_t *a, mg_ir_request_t *r, size_t bytes, bool cjk)
{
    mg_ir_request_init(a, r, MG_API_OPENAI_COMPLETIONS);
    size_t cap = 0;
    add_msg(a, r, &cap, MG_IR_USER, 1)->parts[0].text = text(a, bytes, cjk);
}

/* An agent conversation of about `bytes`: 10 units of user, assistant with a tool call, its
 * result (the bulk), and an answer; a system prompt and one tool with a schema. */
static void agent(mg_ir_arena_t *a, mg_ir_request_t *r, size_t bytes, bool cjk)
{
    mg_ir_request_init(a, r, MG_API_ANTHROPIC_MESSAGES);
    mg_ir_part_t *sys = mg_ir_alloc(a, sizeof *sys);
    sys->type = MG_IR_PART_TEXT;
    sys->text = text(a, 2000, false);
    r->system = sys;
    r->n_system = 1;
    mg_ir_tool_t *t = mg_ir_alloc(a, sizeof *t);
    t->name = "read_file";
    t->description = "Read a file from the workspace";
    t->parameters = mg_ir_keep_json(
        a, cJSON_Parse(
               "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"description\":"
               "\"Relative path\"},\"offset\":{\"type\":\"integer\"}},\"required\":[\"path\"]}"));
    r->tools = t;
    r->n_tools = 1;
    size_t cap = 0, per = bytes / 10;
    for (int u = 0; u < 10; u++) {
        char id[16];
        snprintf(id, sizeof id, "toolu_%02d", u);
        add_msg(a, r, &cap, MG_IR_USER, 1)->parts[0].text = text(a, per / 10, cjk);
        mg_ir_parts_t pv = {0};
        mg_ir_part_t *rp = mg_ir_parts_add(a, &pv, MG_IR_PART_REASONING);
        rp->text = text(a, per / 20, false);
        rp->signature = "EqQBCkgIARABGAIiQL";
        mg_ir_part_t *c = mg_ir_parts_add(a, &pv, MG_IR_PART_TOOL_CALL);
        c->id = mg_ir_strdup(a, id);
        c->name = "read_file";
        c->arguments = "{\"path\":\"src/router.c\"}";
        mg_ir_add_message(a, r, &cap, MG_IR_ASSISTANT, &pv);
        mg_ir_parts_t tv = {0};
        mg_ir_part_t *res = mg_ir_parts_add(a, &tv, MG_IR_PART_TOOL_RESULT);
        res->id = c->id;
        mg_ir_parts_t inner = {0};
        mg_ir_parts_add(a, &inner, MG_IR_PART_TEXT)->text = text(a, per * 7 / 10, cjk);
        res->parts = inner.v;
        res->n_parts = inner.n;
        mg_ir_add_message(a, r, &cap, MG_IR_TOOL, &tv);
        add_msg(a, r, &cap, MG_IR_ASSISTANT, 1)->parts[0].text =
            text(a, per - per / 10 - per / 20 - per * 7 / 10, cjk);
    }
    add_msg(a, r, &cap, MG_IR_USER, 1)->parts[0].text = "and now the tests, please";
}

static size_t request_bytes(const mg_ir_request_t *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_system; i++)
        n += strlen(r->system[i].text);
    for (size_t i = 0; i < r->n_messages; i++)
        for (size_t j = 0; j < r->messages[i].n_parts; j++) {
            const mg_ir_part_t *p = &r->messages[i].parts[j];
            if (p->text) n += strlen(p->text);
            if (p->arguments) n += strlen(p->arguments);
            for (size_t k = 0; k < p->n_parts; k++)
                if (p->parts[k].text) n += strlen(p->parts[k].text);
        }
    return n;
}

/* ---- measurements ---- */

static void bench_estimate(const char *what, const mg_ir_request_t *r, const mg_tokens_opts_t *o,
                           int runs)
{
    int64_t *ns = malloc((size_t)runs * sizeof *ns);
    for (int i = 0; i < runs; i++) {
        int64_t t0 = now_ns();
        sink += mg_tokens_estimate(r, o);
        ns[i] = now_ns() - t0;
    }
    char extra[96];
    snprintf(extra, sizeof extra, "   (%zu bytes, %lld tokens)", request_bytes(r),
             (long long)mg_tokens_estimate(r, o));
    report(what, summarize(ns, runs), extra);
    free(ns);
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 2000;
    if (runs < 10) runs = 10;
    mg_ir_arena_t *a = mg_ir_arena_new();

    /* Raw scan throughput. */
    for (int cjk = 0; cjk < 2; cjk++) {
        const size_t n = (size_t)8 << 20;
        char *s = text(a, n, cjk);
        int64_t best = INT64_MAX;
        for (int i = 0; i < 20; i++) {
            int64_t t0 = now_ns();
            sink += mg_tokens_text(s, n);
            int64_t d = now_ns() - t0;
            if (d < best) best = d;
        }
        printf("mg_tokens_text %-8s %40s %9.2f GB/s\n", cjk ? "CJK" : "ASCII", "",
               (double)n / (double)best);
    }

    mg_ir_request_t one, conv, cjk;
    single(a, &one, 100 * 1000, false);
    agent(a, &conv, 100 * 1000, false);
    agent(a, &cjk, 100 * 1000, true);
    mg_tokens_calib_t *calib = mg_tokens_calib_new();
    for (int i = 0; i < 40; i++) {
        char ref[32];
        snprintf(ref, sizeof ref, "prov/model-%d", i);
        mg_tokens_calib_observe(calib, ref, 10000, 0, 8500); /* text only: no fixed share */
    }
    mg_tokens_opts_t cal = {calib, "prov/model-7", 0};

    bench_estimate("estimate: one 100 KB user message", &one, NULL, runs);
    bench_estimate("estimate: 100 KB agent conversation (41 messages)", &conv, NULL, runs);
    bench_estimate("estimate: same, calibrated (ratio lookup)", &conv, &cal, runs);
    bench_estimate("estimate: 100 KB CJK-heavy conversation", &cjk, NULL, runs);

    int64_t *ns = malloc((size_t)runs * sizeof *ns);
    for (int i = 0; i < runs; i++) {
        int64_t t0 = now_ns();
        sink += (int64_t)(mg_tokens_calib_ratio(calib, "prov/model-7") * 1000);
        ns[i] = now_ns() - t0;
    }
    report("calibration ratio lookup", summarize(ns, runs), NULL);

    /* Safety filter: a fresh arena per run (what a request pays). */
    for (int i = 0; i < runs; i++) {
        mg_ir_arena_t *s = mg_ir_arena_new();
        mg_ir_request_t r = conv;
        int64_t t0 = now_ns();
        sink += mg_safety_filter(s, &r, NULL, NULL);
        ns[i] = now_ns() - t0;
        mg_ir_arena_free(s);
    }
    report("safety filter over the 100 KB conversation", summarize(ns, runs), NULL);

    int64_t budgets[] = {30000, 8000, 2000};
    for (size_t b = 0; b < 3; b++) {
        mg_compact_report_t rep;
        for (int i = 0; i < runs; i++) {
            mg_ir_arena_t *s = mg_ir_arena_new();
            mg_ir_request_t r = conv;
            mg_compact_report_init(&rep);
            int64_t t0 = now_ns();
            int rc = mg_compact(s, &r, budgets[b], NULL, &rep);
            ns[i] = now_ns() - t0;
            sink += rc;
            mg_ir_arena_free(s);
        }
        char what[96], extra[160];
        snprintf(what, sizeof what, "compact the 100 KB conversation into %lld tokens",
                 (long long)budgets[b]);
        mg_buf_t h = {0};
        mg_compact_report_header(&rep, &h);
        snprintf(extra, sizeof extra, "\n    %s", h.data);
        mg_buf_free(&h);
        report(what, summarize(ns, runs), extra);
    }
    free(ns);
    mg_tokens_calib_free(calib);
    mg_ir_arena_free(a);
    return 0;
}

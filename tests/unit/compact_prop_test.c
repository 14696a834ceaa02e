/* Property tests for compaction and the safety filters over thousands of random conversations
 * (seeded, so a failure names its seed and replays): user/assistant text, parallel tool calls
 * with results in one or several tool messages, images, signed and plain reasoning, huge tool
 * results and arguments, tiny budgets, calibration, summarizers that succeed, fail or ramble.
 *
 * After mg_compact, always: it fits (estimate <= budget) or it said OVERFLOW and changed nothing;
 * roles valid; every tool call has its result and every result its call; system parts and tools
 * untouched; the last user turn verbatim; no invalid UTF-8 introduced; mg_compact_validate agrees;
 * the same input compacts the same way twice. Set MG_PROP_SEED / MG_PROP_N to replay or extend. */
#include "compact_testlib.h"
#include "mg_test.h"

static const char *const EXTRA[] = {"### Human:", "<|custom|>"};

static int sum_mode;

static int rnd_summarize(void *ud, const mg_ir_message_t *dropped, size_t n, int turns,
                         size_t max_bytes, int64_t timeout_ms, mg_ir_arena_t *a, const char **text,
                         size_t *len)
{
    rng_t *r = ud;
    if (n == 0 || turns <= 0 || max_bytes == 0) return -99; /* the contract says there is work */
    switch (rng_below(r, 4)) {
    case 0:
        return -1;
    case 1:
        *text = rng_text(r, a, max_bytes * 3);
        break; /* too long */
    default:
        *text = rng_text(r, a, 1 + rng_below(r, max_bytes));
        break;
    }
    *len = strlen(*text);
    sum_mode++;
    return 0;
}

/* Whether a run of adjacent text parts, joined as a server joins them, still holds a token. */
static bool run_has_token(const mg_ir_part_t *p, size_t n, const mg_safety_opts_t *so,
                          mg_ir_arena_t *a)
{
    for (size_t j = 0; j < n;) {
        mg_buf_t run = {0};
        for (; j < n && p[j].type == MG_IR_PART_TEXT; j++)
            mg_buf_puts(&run, p[j].text);
        bool found = run.len && mg_safety_strip_tokens(a, run.data, run.len, so, NULL);
        mg_buf_free(&run);
        if (found) return true;
        while (j < n && p[j].type != MG_IR_PART_TEXT)
            j++;
    }
    return false;
}

static bool no_tokens_left(const mg_ir_request_t *r, const mg_safety_opts_t *so, mg_ir_arena_t *a)
{
    for (size_t i = 0; i < r->n_messages; i++) {
        const mg_ir_message_t *m = &r->messages[i];
        if (m->role == MG_IR_USER && run_has_token(m->parts, m->n_parts, so, a)) return false;
        for (size_t j = 0; m->role == MG_IR_TOOL && j < m->n_parts; j++)
            if (run_has_token(m->parts[j].parts, m->parts[j].n_parts, so, a)) return false;
    }
    return true;
}

/* The smallest request mg_compact could produce when the conversation ends with the user run:
 * system, tools and that run. */
static int64_t minimal_estimate(const mg_ir_request_t *in, const mg_tokens_opts_t *to,
                                bool *ends_user)
{
    size_t end, start = ck_last_user_run(in, &end);
    *ends_user = start < in->n_messages && end == in->n_messages;
    mg_ir_request_t m = *in;
    m.messages = in->messages + (start < in->n_messages ? start : 0);
    m.n_messages = end - (start < in->n_messages ? start : 0);
    return mg_tokens_estimate(&m, to);
}

static int run_one(uint64_t seed, mg_tokens_calib_t *calib, int *n_changed, int *n_overflow,
                   int *n_fits)
{
    rng_t r = {seed};
    tb_t b;
    rng_conversation(&r, &b, 10, rng_chance(&r, 10) ? 80000 : 20000);
    int failures = 0;
#define PROP(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  seed %llu: ", (unsigned long long)seed);                            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
    char err[256];
    PROP(*ck_structure(&b.r) == '\0', "generator: %s", ck_structure(&b.r));
    if (seed % 8 == 0) /* (the UTF-8 scan of everything is the slow part of this test) */
        PROP(mg_compact_validate(&b.r, INT64_MAX, NULL, err, sizeof err) == 0, "generator: %s",
             err);

    /* Safety filters, sometimes. */
    if (rng_chance(&r, 40)) {
        mg_safety_opts_t so;
        mg_safety_opts_init(&so);
        so.old_reasoning = rng_chance(&r, 70);
        so.tool_result_max_bytes = rng_chance(&r, 50) ? 64 + rng_below(&r, 20000) : 0;
        if (rng_chance(&r, 30)) {
            so.extra_tokens = EXTRA;
            so.n_extra_tokens = 2;
        }
        mg_ir_request_t before = b.r;
        mg_compact_report_t rep;
        mg_compact_report_init(&rep);
        int ch = mg_safety_filter(b.a, &b.r, &so, &rep);
        PROP(ch == 0 || ch == 1, "filter rc %d", ch);
        PROP(ch == 1 || b.r.messages == before.messages, "filter changed nothing but the arrays");
        PROP(ch == 0 || mg_compact_report_changed(&rep), "filter changed, report says not");
        PROP(mg_compact_validate(&b.r, INT64_MAX, NULL, err, sizeof err) == 0, "after filter: %s",
             err);
        PROP(no_tokens_left(&b.r, &so, b.a), "control tokens left after the filter");
        PROP(b.r.system == before.system, "filter touched the system parts");
        for (size_t i = 0; i < b.r.n_messages; i++)
            for (size_t j = 0; j < b.r.messages[i].n_parts; j++)
                PROP(ck_part_utf8(&b.r.messages[i].parts[j]), "filter broke UTF-8");
    }

    mg_compact_opts_t o;
    mg_compact_opts_init(&o);
    o.drop_note = rng_chance(&r, 80);
    o.drop_current_steps = rng_chance(&r, 30);
    if (rng_chance(&r, 50)) {
        o.tool_result_max_bytes = 128 + rng_below(&r, 8192);
        o.message_max_bytes = 128 + rng_below(&r, 8192);
        o.min_keep_bytes = 64 + rng_below(&r, 512);
    }
    if (rng_chance(&r, 25)) {
        o.tokens.calib = calib;
        o.tokens.model_ref = rng_chance(&r, 50) ? "p/low" : "p/high";
    }
    if (rng_chance(&r, 20)) o.tokens.image_tokens = 85 + (int64_t)rng_below(&r, 3000);
    if (rng_chance(&r, 15)) {
        o.summarize = rnd_summarize;
        o.summarize_ud = &r;
        o.summary_reserve_tokens = 16 + (int64_t)rng_below(&r, 2000);
    }
    int64_t full = mg_tokens_estimate(&b.r, &o.tokens);
    int64_t budget;
    unsigned k = (unsigned)rng_below(&r, 100);
    if (k < 10)
        budget = full + (int64_t)rng_below(&r, 1000); /* fits */
    else if (k < 20)
        budget = (int64_t)rng_below(&r, 300); /* tiny */
    else
        budget = full / 20 + (int64_t)rng_below(&r, (size_t)(full - full / 20 + 1));

    mg_ir_request_t in = b.r;
    mg_compact_report_t rep;
    mg_compact_report_init(&rep);
    int rc = mg_compact(b.a, &b.r, budget, &o, &rep);
    const char *why = ck_compaction(&in, &b.r, rc, budget, &o.tokens);
    PROP(*why == '\0', "rc %d budget %lld: %s", rc, (long long)budget, why);
    PROP(rep.tokens_before == full, "tokens_before %lld != %lld", (long long)rep.tokens_before,
         (long long)full);
    PROP(rep.budget == budget, "report budget");
    if (rc == MG_COMPACT_CHANGED) {
        (*n_changed)++;
        PROP(mg_compact_validate(&b.r, budget, &o.tokens, err, sizeof err) == 0, "validate: %s",
             err);
        PROP(rep.tokens_after == mg_tokens_estimate(&b.r, &o.tokens), "tokens_after %lld != %lld",
             (long long)rep.tokens_after, (long long)mg_tokens_estimate(&b.r, &o.tokens));
        PROP(rep.raw_after ==
                 mg_tokens_estimate(&b.r, &(mg_tokens_opts_t){NULL, NULL, o.tokens.image_tokens}),
             "raw_after");
        PROP(rep.filters != 0, "changed without a filter named");
        PROP(rep.dropped_turns >= 0 && rep.elided_bytes >= 0, "report counts");
        PROP(!(rep.filters & MG_COMPACT_F_DROP_STEPS) || o.drop_current_steps,
             "steps dropped unasked");
        PROP((rep.dropped_turns > 0) == ((rep.filters & MG_COMPACT_F_DROP_TURNS) != 0),
             "drop flag");
        PROP(rep.n_dropped == (size_t)rep.dropped_messages, "dropped list");
        mg_buf_t h = {0};
        mg_compact_report_header(&rep, &h);
        PROP(strncmp(h.data, "tokens=", 7) == 0, "header");
        mg_buf_free(&h);
        /* Deterministic: the same input, the same output (the summarizer draws from the PRNG,
         * so only without one). */
        if (!o.summarize && rng_chance(&r, 10)) {
            mg_ir_request_t again = in;
            int rc2 = mg_compact(b.a, &again, budget, &o, NULL);
            char *r1 = render(&b.r), *r2 = render(&again);
            bool same = rc2 == rc && strcmp(r1, r2) == 0;
            free(r1);
            free(r2);
            PROP(same, "not deterministic");
        }
    } else if (rc == MG_COMPACT_OVERFLOW) {
        (*n_overflow)++;
        /* Overflow only when even the smallest possible request would not fit. */
        bool ends_user;
        int64_t min = minimal_estimate(&in, &o.tokens, &ends_user);
        if (ends_user)
            PROP(min + (o.drop_note ? 40 : 0) > budget,
                 "OVERFLOW although system + last user turn (%lld) fit %lld", (long long)min,
                 (long long)budget);
    } else {
        (*n_fits)++;
    }
out:
#undef PROP
    tb_free(&b);
    return failures;
}

MG_TEST(random_conversations)
{
    const char *s = getenv("MG_PROP_SEED");
    const char *n = getenv("MG_PROP_N");
    uint64_t seed0 = s ? strtoull(s, NULL, 10) : 20240601;
    int count = n ? atoi(n) : (s ? 1 : 3000);
    mg_tokens_calib_t *calib = mg_tokens_calib_new();
    for (int i = 0; i < 50; i++) {
        mg_tokens_calib_observe(calib, "p/low", 10000, 0, 7000);
        mg_tokens_calib_observe(calib, "p/high", 10000, 0, 16000);
    }
    int changed = 0, overflow = 0, fits = 0, failed = 0;
    for (int i = 0; i < count && failed < 5; i++) {
        int f = run_one(seed0 + (uint64_t)i, calib, &changed, &overflow, &fits);
        failed += f;
        mg_test_failures += f;
    }
    printf("%d conversations: %d compacted, %d overflow, %d fit as they were; %d summaries\n",
           count, changed, overflow, fits, sum_mode);
    /* The generator must exercise every outcome. */
    if (count >= 1000) MG_CHECK(changed > count / 4 && overflow > count / 20 && fits > count / 20);
    mg_tokens_calib_free(calib);
}

MG_TEST_MAIN()

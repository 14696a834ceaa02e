/* Unit tests for health.c, all on a fake clock (no test sleeps): the cooldown ladder, extension,
 * scopes, success reset, the all-cooling fallback, probes, the change callback, retry decisions and
 * their budget (1000 requests against a 100%-503 upstream), percentiles, /admin/health JSON, and a
 * multi-threaded smoke run for the sanitizers. */
#include "health.h"
#include "mg_test.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <pthread.h>

/* ---- a tiny fake config: providers "lm" (models a, b) and "oa" (model c), "an" (model d) */

typedef struct {
    mg_provider_t p[3];
    mg_model_t m[4];
} fake_cfg_t;

static void fake_cfg(fake_cfg_t *f)
{
    memset(f, 0, sizeof *f);
    static char *pid[] = {"lm", "oa", "an"};
    static char *mid[] = {"a", "b", "c", "d"};
    static char *mref[] = {"lm/a", "lm/b", "oa/c", "an/d"};
    static const int64_t win[] = {8192, 32768, 128000, 0};
    for (int i = 0; i < 3; i++) f->p[i].id = pid[i];
    for (int i = 0; i < 4; i++) {
        f->m[i].id = mid[i];
        f->m[i].ref = mref[i];
        f->m[i].context_window = win[i];
    }
    f->m[0].provider = f->m[1].provider = &f->p[0];
    f->m[2].provider = &f->p[1];
    f->m[3].provider = &f->p[2];
    f->p[0].models = &f->m[0];
    f->p[0].n_models = 2;
    f->p[1].models = &f->m[2];
    f->p[1].n_models = 1;
    f->p[2].models = &f->m[3];
    f->p[2].n_models = 1;
}

/* ---- change callback recorder */

typedef struct {
    char key[32];
    bool cooling;
    char reason[32];
    int64_t until;
    unsigned level;
} ev_t;

typedef struct {
    ev_t ev[64];
    int n;
} evlog_t;

static void on_change(void *ud, const mg_health_change_t *c)
{
    evlog_t *l = ud;
    if (l->n >= 64) return;
    ev_t *e = &l->ev[l->n++];
    snprintf(e->key, sizeof e->key, "%s", c->key);
    e->cooling = c->cooling;
    snprintf(e->reason, sizeof e->reason, "%s", c->reason);
    e->until = c->cooldown_until_ms;
    e->level = c->level;
}

static void check_ev(const evlog_t *l, int i, const char *key, bool cooling, const char *reason, int64_t until,
                     int line)
{
    if (i >= l->n) {
        fprintf(stderr, "  line %d: event %d missing (%d events)\n", line, i, l->n);
        mg_test_failures++;
        return;
    }
    const ev_t *e = &l->ev[i];
    if (strcmp(e->key, key) || e->cooling != cooling || strcmp(e->reason, reason) || (until >= 0 && e->until != until)) {
        fprintf(stderr, "  line %d: event %d = {%s, %s, %s, %lld}, want {%s, %s, %s, %lld}\n", line, i, e->key,
                e->cooling ? "cooling" : "healthy", e->reason, (long long)e->until, key,
                cooling ? "cooling" : "healthy", reason, (long long)until);
        mg_test_failures++;
    }
}
#define CHECK_EV(l, i, key, cooling, reason, until) check_ev((l), (i), (key), (cooling), (reason), (until), __LINE__)

static mg_health_t *new_health(evlog_t *log)
{
    mg_health_settings_t s;
    mg_health_settings_default(&s);
    s.seed = 42;
    mg_health_t *h = mg_health_new(&s);
    if (log) mg_health_set_callback(h, on_change, log);
    return h;
}

static void fail(mg_health_t *h, const char *p, const char *m, mg_class_t cls, int64_t now)
{
    mg_health_record(h, p, m, cls, 0, -1, -1, -1, "boom", now);
}

static int64_t until_of(mg_health_t *h, const char *p, const char *m, int64_t now)
{
    int64_t u = -1;
    mg_health_available(h, p, m, now, &u);
    return u;
}

/* ------------------------------------------------------------------------------------------- */

MG_TEST(ladder_30s_1min_5min)
{
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0);
    MG_CHECK(!mg_health_available(h, "lm", "lm/a", 1000, NULL));
    MG_CHECK_INT(until_of(h, "lm", "lm/a", 1000), 30000);
    MG_CHECK_INT(until_of(h, "lm", "lm/b", 1000), 30000); /* connect_error cools the provider */
    MG_CHECK_INT(until_of(h, "lm", "lm/a", 29999), 30000);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 30000, NULL));
    /* half-open: the next failure cools at once, one step up */
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 30000);
    MG_CHECK_INT(until_of(h, "lm", NULL, 30000), 90000);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 90000);
    MG_CHECK_INT(until_of(h, "lm", NULL, 90000), 390000);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 390000); /* capped at 5 min */
    MG_CHECK_INT(until_of(h, "lm", NULL, 390000), 690000);
    MG_CHECK_INT(log.n, 7);
    CHECK_EV(&log, 0, "lm", true, "connect_error", 30000);
    CHECK_EV(&log, 1, "lm", false, "expired", 30000);
    CHECK_EV(&log, 2, "lm", true, "connect_error", 90000);
    CHECK_EV(&log, 3, "lm", false, "expired", 90000);
    CHECK_EV(&log, 4, "lm", true, "connect_error", 390000);
    CHECK_EV(&log, 5, "lm", false, "expired", 390000);
    CHECK_EV(&log, 6, "lm", true, "connect_error", 690000);
    mg_health_stats_t st;
    MG_CHECK(mg_health_query(h, "lm", NULL, 390000, &st));
    MG_CHECK_INT(st.level, 4);
    MG_CHECK_INT(st.consecutive_failures, 4);
    MG_CHECK(st.cooling_down && st.scope == MG_HEALTH_SCOPE_PROVIDER && st.cooldown_class == MG_CLASS_CONNECT_ERROR);
    mg_health_free(h);
}

MG_TEST(success_resets_the_ladder)
{
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 30000);
    MG_CHECK_INT(until_of(h, "lm", NULL, 30000), 90000);
    /* the all-cooling fallback tried it anyway, and it answered */
    mg_health_record(h, "lm", "lm/a", MG_CLASS_OK, 200, -1, 120, 40, NULL, 40000);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 40000, NULL));
    mg_health_stats_t st;
    mg_health_query(h, "lm", NULL, 40000, &st);
    MG_CHECK_INT(st.level, 0);
    MG_CHECK_INT(st.consecutive_failures, 0);
    MG_CHECK_INT(st.successes_total, 1);
    MG_CHECK_INT(st.failures_total, 2);
    CHECK_EV(&log, log.n - 1, "lm", false, "success", -1);
    /* back to the first step */
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 50000);
    MG_CHECK_INT(until_of(h, "lm", NULL, 50000), 80000);
    mg_health_free(h);
}

MG_TEST(extension_never_shortens)
{
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 10000); /* in-flight attempts failing too */
    MG_CHECK_INT(until_of(h, "lm", NULL, 10000), 40000);  /* extended from now, same step */
    fail(h, "lm", "lm/b", MG_CLASS_AUTH, 11000);
    MG_CHECK_INT(until_of(h, "lm", NULL, 11000), 41000);
    MG_CHECK_INT(log.n, 1); /* one transition, however many failures */
    /* a long retry-after, then a shorter one: the long one stands */
    mg_health_record(h, "oa", "oa/c", MG_CLASS_RATE_LIMIT, 429, 120000, -1, -1, "slow down", 0);
    MG_CHECK_INT(until_of(h, "oa", "oa/c", 0), 120000);
    mg_health_record(h, "oa", "oa/c", MG_CLASS_RATE_LIMIT, 429, 5000, -1, -1, "slow down", 1000);
    MG_CHECK_INT(until_of(h, "oa", "oa/c", 1000), 120000);
    for (int i = 0; i < 3; i++) fail(h, "oa", "oa/c", MG_CLASS_SERVER_ERROR, 2000);
    MG_CHECK_INT(until_of(h, "oa", "oa/c", 2000), 120000);
    MG_CHECK_INT(log.n, 2);
    mg_health_free(h);
}

MG_TEST(rate_limit_honours_retry_after)
{
    mg_health_t *h = new_health(NULL);
    mg_health_record(h, "oa", "oa/c", MG_CLASS_RATE_LIMIT, 429, 45000, -1, -1, NULL, 1000);
    MG_CHECK_INT(until_of(h, "oa", "oa/c", 1000), 46000);
    MG_CHECK(mg_health_available(h, "oa", NULL, 1000, NULL)); /* model scope */
    /* without retry-after: the ladder */
    mg_health_record(h, "an", "an/d", MG_CLASS_RATE_LIMIT, 429, -1, -1, -1, NULL, 1000);
    MG_CHECK_INT(until_of(h, "an", "an/d", 1000), 31000);
    /* retry-after 0: nothing to wait for */
    mg_health_record(h, "lm", "lm/a", MG_CLASS_RATE_LIMIT, 429, 0, -1, -1, NULL, 1000);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 1000, NULL));
    mg_health_free(h);
}

MG_TEST(transient_classes_need_three_in_a_row)
{
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    fail(h, "lm", "lm/a", MG_CLASS_SERVER_ERROR, 0);
    fail(h, "lm", "lm/a", MG_CLASS_SERVER_ERROR, 1);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 2, NULL));
    mg_health_record(h, "lm", "lm/a", MG_CLASS_OK, 200, -1, 10, -1, NULL, 3); /* resets the count */
    fail(h, "lm", "lm/a", MG_CLASS_SERVER_ERROR, 4);
    fail(h, "lm", "lm/a", MG_CLASS_SERVER_ERROR, 5);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 6, NULL));
    fail(h, "lm", "lm/a", MG_CLASS_SERVER_ERROR, 6);
    MG_CHECK_INT(until_of(h, "lm", "lm/a", 6), 30006);
    MG_CHECK(mg_health_available(h, "lm", "lm/b", 6, NULL)); /* server_error is model-scoped */
    MG_CHECK(mg_health_available(h, "lm", NULL, 6, NULL));
    /* overloaded is provider-scoped */
    for (int i = 0; i < 3; i++) fail(h, "oa", "oa/c", MG_CLASS_OVERLOADED, 10);
    MG_CHECK(!mg_health_available(h, "oa", NULL, 10, NULL));
    MG_CHECK_INT(log.n, 2);
    CHECK_EV(&log, 0, "lm/a", true, "server_error", 30006);
    CHECK_EV(&log, 1, "oa", true, "overloaded", 30010);
    mg_health_free(h);
}

MG_TEST(model_scope_leaves_the_sibling)
{
    fake_cfg_t f;
    fake_cfg(&f);
    mg_health_t *h = new_health(NULL);
    fail(h, "lm", "lm/a", MG_CLASS_MODEL_NOT_LOADED, 0);
    MG_CHECK(!mg_health_available(h, "lm", "lm/a", 0, NULL));
    MG_CHECK(mg_health_available(h, "lm", "lm/b", 0, NULL));
    MG_CHECK(mg_health_available(h, "lm", NULL, 0, NULL));
    const mg_model_t *cands[] = {&f.m[0], &f.m[1]};
    size_t idx[2];
    MG_CHECK_INT(mg_health_order(h, cands, 2, 0, idx), 1);
    MG_CHECK_INT(idx[0], 1);
    fail(h, "lm", "lm/b", MG_CLASS_MODEL_NOT_FOUND, 0);
    MG_CHECK(!mg_health_available(h, "lm", "lm/b", 0, NULL));
    MG_CHECK(mg_health_available(h, "lm", NULL, 0, NULL));
    mg_health_stats_t st;
    mg_health_query(h, "lm", "lm/a", 0, &st);
    MG_CHECK(st.scope == MG_HEALTH_SCOPE_MODEL && st.cooldown_class == MG_CLASS_MODEL_NOT_LOADED);
    /* auth and billing cool the whole provider */
    fail(h, "oa", "oa/c", MG_CLASS_BILLING, 0);
    mg_health_query(h, "oa", "oa/c", 0, &st);
    MG_CHECK(st.scope == MG_HEALTH_SCOPE_PROVIDER && st.cooling_down && st.cooldown_until_ms == 30000);
    mg_health_free(h);
}

MG_TEST(request_faults_never_cool)
{
    mg_health_t *h = new_health(NULL);
    mg_class_t classes[] = {MG_CLASS_CONTEXT_OVERFLOW, MG_CLASS_BAD_REQUEST, MG_CLASS_CONTENT_FILTER,
                            MG_CLASS_UNSUPPORTED, MG_CLASS_TOO_LARGE, MG_CLASS_NO_KEY, MG_CLASS_CANCELLED};
    for (int r = 0; r < 10; r++)
        for (size_t i = 0; i < MG_ARRAY_LEN(classes); i++) fail(h, "lm", "lm/a", classes[i], r);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 10, NULL));
    mg_health_stats_t st;
    mg_health_query(h, "lm", "lm/a", 10, &st);
    MG_CHECK_INT(st.failures_total, 0);
    MG_CHECK_INT(st.rejected_total, 60); /* cancelled is not counted */
    MG_CHECK_INT(st.consecutive_failures, 0);
    MG_CHECK(st.last_class == MG_CLASS_OK);
    mg_health_outcome_t o = mg_health_outcome(MG_CLASS_CONTEXT_OVERFLOW);
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 0, 10).action == MG_HEALTH_NEXT);
    o.cls = MG_CLASS_BAD_REQUEST;
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 0, 10).action == MG_HEALTH_STOP);
    o.cls = MG_CLASS_CONTENT_FILTER;
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 0, 10).action == MG_HEALTH_STOP);
    o.cls = MG_CLASS_OK;
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 0, 10).action == MG_HEALTH_STOP);
    mg_health_free(h);
}

MG_TEST(overflow_moves_only_to_a_larger_window)
{
    fake_cfg_t f;
    fake_cfg(&f); /* windows: a 8192, b 32768, c 128000, d unknown */
#define W(i) f.m[i].context_window
    MG_CHECK(mg_health_should_try(W(0), W(1)));
    MG_CHECK(mg_health_should_try(W(1), W(2)));
    MG_CHECK(!mg_health_should_try(W(1), W(0)));
    MG_CHECK(!mg_health_should_try(W(1), W(1)));
    MG_CHECK(!mg_health_should_try(W(0), W(3))); /* unknown candidate window */
    MG_CHECK(mg_health_should_try(W(3), W(0)));  /* unknown overflowed window */
#undef W
}

MG_TEST(all_cooling_tries_the_soonest)
{
    fake_cfg_t f;
    fake_cfg(&f);
    mg_health_t *h = new_health(NULL);
    const mg_model_t *cands[] = {&f.m[0], &f.m[2], &f.m[3]};
    size_t idx[3];
    MG_CHECK_INT(mg_health_order(h, cands, 3, 0, idx), 3);
    MG_CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 2);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0);                                  /* until 30000 */
    mg_health_record(h, "oa", "oa/c", MG_CLASS_RATE_LIMIT, 429, 10000, -1, -1, NULL, 0); /* until 10000 */
    fail(h, "an", "an/d", MG_CLASS_AUTH, 5000);                                         /* until 35000 */
    MG_CHECK_INT(mg_health_order(h, cands, 3, 6000, idx), 1);
    MG_CHECK_INT(idx[0], 1);
    /* once oa/c is back it is the only one available */
    MG_CHECK_INT(mg_health_order(h, cands, 3, 10000, idx), 1);
    MG_CHECK_INT(idx[0], 1);
    /* ties go to the earliest candidate */
    fail(h, "oa", "oa/c", MG_CLASS_AUTH, 5000); /* until 35000, like an/d */
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 30000); /* until 90000 */
    MG_CHECK_INT(mg_health_order(h, cands, 3, 30000, idx), 1);
    MG_CHECK_INT(idx[0], 1);
    MG_CHECK_INT(mg_health_order(h, cands, 0, 0, idx), 0);
    mg_health_free(h);
}

MG_TEST(probe_one_in_flight_and_results)
{
    fake_cfg_t f;
    fake_cfg(&f);
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    MG_CHECK(!mg_health_probe_due(h, "lm", 0)); /* unknown provider */
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0); /* until 30000 */
    MG_CHECK(!mg_health_probe_due(h, "lm", 24999)); /* not yet within 5 s of the end */
    MG_CHECK(mg_health_probe_due(h, "lm", 25000));
    MG_CHECK(!mg_health_probe_due(h, "lm", 25001)); /* one in flight */
    mg_health_stats_t st;
    mg_health_query(h, "lm", NULL, 25001, &st);
    MG_CHECK(st.probe_in_flight);
    /* the server is back, but lists only model a: b counts as not loaded */
    const char *listed[] = {"a", "other"};
    mg_health_probe_result(h, &f.p[0], 0, true, listed, 2, NULL, 26000);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 26000, NULL));
    MG_CHECK_INT(until_of(h, "lm", "lm/b", 26000), 56000);
    MG_CHECK_INT(log.n, 3);
    CHECK_EV(&log, 1, "lm", false, "probe", -1);
    CHECK_EV(&log, 2, "lm/b", true, "model_not_loaded", 56000);
    mg_health_query(h, "lm", "lm/b", 26000, &st);
    MG_CHECK_STR(st.last_message, "not listed by GET /models");
    /* b's cooldown is probe-able too; this time the server lists it (as an Ollama tag) */
    MG_CHECK(!mg_health_probe_due(h, "lm", 50999));
    MG_CHECK(mg_health_probe_due(h, "lm", 51000));
    const char *listed2[] = {"a", "b:latest"};
    mg_health_probe_result(h, &f.p[0], 0, true, listed2, 2, NULL, 51500);
    MG_CHECK(mg_health_available(h, "lm", "lm/b", 51500, NULL));
    CHECK_EV(&log, 3, "lm/b", false, "probe", -1);
    /* an empty list changes no model */
    fail(h, "lm", "lm/a", MG_CLASS_MODEL_NOT_LOADED, 60000);
    mg_health_probe_result(h, &f.p[0], 0, true, NULL, 0, NULL, 61000);
    MG_CHECK(!mg_health_available(h, "lm", "lm/a", 61000, NULL));
    MG_CHECK(mg_health_available(h, "lm", "lm/b", 61000, NULL));
    /* auth, billing and rate limits are not probed: only time ends them */
    fail(h, "oa", "oa/c", MG_CLASS_AUTH, 0);
    MG_CHECK(!mg_health_probe_due(h, "oa", 29000));
    mg_health_free(h);
}

MG_TEST(probe_failure_climbs_and_probe_timeout)
{
    fake_cfg_t f;
    fake_cfg(&f);
    mg_health_t *h = new_health(NULL);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0);
    MG_CHECK(mg_health_probe_due(h, "lm", 25000));
    mg_health_probe_result(h, &f.p[0], 0, false, NULL, 0, "connection refused", 25500);
    MG_CHECK_INT(until_of(h, "lm", NULL, 25500), 85500); /* now + 1 min */
    mg_health_stats_t st;
    mg_health_query(h, "lm", NULL, 25500, &st);
    MG_CHECK_STR(st.last_message, "probe GET /models failed: connection refused");
    MG_CHECK(!st.probe_in_flight);
    /* a claimed probe that never reports is forgotten after probe_timeout_ms (15 s) */
    MG_CHECK(mg_health_probe_due(h, "lm", 80500));
    MG_CHECK(!mg_health_probe_due(h, "lm", 81000));
    MG_CHECK(!mg_health_probe_due(h, "lm", 85499)); /* 4999 ms after the claim... */
    mg_health_settings_t s;
    mg_health_settings_default(&s);
    s.probe_timeout_ms = 2000;
    mg_health_configure(h, &s);
    MG_CHECK(mg_health_probe_due(h, "lm", 82500)); /* ...but 2000 after it, with the new setting */
    mg_health_free(h);
}

MG_TEST(probe_from_raw_answers)
{
    fake_cfg_t f;
    fake_cfg(&f);
    mg_health_t *h = new_health(NULL);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0);
    fail(h, "lm", "lm/b", MG_CLASS_MODEL_NOT_LOADED, 0);
    const char *body = "{\"object\":\"list\",\"data\":[{\"id\":\"a\",\"object\":\"model\"},"
                       "{\"id\":\"zzz\"},{\"nope\":1}]}";
    mg_health_probe_response(h, &f.p[0], 0, 200, body, strlen(body), NULL, 26000);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 26000, NULL));
    MG_CHECK_INT(until_of(h, "lm", "lm/b", 26000), 56000); /* still not listed: now + 30 s */
    /* the probe's success kept the provider's step (1): a failure now cools for the next one */
    mg_health_probe_response(h, &f.p[0], 0, 0, NULL, 0, "Connection refused", 27000);
    MG_CHECK_INT(until_of(h, "lm", NULL, 27000), 87000);
    mg_health_stats_t st;
    mg_health_query(h, "lm", NULL, 27000, &st);
    MG_CHECK_STR(st.last_message, "probe GET /models failed: Connection refused");
    mg_health_probe_response(h, &f.p[0], 0, 502, "bad", 3, NULL, 28000); /* a failed probe: a step up */
    MG_CHECK_INT(until_of(h, "lm", NULL, 28000), 328000);
    mg_health_query(h, "lm", NULL, 28000, &st);
    MG_CHECK_STR(st.last_message, "probe GET /models failed: HTTP 502");
    /* a 404 (no /models on this server) still proves it is up; the models stay as they are */
    mg_health_probe_response(h, &f.p[0], 0, 404, "not found", 9, NULL, 29000);
    MG_CHECK(mg_health_available(h, "lm", NULL, 29000, NULL));
    MG_CHECK(!mg_health_available(h, "lm", "lm/b", 29000, NULL));
    /* the Anthropic list shape works too */
    body = "{\"data\":[{\"type\":\"model\",\"id\":\"b\",\"display_name\":\"B\"}],\"has_more\":false}";
    mg_health_probe_response(h, &f.p[0], 0, 200, body, strlen(body), NULL, 29500);
    MG_CHECK(mg_health_available(h, "lm", "lm/b", 29500, NULL));
    mg_health_free(h);
}

MG_TEST(change_callback_fires_once_per_transition)
{
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    for (int i = 0; i < 5; i++) fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, i * 100);
    MG_CHECK_INT(log.n, 1);
    /* the end by time is seen by whoever looks first, and reported once */
    mg_health_tick(h, 30399);
    MG_CHECK_INT(log.n, 1);
    mg_health_tick(h, 30400);
    MG_CHECK_INT(log.n, 2);
    mg_health_tick(h, 30500);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 30600, NULL));
    mg_buf_t b = {0};
    mg_health_dump_json(h, &b, 30700);
    mg_buf_free(&b);
    MG_CHECK_INT(log.n, 2);
    CHECK_EV(&log, 1, "lm", false, "expired", 30400);
    /* a connect-error cooldown ends when the server answers anything over HTTP */
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 40000);
    mg_health_record(h, "lm", "lm/a", MG_CLASS_BAD_REQUEST, 400, -1, -1, -1, "bad", 40100);
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 40100, NULL));
    MG_CHECK_INT(log.n, 4);
    CHECK_EV(&log, 3, "lm", false, "reachable", -1);
    mg_health_free(h);
}

/* The fake catalog with addresses (lm local, oa hosted), as a config for mg_health_add_config. */
static void addressed_cfg(fake_cfg_t *f, mg_config_t *cfg)
{
    fake_cfg(f);
    f->p[0].base_url = "http://127.0.0.1:1234/v1";
    f->p[1].base_url = "https://api.openai.com/v1";
    memset(cfg, 0, sizeof *cfg);
    cfg->providers = f->p;
    cfg->n_providers = 3;
}

MG_TEST(a_changed_endpoint_starts_afresh)
{
    fake_cfg_t f;
    mg_config_t cfg;
    addressed_cfg(&f, &cfg);
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    mg_health_add_config(h, &cfg, 0);
    mg_health_record(h, "lm", "lm/a", MG_CLASS_OK, 200, -1, 700, -1, NULL, 900);
    fail(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 1000); /* the provider cools */
    fail(h, "lm", "lm/b", MG_CLASS_MODEL_NOT_FOUND, 1000); /* and one of its models */
    fail(h, "oa", "oa/c", MG_CLASS_AUTH, 1000);
    MG_CHECK_INT(log.n, 3);
    MG_CHECK(!mg_health_available(h, "lm", NULL, 2000, NULL));
    MG_CHECK(!mg_health_available(h, "oa", NULL, 2000, NULL));
    /* The same config again (a reload that changed something else): nothing is forgotten. */
    mg_health_add_config(h, &cfg, 1500);
    MG_CHECK(!mg_health_available(h, "lm", NULL, 2000, NULL));
    MG_CHECK(!mg_health_available(h, "lm", "lm/b", 2000, NULL));
    int before = log.n;
    uint64_t old_ep = mg_health_endpoint(&f.p[0]);
    MG_CHECK(old_ep != 0);
    /* lm moved to another port: its state and its models' are about the old one. oa's key did
     * not change, so its auth cooldown stands. */
    f.p[0].base_url = "http://127.0.0.1:8080/v1";
    uint64_t new_ep = mg_health_endpoint(&f.p[0]);
    MG_CHECK(new_ep != old_ep);
    mg_health_add_config(h, &cfg, 1500);
    MG_CHECK(mg_health_available(h, "lm", NULL, 2000, NULL));
    MG_CHECK(mg_health_available(h, "lm", "lm/a", 2000, NULL));
    MG_CHECK(mg_health_available(h, "lm", "lm/b", 2000, NULL));
    MG_CHECK(!mg_health_available(h, "oa", NULL, 2000, NULL));
    MG_CHECK_INT(log.n, before + 2); /* lm and lm/b were reported cooling: now they are not */
    CHECK_EV(&log, before, "lm", false, "reconfigured", -1);
    CHECK_EV(&log, before + 1, "lm/b", false, "reconfigured", -1);
    mg_health_stats_t st;
    mg_health_query(h, "lm", "lm/a", 2000, &st);
    MG_CHECK_INT(st.consecutive_failures, 0);
    MG_CHECK_INT(st.latency_samples, 0); /* the old endpoint's samples are gone */
    MG_CHECK_INT(st.latency_p50, -1);
    MG_CHECK_INT(st.successes_total, 1); /* totals stay */
    /* Attempts and probes still in flight to the old address end after the reload: what they
     * say is about it, and must not cool the new one. */
    mg_health_outcome_t o = mg_health_outcome(MG_CLASS_CONNECT_ERROR);
    o.endpoint = old_ep;
    mg_health_report(h, "lm", "lm/a", &o, 1700);
    mg_health_probe_result(h, &f.p[0], old_ep, false, NULL, 0, "refused", 1700);
    MG_CHECK(mg_health_available(h, "lm", NULL, 2000, NULL));
    mg_health_query(h, "lm", NULL, 2000, &st);
    MG_CHECK_INT(st.failures_total, 2); /* only lm/a's and lm/b's, before the reload */
    o.endpoint = new_ep; /* the new address refusing is news */
    mg_health_report(h, "lm", "lm/a", &o, 1800);
    MG_CHECK(!mg_health_available(h, "lm", NULL, 2000, NULL));
    /* A new key is a new endpoint too. */
    f.p[1].api_key = "sk-new";
    mg_health_add_config(h, &cfg, 1600);
    MG_CHECK(mg_health_available(h, "oa", NULL, 2000, NULL));
    mg_health_free(h);
}

/* A window a server named: in force for MG_HEALTH_WINDOW_TTL_MS, shown in the stats, ignored
 * when about an old endpoint, forgotten when the provider's endpoint changes. */
MG_TEST(learned_windows)
{
    fake_cfg_t f;
    mg_config_t cfg;
    addressed_cfg(&f, &cfg);
    evlog_t log = {0};
    mg_health_t *h = new_health(&log);
    MG_CHECK_INT(mg_health_window(h, "lm/a", 0), 0);
    mg_health_add_config(h, &cfg, 0);
    uint64_t ep = mg_health_endpoint(&f.p[0]);
    mg_health_learn_window(h, "lm", "lm/a", ep, 4096, 1000);
    MG_CHECK_INT(mg_health_window(h, "lm/a", 1000), 4096);
    MG_CHECK_INT(mg_health_window(h, "lm/b", 1000), 0);
    MG_CHECK_INT(mg_health_window(h, "lm/a", 1000 + MG_HEALTH_WINDOW_TTL_MS - 1), 4096);
    MG_CHECK_INT(mg_health_window(h, "lm/a", 1000 + MG_HEALTH_WINDOW_TTL_MS), 0);
    mg_health_stats_t st;
    mg_health_query(h, "lm", "lm/a", 2000, &st);
    MG_CHECK_INT(st.learned_window, 4096);
    mg_health_learn_window(h, "lm", "lm/a", ep, 2048, 3000); /* a newer word replaces it */
    MG_CHECK_INT(mg_health_window(h, "lm/a", 3000), 2048);
    mg_health_learn_window(h, "lm", "lm/a", ep + 1, 1024, 3000); /* about another endpoint */
    MG_CHECK_INT(mg_health_window(h, "lm/a", 3000), 2048);
    mg_health_add_config(h, &cfg, 3500); /* a reload that changes nothing of lm/a */
    MG_CHECK_INT(mg_health_window(h, "lm/a", 3500), 2048);
    f.m[0].context_window = 4096; /* a reload that changes its contextWindow: the admin's new word */
    mg_health_add_config(h, &cfg, 3500);
    MG_CHECK_INT(mg_health_window(h, "lm/a", 3500), 0);
    mg_health_learn_window(h, "lm", "lm/a", ep, 2048, 3600);
    f.p[0].base_url = "http://127.0.0.1:8080/v1"; /* another server now */
    mg_health_add_config(h, &cfg, 4000);
    MG_CHECK_INT(mg_health_window(h, "lm/a", 4000), 0);
    mg_health_free(h);
}

MG_TEST(connect_timeout_cools_the_provider)
{
    mg_health_t *h = new_health(NULL);
    mg_health_outcome_t o = mg_health_outcome(MG_CLASS_TIMEOUT);
    o.xfer = MG_XFER_TIMEOUT_FIRST_TOKEN;
    mg_health_report(h, "lm", "lm/a", &o, 0);
    MG_CHECK(mg_health_available(h, "lm", NULL, 0, NULL)); /* a slow model: 3 in a row, model only */
    o.xfer = MG_XFER_TIMEOUT_CONNECT;
    mg_health_report(h, "oa", "oa/c", &o, 0);
    MG_CHECK_INT(until_of(h, "oa", NULL, 0), 30000);
    MG_CHECK(mg_health_decide(h, "oa", "oa/c", &o, 0, 0).action == MG_HEALTH_NEXT);
    mg_health_free(h);
}

/* ---- retries */

static mg_health_t *rich_health(unsigned max_retries)
{
    mg_health_settings_t s;
    mg_health_settings_default(&s);
    s.seed = 7;
    s.retry_budget_initial = 1e6;
    s.retry_budget_max = 1e6;
    s.max_retries = max_retries;
    return mg_health_new(&s);
}

MG_TEST(retry_backoff_is_jittered_and_capped)
{
    mg_health_t *h = rich_health(10);
    mg_health_outcome_t o = mg_health_outcome(MG_CLASS_SERVER_ERROR);
    static const int64_t lo[] = {125, 250, 500, 1000, 1000, 1000}, hi[] = {250, 500, 1000, 2000, 2000, 2000};
    for (unsigned n = 0; n < 6; n++) {
        int64_t mn = INT64_MAX, mx = INT64_MIN;
        for (int i = 0; i < 200; i++) {
            mg_health_decision_t d = mg_health_decide(h, "lm", "lm/a", &o, n, 0);
            MG_CHECK(d.action == MG_HEALTH_RETRY);
            mn = MG_MIN(mn, d.delay_ms);
            mx = MG_MAX(mx, d.delay_ms);
        }
        if (mn < lo[n] || mx > hi[n] || mn == mx) {
            fprintf(stderr, "  retries_done %u: delays in [%lld, %lld], want within [%lld, %lld] and spread\n", n,
                    (long long)mn, (long long)mx, (long long)lo[n], (long long)hi[n]);
            mg_test_failures++;
        }
    }
    mg_health_free(h);
}

MG_TEST(retry_rules)
{
    mg_health_t *h = rich_health(2);
    mg_health_outcome_t o = mg_health_outcome(MG_CLASS_OVERLOADED);
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 1, 0).action == MG_HEALTH_RETRY);
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 2, 0).action == MG_HEALTH_NEXT); /* max_retries */
    o.should_retry = 0;
    MG_CHECK(mg_health_decide(h, "lm", "lm/a", &o, 0, 0).action == MG_HEALTH_NEXT); /* x-should-retry: false */
    /* rate limit: a short retry-after is waited for, a long one is not */
    o = mg_health_outcome(MG_CLASS_RATE_LIMIT);
    o.retry_after_ms = 500;
    mg_health_report(h, "oa", "oa/c", &o, 0);
    mg_health_decision_t d = mg_health_decide(h, "oa", "oa/c", &o, 0, 0);
    MG_CHECK(d.action == MG_HEALTH_RETRY && d.delay_ms >= 500 && d.delay_ms <= 550);
    MG_CHECK(d.scope == MG_HEALTH_SCOPE_MODEL && d.cooldown_until_ms == 500);
    o.retry_after_ms = 5000;
    MG_CHECK(mg_health_decide(h, "oa", "oa/c", &o, 0, 0).action == MG_HEALTH_NEXT);
    o.retry_after_ms = -1;
    MG_CHECK(mg_health_decide(h, "oa", "oa/c", &o, 0, 0).action == MG_HEALTH_NEXT);
    /* A 503 that says when to come back is believed: not retried in 250 ms when it said 30 s,
     * and its provider cools for exactly that; a short one is waited for. */
    o = mg_health_outcome(MG_CLASS_OVERLOADED);
    o.retry_after_ms = 30000;
    mg_health_report(h, "ov", "ov/a", &o, 0);
    d = mg_health_decide(h, "ov", "ov/a", &o, 0, 0);
    MG_CHECK(d.action == MG_HEALTH_NEXT && d.cooldown_until_ms == 30000);
    MG_CHECK(!mg_health_probe_due(h, "ov", 29000)); /* the server's own word: no probe ends it early */
    o.retry_after_ms = 1000;
    d = mg_health_decide(h, "ow", "ow/a", &o, 0, 0);
    MG_CHECK(d.action == MG_HEALTH_RETRY && d.delay_ms >= 1000 && d.delay_ms <= 1100);
    /* Retry-After is a floor, not a ceiling: 503s saying "1 s" again and again still climb the
     * ladder (30 s after 3 in a row); "0" is no hint (the usual backoff, not 0 ms). */
    for (int i = 0; i < 3; i++) mg_health_report(h, "ox", "ox/a", &o, 10);
    MG_CHECK_INT(mg_health_decide(h, "ox", "ox/a", &o, 0, 10).cooldown_until_ms, 30010);
    o.retry_after_ms = 0;
    d = mg_health_decide(h, "oy", "oy/a", &o, 0, 0);
    MG_CHECK(d.action == MG_HEALTH_RETRY && d.delay_ms >= 125);
    /* A 500 with a long Retry-After keeps the usual backoff (only 429s and 503/529s are told). */
    o = mg_health_outcome(MG_CLASS_SERVER_ERROR);
    o.retry_after_ms = 30000;
    MG_CHECK(mg_health_decide(h, "oz", "oz/a", &o, 0, 0).action == MG_HEALTH_RETRY);
    /* connect_error: one quick retry even though the provider now cools, then move on */
    o = mg_health_outcome(MG_CLASS_CONNECT_ERROR);
    mg_health_report(h, "an", "an/d", &o, 0);
    d = mg_health_decide(h, "an", "an/d", &o, 0, 0);
    MG_CHECK(d.action == MG_HEALTH_RETRY && d.scope == MG_HEALTH_SCOPE_PROVIDER && d.cooldown_until_ms == 30000);
    MG_CHECK(mg_health_decide(h, "an", "an/d", &o, 1, 0).action == MG_HEALTH_NEXT);
    /* never retry into a cooldown: the third server_error cools the model */
    o = mg_health_outcome(MG_CLASS_SERVER_ERROR);
    for (int i = 0; i < 3; i++) mg_health_report(h, "lm", "lm/b", &o, 100);
    d = mg_health_decide(h, "lm", "lm/b", &o, 0, 100);
    MG_CHECK(d.action == MG_HEALTH_NEXT && d.cooldown_until_ms == 30100);
    /* classes that never retry */
    mg_class_t no[] = {MG_CLASS_AUTH, MG_CLASS_BILLING, MG_CLASS_MODEL_NOT_FOUND, MG_CLASS_MODEL_NOT_LOADED,
                       MG_CLASS_TIMEOUT, MG_CLASS_STREAM_BROKEN, MG_CLASS_UNSUPPORTED};
    for (size_t i = 0; i < MG_ARRAY_LEN(no); i++) {
        o = mg_health_outcome(no[i]);
        MG_CHECK(mg_health_decide(h, "x", "x/y", &o, 0, 0).action == MG_HEALTH_NEXT);
    }
    mg_health_free(h);
}

typedef enum { UP_ALWAYS_503, UP_FIRST_FAILS } upstream_t;

/* One client request at a time against a single candidate: order, attempt, report, decide, and
 * follow the decision. Returns the number of upstream sends. */
static long simulate(mg_health_t *h, const mg_model_t *m, upstream_t up, int n_requests, long *retries_out)
{
    long sends = 0, retries = 0;
    int64_t now = 0;
    const mg_model_t *cands[] = {m};
    for (int r = 0; r < n_requests; r++, now += 100) {
        size_t idx[1];
        if (mg_health_order(h, cands, 1, now, idx) != 1) break; /* never fails closed */
        for (unsigned tries = 0;; tries++) {
            mg_health_attempt_begin(h, m->provider->id, m->ref, tries > 0, now);
            sends++;
            bool ok = up == UP_FIRST_FAILS && tries > 0;
            mg_health_outcome_t o = mg_health_outcome(ok ? MG_CLASS_OK : MG_CLASS_OVERLOADED);
            o.http_status = ok ? 200 : 503;
            mg_health_attempt_end(h, m->provider->id, m->ref);
            mg_health_report(h, m->provider->id, m->ref, &o, now);
            if (ok) break;
            mg_health_decision_t d = mg_health_decide(h, m->provider->id, m->ref, &o, tries, now);
            if (d.action != MG_HEALTH_RETRY) break;
            retries++;
            now += d.delay_ms;
        }
    }
    if (retries_out) *retries_out = retries;
    return sends;
}

MG_TEST(retry_budget_under_100pct_503)
{
    fake_cfg_t f;
    fake_cfg(&f);
    long retries;
    /* Defaults: cooldowns and the budget together. The upstream never sees more than the client
     * rate here: after three failures it cools, and nothing retries into a cooldown; the
     * all-cooling fallback still sends each request once. */
    mg_health_t *h = new_health(NULL);
    long sends = simulate(h, &f.m[0], UP_ALWAYS_503, 1000, &retries);
    printf("  100%% 503, defaults: %ld sends for 1000 requests (%ld retries)\n", sends, retries);
    MG_CHECK(sends <= 1200);
    MG_CHECK_INT(sends, 1000);
    mg_health_free(h);

    /* The budget alone (cooldowns never start): exactly ratio × requests retries. */
    mg_health_settings_t s;
    mg_health_settings_default(&s);
    s.seed = 3;
    s.failures_before_cooldown = UINT_MAX;
    h = mg_health_new(&s);
    sends = simulate(h, &f.m[0], UP_ALWAYS_503, 1000, &retries);
    printf("  100%% 503, no cooldowns: %ld sends for 1000 requests (%ld retries)\n", sends, retries);
    MG_CHECK_INT(sends, 1200);
    MG_CHECK_INT(retries, 200);
    mg_health_stats_t st;
    mg_health_query(h, "lm", NULL, 0, &st);
    MG_CHECK_INT(st.retries_total, 200);
    MG_CHECK(st.retries_denied >= 700);
    MG_CHECK(st.retry_tokens < 1.0);
    mg_health_free(h);

    /* A flapping upstream (every retry would succeed, so cooldowns never start) gets no more. */
    h = mg_health_new(&s);
    sends = simulate(h, &f.m[0], UP_FIRST_FAILS, 1000, &retries);
    printf("  first attempt fails, retries succeed: %ld sends for 1000 requests\n", sends);
    MG_CHECK_INT(sends, 1200);
    mg_health_query(h, "lm", "lm/a", 0, &st);
    MG_CHECK_INT(st.successes_total, 200);
    mg_health_free(h);

    /* Without a budget limit the same upstream would get 3 sends per request. */
    h = rich_health(2);
    mg_health_settings_t rs;
    mg_health_settings_default(&rs);
    rs.retry_budget_initial = rs.retry_budget_max = 1e6;
    rs.failures_before_cooldown = UINT_MAX;
    mg_health_configure(h, &rs);
    sends = simulate(h, &f.m[2], UP_ALWAYS_503, 100, NULL);
    MG_CHECK_INT(sends, 300);
    mg_health_free(h);
}

/* ---- visibility */

MG_TEST(percentiles_and_error_window)
{
    mg_health_t *h = new_health(NULL);
    for (int i = 1; i <= 100; i++) mg_health_record(h, "lm", "lm/a", MG_CLASS_OK, 200, -1, i, i * 10, NULL, 1000);
    mg_health_stats_t st;
    MG_CHECK(mg_health_query(h, "lm", "lm/a", 1000, &st));
    MG_CHECK_INT(st.latency_p50, 50);
    MG_CHECK_INT(st.latency_p95, 95);
    MG_CHECK_INT(st.latency_p99, 99);
    MG_CHECK_INT(st.ttft_p50, 500);
    MG_CHECK_INT(st.ttft_p99, 990);
    MG_CHECK_INT(st.latency_samples, 100);
    /* a bounded ring: the last 256 samples (45..300) */
    for (int i = 101; i <= 300; i++) mg_health_record(h, "lm", "lm/a", MG_CLASS_OK, 200, -1, i, -1, NULL, 1000);
    mg_health_query(h, "lm", "lm/a", 1000, &st);
    MG_CHECK_INT(st.latency_samples, 256);
    MG_CHECK_INT(st.latency_p50, 172);
    MG_CHECK_INT(st.latency_p99, 298);
    MG_CHECK_INT(st.ttft_samples, 100); /* -1 is not a sample */
    /* error rate over the last minute */
    mg_health_t *h2 = new_health(NULL);
    for (int i = 0; i < 3; i++) fail(h2, "oa", "oa/c", MG_CLASS_SERVER_ERROR, 5000);
    mg_health_record(h2, "oa", "oa/c", MG_CLASS_OK, 200, -1, 5, -1, NULL, 15000);
    mg_health_query(h2, "oa", "oa/c", 20000, &st);
    MG_CHECK_INT(st.window_requests, 4);
    MG_CHECK(st.error_rate == 0.75);
    mg_health_query(h2, "oa", "oa/c", 62000, &st); /* the 0-10 s bucket fell out */
    MG_CHECK_INT(st.window_requests, 1);
    mg_health_query(h2, "oa", "oa/c", 80000, &st);
    MG_CHECK_INT(st.window_requests, 0);
    MG_CHECK(st.error_rate == 0.0);
    MG_CHECK(!mg_health_query(h2, "oa", "oa/zzz", 0, &st) && st.healthy);
    mg_health_free(h);
    mg_health_free(h2);
}

MG_TEST(in_flight_counts)
{
    mg_health_t *h = new_health(NULL);
    for (int i = 0; i < 3; i++) mg_health_attempt_begin(h, "lm", "lm/a", false, 0);
    mg_health_attempt_begin(h, "lm", "lm/b", false, 0);
    mg_health_attempt_end(h, "lm", "lm/a");
    mg_health_stats_t st;
    mg_health_query(h, "lm", "lm/a", 0, &st);
    MG_CHECK_INT(st.in_flight, 2);
    mg_health_query(h, "lm", NULL, 0, &st);
    MG_CHECK_INT(st.in_flight, 3);
    for (int i = 0; i < 5; i++) mg_health_attempt_end(h, "lm", "lm/b");
    mg_health_query(h, "lm", "lm/b", 0, &st);
    MG_CHECK_INT(st.in_flight, 0);
    mg_health_query(h, "lm", NULL, 0, &st);
    MG_CHECK_INT(st.in_flight, 2); /* a and a; the 4 extra ends of b were ignored */
    mg_health_free(h);
}

static const cJSON *jget(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

MG_TEST(admin_health_json)
{
    fake_cfg_t f;
    fake_cfg(&f);
    mg_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.providers = f.p;
    cfg.n_providers = 3;
    mg_health_t *h = new_health(NULL);
    mg_health_add_config(h, &cfg, 0);
    mg_health_record(h, "lm", "lm/a", MG_CLASS_CONNECT_ERROR, 0, -1, -1, -1, "connection refused \"x\"", 1000);
    mg_health_record(h, "oa", "oa/c", MG_CLASS_OK, 200, -1, 420, 80, NULL, 1000);
    mg_buf_t b = {0};
    mg_health_dump_json(h, &b, 2000);
    cJSON *j = cJSON_Parse(b.data);
    MG_CHECK(j != NULL);
    if (!j) {
        fprintf(stderr, "  %s\n", b.data);
        mg_buf_free(&b);
        mg_health_free(h);
        return;
    }
    MG_CHECK_INT(jget(j, "now_ms")->valuedouble, 2000);
    const cJSON *ps = jget(j, "providers");
    MG_CHECK_INT(cJSON_GetArraySize(ps), 3);
    const cJSON *an = cJSON_GetArrayItem(ps, 0), *lm = cJSON_GetArrayItem(ps, 1), *oa = cJSON_GetArrayItem(ps, 2);
    MG_CHECK_STR(jget(an, "id")->valuestring, "an"); /* sorted */
    MG_CHECK_STR(jget(lm, "id")->valuestring, "lm");
    MG_CHECK_STR(jget(lm, "state")->valuestring, "cooling_down");
    MG_CHECK_STR(jget(lm, "cooldown_class")->valuestring, "connect_error");
    MG_CHECK_INT(jget(lm, "cooldown_until_ms")->valuedouble, 31000);
    MG_CHECK_INT(jget(lm, "cooldown_remaining_ms")->valuedouble, 29000);
    MG_CHECK_STR(jget(lm, "last_message")->valuestring, "connection refused \"x\"");
    MG_CHECK_INT(jget(lm, "failures_total")->valuedouble, 1);
    MG_CHECK(cJSON_IsNull(jget(lm, "latency_ms")));
    const cJSON *lm_models = jget(lm, "models");
    MG_CHECK_INT(cJSON_GetArraySize(lm_models), 2);
    const cJSON *ma = cJSON_GetArrayItem(lm_models, 0), *mb = cJSON_GetArrayItem(lm_models, 1);
    MG_CHECK_STR(jget(ma, "ref")->valuestring, "lm/a");
    MG_CHECK_STR(jget(ma, "state")->valuestring, "cooling_down");
    MG_CHECK_STR(jget(ma, "scope")->valuestring, "provider");
    MG_CHECK_STR(jget(mb, "ref")->valuestring, "lm/b");
    MG_CHECK_STR(jget(mb, "state")->valuestring, "cooling_down"); /* its provider is */
    MG_CHECK(cJSON_IsNull(jget(mb, "last_class")));
    MG_CHECK_STR(jget(oa, "state")->valuestring, "healthy");
    const cJSON *mc = cJSON_GetArrayItem(jget(oa, "models"), 0);
    MG_CHECK_INT(jget(jget(mc, "latency_ms"), "p50")->valuedouble, 420);
    MG_CHECK_INT(jget(jget(mc, "ttft_ms"), "p99")->valuedouble, 80);
    MG_CHECK_INT(jget(mc, "last_success_ago_ms")->valuedouble, 1000);
    MG_CHECK(cJSON_IsNull(jget(mc, "scope")));
    MG_CHECK(cJSON_IsFalse(jget(oa, "probe_in_flight")));
    cJSON_Delete(j);
    mg_buf_free(&b);
    mg_health_free(h);
}

/* ---- threads: run under ASan/UBSan (and TSan if you build with it) */

enum { THREADS = 4, ITERS = 5000 };

typedef struct {
    mg_health_t *h;
    const fake_cfg_t *f;
    int id;
} thr_t;

static void count_change(void *ud, const mg_health_change_t *c)
{
    (void)c;
    (*(long *)ud)++;
}

static void *worker(void *arg)
{
    thr_t *t = arg;
    static const mg_class_t mix[] = {MG_CLASS_OK, MG_CLASS_SERVER_ERROR, MG_CLASS_OK, MG_CLASS_CONNECT_ERROR,
                                     MG_CLASS_RATE_LIMIT, MG_CLASS_OK, MG_CLASS_MODEL_NOT_LOADED};
    const mg_model_t *cands[] = {&t->f->m[0], &t->f->m[1], &t->f->m[2], &t->f->m[3]};
    for (int i = 0; i < ITERS; i++) {
        const mg_model_t *m = cands[(i + t->id) % 4];
        int64_t now = i * 10;
        mg_health_attempt_begin(t->h, m->provider->id, m->ref, false, now);
        mg_health_outcome_t o = mg_health_outcome(mix[(i * 7 + t->id) % MG_ARRAY_LEN(mix)]);
        o.latency_ms = i % 97;
        o.retry_after_ms = o.cls == MG_CLASS_RATE_LIMIT ? 50 : -1;
        mg_health_attempt_end(t->h, m->provider->id, m->ref);
        mg_health_report(t->h, m->provider->id, m->ref, &o, now);
        mg_health_decide(t->h, m->provider->id, m->ref, &o, 0, now);
        size_t idx[4];
        mg_health_order(t->h, cands, 4, now, idx);
        mg_health_available(t->h, "lm", "lm/a", now, NULL);
        if (mg_health_probe_due(t->h, m->provider->id, now))
            mg_health_probe_result(t->h, m->provider, 0, i % 2, NULL, 0, NULL, now);
        if (i % 500 == 0) {
            mg_buf_t b = {0};
            mg_health_dump_json(t->h, &b, now);
            mg_buf_free(&b);
            mg_health_tick(t->h, now);
        }
    }
    return NULL;
}

MG_TEST(threads_smoke)
{
    fake_cfg_t f;
    fake_cfg(&f);
    mg_health_t *h = new_health(NULL);
    long changes = 0;
    mg_health_set_callback(h, count_change, &changes);
    pthread_t th[THREADS];
    thr_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (thr_t){h, &f, i};
        MG_CHECK(pthread_create(&th[i], NULL, worker, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    uint64_t total = 0, probe_failures = 0;
    for (int p = 0; p < 3; p++) {
        mg_health_stats_t st;
        mg_health_query(h, f.p[p].id, NULL, 0, &st);
        MG_CHECK_INT(st.in_flight, 0);
        total += st.failures_total + st.successes_total;
        (void)probe_failures;
    }
    /* every report counted once on its provider (probe failures add provider failures) */
    MG_CHECK(total >= (uint64_t)THREADS * ITERS);
    uint64_t model_total = 0;
    for (int m = 0; m < 4; m++) {
        mg_health_stats_t st;
        mg_health_query(h, f.m[m].provider->id, f.m[m].ref, 0, &st);
        model_total += st.failures_total + st.successes_total;
    }
    MG_CHECK_INT(model_total, (uint64_t)THREADS * ITERS); /* probes with no list touch no model */
    MG_CHECK(changes > 0);
    mg_health_free(h);
}

MG_TEST_MAIN()

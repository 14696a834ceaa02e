/* Upstream health registry. See health.h.
 *
 * One mutex guards everything: a call does a hash lookup or two and a few integer updates, so the
 * lock is held for well under a microsecond and contention stays low even with every serving
 * thread and the upstream thread reporting. Entries are never freed before the registry. */
#include "health.h"

#include "ir.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RING = 256, WIN_BUCKETS = 6, MSG_LEN = 256 };

typedef struct ent {
    char *key;
    bool is_provider;
    struct ent *hnext;      /* hash chain */
    struct ent *provider;   /* model → its provider */
    struct ent *models;     /* provider → its models (linked by next_model) */
    struct ent *next_model;

    /* cooldown */
    int64_t until;          /* end of the current/last cooldown; cooling iff until > now */
    mg_class_t cool_class;
    bool told;              /* the cooldown's end is the server's Retry-After: no probe ends it early */
    unsigned level;         /* cooldowns entered since the last success */
    unsigned consecutive;   /* failures of this entry's scope since the last success */
    bool reported;          /* "cooling" was reported and its end not yet */

    /* visibility */
    mg_class_t last_class;
    long last_status;
    char last_message[MSG_LEN];
    int64_t last_failure_ms, last_success_ms;
    uint64_t failures, successes, rejected;
    unsigned in_flight;
    int32_t lat[RING], ttft[RING];
    uint32_t lat_n, lat_i, ttft_n, ttft_i;
    /* The same samples kept sorted as they come and go (a binary search and a memmove of at
     * most 1 KB per sample): policies query health several times per request, each request adds
     * a sample, and sorting 256 samples at each query was a measurable share of the CPU. */
    int32_t lat_sorted[RING], ttft_sorted[RING];
    /* Percentiles of the two rings (latency p50/p95/p99, then TTFT), read from the sorted copies
     * when asked for and kept until the next sample. */
    int64_t pct[6];
    bool pct_valid;
    struct {
        int64_t epoch;
        uint32_t ok, fail;
    } win[WIN_BUCKETS];

    /* models only: the context window the model's server named in a context-overflow error,
     * below the configured one, and until when budgets use it (0: none); the configured window
     * it was learned against (a reload that changes it forgets what was learned) */
    int64_t learned_window, learned_until, conf_window;

    /* providers only */
    uint64_t endpoint;    /* mg_health_endpoint of the provider as last configured; 0 unknown */
    int64_t budget_milli; /* retry tokens × 1000: exact arithmetic, 5 deposits make one token */
    uint64_t retries, retries_denied;
    bool probe_in_flight;
    int64_t probe_started;
} ent_t;

typedef struct map {
    ent_t **b;
    size_t nb, n;
} map_t;

struct mg_health {
    pthread_mutex_t lock;
    atomic_bool any_learned; /* a window was ever learned: until then no lookup is needed */
    mg_health_settings_t s;
    map_t providers, models;
    uint64_t rng;
    mg_health_change_fn cb;
    void *cb_ud;
};

/* ---------------------------------------------------------------------------------------------
 * Settings */

void mg_health_settings_default(mg_health_settings_t *s)
{
    memset(s, 0, sizeof *s);
    s->cooldowns_ms[0] = 30000;
    s->cooldowns_ms[1] = 60000;
    s->cooldowns_ms[2] = 300000;
    s->n_cooldowns = 3;
    s->failures_before_cooldown = 3;
    s->max_retry_after_ms = MG_HEALTH_MAX_RETRY_AFTER_MS;
    s->probe_before_expiry_ms = 5000;
    s->probe_timeout_ms = 15000;
    s->max_retries = 2;
    s->retry_base_ms = 250;
    s->retry_max_delay_ms = 2000;
    s->retry_budget_ratio = 0.2;
    s->retry_budget_max = 10;
    s->retry_budget_initial = 0;
    s->error_window_ms = 60000;
    s->seed = 0;
#define POLICY(cls, scope, immediate, retry, probe)                                                \
    s->classes[MG_CLASS_##cls] =                                                                   \
        (mg_health_class_policy_t){MG_HEALTH_SCOPE_##scope, immediate, retry, probe}
    /*     class             scope     immediate retry  probe */
    POLICY(CONNECT_ERROR,    PROVIDER, true,     true,  true);
    POLICY(TIMEOUT,          MODEL,    false,    false, true);
    POLICY(RATE_LIMIT,       MODEL,    true,     true,  false);
    POLICY(OVERLOADED,       PROVIDER, false,    true,  true);
    POLICY(SERVER_ERROR,     MODEL,    false,    true,  true);
    POLICY(AUTH,             PROVIDER, true,     false, false);
    POLICY(BILLING,          PROVIDER, true,     false, false);
    POLICY(MODEL_NOT_FOUND,  MODEL,    true,     false, true);
    POLICY(MODEL_NOT_LOADED, MODEL,    true,     false, true);
    POLICY(STREAM_BROKEN,    MODEL,    false,    false, true);
#undef POLICY
    /* context_overflow, content_filter, bad_request, too_large, unsupported, no_key, cancelled:
     * scope NONE — the request (or the gateway), not the upstream, is at fault. */
}

const char *mg_health_scope_name(mg_health_scope_t s)
{
    switch (s) {
    case MG_HEALTH_SCOPE_MODEL: return "model";
    case MG_HEALTH_SCOPE_PROVIDER: return "provider";
    default: return "none";
    }
}

const char *mg_health_action_name(mg_health_action_t a)
{
    switch (a) {
    case MG_HEALTH_NEXT: return "next";
    case MG_HEALTH_RETRY: return "retry";
    default: return "stop";
    }
}

static void sanitize(mg_health_settings_t *s)
{
    if (s->n_cooldowns == 0 || s->n_cooldowns > MG_HEALTH_MAX_STEPS) {
        mg_health_settings_t d;
        mg_health_settings_default(&d);
        memcpy(s->cooldowns_ms, d.cooldowns_ms, sizeof s->cooldowns_ms);
        s->n_cooldowns = d.n_cooldowns;
    }
    if (s->failures_before_cooldown == 0) s->failures_before_cooldown = 1;
    if (s->retry_budget_ratio < 0) s->retry_budget_ratio = 0;
    if (s->retry_budget_max < 0) s->retry_budget_max = 0;
    if (s->error_window_ms < WIN_BUCKETS) s->error_window_ms = WIN_BUCKETS;
}

/* ---------------------------------------------------------------------------------------------
 * The map */

static uint64_t hash_str(const char *s)
{
    uint64_t hsh = 1469598103934665603ULL;
    for (; *s; s++) hsh = (hsh ^ (unsigned char)*s) * 1099511628211ULL;
    return hsh;
}

static ent_t *map_get(const map_t *m, const char *key)
{
    if (!m->nb || !key) return NULL;
    for (ent_t *e = m->b[hash_str(key) & (m->nb - 1)]; e; e = e->hnext)
        if (strcmp(e->key, key) == 0) return e;
    return NULL;
}

static void map_put(map_t *m, ent_t *e)
{
    if (m->n + 1 > m->nb) {
        size_t nb = m->nb ? m->nb * 2 : 16;
        ent_t **b = mg_xcalloc(nb, sizeof *b);
        for (size_t i = 0; i < m->nb; i++) {
            for (ent_t *x = m->b[i], *next; x; x = next) {
                next = x->hnext;
                size_t k = hash_str(x->key) & (nb - 1);
                x->hnext = b[k];
                b[k] = x;
            }
        }
        free(m->b);
        m->b = b;
        m->nb = nb;
    }
    size_t k = hash_str(e->key) & (m->nb - 1);
    e->hnext = m->b[k];
    m->b[k] = e;
    m->n++;
}

static ent_t *ent_new(const char *key, bool is_provider)
{
    ent_t *e = mg_xcalloc(1, sizeof *e);
    e->key = mg_xstrdup(key);
    e->is_provider = is_provider;
    e->last_failure_ms = e->last_success_ms = -1;
    for (size_t i = 0; i < WIN_BUCKETS; i++) e->win[i].epoch = INT64_MIN;
    return e;
}

static ent_t *provider_ent(mg_health_t *h, const char *id)
{
    ent_t *e = map_get(&h->providers, id);
    if (!e) {
        e = ent_new(id, true);
        e->budget_milli = (int64_t)llround(h->s.retry_budget_initial * 1000);
        map_put(&h->providers, e);
    }
    return e;
}

static ent_t *model_ent(mg_health_t *h, ent_t *pe, const char *ref)
{
    if (!ref) return NULL;
    ent_t *e = map_get(&h->models, ref);
    if (!e) {
        e = ent_new(ref, false);
        e->provider = pe;
        e->next_model = pe->models;
        pe->models = e;
        map_put(&h->models, e);
    }
    return e;
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle */

mg_health_t *mg_health_new(const mg_health_settings_t *settings)
{
    mg_health_t *h = mg_xcalloc(1, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    if (settings) h->s = *settings;
    else mg_health_settings_default(&h->s);
    sanitize(&h->s);
    h->rng = h->s.seed ? h->s.seed : ((uint64_t)mg_now_us() ^ (uint64_t)(uintptr_t)h);
    if (!h->rng) h->rng = 0x9e3779b97f4a7c15ULL;
    return h;
}

static void map_free(map_t *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (ent_t *e = m->b[i], *next; e; e = next) {
            next = e->hnext;
            free(e->key);
            free(e);
        }
    }
    free(m->b);
}

void mg_health_free(mg_health_t *h)
{
    if (!h) return;
    map_free(&h->models);
    map_free(&h->providers);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void mg_health_configure(mg_health_t *h, const mg_health_settings_t *settings)
{
    pthread_mutex_lock(&h->lock);
    if (settings) h->s = *settings;
    else mg_health_settings_default(&h->s);
    sanitize(&h->s);
    if (h->s.seed) h->rng = h->s.seed;
    pthread_mutex_unlock(&h->lock);
}

void mg_health_set_callback(mg_health_t *h, mg_health_change_fn fn, void *ud)
{
    pthread_mutex_lock(&h->lock);
    h->cb = fn;
    h->cb_ud = ud;
    pthread_mutex_unlock(&h->lock);
}

static void notify(mg_health_t *h, ent_t *e, bool cooling, const char *reason, int64_t now);

static uint64_t fnv_str(uint64_t x, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) x = (x ^ *c) * 0x100000001b3ULL;
    return (x ^ 0xff) * 0x100000001b3ULL; /* a separator no UTF-8 text holds: "ab","c" ≠ "a","bc" */
}

uint64_t mg_health_endpoint(const mg_provider_t *p)
{
    /* A model's own copy of its provider (its own api or headers, config.h) stands for the same
     * provider entry: its endpoint is the provider's, which covers what its models send. */
    if (p->base) p = p->base;
    uint64_t x = 0xcbf29ce484222325ULL;
    x = fnv_str(x, mg_api_name(p->api));
    x = fnv_str(x, p->base_url);
    x = fnv_str(x, p->api_key);
    for (size_t i = 0; i < p->n_headers; i++) x = fnv_str(fnv_str(x, p->headers[i].name), p->headers[i].value);
    x = fnv_str(x, p->ca_file);
    x = fnv_str(x, p->http2 ? "2" : "1");
    for (size_t j = 0; p->models_own && j < p->n_models; j++) {
        const mg_provider_t *own = p->models[j].provider;
        if (!own || own == p) continue;
        x = fnv_str(fnv_str(x, p->models[j].id), mg_api_name(own->api));
        for (size_t i = 0; i < own->n_headers; i++)
            x = fnv_str(fnv_str(x, own->headers[i].name), own->headers[i].value);
    }
    return x ? x : 1;
}

/* Forgets what an entry learnt about an endpoint it no longer stands for: cooldown, failure
 * streak, error window and latency samples. The totals stay. */
static void forget(mg_health_t *h, ent_t *e, int64_t now)
{
    if (e->reported) {
        e->reported = false;
        notify(h, e, false, "reconfigured", now);
    }
    e->until = 0;
    e->level = e->consecutive = 0;
    memset(e->win, 0, sizeof e->win);
    e->lat_n = e->lat_i = e->ttft_n = e->ttft_i = 0;
    e->pct_valid = false;
    e->probe_in_flight = false; /* its answer will be about the old endpoint: ignored */
    e->learned_window = e->learned_until = 0;
}

/* Whether a result about endpoint (0: unknown) is about provider entry pe's current one. */
static bool current(const ent_t *pe, uint64_t endpoint)
{
    return !endpoint || !pe->endpoint || endpoint == pe->endpoint;
}

void mg_health_add_config(mg_health_t *h, const mg_config_t *cfg, int64_t now_ms)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; cfg && i < cfg->n_providers; i++) {
        const mg_provider_t *p = &cfg->providers[i];
        ent_t *pe = provider_ent(h, p->id);
        uint64_t ep = mg_health_endpoint(p);
        if (pe->endpoint && pe->endpoint != ep) {
            forget(h, pe, now_ms);
            for (ent_t *m = pe->models; m; m = m->next_model) forget(h, m, now_ms);
        }
        pe->endpoint = ep;
        for (size_t j = 0; j < p->n_models; j++) {
            ent_t *me = model_ent(h, pe, p->models[j].ref);
            if (me->conf_window != p->models[j].context_window) me->learned_window = me->learned_until = 0;
            me->conf_window = p->models[j].context_window;
        }
    }
    pthread_mutex_unlock(&h->lock);
}

/* ---------------------------------------------------------------------------------------------
 * State transitions (lock held) */

static void notify(mg_health_t *h, ent_t *e, bool cooling, const char *reason, int64_t now)
{
    if (!h->cb) return;
    mg_health_change_t ch = {
        .key = e->key,
        .scope = e->is_provider ? MG_HEALTH_SCOPE_PROVIDER : MG_HEALTH_SCOPE_MODEL,
        .cooling = cooling,
        .reason = reason,
        .cls = e->cool_class,
        .cooldown_until_ms = e->until,
        .consecutive_failures = e->consecutive,
        .level = e->level,
        .message = e->last_message,
        .now_ms = now,
    };
    h->cb(h->cb_ud, &ch);
}

static bool cooling(const ent_t *e, int64_t now)
{
    return e && e->until > now;
}

/* A cooldown that ended by time is reported once, by whoever looks first. */
static void settle(mg_health_t *h, ent_t *e, int64_t now)
{
    if (e && e->reported && e->until <= now) {
        e->reported = false;
        notify(h, e, false, "expired", now);
    }
}

static void end_cooldown(mg_health_t *h, ent_t *e, const char *reason, int64_t now)
{
    settle(h, e, now);
    if (cooling(e, now)) {
        e->until = now;
        e->reported = false;
        notify(h, e, false, reason, now);
    }
}

/* Sets a cooldown ending at least at until (never earlier than one already running). */
static void extend(mg_health_t *h, ent_t *e, int64_t until, mg_class_t cls, int64_t now)
{
    if (until <= now || until <= e->until) return;
    e->until = until;
    e->cool_class = cls;
    e->told = false;
    if (!e->reported) {
        e->reported = true;
        notify(h, e, true, mg_class_name(cls), now);
    }
}

static int64_t ladder(const mg_health_settings_t *s, unsigned step)
{
    return s->cooldowns_ms[MG_MIN(step, (unsigned)s->n_cooldowns - 1)];
}

/* The policy of an outcome: a connect timeout is a connect error (the box is off, not slow). */
static mg_health_class_policy_t policy_of(const mg_health_settings_t *s, mg_class_t cls,
                                          mg_xfer_result_t xfer)
{
    if (cls == MG_CLASS_TIMEOUT && xfer == MG_XFER_TIMEOUT_CONNECT) {
        mg_health_class_policy_t p = s->classes[MG_CLASS_CONNECT_ERROR];
        p.retry = false; /* it already waited a whole connect timeout */
        return p;
    }
    if ((int)cls < 0 || (int)cls >= MG_CLASS_COUNT) return (mg_health_class_policy_t){0};
    return s->classes[cls];
}

/* One failure against entry e (the one the class's scope names). */
static void fail_entry(mg_health_t *h, ent_t *e, mg_class_t cls,
                       const mg_health_class_policy_t *pol, int64_t retry_after_ms, int64_t now)
{
    const mg_health_settings_t *s = &h->s;
    e->consecutive++;
    if (cls == MG_CLASS_RATE_LIMIT && retry_after_ms >= 0) {
        /* The server said how long: believe it, without climbing the ladder. */
        extend(h, e, now + MG_MIN(retry_after_ms, s->max_retry_after_ms), cls, now);
        if (e->until > now) e->told = true;
        return;
    }
    /* An overloaded server that says when to come back (a 503/529 with Retry-After) is not asked
     * before then: the ladder's cooldown (below) or that, whichever ends later. */
    int64_t told_until = cls == MG_CLASS_OVERLOADED && retry_after_ms > 0
                             ? now + MG_MIN(retry_after_ms, s->max_retry_after_ms)
                             : 0;
    if (cooling(e, now)) {
        /* Still cooling (attempts that were in flight, or the all-cooling fallback): extend to the
         * current step from now, never shorter, never a step up. */
        extend(h, e, now + ladder(s, e->level ? e->level - 1 : 0), cls, now);
    } else if (pol->immediate || e->level > 0 || e->consecutive >= s->failures_before_cooldown) {
        int64_t until = now + ladder(s, e->level);
        e->level++;
        extend(h, e, until, cls, now);
    }
    if (told_until > e->until) {
        extend(h, e, told_until, cls, now);
        e->told = true;
    }
}

static void note_failure(ent_t *e, mg_class_t cls, long status, const char *msg, int64_t now)
{
    e->failures++;
    e->last_class = cls;
    e->last_status = status;
    e->last_failure_ms = now;
    snprintf(e->last_message, sizeof e->last_message, "%s", msg ? msg : "");
}

static void window_add(const mg_health_settings_t *s, ent_t *e, bool ok, int64_t now)
{
    int64_t bucket_ms = s->error_window_ms / WIN_BUCKETS;
    int64_t epoch = now / bucket_ms;
    size_t k = (size_t)(((epoch % WIN_BUCKETS) + WIN_BUCKETS) % WIN_BUCKETS);
    if (e->win[k].epoch != epoch) {
        e->win[k].epoch = epoch;
        e->win[k].ok = e->win[k].fail = 0;
    }
    if (ok) e->win[k].ok++;
    else e->win[k].fail++;
}

/* Index of the first of the n sorted values that is not below v (after them all: n). */
static uint32_t lower_bound(const int32_t *sorted, uint32_t n, int32_t v)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void ring_add(int32_t *ring, int32_t *sorted, uint32_t *n, uint32_t *i, int64_t v)
{
    if (v < 0) return;
    int32_t x = (int32_t)MG_MIN(v, (int64_t)INT32_MAX);
    uint32_t m = *n;
    if (m == RING) { /* the oldest sample leaves the sorted copy */
        uint32_t k = lower_bound(sorted, m, ring[*i]);
        memmove(sorted + k, sorted + k + 1, (m - 1 - k) * sizeof *sorted);
        m--;
    }
    uint32_t k = lower_bound(sorted, m, x);
    memmove(sorted + k + 1, sorted + k, (m - k) * sizeof *sorted);
    sorted[k] = x;
    ring[*i] = x;
    *i = (*i + 1) % RING;
    if (*n < RING) (*n)++;
}

static void succeed_entry(mg_health_t *h, ent_t *e, const mg_health_outcome_t *o, int64_t now)
{
    e->successes++;
    e->last_success_ms = now;
    e->consecutive = 0;
    e->level = 0;
    ring_add(e->lat, e->lat_sorted, &e->lat_n, &e->lat_i, o->latency_ms);
    ring_add(e->ttft, e->ttft_sorted, &e->ttft_n, &e->ttft_i, o->ttft_ms);
    e->pct_valid = false;
    window_add(&h->s, e, true, now);
    end_cooldown(h, e, "success", now);
}

void mg_health_report(mg_health_t *h, const char *provider, const char *model_ref,
                      const mg_health_outcome_t *o, int64_t now)
{
    if (!h || !provider || !o) return;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = provider_ent(h, provider);
    ent_t *me = model_ent(h, pe, model_ref);
    if (!current(pe, o->endpoint)) goto out;
    settle(h, pe, now);
    settle(h, me, now);
    if (o->cls == MG_CLASS_OK) {
        if (me) succeed_entry(h, me, o, now);
        succeed_entry(h, pe, o, now);
        goto out;
    }
    mg_health_class_policy_t pol = policy_of(&h->s, o->cls, o->xfer);
    if (pol.scope == MG_HEALTH_SCOPE_NONE) {
        if (o->cls == MG_CLASS_CANCELLED) goto out;
        pe->rejected++;
        if (me) me->rejected++;
        /* Any HTTP answer proves the server is reachable: a connect-error cooldown is over. */
        if (o->http_status > 0 && cooling(pe, now) &&
            (pe->cool_class == MG_CLASS_CONNECT_ERROR || pe->cool_class == MG_CLASS_TIMEOUT)) {
            pe->consecutive = 0;
            end_cooldown(h, pe, "reachable", now);
        }
        goto out;
    }
    note_failure(pe, o->cls, o->http_status, o->message, now);
    window_add(&h->s, pe, false, now);
    if (me) {
        note_failure(me, o->cls, o->http_status, o->message, now);
        window_add(&h->s, me, false, now);
    }
    ent_t *target = pol.scope == MG_HEALTH_SCOPE_MODEL && me ? me : pe;
    fail_entry(h, target, o->cls, &pol, o->retry_after_ms, now);
out:
    pthread_mutex_unlock(&h->lock);
}

mg_health_outcome_t mg_health_outcome(mg_class_t cls)
{
    return (mg_health_outcome_t){cls, MG_XFER_OK, 0, -1, -1, -1, -1, NULL, 0};
}

void mg_health_record(mg_health_t *h, const char *provider, const char *model_ref, mg_class_t cls,
                      long http_status, int64_t retry_after_ms, int64_t latency_ms, int64_t ttft_ms,
                      const char *message, int64_t now_ms)
{
    mg_health_outcome_t o = {cls, MG_XFER_OK, http_status, retry_after_ms, -1, latency_ms, ttft_ms, message, 0};
    mg_health_report(h, provider, model_ref, &o, now_ms);
}

void mg_health_attempt_begin(mg_health_t *h, const char *provider, const char *model_ref,
                             bool is_retry, int64_t now)
{
    if (!h || !provider) return;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = provider_ent(h, provider);
    ent_t *me = model_ent(h, pe, model_ref);
    settle(h, pe, now);
    settle(h, me, now);
    pe->in_flight++;
    if (me) me->in_flight++;
    if (!is_retry) {
        int64_t cap = (int64_t)llround(h->s.retry_budget_max * 1000);
        pe->budget_milli =
            MG_MIN(cap, pe->budget_milli + (int64_t)llround(h->s.retry_budget_ratio * 1000));
    }
    pthread_mutex_unlock(&h->lock);
}

void mg_health_attempt_end(mg_health_t *h, const char *provider, const char *model_ref)
{
    if (!h || !provider) return;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = map_get(&h->providers, provider);
    ent_t *me = map_get(&h->models, model_ref);
    if (model_ref && (!me || !me->in_flight)) goto out; /* an end without its begin */
    if (me) me->in_flight--;
    if (pe && pe->in_flight) pe->in_flight--;
out:
    pthread_mutex_unlock(&h->lock);
}

/* ---------------------------------------------------------------------------------------------
 * Decisions */

static uint64_t rng_next(mg_health_t *h)
{
    /* xorshift64* */
    uint64_t x = h->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    h->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n]. */
static int64_t rng_upto(mg_health_t *h, int64_t n)
{
    return n <= 0 ? 0 : (int64_t)(rng_next(h) % (uint64_t)(n + 1));
}

/* Effective cooldown of a model (own or provider), lock held; 0 when available. */
static int64_t blocked_until(const ent_t *pe, const ent_t *me, int64_t now,
                             mg_health_scope_t *scope)
{
    int64_t pu = cooling(pe, now) ? pe->until : 0;
    int64_t mu = cooling(me, now) ? me->until : 0;
    if (scope)
        *scope = !pu && !mu ? MG_HEALTH_SCOPE_NONE
                 : pu >= mu ? MG_HEALTH_SCOPE_PROVIDER
                            : MG_HEALTH_SCOPE_MODEL;
    return MG_MAX(pu, mu);
}

mg_health_decision_t mg_health_decide(mg_health_t *h, const char *provider, const char *model_ref,
                                      const mg_health_outcome_t *o, unsigned retries_done,
                                      int64_t now)
{
    mg_health_decision_t d = {MG_HEALTH_STOP, 0, MG_HEALTH_SCOPE_NONE, 0, false};
    if (!h || !provider || !o) return d;
    pthread_mutex_lock(&h->lock);
    const mg_health_settings_t *s = &h->s;
    ent_t *pe = provider_ent(h, provider);
    ent_t *me = model_ent(h, pe, model_ref);
    settle(h, pe, now);
    settle(h, me, now);
    d.cooldown_until_ms = blocked_until(pe, me, now, &d.scope);
    if (o->cls == MG_CLASS_OK || !mg_class_moves_on(o->cls)) goto out;
    d.action = MG_HEALTH_NEXT;

    mg_health_class_policy_t pol = policy_of(s, o->cls, o->xfer);
    bool want = pol.retry && retries_done < s->max_retries && o->should_retry != 0;
    int64_t delay;
    if (o->cls == MG_CLASS_RATE_LIMIT || (o->cls == MG_CLASS_OVERLOADED && o->retry_after_ms > 0)) {
        /* Only a short, known wait is worth it; otherwise another candidate is the better bet. An
         * overloaded server (503/529) that says when to come back is believed too. */
        want = want && o->retry_after_ms >= 0 && o->retry_after_ms <= s->retry_max_delay_ms;
        delay = o->retry_after_ms + rng_upto(h, MG_MIN(o->retry_after_ms / 10, 250));
    } else {
        int64_t full = s->retry_base_ms << MG_MIN(retries_done, 20u);
        full = MG_MIN(full, s->retry_max_delay_ms);
        delay = full - rng_upto(h, full / 2); /* "equal jitter": in [full/2, full] */
    }
    if (o->cls == MG_CLASS_CONNECT_ERROR) {
        /* One quick retry (a server restarting), even though the provider is now cooling: it is
         * the half-open trial. */
        want = want && retries_done == 0;
    } else if (d.cooldown_until_ms > now + delay) {
        want = false; /* never retry into a cooldown */
    }
    if (!want) goto out;
    if (pe->budget_milli >= 1000) {
        pe->budget_milli -= 1000;
        pe->retries++;
        d.action = MG_HEALTH_RETRY;
        d.delay_ms = delay;
    } else {
        pe->retries_denied++;
        d.budget_exhausted = true;
    }
out:
    pthread_mutex_unlock(&h->lock);
    return d;
}

bool mg_health_should_try(int64_t overflowed_window, int64_t cand_window)
{
    if (cand_window <= 0) return false;
    return overflowed_window <= 0 || cand_window > overflowed_window;
}

/* ---------------------------------------------------------------------------------------------
 * Queries */

bool mg_health_available(mg_health_t *h, const char *provider, const char *model_ref, int64_t now,
                         int64_t *cooldown_until_ms)
{
    if (!h || !provider) return true;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = map_get(&h->providers, provider);
    ent_t *me = map_get(&h->models, model_ref);
    settle(h, pe, now);
    settle(h, me, now);
    int64_t until = blocked_until(pe, me, now, NULL);
    pthread_mutex_unlock(&h->lock);
    if (cooldown_until_ms) *cooldown_until_ms = until;
    return until == 0;
}

size_t mg_health_order(mg_health_t *h, const mg_model_t *const *cands, size_t n, int64_t now,
                       size_t *out_idx)
{
    size_t k = 0, soonest = 0;
    int64_t soonest_until = INT64_MAX;
    if (!n) return 0;
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < n; i++) {
        const mg_model_t *m = cands[i];
        const char *pid = m && m->provider ? m->provider->id : NULL;
        ent_t *pe = map_get(&h->providers, pid);
        ent_t *me = m ? map_get(&h->models, m->ref) : NULL;
        settle(h, pe, now);
        settle(h, me, now);
        int64_t until = blocked_until(pe, me, now, NULL);
        if (until == 0) out_idx[k++] = i;
        else if (until < soonest_until) soonest_until = until, soonest = i;
    }
    pthread_mutex_unlock(&h->lock);
    if (k == 0) out_idx[k++] = soonest;
    return k;
}

/* Nearest-rank percentiles over a ring's samples, sorted (ring_add). */
static void percentiles(const int32_t *sorted, uint32_t n, int64_t *p50, int64_t *p95, int64_t *p99)
{
    *p50 = *p95 = *p99 = -1;
    if (!n) return;
    const int pct[3] = {50, 95, 99};
    int64_t *out[3] = {p50, p95, p99};
    for (size_t i = 0; i < 3; i++) {
        size_t rank = ((size_t)pct[i] * n + 99) / 100; /* ceil(p·n/100) */
        *out[i] = sorted[MG_MAX(rank, (size_t)1) - 1];
    }
}

/* Called with h->lock held (the percentile cache is written). */
static void fill_stats(const mg_health_t *h, ent_t *e, int64_t now, mg_health_stats_t *st)
{
    const ent_t *pe = e->is_provider ? e : e->provider;
    const ent_t *me = e->is_provider ? NULL : e;
    st->known = true;
    st->cooldown_until_ms = blocked_until(pe, me, now, &st->scope);
    st->cooling_down = st->cooldown_until_ms != 0;
    st->healthy = !st->cooling_down;
    st->cooldown_class = st->scope == MG_HEALTH_SCOPE_PROVIDER ? pe->cool_class
                         : st->scope == MG_HEALTH_SCOPE_MODEL  ? me->cool_class
                                                               : MG_CLASS_OK;
    st->consecutive_failures = e->consecutive;
    st->level = e->level;
    st->learned_window = me && me->learned_until > now ? me->learned_window : 0;
    st->last_class = e->last_class;
    st->last_status = e->last_status;
    size_t ml = strnlen(e->last_message, sizeof st->last_message - 1); /* as snprintf "%s" */
    memcpy(st->last_message, e->last_message, ml);
    st->last_message[ml] = '\0';
    st->last_failure_ms = e->last_failure_ms;
    st->last_success_ms = e->last_success_ms;
    st->failures_total = e->failures;
    st->successes_total = e->successes;
    st->rejected_total = e->rejected;
    if (!e->pct_valid) {
        percentiles(e->lat_sorted, e->lat_n, &e->pct[0], &e->pct[1], &e->pct[2]);
        percentiles(e->ttft_sorted, e->ttft_n, &e->pct[3], &e->pct[4], &e->pct[5]);
        e->pct_valid = true;
    }
    st->latency_p50 = e->pct[0], st->latency_p95 = e->pct[1], st->latency_p99 = e->pct[2];
    st->latency_samples = e->lat_n;
    st->ttft_p50 = e->pct[3], st->ttft_p95 = e->pct[4], st->ttft_p99 = e->pct[5];
    st->ttft_samples = e->ttft_n;
    st->in_flight = e->in_flight;
    int64_t bucket_ms = h->s.error_window_ms / WIN_BUCKETS;
    int64_t epoch = now / bucket_ms;
    uint64_t ok = 0, fail = 0;
    for (size_t i = 0; i < WIN_BUCKETS; i++) {
        if (e->win[i].epoch > epoch - WIN_BUCKETS && e->win[i].epoch <= epoch) {
            ok += e->win[i].ok;
            fail += e->win[i].fail;
        }
    }
    st->window_requests = ok + fail;
    st->error_rate = ok + fail ? (double)fail / (double)(ok + fail) : 0.0;
    st->retry_tokens = e->is_provider ? (double)e->budget_milli / 1000.0 : 0.0;
    st->retries_total = e->retries;
    st->retries_denied = e->retries_denied;
    st->probe_in_flight = e->is_provider && e->probe_in_flight;
}

bool mg_health_query(mg_health_t *h, const char *provider, const char *model_ref, int64_t now,
                     mg_health_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->healthy = true;
    out->last_failure_ms = out->last_success_ms = -1;
    out->latency_p50 = out->latency_p95 = out->latency_p99 = -1;
    out->ttft_p50 = out->ttft_p95 = out->ttft_p99 = -1;
    if (!h || !provider) return false;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = map_get(&h->providers, provider);
    ent_t *me = model_ref ? map_get(&h->models, model_ref) : NULL;
    ent_t *e = model_ref ? me : pe;
    settle(h, pe, now);
    settle(h, me, now);
    if (e) fill_stats(h, e, now, out);
    pthread_mutex_unlock(&h->lock);
    return out->known;
}

void mg_health_tick(mg_health_t *h, int64_t now)
{
    pthread_mutex_lock(&h->lock);
    const map_t *maps[2] = {&h->providers, &h->models};
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < maps[k]->nb; i++)
            for (ent_t *e = maps[k]->b[i]; e; e = e->hnext) settle(h, e, now);
    pthread_mutex_unlock(&h->lock);
}

/* ---------------------------------------------------------------------------------------------
 * /admin/health */

static int cmp_ent(const void *a, const void *b)
{
    return strcmp((*(ent_t *const *)a)->key, (*(ent_t *const *)b)->key);
}

static void json_pcts(mg_buf_t *out, const char *name, int64_t p50, int64_t p95, int64_t p99,
                      size_t n)
{
    if (!n) {
        mg_buf_printf(out, ",\"%s\":null", name);
        return;
    }
    mg_buf_printf(out, ",\"%s\":{\"p50\":%lld,\"p95\":%lld,\"p99\":%lld,\"samples\":%zu}", name,
                  (long long)p50, (long long)p95, (long long)p99, n);
}

void mg_health_learn_window(mg_health_t *h, const char *provider, const char *model_ref, uint64_t endpoint,
                            int64_t window, int64_t now)
{
    if (!h || !provider || !model_ref || window <= 0) return;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = provider_ent(h, provider);
    if (current(pe, endpoint)) {
        ent_t *me = model_ent(h, pe, model_ref);
        me->learned_window = window;
        me->learned_until = now + MG_HEALTH_WINDOW_TTL_MS;
        atomic_store(&h->any_learned, true);
    }
    pthread_mutex_unlock(&h->lock);
}

int64_t mg_health_window(mg_health_t *h, const char *model_ref, int64_t now)
{
    if (!h || !model_ref || !atomic_load_explicit(&h->any_learned, memory_order_relaxed)) return 0;
    pthread_mutex_lock(&h->lock);
    ent_t *me = map_get(&h->models, model_ref);
    int64_t w = me && me->learned_until > now ? me->learned_window : 0;
    pthread_mutex_unlock(&h->lock);
    return w;
}

static void json_entry(const mg_health_t *h, mg_buf_t *out, ent_t *e, int64_t now)
{
    mg_health_stats_t st;
    memset(&st, 0, sizeof st);
    fill_stats(h, e, now, &st);
    mg_buf_puts(out, e->is_provider ? "{\"id\":" : "{\"ref\":");
    mg_buf_json_str(out, e->key);
    mg_buf_printf(out, ",\"state\":\"%s\"", st.cooling_down ? "cooling_down" : "healthy");
    if (st.cooling_down) {
        mg_buf_printf(out, ",\"scope\":\"%s\",\"cooldown_class\":\"%s\",\"cooldown_until_ms\":%lld,"
                           "\"cooldown_remaining_ms\":%lld",
                      mg_health_scope_name(st.scope), mg_class_name(st.cooldown_class),
                      (long long)st.cooldown_until_ms, (long long)(st.cooldown_until_ms - now));
    } else {
        mg_buf_puts(out, ",\"scope\":null,\"cooldown_class\":null,\"cooldown_until_ms\":null,"
                         "\"cooldown_remaining_ms\":0");
    }
    mg_buf_printf(out, ",\"consecutive_failures\":%u,\"cooldown_level\":%u",
                  st.consecutive_failures, st.level);
    if (st.last_failure_ms >= 0) {
        mg_buf_printf(out, ",\"last_class\":\"%s\",\"last_status\":%ld,\"last_message\":",
                      mg_class_name(st.last_class), st.last_status);
        mg_buf_json_str(out, st.last_message);
        mg_buf_printf(out, ",\"last_failure_ago_ms\":%lld", (long long)(now - st.last_failure_ms));
    } else {
        mg_buf_puts(out, ",\"last_class\":null,\"last_status\":null,\"last_message\":null,\"last_"
                         "failure_ago_ms\":null");
    }
    if (st.last_success_ms >= 0)
        mg_buf_printf(out, ",\"last_success_ago_ms\":%lld", (long long)(now - st.last_success_ms));
    else mg_buf_puts(out, ",\"last_success_ago_ms\":null");
    mg_buf_printf(out,
                  ",\"failures_total\":%llu,\"successes_total\":%llu,\"rejected_total\":%llu,\"in_"
                  "flight\":%u",
                  (unsigned long long)st.failures_total, (unsigned long long)st.successes_total,
                  (unsigned long long)st.rejected_total, st.in_flight);
    mg_buf_printf(out, ",\"error_rate\":%.4f,\"window_requests\":%llu", st.error_rate,
                  (unsigned long long)st.window_requests);
    json_pcts(out, "latency_ms", st.latency_p50, st.latency_p95, st.latency_p99,
              st.latency_samples);
    json_pcts(out, "ttft_ms", st.ttft_p50, st.ttft_p95, st.ttft_p99, st.ttft_samples);
    if (!e->is_provider && e->learned_until > now)
        mg_buf_printf(out, ",\"learned_context_window\":%lld,\"learned_context_window_remaining_ms\":%lld",
                      (long long)e->learned_window, (long long)(e->learned_until - now));
    else if (!e->is_provider)
        mg_buf_puts(out, ",\"learned_context_window\":null");
    if (e->is_provider)
        mg_buf_printf(out,
                      ",\"retry_tokens\":%.1f,\"retries_total\":%llu,\"retries_denied\":%llu,"
                      "\"probe_in_flight\":%s",
                      st.retry_tokens, (unsigned long long)st.retries_total,
                      (unsigned long long)st.retries_denied, st.probe_in_flight ? "true" : "false");
}

void mg_health_dump_json(mg_health_t *h, mg_buf_t *out, int64_t now)
{
    pthread_mutex_lock(&h->lock);
    size_t np = h->providers.n, k = 0;
    ent_t **ps = mg_xcalloc(np ? np : 1, sizeof *ps);
    for (size_t i = 0; i < h->providers.nb; i++)
        for (ent_t *e = h->providers.b[i]; e; e = e->hnext) ps[k++] = e;
    qsort(ps, np, sizeof *ps, cmp_ent);
    mg_buf_printf(out, "{\"now_ms\":%lld,\"providers\":[", (long long)now);
    for (size_t i = 0; i < np; i++) {
        ent_t *pe = ps[i];
        settle(h, pe, now);
        size_t nm = 0;
        for (ent_t *m = pe->models; m; m = m->next_model) nm++;
        ent_t **ms = mg_xcalloc(nm ? nm : 1, sizeof *ms);
        nm = 0;
        for (ent_t *m = pe->models; m; m = m->next_model) ms[nm++] = m;
        qsort(ms, nm, sizeof *ms, cmp_ent);
        if (i) mg_buf_puts(out, ",");
        json_entry(h, out, pe, now);
        mg_buf_puts(out, ",\"models\":[");
        for (size_t j = 0; j < nm; j++) {
            settle(h, ms[j], now);
            if (j) mg_buf_puts(out, ",");
            json_entry(h, out, ms[j], now);
            mg_buf_puts(out, "}");
        }
        mg_buf_puts(out, "]}");
        free(ms);
    }
    mg_buf_puts(out, "]}");
    free(ps);
    pthread_mutex_unlock(&h->lock);
}

/* ---------------------------------------------------------------------------------------------
 * Probes */

static bool probe_wanted(const mg_health_settings_t *s, const ent_t *e, int64_t now)
{
    return cooling(e, now) && policy_of(s, e->cool_class, MG_XFER_OK).probe && !e->told &&
           e->until - now <= s->probe_before_expiry_ms;
}

bool mg_health_probe_due(mg_health_t *h, const char *provider, int64_t now)
{
    bool due = false;
    if (!h || !provider) return false;
    pthread_mutex_lock(&h->lock);
    ent_t *pe = map_get(&h->providers, provider);
    if (!pe) goto out;
    settle(h, pe, now);
    if (pe->probe_in_flight && now - pe->probe_started < h->s.probe_timeout_ms) goto out;
    due = probe_wanted(&h->s, pe, now);
    for (ent_t *m = pe->models; m && !due; m = m->next_model) due = probe_wanted(&h->s, m, now);
    if (due) {
        pe->probe_in_flight = true;
        pe->probe_started = now;
    }
out:
    pthread_mutex_unlock(&h->lock);
    return due;
}

/* Ollama lists "llama3:latest" for a model configured as "llama3" (and the reverse). */
static bool id_listed(const char *id, const char *const *listed, size_t n)
{
    size_t il = strlen(id);
    for (size_t i = 0; i < n; i++) {
        const char *l = listed[i];
        if (!l) continue;
        size_t ll = strlen(l);
        if (strcmp(l, id) == 0) return true;
        if (ll == il + 7 && strncmp(l, id, il) == 0 && strcmp(l + il, ":latest") == 0) return true;
        if (il == ll + 7 && strncmp(id, l, ll) == 0 && strcmp(id + ll, ":latest") == 0) return true;
    }
    return false;
}

void mg_health_probe_result(mg_health_t *h, const mg_provider_t *p, uint64_t endpoint, bool ok,
                            const char *const *listed, size_t n_listed, const char *message,
                            int64_t now)
{
    if (!h || !p) return;
    pthread_mutex_lock(&h->lock);
    const mg_health_settings_t *s = &h->s;
    ent_t *pe = provider_ent(h, p->id);
    if (!current(pe, endpoint)) goto out; /* a newer probe may be in flight: its flag stays */
    settle(h, pe, now);
    pe->probe_in_flight = false;
    if (!ok) {
        char msg[MSG_LEN];
        snprintf(msg, sizeof msg, "probe GET /models failed%s%s", message ? ": " : "",
                 message ? message : "");
        note_failure(pe, MG_CLASS_CONNECT_ERROR, 0, msg, now);
        if (cooling(pe, now)) {
            /* The half-open trial failed: one step up the ladder. */
            int64_t until = now + ladder(s, pe->level);
            pe->level++;
            extend(h, pe, until, pe->cool_class, now);
        } else {
            mg_health_class_policy_t pol = policy_of(s, MG_CLASS_CONNECT_ERROR, MG_XFER_OK);
            fail_entry(h, pe, MG_CLASS_CONNECT_ERROR, &pol, -1, now);
        }
        goto out;
    }
    if (cooling(pe, now) && policy_of(s, pe->cool_class, MG_XFER_OK).probe && !pe->told) {
        pe->consecutive = 0;
        end_cooldown(h, pe, "probe", now);
    }
    for (size_t i = 0; i < p->n_models; i++) {
        const mg_model_t *m = &p->models[i];
        ent_t *me = model_ent(h, pe, m->ref);
        settle(h, me, now);
        if (id_listed(m->id, listed, n_listed)) {
            if (cooling(me, now) && policy_of(s, me->cool_class, MG_XFER_OK).probe && !me->told) {
                me->consecutive = 0;
                end_cooldown(h, me, "probe", now);
            }
        } else if (n_listed > 0) {
            mg_health_class_policy_t pol = policy_of(s, MG_CLASS_MODEL_NOT_LOADED, MG_XFER_OK);
            note_failure(me, MG_CLASS_MODEL_NOT_LOADED, 0, "not listed by GET /models", now);
            if (pol.scope != MG_HEALTH_SCOPE_NONE)
                fail_entry(h, me, MG_CLASS_MODEL_NOT_LOADED, &pol, -1, now);
        }
    }
out:
    pthread_mutex_unlock(&h->lock);
}

void mg_health_probe_response(mg_health_t *h, const mg_provider_t *p, uint64_t endpoint, long status,
                              const char *body, size_t len, const char *detail, int64_t now)
{
    if (status <= 0 || status >= 500) {
        char msg[MSG_LEN];
        if (status > 0) snprintf(msg, sizeof msg, "HTTP %ld", status);
        else snprintf(msg, sizeof msg, "%s", detail && detail[0] ? detail : "no answer");
        mg_health_probe_result(h, p, endpoint, false, NULL, 0, msg, now);
        return;
    }
    cJSON *j = status < 300 && body ? mg_ir_parse_text(body, len) : NULL; /* budgeted: an upstream's bytes */
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    size_t n = (size_t)MG_MAX(cJSON_GetArraySize(data), 0), k = 0;
    const char **ids = mg_xcalloc(n ? n : 1, sizeof *ids);
    const cJSON *list = cJSON_IsArray(data) ? data : NULL, *item;
    cJSON_ArrayForEach(item, list)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
        if (cJSON_IsString(id)) ids[k++] = id->valuestring;
    }
    mg_health_probe_result(h, p, endpoint, true, ids, k, NULL, now);
    free(ids);
    cJSON_Delete(j);
}

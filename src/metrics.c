/* Prometheus registry and text exposition. See metrics.h.
 *
 * Layout: every value is a C11 atomic updated with relaxed adds (floats with a compare-exchange
 * loop on their bits). Per-model values live in one mseries_t per model label value, found by a
 * lock-free open-addressing table: a slot, once published (release store), never changes until
 * mg_metrics_reset, so readers need no lock; inserts take reg_lock and re-probe. The same scheme
 * holds the series of moongate_requests_total, keyed by (api, model index, status). Nothing is
 * freed before mg_metrics_reset, so a pointer found once stays valid.
 *
 * Histograms keep one non-cumulative counter per bucket plus an overflow bucket; the renderer
 * accumulates them and derives _count from the same reads, so +Inf always equals _count even
 * while observations land during a scrape. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAXED memory_order_relaxed

typedef _Atomic uint64_t counter_t;

/* ---- floats in atomics ----------------------------------------------------------------------- */

static void add_double(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, RELAXED), nw;
    do {
        double d;
        memcpy(&d, &old, sizeof d);
        d += v;
        memcpy(&nw, &d, sizeof nw);
    } while (!atomic_compare_exchange_weak_explicit(bits, &old, nw, RELAXED, RELAXED));
}

static double load_double(_Atomic uint64_t *bits)
{
    uint64_t u = atomic_load_explicit(bits, RELAXED);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* ---- histograms ------------------------------------------------------------------------------ */

#define MAX_BOUNDS 16

typedef struct hist {
    counter_t b[MAX_BOUNDS + 1]; /* b[i]: observations in (le[i-1], le[i]]; b[n]: above the last */
    _Atomic uint64_t sum;        /* double bits */
} hist_t;

typedef struct bounds {
    const double *le;
    size_t n;
} bounds_t;

static const double duration_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5,   5,    10,    30,   60,  120,  300, 600};
static const double ttft_le[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120};
static const double policy_le[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                   0.001,   0.0025,   0.005,   0.01,   0.025,   0.05};
static const bounds_t duration_b = {duration_le, MG_ARRAY_LEN(duration_le)};
static const bounds_t ttft_b = {ttft_le, MG_ARRAY_LEN(ttft_le)};
static const bounds_t policy_b = {policy_le, MG_ARRAY_LEN(policy_le)};

static void hist_observe(hist_t *h, const bounds_t *bd, double v)
{
    if (!isfinite(v) || v < 0) return;
    size_t i = 0;
    while (i < bd->n && v > bd->le[i]) i++;
    atomic_fetch_add_explicit(&h->b[i], 1, RELAXED);
    add_double(&h->sum, v);
}

static uint64_t hist_count(hist_t *h, const bounds_t *bd)
{
    uint64_t c = 0;
    for (size_t i = 0; i <= bd->n; i++) c += atomic_load_explicit(&h->b[i], RELAXED);
    return c;
}

/* ---- per-model series ------------------------------------------------------------------------ */

enum { DIR_IN, DIR_OUT, DIR_CACHE_READ, DIR_CACHE_WRITE, N_DIR };
static const char *const dir_names[N_DIR] = {"in", "out", "cache_read", "cache_write"};

typedef struct mseries {
    char *name;
    uint64_t hash;
    uint32_t idx; /* position in model_by_idx; the model part of a requests key */
    counter_t attempts[MG_CLASS_COUNT];
    counter_t tokens[N_DIR];
    atomic_bool tokens_seen, cost_seen;
    _Atomic uint64_t cost; /* double bits */
    hist_t ttft;
} mseries_t;

#define MODEL_SLOTS 2048 /* power of two, > MG_METRICS_MAX_MODELS + 2: a probe always ends */
#define N_RESERVED 2     /* "none" and "other" */
_Static_assert(MODEL_SLOTS > 2 * (MG_METRICS_MAX_MODELS + N_RESERVED), "keep the table sparse");

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(mseries_t *) model_slots[MODEL_SLOTS];
static _Atomic(mseries_t *) model_by_idx[MG_METRICS_MAX_MODELS + N_RESERVED];
static atomic_size_t n_models;
static char none_name[] = "none", other_name[] = "other";
static mseries_t none_series = {.name = none_name};
static mseries_t other_series = {.name = other_name};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Under reg_lock: the slot holding name, or the empty slot where it belongs. */
static size_t model_probe_locked(const char *name, uint64_t h, mseries_t **found)
{
    size_t i = h & (MODEL_SLOTS - 1);
    mseries_t *m;
    while ((m = atomic_load_explicit(&model_slots[i], RELAXED))) {
        if (m->hash == h && !strcmp(m->name, name)) break;
        i = (i + 1) & (MODEL_SLOTS - 1);
    }
    *found = m;
    return i;
}

static void model_publish_locked(mseries_t *m, size_t slot)
{
    size_t n = atomic_load_explicit(&n_models, RELAXED);
    m->idx = (uint32_t)n;
    atomic_store_explicit(&model_by_idx[n], m, memory_order_release);
    atomic_store_explicit(&model_slots[slot], m, memory_order_release);
    atomic_store_explicit(&n_models, n + 1, memory_order_release);
}

static void ensure_reserved_locked(void)
{
    if (atomic_load_explicit(&n_models, RELAXED)) return;
    mseries_t *reserved[N_RESERVED] = {&none_series, &other_series};
    for (size_t i = 0; i < N_RESERVED; i++) {
        mseries_t *m = reserved[i], *found;
        m->hash = fnv1a(m->name);
        model_publish_locked(m, model_probe_locked(m->name, m->hash, &found));
    }
}

static mseries_t *model_insert(const char *name, uint64_t h)
{
    pthread_mutex_lock(&reg_lock);
    ensure_reserved_locked();
    mseries_t *m;
    size_t slot = model_probe_locked(name, h, &m);
    if (!m) {
        if (atomic_load_explicit(&n_models, RELAXED) >= MG_METRICS_MAX_MODELS + N_RESERVED) {
            m = &other_series;
        } else {
            m = mg_xcalloc(1, sizeof *m);
            m->name = mg_xstrdup(name);
            m->hash = h;
            model_publish_locked(m, slot);
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return m;
}

/* The series of model_ref (NULL → "none"); lock-free once the model has been seen. */
static mseries_t *model_get(const char *model_ref)
{
    const char *name = model_ref ? model_ref : none_name;
    uint64_t h = fnv1a(name);
    for (size_t i = h & (MODEL_SLOTS - 1);; i = (i + 1) & (MODEL_SLOTS - 1)) {
        mseries_t *m = atomic_load_explicit(&model_slots[i], memory_order_acquire);
        if (!m) break;
        if (m->hash == h && !strcmp(m->name, name)) return m;
    }
    return model_insert(name, h);
}

/* ---- moongate_requests_total series ---------------------------------------------------------- */

#define REQ_SLOTS 16384 /* > MG_METRICS_MAX_SERIES + the "other" series (3 apis × 501 statuses) */
_Static_assert(REQ_SLOTS > MG_METRICS_MAX_SERIES + 3 * 501 + 1024, "keep the table sparse");

typedef struct rslot {
    _Atomic uint64_t key; /* 0 = empty; see req_key */
    counter_t n;
} rslot_t;

static rslot_t req_slots[REQ_SLOTS];
static size_t n_req_series; /* under reg_lock */

/* Bit 62 keeps every key non-zero. */
static uint64_t req_key(unsigned api, uint32_t midx, unsigned status)
{
    return 1ull << 62 | (uint64_t)api << 40 | (uint64_t)midx << 16 | status;
}

static size_t req_home(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & (REQ_SLOTS - 1);
}

static rslot_t *req_insert(unsigned api, uint32_t midx, unsigned status)
{
    pthread_mutex_lock(&reg_lock);
    uint64_t key = req_key(api, midx, status);
    rslot_t *s;
    for (;;) {
        size_t i = req_home(key);
        uint64_t k;
        while ((k = atomic_load_explicit(&req_slots[i].key, RELAXED)) && k != key)
            i = (i + 1) & (REQ_SLOTS - 1);
        s = &req_slots[i];
        if (k) break;
        if (n_req_series >= MG_METRICS_MAX_SERIES && midx != other_series.idx) {
            midx = other_series.idx; /* fold, then look for (or create) that series */
            key = req_key(api, midx, status);
            continue;
        }
        atomic_store_explicit(&s->key, key, memory_order_release);
        n_req_series++;
        break;
    }
    pthread_mutex_unlock(&reg_lock);
    return s;
}

static void req_inc(unsigned api, uint32_t midx, unsigned status)
{
    uint64_t key = req_key(api, midx, status), k;
    size_t i = req_home(key);
    while ((k = atomic_load_explicit(&req_slots[i].key, memory_order_acquire)) && k != key)
        i = (i + 1) & (REQ_SLOTS - 1);
    rslot_t *s = k ? &req_slots[i] : req_insert(api, midx, status);
    atomic_fetch_add_explicit(&s->n, 1, RELAXED);
}

/* ---- the rest -------------------------------------------------------------------------------- */

#define N_API 4
static const char *const api_names[N_API] = {"chat", "responses", "messages", "count_tokens"};

static counter_t fallbacks;
static hist_t duration[N_API];
static hist_t policy_hist;
static counter_t reloads[2]; /* [0] ok, [1] error */
static _Atomic int64_t active_streams;

static pthread_mutex_t cooling_lock = PTHREAD_MUTEX_INITIALIZER;
static char **cooling; /* providers last reported cooling, under cooling_lock */
static size_t n_cooling, cap_cooling;
static mg_metrics_gauge_fn cooling_fn;
static void *cooling_ud;

const char *mg_metrics_api_name(mg_metrics_api_t api)
{
    return (unsigned)api < N_API ? api_names[api] : "unknown";
}

void mg_metrics_request(mg_metrics_api_t api, const char *model_ref, int status)
{
    if ((unsigned)api >= N_API) return;
    unsigned st = status >= 100 && status <= 599 ? (unsigned)status : 0;
    req_inc((unsigned)api, model_get(model_ref)->idx, st);
}

void mg_metrics_attempt(const char *model_ref, mg_class_t cls)
{
    if ((unsigned)cls >= (unsigned)MG_CLASS_COUNT) return;
    atomic_fetch_add_explicit(&model_get(model_ref)->attempts[cls], 1, RELAXED);
}

void mg_metrics_fallback(void)
{
    atomic_fetch_add_explicit(&fallbacks, 1, RELAXED);
}

void mg_metrics_latency(mg_metrics_api_t api, double seconds)
{
    if ((unsigned)api < N_API) hist_observe(&duration[api], &duration_b, seconds);
}

void mg_metrics_ttft(const char *model_ref, double seconds)
{
    if (!isfinite(seconds) || seconds < 0) return; /* no series for a value we drop */
    hist_observe(&model_get(model_ref)->ttft, &ttft_b, seconds);
}

void mg_metrics_tokens(const char *model_ref, int64_t input, int64_t output, int64_t cache_read,
                       int64_t cache_write)
{
    mseries_t *m = model_get(model_ref);
    const int64_t v[N_DIR] = {input, output, cache_read, cache_write};
    for (int d = 0; d < N_DIR; d++)
        if (v[d] > 0) atomic_fetch_add_explicit(&m->tokens[d], (uint64_t)v[d], RELAXED);
    atomic_store_explicit(&m->tokens_seen, true, RELAXED);
}

void mg_metrics_cost(const char *model_ref, double cost_units)
{
    if (!isfinite(cost_units) || cost_units < 0) return;
    mseries_t *m = model_get(model_ref);
    add_double(&m->cost, cost_units);
    atomic_store_explicit(&m->cost_seen, true, RELAXED);
}

double mg_cost_of(const mg_cost_t *cost, int64_t input, int64_t output, int64_t cache_read,
                  int64_t cache_write)
{
    if (!cost) return 0;
    double c = (double)MG_MAX(input, 0) * cost->input + (double)MG_MAX(output, 0) * cost->output +
               (double)MG_MAX(cache_read, 0) * cost->cache_read +
               (double)MG_MAX(cache_write, 0) * cost->cache_write;
    return c / 1e6;
}

void mg_metrics_active_streams(int delta)
{
    atomic_fetch_add_explicit(&active_streams, delta, RELAXED);
}

void mg_metrics_policy_decision(double seconds)
{
    hist_observe(&policy_hist, &policy_b, seconds);
}

void mg_metrics_reload(bool ok)
{
    atomic_fetch_add_explicit(&reloads[ok ? 0 : 1], 1, RELAXED);
}

void mg_metrics_provider_cooling(const char *provider_id, bool cooling_now)
{
    if (!provider_id) return;
    pthread_mutex_lock(&cooling_lock);
    size_t i = 0;
    while (i < n_cooling && strcmp(cooling[i], provider_id)) i++;
    if (cooling_now && i == n_cooling && n_cooling < MG_METRICS_MAX_MODELS) {
        if (n_cooling == cap_cooling) {
            cap_cooling = cap_cooling ? 2 * cap_cooling : 8;
            cooling = mg_xrealloc(cooling, cap_cooling * sizeof *cooling);
        }
        cooling[n_cooling++] = mg_xstrdup(provider_id);
    } else if (!cooling_now && i < n_cooling) {
        free(cooling[i]);
        cooling[i] = cooling[--n_cooling];
    }
    pthread_mutex_unlock(&cooling_lock);
}

void mg_metrics_set_cooling_source(mg_metrics_gauge_fn fn, void *ud)
{
    pthread_mutex_lock(&cooling_lock);
    cooling_fn = fn;
    cooling_ud = ud;
    pthread_mutex_unlock(&cooling_lock);
}

/* ---- rendering ------------------------------------------------------------------------------- */

static void put_header(mg_buf_t *o, const char *name, const char *type, const char *help)
{
    mg_buf_printf(o, "# HELP moongate_%s %s\n# TYPE moongate_%s %s\n", name, help, name, type);
}

/* A label value with \ " and newline escaped, as the format requires. */
static void put_label_value(mg_buf_t *o, const char *s)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (!esc) continue;
        mg_buf_append(o, run, (size_t)(s - run));
        mg_buf_puts(o, esc);
        run = s + 1;
    }
    mg_buf_append(o, run, (size_t)(s - run));
}

static void put_double(mg_buf_t *o, double d)
{
    char s[40];
    mg_fmt_double(s, sizeof s, d, "+Inf", "-Inf"); /* Prometheus's spellings */
    mg_buf_puts(o, s);
}

/* name{k1="v1",k2="v2"} with NULL keys skipped; "name" alone when there is no label. */
static void put_series(mg_buf_t *o, const char *name, const char *suffix, const char *k1,
                       const char *v1, const char *k2, const char *v2, const char *k3,
                       const char *v3)
{
    mg_buf_printf(o, "moongate_%s%s", name, suffix);
    const char *k[3] = {k1, k2, k3}, *v[3] = {v1, v2, v3};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (!k[i]) continue;
        mg_buf_printf(o, "%s%s=\"", n++ ? "," : "{", k[i]);
        put_label_value(o, v[i]);
        mg_buf_puts(o, "\"");
    }
    if (n) mg_buf_puts(o, "}");
    mg_buf_puts(o, " ");
}

static void put_counter(mg_buf_t *o, const char *name, const char *k1, const char *v1,
                        const char *k2, const char *v2, const char *k3, const char *v3, uint64_t n)
{
    put_series(o, name, "", k1, v1, k2, v2, k3, v3);
    mg_buf_printf(o, "%llu\n", (unsigned long long)n);
}

static void put_hist(mg_buf_t *o, const char *name, const char *label, const char *value,
                     hist_t *h, const bounds_t *bd)
{
    uint64_t c = 0;
    char le[40];
    for (size_t i = 0; i <= bd->n; i++) {
        c += atomic_load_explicit(&h->b[i], RELAXED);
        mg_fmt_double(le, sizeof le, i < bd->n ? bd->le[i] : INFINITY, "+Inf", "-Inf");
        put_series(o, name, "_bucket", label, value, "le", le, NULL, NULL);
        mg_buf_printf(o, "%llu\n", (unsigned long long)c);
    }
    put_series(o, name, "_sum", label, value, NULL, NULL, NULL, NULL);
    put_double(o, load_double(&h->sum));
    mg_buf_puts(o, "\n");
    put_series(o, name, "_count", label, value, NULL, NULL, NULL, NULL);
    mg_buf_printf(o, "%llu\n", (unsigned long long)c);
}

static int cmp_model(const void *a, const void *b)
{
    return strcmp((*(mseries_t *const *)a)->name, (*(mseries_t *const *)b)->name);
}

typedef struct req_row {
    unsigned api, status;
    const mseries_t *model;
    uint64_t n;
} req_row_t;

static int cmp_req(const void *a, const void *b)
{
    const req_row_t *x = a, *y = b;
    if (x->api != y->api) return x->api < y->api ? -1 : 1;
    int c = strcmp(x->model->name, y->model->name);
    if (c) return c;
    return x->status < y->status ? -1 : x->status > y->status;
}

static int cmp_class(const void *a, const void *b)
{
    return strcmp(mg_class_name(*(const mg_class_t *)a), mg_class_name(*(const mg_class_t *)b));
}

static const char *outcome_name(mg_class_t c)
{
    return c == MG_CLASS_OK ? "ok" : mg_class_name(c);
}

void mg_metrics_render(mg_buf_t *out)
{
    /* Snapshot the model list (entries published before n_models are complete). */
    size_t nm = atomic_load_explicit(&n_models, memory_order_acquire);
    mseries_t **models = mg_xcalloc(nm ? nm : 1, sizeof *models);
    for (size_t i = 0; i < nm; i++)
        models[i] = atomic_load_explicit(&model_by_idx[i], memory_order_acquire);
    qsort(models, nm, sizeof *models, cmp_model);

    /* moongate_requests_total */
    put_header(out, "requests_total", "counter",
               "Client requests answered, by client API, model that served them (none when no "
               "model did) and HTTP status.");
    req_row_t *rows = NULL;
    size_t nr = 0, cap = 0;
    for (size_t i = 0; i < REQ_SLOTS; i++) {
        uint64_t k = atomic_load_explicit(&req_slots[i].key, memory_order_acquire);
        if (!k) continue;
        uint32_t midx = (uint32_t)(k >> 16 & 0xFFFFFF);
        if (midx >= nm) continue; /* its model was published after our snapshot */
        if (nr == cap) {
            cap = cap ? 2 * cap : 64;
            rows = mg_xrealloc(rows, cap * sizeof *rows);
        }
        rows[nr++] = (req_row_t){.api = (unsigned)(k >> 40 & 3),
                                 .status = (unsigned)(k & 0xFFFF),
                                 .model = atomic_load_explicit(&model_by_idx[midx], RELAXED),
                                 .n = atomic_load_explicit(&req_slots[i].n, RELAXED)};
    }
    if (nr) qsort(rows, nr, sizeof *rows, cmp_req);
    for (size_t i = 0; i < nr; i++) {
        char st[8];
        snprintf(st, sizeof st, "%u", rows[i].status);
        put_counter(out, "requests_total", "api", api_names[rows[i].api], "model",
                    rows[i].model->name, "status", st, rows[i].n);
    }
    free(rows);

    /* moongate_attempts_total */
    put_header(out, "attempts_total", "counter",
               "Upstream attempts, by model and outcome (ok, or the error class).");
    mg_class_t order[MG_CLASS_COUNT];
    for (int c = 0; c < MG_CLASS_COUNT; c++) order[c] = (mg_class_t)c;
    order[0] = MG_CLASS_OK;
    qsort(order + 1, MG_CLASS_COUNT - 1, sizeof *order, cmp_class); /* "ok" first, then a-z */
    for (size_t i = 0; i < nm; i++)
        for (int j = 0; j < MG_CLASS_COUNT; j++) {
            uint64_t n = atomic_load_explicit(&models[i]->attempts[order[j]], RELAXED);
            if (n)
                put_counter(out, "attempts_total", "model", models[i]->name, "outcome",
                            outcome_name(order[j]), NULL, NULL, n);
        }

    /* moongate_fallbacks_total */
    put_header(out, "fallbacks_total", "counter",
               "Times the router moved on from a failed candidate to the next one.");
    put_counter(out, "fallbacks_total", NULL, NULL, NULL, NULL, NULL, NULL,
                atomic_load_explicit(&fallbacks, RELAXED));

    /* moongate_request_duration_seconds */
    put_header(out, "request_duration_seconds", "histogram",
               "Whole request time as the client saw it, by client API.");
    for (int a = 0; a < N_API; a++)
        put_hist(out, "request_duration_seconds", "api", api_names[a], &duration[a], &duration_b);

    /* moongate_ttft_seconds */
    put_header(out, "ttft_seconds", "histogram",
               "Time to first token of streamed answers, by model that served them.");
    for (size_t i = 0; i < nm; i++)
        if (hist_count(&models[i]->ttft, &ttft_b))
            put_hist(out, "ttft_seconds", "model", models[i]->name, &models[i]->ttft, &ttft_b);

    /* moongate_tokens_total */
    put_header(out, "tokens_total", "counter",
               "Tokens by model and direction: in (input without cached tokens), out, "
               "cache_read, cache_write.");
    for (size_t i = 0; i < nm; i++) {
        if (!atomic_load_explicit(&models[i]->tokens_seen, RELAXED)) continue;
        for (int d = 0; d < N_DIR; d++)
            put_counter(out, "tokens_total", "model", models[i]->name, "direction", dir_names[d],
                        NULL, NULL, atomic_load_explicit(&models[i]->tokens[d], RELAXED));
    }

    /* moongate_cost_total */
    put_header(out, "cost_total", "counter",
               "Cost in the catalog's cost units (its prices are per million tokens), by model.");
    for (size_t i = 0; i < nm; i++) {
        if (!atomic_load_explicit(&models[i]->cost_seen, RELAXED)) continue;
        put_series(out, "cost_total", "", "model", models[i]->name, NULL, NULL, NULL, NULL);
        put_double(out, load_double(&models[i]->cost));
        mg_buf_puts(out, "\n");
    }
    free(models);

    /* moongate_active_streams */
    put_header(out, "active_streams", "gauge", "Client streams open now.");
    mg_buf_printf(out, "moongate_active_streams %lld\n",
                  (long long)atomic_load_explicit(&active_streams, RELAXED));

    /* moongate_policy_decision_seconds */
    put_header(out, "policy_decision_seconds", "histogram",
               "Time spent in the routing policy's route decision.");
    put_hist(out, "policy_decision_seconds", NULL, NULL, &policy_hist, &policy_b);

    /* moongate_reloads_total */
    put_header(out, "reloads_total", "counter", "Config and policy reloads, by result.");
    put_counter(out, "reloads_total", "result", "ok", NULL, NULL, NULL, NULL,
                atomic_load_explicit(&reloads[0], RELAXED));
    put_counter(out, "reloads_total", "result", "error", NULL, NULL, NULL, NULL,
                atomic_load_explicit(&reloads[1], RELAXED));

    /* moongate_providers_cooling_down */
    pthread_mutex_lock(&cooling_lock);
    mg_metrics_gauge_fn fn = cooling_fn;
    void *ud = cooling_ud;
    int64_t n_cool = (int64_t)n_cooling;
    pthread_mutex_unlock(&cooling_lock);
    if (fn) n_cool = fn(ud);
    put_header(out, "providers_cooling_down", "gauge", "Providers in a cooldown now.");
    mg_buf_printf(out, "moongate_providers_cooling_down %lld\n", (long long)n_cool);
}

void mg_metrics_reset(void)
{
    pthread_mutex_lock(&reg_lock);
    size_t nm = atomic_load_explicit(&n_models, RELAXED);
    for (size_t i = 0; i < nm; i++) {
        mseries_t *m = atomic_load_explicit(&model_by_idx[i], RELAXED);
        atomic_store_explicit(&model_by_idx[i], NULL, RELAXED);
        if (m != &none_series && m != &other_series) {
            free(m->name);
            free(m);
        }
    }
    for (size_t i = 0; i < MODEL_SLOTS; i++) atomic_store_explicit(&model_slots[i], NULL, RELAXED);
    atomic_store_explicit(&n_models, 0, RELAXED);
    mseries_t *reserved[N_RESERVED] = {&none_series, &other_series};
    for (size_t i = 0; i < N_RESERVED; i++) {
        char *name = reserved[i]->name;
        memset(reserved[i], 0, sizeof *reserved[i]);
        reserved[i]->name = name;
    }
    memset(req_slots, 0, sizeof req_slots);
    n_req_series = 0;
    pthread_mutex_unlock(&reg_lock);

    atomic_store_explicit(&fallbacks, 0, RELAXED);
    memset(duration, 0, sizeof duration);
    memset(&policy_hist, 0, sizeof policy_hist);
    memset(reloads, 0, sizeof reloads);
    atomic_store_explicit(&active_streams, 0, RELAXED);

    pthread_mutex_lock(&cooling_lock);
    for (size_t i = 0; i < n_cooling; i++) free(cooling[i]);
    free(cooling);
    cooling = NULL;
    n_cooling = cap_cooling = 0;
    cooling_fn = NULL;
    cooling_ud = NULL;
    pthread_mutex_unlock(&cooling_lock);
}

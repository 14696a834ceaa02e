/* Client API keys. See keys.h.
 *
 * Keys are stored as SHA-256 digests only: a value read from the environment is hashed and wiped
 * at once. Lookup hashes the presented key and compares all digests with mg_ct_equal, so neither
 * which key matched nor whether one did shows in the timing (only the presented length does, via
 * the hash, which says nothing about the configured keys).
 *
 * Limiter arithmetic is in integers: a bucket of N per minute holds N × 60000 units and refills
 * N units per millisecond, so one request (or token) costs 60000 units and no rounding drifts.
 * The state lives in a refcounted mg_key_state_t so that a reload can hand it to the new set. */
#include "keys.h"
#include "policy.h"

#include "cfgread.h"
#include "sha256.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNITS 60000 /* ms per minute: bucket units per request/token */
#define MAX_ID 64

typedef struct mg_key_state {
    pthread_mutex_t lock;
    atomic_int refs;
    bool rpm_init, tpm_init;
    int64_t rpm_level, rpm_last; /* units; ms */
    int64_t tpm_level, tpm_last; /* units, may be negative (debt); ms */
    mg_budget_period_t period;   /* kind of period_index */
    int64_t period_index;        /* hours/days since the epoch, or months since year 0 */
    double spent;
} mg_key_state_t;

typedef struct allow {
    const char *name;              /* key->models[i], borrowed */
    const mg_model_t *model;       /* what name resolves to in the catalog, or NULL */
    const mg_provider_t *provider; /* a provider wildcard: "openai/" + "*" */
    bool any;                      /* "*" */
} allow_t;

struct mg_key_priv {
    uint8_t digest[MG_SHA256_LEN];
    allow_t *allow; /* key->n_models entries */
    const mg_config_t *cfg; /* resolves the names clients ask for; borrowed, may be NULL */
    mg_key_state_t *state;
};

struct mg_keys {
    mg_key_t *keys;
    size_t n;
    const mg_config_t *cfg;
    _Atomic uint64_t comparisons;
};

const char *mg_budget_period_name(mg_budget_period_t p)
{
    switch (p) {
    case MG_PERIOD_HOUR: return "hour";
    case MG_PERIOD_DAY: return "day";
    case MG_PERIOD_MONTH: return "month";
    default: return "none";
    }
}

/* ---- state ----------------------------------------------------------------------------------- */

static mg_key_state_t *state_new(void)
{
    mg_key_state_t *s = mg_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->refs, 1);
    return s;
}

static void state_release(mg_key_state_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- loading --------------------------------------------------------------------------------- */

typedef struct kload {
    const mg_config_t *cfg;
    const char *base; /* key path of the array, e.g. "gateway.keys" */
    mg_cfgread_t rd;  /* key path of the value being validated */
    char *err;
    size_t errlen;
    const cJSON *err_node;
} kload_t;

/* The reader's report callback: "key.path: message" (the config loader adds the file and the
 * position of err_node). Key checks here are all strict, so there are only errors. */
static void report(mg_cfgread_t *r, const cJSON *node, bool at_key, bool is_error, const char *msg)
{
    kload_t *ld = r->ud;
    if (ld->errlen) snprintf(ld->err, ld->errlen, "%s: %s", r->path.data ? r->path.data : "", msg);
    ld->err_node = node;
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > MAX_ID) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

static bool valid_env_name(const char *s, size_t n)
{
    if (!n || (s[0] >= '0' && s[0] <= '9')) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static atomic_bool offline; /* mg_keys_offline */

void mg_keys_offline(void)
{
    atomic_store(&offline, true);
}

/* The digest an offline load (mg_keys_offline) gives a key whose variable is unset: all ones.
 * Every such key has it, and none can be presented, so they are not duplicates of each other. */
static bool offline_placeholder(const mg_key_t *k)
{
    for (size_t i = 0; i < MG_SHA256_LEN; i++)
        if (k->priv->digest[i] != 0xff) return false;
    return true;
}

/* key: "${NAME}" read from the environment, or sha256: 64 hex digits. Never echoes either value:
 * a literal key or a key pasted into sha256 by mistake must not end up in an error message. */
static int load_secret(kload_t *ld, const cJSON *obj, mg_key_t *k)
{
    const cJSON *kv = mg_cfgread_member(obj, "key"), *hv = mg_cfgread_member(obj, "sha256");
    if (kv && hv) {
        mg_cfgread_push_key(&ld->rd, "sha256");
        return mg_cfgread_fail(&ld->rd, hv, false, "give either key or sha256, not both");
    }
    if (!kv && !hv)
        return mg_cfgread_fail(&ld->rd, obj, false,
                               "required key missing: key (\"${NAME}\") or sha256 (hex digest)");
    if (kv) {
        size_t mark = mg_cfgread_push_key(&ld->rd, "key");
        const char *s = cJSON_IsString(kv) ? kv->valuestring : NULL;
        size_t n = s ? strlen(s) : 0;
        if (!s || n < 4 || s[0] != '$' || s[1] != '{' || s[n - 1] != '}' ||
            !valid_env_name(s + 2, n - 3)) {
            if (s)
                return mg_cfgread_fail(
                    &ld->rd, kv, false,
                    "expected \"${NAME}\" naming an environment variable (key values "
                    "never go in the config; or give sha256), got a literal value");
            return mg_cfgread_fail_got(&ld->rd, kv,
                                       "expected \"${NAME}\" naming an environment variable");
        }
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 3), s + 2);
        const char *e = getenv(name);
        if ((!e || !*e) && atomic_load(&offline)) {
            /* A digest of all ones: no key hashes to it, so nothing can present this key. */
            memset(k->priv->digest, 0xff, sizeof k->priv->digest);
            mg_cfgread_pop(&ld->rd, mark);
            return 0;
        }
        if (!e || !*e)
            return mg_cfgread_fail(&ld->rd, kv, false, "environment variable %s is not set", name);
        for (const char *p = e; *p; p++)
            if ((unsigned char)*p <= 0x20 || *p == 0x7F)
                return mg_cfgread_fail(
                    &ld->rd, kv, false,
                    "environment variable %s contains a space or control character", name);
        mg_sha256(e, strlen(e), k->priv->digest);
        mg_cfgread_pop(&ld->rd, mark);
        return 0;
    }
    size_t mark = mg_cfgread_push_key(&ld->rd, "sha256");
    const char *s = cJSON_IsString(hv) ? hv->valuestring : NULL;
    bool ok = s && strlen(s) == 2 * MG_SHA256_LEN;
    for (size_t i = 0; ok && i < 2 * MG_SHA256_LEN; i++) ok = hexval(s[i]) >= 0;
    if (!ok) {
        if (s)
            return mg_cfgread_fail(&ld->rd, hv, false,
                                   "expected 64 hexadecimal digits (the SHA-256 of the key), got a "
                                   "string of %zu characters",
                                   strlen(s));
        return mg_cfgread_fail_got(&ld->rd, hv,
                                   "expected 64 hexadecimal digits (the SHA-256 of the key)");
    }
    for (size_t i = 0; i < MG_SHA256_LEN; i++)
        k->priv->digest[i] = (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

static int load_models(kload_t *ld, const cJSON *obj, mg_key_t *k)
{
    if (mg_cfgread_strings(&ld->rd, obj, "models", "expected an array of strings",
                           "leave models out to allow every model", false, &k->models,
                           &k->n_models) < 0)
        return -1;
    k->priv->allow = mg_xcalloc(k->n_models ? k->n_models : 1, sizeof *k->priv->allow);
    const cJSON *arr = mg_cfgread_member(obj, "models");
    const cJSON *e = arr ? arr->child : NULL;
    for (size_t i = 0; i < k->n_models; i++, e = e->next) {
        allow_t *a = &k->priv->allow[i];
        const char *s = k->models[i];
        size_t n = strlen(s);
        a->name = s;
        if (!strcmp(s, "*")) {
            a->any = true;
        } else if (n > 2 && !strcmp(s + n - 2, "/*")) {
            if (!ld->cfg) continue;
            char pid[256];
            snprintf(pid, sizeof pid, "%.*s", (int)(n - 2), s);
            a->provider = mg_config_find_provider(ld->cfg, pid);
            if (!a->provider) {
                size_t mark = mg_cfgread_push_key(&ld->rd, "models");
                mg_cfgread_push_index(&ld->rd, i);
                mg_cfgread_fail(&ld->rd, e, false, "unknown provider \"%s\"", pid);
                mg_cfgread_pop(&ld->rd, mark);
                return -1;
            }
        } else if (ld->cfg) {
            a->model = mg_config_find_model(ld->cfg, s); /* NULL: a route name, matched as is */
        }
    }
    return 0;
}

/* 1..MG_KEYS_MAX_RATE. */
static int load_rate(kload_t *ld, const cJSON *obj, const char *key, int64_t *out)
{
    const cJSON *v = mg_cfgread_member(obj, key);
    if (!v) return 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || d != floor(d) || d < 1)
        return mg_cfgread_fail_got(&ld->rd, v, "expected a positive integer");
    if (d > (double)MG_KEYS_MAX_RATE)
        return mg_cfgread_fail_got(&ld->rd, v, "expected at most 1000000000");
    *out = (int64_t)d;
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

static int load_budget(kload_t *ld, const cJSON *obj, mg_key_t *k)
{
    static const char *const budget_keys[] = {"amount", "period", NULL};
    const cJSON *b = mg_cfgread_member(obj, "budget");
    if (!b) return 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, "budget");
    if (!cJSON_IsObject(b))
        return mg_cfgread_fail_got(&ld->rd, b, "expected an object {amount, period}");
    if (mg_cfgread_check_keys(&ld->rd, b, budget_keys, true)) return -1;
    const cJSON *amount = mg_cfgread_member(b, "amount"), *period = mg_cfgread_member(b, "period");
    if (!amount) return mg_cfgread_fail_missing(&ld->rd, b, "amount");
    if (!period) return mg_cfgread_fail_missing(&ld->rd, b, "period");
    size_t m2 = mg_cfgread_push_key(&ld->rd, "amount");
    if (!cJSON_IsNumber(amount) || !isfinite(amount->valuedouble) || amount->valuedouble <= 0)
        return mg_cfgread_fail_got(&ld->rd, amount, "expected a positive number");
    k->budget = amount->valuedouble;
    mg_cfgread_pop(&ld->rd, m2);
    mg_cfgread_push_key(&ld->rd, "period");
    const char *p = cJSON_IsString(period) ? period->valuestring : "";
    if (!strcmp(p, "hour"))
        k->budget_period = MG_PERIOD_HOUR;
    else if (!strcmp(p, "day"))
        k->budget_period = MG_PERIOD_DAY;
    else if (!strcmp(p, "month"))
        k->budget_period = MG_PERIOD_MONTH;
    else
        return mg_cfgread_fail_got(&ld->rd, period, "expected \"hour\", \"day\" or \"month\"");
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

static int load_key(kload_t *ld, const cJSON *obj, mg_keys_t *ks, size_t idx)
{
    static const char *const key_keys[] = {"id",  "key", "sha256", "models", "regions",
                                           "rpm", "tpm", "budget", NULL};
    mg_key_t *k = &ks->keys[idx];
    k->priv = mg_xcalloc(1, sizeof *k->priv);
    k->priv->state = state_new();
    k->priv->cfg = ld->cfg;
    ks->n = idx + 1; /* from here on mg_keys_free releases this entry */

    if (!cJSON_IsObject(obj)) return mg_cfgread_fail_got(&ld->rd, obj, "expected an object");
    if (mg_cfgread_check_keys(&ld->rd, obj, key_keys, true)) return -1;

    const cJSON *id = mg_cfgread_member(obj, "id");
    if (!id) return mg_cfgread_fail_missing(&ld->rd, obj, "id");
    size_t mark = mg_cfgread_push_key(&ld->rd, "id");
    if (!cJSON_IsString(id) || !valid_id(id->valuestring))
        return mg_cfgread_fail_got(&ld->rd, id,
                                   "expected a name of 1 to 64 letters, digits, '_', '-' or '.'");
    for (size_t j = 0; j < idx; j++)
        if (!strcmp(ks->keys[j].id, id->valuestring))
            return mg_cfgread_fail(&ld->rd, id, false, "duplicate id \"%s\" (also %s[%zu])",
                                   id->valuestring, ld->base, j);
    k->id = mg_xstrdup(id->valuestring);
    mg_cfgread_pop(&ld->rd, mark);

    if (load_secret(ld, obj, k)) return -1;
    const char *field = mg_cfgread_member(obj, "key") ? "key" : "sha256";
    bool placeholder = atomic_load(&offline) && offline_placeholder(k); /* not a duplicate of any */
    for (size_t j = 0; j < idx && !placeholder; j++)
        if (!memcmp(ks->keys[j].priv->digest, k->priv->digest, MG_SHA256_LEN)) {
            mg_cfgread_push_key(&ld->rd, field);
            return mg_cfgread_fail(&ld->rd, mg_cfgread_member(obj, field), false,
                                   "the same key as %s[%zu] (%s)", ld->base, j, ks->keys[j].id);
        }
    if (load_models(ld, obj, k)) return -1;
    if (mg_cfgread_strings(&ld->rd, obj, "regions", "expected an array of strings",
                           "leave regions out to allow every region", false, &k->regions,
                           &k->n_regions) < 0)
        return -1;
    if (load_rate(ld, obj, "rpm", &k->rpm) || load_rate(ld, obj, "tpm", &k->tpm)) return -1;
    return load_budget(ld, obj, k);
}

int mg_keys_load_ex(const cJSON *keys_array, const mg_config_t *cfg, const char *path,
                    mg_keys_t **out, const cJSON **err_node, char *err, size_t errlen)
{
    kload_t ld = {.cfg = cfg,
                  .base = path ? path : "gateway.keys",
                  .rd = {.report = report, .ud = &ld},
                  .err = err,
                  .errlen = errlen};
    mg_keys_t *ks = NULL;
    *out = NULL;
    if (errlen) err[0] = '\0';
    if (err_node) *err_node = NULL;
    mg_buf_puts(&ld.rd.path, ld.base);

    if (!cJSON_IsArray(keys_array)) {
        mg_cfgread_fail_got(&ld.rd, keys_array, "expected an array of keys");
        goto error;
    }
    if (!keys_array->child) {
        mg_cfgread_fail(&ld.rd, keys_array, false,
                        "expected at least one key (leave gateway.keys out to run without "
                        "keys)");
        goto error;
    }
    ks = mg_xcalloc(1, sizeof *ks);
    ks->cfg = cfg;
    ks->keys = mg_xcalloc((size_t)cJSON_GetArraySize(keys_array), sizeof *ks->keys);
    size_t i = 0;
    for (const cJSON *e = keys_array->child; e; e = e->next, i++) {
        size_t mark = mg_cfgread_push_index(&ld.rd, i);
        if (load_key(&ld, e, ks, i)) goto error;
        mg_cfgread_pop(&ld.rd, mark);
    }
    mg_cfgread_free(&ld.rd);
    *out = ks;
    return 0;

error:
    if (err_node) *err_node = ld.err_node;
    mg_cfgread_free(&ld.rd);
    mg_keys_free(ks);
    return -1;
}

int mg_keys_load(const cJSON *keys_array, const mg_config_t *cfg, mg_keys_t **out, char *err,
                 size_t errlen)
{
    return mg_keys_load_ex(keys_array, cfg, NULL, out, NULL, err, errlen);
}

void mg_keys_free(mg_keys_t *keys)
{
    if (!keys) return;
    for (size_t i = 0; i < keys->n; i++) {
        mg_key_t *k = &keys->keys[i];
        free(k->id);
        for (size_t j = 0; j < k->n_models; j++) free(k->models[j]);
        free(k->models);
        for (size_t j = 0; j < k->n_regions; j++) free(k->regions[j]);
        free(k->regions);
        if (k->priv) {
            free(k->priv->allow);
            state_release(k->priv->state);
            explicit_bzero(k->priv->digest, sizeof k->priv->digest);
            free(k->priv);
        }
    }
    free(keys->keys);
    free(keys);
}

size_t mg_keys_count(const mg_keys_t *keys)
{
    return keys ? keys->n : 0;
}

const mg_key_t *mg_keys_at(const mg_keys_t *keys, size_t i)
{
    return keys && i < keys->n ? &keys->keys[i] : NULL;
}

void mg_keys_adopt_state(mg_keys_t *next, const mg_keys_t *prev)
{
    if (!next || !prev) return;
    for (size_t i = 0; i < next->n; i++)
        for (size_t j = 0; j < prev->n; j++) {
            if (strcmp(next->keys[i].id, prev->keys[j].id)) continue;
            mg_key_state_t *s = prev->keys[j].priv->state;
            atomic_fetch_add(&s->refs, 1);
            state_release(next->keys[i].priv->state);
            next->keys[i].priv->state = s;
            break;
        }
}

/* ---- lookup ---------------------------------------------------------------------------------- */

static const char *trim(const char *s, size_t *len)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (len) *len = n;
    return n ? s : NULL;
}

const char *mg_keys_presented(const char *authorization, const char *x_api_key, size_t *len)
{
    if (authorization) {
        const char *a = authorization;
        while (*a == ' ' || *a == '\t') a++;
        if (!strncasecmp(a, "bearer", 6) && (a[6] == ' ' || a[6] == '\t')) {
            const char *v = trim(a + 6, len);
            if (v) return v;
        }
    }
    if (x_api_key) return trim(x_api_key, len);
    return NULL;
}

const mg_key_t *mg_keys_find_n(const mg_keys_t *keys, const char *presented, size_t len)
{
    if (!keys || !presented || !len) return NULL;
    uint8_t d[MG_SHA256_LEN];
    mg_sha256(presented, len, d);
    const mg_key_t *found = NULL;
    for (size_t i = 0; i < keys->n; i++) {
        /* No early exit and no data-dependent branch beyond the select. */
        bool eq = mg_ct_equal((const char *)d, sizeof d, (const char *)keys->keys[i].priv->digest,
                              MG_SHA256_LEN);
        uintptr_t mask = (uintptr_t)0 - (uintptr_t)eq;
        found = (const mg_key_t *)(((uintptr_t)&keys->keys[i] & mask) | ((uintptr_t)found & ~mask));
    }
    atomic_fetch_add_explicit(&((mg_keys_t *)keys)->comparisons, keys->n, memory_order_relaxed);
    explicit_bzero(d, sizeof d);
    return found;
}

const mg_key_t *mg_keys_find(const mg_keys_t *keys, const char *presented)
{
    return presented ? mg_keys_find_n(keys, presented, strlen(presented)) : NULL;
}

uint64_t mg_keys_comparisons(const mg_keys_t *keys)
{
    return keys ? atomic_load_explicit(&((mg_keys_t *)keys)->comparisons, memory_order_relaxed)
                : 0;
}

/* ---- model and region rules ------------------------------------------------------------------ */

static bool allow_matches(const allow_t *a, const mg_model_t *m)
{
    if (a->any) return true;
    if (!m) return false;
    if (a->provider) return mg_model_catalog_provider(m) == a->provider;
    return a->model == m;
}

bool mg_keys_allows_model(const mg_key_t *key, const mg_model_t *m)
{
    if (!key || !key->n_models) return key != NULL;
    for (size_t i = 0; i < key->n_models; i++)
        if (allow_matches(&key->priv->allow[i], m)) return true;
    return false;
}

/* The name the client asked: listed as is, "*", or resolving to a listed catalog model. Without a
 * config (tests), a provider wildcard matches names starting with "p/". */
static bool name_allowed(const mg_key_t *key, const mg_config_t *cfg, const char *name)
{
    if (!key->n_models) return true;
    const mg_model_t *m = cfg ? mg_config_find_model(cfg, name) : NULL;
    for (size_t i = 0; i < key->n_models; i++) {
        const allow_t *a = &key->priv->allow[i];
        if (a->any || !strcmp(a->name, name) || allow_matches(a, m)) return true;
        size_t n = strlen(a->name);
        if (!cfg && n > 2 && !strcmp(a->name + n - 2, "/*") && !strncmp(a->name, name, n - 1))
            return true;
    }
    return false;
}

/* "a, b, c" of a list, cut to fit. */
static void list_text(char *out, size_t n, char *const *items, size_t count)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < count && len < n; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? ", " : "", items[i]);
        if (w < 0 || (size_t)w >= n - len) {
            if (n > 4) snprintf(out + n - 4, 4, "...");
            return;
        }
        len += (size_t)w;
    }
}

/* ---- time ------------------------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Days since 1970-01-01 → civil date (H. Hinnant's algorithm), and back. */
static void civil_from_days(int64_t z, int64_t *y, int *m)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t period_index(mg_budget_period_t p, int64_t now_ms)
{
    switch (p) {
    case MG_PERIOD_HOUR: return floor_div(now_ms, 3600000);
    case MG_PERIOD_DAY: return floor_div(now_ms, 86400000);
    case MG_PERIOD_MONTH: {
        int64_t y;
        int m;
        civil_from_days(floor_div(now_ms, 86400000), &y, &m);
        return y * 12 + (m - 1);
    }
    default: return 0;
    }
}

/* Start of the period after period index idx, in ms since the epoch. */
static int64_t period_end_ms(mg_budget_period_t p, int64_t idx)
{
    switch (p) {
    case MG_PERIOD_HOUR: return (idx + 1) * 3600000;
    case MG_PERIOD_DAY: return (idx + 1) * 86400000;
    case MG_PERIOD_MONTH: {
        int64_t next = idx + 1;
        return days_from_civil(floor_div(next, 12), (int)(next - floor_div(next, 12) * 12) + 1, 1) *
               86400000;
    }
    default: return 0;
    }
}

/* ---- limiter (state lock held) --------------------------------------------------------------- */

/* A bucket of cap units refilled at rate units per ms. Starts full; a clock going backwards
 * refills nothing. */
static void refill(int64_t *level, int64_t *last, bool *init, int64_t cap, int64_t rate, int64_t now)
{
    if (!*init) {
        *init = true;
        *level = cap;
        *last = now;
        return;
    }
    int64_t el = now - *last;
    *last = now;
    if (el <= 0) return;
    if (*level >= cap) {
        *level = cap;
        return;
    }
    int64_t need = cap - *level;
    if (el > need / rate)
        *level = cap;
    else
        *level += el * rate;
}

/* Moves the budget to the current period (forward only). */
static void roll_period(mg_key_state_t *s, mg_budget_period_t p, int64_t now_ms)
{
    int64_t idx = period_index(p, now_ms);
    if (s->period != p || idx > s->period_index) {
        s->period = p;
        s->period_index = idx;
        s->spent = 0;
    }
}

static int64_t ceil_s(int64_t ms)
{
    return ms <= 1000 ? 1 : (ms + 999) / 1000;
}

static void verdict_set(mg_key_verdict_t *out, int status, const char *type, const char *code)
{
    out->status = status;
    out->type = type;
    out->code = code;
}

int mg_keys_check_access(const mg_key_t *key, const char *model, const char *region, mg_key_verdict_t *out)
{
    char list[300];
    memset(out, 0, sizeof *out);
    out->status = 200;
    if (!key) {
        verdict_set(out, 401, "authentication_error", "invalid_api_key");
        snprintf(out->message, sizeof out->message, "invalid API key");
        return 401;
    }
    if (model && !name_allowed(key, key->priv->cfg, model)) {
        list_text(list, sizeof list, key->models, key->n_models);
        verdict_set(out, 403, "permission_error", "model_not_allowed");
        snprintf(out->message, sizeof out->message,
                 "key %s may not use model `%.100s`; allowed: %s", key->id, model, list);
        return 403;
    }
    if (region && key->n_regions) {
        bool ok = false;
        for (size_t i = 0; i < key->n_regions && !ok; i++)
            ok = mg_region_allows(key->regions[i], region);
        if (!ok) {
            list_text(list, sizeof list, key->regions, key->n_regions);
            verdict_set(out, 403, "permission_error", "region_not_allowed");
            snprintf(out->message, sizeof out->message,
                     "key %s may not use data region `%.100s`; allowed: %s (local providers are "
                     "always allowed)",
                     key->id, region, list);
            return 403;
        }
    }
    return 0;
}

int mg_keys_check(const mg_key_t *key, const char *model, const char *region, int64_t now_ms,
                  mg_key_verdict_t *out)
{
    int rc = mg_keys_check_access(key, model, region, out);
    if (rc || (!key->rpm && !key->tpm && !key->budget)) return rc;

    mg_key_state_t *s = key->priv->state;
    int64_t wait_ms[3] = {0, 0, 0}; /* budget, tpm, rpm */
    double spent = 0;
    pthread_mutex_lock(&s->lock);
    if (key->budget > 0) {
        roll_period(s, key->budget_period, now_ms);
        spent = s->spent;
        if (s->spent >= key->budget)
            wait_ms[0] = MG_MAX(period_end_ms(s->period, s->period_index) - now_ms, 1);
    }
    if (key->tpm) {
        refill(&s->tpm_level, &s->tpm_last, &s->tpm_init, key->tpm * UNITS, key->tpm, now_ms);
        if (s->tpm_level < 0) wait_ms[1] = (-s->tpm_level + key->tpm - 1) / key->tpm;
    }
    if (key->rpm) {
        refill(&s->rpm_level, &s->rpm_last, &s->rpm_init, key->rpm * UNITS, key->rpm, now_ms);
        if (s->rpm_level < UNITS) wait_ms[2] = (UNITS - s->rpm_level + key->rpm - 1) / key->rpm;
    }
    int worst = -1;
    for (int i = 0; i < 3; i++)
        if (wait_ms[i] && (worst < 0 || wait_ms[i] > wait_ms[worst])) worst = i;
    if (worst < 0 && key->rpm) s->rpm_level -= UNITS;
    pthread_mutex_unlock(&s->lock);
    if (worst < 0) return 0;

    int64_t secs = ceil_s(wait_ms[worst]);
    char amount[40];
    switch (worst) {
    case 0:
        mg_cfgread_format_number(key->budget, amount, sizeof amount);
        verdict_set(out, 429, "rate_limit_error", "budget_exceeded");
        char spent_s[40];
        mg_cfgread_format_number(spent, spent_s, sizeof spent_s);
        snprintf(out->message, sizeof out->message,
                 "key %s has used its budget of %s per %s (%s spent); it renews in %lld s", key->id,
                 amount, mg_budget_period_name(key->budget_period), spent_s, (long long)secs);
        break;
    case 1:
        verdict_set(out, 429, "rate_limit_error", "tokens_limit_exceeded");
        snprintf(out->message, sizeof out->message,
                 "key %s is over its limit of %lld tokens per minute; retry in %lld s", key->id,
                 (long long)key->tpm, (long long)secs);
        break;
    default:
        verdict_set(out, 429, "rate_limit_error", "rate_limit_exceeded");
        snprintf(out->message, sizeof out->message,
                 "key %s is over its limit of %lld requests per minute; retry in %lld s", key->id,
                 (long long)key->rpm, (long long)secs);
        break;
    }
    out->retry_after_s = secs;
    return 429;
}

void mg_keys_account(const mg_key_t *key, int64_t tokens, double cost, int64_t now_ms)
{
    if (!key || (!key->tpm && !key->budget)) return;
    if (tokens < 0) tokens = 0;
    if (tokens > 1000000000000LL) tokens = 1000000000000LL; /* keeps units within int64 */
    if (!isfinite(cost) || cost < 0) cost = 0;
    mg_key_state_t *s = key->priv->state;
    pthread_mutex_lock(&s->lock);
    if (key->tpm) {
        refill(&s->tpm_level, &s->tpm_last, &s->tpm_init, key->tpm * UNITS, key->tpm, now_ms);
        s->tpm_level -= tokens * UNITS;
        if (s->tpm_level < -(INT64_MAX / 4)) s->tpm_level = -(INT64_MAX / 4);
    }
    if (key->budget > 0) {
        roll_period(s, key->budget_period, now_ms);
        s->spent += cost;
    }
    pthread_mutex_unlock(&s->lock);
}

void mg_keys_refund(const mg_key_t *key, int64_t now_ms)
{
    if (!key || !key->rpm) return;
    mg_key_state_t *s = key->priv->state;
    pthread_mutex_lock(&s->lock);
    refill(&s->rpm_level, &s->rpm_last, &s->rpm_init, key->rpm * UNITS, key->rpm, now_ms);
    s->rpm_level = MG_MIN(s->rpm_level + UNITS, key->rpm * UNITS);
    pthread_mutex_unlock(&s->lock);
}

double mg_keys_spent(const mg_key_t *key, int64_t now_ms)
{
    if (!key || key->budget_period == MG_PERIOD_NONE) return 0;
    mg_key_state_t *s = key->priv->state;
    pthread_mutex_lock(&s->lock);
    roll_period(s, key->budget_period, now_ms);
    double spent = s->spent;
    pthread_mutex_unlock(&s->lock);
    return spent;
}

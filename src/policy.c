/* Routing policies: load, per-thread Lua states, decisions, and the invariants C enforces. See
 * policy.h. No Lua calls that may raise live here: lua_api.c runs everything protected.
 *
 * Per-thread states: each thread that ever decides gets a small process-wide slot number (thread-
 * local, recycled when the thread exits) and each policy keeps one lazily created state per slot.
 * A slot is only ever touched by its thread, so no lock is taken on the decision path. Threads
 * beyond MG_POLICY_SLOTS share a mutex-guarded pool of states (a state is still used by one thread
 * at a time). A state that hit a limit is freed at once and rebuilt on the next call. */
#include "policy.h"
#include "keys.h"

#include "sha256.h"

#include "lua_api.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MG_POLICY_SLOTS 256
#define MG_POLICY_MAX_FILE (1u << 20) /* a policy larger than this is a mistake */
/* Lua-side messages leave room for the "policy_error: " prefix */
#define MG_ERR_MAX (MG_POLICY_MSG_MAX - 16)
#define MG_DEFAULT_NAME "(built-in default)"

struct mg_policy {
    const mg_config_t *cfg; /* borrowed */
    char *display;          /* the path (relative to the config's directory when under it) */
    char *path;             /* absolute path, or NULL for the built-in */
    char *chunkname;        /* "@display" or "=…" */
    char *source;
    size_t source_len;
    char sha256[65];
    int64_t loaded_ms;
    mg_policy_limits_t limits;
    bool has_failure, has_complete, has_compact;
    mg_sandbox_t *slots[MG_POLICY_SLOTS]; /* slots[i] belongs to the thread holding slot i */
    bool busy[MG_POLICY_SLOTS];           /* the slot's state is in use (guards re-entry) */
    pthread_mutex_t pool_lock;
    mg_sandbox_t **pool; /* idle states for threads without a slot */
    size_t n_pool, cap_pool;
    atomic_uint_fast64_t decisions, errors, timeouts, memory_errors, states_created, state_bytes;
};


/* ---- thread slots -----------------------------------------------------------------------------
 */

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static bool slot_used[MG_POLICY_SLOTS];
static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static _Thread_local int tl_slot = -1; /* -1 not yet assigned, -2 none free */

static void slot_release(void *v)
{
    int id = (int)(intptr_t)v - 1;
    pthread_mutex_lock(&slot_lock);
    if (id >= 0 && id < MG_POLICY_SLOTS) slot_used[id] = false;
    pthread_mutex_unlock(&slot_lock);
}

static void slot_init(void)
{
    pthread_key_create(&slot_key, slot_release);
}

static int my_slot(void)
{
    if (tl_slot != -1) return tl_slot;
    pthread_once(&slot_once, slot_init);
    int id = -2;
    pthread_mutex_lock(&slot_lock);
    for (int i = 0; i < MG_POLICY_SLOTS; i++) {
        if (!slot_used[i]) {
            slot_used[i] = true;
            id = i;
            break;
        }
    }
    pthread_mutex_unlock(&slot_lock);
    if (id >= 0) pthread_setspecific(slot_key, (void *)(intptr_t)(id + 1));
    tl_slot = id;
    return id;
}

/* ---- states -----------------------------------------------------------------------------------
 */

static mg_sandbox_t *new_state(mg_policy_t *p, char *err, size_t errlen)
{
    mg_sandbox_t *sb = mg_lua_state_new(p->cfg, p->source, p->source_len, p->chunkname, p->display,
                                        &p->limits, err, errlen);
    if (sb) {
        atomic_fetch_add(&p->states_created, 1);
        atomic_store(&p->state_bytes, sb->mem_used);
    }
    return sb;
}

/* A state for this thread's exclusive use until release(). *slot is its slot or -1 (pool). */
static mg_sandbox_t *acquire(mg_policy_t *p, int *slot, char *err, size_t errlen)
{
    int s = my_slot();
    if (s >= 0 && !p->busy[s]) {
        if (!p->slots[s]) { /* adopt an idle state (e.g. the one checked at load) before building */
            pthread_mutex_lock(&p->pool_lock);
            if (p->n_pool) p->slots[s] = p->pool[--p->n_pool];
            pthread_mutex_unlock(&p->pool_lock);
        }
        if (!p->slots[s]) p->slots[s] = new_state(p, err, errlen);
        if (!p->slots[s]) return NULL;
        p->busy[s] = true;
        *slot = s;
        return p->slots[s];
    }
    *slot = -1;
    mg_sandbox_t *sb = NULL;
    pthread_mutex_lock(&p->pool_lock);
    if (p->n_pool) sb = p->pool[--p->n_pool];
    pthread_mutex_unlock(&p->pool_lock);
    return sb ? sb : new_state(p, err, errlen);
}

static void release(mg_policy_t *p, int slot, mg_sandbox_t *sb)
{
    if (sb->poisoned) { /* hit a limit: never trust it again */
        mg_lua_state_free(sb);
        if (slot >= 0) p->slots[slot] = NULL;
        sb = NULL;
    }
    if (slot >= 0) {
        p->busy[slot] = false;
        return;
    }
    if (!sb) return;
    pthread_mutex_lock(&p->pool_lock);
    if (p->n_pool == p->cap_pool) {
        p->cap_pool = p->cap_pool ? 2 * p->cap_pool : 4;
        p->pool = mg_xrealloc(p->pool, p->cap_pool * sizeof *p->pool);
    }
    p->pool[p->n_pool++] = sb;
    pthread_mutex_unlock(&p->pool_lock);
}

static void count_failure(mg_policy_t *p, const char *err)
{
    atomic_fetch_add(&p->errors, 1);
    if (strstr(err, "CPU budget")) atomic_fetch_add(&p->timeouts, 1);
    if (strstr(err, "memory limit") || strstr(err, "string longer"))
        atomic_fetch_add(&p->memory_errors, 1);
}

/* ---- what policies see ------------------------------------------------------------------------
 */

bool mg_policy_header_is_secret(const char *name)
{
    static const char *const secret[] = {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",                 /* Anthropic */
        "api-key",                   /* Azure OpenAI */
        "x-goog-api-key",            /* Google Gemini */
        "ocp-apim-subscription-key", /* Azure API Management */
        "x-amz-security-token",      /* AWS session credentials (Bedrock) */
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(secret); i++)
        if (mg_str_eq_nocase(name, secret[i])) return true;
    return false;
}

/* ---- invariants -------------------------------------------------------------------------------
 */

bool mg_region_allows(const char *allowed, const char *region)
{
    if (!allowed || !region) return false;
    if (!strcmp(allowed, "*")) return true;
    size_t n = strlen(allowed);
    if (n == 0) return false;
    if (mg_str_eq_nocase(allowed, region)) return true;
    if (strlen(region) > n && region[n] == '-') {
        for (size_t i = 0; i < n; i++)
            if ((allowed[i] | 0x20) != (region[i] | 0x20)) return false;
        return true;
    }
    return false;
}

static bool list_allows(const char *const *list, size_t n, const char *region)
{
    for (size_t i = 0; i < n; i++)
        if (mg_region_allows(list[i], region)) return true;
    return false;
}

static bool region_allowed(const mg_route_input_t *in, const mg_model_t *m)
{
    if (m->provider->local) return true;
    if (in->allowed_regions &&
        !list_allows(in->allowed_regions, in->n_allowed_regions, m->provider->region))
        return false;
    if (in->gateway_regions &&
        !list_allows(in->gateway_regions, in->n_gateway_regions, m->provider->region))
        return false;
    return true;
}

/* The request's data region as gw.util.data_region reads it: req.data_region (x-moongate-region),
 * else the x-data-region header; NULL when it names none. */
static const char *request_data_region(const mg_route_input_t *in)
{
    if (in->data_region && *in->data_region) return in->data_region;
    for (size_t i = 0; i < in->n_headers; i++)
        if (in->headers[i].name && mg_str_eq_nocase(in->headers[i].name, "x-data-region") &&
            in->headers[i].value && *in->headers[i].value)
            return in->headers[i].value;
    return NULL;
}

bool mg_policy_region_ok(const mg_route_input_t *in, const mg_model_t *m)
{
    if (!region_allowed(in, m)) return false;
    if (m->provider->local) return true;
    /* Content the policy did not route (a summary of the dropped turns, whose summarizer may be
     * the config's) also stays within the request's own data region: a policy that keeps a
     * regional request's candidates in that region cannot see or veto the config's summarizer. */
    const char *dr = request_data_region(in);
    return !dr || mg_region_allows(dr, m->provider->region);
}

static void region_list(mg_buf_t *b, const char *const *list, size_t n)
{
    mg_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++)
        mg_buf_printf(b, "%s%s", i ? ", " : "", list[i]);
    mg_buf_puts(b, "]");
}

static void plan_reject(mg_plan_t *out, int status, const char *code, const char *msg)
{
    out->n_cands = 0;
    out->rejected = true;
    out->status = status;
    snprintf(out->code, sizeof out->code, "%s", code);
    snprintf(out->message, sizeof out->message, "%s", msg);
}

/* raw → out: duplicates dropped, region restrictions and the key's models applied, length
 * capped. cfg: the config the request resolves names in. */
static void apply_invariants(const mg_config_t *cfg, const mg_route_input_t *in, const mg_raw_plan_t *raw,
                             mg_plan_t *out, mg_trace_t *tr)
{
    if (raw->rejected) {
        plan_reject(out, raw->status, raw->code, raw->message);
        return;
    }
    mg_buf_t refused = {0};
    size_t n_refused = 0, cut = raw->dropped_over_max, key_dropped = 0;
    bool key_filter = in->key && in->key->n_models && in->model && mg_config_find_model(cfg, in->model);
    for (size_t i = 0; i < raw->n; i++) {
        const mg_candidate_t *c = &raw->cands[i];
        bool dup = false;
        for (size_t j = 0; j < out->n_cands && !dup; j++)
            dup = out->cands[j].model == c->model;
        for (size_t j = 0; j < i && !dup; j++)
            dup = raw->cands[j].model == c->model; /* refused earlier */
        if (dup) {
            mg_trace_addf(tr, "dropped duplicate %s", c->model->ref);
            continue;
        }
        if (key_filter && !mg_keys_allows_model(in->key, c->model)) {
            mg_trace_addf(tr, "key %s may not use %s", in->key->id, c->model->ref);
            key_dropped++;
            continue;
        }
        if (!region_allowed(in, c->model)) {
            const char *r = c->model->provider->region;
            mg_trace_addf(tr, "region restriction dropped %s (%s%s)", c->model->ref,
                          r ? "region " : "no region", r ? r : "");
            mg_buf_printf(&refused, "%s%s (%s%s)", n_refused++ ? ", " : "", c->model->ref,
                          r ? "region " : "no region", r ? r : "");
            continue;
        }
        if (out->n_cands == MG_PLAN_MAX_CANDIDATES) {
            cut++;
            continue;
        }
        out->cands[out->n_cands++] = *c;
    }
    if (cut)
        mg_trace_addf(tr, "plan cut to %d candidates (%zu more ignored)", MG_PLAN_MAX_CANDIDATES,
                      cut);
    if (out->n_cands == 0) {
        if (n_refused) {
            mg_buf_t msg = {0};
            mg_buf_printf(&msg,
                          "no candidate for this request may receive its data: %s %s outside the "
                          "allowed regions",
                          refused.data, n_refused == 1 ? "is" : "are");
            if (in->allowed_regions) {
                mg_buf_puts(&msg, " ");
                region_list(&msg, in->allowed_regions, in->n_allowed_regions);
                mg_buf_puts(&msg, " of the caller's key");
            }
            if (in->gateway_regions) {
                mg_buf_puts(&msg, in->allowed_regions ? " and " : " ");
                region_list(&msg, in->gateway_regions, in->n_gateway_regions);
                mg_buf_puts(&msg, " of the gateway");
            }
            mg_buf_puts(&msg, "; local providers are always allowed");
            plan_reject(out, 403, "region_not_allowed", msg.data);
            mg_buf_free(&msg);
        } else if (key_dropped) {
            char msg[300];
            snprintf(msg, sizeof msg, "key %s may not use any model the route for `%.100s` chose",
                     in->key->id, in->model);
            plan_reject(out, 403, "model_not_allowed", msg);
        } else {
            plan_reject(out, 503, "no_candidates",
                        "the routing policy returned no candidates for this request");
        }
    }
    mg_buf_free(&refused);
}

static void plan_reset(mg_plan_t *out)
{
    out->n_cands = 0;
    out->rejected = false;
    out->status = 0;
    out->code[0] = out->message[0] = out->error[0] = out->trace[0] = '\0';
    out->elapsed_us = 0;
}

/* ---- the static plan (no Lua) ------------------------------------------------------------------
 */

static mg_candidate_t plain(const mg_model_t *m)
{
    return (mg_candidate_t){
        .model = m, .max_output_tokens = -1, .compaction = -1, .strip_reasoning = -1,
        .summarize = -1};
}

static void unknown_model_message(const mg_config_t *cfg, const char *name, mg_buf_t *msg)
{
    if (!strcmp(name, "default"))
        mg_buf_puts(msg, "no default model is configured (agents.defaults.model)");
    else
        mg_buf_printf(msg, "The model `%s` does not exist in this gateway's catalog", name);
    mg_buf_puts(msg, ". Available:");
    size_t shown = 0;
    for (size_t p = 0; p < cfg->n_providers; p++)
        for (size_t k = 0; k < cfg->providers[p].n_models && shown < 50; k++, shown++)
            mg_buf_printf(msg, "%s %s", shown ? "," : "", cfg->providers[p].models[k].ref);
    for (size_t k = 0; k < cfg->n_aliases && k < 10; k++)
        mg_buf_printf(msg, ", %s", cfg->aliases[k].alias);
    if (cfg->n_default_chain) mg_buf_puts(msg, ", default");
}

void mg_policy_static_plan(const mg_config_t *cfg, const mg_route_input_t *in, mg_plan_t *out)
{
    mg_raw_plan_t *raw = mg_xcalloc(1, sizeof *raw);
    const char *name = in->model ? in->model : "default";
    plan_reset(out);
    mg_trace_t tr;
    mg_trace_init(&tr, out->trace, sizeof out->trace);
    mg_trace_add(&tr, "static chain", 12);
    if (!strcmp(name, "default")) {
        for (size_t i = 0; i < cfg->n_default_chain; i++)
            raw->cands[raw->n++] = plain(cfg->default_chain[i]);
    } else {
        const mg_model_t *m = mg_config_find_model(cfg, name);
        size_t i = 0;
        while (m && i < cfg->n_default_chain && cfg->default_chain[i] != m)
            i++;
        if (m && i == cfg->n_default_chain) raw->cands[raw->n++] = plain(m);
        for (; m && i < cfg->n_default_chain && raw->n < MG_RAW_PLAN_MAX; i++)
            raw->cands[raw->n++] = plain(cfg->default_chain[i]);
    }
    if (raw->n == 0) {
        mg_buf_t msg = {0};
        unknown_model_message(cfg, name, &msg);
        plan_reject(out, 404, "model_not_found", msg.data);
        mg_buf_free(&msg);
    } else {
        apply_invariants(cfg, in, raw, out, &tr);
    }
    free(raw);
}

/* ---- loading ----------------------------------------------------------------------------------
 */

mg_policy_limits_t mg_policy_limits_default(void)
{
    return (mg_policy_limits_t){
        .cpu_ms = 5,
        .load_cpu_ms = 50,
        .mem_bytes = 32 << 20,
        .check_interval = 1000,
        .max_string = 256 << 10,
    };
}

static mg_policy_limits_t normalize(const mg_policy_limits_t *l)
{
    mg_policy_limits_t d = mg_policy_limits_default();
    if (!l) return d;
    if (l->cpu_ms > 0) d.cpu_ms = l->cpu_ms;
    if (l->load_cpu_ms > 0) d.load_cpu_ms = l->load_cpu_ms;
    if (l->mem_bytes > 0) d.mem_bytes = l->mem_bytes;
    if (l->check_interval > 0) d.check_interval = l->check_interval;
    if (l->max_string > 0) d.max_string = l->max_string;
    return d;
}

static int read_source(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    if (mg_read_file(path, MG_POLICY_MAX_FILE, text, len) == 0) return 0;
    snprintf(err, errlen, "%s: cannot read the policy: %s", path, strerror(errno));
    return -1;
}

/* path relative to dir when it lies under it (shorter messages), else path. */
static char *display_name(const char *path, const char *dir)
{
    size_t n = dir ? strlen(dir) : 0;
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n && !strncmp(path, dir, n) && path[n] == '/' && path[n + 1])
        return mg_xstrdup(path + n + 1);
    return mg_xstrdup(path);
}

mg_policy_t *mg_policy_load_file(const mg_config_t *cfg, const char *path,
                                 const mg_policy_limits_t *limits, char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    mg_policy_t *p = mg_xcalloc(1, sizeof *p);
    mg_sandbox_t *sb = NULL;
    p->cfg = cfg;
    p->limits = normalize(limits);
    p->loaded_ms = mg_wall_ms();
    pthread_mutex_init(&p->pool_lock, NULL);
    if (path) {
        if (read_source(path, &p->source, &p->source_len, err, errlen)) goto error;
        char *real = realpath(path, NULL); /* "/etc/mg/../p.lua" → "/etc/p.lua" for /admin/policy */
        p->path = mg_xstrdup(real ? real : path);
        free(real);
        p->display = display_name(path, cfg->base_dir);
        p->chunkname = mg_xasprintf("@%s", p->display);
    } else {
        const char *text = mg_lua_default_policy(&p->source_len);
        if (!text) {
            snprintf(err, errlen, "the built-in default policy is missing (build problem)");
            goto error;
        }
        p->source = mg_xstrndup(text, p->source_len);
        p->display = mg_xstrdup(MG_DEFAULT_NAME);
        p->chunkname = mg_xstrdup("=moongate:default_policy.lua");
    }
    mg_sha256_hex(p->source, p->source_len, p->sha256);

    char msg[MG_POLICY_MSG_MAX];
    sb = new_state(p, msg, sizeof msg);
    if (!sb) {
        snprintf(err, errlen, "%s", msg);
        goto error;
    }
    p->has_failure = mg_lua_state_has(sb, "on_failure");
    p->has_complete = mg_lua_state_has(sb, "on_complete");
    p->has_compact = mg_lua_state_has(sb, "compact");

    /* self-check: one decision for "default" on a synthetic request, nothing known live */
    mg_route_input_t in = {.cfg = cfg,
                           .model = "default",
                           .endpoint = "chat",
                           .prompt_tokens = 1000,
                           .max_output_tokens = -1};
    mg_raw_plan_t *raw = mg_xmalloc(sizeof *raw);
    char tbuf[256];
    mg_trace_t tr;
    mg_trace_init(&tr, tbuf, sizeof tbuf);
    int rc = mg_lua_route(sb, &in, NULL, p->limits.load_cpu_ms, raw, &tr, msg, sizeof msg);
    free(raw);
    if (rc) {
        snprintf(err, errlen, "%s (self-check: route() for model \"default\")", msg);
        goto error;
    }
    if (sb->poisoned) {
        snprintf(err, errlen, "%s: the self-check hit a limit", p->display);
        goto error;
    }
    release(p, -1, sb); /* the checked state waits in the pool for the first thread without one */
    return p;
error:
    mg_lua_state_free(sb);
    mg_policy_free(p);
    return NULL;
}

mg_policy_t *mg_policy_load(const mg_config_t *cfg, const mg_policy_limits_t *limits, char *err,
                            size_t errlen)
{
    return mg_policy_load_file(cfg, cfg->gw.policy_path, limits, err, errlen);
}

void mg_policy_free(mg_policy_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < MG_POLICY_SLOTS; i++)
        mg_lua_state_free(p->slots[i]);
    for (size_t i = 0; i < p->n_pool; i++)
        mg_lua_state_free(p->pool[i]);
    free(p->pool);
    pthread_mutex_destroy(&p->pool_lock);
    free(p->display);
    free(p->path);
    free(p->chunkname);
    free(p->source);
    free(p);
}

const char *mg_policy_path(const mg_policy_t *p)
{
    return p->path ? p->path : MG_DEFAULT_NAME;
}

const char *mg_policy_source(const mg_policy_t *p, size_t *len)
{
    if (len) *len = p->source_len;
    return p->source;
}

const char *mg_policy_sha256(const mg_policy_t *p)
{
    return p->sha256;
}

int64_t mg_policy_loaded_ms(const mg_policy_t *p)
{
    return p->loaded_ms;
}

bool mg_policy_has_hook(const mg_policy_t *p, const char *name)
{
    if (!strcmp(name, "on_failure")) return p->has_failure;
    if (!strcmp(name, "on_complete")) return p->has_complete;
    if (!strcmp(name, "compact")) return p->has_compact;
    return !strcmp(name, "route");
}

mg_policy_stats_t mg_policy_stats(const mg_policy_t *p)
{
    return (mg_policy_stats_t){
        .decisions = atomic_load(&p->decisions),
        .errors = atomic_load(&p->errors),
        .timeouts = atomic_load(&p->timeouts),
        .memory_errors = atomic_load(&p->memory_errors),
        .states_created = atomic_load(&p->states_created),
        .state_bytes = atomic_load(&p->state_bytes),
    };
}

/* ---- decisions --------------------------------------------------------------------------------
 */

int mg_policy_route(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                    mg_plan_t *out)
{
    int64_t t0 = mg_now_us();
    plan_reset(out);
    atomic_fetch_add(&p->decisions, 1);
    char err[MG_ERR_MAX];
    if (in->cfg && in->cfg != p->cfg) {
        snprintf(out->error, sizeof out->error,
                 "policy_error: the request's config is not the policy's (bug)");
        atomic_fetch_add(&p->errors, 1);
        return -1;
    }
    mg_trace_t tr;
    mg_trace_init(&tr, out->trace, sizeof out->trace);
    int slot;
    mg_sandbox_t *sb = acquire(p, &slot, err, sizeof err);
    if (!sb) {
        snprintf(out->error, sizeof out->error, "policy_error: %s", err);
        count_failure(p, err);
        return -1;
    }
    mg_raw_plan_t raw;
    int rc = mg_lua_route(sb, in, live, p->limits.cpu_ms, &raw, &tr, err, sizeof err);
    release(p, slot, sb);
    if (rc) {
        snprintf(out->error, sizeof out->error, "policy_error: %s", err);
        count_failure(p, err);
        out->elapsed_us = mg_now_us() - t0;
        return -1;
    }
    apply_invariants(p->cfg, in, &raw, out, &tr);
    out->elapsed_us = mg_now_us() - t0;
    return 0;
}

int mg_policy_on_failure(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                         const mg_failure_t *f, mg_failure_decision_t *out)
{
    out->action = MG_FAILURE_NEXT;
    out->delay_ms = 0;
    out->trace[0] = out->error[0] = '\0';
    if (!p->has_failure) return 0;
    char err[MG_ERR_MAX];
    int slot;
    mg_sandbox_t *sb = acquire(p, &slot, err, sizeof err);
    int rc = -1;
    if (sb) {
        rc = mg_lua_on_failure(sb, in, live, f, p->limits.cpu_ms, out, err, sizeof err);
        release(p, slot, sb);
    }
    if (rc) {
        snprintf(out->error, sizeof out->error, "policy_error: %s", err);
        count_failure(p, err);
        out->action = MG_FAILURE_NEXT;
    }
    return rc;
}

void mg_policy_on_complete(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                           const mg_completion_t *c)
{
    if (!p->has_complete) return;
    char err[MG_ERR_MAX];
    int slot;
    mg_sandbox_t *sb = acquire(p, &slot, err, sizeof err);
    int rc = -1;
    if (sb) {
        rc = mg_lua_on_complete(sb, in, live, c, p->limits.cpu_ms, err, sizeof err);
        release(p, slot, sb);
    }
    if (rc) {
        count_failure(p, err);
        char line[MG_POLICY_MSG_MAX + 32];
        snprintf(line, sizeof line, "on_complete failed: %s", err);
        mg_lua_log(MG_LOG_WARN, p->display, line);
    }
}

int mg_policy_compact(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                      mg_compact_call_t *c)
{
    c->trace[0] = c->error[0] = '\0';
    if (!p->has_compact) return 0;
    char err[MG_ERR_MAX];
    int slot;
    mg_sandbox_t *sb = acquire(p, &slot, err, sizeof err);
    int rc = -1;
    if (sb) {
        rc = mg_lua_compact(sb, in, live, c, p->limits.cpu_ms, err, sizeof err);
        release(p, slot, sb);
    }
    if (rc < 0) {
        snprintf(c->error, sizeof c->error, "policy_error: %s", err);
        count_failure(p, err);
    }
    return rc;
}

void mg_policy_set_log(mg_policy_log_fn fn)
{
    mg_lua_set_log(fn);
}

/* The `gw` table and the calls into a policy. See lua_api.h; the admin-facing description of
 * every function and field is docs/POLICIES.md (keep the two in step).
 *
 * Layout of a policy state:
 *   sandbox globals (lua_sandbox.c) + gw (read-only proxy, built below by the injectors)
 *   the prelude's env  → lua/util.lua runs there and returns gw.util
 *   the policy's env   → writable while the file's top level runs, then frozen behind a proxy
 *   registry[...]      → route/on_failure/on_complete, the req object, catalog lookup tables
 *
 * Every lua_CFunction here may longjmp (STYLE 18); the exported functions wrap them in
 * mg_sandbox_pcall. */
#include "lua_api.h"

#include "classify.h"
#include "compact.h"
#include "log.h"
#include "mg_embedded.h"
#include "util.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* registry keys (unique addresses) */
static const char route_key = 0, failure_key = 0, complete_key = 0, compact_key = 0; /* hooks */
static const char msgs_key = 0;      /* compact: req.messages of the call in progress */
static const char req_key = 0;       /* the req object (one per state, reads host->in) */
static const char names_key = 0;     /* ref or alias → light userdata mg_model_t* */
static const char models_key = 0;    /* ref → model proxy */
static const char providers_key = 0; /* provider id → provider proxy */
static const char reject_mt_key = 0; /* metatable of gw.reject(...) values */

#define MG_API_VERSION 1
#define MG_MAX_DELAY_MS 60000

/* Per-state data, reachable as mg_sandbox_of(L)->host. */
typedef struct host {
    const mg_config_t *cfg;
    char *display; /* the policy's path, for log lines */
    unsigned phase;
    const mg_route_input_t *in; /* during a call */
    const mg_live_view_t *live;
    mg_trace_t *trace;
    char route_where[200]; /* "file:line" of route's definition, for errors about its result */
    char compact_where[200]; /* the same for compact */
    bool has_route, has_failure, has_complete, has_compact;
    double ratio; /* compact: the candidate's calibration (1 in the other phases) */
} host_t;

static _Atomic(mg_lua_log_fn) log_fn;

void mg_lua_set_log(mg_lua_log_fn fn)
{
    atomic_store(&log_fn, fn);
}

void mg_lua_log(mg_log_level_t level, const char *policy, const char *msg)
{
    mg_lua_log_fn fn = atomic_load(&log_fn);
    if (fn)
        fn(level, policy, msg);
    else
        mg_log(level, "policy", "%s: %s", policy, msg);
}

static void emit_log(host_t *h, mg_log_level_t level, const char *msg)
{
    mg_lua_log(level, h->display, msg);
}

static void sandbox_log(mg_sandbox_t *sb, int level, const char *msg)
{
    emit_log(sb->host, (mg_log_level_t)level, msg);
}

static host_t *host_of(lua_State *L)
{
    return mg_sandbox_of(L)->host;
}

const char *mg_phase_name(unsigned phase)
{
    switch (phase) {
    case MG_PHASE_LOAD:
        return "load";
    case MG_PHASE_ROUTE:
        return "route";
    case MG_PHASE_FAILURE:
        return "failure";
    case MG_PHASE_COMPLETE:
        return "complete";
    case MG_PHASE_COMPACT:
        return "compact";
    default:
        return "none";
    }
}

/* ---- trace ----------------------------------------------------------------------------------- */

void mg_trace_init(mg_trace_t *t, char *buf, size_t cap)
{
    t->buf = buf;
    t->cap = cap;
    t->len = 0;
    t->full = false;
    if (cap) buf[0] = '\0';
}

void mg_trace_add(mg_trace_t *t, const char *s, size_t n)
{
    if (!t || !t->buf || t->full || t->cap < 8) return;
    size_t room = t->cap - 1 - t->len;
    if (t->len) {
        if (room < 2 + 4) goto cut;
        t->buf[t->len++] = ';';
        t->buf[t->len++] = ' ';
        room -= 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (room <= 3 && i < n) goto cut;
        unsigned char c = (unsigned char)s[i];
        t->buf[t->len++] = (c >= 0x20 && c < 0x7F) ? (char)c : (c == '\t' || c == '\n' ? ' ' : '?');
        room--;
    }
    t->buf[t->len] = '\0';
    return;
cut:
    while (t->len + 3 > t->cap - 1)
        t->len--;
    memcpy(t->buf + t->len, "...", 3);
    t->len += 3;
    t->buf[t->len] = '\0';
    t->full = true;
}

void mg_trace_addf(mg_trace_t *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    mg_trace_add(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Every gw function starts here: upvalue 1 is its phase mask, upvalue 2 its name. */
static host_t *api_enter(lua_State *L)
{
    host_t *h = host_of(L);
    unsigned mask = (unsigned)lua_tointeger(L, lua_upvalueindex(1));
    if (!(mask & h->phase))
        luaL_error(L, "%s is not available in phase %s", lua_tostring(L, lua_upvalueindex(2)),
                   mg_phase_name(h->phase));
    return h;
}

/* The model named by the value at idx: a ref, an alias or a model table from gw.catalog.
 * NULL when unknown. */
static const mg_model_t *to_model(lua_State *L, int idx)
{
    host_t *h = host_of(L);
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE) {
        if (lua_getfield(L, idx, "ref") != LUA_TSTRING) {
            lua_pop(L, 1);
            return NULL;
        }
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        lua_pushvalue(L, idx);
    } else {
        return NULL;
    }
    /* the name is at the top */
    const mg_model_t *m = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key);
    lua_pushvalue(L, -2);
    if (lua_rawget(L, -2) == LUA_TLIGHTUSERDATA) m = lua_touserdata(L, -1);
    lua_pop(L, 2);
    size_t n;
    const char *name = lua_tolstring(L, -1, &n);
    if (!m && strlen(name) == n)
        m = mg_config_find_model(h->cfg, name); /* aliases without case, bare ids */
    lua_pop(L, 1);
    return m;
}

static const mg_model_t *check_model(lua_State *L, int idx, const char *fn)
{
    const mg_model_t *m = to_model(L, idx);
    if (!m) {
        if (lua_type(L, idx) == LUA_TSTRING)
            luaL_error(L, "%s: unknown model '%s'", fn, lua_tostring(L, idx));
        else
            luaL_error(L, "%s: expected a model ref or a model from gw.catalog, got a %s", fn,
                       luaL_typename(L, idx));
    }
    return m;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (!v) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, lua_Number v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, bool v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* Replaces the table at the top with its read-only proxy. */
static void protect_top(lua_State *L, const char *what)
{
    mg_lua_protect(L, -1, what);
    lua_remove(L, -2);
}

/* "host" of a base URL: between "://" and the next '/', ':' (outside brackets) or the end. */
static void url_host(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *at = NULL;
    for (const char *q = p; *q && *q != '/'; q++)
        if (*q == '@') at = q;
    if (at) p = at + 1;
    size_t n = 0;
    if (*p == '[') {
        const char *e = strchr(p, ']');
        n = e ? (size_t)(e - p + 1) : strlen(p);
    } else {
        while (p[n] && p[n] != '/' && p[n] != ':')
            n++;
    }
    snprintf(out, len, "%.*s", (int)n, p);
}

/* ---- injector: catalog ----------------------------------------------------------------------- */

static void push_model(lua_State *L, const mg_model_t *m, int provider_proxy)
{
    lua_createtable(L, 0, 15);
    set_str(L, "ref", m->ref);
    set_str(L, "id", m->id);
    set_str(L, "name", m->name);
    lua_pushvalue(L, provider_proxy);
    lua_setfield(L, -2, "provider");
    set_str(L, "provider_id", m->provider->id);
    set_str(L, "api", mg_api_name(m->provider->api)); /* its own (config.h), else its provider's */
    set_int(L, "context_window", m->context_window);
    set_int(L, "max_tokens", m->max_tokens);
    set_bool(L, "reasoning", m->reasoning);
    set_bool(L, "is_local", m->provider->local);
    set_str(L, "region", m->provider->region);
    set_bool(L, "builtin", m->builtin);
    lua_createtable(L, 0, 4);
    set_num(L, "input", m->cost.input);
    set_num(L, "output", m->cost.output);
    set_num(L, "cache_read", m->cost.cache_read);
    set_num(L, "cache_write", m->cost.cache_write);
    protect_top(L, "a model's cost");
    lua_setfield(L, -2, "cost");
    lua_createtable(L, 0, 2);
    set_bool(L, "text", (m->input & MG_INPUT_TEXT) != 0);
    set_bool(L, "image", (m->input & MG_INPUT_IMAGE) != 0);
    protect_top(L, "a model's input");
    lua_setfield(L, -2, "input");
    protect_top(L, "a catalog model");
}

/* gw.catalog: providers, models, aliases and the default chain, read-only. */
static void inject_catalog(lua_State *L, int gw, const mg_config_t *cfg)
{
    lua_newtable(L);
    int names = lua_gettop(L);
    lua_newtable(L);
    int models = lua_gettop(L);
    lua_newtable(L);
    int model_list = lua_gettop(L);
    lua_newtable(L);
    int providers = lua_gettop(L);
    lua_newtable(L);
    int provider_list = lua_gettop(L);
    lua_Integer nm = 0;
    for (size_t k = 0; k < cfg->n_providers; k++) {
        const mg_provider_t *p = &cfg->providers[k];
        char host[256];
        url_host(p->base_url ? p->base_url : "", host, sizeof host);
        lua_createtable(L, 0, 10);
        int raw = lua_gettop(L);
        set_str(L, "id", p->id);
        set_str(L, "host", host);
        set_str(L, "api", mg_api_name(p->api));
        set_str(L, "region", p->region);
        set_bool(L, "is_local", p->local);
        set_bool(L, "local", p->local);
        set_bool(L, "hosted", !p->local);
        set_bool(L, "builtin", p->builtin);
        lua_createtable(L, (int)p->n_tags, 0);
        for (size_t i = 0; i < p->n_tags; i++) {
            lua_pushstring(L, p->tags[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        protect_top(L, "a provider's tags");
        lua_setfield(L, raw, "tags");
        lua_createtable(L, 0, (int)p->n_tags); /* has_tag lookups: provider.tag_set.local */
        for (size_t i = 0; i < p->n_tags; i++)
            set_bool(L, p->tags[i], true);
        protect_top(L, "a provider's tag set");
        lua_setfield(L, raw, "tag_set");
        mg_lua_protect(L, raw, "a catalog provider");
        int proxy = lua_gettop(L);
        lua_pushvalue(L, proxy);
        lua_setfield(L, providers, p->id);
        lua_pushvalue(L, proxy);
        lua_rawseti(L, provider_list, (lua_Integer)k + 1);

        lua_createtable(L, (int)p->n_models, 0);
        int plist = lua_gettop(L);
        for (size_t j = 0; j < p->n_models; j++) {
            const mg_model_t *m = &p->models[j];
            push_model(L, m, proxy);
            lua_pushvalue(L, -1);
            lua_rawseti(L, plist, (lua_Integer)j + 1);
            lua_pushvalue(L, -1);
            lua_rawseti(L, model_list, ++nm);
            lua_setfield(L, models, m->ref);
            lua_pushlightuserdata(L, (void *)m);
            lua_setfield(L, names, m->ref);
        }
        protect_top(L, "a provider's models");
        lua_setfield(L, raw, "models");
        lua_settop(L, provider_list);
    }

    lua_createtable(L, 0, 8);
    int cat = lua_gettop(L);
    lua_newtable(L);
    lua_createtable(L, (int)cfg->n_aliases, 0);
    for (size_t i = 0; i < cfg->n_aliases; i++) {
        const mg_alias_t *a = &cfg->aliases[i];
        lua_pushstring(L, a->model->ref);
        lua_setfield(L, -3, a->alias);
        lua_pushstring(L, a->alias);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        lua_pushlightuserdata(L, (void *)a->model);
        lua_setfield(L, names, a->alias);
    }
    protect_top(L, "gw.catalog.alias_list");
    lua_setfield(L, cat, "alias_list");
    protect_top(L, "gw.catalog.aliases");
    lua_setfield(L, cat, "aliases");
    lua_createtable(L, (int)cfg->n_default_chain, 0);
    for (size_t i = 0; i < cfg->n_default_chain; i++) {
        lua_pushstring(L, cfg->default_chain[i]->ref);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    protect_top(L, "gw.catalog.default_chain");
    lua_setfield(L, cat, "default_chain");

    lua_pushvalue(L, models);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &models_key);
    lua_pushvalue(L, providers);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &providers_key);
    lua_pushvalue(L, names);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
    mg_lua_protect(L, models, "gw.catalog.models");
    lua_setfield(L, cat, "models");
    mg_lua_protect(L, model_list, "gw.catalog.model_list");
    lua_setfield(L, cat, "model_list");
    mg_lua_protect(L, providers, "gw.catalog.providers");
    lua_setfield(L, cat, "providers");
    mg_lua_protect(L, provider_list, "gw.catalog.provider_list");
    lua_setfield(L, cat, "provider_list");
    protect_top(L, "gw.catalog");
    lua_setfield(L, gw, "catalog");
    lua_settop(L, names - 1);
}

/* gw.resolve(name) → the catalog model for a ref or an alias (case-insensitive fallback), or nil.
 */
static int l_resolve(lua_State *L)
{
    api_enter(L);
    const mg_model_t *m = to_model(L, 1);
    if (!m) {
        lua_pushnil(L);
        return 1;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &models_key);
    lua_getfield(L, -1, m->ref);
    return 1;
}

/* ---- the req object -------------------------------------------------------------------------- */

/* req is one userdata per state whose fields read the current mg_route_input_t: building a table
 * per decision would cost more than most decisions. headers/metadata are two more such objects. */
enum {
    F_MODEL = 1,
    F_ENDPOINT,
    F_PROMPT_TOKENS,
    F_MAX_OUTPUT,
    F_HAS_TOOLS,
    F_HAS_IMAGES,
    F_STREAM,
    F_HEADERS,
    F_METADATA,
    F_KEY_ID,
    F_DATA_REGION,
    F_ALLOWED_REGIONS,
    F_MESSAGES, /* compact only: built per call (mg_lua_compact) */
    F_COUNT
};
static const char *const req_fields[] = {
    NULL,        "model",       "endpoint",        "prompt_tokens",   "max_output_tokens",
    "has_tools", "has_images",  "stream",          "headers",         "metadata",
    "key_id",    "data_region", "allowed_regions", "messages",
};
static const char headers_key = 0, metadata_key = 0; /* registry: the two sub-objects */

static const mg_route_input_t *req_input(lua_State *L)
{
    host_t *h = host_of(L);
    if (!h->in)
        luaL_error(L, "req is only valid during a call of route, on_failure, on_complete or "
                      "compact");
    return h->in;
}

static void push_req_field(lua_State *L, const mg_route_input_t *in, int f)
{
    switch (f) {
    case F_MODEL:
        lua_pushstring(L, in->model ? in->model : "default");
        break;
    case F_ENDPOINT:
        lua_pushstring(L, in->endpoint ? in->endpoint : "chat");
        break;
    case F_PROMPT_TOKENS:
        lua_pushinteger(L, in->prompt_tokens > 0 ? in->prompt_tokens : 0);
        break;
    case F_MAX_OUTPUT:
        if (in->max_output_tokens >= 0)
            lua_pushinteger(L, in->max_output_tokens);
        else
            lua_pushnil(L);
        break;
    case F_HAS_TOOLS:
        lua_pushboolean(L, in->has_tools);
        break;
    case F_HAS_IMAGES:
        lua_pushboolean(L, in->has_images);
        break;
    case F_STREAM:
        lua_pushboolean(L, in->stream);
        break;
    case F_HEADERS:
        lua_rawgetp(L, LUA_REGISTRYINDEX, &headers_key);
        break;
    case F_METADATA:
        lua_rawgetp(L, LUA_REGISTRYINDEX, &metadata_key);
        break;
    case F_KEY_ID:
        if (in->key_id)
            lua_pushstring(L, in->key_id);
        else
            lua_pushnil(L);
        break;
    case F_DATA_REGION:
        if (in->data_region)
            lua_pushstring(L, in->data_region);
        else
            lua_pushnil(L);
        break;
    case F_MESSAGES: /* nil outside compact, so that pairs(req) skips it */
        if (host_of(L)->phase == MG_PHASE_COMPACT)
            lua_rawgetp(L, LUA_REGISTRYINDEX, &msgs_key);
        else
            lua_pushnil(L);
        break;
    case F_ALLOWED_REGIONS:
        if (!in->allowed_regions) {
            lua_pushnil(L);
            break;
        }
        lua_createtable(L, (int)in->n_allowed_regions, 0);
        for (size_t i = 0; i < in->n_allowed_regions; i++) {
            lua_pushstring(L, in->allowed_regions[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    default:
        lua_pushnil(L);
    }
}

static int req_index(lua_State *L)
{
    const mg_route_input_t *in = req_input(L);
    lua_pushvalue(L, 2);
    int f = lua_rawget(L, lua_upvalueindex(1)) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : 0;
    if (!f) {
        if (lua_type(L, 2) == LUA_TSTRING)
            return luaL_error(L, "req has no field '%s'", lua_tostring(L, 2));
        return luaL_error(L, "req has no %s field", luaL_typename(L, 2));
    }
    if (f == F_MESSAGES && host_of(L)->phase != MG_PHASE_COMPACT)
        return luaL_error(L, "req.messages is only available in compact(req, budget, model)");
    push_req_field(L, in, f);
    return 1;
}

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L, "%s is read-only", lua_tostring(L, lua_upvalueindex(1)));
}

/* pairs(req): field name, value in a fixed order. */
static int req_next(lua_State *L)
{
    const mg_route_input_t *in = req_input(L);
    int f = 1;
    if (!lua_isnoneornil(L, 2)) {
        lua_pushvalue(L, 2);
        f = lua_rawget(L, lua_upvalueindex(1)) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) + 1
                                                              : F_COUNT;
    }
    for (; f < F_COUNT; f++) {
        push_req_field(L, in, f);
        if (!lua_isnil(L, -1)) break;
        lua_pop(L, 1);
    }
    if (f >= F_COUNT) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, req_fields[f]);
    lua_insert(L, -2);
    return 2;
}

static int req_pairs(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, req_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int req_tostring(lua_State *L)
{
    host_t *h = host_of(L);
    if (!h->in) {
        lua_pushliteral(L, "req (outside a call)");
        return 1;
    }
    lua_pushfstring(L, "req{model=%s, endpoint=%s, prompt_tokens=%d}",
                    h->in->model ? h->in->model : "default",
                    h->in->endpoint ? h->in->endpoint : "chat", (int)h->in->prompt_tokens);
    return 1;
}

/* headers[name] (case-insensitive) and metadata[name] (exact). upvalue 1: true for headers. */
static const mg_kv_t *kv_list(lua_State *L, bool headers, size_t *n)
{
    const mg_route_input_t *in = req_input(L);
    *n = headers ? in->n_headers : in->n_metadata;
    return headers ? in->headers : in->metadata;
}

/* Whether the policy sees entry kv: credentials are left out of req.headers whoever built the
 * list (the server, `moongate route`'s request file, a test case). */
static bool kv_shown(const mg_kv_t *kv, bool headers)
{
    return kv->name && !(headers && mg_policy_header_is_secret(kv->name));
}

/* Entry i as pairs and # see it: shown, and not a repeat of a name shown before it (a repeated
 * header is its first copy, as indexing gives it). */
static bool kv_listed(const mg_kv_t *kv, size_t i, bool headers)
{
    if (!kv_shown(&kv[i], headers)) return false;
    for (size_t j = 0; j < i; j++)
        if (kv[j].name && (headers ? mg_str_eq_nocase(kv[j].name, kv[i].name) : strcmp(kv[j].name, kv[i].name) == 0))
            return false;
    return true;
}

static int kv_index(lua_State *L)
{
    bool headers = lua_toboolean(L, lua_upvalueindex(1));
    size_t n, klen;
    const mg_kv_t *kv = kv_list(L, headers, &n);
    const char *k = lua_tolstring(L, 2, &klen);
    if (!k || lua_type(L, 2) != LUA_TSTRING) {
        lua_pushnil(L);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!kv_shown(&kv[i], headers)) continue;
        bool eq = headers ? mg_str_eq_nocase(kv[i].name, k) : strcmp(kv[i].name, k) == 0;
        if (eq) {
            lua_pushstring(L, kv[i].value ? kv[i].value : "");
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

static int kv_len(lua_State *L)
{
    bool headers = lua_toboolean(L, lua_upvalueindex(1));
    size_t n, shown = 0;
    const mg_kv_t *kv = kv_list(L, headers, &n);
    for (size_t i = 0; i < n; i++)
        shown += kv_listed(kv, i, headers);
    lua_pushinteger(L, (lua_Integer)shown);
    return 1;
}

/* pairs(req.headers): the iterator's control value is the 1-based position, hidden from the
 * caller by returning (name, value) and keeping the position in upvalue 2. */
static int kv_next(lua_State *L)
{
    size_t n;
    bool headers = lua_toboolean(L, lua_upvalueindex(1));
    const mg_kv_t *kv = kv_list(L, headers, &n);
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
    while ((size_t)i < n && !kv_listed(kv, (size_t)i, headers))
        i++;
    if ((size_t)i >= n) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, i + 1);
    lua_replace(L, lua_upvalueindex(2));
    lua_pushstring(L, kv[i].name);
    lua_pushstring(L, kv[i].value ? kv[i].value : "");
    return 2;
}

static int kv_pairs(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, kv_next, 2);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static void push_kv_object(lua_State *L, bool headers)
{
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, headers);
    lua_pushcclosure(L, kv_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, headers);
    lua_pushcclosure(L, kv_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pushboolean(L, headers);
    lua_pushcclosure(L, kv_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushstring(L, headers ? "req.headers" : "req.metadata");
    lua_pushcclosure(L, readonly_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* The req object and its headers/metadata (registry; handed to the hooks, not in gw). */
static void inject_request(lua_State *L, int gw, const mg_config_t *cfg)
{
    (void)gw;
    (void)cfg;
    lua_createtable(L, 0, F_COUNT);
    int fields = lua_gettop(L);
    for (int f = 1; f < F_COUNT; f++) {
        lua_pushinteger(L, f);
        lua_setfield(L, fields, req_fields[f]);
    }
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 6);
    lua_pushvalue(L, fields);
    lua_pushcclosure(L, req_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "req");
    lua_pushcclosure(L, readonly_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, fields);
    lua_pushcclosure(L, req_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushcfunction(L, req_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &req_key);
    push_kv_object(L, true);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &headers_key);
    push_kv_object(L, false);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &metadata_key);
    lua_pop(L, 1);
}

/* ---- injector: live state -------------------------------------------------------------------- */

static bool live_model(const host_t *h, const mg_model_t *m, mg_live_state_t *st)
{
    memset(st, 0, sizeof *st);
    st->healthy = true;
    st->latency_ms_p50 = st->ttft_ms_p50 = -1;
    if (!h->live || !h->live->model_state) return false;
    return h->live->model_state(h->live->ud, m, st);
}

static bool live_provider(const host_t *h, const mg_provider_t *p, mg_live_state_t *st)
{
    memset(st, 0, sizeof *st);
    st->healthy = true;
    st->latency_ms_p50 = st->ttft_ms_p50 = -1;
    if (!h->live || !h->live->provider_state) return false;
    return h->live->provider_state(h->live->ud, p, st);
}

static bool cooling(const mg_live_state_t *st, int64_t now)
{
    return st->cooling_down || st->cooldown_until_ms > now;
}

static void push_live(lua_State *L, bool known, const mg_live_state_t *st)
{
    int64_t now = mg_wall_ms();
    lua_createtable(L, 0, 10);
    set_bool(L, "known", known);
    set_bool(L, "healthy", st->healthy);
    set_bool(L, "cooling_down", cooling(st, now));
    if (st->cooldown_until_ms > 0) set_int(L, "cooldown_until_ms", st->cooldown_until_ms);
    set_int(L, "cooldown_ms", st->cooldown_until_ms > now ? st->cooldown_until_ms - now : 0);
    if (st->latency_ms_p50 >= 0) set_num(L, "latency_ms", st->latency_ms_p50);
    if (st->ttft_ms_p50 >= 0) set_num(L, "ttft_ms", st->ttft_ms_p50);
    set_int(L, "in_flight", st->in_flight);
    set_num(L, "error_rate", st->error_rate);
    set_str(L, "last_error", st->last_error_class);
    if (st->learned_context_window > 0) set_int(L, "learned_context_window", st->learned_context_window);
}

/* gw.health(model) → the model's live state table (a fresh snapshot per call). */
static int l_health(lua_State *L)
{
    host_t *h = api_enter(L);
    const mg_model_t *m = check_model(L, 1, "gw.health");
    mg_live_state_t st;
    bool known = live_model(h, m, &st);
    push_live(L, known, &st);
    return 1;
}

/* gw.provider_health(id) → the provider's live state table. */
static int l_provider_health(lua_State *L)
{
    host_t *h = api_enter(L);
    const char *id = luaL_checkstring(L, 1);
    const mg_provider_t *p = mg_config_find_provider(h->cfg, id);
    if (!p) return luaL_error(L, "gw.provider_health: unknown provider '%s'", id);
    mg_live_state_t st;
    bool known = live_provider(h, p, &st);
    push_live(L, known, &st);
    return 1;
}

/* gw.healthy(model) → true unless the model or its provider is known unhealthy or cooling down. */
static int l_healthy(lua_State *L)
{
    host_t *h = api_enter(L);
    const mg_model_t *m = check_model(L, 1, "gw.healthy");
    int64_t now = 0;
    mg_live_state_t st;
    bool ok = true;
    if (live_model(h, m, &st)) {
        now = mg_wall_ms();
        ok = st.healthy && !cooling(&st, now);
    }
    if (ok && live_provider(h, m->provider, &st)) {
        if (!now) now = mg_wall_ms();
        ok = st.healthy && !cooling(&st, now);
    }
    lua_pushboolean(L, ok);
    return 1;
}

/* ---- injector: trace and log ------------------------------------------------------------------
 */

/* Formats the arguments from index first: one string as is, otherwise string.format (upvalue 3). */
static const char *format_args(lua_State *L, int first, size_t *len)
{
    int top = lua_gettop(L);
    if (top == first && lua_type(L, first) == LUA_TSTRING) return lua_tolstring(L, first, len);
    if (top < first) {
        *len = 0;
        return "";
    }
    lua_pushvalue(L, lua_upvalueindex(3));
    for (int i = first; i <= top; i++)
        lua_pushvalue(L, i);
    if (lua_pcall(L, top - first + 1, 1, 0) != LUA_OK) {
        /* string.format's own words carry no place ("bad argument #3 to '?'"): raised again from
         * here, they name the policy's file and line. The CPU budget's error object (not a
         * string) goes on as it is; out of memory comes back as its message, which the sandbox
         * still reports as its limit. */
        if (lua_type(L, -1) != LUA_TSTRING) lua_error(L);
        luaL_error(L, "%s: %s", lua_tostring(L, lua_upvalueindex(2)), lua_tostring(L, -1));
    }
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "format did not produce a string");
    return lua_tolstring(L, -1, len);
}

/* gw.trace(fmt, ...) appends to the decision trace (x-moongate-route, `moongate route`). */
static int l_trace(lua_State *L)
{
    host_t *h = api_enter(L);
    luaL_checkany(L, 1);
    size_t n;
    const char *s = format_args(L, 1, &n);
    mg_trace_add(h->trace, s, n);
    return 0;
}

/* gw.log(level, fmt, ...) writes one log line; level is "debug", "info", "warn" or "error". */
static int l_log(lua_State *L)
{
    host_t *h = api_enter(L);
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, NULL, levels);
    luaL_checkany(L, 2);
    size_t n;
    const char *s = format_args(L, 2, &n);
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)MG_MIN(n, sizeof buf - 1), s);
    emit_log(h, (mg_log_level_t)level, buf);
    return 0;
}

/* ---- injector: decisions ----------------------------------------------------------------------
 */

static bool valid_code(const char *s, size_t n)
{
    if (n == 0 || n > 63) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

/* gw.reject(status, code, message) → a rejection for route to return. */
static int l_reject(lua_State *L)
{
    api_enter(L);
    lua_Integer status = luaL_checkinteger(L, 1);
    size_t n;
    const char *code = luaL_checklstring(L, 2, &n);
    const char *msg = luaL_optstring(L, 3, "the routing policy refused this request");
    if (status < 400 || status > 599)
        return luaL_error(L, "gw.reject: status must be 400..599, got %d", (int)status);
    if (!valid_code(code, n))
        return luaL_error(L, "gw.reject: code must be 1-63 characters of [A-Za-z0-9_.-], got '%s'",
                          code);
    lua_createtable(L, 0, 3);
    set_int(L, "status", status);
    set_str(L, "code", code);
    set_str(L, "message", msg);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &reject_mt_key);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- injector: misc ------------------------------------------------------------------------- */

/* gw.now() → wall clock in milliseconds since the epoch (integer). */
static int l_now(lua_State *L)
{
    api_enter(L);
    lua_pushinteger(L, mg_wall_ms());
    return 1;
}

/* gw.phase() → "load", "route", "failure" or "complete". */
static int l_phase(lua_State *L)
{
    host_t *h = api_enter(L);
    lua_pushstring(L, mg_phase_name(h->phase));
    return 1;
}

/* gw.region_allows(allowed, region) → the region rule C enforces (see mg_region_allows). */
static int l_region_allows(lua_State *L)
{
    api_enter(L);
    const char *allowed = luaL_checkstring(L, 1);
    const char *region = luaL_optstring(L, 2, NULL);
    lua_pushboolean(L, region && mg_region_allows(allowed, region));
    return 1;
}

/* gw.tokens(text) → the gateway's token estimate of a text (tokens.h): calibrated for the
 * candidate in compact, like the `tokens` of req.messages; raw in the other phases. */
static int l_tokens(lua_State *L)
{
    host_t *h = api_enter(L);
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int64_t raw = mg_tokens_text(s, n);
    lua_pushinteger(L, h->phase == MG_PHASE_COMPACT ? mg_tokens_scale(raw, 0, h->ratio) : raw);
    return 1;
}

/* gw.prompt_budget(model [, max_output_tokens]) → the prompt tokens the gateway lets model take
 * before it compacts: its window less the reserved output (the request's max, capped by the
 * model's maxTokens; unset: maxTokens, at most half the window) less gateway.compaction's
 * marginTokens. The same rule as compaction's, so a policy's "fits" agrees with it, including a
 * window the model's server named in an overflow (gw.health(model).learned_context_window). */
static int l_prompt_budget(lua_State *L)
{
    host_t *h = api_enter(L);
    const mg_model_t *m = check_model(L, 1, "gw.prompt_budget");
    lua_Integer max_out = luaL_optinteger(L, 2, -1);
    mg_live_state_t st;
    mg_model_t tmp;
    if (live_model(h, m, &st)) m = mg_compact_fit_model(m, st.learned_context_window, &tmp);
    int64_t b = mg_compact_budget(m, max_out > 0 ? (int64_t)max_out : -1, h->cfg->gw.compaction.margin_tokens);
    lua_pushinteger(L, (lua_Integer)MG_MAX(b, 0));
    return 1;
}

typedef struct api_fn {
    const char *name;
    lua_CFunction fn;
    unsigned phases;
} api_fn_t;

#define PH_LIVE (MG_PHASE_ROUTE | MG_PHASE_FAILURE | MG_PHASE_COMPLETE | MG_PHASE_COMPACT)
#define PH_TRACE (MG_PHASE_ROUTE | MG_PHASE_FAILURE | MG_PHASE_COMPACT)
static const api_fn_t api_fns[] = {
    {"resolve", l_resolve, MG_PHASE_ALL},                  /* name → model or nil */
    {"health", l_health, PH_LIVE},                         /* model → live state table */
    {"provider_health", l_provider_health, PH_LIVE},       /* provider id → live state table */
    {"healthy", l_healthy, PH_LIVE},                       /* model → usable now? */
    {"trace", l_trace, PH_TRACE},                          /* append to the decision trace */
    {"log", l_log, MG_PHASE_ALL},                          /* one log line */
    {"reject", l_reject, MG_PHASE_ROUTE},                  /* a rejection for route to return */
    {"now", l_now, MG_PHASE_ALL},                          /* wall clock ms */
    {"phase", l_phase, MG_PHASE_ALL},                      /* current phase name */
    {"region_allows", l_region_allows, MG_PHASE_ALL},      /* C's region rule */
    {"tokens", l_tokens, MG_PHASE_ALL},                    /* text → token estimate */
    {"prompt_budget", l_prompt_budget, MG_PHASE_ALL},      /* model → prompt tokens before compaction */
    {NULL, NULL, 0},
};

/* The functions of api_fns, each closed over its phase mask, its name and string.format. */
static void inject_functions(lua_State *L, int gw, const mg_config_t *cfg)
{
    (void)cfg;
    mg_sandbox_push_globals(L);
    lua_getfield(L, -1, "string");
    lua_getfield(L, -1, "format");
    int fmt = lua_gettop(L);
    for (const api_fn_t *f = api_fns; f->name; f++) {
        lua_pushinteger(L, f->phases);
        lua_pushfstring(L, "gw.%s", f->name);
        lua_pushvalue(L, fmt);
        lua_pushcclosure(L, f->fn, 3);
        lua_setfield(L, gw, f->name);
    }
    lua_pop(L, 3);
    lua_createtable(L, 0, 4); /* the rejection marker: values are checked by metatable identity */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushliteral(L, "rejection");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &reject_mt_key);
}

/* Constants: gw.API_VERSION, gw.MAX_CANDIDATES, gw.ERROR_CLASSES. */
static void inject_constants(lua_State *L, int gw, const mg_config_t *cfg)
{
    (void)cfg;
    lua_pushinteger(L, MG_API_VERSION);
    lua_setfield(L, gw, "API_VERSION");
    lua_pushinteger(L, MG_PLAN_MAX_CANDIDATES);
    lua_setfield(L, gw, "MAX_CANDIDATES");
    lua_newtable(L);
    for (int c = 0; c <= MG_CLASS_CANCELLED; c++) {
        lua_pushstring(L, mg_class_name((mg_class_t)c));
        lua_rawseti(L, -2, c + 1);
    }
    protect_top(L, "gw.ERROR_CLASSES");
    lua_setfield(L, gw, "ERROR_CLASSES");
}

/* The one place gw is built (STYLE 10): one injector per area. */
static const struct {
    const char *area;
    void (*inject)(lua_State *L, int gw, const mg_config_t *cfg);
} injectors[] = {
    {"catalog", inject_catalog},     /* gw.catalog */
    {"request", inject_request},     /* the req object handed to the hooks */
    {"functions", inject_functions}, /* gw.resolve/health/healthy/trace/log/reject/now/... */
    {"constants", inject_constants}, /* gw.API_VERSION, gw.MAX_CANDIDATES, gw.ERROR_CLASSES */
};

/* ---- building a policy state ------------------------------------------------------------------
 */

typedef struct build_args {
    const mg_config_t *cfg;
    const char *text;
    size_t len;
    const char *chunkname;
} build_args_t;

static void push_embedded(lua_State *L, const char *name, const char *chunkname, int env)
{
    for (const mg_embedded_file_t *f = mg_embedded_files; f->name; f++) {
        if (strcmp(f->name, name) != 0) continue;
        if (luaL_loadbufferx(L, f->text, f->len, chunkname, "t") != LUA_OK) lua_error(L);
        lua_pushvalue(L, env);
        lua_setupvalue(L, -2, 1);
        return;
    }
    luaL_error(L, "embedded file %s is missing (build problem)", name);
}

/* Stores the hook `name` found in the table at idx into the registry. */
static bool take_hook(lua_State *L, int idx, const char *name, const void *key)
{
    lua_pushstring(L, name);
    lua_rawget(L, idx); /* raw: the environment raises on unknown names */
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return false;
    }
    if (lua_type(L, -1) != LUA_TFUNCTION)
        luaL_error(L, "'%s' must be a function, it is a %s", name, luaL_typename(L, -1));
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
    return true;
}

static int build(lua_State *L)
{
    build_args_t *a = lua_touserdata(L, 1);
    host_t *h = host_of(L);
    mg_sandbox_push_globals(L);
    int base = lua_gettop(L);

    lua_newtable(L);
    int gw = lua_gettop(L);
    for (size_t i = 0; i < MG_ARRAY_LEN(injectors); i++)
        injectors[i].inject(L, gw, a->cfg);
    mg_lua_protect(L, gw, "gw");
    lua_setfield(L, base, "gw");

    /* the prelude: lua/util.lua returns gw.util */
    lua_newtable(L);
    int penv = lua_gettop(L);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, base);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, penv);
    push_embedded(L, "util.lua", "=moongate:util.lua", penv);
    lua_call(L, 0, 1);
    if (!lua_istable(L, -1)) luaL_error(L, "util.lua did not return a table (build problem)");
    protect_top(L, "gw.util");
    lua_setfield(L, gw, "util");
    lua_settop(L, base);

    /* the policy: its own environment, writable while its top level runs */
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, base);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, env);
    if (mg_lua_load_text(L, a->text, a->len, a->chunkname) != LUA_OK) lua_error(L);
    int chunk = lua_gettop(L);
    lua_pushvalue(L, env);
    lua_setupvalue(L, chunk, 1);
    lua_pushvalue(L, chunk);
    lua_call(L, 0, 1);
    /* route may be a global, a field of a returned table, or the returned function itself */
    char others[160] = ""; /* the returned table's other keys, named if route is missing */
    if (lua_type(L, -1) == LUA_TFUNCTION) {
        lua_setfield(L, env, "route");
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        static const char *const hooks[] = {"route", "on_failure", "on_complete", "compact"};
        for (size_t i = 0; i < MG_ARRAY_LEN(hooks); i++) {
            lua_getfield(L, -1, hooks[i]);
            if (!lua_isnil(L, -1))
                lua_setfield(L, env, hooks[i]);
            else
                lua_pop(L, 1);
        }
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pop(L, 1); /* the value; the key stays for lua_next */
            if (lua_type(L, -1) != LUA_TSTRING) continue;
            const char *k = lua_tostring(L, -1);
            bool hook = false;
            for (size_t i = 0; i < MG_ARRAY_LEN(hooks) && !hook; i++) hook = !strcmp(k, hooks[i]);
            size_t used = strlen(others);
            if (!hook && used + strlen(k) + 5 < sizeof others)
                snprintf(others + used, sizeof others - used, "%s\"%s\"", used ? ", " : "", k);
        }
        lua_pop(L, 1);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(
            L,
            "%s: the file returned a %s (expected nothing, a route function or a table of hooks)",
            a->chunkname + 1, luaL_typename(L, -1));
    } else {
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "route");
    if (lua_rawget(L, env) != LUA_TFUNCTION)
        luaL_error(L, "%s: the policy must define a function route(req) (it %s%s%s%s)", a->chunkname + 1,
                   lua_isnil(L, -1) ? "defines none" : "is not a function",
                   others[0] ? "; the table it returned has " : "", others,
                   others[0] ? ", and the hooks are route, on_failure, on_complete and compact" : "");
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    snprintf(h->route_where, sizeof h->route_where, "%s:%d", ar.short_src, ar.linedefined);
    lua_pop(L, 1);
    h->has_route = take_hook(L, env, "route", &route_key);
    h->has_failure = take_hook(L, env, "on_failure", &failure_key);
    h->has_complete = take_hook(L, env, "on_complete", &complete_key);
    h->has_compact = take_hook(L, env, "compact", &compact_key);
    if (h->has_compact) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &compact_key);
        lua_getinfo(L, ">S", &ar);
        snprintf(h->compact_where, sizeof h->compact_where, "%s:%d", ar.short_src,
                 ar.linedefined);
    }

    /* freeze: every function of the chunk shares its _ENV upvalue, so replacing it once swaps
     * the environment for all of them */
    mg_lua_protect(L, env, "the policy's globals (frozen after load: use local variables)");
    lua_setupvalue(L, chunk, 1);
    return 0;
}

mg_sandbox_t *mg_lua_state_new(const mg_config_t *cfg, const char *text, size_t len,
                               const char *chunkname, const char *display,
                               const mg_policy_limits_t *limits, char *err, size_t errlen)
{
    mg_sandbox_limits_t sl = {
        .mem_bytes = limits ? limits->mem_bytes : 0,
        .max_string = limits ? limits->max_string : 0,
        .check_interval = limits ? limits->check_interval : 0,
    };
    mg_sandbox_t *sb = mg_sandbox_new(&sl, err, errlen);
    if (!sb) return NULL;
    host_t *h = mg_xcalloc(1, sizeof *h);
    h->cfg = cfg;
    h->display = mg_xstrdup(display);
    h->phase = MG_PHASE_LOAD;
    h->ratio = 1.0;
    sb->host = h;
    sb->log = sandbox_log;
    build_args_t a = {cfg, text, len, chunkname};
    mg_sandbox_arm(sb, limits && limits->load_cpu_ms > 0 ? limits->load_cpu_ms : 50);
    int rc = mg_sandbox_cpcall(sb, build, &a, err, errlen);
    mg_sandbox_disarm(sb);
    h->phase = MG_PHASE_NONE;
    if (rc) {
        mg_lua_state_free(sb);
        return NULL;
    }
    lua_gc(sb->L, LUA_GCCOLLECT);
    return sb;
}

void mg_lua_state_free(mg_sandbox_t *sb)
{
    if (!sb) return;
    host_t *h = sb->host;
    mg_sandbox_free(sb);
    if (h) free(h->display);
    free(h);
}

bool mg_lua_state_has(mg_sandbox_t *sb, const char *hook)
{
    host_t *h = sb->host;
    if (!strcmp(hook, "route")) return h->has_route;
    if (!strcmp(hook, "on_failure")) return h->has_failure;
    if (!strcmp(hook, "on_complete")) return h->has_complete;
    if (!strcmp(hook, "compact")) return h->has_compact;
    return false;
}

const char *mg_lua_default_policy(size_t *len)
{
    for (const mg_embedded_file_t *f = mg_embedded_files; f->name; f++) {
        if (strcmp(f->name, "default_policy.lua") == 0) {
            *len = f->len;
            return f->text;
        }
    }
    *len = 0;
    return NULL;
}

/* ---- route ------------------------------------------------------------------------------------
 */

typedef struct route_args {
    mg_raw_plan_t *out;
} route_args_t;

static int bad_result(lua_State *L, const char *fmt, const char *detail)
{
    host_t *h = host_of(L);
    return luaL_error(L, "%s: route returned %s", h->route_where, lua_pushfstring(L, fmt, detail));
}

/* An integer option in 0..2^53 (or min..), nil = keep *out. */
static void opt_ms(lua_State *L, int t, const char *k, int64_t min, int64_t *out, int i)
{
    host_t *h = host_of(L);
    int ty = lua_getfield(L, t, k);
    if (ty != LUA_TNIL) {
        int isint = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (ty != LUA_TNUMBER || !isint || v < min || v > MG_MAX_SAFE_INT)
            luaL_error(L,
                       "%s: route returned candidate #%d with %s = %s (expected an integer >= %d)",
                       h->route_where, i, k, luaL_tolstring(L, -1, NULL), (int)min);
        *out = v;
    }
    lua_pop(L, 1);
}

static void opt_flag(lua_State *L, int t, const char *k, int *out, int i)
{
    host_t *h = host_of(L);
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TBOOLEAN)
        *out = lua_toboolean(L, -1);
    else if (ty != LUA_TNIL)
        luaL_error(L, "%s: route returned candidate #%d with %s = a %s (expected true or false)",
                   h->route_where, i, k, luaL_typename(L, -1));
    lua_pop(L, 1);
}

static const char *const option_keys[] = {
    "model",      "connect_ms",        "first_token_ms", "idle_ms",         "total_ms",
    "timeout_ms", "max_output_tokens", "compaction",     "strip_reasoning", "summarizer",
    NULL,
};

/* summarizer = ref, alias or catalog model (summarize the dropped turns with it), or false (no
 * summary even when the config names a summarizer); nil keeps the config's. */
static void opt_summarizer(lua_State *L, int t, mg_candidate_t *c, int i)
{
    host_t *h = host_of(L);
    int ty = lua_getfield(L, t, "summarizer");
    if (ty == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        c->summarize = 0;
    } else if (ty != LUA_TNIL) {
        const mg_model_t *m = to_model(L, -1);
        if (!m && ty == LUA_TSTRING)
            luaL_error(L,
                       "%s: route returned candidate #%d with summarizer '%s', which is not a "
                       "model of the catalog",
                       h->route_where, i, lua_tostring(L, -1));
        if (!m)
            luaL_error(L,
                       "%s: route returned candidate #%d with summarizer = %s (expected a model "
                       "ref, a model from gw.catalog, or false)",
                       h->route_where, i, luaL_tolstring(L, -1, NULL));
        c->summarize = 1;
        c->summarizer = m;
    }
    lua_pop(L, 1);
}

/* Entry #i of route's result, at idx. */
static void add_candidate(lua_State *L, mg_raw_plan_t *out, int idx, int i)
{
    host_t *h = host_of(L);
    idx = lua_absindex(L, idx);
    mg_candidate_t c = {
        .max_output_tokens = -1, .compaction = -1, .strip_reasoning = -1, .summarize = -1};
    int ty = lua_type(L, idx);
    if (ty == LUA_TSTRING) {
        c.model = to_model(L, idx);
    } else if (ty == LUA_TTABLE) {
        int mt = lua_getfield(L, idx, "model");
        if (mt == LUA_TNIL) { /* a model from gw.catalog */
            lua_pop(L, 1);
            c.model = to_model(L, idx);
            if (!c.model)
                luaL_error(
                    L, "%s: route returned candidate #%d, a table with neither 'model' nor 'ref'",
                    h->route_where, i);
        } else {
            int m = lua_gettop(L);
            c.model = to_model(L, m);
            if (!c.model && mt != LUA_TSTRING && mt != LUA_TTABLE)
                luaL_error(L, "%s: route returned candidate #%d whose model is a %s",
                           h->route_where, i, luaL_typename(L, m));
            if (!c.model) {
                if (mt == LUA_TTABLE)
                    lua_getfield(L, m, "ref");
                else
                    lua_pushvalue(L, m);
                lua_replace(L, idx);
            }
            lua_pop(L, 1);
            if (c.model) {
                /* typos in option names are errors, not silently ignored options */
                if (!lua_getmetatable(L, idx)) {
                    lua_pushnil(L);
                    while (lua_next(L, idx)) {
                        lua_pop(L, 1);
                        bool known = false;
                        if (lua_type(L, -1) == LUA_TSTRING)
                            for (const char *const *k = option_keys; *k && !known; k++)
                                known = strcmp(*k, lua_tostring(L, -1)) == 0;
                        if (!known)
                            luaL_error(
                                L,
                                "%s: route returned candidate #%d with unknown option '%s' (known: "
                                "connect_ms, first_token_ms, idle_ms, total_ms, timeout_ms, "
                                "max_output_tokens, compaction, strip_reasoning, summarizer)",
                                h->route_where, i, luaL_tolstring(L, -1, NULL));
                    }
                } else {
                    lua_pop(L, 1);
                }
                opt_ms(L, idx, "timeout_ms", 0, &c.total_ms, i);
                opt_ms(L, idx, "total_ms", 0, &c.total_ms, i);
                opt_ms(L, idx, "connect_ms", 0, &c.connect_ms, i);
                opt_ms(L, idx, "first_token_ms", 0, &c.first_token_ms, i);
                opt_ms(L, idx, "idle_ms", 0, &c.idle_ms, i);
                opt_ms(L, idx, "max_output_tokens", 1, &c.max_output_tokens, i);
                opt_flag(L, idx, "compaction", &c.compaction, i);
                opt_flag(L, idx, "strip_reasoning", &c.strip_reasoning, i);
                opt_summarizer(L, idx, &c, i);
            }
        }
    } else {
        luaL_error(L,
                   "%s: route returned candidate #%d, a %s (expected a model ref, a model from "
                   "gw.catalog or "
                   "{model = ref, options...})",
                   h->route_where, i, luaL_typename(L, idx));
    }
    if (!c.model) {
        const char *name = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : "?";
        luaL_error(L, "%s: route returned candidate #%d '%s', which is not a model of the catalog",
                   h->route_where, i, name);
    }
    if (out->n < MG_RAW_PLAN_MAX)
        out->cands[out->n++] = c;
    else
        out->dropped_over_max++;
}

static bool is_rejection(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx)) return false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &reject_mt_key);
    bool yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

static void take_rejection(lua_State *L, int idx, mg_raw_plan_t *out)
{
    host_t *h = host_of(L);
    lua_pushliteral(L, "status");
    lua_rawget(L, idx);
    int isint = 0;
    lua_Integer status = lua_tointegerx(L, -1, &isint);
    lua_pushliteral(L, "code");
    lua_rawget(L, idx);
    size_t n = 0;
    const char *code = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    lua_pushliteral(L, "message");
    lua_rawget(L, idx);
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!isint || status < 400 || status > 599 || !code || !valid_code(code, n) || !msg)
        luaL_error(L, "%s: route returned a rejection that was changed into an invalid one",
                   h->route_where);
    out->rejected = true;
    out->status = (int)status;
    snprintf(out->code, sizeof out->code, "%s", code);
    size_t mlen = mg_utf8_fit(msg, strlen(msg), sizeof out->message - 1); /* never half a character */
    memcpy(out->message, msg, mlen);
    out->message[mlen] = '\0';
    lua_pop(L, 3);
}

/* route's result (index 1) is a table with no list part, no 'model' and no 'ref': only an empty
 * one is the empty list (503 no_candidates). A key is a mistake to report, not a plan without
 * candidates: a misspelt `model`, a list with a hole at #1, a map of refs. */
static void check_empty_list(lua_State *L)
{
    host_t *h = host_of(L);
    int t = mg_lua_unprotect(L, 1) ? lua_gettop(L) : 1; /* a read-only proxy: its table */
    char keys[256] = "";
    size_t len = 0;
    int unknown = 0, options = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0)
            luaL_error(L, "%s: route returned a list with a hole at #1", h->route_where);
        if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "n") == 0) {
            lua_pushvalue(L, -1);
            lua_rawget(L, t);
            bool packed = lua_isinteger(L, -1) && lua_tointeger(L, -1) == 0; /* table.pack(): {n = 0} */
            lua_pop(L, 1);
            if (packed) continue;
        }
        bool option = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *k = option_keys; *k && !option; k++)
                option = strcmp(*k, lua_tostring(L, -1)) == 0;
        if (option) {
            options++;
        } else if (++unknown <= 4 && len < sizeof keys) {
            const char *sep = unknown > 1 ? ", " : "";
            if (lua_type(L, -1) == LUA_TSTRING)
                len += (size_t)snprintf(keys + len, sizeof keys - len, "%s'%.40s'", sep,
                                        lua_tostring(L, -1));
            else
                len += (size_t)snprintf(keys + len, sizeof keys - len, "%sa %s key", sep,
                                        luaL_typename(L, -1));
        }
    }
    if (!unknown && !options) return; /* {} */
    if (!unknown)
        luaL_error(L,
                   "%s: route returned options with no 'model' (expected a list of candidates, "
                   "{model = ref, options...} or gw.reject(...))",
                   h->route_where);
    luaL_error(L,
               "%s: route returned a table with no 'model' and unknown %s %s%s (expected a list "
               "of candidates, {model = ref, options...} or gw.reject(...))",
               h->route_where, unknown > 1 ? "keys" : "key", keys, unknown > 4 ? ", ..." : "");
}

/* Runs protected: converts route's result (index 1) into *out (light userdata at index 2). */
static int convert_route(lua_State *L)
{
    mg_raw_plan_t *out = lua_touserdata(L, 2);
    int ty = lua_type(L, 1);
    if (ty == LUA_TNIL)
        return bad_result(L, "nothing%s (expected a list of candidates or gw.reject(...))", "");
    if (ty == LUA_TSTRING) {
        add_candidate(L, out, 1, 1);
        return 0;
    }
    if (ty != LUA_TTABLE)
        return bad_result(L, "a %s (expected a list of candidates or gw.reject(...))",
                          luaL_typename(L, 1));
    if (is_rejection(L, 1)) {
        take_rejection(L, 1, out);
        return 0;
    }
    lua_Integer n = luaL_len(L, 1);
    if (n == 0) {
        /* a single candidate: a catalog model or an options table */
        int a = lua_getfield(L, 1, "model");
        int b = lua_getfield(L, 1, "ref");
        lua_pop(L, 2);
        if (a != LUA_TNIL || b != LUA_TNIL)
            add_candidate(L, out, 1, 1);
        else
            check_empty_list(L);
        return 0;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        if (lua_isnil(L, -1))
            return luaL_error(L, "%s: route returned a list with a hole at #%d",
                              host_of(L)->route_where, (int)i);
        add_candidate(L, out, -1, (int)i);
        lua_settop(L, 2);
        if (i >= 1000)
            return luaL_error(L, "%s: route returned more than 1000 candidates",
                              host_of(L)->route_where);
    }
    return 0;
}

/* A rejection raised as an error (error(gw.reject(...))) is route's answer: any other error
 * object is turned into "file:line: message" where it was raised. */
static int route_msgh(lua_State *L)
{
    if (is_rejection(L, 1)) return 1;
    return mg_lua_msgh(L);
}

/* Runs protected: calls route(req), leaving its result (or a raised rejection) on the stack. */
static int call_route(lua_State *L)
{
    lua_pushcfunction(L, route_msgh);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &route_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &req_key);
    if (lua_pcall(L, 1, 1, 1) != LUA_OK && !is_rejection(L, -1))
        return lua_error(L); /* already positioned */
    return 1;
}

/* Sets up the context of one call into the policy (phase, request, budget). */
static void enter(mg_sandbox_t *sb, unsigned phase, const mg_route_input_t *in,
                  const mg_live_view_t *live, mg_trace_t *trace, int64_t budget_ms)
{
    host_t *h = sb->host;
    h->phase = phase;
    h->in = in;
    h->live = live;
    h->trace = trace;
    mg_sandbox_arm(sb, budget_ms);
}

static void leave(mg_sandbox_t *sb)
{
    host_t *h = sb->host;
    mg_sandbox_disarm(sb);
    h->phase = MG_PHASE_NONE;
    h->in = NULL;
    h->live = NULL;
    h->trace = NULL;
    lua_settop(sb->L, 0);
}

int mg_lua_route(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                 int64_t budget_ms, mg_raw_plan_t *out, mg_trace_t *trace, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    out->n = 0; /* cands are written as used */
    out->dropped_over_max = 0;
    out->rejected = false;
    enter(sb, MG_PHASE_ROUTE, in, live, trace, budget_ms);
    int rc = -1;
    if (!lua_checkstack(L, 8)) {
        snprintf(err, errlen, "no Lua stack space");
        goto done;
    }
    lua_pushcfunction(L, call_route);
    if (mg_sandbox_pcall(sb, 0, 1, err, errlen)) goto done;
    lua_pushcfunction(L, convert_route);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, out);
    rc = mg_sandbox_pcall(sb, 2, 0, err, errlen);
done:
    leave(sb);
    return rc;
}

/* ---- on_failure / on_complete -----------------------------------------------------------------
 */

typedef struct failure_args {
    const mg_failure_t *f;
    mg_failure_decision_t *out;
} failure_args_t;

/* Runs protected: calls on_failure(req, failure) and reads (action, delay_ms). */
static int call_failure(lua_State *L)
{
    failure_args_t *a = lua_touserdata(L, 1);
    const mg_failure_t *f = a->f;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &failure_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &req_key);
    lua_createtable(L, 0, 8);
    set_int(L, "index", (lua_Integer)f->index + 1);
    if (f->model) {
        set_str(L, "model", f->model->ref);
        set_str(L, "provider", f->model->provider->id);
    }
    set_str(L, "error_class", f->error_class ? f->error_class : "unknown");
    set_int(L, "status", f->http_status);
    if (f->retry_after_ms >= 0) set_int(L, "retry_after_ms", f->retry_after_ms);
    set_int(L, "attempt", f->attempt);
    lua_call(L, 2, 2);
    const char *action = "next";
    if (lua_type(L, -2) == LUA_TSTRING)
        action = lua_tostring(L, -2);
    else if (!lua_isnil(L, -2))
        return luaL_error(
            L, "on_failure returned a %s (expected \"next\", \"stop\" or \"retry\", delay_ms)",
            luaL_typename(L, -2));
    if (!strcmp(action, "next")) {
        a->out->action = MG_FAILURE_NEXT;
    } else if (!strcmp(action, "stop")) {
        a->out->action = MG_FAILURE_STOP;
    } else if (!strcmp(action, "retry")) {
        int isint = 0;
        lua_Integer d = lua_isnil(L, -1) ? 0 : lua_tointegerx(L, -1, &isint);
        if (!lua_isnil(L, -1) && (!isint || d < 0 || d > MG_MAX_DELAY_MS))
            return luaL_error(L, "on_failure returned \"retry\" with delay %s (expected 0..%d ms)",
                              luaL_tolstring(L, -1, NULL), MG_MAX_DELAY_MS);
        a->out->action = MG_FAILURE_RETRY;
        a->out->delay_ms = d;
    } else {
        return luaL_error(
            L, "on_failure returned \"%s\" (expected \"next\", \"stop\" or \"retry\")", action);
    }
    return 0;
}

int mg_lua_on_failure(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                      const mg_failure_t *f, int64_t budget_ms, mg_failure_decision_t *out,
                      char *err, size_t errlen)
{
    mg_trace_t trace;
    mg_trace_init(&trace, out->trace, sizeof out->trace);
    out->action = MG_FAILURE_NEXT;
    out->delay_ms = 0;
    enter(sb, MG_PHASE_FAILURE, in, live, &trace, budget_ms);
    failure_args_t a = {f, out};
    int rc = mg_sandbox_cpcall(sb, call_failure, &a, err, errlen);
    leave(sb);
    if (rc) out->action = MG_FAILURE_NEXT;
    return rc;
}

static int call_complete(lua_State *L)
{
    const mg_completion_t *c = lua_touserdata(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &complete_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &req_key);
    lua_createtable(L, 0, 8);
    if (c->model) {
        set_str(L, "model", c->model->ref);
        set_str(L, "provider", c->model->provider->id);
    }
    set_int(L, "status", c->status);
    set_str(L, "error_class", c->error_class);
    if (c->prompt_tokens >= 0) set_int(L, "prompt_tokens", c->prompt_tokens);
    if (c->completion_tokens >= 0) set_int(L, "completion_tokens", c->completion_tokens);
    if (c->estimated) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "estimated");
    }
    if (c->latency_ms >= 0) set_int(L, "latency_ms", c->latency_ms);
    if (c->ttft_ms >= 0) set_int(L, "ttft_ms", c->ttft_ms);
    set_int(L, "attempts", c->attempts);
    lua_call(L, 2, 0);
    return 0;
}

int mg_lua_on_complete(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                       const mg_completion_t *c, int64_t budget_ms, char *err, size_t errlen)
{
    enter(sb, MG_PHASE_COMPLETE, in, live, NULL, budget_ms);
    int rc = mg_sandbox_cpcall(sb, call_complete, (void *)c, err, errlen);
    leave(sb);
    return rc;
}

/* ---- compact ----------------------------------------------------------------------------------
 *
 * The conversation as the hook sees it (docs/POLICIES.md "compact"):
 *   message = {role = "user" | "assistant" | "tool", content = {part, ...}, tokens = n}
 *   part    = {type = "text", text = s}
 *           | {type = "tool_call", id = s, name = s, arguments = JSON text}
 *           | {type = "tool_result", id = s, is_error = b, content = {text and image parts}}
 *           | {type = "image", url = s?, media_type = s?} | {type = "reasoning", text = s?}
 *           | {type = "other"}
 * Every part table handed out is remembered for the call (table → the IR part), so a part the
 * hook keeps comes back with everything it carried (signatures, media, cache_control), and only
 * the fields a policy may write (texts, ids, names, arguments) are read from the table. Media,
 * reasoning and other parts can be kept or dropped, not made. The result is read with raw
 * accesses only, so no metamethod of the policy runs during the conversion. */

#define MG_COMPACT_MAX_MESSAGES 100000
#define MG_COMPACT_MAX_PARTS 10000

static const char *const part_type_names[] = {
    [MG_IR_PART_TEXT] = "text",           [MG_IR_PART_IMAGE] = "image",
    [MG_IR_PART_TOOL_CALL] = "tool_call", [MG_IR_PART_TOOL_RESULT] = "tool_result",
    [MG_IR_PART_REASONING] = "reasoning", [MG_IR_PART_OPAQUE] = "other",
};
static const char *const role_names[] = {
    [MG_IR_USER] = "user", [MG_IR_ASSISTANT] = "assistant", [MG_IR_TOOL] = "tool"};

/* Pushes part p as a table and records it in the identity map (stack index map). LJMP. */
static void push_part(lua_State *L, const mg_ir_part_t *p, int map)
{
    lua_createtable(L, 0, 5);
    set_str(L, "type", part_type_names[p->type]);
    switch (p->type) {
    case MG_IR_PART_TEXT:
        set_str(L, "text", p->text ? p->text : "");
        break;
    case MG_IR_PART_IMAGE:
        set_str(L, "url", p->url);
        set_str(L, "media_type", p->media_type);
        break;
    case MG_IR_PART_TOOL_CALL:
        set_str(L, "id", p->id);
        set_str(L, "name", p->name);
        set_str(L, "arguments", p->arguments ? p->arguments : "{}");
        break;
    case MG_IR_PART_TOOL_RESULT:
        set_str(L, "id", p->id);
        set_bool(L, "is_error", p->is_error);
        lua_createtable(L, (int)p->n_parts, 0);
        for (size_t k = 0; k < p->n_parts; k++) {
            push_part(L, &p->parts[k], map);
            lua_rawseti(L, -2, (lua_Integer)k + 1);
        }
        lua_setfield(L, -2, "content");
        break;
    case MG_IR_PART_REASONING:
        set_str(L, "text", p->text);
        break;
    case MG_IR_PART_OPAQUE:
        break;
    }
    lua_pushvalue(L, -1);
    lua_pushlightuserdata(L, (void *)p);
    lua_rawset(L, map);
}

/* Pushes req.messages for the call. LJMP. */
static void push_messages(lua_State *L, const mg_compact_call_t *c, int map)
{
    const mg_ir_request_t *r = c->req;
    int64_t img = mg_tokens_image_cost(&c->tokens);
    double ratio = host_of(L)->ratio;
    lua_createtable(L, (int)r->n_messages, 0);
    for (size_t i = 0; i < r->n_messages; i++) {
        const mg_ir_message_t *m = &r->messages[i];
        lua_createtable(L, 0, 3);
        set_str(L, "role", role_names[m->role]);
        lua_createtable(L, (int)m->n_parts, 0);
        for (size_t j = 0; j < m->n_parts; j++) {
            push_part(L, &m->parts[j], map);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
        lua_setfield(L, -2, "content");
        int64_t fixed = 0;
        int64_t raw = mg_tokens_message(m, img, &fixed);
        set_int(L, "tokens", mg_tokens_scale(raw, fixed, ratio));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* Reading the hook's result back. */
typedef struct conv {
    mg_compact_call_t *c;
    int map;        /* stack index of the identity map */
    char path[96];  /* "messages[3].content[2]", for messages */
    const char *where;
} conv_t;

static int conv_fail(lua_State *L, const conv_t *cv, const char *what, const char *detail)
{
    return luaL_error(L, "%s: compact returned %s%s%s", cv->where, cv->path[0] ? cv->path : "",
                      cv->path[0] ? ": " : "", lua_pushfstring(L, what, detail ? detail : ""));
}

/* t[k] as a string (borrowed from t, which keeps it alive), NULL when absent and !required.
 * LJMP. */
static const char *field_str(lua_State *L, const conv_t *cv, int t, const char *k, bool required)
{
    lua_pushstring(L, k);
    int ty = lua_rawget(L, t);
    const char *s = NULL;
    if (ty == LUA_TSTRING) {
        size_t n;
        s = lua_tolstring(L, -1, &n);
        if (memchr(s, 0, n)) conv_fail(L, cv, "'%s' contains a NUL byte", k);
    } else if (ty != LUA_TNIL || required) {
        conv_fail(L, cv, "'%s' must be a string", k);
    }
    lua_pop(L, 1);
    return s;
}

/* s in the arena unless it equals the original (then the original, shared). */
static const char *keep_or_copy(mg_ir_arena_t *a, const char *s, const char *orig)
{
    if (orig && strcmp(s, orig) == 0) return orig;
    return mg_ir_strdup(a, s);
}

static void conv_content(lua_State *L, conv_t *cv, int t, bool in_result, mg_ir_part_t **parts,
                         size_t *n_parts);

/* The part at idx into *out. in_result: inside a tool result (text and images only). LJMP. */
static void conv_part(lua_State *L, conv_t *cv, int idx, mg_ir_part_t *out, bool in_result)
{
    mg_ir_arena_t *a = cv->c->arena;
    idx = lua_absindex(L, idx);
    memset(out, 0, sizeof *out);
    if (lua_type(L, idx) == LUA_TSTRING) { /* a bare string is a text part */
        size_t n;
        const char *t = lua_tolstring(L, idx, &n);
        if (memchr(t, 0, n)) conv_fail(L, cv, "a text contains a NUL byte%s", "");
        out->type = MG_IR_PART_TEXT;
        out->text = mg_ir_strndup(a, t, n);
        return;
    }
    if (!lua_istable(L, idx)) conv_fail(L, cv, "a part must be a table or a string, not a %s", luaL_typename(L, idx));
    lua_pushvalue(L, idx);
    const mg_ir_part_t *orig = lua_rawget(L, cv->map) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    const char *ty = field_str(L, cv, idx, "type", true);
    int type = -1;
    for (int k = 0; k < (int)MG_ARRAY_LEN(part_type_names) && type < 0; k++)
        if (strcmp(ty, part_type_names[k]) == 0) type = k;
    if (type < 0) conv_fail(L, cv, "unknown part type '%s'", ty);
    if (in_result && type != MG_IR_PART_TEXT && type != MG_IR_PART_IMAGE)
        conv_fail(L, cv, "a tool result holds only text and image parts, not %s", ty);
    if (orig && (int)orig->type != type) orig = NULL; /* its type changed: a new part */
    if (orig)
        *out = *orig;
    else
        out->type = (mg_ir_part_type_t)type;
    switch (out->type) {
    case MG_IR_PART_TEXT:
        out->text = keep_or_copy(a, field_str(L, cv, idx, "text", true), orig ? orig->text : NULL);
        break;
    case MG_IR_PART_TOOL_CALL: {
        out->id = keep_or_copy(a, field_str(L, cv, idx, "id", true), orig ? orig->id : NULL);
        out->name = keep_or_copy(a, field_str(L, cv, idx, "name", true), orig ? orig->name : NULL);
        const char *args = field_str(L, cv, idx, "arguments", false);
        if (!args) args = "{}";
        if (!orig || !orig->arguments || strcmp(args, orig->arguments) != 0) {
            /* The encoders put arguments into JSON documents (Anthropic's input object). */
            cJSON *j = cJSON_Parse(args);
            bool ok = j != NULL;
            cJSON_Delete(j);
            if (!ok) conv_fail(L, cv, "'arguments' must be a JSON text%s", "");
            out->arguments = mg_ir_strdup(a, args);
        }
        break;
    }
    case MG_IR_PART_TOOL_RESULT: {
        out->id = keep_or_copy(a, field_str(L, cv, idx, "id", true), orig ? orig->id : NULL);
        lua_pushliteral(L, "is_error");
        int bt = lua_rawget(L, idx);
        if (bt != LUA_TNIL && bt != LUA_TBOOLEAN) conv_fail(L, cv, "'is_error' must be a boolean%s", "");
        out->is_error = lua_toboolean(L, -1);
        lua_pop(L, 1);
        size_t mark = strlen(cv->path);
        conv_content(L, cv, idx, true, &out->parts, &out->n_parts);
        cv->path[mark] = '\0';
        break;
    }
    default: /* image, reasoning, other: kept as they were, or not at all */
        if (!orig)
            conv_fail(L, cv, "an %s part can only be kept from req.messages, not made", ty);
        break;
    }
}

/* t.content (a string, or a list of parts) into *parts. LJMP. */
static void conv_content(lua_State *L, conv_t *cv, int t, bool in_result, mg_ir_part_t **parts,
                         size_t *n_parts)
{
    mg_ir_arena_t *a = cv->c->arena;
    lua_pushliteral(L, "content");
    int ty = lua_rawget(L, t);
    int ci = lua_gettop(L);
    size_t mark = strlen(cv->path);
    if (ty == LUA_TSTRING) {
        mg_ir_part_t *p = mg_ir_alloc(a, sizeof *p);
        conv_part(L, cv, ci, p, in_result);
        *parts = p;
        *n_parts = 1;
    } else if (ty == LUA_TTABLE) {
        size_t n = lua_rawlen(L, ci);
        if (n > MG_COMPACT_MAX_PARTS) conv_fail(L, cv, "more than 10000 parts in one message%s", "");
        mg_ir_part_t *p = n ? mg_ir_alloc(a, n * sizeof *p) : NULL;
        for (size_t j = 0; j < n; j++) {
            snprintf(cv->path + mark, sizeof cv->path - mark, ".content[%zu]", j + 1);
            lua_rawgeti(L, ci, (lua_Integer)j + 1);
            conv_part(L, cv, -1, &p[j], in_result);
            lua_pop(L, 1);
        }
        cv->path[mark] = '\0';
        *parts = p;
        *n_parts = n;
    } else {
        conv_fail(L, cv, "'content' must be a string or a list of parts, not %s", lua_typename(L, ty));
    }
    lua_pop(L, 1);
}

/* The hook's result (at idx) into c->result. LJMP. */
static void conv_messages(lua_State *L, conv_t *cv, int idx)
{
    mg_compact_call_t *c = cv->c;
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        conv_fail(L, cv, "a %s (expected a list of messages, or nil)", luaL_typename(L, idx));
    size_t n = lua_rawlen(L, idx);
    if (n > MG_COMPACT_MAX_MESSAGES) conv_fail(L, cv, "more than 100000 messages%s", "");
    mg_ir_message_t *msgs = n ? mg_ir_alloc(c->arena, n * sizeof *msgs) : NULL;
    for (size_t i = 0; i < n; i++) {
        snprintf(cv->path, sizeof cv->path, "messages[%zu]", i + 1);
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        int m = lua_gettop(L);
        if (!lua_istable(L, m)) conv_fail(L, cv, "a message must be a table, not %s", luaL_typename(L, m));
        const char *role = field_str(L, cv, m, "role", true);
        int r = -1;
        for (int k = 0; k < (int)MG_ARRAY_LEN(role_names) && r < 0; k++)
            if (strcmp(role, role_names[k]) == 0) r = k;
        if (r < 0) conv_fail(L, cv, "unknown role '%s' (expected user, assistant or tool)", role);
        msgs[i].role = (mg_ir_role_t)r;
        conv_content(L, cv, m, false, &msgs[i].parts, &msgs[i].n_parts);
        lua_pop(L, 1);
    }
    c->result = *c->req;
    c->result.messages = msgs;
    c->result.n_messages = n;
}

typedef struct compact_args {
    mg_compact_call_t *c;
    bool returned; /* the hook returned messages (not nil) */
} compact_args_t;

/* Runs protected: builds req.messages, calls compact(req, budget, model), reads its result. */
static int call_compact(lua_State *L)
{
    compact_args_t *a = lua_touserdata(L, 1);
    mg_compact_call_t *c = a->c;
    host_t *h = host_of(L);
    lua_newtable(L);
    int map = lua_gettop(L);
    push_messages(L, c, map);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &msgs_key);
    /* What the messages may take: the budget less what the hook cannot change (system prompt,
     * tools), both as calibrated as message.tokens is. */
    int64_t base_fixed = 0;
    int64_t base = mg_tokens_request_base(c->req, mg_tokens_image_cost(&c->tokens), &base_fixed);
    base = mg_tokens_scale(base, base_fixed, h->ratio);
    int64_t budget = c->budget == INT64_MAX ? MG_MAX_SAFE_INT : c->budget - base;
    lua_pushcfunction(L, mg_lua_msgh);
    int msgh = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &compact_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &req_key);
    lua_pushinteger(L, budget);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &models_key);
    lua_getfield(L, -1, c->model->ref);
    lua_remove(L, -2);
    if (lua_pcall(L, 3, 1, msgh) != LUA_OK) return lua_error(L); /* already positioned */
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &msgs_key); /* the copy is the hook's no more */
    if (lua_isnil(L, -1)) return 0;
    conv_t cv = {.c = c, .map = map, .where = h->compact_where};
    conv_messages(L, &cv, -1);
    a->returned = true;
    return 0;
}

static int clear_messages(lua_State *L)
{
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &msgs_key);
    return 0;
}

/* The longest string of the conversation, to refuse before handing over what the sandbox's
 * string limit would refuse halfway (which would also poison the state). */
static size_t longest_text(const mg_ir_part_t *parts, size_t n)
{
    size_t m = 0;
    for (size_t j = 0; j < n; j++) {
        const mg_ir_part_t *p = &parts[j];
        const char *s[] = {p->text, p->arguments, p->id, p->name, p->url, p->media_type};
        for (size_t k = 0; k < MG_ARRAY_LEN(s); k++)
            if (s[k]) m = MG_MAX(m, strlen(s[k]));
        if (p->n_parts) m = MG_MAX(m, longest_text(p->parts, p->n_parts));
    }
    return m;
}

int mg_lua_compact(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                   mg_compact_call_t *c, int64_t budget_ms, char *err, size_t errlen)
{
    host_t *h = sb->host;
    size_t longest = 0;
    for (size_t i = 0; i < c->req->n_messages; i++)
        longest = MG_MAX(longest, longest_text(c->req->messages[i].parts, c->req->messages[i].n_parts));
    if (longest + 64 > sb->max_string) {
        snprintf(err, errlen,
                 "%s: compact not called: the conversation holds a text of %zu bytes, over the "
                 "policy's string limit of %zu bytes",
                 h->compact_where, longest, sb->max_string);
        return -1;
    }
    mg_trace_t trace;
    mg_trace_init(&trace, c->trace, sizeof c->trace);
    enter(sb, MG_PHASE_COMPACT, in, live, &trace, budget_ms);
    h->ratio = c->tokens.calib && c->tokens.model_ref
                   ? mg_tokens_calib_ratio(c->tokens.calib, c->tokens.model_ref)
                   : 1.0;
    compact_args_t a = {c, false};
    int rc = mg_sandbox_cpcall(sb, call_compact, &a, err, errlen);
    if (rc && !sb->poisoned) mg_sandbox_cpcall(sb, clear_messages, NULL, NULL, 0);
    h->ratio = 1.0;
    leave(sb);
    if (rc) return -1;
    return a.returned ? 1 : 0;
}

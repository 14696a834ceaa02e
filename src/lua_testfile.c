/* Policy test files and request/state files. See lua_testfile.h. The lua_CFunctions here may
 * longjmp (STYLE 18) and run only under mg_sandbox_pcall. */
#include "lua_testfile.h"

#include "classify.h"
#include "json5.h"
#include "lua_sandbox.h"
#include "mg_embedded.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MG_TESTFILE_MAX (4u << 20)
#define MG_TESTFILE_CPU_MS 2000 /* a test file's top level, and each check */

/* ---- the static live view ----------------------------------------------------------------------
 */

static bool static_lookup(const mg_live_static_t *s, bool provider, const char *name,
                          mg_live_state_t *out)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->entries[i].provider == provider && !strcmp(s->entries[i].name, name)) {
            *out = s->entries[i].st;
            return true;
        }
    }
    return false;
}

static bool static_model(void *ud, const mg_model_t *m, mg_live_state_t *out)
{
    return static_lookup(ud, false, m->ref, out);
}

static bool static_provider(void *ud, const mg_provider_t *p, mg_live_state_t *out)
{
    return static_lookup(ud, true, p->id, out);
}

mg_live_view_t mg_live_static_view(const mg_live_static_t *s)
{
    return (mg_live_view_t){(void *)s, static_model, static_provider};
}

/* ---- cases -------------------------------------------------------------------------------------
 */

void mg_tcase_clear(mg_tcase_t *c)
{
    for (size_t i = 0; i < c->n_owned; i++)
        free(c->owned[i]);
    free(c->owned);
    memset(c, 0, sizeof *c);
}

static const char *own(mg_tcase_t *c, const char *s, size_t n)
{
    if (c->n_owned == c->cap_owned) {
        c->cap_owned = c->cap_owned ? 2 * c->cap_owned : 16;
        c->owned = mg_xrealloc(c->owned, c->cap_owned * sizeof *c->owned);
    }
    char *p = mg_xstrndup(s, n);
    c->owned[c->n_owned++] = p;
    return p;
}

/* Error about field k of the table being read; `where` names it ("request", "state.models[x]"). */
static int field_error(lua_State *L, const char *where, const char *k, const char *what)
{
    return luaL_error(L, "%s.%s: %s", where, k, what);
}

static void check_keys(lua_State *L, int t, const char *where, const char *const *keys)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        bool known = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *k = keys; *k && !known; k++)
                known = !strcmp(*k, lua_tostring(L, -1));
        if (!known) {
            lua_pushvalue(L, -1);
            luaL_error(L, "%s: unknown field '%s'", where, luaL_tolstring(L, -1, NULL));
        }
    }
}

static const char *get_str(lua_State *L, int t, const char *where, const char *k, mg_tcase_t *c)
{
    const char *v = NULL;
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        v = own(c, s, n);
    } else if (ty != LUA_TNIL) {
        field_error(L, where, k, "expected a string");
    }
    lua_pop(L, 1);
    return v;
}

static bool get_int(lua_State *L, int t, const char *where, const char *k, int64_t *out)
{
    int ty = lua_getfield(L, t, k);
    bool set = false;
    if (ty != LUA_TNIL) {
        int isint = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (ty != LUA_TNUMBER || !isint || v < -MG_MAX_SAFE_INT || v > MG_MAX_SAFE_INT)
            field_error(L, where, k, "expected an integer");
        *out = v;
        set = true;
    }
    lua_pop(L, 1);
    return set;
}

static bool get_num(lua_State *L, int t, const char *where, const char *k, double *out)
{
    int ty = lua_getfield(L, t, k);
    bool set = false;
    if (ty == LUA_TNUMBER) {
        *out = lua_tonumber(L, -1);
        set = true;
    } else if (ty != LUA_TNIL) {
        field_error(L, where, k, "expected a number");
    }
    lua_pop(L, 1);
    return set;
}

static bool get_bool(lua_State *L, int t, const char *where, const char *k, bool dflt)
{
    int ty = lua_getfield(L, t, k);
    bool v = dflt;
    if (ty == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (ty != LUA_TNIL)
        field_error(L, where, k, "expected true or false");
    lua_pop(L, 1);
    return v;
}

/* A {name = value} table into kv (names lower-cased when lower). */
static size_t get_kv(lua_State *L, int t, const char *where, const char *k, mg_kv_t *kv, bool lower,
                     mg_tcase_t *c)
{
    size_t n = 0;
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (ty != LUA_TTABLE) field_error(L, where, k, "expected a table of name = value");
    int tab = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, tab)) {
        if (lua_type(L, -2) != LUA_TSTRING) field_error(L, where, k, "names must be strings");
        if (n == MG_TCASE_MAX_KV) field_error(L, where, k, "too many entries");
        size_t nl, vl;
        const char *name = lua_tolstring(L, -2, &nl);
        const char *value = luaL_tolstring(L, -1, &vl); /* a copy: the key is left untouched */
        char *nm = (char *)own(c, name, nl);
        if (lower)
            for (char *p = nm; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        kv[n++] = (mg_kv_t){nm, own(c, value, vl)};
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return n;
}

/* A list of strings, or NULL (absent). */
static const char *const *get_list(lua_State *L, int t, const char *where, const char *k,
                                   const char **out, size_t *n, mg_tcase_t *c)
{
    *n = 0;
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    if (ty != LUA_TTABLE) field_error(L, where, k, "expected a list of strings");
    lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
    if (len > MG_TCASE_MAX_REGIONS) field_error(L, where, k, "too many entries");
    for (lua_Integer i = 1; i <= len; i++) {
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
            field_error(L, where, k, "expected a list of strings");
        size_t sl;
        const char *s = lua_tolstring(L, -1, &sl);
        out[(*n)++] = own(c, s, sl);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return out;
}

static const char *const request_keys[] = {
    "model",           "endpoint",   "prompt_tokens", "max_output_tokens",
    "has_tools",       "has_images", "stream",        "headers",
    "metadata",        "key_id",     "data_region",   "allowed_regions",
    "gateway_regions", NULL,
};

static void read_request(lua_State *L, int t, mg_tcase_t *c)
{
    const char *w = "request";
    check_keys(L, t, w, request_keys);
    mg_route_input_t *in = &c->in;
    in->model = get_str(L, t, w, "model", c);
    if (!in->model) in->model = "default";
    in->endpoint = get_str(L, t, w, "endpoint", c);
    if (!in->endpoint) in->endpoint = "chat";
    if (strcmp(in->endpoint, "chat") && strcmp(in->endpoint, "responses") &&
        strcmp(in->endpoint, "messages"))
        field_error(L, w, "endpoint", "expected \"chat\", \"responses\" or \"messages\"");
    in->prompt_tokens = 1000;
    get_int(L, t, w, "prompt_tokens", &in->prompt_tokens);
    in->max_output_tokens = -1;
    get_int(L, t, w, "max_output_tokens", &in->max_output_tokens);
    in->has_tools = get_bool(L, t, w, "has_tools", false);
    in->has_images = get_bool(L, t, w, "has_images", false);
    in->stream = get_bool(L, t, w, "stream", false);
    in->n_headers = get_kv(L, t, w, "headers", c->headers, true, c);
    in->headers = c->headers;
    in->n_metadata = get_kv(L, t, w, "metadata", c->metadata, false, c);
    in->metadata = c->metadata;
    in->key_id = get_str(L, t, w, "key_id", c);
    in->data_region = get_str(L, t, w, "data_region", c);
    in->allowed_regions =
        get_list(L, t, w, "allowed_regions", c->allowed, &in->n_allowed_regions, c);
    in->gateway_regions =
        get_list(L, t, w, "gateway_regions", c->gateway, &in->n_gateway_regions, c);
}

static const char *const live_keys[] = {
    "healthy", "cooling_down", "cooldown_ms", "cooldown_until_ms", "latency_ms",
    "ttft_ms", "in_flight",    "error_rate",  "last_error",        "learned_context_window", NULL,
};

static void read_live_group(lua_State *L, int t, const char *group, bool provider, mg_tcase_t *c)
{
    int ty = lua_getfield(L, t, group);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (ty != LUA_TTABLE) field_error(L, "state", group, "expected a table keyed by name");
    int tab = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, tab)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE)
            field_error(L, "state", group, "expected name = {healthy = …, latency_ms = …}");
        if (c->live.n == MG_TCASE_MAX_LIVE) field_error(L, "state", group, "too many entries");
        int e = lua_gettop(L);
        char where[160];
        snprintf(where, sizeof where, "state.%s[\"%s\"]", group, lua_tostring(L, -2));
        check_keys(L, e, where, live_keys);
        mg_live_entry_t *le = &c->live_entries[c->live.n++];
        size_t nl;
        const char *name = lua_tolstring(L, -2, &nl);
        le->name = own(c, name, nl);
        le->provider = provider;
        mg_live_state_t *st = &le->st;
        st->healthy = get_bool(L, e, where, "healthy", true);
        st->cooling_down = get_bool(L, e, where, "cooling_down", false);
        int64_t ms = 0;
        if (get_int(L, e, where, "cooldown_ms", &ms) && ms > 0)
            st->cooldown_until_ms = mg_wall_ms() + ms;
        get_int(L, e, where, "cooldown_until_ms", &st->cooldown_until_ms);
        st->latency_ms_p50 = st->ttft_ms_p50 = -1;
        get_num(L, e, where, "latency_ms", &st->latency_ms_p50);
        get_num(L, e, where, "ttft_ms", &st->ttft_ms_p50);
        get_int(L, e, where, "in_flight", &st->in_flight);
        get_num(L, e, where, "error_rate", &st->error_rate);
        st->last_error_class = get_str(L, e, where, "last_error", c);
        mg_class_t known;
        if (st->last_error_class && !mg_class_from_name(st->last_error_class, &known))
            field_error(L, where, "last_error", "not an error class (gw.ERROR_CLASSES)");
        get_int(L, e, where, "learned_context_window", &st->learned_context_window);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static const char *const failure_keys[] = {
    "model", "index", "error_class", "status", "retry_after_ms", "attempt", NULL,
};

static void read_failure(lua_State *L, int t, mg_tcase_t *c)
{
    const char *w = "failure";
    check_keys(L, t, w, failure_keys);
    c->has_failure = true;
    c->failure_model = get_str(L, t, w, "model", c);
    if (!c->failure_model) field_error(L, w, "model", "required (the candidate that failed)");
    int64_t v = 1;
    get_int(L, t, w, "index", &v);
    c->failure.index = v > 0 ? (size_t)(v - 1) : 0;
    c->failure.error_class = get_str(L, t, w, "error_class", c);
    if (!c->failure.error_class) c->failure.error_class = "server_error";
    mg_class_t known; /* a misspelt class would match no branch of the policy, and a test pass */
    if (!mg_class_from_name(c->failure.error_class, &known))
        field_error(L, w, "error_class", "not an error class (gw.ERROR_CLASSES)");
    v = 0;
    get_int(L, t, w, "status", &v);
    c->failure.http_status = (long)v;
    c->failure.retry_after_ms = -1;
    get_int(L, t, w, "retry_after_ms", &c->failure.retry_after_ms);
    v = 1;
    get_int(L, t, w, "attempt", &v);
    c->failure.attempt = (int)v;
}

static const char *const case_keys[] = {"name", "request", "state", "failure", "expect", NULL};

/* Runs protected: the case table at index 2 into the mg_tcase_t at index 1. */
static int read_case(lua_State *L)
{
    mg_tcase_t *c = lua_touserdata(L, 1);
    if (!lua_istable(L, 2)) return luaL_error(L, "a case must be a table");
    check_keys(L, 2, "case", case_keys);
    c->name = get_str(L, 2, "case", "name", c);
    if (!c->name) c->name = "(unnamed)";
    c->live.entries = c->live_entries;
    c->in.max_output_tokens = -1;
    int ty = lua_getfield(L, 2, "request");
    if (ty == LUA_TTABLE) {
        read_request(L, lua_gettop(L), c);
    } else if (ty == LUA_TNIL) {
        lua_newtable(L);
        read_request(L, lua_gettop(L), c);
        lua_pop(L, 1);
    } else {
        return luaL_error(L, "case.request: expected a table");
    }
    lua_pop(L, 1);
    ty = lua_getfield(L, 2, "state");
    if (ty == LUA_TTABLE) {
        int s = lua_gettop(L);
        static const char *const state_keys[] = {"models", "providers", NULL};
        check_keys(L, s, "state", state_keys);
        read_live_group(L, s, "models", false, c);
        read_live_group(L, s, "providers", true, c);
    } else if (ty != LUA_TNIL) {
        return luaL_error(L, "case.state: expected a table");
    }
    lua_pop(L, 1);
    ty = lua_getfield(L, 2, "failure");
    if (ty == LUA_TTABLE)
        read_failure(L, lua_gettop(L), c);
    else if (ty != LUA_TNIL)
        return luaL_error(L, "case.failure: expected a table");
    lua_pop(L, 1);
    return 0;
}

/* ---- JSON → Lua ------------------------------------------------------------------------------ */

static void push_json(lua_State *L, const cJSON *v)
{
    luaL_checkstack(L, 4, "JSON too deep");
    if (cJSON_IsObject(v)) {
        lua_newtable(L);
        for (const cJSON *e = v->child; e; e = e->next) {
            if (cJSON_IsNull(e)) continue;
            push_json(L, e);
            lua_setfield(L, -2, e->string);
        }
    } else if (cJSON_IsArray(v)) {
        lua_newtable(L);
        lua_Integer i = 0;
        for (const cJSON *e = v->child; e; e = e->next) {
            push_json(L, e);
            lua_rawseti(L, -2, ++i);
        }
    } else if (cJSON_IsString(v)) {
        lua_pushstring(L, v->valuestring);
    } else if (cJSON_IsBool(v)) {
        lua_pushboolean(L, cJSON_IsTrue(v));
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == (double)(lua_Integer)d && d > -9.2e18 && d < 9.2e18)
            lua_pushinteger(L, (lua_Integer)d);
        else
            lua_pushnumber(L, d);
    } else {
        lua_pushnil(L);
    }
}

static int read_text(const char *path, size_t max, char **text, size_t *len, char *err,
                     size_t errlen)
{
    if (mg_read_file(path, max, text, len) == 0) return 0;
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return -1;
}

static int load_json(const char *path, mg_json5_doc_t *doc, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    char perr[256];
    if (read_text(path, MG_TESTFILE_MAX, &text, &len, err, errlen)) return -1;
    int rc = mg_json5_parse(text, len, doc, perr, sizeof perr);
    free(text);
    if (rc) {
        snprintf(err, errlen, "%s:%s", path, perr);
        return -1;
    }
    if (!cJSON_IsObject(doc->root)) {
        snprintf(err, errlen, "%s: expected a JSON object", path);
        mg_json5_free(doc);
        return -1;
    }
    return 0;
}

typedef struct json_case {
    const cJSON *request, *state;
    mg_tcase_t *out;
} json_case_t;

static int read_json_case(lua_State *L)
{
    json_case_t *j = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushlightuserdata(L, j->out);
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "request");
    lua_setfield(L, -2, "name");
    push_json(L, j->request);
    lua_setfield(L, -2, "request");
    if (j->state) {
        push_json(L, j->state);
        lua_setfield(L, -2, "state");
    }
    return read_case(L);
}

int mg_tcase_from_json(const char *request_path, const char *state_path, mg_tcase_t *out, char *err,
                       size_t errlen)
{
    mg_json5_doc_t req = {0}, st = {0};
    mg_sandbox_t *sb = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (load_json(request_path, &req, err, errlen)) goto done;
    if (state_path && load_json(state_path, &st, err, errlen)) goto done;
    mg_sandbox_limits_t lim = {.mem_bytes = 64 << 20, .max_string = 4 << 20};
    sb = mg_sandbox_new(&lim, err, errlen);
    if (!sb) goto done;
    json_case_t j = {req.root, st.root, out};
    char msg[512];
    if (mg_sandbox_cpcall(sb, read_json_case, &j, msg, sizeof msg)) {
        snprintf(err, errlen, "%s: %s",
                 state_path && strstr(msg, "state") == msg ? state_path : request_path, msg);
        mg_tcase_clear(out);
        goto done;
    }
    rc = 0;
done:
    mg_sandbox_free(sb);
    mg_json5_free(&req);
    mg_json5_free(&st);
    return rc;
}

/* ---- test files ------------------------------------------------------------------------------ */

struct mg_testfile {
    mg_sandbox_t *sb;
    char *config, *policy;
    size_t n_cases;
    int ref_cases, ref_testing; /* registry refs: the cases list and lua/testing.lua's table */
};

typedef struct file_args {
    mg_testfile_t *tf;
    const char *text;
    size_t len;
    const char *chunkname;
    const char *dir;
} file_args_t;

static char *resolve(const char *dir, const char *p)
{
    if (p[0] == '/') return mg_xstrdup(p);
    return mg_xasprintf("%s/%s", dir, p);
}

/* Runs protected: the file's top level, its table checked, and lua/testing.lua loaded. */
static int run_file(lua_State *L)
{
    file_args_t *a = lua_touserdata(L, 1);
    if (mg_lua_load_text(L, a->text, a->len, a->chunkname) != LUA_OK) return lua_error(L);
    lua_call(L, 0, 1);
    if (!lua_istable(L, -1))
        return luaL_error(L, "%s: a test file must return a table {config = …, cases = {…}}",
                          a->chunkname + 1);
    int t = lua_gettop(L);
    static const char *const keys[] = {"config", "policy", "cases", NULL};
    check_keys(L, t, "the test file", keys);
    if (lua_getfield(L, t, "config") != LUA_TSTRING)
        return luaL_error(L, "%s: `config` must name the config file (relative to the test file)",
                          a->chunkname + 1);
    a->tf->config = resolve(a->dir, lua_tostring(L, -1));
    if (lua_getfield(L, t, "policy") == LUA_TSTRING)
        a->tf->policy = resolve(a->dir, lua_tostring(L, -1));
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "%s: `policy` must be a path", a->chunkname + 1);
    if (lua_getfield(L, t, "cases") != LUA_TTABLE)
        return luaL_error(L, "%s: `cases` must be a list", a->chunkname + 1);
    a->tf->n_cases = lua_rawlen(L, -1);
    lua_pushvalue(L, -1);
    a->tf->ref_cases = luaL_ref(L, LUA_REGISTRYINDEX);
    for (const mg_embedded_file_t *f = mg_embedded_files; f->name; f++) {
        if (strcmp(f->name, "testing.lua") != 0) continue;
        if (luaL_loadbufferx(L, f->text, f->len, "=moongate:testing.lua", "t") != LUA_OK)
            return lua_error(L);
        lua_call(L, 0, 1);
        a->tf->ref_testing = luaL_ref(L, LUA_REGISTRYINDEX);
        return 0;
    }
    return luaL_error(L, "testing.lua is not embedded (build problem)");
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return mg_xstrdup(".");
    if (slash == path) return mg_xstrdup("/");
    return mg_xstrndup(path, (size_t)(slash - path));
}

mg_testfile_t *mg_testfile_load(const char *path, char *err, size_t errlen)
{
    mg_testfile_t *tf = mg_xcalloc(1, sizeof *tf);
    char *text = NULL, *dir = NULL, *chunk = NULL;
    size_t len = 0;
    if (read_text(path, MG_TESTFILE_MAX, &text, &len, err, errlen)) goto error;
    mg_sandbox_limits_t lim = {.mem_bytes = 64 << 20, .max_string = 4 << 20};
    tf->sb = mg_sandbox_new(&lim, err, errlen);
    if (!tf->sb) goto error;
    dir = dir_of(path);
    chunk = mg_xasprintf("@%s", path);
    file_args_t a = {tf, text, len, chunk, dir};
    mg_sandbox_arm(tf->sb, MG_TESTFILE_CPU_MS);
    int rc = mg_sandbox_cpcall(tf->sb, run_file, &a, err, errlen);
    mg_sandbox_disarm(tf->sb);
    if (rc) goto error;
    free(text);
    free(dir);
    free(chunk);
    return tf;
error:
    free(text);
    free(dir);
    free(chunk);
    mg_testfile_free(tf);
    return NULL;
}

void mg_testfile_free(mg_testfile_t *tf)
{
    if (!tf) return;
    mg_sandbox_free(tf->sb);
    free(tf->config);
    free(tf->policy);
    free(tf);
}

const char *mg_testfile_config(const mg_testfile_t *tf)
{
    return tf->config;
}

const char *mg_testfile_policy(const mg_testfile_t *tf)
{
    return tf->policy;
}

size_t mg_testfile_count(const mg_testfile_t *tf)
{
    return tf->n_cases;
}

typedef struct case_args {
    mg_testfile_t *tf;
    size_t i;
    mg_tcase_t *out;
    const mg_tresult_t *r;
    int verdict;
    char *why;
    size_t whylen;
} case_args_t;

static int get_case(lua_State *L)
{
    case_args_t *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushlightuserdata(L, a->out);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->tf->ref_cases);
    lua_rawgeti(L, -1, (lua_Integer)a->i + 1);
    lua_remove(L, -2);
    return read_case(L);
}

int mg_testfile_case(mg_testfile_t *tf, size_t i, mg_tcase_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    case_args_t a = {.tf = tf, .i = i, .out = out};
    char msg[512];
    mg_sandbox_arm(tf->sb, MG_TESTFILE_CPU_MS);
    int rc = mg_sandbox_cpcall(tf->sb, get_case, &a, msg, sizeof msg);
    mg_sandbox_disarm(tf->sb);
    if (rc) {
        /* named as its results are, when it got as far as its name */
        if (out->name && strcmp(out->name, "(unnamed)") != 0)
            snprintf(err, errlen, "case %zu (%s): %s", i + 1, out->name, msg);
        else
            snprintf(err, errlen, "case %zu: %s", i + 1, msg);
        mg_tcase_clear(out);
    }
    return rc;
}

static void push_result(lua_State *L, const mg_tresult_t *r)
{
    lua_createtable(L, 0, 10);
    lua_pushboolean(L, r->rc == 0);
    lua_setfield(L, -2, "ok");
    if (r->fd) {
        if (r->rc) {
            lua_pushstring(L, r->fd->error);
            lua_setfield(L, -2, "error");
        }
        static const char *const actions[] = {"next", "stop", "retry"};
        lua_pushstring(L, actions[r->fd->action]);
        lua_setfield(L, -2, "action");
        lua_pushinteger(L, r->fd->delay_ms);
        lua_setfield(L, -2, "delay_ms");
        lua_pushstring(L, r->fd->trace);
        lua_setfield(L, -2, "trace");
        return;
    }
    const mg_plan_t *p = r->plan;
    if (r->rc) {
        lua_pushstring(L, p->error);
        lua_setfield(L, -2, "error");
    }
    lua_pushstring(L, p->trace);
    lua_setfield(L, -2, "trace");
    lua_pushboolean(L, p->rejected);
    lua_setfield(L, -2, "rejected");
    if (p->rejected) {
        lua_pushinteger(L, p->status);
        lua_setfield(L, -2, "status");
        lua_pushstring(L, p->code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, p->message);
        lua_setfield(L, -2, "message");
    }
    lua_createtable(L, (int)p->n_cands, 0);
    for (size_t i = 0; i < p->n_cands; i++) {
        const mg_candidate_t *c = &p->cands[i];
        lua_createtable(L, 0, 8);
        lua_pushstring(L, c->model->ref);
        lua_setfield(L, -2, "model");
        const struct {
            const char *k;
            int64_t v;
            bool set;
        } ints[] = {
            {"connect_ms", c->connect_ms, c->connect_ms > 0},
            {"first_token_ms", c->first_token_ms, c->first_token_ms > 0},
            {"idle_ms", c->idle_ms, c->idle_ms > 0},
            {"total_ms", c->total_ms, c->total_ms > 0},
            {"max_output_tokens", c->max_output_tokens, c->max_output_tokens >= 0},
        };
        for (size_t k = 0; k < MG_ARRAY_LEN(ints); k++) {
            if (!ints[k].set) continue;
            lua_pushinteger(L, ints[k].v);
            lua_setfield(L, -2, ints[k].k);
        }
        if (c->compaction >= 0) {
            lua_pushboolean(L, c->compaction);
            lua_setfield(L, -2, "compaction");
        }
        if (c->strip_reasoning >= 0) {
            lua_pushboolean(L, c->strip_reasoning);
            lua_setfield(L, -2, "strip_reasoning");
        }
        if (c->summarize == 1)
            lua_pushstring(L, c->summarizer->ref);
        else if (c->summarize == 0)
            lua_pushboolean(L, 0);
        if (c->summarize >= 0) lua_setfield(L, -2, "summarizer");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "candidates");
}

static int do_check(lua_State *L)
{
    case_args_t *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->tf->ref_testing);
    lua_getfield(L, -1, "check");
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->tf->ref_cases);
    lua_rawgeti(L, -1, (lua_Integer)a->i + 1);
    lua_remove(L, -2);
    push_result(L, a->r);
    lua_call(L, 2, 2);
    a->verdict = lua_toboolean(L, -2);
    if (!a->verdict)
        snprintf(a->why, a->whylen, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "failed");
    return 0;
}

int mg_testfile_check(mg_testfile_t *tf, size_t i, const mg_tresult_t *r, char *why, size_t whylen)
{
    case_args_t a = {.tf = tf, .i = i, .r = r, .why = why, .whylen = whylen};
    why[0] = '\0';
    mg_sandbox_arm(tf->sb, MG_TESTFILE_CPU_MS);
    int rc = mg_sandbox_cpcall(tf->sb, do_check, &a, why, whylen);
    mg_sandbox_disarm(tf->sb);
    if (rc) return -1;
    return a.verdict ? 1 : 0;
}

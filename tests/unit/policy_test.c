/* Unit tests for policy.c, lua_api.c and lua_sandbox.c: the built-in default, the sandbox (every
 * escape attempt denied), the limits (each hit fails one decision quickly and the next works),
 * the C invariants, the gw API and its phases, the hooks, and concurrent use from many threads. */
#include "lua_sandbox.h"
#include "mg_test.h"
#include "policy.h"
#include "util.h"

#include <lauxlib.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

MG_TEST_MAIN()

/* lm: local; eu: hosted, region eu-west; us: hosted, region us; nr: hosted, no region. */
static const char *const CFG =
    "{ models: { mode: 'replace', providers: {"
    "  lm: { baseUrl: 'http://127.0.0.1:1234/v1', apiKey: 'x', api: 'openai-completions',"
    "        models: [{ id: 'small', contextWindow: 8192, maxTokens: 2048, cost: { input: 0, "
    "output: 0 } }] },"
    "  eu: { baseUrl: 'https://eu.example.com/v1', apiKey: '${MG_TEST_UNSET_EU}', api: "
    "'openai-completions',"
    "        models: [{ id: 'big', contextWindow: 200000, maxTokens: 8192, input: ['text', "
    "'image'],"
    "                   cost: { input: 3, output: 15 } }] },"
    "  us: { baseUrl: 'https://us.example.com/v1', apiKey: '${MG_TEST_UNSET_US}', api: "
    "'openai-completions',"
    "        models: [{ id: 'big', contextWindow: 200000, maxTokens: 8192, cost: { input: 1, "
    "output: 5 } }] },"
    "  nr: { baseUrl: 'https://nr.example.com/v1', apiKey: '${MG_TEST_UNSET_NR}', api: "
    "'openai-completions',"
    "        models: [{ id: 'other', contextWindow: 32000, maxTokens: 4096, cost: { input: 2, "
    "output: 2 }, api: 'anthropic-messages' }] },"
    "}},"
    "  agents: { defaults: { model: { primary: 'lm/small', fallbacks: ['eu/big', 'us/big'] },"
    "                        models: { 'us/big': { alias: 'cheap' } } } },"
    "  gateway: { providers: { eu: { region: 'eu-west', tags: ['gdpr'] }, us: { region: 'us' } } } "
    "}";

static char tmpdir[64];
static mg_config_t *cfg;
static int n_files;

static void setup(void)
{
    if (cfg) return;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mg_policy_test_XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
    char err[512];
    cfg = mg_config_load_string(CFG, strlen(CFG), "test.json5", tmpdir, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "config: %s\n", err);
        abort();
    }
}

static char *write_file(const char *text)
{
    setup();
    char *path = mg_xasprintf("%s/p%d.lua", tmpdir, ++n_files);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return path;
}

static mg_policy_t *load_lim(const char *text, const mg_policy_limits_t *lim, char *err,
                             size_t errlen)
{
    char *path = write_file(text);
    mg_policy_t *p = mg_policy_load_file(cfg, path, lim, err, errlen);
    free(path);
    return p;
}

static mg_policy_t *load(const char *text)
{
    char err[512];
    mg_policy_t *p = load_lim(text, NULL, err, sizeof err);
    if (!p) fprintf(stderr, "  load failed: %s\n", err);
    return p;
}

static mg_route_input_t input(const char *model)
{
    return (mg_route_input_t){
        .model = model, .endpoint = "chat", .prompt_tokens = 100, .max_output_tokens = -1};
}

/* CPU time of this thread in ms. */
static int64_t cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int route(mg_policy_t *p, const char *model, mg_plan_t *plan)
{
    mg_route_input_t in = input(model);
    return mg_policy_route(p, &in, NULL, plan);
}

/* "a/b c/d" for the plan's candidates. */
static const char *refs(const mg_plan_t *plan)
{
    static _Thread_local char buf[512];
    buf[0] = '\0';
    for (size_t i = 0; i < plan->n_cands; i++) {
        if (i) strcat(buf, " ");
        strcat(buf, plan->cands[i].model->ref);
    }
    return buf;
}

#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_)) {                                                              \
            fprintf(stderr, "  %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,       \
                    h_ ? h_ : "(null)", n_);                                                       \
            mg_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

/* ---- the built-in default ------------------------------------------------------------------- */

MG_TEST(default_policy_reproduces_static_plan)
{
    setup();
    char err[256];
    mg_policy_t *p = mg_policy_load(cfg, NULL, err, sizeof err); /* no gateway.policy: built-in */
    MG_CHECK(p != NULL);
    if (!p) return;
    MG_CHECK_STR(mg_policy_path(p), "(built-in default)");
    static const struct {
        const char *model, *want;
    } cases[] = {
        {"default", "lm/small eu/big us/big"},
        {"eu/big", "eu/big us/big"},
        {"cheap", "us/big"},
        {"nr/other", "nr/other"},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        mg_plan_t plan, st;
        MG_CHECK_INT(route(p, cases[i].model, &plan), 0);
        MG_CHECK(!plan.rejected);
        MG_CHECK_STR(refs(&plan), cases[i].want);
        mg_route_input_t in = input(cases[i].model);
        mg_policy_static_plan(cfg, &in, &st);
        MG_CHECK_STR(refs(&st), cases[i].want);
    }
    mg_plan_t plan, st;
    MG_CHECK_INT(route(p, "nope/x", &plan), 0);
    MG_CHECK(plan.rejected);
    MG_CHECK_INT(plan.status, 404);
    MG_CHECK_STR(plan.code, "model_not_found");
    MG_CHECK_STR(
        plan.message,
        "The model `nope/x` does not exist in this gateway's catalog. Available: lm/small, "
        "eu/big, us/big, nr/other, cheap, default");
    mg_route_input_t in = input("nope/x");
    mg_policy_static_plan(cfg, &in, &st);
    MG_CHECK_STR(st.message, plan.message);
    mg_policy_free(p);
}

MG_TEST(default_policy_without_chain)
{
    const char *text =
        "{ models: { mode: 'replace', providers: { lm: { baseUrl: 'http://127.0.0.1:1/v1', "
        "api: 'openai-completions', models: [{ id: 'm' }] } } } }";
    char err[256];
    mg_config_t *c = mg_config_load_string(text, strlen(text), "x.json5", "/tmp", err, sizeof err);
    MG_CHECK(c != NULL);
    if (!c) return;
    mg_policy_t *p = mg_policy_load(c, NULL, err, sizeof err);
    MG_CHECK(p != NULL);
    mg_plan_t plan;
    mg_route_input_t in = input("default");
    in.cfg = c;
    MG_CHECK_INT(mg_policy_route(p, &in, NULL, &plan), 0);
    MG_CHECK_INT(plan.status, 404);
    MG_CHECK_STR(plan.message,
                 "no default model is configured (agents.defaults.model). Available: lm/m");
    mg_policy_free(p);
    mg_config_free(c);
}

MG_TEST(sha256_and_source)
{
    /* printf 'function route(req) return "lm/small" end\n' | sha256sum */
    mg_policy_t *p = load("function route(req) return \"lm/small\" end\n");
    MG_CHECK(p != NULL);
    if (!p) return;
    MG_CHECK_STR(mg_policy_sha256(p),
                 "c87ca2ae1c1a0de18c04a145b219b1c8103fd056c907731ec9632657ffcfc573");
    size_t n;
    MG_CHECK_STR(mg_policy_source(p, &n), "function route(req) return \"lm/small\" end\n");
    MG_CHECK_INT(n, 42);
    MG_CHECK(mg_policy_loaded_ms(p) > 0);
    MG_CHECK(!mg_policy_has_hook(p, "on_failure"));
    mg_policy_free(p);
}

/* ---- load errors ------------------------------------------------------------------------------
 */

static void load_fails(const char *text, const char *want)
{
    char err[512];
    mg_policy_t *p = load_lim(text, NULL, err, sizeof err);
    MG_CHECK(p == NULL);
    mg_policy_free(p);
    CHECK_CONTAINS(err, want);
}

/* A rejection's message longer than the plan holds is cut before a character, never inside one. */
MG_TEST(long_rejection_messages_are_cut_between_characters)
{
    mg_policy_t *p = load("function route(req) return gw.reject(400, 'x', 'a' .. string.rep('\\195\\169', 400)) end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "default", &plan) == 0);
    MG_CHECK(plan.rejected);
    size_t n = strlen(plan.message);
    MG_CHECK_INT(n, 511); /* 'a' and 255 two-byte characters: the 256th would pass the 511 bytes */
    MG_CHECK_INT(mg_utf8_valid_len(plan.message, n), n);
    mg_policy_free(p);
}

MG_TEST(load_errors_name_file_and_line)
{
    char want[128];
    snprintf(want, sizeof want, "p%d.lua:3: <eof> expected near 'end'", n_files + 1);
    load_fails("\n\nfunction route(req) return end end\n", want);
    snprintf(want, sizeof want, "p%d.lua:2: boom", n_files + 1);
    load_fails("local x = 1\nerror('boom')\n", want);
    load_fails("local x = 1\n", "the policy must define a function route(req) (it defines none)");
    load_fails("route = 42\n",
               "the policy must define a function route(req) (it is not a function)");
    load_fails("return 42\n", "the file returned a number");
    load_fails("return { rout = function(req) return 'lm/small' end, helper = 1, [3] = 0 }\n",
               "(it defines none; the table it returned has ");
    load_fails("return { rout = function(req) return 'lm/small' end }\n",
               "has \"rout\", and the hooks are route, on_failure, on_complete and compact)");
    snprintf(want, sizeof want, "p%d.lua: a precompiled (binary) chunk; give the Lua source", n_files + 1);
    load_fails("\x1bLuaT", want);
    snprintf(want, sizeof want,
             "p%d.lua:1: route returned candidate #2 'nope/x', which is not a model", n_files + 1);
    load_fails("function route(req) return {'lm/small', 'nope/x'} end", want);
    load_fails("function route(req) error('bad') end",
               "(self-check: route() for model \"default\")");
    load_fails("gw.trace('x')\nfunction route() return 'lm/small' end",
               "gw.trace is not available in phase load");
    load_fails("gw.health('lm/small')\nfunction route() return 'lm/small' end",
               "gw.health is not available in phase load");
    load_fails("local r = gw.reject(400, 'x', 'y')\nfunction route() return 'lm/small' end",
               "gw.reject is not available in phase load");
    char err[256];
    MG_CHECK(mg_policy_load_file(cfg, "/nonexistent/p.lua", NULL, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "/nonexistent/p.lua: cannot read the policy");
}

MG_TEST(load_infinite_loop_at_top_level)
{
    mg_policy_limits_t lim = {.load_cpu_ms = 30};
    char err[256];
    int64_t c0 = cpu_ms();
    mg_policy_t *p = load_lim("while true do end\nfunction route() return 'lm/small' end", &lim,
                              err, sizeof err);
    int64_t dt = cpu_ms() - c0;
    MG_CHECK(p == NULL);
    CHECK_CONTAINS(err, ".lua:1: CPU budget of 30 ms exceeded");
    MG_CHECK(dt < 30 + 50 + 50); /* one budget for the load, plus the state's setup */
}

MG_TEST(module_styles)
{
    mg_policy_t *p = load("return function(req) return 'eu/big' end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "default", &plan) == 0);
    MG_CHECK_STR(refs(&plan), "eu/big");
    mg_policy_free(p);
    p = load("return { route = function(req) return {'us/big'} end, on_failure = function() return "
             "'stop' end }");
    MG_CHECK(p && route(p, "default", &plan) == 0);
    MG_CHECK_STR(refs(&plan), "us/big");
    MG_CHECK(p && mg_policy_has_hook(p, "on_failure"));
    mg_policy_free(p);
}

/* ---- sandbox: every escape denied --------------------------------------------------------------
 */

/* Runs body inside pcall during route and returns "ok|result" as traced. */
static void probe(const char *body, const char *want)
{
    char *text = mg_xasprintf("local function probe()\n%s\nend\n"
                              "function route(req)\n"
                              "  local ok, res = pcall(probe)\n"
                              "  gw.trace('%%s|%%s', tostring(ok), tostring(res))\n"
                              "  return 'lm/small'\n"
                              "end\n",
                              body);
    mg_policy_t *p = load(text);
    free(text);
    MG_CHECK(p != NULL);
    if (!p) return;
    mg_plan_t plan;
    MG_CHECK_INT(route(p, "default", &plan), 0);
    if (!strstr(plan.trace, want)) {
        fprintf(stderr, "  probe {%s}: trace \"%s\" lacks \"%s\"\n", body, plan.trace, want);
        mg_test_failures++;
    }
    mg_policy_free(p);
}

MG_TEST(sandbox_denies_os_io_require_debug_package)
{
    probe("return os.execute('echo pwned')", "false|");
    probe("return os.execute", "true|nil");
    probe("return os.getenv", "true|nil");
    probe("return os.exit", "true|nil");
    probe("return os.remove", "true|nil");
    probe("return io.open('/etc/passwd')", "undefined global 'io'");
    probe("return require('os')", "undefined global 'require'");
    probe("return debug.getinfo(1)", "undefined global 'debug'");
    probe("return package.loaded", "undefined global 'package'");
    probe("return dofile('/etc/passwd')", "undefined global 'dofile'");
    probe("return loadfile('/etc/passwd')", "undefined global 'loadfile'");
    probe("return coroutine.create(print)", "undefined global 'coroutine'");
    probe("return type(os.time())", "true|number");
    probe("return type(os.clock())", "true|number");
    probe("return type(os.date('%Y'))", "true|string");
}

MG_TEST(sandbox_denies_bytecode_and_dump)
{
    probe("local f, e = load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n') return e", "true|");
    probe("local f, e = load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n') return e",
          "attempt to load a binary chunk");
    probe("local f, e = load('\\27LuaT\\0', 'x', 'b') return e",
          "attempt to load a binary chunk (mode is 't')");
    probe("local parts = {'\\27Lua', 'T\\0'} local i = 0\n"
          "local f, e = load(function() i = i + 1 return parts[i] end) return e",
          "binary chunk");
    probe("return string.dump(function() end)", "false|");
    probe("return string.dump", "true|nil");
    probe("return ('x').dump", "true|nil");
    probe("return ('x'):upper()", "true|X");
    probe("return load('return 1 + 1')()", "true|2");
    probe("return load('return os.execute')()", "true|nil");
    probe("return load('return io')()", "undefined global 'io'");
}

MG_TEST(sandbox_protects_shared_tables)
{
    probe("rawset(gw, 'x', 1)", "undefined global 'rawset'");
    probe("gw.x = 1", "attempt to set 'x' in gw, which is read-only");
    probe("gw.catalog.models['lm/small'].context_window = 1", "which is read-only");
    probe("gw.catalog.models['lm/small'].cost.input = 1", "which is read-only");
    probe("gw.util.chain_for = nil", "attempt to set 'chain_for' in gw.util, which is read-only");
    probe("table.insert(gw.catalog.default_chain, 'x')", "which is read-only");
    probe("table.sort(gw.catalog.default_chain)", "which is read-only");
    probe("string.upper = nil", "attempt to set 'upper' in string, which is read-only");
    probe("math.pi = 3", "which is read-only");
    probe("setmetatable(gw, {})", "cannot change a protected metatable");
    probe("return getmetatable(gw)", "true|false");
    probe("return getmetatable(gw.catalog.models)", "true|false");
    probe("return getmetatable('').__index", "false|");
    probe("return getmetatable('')", "true|false");
    probe("return next(gw)", "true|nil");
    probe("return rawget(gw, 'catalog')", "true|nil");
    probe("local f, s = pairs(gw.catalog) return rawequal(s, gw.catalog)", "true|true");
    probe("local n = 0 for k, v in pairs(gw.catalog.models) do n = n + 1 end return n", "true|4");
    probe("local n = 0 for i, v in ipairs(gw.catalog.model_list) do n = n + 1 end return n",
          "true|4");
    probe("return #gw.catalog.default_chain", "true|3");
    probe("_G.os = nil", "in the global table, which is read-only");
    probe("_G.x = 1", "in the global table, which is read-only");
    probe("x = 1", "attempt to set 'x' in the policy's globals (frozen after load");
    probe("_ENV.route = nil", "the policy's globals (frozen after load");
    probe("return undefined_name", "undefined global 'undefined_name'");
    probe("return rawequal(_G, _ENV)", "true|false");
    probe("load('y = 1')()", "in the global table, which is read-only");
    probe("local t = gw.reject(403, 'x', 'y') setmetatable(t, nil)",
          "cannot change a protected metatable");
    probe("return getmetatable(gw.reject(403, 'x', 'y'))", "true|false");
}

MG_TEST(sandbox_req_is_read_only)
{
    mg_policy_t *p = load("function route(req)\n"
                          "  local ok1, e1 = pcall(function() req.model = 'x' end)\n"
                          "  local ok2, e2 = pcall(function() req.headers['a'] = 'x' end)\n"
                          "  local ok3, e3 = pcall(function() return req.nope end)\n"
                          "  gw.trace('%s %s %s %s', tostring(getmetatable(req)), e1, e2, e3)\n"
                          "  return 'lm/small'\n"
                          "end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "default", &plan) == 0);
    CHECK_CONTAINS(plan.trace, "false ");
    CHECK_CONTAINS(plan.trace, "req is read-only");
    CHECK_CONTAINS(plan.trace, "req.headers is read-only");
    CHECK_CONTAINS(plan.trace, "req has no field 'nope'");
    mg_policy_free(p);
}

MG_TEST(sandbox_collectgarbage_and_finalizers)
{
    probe("collectgarbage('stop')", "collectgarbage(\"stop\") is not allowed");
    probe("collectgarbage()", "collectgarbage(\"collect\") is not allowed");
    probe("collectgarbage('generational')", "is not allowed");
    probe("collectgarbage('setpause', 1000)", "is not allowed");
    probe("return type(collectgarbage('count'))", "true|number");
    probe("setmetatable({}, {__gc = function() while true do end end})",
          "__gc metamethods are not allowed");
    probe("return setmetatable({}, {__index = function() return 7 end}).x", "true|7");
}

MG_TEST(sandbox_string_limits)
{
    int64_t t0 = mg_now_ms();
    probe("return #string.rep('', 2^60)", "true|0");
    probe("return #string.rep('', 2^60, '')", "true|0");
    probe("return string.rep('x', 2^40)", "string.rep: result longer than the limit");
    probe("return #string.rep('ab', 1000, ',')", "true|2999");
    probe("return table.move({}, 1, 1e12, 2)", "table.move: too many elements");
    MG_CHECK(mg_now_ms() - t0 < 1000);
}

/* ---- limits --------------------------------------------------------------------------------- */

/* The policy runs `body` when req.model == "bad" and returns lm/small otherwise. The bad call must
 * fail within the budget + 50 ms with `want` in the error; the next call must work. */
static void limit_hit(const char *body, const char *want, const mg_policy_limits_t *lim)
{
    char *text = mg_xasprintf("local function bad(req)\n%s\nend\n"
                              "function route(req)\n"
                              "  if req.model == 'bad' then return bad(req) end\n"
                              "  return 'lm/small'\n"
                              "end\n",
                              body);
    char err[512];
    mg_policy_t *p = load_lim(text, lim, err, sizeof err);
    free(text);
    MG_CHECK(p != NULL);
    if (!p) {
        fprintf(stderr, "  load: %s\n", err);
        return;
    }
    int64_t budget = lim && lim->cpu_ms ? lim->cpu_ms : 5;
    for (int round = 0; round < 2; round++) {
        mg_plan_t plan;
        int64_t t0 = mg_now_ms(), c0 = cpu_ms();
        int rc = route(p, "bad", &plan);
        int64_t dt = mg_now_ms() - t0, cdt = cpu_ms() - c0;
        MG_CHECK_INT(rc, -1);
        bool found = false; /* want may list alternatives separated by '|' */
        for (const char *w = want; !found;) {
            const char *bar = strchr(w, '|');
            size_t len = bar ? (size_t)(bar - w) : strlen(w);
            char alt[256];
            snprintf(alt, sizeof alt, "%.*s", (int)len, w);
            found = strstr(plan.error, alt) != NULL;
            if (!bar) break;
            w = bar + 1;
        }
        if (!found || strncmp(plan.error, "policy_error: ", 14) != 0) {
            fprintf(stderr, "  {%s}: error \"%s\" lacks \"%s\"\n", body, plan.error, want);
            mg_test_failures++;
        }
        /* The budget is enforced on the thread's CPU time once the wall deadline has passed (so
         * that preemption on a busy machine does not fail decisions): check the CPU the call used,
         * and the wall time only loosely, as a hang detector. */
        if (cdt > budget + 50 || dt > budget + 2000) {
            fprintf(stderr, "  {%s}: took %lld ms of CPU, %lld ms of wall time (budget %lld)\n",
                    body, (long long)cdt, (long long)dt, (long long)budget);
            mg_test_failures++;
        }
        MG_CHECK_INT(route(p, "good", &plan), 0);
        MG_CHECK_STR(refs(&plan), "lm/small");
    }
    mg_policy_free(p);
}

MG_TEST(limit_infinite_loop)
{
    limit_hit("while true do end", ".lua:2: CPU budget of 5 ms exceeded", NULL);
    limit_hit("local i = 0\nrepeat i = i + 1 until false", "CPU budget of 5 ms exceeded", NULL);
    mg_policy_limits_t lim = {.cpu_ms = 20};
    limit_hit("while true do end", "CPU budget of 20 ms exceeded", &lim);
}

MG_TEST(limit_pcall_cannot_swallow_timeout)
{
    limit_hit("while true do pcall(function() while true do end end) end",
              "CPU budget of 5 ms exceeded", NULL);
    limit_hit("while true do local ok, e = pcall(function() while true do end end) if not ok then "
              "gw.trace(tostring(e)) end end",
              "CPU budget", NULL);
    limit_hit(
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
        "CPU budget", NULL);
    limit_hit(
        "while true do xpcall(function() error('x') end, function() while true do end end) end",
        "CPU budget", NULL);
    limit_hit("local function f() return pcall(f) end\nwhile true do f() end", "CPU budget", NULL);
    limit_hit("while true do pcall(error) end", "CPU budget", NULL);
    limit_hit("local x <close> = setmetatable({}, {__close = function() while true do end "
              "end})\nwhile true do end",
              "CPU budget", NULL);
    limit_hit("while true do pcall(string.rep, 'x', 100) end", "CPU budget", NULL);
    limit_hit("for i = 1, math.huge do local ok = pcall(load, 'return ' .. i) end", "CPU budget",
              NULL);
}

MG_TEST(limit_memory)
{
    /* a generous CPU budget so that memory runs out first (the tests run under sanitizers) */
    mg_policy_limits_t lim = {.mem_bytes = 8 << 20, .cpu_ms = 2000};
    limit_hit("local t = {}\nwhile true do t[#t + 1] = {} end", "memory limit of 8192 KiB exceeded",
              &lim);
    limit_hit("local t = {}\nwhile true do t[#t + 1] = ('x'):rep(1000) .. #t end", "memory limit",
              &lim);
    limit_hit(
        "while true do pcall(function() local t = {} while true do t[#t + 1] = {} end end) end",
        "memory limit", &lim);
    limit_hit("local s = 'x'\nwhile true do s = s .. s end",
              "string longer than the limit of 262144 bytes", &lim);
    /* caught by the policy, still a failed decision: the state is not trusted after a refusal */
    limit_hit("local ok = pcall(function() return ('x'):rep(200000) .. ('y'):rep(100000) "
              "end)\nreturn 'lm/small'",
              "string longer than the limit", &lim);
    limit_hit("return table.concat({('x'):rep(200000), ('y'):rep(200000)})",
              "string longer than the limit", &lim);
    limit_hit("return string.rep('x', 300000)",
              "string.rep: result longer than the limit of 262144 bytes", &lim);
}

MG_TEST(limit_memory_default_32mib)
{
    mg_policy_limits_t lim = {.cpu_ms = 2000};
    limit_hit("local t = {}\nwhile true do t[#t + 1] = ('x'):rep(100000) .. #t end",
              "memory limit of 32768 KiB", &lim);
}

MG_TEST(limit_recursion)
{
    limit_hit("local function f(n) return 1 + f(n + 1) end\nreturn f(1)",
              "stack overflow|memory limit|CPU budget", NULL);
    mg_policy_limits_t lim = {.cpu_ms = 3000};
    limit_hit("local function f(n) return 1 + f(n + 1) end\nreturn f(1)",
              "stack overflow|memory limit", &lim);
    limit_hit("local function f() return f() + 1 end\nwhile true do pcall(f) end", "CPU budget",
              NULL);
    limit_hit("local function f(n) return tostring(setmetatable({}, {__tostring = function() "
              "return f() end})) end\n"
              "return f()",
              "stack overflow|C stack overflow|CPU budget", NULL);
}

MG_TEST(limit_error_objects)
{
    limit_hit("error(setmetatable({}, {__tostring = function() while true do end end}))",
              ".lua:2: error object is a table value", NULL);
    limit_hit("error(setmetatable({}, {__index = function() while true do end end}))",
              "error object is a table", NULL);
    limit_hit("error({message = 'structured'})", ".lua:2: structured", NULL);
    limit_hit("error()", "error object is a nil value", NULL);
    limit_hit("error('plain', 0)", "policy_error: plain", NULL);
    limit_hit(
        "return gw.util.filter({1}, function() error(setmetatable({}, {__tostring = error})) end)",
        "error object is a table", NULL);
}

MG_TEST(limit_c_functions_check_the_deadline)
{
    /* a pathological pattern on a long subject: seconds in the stock matcher */
    limit_hit("local s = string.rep('a', 100000)\nreturn s:find('.-.-.-.-b')", "CPU budget", NULL);
    limit_hit("local s = string.rep('a=', 50000)\nreturn s:match('^(.-)%s*=%s*(.-)x$')",
              "CPU budget", NULL);
    limit_hit("local s = string.rep('a', 100000)\nfor w in s:gmatch('.-.-b') do end", "CPU budget",
              NULL);
    limit_hit("local s = string.rep('a', 100000)\nreturn s:gsub('.-.-b', 'x')", "CPU budget", NULL);
    /* plain find of a long needle: linear with memmem */
    limit_hit("local s = string.rep('a', 250000)\nlocal n = string.rep('a', 120000) .. 'b'\n"
              "while true do s:find(n, 1, true) end",
              "CPU budget", NULL);
    /* long string comparisons: each instruction is O(length) */
    limit_hit("local a = ('x'):rep(250000) .. 'a'\nlocal b = ('x'):rep(250000) .. 'b'\nwhile true "
              "do local c = a < b end",
              "CPU budget", NULL);
    limit_hit("local t = {}\nfor i = 1, 200000 do t[i] = 0 end\nwhile true do table.insert(t, 1, "
              "0) table.remove(t, 1) end",
              "CPU budget", NULL);
    limit_hit("local t = {}\nfor i = 1, 10000 do t[i] = -i end\nwhile true do table.sort(t) end",
              "CPU budget", NULL);
    limit_hit("local t = {}\nfor i = 1, 10001 do t[i] = -i end\ntable.sort(t)",
              "table.sort: too many elements", NULL);
    limit_hit("local t = {}\nfor i = 1, 10000 do t[i] = i end\nwhile true do local x = "
              "{table.unpack(t)} end",
              "CPU budget", NULL);
}

/* Lua lines making t a 1990-table __index chain over the table `base` (each access to t from C
 * follows the whole chain). */
#define CHAIN(base)                                                                                \
    "local t = " base "\nfor i = 1, 1990 do t = setmetatable({}, {__index = t}) end\n"

MG_TEST(limit_c_loops_sized_by_the_policy)
{
    /* ltablib's loops over a length the policy claims run in C: no instruction for the hook, no
     * allocation for the allocator. They hung the thread for good. */
    limit_hit("local t = setmetatable({}, {__len = function() return math.maxinteger - 1 end})\n"
              "table.insert(t, 1, 'x')",
              ".lua:3: CPU budget of 5 ms exceeded", NULL);
    limit_hit("local t = setmetatable({}, {__len = function() return math.maxinteger end})\n"
              "table.remove(t, 1)",
              ".lua:3: CPU budget of 5 ms exceeded", NULL);
    limit_hit("local t = setmetatable({}, {__len = function() return 1e8 end})\n"
              "table.insert(t, 1, 'x')",
              "CPU budget", NULL);
    /* each step through an __index chain: seconds for 100000 steps */
    limit_hit(CHAIN("{}") "return table.move(t, 1, 100000, 1, {})", "CPU budget", NULL);
    limit_hit(CHAIN("{}") "return table.move(t, 1, 100000, 2)", "CPU budget", NULL);
    limit_hit("local b = {} for i = 1, 20000 do b[i] = '' end\n" /* */
              CHAIN("b") "for i = 1, 100 do table.concat(t, '', 1, 20000) end",
              "CPU budget", NULL);
    limit_hit(CHAIN("{}") "for i = 1, 100 do table.unpack(t, 1, 10000) end", "CPU budget", NULL);
    limit_hit(CHAIN("{}") "local u = setmetatable({}, {__index = t, __len = function() return "
                          "1e6 end})\ntable.remove(u, 1)",
              "CPU budget", NULL);
    /* the stock sort compares in C, and a comparison of two long strings is O(length) */
    limit_hit("local a, b = ('x'):rep(200000) .. 'a', ('x'):rep(200000) .. 'b'\nlocal t = {}\n"
              "for i = 1, 10000 do t[i] = i % 2 == 0 and a or b end\ntable.sort(t)",
              "CPU budget", NULL);
    /* one value per element: at most 10000 per call (a million fit on the stack) */
    limit_hit("return table.unpack({}, 1, 10001)",
              ".lua:2: table.unpack: more than 10000 results for a policy", NULL);
    limit_hit("local t = setmetatable({}, {__len = function() return 900000 end})\n"
              "return table.unpack(t)",
              "table.unpack: more than 10000 results", NULL);
    limit_hit("return string.byte(('x'):rep(20000), 1, -1)",
              "string.byte: more than 10000 results for a policy", NULL);
    limit_hit("return utf8.codepoint(('x'):rep(20000), 1, -1)",
              "utf8.codepoint: more than 10000 bytes for a policy", NULL);
    limit_hit("return string.unpack(('B'):rep(20000), ('x'):rep(20000))",
              "string.unpack: more than 10000 results for a policy", NULL);
    /* the top level (the 50 ms load budget) and the self-check are held to the same */
    char err[512];
    int64_t t0 = mg_now_ms();
    mg_policy_t *p = load_lim("local t = setmetatable({}, {__len = function() return 3e8 end})\n"
                              "table.insert(t, 1, 'x')\nfunction route(req) return 'lm/small' end",
                              NULL, err, sizeof err);
    MG_CHECK(p == NULL);
    CHECK_CONTAINS(err, ".lua:2: CPU budget of 50 ms exceeded");
    MG_CHECK(mg_now_ms() - t0 < 2000);
    mg_policy_free(p);
    /* load's reader: the lexer skips a 256 KiB comment piece without an instruction, and the
     * hook saw the reader's two instructions per piece (~60 ms of CPU between checks) */
    mg_policy_limits_t lim = {.cpu_ms = 1};
    p = load_lim("local piece = '--' .. ('x'):rep(250000) .. '\\n'\n"
                 "function route(req)\n"
                 "  if req.model == 'x' then load(function() return piece end) end\n"
                 "  return 'lm/small'\n"
                 "end",
                 &lim, err, sizeof err);
    MG_CHECK(p != NULL);
    if (!p) return;
    mg_plan_t plan;
    int64_t c0 = cpu_ms();
    MG_CHECK_INT(route(p, "x", &plan), -1);
    int64_t cdt = cpu_ms() - c0;
    CHECK_CONTAINS(plan.error, ".lua:3: CPU budget of 1 ms exceeded");
    if (cdt >= 25) {
        fprintf(stderr, "  load's reader: %lld ms of CPU for a 1 ms budget\n", (long long)cdt);
        mg_test_failures++;
    }
    mg_policy_free(p);
}

/* Stock semantics of the functions the sandbox replaces: results and argument errors. */
MG_TEST(sandbox_table_functions_behave_as_stock)
{
    probe("local t = {1, 2, 3} table.insert(t, 2, 9) table.insert(t, 7)\n"
          "return table.concat(t, ',')",
          "true|1,9,2,3,7");
    probe("local t = {1, 2, 3} return table.remove(t, 1) .. table.concat(t, ',')", "true|12,3");
    probe("local t = {1, 2, 3} return table.remove(t) .. #t", "true|32");
    probe("local t = {} return tostring(table.remove(t)) .. #t", "true|nil0");
    probe("local t = {1, 2} return tostring(table.remove(t, 3)) .. #t", "true|nil2");
    probe("table.insert({}, 3, 'x')", "bad argument #2 to 'insert' (position out of bounds)");
    probe("table.insert({}, 1, 2, 3)", "wrong number of arguments to 'insert'");
    probe("table.insert(nil, 1)", "bad argument #1 to 'insert' (table expected, got nil)");
    probe("table.remove({1}, 5)", "bad argument #1 to 'remove' (position out of bounds)");
    probe("table.insert('abc', 'x')", "bad argument #1 to 'insert' (table expected, got string)");
    probe("return table.concat({1, 'a', 2}, '-', 2, 3)", "true|a-2");
    probe("return table.concat({}, ',') .. '|' .. table.concat({'x'}, ',', 1, 1)", "true||x");
    probe("return table.concat({1, {}, 3})",
          "invalid value (table) at index 2 in table for 'concat'");
    probe("return select('#', table.unpack({1, nil, 3}, 1, 3))", "true|3");
    probe("return select('#', table.unpack({}, 1, 10000))", "true|10000");
    probe("return select('#', table.unpack({}, 5, 1))", "true|0");
    probe("return table.unpack({}, math.mininteger, math.maxinteger)",
          "table.unpack: more than 10000 results");
    probe("return table.concat(table.move({1, 2, 3}, 1, 3, 2), ',')", "true|1,1,2,3");
    probe("return table.concat(table.move({1, 2, 3}, 2, 3, 1), ',')", "true|2,3,3");
    probe("return table.concat(table.move({1, 2}, 1, 2, 3, {'a', 'b'}), ',')", "true|a,b,1,2");
    probe("table.move({}, -1, math.maxinteger, 1)",
          "bad argument #3 to 'move' (too many elements to move)");
    probe("table.move({}, 1, math.maxinteger, 2)",
          "bad argument #4 to 'move' (destination wrap around)");
    probe("local t = {5, 3, 1, 4, 2} table.sort(t) local a = table.concat(t)\n"
          "table.sort(t, function(x, y) return x > y end) return a .. table.concat(t)",
          "true|1234554321");
    probe("table.sort({3, 'x', 1})", "false|attempt to compare string with number");
    probe("table.sort({3, 2, 1}, 5)", "bad argument #2 to 'sort' (function expected, got number)");
    probe("local p = setmetatable({}, {__index = {3, 1, 2}, __newindex = function() end,\n"
          "  __len = function() return 3 end}) return table.concat(p, ',') .. #p",
          "true|3,1,23");
    probe("return #string.char(string.byte(('x'):rep(10000), 1, -1))", "true|10000");
    probe("return string.byte('abc', -2) .. select('#', string.byte('abc', 10))", "true|980");
    probe("return select('#', string.byte('abc', 1, -1))", "true|3");
    probe("return select('#', utf8.codepoint('h\\u{e9}llo', 1, -1))", "true|5");
    probe("return utf8.codepoint('abc', 0)", "bad argument #2 to 'codepoint' (out of bounds)");
    probe("return select('#', string.unpack('BBB', 'abc'))", "true|4");
}

/* A library call that ran through the deadline without a check (C code never returns to the
 * hook) fails the call when it returns: it cannot return a plan. */
MG_TEST(limit_a_slow_c_call_fails_when_it_returns)
{
    /* os.date with 60000 conversions: ~10 ms of C, output under 64 KiB (no allocation large
     * enough to look at the clock) */
    mg_policy_limits_t lim = {.cpu_ms = 1};
    char err[512];
    mg_policy_t *p = load_lim("local fmt = ('%n'):rep(60000)\n"
                              "function route(req)\n"
                              "  if req.model == 'slow' then os.date(fmt) end\n"
                              "  return 'lm/small'\n"
                              "end",
                              &lim, err, sizeof err);
    MG_CHECK(p != NULL);
    if (!p) return;
    mg_plan_t plan;
    MG_CHECK_INT(route(p, "slow", &plan), -1);
    CHECK_CONTAINS(plan.error, ".lua:3: CPU budget of 1 ms exceeded");
    MG_CHECK_INT(route(p, "fast", &plan), 0);
    mg_policy_free(p);
}

/* C functions that wait (sleep_ms) or compute (spin_ms) for n ms without a deadline check. */
static int sleep_ms(lua_State *L)
{
    struct timespec ts = {0, (long)luaL_checkinteger(L, 1) * 1000000};
    nanosleep(&ts, NULL);
    return 0;
}

static int spin_ms(lua_State *L)
{
    int64_t until = cpu_ms() + luaL_checkinteger(L, 1);
    while (cpu_ms() < until) {
    }
    return 0;
}

/* The slow call is judged on the thread's CPU time, read at the first library call: a call that
 * merely waited (a preempted thread) past the deadline is not failed, one that computed is. */
MG_TEST(limit_a_slow_call_is_cpu_not_waiting)
{
    char err[512];
    mg_sandbox_t *sb = mg_sandbox_new(NULL, err, sizeof err);
    MG_CHECK(sb != NULL);
    if (!sb) return;
    lua_State *L = sb->L;
    mg_sandbox_push_globals(L);
    lua_pushcfunction(L, sleep_ms);
    lua_setfield(L, -2, "sleep_ms");
    lua_pushcfunction(L, spin_ms);
    lua_setfield(L, -2, "spin_ms");
    lua_pop(L, 1);
    static const struct {
        const char *src;
        int rc;
    } cases[] = {
        {"string.upper('x') sleep_ms(30) return 1", 0},
        {"string.upper('x') spin_ms(30) return 1", -1},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        const char *src = cases[i].src;
        MG_CHECK_INT(mg_sandbox_load(sb, src, strlen(src), "=t", 0, err, sizeof err), 0);
        mg_sandbox_arm(sb, 5);
        int rc = mg_sandbox_pcall(sb, 0, 1, err, sizeof err);
        mg_sandbox_disarm(sb);
        MG_CHECK_INT(rc, cases[i].rc);
        if (rc)
            CHECK_CONTAINS(err, "CPU budget of 5 ms exceeded");
        else
            lua_pop(L, 1);
    }
    mg_sandbox_free(sb);
}

MG_TEST(limit_garbage_results)
{
    limit_hit("return 42",
              ".lua:4: route returned a number (expected a list of candidates or gw.reject(...))",
              NULL);
    limit_hit("return nil", "route returned nothing", NULL);
    limit_hit("return {1, 2}", "route returned candidate #1, a number", NULL);
    limit_hit("return {'lm/small', 'nope/x'}",
              "route returned candidate #2 'nope/x', which is not a model", NULL);
    limit_hit("return {{model = 'lm/small', bogus = 1}}", "unknown option 'bogus'", NULL);
    limit_hit("return {{model = 'lm/small', total_ms = -1}}",
              "total_ms = -1 (expected an integer >= 0)", NULL);
    limit_hit("return {{model = 'lm/small', max_output_tokens = 0}}", "max_output_tokens = 0",
              NULL);
    limit_hit("return {{model = 'lm/small', compaction = 'yes'}}", "compaction = a string", NULL);
    limit_hit("return {{model = 42}}", "whose model is a number", NULL);
    limit_hit("return {{model = 'nope/x'}}", "'nope/x', which is not a model", NULL);
    limit_hit("return {{}}", "a table with neither 'model' nor 'ref'", NULL);
    /* a table that is neither a list nor a candidate is not the empty list (503 no_candidates) */
    limit_hit("return {mdoel = 'lm/small', total_ms = 60000}",
              ".lua:4: route returned a table with no 'model' and unknown key 'mdoel' (expected a "
              "list of candidates, {model = ref, options...} or gw.reject(...))",
              NULL);
    limit_hit("return {['lm/small'] = true}", "no 'model' and unknown key 'lm/small'", NULL);
    limit_hit("return {total_ms = 5}", "route returned options with no 'model'", NULL);
    limit_hit("return {[2] = 'lm/small'}", "route returned a list with a hole at #1", NULL);
    limit_hit("return gw.catalog.providers", "no 'model' and unknown keys '", NULL);
    limit_hit("return {'lm/small', nil, 'eu/big'}", "",
              NULL); /* # may see 1 or 3: both fine, no crash */
    limit_hit("local r = gw.reject(403, 'x', 'y')\nreturn setmetatable({}, {__index = function() "
              "while true do end end})",
              "", NULL);
    limit_hit("return gw.reject(200, 'ok', 'no')", "gw.reject: status must be 400..599", NULL);
    limit_hit("return gw.reject(400, 'has space', 'no')", "gw.reject: code must be", NULL);
}

MG_TEST(limit_state_is_rebuilt_after_limits)
{
    mg_policy_limits_t lim = {.mem_bytes = 4 << 20, .cpu_ms = 1000};
    char err[256];
    mg_policy_t *p =
        load_lim("local n = 0\nfunction route(req)\n  n = n + 1\n  gw.trace('call %d', n)\n"
                 "  if req.model == 'loop' then while true do end end\n"
                 "  if req.model == 'mem' then local t = {} while true do t[#t+1] = {} end end\n"
                 "  if req.model == 'err' then error('plain error') end\n"
                 "  return 'lm/small'\nend",
                 &lim, err, sizeof err);
    MG_CHECK(p != NULL);
    if (!p) return;
    mg_plan_t plan;
    MG_CHECK_INT(route(p, "ok", &plan), 0);
    MG_CHECK_STR(plan.trace, "call 2"); /* the load's self-check was call 1, on the same state */
    MG_CHECK_INT(route(p, "ok", &plan), 0);
    MG_CHECK_STR(plan.trace, "call 3");
    MG_CHECK_INT(route(p, "err", &plan), -1);
    MG_CHECK_INT(route(p, "ok", &plan), 0);
    MG_CHECK_STR(plan.trace, "call 5"); /* an ordinary error keeps the state */
    mg_policy_stats_t before = mg_policy_stats(p);
    MG_CHECK_INT(route(p, "loop", &plan), -1);
    MG_CHECK_INT(route(p, "ok", &plan), 0);
    MG_CHECK_STR(plan.trace, "call 1"); /* a fresh state */
    MG_CHECK_INT(route(p, "mem", &plan), -1);
    CHECK_CONTAINS(plan.error, "memory limit");
    MG_CHECK_INT(route(p, "ok", &plan), 0);
    MG_CHECK_STR(plan.trace, "call 1");
    mg_policy_stats_t after = mg_policy_stats(p);
    MG_CHECK_INT(after.states_created - before.states_created, 2);
    MG_CHECK_INT(after.timeouts - before.timeouts, 1);
    MG_CHECK_INT(after.memory_errors - before.memory_errors, 1);
    MG_CHECK(after.errors >= 3);
    mg_policy_free(p);
}

/* ---- invariants ----------------------------------------------------------------------------- */

MG_TEST(invariant_duplicates_and_aliases)
{
    mg_policy_t *p = load("function route(req) return {'lm/small', 'cheap', 'lm/small', 'us/big', "
                          "gw.catalog.models['eu/big']} end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "default", &plan) == 0);
    MG_CHECK_STR(refs(&plan), "lm/small us/big eu/big");
    CHECK_CONTAINS(plan.trace, "dropped duplicate lm/small; dropped duplicate us/big");
    mg_policy_free(p);
}

MG_TEST(invariant_region_restrictions)
{
    mg_policy_t *p =
        load("function route(req) return {'us/big', 'eu/big', 'nr/other', 'lm/small'} end");
    MG_CHECK(p != NULL);
    if (!p) return;
    mg_plan_t plan;
    const char *eu[] = {"eu"};
    mg_route_input_t in = input("default");
    in.allowed_regions = eu;
    in.n_allowed_regions = 1;
    MG_CHECK_INT(mg_policy_route(p, &in, NULL, &plan), 0);
    MG_CHECK_STR(refs(&plan), "eu/big lm/small");
    CHECK_CONTAINS(plan.trace, "region restriction dropped us/big (region us)");
    CHECK_CONTAINS(plan.trace, "region restriction dropped nr/other (no region)");

    const char *none[] = {"ap"};
    in.allowed_regions = none;
    in.gateway_regions = eu;
    in.n_gateway_regions = 1;
    MG_CHECK_INT(mg_policy_route(p, &in, NULL, &plan), 0);
    MG_CHECK_STR(refs(&plan), "lm/small"); /* local is always allowed */
    mg_policy_free(p);

    p = load("function route(req) return {'us/big', 'nr/other'} end");
    in = input("default");
    in.gateway_regions = eu;
    in.n_gateway_regions = 1;
    MG_CHECK(p && mg_policy_route(p, &in, NULL, &plan) == 0);
    MG_CHECK(plan.rejected);
    MG_CHECK_INT(plan.status, 403);
    MG_CHECK_STR(plan.code, "region_not_allowed");
    MG_CHECK_STR(plan.message,
                 "no candidate for this request may receive its data: us/big (region us), nr/other "
                 "(no region) are outside the allowed regions [eu] of the gateway; local providers "
                 "are always allowed");
    MG_CHECK_INT(plan.n_cands, 0);
    /* the static chain obeys the same rule */
    mg_policy_static_plan(cfg, &in, &plan);
    MG_CHECK_STR(refs(&plan), "lm/small eu/big");
    mg_policy_free(p);

    MG_CHECK(mg_region_allows("eu", "eu-west"));
    MG_CHECK(mg_region_allows("EU", "eu"));
    MG_CHECK(mg_region_allows("*", "anything"));
    MG_CHECK(!mg_region_allows("eu", "europe"));
    MG_CHECK(!mg_region_allows("eu-west", "eu"));
    MG_CHECK(!mg_region_allows("eu", NULL));
}

MG_TEST(invariant_empty_and_too_many)
{
    mg_policy_t *p = load(
        "function route(req) if req.model == 'empty' then return {} end "
        "if req.model == 'packed' then return table.pack() end return 'lm/small' end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "empty", &plan) == 0);
    MG_CHECK(plan.rejected);
    MG_CHECK_INT(plan.status, 503);
    MG_CHECK_STR(plan.code, "no_candidates");
    MG_CHECK(route(p, "packed", &plan) == 0); /* {n = 0}: an empty list too */
    MG_CHECK(plan.rejected);
    MG_CHECK_INT(plan.status, 503);
    mg_policy_free(p);
    /* a misspelt option table fails the load's self-check instead of serving 503s */
    char lerr[512];
    p = load_lim("function route(req) return {mdoel = 'lm/small'} end", NULL, lerr, sizeof lerr);
    MG_CHECK(p == NULL);
    CHECK_CONTAINS(lerr, "unknown key 'mdoel'");
    mg_policy_free(p);

    mg_buf_t text = {0};
    mg_buf_puts(&text,
                "{ models: { mode: 'replace', providers: { lm: { baseUrl: 'http://127.0.0.1:1/v1', "
                "api: 'openai-completions', models: [");
    for (int i = 0; i < 20; i++)
        mg_buf_printf(&text, "{ id: 'm%d' },", i);
    mg_buf_puts(&text, "] } } } }");
    char err[256];
    mg_config_t *c =
        mg_config_load_string(text.data, text.len, "many.json5", tmpdir, err, sizeof err);
    mg_buf_free(&text);
    MG_CHECK(c != NULL);
    char *path = write_file(
        "function route(req) local out = {} for i, m in ipairs(gw.catalog.model_list) do "
        "out[#out + 1] = m end return out end");
    p = mg_policy_load_file(c, path, NULL, err, sizeof err);
    free(path);
    MG_CHECK(p != NULL);
    mg_route_input_t in = input("default");
    in.cfg = c;
    MG_CHECK(p && mg_policy_route(p, &in, NULL, &plan) == 0);
    MG_CHECK_INT(plan.n_cands, 16);
    MG_CHECK_STR(plan.cands[15].model->ref, "lm/m15");
    CHECK_CONTAINS(plan.trace, "plan cut to 16 candidates (4 more ignored)");
    mg_policy_free(p);
    mg_config_free(c);
}

MG_TEST(options_and_rejections)
{
    mg_policy_t *p = load(
        "function route(req)\n"
        "  if req.model == 'no' then return gw.reject(429, 'quota_exceeded', 'over quota') end\n"
        "  return {{model = 'eu/big', timeout_ms = 1000, connect_ms = 200, first_token_ms = 3000,\n"
        "           idle_ms = 400, max_output_tokens = 100, compaction = false, strip_reasoning = "
        "true},\n"
        "          {model = gw.catalog.models['us/big'], total_ms = 5}, 'lm/small'}\n"
        "end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "default", &plan) == 0);
    MG_CHECK_INT(plan.n_cands, 3);
    const mg_candidate_t *c = &plan.cands[0];
    MG_CHECK_STR(c->model->ref, "eu/big");
    MG_CHECK_INT(c->total_ms, 1000);
    MG_CHECK_INT(c->connect_ms, 200);
    MG_CHECK_INT(c->first_token_ms, 3000);
    MG_CHECK_INT(c->idle_ms, 400);
    MG_CHECK_INT(c->max_output_tokens, 100);
    MG_CHECK_INT(c->compaction, 0);
    MG_CHECK_INT(c->strip_reasoning, 1);
    MG_CHECK_STR(plan.cands[1].model->ref, "us/big");
    MG_CHECK_INT(plan.cands[1].total_ms, 5);
    MG_CHECK_INT(plan.cands[2].max_output_tokens, -1);
    MG_CHECK_INT(plan.cands[2].compaction, -1);
    MG_CHECK_INT(plan.cands[2].total_ms, 0);
    MG_CHECK(p && route(p, "no", &plan) == 0);
    MG_CHECK(plan.rejected);
    MG_CHECK_INT(plan.status, 429);
    MG_CHECK_STR(plan.code, "quota_exceeded");
    MG_CHECK_STR(plan.message, "over quota");
    mg_policy_free(p);
}

MG_TEST(rejections_can_be_raised)
{
    /* error(gw.reject(...)) deep inside helpers is the rejection; other error objects are not */
    mg_policy_t *p = load(
        "local function check(req)\n"
        "  if req.model == 'deep' then error(gw.reject(403, 'forbidden', 'not you')) end\n"
        "  if req.model == 'table' then error({status = 403, code = 'x', message = 'forged'}) end\n"
        "  if req.model == 'caught' then pcall(error, gw.reject(400, 'a', 'b')) end\n"
        "end\n"
        "function route(req) check(req) return 'lm/small' end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "deep", &plan) == 0);
    MG_CHECK(plan.rejected);
    MG_CHECK_INT(plan.status, 403);
    MG_CHECK_STR(plan.message, "not you");
    MG_CHECK(p && route(p, "table", &plan) == -1);
    CHECK_CONTAINS(plan.error, ".lua:3: forged");
    MG_CHECK(p && route(p, "caught", &plan) == 0);
    MG_CHECK_STR(refs(&plan), "lm/small");
    mg_policy_free(p);
}

/* ---- the gw API --------------------------------------------------------------------------- */

MG_TEST(api_request_fields)
{
    mg_policy_t *p =
        load("function route(req)\n"
             "  gw.trace('%s %s %d %s %s %s %s', req.model, req.endpoint, req.prompt_tokens,\n"
             "           tostring(req.max_output_tokens), tostring(req.has_tools), "
             "tostring(req.has_images),\n"
             "           tostring(req.stream))\n"
             "  gw.trace('%s %s %s %s %s %d', tostring(req.headers['X-Data-Region']), "
             "tostring(req.headers.missing),\n"
             "           tostring(req.metadata.team), tostring(req.key_id), "
             "tostring(req.data_region), #req.headers)\n"
             "  local names = {}\n"
             "  for k, v in pairs(req.headers) do names[#names + 1] = k .. '=' .. v end\n"
             "  gw.trace(table.concat(names, ','))\n"
             "  gw.trace(tostring(req.headers['X-Goog-Api-Key']) .. tostring(req.headers.cookie))\n"
             "  local fields = {}\n"
             "  for k in pairs(req) do fields[#fields + 1] = k end\n"
             "  gw.trace(table.concat(fields, ','))\n"
             "  gw.trace(table.concat(req.allowed_regions or {}, '+'))\n"
             "  return 'lm/small'\n"
             "end");
    MG_CHECK(p != NULL);
    if (!p) return;
    /* credentials are never shown, whoever built the list (the server leaves most out) */
    mg_kv_t headers[] = {{"authorization", "Bearer s1"},
                         {"x-data-region", "eu"},
                         {"x-goog-api-key", "s2"},
                         {"API-Key", "s3"},
                         {"user-agent", "t"},
                         {"cookie", "s4"},
                         {"x-api-key", "s5"},
                         {"proxy-authorization", "s6"},
                         {"ocp-apim-subscription-key", "s7"},
                         {"x-amz-security-token", "s8"},
                         {"X-Data-Region", "us"}}; /* a repeat: its first copy is the one seen */
    mg_kv_t meta[] = {{"team", "search"}};
    const char *regions[] = {"eu", "us"};
    mg_route_input_t in = {.model = "eu/big",
                           .endpoint = "messages",
                           .prompt_tokens = 1234,
                           .max_output_tokens = 99,
                           .has_tools = true,
                           .stream = true,
                           .headers = headers,
                           .n_headers = MG_ARRAY_LEN(headers),
                           .metadata = meta,
                           .n_metadata = 1,
                           .key_id = "k1",
                           .data_region = "eu",
                           .allowed_regions = regions,
                           .n_allowed_regions = 2};
    mg_plan_t plan;
    MG_CHECK_INT(mg_policy_route(p, &in, NULL, &plan), 0);
    MG_CHECK_STR(
        plan.trace,
        "eu/big messages 1234 99 true false true; eu nil search k1 eu 2; "
        "x-data-region=eu,user-agent=t; nilnil; model,endpoint,prompt_tokens,max_output_tokens,"
        "has_tools,has_images,stream,headers,metadata,key_id,data_region,allowed_regions; eu+us");
    in = input("default");
    MG_CHECK_INT(mg_policy_route(p, &in, NULL, &plan), 0);
    CHECK_CONTAINS(plan.trace, "default chat 100 nil false false false; nil nil nil nil nil 0");
    mg_policy_free(p);
}

MG_TEST(api_catalog)
{
    probe("local m = gw.catalog.models['eu/big'] return m.ref .. m.id .. m.provider.id .. "
          "m.context_window .. "
          "m.max_tokens .. tostring(m.input.image) .. tostring(m.input.text) .. m.cost.input .. "
          "m.cost.output .. "
          "tostring(m.is_local) .. m.region .. m.provider.host .. m.provider.api",
          "true|eu/bigbigeu2000008192truetrue3.015.0falseeu-westeu.example.comopenai-completions");
    probe("local p = gw.catalog.providers.lm return tostring(p.is_local) .. tostring(p['local']) "
          ".. p.tags[1] .. "
          "#p.models .. tostring(p.region)",
          "true|truetruelocal1nil");
    probe("local p = gw.catalog.providers.eu return table.concat(p.tags, ',') .. "
          "tostring(p.tag_set.gdpr)",
          "true|hosted,gdprtrue");
    /* a model with its own api (OpenClaw's per-model api) says it; its provider keeps its own */
    probe("local m = gw.catalog.models['nr/other'] return gw.catalog.models['eu/big'].api .. ' ' .. m.api "
          ".. ' ' .. m.provider.api .. ' ' .. m.provider.id .. ' ' .. #gw.catalog.provider_list",
          "true|openai-completions anthropic-messages openai-completions nr 4");
    probe("return gw.catalog.aliases.cheap .. gw.catalog.alias_list[1]", "true|us/bigcheap");
    probe("return table.concat(gw.util.default_chain(), ',')", "true|lm/small,eu/big,us/big");
    probe(
        "return gw.resolve('cheap').ref .. gw.resolve('CHEAP').ref .. tostring(gw.resolve('nope'))",
        "true|us/bigus/bignil");
    probe("return gw.resolve(gw.catalog.models['lm/small']) == gw.catalog.models['lm/small']",
          "true|true");
    probe("return tostring(gw.resolve('lm/small\\0x')) .. gw.resolve('small').ref",
          "true|nillm/small");
    probe("return gw.API_VERSION .. gw.MAX_CANDIDATES .. gw.ERROR_CLASSES[1] .. gw.phase()",
          "true|116okroute");
    probe("return gw.region_allows('eu', 'eu-west') and not gw.region_allows('eu', 'us')",
          "true|true");
    probe("return math.type(gw.now())", "true|integer");
}

MG_TEST(api_util)
{
    probe("return table.concat(gw.util.chain_for('eu/big'), ',')", "true|eu/big,us/big");
    probe("return table.concat(gw.util.chain_for('nr/other'), ',')", "true|nr/other");
    probe("return tostring(gw.util.chain_for('zzz'))", "true|nil");
    /* lm/small: window 8192 - maxTokens 2048 - margin 512 = 5632, compaction's own budget */
    probe("return gw.prompt_budget('lm/small')", "true|5632");
    probe("return gw.prompt_budget('lm/small', 100)", "true|7580");
    probe("return tostring(gw.util.fits('lm/small', {prompt_tokens = 5632, has_images = false}))",
          "true|true");
    probe("return tostring(gw.util.fits('lm/small', {prompt_tokens = 6000, has_images = false}))",
          "true|false");
    /* 6000 + 2048 fits the window, but the gateway would compact it (over 5632) */
    probe("return tostring(gw.util.fits('lm/small', {prompt_tokens = 6000}, 2048))", "true|false");
    probe("return tostring(gw.util.fits('lm/small', {prompt_tokens = 7000, max_output_tokens = "
          "100}))",
          "true|true");
    probe("return tostring(gw.util.fits('us/big', {prompt_tokens = 10, has_images = true}))",
          "true|false");
    probe("return tostring(gw.util.fits('eu/big', {prompt_tokens = 10, has_images = true}))",
          "true|true");
    probe("return gw.util.cost('eu/big', {prompt_tokens = 1000000, max_output_tokens = 1000000})",
          "true|18.0");
    probe("return table.concat(gw.util.sort_by(gw.util.default_chain(), "
          "gw.util.by_cost({prompt_tokens = 1000})), ',')",
          "true|lm/small,us/big,eu/big");
    probe("return table.concat(gw.util.sort_by({3, 1, 2}, function(x) if x == 2 then return nil "
          "end return x end), ',')",
          "true|1,3,2");
    probe("return table.concat(gw.util.dedupe({'cheap', 'us/big', 'lm/small'}), ',')",
          "true|cheap,lm/small");
    probe(
        "local a, b = gw.util.partition(gw.util.default_chain(), gw.util.is_local) return #a .. #b",
        "true|12");
    probe("return tostring(gw.util.region_ok('eu/big', 'eu')) .. "
          "tostring(gw.util.region_ok('us/big', 'eu')) .. "
          "tostring(gw.util.region_ok('lm/small', 'eu')) .. tostring(gw.util.region_ok('us/big', "
          "nil))",
          "true|truefalsetruetrue");
    probe("return tostring(gw.util.contains({'cheap'}, 'us/big'))", "true|true");
    probe("return table.concat(gw.util.concat({'a'}, {'b', 'c'}), ',')", "true|a,b,c");
    probe("return gw.util.unknown_model('x').code", "true|model_not_found");
}

/* A fake live view: eu/big unhealthy, provider us cooling down for a minute, lm latency known. */
static bool fake_model(void *ud, const mg_model_t *m, mg_live_state_t *out)
{
    (void)ud;
    if (!strcmp(m->ref, "eu/big")) {
        out->healthy = false;
        out->error_rate = 0.5;
        out->last_error_class = "server_error";
        return true;
    }
    if (!strcmp(m->ref, "lm/small")) {
        out->latency_ms_p50 = 120;
        out->ttft_ms_p50 = 30;
        out->in_flight = 3;
        out->learned_context_window = 4096; /* its server said so (8192 configured) */
        return true;
    }
    return false;
}

static bool fake_provider(void *ud, const mg_provider_t *p, mg_live_state_t *out)
{
    (void)ud;
    if (!strcmp(p->id, "us")) {
        out->cooldown_until_ms = mg_wall_ms() + 60000;
        return true;
    }
    return false;
}

MG_TEST(api_live_state)
{
    mg_policy_t *p = load(
        "function route(req)\n"
        "  local h = gw.health('eu/big')\n"
        "  local l = gw.health('lm/small')\n"
        "  local u = gw.provider_health('us')\n"
        "  local n = gw.health('nr/other')\n"
        "  gw.trace('%s %s %s %s', tostring(h.known), tostring(h.healthy), h.error_rate, "
        "h.last_error)\n"
        "  gw.trace('%s %s %s %s', l.latency_ms, l.ttft_ms, l.in_flight, "
        "tostring(l.cooling_down))\n"
        "  gw.trace('%s %s', tostring(u.cooling_down), tostring(u.cooldown_ms > 50000))\n"
        "  gw.trace('%s %s %s', tostring(n.known), tostring(n.healthy), tostring(n.latency_ms))\n"
        "  gw.trace('%s %s %s %s', tostring(gw.healthy('eu/big')), "
        "tostring(gw.healthy('us/big')),\n"
        "           tostring(gw.healthy('lm/small')), tostring(gw.healthy('nr/other')))\n"
        "  gw.trace('%s %s %s', tostring(l.learned_context_window), tostring(h.learned_context_window),\n"
        "           gw.prompt_budget('lm/small'))\n"
        "  return gw.util.filter(gw.util.default_chain(), gw.healthy)\n"
        "end");
    MG_CHECK(p != NULL);
    if (!p) return;
    mg_live_view_t live = {NULL, fake_model, fake_provider};
    mg_route_input_t in = input("default");
    mg_plan_t plan;
    MG_CHECK_INT(mg_policy_route(p, &in, &live, &plan), 0);
    MG_CHECK_STR(plan.trace,
                 "true false 0.5 server_error; 120.0 30.0 3 false; true true; false true nil; "
                 "false false true true; 4096 nil 1536");
    /* 1536: the learned 4096 less half of it for the answer (maxTokens 2048) less margin 512 */
    MG_CHECK_STR(refs(&plan), "lm/small");
    probe("return gw.health('nope')", "gw.health: unknown model 'nope'");
    mg_policy_free(p);
}

static char last_log[1024];
static mg_log_level_t last_level;
static int n_logs;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture_log(mg_log_level_t level, const char *policy, const char *msg)
{
    pthread_mutex_lock(&log_lock);
    snprintf(last_log, sizeof last_log, "%s: %s", policy, msg);
    last_level = level;
    n_logs++;
    pthread_mutex_unlock(&log_lock);
}

MG_TEST(api_log_print_warn)
{
    mg_policy_set_log(capture_log);
    mg_policy_t *p = load("gw.log('info', 'loaded %d', 42)\n"
                          "function route(req)\n"
                          "  if req.model == 'p' then print('a', 1, nil) end\n"
                          "  if req.model == 'w' then warn('careful ', 'now') end\n"
                          "  if req.model == 'l' then gw.log('error', 'bad %s', 'thing') end\n"
                          "  if req.model == 'x' then gw.log('loud', 'x') end\n"
                          "  return 'lm/small'\n"
                          "end");
    MG_CHECK(p != NULL);
    if (!p) return;
    CHECK_CONTAINS(last_log, ".lua: loaded 42");
    mg_plan_t plan;
    route(p, "p", &plan);
    CHECK_CONTAINS(last_log, ": a\t1\tnil");
    MG_CHECK_INT(last_level, MG_LOG_INFO);
    route(p, "w", &plan);
    CHECK_CONTAINS(last_log, ": careful now");
    MG_CHECK_INT(last_level, MG_LOG_WARN);
    route(p, "l", &plan);
    CHECK_CONTAINS(last_log, ": bad thing");
    MG_CHECK_INT(last_level, MG_LOG_ERROR);
    MG_CHECK_INT(route(p, "x", &plan), -1);
    CHECK_CONTAINS(plan.error, "bad argument #1 to 'log' (invalid option 'loud')");
    mg_policy_free(p);
    mg_policy_set_log(NULL);
}

MG_TEST(api_trace_is_bounded_and_sanitized)
{
    mg_policy_t *p = load("function route(req)\n"
                          "  gw.trace('a\\r\\nb\\0c\\195\\169')\n"
                          "  for i = 1, 500 do gw.trace('entry %d', i) end\n"
                          "  return 'lm/small'\n"
                          "end");
    mg_plan_t plan;
    MG_CHECK(p && route(p, "default", &plan) == 0);
    MG_CHECK(strncmp(plan.trace, "a? b?c??; entry 1; entry 2", 26) == 0);
    MG_CHECK(strlen(plan.trace) < MG_POLICY_TRACE_MAX);
    MG_CHECK(strlen(plan.trace) > MG_POLICY_TRACE_MAX - 20);
    MG_CHECK(strcmp(plan.trace + strlen(plan.trace) - 3, "...") == 0);
    mg_policy_free(p);
}

/* ---- hooks ------------------------------------------------------------------------------------
 */

MG_TEST(hooks_on_failure)
{
    mg_policy_t *p = load("function route(req) return gw.util.default_chain() end");
    MG_CHECK(p != NULL);
    mg_failure_t f = {.index = 0,
                      .model = cfg->default_chain[0],
                      .error_class = "rate_limit",
                      .http_status = 429,
                      .retry_after_ms = 1500,
                      .attempt = 1};
    mg_failure_decision_t d;
    mg_route_input_t in = input("default");
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), 0); /* no hook: next */
    MG_CHECK_INT(d.action, MG_FAILURE_NEXT);
    mg_policy_free(p);

    p = load("function route(req) return gw.util.default_chain() end\n"
             "function on_failure(req, f)\n"
             "  gw.trace('%d %s %s %s %d %d %d', f.index, f.model, f.provider, f.error_class, "
             "f.status,\n"
             "           f.retry_after_ms or -1, f.attempt)\n"
             "  if f.error_class == 'rate_limit' and f.attempt < 3 then return 'retry', "
             "f.retry_after_ms end\n"
             "  if f.error_class == 'auth' then return 'stop' end\n"
             "  if f.error_class == 'bad_request' then return 'explode' end\n"
             "  if f.error_class == 'timeout' then return 'retry', 1e9 end\n"
             "  if f.error_class == 'server_error' then return gw.reject(500, 'x', 'y') end\n"
             "end");
    MG_CHECK(p && mg_policy_has_hook(p, "on_failure"));
    if (!p) return;
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), 0);
    MG_CHECK_INT(d.action, MG_FAILURE_RETRY);
    MG_CHECK_INT(d.delay_ms, 1500);
    MG_CHECK_STR(d.trace, "1 lm/small lm rate_limit 429 1500 1");
    f.attempt = 3;
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), 0);
    MG_CHECK_INT(d.action, MG_FAILURE_NEXT);
    f.error_class = "auth";
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), 0);
    MG_CHECK_INT(d.action, MG_FAILURE_STOP);
    f.error_class = "bad_request";
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), -1);
    MG_CHECK_INT(d.action, MG_FAILURE_NEXT);
    CHECK_CONTAINS(d.error, "policy_error: on_failure returned \"explode\"");
    f.error_class = "timeout";
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), -1);
    CHECK_CONTAINS(d.error, "expected 0..60000 ms");
    f.error_class = "server_error";
    MG_CHECK_INT(mg_policy_on_failure(p, &in, NULL, &f, &d), -1);
    CHECK_CONTAINS(d.error, "gw.reject is not available in phase failure");
    mg_policy_free(p);
}

MG_TEST(hooks_on_complete)
{
    mg_policy_set_log(capture_log);
    mg_policy_t *p = load(
        "local total = 0\n"
        "function route(req) return 'lm/small' end\n"
        "function on_complete(req, r)\n"
        "  if r.status == 599 then error('accounting broke') end\n"
        "  if r.status == 598 then while true do end end\n"
        "  total = total + (r.completion_tokens or 0)\n"
        "  gw.log('info', '%s %s %d %d %d %d', req.model, r.model, r.status, r.prompt_tokens,\n"
        "         total, r.attempts)\n"
        "end");
    MG_CHECK(p && mg_policy_has_hook(p, "on_complete"));
    if (!p) return;
    mg_route_input_t in = input("default");
    mg_completion_t c = {.model = cfg->default_chain[0],
                         .status = 200,
                         .prompt_tokens = 10,
                         .completion_tokens = 5,
                         .latency_ms = 100,
                         .ttft_ms = -1,
                         .attempts = 1};
    mg_policy_on_complete(p, &in, NULL, &c);
    CHECK_CONTAINS(last_log, "default lm/small 200 10 5 1");
    mg_policy_on_complete(p, &in, NULL, &c);
    CHECK_CONTAINS(last_log, "default lm/small 200 10 10 1");
    c.status = 599;
    mg_policy_on_complete(p, &in, NULL, &c); /* logged, never fatal */
    CHECK_CONTAINS(last_log, ".lua: on_complete failed: ");
    CHECK_CONTAINS(last_log, ".lua:4: accounting broke");
    MG_CHECK_INT(last_level, MG_LOG_WARN);
    c.status = 598;
    int64_t c0 = cpu_ms();
    mg_policy_on_complete(p, &in, NULL, &c);
    MG_CHECK(cpu_ms() - c0 < 60);
    CHECK_CONTAINS(last_log, ".lua:5: CPU budget of 5 ms exceeded");
    mg_policy_set_log(NULL);
    mg_policy_stats_t st = mg_policy_stats(p);
    MG_CHECK_INT(st.errors, 2);
    MG_CHECK_INT(st.timeouts, 1);
    mg_policy_free(p);
}

/* ---- threads ----------------------------------------------------------------------------------
 */

typedef struct worker {
    mg_policy_t *p;
    int n, bad, errors;
} worker_t;

static void *work(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < w->n; i++) {
        mg_plan_t plan;
        const char *model = (i % 50 == 7) ? "loop" : (i % 2 ? "eu/big" : "default");
        int rc = route(w->p, model, &plan);
        if (!strcmp(model, "loop")) {
            if (rc != -1 || !strstr(plan.error, "CPU budget")) w->bad++;
            w->errors++;
            continue;
        }
        const char *want = (i % 2) ? "eu/big us/big" : "lm/small eu/big us/big";
        if (rc != 0 || strcmp(refs(&plan), want) != 0) w->bad++;
    }
    return NULL;
}

MG_TEST(threads_share_a_policy)
{
    mg_policy_t *p = load("local n = 0\n"
                          "function route(req)\n"
                          "  n = n + 1\n"
                          "  if req.model == 'loop' then while true do end end\n"
                          "  return gw.util.chain_for(req.model)\n"
                          "end");
    MG_CHECK(p != NULL);
    if (!p) return;
    enum { N = 8 };
    pthread_t t[N];
    worker_t w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker_t){p, 400, 0, 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    int errors = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        MG_CHECK_INT(w[i].bad, 0);
        errors += w[i].errors;
    }
    mg_policy_stats_t st = mg_policy_stats(p);
    MG_CHECK_INT(st.decisions, (uint64_t)N * 400 + 0);
    MG_CHECK_INT(st.timeouts, errors);
    /* one state per thread, plus one rebuilt after each timeout; the load's state is adopted */
    MG_CHECK((int)st.states_created <= 1 + N + errors);
    mg_policy_free(p);
}

static void *one_decision(void *arg)
{
    worker_t *w = arg;
    mg_plan_t plan;
    if (route(w->p, "default", &plan) != 0 || strcmp(refs(&plan), "lm/small eu/big us/big") != 0)
        w->bad++;
    return NULL;
}

MG_TEST(threads_slots_are_recycled)
{
    mg_policy_t *p = load("function route(req) return gw.util.chain_for(req.model) end");
    MG_CHECK(p != NULL);
    if (!p) return;
    worker_t w = {p, 1, 0, 0};
    for (int i = 0; i < 600; i++) { /* more threads over time than there are slots */
        pthread_t t;
        pthread_create(&t, NULL, one_decision, &w);
        pthread_join(t, NULL);
    }
    MG_CHECK_INT(w.bad, 0);
    mg_policy_free(p);
}

MG_TEST(threads_more_than_slots_use_the_pool)
{
    mg_policy_t *p = load("function route(req)\n"
                          "  if req.model == 'loop' then while true do end end\n"
                          "  return gw.util.chain_for(req.model)\n"
                          "end");
    MG_CHECK(p != NULL);
    if (!p) return;
    enum { N = 300 };
    static pthread_t t[N];
    static worker_t w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker_t){p, 20, 0, 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        MG_CHECK_INT(w[i].bad, 0);
    }
    mg_policy_free(p);
}

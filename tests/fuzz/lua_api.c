/* libFuzzer target for the Lua API glue (lua_api.c, lua_sandbox.c, lua_pattern.c, the C
 * invariants in policy.c): the input is a small program, read by a fixed policy, that calls gw
 * functions, gw.util helpers, req fields and string patterns with random argument counts and
 * types, then returns a random result shape from route/on_failure/compact. Whatever happens, the
 * C side must hold its contract: a decision is a valid plan, a valid rejection or a policy_error,
 * every candidate is a catalog model allowed by the region lists, a compact result is either
 * refused (policy_error) or a request mg_compact_validate can judge, and nothing crashes or
 * leaks.
 *
 * Input layout: byte 0 picks the request's data region and region lists, byte 1 the live state,
 * the rest is the program (hex-encoded into a header for the policy to decode). */
#include "lua_testfile.h"
#include "policy.h"
#include "util.h"

#include "../unit/compact_testlib.h"
#include "fuzz_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const CFG =
    "{ models: { mode: 'replace', providers: {"
    "  lm: { baseUrl: 'http://127.0.0.1:1234/v1', api: 'openai-completions',"
    "        models: [{ id: 'small', contextWindow: 8192, maxTokens: 2048 }] },"
    "  eu: { baseUrl: 'https://eu.example.com/v1', api: 'openai-completions',"
    "        models: [{ id: 'big', contextWindow: 200000, maxTokens: 8192, input: ['text', "
    "'image'],"
    "                   cost: { input: 3, output: 15 } }] },"
    "  us: { baseUrl: 'https://us.example.com/v1', api: 'openai-completions',"
    "        models: [{ id: 'big', contextWindow: 200000, cost: { input: 1, output: 5 } }] },"
    "}},"
    "  agents: { defaults: { model: { primary: 'lm/small', fallbacks: ['eu/big', 'us/big'] },"
    "                        models: { 'us/big': { alias: 'cheap' } } } },"
    "  gateway: { providers: { eu: { region: 'eu-west' }, us: { region: 'us' } } } }";

/* The interpreter: decodes x-prog and runs it. Every call is protected so one bad call does not
 * end the program; the result shape is chosen by the program too. */
static const char *const POLICY =
    "local util = gw.util\n"
    "local names = {'lm/small', 'eu/big', 'us/big', 'cheap', 'nope', 'default', '', 'LM/SMALL', "
    "'lm', 'eu'}\n"
    "local function palette(req)\n"
    "  return { nil, true, false, 0, -1, 1, 3, 2^53, math.maxinteger, math.mininteger, 0.5, 1/0, "
    "-1/0, 0/0,\n"
    "    '', 'lm/small', 'eu/big', 'cheap', 'nope/x', 'default', 'x\\0y', ('a'):rep(300), '%', "
    "'(', '[a-',\n"
    "    '%b()', '.-.-x', '%f[%w]%w+', '(.)%1', '^$', {}, {1, 2, 3}, {'lm/small', 'eu/big'},\n"
    "    {model = 'lm/small'}, {model = 'nope'}, {ref = 'eu/big'}, {model = 'eu/big', total_ms = "
    "5},\n"
    "    {model = 'lm/small', bogus = 1}, {model = 'us/big', compaction = 1}, "
    "gw.catalog.models['lm/small'],\n"
    "    gw.catalog, gw.catalog.default_chain, function() return 1 end, error, req, req.headers, "
    "req.metadata,\n"
    "    setmetatable({}, {__index = function() error('idx') end}), 'debug', 'info', 'warn', "
    "'error', 'next',\n"
    "    'stop', 'retry', 403, 429, 'region_not_allowed', 'eu', 'us', 'eu-west', '*' }\n"
    "end\n"
    "local NPAL = 62\n"
    "local fns = {\n"
    "  gw.resolve, gw.health, gw.provider_health, gw.healthy, gw.trace, gw.log, gw.reject, gw.now, "
    "gw.phase,\n"
    "  gw.region_allows, util.model, util.ref, util.default_chain, util.chain_for, "
    "util.output_reserve,\n"
    "  util.fits, util.healthy, util.is_local, util.data_region, util.region_ok, util.filter, "
    "util.partition,\n"
    "  util.concat, util.contains, util.dedupe, util.sort_by, util.cost, util.by_cost, "
    "util.latency,\n"
    "  util.by_latency, util.unknown_model, util.refs, string.find, string.match, string.gsub, "
    "string.rep,\n"
    "  string.format, table.concat, table.insert, table.sort, table.unpack, tostring, pairs, "
    "ipairs, next,\n"
    "  select, type, rawlen, rawequal, setmetatable, getmetatable, load, gw.tokens, gw.prompt_budget,\n"
    "  function(t, k) return t[k] end, function(t, k, v) t[k] = v end, function(t) return #t end,\n"
    "  function(s, p) local n = 0 for a in string.gmatch(s, p) do n = n + 1 if n > 50 then break "
    "end end return n end,\n"
    "  function(t) local n = 0 for k, v in pairs(t) do n = n + 1 end return n end,\n"
    "}\n"
    "local function decode(hex)\n"
    "  local out = {}\n"
    "  for i = 1, #hex - 1, 2 do out[#out + 1] = tonumber(hex:sub(i, i + 1), 16) end\n"
    "  return out\n"
    "end\n"
    "local function run(req, prog, extra)\n"
    "  local pal, pos = palette(req), 1\n"
    "  for i = 1, #extra do pal[#pal + 1] = extra[i] end\n"
    "  local function byte() local b = prog[pos] or 0 pos = pos + 1 return b end\n"
    "  local results = {}\n"
    "  local ops = 0\n"
    "  while pos <= #prog and ops < 48 do\n"
    "    ops = ops + 1\n"
    "    local f = fns[byte() % #fns + 1]\n"
    "    local argc = byte() % 5\n"
    "    local args = {}\n"
    "    for i = 1, argc do\n"
    "      local b = byte()\n"
    "      if b >= 250 and #results > 0 then args[i] = results[b % #results + 1] else args[i] = "
    "pal[b % #pal + 1] end\n"
    "    end\n"
    "    local r = table.pack(pcall(f, table.unpack(args, 1, argc)))\n"
    "    if r[1] and r.n >= 2 then results[#results + 1] = r[2] end\n"
    "  end\n"
    "  local shape = byte() % 6\n"
    "  local pick = function() local b = byte() if #results > 0 and b % 2 == 0 then return "
    "results[b % #results + 1] end return pal[b % #pal + 1] end\n"
    "  if shape == 0 then return pick() end\n"
    "  if shape == 1 then return names[byte() % #names + 1] end\n"
    "  if shape == 2 then return gw.phase() == 'route' and gw.reject(400 + byte(), 'fuzz', "
    "'fuzzed') or 'next' end\n"
    "  local list = {}\n"
    "  for i = 1, byte() % 20 do\n"
    "    if shape == 3 then list[i] = names[byte() % #names + 1] else list[i] = pick() end\n"
    "  end\n"
    "  if shape == 5 then return list, pick() end\n"
    "  return list\n"
    "end\n"
    "function route(req)\n"
    "  local prog = decode(req.headers['x-prog'] or '')\n"
    "  if #prog == 0 then return 'lm/small' end\n"
    "  return run(req, prog, {})\n"
    "end\n"
    "function on_failure(req, f)\n"
    "  local prog = decode(req.headers['x-prog'] or '')\n"
    "  local a, b = run(req, prog, {f, f.model, f.error_class})\n"
    "  if type(a) == 'table' and #a > 0 then return a[1], b end\n"
    "  return a, b\n"
    "end\n"
    "function compact(req, budget, model)\n"
    "  local m = req.messages\n"
    "  local first = m[1] or {}\n"
    "  local a, b = run(req, decode(req.headers['x-prog'] or ''), {m, first, m[#m], first.content,\n"
    "    (first.content or {})[1], budget, model, {role = 'user', content = 'x'}, 'assistant', 'tool',\n"
    "    {role = 'tool', content = {{type = 'tool_result', id = 'c1', content = 'r'}}},\n"
    "    {type = 'tool_call', id = 'c1', name = 'f', arguments = '{}'}, {type = 'image'},\n"
    "    {type = 'text', text = 't'}, {m[#m]}, {first, m[#m]},\n"
    "    {{role = 'user', content = 'x'}, {role = 'assistant', content = {{type = 'tool_call', id = 'c1',\n"
    "      name = 'f'}}}, {role = 'tool', content = {{type = 'tool_result', id = 'c1', content = 'r'}}},\n"
    "      {role = 'user', content = {'y', (first.content or {})[1]}}},\n"
    "    {first, {role = 'user', content = {{type = 'image'}}}}})\n"
    "  if type(a) == 'table' and #a > 0 and b then return {a[1], m[#m]} end\n"
    "  return a\n"
    "end\n"
    "function on_complete(req, r)\n"
    "  run(req, decode(req.headers['x-prog'] or ''), {r})\n"
    "end\n";

static mg_config_t *cfg;
static mg_policy_t *policy;

static void quiet(mg_log_level_t level, const char *p, const char *msg)
{
    (void)level;
    (void)p;
    (void)msg;
}

static void init(void)
{
    char err[512];
    char dir[] = "/tmp/mg_fuzz_lua_api_XXXXXX";
    if (!mkdtemp(dir)) abort();
    char *path = mg_xasprintf("%s/fuzz.lua", dir);
    FILE *f = fopen(path, "wb");
    fputs(POLICY, f);
    fclose(f);
    cfg = mg_config_load_string(CFG, strlen(CFG), "fuzz.json5", dir, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "config: %s\n", err);
        abort();
    }
    mg_policy_set_log(quiet);
    mg_policy_limits_t lim = {.cpu_ms = 50, .mem_bytes = 16 << 20};
    policy = mg_policy_load_file(cfg, path, &lim, err, sizeof err);
    if (!policy) {
        fprintf(stderr, "policy: %s\n", err);
        abort();
    }
    unlink(path);
    rmdir(dir);
    free(path);
}

static bool in_catalog(const mg_model_t *m)
{
    for (size_t k = 0; k < cfg->n_providers; k++)
        for (size_t j = 0; j < cfg->providers[k].n_models; j++)
            if (&cfg->providers[k].models[j] == m) return true;
    return false;
}

static bool allowed(const char *const *list, size_t n, const mg_model_t *m)
{
    if (!list || m->provider->local) return true;
    for (size_t i = 0; i < n; i++)
        if (mg_region_allows(list[i], m->provider->region)) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!policy) init();
    if (size < 2) return 0;
    static const char *const regions[] = {"eu", "us", "ap", "*", "EU-WEST"};
    uint8_t r = data[0], s = data[1];
    data += 2;
    size -= 2;
    if (size > 512) size = 512;

    char *hex = mg_xmalloc(2 * size + 1);
    for (size_t i = 0; i < size; i++)
        snprintf(hex + 2 * i, 3, "%02x", data[i]);
    hex[2 * size] = '\0';
    mg_kv_t headers[] = {{"x-prog", hex}, {"x-data-region", regions[r % 5]}};
    mg_kv_t meta[] = {{"optimize", (r & 8) ? "latency" : "cost"}};
    const char *key_regions[] = {regions[(r >> 4) % 5]};
    const char *gw_regions[] = {regions[(r >> 2) % 5], regions[(r >> 5) % 5]};
    mg_route_input_t in = {
        .cfg = cfg,
        .model = (r & 1) ? "default" : "eu/big",
        .endpoint = "chat",
        .prompt_tokens = r * 100,
        .max_output_tokens = (r & 2) ? -1 : r,
        .has_images = r & 4,
        .stream = r & 16,
        .headers = headers,
        .n_headers = 2,
        .metadata = meta,
        .n_metadata = 1,
        .data_region = (r & 32) ? regions[r % 5] : NULL,
        .allowed_regions = (r & 64) ? key_regions : NULL,
        .n_allowed_regions = 1,
        .gateway_regions = (r & 128) ? gw_regions : NULL,
        .n_gateway_regions = 2,
    };
    mg_live_entry_t entries[] = {
        {"lm/small",
         false,
         {.healthy = !(s & 1), .cooling_down = s & 2, .latency_ms_p50 = s, .ttft_ms_p50 = -1}},
        {"eu/big",
         false,
         {.healthy = !(s & 4),
          .cooldown_until_ms = (s & 8) ? mg_wall_ms() + 1000 : 0,
          .latency_ms_p50 = -1,
          .ttft_ms_p50 = s / 2.0,
          .last_error_class = "timeout"}},
        {"us",
         true,
         {.healthy = !(s & 16), .error_rate = s / 255.0, .latency_ms_p50 = -1, .ttft_ms_p50 = -1}},
    };
    mg_live_static_t st = {entries, 3};
    mg_live_view_t live = mg_live_static_view(&st);

    mg_plan_t plan;
    int rc = mg_policy_route(policy, &in, (s & 32) ? NULL : &live, &plan);
    if (rc == 0) {
        if (plan.rejected) {
            if (plan.status < 400 || plan.status > 599 || !plan.code[0] || plan.n_cands) abort();
        } else {
            if (plan.n_cands == 0 || plan.n_cands > MG_PLAN_MAX_CANDIDATES) abort();
            for (size_t i = 0; i < plan.n_cands; i++) {
                const mg_model_t *m = plan.cands[i].model;
                if (!m || !in_catalog(m)) abort();
                if (!allowed(in.allowed_regions, in.n_allowed_regions, m)) abort();
                if (!allowed(in.gateway_regions, in.n_gateway_regions, m)) abort();
                for (size_t j = 0; j < i; j++)
                    if (plan.cands[j].model == m) abort();
                if (plan.cands[i].total_ms < 0 || plan.cands[i].max_output_tokens == 0) abort();
            }
        }
    } else if (strncmp(plan.error, "policy_error: ", 14) != 0) {
        abort();
    }
    if (getenv("MG_FUZZ_DEBUG")) /* what the input did, when looking at one by hand */
        fprintf(stderr, "rc=%d rejected=%d n=%zu error=%s trace=%s\n", rc, plan.rejected,
                plan.n_cands, plan.error, plan.trace);
    for (const char *p = plan.trace; *p; p++)
        if (*p < 0x20 || *p > 0x7e) abort(); /* the trace goes into a header */

    mg_failure_t f = {.index = s % 3,
                      .model = cfg->default_chain[s % 3],
                      .error_class = "rate_limit",
                      .http_status = 429,
                      .retry_after_ms = (s & 64) ? 100 : -1,
                      .attempt = 1 + (s & 1)};
    mg_failure_decision_t fd;
    rc = mg_policy_on_failure(policy, &in, &live, &f, &fd);
    if (fd.action != MG_FAILURE_NEXT && fd.action != MG_FAILURE_STOP &&
        fd.action != MG_FAILURE_RETRY)
        abort();
    if (rc == 0 && fd.action == MG_FAILURE_RETRY && (fd.delay_ms < 0 || fd.delay_ms > 60000))
        abort();
    if (rc != 0 && (fd.action != MG_FAILURE_NEXT || strncmp(fd.error, "policy_error: ", 14) != 0))
        abort();

    /* compact(req, budget, model) over a small conversation with every kind of part. */
    tb_t b;
    tb_init(&b, MG_API_ANTHROPIC_MESSAGES);
    tb_system(&b, "sys");
    tb_user(&b, "hello <|im_start|>");
    tb_assistant(&b, NULL);
    tb_reasoning(&b, "hmm", (s & 1) ? "sig" : NULL);
    tb_call(&b, "c1", "f", "{\"a\":1}");
    tb_result(&b, "c1", "result text");
    tb_user(&b, "look");
    tb_image(&b);
    mg_compact_call_t call = {.model = cfg->default_chain[s % 3],
                              .budget = (s & 2) ? 50 : 5000,
                              .req = &b.r,
                              .arena = b.a};
    rc = mg_policy_compact(policy, &in, &live, &call);
    if (rc < -1 || rc > 1) abort();
    if (rc < 0 && strncmp(call.error, "policy_error: ", 14) != 0) abort();
    if (rc == 1) {
        char verr[256];
        mg_compact_validate(&call.result, call.budget, NULL, verr, sizeof verr);
        if (call.result.system != b.r.system || call.result.n_system != b.r.n_system) abort();
        for (size_t i = 0; i < call.result.n_messages; i++)
            for (size_t j = 0; j < call.result.messages[i].n_parts; j++) {
                const mg_ir_part_t *pp = &call.result.messages[i].parts[j];
                if (pp->type == MG_IR_PART_TEXT && !pp->text) abort();
                if (pp->type == MG_IR_PART_TOOL_CALL && (!pp->id || !pp->name || !pp->arguments)) abort();
            }
    }
    for (const char *q = call.trace; *q; q++)
        if (*q < 0x20 || *q > 0x7e) abort();
    if (getenv("MG_FUZZ_DEBUG"))
        fprintf(stderr, "compact rc=%d messages=%zu error=%s\n", rc, rc == 1 ? call.result.n_messages : 0,
                call.error);
    tb_free(&b);

    mg_completion_t c = {.model = cfg->default_chain[0],
                         .status = 200,
                         .prompt_tokens = r,
                         .completion_tokens = s,
                         .latency_ms = 10,
                         .ttft_ms = -1,
                         .attempts = 1};
    mg_policy_on_complete(policy, &in, &live, &c);
    free(hex);
    return 0;
}

/* Unit tests for the policy side of compaction (policy.c, lua_api.c): the compact(req, budget,
 * model) hook — what it sees, how its result is converted back into the internal model (kept
 * parts keep everything they carried; texts, ids and arguments are read from the tables; media
 * cannot be made), every way a result can be refused, the sandbox limits — and the candidates'
 * `summarizer` option. The C-side check of a converted result is mg_compact_validate. */
#include "compact_testlib.h"
#include "mg_test.h"
#include "policy.h"
#include "util.h"

#include <unistd.h>

MG_TEST_MAIN()

static const char *const CFG =
    "{ models: { mode: 'replace', providers: {"
    "  lm: { baseUrl: 'http://127.0.0.1:1234/v1', api: 'openai-completions',"
    "        models: [{ id: 'small', contextWindow: 8192, maxTokens: 2048 },"
    "                 { id: 'summ', contextWindow: 32000, maxTokens: 1024 }] },"
    "  us: { baseUrl: 'https://us.example.com/v1', apiKey: 'k', api: 'openai-completions',"
    "        models: [{ id: 'big', contextWindow: 200000, maxTokens: 8192 }] } }},"
    "  agents: { defaults: { model: 'lm/small', models: { 'lm/summ': { alias: 'summarizer' } } } },"
    "  gateway: { providers: { us: { region: 'us' } } } }";

static mg_config_t *cfg;
static char tmpdir[64];

static mg_policy_t *load_policy(const char *text, const mg_policy_limits_t *lim, char *err, size_t errlen)
{
    if (!cfg) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/mg_policy_compact_XXXXXX");
        if (!mkdtemp(tmpdir)) abort();
        char e[512];
        cfg = mg_config_load_string(CFG, strlen(CFG), "test.json5", tmpdir, e, sizeof e);
        if (!cfg) {
            fprintf(stderr, "config: %s\n", e);
            abort();
        }
    }
    char *path = mg_xasprintf("%s/p.lua", tmpdir);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    mg_policy_t *p = mg_policy_load_file(cfg, path, lim, err, errlen);
    unlink(path);
    free(path);
    return p;
}

static mg_policy_t *load(const char *text)
{
    char err[512];
    mg_policy_t *p = load_policy(text, NULL, err, sizeof err);
    if (!p) fprintf(stderr, "  load failed: %s\n", err);
    MG_CHECK(p != NULL);
    return p;
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

/* A conversation with a bit of everything: system prompt, reasoning with a signature, a tool call
 * and its result, an image, and a last question. */
static void conversation(tb_t *b)
{
    tb_init(b, MG_API_ANTHROPIC_MESSAGES);
    tb_system(b, "be brief");
    tb_user(b, "first question");
    tb_assistant(b, NULL);
    tb_reasoning(b, "thinking it over", "SIG-1");
    tb_text(b, "let me look");
    tb_call(b, "call_1", "read_file", "{\"path\":\"a.c\"}");
    tb_result(b, "call_1", "int main(void) { return 0; }");
    tb_assistant(b, "the file is fine");
    tb_user(b, "look at this picture");
    tb_image(b);
    tb_assistant(b, "a cat");
    tb_user(b, "last question");
}

/* Runs the hook for model ref with budget; returns its rc, call filled. */
static int run(mg_policy_t *p, tb_t *b, const char *ref, int64_t budget, mg_compact_call_t *call)
{
    mg_route_input_t in = {.cfg = cfg, .model = "default", .endpoint = "messages", .prompt_tokens = 100,
                           .max_output_tokens = -1};
    *call = (mg_compact_call_t){.model = mg_config_find_model(cfg, ref),
                                .budget = budget,
                                .req = &b->r,
                                .arena = b->a};
    return mg_policy_compact(p, &in, NULL, call);
}

MG_TEST(hook_sees_the_conversation_and_keeps_what_it_returns)
{
    mg_policy_t *p = load(
        "function route(req) return 'lm/small' end\n"
        "function compact(req, budget, model)\n"
        "  local m = req.messages\n"
        "  assert(m == req.messages, 'one table per call')\n"
        "  assert(#m == 7 and m[1].role == 'user' and m[3].role == 'tool', 'roles')\n"
        "  assert(m[2].content[1].type == 'reasoning' and m[2].content[1].text == 'thinking it over')\n"
        "  assert(m[2].content[3].type == 'tool_call' and m[2].content[3].arguments == '{\"path\":\"a.c\"}')\n"
        "  local r = m[3].content[1]\n"
        "  assert(r.type == 'tool_result' and r.id == 'call_1' and r.content[1].text:find('main'))\n"
        "  assert(m[5].content[2].type == 'image' and m[5].content[2].media_type == 'image/png')\n"
        "  assert(math.type(m[1].tokens) == 'integer' and m[1].tokens > 0)\n"
        "  assert(model.ref == 'lm/small' and budget < 1234 and budget > 1200, budget)\n"
        "  gw.trace('kept %d of %d', 5, #m)\n"
        "  m[2].content[2].text = 'let me look (edited)'\n"
        "  return { m[1], m[2], m[3], m[4], m[7] }\n"
        "end\n");
    if (!p) return;
    MG_CHECK(mg_policy_has_hook(p, "compact"));
    tb_t b;
    conversation(&b);
    mg_compact_call_t call;
    int rc = run(p, &b, "lm/small", 1234, &call);
    if (rc != 1) fprintf(stderr, "  rc %d: %s\n", rc, call.error);
    MG_CHECK_INT(rc, 1);
    MG_CHECK_STR(call.trace, "kept 5 of 7");
    const mg_ir_request_t *r = &call.result;
    MG_CHECK_INT(r->n_messages, 5);
    MG_CHECK(r->system == b.r.system && r->n_system == 1); /* never the hook's to change */
    if (r->n_messages == 5) {
        /* The reasoning part comes back whole, signature included; the edited text is new. */
        MG_CHECK(r->messages[1].parts[0].type == MG_IR_PART_REASONING);
        MG_CHECK_STR(r->messages[1].parts[0].signature, "SIG-1");
        MG_CHECK_STR(r->messages[1].parts[1].text, "let me look (edited)");
        /* Unchanged strings are shared with the original, not copied. */
        MG_CHECK(r->messages[0].parts[0].text == b.r.messages[0].parts[0].text);
        MG_CHECK(r->messages[1].parts[2].arguments == b.r.messages[1].parts[2].arguments);
        MG_CHECK_STR(r->messages[2].parts[0].id, "call_1");
        MG_CHECK(r->messages[2].parts[0].parts[0].text == b.r.messages[2].parts[0].parts[0].text);
        MG_CHECK_STR(r->messages[4].parts[0].text, "last question");
    }
    char err[256];
    MG_CHECK_INT(mg_compact_validate(r, 100000, NULL, err, sizeof err), 0);
    tb_free(&b);
    mg_policy_free(p);
}

MG_TEST(hook_may_write_new_messages_and_decline)
{
    mg_policy_t *p = load(
        "function route(req) return 'lm/small' end\n"
        "function compact(req, budget, model)\n"
        "  local m = req.messages\n"
        "  if model.ref == 'us/big' then return nil end\n"
        "  return { { role = 'user', content = '[earlier: a file was read]' },\n"
        "           { role = 'assistant', content = { 'ok', { type = 'tool_call', id = 'c9', name = 'ls' } } },\n"
        "           { role = 'tool', content = { { type = 'tool_result', id = 'c9', is_error = true,\n"
        "                                          content = 'no such dir' } } },\n"
        "           m[#m] }\n"
        "end\n");
    if (!p) return;
    tb_t b;
    conversation(&b);
    mg_compact_call_t call;
    MG_CHECK_INT(run(p, &b, "us/big", 1000, &call), 0);
    MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), 1);
    const mg_ir_request_t *r = &call.result;
    MG_CHECK_INT(r->n_messages, 4);
    if (r->n_messages == 4) {
        MG_CHECK_STR(r->messages[0].parts[0].text, "[earlier: a file was read]");
        MG_CHECK(r->messages[1].n_parts == 2 && r->messages[1].parts[0].type == MG_IR_PART_TEXT);
        MG_CHECK_STR(r->messages[1].parts[1].arguments, "{}");
        MG_CHECK(r->messages[2].parts[0].is_error);
        MG_CHECK_STR(r->messages[2].parts[0].parts[0].text, "no such dir");
    }
    char err[256];
    MG_CHECK_INT(mg_compact_validate(r, 100000, NULL, err, sizeof err), 0);
    tb_free(&b);
    mg_policy_free(p);
}

/* Each bad result fails the call with the hook's file:line and what is wrong. */
MG_TEST(bad_results_are_policy_errors)
{
    static const struct {
        const char *ret, *want;
    } cases[] = {
        {"42", "compact returned a number (expected a list of messages, or nil)"},
        {"{ 'x' }", "compact returned messages[1]: a message must be a table, not string"},
        {"{ { role = 'system', content = 'x' } }", "messages[1]: unknown role 'system'"},
        {"{ { content = 'x' } }", "messages[1]: 'role' must be a string"},
        {"{ { role = 'user', content = 5 } }", "'content' must be a string or a list of parts, not number"},
        {"{ { role = 'user', content = { { type = 'image', url = 'http://x/y.png' } } } }",
         "messages[1].content[1]: an image part can only be kept from req.messages, not made"},
        {"{ { role = 'user', content = { { type = 'video' } } } }", "unknown part type 'video'"},
        {"{ { role = 'user', content = { { type = 'text', text = 'a\\0b' } } } }", "'text' contains a NUL byte"},
        {"{ { role = 'assistant', content = { { type = 'tool_call', id = 'x', name = 'f', arguments = '{' } } } }",
         "'arguments' must be a JSON text"},
        {"{ { role = 'tool', content = { { type = 'tool_result', id = 'x', content = { { type = 'tool_call', "
         "id = 'y', name = 'z' } } } } } }",
         "messages[1].content[1].content[1]: a tool result holds only text and image parts, not tool_call"},
        {"{ { role = 'user', content = { setmetatable({}, { __index = function() error('boom') end }) } } }",
         "messages[1].content[1]: 'type' must be a string"},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        char *src = mg_xasprintf("function route(req) return 'lm/small' end\n"
                                 "function compact(req, budget, model)\n"
                                 "  return %s\n"
                                 "end\n",
                                 cases[i].ret);
        mg_policy_t *p = load(src);
        free(src);
        if (!p) continue;
        tb_t b;
        conversation(&b);
        mg_compact_call_t call;
        MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), -1);
        CHECK_CONTAINS(call.error, "policy_error: p.lua:2: ");
        CHECK_CONTAINS(call.error, cases[i].want);
        tb_free(&b);
        mg_policy_free(p);
    }
}

/* A result of the right shape can still break the request's rules or the budget: the router's
 * check (mg_compact_validate) refuses it, and the router compacts deterministically. */
MG_TEST(well_shaped_results_are_checked_by_c)
{
    mg_policy_t *p = load("function route(req) return 'lm/small' end\n"
                          "local mode\n"
                          "function compact(req, budget, model)\n"
                          "  local m = req.messages\n"
                          "  if budget == 1000 then return { m[2], m[7] } end\n"  /* assistant first */
                          "  if budget == 1001 then return { m[1], m[2], m[7] } end\n" /* call, no result */
                          "  return m\n"                                         /* too big */
                          "end\n");
    if (!p) return;
    tb_t b;
    conversation(&b);
    mg_compact_call_t call;
    char err[256];
    /* The hook's budget leaves out what it cannot change (request overhead, system prompt). */
    MG_CHECK_INT(run(p, &b, "lm/small", 1000 + mg_tokens_request_base(&b.r, 0, NULL), &call), 1);
    MG_CHECK_INT(mg_compact_validate(&call.result, 1000, NULL, err, sizeof err), -1);
    CHECK_CONTAINS(err, "the first message must be from the user");
    MG_CHECK_INT(run(p, &b, "lm/small", 1001 + mg_tokens_request_base(&b.r, 0, NULL), &call), 1);
    MG_CHECK_INT(mg_compact_validate(&call.result, 1001, NULL, err, sizeof err), -1);
    CHECK_CONTAINS(err, "tool call call_1 has no result");
    MG_CHECK_INT(run(p, &b, "lm/small", 20, &call), 1);
    MG_CHECK_INT(mg_compact_validate(&call.result, 20, NULL, err, sizeof err), -1);
    CHECK_CONTAINS(err, "exceed the budget of 20");
    tb_free(&b);
    mg_policy_free(p);
}

MG_TEST(hook_errors_and_limits)
{
    tb_t b;
    conversation(&b);
    mg_compact_call_t call;
    mg_policy_t *p = load("function route(req) return 'lm/small' end\n"
                          "function compact(req, budget, model)\n"
                          "  error('cannot decide')\n"
                          "end\n");
    if (p) {
        MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), -1);
        CHECK_CONTAINS(call.error, "policy_error: p.lua:3: cannot decide");
        mg_policy_free(p);
    }
    p = load("function route(req) return 'lm/small' end\n"
             "function compact(req, budget, model)\n"
             "  while true do end\n"
             "end\n");
    if (p) {
        MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), -1);
        CHECK_CONTAINS(call.error, "CPU budget of 5 ms exceeded");
        /* the state was rebuilt: the next call runs (and fails the same way, quickly) */
        MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), -1);
        mg_policy_free(p);
    }
    /* A text the sandbox could not even hold: the hook is not called. */
    char err[512];
    mg_policy_limits_t lim = {.max_string = 4096};
    p = load_policy("function route(req) return 'lm/small' end\n"
                    "function compact(req, budget, model) return nil end\n",
                    &lim, err, sizeof err);
    MG_CHECK(p != NULL);
    if (p) {
        tb_user(&b, tb_fill(b.a, "long ", 10000));
        MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), -1);
        CHECK_CONTAINS(call.error, "compact not called: the conversation holds a text of 10000 bytes");
        mg_policy_free(p);
    }
    tb_free(&b);
}

MG_TEST(messages_only_in_compact)
{
    char err[512];
    mg_policy_t *p = load_policy("function route(req) local m = req.messages return 'lm/small' end\n", NULL,
                                 err, sizeof err);
    MG_CHECK(p == NULL);
    CHECK_CONTAINS(err, "req.messages is only available in compact(req, budget, model)");
    mg_policy_free(p);
    /* pairs(req) outside compact does not list it; without the hook the call is a no-op */
    p = load("function route(req)\n"
             "  for k in pairs(req) do assert(k ~= 'messages') end\n"
             "  assert(gw.tokens('abcdefg') == 2)\n"
             "  return 'lm/small'\n"
             "end\n");
    if (!p) return;
    MG_CHECK(!mg_policy_has_hook(p, "compact"));
    tb_t b;
    conversation(&b);
    mg_compact_call_t call;
    MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), 0);
    tb_free(&b);
    mg_policy_free(p);
}

MG_TEST(hook_from_a_returned_table)
{
    mg_policy_t *p = load("return { route = function(req) return 'lm/small' end,\n"
                          "         compact = function(req, budget, model) return { req.messages[#req.messages] } end }\n");
    if (!p) return;
    MG_CHECK(mg_policy_has_hook(p, "compact"));
    tb_t b;
    conversation(&b);
    mg_compact_call_t call;
    MG_CHECK_INT(run(p, &b, "lm/small", 1000, &call), 1);
    MG_CHECK_INT(call.result.n_messages, 1);
    tb_free(&b);
    mg_policy_free(p);
}

/* The candidates' summarizer option: a catalog model or false; anything else is an error. */
MG_TEST(summarizer_option)
{
    mg_policy_t *p = load("function route(req)\n"
                          "  return { { model = 'lm/small', summarizer = 'summarizer' },\n"
                          "           { model = 'us/big', summarizer = false }, 'lm/summ' }\n"
                          "end\n");
    if (p) {
        mg_route_input_t in = {.cfg = cfg, .model = "default", .endpoint = "chat", .max_output_tokens = -1};
        mg_plan_t plan;
        MG_CHECK_INT(mg_policy_route(p, &in, NULL, &plan), 0);
        MG_CHECK_INT(plan.n_cands, 3);
        if (plan.n_cands == 3) {
            MG_CHECK_INT(plan.cands[0].summarize, 1);
            MG_CHECK(plan.cands[0].summarizer == mg_config_find_model(cfg, "lm/summ"));
            MG_CHECK_INT(plan.cands[1].summarize, 0);
            MG_CHECK_INT(plan.cands[2].summarize, -1);
        }
        mg_policy_free(p);
    }
    static const struct {
        const char *opt, *want;
    } bad[] = {
        {"'nope/x'", "candidate #1 with summarizer 'nope/x', which is not a model of the catalog"},
        {"true", "candidate #1 with summarizer = true (expected a model ref, a model from gw.catalog, or false)"},
        {"42", "candidate #1 with summarizer = 42"},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(bad); i++) {
        char *src = mg_xasprintf("function route(req) return { { model = 'lm/small', summarizer = %s } } end\n",
                                 bad[i].opt);
        char err[512];
        p = load_policy(src, NULL, err, sizeof err);
        free(src);
        MG_CHECK(p == NULL);
        CHECK_CONTAINS(err, bad[i].want);
        mg_policy_free(p);
    }
}

/* Unit tests for policy_cli.c and lua_testfile.c: the shipped policies pass their own test files
 * (policies/tests, the same run as `moongate test policies/tests`), a test file with wrong
 * expectations fails line by line, and `moongate route` prints plans, rejections and errors. */
#include "lua_testfile.h"
#include "mg_test.h"
#include "policy_cli.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

MG_TEST_MAIN()

static char tmpdir[64];

static const char *tmp(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/mg_cli_test_XXXXXX");
        if (!mkdtemp(tmpdir)) abort();
    }
    return tmpdir;
}

static char *put(const char *name, const char *text)
{
    char *path = mg_xasprintf("%s/%s", tmp(), name);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs fn's output into a string. */
static char *capture_test(const char *path, int *rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    *rc = mg_cli_test(path, f);
    fclose(f);
    return buf;
}

#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_)) {                                                              \
            fprintf(stderr, "  %s:%d: output lacks \"%s\":\n%s\n", __FILE__, __LINE__, n_,         \
                    h_ ? h_ : "(null)");                                                           \
            mg_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

MG_TEST(shipped_policies_pass_their_tests)
{
    int rc;
    char *out = capture_test(MG_SOURCE_DIR "/policies/tests", &rc);
    MG_CHECK_INT(rc, 0);
    CHECK_CONTAINS(out, "ok   fallback_test.lua: default is the whole chain\n");
    CHECK_CONTAINS(out, "ok   local_first_test.lua: ");
    CHECK_CONTAINS(out, "ok   regional_test.lua: ");
    CHECK_CONTAINS(out, "ok   cost_latency_test.lua: ");
    CHECK_CONTAINS(out, " passed, 0 failed\n");
    MG_CHECK(strstr(out, "FAIL") == NULL);
    if (rc) fputs(out, stderr);
    free(out);
}

MG_TEST(a_wrong_expectation_fails)
{
    char *cfg = put("cfg.json5",
                    "{ models: { mode: 'replace', providers: {"
                    " lm: { baseUrl: 'http://127.0.0.1:1/v1', api: 'openai-completions', models: "
                    "[{ id: 'a' }, { id: 'b' }] } } },"
                    " agents: { defaults: { model: { primary: 'lm/a', fallbacks: ['lm/b'] } } } }");
    free(put("p.lua", "function route(req) if req.model == 'boom' then error('kaboom') end return "
                      "gw.util.chain_for(req.model) end"));
    char *t =
        put("t_test.lua",
            "return { config = 'cfg.json5', policy = 'p.lua', cases = {\n"
            "  { name = 'right', request = { model = 'default' }, expect = { candidates = { "
            "'lm/a', 'lm/b' } } },\n"
            "  { name = 'wrong', request = { model = 'default' }, expect = { candidates = { "
            "'lm/b', 'lm/a' } } },\n"
            "  { name = 'short', request = { model = 'default' }, expect = { candidates = { 'lm/a' "
            "} } },\n"
            "  { name = 'err', request = { model = 'boom' }, expect = { error = 'kaboom' } },\n"
            "  { name = 'typo', request = { mdoel = 'x' }, expect = { first = 'lm/a' } },\n"
            "  { name = 'class', request = { model = 'default' },\n"
            "    failure = { model = 'lm/a', error_class = 'ratelimit' }, expect = { action = 'next' } },\n"
            "  { name = 'last', request = { model = 'default' },\n"
            "    state = { models = { ['lm/a'] = { last_error = 'time_out' } } }, expect = { first = 'lm/a' } },\n"
            "} }\n");
    int rc;
    char *out = capture_test(t, &rc);
    MG_CHECK_INT(rc, 1);
    CHECK_CONTAINS(out, "ok   t_test.lua: right\n");
    CHECK_CONTAINS(out, "FAIL t_test.lua: wrong: candidate #1: expected lm/b; got [lm/a, lm/b]\n");
    CHECK_CONTAINS(out, "FAIL t_test.lua: short: expected 1 candidates; got [lm/a, lm/b]\n");
    CHECK_CONTAINS(out, "ok   t_test.lua: err\n");
    CHECK_CONTAINS(out, "FAIL t_test.lua: case 5 (typo): request: unknown field 'mdoel'\n");
    /* a misspelt class would match no branch of a policy, and pass: refused */
    CHECK_CONTAINS(out, "case 6 (class): failure.error_class: not an error class (gw.ERROR_CLASSES)\n");
    CHECK_CONTAINS(out, ".last_error: not an error class (gw.ERROR_CLASSES)\n");
    CHECK_CONTAINS(out, "2 passed, 5 failed\n");
    free(out);
    free(t);

    t = put("broken_test.lua", "return { cases = {} }");
    out = capture_test(t, &rc);
    MG_CHECK_INT(rc, 1);
    CHECK_CONTAINS(out, "FAIL broken_test.lua: ");
    CHECK_CONTAINS(out, "`config` must name the config file");
    free(out);
    free(t);
    t = put("loop_test.lua", "while true do end");
    out = capture_test(t, &rc);
    MG_CHECK_INT(rc, 1);
    CHECK_CONTAINS(out, "CPU budget of 2000 ms exceeded");
    free(out);
    free(t);
    free(cfg);
    MG_CHECK_INT(mg_cli_test("/nonexistent/dir", stdout), 2);
}

MG_TEST(expect_typos_and_contradictions_fail)
{
    /* A field of `expect` the checker does not know was ignored, and so was a second outcome: a
     * case with a misspelt expectation passed whatever the policy did. */
    char *cfg = put("cfg2.json5",
                    "{ models: { mode: 'replace', providers: {"
                    " lm: { baseUrl: 'http://127.0.0.1:1/v1', api: 'openai-completions', models: "
                    "[{ id: 'a' }] } } },"
                    " agents: { defaults: { model: { primary: 'lm/a' } } } }");
    free(put("p2.lua", "function route(req) if req.model == 'no' then return gw.reject(403, "
                       "'forbidden', 'no way') end return 'lm/a' end"));
    char *t = put(
        "e_test.lua",
        "return { config = 'cfg2.json5', policy = 'p2.lua', cases = {\n"
        "  { name = 'reject typos', request = { model = 'no' },\n"
        "    expect = { reject = { stauts = 404, cdoe = 'unknown_model' } } },\n"
        "  { name = 'trace typo', expect = { first = 'lm/a', tarce = 'not there' } },\n"
        "  { name = 'two outcomes', request = { model = 'no' },\n"
        "    expect = { reject = { status = 403 }, candidates = { 'lm/a' } } },\n"
        "  { name = 'an action for route', expect = { action = 'next' } },\n"
        "  { name = 'a plan for on_failure', failure = { model = 'lm/a' }, expect = { first = "
        "'lm/a' } },\n"
        "  { name = 'delay alone', failure = { model = 'lm/a' }, expect = { action = 'next', "
        "delay_ms = 5 } },\n"
        "  { name = 'status type', request = { model = 'no' }, expect = { reject = { status = "
        "'403' } } },\n"
        "  { name = 'option typo', expect = { candidates = { { model = 'lm/a', toal_ms = 5 } } } "
        "},\n"
        "  { name = 'endpoint', request = { endpoint = 'anthropic' }, expect = { first = 'lm/a' } "
        "},\n"
        "  { name = 'right', request = { model = 'no', endpoint = 'messages' },\n"
        "    expect = { reject = { status = 403, code = 'forbidden' }, trace = '' } },\n"
        "} }\n");
    int rc;
    char *out = capture_test(t, &rc);
    MG_CHECK_INT(rc, 1);
    CHECK_CONTAINS(out, "FAIL e_test.lua: reject typos: expect.reject: unknown fields 'cdoe', "
                        "'stauts' (known: status, code, message, message_contains)\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: trace typo: expect: unknown field 'tarce' (known: "
                        "candidates, first, reject, error, action, delay_ms, trace)\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: two outcomes: expect: reject and candidates contradict "
                        "each other (a case has one outcome)\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: an action for route: expect.action: only a failure case "
                        "(one with `failure`) has an action\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: a plan for on_failure: expect.first: a failure case "
                        "checks on_failure's decision (action, delay_ms), not a plan\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: delay alone: expect.delay_ms: only with action = "
                        "\"retry\"\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: status type: expect.reject.status: expected an integer, "
                        "got 403\n");
    CHECK_CONTAINS(out, "FAIL e_test.lua: option typo: expect.candidates[1]: unknown field "
                        "'toal_ms' (known: model, connect_ms, ");
    CHECK_CONTAINS(out, "FAIL e_test.lua: case 9 (endpoint): request.endpoint: expected \"chat\", "
                        "\"responses\" or \"messages\"\n");
    CHECK_CONTAINS(out, "ok   e_test.lua: right\n");
    CHECK_CONTAINS(out, "1 passed, 9 failed\n");
    free(out);
    free(t);
    free(cfg);
}

static char *capture_route(const char *cfg, const char *req, const char *state, int *rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    *rc = mg_cli_route(cfg, req, state, f);
    fclose(f);
    return buf;
}

MG_TEST(route_prints_plan_rejection_and_errors)
{
    const char *cfg = MG_SOURCE_DIR "/examples/policy-regional.json5";
    char *req = put("req.json",
                    "{ \"model\": \"default\", \"prompt_tokens\": 1200, \"data_region\": \"eu\" }");
    char *state =
        put("state.json5", "{ models: { 'lmstudio/qwen3-coder-30b': { healthy: false } } }");
    int rc;
    char *out = capture_route(cfg, req, state, &rc);
    MG_CHECK_INT(rc, 0);
    CHECK_CONTAINS(out, "/policies/regional.lua  sha256=");
    CHECK_CONTAINS(
        out,
        "request   model=default endpoint=chat prompt_tokens=1200 stream=no tools=no images=no "
        "data_region=eu\n");
    CHECK_CONTAINS(
        out,
        "plan      1. lmstudio/qwen3-coder-30b\n          2. mistral-eu/mistral-large-latest\n");
    CHECK_CONTAINS(out, "trace     region eu dropped "
                        "openrouter-us/minimax/minimax-m2.1,anthropic/claude-sonnet-4-5\n");
    CHECK_CONTAINS(out, "(nothing was sent)");
    free(out);
    free(req);

    req =
        put("req2.json", "{ \"model\": \"anthropic/claude-sonnet-4-5\", \"data_region\": \"eu\" }");
    out = capture_route(cfg, req, NULL, &rc);
    MG_CHECK_INT(rc, 0);
    CHECK_CONTAINS(
        out,
        "rejected  403 region_not_allowed: no candidate for model anthropic/claude-sonnet-4-5");
    free(out);
    free(req);

    req = put("req3.json", "{ \"model\": 42 }");
    out = capture_route(cfg, req, NULL, &rc);
    MG_CHECK_INT(rc, 2);
    free(out);
    free(req);

    char *c2 =
        put("c2.json5",
            "{ models: { mode: 'replace', providers: { lm: { baseUrl: 'http://127.0.0.1:1/v1', "
            "api: 'openai-completions', models: [{ id: 'a' }] } } }, gateway: { policy: 'loop.lua' "
            "} }");
    free(put(
        "loop.lua",
        "function route(req) if req.model == 'x' then while true do end end return 'lm/a' end"));
    req = put("req4.json", "{ \"model\": \"x\", \"max_output_tokens\": 10 }");
    out = capture_route(c2, req, NULL, &rc);
    MG_CHECK_INT(rc, 1);
    CHECK_CONTAINS(out, "error     policy_error: loop.lua:1: CPU budget of 5 ms exceeded\n");
    free(out);
    free(req);
    free(c2);
    free(state);
}

MG_TEST(tcase_from_json_reads_every_field)
{
    char *req = put("full.json",
                    "{ model: 'm', endpoint: 'messages', prompt_tokens: 5, max_output_tokens: 7,"
                    " has_tools: true, has_images: true, stream: true, headers: { 'X-A': 'b' },"
                    " metadata: { team: 'x', n: 3 }, key_id: 'k', data_region: 'eu',"
                    " allowed_regions: ['eu', 'us'], gateway_regions: ['eu'] }");
    char *state = put(
        "full_state.json",
        "{ models: { m: { healthy: false, cooling_down: true, cooldown_until_ms: 99,"
        " latency_ms: 1.5, ttft_ms: 2, in_flight: 4, error_rate: 0.25, last_error: 'timeout' } },"
        " providers: { p: { healthy: true } } }");
    mg_tcase_t *c = mg_xcalloc(1, sizeof *c);
    char err[256];
    MG_CHECK_INT(mg_tcase_from_json(req, state, c, err, sizeof err), 0);
    MG_CHECK_STR(c->in.model, "m");
    MG_CHECK_STR(c->in.endpoint, "messages");
    MG_CHECK_INT(c->in.prompt_tokens, 5);
    MG_CHECK_INT(c->in.max_output_tokens, 7);
    MG_CHECK(c->in.has_tools && c->in.has_images && c->in.stream);
    MG_CHECK_INT(c->in.n_headers, 1);
    MG_CHECK_STR(c->in.headers[0].name, "x-a");
    MG_CHECK_STR(c->in.headers[0].value, "b");
    MG_CHECK_INT(c->in.n_metadata, 2);
    MG_CHECK_STR(c->in.key_id, "k");
    MG_CHECK_STR(c->in.data_region, "eu");
    MG_CHECK_INT(c->in.n_allowed_regions, 2);
    MG_CHECK_STR(c->in.allowed_regions[1], "us");
    MG_CHECK_INT(c->in.n_gateway_regions, 1);
    MG_CHECK_INT(c->live.n, 2);
    const mg_live_entry_t *e =
        c->live.entries[0].provider ? &c->live.entries[1] : &c->live.entries[0];
    MG_CHECK_STR(e->name, "m");
    MG_CHECK(!e->st.healthy && e->st.cooling_down);
    MG_CHECK_INT(e->st.cooldown_until_ms, 99);
    MG_CHECK(e->st.latency_ms_p50 == 1.5 && e->st.ttft_ms_p50 == 2.0);
    MG_CHECK_INT(e->st.in_flight, 4);
    MG_CHECK(e->st.error_rate == 0.25);
    MG_CHECK_STR(e->st.last_error_class, "timeout");
    mg_tcase_clear(c);
    free(state);
    state = put("bad_state.json", "{ models: { m: { healthy: 'yes' } } }");
    MG_CHECK_INT(mg_tcase_from_json(req, state, c, err, sizeof err), -1);
    MG_CHECK(strstr(err, "state.models[\"m\"].healthy: expected true or false") != NULL);
    mg_tcase_clear(c);
    free(c);
    free(req);
    free(state);
}

/* Unit tests for ir.c: the arena, error reading and writing in every format we know, the
 * collector's block rules, and the small shared helpers. */
#include "ir.h"
#include "ir_testlib.h"
#include "mg_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

MG_TEST(arena_allocates_zeroed_aligned_and_frees_everything)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i * 37 % 300) + 1;
        unsigned char *p = mg_ir_alloc(a, n);
        MG_CHECK(((uintptr_t)p % _Alignof(max_align_t)) == 0);
        for (size_t k = 0; k < n; k++)
            MG_CHECK(p[k] == 0);
        memset(p, 0xAB, n);
    }
    char *big = mg_ir_alloc(a, 100000); /* its own chunk */
    big[99999] = 1;
    MG_CHECK_STR(mg_ir_strndup(a, "hello world", 5), "hello");
    MG_CHECK(mg_ir_strdup(a, NULL) == NULL);
    mg_ir_keep_json(a, cJSON_Parse("{\"a\":[1,2,3]}")); /* freed with the arena (LeakSanitizer) */
    size_t cap = 0;
    int *arr = NULL;
    for (size_t n = 0; n < 100; n++) {
        arr = mg_ir_grow(a, arr, n, &cap, sizeof *arr);
        arr[n] = (int)n;
    }
    for (int i = 0; i < 100; i++)
        MG_CHECK_INT(arr[i], i);
    mg_ir_arena_free(a);
    mg_ir_arena_free(NULL);
}

MG_TEST(data_urls)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    const char *mt = NULL, *data = NULL;
    MG_CHECK(mg_ir_parse_data_url(a, "data:image/jpeg;base64,QUJD", &mt, &data));
    MG_CHECK_STR(mt, "image/jpeg");
    MG_CHECK_STR(data, "QUJD");
    MG_CHECK(!mg_ir_parse_data_url(a, "https://x/y.png", &mt, &data));
    MG_CHECK(!mg_ir_parse_data_url(a, "data:text/plain,hello", &mt, &data)); /* not base64 */
    MG_CHECK(!mg_ir_parse_data_url(a, NULL, &mt, &data));
    char *u = mg_ir_data_url("image/png", "QUJD");
    MG_CHECK_STR(u, "data:image/png;base64,QUJD");
    free(u);
    mg_ir_arena_free(a);
}

MG_TEST(effort_and_budget_round_trip)
{
    mg_ir_effort_t e[] = {MG_IR_EFFORT_LOW, MG_IR_EFFORT_MEDIUM, MG_IR_EFFORT_HIGH};
    for (size_t i = 0; i < 3; i++)
        MG_CHECK_INT(mg_ir_budget_effort(mg_ir_effort_budget(e[i])), e[i]);
    MG_CHECK_INT(mg_ir_budget_effort(32000), MG_IR_EFFORT_HIGH);
    MG_CHECK_INT(mg_ir_budget_effort(-1), MG_IR_EFFORT_UNSET);
    MG_CHECK_INT(mg_ir_effort_parse("xhigh"), MG_IR_EFFORT_HIGH);
    MG_CHECK_INT(mg_ir_effort_parse("bogus"), MG_IR_EFFORT_UNSET);
    MG_CHECK(mg_ir_effort_name(MG_IR_EFFORT_UNSET) == NULL);
}

static void check_error(long status, const char *body, int want_status, const char *want_type,
                        const char *want_code, const char *want_msg)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_error_t e;
    mg_ir_error_from_body(a, status, body, strlen(body), &e);
    MG_CHECK_INT(e.status, want_status);
    if (want_type) MG_CHECK_STR(e.type, want_type);
    else MG_CHECK(e.type == NULL);
    if (want_code) MG_CHECK_STR(e.code, want_code);
    else MG_CHECK(e.code == NULL);
    MG_CHECK_STR(e.message, want_msg);
    mg_ir_arena_free(a);
}

MG_TEST(error_bodies_in_every_known_format)
{
    /* OpenAI */
    check_error(429, "{\"error\":{\"message\":\"Slow down\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}",
                429, "requests", "rate_limit_exceeded", "Slow down");
    check_error(400, "{\"error\":{\"message\":\"This model's maximum context length is 8 tokens.\",\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}",
                400, "invalid_request_error", "context_length_exceeded", "This model's maximum context length is 8 tokens.");
    /* Anthropic */
    check_error(529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},\"request_id\":\"req_1\"}",
                529, "overloaded_error", NULL, "Overloaded");
    check_error(400, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: 210000 tokens > 200000 maximum\"}}",
                400, "invalid_request_error", "context_length_exceeded", "prompt is too long: 210000 tokens > 200000 maximum");
    /* vLLM <= 0.15, unwrapped with an int code; in a stream (status 0) the code gives 400 */
    check_error(0, "{\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}",
                400, "BadRequestError", NULL, "bad");
    /* llama.cpp */
    check_error(400, "{\"error\":{\"code\":400,\"message\":\"request (4390 tokens) exceeds the available context size (4096 tokens)\",\"type\":\"exceed_context_size_error\"}}",
                400, "exceed_context_size_error", "context_length_exceeded",
                "request (4390 tokens) exceeds the available context size (4096 tokens)");
    /* LM Studio: error is a string */
    check_error(400, "{\"error\":\"Model is unloaded.\"}", 400, NULL, NULL, "Model is unloaded.");
    /* OpenRouter mid-stream: numeric code */
    check_error(200, "{\"error\":{\"code\":502,\"message\":\"Provider returned error\",\"metadata\":{\"provider_name\":\"x\"}}}",
                502, NULL, NULL, "Provider returned error");
    /* Responses `error` event and response.failed */
    check_error(0, "{\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Too many\",\"param\":null}", 429, NULL,
                "rate_limit_exceeded", "Too many");
    check_error(0, "{\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}",
                500, NULL, "server_error", "boom");
    /* Not JSON, and empty */
    check_error(502, "  <html>Bad Gateway</html>\n", 502, NULL, NULL, "<html>Bad Gateway</html>");
    check_error(503, "", 503, NULL, NULL, "upstream error");
}

/* Upstream JSON is parsed under a budget: millions of tiny values (64 bytes of node each) are
 * refused, not built; an error body past MG_IR_ERROR_JSON_MAX is read as text, unparsed. */
MG_TEST(upstream_json_is_parsed_within_a_budget)
{
    size_t n = 2 * (MG_IR_PARSE_MAX_BYTES / 64) + 2; /* about twice the budget in nodes */
    char *text = malloc(2 * n + 1);
    text[0] = '[';
    for (size_t i = 1; i < 2 * n - 1; i += 2) {
        text[i] = '0';
        text[i + 1] = ',';
    }
    text[2 * n - 1] = '0';
    text[2 * n] = ']';
    MG_CHECK(mg_ir_parse_text(text, 2 * n + 1) == NULL);
    MG_CHECK(mg_ir_parse_too_large());
    cJSON *small = mg_ir_parse_text("[0,0,0]", 7); /* the budget is per parse */
    MG_CHECK(cJSON_GetArraySize(small) == 3);
    MG_CHECK(!mg_ir_parse_too_large());
    cJSON_Delete(small);
    free(text);

    size_t big = MG_IR_ERROR_JSON_MAX + 64;
    char *body = malloc(big + 1);
    int head = snprintf(body, big + 1, "{\"error\":{\"message\":\"bad\",\"pad\":\"");
    memset(body + head, 'x', big - head - 3);
    memcpy(body + big - 3, "\"}}", 3);
    body[big] = '\0';
    cJSON *whole = mg_ir_parse_text(body, big); /* valid JSON, text-heavy: within budget */
    MG_CHECK(whole != NULL);
    cJSON_Delete(whole);
    MG_CHECK(mg_ir_parse_error_body(body, big) == NULL);
    MG_CHECK(mg_ir_parse_error_body(body, 0) == NULL);
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_error_t e;
    mg_ir_error_from_body(a, 400, body, big, &e);
    MG_CHECK_INT(strlen(e.message), 500); /* its first bytes, as text */
    MG_CHECK(strncmp(e.message, "{\"error\":{\"message\":\"bad\"", 25) == 0);
    mg_ir_arena_free(a);
    free(body);
}

MG_TEST(error_from_json_rejects_non_errors)
{
    cJSON *j = cJSON_Parse("{\"id\":\"x\",\"choices\":[]}");
    mg_ir_error_t e = {0};
    MG_CHECK(!mg_ir_error_from_json(j, 0, &e));
    MG_CHECK(!mg_ir_error_from_json(NULL, 0, &e));
    cJSON_Delete(j);
    j = cJSON_Parse("{\"error\":null}");
    MG_CHECK(!mg_ir_error_from_json(j, 0, &e));
    cJSON_Delete(j);
}

MG_TEST(error_types_per_api)
{
    MG_CHECK_STR(mg_ir_error_type(MG_API_ANTHROPIC_MESSAGES, 529, NULL), "overloaded_error");
    MG_CHECK_STR(mg_ir_error_type(MG_API_ANTHROPIC_MESSAGES, 500, "server_error"), "api_error");
    MG_CHECK_STR(mg_ir_error_type(MG_API_ANTHROPIC_MESSAGES, 429, "rate_limit_error"), "rate_limit_error");
    MG_CHECK_STR(mg_ir_error_type(MG_API_ANTHROPIC_MESSAGES, 413, NULL), "request_too_large");
    MG_CHECK_STR(mg_ir_error_type(MG_API_OPENAI_COMPLETIONS, 529, "overloaded_error"), "server_error");
    MG_CHECK_STR(mg_ir_error_type(MG_API_OPENAI_COMPLETIONS, 400, NULL), "invalid_request_error");
    MG_CHECK_STR(mg_ir_error_type(MG_API_OPENAI_RESPONSES, 401, NULL), "authentication_error");
    mg_ir_error_t e = {429, NULL, NULL, "x"};
    MG_CHECK_STR(mg_ir_error_code(&e), "rate_limit_exceeded");
    e = (mg_ir_error_t){500, "overloaded_error", NULL, "x"};
    MG_CHECK_STR(mg_ir_error_code(&e), "server_error");
}

MG_TEST(error_bodies_for_each_client)
{
    mg_ir_error_t e = {529, "overloaded_error", NULL, "Overloaded \"now\""};
    char *s = mg_ir_encode_error(MG_API_ANTHROPIC_MESSAGES, &e);
    MG_CHECK_STR(s, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded \\\"now\\\"\"}}");
    free(s);
    s = mg_ir_encode_error(MG_API_OPENAI_COMPLETIONS, &e);
    MG_CHECK_STR(s, "{\"error\":{\"message\":\"Overloaded \\\"now\\\"\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    free(s);
    e = (mg_ir_error_t){400, "invalid_request_error", "context_length_exceeded", "too long"};
    s = mg_ir_encode_error(MG_API_OPENAI_RESPONSES, &e);
    MG_CHECK_STR(s, "{\"error\":{\"message\":\"too long\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"context_length_exceeded\"}}");
    free(s);
    /* Each body parses back to the same error. */
    for (int api = 0; api < 3; api++) {
        s = mg_ir_encode_error((mg_api_t)api, &e);
        mg_ir_arena_t *a = mg_ir_arena_new();
        mg_ir_error_t back;
        mg_ir_error_from_body(a, 400, s, strlen(s), &back);
        MG_CHECK_STR(back.message, "too long");
        MG_CHECK_INT(back.status, 400);
        mg_ir_arena_free(a);
        free(s);
    }
}

MG_TEST(collector_follows_block_rules)
{
    mg_ir_collector_t c;
    mg_ir_collector_init(&c);
    mg_ir_event_t evs[] = {
        {.type = MG_IR_EV_START, .id = "r1", .model = "m"},
        IR_REASON_EV("th"),
        IR_REASON_EV("ink"),
        {.type = MG_IR_EV_REASONING_SIGNATURE, .text = "sig", .text_len = 3},
        IR_TEXT_EV("a"),
        {.type = MG_IR_EV_BLOCK_END},
        IR_TEXT_EV("b"),
        IR_REFUSAL_EV("n"),
        IR_REFUSAL_EV("o"),
        {.type = MG_IR_EV_TOOL_CALL_START, .index = 0, .id = "c1", .name = "f"},
        {.type = MG_IR_EV_TOOL_CALL_START, .index = 1, .id = "c2", .name = "g"},
        {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = 0, .text = "{}", .text_len = 2},
        {.type = MG_IR_EV_FINISH, .finish = MG_IR_FINISH_TOOL_CALLS},
        {.type = MG_IR_EV_USAGE, .usage = {10, 5, 2, -1, -1}},
        {.type = MG_IR_EV_END},
        IR_TEXT_EV("ignored after end"),
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(evs); i++)
        mg_ir_collector_push(&c, &evs[i]);
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    mg_ir_collector_response(&c, a, &r);
    MG_CHECK_INT(r.n_parts, 6);
    MG_CHECK_STR(r.parts[0].text, "think");
    MG_CHECK_STR(r.parts[0].signature, "sig");
    MG_CHECK_STR(r.parts[1].text, "a");
    MG_CHECK_STR(r.parts[2].text, "b"); /* after BLOCK_END: a new part */
    MG_CHECK(!r.parts[2].refusal);
    MG_CHECK_STR(r.parts[3].text, "no"); /* a refusal after text: a part of its own */
    MG_CHECK(r.parts[3].type == MG_IR_PART_TEXT && r.parts[3].refusal);
    MG_CHECK_STR(r.parts[4].arguments, "{}");
    MG_CHECK_STR(r.parts[5].arguments, "{}"); /* none received: "{}" */
    MG_CHECK_STR(r.parts[5].name, "g");
    MG_CHECK_INT(r.finish, MG_IR_FINISH_TOOL_CALLS);
    MG_CHECK_INT(r.usage.cache_read, 2);
    MG_CHECK(c.ended && !c.failed);
    mg_ir_arena_free(a);
    mg_ir_collector_free(&c);
}

MG_TEST(content_events_and_effective_finish)
{
    mg_ir_event_t e = IR_TEXT_EV("x");
    MG_CHECK(mg_ir_event_is_content(&e));
    e = IR_TEXT_EV("");
    MG_CHECK(!mg_ir_event_is_content(&e));
    e = IR_REASON_EV("r");
    MG_CHECK(mg_ir_event_is_content(&e));
    e = (mg_ir_event_t){.type = MG_IR_EV_TOOL_CALL_START, .id = "c", .name = "f"};
    MG_CHECK(mg_ir_event_is_content(&e));
    mg_ir_event_type_t not_content[] = {MG_IR_EV_START, MG_IR_EV_REASONING_SIGNATURE, MG_IR_EV_BLOCK_END,
                                        MG_IR_EV_FINISH, MG_IR_EV_USAGE, MG_IR_EV_END, MG_IR_EV_ERROR};
    for (size_t i = 0; i < MG_ARRAY_LEN(not_content); i++) {
        e = (mg_ir_event_t){.type = not_content[i], .text = "x", .text_len = 1};
        MG_CHECK(!mg_ir_event_is_content(&e));
    }
    MG_CHECK_INT(mg_ir_effective_finish(MG_IR_FINISH_STOP, true), MG_IR_FINISH_TOOL_CALLS);
    MG_CHECK_INT(mg_ir_effective_finish(MG_IR_FINISH_LENGTH, true), MG_IR_FINISH_LENGTH);
    MG_CHECK_INT(mg_ir_effective_finish(MG_IR_FINISH_NONE, false), MG_IR_FINISH_STOP);
}

MG_TEST(translate_response_rejects_bad_bodies)
{
    char err[128] = "";
    mg_ir_output_opts_t o = {.created = 1};
    MG_CHECK(mg_ir_translate_response(MG_API_OPENAI_COMPLETIONS, MG_API_ANTHROPIC_MESSAGES, "nope", 4, NULL, &o, err,
                                      sizeof err) == NULL);
    MG_CHECK(strstr(err, "not JSON") != NULL);
    const char *body = "{\"error\":{\"message\":\"quota\",\"type\":\"insufficient_quota\"}}";
    MG_CHECK(mg_ir_translate_response(MG_API_OPENAI_COMPLETIONS, MG_API_ANTHROPIC_MESSAGES, body, strlen(body), NULL,
                                      &o, err, sizeof err) == NULL);
    MG_CHECK(strstr(err, "quota") != NULL);
}

MG_TEST_MAIN()

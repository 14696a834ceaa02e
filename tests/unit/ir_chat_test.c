/* Unit tests for api_openai_chat.c: the stream decoder's handling of what OpenAI-compatible
 * servers do (think tags cut anywhere, both reasoning field names, tool-call shapes, every error
 * shape inside a 200 stream), the stream encoder's framing rules, and request edge cases. */
#include "api_openai_chat.h"
#include "ir_testlib.h"
#include "mg_test.h"
#include "translate_pipe.h"

#include <stdlib.h>
#include <string.h>

#define CHAT MG_API_OPENAI_COMPLETIONS

/* Concatenation of the r"…" (reasoning) or t"…" (text) entries of a decode log. */
static char *joined(const char *log, char kind)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, "");
    char pat[3] = {kind, '"', 0};
    for (const char *p = log; (p = strstr(p, pat));) {
        if (p != log && p[-1] != ' ') {
            p++;
            continue;
        }
        p += 2;
        const char *q = strchr(p, '"');
        while (q && q[1] && q[1] != ' ')
            q = strchr(q + 1, '"');
        if (!q) break;
        mg_buf_append(&b, p, (size_t)(q - p));
        p = q + 1;
    }
    return mg_buf_steal(&b);
}

static char *content_stream(const char *const *pieces, size_t n)
{
    mg_buf_t b = {0};
    for (size_t i = 0; i < n; i++) {
        mg_buf_t d = {0};
        mg_buf_puts(&d, "{\"content\":");
        mg_buf_json_str(&d, pieces[i]);
        mg_buf_puts(&d, "}");
        ir_chat_chunk(&b, d.data, NULL);
        mg_buf_free(&d);
    }
    ir_chat_chunk(&b, "{}", "\"stop\"");
    mg_buf_puts(&b, "data: [DONE]\n\n");
    return mg_buf_steal(&b);
}

MG_TEST(think_tags_split_wherever_the_deltas_cut)
{
    const char *content = "\n<think>\nplan A</think>\n\nHello <think>x</think>";
    size_t n = strlen(content);
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j += 3) {
            char *a = mg_xstrndup(content, i), *b = mg_xstrndup(content + i, j - i), *c = mg_xstrdup(content + j);
            const char *pieces[3] = {a, b, c};
            char *sse = content_stream(pieces, 3);
            char *log = ir_decode_log(CHAT, sse, 0, NULL);
            char *r = joined(log, 'r'), *t = joined(log, 't');
            if (strcmp(r, "plan A") != 0 || strcmp(t, "Hello <think>x</think>") != 0) {
                fprintf(stderr, "  cut at %zu,%zu: reasoning \"%s\" text \"%s\"\n  log: %s\n", i, j, r, t, log);
                mg_test_failures++;
                i = n + 1;
                j = n + 1;
            }
            free(r);
            free(t);
            free(log);
            free(sse);
            free(a);
            free(b);
            free(c);
        }
    }
}

MG_TEST(think_tags_only_at_the_start_and_optional)
{
    const char *p1[] = {"Hi <think>not reasoning</think>"};
    char *sse = content_stream(p1, 1);
    char *log = ir_decode_log(CHAT, sse, 0, NULL);
    MG_CHECK(strstr(log, "t\"Hi <think>not reasoning</think>\"") != NULL);
    MG_CHECK(!strstr(log, " r\""));
    free(log);
    free(sse);
    const char *p2[] = {"<think>unclosed"};
    sse = content_stream(p2, 1);
    log = ir_decode_log(CHAT, sse, 0, NULL);
    MG_CHECK(strstr(log, "r\"unclosed\" finish:stop") != NULL); /* flushed before the finish */
    free(log);
    free(sse);
    const char *p3[] = {"<think>r</think>t"};
    sse = content_stream(p3, 1);
    mg_ir_decode_opts_t o = {.no_think_tags = true};
    log = ir_decode_log(CHAT, sse, 0, &o);
    MG_CHECK(strstr(log, "t\"<think>r</think>t\"") != NULL);
    free(log);
    free(sse);
    const char *p4[] = {"<thi"}; /* a partial tag that never completes is text */
    sse = content_stream(p4, 1);
    log = ir_decode_log(CHAT, sse, 0, NULL);
    MG_CHECK(strstr(log, "t\"<thi\" finish:stop") != NULL);
    free(log);
    free(sse);
}

MG_TEST(both_reasoning_field_names_never_twice)
{
    mg_buf_t b = {0};
    ir_chat_chunk(&b, "{\"role\":\"assistant\",\"content\":\"\"}", NULL);
    ir_chat_chunk(&b, "{\"reasoning_content\":\"a\"}", NULL);
    ir_chat_chunk(&b, "{\"reasoning\":\"b\"}", NULL);
    ir_chat_chunk(&b, "{\"reasoning_content\":\"c\",\"reasoning\":\"c\"}", NULL);
    ir_chat_chunk(&b, "{\"content\":\"ok\"}", "\"stop\"");
    char *log = ir_decode_log(CHAT, b.data, 0, NULL);
    MG_CHECK_STR(log, "start[c1|m] r\"a\" r\"b\" r\"c\" t\"ok\" finish:stop end");
    free(log);
    mg_buf_free(&b);
}

MG_TEST(tool_call_shapes)
{
    mg_buf_t b = {0};
    /* Ollama style: a whole call in one chunk without index; then a second one. */
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]}", NULL);
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"id\":\"c2\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}", NULL);
    /* Servers that repeat id and name on every fragment of the same index. */
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":5,\"id\":\"c3\",\"type\":\"function\",\"function\":{\"name\":\"h\",\"arguments\":\"{\\\"x\\\"\"}}]}", NULL);
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":5,\"id\":\"c3\",\"function\":{\"name\":\"h\",\"arguments\":\":2}\"}}]}", NULL);
    /* No id at all: one is made up (unique: mg_codec_new_call_id). */
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":6,\"function\":{\"name\":\"k\",\"arguments\":\"\"}}]}", "\"tool_calls\"");
    char *log = ir_decode_log(CHAT, b.data, 0, NULL);
    const char *head = "start[c1|m] tc0[c1|f] a0\"{\"a\":1}\" tc1[c2|g] a1\"{}\" tc2[c3|h] a2\"{\"x\"\" a2\":2}\" "
                       "tc3[call_mg";
    MG_CHECK(strncmp(log, head, strlen(head)) == 0);
    MG_CHECK(strstr(log, "|k] finish:tool_calls end") != NULL);
    free(log);
    mg_buf_free(&b);
}

MG_TEST(errors_inside_200_streams)
{
    const char *cases[][2] = {
        {"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
         "err[500|server_error||boom]"},
        {"data: {\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}\n\n",
         "err[400|BadRequestError||bad]"},
        {"event: error\ndata: {\"error\":{\"message\":\"Input does not fit in context length.\"}}\n\n",
         "err[400||context_length_exceeded|Input does not fit in context length.]"},
        {"event: error\ndata: model crashed\n\n", "err[500|server_error||model crashed]"},
        {"data: {\"id\":\"g\",\"error\":{\"code\":502,\"message\":\"Provider returned error\"},\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\n",
         "err[502|||Provider returned error]"},
        {"data: {\"id\":\"g\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\n",
         "start[g|] err[502|server_error||the upstream reported finish_reason \"error\"]"},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        char *log = ir_decode_log(CHAT, cases[i][0], 0, NULL);
        MG_CHECK_STR(log, cases[i][1]);
        free(log);
    }
}

MG_TEST(end_of_stream_with_and_without_finish)
{
    mg_buf_t b = {0};
    ir_chat_chunk(&b, "{\"content\":\"hi\"}", "\"stop\"");
    char *log = ir_decode_log(CHAT, b.data, 0, NULL); /* no [DONE]: still a clean end */
    MG_CHECK_STR(log, "start[c1|m] t\"hi\" finish:stop end");
    free(log);
    mg_buf_reset(&b);
    ir_chat_chunk(&b, "{\"content\":\"hi\"}", NULL);
    log = ir_decode_log(CHAT, b.data, 0, NULL);
    MG_CHECK_STR(log, "start[c1|m] t\"hi\" err[502|server_error|stream_broken|the upstream stream ended before the answer was complete]");
    free(log);
    /* Non-JSON, keep-alive comments and usage: null are ignored. */
    log = ir_decode_log(CHAT, ": ping\n\ndata: not json\n\ndata: {\"id\":\"x\",\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n", 0, NULL);
    MG_CHECK_STR(log, "start[x|] end");
    free(log);
    mg_buf_free(&b);
}

MG_TEST(encoder_framing)
{
    mg_ir_event_t evs[] = {
        IR_TEXT_EV("early"), /* before START: the role chunk still comes first */
        {.type = MG_IR_EV_START, .id = "ignored", .model = "m"},
        IR_REASON_EV("why"),
        {.type = MG_IR_EV_TOOL_CALL_START, .index = 0, .id = "c1", .name = "f"},
        {.type = MG_IR_EV_FINISH, .finish = MG_IR_FINISH_STOP},
        {.type = MG_IR_EV_USAGE, .usage = {10, 4, -1, -1, -1}},
        {.type = MG_IR_EV_END},
        IR_TEXT_EV("after the end"),
    };
    mg_ir_output_opts_t o = {.id = "chatcmpl-x", .created = 5};
    char *out = ir_encode(CHAT, &o, evs, MG_ARRAY_LEN(evs));
    const char *role = strstr(out, "\"role\":\"assistant\"");
    MG_CHECK(role && role < strstr(out, "early"));
    MG_CHECK_INT(ir_count(out, "\"role\""), 1);
    MG_CHECK(strstr(out, "{\"reasoning_content\":\"why\"}") != NULL);
    /* A call without arguments gets "{}"; a STOP with calls is tool_calls. */
    MG_CHECK(strstr(out, "\"function\":{\"arguments\":\"{}\"}") != NULL);
    MG_CHECK(strstr(out, "\"finish_reason\":\"tool_calls\"") != NULL);
    MG_CHECK(!strstr(out, "\"usage\"")); /* the client did not ask for it */
    MG_CHECK(strstr(out, "data: [DONE]\n\n") == out + strlen(out) - 14);
    MG_CHECK(!strstr(out, "after the end"));
    free(out);
    o.include_usage = true;
    o.strip_reasoning = true;
    out = ir_encode(CHAT, &o, evs, MG_ARRAY_LEN(evs));
    MG_CHECK(strstr(out, "\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":4,\"total_tokens\":14}}") != NULL);
    MG_CHECK(!strstr(out, "reasoning"));
    free(out);
}

MG_TEST(encoder_error_ends_without_done)
{
    mg_ir_event_t evs[] = {
        {.type = MG_IR_EV_START, .id = "c", .model = "m"},
        IR_TEXT_EV("par"),
        {.type = MG_IR_EV_ERROR, .error = {529, "overloaded_error", NULL, "Overloaded"}},
        {.type = MG_IR_EV_END},
    };
    mg_ir_output_opts_t o = {0};
    char *out = ir_encode(CHAT, &o, evs, MG_ARRAY_LEN(evs));
    MG_CHECK(strstr(out, "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n") != NULL);
    MG_CHECK(!strstr(out, "[DONE]"));
    free(out);
}

static cJSON *translate_req(mg_api_t from, mg_api_t to, const char *json, const mg_ir_request_opts_t *o, char *err)
{
    cJSON *body = cJSON_Parse(json);
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_request_t ir;
    cJSON *out = NULL;
    if (mg_ir_decode_request(from, body, a, &ir, err, 200) == 0) out = mg_ir_encode_request(to, &ir, o, err, 200);
    mg_ir_arena_free(a);
    cJSON_Delete(body);
    return out;
}

MG_TEST(request_edge_cases)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    /* max_completion_tokens stays what the client used; extras stay for the same API only. */
    cJSON *out = translate_req(CHAT, CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":9,\"seed\":3}", &o, err);
    MG_CHECK(out && mg_ir_jint(out, "max_completion_tokens", -1) == 9 && mg_ir_jint(out, "seed", -1) == 3);
    cJSON_Delete(out);
    out = translate_req(MG_API_ANTHROPIC_MESSAGES, CHAT, "{\"model\":\"m\",\"max_tokens\":9,\"top_k\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(out && mg_ir_jint(out, "max_tokens", -1) == 9 && !mg_ir_jget(out, "top_k"));
    cJSON_Delete(out);
    o.prefer_max_completion_tokens = true;
    out = translate_req(MG_API_ANTHROPIC_MESSAGES, CHAT, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(out && mg_ir_jint(out, "max_completion_tokens", -1) == 9);
    cJSON_Delete(out);
    o.prefer_max_completion_tokens = false;
    /* n > 1 and audio cannot go to the other APIs. */
    out = translate_req(CHAT, MG_API_ANTHROPIC_MESSAGES, "{\"model\":\"m\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(out == NULL && strstr(err, "n > 1"));
    out = translate_req(CHAT, MG_API_OPENAI_RESPONSES,
                        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}", &o, err);
    MG_CHECK(out == NULL && strstr(err, "input_audio"));
    out = translate_req(CHAT, CHAT,
                        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}", &o, err);
    MG_CHECK(out != NULL); /* same API: passed through */
    cJSON_Delete(out);
    /* OpenRouter-style reasoning object reaches Anthropic as thinking. */
    out = translate_req(CHAT, MG_API_ANTHROPIC_MESSAGES, "{\"model\":\"m\",\"reasoning\":{\"effort\":\"medium\"},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(out && mg_ir_jint(mg_ir_jget(out, "thinking"), "budget_tokens", -1) == 2048);
    cJSON_Delete(out);
    /* Malformed requests are refused with a reason. */
    MG_CHECK(translate_req(CHAT, CHAT, "{\"messages\":{}}", &o, err) == NULL && strstr(err, "array"));
    MG_CHECK(translate_req(CHAT, CHAT, "{\"messages\":[{\"content\":\"x\"}]}", &o, err) == NULL && strstr(err, "role"));
    MG_CHECK(translate_req(CHAT, CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", &o, err) == NULL);
    MG_CHECK(translate_req(CHAT, CHAT, "[1]", &o, err) == NULL);
}

MG_TEST(response_edge_cases)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    char err[200];
    /* Arguments as an object (some servers), no id, content as parts, think tags in content. */
    cJSON *j = cJSON_Parse("{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"<think>r</think>ok\"}],"
                           "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},\"finish_reason\":\"stop\"}]}");
    MG_CHECK(mg_openai_chat_decode_response(j, a, &(mg_ir_decode_opts_t){0}, &r, err, sizeof err) == 0);
    MG_CHECK_INT(r.n_parts, 3);
    MG_CHECK(r.parts[0].type == MG_IR_PART_REASONING && strcmp(r.parts[0].text, "r") == 0);
    MG_CHECK(r.parts[1].type == MG_IR_PART_TEXT && strcmp(r.parts[1].text, "ok") == 0);
    MG_CHECK_STR(r.parts[2].arguments, "{\"a\":1}");
    MG_CHECK(strncmp(r.parts[2].id, "call_mg", 7) == 0); /* made up */
    cJSON *out = mg_openai_chat_encode_response(&r, &(mg_ir_output_opts_t){.created = 1});
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(cJSON_GetArrayItem(mg_ir_jget(out, "choices"), 0), "message"), "reasoning_content"), "r");
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(mg_ir_jget(out, "choices"), 0), "finish_reason"), "tool_calls");
    cJSON_Delete(out);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"choices\":[]}");
    MG_CHECK(mg_openai_chat_decode_response(j, a, &(mg_ir_decode_opts_t){0}, &r, err, sizeof err) != 0);
    cJSON_Delete(j);
    mg_ir_arena_free(a);
}

/* A Chat upstream's refusal (message.refusal, delta.refusal) is a refusal in the model, not text
 * (think tags are not looked for in it), and goes back out as message.refusal with null content,
 * or delta.refusal: the openai SDK's parse() helpers read it there. */
MG_TEST(refusals_stay_refusals)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    char err[200];
    cJSON *j = cJSON_Parse("{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
                           "\"refusal\":\"<think>no</think>\"},\"finish_reason\":\"stop\"}]}");
    MG_CHECK(mg_openai_chat_decode_response(j, a, NULL, &r, err, sizeof err) == 0);
    MG_CHECK_INT(r.n_parts, 1);
    MG_CHECK(r.parts[0].type == MG_IR_PART_TEXT && r.parts[0].refusal);
    MG_CHECK_STR(r.parts[0].text, "<think>no</think>");
    cJSON *out = mg_openai_chat_encode_response(&r, &(mg_ir_output_opts_t){.created = 1});
    char *s = cJSON_PrintUnformatted(mg_ir_jget(cJSON_GetArrayItem(mg_ir_jget(out, "choices"), 0), "message"));
    MG_CHECK_STR(s, "{\"role\":\"assistant\",\"content\":null,\"refusal\":\"<think>no</think>\"}");
    cJSON_free(s);
    cJSON_Delete(out);
    cJSON_Delete(j);
    mg_ir_arena_free(a);

    mg_buf_t sse = {0};
    ir_chat_chunk(&sse, "{\"role\":\"assistant\",\"refusal\":\"\"}", NULL);
    ir_chat_chunk(&sse, "{\"refusal\":\"I can\"}", NULL);
    ir_chat_chunk(&sse, "{\"refusal\":\"not\"}", "\"stop\"");
    mg_buf_puts(&sse, "data: [DONE]\n\n");
    char *log = ir_decode_log(CHAT, sse.data, 0, NULL);
    MG_CHECK_STR(log, "start[c1|m] refusal\"I can\" refusal\"not\" finish:stop end");
    free(log);
    mg_buf_free(&sse);

    mg_ir_event_t evs[] = {IR_TEXT_EV("a"), IR_REFUSAL_EV("no"), {.type = MG_IR_EV_END}};
    char *outs = ir_encode(CHAT, &(mg_ir_output_opts_t){.id = "chatcmpl-x", .created = 5}, evs, MG_ARRAY_LEN(evs));
    MG_CHECK(strstr(outs, "\"delta\":{\"content\":\"a\"}") != NULL);
    MG_CHECK(strstr(outs, "\"delta\":{\"refusal\":\"no\"}") != NULL);
    free(outs);
}

/* Ollama and vLLM stream tool calls without ids. Each gets one made up that no other answer has
 * (Anthropic refuses a conversation holding two tool_use blocks of the same id, and `call_0` in
 * every answer made exactly that), and the same one in every event of its stream. */
MG_TEST(made_up_call_ids_are_unique_across_answers)
{
    mg_buf_t b = {0};
    ir_chat_chunk(&b, "{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}", NULL);
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}", NULL);
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":1,\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}", "\"tool_calls\"");
    mg_buf_puts(&b, "data: [DONE]\n\n");
    char *ids[4] = {0};
    for (int run = 0; run < 2; run++) {
        pipe_ctx_t p = {.enc = mg_ir_encoder_new(MG_API_OPENAI_RESPONSES, &(mg_ir_output_opts_t){.created = 1})};
        run_pipe(&p, CHAT, b.data, b.len, 7, false);
        int n = 0;
        for (size_t i = 0; i < p.col.n_parts; i++) {
            if (p.col.parts[i].type != MG_IR_PART_TOOL_CALL || n >= 2) continue;
            ids[run * 2 + n++] = mg_xstrdup(p.col.parts[i].id);
        }
        MG_CHECK_INT(n, 2);
        /* Responses names a call in output_item.added, output_item.done and response.completed. */
        MG_CHECK_INT(ir_count(p.out.data, "\"call_id\":"), 6);
        for (int k = 0; k < n; k++) {
            char want[128];
            snprintf(want, sizeof want, "\"call_id\":\"%s\"", ids[run * 2 + k]);
            MG_CHECK_INT(ir_count(p.out.data, want), 3);
        }
        mg_ir_collector_free(&p.col);
        mg_ir_encoder_free(p.enc);
        mg_buf_free(&p.out);
    }
    for (int i = 0; i < 4; i++) {
        MG_CHECK(ids[i] && strncmp(ids[i], "call_", 5) == 0);
        for (int k = 0; k < i; k++)
            MG_CHECK(ids[i] && ids[k] && strcmp(ids[i], ids[k]) != 0);
    }
    for (int i = 0; i < 4; i++)
        free(ids[i]);
    mg_buf_free(&b);
    /* Whole answers alike. */
    mg_ir_arena_t *a = mg_ir_arena_new();
    char err[200];
    cJSON *j = cJSON_Parse("{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                           "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
                           "{\"id\":\"\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}");
    mg_ir_response_t r1, r2;
    MG_CHECK(mg_openai_chat_decode_response(j, a, NULL, &r1, err, sizeof err) == 0);
    MG_CHECK(mg_openai_chat_decode_response(j, a, NULL, &r2, err, sizeof err) == 0);
    MG_CHECK(r1.n_parts == 2 && r2.n_parts == 2);
    if (r1.n_parts == 2 && r2.n_parts == 2) {
        const char *v[4] = {r1.parts[0].id, r1.parts[1].id, r2.parts[0].id, r2.parts[1].id};
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < i; k++)
                MG_CHECK(strcmp(v[i], v[k]) != 0);
    }
    cJSON_Delete(j);
    mg_ir_arena_free(a);
}

/* A Chat client's file part in a tool message: refused for another API (it was dropped), kept
 * for Chat, where the content becomes an array. */
MG_TEST(files_in_tool_messages)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    const char *req = "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"r\",\"arguments\":\"{}\"}}]},"
                      "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":[{\"type\":\"text\",\"text\":\"see\"},{\"type\":\"file\",\"file\":{\"file_id\":\"f1\"}}]}]}";
    MG_CHECK(translate_req(CHAT, MG_API_OPENAI_RESPONSES, req, &o, err) == NULL);
    MG_CHECK(strstr(err, "content of type \"file\" cannot be sent to openai-responses") != NULL);
    cJSON *out = translate_req(CHAT, CHAT, req, &o, err);
    char *s = cJSON_PrintUnformatted(cJSON_GetArrayItem(mg_ir_jget(out, "messages"), 1));
    MG_CHECK_STR(s, "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":[{\"type\":\"text\",\"text\":\"see\"},{\"type\":\"file\",\"file\":{\"file_id\":\"f1\"}}]}");
    cJSON_free(s);
    cJSON_Delete(out);
}

/* Off-spec servers stream a call's arguments as a JSON object rather than its text: read as the
 * whole-answer decoder reads them, not lost to "{}". */
MG_TEST(streamed_arguments_as_an_object)
{
    mg_buf_t b = {0};
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"w\",\"arguments\":{\"city\":\"Paris\"}}}]}", NULL);
    ir_chat_chunk(&b, "{\"tool_calls\":[{\"index\":1,\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"v\",\"arguments\":[1]}}]}", "\"tool_calls\"");
    char *log = ir_decode_log(CHAT, b.data, 0, NULL);
    MG_CHECK_STR(log, "start[c1|m] tc0[c1|w] a0\"{\"city\":\"Paris\"}\" tc1[c2|v] a1\"[1]\" finish:tool_calls end");
    free(log);
    mg_buf_free(&b);
}

/* Some compatible (local) servers end a cut answer with finish_reason "max_tokens": a length stop
 * (Anthropic max_tokens, Responses incomplete), not a normal one. */
MG_TEST(finish_reasons_of_compatible_servers)
{
    MG_CHECK(mg_openai_chat_parse_finish("length") == MG_IR_FINISH_LENGTH);
    MG_CHECK(mg_openai_chat_parse_finish("max_tokens") == MG_IR_FINISH_LENGTH);
    MG_CHECK(mg_openai_chat_parse_finish("eos") == MG_IR_FINISH_STOP);
    MG_CHECK(mg_openai_chat_parse_finish(NULL) == MG_IR_FINISH_NONE);
    mg_buf_t b = {0};
    ir_chat_chunk(&b, "{\"content\":\"cut\"}", "\"max_tokens\"");
    char *log = ir_decode_log(CHAT, b.data, 0, NULL);
    MG_CHECK_STR(log, "start[c1|m] t\"cut\" finish:length end");
    free(log);
    mg_buf_free(&b);
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    char err[100];
    cJSON *j = cJSON_Parse("{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"cut\"},\"finish_reason\":\"max_tokens\"}]}");
    MG_CHECK(mg_openai_chat_decode_response(j, a, NULL, &r, err, sizeof err) == 0 && r.finish == MG_IR_FINISH_LENGTH);
    cJSON *out = mg_ir_codec(MG_API_ANTHROPIC_MESSAGES)->encode_response(&r, &(mg_ir_output_opts_t){.created = 1});
    MG_CHECK_STR(mg_ir_jstr(out, "stop_reason"), "max_tokens");
    cJSON_Delete(out);
    cJSON_Delete(j);
    mg_ir_arena_free(a);
}

/* A Chat answer re-encoded for a Chat client (keep_upstream_id) whose upstream sent no id or
 * created still has both (OpenAI's schema requires them), whole and streamed. The answers Chat
 * clients get passed through (router.c, relay.c) are another matter. */
MG_TEST(re_encoded_answers_without_id_or_created_get_them)
{
    mg_ir_output_opts_t o = {.keep_upstream_id = true};
    mg_ir_part_t text = {.type = MG_IR_PART_TEXT, .text = "hi"};
    mg_ir_response_t r = {.parts = &text, .n_parts = 1, .finish = MG_IR_FINISH_STOP, .usage = MG_IR_USAGE_UNKNOWN};
    cJSON *out = mg_openai_chat_encode_response(&r, &o);
    MG_CHECK(strncmp(mg_ir_jstr(out, "id"), "chatcmpl-moongate-", 18) == 0);
    MG_CHECK(mg_ir_jint(out, "created", 0) > 0);
    cJSON_Delete(out);
    mg_ir_event_t evs[] = {{.type = MG_IR_EV_START, .model = "m"}, IR_TEXT_EV("hi"), {.type = MG_IR_EV_END}};
    char *s = ir_encode(CHAT, &o, evs, MG_ARRAY_LEN(evs));
    MG_CHECK_INT(ir_count(s, "\"id\":\"chatcmpl-moongate-"), 3); /* role, text, finish chunks */
    MG_CHECK(!strstr(s, "\"created\":0,"));
    free(s);
}

MG_TEST_MAIN()

/* Unit tests for api_openai_responses.c: input items into turns, what only the Responses API can
 * carry, the stream decoder against servers that skip deltas or stream nothing but the final
 * response, and the encoder's event order and numbering (what the SDK accumulator enforces). */
#include "api_openai_responses.h"
#include "ir_testlib.h"
#include "mg_test.h"

#include <stdlib.h>
#include <string.h>

#define RESP MG_API_OPENAI_RESPONSES
#define CHAT MG_API_OPENAI_COMPLETIONS

static cJSON *translate_req(mg_api_t from, mg_api_t to, const char *json, char *err)
{
    mg_ir_request_opts_t o = {.model = "up"};
    cJSON *body = cJSON_Parse(json);
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_request_t ir;
    cJSON *out = NULL;
    if (mg_ir_decode_request(from, body, a, &ir, err, 200) == 0) out = mg_ir_encode_request(to, &ir, &o, err, 200);
    mg_ir_arena_free(a);
    cJSON_Delete(body);
    return out;
}

MG_TEST(input_items_become_turns)
{
    char err[200] = "";
    cJSON *out = translate_req(RESP, CHAT,
        "{\"model\":\"m\",\"input\":["
        "{\"type\":\"reasoning\",\"id\":\"rs\",\"summary\":[]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"\"},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"done\"}]},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":[{\"type\":\"input_text\",\"text\":\"r\"}]},"
        "{\"role\":\"system\",\"content\":\"late system\"},"
        "{\"role\":\"user\",\"content\":\"u1\"},{\"role\":\"user\",\"content\":\"u2\"}]}", err);
    char *s = cJSON_PrintUnformatted(mg_ir_jget(out, "messages"));
    MG_CHECK_STR(s, "[{\"role\":\"system\",\"content\":\"late system\"},"
                    "{\"role\":\"assistant\",\"content\":\"done\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r\"},"
                    "{\"role\":\"user\",\"content\":\"u1\"},{\"role\":\"user\",\"content\":\"u2\"}]");
    cJSON_free(s);
    cJSON_Delete(out);
    /* A plain string input. */
    out = translate_req(RESP, MG_API_ANTHROPIC_MESSAGES, "{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"be brief\"}", err);
    s = cJSON_PrintUnformatted(out);
    MG_CHECK_STR(s, "{\"model\":\"up\",\"max_tokens\":4096,\"system\":\"be brief\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}");
    cJSON_free(s);
    cJSON_Delete(out);
}

MG_TEST(what_only_responses_can_carry)
{
    char err[200] = "";
    MG_CHECK(translate_req(RESP, CHAT, "{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"resp_9\"}", err) == NULL);
    MG_CHECK(strstr(err, "previous_response_id") != NULL);
    MG_CHECK(translate_req(RESP, MG_API_ANTHROPIC_MESSAGES, "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", err) == NULL);
    MG_CHECK(strstr(err, "web_search") != NULL);
    MG_CHECK(translate_req(RESP, CHAT, "{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}", err) == NULL);
    /* Same API: all of it passes, text.verbosity included. */
    cJSON *out = translate_req(RESP, RESP, "{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}],\"previous_response_id\":\"resp_9\","
                                           "\"tools\":[{\"type\":\"web_search\"}],\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":\"low\"},\"store\":true}", err);
    MG_CHECK(out != NULL);
    MG_CHECK_STR(mg_ir_jstr(out, "previous_response_id"), "resp_9");
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(out, "text"), "verbosity"), "low");
    MG_CHECK(cJSON_IsTrue(mg_ir_jget(out, "store")));
    cJSON_Delete(out);
    /* Function tools from other APIs are not strict; stop sequences have nowhere to go. */
    out = translate_req(CHAT, RESP, "{\"model\":\"m\",\"stop\":\"X\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", err);
    const cJSON *t0 = cJSON_GetArrayItem(mg_ir_jget(out, "tools"), 0);
    MG_CHECK(cJSON_IsFalse(mg_ir_jget(t0, "strict")));
    MG_CHECK(mg_ir_jget(t0, "parameters") != NULL);
    MG_CHECK(!mg_ir_jget(out, "stop"));
    cJSON_Delete(out);
    /* OpenAI refuses max_output_tokens under 16: another API's smaller limit is raised to 16; a
     * Responses client's own is sent as it came. */
    out = translate_req(MG_API_ANTHROPIC_MESSAGES, RESP, "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", err);
    MG_CHECK_INT(mg_ir_jint(out, "max_output_tokens", -1), 16);
    cJSON_Delete(out);
    out = translate_req(CHAT, RESP, "{\"model\":\"m\",\"max_tokens\":40,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", err);
    MG_CHECK_INT(mg_ir_jint(out, "max_output_tokens", -1), 40);
    cJSON_Delete(out);
    out = translate_req(RESP, RESP, "{\"model\":\"m\",\"max_output_tokens\":3,\"input\":\"x\"}", err);
    MG_CHECK_INT(mg_ir_jint(out, "max_output_tokens", -1), 3);
    cJSON_Delete(out);
}

MG_TEST(decoder_servers_without_deltas)
{
    /* Only .done events carry the content. */
    const char *sse =
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"x\",\"created_at\":7}}\n\n"
        "data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"message\"}}\n\n"
        "data: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"whole\"}]}}\n\n"
        "data: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\",\"arguments\":\"\"}}\n\n"
        "data: {\"type\":\"response.function_call_arguments.done\",\"output_index\":1,\"arguments\":\"{\\\"a\\\":1}\"}\n\n"
        "data: {\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"arguments\":\"{\\\"a\\\":1}\"}}\n\n"
        "data: {\"type\":\"keepalive\",\"sequence_number\":3}\n\n"
        "data: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}\n\n";
    char *log = ir_decode_log(RESP, sse, 4, NULL);
    MG_CHECK_STR(log, "start[resp_1|x] t\"whole\" / tc0[c|f] a0\"{\"a\":1}\" / usage[3,2,-1,-1,-1] finish:stop end");
    free(log);
    /* Nothing streamed but the final response. */
    log = ir_decode_log(RESP,
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"incomplete\","
        "\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"output\":[{\"type\":\"reasoning\",\"summary\":[{\"text\":\"p1\"},{\"text\":\"p2\"}]},"
        "{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"partial\"}]}]}}\n\n", 0, NULL);
    MG_CHECK_STR(log, "start[r|] r\"p1\n\np2\" / t\"partial\" / finish:length end");
    free(log);
    /* Calls only in the final response, without call_id: their ids stay apart (item id, else a
     * made-up one, unique), as when they are streamed. */
    log = ir_decode_log(RESP,
        "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",\"output\":["
        "{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call\",\"id\":\"fc_9\",\"name\":\"g\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call\",\"name\":\"h\",\"arguments\":\"{}\"}]}}\n\n", 0, NULL);
    const char *f = strstr(log, "tc0[call_mg"), *h = strstr(log, "tc2[call_mg");
    MG_CHECK(f && strstr(log, "tc1[fc_9|g]") && h);
    MG_CHECK(f && h && strncmp(f + 4, h + 4, (size_t)(strchr(f, '|') - f - 4)) != 0); /* apart */
    if (!f || !h) fprintf(stderr, "  %s\n", log);
    free(log);
}

MG_TEST(decoder_summary_parts_failures_and_truncation)
{
    const char *sse =
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n"
        "data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"reasoning\"}}\n\n"
        "data: {\"type\":\"response.reasoning_summary_part.added\",\"output_index\":0,\"summary_index\":0}\n\n"
        "data: {\"type\":\"response.reasoning_summary_text.delta\",\"output_index\":0,\"summary_index\":0,\"delta\":\"one\"}\n\n"
        "data: {\"type\":\"response.reasoning_summary_part.added\",\"output_index\":0,\"summary_index\":1}\n\n"
        "data: {\"type\":\"response.reasoning_summary_text.delta\",\"output_index\":0,\"summary_index\":1,\"delta\":\"two\"}\n\n"
        "data: {\"type\":\"response.output_text.delta\",\"output_index\":7,\"delta\":\"unknown item\"}\n\n"
        "data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"gone\"}}}\n\n"
        "data: {\"type\":\"response.completed\",\"response\":{}}\n\n";
    char *log = ir_decode_log(RESP, sse, 0, NULL);
    MG_CHECK_STR(log, "start[r|] r\"one\" r\"\n\n\" r\"two\" err[500||server_error|gone]");
    free(log);
    log = ir_decode_log(RESP, "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n", 0, NULL);
    MG_CHECK(strstr(log, "err[502|server_error|stream_broken|the upstream stream ended") != NULL);
    free(log);
    log = ir_decode_log(RESP, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\",\"message\":\"too long\"}}\n\n", 0, NULL);
    MG_CHECK_STR(log, "err[400|invalid_request_error|context_length_exceeded|too long]");
    free(log);
}

/* Checks the SDK accumulator's rules on an encoded stream: response.created first, consecutive
 * sequence numbers from 0, items added in output_index order before their parts and deltas. */
static void check_order(const char *out)
{
    mg_buf_t copy = {0};
    mg_buf_puts(&copy, out);
    int64_t seq = 0;
    int items = 0, events = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "data: ", 6) != 0) continue;
        cJSON *j = cJSON_Parse(line + 6);
        MG_CHECK(j != NULL);
        const char *type = mg_ir_jstr(j, "type");
        if (events++ == 0) MG_CHECK_STR(type, "response.created");
        MG_CHECK_INT(mg_ir_jint(j, "sequence_number", -1), seq);
        seq++;
        int64_t oi = mg_ir_jint(j, "output_index", -1);
        if (type && strcmp(type, "response.output_item.added") == 0) {
            MG_CHECK_INT(oi, items);
            items++;
        } else if (oi >= 0) {
            MG_CHECK(oi < items);
        }
        cJSON_Delete(j);
    }
    MG_CHECK(events > 0);
    mg_buf_free(&copy);
}

MG_TEST(encoder_order_numbering_and_terminal_states)
{
    mg_ir_event_t evs[] = {
        IR_REASON_EV("r1"),
        IR_TEXT_EV("t1"),
        {.type = MG_IR_EV_TOOL_CALL_START, .index = 0, .id = "c1", .name = "f"},
        {.type = MG_IR_EV_TOOL_CALL_START, .index = 1, .id = "c2", .name = "g"},
        {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = 1, .text = "{\"x\":1}", .text_len = 7},
        {.type = MG_IR_EV_BLOCK_END},
        IR_TEXT_EV("t2"),
        {.type = MG_IR_EV_FINISH, .finish = MG_IR_FINISH_LENGTH},
        {.type = MG_IR_EV_USAGE, .usage = {20, 10, 5, -1, 3}},
        {.type = MG_IR_EV_END},
    };
    mg_ir_output_opts_t o = {.id = "resp_T", .created = 9};
    char *out = ir_encode(RESP, &o, evs, MG_ARRAY_LEN(evs));
    check_order(out);
    MG_CHECK(strstr(out, "event: response.incomplete\n") != NULL);
    MG_CHECK(strstr(out, "\"incomplete_details\":{\"reason\":\"max_output_tokens\"}") != NULL);
    /* The argument-less call got "{}"; the ids are stable between the stream and the final output. */
    MG_CHECK(strstr(out, "\"item_id\":\"fc_T_2\",\"output_index\":2,\"delta\":\"{}\"") != NULL);
    MG_CHECK_INT(ir_count(out, "\"id\":\"msg_T_4\""), 3); /* added, done, final output */
    MG_CHECK(strstr(out, "\"usage\":{\"input_tokens\":20,\"input_tokens_details\":{\"cached_tokens\":5},\"output_tokens\":10,"
                         "\"output_tokens_details\":{\"reasoning_tokens\":3},\"total_tokens\":30}") != NULL);
    MG_CHECK_INT(ir_count(out, "event: "), ir_count(out, "data: "));
    free(out);
    o.strip_reasoning = true;
    out = ir_encode(RESP, &o, evs, MG_ARRAY_LEN(evs));
    check_order(out);
    MG_CHECK(!strstr(out, "reasoning_summary") && !strstr(out, "\"type\":\"reasoning\""));
    MG_CHECK(strstr(out, "\"id\":\"msg_T_0\"") != NULL);
    free(out);
    /* An error before anything else: only the `error` event (response.failed needs created). */
    mg_ir_event_t err[] = {{.type = MG_IR_EV_ERROR, .error = {503, NULL, NULL, "warming up"}}};
    out = ir_encode(RESP, &(mg_ir_output_opts_t){0}, err, 1);
    MG_CHECK_STR(out, "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"warming up\",\"param\":null,"
                      "\"error\":{\"type\":\"server_error\",\"code\":\"server_error\",\"message\":\"warming up\",\"param\":null},\"sequence_number\":0}\n\n");
    free(out);
    /* After content: error then response.failed, numbering continued. */
    mg_ir_event_t err2[] = {IR_TEXT_EV("x"), {.type = MG_IR_EV_ERROR, .error = {429, NULL, NULL, "slow"}}};
    out = ir_encode(RESP, &(mg_ir_output_opts_t){0}, err2, 2);
    check_order(out);
    MG_CHECK(strstr(out, "event: response.failed\n") != NULL);
    MG_CHECK(strstr(out, "\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"slow\"}") != NULL);
    free(out);
}

/* A refusal is its own kind of text: decoded from refusal deltas and parts (streamed, or only in
 * an item's .done form) as refusal events, and encoded as a refusal part with response.refusal.*
 * events, in a message item apart from the output_text around it, the same in the final output. */
MG_TEST(refusals_stay_refusals)
{
    const char *sse =
        "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"x\"}}\n\n"
        "data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"message\"}}\n\n"
        "data: {\"type\":\"response.refusal.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"No\"}\n\n"
        "data: {\"type\":\"response.refusal.done\",\"output_index\":0,\"content_index\":0,\"refusal\":\"No\"}\n\n"
        "data: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"type\":\"message\"}}\n\n"
        "data: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"message\"}}\n\n"
        "data: {\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"type\":\"message\",\"content\":[{\"type\":\"refusal\",\"refusal\":\"late\"}]}}\n\n"
        "data: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\"}}\n\n";
    char *log = ir_decode_log(RESP, sse, 0, NULL);
    MG_CHECK_STR(log, "start[resp_1|x] refusal\"No\" / refusal\"late\" / finish:stop end");
    free(log);

    mg_ir_event_t evs[] = {IR_TEXT_EV("a"), IR_REFUSAL_EV("I can"), IR_REFUSAL_EV("not"), {.type = MG_IR_EV_END}};
    char *out = ir_encode(RESP, &(mg_ir_output_opts_t){.id = "resp_T", .created = 9}, evs, MG_ARRAY_LEN(evs));
    check_order(out);
    MG_CHECK(strstr(out, "event: response.output_text.delta\n") != NULL);
    MG_CHECK(strstr(out, "\"type\":\"response.content_part.added\",\"item_id\":\"msg_T_1\",\"output_index\":1,\"content_index\":0,"
                         "\"part\":{\"type\":\"refusal\",\"refusal\":\"\"}") != NULL);
    MG_CHECK(strstr(out, "event: response.refusal.delta\ndata: {\"type\":\"response.refusal.delta\",\"item_id\":\"msg_T_1\","
                         "\"output_index\":1,\"content_index\":0,\"delta\":\"I can\",\"sequence_number\":") != NULL);
    MG_CHECK(strstr(out, "\"type\":\"response.refusal.done\",\"item_id\":\"msg_T_1\",\"output_index\":1,\"content_index\":0,"
                         "\"refusal\":\"I cannot\"") != NULL);
    MG_CHECK(strstr(out, "\"type\":\"response.content_part.done\",\"item_id\":\"msg_T_1\",\"output_index\":1,\"content_index\":0,"
                         "\"part\":{\"type\":\"refusal\",\"refusal\":\"I cannot\"}") != NULL);
    /* output_item.done and response.completed's output. */
    MG_CHECK_INT(ir_count(out, "\"content\":[{\"type\":\"refusal\",\"refusal\":\"I cannot\"}]"), 2);
    MG_CHECK_INT(ir_count(out, "\"content\":[{\"type\":\"output_text\",\"text\":\"a\""), 2);
    free(out);
}

/* A Response object repeats the request's parameters: encoded from another API's answer it shows
 * what the client's request said (reasoning and text completed as OpenAI shows them), in the whole
 * answer and in every response object of the stream; without a request, the defaults. */
MG_TEST(response_objects_echo_the_request)
{
    cJSON *req = cJSON_Parse("{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"be terse\",\"metadata\":{\"job\":\"42\"},"
                             "\"temperature\":0.5,\"top_p\":0.25,\"max_output_tokens\":300,\"parallel_tool_calls\":false,"
                             "\"tool_choice\":\"required\",\"user\":\"u\",\"reasoning\":{\"effort\":\"low\"},\"truncation\":\"auto\","
                             "\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"text\":{\"verbosity\":\"low\"}}");
    const char *want = "{\"instructions\":\"be terse\",\"max_output_tokens\":300,\"parallel_tool_calls\":false,"
                       "\"reasoning\":{\"effort\":\"low\",\"summary\":null},\"temperature\":0.5,"
                       "\"text\":{\"verbosity\":\"low\",\"format\":{\"type\":\"text\"}},\"tool_choice\":\"required\","
                       "\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"top_p\":0.25,\"truncation\":\"auto\",\"user\":\"u\","
                       "\"metadata\":{\"job\":\"42\"}}";
    const char *defaults = "{\"instructions\":null,\"max_output_tokens\":null,\"parallel_tool_calls\":true,"
                           "\"reasoning\":{\"effort\":null,\"summary\":null},\"temperature\":1,\"text\":{\"format\":{\"type\":\"text\"}},"
                           "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1,\"truncation\":\"disabled\",\"metadata\":{}}";
    static const char *const keys[] = {"instructions", "max_output_tokens", "parallel_tool_calls", "reasoning", "temperature", "text",
                                       "tool_choice", "tools", "top_p", "truncation", "user", "metadata"};
    for (int with = 0; with < 2; with++) {
        mg_ir_output_opts_t o = {.id = "resp_T", .created = 9, .request = with ? req : NULL};
        mg_ir_part_t part = {.type = MG_IR_PART_TEXT, .text = "x"};
        mg_ir_response_t r = {.parts = &part, .n_parts = 1, .finish = MG_IR_FINISH_STOP, .usage = MG_IR_USAGE_UNKNOWN};
        cJSON *whole = mg_openai_responses_encode_response(&r, &o);
        mg_ir_event_t evs[] = {IR_TEXT_EV("x"), {.type = MG_IR_EV_END}};
        char *out = ir_encode(RESP, &o, evs, MG_ARRAY_LEN(evs));
        cJSON *objs[4] = {whole};
        int n = 1;
        char *save = NULL;
        for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            cJSON *j = strncmp(line, "data: ", 6) == 0 ? cJSON_Parse(line + 6) : NULL;
            const cJSON *resp = mg_ir_jget(j, "response");
            if (resp && n < 4) objs[n++] = cJSON_Duplicate(resp, true);
            cJSON_Delete(j);
        }
        MG_CHECK_INT(n, 4); /* the whole answer, created, in_progress, completed */
        for (int i = 0; i < n; i++) {
            cJSON *got = cJSON_CreateObject();
            for (size_t k = 0; k < MG_ARRAY_LEN(keys); k++)
                mg_ir_add_dup(got, keys[k], mg_ir_jget(objs[i], keys[k]));
            char *s = cJSON_PrintUnformatted(got);
            MG_CHECK_STR(s, with ? want : defaults);
            cJSON_free(s);
            cJSON_Delete(got);
            cJSON_Delete(objs[i]);
        }
        free(out);
    }
    cJSON_Delete(req);
}

MG_TEST(whole_response_decoding)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    char err[200];
    mg_ir_response_t r;
    cJSON *j = cJSON_Parse("{\"id\":\"resp_1\",\"status\":\"failed\",\"output\":[]}");
    MG_CHECK(mg_openai_responses_decode_response(j, a, NULL, &r, err, sizeof err) != 0);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"id\":\"resp_1\",\"status\":\"completed\",\"error\":null,\"output\":[{\"type\":\"reasoning\",\"id\":\"rs\",\"encrypted_content\":\"E\",\"summary\":[]},"
                    "{\"type\":\"message\",\"content\":[{\"type\":\"refusal\",\"refusal\":\"no\"}]},{\"type\":\"web_search_call\"}]}");
    MG_CHECK(mg_openai_responses_decode_response(j, a, NULL, &r, err, sizeof err) == 0);
    MG_CHECK_INT(r.n_parts, 2);
    MG_CHECK_STR(r.parts[0].encrypted, "E");
    MG_CHECK_STR(r.parts[1].text, "no");
    MG_CHECK(r.parts[1].refusal);
    cJSON *out = mg_openai_responses_encode_response(&r, &(mg_ir_output_opts_t){.created = 1});
    char *s = cJSON_PrintUnformatted(mg_ir_jget(out, "output"));
    MG_CHECK_STR(s, "[{\"id\":\"rs_1_0\",\"type\":\"reasoning\",\"summary\":[],\"encrypted_content\":\"E\"},"
                    "{\"id\":\"msg_1_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"refusal\",\"refusal\":\"no\"}]}]");
    MG_CHECK(cJSON_IsNull(mg_ir_jget(out, "usage")));
    cJSON_free(s);
    cJSON_Delete(out);
    cJSON_Delete(j);
    mg_ir_arena_free(a);
}

/* A Responses request re-encoded for a Responses upstream (compaction, max tokens lowered, the
 * safety filters) keeps the ids of its function_call and assistant message items: OpenAI pairs
 * each reasoning item with the item after it by id, and refuses the reasoning ("provided without
 * its required following item") when that item lost its id. Other APIs have no such ids. */
MG_TEST(item_ids_survive_a_responses_rewrite)
{
    char err[200] = "";
    const char *req =
        "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"weather?\"},"
        "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[],\"encrypted_content\":\"enc1\"},"
        "{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"status\":\"completed\",\"content\":["
        "{\"type\":\"output_text\",\"text\":\"Let me\",\"annotations\":[]},{\"type\":\"output_text\",\"text\":\" check.\",\"annotations\":[]}]},"
        "{\"type\":\"reasoning\",\"id\":\"rs_2\",\"summary\":[],\"encrypted_content\":\"enc2\"},"
        "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"weather\",\"arguments\":\"{}\",\"status\":\"completed\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"call_1\",\"output\":\"sunny\"},"
        "{\"role\":\"assistant\",\"content\":\"no id here\"}]}";
    cJSON *out = translate_req(RESP, RESP, req, err);
    char *s = cJSON_PrintUnformatted(mg_ir_jget(out, "input"));
    MG_CHECK_STR(s, "[{\"role\":\"user\",\"content\":\"weather?\"},"
                    "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[],\"encrypted_content\":\"enc1\"},"
                    "{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"status\":\"completed\",\"content\":["
                    "{\"type\":\"output_text\",\"text\":\"Let me\",\"annotations\":[]},{\"type\":\"output_text\",\"text\":\" check.\",\"annotations\":[]}]},"
                    "{\"type\":\"reasoning\",\"id\":\"rs_2\",\"summary\":[],\"encrypted_content\":\"enc2\"},"
                    "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"weather\",\"arguments\":\"{}\"},"
                    "{\"type\":\"function_call_output\",\"call_id\":\"call_1\",\"output\":\"sunny\"},"
                    "{\"role\":\"assistant\",\"content\":\"no id here\"}]");
    cJSON_free(s);
    cJSON_Delete(out);
    /* Another API gets none of them. */
    out = translate_req(RESP, CHAT, req, err);
    s = cJSON_PrintUnformatted(out);
    MG_CHECK(s && !strstr(s, "msg_1") && !strstr(s, "fc_1"));
    cJSON_free(s);
    cJSON_Delete(out);
    out = translate_req(RESP, MG_API_ANTHROPIC_MESSAGES, req, err);
    s = cJSON_PrintUnformatted(out);
    MG_CHECK(s && !strstr(s, "msg_1") && !strstr(s, "fc_1"));
    cJSON_free(s);
    cJSON_Delete(out);
}

/* An input_file a tool returned is refused for another API, as it is in a user message (it was
 * dropped, the tool's output reaching the model without it), and kept when re-encoded for
 * Responses (compaction, a lowered max_output_tokens). */
MG_TEST(files_in_function_call_output)
{
    char err[200] = "";
    const char *req = "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"read\"},"
                      "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"read\",\"arguments\":\"{}\"},"
                      "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":[{\"type\":\"input_text\",\"text\":\"see file\"},"
                      "{\"type\":\"input_file\",\"filename\":\"a.pdf\",\"file_data\":\"data:application/pdf;base64,JVBERi0x\"}]}]}";
    MG_CHECK(translate_req(RESP, CHAT, req, err) == NULL);
    MG_CHECK(strstr(err, "content of type \"input_file\" cannot be sent to openai-completions") != NULL);
    cJSON *out = translate_req(RESP, RESP, req, err);
    char *s = cJSON_PrintUnformatted(cJSON_GetArrayItem(mg_ir_jget(out, "input"), 2));
    MG_CHECK_STR(s, "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":[{\"type\":\"input_text\",\"text\":\"see file\"},"
                    "{\"type\":\"input_file\",\"filename\":\"a.pdf\",\"file_data\":\"data:application/pdf;base64,JVBERi0x\"}]}");
    cJSON_free(s);
    cJSON_Delete(out);
}

MG_TEST_MAIN()

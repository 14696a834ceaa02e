/* Unit tests for api_anthropic.c: the request rules Anthropic enforces (alternation, first user
 * message, tool results first, no empty text, signed thinking only, thinking budget below
 * max_tokens), the stream decoder (cumulative usage, errors, unknown blocks) and the encoder's
 * block framing. */
#include "api_anthropic.h"
#include "ir_testlib.h"
#include "mg_test.h"

#include <stdlib.h>
#include <string.h>

#define ANT MG_API_ANTHROPIC_MESSAGES
#define CHAT MG_API_OPENAI_COMPLETIONS
#define RESP MG_API_OPENAI_RESPONSES

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

static char *compact(const cJSON *j)
{
    return cJSON_PrintUnformatted(j);
}

MG_TEST(alternation_first_user_and_tool_results_first)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up", .default_max_tokens = 1000};
    cJSON *out = translate_req(CHAT, ANT,
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"assistant\",\"content\":\"prefill\"},"
        "{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"unsigned\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"not json\"}}]},"
        "{\"role\":\"user\",\"content\":\"between\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
        "{\"role\":\"user\",\"content\":\"\"}]}", &o, err);
    MG_CHECK(out != NULL);
    char *s = compact(mg_ir_jget(out, "messages"));
    MG_CHECK_STR(s, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\".\"}]},"
                    "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"prefill\"},{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"f\",\"input\":{}}]},"
                    "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"c1\",\"content\":\"r1\"},{\"type\":\"text\",\"text\":\"between\"}]}]");
    MG_CHECK_INT(mg_ir_jint(out, "max_tokens", -1), 1000);
    cJSON_free(s);
    cJSON_Delete(out);
    /* No messages at all (a system prompt only) still makes a valid request. */
    out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"}]}", &(mg_ir_request_opts_t){.model = "up"}, err);
    s = compact(out);
    MG_CHECK_STR(s, "{\"model\":\"up\",\"max_tokens\":4096,\"system\":\"s\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\".\"}]}]}");
    cJSON_free(s);
    cJSON_Delete(out);
}

MG_TEST(thinking_budget_temperature_and_tool_choice)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    cJSON *out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"max_tokens\":1500,\"reasoning_effort\":\"high\",\"temperature\":0.2,\"top_p\":0.5,"
                                          "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK_INT(mg_ir_jint(mg_ir_jget(out, "thinking"), "budget_tokens", -1), 1499);
    MG_CHECK(!mg_ir_jget(out, "temperature") && !mg_ir_jget(out, "top_p")); /* refused with thinking */
    cJSON_Delete(out);
    out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"max_tokens\":800,\"reasoning_effort\":\"low\",\"temperature\":1.7,"
                                   "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(!mg_ir_jget(out, "thinking")); /* no room to think in 800 tokens */
    MG_CHECK(cJSON_GetNumberValue(mg_ir_jget(out, "temperature")) == 1.0); /* clamped to Anthropic's range */
    cJSON_Delete(out);
    out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"reasoning_effort\":\"none\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(!mg_ir_jget(out, "thinking"));
    cJSON_Delete(out);
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}]";
    char buf[600];
    snprintf(buf, sizeof buf, "{\"model\":\"m\",%s,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", tools);
    out = translate_req(CHAT, ANT, buf, &o, err);
    char *s = compact(mg_ir_jget(out, "tool_choice"));
    MG_CHECK_STR(s, "{\"type\":\"tool\",\"name\":\"f\"}");
    cJSON_free(s);
    cJSON_Delete(out);
    snprintf(buf, sizeof buf, "{\"model\":\"m\",%s,\"parallel_tool_calls\":false,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", tools);
    out = translate_req(CHAT, ANT, buf, &o, err);
    s = compact(mg_ir_jget(out, "tool_choice"));
    MG_CHECK_STR(s, "{\"type\":\"auto\",\"disable_parallel_tool_use\":true}");
    cJSON_free(s);
    cJSON_Delete(out);
    /* Anthropic refuses thinking beside a forced tool choice: a Chat request with both goes
     * without thinking (tool choice kept); with tool_choice auto it thinks. */
    const char *choices[] = {"\"required\"", "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}", "\"auto\""};
    const char *want[] = {"{\"type\":\"any\"}", "{\"type\":\"tool\",\"name\":\"f\"}", "{\"type\":\"auto\"}"};
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "{\"model\":\"m\",%s,\"tool_choice\":%s,\"reasoning_effort\":\"high\",\"max_tokens\":9000,"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", tools, choices[i]);
        out = translate_req(CHAT, ANT, buf, &o, err);
        s = compact(mg_ir_jget(out, "tool_choice"));
        MG_CHECK_STR(s, want[i]);
        cJSON_free(s);
        MG_CHECK(!mg_ir_jget(out, "thinking") == (i < 2));
        cJSON_Delete(out);
    }
    /* tool_choice without tools is not sent (Anthropic refuses it). */
    out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"tool_choice\":\"none\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(!mg_ir_jget(out, "tool_choice"));
    cJSON_Delete(out);
}

/* Anthropic's output_config reaches other APIs: its effort as their reasoning effort, its
 * json_schema format as their structured output; an Anthropic upstream gets it as it came, and no
 * thinking it did not ask for. mcp_servers has no counterpart: other APIs' candidates refuse it. */
MG_TEST(output_config_and_mcp_servers)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    const char *req = "{\"model\":\"m\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                      "\"output_config\":{\"effort\":\"high\",\"format\":{\"type\":\"json_schema\",\"schema\":"
                      "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}}}}";
    cJSON *out = translate_req(ANT, CHAT, req, &o, err);
    MG_CHECK_STR(mg_ir_jstr(out, "reasoning_effort"), "high");
    const cJSON *rf = mg_ir_jget(out, "response_format");
    MG_CHECK_STR(mg_ir_jstr(rf, "type"), "json_schema");
    MG_CHECK(mg_ir_jget(mg_ir_jget(mg_ir_jget(rf, "json_schema"), "schema"), "properties") != NULL);
    cJSON_Delete(out);
    out = translate_req(ANT, RESP, req, &o, err);
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(out, "reasoning"), "effort"), "high");
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(mg_ir_jget(out, "text"), "format"), "type"), "json_schema");
    cJSON_Delete(out);
    out = translate_req(ANT, ANT, req, &o, err);
    MG_CHECK(!mg_ir_jget(out, "thinking"));
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(out, "output_config"), "effort"), "high");
    cJSON_Delete(out);
    const char *mcp = "{\"model\":\"m\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                      "\"mcp_servers\":[{\"type\":\"url\",\"url\":\"https://mcp.example\",\"name\":\"e\"}]}";
    MG_CHECK(translate_req(ANT, CHAT, mcp, &o, err) == NULL);
    MG_CHECK_STR(err, "mcp_servers cannot be sent to openai-completions");
    out = translate_req(ANT, ANT, mcp, &o, err);
    MG_CHECK(cJSON_IsArray(mg_ir_jget(out, "mcp_servers")));
    cJSON_Delete(out);
}

/* OpenAI's allowed_tools choice, which Anthropic lacks: the tools it lists, with its mode. */
MG_TEST(allowed_tools_become_the_tools_sent)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                        "{\"type\":\"function\",\"function\":{\"name\":\"g\"}},{\"type\":\"function\",\"function\":{\"name\":\"h\"}}]";
    char buf[800];
    snprintf(buf, sizeof buf, "{\"model\":\"m\",%s,\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"required\","
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"h\"}},{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}},"
             "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", tools);
    cJSON *out = translate_req(CHAT, ANT, buf, &o, err);
    char *s = compact(mg_ir_jget(out, "tool_choice"));
    MG_CHECK_STR(s, "{\"type\":\"any\"}");
    cJSON_free(s);
    const cJSON *t = mg_ir_jget(out, "tools");
    MG_CHECK_INT(cJSON_GetArraySize(t), 2);
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(t, 0), "name"), "f"); /* the request's order */
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(t, 1), "name"), "h");
    cJSON_Delete(out);
    /* Responses' flat shape, mode auto. */
    out = translate_req(RESP, ANT, "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"},"
                                   "{\"type\":\"function\",\"name\":\"g\"}],\"tool_choice\":{\"type\":\"allowed_tools\",\"mode\":\"auto\","
                                   "\"tools\":[{\"type\":\"function\",\"name\":\"g\"}]}}", &o, err);
    s = compact(mg_ir_jget(out, "tool_choice"));
    MG_CHECK_STR(s, "{\"type\":\"auto\"}");
    cJSON_free(s);
    MG_CHECK_INT(cJSON_GetArraySize(mg_ir_jget(out, "tools")), 1);
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(mg_ir_jget(out, "tools"), 0), "name"), "g");
    cJSON_Delete(out);
    /* None of the listed tools exists: no tool may be called, but the tools stay (a history of
     * tool_use blocks needs their definitions). */
    snprintf(buf, sizeof buf, "{\"model\":\"m\",%s,\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"required\","
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"zz\"}}]}},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", tools);
    out = translate_req(CHAT, ANT, buf, &o, err);
    MG_CHECK_INT(cJSON_GetArraySize(mg_ir_jget(out, "tools")), 3);
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(out, "tool_choice"), "type"), "none");
    cJSON_Delete(out);
}

MG_TEST(decoding_anthropic_requests)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    /* SDK 1.11 role:"system" messages join the system prompt; thinking disabled asks nothing. */
    cJSON *out = translate_req(ANT, CHAT, "{\"model\":\"m\",\"max_tokens\":5,\"system\":[{\"type\":\"text\",\"text\":\"a\"}],"
                                          "\"thinking\":{\"type\":\"disabled\"},"
                                          "\"messages\":[{\"role\":\"system\",\"content\":\"b\"},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"is_error\":true,\"content\":\"failed\"},{\"type\":\"text\",\"text\":\"so?\"}]}]}",
                               &o, err);
    char *s = compact(mg_ir_jget(out, "messages"));
    MG_CHECK_STR(s, "[{\"role\":\"system\",\"content\":\"a\\n\\nb\"},{\"role\":\"tool\",\"tool_call_id\":\"t1\",\"content\":\"failed\"},{\"role\":\"user\",\"content\":\"so?\"}]");
    MG_CHECK(!mg_ir_jget(out, "reasoning_effort"));
    cJSON_free(s);
    cJSON_Delete(out);
    /* Adaptive thinking is a medium effort elsewhere; same API keeps it adaptive. */
    const char *adaptive = "{\"model\":\"m\",\"max_tokens\":5,\"thinking\":{\"type\":\"adaptive\"},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    out = translate_req(ANT, CHAT, adaptive, &o, err);
    MG_CHECK_STR(mg_ir_jstr(out, "reasoning_effort"), "medium");
    cJSON_Delete(out);
    out = translate_req(ANT, ANT, adaptive, &o, err);
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(out, "thinking"), "type"), "adaptive");
    cJSON_Delete(out);
    /* Server tools and documents are Anthropic-only. */
    out = translate_req(ANT, CHAT, "{\"model\":\"m\",\"max_tokens\":5,\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &o, err);
    MG_CHECK(out == NULL && strstr(err, "web_search_20250305"));
    out = translate_req(ANT, MG_API_OPENAI_RESPONSES, "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"document\",\"source\":{}}]}]}", &o, err);
    MG_CHECK(out == NULL && strstr(err, "document"));
    out = translate_req(ANT, ANT, "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"document\",\"source\":{}}]}]}", &o, err);
    MG_CHECK(out != NULL);
    cJSON_Delete(out);
}

MG_TEST(stream_decoder_usage_errors_and_unknown_blocks)
{
    const char *sse =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"model\":\"x\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"s\",\"name\":\"web_search\",\"input\":{}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{\"a\":1}}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7,\"input_tokens\":6}}\n\n";
    char *log = ir_decode_log(ANT, sse, 3, NULL);
    /* No message_stop, but a stop reason: a clean end. message_delta usage overwrites. The
     * server tool's block is content for the commit point, with nothing to translate. */
    MG_CHECK_STR(log, "start[m1|x] opaque t\"hi\" / tc0[t|f] a0\"{\"a\":1}\" / usage[16,7,10,-1,-1] finish:tool_calls end");
    free(log);
    log = ir_decode_log(ANT, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n"
                             "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", 0, NULL);
    MG_CHECK_STR(log, "start[m|] err[529|overloaded_error||Overloaded]");
    free(log);
    log = ir_decode_log(ANT, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n", 0, NULL);
    MG_CHECK(strstr(log, "err[502|api_error|stream_broken|the upstream stream ended") != NULL);
    free(log);
}

MG_TEST(encoder_blocks_signatures_and_strip)
{
    mg_ir_event_t evs[] = {
        IR_REASON_EV("hmm"), /* before START: message_start still comes first */
        {.type = MG_IR_EV_REASONING_SIGNATURE, .text = "sig1", .text_len = 4},
        IR_TEXT_EV("a"),
        {.type = MG_IR_EV_REASONING_SIGNATURE, .text = "late", .text_len = 4}, /* no thinking block open: dropped */
        {.type = MG_IR_EV_TOOL_CALL_START, .index = 0, .id = "c1", .name = "f"},
        {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = 1, .text = "{lost}", .text_len = 6}, /* not the open call */
        {.type = MG_IR_EV_TOOL_CALL_DELTA, .index = 0, .text = "{}", .text_len = 2},
        {.type = MG_IR_EV_USAGE, .usage = {100, 7, 90, -1, -1}},
        {.type = MG_IR_EV_END},
    };
    mg_ir_output_opts_t o = {.model = "shown"};
    char *out = ir_encode(ANT, &o, evs, MG_ARRAY_LEN(evs));
    MG_CHECK(strncmp(out, "event: message_start\n", 21) == 0);
    MG_CHECK(strstr(out, "\"model\":\"shown\"") != NULL);
    MG_CHECK(strstr(out, "{\"type\":\"signature_delta\",\"signature\":\"sig1\"}") != NULL);
    MG_CHECK(!strstr(out, "late") && !strstr(out, "lost"));
    MG_CHECK_INT(ir_count(out, "event: content_block_start"), 3);
    MG_CHECK_INT(ir_count(out, "event: content_block_stop"), 3);
    MG_CHECK(strstr(out, "\"index\":2,\"content_block\":{\"type\":\"tool_use\"") != NULL);
    /* END without FINISH but with a call: tool_use; input excludes the cache. */
    MG_CHECK(strstr(out, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},"
                         "\"usage\":{\"input_tokens\":10,\"output_tokens\":7,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":90}}") != NULL);
    MG_CHECK(strstr(out, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") != NULL);
    /* Every data line has an event line before it. */
    MG_CHECK_INT(ir_count(out, "event: "), ir_count(out, "data: "));
    free(out);
    o.strip_reasoning = true;
    out = ir_encode(ANT, &o, evs, MG_ARRAY_LEN(evs));
    MG_CHECK(!strstr(out, "thinking") && !strstr(out, "sig1"));
    MG_CHECK(strstr(out, "\"index\":0,\"content_block\":{\"type\":\"text\"") != NULL);
    free(out);
    mg_ir_event_t err[] = {{.type = MG_IR_EV_START, .id = "m"}, IR_TEXT_EV("x"),
                           {.type = MG_IR_EV_ERROR, .error = {429, "rate_limit_exceeded", NULL, "slow"}}};
    out = ir_encode(ANT, &(mg_ir_output_opts_t){0}, err, 3);
    MG_CHECK(strstr(out, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}\n\n") != NULL);
    MG_CHECK(!strstr(out, "message_stop"));
    free(out);
}

MG_TEST(whole_response_stop_sequence_and_redacted)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    char err[100];
    cJSON *j = cJSON_Parse("{\"id\":\"msg_m\",\"type\":\"message\",\"content\":[{\"type\":\"redacted_thinking\",\"data\":\"xx\"},{\"type\":\"text\",\"text\":\"t\"}],"
                           "\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}");
    mg_ir_response_t r;
    MG_CHECK(mg_anthropic_decode_response(j, a, NULL, &r, err, sizeof err) == 0);
    cJSON *out = mg_anthropic_encode_response(&r, &(mg_ir_output_opts_t){0});
    char *s = cJSON_PrintUnformatted(out);
    MG_CHECK_STR(s, "{\"id\":\"msg_m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"\",\"content\":[{\"type\":\"redacted_thinking\",\"data\":\"xx\"},"
                    "{\"type\":\"text\",\"text\":\"t\"}],\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\","
                    "\"usage\":{\"input_tokens\":1,\"output_tokens\":2,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}");
    cJSON_free(s);
    cJSON_Delete(out);
    cJSON_Delete(j);
    mg_ir_arena_free(a);
}

/* Anthropic refuses thinking when the last assistant message holds a tool_use and does not open
 * with signed thinking (400 "a final assistant message must start with a thinking block"): the
 * tool loop of every Chat or Responses client. Thinking is left off there, with the sampling
 * rules of no thinking; an Anthropic client's own signed turns keep it. */
MG_TEST(thinking_off_when_the_last_tool_turn_cannot_open_with_signed_thinking)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    const char *call = "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"plan\","
                       "\"tool_calls\":[{\"id\":\"toolu_01\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}";
    char buf[2000];
    snprintf(buf, sizeof buf, "{\"model\":\"m\",\"reasoning_effort\":\"medium\",\"max_completion_tokens\":8000,\"temperature\":0.3,"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"x\"},%s,{\"role\":\"tool\",\"tool_call_id\":\"toolu_01\",\"content\":\"r\"}]}",
             call);
    cJSON *out = translate_req(CHAT, ANT, buf, &o, err);
    MG_CHECK(out && !mg_ir_jget(out, "thinking"));
    MG_CHECK(cJSON_GetNumberValue(mg_ir_jget(out, "temperature")) == 0.3); /* no thinking: allowed */
    cJSON_Delete(out);
    /* The same tool turn earlier in the conversation, a text answer last: thinking stays. */
    snprintf(buf, sizeof buf, "{\"model\":\"m\",\"reasoning_effort\":\"medium\",\"max_completion_tokens\":8000,"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"x\"},%s,{\"role\":\"tool\",\"tool_call_id\":\"toolu_01\",\"content\":\"r\"},"
                              "{\"role\":\"assistant\",\"content\":\"done\"},{\"role\":\"user\",\"content\":\"more\"}]}",
             call);
    out = translate_req(CHAT, ANT, buf, &o, err);
    MG_CHECK_STR(mg_ir_jstr(mg_ir_jget(out, "thinking"), "type"), "enabled");
    cJSON_Delete(out);
    /* A Responses client replaying an Anthropic answer: its reasoning item carries no signature. */
    out = translate_req(RESP, ANT,
        "{\"model\":\"m\",\"reasoning\":{\"effort\":\"medium\"},\"max_output_tokens\":8000,\"input\":["
        "{\"role\":\"user\",\"content\":\"x\"},"
        "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"plan\"}]},"
        "{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Let me check.\"}]},"
        "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"toolu_A\",\"name\":\"f\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"toolu_A\",\"output\":\"r\"}]}", &o, err);
    MG_CHECK(out && !mg_ir_jget(out, "thinking"));
    cJSON_Delete(out);
    /* An Anthropic client's own history: the tool turn opens with signed (or redacted) thinking. */
    const char *firsts[] = {"{\"type\":\"thinking\",\"thinking\":\"plan\",\"signature\":\"sig\"}",
                            "{\"type\":\"redacted_thinking\",\"data\":\"xx\"}"};
    for (int k = 0; k < 2; k++) {
        snprintf(buf, sizeof buf, "{\"model\":\"m\",\"max_tokens\":8000,\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048},\"temperature\":0.3,"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":[%s,"
                                  "{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"f\",\"input\":{}}]},"
                                  "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_01\",\"content\":\"r\"}]}]}",
                 firsts[k]);
        out = translate_req(ANT, ANT, buf, &o, err);
        MG_CHECK_INT(mg_ir_jint(mg_ir_jget(out, "thinking"), "budget_tokens", -1), 2048);
        MG_CHECK(!mg_ir_jget(out, "temperature"));
        cJSON_Delete(out);
    }
    /* … but not when its last tool turn came unsigned (another API answered it): off, also
     * adaptive. */
    const char *modes[] = {"{\"type\":\"enabled\",\"budget_tokens\":2048}", "{\"type\":\"adaptive\"}"};
    for (int k = 0; k < 2; k++) {
        snprintf(buf, sizeof buf, "{\"model\":\"m\",\"max_tokens\":8000,\"thinking\":%s,"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":["
                                  "{\"type\":\"thinking\",\"thinking\":\"plan\",\"signature\":\"\"},{\"type\":\"text\",\"text\":\"t\"},"
                                  "{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"f\",\"input\":{}}]},"
                                  "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_01\",\"content\":\"r\"}]}]}",
                 modes[k]);
        out = translate_req(ANT, ANT, buf, &o, err);
        MG_CHECK(out && !mg_ir_jget(out, "thinking"));
        cJSON_Delete(out);
    }
}

/* Anthropic takes tool ids matching ^[a-zA-Z0-9_-]+$ only; OpenAI's APIs take any (Kimi K2's
 * "functions.get_weather:0"). Every other byte becomes "_", alike in calls and results (so they
 * still pair), in requests and in the answers an Anthropic client gets, whole and streamed. */
MG_TEST(tool_ids_anthropic_refuses_are_mapped_alike_everywhere)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    cJSON *out = translate_req(CHAT, ANT,
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"functions.get_weather:0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{}\"}},"
        "{\"id\":\"toolu_01A-b_c\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"functions.get_weather:0\",\"content\":\"sunny\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_01A-b_c\",\"content\":\"rain\"}]}", &o, err);
    const cJSON *msgs = mg_ir_jget(out, "messages");
    const cJSON *uses = mg_ir_jget(cJSON_GetArrayItem(msgs, 1), "content");
    const cJSON *results = mg_ir_jget(cJSON_GetArrayItem(msgs, 2), "content");
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(uses, 0), "id"), "functions_get_weather_0");
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(uses, 1), "id"), "toolu_01A-b_c"); /* valid: as it came */
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(results, 0), "tool_use_id"), "functions_get_weather_0");
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(results, 1), "tool_use_id"), "toolu_01A-b_c");
    cJSON_Delete(out);
    out = translate_req(RESP, ANT,
        "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"x\"},"
        "{\"type\":\"function_call\",\"call_id\":\"functions.get_weather:0\",\"name\":\"get_weather\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"functions.get_weather:0\",\"output\":\"sunny\"}]}", &o, err);
    msgs = mg_ir_jget(out, "messages");
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(mg_ir_jget(cJSON_GetArrayItem(msgs, 1), "content"), 0), "id"),
                 "functions_get_weather_0");
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(mg_ir_jget(cJSON_GetArrayItem(msgs, 2), "content"), 0), "tool_use_id"),
                 "functions_get_weather_0");
    cJSON_Delete(out);
    /* A Chat answer for an Anthropic client, whole and streamed. */
    const char *whole = "{\"id\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
                        "\"tool_calls\":[{\"id\":\"functions.get_weather:0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{}\"}}]},"
                        "\"finish_reason\":\"tool_calls\"}]}";
    out = mg_ir_translate_response(CHAT, ANT, whole, strlen(whole), NULL, &(mg_ir_output_opts_t){0}, err, sizeof err);
    MG_CHECK_STR(mg_ir_jstr(cJSON_GetArrayItem(mg_ir_jget(out, "content"), 0), "id"), "functions_get_weather_0");
    cJSON_Delete(out);
    mg_ir_event_t evs[] = {{.type = MG_IR_EV_START, .id = "c"},
                           {.type = MG_IR_EV_TOOL_CALL_START, .index = 0, .id = "functions.get_weather:0", .name = "get_weather"},
                           {.type = MG_IR_EV_END}};
    char *sse = ir_encode(ANT, &(mg_ir_output_opts_t){0}, evs, MG_ARRAY_LEN(evs));
    MG_CHECK(strstr(sse, "{\"type\":\"tool_use\",\"id\":\"functions_get_weather_0\",") != NULL);
    MG_CHECK(!strstr(sse, "functions.get_weather"));
    free(sse);
}

/* An Anthropic-compatible server that names no tool_use: made-up ids, never the same twice. */
MG_TEST(made_up_tool_use_ids_are_unique)
{
    const char *sse =
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"name\":\"f\",\"input\":{}}}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}\n\n";
    char *l1 = ir_decode_log(ANT, sse, 0, NULL), *l2 = ir_decode_log(ANT, sse, 0, NULL);
    MG_CHECK(strstr(l1, "tc0[toolu_mg") && strstr(l2, "tc0[toolu_mg") && strcmp(l1, l2) != 0);
    free(l1);
    free(l2);
    mg_ir_arena_t *a = mg_ir_arena_new();
    char err[100];
    cJSON *j = cJSON_Parse("{\"content\":[{\"type\":\"tool_use\",\"name\":\"f\",\"input\":{}}],\"stop_reason\":\"tool_use\"}");
    mg_ir_response_t r1, r2;
    MG_CHECK(mg_anthropic_decode_response(j, a, NULL, &r1, err, sizeof err) == 0);
    MG_CHECK(mg_anthropic_decode_response(j, a, NULL, &r2, err, sizeof err) == 0);
    MG_CHECK(strncmp(r1.parts[0].id, "toolu_mg", 8) == 0 && strcmp(r1.parts[0].id, r2.parts[0].id) != 0);
    cJSON_Delete(j);
    mg_ir_arena_free(a);
}

/* A document, search result or file inside a tool result goes where such content at the top
 * level goes: to its own API only, as written (with its cache_control), and never silently
 * dropped on the way to another (the candidate is refused instead, so the router skips it). */
MG_TEST(files_in_tool_results_only_to_their_own_api)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    const char *ant = "{\"model\":\"m\",\"max_tokens\":5,\"messages\":["
                      "{\"role\":\"user\",\"content\":\"search\"},"
                      "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"s\",\"input\":{}}]},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":["
                      "{\"type\":\"text\",\"text\":\"results:\",\"cache_control\":{\"type\":\"ephemeral\"}},"
                      "{\"type\":\"search_result\",\"source\":\"https://x/doc\",\"title\":\"Doc\",\"content\":[{\"type\":\"text\",\"text\":\"fact\"}]}]}]}]}";
    cJSON *out = translate_req(ANT, CHAT, ant, &o, err);
    MG_CHECK(out == NULL && strstr(err, "\"search_result\" cannot be sent to openai-completions"));
    out = translate_req(ANT, RESP, ant, &o, err);
    MG_CHECK(out == NULL && strstr(err, "\"search_result\""));
    out = translate_req(ANT, ANT, ant, &o, err);
    char *s = compact(mg_ir_jget(cJSON_GetArrayItem(mg_ir_jget(out, "messages"), 2), "content"));
    MG_CHECK_STR(s, "[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":["
                    "{\"type\":\"text\",\"text\":\"results:\",\"cache_control\":{\"type\":\"ephemeral\"}},"
                    "{\"type\":\"search_result\",\"source\":\"https://x/doc\",\"title\":\"Doc\",\"content\":[{\"type\":\"text\",\"text\":\"fact\"}]}]}]");
    cJSON_free(s);
    cJSON_Delete(out);
    /* A text-only result is still a string; a document (even a plain-text one, as at the top
     * level) is Anthropic's own. */
    const char *doc = "{\"model\":\"m\",\"max_tokens\":5,\"messages\":["
                      "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"r\",\"input\":{}}]},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":["
                      "{\"type\":\"text\",\"text\":\"here\"},"
                      "{\"type\":\"document\",\"source\":{\"type\":\"text\",\"media_type\":\"text/plain\",\"data\":\"d\"}}]}]}]}";
    out = translate_req(ANT, CHAT, doc, &o, err);
    MG_CHECK(out == NULL && strstr(err, "\"document\""));
    out = translate_req(ANT, ANT, doc, &o, err);
    s = compact(mg_ir_jget(cJSON_GetArrayItem(mg_ir_jget(out, "messages"), 2), "content"));
    MG_CHECK_STR(s, "[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":[{\"type\":\"text\",\"text\":\"here\"},"
                    "{\"type\":\"document\",\"source\":{\"type\":\"text\",\"media_type\":\"text/plain\",\"data\":\"d\"}}]}]");
    cJSON_free(s);
    cJSON_Delete(out);
    /* The other APIs' own parts in their results reach Anthropic no more than at the top level. */
    out = translate_req(RESP, ANT, "{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"r\",\"arguments\":\"{}\"},"
                                   "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":[{\"type\":\"input_text\",\"text\":\"see\"},"
                                   "{\"type\":\"input_file\",\"filename\":\"a.pdf\",\"file_data\":\"data:application/pdf;base64,JVBERi0x\"}]}]}", &o, err);
    MG_CHECK(out == NULL && strstr(err, "\"input_file\" cannot be sent to anthropic-messages"));
    out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"r\",\"arguments\":\"{}\"}}]},"
                                   "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":[{\"type\":\"text\",\"text\":\"see\"},{\"type\":\"file\",\"file\":{\"file_id\":\"f1\"}}]}]}", &o, err);
    MG_CHECK(out == NULL && strstr(err, "\"file\""));
}

/* Anthropic requires input_schema to be an object schema; OpenAI's tools may declare {} or leave
 * the type out. */
MG_TEST(tool_schemas_without_a_type_become_object_schemas)
{
    char err[200] = "";
    mg_ir_request_opts_t o = {.model = "up"};
    cJSON *out = translate_req(CHAT, ANT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":["
                                          "{\"type\":\"function\",\"function\":{\"name\":\"a\",\"parameters\":{}}},"
                                          "{\"type\":\"function\",\"function\":{\"name\":\"b\",\"parameters\":{\"properties\":{\"q\":{\"type\":\"string\"}}}}},"
                                          "{\"type\":\"function\",\"function\":{\"name\":\"c\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}},"
                                          "{\"type\":\"function\",\"function\":{\"name\":\"d\"}}]}", &o, err);
    const cJSON *tools = mg_ir_jget(out, "tools");
    const char *want[] = {"{\"type\":\"object\"}", "{\"properties\":{\"q\":{\"type\":\"string\"}},\"type\":\"object\"}",
                          "{\"type\":\"object\",\"properties\":{}}", "{\"type\":\"object\",\"properties\":{}}"};
    MG_CHECK_INT(cJSON_GetArraySize(tools), 4);
    for (int i = 0; i < 4; i++) {
        char *s = compact(mg_ir_jget(cJSON_GetArrayItem(tools, i), "input_schema"));
        MG_CHECK_STR(s, want[i]);
        cJSON_free(s);
    }
    cJSON_Delete(out);
    out = translate_req(RESP, ANT, "{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"a\",\"parameters\":{}}]}", &o, err);
    char *s = compact(mg_ir_jget(cJSON_GetArrayItem(mg_ir_jget(out, "tools"), 0), "input_schema"));
    MG_CHECK_STR(s, "{\"type\":\"object\"}");
    cJSON_free(s);
    cJSON_Delete(out);
}

MG_TEST_MAIN()

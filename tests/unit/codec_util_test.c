/* Unit tests for codec_util.c: the helpers the three codec files share (the codecs' own tests and
 * the translation fixtures cover them through the codecs; these pin their contracts). */
#include "codec_util.h"
#include "mg_test.h"

#include <stdlib.h>
#include <string.h>

/* ---- decoding ---- */

static int n_calls;

/* Element decoder for the tests: "t" becomes TEXT from "v", "bad" fails, the rest is OPAQUE. */
static int test_part(mg_ir_arena_t *a, const cJSON *item, const char *type, mg_ir_parts_t *pv, void *ud,
                     char *err, size_t errlen)
{
    n_calls++;
    MG_CHECK(ud == &n_calls);
    if (strcmp(type, "bad") == 0) return mg_ir_fail(err, errlen, "bad part");
    if (strcmp(type, "t") == 0) mg_codec_add_text(a, pv, item, "v");
    else mg_ir_parts_add(a, pv, MG_IR_PART_OPAQUE)->raw = item;
    return 0;
}

static const mg_codec_content_t rules = {test_part, "not an array", "no type", false};

static int decode(mg_ir_arena_t *a, const char *json, mg_ir_parts_t *pv, char *err, size_t errlen)
{
    cJSON *j = mg_ir_parse_json(a, json, strlen(json), NULL);
    memset(pv, 0, sizeof *pv);
    n_calls = 0;
    return mg_codec_decode_content(&rules, a, j, pv, &n_calls, err, errlen);
}

MG_TEST(decode_content_walks_strings_arrays_and_fails_with_the_apis_words)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_parts_t pv;
    char err[64] = "";
    MG_CHECK_INT(decode(a, "null", &pv, err, sizeof err), 0);
    MG_CHECK_INT(pv.n, 0);
    MG_CHECK_INT(mg_codec_decode_content(&rules, a, NULL, &pv, NULL, err, sizeof err), 0);
    MG_CHECK_INT(decode(a, "\"hi\"", &pv, err, sizeof err), 0);
    MG_CHECK_INT(pv.n, 1);
    MG_CHECK_INT(pv.v[0].type, MG_IR_PART_TEXT);
    MG_CHECK_STR(pv.v[0].text, "hi");
    MG_CHECK_INT(decode(a, "[{\"type\":\"t\",\"v\":\"a\"},{\"type\":\"x\"},{\"type\":\"t\"}]", &pv, err, sizeof err), 0);
    MG_CHECK_INT(n_calls, 3);
    MG_CHECK_INT(pv.n, 3);
    MG_CHECK_STR(pv.v[0].text, "a");
    MG_CHECK_INT(pv.v[1].type, MG_IR_PART_OPAQUE);
    MG_CHECK_STR(pv.v[2].text, ""); /* a missing member reads as "" */
    MG_CHECK_INT(decode(a, "42", &pv, err, sizeof err), -1);
    MG_CHECK_STR(err, "not an array");
    MG_CHECK_INT(decode(a, "[{\"type\":\"t\"},{\"v\":\"a\"},{\"type\":\"t\"}]", &pv, err, sizeof err), -1);
    MG_CHECK_STR(err, "no type");
    MG_CHECK_INT(n_calls, 1); /* stops at the first failure */
    MG_CHECK_INT(decode(a, "[{\"type\":\"bad\"},{\"type\":\"t\"}]", &pv, err, sizeof err), -1);
    MG_CHECK_STR(err, "bad part");
    MG_CHECK_INT(n_calls, 1);
    mg_ir_arena_free(a);
}

MG_TEST(image_urls_split_data_urls_and_keep_the_rest)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_parts_t pv = {0};
    mg_ir_part_t *p = mg_codec_add_image_url(a, &pv, "data:image/jpeg;base64,QUJD", "low");
    MG_CHECK_STR(p->media_type, "image/jpeg");
    MG_CHECK_STR(p->data, "QUJD");
    MG_CHECK(p->url == NULL);
    MG_CHECK_STR(p->detail, "low");
    char *u = mg_codec_image_url(p);
    MG_CHECK_STR(u, "data:image/jpeg;base64,QUJD");
    free(u);
    p = mg_codec_add_image_url(a, &pv, "https://x/y.png", NULL);
    MG_CHECK_STR(p->url, "https://x/y.png");
    MG_CHECK(p->data == NULL && p->detail == NULL);
    u = mg_codec_image_url(p);
    MG_CHECK_STR(u, "https://x/y.png");
    free(u);
    p = mg_codec_add_image_url(a, &pv, NULL, NULL);
    MG_CHECK_STR(p->url, "");
    MG_CHECK_INT(pv.n, 3);
    MG_CHECK(mg_codec_has_image(pv.v, pv.n));
    mg_ir_parts_t texts = {0};
    mg_ir_parts_add(a, &pv, MG_IR_PART_TEXT)->text = "one";
    mg_codec_add_texts(a, &texts, &pv);
    MG_CHECK_INT(texts.n, 1);
    MG_CHECK_STR(texts.v[0].text, "one");
    MG_CHECK(!mg_codec_has_image(texts.v, texts.n));
    mg_ir_arena_free(a);
}

MG_TEST(request_fields_stop_format_tools_and_extras)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    const char *json = "{\"model\":\"m\",\"stop\":[\"a\",1,\"b\"],\"temperature\":0.5,\"top_p\":\"x\","
                       "\"fmt\":{\"name\":\"n\",\"schema\":{\"type\":\"object\"},\"strict\":true},"
                       "\"fn\":{\"description\":\"d\",\"params\":[],\"strict\":false},\"zz\":1}";
    cJSON *body = mg_ir_parse_json(a, json, strlen(json), NULL);
    mg_ir_request_t r;
    mg_ir_request_init(a, &r, MG_API_OPENAI_COMPLETIONS);
    mg_codec_decode_stop(a, mg_ir_jget(body, "stop"), &r);
    MG_CHECK_INT(r.n_stop, 2);
    MG_CHECK_STR(r.stop[1], "b");
    mg_ir_request_t r2;
    mg_ir_request_init(a, &r2, MG_API_OPENAI_COMPLETIONS);
    mg_codec_decode_stop(a, mg_ir_jget(body, "model"), &r2); /* a bare string */
    MG_CHECK_INT(r2.n_stop, 1);
    mg_codec_decode_stop(a, mg_ir_jget(body, "fn"), &r2); /* neither: nothing */
    MG_CHECK_INT(r2.n_stop, 1);
    mg_codec_decode_sampling(body, &r);
    MG_CHECK(r.has_temperature && r.temperature == 0.5);
    MG_CHECK(!r.has_top_p);
    mg_codec_decode_format(&r, NULL, NULL);
    MG_CHECK_INT(r.format, MG_IR_FORMAT_UNSET);
    mg_codec_decode_format(&r, "json_schema", mg_ir_jget(body, "fmt"));
    MG_CHECK_INT(r.format, MG_IR_FORMAT_JSON_SCHEMA);
    MG_CHECK_STR(r.format_name, "n");
    MG_CHECK(r.format_schema && r.format_strict == 1);
    mg_codec_decode_format(&r, "json_object", NULL);
    MG_CHECK_INT(r.format, MG_IR_FORMAT_JSON_OBJECT);
    mg_codec_decode_format(&r, "anything", NULL);
    MG_CHECK_INT(r.format, MG_IR_FORMAT_TEXT);
    mg_ir_tool_t t = {.strict = -1};
    mg_codec_decode_tool(&t, mg_ir_jget(body, "fn"), "params");
    MG_CHECK_STR(t.description, "d");
    MG_CHECK(t.parameters == NULL); /* not an object */
    MG_CHECK_INT(t.strict, 0);
    MG_CHECK_INT(mg_codec_openai_tool_choice("none"), MG_IR_TOOL_CHOICE_NONE);
    MG_CHECK_INT(mg_codec_openai_tool_choice("required"), MG_IR_TOOL_CHOICE_REQUIRED);
    MG_CHECK_INT(mg_codec_openai_tool_choice("whatever"), MG_IR_TOOL_CHOICE_AUTO);
    static const char *const known[] = {"model", "stop", "temperature", "top_p"};
    mg_codec_decode_extras(body, &r, known, MG_ARRAY_LEN(known));
    char *s = cJSON_PrintUnformatted(r.extras);
    MG_CHECK(strncmp(s, "{\"fmt\":", 7) == 0);
    MG_CHECK(strstr(s, "\"zz\":1}") != NULL && !strstr(s, "model"));
    cJSON_free(s);
    MG_CHECK_STR(mg_codec_jtext(body, "model"), "m");
    MG_CHECK_STR(mg_codec_jtext(body, "zz"), "");
    MG_CHECK_STR(mg_codec_json_text(a, mg_ir_jget(body, "fmt")), "{\"name\":\"n\",\"schema\":{\"type\":\"object\"},\"strict\":true}");
    mg_ir_arena_free(a);
}

/* ---- encoding ---- */

static cJSON *test_tool_json(const mg_ir_tool_t *t, bool same)
{
    cJSON *o = cJSON_CreateObject();
    mg_codec_add_tool_fields(o, t, "schema");
    cJSON_AddBoolToObject(o, "same", same);
    return o;
}

static char *print(const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    if (!s) abort();
    return s;
}

MG_TEST(tools_raw_tools_stay_with_their_api)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_request_t r;
    mg_ir_request_init(a, &r, MG_API_ANTHROPIC_MESSAGES);
    cJSON *raw = mg_ir_keep_json(a, cJSON_Parse("{\"type\":\"web_search_1\"}"));
    mg_ir_tool_t tools[2] = {{.name = "f", .description = "d", .strict = -1},
                             {.name = "web_search_1", .raw = raw, .strict = -1}};
    r.tools = tools;
    r.n_tools = 2;
    char err[128] = "";
    cJSON *o = cJSON_CreateObject();
    MG_CHECK_INT(mg_codec_encode_tools(o, &r, MG_API_ANTHROPIC_MESSAGES, test_tool_json, err, sizeof err), 0);
    char *s = print(o);
    MG_CHECK_STR(s, "{\"tools\":[{\"name\":\"f\",\"description\":\"d\",\"schema\":{\"type\":\"object\",\"properties\":{}},"
                    "\"same\":true},{\"type\":\"web_search_1\"}]}");
    cJSON_free(s);
    cJSON_Delete(o);
    o = cJSON_CreateObject();
    MG_CHECK_INT(mg_codec_encode_tools(o, &r, MG_API_OPENAI_RESPONSES, test_tool_json, err, sizeof err), -1);
    MG_CHECK_STR(err, "tool of type \"web_search_1\" cannot be sent to openai-responses");
    cJSON_Delete(o);
    mg_ir_arena_free(a);
}

MG_TEST(small_encoders)
{
    cJSON *o = cJSON_CreateObject();
    MG_CHECK(mg_codec_openai_tool_choice_json(o, MG_IR_TOOL_CHOICE_UNSET) == NULL);
    MG_CHECK(cJSON_GetArraySize(o) == 0);
    MG_CHECK(mg_codec_openai_tool_choice_json(o, MG_IR_TOOL_CHOICE_REQUIRED) == NULL);
    MG_CHECK_STR(mg_ir_jstr(o, "tool_choice"), "required");
    cJSON_Delete(o);
    o = cJSON_CreateObject();
    cJSON *named = mg_codec_openai_tool_choice_json(o, MG_IR_TOOL_CHOICE_NAMED);
    MG_CHECK(named && named == mg_ir_jget(o, "tool_choice"));
    MG_CHECK_STR(mg_ir_jstr(named, "type"), "function");
    cJSON_Delete(o);

    mg_ir_part_t parts[3] = {{.type = MG_IR_PART_TEXT, .text = "a"}, {.type = MG_IR_PART_IMAGE},
                             {.type = MG_IR_PART_TEXT, .text = "b"}};
    const char *stops[2] = {"x", "y"};
    mg_ir_request_t r = {.format_strict = -1};
    o = cJSON_CreateObject();
    mg_codec_add_joined(o, "joined", parts, 3);
    mg_codec_add_joined(o, "none", parts + 1, 1);
    mg_codec_add_strings(o, "stop", stops, 2);
    mg_codec_add_format_schema(o, &r);
    cJSON_AddItemToObject(o, "t", mg_codec_text_json("input_text", "hi"));
    cJSON_AddItemToObject(o, "n", mg_codec_text_json("text", NULL));
    char *s = print(o);
    MG_CHECK_STR(s, "{\"joined\":\"a\\n\\nb\",\"none\":\"\",\"stop\":[\"x\",\"y\"],\"name\":\"response\","
                    "\"t\":{\"type\":\"input_text\",\"text\":\"hi\"},\"n\":{\"type\":\"text\"}}");
    cJSON_free(s);
    cJSON_Delete(o);

    mg_ir_part_t opaque = {.type = MG_IR_PART_OPAQUE, .raw = cJSON_Parse("{\"type\":\"input_audio\"}")};
    char err[128] = "";
    MG_CHECK_INT(mg_codec_opaque_fail(&opaque, MG_API_ANTHROPIC_MESSAGES, err, sizeof err), -1);
    MG_CHECK_STR(err, "content of type \"input_audio\" cannot be sent to anthropic-messages");
    cJSON_Delete((cJSON *)opaque.raw);

    char *b = mg_codec_openai_error(MG_API_OPENAI_RESPONSES, 429, NULL, NULL, "slow down");
    MG_CHECK_STR(b, "{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":null}}");
    free(b);
}

/* ---- streams ---- */

typedef struct seen {
    int n;
    mg_ir_event_t last;
    char text[800];
    int stop_with; /* the callback's return value */
} seen_t;

static int on_ev(void *ud, const mg_ir_event_t *ev)
{
    seen_t *s = ud;
    s->n++;
    s->last = *ev;
    const char *t = ev->type == MG_IR_EV_ERROR ? ev->error.message : ev->text;
    size_t n = ev->type == MG_IR_EV_ERROR ? strlen(t) : ev->text_len;
    memcpy(s->text, t ? t : "", MG_MIN(n, sizeof s->text - 1));
    s->text[MG_MIN(n, sizeof s->text - 1)] = '\0';
    return s->stop_with;
}

MG_TEST(terminal_events_end_the_decoder)
{
    seen_t s = {0};
    bool ended = false;
    MG_CHECK_INT(mg_codec_emit_text(MG_IR_EV_TEXT_DELTA, "", 0, on_ev, &s), 0);
    MG_CHECK_INT(mg_codec_emit_text(MG_IR_EV_TEXT_DELTA, NULL, 0, on_ev, &s), 0);
    MG_CHECK_INT(s.n, 0);
    s.stop_with = 7;
    MG_CHECK_INT(mg_codec_emit_text(MG_IR_EV_TOOL_CALL_DELTA, "{}", 3, on_ev, &s), 7);
    MG_CHECK_INT(s.last.index, 3);
    MG_CHECK_INT(s.last.text_len, 2);
    s.stop_with = 0;
    MG_CHECK_INT(mg_codec_emit_end(&ended, on_ev, &s), 0);
    MG_CHECK(ended && s.last.type == MG_IR_EV_END);
    ended = false;
    char data[700];
    memset(data, 'x', sizeof data);
    MG_CHECK_INT(mg_codec_emit_raw_error(&ended, "api_error", data, sizeof data, on_ev, &s), 0);
    MG_CHECK(ended && s.last.type == MG_IR_EV_ERROR);
    MG_CHECK_INT(s.last.error.status, 500);
    MG_CHECK_INT(strlen(s.text), 700); /* all of it: the relay scrubs, then cuts */
    ended = false;
    MG_CHECK_INT(mg_codec_emit_truncated(&ended, "server_error", on_ev, &s), 0);
    MG_CHECK(ended);
    MG_CHECK_INT(s.last.error.status, 502);
    MG_CHECK_STR(s.last.error.type, "server_error");
    MG_CHECK_STR(s.text, "the upstream stream ended before the answer was complete");
}

static char *fake_encode_error(int status, const char *type, const char *code, const char *message)
{
    return mg_xasprintf("{\"s\":%d,\"m\":\"%s\"}", status, message);
}

MG_TEST(error_frame_defaults_the_status)
{
    mg_buf_t out = {0};
    mg_ir_error_t e = {0, NULL, NULL, "boom"};
    mg_codec_error_frame(&out, "error", &e, fake_encode_error);
    e.status = 429;
    mg_codec_error_frame(&out, NULL, &e, fake_encode_error);
    MG_CHECK_STR(out.data, "event: error\ndata: {\"s\":500,\"m\":\"boom\"}\n\ndata: {\"s\":429,\"m\":\"boom\"}\n\n");
    mg_buf_free(&out);
}

MG_TEST(answer_ids_take_the_client_apis_prefix)
{
    static const struct {
        const char *prefix, *opt, *up, *want;
    } cases[] = {
        {"msg_", NULL, "chatcmpl-abc", "msg_chatcmpl-abc"},     /* another API's id, kept whole */
        {"chatcmpl-", NULL, "msg_01XY", "chatcmpl-msg_01XY"},
        {"resp_", NULL, "chatcmpl-1", "resp_chatcmpl-1"},
        {"msg_", NULL, "msg_01XY", "msg_01XY"},                 /* already the client's shape */
        {"chatcmpl-", NULL, "gen-17/a b.c", "chatcmpl-gen-17_a_b_c"}, /* [A-Za-z0-9_-] only */
        {"msg_", "given", "chatcmpl-abc", "given"},             /* an explicit id as given */
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        char *id = mg_codec_answer_id(cases[i].prefix, cases[i].opt, cases[i].up,
                                      strcmp(cases[i].prefix, "msg_") == 0 ? "msg_moongate" : "x");
        MG_CHECK_STR(id, cases[i].want);
        free(id);
    }
    /* No upstream id: the fallback and a suffix, different for every answer. */
    char *a = mg_codec_answer_id("msg_", NULL, NULL, "msg_moongate");
    char *b = mg_codec_answer_id("msg_", NULL, "", "msg_moongate");
    MG_CHECK(strncmp(a, "msg_moongate-", 13) == 0 && strlen(a) > 13);
    MG_CHECK(strncmp(b, "msg_moongate-", 13) == 0);
    MG_CHECK(strcmp(a, b) != 0);
    for (const char *c = a + 13; *c; c++) MG_CHECK((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'));
    free(a);
    free(b);
}

MG_TEST(tool_ids_for_anthropic_and_made_up_ones)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"functions.get_weather:0", "functions_get_weather_0"}, /* Kimi K2 */
        {"toolu_01A-b_c", "toolu_01A-b_c"},                     /* valid: unchanged */
        {"call 1/\xc3\xa9", "call_1___"},                       /* one "_" per byte */
        {NULL, ""},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        char *id = mg_codec_anthropic_tool_id(cases[i].in);
        MG_CHECK_STR(id, cases[i].want);
        free(id);
    }
    /* Made-up call ids: the prefix, then only [A-Za-z0-9], never twice. */
    char *ids[64];
    for (int i = 0; i < 64; i++) {
        ids[i] = mg_codec_new_call_id(i % 2 ? "toolu_" : "call_");
        const char *rest = ids[i] + (i % 2 ? 6 : 5);
        MG_CHECK(strncmp(ids[i], i % 2 ? "toolu_" : "call_", i % 2 ? 6 : 5) == 0 && strlen(rest) > 8);
        for (const char *c = rest; *c; c++)
            MG_CHECK((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z'));
        for (int k = 0; k < i; k++)
            MG_CHECK(strcmp(ids[i] + (i % 2 ? 6 : 5), ids[k] + (k % 2 ? 6 : 5)) != 0);
    }
    for (int i = 0; i < 64; i++)
        free(ids[i]);
}

MG_TEST_MAIN()

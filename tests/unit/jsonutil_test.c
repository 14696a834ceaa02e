/* Unit tests for jsonutil.c: member lookup and in-place replacement on raw JSON text, the escape
 * fix-up before cJSON parses, and the duplicate-name check. */
#include "ir.h"
#include "jsonutil.h"
#include "mg_test.h"
#include "util.h"

#include <stdlib.h>

static char *set(const char *in, const char *key, const char *raw)
{
    size_t n;
    return mg_json_set_member(in, strlen(in), key, raw, &n);
}

MG_TEST(replaces_value_keeping_other_bytes)
{
    char *out = set("{ \"model\" : \"a\",\n  \"x\":[1, {\"model\":\"inner\"}] }", "model", "\"b/c\"");
    MG_CHECK_STR(out, "{ \"model\" : \"b/c\",\n  \"x\":[1, {\"model\":\"inner\"}] }");
    free(out);
}

MG_TEST(nested_member_with_same_name_is_not_top_level)
{
    char *out = set("{\"x\":{\"model\":\"inner\"},\"model\":\"m\"}", "model", "\"z\"");
    MG_CHECK_STR(out, "{\"x\":{\"model\":\"inner\"},\"model\":\"z\"}");
    free(out);
}

MG_TEST(replaces_every_duplicate)
{
    /* cJSON (and so the router) reads the first "model"; an upstream's parser may keep the last:
     * no client value may survive in either. */
    char *out = set("{\"model\":\"default\",\"x\":1,\"model\" : \"other-upstream-id\"}", "model", "\"m\"");
    MG_CHECK_STR(out, "{\"model\":\"m\",\"x\":1,\"model\" : \"m\"}");
    free(out);
}

MG_TEST(inserts_when_absent)
{
    char *out = set("{\"a\":1}", "stream_options", "{\"include_usage\":true}");
    MG_CHECK_STR(out, "{\"stream_options\":{\"include_usage\":true},\"a\":1}");
    free(out);
    out = set(" { } ", "k", "1");
    MG_CHECK_STR(out, " {\"k\":1 } ");
    free(out);
}

MG_TEST(replaces_non_string_values)
{
    char *out = set("{\"stream_options\":{\"include_usage\":false,\"x\":\"}\"},\"b\":2}", "stream_options", "{}");
    MG_CHECK_STR(out, "{\"stream_options\":{},\"b\":2}");
    free(out);
    out = set("{\"a\":true,\"n\":-1.5e3}", "n", "7");
    MG_CHECK_STR(out, "{\"a\":true,\"n\":7}");
    free(out);
}

MG_TEST(strings_with_escapes_and_braces)
{
    const char *in = "{\"s\":\"a\\\"}{,\\\\\",\"model\":\"q\\\"\"}";
    size_t vs, ve;
    MG_CHECK(mg_json_member_span(in, strlen(in), "model", &vs, &ve));
    MG_CHECK_INT(ve - vs, 5);
    MG_CHECK(strncmp(in + vs, "\"q\\\"\"", 5) == 0);
}

MG_TEST(missing_key_is_not_found)
{
    size_t vs, ve;
    MG_CHECK(!mg_json_member_span("{\"models\":1}", 12, "model", &vs, &ve));
    MG_CHECK(!mg_json_member_span("[1]", 3, "model", &vs, &ve));
}

MG_TEST(escaped_key_is_the_member_cjson_reads)
{
    /* cJSON routes {"mod\u0065l":…} by that model: the splice must replace it, not add another. */
    char *out = set("{\"mod\\u0065l\":\"c/mc\",\"x\":1}", "model", "\"m\"");
    MG_CHECK_STR(out, "{\"mod\\u0065l\":\"m\",\"x\":1}");
    free(out);
    out = set("{\"\\u006D\\u006f\\u0064el\" : 1}", "model", "2");
    MG_CHECK_STR(out, "{\"\\u006D\\u006f\\u0064el\" : 2}");
    free(out);
    size_t vs, ve;
    const char *t = "{\"a\\/b\":1,\"\\ud83d\\ude00\\n\":2,\"model\\u0000\":3,\"mode\\\\l\":4}";
    MG_CHECK(mg_json_member_span(t, strlen(t), "a/b", &vs, &ve) && t[vs] == '1');
    MG_CHECK(mg_json_member_span(t, strlen(t), "\xF0\x9F\x98\x80\n", &vs, &ve) && t[vs] == '2');
    MG_CHECK(mg_json_member_span(t, strlen(t), "model\xEF\xBF\xBD", &vs, &ve) && t[vs] == '3');
    MG_CHECK(!mg_json_member_span(t, strlen(t), "model", &vs, &ve));
    MG_CHECK(mg_json_member_span(t, strlen(t), "mode\\l", &vs, &ve) && t[vs] == '4');
}

/* mg_json_fix_escapes on in: the fixed text, or NULL when it made no copy. */
static char *fix(const char *in)
{
    char *out = mg_json_fix_escapes(in, strlen(in));
    if (out) MG_CHECK_INT(strlen(out), strlen(in)); /* the same length, NUL-terminated */
    return out;
}

MG_TEST(fix_escapes_copies_nothing_when_nothing_is_wrong)
{
    MG_CHECK(!fix("{\"a\":\"plain text\"}"));
    MG_CHECK(!fix("\"\\n\\t\\\"\\\\\\/ \\u00e9 \\u20AC \\ud83d\\ude00 \\uD83D\\uDE00 \\uDBFF\\uDFFF\""));
    /* escaped backslashes: "\\u0000" is a backslash, then the text u0000 */
    MG_CHECK(!fix("\"\\\\u0000 \\\\ud83d \\\\\\\\udc00\""));
    MG_CHECK(!fix("\"a\\"));    /* a backslash at the end */
    MG_CHECK(!fix("\"\\u00\"")); /* not four hex digits: cJSON refuses it, as before */
    MG_CHECK(!mg_json_fix_escapes("", 0));
}

MG_TEST(fix_escapes_replaces_nul_and_lone_surrogates)
{
    char *out;
    MG_CHECK_STR(out = fix("\"HEADER\\u0000TAIL\""), "\"HEADER\\ufffdTAIL\"");
    free(out);
    /* an escaped backslash, then a real escape */
    MG_CHECK_STR(out = fix("\"\\\\\\u0000\""), "\"\\\\\\ufffd\"");
    free(out);
    /* a high surrogate at the end of a string, of the text, before a character, before a high */
    MG_CHECK_STR(out = fix("[\"ok \\ud83d\",\"\\uD83Dx\",\"\\ud83d\\ud83d\\ude00\"]"),
                 "[\"ok \\ufffd\",\"\\ufffdx\",\"\\ufffd\\ud83d\\ude00\"]");
    free(out);
    MG_CHECK_STR(out = fix("\"\\uDBFF"), "\"\\ufffd");
    free(out);
    /* a low one alone, and a low before a high (the wrong order) */
    MG_CHECK_STR(out = fix("\"a\\udc00b\\uDE00\\uD83D\""), "\"a\\ufffdb\\ufffd\\ufffd\"");
    free(out);
    /* a high followed by an escape that is not a low one */
    MG_CHECK_STR(out = fix("\"\\ud800\\u0041\\ud800\\n\""), "\"\\ufffd\\u0041\\ufffd\\n\"");
    free(out);
}

MG_TEST(fixed_text_keeps_what_follows_in_the_tree)
{
    const char *t = "{\"s\":\"HEADER\\u0000TAIL \\ud83d\",\"k\\u0000\":1}";
    cJSON *j = mg_ir_parse_text(t, strlen(t));
    MG_CHECK(j != NULL);
    MG_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "s")),
                 "HEADER\xEF\xBF\xBDTAIL \xEF\xBF\xBD");
    MG_CHECK(cJSON_GetObjectItemCaseSensitive(j, "k\xEF\xBF\xBD") != NULL);
    cJSON_Delete(j);
    /* end is reported in the caller's text, not in the fixed copy */
    mg_ir_arena_t *a = mg_ir_arena_new();
    const char *end = NULL;
    const char *u = "{\"s\":\"\\u0000\"}  ";
    MG_CHECK(mg_ir_parse_json(a, u, strlen(u), &end) != NULL);
    MG_CHECK(end == u + strlen(u) - 2);
    mg_ir_arena_free(a);
}

/* mg_json_duplicate_key on text: its message, or NULL when there is no duplicate. */
static const char *dup(const char *text)
{
    static char msg[160];
    cJSON *j = cJSON_Parse(text);
    MG_CHECK(j != NULL);
    bool d = mg_json_duplicate_key(j, msg, sizeof msg);
    cJSON_Delete(j);
    return d ? msg : NULL;
}

MG_TEST(duplicate_keys_at_any_depth)
{
    MG_CHECK(!dup("{\"a\":1,\"b\":{\"a\":2},\"c\":[{\"a\":1},{\"a\":2}],\"A\":3}"));
    MG_CHECK(!dup("[1,{},[],\"x\"]"));
    MG_CHECK_STR(dup("{\"model\":\"x\",\"messages\":[],\"model\":\"y\"}"),
                 "duplicate key \"model\" in the top-level object");
    MG_CHECK_STR(dup("{\"messages\":[{\"role\":\"user\"},{\"role\":\"a\",\"content\":\"x\",\"role\":\"b\"}]}"),
                 "duplicate key \"role\" in messages[1]");
    MG_CHECK_STR(dup("{\"tools\":[{\"function\":{\"parameters\":{\"properties\":{\"q\":{},\"q\":{}}}}}]}"),
                 "duplicate key \"q\" in tools[0].function.parameters.properties");
    MG_CHECK_STR(dup("[[0,{\"x\":1,\"x\":1}]]"), "duplicate key \"x\" in [0][1]");
    /* compared as cJSON decoded them */
    MG_CHECK_STR(dup("{\"mod\\u0065l\":1,\"model\":2}"), "duplicate key \"model\" in the top-level object");
}

MG_TEST(duplicate_keys_in_large_objects)
{
    /* 300 members: sorted, not compared pair by pair; the duplicate may be anywhere */
    mg_buf_t b = {0};
    mg_buf_puts(&b, "{\"schema\":{");
    for (int i = 0; i < 300; i++)
        mg_buf_printf(&b, "%s\"p%d\":%d", i ? "," : "", (i * 7919) % 300, i);
    mg_buf_puts(&b, "}}");
    MG_CHECK(!dup(b.data));
    b.len -= 2;
    mg_buf_puts(&b, ",\"p150\":0}}");
    MG_CHECK_STR(dup(b.data), "duplicate key \"p150\" in schema");
    mg_buf_free(&b);
}

MG_TEST(duplicate_key_paths_are_cut_not_overrun)
{
    mg_buf_t b = {0};
    for (int i = 0; i < 200; i++)
        mg_buf_puts(&b, "{\"abcdefghij\":");
    mg_buf_puts(&b, "{\"z\":1,\"z\":2}");
    for (int i = 0; i < 200; i++)
        mg_buf_puts(&b, "}");
    const char *m = dup(b.data);
    MG_CHECK(m && strncmp(m, "duplicate key \"z\" in abcdefghij.abcdefghij.", 43) == 0);
    mg_buf_free(&b);
}

MG_TEST(control_bytes_are_found_wherever_they_are)
{
    /* Against the plain definition: every byte value at every place of texts of 0..19 bytes, so
     * that the eight-at-a-time scan and its tail are both crossed. */
    char t[20];
    for (size_t len = 0; len < sizeof t; len++) {
        for (size_t p = 0; p < len; p++) {
            for (int v = 0; v < 256; v++) {
                memset(t, 'a', sizeof t);
                if (p) t[p - 1] = '\n'; /* an allowed one just before: the word is looked into */
                t[p] = (char)v;
                bool bad = v < 0x20 && v != '\t' && v != '\n' && v != '\r';
                size_t want = bad ? p : len;
                MG_CHECK(mg_json_control_byte(t, len) == want);
            }
        }
    }
    MG_CHECK(mg_json_control_byte("{\"a\":\"b\"}\r\n\t", 12) == 12);
    MG_CHECK(mg_json_control_byte("\xef\xbb\xbf{}", 5) == 5); /* bytes over 0x7f are no control bytes */
}

MG_TEST_MAIN()

/* Unit tests for jsonutil.c: member lookup and in-place replacement on raw JSON text. */
#include "jsonutil.h"
#include "mg_test.h"

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

MG_TEST_MAIN()

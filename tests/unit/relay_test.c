/* Unit tests for the pure parts of relay.c: reasoning into its one place (reasoning_content),
 * stripping, and <think> splitting across deltas. */
#include "mg_test.h"
#include "relay.h"

#include <stdlib.h>

/* Feeds content deltas through the splitter; returns "reasoning|text" (caller frees). */
static char *split_all(const char *const *deltas, size_t n)
{
    mg_think_t t = {0};
    mg_buf_t reason = {0}, text = {0};
    for (size_t i = 0; i < n; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "content", deltas[i]);
        mg_relay_split_think(&t, d);
        const char *r = cJSON_GetStringValue(cJSON_GetObjectItem(d, "reasoning_content"));
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItem(d, "content"));
        if (r) mg_buf_puts(&reason, r);
        if (c) mg_buf_puts(&text, c);
        cJSON_Delete(d);
    }
    char *out = mg_xasprintf("%s|%s", reason.data ? reason.data : "", text.data ? text.data : "");
    mg_buf_free(&reason);
    mg_buf_free(&text);
    return out;
}

MG_TEST(think_block_in_one_delta)
{
    const char *d[] = {"<think>plan it</think>\n\nHello", " world"};
    char *s = split_all(d, 2);
    MG_CHECK_STR(s, "plan it|Hello world");
    free(s);
}

MG_TEST(think_tags_cut_across_deltas)
{
    const char *d[] = {"  <thi", "nk>step ", "one</th", "ink>", "\nAnswer"};
    char *s = split_all(d, 5);
    MG_CHECK_STR(s, "step one|Answer");
    free(s);
}

MG_TEST(no_think_block_passes_unchanged)
{
    mg_think_t t = {0};
    cJSON *d = cJSON_Parse("{\"content\":\"Plain <think> later is text\"}");
    MG_CHECK(!mg_relay_split_think(&t, d));
    MG_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(d, "content")), "Plain <think> later is text");
    cJSON_Delete(d);
    const char *dd[] = {"<b>bold</b>", "<think>not at start</think>"};
    char *s = split_all(dd, 2);
    MG_CHECK_STR(s, "|<b>bold</b><think>not at start</think>");
    free(s);
}

MG_TEST(reasoning_is_renamed_or_stripped)
{
    cJSON *d = cJSON_Parse("{\"reasoning\":\"r1\",\"content\":\"x\"}");
    MG_CHECK(mg_relay_normalize_reasoning(d, false));
    MG_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(d, "reasoning_content")), "r1");
    MG_CHECK(!cJSON_GetObjectItem(d, "reasoning"));
    cJSON_Delete(d);

    d = cJSON_Parse("{\"reasoning_content\":\"r\",\"reasoning_details\":[],\"content\":\"x\"}");
    MG_CHECK(mg_relay_normalize_reasoning(d, true));
    MG_CHECK(!cJSON_GetObjectItem(d, "reasoning_content") && !cJSON_GetObjectItem(d, "reasoning_details"));
    MG_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(d, "content")), "x");
    cJSON_Delete(d);

    d = cJSON_Parse("{\"reasoning_content\":\"r\"}");
    MG_CHECK(!mg_relay_normalize_reasoning(d, false)); /* already in place */
    cJSON_Delete(d);
}

MG_TEST_MAIN()

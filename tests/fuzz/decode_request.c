/* libFuzzer target for the request and whole-response codecs (api_*.c, ir.c). Input layout:
 * byte 0 picks the source API (mod 3); the rest is a JSON document.
 *
 * Asserts (abort on failure):
 * - a request that decodes encodes for every upstream API or is refused with a reason;
 * - what an encoder produced is accepted by the same API's decoder, and encoding that again gives
 *   the same bytes (the encoders only write what their decoders read);
 * - the same document read as an upstream answer (and as an error body) never crashes, and a
 *   translated answer is accepted by the client API's decoder;
 * - the text fixes around cJSON (jsonutil.c): the escape fix-up keeps the length, is done in one
 *   pass and only makes more texts readable; a request object without duplicate names, its
 *   "model" set on the raw text as the same-API path does, reads back with exactly one "model"
 *   (the new value) and every other member unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "ir.h"
#include "jsonutil.h"

static const mg_api_t apis[3] = {MG_API_OPENAI_COMPLETIONS, MG_API_OPENAI_RESPONSES, MG_API_ANTHROPIC_MESSAGES};

static void requests(mg_api_t from, const cJSON *body)
{
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_request_t ir;
    char err[256] = "";
    if (mg_ir_decode_request(from, body, a, &ir, err, sizeof err) != 0) {
        CHECK(err[0] != '\0');
        mg_ir_arena_free(a);
        return;
    }
    for (int t = 0; t < 3; t++) {
        mg_ir_request_opts_t o = {.model = "m", .default_max_tokens = t * 3000};
        err[0] = '\0';
        cJSON *enc = mg_ir_encode_request(apis[t], &ir, &o, err, sizeof err);
        if (!enc) {
            CHECK(err[0] != '\0');
            continue;
        }
        char *s1 = cJSON_PrintUnformatted(enc);
        CHECK(s1 != NULL);
        mg_ir_arena_t *a2 = mg_ir_arena_new();
        mg_ir_request_t ir2;
        int rc = mg_ir_decode_request(apis[t], enc, a2, &ir2, err, sizeof err);
        if (rc != 0) fprintf(stderr, "decoder refused the encoder's output: %s\n%s\n", err, s1);
        CHECK(rc == 0);
        cJSON *enc2 = mg_ir_encode_request(apis[t], &ir2, &o, err, sizeof err);
        CHECK(enc2 != NULL);
        char *s2 = cJSON_PrintUnformatted(enc2);
        if (strcmp(s1, s2) != 0) fprintf(stderr, "not idempotent:\n%s\n%s\n", s1, s2);
        CHECK(strcmp(s1, s2) == 0);
        cJSON_free(s1);
        cJSON_free(s2);
        cJSON_Delete(enc);
        cJSON_Delete(enc2);
        mg_ir_arena_free(a2);
    }
    mg_ir_arena_free(a);
}

static void responses(mg_api_t from, const char *text, size_t len)
{
    for (int t = 0; t < 3; t++) {
        char err[256] = "";
        mg_ir_output_opts_t o = {.created = 1, .strip_reasoning = t == 1};
        cJSON *out = mg_ir_translate_response(from, apis[t], text, len, NULL, &o, err, sizeof err);
        if (!out) {
            CHECK(err[0] != '\0');
            continue;
        }
        mg_ir_arena_t *a = mg_ir_arena_new();
        mg_ir_response_t r;
        mg_ir_decode_opts_t no_think = {.no_think_tags = true};
        CHECK(mg_ir_codec(apis[t])->decode_response(out, a, &no_think, &r, err, sizeof err) == 0);
        mg_ir_arena_free(a);
        cJSON_Delete(out);
    }
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_error_t e;
    mg_ir_error_from_body(a, 400 + (long)(len % 200), text, len, &e);
    CHECK(e.message != NULL && e.status >= 400);
    for (int t = 0; t < 3; t++)
        free(mg_ir_encode_error(apis[t], &e));
    mg_ir_arena_free(a);
}

static void text_fixes(const char *text, size_t len, const cJSON *body)
{
    char *fixed = mg_json_fix_escapes(text, len);
    if (fixed) {
        for (size_t k = 0; k < len; k++) { /* only hex digits of escapes changed, to fffd */
            if (fixed[k] == text[k]) continue;
            bool in_fffd = false;
            for (size_t s = k >= 5 ? k - 5 : 0; s + 2 <= k && !in_fffd; s++)
                in_fffd = s + 6 <= len && memcmp(fixed + s, "\\ufffd", 6) == 0;
            CHECK(in_fffd);
        }
        CHECK(fixed[len] == '\0');
        char *again = mg_json_fix_escapes(fixed, len);
        CHECK(again == NULL); /* one pass fixes all */
        cJSON *fj = cJSON_ParseWithLengthOpts(fixed, len, NULL, false);
        CHECK(!body || fj); /* fixing never makes a readable text unreadable */
        cJSON_Delete(fj);
        free(fixed);
    }
    if (!cJSON_IsObject(body)) return;
    char msg[160];
    if (mg_json_duplicate_key(body, msg, sizeof msg)) {
        CHECK(msg[0] != '\0');
        return; /* refused before any splice */
    }
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    const char *end = NULL;
    cJSON *whole = cJSON_ParseWithLengthOpts(text, len, &end, false);
    bool only = whole && end && (size_t)(end - text) == len; /* nothing after the object */
    cJSON_Delete(whole);
    if (i >= len || text[i] != '{' || !only || mg_json_control_byte(text, len) < len)
        return; /* what the router refuses */
    size_t n;
    char *set = mg_json_set_member(text, len, "model", "\"fuzz-model\"", &n);
    cJSON *j = cJSON_ParseWithLengthOpts(set, n, NULL, false);
    CHECK(cJSON_IsObject(j));
    int models = 0;
    for (const cJSON *c = j->child; c; c = c->next)
        if (c->string && strcmp(c->string, "model") == 0) {
            models++;
            CHECK(cJSON_IsString(c) && strcmp(c->valuestring, "fuzz-model") == 0);
        }
    CHECK(models == 1);
    for (const cJSON *c = body->child; c; c = c->next) {
        if (!c->string || strcmp(c->string, "model") == 0) continue;
        /* printed, not cJSON_Compare: that calls two infinities (1e999) different */
        char *was = cJSON_PrintUnformatted(c), *now = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, c->string));
        CHECK(was && now && strcmp(was, now) == 0);
        cJSON_free(was);
        cJSON_free(now);
    }
    cJSON_Delete(j);
    free(set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    mg_api_t from = apis[data[0] % 3];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    cJSON *body = cJSON_ParseWithLengthOpts(text, len, NULL, false);
    if (body) requests(from, body);
    responses(from, text, len);
    text_fixes(text, len, body);
    cJSON_Delete(body);
    return 0;
}

/* libFuzzer target for the request and whole-response codecs (api_*.c, ir.c). Input layout:
 * byte 0 picks the source API (mod 3); the rest is a JSON document.
 *
 * Asserts (abort on failure):
 * - a request that decodes encodes for every upstream API or is refused with a reason;
 * - what an encoder produced is accepted by the same API's decoder, and encoding that again gives
 *   the same bytes (the encoders only write what their decoders read);
 * - the same document read as an upstream answer (and as an error body) never crashes, and a
 *   translated answer is accepted by the client API's decoder. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "ir.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    mg_api_t from = apis[data[0] % 3];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    cJSON *body = cJSON_ParseWithLengthOpts(text, len, NULL, false);
    if (body) requests(from, body);
    responses(from, text, len);
    cJSON_Delete(body);
    return 0;
}

/* libFuzzer target for stream translation: upstream SSE bytes → sse.c → the upstream API's
 * stream decoder → the client API's stream encoder. Input layout: byte 0 picks the upstream API
 * (mod 3); byte 1 the client API (mod 3), strip_reasoning (bit 2) and the feed size (bits 3-7,
 * 0 = whole); the rest is the upstream's event stream.
 *
 * Asserts (abort on failure):
 * - the client stream is always terminated (END or ERROR reached the encoder);
 * - the client bytes obey the client API's framing rules as the official SDKs check them
 *   (Chat: role on the first chunk, [DONE] last; Anthropic: an `event:` line naming each frame,
 *   message_start first, content blocks opened and closed in increasing index order,
 *   message_stop last; Responses: response.created first, sequence_number 0, 1, 2…, items added
 *   in output_index order before anything refers to them);
 * - the client bytes are valid UTF-8, whatever bytes the upstream sent;
 * - the client API's own decoder reads back the same text, reasoning (none when stripped),
 *   number of tool calls, finish class, output tokens and error message. Text is compared as the
 *   collector holds it (each delta's bytes that are not UTF-8 made U+FFFD, as the encoders write
 *   them), error messages modulo U+FFFD. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "ir.h"
#include "sse.h"

static const mg_api_t apis[3] = {MG_API_OPENAI_COMPLETIONS, MG_API_OPENAI_RESPONSES, MG_API_ANTHROPIC_MESSAGES};

typedef struct pipe {
    mg_ir_decoder_t *dec;
    mg_ir_encoder_t *enc;
    mg_ir_collector_t col;
    bool strip;
    mg_buf_t out;
} pipe_t;

static int on_ir(void *ud, const mg_ir_event_t *ev)
{
    pipe_t *p = ud;
    CHECK(ev->type >= MG_IR_EV_START && ev->type <= MG_IR_EV_ERROR);
    if (ev->type == MG_IR_EV_ERROR) CHECK(ev->error.message != NULL);
    if (ev->type == MG_IR_EV_TOOL_CALL_START) CHECK(ev->id && ev->name);
    bool reasoning = ev->type == MG_IR_EV_REASONING_DELTA || ev->type == MG_IR_EV_REASONING_SIGNATURE;
    if (!(p->strip && reasoning)) mg_ir_collector_push(&p->col, ev);
    if (p->enc) mg_ir_encoder_push(p->enc, ev, &p->out);
    return 0;
}

static int on_sse(void *ud, const mg_sse_event_t *ev)
{
    pipe_t *p = ud;
    return mg_ir_decoder_feed(p->dec, ev->type, ev->type_len, ev->data, ev->data_len, on_ir, p);
}

/* max_event: the SSE parser's cap (the client side reads our own output, whose
 * response.completed repeats the whole answer: no cap there). */
static void run(pipe_t *p, mg_api_t api, const char *s, size_t n, size_t piece, bool no_think, size_t max_event)
{
    mg_ir_decode_opts_t o = {.no_think_tags = no_think};
    p->dec = mg_ir_decoder_new(api, &o);
    mg_ir_collector_init(&p->col);
    mg_sse_parser_t sp;
    mg_sse_init(&sp, max_event);
    if (!piece) piece = n ? n : 1;
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += piece)
        rc = mg_sse_feed(&sp, s + off, n - off < piece ? n - off : piece, on_sse, p);
    if (rc == 0) mg_sse_finish(&sp, true, on_sse, p);
    mg_sse_free(&sp);
    CHECK(mg_ir_decoder_finish(p->dec, on_ir, p) == 0);
    CHECK(p->col.ended || p->col.failed); /* finish always terminates */
    mg_ir_decoder_free(p->dec);
}

/* ---- framing rules of the produced client stream ---- */

typedef struct frames {
    mg_api_t api;
    int n;
    bool done_seen, stop_seen, error_seen;
    bool resp_error; /* Responses: an `error` event (response.failed may follow it) */
    int64_t seq;
    int items;      /* Responses: output items added */
    int open_block; /* Anthropic: the open content block, -1 none */
    int blocks;     /* Anthropic: blocks started */
} frames_t;

static int on_frame(void *ud, const mg_sse_event_t *ev)
{
    frames_t *f = ud;
    CHECK(!f->done_seen && !f->stop_seen && !f->error_seen); /* nothing after the end */
    int idx = f->n++;
    if (f->api == MG_API_OPENAI_COMPLETIONS) {
        CHECK(ev->type_len == 7 && memcmp(ev->type, "message", 7) == 0); /* no event: lines */
        if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
            f->done_seen = true;
            return 0;
        }
        cJSON *j = cJSON_ParseWithLengthOpts(ev->data, ev->data_len, NULL, false);
        CHECK(j != NULL);
        if (mg_ir_jget(j, "error")) {
            f->error_seen = true;
        } else if (idx == 0) {
            const cJSON *c0 = cJSON_GetArrayItem(mg_ir_jget(j, "choices"), 0);
            const char *role = mg_ir_jstr(mg_ir_jget(c0, "delta"), "role");
            CHECK(role && strcmp(role, "assistant") == 0);
        }
        cJSON_Delete(j);
        return 0;
    }
    cJSON *j = cJSON_ParseWithLengthOpts(ev->data, ev->data_len, NULL, false);
    CHECK(j != NULL);
    const char *type = mg_ir_jstr(j, "type");
    CHECK(type && strlen(type) == ev->type_len && memcmp(type, ev->type, ev->type_len) == 0);
    if (f->api == MG_API_ANTHROPIC_MESSAGES) {
        if (strcmp(type, "error") == 0) {
            f->error_seen = true;
        } else if (idx == 0) {
            CHECK(strcmp(type, "message_start") == 0);
        } else if (strcmp(type, "content_block_start") == 0) {
            CHECK(f->open_block < 0);
            CHECK(mg_ir_jint(j, "index", -1) == f->blocks);
            f->open_block = f->blocks++;
        } else if (strcmp(type, "content_block_delta") == 0) {
            CHECK(f->open_block >= 0 && mg_ir_jint(j, "index", -1) == f->open_block);
        } else if (strcmp(type, "content_block_stop") == 0) {
            CHECK(f->open_block >= 0 && mg_ir_jint(j, "index", -1) == f->open_block);
            f->open_block = -1;
        } else if (strcmp(type, "message_delta") == 0) {
            CHECK(f->open_block < 0);
            CHECK(cJSON_IsNumber(mg_ir_jget(mg_ir_jget(j, "usage"), "output_tokens")));
        } else if (strcmp(type, "message_stop") == 0) {
            f->stop_seen = true;
        } else {
            CHECK(!"unexpected Anthropic event");
        }
    } else {
        if (strcmp(type, "error") == 0) {
            CHECK(!f->resp_error);
            CHECK(mg_ir_jint(j, "sequence_number", -1) == f->seq);
            f->seq++;
            f->resp_error = true;
            cJSON_Delete(j);
            return 0; /* response.failed may follow */
        }
        CHECK(!f->resp_error || strcmp(type, "response.failed") == 0);
        if (idx == 0) CHECK(strcmp(type, "response.created") == 0);
        CHECK(mg_ir_jint(j, "sequence_number", -1) == f->seq);
        f->seq++;
        int64_t oi = mg_ir_jint(j, "output_index", -1);
        if (strcmp(type, "response.output_item.added") == 0) {
            CHECK(oi == f->items);
            f->items++;
        } else if (oi != -1) {
            CHECK(oi >= 0 && oi < f->items);
        }
        if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0 ||
            strcmp(type, "response.failed") == 0) {
            f->stop_seen = true;
            CHECK(cJSON_GetArraySize(mg_ir_jget(mg_ir_jget(j, "response"), "output")) == f->items);
        }
    }
    cJSON_Delete(j);
    return 0;
}

static void check_framing(mg_api_t api, const mg_buf_t *out)
{
    frames_t f = {.api = api, .open_block = -1};
    mg_sse_parser_t sp;
    mg_sse_init(&sp, (size_t)1 << 30);
    CHECK(mg_sse_feed(&sp, out->data ? out->data : "", out->len, on_frame, &f) == 0);
    CHECK(!mg_sse_pending(&sp)); /* every frame is complete */
    mg_sse_free(&sp);
    CHECK(f.n > 0);
    CHECK(f.done_seen || f.stop_seen || f.error_seen || f.resp_error);
}

/* ---- read-back ---- */

static char *concat(const mg_ir_response_t *r, mg_ir_part_type_t t)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, "");
    for (size_t i = 0; i < r->n_parts; i++)
        if (r->parts[i].type == t && r->parts[i].text) mg_buf_puts(&b, r->parts[i].text);
    return mg_buf_steal(&b);
}

/* s with every byte that is not well-formed UTF-8 made U+FFFD, as mg_buf_json_str writes it: an
 * error message is kept as the upstream sent it, and reaches the client repaired. Caller frees. */
static char *as_json_reads_back(const char *s)
{
    mg_buf_t b = {0};
    mg_buf_json_str(&b, s ? s : "");
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    CHECK(cJSON_IsString(j));
    char *out = strdup(j->valuestring);
    cJSON_Delete(j);
    mg_buf_free(&b);
    return out;
}

/* Whether the text the upstream sent (a, as the collector holds it: valid UTF-8, each delta
 * repaired on its own as the encoders write it) reads back the same (b). */
static bool same_text(const char *a, const char *b)
{
    CHECK(mg_utf8_valid_len(a, strlen(a)) == strlen(a));
    return strcmp(a, b) == 0;
}

static int count_tools(const mg_ir_response_t *r)
{
    int n = 0;
    for (size_t i = 0; i < r->n_parts; i++)
        n += r->parts[i].type == MG_IR_PART_TOOL_CALL;
    return n;
}

static int finish_class(mg_ir_finish_t f)
{
    return f == MG_IR_FINISH_LENGTH || f == MG_IR_FINISH_CONTEXT_WINDOW ? 1
           : f == MG_IR_FINISH_TOOL_CALLS                            ? 2
           : f == MG_IR_FINISH_CONTENT_FILTER                        ? 3
                                                                     : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    mg_api_t up = apis[data[0] % 3];
    mg_api_t client = apis[(data[1] & 3) % 3];
    bool strip = data[1] & 4;
    size_t piece = data[1] >> 3;
    const char *s = (const char *)data + 2;
    size_t n = size - 2;

    mg_ir_output_opts_t o = {.created = 1, .strip_reasoning = strip, .include_usage = true};
    pipe_t a = {.strip = strip};
    a.enc = mg_ir_encoder_new(client, &o);
    run(&a, up, s, n, piece, false, (size_t)1 << 16);
    CHECK(mg_ir_encoder_done(a.enc));
    CHECK(mg_utf8_valid_len(a.out.data, a.out.len) == a.out.len); /* JSON is UTF-8: RFC 8259 8.1 */
    check_framing(client, &a.out);

    pipe_t b = {0};
    run(&b, client, a.out.data ? a.out.data : "", a.out.len, 0, true, (size_t)1 << 30);
    CHECK(a.col.failed == b.col.failed);
    CHECK(a.col.ended == b.col.ended);
    if (a.col.failed) { /* the same message, but for bytes that are not UTF-8 (see as_json_reads_back) */
        char *m1 = as_json_reads_back(a.col.error.message), *m2 = as_json_reads_back(b.col.error.message);
        CHECK(strcmp(m1, m2) == 0);
        free(m1);
        free(m2);
    }
    mg_ir_arena_t *ar = mg_ir_arena_new();
    mg_ir_response_t ra, rb;
    mg_ir_collector_response(&a.col, ar, &ra);
    mg_ir_collector_response(&b.col, ar, &rb);
    char *t1 = concat(&ra, MG_IR_PART_TEXT), *t2 = concat(&rb, MG_IR_PART_TEXT);
    if (!same_text(t1, t2)) fprintf(stderr, "text \"%s\" read back as \"%s\"\n", t1, t2);
    CHECK(same_text(t1, t2));
    char *r1 = concat(&ra, MG_IR_PART_REASONING), *r2 = concat(&rb, MG_IR_PART_REASONING);
    CHECK(same_text(r1, r2));
    if (strip) CHECK(r2[0] == '\0');
    int n1 = count_tools(&ra), n2 = count_tools(&rb);
    CHECK(n1 == n2);
    if (a.col.ended) {
        CHECK(finish_class(mg_ir_effective_finish(ra.finish, n1 > 0)) ==
              finish_class(mg_ir_effective_finish(rb.finish, n2 > 0)));
        if (ra.usage.output >= 0 && ra.usage.output < 1000000000000LL) CHECK(rb.usage.output == ra.usage.output);
    }
    free(t1);
    free(t2);
    free(r1);
    free(r2);
    mg_ir_arena_free(ar);
    mg_ir_collector_free(&a.col);
    mg_ir_collector_free(&b.col);
    mg_ir_encoder_free(a.enc);
    mg_buf_free(&a.out);
    mg_buf_free(&b.out);
    return 0;
}

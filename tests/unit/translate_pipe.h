/* What the translation tests share: the fixtures' folder, the three APIs, a part-text joiner and
 * the stream pipe (upstream SSE bytes → the SSE parser, fed in pieces → an API's decoder → a
 * collector and, when set, a client API's encoder). Static: each test file that includes it gets
 * its own copy. */
#pragma once
#include "ir.h"
#include "mg_test.h"
#include "sse.h"
#include "util.h"

#define FIX MG_SOURCE_DIR "/tests/fixtures/translate"

/* The three APIs, in the order the goldens and loops use. */
static const struct {
    mg_api_t api;
    const char *name;
} apis[] = {
    {MG_API_OPENAI_COMPLETIONS, "chat"},
    {MG_API_OPENAI_RESPONSES, "responses"},
    {MG_API_ANTHROPIC_MESSAGES, "anthropic"},
};

/* The texts of r's parts of type t, joined ("" when none); the caller frees it. */
static char *concat(const mg_ir_response_t *r, mg_ir_part_type_t t)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, "");
    for (size_t i = 0; i < r->n_parts; i++)
        if (r->parts[i].type == t && r->parts[i].text) mg_buf_puts(&b, r->parts[i].text);
    return mg_buf_steal(&b);
}

typedef struct pipe_ctx {
    mg_ir_decoder_t *dec;
    mg_ir_encoder_t *enc; /* NULL: collect only */
    mg_ir_collector_t col;
    bool strip;
    mg_buf_t out;
    bool commit;     /* the first content event was seen */
    size_t pre_commit; /* bytes produced before it */
} pipe_ctx_t;

static int pipe_on_ir(void *ud, const mg_ir_event_t *ev)
{
    pipe_ctx_t *p = ud;
    if (!p->commit && mg_ir_event_is_content(ev)) {
        p->commit = true;
        p->pre_commit = p->out.len;
    }
    bool reasoning = ev->type == MG_IR_EV_REASONING_DELTA || ev->type == MG_IR_EV_REASONING_SIGNATURE;
    if (!(p->strip && reasoning)) mg_ir_collector_push(&p->col, ev);
    if (p->enc) mg_ir_encoder_push(p->enc, ev, &p->out);
    return 0;
}

static int pipe_on_sse(void *ud, const mg_sse_event_t *ev)
{
    pipe_ctx_t *p = ud;
    return mg_ir_decoder_feed(p->dec, ev->type, ev->type_len, ev->data, ev->data_len, pipe_on_ir, p);
}

/* Runs bytes of API `up` through decoder → (encoder for `client`), feeding the SSE parser in
 * pieces of `piece` bytes to exercise events cut across reads. */
static void run_pipe(pipe_ctx_t *p, mg_api_t up, const char *bytes, size_t len, size_t piece, bool no_think)
{
    mg_ir_decode_opts_t dopts = {.no_think_tags = no_think};
    p->dec = mg_ir_decoder_new(up, &dopts);
    mg_ir_collector_init(&p->col);
    mg_sse_parser_t sp;
    mg_sse_init(&sp, 0);
    for (size_t off = 0; off < len; off += piece)
        MG_CHECK(mg_sse_feed(&sp, bytes + off, MG_MIN(piece, len - off), pipe_on_sse, p) == 0);
    MG_CHECK(mg_sse_finish(&sp, true, pipe_on_sse, p) == 0);
    mg_sse_free(&sp);
    MG_CHECK(mg_ir_decoder_finish(p->dec, pipe_on_ir, p) == 0);
    mg_ir_decoder_free(p->dec);
}

/* Helpers shared by the ir_*_test.c files: run SSE text through a stream decoder and log the
 * model events as one line of text; push events through an encoder; parse encoder output. */
#pragma once
#pragma GCC diagnostic ignored "-Wunused-function"
#include "ir.h"
#include "sse.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    mg_ir_decoder_t *dec;
    mg_buf_t log;
} ir_log_ctx_t;

static void ir_log_str(mg_buf_t *b, const char *s, size_t n)
{
    mg_buf_puts(b, "\"");
    mg_buf_append(b, s ? s : "", s ? n : 0);
    mg_buf_puts(b, "\"");
}

/* One event as compact text, e.g. t"Hi" refusal"No" tc0[call_1|f] a0"{}" finish:stop end. */
static void ir_log_event(mg_buf_t *b, const mg_ir_event_t *ev)
{
    if (b->len) mg_buf_puts(b, " ");
    switch (ev->type) {
    case MG_IR_EV_START:
        mg_buf_printf(b, "start[%s|%s]", ev->id ? ev->id : "", ev->model ? ev->model : "");
        break;
    case MG_IR_EV_REASONING_DELTA: mg_buf_puts(b, "r"); ir_log_str(b, ev->text, ev->text_len); break;
    case MG_IR_EV_REASONING_SIGNATURE: mg_buf_puts(b, "sig"); ir_log_str(b, ev->text, ev->text_len); break;
    case MG_IR_EV_TEXT_DELTA:
        mg_buf_puts(b, ev->refusal ? "refusal" : "t");
        ir_log_str(b, ev->text, ev->text_len);
        break;
    case MG_IR_EV_TOOL_CALL_START: mg_buf_printf(b, "tc%d[%s|%s]", ev->index, ev->id, ev->name); break;
    case MG_IR_EV_TOOL_CALL_DELTA:
        mg_buf_printf(b, "a%d", ev->index);
        ir_log_str(b, ev->text, ev->text_len);
        break;
    case MG_IR_EV_BLOCK_END: mg_buf_puts(b, "/"); break;
    case MG_IR_EV_OPAQUE_BLOCK: mg_buf_puts(b, "opaque"); break;
    case MG_IR_EV_FINISH: mg_buf_printf(b, "finish:%s", mg_ir_finish_name(ev->finish)); break;
    case MG_IR_EV_USAGE:
        mg_buf_printf(b, "usage[%lld,%lld,%lld,%lld,%lld]", (long long)ev->usage.input, (long long)ev->usage.output,
                      (long long)ev->usage.cache_read, (long long)ev->usage.cache_write,
                      (long long)ev->usage.reasoning);
        break;
    case MG_IR_EV_END: mg_buf_puts(b, "end"); break;
    case MG_IR_EV_ERROR:
        mg_buf_printf(b, "err[%d|%s|%s|%s]", ev->error.status, ev->error.type ? ev->error.type : "",
                      ev->error.code ? ev->error.code : "", ev->error.message ? ev->error.message : "");
        break;
    }
}

static int ir_log_cb(void *ud, const mg_ir_event_t *ev)
{
    ir_log_event(&((ir_log_ctx_t *)ud)->log, ev);
    return 0;
}

static int ir_log_sse_cb(void *ud, const mg_sse_event_t *ev)
{
    ir_log_ctx_t *c = ud;
    return mg_ir_decoder_feed(c->dec, ev->type, ev->type_len, ev->data, ev->data_len, ir_log_cb, c);
}

/* Decodes SSE text of API `api` (fed in pieces of `piece` bytes, 0 = whole) including the
 * end-of-stream step; returns the event log (caller frees). */
static char *ir_decode_log(mg_api_t api, const char *sse, size_t piece, const mg_ir_decode_opts_t *o)
{
    ir_log_ctx_t c = {0};
    c.dec = mg_ir_decoder_new(api, o);
    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    size_t len = strlen(sse);
    if (!piece) piece = len ? len : 1;
    for (size_t off = 0; off < len; off += piece)
        mg_sse_feed(&p, sse + off, len - off < piece ? len - off : piece, ir_log_sse_cb, &c);
    mg_sse_finish(&p, true, ir_log_sse_cb, &c);
    mg_sse_free(&p);
    mg_ir_decoder_finish(c.dec, ir_log_cb, &c);
    mg_ir_decoder_free(c.dec);
    if (!c.log.data) return mg_xstrdup("");
    return mg_buf_steal(&c.log);
}

/* Encodes events for a client API; returns the SSE bytes (caller frees). */
static char *ir_encode(mg_api_t client, const mg_ir_output_opts_t *o, const mg_ir_event_t *evs, size_t n)
{
    mg_ir_encoder_t *e = mg_ir_encoder_new(client, o);
    mg_buf_t out = {0};
    for (size_t i = 0; i < n; i++)
        mg_ir_encoder_push(e, &evs[i], &out);
    mg_ir_encoder_free(e);
    if (!out.data) return mg_xstrdup("");
    return mg_buf_steal(&out);
}

/* Counts occurrences of needle in s. */
static int ir_count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* A one-chunk Chat stream "data: {…delta…}\n\n" for a delta JSON. */
static void ir_chat_chunk(mg_buf_t *b, const char *delta, const char *finish)
{
    mg_buf_printf(b, "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":%s}]}\n\n",
                  delta, finish ? finish : "null");
}

#define IR_TEXT_EV(s) ((mg_ir_event_t){.type = MG_IR_EV_TEXT_DELTA, .text = (s), .text_len = strlen(s)})
#define IR_REFUSAL_EV(s) ((mg_ir_event_t){.type = MG_IR_EV_TEXT_DELTA, .text = (s), .text_len = strlen(s), .refusal = true})
#define IR_REASON_EV(s) ((mg_ir_event_t){.type = MG_IR_EV_REASONING_DELTA, .text = (s), .text_len = strlen(s)})

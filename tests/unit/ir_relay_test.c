/* The translation layer driven the way the relay drives it (and a worked example of that use):
 * per attempt one decoder (the upstream's API) and one encoder (the client's API); each upstream
 * SSE event is decoded, each model event encoded; bytes are held back until the first content
 * event (the commit point); an ERROR before it abandons the attempt without a byte reaching the
 * client, so the next candidate (maybe another API) starts clean; a transfer that breaks after it
 * ends the client's stream with an error in the client's own dialect. */
#include "ir.h"
#include "mg_test.h"
#include "sse.h"

#include <stdlib.h>
#include <string.h>

typedef struct attempt {
    mg_ir_decoder_t *dec;
    mg_ir_encoder_t *enc;
    mg_buf_t pending;   /* encoded bytes held back before the commit point */
    bool committed;
    bool failed;        /* an ERROR before the commit point: try the next candidate */
    mg_ir_error_t fail; /* (strings valid only in the callback; the relay would copy) */
    mg_buf_t *client;   /* what the client receives */
    int64_t out_tokens;
} attempt_t;

static int on_ir_event(void *ud, const mg_ir_event_t *ev)
{
    attempt_t *a = ud;
    if (ev->type == MG_IR_EV_USAGE && ev->usage.output >= 0) a->out_tokens = ev->usage.output; /* accounting */
    if (!a->committed && ev->type == MG_IR_EV_ERROR) {
        a->failed = true; /* nothing was sent: fall back invisibly */
        a->fail.status = ev->error.status;
        return 1;         /* stop decoding; the relay aborts the transfer */
    }
    mg_buf_t bytes = {0};
    mg_ir_encoder_push(a->enc, ev, &bytes);
    if (!a->committed && (mg_ir_event_is_content(ev) || ev->type == MG_IR_EV_FINISH || ev->type == MG_IR_EV_END)) {
        a->committed = true; /* first content (or an empty but finished answer) */
        mg_buf_append(a->client, a->pending.data, a->pending.len);
        mg_buf_free(&a->pending);
    }
    if (a->committed) mg_buf_append(a->client, bytes.data, bytes.len);
    else mg_buf_append(&a->pending, bytes.data, bytes.len);
    mg_buf_free(&bytes);
    return 0;
}

static int on_sse_event(void *ud, const mg_sse_event_t *ev)
{
    attempt_t *a = ud;
    return mg_ir_decoder_feed(a->dec, ev->type, ev->type_len, ev->data, ev->data_len, on_ir_event, a);
}

/* One attempt against an upstream speaking `up`, whose body is `body`; transport_ok false
 * simulates a connection that broke after the body. Returns whether the attempt failed before
 * committing. */
static bool attempt(mg_api_t up, mg_api_t client, const char *body, bool transport_ok, mg_buf_t *to_client)
{
    attempt_t a = {.client = to_client};
    a.dec = mg_ir_decoder_new(up, NULL);
    mg_ir_output_opts_t o = {.model = "moon", .created = 1, .include_usage = true};
    a.enc = mg_ir_encoder_new(client, &o);
    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    int rc = mg_sse_feed(&p, body, strlen(body), on_sse_event, &a);
    if (rc == 0 && transport_ok) {
        rc = mg_sse_finish(&p, true, on_sse_event, &a);
        if (rc == 0) rc = mg_ir_decoder_finish(a.dec, on_ir_event, &a); /* END, or ERROR if truncated */
    } else if (rc == 0 && a.committed) {
        /* The transfer broke after the commit point: tell the client in its own dialect. */
        mg_ir_event_t ev = {.type = MG_IR_EV_ERROR, .error = {502, NULL, NULL, "the upstream connection broke"}};
        on_ir_event(&a, &ev);
    } else if (rc == 0) {
        a.failed = true;
    }
    MG_CHECK(a.failed || mg_ir_encoder_done(a.enc)); /* a committed stream is always terminated */
    mg_sse_free(&p);
    mg_ir_decoder_free(a.dec);
    mg_ir_encoder_free(a.enc);
    mg_buf_free(&a.pending);
    return a.failed;
}

static const char *chat_overflow =
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    ": keep-alive\n\n"
    "event: error\ndata: {\"error\":{\"message\":\"Input does not fit in context length.\"}}\n\n";

static const char *anthropic_ok =
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi!\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

MG_TEST(fallback_before_commit_is_invisible)
{
    mg_buf_t client = {0};
    /* Candidate 1 (Chat) fails with an in-stream overflow before any content. */
    MG_CHECK(attempt(MG_API_OPENAI_COMPLETIONS, MG_API_OPENAI_RESPONSES, chat_overflow, true, &client));
    MG_CHECK_INT(client.len, 0);
    /* Candidate 2 (Anthropic) answers; the Responses client sees one clean stream. */
    MG_CHECK(!attempt(MG_API_ANTHROPIC_MESSAGES, MG_API_OPENAI_RESPONSES, anthropic_ok, true, &client));
    MG_CHECK(strncmp(client.data, "event: response.created\n", 24) == 0);
    MG_CHECK(strstr(client.data, "\"model\":\"moon\"") != NULL);
    MG_CHECK(strstr(client.data, "\"delta\":\"Hi!\"") != NULL);
    MG_CHECK(strstr(client.data, "event: response.completed\n") != NULL);
    mg_buf_free(&client);
}

MG_TEST(break_after_commit_ends_with_an_error_in_the_client_dialect)
{
    const char *partial =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hal\"}}\n\n";
    mg_buf_t client = {0};
    MG_CHECK(!attempt(MG_API_ANTHROPIC_MESSAGES, MG_API_OPENAI_COMPLETIONS, partial, false, &client));
    MG_CHECK(strstr(client.data, "\"content\":\"Hal\"") != NULL);
    MG_CHECK(strstr(client.data, "data: {\"error\":{\"message\":\"the upstream connection broke\",\"type\":\"server_error\"") != NULL);
    MG_CHECK(!strstr(client.data, "[DONE]"));
    mg_buf_reset(&client);
    /* The same body, but the upstream closed cleanly without finishing: the decoder says so. */
    MG_CHECK(!attempt(MG_API_ANTHROPIC_MESSAGES, MG_API_ANTHROPIC_MESSAGES, partial, true, &client));
    MG_CHECK(strstr(client.data, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"the upstream stream ended before the answer was complete\"}}") != NULL);
    mg_buf_free(&client);
}

MG_TEST_MAIN()

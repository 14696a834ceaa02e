/* Transfer callbacks: whole answers and streamed ones. See relay.h.
 *
 * Commit point (the streaming issue): before the first content-bearing event (text, tool call or
 * reasoning delta, or a finish reason) nothing reaches the client, so any failure until then lets
 * the router try the next candidate invisibly. After it, the client has seen content; a failure
 * ends the stream with an error event in the client's format and never a clean [DONE]. */
#include "relay.h"

#include "health.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MG_MAX_PENDING_BYTES (1u << 20) /* events held back before the commit point */

typedef struct event_ctx {
    mg_attempt_t *a;
    mg_xfer_t *x;               /* NULL at end of stream */
    const mg_sse_event_t *ev;   /* the upstream event being decoded (NULL at end of stream) */
    bool content;               /* it carried content (or finished the answer) */
    bool failed;                /* it was an error */
} event_ctx_t;

static void on_head(void *ud, long status, const char *headers, size_t len)
{
    mg_attempt_t *a = ud;
    a->status = status;
    mg_buf_reset(&a->headers);
    mg_buf_append(&a->headers, headers, len);
    if (a->req->stream && status >= 200 && status < 300) {
        /* Only an event stream is relayed as one; anything else is collected and judged whole. */
        for (size_t i = 0; i + 17 <= len; i++) {
            if ((headers[i] == 't' || headers[i] == 'T') && strncasecmp(headers + i, "text/event-stream", 17) == 0) {
                a->is_sse = true;
                break;
            }
        }
        if (a->is_sse) {
            mg_req_t *req = a->req;
            /* A Responses upstream repeats the whole answer in response.completed (and an image
             * tool's output in output_item.done): let such an event be as large as a whole answer
             * may be. It costs no more than one: its JSON is read under the same budget
             * (mg_ir_parse_text). */
            size_t max = req->gen->cfg->gw.max_event_bytes;
            if (a->model->provider->api == MG_API_OPENAI_RESPONSES)
                max = MG_MAX(max, req->gen->cfg->gw.max_upstream_body_bytes);
            mg_sse_init(&a->sse, max);
            if (a->mode != MG_RELAY_CHAT_RAW) a->dec = mg_ir_decoder_new(a->model->provider->api, NULL);
            if (a->mode == MG_RELAY_TRANSLATE) {
                mg_ir_output_opts_t o = {.strip_reasoning = a->strip_reasoning, .include_usage = req->wants_usage,
                                         .keep_upstream_id = a->model->provider->api == req->client_api,
                                         .default_model = a->model->id, .request = req->json};
                a->enc = mg_ir_encoder_new(req->client_api, &o);
            }
        }
    }
}

/* Replaces what b holds of one secret (8 bytes or more: shorter header values are not secrets). */
static void scrub_one(mg_buf_t *b, const char *secret, size_t min)
{
    size_t n = secret ? strlen(secret) : 0;
    /* All digits is no secret (an organisation number; its bare JSON number must stay valid). */
    if (n < min || strspn(secret, "0123456789") == n || !b->len || !memmem(b->data, b->len, secret, n)) return;
    mg_buf_t out = {0};
    const char *p = b->data, *end = b->data + b->len, *hit;
    while ((hit = memmem(p, (size_t)(end - p), secret, n))) {
        mg_buf_append(&out, p, (size_t)(hit - p));
        mg_buf_puts(&out, "[redacted]");
        p = hit + n;
    }
    mg_buf_append(&out, p, (size_t)(end - p));
    explicit_bzero(b->data, b->len);
    mg_buf_free(b);
    *b = out;
}

typedef struct secret {
    const char *s;
    size_t min; /* shorter than this, it is not scrubbed */
} secret_t;

static int by_length_desc(const void *x, const void *y)
{
    size_t a = strlen(((const secret_t *)x)->s), b = strlen(((const secret_t *)y)->s);
    return a < b ? 1 : a > b ? -1 : 0;
}

void mg_relay_scrub_secrets(mg_buf_t *b, const mg_provider_t *p)
{
    /* Longest first, so that a secret holding another ("Bearer <key>") goes whole. Header values
     * of 8 bytes or more only (shorter ones are flags, not secrets); the API key from 4 bytes
     * (LiteLLM's example key is "sk-1234"). */
    secret_t *v = mg_xcalloc(p->n_headers + 1, sizeof *v);
    size_t n = 0;
    if (p->api_key) v[n++] = (secret_t){p->api_key, 4};
    for (size_t i = 0; i < p->n_headers; i++)
        if (p->headers[i].value) v[n++] = (secret_t){p->headers[i].value, 8};
    qsort(v, n, sizeof *v, by_length_desc);
    for (size_t i = 0; i < n; i++) scrub_one(b, v[i].s, v[i].min);
    free(v);
}

void mg_relay_set_detail(mg_attempt_t *a, const char *prefix, const char *text, size_t len)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, prefix);
    mg_buf_append(&b, text, len);
    mg_relay_scrub_secrets(&b, a->model->provider);
    size_t n = b.len ? mg_utf8_fit(b.data, b.len, sizeof a->detail - 1) : 0;
    for (size_t i = 0; i < n; i++) a->detail[i] = (unsigned char)b.data[i] < 0x20 ? ' ' : b.data[i];
    a->detail[n] = '\0';
    mg_buf_free(&b);
}

/* Appends bytes for the client and wakes its connection if it is waiting. content says whether
 * they carry a content-bearing event (counted, with the bytes, for the access log: a partial usage
 * when the stream never reached its usage chunk). */
static void queue_out(mg_req_t *req, mg_attempt_t *a, const char *p, size_t n, bool done, bool content)
{
    pthread_mutex_lock(&req->lock);
    if (!req->out_done) {
        mg_buf_append(&req->out, p, n);
        req->out_done = done;
        req->last_out_ms = mg_now_ms();
        a->relayed_bytes += (int64_t)n;
        if (content) a->content_events++;
    }
    bool w = mg_req_take_wake_locked(req);
    pthread_mutex_unlock(&req->lock);
    if (w) mg_req_wake(req);
}

static const char *str_item(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool nonempty_str(const cJSON *o, const char *k)
{
    const char *s = str_item(o, k);
    return s && *s;
}

/* An event's data as SSE data lines: "data: " before each line of it, each ending in "\n" (the
 * caller adds the blank line). An upstream may split one event's data over several data lines
 * (the parser joined them with "\n"); written back as one line, its newlines would end the field
 * and the client would read a cut JSON text. */
static void put_data_lines(mg_buf_t *b, const char *data, size_t len)
{
    for (;;) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        mg_buf_puts(b, "data: ");
        mg_buf_append(b, data, n);
        mg_buf_puts(b, "\n");
        if (!nl) break;
        data += n + 1;
        len -= n + 1;
    }
}

/* The client-facing error chunk that ends a broken Chat Completions stream: the body the Chat
 * encoder writes for a translated stream (mg_ir_encode_error), so that both paths name the same
 * type for the same failure. That type is the one OpenAI gives the status, as its own streams do
 * (PROTOCOLS.md A.1): "server_error" for a 5xx; e->type when it is one of OpenAI's. */
static void chat_error_chunk(mg_buf_t *b, const mg_ir_error_t *e)
{
    char *body = mg_ir_encode_error(MG_API_OPENAI_COMPLETIONS, e);
    mg_ir_sse_frame(b, NULL, body, strlen(body));
    free(body);
}

/* The commit point: the held-back bytes (head, then pending) go to the client; from now on every
 * event does. */
static void commit_with(mg_attempt_t *a, mg_xfer_t *x, const mg_buf_t *head)
{
    mg_req_t *req = a->req;
    if (x) mg_xfer_mark_first_token(x);
    a->ttft_ms = mg_now_ms() - a->start_ms;
    mg_metrics_ttft(a->model->ref, (double)a->ttft_ms / 1000.0);
    pthread_mutex_lock(&req->lock);
    if (head) mg_buf_append(&req->out, head->data, head->len);
    mg_buf_append(&req->out, a->pending.data, a->pending.len);
    req->committed = a;
    req->last_out_ms = mg_now_ms();
    pthread_mutex_unlock(&req->lock);
    mg_buf_free(&a->pending);
}

/* A choice's "index" (0 when it has none: a server that knows only one choice). */
static int64_t choice_index(const cJSON *c)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(c, "index");
    return cJSON_IsNumber(i) && i->valuedouble > 0 ? (int64_t)MG_MIN(i->valuedouble, 1e9) : 0;
}

/* The state of the choice at index (MG_RELAY_CHAT_RAW), made on first use; NULL for an index
 * out of range, whose deltas pass on untouched. */
static mg_choice_state_t *choice_state(mg_attempt_t *a, int64_t index)
{
    if (index <= 0) return &a->choice0;
    if (index >= MG_MAX_CHOICES) return NULL;
    if (index > a->n_choices) {
        a->choices = mg_xrealloc(a->choices, (size_t)index * sizeof *a->choices);
        memset(a->choices + a->n_choices, 0, (size_t)(index - a->n_choices) * sizeof *a->choices);
        a->n_choices = (int)index;
    }
    return &a->choices[index - 1];
}

/* The id, model and created of a Chat stream's chunks, kept for the chunks the gateway adds: the
 * first ones the upstream gave (every chunk of a stream repeats them). A chunk without an id or a
 * creation time gets the stream's, made up once when the upstream names its chunks nothing, as a
 * translated stream's chunks have them (the SDKs key on the id). Returns whether chunk changed. */
static bool note_stream_ids(mg_attempt_t *a, cJSON *chunk)
{
    const char *id = str_item(chunk, "id");
    const cJSON *created = cJSON_GetObjectItemCaseSensitive(chunk, "created");
    if (!a->stream_id[0] && id) snprintf(a->stream_id, sizeof a->stream_id, "%s", id);
    if (!a->stream_model[0] && str_item(chunk, "model"))
        snprintf(a->stream_model, sizeof a->stream_model, "%s", str_item(chunk, "model"));
    if (!a->stream_created && cJSON_IsNumber(created)) a->stream_created = (int64_t)created->valuedouble;
    bool changed = false;
    if (!id) {
        if (!a->stream_id[0]) {
            char *made = mg_ir_placeholder_id("chatcmpl-moongate");
            snprintf(a->stream_id, sizeof a->stream_id, "%s", made);
            free(made);
        }
        cJSON_DeleteItemFromObjectCaseSensitive(chunk, "id");
        cJSON_AddStringToObject(chunk, "id", a->stream_id);
        changed = true;
    }
    if (!cJSON_IsNumber(created)) {
        if (!a->stream_created) a->stream_created = mg_wall_ms() / 1000;
        cJSON_DeleteItemFromObjectCaseSensitive(chunk, "created");
        mg_ir_add_int(chunk, "created", a->stream_created);
        changed = true;
    }
    return changed;
}

/* A chunk the gateway adds for choice index, with the stream's id, created and model (else the
 * request's id, now, the model's id), appended to b. delta and finish are JSON text. */
static void added_chunk(mg_attempt_t *a, int64_t index, const char *delta, const char *finish,
                        mg_buf_t *b)
{
    mg_buf_puts(b, "data: {\"id\":");
    mg_buf_json_str(b, a->stream_id[0] ? a->stream_id : a->req->id);
    mg_buf_printf(b, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                  (long long)(a->stream_created ? a->stream_created : mg_wall_ms() / 1000));
    mg_buf_json_str(b, a->stream_model[0] ? a->stream_model : a->model->id);
    mg_buf_printf(b, ",\"choices\":[{\"index\":%lld,\"delta\":%s,\"logprobs\":null,"
                     "\"finish_reason\":%s}]}\n\n",
                  (long long)index, delta, finish);
}

/* Chunks that give the choices that never got a finish_reason (or got "") theirs, before the
 * stream's [DONE]: the SDK's stream helper rejects such a choice ("missing finish_reason for
 * choice 0"), and some servers end with [DONE] alone. tool_calls when it streamed any. */
static void finish_chunks(mg_attempt_t *a, mg_buf_t *b)
{
    for (int64_t index = 0; index <= a->n_choices; index++) {
        const mg_choice_state_t *cs = index ? &a->choices[index - 1] : &a->choice0;
        if (!cs->saw_role || cs->saw_finish) continue; /* never seen, or finished */
        added_chunk(a, index, "{}", cs->saw_tool_calls ? "\"tool_calls\"" : "\"stop\"", b);
    }
}

/* Bytes for the client from the decoded paths: held back before the commit point, queued after.
 * content commits first. */
static int emit(event_ctx_t *ctx, const char *p, size_t n, bool content, bool done)
{
    mg_attempt_t *a = ctx->a;
    mg_req_t *req = a->req;
    if (req->committed != a && content) commit_with(a, ctx->x, NULL);
    if (req->committed == a) {
        queue_out(req, a, p, n, done, content);
        return 0;
    }
    if (a->pending.len + n > MG_MAX_PENDING_BYTES) {
        a->fail_cls = MG_CLASS_STREAM_BROKEN;
        snprintf(a->detail, sizeof a->detail, "over %u bytes of events before any content", MG_MAX_PENDING_BYTES);
        return 1;
    }
    mg_buf_append(&a->pending, p, n);
    return 0;
}

#define STREAM_ERROR_PREFIX "error event in stream: "

/* One decoded event (MG_RELAY_RAW and MG_RELAY_TRANSLATE). */
static int on_ir(void *ud, const mg_ir_event_t *ev)
{
    event_ctx_t *ctx = ud;
    mg_attempt_t *a = ctx->a;
    mg_req_t *req = a->req;
    mg_ir_event_t scrubbed; /* an ERROR as the client may see it */
    switch (ev->type) {
    case MG_IR_EV_START: /* Anthropic's message_start says the input (its output is a placeholder) */
        if (a->mode == MG_RELAY_RAW && req->client_api == MG_API_OPENAI_RESPONSES) {
            snprintf(a->stream_id, sizeof a->stream_id, "%s", ev->id ? ev->id : "");
            snprintf(a->stream_model, sizeof a->stream_model, "%s", ev->model ? ev->model : "");
            a->stream_created = ev->created;
        }
        pthread_mutex_lock(&req->lock);
        if (ev->usage.input >= 0) a->prompt_tokens = ev->usage.input;
        if (ev->usage.cache_read >= 0) a->cached_tokens = ev->usage.cache_read;
        if (ev->usage.cache_write >= 0) a->cache_write_tokens = ev->usage.cache_write;
        pthread_mutex_unlock(&req->lock);
        break;
    case MG_IR_EV_USAGE:
        pthread_mutex_lock(&req->lock);
        if (ev->usage.input >= 0) a->prompt_tokens = ev->usage.input;
        if (ev->usage.output >= 0) a->completion_tokens = ev->usage.output;
        if (ev->usage.cache_read >= 0) a->cached_tokens = ev->usage.cache_read;
        if (ev->usage.cache_write >= 0) a->cache_write_tokens = ev->usage.cache_write;
        pthread_mutex_unlock(&req->lock);
        break;
    case MG_IR_EV_TEXT_DELTA: mg_req_note_answer(a, ev->text, ev->text_len); break;
    case MG_IR_EV_FINISH: a->saw_finish = true; break;
    case MG_IR_EV_END: a->saw_done = true; break;
    case MG_IR_EV_ERROR: {
        /* An error inside a 200 stream: a failure, never content. */
        ctx->failed = true;
        a->fail_cls = ctx->ev ? mg_classify_stream_error(req->gen->patterns, ctx->ev->data, ctx->ev->data_len, req->json).cls
                              : MG_CLASS_STREAM_BROKEN;
        if (a->fail_cls == MG_CLASS_SERVER_ERROR) a->fail_cls = MG_CLASS_STREAM_BROKEN;
        const char *msg = ev->error.message ? ev->error.message : "(no message)";
        mg_relay_set_detail(a, STREAM_ERROR_PREFIX, msg, strlen(msg));
        if (req->committed != a || a->mode != MG_RELAY_TRANSLATE) return 1; /* RAW forwards it, scrubbed */
        /* The client's error event says what the detail says: scrubbed, then cut. */
        scrubbed = *ev;
        scrubbed.error.message = a->detail + strlen(STREAM_ERROR_PREFIX);
        ev = &scrubbed;
        break;
    }
    default: break;
    }
    bool reasoning = ev->type == MG_IR_EV_REASONING_DELTA || ev->type == MG_IR_EV_REASONING_SIGNATURE;
    /* A block only the upstream's API has is content where it passes through as it came; a
     * translation writes nothing of it, so there it commits nothing (a fallback stays possible). */
    bool opaque_here = ev->type == MG_IR_EV_OPAQUE_BLOCK && a->mode != MG_RELAY_TRANSLATE;
    bool content = (mg_ir_event_is_content(ev) && ev->type != MG_IR_EV_OPAQUE_BLOCK &&
                    !(reasoning && a->strip_reasoning)) ||
                   opaque_here || ev->type == MG_IR_EV_FINISH || ev->type == MG_IR_EV_END;
    ctx->content = ctx->content || content;
    if (a->mode != MG_RELAY_TRANSLATE) return 0;
    mg_buf_t b = {0};
    mg_ir_encoder_push(a->enc, ev, &b);
    int rc = b.len || content ? emit(ctx, b.data ? b.data : "", b.len, content, mg_ir_encoder_done(a->enc)) : 0;
    mg_buf_free(&b);
    if (ev->type == MG_IR_EV_ERROR) return 1;
    return rc;
}

/* An error event in the client's dialect, for a RAW stream that broke after its commit point (a
 * TRANSLATE stream gets one from its encoder). */
static void client_error_event(mg_buf_t *b, const mg_attempt_t *a, mg_api_t api, const char *code,
                               const char *message)
{
    if (api == MG_API_ANTHROPIC_MESSAGES) {
        mg_buf_puts(b, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":");
        mg_buf_json_str(b, message);
        mg_buf_puts(b, "}}\n\n");
    } else if (api == MG_API_OPENAI_RESPONSES) {
        /* As the translating encoder writes it (enc_error): the flat fields, a nested error that
         * makes the SDK's stream reader throw, then response.failed (once response.created came). */
        int64_t seq = a->next_seq;
        for (int nested = 0; nested < 2; nested++) {
            mg_buf_puts(b, nested ? "\"error\":{\"type\":\"server_error\",\"code\":"
                                  : "event: error\ndata: {\"type\":\"error\",\"code\":");
            mg_buf_json_str(b, code);
            mg_buf_puts(b, ",\"message\":");
            mg_buf_json_str(b, message);
            mg_buf_puts(b, ",\"param\":null");
            if (!nested) mg_buf_puts(b, ",");
        }
        mg_buf_puts(b, "}");
        if (seq >= 0) mg_buf_printf(b, ",\"sequence_number\":%lld", (long long)seq++);
        mg_buf_puts(b, "}\n\n");
        if (!a->stream_id[0]) return;
        mg_buf_puts(b, "event: response.failed\ndata: {\"type\":\"response.failed\"");
        if (seq >= 0) mg_buf_printf(b, ",\"sequence_number\":%lld", (long long)seq);
        mg_buf_puts(b, ",\"response\":{\"id\":");
        mg_buf_json_str(b, a->stream_id);
        mg_buf_printf(b, ",\"object\":\"response\",\"created_at\":%lld,\"status\":\"failed\",\"model\":",
                      (long long)a->stream_created);
        mg_buf_json_str(b, a->stream_model);
        mg_buf_puts(b, ",\"output\":[],\"error\":{\"code\":");
        mg_buf_json_str(b, code);
        mg_buf_puts(b, ",\"message\":");
        mg_buf_json_str(b, message);
        mg_buf_puts(b, "},\"incomplete_details\":null,\"usage\":null}}\n\n");
    } else {
        mg_ir_error_t e = {502, NULL, code, message}; /* as on_done gives a TRANSLATE encoder */
        chat_error_chunk(b, &e);
    }
}

/* MG_RELAY_RAW and MG_RELAY_TRANSLATE: decode the event; RAW forwards its bytes as they came. */
static int on_decoded_event(event_ctx_t *ctx, const mg_sse_event_t *ev)
{
    mg_attempt_t *a = ctx->a;
    ctx->ev = ev;
    ctx->content = ctx->failed = false;
    int rc = mg_ir_decoder_feed(a->dec, ev->type, ev->type_len, ev->data, ev->data_len, on_ir, ctx);
    if (a->mode == MG_RELAY_RAW && (rc == 0 || (ctx->failed && a->req->committed == a))) {
        mg_buf_t b = {0};
        if (!(ev->type_len == 7 && memcmp(ev->type, "message", 7) == 0)) {
            mg_buf_puts(&b, "event: ");
            mg_buf_append(&b, ev->type, ev->type_len);
            mg_buf_puts(&b, "\n");
        }
        if (ctx->failed) {
            /* An error event goes out as it came but for the provider's secrets: only errors
             * pay for the search. */
            mg_buf_t data = {0};
            mg_buf_append(&data, ev->data, ev->data_len);
            mg_relay_scrub_secrets(&data, a->model->provider);
            put_data_lines(&b, data.data, data.len);
            mg_buf_free(&data);
        } else {
            put_data_lines(&b, ev->data, ev->data_len);
        }
        mg_buf_puts(&b, "\n");
        size_t vs, ve;
        if (a->req->client_api == MG_API_OPENAI_RESPONSES &&
            mg_json_member_span(ev->data, ev->data_len, "sequence_number", &vs, &ve)) {
            /* An event the gateway adds (an error at a cut) numbers on from the upstream's. */
            int64_t seq = strtoll(ev->data + vs, NULL, 10);
            if (seq >= a->next_seq) a->next_seq = seq + 1;
        }
        int e = emit(ctx, b.data, b.len, ctx->content, ctx->failed);
        mg_buf_free(&b);
        if (rc == 0) rc = e;
    }
    return rc;
}

/* Whether s[0..n) could be the beginning of tag (a tag cut across two deltas). */
static bool tag_prefix(const char *s, size_t n, const char *tag)
{
    return n < strlen(tag) && strncmp(s, tag, n) == 0;
}

/* Moves a leading <think>…</think> block of a Chat answer's content into reasoning_content, delta
 * by delta, so reasoning reaches the client in its one place (and can be stripped). Tags cut
 * across deltas are held back until they can be recognised. Returns whether delta changed. */
bool mg_relay_split_think(mg_think_t *a, cJSON *delta)
{
    cJSON *c = cJSON_GetObjectItemCaseSensitive(delta, "content");
    if (a->state == 2 || !cJSON_IsString(c)) return false;
    /* state 3: the think block just closed; newlines that follow it are dropped. */
    mg_buf_t in = {0}, text = {0}, reason = {0};
    mg_buf_append(&in, a->carry, a->carry_len);
    mg_buf_puts(&in, c->valuestring);
    a->carry_len = 0;
    const char *p = in.data, *end = in.data + in.len;
    if (a->state == 0) {
        const char *q = p;
        while (q < end && (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t')) q++;
        if ((size_t)(end - q) >= 7 && memcmp(q, "<think>", 7) == 0) {
            a->state = 1;
            p = q + 7;
        } else if (tag_prefix(q, (size_t)(end - q), "<think>") && in.len < sizeof a->carry) {
            memcpy(a->carry, in.data, in.len); /* undecided: wait for more */
            a->carry_len = in.len;
            p = end;
        } else {
            a->state = 2;
        }
    }
    if (a->state == 1) {
        const char *close = memmem(p, (size_t)(end - p), "</think>", 8);
        if (close) {
            mg_buf_append(&reason, p, (size_t)(close - p));
            p = close + 8;
            a->state = 3;
        } else {
            /* Hold back a possible "</thi" at the end; the rest is reasoning. */
            size_t keep = 0;
            for (size_t k = MG_MIN((size_t)(end - p), 7); k > 0; k--)
                if (tag_prefix(end - k, k, "</think>")) {
                    keep = k;
                    break;
                }
            mg_buf_append(&reason, p, (size_t)(end - p) - keep);
            memcpy(a->carry, end - keep, keep);
            a->carry_len = keep;
            p = end;
        }
    }
    if (a->state == 3) { /* just closed: drop the blank lines that separate thinking from text */
        while (p < end && (*p == '\n' || *p == '\r')) p++;
        if (p < end) a->state = 2;
    }
    if (a->state == 2) mg_buf_append(&text, p, (size_t)(end - p));
    bool changed = a->state != 2 || reason.len || in.len != strlen(c->valuestring) ||
                   text.len != in.len;
    if (changed) {
        cJSON_DeleteItemFromObjectCaseSensitive(delta, "content");
        if (text.len) cJSON_AddStringToObject(delta, "content", text.data);
        if (reason.len && !cJSON_GetObjectItemCaseSensitive(delta, "reasoning_content"))
            cJSON_AddStringToObject(delta, "reasoning_content", reason.data);
    }
    mg_buf_free(&in);
    mg_buf_free(&text);
    mg_buf_free(&reason);
    return changed;
}

static int on_event(void *ud, const mg_sse_event_t *ev)
{
    event_ctx_t *ctx = ud;
    mg_attempt_t *a = ctx->a;
    if (a->mode != MG_RELAY_CHAT_RAW) return on_decoded_event(ctx, ev);
    mg_req_t *req = a->req;
    bool committed = req->committed == a; /* written only by this thread */
    if (ev->data_len >= 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        a->saw_done = true;
        return 0;
    }
    bool error_type = ev->type_len == 5 && memcmp(ev->type, "error", 5) == 0;
    cJSON *j = mg_ir_parse_text(ev->data, ev->data_len);
    const cJSON *err = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    const char *object = j ? str_item(j, "object") : NULL;
    if (error_type || (err && !cJSON_IsNull(err)) || (object && strcmp(object, "error") == 0)) {
        /* An error inside a 200 stream (LM Studio's context overflow, vLLM, OpenRouter…). */
        a->fail_cls = mg_classify_stream_error(req->gen->patterns, ev->data, ev->data_len, req->json).cls;
        if (a->fail_cls == MG_CLASS_SERVER_ERROR) a->fail_cls = MG_CLASS_STREAM_BROKEN;
        const char *msg = NULL;
        if (cJSON_IsObject(err)) msg = str_item(err, "message");
        else if (cJSON_IsString(err)) msg = err->valuestring;
        if (!msg && j) msg = str_item(j, "message");
        if (!msg) msg = "(no message)";
        mg_relay_set_detail(a, STREAM_ERROR_PREFIX, msg, strlen(msg));
        if (committed) {
            /* Typed from the upstream's error as a translated stream's would be (its type when
             * OpenAI has it, else by its status); the code is the gateway's class. */
            mg_ir_error_t e;
            if (!mg_ir_error_from_json(j, 0, &e)) e = (mg_ir_error_t){500, NULL, NULL, NULL};
            e.code = mg_class_name(a->fail_cls);
            e.message = a->detail;
            mg_buf_t b = {0};
            chat_error_chunk(&b, &e);
            queue_out(req, a, b.data, b.len, true, false);
            mg_buf_free(&b);
        }
        cJSON_Delete(j);
        return 1; /* stop: the transfer is aborted */
    }
    if (!j) return 0; /* not JSON: nothing a Chat Completions client could use */
    bool ids_added = note_stream_ids(a, j);

    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(usage)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
        pthread_mutex_lock(&req->lock); /* read by the access log, maybe while we still run */
        if (cJSON_IsNumber(pt)) a->prompt_tokens = (int64_t)pt->valuedouble;
        if (cJSON_IsNumber(ct)) a->completion_tokens = (int64_t)ct->valuedouble;
        const cJSON *pd = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
        const cJSON *cached = cJSON_GetObjectItemCaseSensitive(pd, "cached_tokens");
        if (cJSON_IsNumber(cached)) a->cached_tokens = (int64_t)cached->valuedouble;
        const cJSON *cw = cJSON_GetObjectItemCaseSensitive(pd, "cache_write_tokens"); /* OpenRouter */
        if (!cJSON_IsNumber(cw)) cw = cJSON_GetObjectItemCaseSensitive(usage, "cache_creation_input_tokens"); /* LiteLLM */
        if (cJSON_IsNumber(cw)) a->cache_write_tokens = (int64_t)cw->valuedouble;
        pthread_mutex_unlock(&req->lock);
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    bool usage_only = cJSON_IsArray(choices) && cJSON_GetArraySize(choices) == 0 && cJSON_IsObject(usage);
    bool content = false;
    bool rewritten = false;
    bool emptied = true; /* every choice's delta is empty once rewritten */
    const cJSON *c, *carr = cJSON_IsArray(choices) ? choices : NULL;
    /* Each choice on its own (n > 1: the stream interleaves them; a chunk may carry several). */
    cJSON_ArrayForEach(c, carr)
    {
        mg_choice_state_t *cs = choice_state(a, choice_index(c));
        cJSON *delta = cJSON_GetObjectItemCaseSensitive(c, "delta");
        if (cJSON_IsObject(delta)) {
            if (cs && str_item(delta, "role")) cs->saw_role = true;
            if (cs) rewritten = mg_relay_split_think(&cs->think, delta) || rewritten;
            rewritten = mg_relay_normalize_reasoning(delta, a->strip_reasoning) || rewritten;
            const cJSON *tc = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
            bool calls = cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0;
            if (cs && calls) cs->saw_tool_calls = true;
            content = content || nonempty_str(delta, "content") ||
                      nonempty_str(delta, "reasoning_content") || calls;
            if (req->gen->cfg->gw.log_content && cs == &a->choice0) {
                const cJSON *txt = cJSON_GetObjectItemCaseSensitive(delta, "content");
                if (cJSON_IsString(txt)) mg_req_note_answer(a, txt->valuestring, strlen(txt->valuestring));
            }
        }
        if (!cJSON_IsObject(delta) || delta->child) emptied = false;
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        if (cJSON_IsString(fr)) {
            a->saw_finish = true;
            content = true; /* a finished answer, even an empty one, is an answer */
            if (cs && *fr->valuestring) cs->saw_finish = true;
        }
    }
    if (rewritten && emptied && !content && !cJSON_IsObject(usage)) {
        cJSON_Delete(j); /* nothing left once the reasoning was dropped */
        return 0;
    }
    if (usage_only && !req->wants_usage) {
        cJSON_Delete(j); /* recorded for accounting; the client did not ask for it */
        return 0;
    }
    /* A choice that got no role yet gets one first: the chunk that carries it, before this one.
     * The SDK's stream helper rejects a choice that never got one ("missing role for choice 1"),
     * and some servers send none. */
    mg_buf_t roles = {0};
    cJSON_ArrayForEach(c, carr)
    {
        int64_t index = choice_index(c);
        mg_choice_state_t *cs = choice_state(a, index);
        if (!cs || cs->saw_role) continue;
        added_chunk(a, index, "{\"role\":\"assistant\",\"content\":\"\"}", "null", &roles);
        cs->saw_role = true;
    }
    /* Events pass through byte for byte unless reasoning had to be moved or dropped. */
    size_t printed_len = 0;
    char *printed = rewritten || ids_added ? mg_ir_print_json(j, &printed_len) : NULL; /* re-printed: repaired */
    const char *data = printed ? printed : ev->data;
    size_t data_len = printed ? printed_len : ev->data_len;
    cJSON_Delete(j);
    if (!committed && !content) {
        if (a->pending.len + roles.len + data_len > MG_MAX_PENDING_BYTES) {
            free(printed);
            mg_buf_free(&roles);
            a->fail_cls = MG_CLASS_STREAM_BROKEN;
            snprintf(a->detail, sizeof a->detail, "over %u bytes of events before any content", MG_MAX_PENDING_BYTES);
            return 1;
        }
        mg_buf_append(&a->pending, roles.data, roles.len);
        put_data_lines(&a->pending, data, data_len);
        mg_buf_puts(&a->pending, "\n");
        free(printed);
        mg_buf_free(&roles);
        return 0;
    }
    if (!committed) commit_with(a, ctx->x, NULL);
    mg_buf_t b = roles; /* the role chunks, then this one */
    mg_buf_reserve(&b, data_len + 8);
    put_data_lines(&b, data, data_len);
    mg_buf_puts(&b, "\n");
    queue_out(req, a, b.data, b.len, false, content);
    mg_buf_free(&b);
    free(printed);
    return 0;
}

static size_t on_data(void *ud, mg_xfer_t *x, const char *p, size_t n)
{
    mg_attempt_t *a = ud;
    mg_req_t *req = a->req;
    if (!a->is_sse) {
        if (a->body.len + n > a->body_cap) return MG_XFER_DATA_ABORT;
        mg_buf_append(&a->body, p, n);
        return n;
    }
    if (req->committed == a) {
        pthread_mutex_lock(&req->lock);
        bool full = req->out.len >= req->out_cap;
        if (full) req->upstream_paused = true;
        pthread_mutex_unlock(&req->lock);
        if (full) return MG_XFER_DATA_PAUSE; /* the reader resumes us once it has drained */
    }
    event_ctx_t ctx = {a, x, NULL, false, false};
    int rc = mg_sse_feed(&a->sse, p, n, on_event, &ctx);
    if (rc < 0 && !a->fail_cls) {
        a->fail_cls = MG_CLASS_STREAM_BROKEN;
        a->sse_broken = true;
        snprintf(a->detail, sizeof a->detail, "bad event stream: %s", mg_sse_strerror(rc));
    }
    return rc == 0 ? n : MG_XFER_DATA_ABORT;
}

static void on_done(void *ud, mg_xfer_result_t result, const char *detail)
{
    mg_attempt_t *a = ud;
    mg_req_t *req = a->req;
    bool raw_cut = false; /* a RAW stream whose decoder found it stopped short at its clean end */
    if (a->is_sse && result == MG_XFER_OK && !a->fail_cls) {
        /* The SDKs dispatch an unterminated last event; so do we. */
        event_ctx_t ctx = {a, NULL, NULL, false, false};
        mg_sse_finish(&a->sse, true, on_event, &ctx);
        /* A decoder knows whether the answer was complete: END, or an ERROR when it stopped short. */
        if (a->dec && !a->fail_cls) {
            ctx.ev = NULL;
            ctx.failed = false;
            mg_ir_decoder_finish(a->dec, on_ir, &ctx);
            /* RAW forwards only the upstream's own bytes: this ERROR has none, so the client's
             * error event is written below (a TRANSLATE encoder has already written it). */
            raw_cut = ctx.failed && a->mode == MG_RELAY_RAW;
        }
    }
    bool committed = req->committed == a;
    mg_buf_t tail = {0};
    /* A stream cut because its event stream broke (sse_broken) has told the client nothing yet:
     * it gets its error event here, like a stream that stopped short. */
    if (committed && (!a->fail_cls || raw_cut || a->sse_broken)) {
        bool complete = result == MG_XFER_OK && !raw_cut && !a->sse_broken && (a->saw_done || a->saw_finish);
        if (complete) {
            if (a->mode == MG_RELAY_CHAT_RAW) {
                finish_chunks(a, &tail);
                mg_buf_puts(&tail, "data: [DONE]\n\n");
            }
        } else {
            char msg[sizeof a->detail + 96];
            mg_class_t cls = a->sse_broken      ? a->fail_cls
                             : result == MG_XFER_OK ? MG_CLASS_STREAM_BROKEN
                                                    : mg_classify_xfer(result);
            const char *why = a->sse_broken ? a->detail : detail;
            snprintf(msg, sizeof msg, "the upstream stream ended early (%s%s%s)", mg_class_name(cls),
                     *why ? ": " : "", why);
            if (a->mode == MG_RELAY_TRANSLATE) {
                mg_ir_event_t err = {.type = MG_IR_EV_ERROR, .error = {502, "api_error", mg_class_name(cls), msg}};
                mg_ir_encoder_push(a->enc, &err, &tail);
            } else {
                client_error_event(&tail, a, req->client_api, mg_class_name(cls), msg);
            }
        }
    }
    /* How a committed stream ended: the serving side stopped looking at the attempt when it
     * committed, so its outcome is counted (metrics) and reported (health) here. */
    mg_class_t cls = a->fail_cls             ? a->fail_cls
                     : result == MG_XFER_OK ? (a->saw_done || a->saw_finish ? MG_CLASS_OK : MG_CLASS_STREAM_BROKEN)
                                            : mg_classify_xfer(result);
    if (committed) mg_metrics_attempt(a->model->ref, cls);
    mg_health_t *h = mg_router_health();
    if (committed && h && a->health_begun) {
        /* Reported with the stream's latency and time to first token. */
        const char *pid = a->model->provider->id;
        mg_health_attempt_end(h, pid, a->model->ref);
        a->health_begun = false;
        if (cls != MG_CLASS_CANCELLED) {
            mg_health_outcome_t o = mg_health_outcome(cls);
            o.xfer = result;
            o.http_status = a->status;
            o.latency_ms = mg_now_ms() - a->start_ms;
            o.ttft_ms = a->ttft_ms;
            o.message = a->fail_cls ? a->detail : detail;
            o.endpoint = mg_health_endpoint(a->model->provider); /* as of the request's generation */
            mg_health_report(h, pid, a->model->ref, &o, mg_now_ms());
        }
    }
    pthread_mutex_lock(&req->lock);
    if (committed && !req->out_done) {
        mg_buf_append(&req->out, tail.data, tail.len);
        req->out_done = true;
    }
    a->result = result;
    if (!a->fail_cls) snprintf(a->detail, sizeof a->detail, "%s", detail);
    if (committed && !a->fail_cls && cls != MG_CLASS_OK) a->fail_cls = cls; /* the access line, on_complete */
    a->end_ms = mg_now_ms();
    a->done = true;
    bool w = mg_req_take_wake_locked(req);
    pthread_mutex_unlock(&req->lock);
    mg_buf_free(&tail);
    if (w) mg_req_wake(req);
    mg_req_release(req); /* the attempt's reference */
}

bool mg_relay_normalize_reasoning(cJSON *msg, bool strip)
{
    bool changed = false;
    cJSON *r = cJSON_GetObjectItemCaseSensitive(msg, "reasoning");
    if (r) {
        /* vLLM, Ollama and OpenRouter say "reasoning"; the gateway's one place is
         * "reasoning_content" (LM Studio, llama.cpp, DeepSeek). */
        cJSON_DetachItemViaPointer(msg, r);
        if (!strip && cJSON_IsString(r) && !cJSON_GetObjectItemCaseSensitive(msg, "reasoning_content"))
            cJSON_AddItemToObject(msg, "reasoning_content", r);
        else
            cJSON_Delete(r);
        changed = true;
    }
    if (strip && cJSON_GetObjectItemCaseSensitive(msg, "reasoning_content")) {
        cJSON_DeleteItemFromObjectCaseSensitive(msg, "reasoning_content");
        changed = true;
    }
    if (strip && cJSON_GetObjectItemCaseSensitive(msg, "reasoning_details")) {
        cJSON_DeleteItemFromObjectCaseSensitive(msg, "reasoning_details"); /* OpenRouter */
        changed = true;
    }
    return changed;
}

mg_xfer_callbacks_t mg_relay_callbacks(void)
{
    return (mg_xfer_callbacks_t){on_head, on_data, on_done};
}

/* answer_class for a Chat answer that is strict JSON (mg_json_strict_members), from its text and
 * the spans of its "error" and "choices" members: the same verdict, with no tree built. */
static mg_class_t chat_answer_class_text(const mg_req_t *req, const mg_attempt_t *a, char root,
                                         const mg_json_span_t *error, const mg_json_span_t *choices)
{
    const char *t = a->body.data;
    if (root != '{') return MG_CLASS_SERVER_ERROR;
    if (error->found && t[error->start] != 'n') { /* present and not null */
        mg_class_t c = mg_classify_http2(req->gen->patterns, 500, NULL, 0, t, a->body.len, req->json).cls;
        return c == MG_CLASS_OK ? MG_CLASS_SERVER_ERROR : c;
    }
    if (!choices->found || t[choices->start] != '[') return MG_CLASS_SERVER_ERROR;
    size_t i = choices->start + 1;
    while (i < choices->end && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) i++;
    if (t[i] == ']') return MG_CLASS_SERVER_ERROR; /* "choices": []: nothing answered */
    return MG_CLASS_OK;
}

/* Whether api's decoder can read the answer j (parsed into arena; NULL: not JSON). */
static bool answer_decodes(mg_api_t api, const cJSON *j, mg_ir_arena_t *arena)
{
    mg_ir_response_t r;
    char err[128];
    return j && mg_ir_codec(api)->decode_response(j, arena, NULL, &r, err, sizeof err) == 0;
}

/* A 2xx whole answer must be one: a JSON object with choices and no error member. Servers that
 * report failures with 200 (an error body, an empty or cut body) are failures, classified by the
 * body's wording where it has one. A Chat answer the client gets as it came is judged from its
 * bytes by the strict pass, which also notes where its usage is (a->usage, for the router's
 * read_usage). One that must be translated, or turned into a stream (an upstream that ignored
 * "stream": true), must also be one its decoder can read, or it would reach the client as
 * nothing: that needs the tree, so it is parsed once, below. */
static mg_class_t answer_class(const mg_req_t *req, mg_attempt_t *a)
{
    mg_api_t up = a->model->provider->api;
    bool as_it_came = up == MG_API_OPENAI_COMPLETIONS && req->client_api == up && !req->stream;
    static const char *const keys[3] = {"error", "choices", "usage"};
    mg_json_span_t spans[3];
    char root;
    if (as_it_came && mg_json_strict_members(a->body.data, a->body.len, &root, keys, 3, spans)) {
        a->usage_known = root == '{';
        a->usage = spans[2];
        return chat_answer_class_text(req, a, root, &spans[0], &spans[1]);
    }
    /* The answer is only read here: parsed into a scratch arena (no node-by-node frees). */
    mg_ir_arena_t *arena = mg_ir_arena_new();
    cJSON *j = a->body.len ? mg_ir_parse_json(arena, a->body.data, a->body.len, NULL) : NULL;
    mg_class_t c = MG_CLASS_OK;
    if (up != MG_API_OPENAI_COMPLETIONS) {
        /* A Responses or Messages answer is one when its own decoder can read it. */
        c = answer_decodes(up, j, arena) ? MG_CLASS_OK : MG_CLASS_SERVER_ERROR;
        mg_ir_arena_free(arena);
        return c;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    if (!cJSON_IsObject(j)) {
        c = MG_CLASS_SERVER_ERROR;
    } else if (err && !cJSON_IsNull(err)) {
        c = mg_classify_http2(req->gen->patterns, 500, NULL, 0, a->body.data, a->body.len, req->json).cls;
        if (c == MG_CLASS_OK) c = MG_CLASS_SERVER_ERROR;
    } else if (!cJSON_IsArray(choices) || !choices->child) {
        c = MG_CLASS_SERVER_ERROR; /* none, or "choices": []: nothing answered */
    } else if (!as_it_came && !answer_decodes(up, j, arena)) {
        c = MG_CLASS_SERVER_ERROR;
    }
    mg_ir_arena_free(arena);
    return c;
}

const char *mg_relay_answer_problem(const mg_attempt_t *a)
{
    if (a->status < 200 || (a->status >= 300 && a->status < 400)) return "an unexpected non-2xx, non-error status";
    if (a->body.len == 0) return "an empty answer";
    cJSON *j = mg_ir_parse_text(a->body.data, a->body.len); /* read as the classifier read it */
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *why = !j && mg_ir_parse_too_large() ? "an answer too large to read as JSON"
                      : !cJSON_IsObject(j) ? "an answer that is not a JSON object"
                      : err && !cJSON_IsNull(err) ? "an error body with a 2xx status"
                      : a->model->provider->api != MG_API_OPENAI_COMPLETIONS ? "an answer its API's decoder cannot read"
                      : !cJSON_IsArray(choices) ? "an answer without choices"
                      : !choices->child ? "an answer whose choices are empty"
                                        : "an answer its API's decoder cannot read";
    cJSON_Delete(j);
    return why;
}

mg_classification_t mg_relay_classify(const mg_req_t *req, mg_attempt_t *a)
{
    mg_classification_t c = {.cls = MG_CLASS_OK, .retry_after_ms = -1, .should_retry = -1};
    if (a->fail_cls) {
        c.cls = a->fail_cls;
    } else if (a->result != MG_XFER_OK) {
        c.cls = mg_classify_xfer(a->result);
    } else if (a->is_sse) {
        c.cls = MG_CLASS_STREAM_BROKEN; /* ended before any content */
    } else if (a->status < 200 || (a->status >= 300 && a->status < 400)) {
        c.cls = MG_CLASS_SERVER_ERROR; /* no redirects */
    } else {
        c = mg_classify_http2(req->gen->patterns, a->status, a->headers.data, a->headers.len, a->body.data,
                              a->body.len, req->json);
        /* A whole answer to a streaming request is read like any answer: the router then sends it
         * to the client as a stream (some servers ignore "stream": true). */
        if (c.cls == MG_CLASS_OK) c.cls = answer_class(req, a);
    }
    return c;
}

/* The per-request object and error replies. See request.h. */
#include "request.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t next_req = 1;

void (*mg_req_wake_fn)(mg_req_t *req);

bool mg_req_take_wake_locked(mg_req_t *req)
{
    bool w = req->suspended;
    req->suspended = false;
    return w;
}

void mg_req_wake(mg_req_t *req)
{
    if (mg_req_wake_fn) mg_req_wake_fn(req);
}

/* Freed request objects are kept for the next ones (at most REQ_CACHE_MAX, process-wide): one
 * is some 20 KB, a "large" block for glibc's malloc, which consolidates its fast bins on every
 * such allocation. Linked through reg_next. A kept object keeps its body buffer too when that is
 * at most REQ_BODY_KEEP bytes (a body over 511 bytes gets a buffer of 1 KB or more, a large
 * block as well). */
#define REQ_CACHE_MAX 64
#define REQ_BODY_KEEP (32 * 1024)
static pthread_mutex_t req_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_req_t *req_cache;  /* [req_cache_lock] */
static size_t req_cache_n;   /* [req_cache_lock] */

/* Appends v in lower-case hex, at least min_digits of them (printf's %0*llx). */
static size_t put_hex(char *out, unsigned long long v, int min_digits)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n < min_digits) tmp[n++] = '0';
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return (size_t)n;
}

mg_req_t *mg_req_new(mg_gen_t *gen, mg_upstream_t *up)
{
    pthread_mutex_lock(&req_cache_lock);
    mg_req_t *req = req_cache;
    if (req) {
        req_cache = req->reg_next;
        req_cache_n--;
    }
    pthread_mutex_unlock(&req_cache_lock);
    mg_buf_t body = {0};
    if (req) body = req->body; /* kept by mg_req_release, emptied below */
    else req = mg_xmalloc(sizeof *req);
    /* All zero but the attempts (16 KB of the 20), which new_attempt (router.c) clears one by one
     * as they are used: nothing reads past n_attempts. */
    const size_t at = offsetof(mg_req_t, attempts), past = at + sizeof req->attempts;
    memset(req, 0, at);
    memset((char *)req + past, 0, sizeof *req - past);
    req->body = body;
    mg_buf_reset(&req->body);
    atomic_init(&req->refs, 1);
    pthread_mutex_init(&req->lock, NULL);
    /* Unique within the process, sortable, and not guessable across restarts:
     * "req_%llx%06llx" of the wall clock's seconds and a counter (cut to fit, as snprintf). */
    char id[48];
    size_t n = 0;
    memcpy(id, "req_", 4);
    n = 4;
    n += put_hex(id + n, (unsigned long long)(mg_wall_ms() / 1000), 1);
    n += put_hex(id + n, (unsigned long long)atomic_fetch_add(&next_req, 1), 6);
    n = MG_MIN(n, sizeof req->id - 1);
    memcpy(req->id, id, n);
    req->id[n] = '\0';
    req->gen = gen;
    req->up = up;
    req->start_ms = mg_now_ms();
    return req;
}

void mg_req_note_answer(mg_attempt_t *a, const char *text, size_t len)
{
    mg_req_t *req = a->req;
    const mg_gateway_settings_t *gw = &req->gen->cfg->gw;
    if (!gw->log_content || !len) return;
    pthread_mutex_lock(&req->lock);
    size_t room = gw->log_content_max_bytes > a->answer.len ? gw->log_content_max_bytes - a->answer.len : 0;
    size_t n = mg_utf8_fit(text, len, room);
    if (n) mg_buf_append(&a->answer, text, n);
    if (n < len) a->answer_cut = true;
    pthread_mutex_unlock(&req->lock);
}

void mg_req_ref(mg_req_t *req)
{
    atomic_fetch_add(&req->refs, 1);
}

void mg_req_release(mg_req_t *req)
{
    if (!req || atomic_fetch_sub(&req->refs, 1) != 1) return;
    for (size_t i = 0; i < req->n_attempts; i++) {
        mg_attempt_t *a = &req->attempts[i];
        mg_xfer_release(a->xfer);
        mg_buf_free(&a->headers);
        mg_buf_free(&a->body);
        mg_buf_free(&a->pending);
        free(a->choices);
        mg_buf_free(&a->answer);
        mg_sse_free(&a->sse);
        mg_ir_decoder_free(a->dec);
        mg_ir_encoder_free(a->enc);
    }
    mg_xfer_release(req->summary.xfer);
    mg_buf_free(&req->summary.body);
    mg_buf_free(&req->summary.headers);
    mg_buf_free(&req->out);
    if (req->body.cap > REQ_BODY_KEEP) mg_buf_free(&req->body); /* else kept with the object */
    mg_ir_arena_free(req->arena); /* the JSON (mg_ir_parse_json) and the model that borrows from it */
    free(req->model_asked);
    free(req->path);
    free(req->method);
    for (size_t i = 0; i < req->n_hdrs; i++) {
        free((char *)req->hdrs[i].name);
        free((char *)req->hdrs[i].value);
    }
    free(req->hdrs);
    mg_gen_release(req->gen);
    pthread_mutex_destroy(&req->lock);
    pthread_mutex_lock(&req_cache_lock);
    if (!MG_ASAN && req_cache_n < REQ_CACHE_MAX) {
        req->reg_next = req_cache;
        req_cache = req;
        req_cache_n++;
        req = NULL;
    }
    pthread_mutex_unlock(&req_cache_lock);
    if (req) mg_buf_free(&req->body);
    free(req);
}

mg_attempt_t *mg_req_current(mg_req_t *req)
{
    return req->n_attempts ? &req->attempts[req->n_attempts - 1] : NULL;
}

void mg_reply_free(mg_reply_t *r)
{
    mg_buf_free(&r->body);
}

void mg_reply_error(mg_reply_t *r, mg_endpoint_t ep, int status, const char *type, const char *code,
                    const char *message)
{
    mg_buf_reset(&r->body);
    r->status = status;
    r->content_type = "application/json";
    if (ep == MG_EP_MESSAGES) {
        /* Anthropic: {"type":"error","error":{"type":…,"message":…}}, with its own type names. */
        const char *t = status == 401   ? "authentication_error"
                        : status == 402 ? "billing_error"
                        : status == 403 ? "permission_error"
                        : status == 404 ? "not_found_error"
                        : status == 413 ? "request_too_large"
                        : status == 429 ? "rate_limit_error"
                        : status == 529 || status == 503 ? "overloaded_error"
                        : status >= 500 ? "api_error"
                                        : "invalid_request_error";
        mg_buf_puts(&r->body, "{\"type\":\"error\",\"error\":{\"type\":");
        mg_buf_json_str(&r->body, t);
        mg_buf_puts(&r->body, ",\"message\":");
        mg_buf_json_str(&r->body, message);
        mg_buf_puts(&r->body, "}}");
        return;
    }
    /* OpenAI: {"error":{"message":…,"type":…,"param":null,"code":…}}. A caller's generic
     * invalid_request_error (a policy's gw.reject, a region refusal, an empty plan) becomes the
     * type OpenAI gives the status, as the Anthropic branch above does for every type. */
    if (strcmp(type, "invalid_request_error") == 0)
        type = status == 401   ? "authentication_error"
               : status == 403 ? "permission_error"
               : status == 429 ? "rate_limit_error"
               : status >= 500 ? "server_error"
                               : type;
    mg_buf_puts(&r->body, "{\"error\":{\"message\":");
    mg_buf_json_str(&r->body, message);
    mg_buf_puts(&r->body, ",\"type\":");
    mg_buf_json_str(&r->body, type);
    mg_buf_puts(&r->body, ",\"param\":null,\"code\":");
    mg_buf_json_str(&r->body, code);
    mg_buf_puts(&r->body, "}}");
}

/* The internal model's shared parts: the arena, the codec table and the stream wrappers, the
 * neutral error reading and writing, the event collector, and small helpers the three API files
 * share. See ir.h for the contracts. */
#include "ir.h"

#include "api_anthropic.h"
#include "api_openai_chat.h"
#include "api_openai_responses.h"
#include "classify.h"
#include "codec_util.h"
#include "jsonutil.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- arena ---- */

#define ARENA_CHUNK 8192
/* Standard chunks of freed arenas are kept for the next ones (at most this many, process-wide):
 * every request makes an arena or two, and a block this size is a "large" request for glibc's
 * malloc, which consolidates its fast bins on each one. */
#define ARENA_CACHE_MAX 64

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(max_align_t) unsigned char mem[];
} arena_chunk_t;

struct mg_ir_arena {
    arena_chunk_t *head;
    cJSON **kept;
    size_t n_kept, cap_kept;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static arena_chunk_t *cache_head; /* [cache_lock] */
static size_t cache_n;            /* [cache_lock] */

static arena_chunk_t *chunk_new(void)
{
    pthread_mutex_lock(&cache_lock);
    arena_chunk_t *c = cache_head;
    if (c) {
        cache_head = c->next;
        cache_n--;
    }
    pthread_mutex_unlock(&cache_lock);
    if (!c) {
        c = mg_xmalloc(sizeof *c + ARENA_CHUNK);
        c->cap = ARENA_CHUNK;
    }
    c->used = 0;
    return c;
}

mg_ir_arena_t *mg_ir_arena_new(void)
{
    return mg_xcalloc(1, sizeof(mg_ir_arena_t));
}

void mg_ir_arena_free(mg_ir_arena_t *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n_kept; i++)
        cJSON_Delete(a->kept[i]);
    free(a->kept);
    arena_chunk_t *keep = NULL, *keep_tail = NULL;
    size_t n_keep = 0;
    for (arena_chunk_t *c = a->head, *next; c; c = next) {
        next = c->next;
        if (!MG_ASAN && c->cap == ARENA_CHUNK && n_keep < ARENA_CACHE_MAX) {
            c->next = keep;
            if (!keep) keep_tail = c;
            keep = c;
            n_keep++;
        } else {
            free(c);
        }
    }
    free(a);
    if (!keep) return;
    pthread_mutex_lock(&cache_lock);
    if (cache_n + n_keep <= ARENA_CACHE_MAX) {
        keep_tail->next = cache_head;
        cache_head = keep;
        cache_n += n_keep;
        keep = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
    for (arena_chunk_t *c = keep, *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

/* n bytes, aligned for any type, not zeroed. */
static void *arena_take(mg_ir_arena_t *a, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (n == 0) n = align;
    arena_chunk_t *c = a->head;
    if (!c || c->cap - c->used < n) {
        if (n > ARENA_CHUNK / 4) {
            /* A big block gets its own chunk, linked behind the current one so the current
             * chunk's free space is not lost. */
            arena_chunk_t *big = mg_xmalloc(sizeof *big + n);
            big->used = big->cap = n;
            if (c) {
                big->next = c->next;
                c->next = big;
            } else {
                big->next = NULL;
                a->head = big;
            }
            return big->mem;
        }
        c = chunk_new();
        c->next = a->head;
        a->head = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    return p;
}

void *mg_ir_alloc(mg_ir_arena_t *a, size_t n)
{
    void *p = arena_take(a, n);
    memset(p, 0, n ? n : 1);
    return p;
}

/* ---- cJSON documents in the arena ----
 * cJSON has one set of allocation hooks for the whole process. Ours send an allocation to the
 * calling thread's parse arena while mg_ir_parse_json runs, and to malloc otherwise (so what
 * cJSON allocates elsewhere may still be freed with free()). Both parses are budgeted. */

static _Thread_local mg_ir_arena_t *parse_arena;
static _Thread_local bool parse_counted; /* mg_ir_parse_text runs: malloc, within parse_left */
static _Thread_local size_t parse_left; /* what the running parse may still allocate */
static _Thread_local bool parse_over;   /* the last parse ran out of it */

static void *json_malloc(size_t n)
{
    if (!parse_arena && !parse_counted) return malloc(n);
    if (n > parse_left) {
        parse_over = true;
        return NULL; /* cJSON gives up: the parse fails */
    }
    parse_left -= n; /* not given back by a free: a parse only frees its partial tree, at its end */
    return parse_arena ? arena_take(parse_arena, n) : malloc(n);
}

static void json_free(void *p)
{
    /* During a parse, cJSON frees only what that parse allocated (a partial tree on error), all
     * of it in the arena, where it stays until the arena goes. No lookup of which chunk holds p:
     * walking the arena's chunks for every node of a large partial tree is quadratic (a 2 MB
     * body that fails to parse at its end held the serving thread for 14 s). */
    if (parse_arena) return;
    free(p);
}

/* Installed before main, while the process has one thread. */
__attribute__((constructor)) static void json_hooks_init(void)
{
    cJSON_Hooks h = {json_malloc, json_free};
    cJSON_InitHooks(&h);
}

static size_t parse_budget(size_t len)
{
    return MG_MAX(MG_IR_PARSE_MAX_BYTES, 2 * len); /* text-heavy JSON takes about its size */
}

cJSON *mg_ir_parse_json(mg_ir_arena_t *a, const char *text, size_t len, const char **end)
{
    const char *e = NULL;
    char *fixed = mg_json_fix_escapes(text, len); /* NULL: nothing to fix, the usual case */
    parse_arena = a;
    parse_left = parse_budget(len);
    parse_over = false;
    cJSON *j = cJSON_ParseWithLengthOpts(fixed ? fixed : text, len, &e, 0);
    parse_arena = NULL;
    if (end) *end = e && fixed ? text + (e - fixed) : e;
    free(fixed);
    return j;
}

cJSON *mg_ir_parse_text(const char *text, size_t len)
{
    char *fixed = mg_json_fix_escapes(text, len);
    parse_counted = true;
    parse_left = parse_budget(len);
    parse_over = false;
    cJSON *j = cJSON_ParseWithLengthOpts(fixed ? fixed : text, len, NULL, false);
    parse_counted = false;
    free(fixed);
    return j;
}

cJSON *mg_ir_parse_error_body(const char *body, size_t len)
{
    return body && len && len <= MG_IR_ERROR_JSON_MAX ? mg_ir_parse_text(body, len) : NULL;
}

bool mg_ir_parse_too_large(void)
{
    return parse_over;
}

char *mg_ir_strndup(mg_ir_arena_t *a, const char *s, size_t n)
{
    char *p = mg_ir_alloc(a, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *mg_ir_strdup(mg_ir_arena_t *a, const char *s)
{
    return s ? mg_ir_strndup(a, s, strlen(s)) : NULL;
}

cJSON *mg_ir_keep_json(mg_ir_arena_t *a, cJSON *j)
{
    if (!j) return NULL;
    if (a->n_kept == a->cap_kept) {
        a->cap_kept = a->cap_kept ? a->cap_kept * 2 : 8;
        a->kept = mg_xrealloc(a->kept, a->cap_kept * sizeof *a->kept);
    }
    a->kept[a->n_kept++] = j;
    return j;
}

void *mg_ir_grow(mg_ir_arena_t *a, void *arr, size_t n, size_t *cap, size_t elem)
{
    if (arr && n < *cap) return arr;
    size_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < n + 1)
        ncap *= 2;
    void *p = mg_ir_alloc(a, ncap * elem);
    if (arr && n) memcpy(p, arr, n * elem);
    *cap = ncap;
    return p;
}

/* ---- codecs and stream wrappers ---- */

const mg_ir_codec_t *mg_ir_codec(mg_api_t api)
{
    switch (api) {
    case MG_API_OPENAI_COMPLETIONS: return &mg_openai_chat_codec;
    case MG_API_OPENAI_RESPONSES: return &mg_openai_responses_codec;
    case MG_API_ANTHROPIC_MESSAGES: return &mg_anthropic_codec;
    }
    return &mg_openai_chat_codec;
}

struct mg_ir_decoder {
    const mg_ir_codec_t *c;
    void *st;
};

struct mg_ir_encoder {
    const mg_ir_codec_t *c;
    void *st;
};

mg_ir_decoder_t *mg_ir_decoder_new(mg_api_t upstream, const mg_ir_decode_opts_t *opts)
{
    static const mg_ir_decode_opts_t none = {0};
    mg_ir_decoder_t *d = mg_xcalloc(1, sizeof *d);
    d->c = mg_ir_codec(upstream);
    d->st = d->c->decoder_new(opts ? opts : &none);
    return d;
}

int mg_ir_decoder_feed(mg_ir_decoder_t *d, const char *type, size_t type_len, const char *data,
                       size_t data_len, mg_ir_event_cb cb, void *ud)
{
    return d->c->decoder_feed(d->st, type ? type : "", type ? type_len : 0, data ? data : "",
                              data ? data_len : 0, cb, ud);
}

int mg_ir_decoder_finish(mg_ir_decoder_t *d, mg_ir_event_cb cb, void *ud)
{
    return d->c->decoder_finish(d->st, cb, ud);
}

void mg_ir_decoder_free(mg_ir_decoder_t *d)
{
    if (!d) return;
    d->c->decoder_free(d->st);
    free(d);
}

mg_ir_encoder_t *mg_ir_encoder_new(mg_api_t client, const mg_ir_output_opts_t *opts)
{
    static const mg_ir_output_opts_t none = {0};
    mg_ir_encoder_t *e = mg_xcalloc(1, sizeof *e);
    e->c = mg_ir_codec(client);
    e->st = e->c->encoder_new(opts ? opts : &none);
    return e;
}

void mg_ir_encoder_push(mg_ir_encoder_t *e, const mg_ir_event_t *ev, mg_buf_t *out)
{
    e->c->encoder_push(e->st, ev, out);
}

bool mg_ir_encoder_done(const mg_ir_encoder_t *e)
{
    return e->c->encoder_done(e->st);
}

void mg_ir_encoder_free(mg_ir_encoder_t *e)
{
    if (!e) return;
    e->c->encoder_free(e->st);
    free(e);
}

int mg_ir_response_events(const mg_ir_response_t *r, mg_ir_event_cb cb, void *ud)
{
    int rc;
#define EMIT(...)                                                                                  \
    do {                                                                                           \
        mg_ir_event_t ev_ = {__VA_ARGS__};                                                         \
        if ((rc = cb(ud, &ev_))) return rc;                                                        \
    } while (0)
    EMIT(.type = MG_IR_EV_START, .id = r->id, .model = r->model, .created = r->created,
         .usage = MG_IR_USAGE_UNKNOWN);
    int call = 0;
    for (size_t i = 0; i < r->n_parts; i++) {
        const mg_ir_part_t *p = &r->parts[i];
        switch (p->type) {
        case MG_IR_PART_REASONING:
            if (!p->text || !*p->text) continue; /* opaque reasoning has no stream form here */
            EMIT(.type = MG_IR_EV_REASONING_DELTA, .text = p->text, .text_len = strlen(p->text));
            if (p->signature)
                EMIT(.type = MG_IR_EV_REASONING_SIGNATURE, .text = p->signature,
                     .text_len = strlen(p->signature));
            break;
        case MG_IR_PART_TEXT:
            if (!p->text || !*p->text) continue;
            EMIT(.type = MG_IR_EV_TEXT_DELTA, .text = p->text, .text_len = strlen(p->text), .refusal = p->refusal);
            break;
        case MG_IR_PART_TOOL_CALL:
            EMIT(.type = MG_IR_EV_TOOL_CALL_START, .index = call, .id = p->id, .name = p->name ? p->name : "");
            if (p->arguments && *p->arguments)
                EMIT(.type = MG_IR_EV_TOOL_CALL_DELTA, .index = call, .text = p->arguments,
                     .text_len = strlen(p->arguments));
            call++;
            break;
        default: continue;
        }
        EMIT(.type = MG_IR_EV_BLOCK_END);
    }
    EMIT(.type = MG_IR_EV_FINISH, .finish = r->finish, .stop_sequence = r->stop_sequence);
    EMIT(.type = MG_IR_EV_USAGE, .usage = r->usage);
    EMIT(.type = MG_IR_EV_END);
#undef EMIT
    return 0;
}

bool mg_ir_event_is_content(const mg_ir_event_t *ev)
{
    switch (ev->type) {
    case MG_IR_EV_TEXT_DELTA:
    case MG_IR_EV_REASONING_DELTA: return ev->text_len > 0;
    case MG_IR_EV_TOOL_CALL_START:
    case MG_IR_EV_TOOL_CALL_DELTA:
    case MG_IR_EV_OPAQUE_BLOCK: return true;
    default: return false;
    }
}

const char *mg_ir_event_name(mg_ir_event_type_t t)
{
    static const char *const names[] = {
        [MG_IR_EV_START] = "start",
        [MG_IR_EV_REASONING_DELTA] = "reasoning_delta",
        [MG_IR_EV_REASONING_SIGNATURE] = "reasoning_signature",
        [MG_IR_EV_TEXT_DELTA] = "text_delta",
        [MG_IR_EV_TOOL_CALL_START] = "tool_call_start",
        [MG_IR_EV_TOOL_CALL_DELTA] = "tool_call_delta",
        [MG_IR_EV_BLOCK_END] = "block_end",
        [MG_IR_EV_OPAQUE_BLOCK] = "opaque_block",
        [MG_IR_EV_FINISH] = "finish",
        [MG_IR_EV_USAGE] = "usage",
        [MG_IR_EV_END] = "end",
        [MG_IR_EV_ERROR] = "error",
    };
    return (size_t)t < MG_ARRAY_LEN(names) && names[t] ? names[t] : "?";
}

const char *mg_ir_finish_name(mg_ir_finish_t f)
{
    static const char *const names[] = {
        [MG_IR_FINISH_NONE] = "none",
        [MG_IR_FINISH_STOP] = "stop",
        [MG_IR_FINISH_STOP_SEQUENCE] = "stop_sequence",
        [MG_IR_FINISH_LENGTH] = "length",
        [MG_IR_FINISH_TOOL_CALLS] = "tool_calls",
        [MG_IR_FINISH_CONTENT_FILTER] = "content_filter",
        [MG_IR_FINISH_PAUSE] = "pause",
        [MG_IR_FINISH_CONTEXT_WINDOW] = "context_window",
    };
    return (size_t)f < MG_ARRAY_LEN(names) && names[f] ? names[f] : "?";
}

/* ---- whole bodies ---- */

int mg_ir_decode_request(mg_api_t from, const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *out,
                         char *err, size_t errlen)
{
    return mg_ir_codec(from)->decode_request(body, a, out, err, errlen);
}

cJSON *mg_ir_encode_request(mg_api_t to, const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                            char *err, size_t errlen)
{
    if (ir->own_api_only && !mg_ir_same_api(ir->source, to)) {
        mg_ir_fail(err, errlen, "%s cannot be sent to %s", ir->own_api_only, mg_api_name(to));
        return NULL;
    }
    return mg_ir_codec(to)->encode_request(ir, opts, err, errlen);
}

cJSON *mg_ir_translate_response(mg_api_t from, mg_api_t to, const char *body, size_t len,
                                const mg_ir_decode_opts_t *dopts, const mg_ir_output_opts_t *opts,
                                char *err, size_t errlen)
{
    static const mg_ir_decode_opts_t dnone = {0};
    static const mg_ir_output_opts_t onone = {0};
    cJSON *j = mg_ir_parse_text(body, len);
    if (!j) {
        mg_ir_fail(err, errlen, "the upstream's answer is not JSON");
        return NULL;
    }
    mg_ir_arena_t *a = mg_ir_arena_new();
    mg_ir_response_t r;
    cJSON *out = NULL;
    if (mg_ir_codec(from)->decode_response(j, a, dopts ? dopts : &dnone, &r, err, errlen) == 0)
        out = mg_ir_codec(to)->encode_response(&r, opts ? opts : &onone);
    mg_ir_arena_free(a);
    cJSON_Delete(j);
    return out;
}

/* ---- errors ---- */

static int status_from_type(const char *type, const char *code)
{
    static const struct {
        const char *name;
        int status;
    } map[] = {
        {"invalid_request_error", 400}, {"context_length_exceeded", 400},
        {"exceed_context_size_error", 400}, {"BadRequestError", 400},
        {"authentication_error", 401},  {"invalid_api_key", 401},
        {"billing_error", 402},         {"insufficient_quota", 429},
        {"permission_error", 403},      {"not_found_error", 404},
        {"model_not_found", 404},       {"request_too_large", 413},
        {"rate_limit_error", 429},      {"rate_limit_exceeded", 429},
        {"tokens", 429},                {"requests", 429},
        {"api_error", 500},             {"server_error", 500},
        {"overloaded_error", 529},      {"unavailable_error", 503},
        {"not_supported_error", 501},   {"timeout_error", 504},
    };
    for (int pass = 0; pass < 2; pass++) {
        const char *s = pass ? type : code;
        if (!s) continue;
        for (size_t i = 0; i < MG_ARRAY_LEN(map); i++)
            if (strcmp(s, map[i].name) == 0) return map[i].status;
    }
    return 500;
}

/* A numeric error code as an HTTP status, 0 when it cannot be one (any double can come: a cast
 * of one out of int's range is undefined). */
static int status_code(double v)
{
    return v >= 100 && v <= 599 ? (int)v : 0;
}

bool mg_ir_error_from_json(const cJSON *j, long http_status, mg_ir_error_t *out)
{
    if (!cJSON_IsObject(j)) return false;
    const cJSON *e = mg_ir_jget(j, "error");
    const char *type = NULL, *code = NULL, *message = NULL;
    int num_code = 0;
    const char *jtype = mg_ir_jstr(j, "type");
    if (jtype && strcmp(jtype, "response.failed") == 0) {
        /* Responses: the failure is inside the response object. */
        const cJSON *resp = mg_ir_jget(j, "response");
        e = mg_ir_jget(resp, "error");
        if (!cJSON_IsObject(e)) e = NULL;
        code = mg_ir_jstr(e, "code");
        message = mg_ir_jstr(e, "message");
        if (!message) message = "the response failed";
    } else if (cJSON_IsObject(e)) {
        /* OpenAI, Anthropic, llama.cpp, vLLM >= 0.16, OpenRouter, LM Studio streams. */
        type = mg_ir_jstr(e, "type");
        message = mg_ir_jstr(e, "message");
        const cJSON *c = mg_ir_jget(e, "code");
        if (cJSON_IsString(c)) code = c->valuestring;
        else if (cJSON_IsNumber(c)) num_code = status_code(c->valuedouble);
        if (!message) message = mg_ir_jstr(j, "message");
    } else if (cJSON_IsString(e)) {
        message = e->valuestring; /* LM Studio, Ollama native: {"error":"…"} */
    } else if ((jtype && strcmp(jtype, "error") == 0) ||
               (mg_ir_jstr(j, "object") && strcmp(mg_ir_jstr(j, "object"), "error") == 0)) {
        /* Responses `error` event {type:"error",code,message}; vLLM's {"object":"error",…}. */
        message = mg_ir_jstr(j, "message");
        const cJSON *c = mg_ir_jget(j, "code");
        if (cJSON_IsString(c)) code = c->valuestring;
        else if (cJSON_IsNumber(c)) num_code = status_code(c->valuedouble);
        if (mg_ir_jstr(j, "object")) type = jtype;
        if (!message) message = "upstream error";
    } else {
        return false;
    }
    int status = (int)http_status;
    if (status < 400) {
        if (num_code >= 400 && num_code <= 599) status = num_code;
        else status = status_from_type(type, code);
    }
    /* Context overflow, whatever the server's wording (A.5): clients act on this code. */
    if (!code && message &&
        mg_classify_http(400, NULL, 0, message, strlen(message)) == MG_CLASS_CONTEXT_OVERFLOW) {
        code = "context_length_exceeded";
        if (http_status < 400) status = 400;
    }
    out->status = status;
    out->type = type;
    out->code = code;
    out->message = message ? message : "upstream error";
    return true;
}

void mg_ir_error_from_body(mg_ir_arena_t *a, long http_status, const char *body, size_t len,
                           mg_ir_error_t *out)
{
    cJSON *j = mg_ir_parse_error_body(body, len);
    mg_ir_error_t e;
    if (j && mg_ir_error_from_json(j, http_status, &e)) {
        out->status = e.status;
        out->type = mg_ir_strdup(a, e.type);
        out->code = mg_ir_strdup(a, e.code);
        out->message = mg_ir_strdup(a, e.message);
    } else {
        /* Not a body we understand: its own text, trimmed, is the best message we have. */
        size_t n = body ? len : 0;
        while (n && isspace((unsigned char)body[n - 1]))
            n--;
        size_t s = 0;
        while (s < n && isspace((unsigned char)body[s]))
            s++;
        if (n - s > 500) n = s + 500;
        out->status = http_status >= 400 ? (int)http_status : 502;
        out->type = NULL;
        out->code = NULL;
        out->message = n > s ? mg_ir_strndup(a, body + s, n - s)
                             : mg_ir_strdup(a, http_status >= 400 ? "upstream error"
                                                                  : "invalid upstream answer");
    }
    cJSON_Delete(j);
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
    if (!s) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

const char *mg_ir_error_type(mg_api_t api, int status, const char *type)
{
    if (api == MG_API_ANTHROPIC_MESSAGES) {
        static const char *const known[] = {
            "invalid_request_error", "authentication_error", "billing_error",
            "permission_error",      "not_found_error",      "request_too_large",
            "rate_limit_error",      "api_error",            "overloaded_error",
            "timeout_error",
        };
        if (in_list(type, known, MG_ARRAY_LEN(known))) return type;
        switch (status) {
        case 400: return "invalid_request_error";
        case 401: return "authentication_error";
        case 402: return "billing_error";
        case 403: return "permission_error";
        case 404: return "not_found_error";
        case 408:
        case 504: return "timeout_error";
        case 413: return "request_too_large";
        case 429: return "rate_limit_error";
        case 503:
        case 529: return "overloaded_error";
        default: return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
        }
    }
    static const char *const known[] = {
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
        "rate_limit_error",      "insufficient_quota",   "server_error",     "tokens",
        "requests",
    };
    if (in_list(type, known, MG_ARRAY_LEN(known))) return type;
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
    }
}

const char *mg_ir_error_code(const mg_ir_error_t *e)
{
    static const char *const openai_codes[] = {"server_error", "rate_limit_exceeded", "invalid_prompt",
                                               "context_length_exceeded", "insufficient_quota"};
    if (e->code) return e->code;
    if (in_list(e->type, openai_codes, MG_ARRAY_LEN(openai_codes))) return e->type;
    if (e->status == 429) return "rate_limit_exceeded";
    return e->status >= 400 && e->status < 500 ? "invalid_prompt" : "server_error";
}

char *mg_ir_encode_error(mg_api_t client, const mg_ir_error_t *e)
{
    return mg_ir_codec(client)->encode_error(e->status, e->type, e->code, e->message);
}

/* ---- collector ---- */

void mg_ir_collector_init(mg_ir_collector_t *c)
{
    memset(c, 0, sizeof *c);
    c->usage = MG_IR_USAGE_UNKNOWN;
}

static mg_ir_cpart_t *collector_new_part(mg_ir_collector_t *c, mg_ir_part_type_t type)
{
    if (c->n_parts == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        c->parts = mg_xrealloc(c->parts, c->cap * sizeof *c->parts);
    }
    mg_ir_cpart_t *p = &c->parts[c->n_parts++];
    memset(p, 0, sizeof *p);
    p->type = type;
    p->index = -1;
    c->open = true;
    return p;
}

/* The part a delta of this kind goes to: the open last part when it has the same kind (a
 * refusal is a kind of its own). */
static mg_ir_cpart_t *collector_part(mg_ir_collector_t *c, mg_ir_part_type_t type, bool refusal)
{
    mg_ir_cpart_t *last = c->open && c->n_parts ? &c->parts[c->n_parts - 1] : NULL;
    if (last && last->type == type && last->refusal == refusal) return last;
    mg_ir_cpart_t *p = collector_new_part(c, type);
    p->refusal = refusal;
    return p;
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? mg_xstrdup(s) : NULL;
}

void mg_ir_collector_push(mg_ir_collector_t *c, const mg_ir_event_t *ev)
{
    if (c->ended || c->failed) return;
    switch (ev->type) {
    case MG_IR_EV_START:
        if (c->started) break;
        c->started = true;
        set_str(&c->id, ev->id);
        set_str(&c->model, ev->model);
        c->created = ev->created;
        break;
    case MG_IR_EV_REASONING_DELTA:
        if (ev->text_len)
            mg_buf_append_utf8(&collector_part(c, MG_IR_PART_REASONING, false)->text, ev->text,
                               ev->text_len);
        break;
    case MG_IR_EV_REASONING_SIGNATURE:
        if (c->open && c->n_parts && c->parts[c->n_parts - 1].type == MG_IR_PART_REASONING)
            mg_buf_append_utf8(&c->parts[c->n_parts - 1].signature, ev->text, ev->text_len);
        break;
    case MG_IR_EV_TEXT_DELTA:
        if (ev->text_len)
            mg_buf_append_utf8(&collector_part(c, MG_IR_PART_TEXT, ev->refusal)->text, ev->text, ev->text_len);
        break;
    case MG_IR_EV_TOOL_CALL_START: {
        mg_ir_cpart_t *p = collector_new_part(c, MG_IR_PART_TOOL_CALL);
        p->index = ev->index;
        p->id = mg_xstrdup(ev->id ? ev->id : "");
        p->name = mg_xstrdup(ev->name ? ev->name : "");
        c->n_tools++;
        break;
    }
    case MG_IR_EV_TOOL_CALL_DELTA:
        /* The open call, or (interleaved upstreams) the call with that index. */
        for (size_t i = c->n_parts; i-- > 0;) {
            if (c->parts[i].type == MG_IR_PART_TOOL_CALL && c->parts[i].index == ev->index) {
                mg_buf_append_utf8(&c->parts[i].text, ev->text, ev->text_len);
                break;
            }
        }
        break;
    case MG_IR_EV_BLOCK_END: c->open = false; break;
    case MG_IR_EV_OPAQUE_BLOCK: break; /* not in this model */
    case MG_IR_EV_FINISH:
        if (c->finish == MG_IR_FINISH_NONE) { /* the first one counts, as in the encoders */
            c->finish = ev->finish;
            set_str(&c->stop_sequence, ev->stop_sequence);
        }
        c->open = false;
        break;
    case MG_IR_EV_USAGE: c->usage = ev->usage; break;
    case MG_IR_EV_END: c->ended = true; break;
    case MG_IR_EV_ERROR:
        c->failed = true;
        c->error.status = ev->error.status;
        c->error.type = ev->error.type ? mg_xstrdup(ev->error.type) : NULL;
        c->error.code = ev->error.code ? mg_xstrdup(ev->error.code) : NULL;
        c->error.message = mg_xstrdup(ev->error.message ? ev->error.message : "");
        break;
    }
}

void mg_ir_collector_response(const mg_ir_collector_t *c, mg_ir_arena_t *a, mg_ir_response_t *out)
{
    memset(out, 0, sizeof *out);
    out->id = c->id;
    out->model = c->model;
    out->created = c->created;
    out->finish = c->finish;
    out->stop_sequence = c->stop_sequence;
    out->usage = c->usage;
    out->parts = c->n_parts ? mg_ir_alloc(a, c->n_parts * sizeof *out->parts) : NULL;
    for (size_t i = 0; i < c->n_parts; i++) {
        const mg_ir_cpart_t *p = &c->parts[i];
        mg_ir_part_t *q = &out->parts[out->n_parts++];
        q->type = p->type;
        q->refusal = p->refusal;
        const char *t = p->text.data ? p->text.data : "";
        if (p->type == MG_IR_PART_TOOL_CALL) {
            q->id = p->id;
            q->name = p->name;
            q->arguments = *t ? t : "{}";
        } else {
            q->text = t;
            if (p->signature.len) q->signature = p->signature.data;
        }
    }
}

void mg_ir_collector_free(mg_ir_collector_t *c)
{
    for (size_t i = 0; i < c->n_parts; i++) {
        mg_buf_free(&c->parts[i].text);
        mg_buf_free(&c->parts[i].signature);
        free(c->parts[i].id);
        free(c->parts[i].name);
    }
    free(c->parts);
    free(c->id);
    free(c->model);
    free(c->stop_sequence);
    free((char *)c->error.type);
    free((char *)c->error.code);
    free((char *)c->error.message);
    memset(c, 0, sizeof *c);
}

/* ---- helpers ---- */

const cJSON *mg_ir_jget(const cJSON *o, const char *key)
{
    if (!cJSON_IsObject(o) || !key) return NULL;
    /* cJSON_GetObjectItemCaseSensitive's walk (the first match; a nameless item ends it), with
     * the first byte compared before strcmp: decoders ask for many members a request lacks. */
    for (const cJSON *c = o->child; c && c->string; c = c->next)
        if (c->string[0] == key[0] && strcmp(c->string, key) == 0) return c;
    return NULL;
}

const char *mg_ir_jstr(const cJSON *o, const char *key)
{
    const cJSON *v = mg_ir_jget(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *mg_ir_event_type(const cJSON *j, const char *type, size_t type_len, char *buf, size_t buflen)
{
    const char *t = mg_ir_jstr(j, "type");
    if (t) return t;
    size_t n = MG_MIN(type_len, buflen - 1);
    memcpy(buf, type, n);
    buf[n] = '\0';
    return buf;
}

int64_t mg_ir_jint(const cJSON *o, const char *key, int64_t dflt)
{
    const cJSON *v = mg_ir_jget(o, key);
    if (!cJSON_IsNumber(v)) return dflt;
    double d = v->valuedouble;
    if (!(d >= -9e15 && d <= 9e15)) return dflt; /* NaN, or beyond exact doubles */
    return (int64_t)d;
}

bool mg_ir_parse_data_url(mg_ir_arena_t *a, const char *url, const char **media_type,
                          const char **data)
{
    if (!url || strncasecmp(url, "data:", 5) != 0) return false;
    const char *comma = strchr(url, ',');
    if (!comma) return false;
    const char *semi = memchr(url + 5, ';', (size_t)(comma - (url + 5)));
    if (!semi || (size_t)(comma - semi) != 7 || strncasecmp(semi, ";base64", 7) != 0) return false;
    *media_type = mg_ir_strndup(a, url + 5, (size_t)(semi - (url + 5)));
    *data = comma + 1;
    return true;
}

char *mg_ir_data_url(const char *media_type, const char *data)
{
    return mg_xasprintf("data:%s;base64,%s", media_type ? media_type : "image/png", data ? data : "");
}

int64_t mg_ir_effort_budget(mg_ir_effort_t e)
{
    switch (e) {
    case MG_IR_EFFORT_MINIMAL:
    case MG_IR_EFFORT_LOW: return 1024;
    case MG_IR_EFFORT_MEDIUM: return 2048;
    case MG_IR_EFFORT_HIGH: return 4096;
    default: return -1;
    }
}

mg_ir_effort_t mg_ir_budget_effort(int64_t budget)
{
    if (budget < 0) return MG_IR_EFFORT_UNSET;
    if (budget == 0) return MG_IR_EFFORT_NONE;
    if (budget <= 1024) return MG_IR_EFFORT_LOW;
    if (budget <= 2048) return MG_IR_EFFORT_MEDIUM;
    return MG_IR_EFFORT_HIGH;
}

const char *mg_ir_effort_name(mg_ir_effort_t e)
{
    switch (e) {
    case MG_IR_EFFORT_NONE: return "none";
    case MG_IR_EFFORT_MINIMAL: return "minimal";
    case MG_IR_EFFORT_LOW: return "low";
    case MG_IR_EFFORT_MEDIUM: return "medium";
    case MG_IR_EFFORT_HIGH: return "high";
    default: return NULL;
    }
}

mg_ir_effort_t mg_ir_effort_parse(const char *s)
{
    if (!s) return MG_IR_EFFORT_UNSET;
    if (strcmp(s, "none") == 0) return MG_IR_EFFORT_NONE;
    if (strcmp(s, "minimal") == 0) return MG_IR_EFFORT_MINIMAL;
    if (strcmp(s, "low") == 0) return MG_IR_EFFORT_LOW;
    if (strcmp(s, "medium") == 0) return MG_IR_EFFORT_MEDIUM;
    if (strcmp(s, "high") == 0 || strcmp(s, "xhigh") == 0) return MG_IR_EFFORT_HIGH;
    return MG_IR_EFFORT_UNSET;
}

mg_ir_effort_t mg_ir_request_effort(const mg_ir_request_t *ir)
{
    if (ir->effort != MG_IR_EFFORT_UNSET) return ir->effort;
    if (ir->reasoning_budget >= 0) return mg_ir_budget_effort(ir->reasoning_budget);
    if (ir->reasoning_adaptive) return MG_IR_EFFORT_MEDIUM;
    return MG_IR_EFFORT_UNSET;
}

mg_ir_part_t *mg_ir_parts_add(mg_ir_arena_t *a, mg_ir_parts_t *pv, mg_ir_part_type_t type)
{
    pv->v = mg_ir_grow(a, pv->v, pv->n, &pv->cap, sizeof *pv->v);
    mg_ir_part_t *p = &pv->v[pv->n++];
    memset(p, 0, sizeof *p);
    p->type = type;
    return p;
}

mg_ir_message_t *mg_ir_add_message(mg_ir_arena_t *a, mg_ir_request_t *r, size_t *cap,
                                   mg_ir_role_t role, const mg_ir_parts_t *parts)
{
    r->messages = mg_ir_grow(a, r->messages, r->n_messages, cap, sizeof *r->messages);
    mg_ir_message_t *m = &r->messages[r->n_messages++];
    m->role = role;
    m->parts = parts ? parts->v : NULL;
    m->n_parts = parts ? parts->n : 0;
    m->raw = NULL;
    return m;
}

void mg_ir_request_init(mg_ir_arena_t *a, mg_ir_request_t *r, mg_api_t source)
{
    memset(r, 0, sizeof *r);
    r->source = source;
    r->parallel_tool_calls = -1;
    r->max_output_tokens = -1;
    r->reasoning_budget = -1;
    r->format_strict = -1;
    r->n = 1;
    r->extras = mg_ir_keep_json(a, cJSON_CreateObject());
}

char *mg_ir_join_text(const mg_ir_part_t *parts, size_t n, const char *sep)
{
    mg_buf_t b = {0};
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].type != MG_IR_PART_TEXT || !parts[i].text) continue;
        if (any) mg_buf_puts(&b, sep);
        mg_buf_puts(&b, parts[i].text);
        any = true;
    }
    if (!any) return NULL;
    if (!b.data) return mg_xstrdup("");
    return mg_buf_steal(&b);
}

mg_ir_finish_t mg_ir_effective_finish(mg_ir_finish_t f, bool has_tool_calls)
{
    if (has_tool_calls && (f == MG_IR_FINISH_STOP || f == MG_IR_FINISH_NONE)) return MG_IR_FINISH_TOOL_CALLS;
    if (f == MG_IR_FINISH_NONE || (f == MG_IR_FINISH_TOOL_CALLS && !has_tool_calls)) return MG_IR_FINISH_STOP;
    return f;
}

bool mg_ir_same_api(mg_api_t source, mg_api_t target)
{
    return source == target;
}

void mg_ir_sse_frame(mg_buf_t *out, const char *name, const char *json, size_t json_len)
{
    if (name) {
        mg_buf_puts(out, "event: ");
        mg_buf_puts(out, name);
        mg_buf_puts(out, "\n");
    }
    mg_buf_puts(out, "data: ");
    mg_buf_append(out, json, json_len);
    mg_buf_puts(out, "\n\n");
}

void mg_ir_buf_int(mg_buf_t *b, int64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[--i] = '-';
    mg_buf_append(b, tmp + i, sizeof tmp - i);
}

char *mg_ir_print_json(const cJSON *j, size_t *len)
{
    char *s = cJSON_PrintUnformatted(j);
    if (!s) abort(); /* cJSON fails only when allocation fails */
    size_t n = strlen(s);
    size_t k = mg_utf8_valid_len(s, n);
    if (k < n) { /* rare: a copy only when there is something to repair */
        mg_buf_t b = {0};
        mg_buf_reserve(&b, n + 16);
        mg_buf_append(&b, s, k);
        mg_buf_append_json_utf8(&b, s + k, n - k);
        cJSON_free(s);
        n = b.len;
        s = mg_buf_steal(&b);
    }
    if (len) *len = n;
    return s;
}

void mg_ir_sse_json(mg_buf_t *out, const char *name, const cJSON *j)
{
    size_t n;
    char *s = mg_ir_print_json(j, &n);
    mg_ir_sse_frame(out, name, s, n);
    free(s);
}

int mg_ir_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void mg_ir_copy_extras(cJSON *o, const mg_ir_request_t *ir)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, ir->extras)
    {
        if (!cJSON_GetObjectItemCaseSensitive(o, f->string)) cJSON_AddItemToObject(o, f->string, cJSON_Duplicate(f, true));
    }
}

int64_t mg_ir_created(const mg_ir_output_opts_t *opts, int64_t upstream)
{
    if (opts && opts->created > 0) return opts->created;
    if (upstream > 0) return upstream;
    return mg_wall_ms() / 1000;
}

const char *mg_ir_model_shown(const mg_ir_output_opts_t *opts, const char *upstream)
{
    if (opts && opts->model) return opts->model;
    if (upstream && *upstream) return upstream;
    return opts && opts->default_model ? opts->default_model : "";
}

cJSON *mg_ir_empty_schema(void)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "object");
    cJSON_AddObjectToObject(s, "properties");
    return s;
}

void mg_ir_add_int(cJSON *o, const char *key, int64_t v)
{
    cJSON_AddItemToObject(o, key, cJSON_CreateNumber((double)v));
}

void mg_ir_add_dup(cJSON *o, const char *key, const cJSON *v)
{
    if (v) cJSON_AddItemToObject(o, key, cJSON_Duplicate(v, true));
}

char *mg_ir_placeholder_id(const char *fallback)
{
    return mg_codec_answer_id("", NULL, NULL, fallback);
}

/* One client request as it moves through the gateway: the body, the plan (ordered candidates),
 * the attempts and the reply. It lives on one serving thread, which also runs its upstream
 * transfers (upstream.h); the watchdog thread looks at it too (vanished clients, keep-alives).
 *
 * Locking: `lock` guards the fields marked [locked]. A transfer's callbacks write an attempt's
 * result fields, then set `done` under the lock; the router reads them only after it saw `done`
 * under the lock. Everything else belongs to the serving thread.
 * Lifetime: reference-counted; the serving side holds one reference until the HTTP exchange is
 * over, and each attempt in flight holds one. */
#pragma once
#include "classify.h"
#include "config.h"
#include "gen.h"
#include "upstream.h"
#include "util.h"

#include "compact.h"
#include "ir.h"
#include "jsonutil.h"
#include "keys.h"
#include "policy.h"
#include "sse.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define MG_MAX_CANDIDATES 16
#define MG_MAX_ATTEMPTS 16

typedef enum mg_endpoint { MG_EP_CHAT, MG_EP_RESPONSES, MG_EP_MESSAGES } mg_endpoint_t;

struct mg_req;

/* How an attempt's stream reaches the client. */
typedef enum mg_relay_mode {
    MG_RELAY_CHAT_RAW,  /* Chat client, Chat upstream: events pass byte for byte (reasoning fixed up) */
    MG_RELAY_RAW,       /* same API (Responses, Messages): events pass byte for byte */
    MG_RELAY_TRANSLATE, /* different APIs, or reasoning stripped: decoded and re-encoded (ir.h) */
} mg_relay_mode_t;

/* <think>…</think> at the start of a Chat answer's content (some local models): state 0 not
 * decided yet, 1 inside the think block, 3 just closed (blank lines dropped), 2 past it or there
 * is none. carry holds bytes that may be
 * the start of a tag cut across two deltas. */
typedef struct mg_think {
    int state;
    char carry[16];
    size_t carry_len;
} mg_think_t;

/* What a Chat to Chat stream keeps per choice (n > 1 interleaves several answers in one stream,
 * each with its own content and its own first delta): its <think> splitting, whether its
 * delta.role and a finish_reason (not "") have gone out, and whether it streamed tool calls. */
typedef struct mg_choice_state {
    mg_think_t think;
    bool saw_role;
    bool saw_finish;
    bool saw_tool_calls;
} mg_choice_state_t;

/* Choices past this index (an upstream's nonsense) are passed on untouched. The Chat decoder
 * caps n at the same number. */
#define MG_MAX_CHOICES 128

typedef struct mg_attempt {
    struct mg_req *req;
    const mg_model_t *model;
    mg_xfer_t *xfer; /* the serving side's reference; released when the attempt is settled */
    int64_t start_ms, end_ms;
    /* Written by the upstream thread before `done`. */
    long status;
    mg_buf_t headers; /* raw response header block */
    mg_buf_t body;
    size_t body_cap;
    mg_xfer_result_t result;
    char detail[512]; /* what went wrong, the upstream's own words where it gave some (cut to fit) */
    bool done; /* [locked] */
    /* Streaming answers (upstream thread until done). */
    bool is_sse;          /* a 2xx text/event-stream answer */
    mg_sse_parser_t sse;
    mg_buf_t pending;     /* client bytes held back until the commit point */
    bool saw_done, saw_finish;
    bool strip_reasoning; /* the client's header or the provider's stripReasoning */
    mg_choice_state_t choice0;  /* MG_RELAY_CHAT_RAW: choice 0's state (the only one when n = 1) */
    mg_choice_state_t *choices; /* … and choices 1… (n > 1), grown on demand; owned, freed with the
                                   request */
    int n_choices;              /* entries in choices */
    mg_relay_mode_t mode;
    mg_ir_decoder_t *dec; /* MG_RELAY_RAW / TRANSLATE: the upstream's events, decoded */
    mg_ir_encoder_t *enc; /* MG_RELAY_TRANSLATE: the client's events, encoded */
    mg_class_t fail_cls;  /* set when the stream itself reported an error or broke the rules */
    bool sse_broken;      /* the event stream could not be parsed (an event over the size limit): no
                             error event has reached the client for it yet */
    int64_t prompt_tokens, completion_tokens; /* from the usage, 0 when none [locked] */
    int64_t cached_tokens;                    /* prompt tokens read from a cache [locked] */
    int64_t cache_write_tokens;               /* prompt tokens written to a cache (Anthropic's
                                                 cache_creation_input_tokens, LiteLLM's on Chat),
                                                 part of prompt_tokens as cached ones are [locked] */
    int64_t content_events;  /* content-bearing events relayed (a token count when usage never came) */
    int64_t relayed_bytes;   /* bytes queued for the client */
    int64_t answer_estimate; /* a whole answer served without usage: its token estimate (billing) */
    int64_t ttft_ms;      /* time to the commit point (streams), -1 none */
    mg_compact_report_t compaction; /* what safety filters and compaction did to this candidate's copy */
    char compaction_note[256]; /* why a summary or the policy's compaction was not used (or that
                                  a summary was reused), or "" (the access log's "compaction_note") */
    mg_buf_t answer;      /* gateway.log.content: the answer's text for the access line, capped [locked] */
    bool answer_cut;      /* [locked] more text came than the cap let in */
    int64_t raw_estimate; /* raw token estimate of what was sent (calibration), 0 unknown */
    int64_t raw_fixed;    /* its fixed share (images: calibration leaves such prompts out) */
    bool is_retry;        /* a resend of the previous attempt's candidate */
    int64_t fit_window;   /* the window the request was fitted to (a learned one may be smaller
                             than the model's); 0 when none was known */
    bool health_begun;    /* counted in flight by the health registry; ended exactly once */
    /* Serving thread, once done. */
    mg_class_t cls;
    int64_t retry_after_ms; /* the upstream's Retry-After (or like) hint, -1 none */
    int64_t next_seq;       /* RAW Responses stream: the sequence_number after the upstream's last, -1 none */
    /* The upstream's answer id, model and creation time, for the events the gateway adds to a
     * stream it passes through: a RAW Responses stream's response (response.created), for the
     * response.failed added at a cut; a Chat to Chat stream's chunks, for the role and finish
     * chunks it adds. "" and 0 unknown. */
    char stream_id[256];
    char stream_model[256];
    int64_t stream_created;
    bool usage_known;     /* the classifier's strict pass over a Chat answer noted its "usage" */
    mg_json_span_t usage; /* … and where its value is (found false: the answer has none) */
} mg_attempt_t;

/* A summarizer run for the current attempt (compaction dropped turns, and a summarizer is named):
 * the candidate is built but not sent until it ends. At most one per request at a time. The
 * transfer's callbacks (router.c) write the fields marked (up) and then `done` under req->lock;
 * the serving thread reads them once it saw `done`. */
typedef struct mg_summary_run {
    bool active;             /* the current attempt waits for this run */
    bool done;               /* [locked] the transfer ended */
    mg_xfer_t *xfer;         /* the serving side's reference */
    const mg_model_t *model; /* the summarizer */
    int64_t start_ms;
    long status;             /* (up) */
    mg_buf_t headers;        /* (up) the answer's header block (Retry-After, for health) */
    mg_buf_t body;           /* (up) the answer, capped */
    bool health_begun;       /* counted in flight by the health registry; ended exactly once */
    mg_xfer_result_t result; /* (up) */
    char detail[512];        /* (up) */
    /* The candidate: compacted with room kept for the summary (reserved), and the deterministic
     * result that stands when the summary cannot be had (fallback). */
    mg_ir_request_t reserved, fallback;
    mg_compact_report_t reserved_report, fallback_report;
    mg_compact_opts_t opts;
    int64_t budget, delay_ms;
    const char *asked; /* the summarizer's request body (arena copy), the key of its memo */
    size_t asked_len;
} mg_summary_run_t;

/* A summary made for this request, kept for a later candidate or retry that would ask the same
 * summarizer exactly the same thing (the same request body): it is used again, not made again.
 * In the request's arena, newest first. */
typedef struct mg_summary_memo {
    struct mg_summary_memo *next;
    const mg_model_t *model;
    const char *asked, *text;
    size_t asked_len, text_len;
} mg_summary_memo_t;

/* What the client gets when the answer is a whole body (not a stream). */
typedef struct mg_reply {
    int status;
    const char *content_type; /* static string */
    mg_buf_t body;
    int64_t retry_after_s; /* -1 = no header */
    const char *allow;     /* static string: the Allow header of a 405 */
} mg_reply_t;

typedef struct mg_req {
    atomic_int refs;
    pthread_mutex_t lock;
    char id[32];
    mg_gen_t *gen; /* reference held for the request's life */
    mg_upstream_t *up;
    void *conn;      /* the server's connection handle; valid while the exchange lasts */
    bool suspended;  /* [locked] the connection is suspended waiting for the upstream side */
    int64_t start_ms;
    mg_endpoint_t ep;
    bool is_api;   /* a POST to one of the three API endpoints (ep names it); the access line's "api" */
    bool key_passed;   /* the key's limits let it through (mg_keys_check took an rpm token) */
    /* What the summaries made for it cost (every summarizer answer that came back, used or not),
     * charged to its key with the answer's and shown in the access line. */
    int64_t summary_tokens;
    double summary_cost;
    const mg_model_t *summary_model; /* the last summarizer charged */
    bool summary_ran;  /* a summarizer transfer was started for it (something went upstream) */
    bool count_tokens; /* POST /v1/messages/count_tokens or /v1/responses/input_tokens (ep says
                          which): answered by the router's estimate */
    const mg_model_t *counted_for; /* … for this model (x-moongate-model); nothing is served */
    char *method;
    char *path;
    bool body_phase;     /* [locked] headers seen, body not complete yet */
    int64_t last_body_ms; /* [locked] last time body bytes arrived */
    bool body_timed_out;  /* [locked] the watchdog ended a body past gateway.bodyTimeoutMs */
    mg_buf_t body;
    bool body_too_large;
    size_t discarded; /* body bytes dropped after the limit */
    cJSON *json;  /* the parsed request body, in `arena` (mg_ir_parse_json): never cJSON_Delete it */
    char *model_asked;
    bool stream;
    bool wants_usage; /* stream_options.include_usage from the client */
    mg_api_t client_api;  /* the API the client speaks (from the endpoint) */
    mg_ir_arena_t *arena; /* the decoded request and what lives as long as it */
    mg_ir_request_t ir;   /* the client's request in the internal model, once decoded */
    bool ir_ready;
    int64_t est_tokens;   /* the largest estimate that overflowed a candidate (for the final 400) */
    bool strip_reasoning; /* drop reasoning so only final text reaches the client */
    /* The client-bound stream once committed. */
    mg_attempt_t *committed; /* [locked] the attempt whose answer the client gets */
    mg_buf_t out;            /* [locked] bytes waiting for the client */
    bool out_done;           /* [locked] no more bytes will be added */
    bool upstream_paused;    /* [locked] the committed transfer is paused for backpressure */
    size_t out_cap;          /* pause the upstream above this many queued bytes */
    int64_t last_out_ms;     /* [locked] last time bytes were queued (keep-alive timing) */
    const mg_model_t *cands[MG_MAX_CANDIDATES];
    mg_candidate_t cand_opts[MG_MAX_CANDIDATES]; /* the policy's options for each candidate */
    size_t n_cands, next_cand;
    mg_route_input_t pin;       /* the request as the policy sees it (borrows from req) */
    const mg_key_t *key;        /* the caller's key (gateway.keys), or NULL when none are configured */
    mg_kv_t *hdrs;              /* request headers (credentials left out), lower-case names */
    size_t n_hdrs;
    char trace[MG_POLICY_TRACE_MAX]; /* the policy's decision trace */
    const mg_model_t *skipped[MG_MAX_CANDIDATES]; /* passed over: cooling down, or too small a window */
    size_t n_skipped;
    bool overflowed;              /* a candidate overflowed: only larger windows are tried */
    int64_t overflow_window;      /* the largest window that overflowed (as far as known; 0 unknown) */
    unsigned retries;             /* resends of the current candidate */
    bool refitted;                /* a candidate was resent fitted to the window its server named */
    mg_summary_run_t summary;     /* a summarizer run the current attempt waits for */
    mg_summary_memo_t *summaries; /* the summaries made so far, for reuse */
    mg_attempt_t attempts[MG_MAX_ATTEMPTS]; /* only [0, n_attempts) is initialised (mg_req_new) */
    size_t n_attempts;
    /* The outcome, for headers and the access log. */
    int status;
    const mg_model_t *served;
    bool client_aborted;
    bool client_gone; /* [locked] the watchdog saw the client close while we waited */
    struct mg_req *reg_prev, *reg_next; /* the server's registry of live requests */
} mg_req_t;

/* Set by the server: resumes the suspended connection of req. Called without the lock held. */
extern void (*mg_req_wake_fn)(mg_req_t *req);

/* With req->lock held: whether the connection is suspended waiting for news (and, if so, marks it
 * no longer suspended). The caller then unlocks and calls mg_req_wake when this returned true. */
bool mg_req_take_wake_locked(mg_req_t *req);
void mg_req_wake(mg_req_t *req);

mg_req_t *mg_req_new(mg_gen_t *gen, mg_upstream_t *up);
void mg_req_ref(mg_req_t *req);
void mg_req_release(mg_req_t *req);

/* gateway.log.content: adds answer text to a's access-log copy, up to gateway.log.contentMaxBytes
 * (cut at a UTF-8 boundary). A no-op when the option is off. Takes req->lock. */
void mg_req_note_answer(mg_attempt_t *a, const char *text, size_t len);

/* The attempt in flight, or NULL. */
mg_attempt_t *mg_req_current(mg_req_t *req);

void mg_reply_free(mg_reply_t *r);
/* Sets r to an error in the client API's format (OpenAI's for chat and responses, Anthropic's
 * for messages). message is plain text. */
void mg_reply_error(mg_reply_t *r, mg_endpoint_t ep, int status, const char *type, const char *code,
                    const char *message);

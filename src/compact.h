/* Compaction and safety filters: make a request fit one candidate model's context window, and
 * remove from it what a (local) model must not see. Works on the internal model (ir.h) only, per
 * candidate, before encoding: knows nothing of HTTP, curl or Lua. Uses tokens.h for estimates.
 *
 * What it guarantees (tests/unit/compact_prop_test.c checks each over thousands of random
 * conversations; tests/fuzz/compact.c over fuzz input):
 *   - system/developer instructions and tool definitions are never touched;
 *   - the latest user turn (the last run of consecutive user messages) is kept verbatim;
 *   - a tool call is never separated from its result: whole units are dropped (a unit is a user
 *     turn with the assistant/tool exchange that follows it), never half of one;
 *   - a valid request stays valid for every target API: it starts with a user message, no orphan
 *     tool result, no tool call without its result, tool results right after their call;
 *   - text is cut only at UTF-8 character boundaries, with an explicit marker
 *     "[… 12,345 characters elided by moongate …]";
 *   - the result fits (calibrated estimate <= budget), or the call says it cannot
 *     (MG_COMPACT_OVERFLOW) and leaves the request as it was.
 *
 * Ownership and the arena (ir.h): these functions NEVER write into arrays or strings that *req
 * points to; they build new arrays and strings in the arena and replace req's pointers. So a
 * shallow copy of the decoded request (mg_ir_request_t orig = *req) stays intact and is the
 * snapshot to start from for the next candidate. Nothing is freed; everything dies with the arena.
 *
 * Threads: pure, reentrant; the only shared object is the calibration table (tokens.h). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ir.h"
#include "tokens.h"
#include "util.h"

/* ---------------------------------------------------------------------------------------------
 * Budget. */

/* The output a request reserves on a model: the request's max output tokens (requested <= 0:
 * unset) capped by the model's maxTokens and by half the window; unset means the model's maxTokens,
 * or half the window when that is less (catalogs where maxTokens equals the window). A request
 * asking for more keeps its ask unless prompt + ask would overflow (router.c lowers it then).
 * Both unknown: 4096 (what encoders default to). */
int64_t mg_compact_reserved_output(const mg_model_t *m, int64_t requested_max_output);

/* The model as a request must be fitted to it: m itself, or, when learned (a window its server
 * named, 0 none) is under m's window, a copy in *tmp with that window and at most half of it as
 * maxTokens (the reserved output must leave room for a prompt). */
const mg_model_t *mg_compact_fit_model(const mg_model_t *m, int64_t learned, mg_model_t *tmp);

/* context_window − reserved output − margin: the most prompt tokens the model can take.
 * INT64_MAX when the window is unknown (<= 0): no limit can be enforced. May be <= 0. */
int64_t mg_compact_budget(const mg_model_t *m, int64_t requested_max_output, int64_t margin);

/* ---------------------------------------------------------------------------------------------
 * Report (for the x-moongate-compaction header and the access log). One report per candidate
 * attempt: zero it (or mg_compact_report_init), pass it to mg_safety_filter then mg_compact. */

enum {
    MG_COMPACT_F_CONTROL_TOKENS = 1u << 0, /* "control_tokens": chat-template tokens stripped */
    MG_COMPACT_F_OLD_REASONING = 1u << 1,  /* "old_reasoning": reasoning of earlier turns dropped */
    MG_COMPACT_F_TOOL_RESULT_CAP = 1u << 2, /* "tool_result_cap": a tool result over the cap cut */
    MG_COMPACT_F_SHRINK = 1u << 3,          /* "shrink": compaction cut texts to head + tail */
    MG_COMPACT_F_DROP_TURNS = 1u << 4,      /* "drop_turns": oldest turns dropped */
    MG_COMPACT_F_SUMMARY = 1u << 5,         /* "summary": dropped turns replaced by a summary */
    MG_COMPACT_F_DROP_STEPS = 1u << 6,      /* "drop_steps": early tool steps of the current turn
                                               dropped (only with opts.drop_current_steps) */
    MG_COMPACT_F_POLICY = 1u << 7,          /* "policy": the policy's compact hook compacted it */
    MG_COMPACT_F_MAX_TOKENS = 1u << 8,      /* "max_tokens": the output asked for lowered to the
                                               output reserved for it (the router) */
};

typedef struct mg_compact_report {
    int64_t tokens_before; /* calibrated estimate of the request as it came (after filters) */
    int64_t tokens_after;  /* calibrated estimate of what is sent */
    int64_t raw_after;     /* RAW estimate of what is sent: feed it to mg_tokens_calib_observe */
    int64_t raw_fixed_after; /* its fixed share (images, inline media), which calibration does
                                not scale: the observe call's fixed */
    int64_t budget;
    int dropped_turns; /* units dropped (summarized ones included) */
    int dropped_messages;
    int dropped_steps;    /* tool steps of the current turn dropped */
    int summarized_turns; /* turns replaced by the summary (0: no summary) */
    int64_t elided_bytes; /* bytes cut out of kept texts by head + tail shrinking */
    int shrunk_parts;
    int control_tokens; /* control tokens removed by the safety filter */
    unsigned filters;   /* MG_COMPACT_F_* applied */
    int64_t max_tokens_asked; /* with MG_COMPACT_F_MAX_TOKENS: the output the request asked
                                 for, and max_tokens_sent what it went out with */
    int64_t max_tokens_sent;
    /* The messages dropped by the last mg_compact (arena copies, in order), for a summarizer run
     * by the caller (mg_compact_insert_summary); and where the drop note sits in req (-1: none). */
    const mg_ir_message_t *dropped;
    size_t n_dropped;
    long note_index;
} mg_compact_report_t;

void mg_compact_report_init(mg_compact_report_t *r);
/* Whether the request differs from what the client sent (filters or compaction). */
bool mg_compact_report_changed(const mg_compact_report_t *r);
/* Appends the header value, e.g.
 * "tokens=52000->31000; dropped_turns=6; elided_bytes=81234; filters=control_tokens,old_reasoning"
 */
void mg_compact_report_header(const mg_compact_report_t *r, mg_buf_t *out);
/* The name of one MG_COMPACT_F_* bit ("control_tokens"…), NULL for an unknown bit. */
const char *mg_compact_filter_name(unsigned bit);

/* ---------------------------------------------------------------------------------------------
 * Compaction. */

/* Summarizer (optional; the caller does the HTTP). Given the dropped messages (n_turns user
 * turns, in order; borrowed for the call), write a summary of at most max_bytes bytes into *text
 * (allocated in a, or any memory that lives as long as a) and return 0, or return nonzero on
 * failure. Must return within timeout_ms: a later answer is discarded as a failure. A summary
 * longer than max_bytes is cut to fit. On failure the deterministic result stands. */
typedef int (*mg_compact_summarize_fn)(void *ud, const mg_ir_message_t *dropped, size_t n_dropped,
                                       int n_turns, size_t max_bytes, int64_t timeout_ms,
                                       mg_ir_arena_t *a, const char **text, size_t *len);

typedef struct mg_compact_opts {
    bool enabled;                 /* false: report fit or overflow, never change anything */
    mg_tokens_opts_t tokens;      /* calibration table, model ref, image cost */
    size_t tool_result_max_bytes; /* first pass: tool results above this are cut (16 KiB) */
    size_t message_max_bytes; /* first pass: older texts and tool arguments above this (8 KiB) */
    size_t min_keep_bytes;    /* later passes halve the caps down to this floor (512) */
    bool drop_note;           /* dropped turns leave a one-line user note saying so (true) */
    bool drop_current_steps;  /* last resort: drop early tool steps of the current turn (false) */
    mg_compact_summarize_fn summarize; /* NULL: none */
    void *summarize_ud;
    int64_t summary_reserve_tokens; /* room kept for a summary when turns are dropped (1024) */
    int64_t summary_timeout_ms;     /* (10000) */
} mg_compact_opts_t;

/* Defaults as noted above; enabled = true. */
void mg_compact_opts_init(mg_compact_opts_t *o);

#define MG_COMPACT_FITS 0    /* fits as it is; nothing changed (send the original bytes) */
#define MG_COMPACT_CHANGED 1 /* compacted and fits now: re-encode *req */
#define MG_COMPACT_OVERFLOW                                                                        \
    (-1) /* cannot fit (or compaction is off): skip the candidate as                               \
            context_overflow; *req is untouched */

/* Makes *req fit budget (tokens, calibrated as opts->tokens says). opts NULL: defaults. report
 * may be NULL; otherwise tokens/budget are set and the compaction fields added to what is there
 * (a report zeroed or filled by mg_safety_filter). Stages, each only while it does not fit yet,
 * oldest content first, checking after every step:
 *   1. drop the reasoning of turns before the last user message (old_reasoning);
 *   2. cut tool results above tool_result_max_bytes, and older texts and tool-call arguments
 *      (string values inside the JSON, which stays valid) above message_max_bytes (shrink);
 *   3. drop the oldest units whole, leaving a note (drop_turns); with a summarizer, the dropped
 *      turns are summarized into that note instead (summary);
 *   4. halve the caps down to min_keep_bytes over everything but the last user turn and the
 *      current turn's signed reasoning;
 *   5. with drop_current_steps, drop the current turn's earliest tool steps (drop_steps);
 *   6. give up: MG_COMPACT_OVERFLOW. */
int mg_compact(mg_ir_arena_t *a, mg_ir_request_t *req, int64_t budget,
               const mg_compact_opts_t *opts, mg_compact_report_t *report);

/* For a summary produced asynchronously by the caller: after mg_compact returned CHANGED with
 * report->n_dropped > 0 (call it with opts.summary_reserve_tokens > 0 so there is room), put the
 * summary in place of the drop note as "[Summary of N earlier turns by moongate: …]" (control
 * tokens stripped; cut to fit). 0 on success; -1 (request unchanged) when there is no note to
 * replace or not even a short summary fits. */
int mg_compact_insert_summary(mg_ir_arena_t *a, mg_ir_request_t *req, int64_t budget,
                              const mg_compact_opts_t *opts, mg_compact_report_t *report,
                              const char *text, size_t len);

/* Checks a request that something else compacted (a Lua policy, say) before it is sent: it fits
 * budget (tokens, as opts says; opts may be NULL) and is well formed: at least one message, the
 * first from the user; tool calls only in assistant messages, tool results only in tool
 * messages; every call answered by the tool messages that follow its assistant message and every
 * result answering a call there; ids set; all text valid UTF-8. 0, or -1 with a one-line reason
 * (messages numbered from 1, as the compact hook's Lua list numbers them). */
int mg_compact_validate(const mg_ir_request_t *req, int64_t budget, const mg_tokens_opts_t *opts,
                        char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------------
 * Safety filters (per provider; on by default for providers tagged local). */

typedef struct mg_safety_opts {
    bool control_tokens; /* strip chat-template control tokens from user and tool content */
    bool old_reasoning;  /* drop the reasoning of turns before the last user message */
    size_t tool_result_max_bytes;    /* cap any single tool result (head + tail); 0 = no cap */
    const char *const *extra_tokens; /* more literal control tokens (ASCII case-insensitive;
                                        borrowed, must outlive the call) */
    size_t n_extra_tokens;
} mg_safety_opts_t;

/* All three on, tool results capped at 32 KiB, no extra tokens. */
void mg_safety_opts_init(mg_safety_opts_t *o);

/* Applies the filters in place (same arena rules as compaction). Never touches system parts,
 * assistant text or tool calls, and never the reasoning of the current turn (Anthropic thinking
 * blocks must go back unchanged while tools are in use: PROTOCOLS B.5 note 5). Adjacent text
 * parts of one message (or of one tool result) are filtered as one text, since servers join them
 * with nothing between: a token split across parts is caught, and a part it leaves empty is
 * removed. Returns 1 when something changed (the original bytes can no longer be sent), 0 when
 * not. report may be NULL. */
int mg_safety_filter(mg_ir_arena_t *a, mg_ir_request_t *req, const mg_safety_opts_t *opts,
                     mg_compact_report_t *report);

/* The control-token filter on one text: a new arena string with every control token replaced by
 * a line feed, or NULL when there is none. *removed counts them (may be NULL). Extra tokens that
 * start with white space are ignored. */
char *mg_safety_strip_tokens(mg_ir_arena_t *a, const char *s, size_t len,
                             const mg_safety_opts_t *opts, int *removed);

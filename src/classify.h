/* Outcome → error class: what went wrong with one attempt, read from the transfer result, the
 * HTTP status, the headers and the error body as the servers we know write them.
 *
 * The wordings live in a Lua table (lua/error_patterns.lua, embedded in the binary) that operators
 * extend with their own file (gateway.errorPatterns). mg_patterns_load evaluates the table(s) once
 * in a throwaway sandboxed Lua state, converts them into C rules and closes the state; from then on
 * classification is pure C over an immutable rule set: thread-safe, no allocation on the common
 * path, a few microseconds per call. Uses Lua (at load only) and cJSON; knows nothing of HTTP
 * serving, curl or the router. */
#pragma once
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

typedef enum mg_class {
    MG_CLASS_OK = 0,
    MG_CLASS_CONNECT_ERROR,
    MG_CLASS_TIMEOUT, /* which one: mg_xfer_timeout_name(result) */
    MG_CLASS_RATE_LIMIT,
    MG_CLASS_OVERLOADED,
    MG_CLASS_SERVER_ERROR,
    MG_CLASS_AUTH,
    MG_CLASS_BILLING,
    MG_CLASS_MODEL_NOT_FOUND,
    MG_CLASS_MODEL_NOT_LOADED,
    MG_CLASS_CONTEXT_OVERFLOW,
    MG_CLASS_CONTENT_FILTER,
    MG_CLASS_BAD_REQUEST,
    MG_CLASS_STREAM_BROKEN,
    MG_CLASS_TOO_LARGE,   /* the answer exceeded gateway.maxUpstreamBodyBytes */
    MG_CLASS_UNSUPPORTED, /* the gateway (or this candidate) cannot serve this request */
    MG_CLASS_NO_KEY,      /* the provider's apiKey environment variable is unset */
    MG_CLASS_CANCELLED,
} mg_class_t;

#define MG_CLASS_COUNT ((int)MG_CLASS_CANCELLED + 1)

const char *mg_class_name(mg_class_t c);
/* The class named name ("rate_limit"…); false when unknown. */
bool mg_class_from_name(const char *name, mg_class_t *out);

/* Class of a transfer that did not complete normally (result != MG_XFER_OK). */
mg_class_t mg_classify_xfer(mg_xfer_result_t r);
/* "connect", "first_token", "idle" or "total" for the timeout results, else NULL. */
const char *mg_xfer_timeout_name(mg_xfer_result_t r);

/* Whether the router moves on to the next candidate after this class (the default; policies can
 * override). bad_request and content_filter go back to the client: the request itself is at fault.
 * context_overflow moves on only to a larger window: see mg_health_should_try. */
bool mg_class_moves_on(mg_class_t c);

/* ---------------------------------------------------------------------------------------------
 * Pattern sets */

typedef struct mg_patterns mg_patterns_t;

/* Builds a rule set: the operator's file first (extra_lua_path, may be NULL), then the built-in
 * lua/error_patterns.lua. The file must return a list of rules, or {rules = {...}, builtins =
 * false} to drop the built-ins. Evaluated once in a sandboxed state (text chunks only; base,
 * string, table, math, utf8; no io/os/load/require; memory, instruction and time budgets), then
 * closed.
 * Returns NULL with "file: rule N: what is wrong" (or the Lua error with file:line) in err, which
 * is always NUL-terminated. The result holds one reference: drop it with mg_patterns_release. */
mg_patterns_t *mg_patterns_load(const char *extra_lua_path, char *err, size_t errlen);
/* The same with the operator's rules given as text; name is used in messages and rule ids. */
mg_patterns_t *mg_patterns_load_string(const char *extra_text, size_t len, const char *name,
                                       char *err, size_t errlen);
/* The budgets of one load (5,000,000 Lua instructions and 1,000 ms unless set; at least 100,000
 * and 1 ms). For the fuzz target, whose inputs are runaway files by the thousand: call it before
 * any load, from one thread. */
void mg_patterns_set_load_budget(long insns, int ms);
/* The built-in rules only, loaded once per process and never freed (retain/release are no-ops on
 * it). If the embedded table failed to load (a build bug) it is empty and the status fallback
 * still classifies; mg_patterns_builtin_error says why. */
const mg_patterns_t *mg_patterns_builtin(void);
const char *mg_patterns_builtin_error(void);
/* Reference counting, thread-safe: requests in flight keep the set they started with while a
 * reload swaps in a new one. */
mg_patterns_t *mg_patterns_retain(const mg_patterns_t *p);
void mg_patterns_release(const mg_patterns_t *p);
/* Number of rules, and how many of them came from the operator's file. */
size_t mg_patterns_count(const mg_patterns_t *p, size_t *n_operator);

/* ---------------------------------------------------------------------------------------------
 * Classification */

typedef struct mg_classification {
    mg_class_t cls;
    int64_t retry_after_ms; /* retry-after-ms, retry-after (seconds or HTTP-date), or on a 429
                               the x-ratelimit-reset-* headers; -1 when none */
    int should_retry;       /* x-should-retry: 1 true, 0 false, -1 absent */
    const char *rule;       /* id of the rule that matched, NULL when the status fallback decided;
                               borrowed from the pattern set (copy it to outlive the set) */
} mg_classification_t;

/* Class of a completed HTTP exchange. patterns NULL means the built-ins. 2xx is OK unless the body
 * is a JSON error object (top-level "error", or "object"/"type" equal to "error"): some servers
 * report errors with 200. headers is the raw header block; either may be NULL/empty. Only the
 * first 8 KiB of the body are searched by substring rules; field rules parse bodies up to 256 KiB.
 * request is the client's parsed request that the error answers (borrowed; NULL when the request
 * is the gateway's own): the substring rules (match, pattern, unless) do not see what the body
 * quotes of it (mg_classify_blank_echoes). Field and header rules read the values as they are:
 * they name the server's structured fields (error.code, error.type), which it does not fill
 * with client text. */
mg_classification_t mg_classify_http2(const mg_patterns_t *patterns, long status,
                                      const char *headers, size_t hlen, const char *body,
                                      size_t blen, const struct cJSON *request);

/* Class of an error event found inside a 200 stream (LM Studio's `event: error`, a `data:` chunk
 * with a top-level "error", Anthropic's error event, Responses' response.failed and bare error
 * event…); data is the event's data. The rules see the event's error object at "error" wherever
 * the event carries it (response.error; the bare event's code, message and param, its code also
 * as error.type). Rules with a status never match; when no rule does, the class is
 * MG_CLASS_BAD_REQUEST if the error's type or code is invalid_request_error, else
 * MG_CLASS_SERVER_ERROR. request as for mg_classify_http2. */
mg_classification_t mg_classify_stream_error(const mg_patterns_t *patterns, const char *data,
                                             size_t len, const struct cJSON *request);

/* The context window a context-overflow error names, in tokens: the window the server has
 * loaded, which may be smaller than the configured contextWindow ("maximum context length is
 * 4096 tokens", "n_ctx: 4096", "available context size (4096 tokens)", "over the 4096-token
 * context"…). 0 when the text names none. Reads the first 4 KiB of text (a body or a message),
 * without what it quotes of request (as for mg_classify_http2). */
int64_t mg_classify_context_window(const char *text, size_t len, const struct cJSON *request);

/* The echo guard: overwrites with spaces, in text[0..n), every piece of request's member names and
 * string values (cut at the bytes a JSON serializer may write differently: quote, backslash,
 * slash, control characters, bytes >= 0x7f, ' < > &) of at least 8 bytes that text holds,
 * compared case-insensitively; also such a piece cut short by the end of text. Servers quote bad
 * values in their errors, and a client must not be able to write the words that change health
 * state for every client. Matching work is capped (about 4 M steps); past it the whole text is
 * blanked. No-op when request is NULL. n is meant to be a few KiB: the rules' window. */
void mg_classify_blank_echoes(char *text, size_t n, const struct cJSON *request);

/* The original API: mg_classify_http2 with the built-in patterns, no request, class only. */
mg_class_t mg_classify_http(long status, const char *headers, size_t hlen, const char *body,
                            size_t blen);

/* Reads retry-after-ms or retry-after (seconds) from a raw header block; -1 when absent. An
 * HTTP-date retry-after is read against the wall clock; _at takes that clock (ms since epoch). */
int64_t mg_retry_after_ms(const char *headers, size_t hlen);
int64_t mg_retry_after_ms_at(const char *headers, size_t hlen, int64_t wall_now_ms);
/* OpenAI's x-ratelimit-reset-requests / -tokens ("1s", "6m0s", "20ms"): the reset of an exhausted
 * limit (x-ratelimit-remaining-* = 0; the longest if both), else the shortest present; -1 if none.
 */
int64_t mg_ratelimit_reset_ms(const char *headers, size_t hlen);

/* A Lua-pattern subset matcher (exposed for the fuzzer and tests). pattern must have passed
 * mg_pattern_check. Searches subject like string.find(subject, pattern) and returns 1 on a match
 * (setting *start and *end, end exclusive, when non-NULL), 0 on none, -1 when the step budget ran
 * out (a pathological pattern: treated as no match). Case-sensitive: the classifier lowercases both
 * the subject and the pattern's literal letters first (mg_pattern_lower_literals). */
int mg_pattern_find(const char *pattern, size_t plen, const char *subject, size_t slen,
                    size_t *start, size_t *end);
/* NULL when pattern is in the supported subset, else why not (a static string). */
const char *mg_pattern_check(const char *pattern, size_t plen);
/* Lowercases, in place, the letters of pattern that stand for themselves (not class letters after
 * '%', such as %d or %S). */
void mg_pattern_lower_literals(char *pattern, size_t plen);

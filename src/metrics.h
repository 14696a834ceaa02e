/* Prometheus metrics: one process-wide registry of the counters, gauges and histograms the
 * gateway records, and their text exposition (format 0.0.4) for GET /metrics. Uses only atomics
 * on the hot path; knows nothing of HTTP, curl or Lua.
 *
 * Thread safety: every mg_metrics_* recorder may run on any thread at any time (the serving
 * threads record concurrently). A recorder is a few relaxed atomic adds; the
 * model label is found in a lock-free hash table, and a mutex is taken only the first time a model
 * (or a new api/model/status combination of moongate_requests_total) is seen. Rendering reads the
 * atomics without stopping the recorders: each value is exact, a scrape is not a snapshot across
 * series (as with every Prometheus client).
 *
 * Cardinality is bounded: api (3 values), outcome (the error classes of classify.h plus "ok"),
 * status (an HTTP code), direction (4), result (2) are closed sets; model labels are catalog refs,
 * added on first use. Past MG_METRICS_MAX_MODELS distinct models, or MG_METRICS_MAX_SERIES series
 * of moongate_requests_total, new values are counted under model="other". A request that was
 * never served by a model is counted under model="none".
 *
 * Metrics (names, labels and help text also in docs/OPERATIONS.md):
 *   moongate_requests_total{api,model,status}            counter
 *   moongate_attempts_total{model,outcome}               counter
 *   moongate_fallbacks_total                             counter
 *   moongate_request_duration_seconds{api}               histogram
 *   moongate_ttft_seconds{model}                         histogram
 *   moongate_tokens_total{model,direction}               counter
 *   moongate_cost_total{model}                           counter
 *   moongate_active_streams                              gauge
 *   moongate_policy_decision_seconds                     histogram
 *   moongate_reloads_total{result}                       counter
 *   moongate_providers_cooling_down                      gauge */
#pragma once
#include "classify.h"
#include "config.h"
#include "util.h"

#include <stdbool.h>
#include <stdint.h>

#define MG_METRICS_MAX_MODELS 1000  /* distinct model label values, "other" and "none" aside */
#define MG_METRICS_MAX_SERIES 10000 /* distinct moongate_requests_total series */
#define MG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The client API a request came in on. Same values as mg_endpoint_t (request.h), so
 * (mg_metrics_api_t)req->endpoint is correct; the unit test asserts it. */
typedef enum mg_metrics_api {
    MG_METRICS_API_CHAT = 0,      /* "chat"      POST /v1/chat/completions */
    MG_METRICS_API_RESPONSES = 1, /* "responses" POST /v1/responses */
    MG_METRICS_API_MESSAGES = 2,  /* "messages"  POST /v1/messages */
    MG_METRICS_API_COUNT_TOKENS = 3, /* "count_tokens": POST /v1/messages/count_tokens and
                                        /v1/responses/input_tokens (answered by the gateway) */
} mg_metrics_api_t;

/* Label value of api ("chat", "responses", "messages", "count_tokens"; "unknown" out of range). */
const char *mg_metrics_api_name(mg_metrics_api_t api);

/* ---- recorders: any thread, any time; strings are borrowed for the call ---------------------- */

/* One client request answered (once per request, streaming or not, after the status is known).
 * model_ref: the catalog ref of the model that served it, NULL when none did (rejected, every
 * candidate failed, …) which counts as model="none". status: the HTTP status sent to the client
 * (values outside 100..599 count as status="0"). */
void mg_metrics_request(mg_metrics_api_t api, const char *model_ref, int status);

/* One upstream attempt ended; cls is its class (MG_CLASS_OK for a success → outcome="ok"). */
void mg_metrics_attempt(const char *model_ref, mg_class_t cls);

/* The router moved on from a failed candidate to the next one (once per move). */
void mg_metrics_fallback(void);

/* Whole request time as the client saw it, in seconds. Negative and NaN values are ignored. */
void mg_metrics_latency(mg_metrics_api_t api, double seconds);

/* Time to first token of the attempt that served a streamed answer, in seconds. */
void mg_metrics_ttft(const char *model_ref, double seconds);

/* Tokens of one answer. input counts only non-cached input: Anthropic reports input_tokens
 * without the cache (cache_read_input_tokens and cache_creation_input_tokens come apart); for
 * OpenAI, whose prompt_tokens include prompt_tokens_details.cached_tokens, pass
 * prompt_tokens - cached_tokens as input and cached_tokens as cache_read. Negative values count 0. */
void mg_metrics_tokens(const char *model_ref, int64_t input, int64_t output, int64_t cache_read,
                       int64_t cache_write);

/* Cost of one answer in the catalog's cost units (see mg_cost_of). Negative/NaN ignored. */
void mg_metrics_cost(const char *model_ref, double cost_units);

/* Cost in the catalog's units: per-million prices × tokens / 1e6, summed over the four kinds.
 * Same input convention as mg_metrics_tokens (input excludes cached tokens). cost NULL → 0. */
double mg_cost_of(const mg_cost_t *cost, int64_t input, int64_t output, int64_t cache_read,
                  int64_t cache_write);

/* +1 when a client stream starts (first SSE byte queued), -1 when it ends, whatever the end. */
void mg_metrics_active_streams(int delta);

/* Time spent in one policy route decision (mg_policy_route), in seconds. */
void mg_metrics_policy_decision(double seconds);

/* One config/policy reload finished: ok true → result="ok", false → result="error". */
void mg_metrics_reload(bool ok);

/* moongate_providers_cooling_down, first way: tell the registry about each provider transition
 * (from the health change callback, for scope == MG_HEALTH_SCOPE_PROVIDER). Idempotent per
 * provider: the gauge is the number of distinct providers last reported cooling. */
void mg_metrics_provider_cooling(const char *provider_id, bool cooling);

/* Second way: a function the renderer calls to read the current number (it runs on the scraping
 * thread, must be thread-safe and must not call mg_metrics_render). When set (fn non-NULL) it
 * replaces the count kept by mg_metrics_provider_cooling. NULL unsets it. */
typedef int64_t (*mg_metrics_gauge_fn)(void *ud);
void mg_metrics_set_cooling_source(mg_metrics_gauge_fn fn, void *ud);

/* ---- exposition ------------------------------------------------------------------------------ */

/* Appends every metric in text format 0.0.4 (# HELP, # TYPE, samples), families in the order
 * listed above and series sorted by label values, so that two renders of the same state are
 * byte-identical. Metrics without any sample yet (a labelled family nobody recorded) still get
 * their HELP and TYPE lines. Serve it with MG_METRICS_CONTENT_TYPE. */
void mg_metrics_render(mg_buf_t *out);

/* Forgets every series and value (tests). Not safe while other threads record or render. */
void mg_metrics_reset(void);

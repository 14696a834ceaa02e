/* Upstream health: a thread-safe registry of what real traffic (and active probes) taught us about
 * each provider and each model, and the decisions that follow from it: retry the same candidate,
 * move to the next, or stop; which provider or model cools down, for how long; the order in which
 * candidates are worth trying now. Also the numbers behind GET /admin/health.
 *
 * Pure bookkeeping under one mutex: no I/O, no threads, no clock of its own. Every time comes in as
 * a now_ms argument (the caller's monotonic clock), so tests drive it with a fake clock and never
 * sleep. Knows classify.h's classes and config.h's models; knows nothing of HTTP or Lua.
 *
 * Keys: a provider id ("lmstudio") and a model ref ("lmstudio/qwen3-8b"). Entries are created on
 * first mention (or by mg_health_add_config) and live as long as the registry; a config reload
 * keeps them, so health survives reloads, except where a provider's endpoint changed (its
 * address, API, key, headers or TLS settings): its entry and its models' start afresh.
 *
 * Lifecycle of a cooldown (defaults; see mg_health_settings_t):
 *   healthy -> cooling_down: on the first failure of an "immediate" class (connect_error, auth,
 *     billing, model_not_found, model_not_loaded, rate_limit, a connect timeout), or after
 *     failures_before_cooldown consecutive failures of a transient one (overloaded,
 *     server_error, timeout, stream_broken). Durations climb the ladder 30 s, 1 min, 5 min (cap),
 *     one step per cooldown entered since the last success. A failure during a cooldown extends
 *     it to at least now + the current step, never shortens it. rate_limit with retry-after
 *     cools exactly that long.
 *   cooling_down -> healthy: a success (which also resets the ladder), a probe that finds the
 *     server (and the model listed), or the cooldown's end. After an end that was not a
 *     success, the next failure cools again at once, one step higher (half-open).
 * Each transition is reported once through the change callback, never per request. */
#pragma once
#include "classify.h"
#include "config.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An upstream's Retry-After is believed up to this long (an hour): the cooldown it starts, and
 * what the gateway's own 429 tells the client, are capped there. */
#define MG_HEALTH_MAX_RETRY_AFTER_MS 3600000

typedef struct mg_health mg_health_t;

typedef enum mg_health_scope {
    MG_HEALTH_SCOPE_NONE = 0,
    MG_HEALTH_SCOPE_MODEL,    /* this model only: its siblings on the provider are still tried */
    MG_HEALTH_SCOPE_PROVIDER, /* every model of the provider */
} mg_health_scope_t;

const char *mg_health_scope_name(mg_health_scope_t s); /* "none", "model", "provider" */

/* What one failure class does (the defaults are in mg_health_settings_default). */
typedef struct mg_health_class_policy {
    mg_health_scope_t scope; /* what a failure of this class cools; NONE never cools anything */
    bool immediate;          /* cools on the first failure, not after failures_before_cooldown */
    bool retry;              /* may retry the same candidate (max_retries, retry budget) */
    bool probe;              /* a successful probe ends a cooldown caused by this class */
} mg_health_class_policy_t;

enum { MG_HEALTH_MAX_STEPS = 8 };

typedef struct mg_health_settings {
    int64_t cooldowns_ms[MG_HEALTH_MAX_STEPS]; /* the ladder; default 30000, 60000, 300000 */
    size_t n_cooldowns;
    unsigned failures_before_cooldown; /* for non-immediate classes; default 3 */
    int64_t max_retry_after_ms;        /* cap on a cooldown taken from retry-after; default 1 h
                                          (MG_HEALTH_MAX_RETRY_AFTER_MS) */
    int64_t probe_before_expiry_ms;    /* probe a cooldown this close to its end; default 5000 */
    int64_t probe_timeout_ms;          /* a probe claimed but never answered is forgotten; 15000 */
    unsigned max_retries;              /* retries of the same candidate per request; default 2 */
    int64_t retry_base_ms;             /* backoff base: base·2^n, "equal jitter"; default 250 */
    int64_t retry_max_delay_ms;        /* backoff cap, and the longest retry-after worth waiting
                                          for on the same candidate; default 2000 */
    double retry_budget_ratio;   /* retry tokens earned per first attempt on a provider; 0.2 */
    double retry_budget_max;     /* bucket size; default 10 */
    double retry_budget_initial; /* tokens at start; default 0, so retries never exceed
                                    ratio × first attempts (1.2× the request rate at most) */
    int64_t error_window_ms;     /* window of error_rate; default 60000 (6 buckets) */
    uint64_t seed;               /* jitter PRNG seed; 0 = from the clock */
    mg_health_class_policy_t classes[MG_CLASS_COUNT];
} mg_health_settings_t;

void mg_health_settings_default(mg_health_settings_t *s);

/* A state change, reported once per transition. Strings are borrowed for the call. */
typedef struct mg_health_change {
    const char *key;         /* provider id or model ref */
    mg_health_scope_t scope; /* MG_HEALTH_SCOPE_PROVIDER or _MODEL: which kind of entry changed */
    bool cooling;            /* true: healthy → cooling_down; false: cooling_down → healthy */
    const char *reason;      /* cooling: the class name; healthy: "success", "expired", "probe",
                                "reachable" (an HTTP answer ended a connect-error cooldown) */
    mg_class_t cls;          /* the class that set the cooldown */
    int64_t cooldown_until_ms;
    unsigned consecutive_failures;
    unsigned level;          /* cooldowns entered since the last success (1 = first step) */
    const char *message;     /* the last failure's message, "" when none */
    int64_t now_ms;
} mg_health_change_t;

/* Runs with the registry lock held, on whichever thread caused the change: log and return; do not
 * call back into mg_health_*. */
typedef void (*mg_health_change_fn)(void *ud, const mg_health_change_t *change);

/* settings NULL = defaults. */
mg_health_t *mg_health_new(const mg_health_settings_t *settings);
void mg_health_free(mg_health_t *h);
/* New settings (a policy or config reload); the state is kept. */
void mg_health_configure(mg_health_t *h, const mg_health_settings_t *settings);
void mg_health_set_callback(mg_health_t *h, mg_health_change_fn fn, void *ud);
/* Creates entries for every provider and model of cfg (so /admin/health lists them before any
 * traffic). A provider already known whose endpoint differs from last time (a reload changed its
 * baseUrl, api, apiKey, headers, caFile or http2, or a model's own api or headers) loses its cooldowns, failure streaks, error
 * window and latency samples, and its models' too (ending a reported cooldown with reason
 * "reconfigured"): they were about another endpoint. Borrowed; nothing of cfg is kept. */
void mg_health_add_config(mg_health_t *h, const mg_config_t *cfg, int64_t now_ms);
/* A hash of where and how p is reached (api, baseUrl, apiKey, headers, caFile, http2, and the api
 * and headers its models declare of their own); never 0. A model's own copy of its provider
 * (mg_provider_t.base) has its provider's. The key is only hashed, never kept. */
uint64_t mg_health_endpoint(const mg_provider_t *p);

/* ---------------------------------------------------------------------------------------------
 * Attempts. At attempt start call _begin; at its end _end, then _report (or _record), then _decide.
 * model_ref may be NULL for provider-level facts. */

/* is_retry: a resend of the same candidate for the same request. A first attempt earns the
 * provider retry_budget_ratio tokens. Counts the attempt in flight on provider and model. */
void mg_health_attempt_begin(mg_health_t *h, const char *provider, const char *model_ref,
                             bool is_retry, int64_t now_ms);
void mg_health_attempt_end(mg_health_t *h, const char *provider, const char *model_ref);

typedef struct mg_health_outcome {
    mg_class_t cls;          /* MG_CLASS_OK for a success */
    mg_xfer_result_t xfer;   /* the transfer result; tells a connect timeout (cools the provider
                                at once, like connect_error) from the others. MG_XFER_OK if n/a */
    long http_status;        /* 0 when no response head arrived */
    int64_t retry_after_ms;  /* from mg_classification_t; -1 none */
    int should_retry;        /* x-should-retry: -1 absent, 0 false (never retry), 1 true */
    int64_t latency_ms;      /* whole attempt; -1 unknown. Sampled on successes only */
    int64_t ttft_ms;         /* time to first token; -1 unknown or not streamed */
    const char *message;     /* borrowed; may be NULL */
    uint64_t endpoint;       /* mg_health_endpoint of the provider as the attempt began; 0 unknown.
                                A result about an endpoint a reload has since changed is ignored:
                                it must not cool the new one. */
} mg_health_outcome_t;

/* An outcome with everything unknown (-1s) but the class. */
mg_health_outcome_t mg_health_outcome(mg_class_t cls);

/* Records how one attempt ended: updates counters, percentiles, cooldowns (which may fire the
 * callback). context_overflow, bad_request, content_filter, unsupported, too_large and no_key count
 * as "rejected" and never cool anything; cancelled is not counted at all. */
void mg_health_report(mg_health_t *h, const char *provider, const char *model_ref,
                      const mg_health_outcome_t *o, int64_t now_ms);
/* The same with positional arguments (xfer unknown, no x-should-retry). */
void mg_health_record(mg_health_t *h, const char *provider, const char *model_ref, mg_class_t cls,
                      long http_status, int64_t retry_after_ms, int64_t latency_ms, int64_t ttft_ms,
                      const char *message, int64_t now_ms);

typedef enum mg_health_action {
    MG_HEALTH_STOP = 0, /* answer the client now (success, or the request itself is at fault) */
    MG_HEALTH_NEXT,  /* try the next candidate (for context_overflow: see mg_health_should_try) */
    MG_HEALTH_RETRY, /* resend to the same candidate after delay_ms */
} mg_health_action_t;

const char *mg_health_action_name(mg_health_action_t a);

typedef struct mg_health_decision {
    mg_health_action_t action;
    int64_t delay_ms;            /* RETRY only */
    mg_health_scope_t scope;     /* the cooldown now on this candidate, if any */
    int64_t cooldown_until_ms;   /* its end (0 = none) */
    bool budget_exhausted;       /* a retry was wanted but the provider's budget was empty */
} mg_health_decision_t;

/* What to do after the attempt whose outcome was just reported. retries_done: resends of this
 * candidate already made for this request. A RETRY spends one budget token: follow it. Retries
 * never go into a cooldown longer than the delay, except connect_error's single quick retry. */
mg_health_decision_t mg_health_decide(mg_health_t *h, const char *provider, const char *model_ref,
                                      const mg_health_outcome_t *o, unsigned retries_done,
                                      int64_t now_ms);

/* After a context_overflow on a window of overflowed_window tokens (the largest that overflowed
 * so far), whether a candidate with a window of cand_window is worth trying: only a strictly
 * larger known window. An unknown (<= 0) candidate window is not tried; an unknown overflowed
 * window lets any known one try. The router passes the windows it knows (a learned one where the
 * server named it). */
bool mg_health_should_try(int64_t overflowed_window, int64_t cand_window);

/* ---------------------------------------------------------------------------------------------
 * Queries */

/* Whether the model (and its provider) can be tried now. When not, *cooldown_until_ms (if given)
 * gets the time it can; 0 when available. model_ref NULL asks about the provider alone. */
bool mg_health_available(mg_health_t *h, const char *provider, const char *model_ref,
                         int64_t now_ms, int64_t *cooldown_until_ms);

/* Writes into out_idx (room for n) the indices of cands available now, in their order. If none is,
 * writes the single one whose cooldown ends first (ties: the earliest) rather than failing closed.
 * Returns how many were written (0 only when n is 0). */
size_t mg_health_order(mg_health_t *h, const mg_model_t *const *cands, size_t n, int64_t now_ms,
                       size_t *out_idx);

typedef struct mg_health_stats {
    bool known;                     /* the registry has an entry */
    bool healthy;                   /* available now (own and provider cooldowns) */
    bool cooling_down;
    int64_t cooldown_until_ms;      /* the later of own and provider cooldown; 0 = none */
    mg_health_scope_t scope;        /* which one binds */
    mg_class_t cooldown_class;
    unsigned consecutive_failures;  /* the entry's own */
    unsigned level;
    mg_class_t last_class;          /* last failure (MG_CLASS_OK: none yet) */
    long last_status;
    char last_message[256];
    int64_t last_failure_ms, last_success_ms; /* -1: never */
    uint64_t failures_total, successes_total, rejected_total;
    int64_t latency_p50, latency_p95, latency_p99; /* ms over the last 256 successes; -1: none */
    size_t latency_samples;
    int64_t ttft_p50, ttft_p95, ttft_p99;
    size_t ttft_samples;
    unsigned in_flight;
    double error_rate; /* failures / (failures + successes) in the window; 0 if empty */
    uint64_t window_requests;
    double retry_tokens;            /* providers */
    uint64_t retries_total, retries_denied;
    bool probe_in_flight;
    int64_t learned_window;         /* models: the window in force from mg_health_learn_window, 0 none */
} mg_health_stats_t;

/* How long a learned context window holds: a server reloaded with a larger window is believed
 * again after this (the next overflow teaches it anew). */
#define MG_HEALTH_WINDOW_TTL_MS (10 * 60 * 1000)
/* The model's server named window tokens as its context window in a context-overflow error
 * (LM Studio, llama.cpp and vLLM name the window they have loaded), below the configured
 * contextWindow: budgets use it for MG_HEALTH_WINDOW_TTL_MS. Ignored when endpoint (0: unknown)
 * is not the provider's current one; forgotten when the provider's endpoint changes. */
void mg_health_learn_window(mg_health_t *h, const char *provider, const char *model_ref, uint64_t endpoint,
                            int64_t window, int64_t now_ms);
/* The learned window in force for the model; 0 when none. One atomic load until a window is ever
 * learned. */
int64_t mg_health_window(mg_health_t *h, const char *model_ref, int64_t now_ms);

/* Fills *out for the model (or the provider, model_ref NULL); returns out->known. */
bool mg_health_query(mg_health_t *h, const char *provider, const char *model_ref, int64_t now_ms,
                     mg_health_stats_t *out);

/* GET /admin/health: {"now_ms":…,"providers":[{"id":…,"state":"healthy"|"cooling_down",…,
 * "models":[{"ref":…,"state":…,"scope":…,…}]}]}, providers and models sorted. Appends to out. */
void mg_health_dump_json(mg_health_t *h, mg_buf_t *out, int64_t now_ms);

/* Reports cooldowns that ended by time (otherwise noticed lazily on the next lookup). Call it
 * from a periodic timer, e.g. once a second with the probe scan. */
void mg_health_tick(mg_health_t *h, int64_t now_ms);

/* ---------------------------------------------------------------------------------------------
 * Active probes: GET {baseUrl}/models, run by the caller on the upstream loop. */

/* True when the provider (or one of its models) is cooling down for a probe-able class and its
 * cooldown ends within probe_before_expiry_ms, and no probe of it is in flight. A true answer
 * claims the probe: the caller must report mg_health_probe_result (or it is forgotten after
 * probe_timeout_ms). */
bool mg_health_probe_due(mg_health_t *h, const char *provider, int64_t now_ms);

/* The probe's answer (endpoint: mg_health_endpoint(p) as the probe began, 0 unknown; an answer from
 * an endpoint a reload has since changed is ignored). ok: a 2xx with a model list. listed: the ids it listed (borrowed). On ok the
 * provider's probe-able cooldown ends (its ladder step is kept: only real traffic resets it), and
 * each configured model of p is checked: listed ends its not-loaded/not-found cooldown, not listed
 * counts as model_not_loaded ("ollama:latest" tags match their bare name). An empty list changes no
 * model. On failure the provider's cooldown climbs one step. message may be NULL. */
void mg_health_probe_result(mg_health_t *h, const mg_provider_t *p, uint64_t endpoint, bool ok,
                            const char *const *listed, size_t n_listed, const char *message,
                            int64_t now_ms);

/* The same from the raw answer, for the caller's convenience. status 0 means the request failed
 * (detail says why). 5xx or 0 is a failed probe; any other status proves the server reachable
 * (ok), and a 2xx body {"data":[{"id":…},…]} (OpenAI and Anthropic shapes) gives the list; an
 * unreadable or missing list changes no model. Borrowed arguments. */
void mg_health_probe_response(mg_health_t *h, const mg_provider_t *p, uint64_t endpoint, long status,
                              const char *body, size_t len, const char *detail, int64_t now_ms);

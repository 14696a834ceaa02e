/* Routing policies: the Lua file named by gateway.policy decides, for each request, the ordered
 * candidates (with per-candidate options) or a rejection; optional hooks decide what happens when
 * an attempt fails and see every completed request. This module owns the policy's Lua states
 * (one per serving thread, never shared), their limits, and the invariants C enforces whatever
 * the policy returns. Uses lua_sandbox.c (states, limits) and lua_api.c (the `gw` table);
 * knows nothing of HTTP. The admin-facing API is documented in docs/POLICIES.md.
 *
 * Life cycle: mg_policy_load (off the serving path, e.g. at reload) compiles and self-checks the
 * file in a fresh state and returns an immutable policy, or NULL and "file:line: message". It
 * belongs in a generation beside the config it was loaded with (the config must outlive it).
 * Serving threads call mg_policy_route and the hooks concurrently; each thread lazily gets its own
 * Lua state, rebuilt after any limit hit. mg_policy_free runs when no thread uses it any more.
 *
 * Failure contract: a route/failure hook that raises, loops past its CPU budget, exceeds its
 * memory, or returns garbage makes the call return -1 with "policy_error: file:line: message";
 * it never takes the gateway down, and the next call on the same policy works (on a fresh state
 * if needed). The caller turns -1 into HTTP 500 `policy_error` (or, if configured, the static
 * chain: see mg_policy_static_plan). */
#pragma once
#include "config.h"
#include "ir.h"
#include "log.h"
#include "tokens.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MG_PLAN_MAX_CANDIDATES 16
#define MG_POLICY_MSG_MAX 512    /* rejection messages and error texts */
#define MG_POLICY_TRACE_MAX 1024 /* the decision trace; longer traces end with "..." */

/* ---- limits ---------------------------------------------------------------------------------- */

typedef struct mg_policy_limits {
    int64_t cpu_ms; /* per decision/hook call, default 5 */
    int64_t
        load_cpu_ms;    /* compiling + running the file + self-check in a fresh state, default 50 */
    int64_t mem_bytes;  /* live bytes per Lua state, default 32 MiB */
    int check_interval; /* VM instructions between deadline checks, default 1000 */
    int64_t max_string; /* longest string a policy may build, default 256 KiB */
} mg_policy_limits_t;

/* The defaults above (0 in any field of a limits struct also means its default). */
mg_policy_limits_t mg_policy_limits_default(void);

/* ---- the request, as the policy sees it ------------------------------------------------------ */

typedef struct mg_kv {
    const char *name;
    const char *value;
} mg_kv_t;

/* Filled by the caller; everything is borrowed for the duration of the call. */
typedef struct mg_route_input {
    const mg_config_t *cfg;    /* must be the config the policy was loaded with (NULL = that one) */
    const char *model;         /* the model asked ("default", an alias, "provider/id", …) */
    const char *endpoint;      /* "chat" | "responses" | "messages" */
    int64_t prompt_tokens;     /* estimate */
    int64_t max_output_tokens; /* requested output cap, -1 when the request sets none */
    bool has_tools, has_images, stream;
    const mg_kv_t *headers; /* selected request headers, names lower-case (credentials, by
                               mg_policy_header_is_secret, may be there: policies never see them) */
    size_t n_headers;
    const mg_kv_t *metadata; /* request metadata (e.g. the body's "metadata" object) */
    size_t n_metadata;
    const char *key_id; /* the caller's key identity, or NULL */
    /* The caller's key (NULL: none). When it lists models and the request names a catalog model,
     * C drops the candidates it may not use after the policy (a chain or a policy must not take
     * the request to other models); a route name the key lists allows that route's whole plan. */
    const struct mg_key *key;
    const char
        *data_region; /* the request's data region (the x-moongate-region header), or NULL */
    /* Region restrictions enforced in C after the policy (see mg_region_allows): a candidate on a
     * hosted provider survives only if its provider's region is allowed by every list that is set
     * (NULL = no restriction from that source). Local providers are always allowed. */
    const char *const *allowed_regions; /* from the caller's key */
    size_t n_allowed_regions;
    const char *const *gateway_regions; /* gateway-level restriction (config), when there is one */
    size_t n_gateway_regions;
} mg_route_input_t;

/* ---- live state (implemented by the health module; tests pass a fake) ------------------------ */

typedef struct mg_live_state {
    bool healthy;              /* passive/active health says it works */
    bool cooling_down;         /* temporarily skipped after failures */
    int64_t cooldown_until_ms; /* wall clock (ms since the epoch), 0 = none */
    double latency_ms_p50;     /* whole-answer latency, < 0 = no samples */
    double ttft_ms_p50;        /* time to first token, < 0 = no samples */
    int64_t in_flight;         /* attempts running now */
    double error_rate;         /* recent failures / attempts, 0..1 */
    const char
        *last_error_class; /* mg_class_name() of the last failure, or NULL; valid during the call */
    int64_t learned_context_window; /* the window the model's server named in an overflow, under
                                       the configured one (mg_health_learn_window); 0 none */
} mg_live_state_t;

/* Callbacks return false when they know nothing about the entry (the policy then sees
 * `known = false`, healthy, no latency). Called on the serving thread during a decision, possibly
 * many times; must be cheap and thread-safe. Either pointer may be NULL. */
typedef struct mg_live_view {
    void *ud;
    bool (*model_state)(void *ud, const mg_model_t *m, mg_live_state_t *out);
    bool (*provider_state)(void *ud, const mg_provider_t *p, mg_live_state_t *out);
} mg_live_view_t;

/* ---- the plan -------------------------------------------------------------------------------- */

typedef struct mg_candidate {
    const mg_model_t *model; /* always a model of the policy's config */
    int64_t connect_ms, first_token_ms, idle_ms, total_ms; /* 0 = the config's timeouts */
    int64_t max_output_tokens;                             /* -1 = unchanged */
    int compaction;                                        /* -1 default, 0 off, 1 on */
    int strip_reasoning;                                   /* -1 default, 0 off, 1 on */
    /* Who summarizes the turns compaction drops for this candidate: -1 the config's
     * gateway.compaction.summarizer, 0 nobody (deterministic note), 1 `summarizer`. */
    int summarize;
    const mg_model_t *summarizer; /* a model of the policy's config when summarize == 1 */
} mg_candidate_t;

typedef struct mg_plan {
    mg_candidate_t cands[MG_PLAN_MAX_CANDIDATES];
    size_t n_cands;
    bool rejected; /* the policy (or a C invariant) refused the request: status/code/message */
    int status;
    char code[64];
    char message[MG_POLICY_MSG_MAX];
    char error[MG_POLICY_MSG_MAX]; /* when mg_policy_route returned -1: "policy_error: file:line: …"
                                    */
    /* What the policy traced (gw.trace) and what C changed ("dropped …"), "; "-separated,
     * printable ASCII only (safe for a header value). */
    char trace[MG_POLICY_TRACE_MAX];
    int64_t elapsed_us; /* time the decision took */
} mg_plan_t;

/* ---- loading --------------------------------------------------------------------------------- */

typedef struct mg_policy mg_policy_t;

/* Loads cfg->gw.policy_path, or the built-in default policy when it is NULL (the model asked, or
 * agents.defaults.model for "default"; a model of that chain starts the chain there; any other
 * catalog model alone; anything else → 404 model_not_found). The file is compiled (text only) in
 * a fresh sandboxed state, must define a global function `route`, may define `on_failure` and
 * `on_complete`, and must pass a self-check: route() is called once with a synthetic request
 * for "default" and must return a valid plan or rejection. limits may be NULL (defaults).
 * Returns NULL with "file:line: message" in err on failure. cfg is borrowed and must outlive the
 * policy. Reads the file; call it off the serving path. */
mg_policy_t *mg_policy_load(const mg_config_t *cfg, const mg_policy_limits_t *limits, char *err,
                            size_t errlen);
/* The same with an explicit file (NULL = built-in default), ignoring cfg->gw.policy_path. */
mg_policy_t *mg_policy_load_file(const mg_config_t *cfg, const char *path,
                                 const mg_policy_limits_t *limits, char *err, size_t errlen);
/* Frees the policy and every Lua state it created. No thread may be using it. NULL is fine. */
void mg_policy_free(mg_policy_t *p);

/* For GET /admin/policy. All borrowed from p. */
const char *mg_policy_path(const mg_policy_t *p); /* absolute path, or "(built-in default)" */
const char *mg_policy_source(const mg_policy_t *p, size_t *len);
const char *mg_policy_sha256(const mg_policy_t *p); /* 64 lower-case hex digits of the source */
int64_t mg_policy_loaded_ms(const mg_policy_t *p);  /* wall clock of the load */
/* "route" (always), "on_failure", "on_complete", "compact". */
bool mg_policy_has_hook(const mg_policy_t *p, const char *name);

typedef struct mg_policy_stats {
    uint64_t decisions, errors, timeouts, memory_errors, states_created;
    uint64_t state_bytes; /* memory of the last state built, right after its load */
} mg_policy_stats_t;
mg_policy_stats_t mg_policy_stats(const mg_policy_t *p);

/* ---- decisions (thread-safe) ----------------------------------------------------------------- */

/* Runs the policy's route(req). Returns 0 with out holding either candidates (n_cands >= 1) or a
 * rejection (out->rejected), or -1 with out->error set ("policy_error: …") when the policy failed.
 * live may be NULL (everything unknown).
 *
 * Enforced in C, whatever the policy returns (documented in docs/POLICIES.md):
 *  - every candidate must resolve (ref or alias) to a catalog model: an unknown name fails the
 *    decision (-1), because it is a bug in the policy that a test or the load self-check can
 *    catch, while silently routing elsewhere would hide it;
 *  - duplicates are dropped (first occurrence kept, noted in the trace);
 *  - region restrictions (in->allowed_regions, in->gateway_regions) remove hosted candidates
 *    whose provider region is not allowed (noted in the trace); if that removes every candidate
 *    the plan becomes a 403 `region_not_allowed` rejection naming the refused candidates;
 *  - more than MG_PLAN_MAX_CANDIDATES: the rest is cut (noted in the trace);
 *  - an empty list is a 503 `no_candidates` rejection. */
int mg_policy_route(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                    mg_plan_t *out);

/* The route the built-in default would take (no Lua): for onPolicyError = "static". Never fails;
 * out gets candidates or the 404 model_not_found rejection, region restrictions applied. */
void mg_policy_static_plan(const mg_config_t *cfg, const mg_route_input_t *in, mg_plan_t *out);

/* Whether a request header carries a credential, which req.headers never shows a policy (it
 * could trace it into the x-moongate-route header and the access log): authorization,
 * proxy-authorization, cookie and the vendors' API key headers. Case-insensitive. */
bool mg_policy_header_is_secret(const char *name);

/* Whether a provider region is allowed by one restriction entry: equal ignoring case, or the
 * entry is a prefix followed by '-' ("eu" allows "eu-west-1"), or the entry is "*". */
bool mg_region_allows(const char *allowed, const char *region);
/* Whether the request in may send data to model m under its region restrictions (the rule C
 * applies to candidates: local providers always, hosted ones when every list set allows their
 * region) and, for a hosted m, its own data region (x-moongate-region, else the x-data-region
 * header) when it names one. For anything else the gateway sends the request's content to, e.g.
 * a summarizer. */
bool mg_policy_region_ok(const mg_route_input_t *in, const mg_model_t *m);

/* ---- hooks (thread-safe) --------------------------------------------------------------------- */

typedef struct mg_failure {
    size_t index;            /* 0-based position of the candidate in the plan */
    const mg_model_t *model; /* the candidate that failed */
    const char *error_class; /* mg_class_name() */
    long http_status;        /* 0 when no HTTP answer */
    int64_t retry_after_ms;  /* from the answer, -1 when none */
    int attempt;             /* 1 for the first attempt of the request, 2 … */
} mg_failure_t;

typedef enum mg_failure_action {
    MG_FAILURE_NEXT,  /* try the next candidate (the default) */
    MG_FAILURE_STOP,  /* give up: the client gets this failure */
    MG_FAILURE_RETRY, /* try the same candidate again after delay_ms */
} mg_failure_action_t;

typedef struct mg_failure_decision {
    mg_failure_action_t action;
    int64_t delay_ms; /* for RETRY: 0 .. 60000 */
    char trace[256];  /* what the hook traced */
    char error[MG_POLICY_MSG_MAX];
} mg_failure_decision_t;

/* Asks the policy's on_failure(req, failure) what to do. Without that hook: NEXT. Returns 0, or
 * -1 when the hook failed (error set; action is NEXT so the caller may simply go on). */
int mg_policy_on_failure(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                         const mg_failure_t *f, mg_failure_decision_t *out);

typedef struct mg_completion {
    const mg_model_t *model;                  /* the model that served, or NULL when none did */
    int status;                               /* HTTP status sent to the client */
    const char *error_class;                  /* NULL on success */
    int64_t prompt_tokens, completion_tokens; /* what is charged (-1 when unknown) */
    bool estimated;                           /* … estimated, the upstream having reported none */
    int64_t latency_ms, ttft_ms;              /* -1 when unknown */
    int attempts;
} mg_completion_t;

/* Calls on_complete(req, result) if the policy defines it. Errors are logged, never returned. */
void mg_policy_on_complete(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                           const mg_completion_t *c);

/* ---- compaction (thread-safe) ---------------------------------------------------------------- */

/* What compact(req, budget, model) sees and returns (docs/POLICIES.md "compact"). */
typedef struct mg_compact_call {
    const mg_model_t *model;     /* the candidate */
    int64_t budget;              /* its prompt budget in tokens (mg_compact_budget) */
    mg_tokens_opts_t tokens;     /* how the gateway estimates for this model (calibration) */
    const mg_ir_request_t *req;  /* the candidate's copy of the request (borrowed) */
    mg_ir_arena_t *arena;        /* where the result is built (the request's arena) */
    /* out */
    mg_ir_request_t result; /* *req with the hook's messages, when the call returned 1 */
    char trace[256];        /* what the hook traced */
    char error[MG_POLICY_MSG_MAX];
} mg_compact_call_t;

/* Asks the policy's compact(req, budget, model) hook to make the request fit: req.messages is
 * the conversation (system prompt and tools are never the hook's to change), budget the tokens
 * those messages may take. Returns 1 with c->result holding the hook's messages (converted into
 * the arena; original parts kept where the hook kept them), 0 when the policy has no such hook
 * or it returned nil (the gateway compacts), -1 when it failed (c->error: "policy_error:
 * file:line: message"; a bad return value is a failure too). The result is NOT checked against
 * the budget or the request rules: the caller runs mg_compact_validate on it. */
int mg_policy_compact(mg_policy_t *p, const mg_route_input_t *in, const mg_live_view_t *live,
                      mg_compact_call_t *c);

/* ---- logging --------------------------------------------------------------------------------- */

/* Where policy log lines go (gw.log, print, warn, on_complete errors). policy is the file's path.
 * Default: mg_log(level, "policy", …). Set once at start-up, before any policy runs. */
typedef void (*mg_policy_log_fn)(mg_log_level_t level, const char *policy, const char *msg);
void mg_policy_set_log(mg_policy_log_fn fn);

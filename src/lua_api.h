/* The policy's Lua side: builds the `gw` table (one injector per area, each function declaring
 * the phases it may run in), loads the embedded prelude (lua/util.lua → gw.util) and a policy chunk
 * into a sandboxed state, and runs route/on_failure/on_complete, converting what they return into
 * C structures. Uses lua_sandbox.c for the state and its limits; policy.c owns the states and
 * applies the C invariants to what comes out of here.
 *
 * The exported functions never raise: everything that may longjmp runs inside mg_sandbox_pcall. */
#pragma once
#include "lua_sandbox.h"
#include "policy.h"

#include <stdarg.h>

/* Phases: when an API function may run. */
enum {
    MG_PHASE_NONE = 0,
    MG_PHASE_LOAD = 1u << 0,     /* the policy file's top level, and the prelude */
    MG_PHASE_ROUTE = 1u << 1,    /* route(req) */
    MG_PHASE_FAILURE = 1u << 2,  /* on_failure(req, failure) */
    MG_PHASE_COMPLETE = 1u << 3, /* on_complete(req, result) */
    MG_PHASE_COMPACT = 1u << 4,  /* compact(req, budget, model) */
    MG_PHASE_ALL = 0x1F,
};
const char *mg_phase_name(unsigned phase);

/* A bounded, sanitized "; "-separated trace (printable ASCII; ends with "..." when cut). */
typedef struct mg_trace {
    char *buf; /* borrowed, cap bytes */
    size_t cap, len;
    bool full;
} mg_trace_t;
void mg_trace_init(mg_trace_t *t, char *buf, size_t cap);
void mg_trace_add(mg_trace_t *t, const char *s, size_t n);
void mg_trace_addf(mg_trace_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What route() returned, before policy.c applies the invariants. */
#define MG_RAW_PLAN_MAX 64
typedef struct mg_raw_plan {
    mg_candidate_t cands[MG_RAW_PLAN_MAX];
    size_t n;
    size_t dropped_over_max; /* entries beyond MG_RAW_PLAN_MAX, ignored */
    bool rejected;
    int status;
    char code[64];
    char message[MG_POLICY_MSG_MAX];
} mg_raw_plan_t;

/* Where policy log lines go (set by policy.c). */
typedef void (*mg_lua_log_fn)(mg_log_level_t level, const char *policy, const char *msg);
void mg_lua_set_log(mg_lua_log_fn fn);
/* Writes one line to that sink (default: mg_log). */
void mg_lua_log(mg_log_level_t level, const char *policy, const char *msg);

/* A policy state: sandbox + gw + prelude + the chunk (text, chunkname "@path" or "=name") run to
 * completion within limits->load_cpu_ms, its globals then frozen. display names the policy in log
 * lines. cfg is borrowed for the state's life. Returns NULL with "file:line: message" in err. */
mg_sandbox_t *mg_lua_state_new(const mg_config_t *cfg, const char *text, size_t len,
                               const char *chunkname, const char *display,
                               const mg_policy_limits_t *limits, char *err, size_t errlen);
void mg_lua_state_free(mg_sandbox_t *sb);
/* Whether the chunk defined this hook ("route", "on_failure", "on_complete", "compact"). */
bool mg_lua_state_has(mg_sandbox_t *sb, const char *hook);

/* route(req) within budget_ms. Returns 0 with out filled (candidates resolved to catalog models,
 * options validated) or -1 with err = "file:line: message". Traces go to trace. */
int mg_lua_route(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                 int64_t budget_ms, mg_raw_plan_t *out, mg_trace_t *trace, char *err,
                 size_t errlen);
/* on_failure(req, failure); the state must define it. */
int mg_lua_on_failure(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                      const mg_failure_t *f, int64_t budget_ms, mg_failure_decision_t *out,
                      char *err, size_t errlen);
/* on_complete(req, result); the state must define it. */
int mg_lua_on_complete(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                       const mg_completion_t *c, int64_t budget_ms, char *err, size_t errlen);

/* compact(req, budget, model); the state must define it. Returns 1 (c->result set), 0 (the hook
 * returned nil) or -1 with err = "file:line: message". See mg_policy_compact. */
int mg_lua_compact(mg_sandbox_t *sb, const mg_route_input_t *in, const mg_live_view_t *live,
                   mg_compact_call_t *c, int64_t budget_ms, char *err, size_t errlen);

/* The embedded built-in default policy (lua/default_policy.lua). */
const char *mg_lua_default_policy(size_t *len);

/* Client API keys: who may call the gateway, for which models and data regions, how often
 * (requests and tokens per minute) and for how much (a budget in cost units per hour, day or
 * month). Loaded from the `gateway.keys` list of the config (a cJSON array); then lookup in
 * constant time, authorization, rate limits and accounting. Uses sha256.c, cJSON, config.h,
 * cfgread.c (key paths and messages, as the config loader words them) and policy.h's
 * mg_region_allows; knows nothing of HTTP (the server reads the headers and writes the answer).
 *
 * Secrets: a key's value is hashed (SHA-256) at load and the value itself is wiped; only the
 * digest is kept. No message, log line or verdict this module produces contains a key value;
 * ids are names, not secrets.
 *
 * Time: every function that needs the time takes now_ms, wall-clock milliseconds since the Unix
 * epoch (mg_wall_ms() in production; tests pass a fake clock). Budget periods are calendar
 * periods in UTC (hour, day, month) and reset at their boundary. A clock stepping backwards
 * refills nothing and resets nothing.
 *
 * Threads: mg_keys_find, mg_keys_check and mg_keys_account are thread-safe; each key's limiter
 * state has its own mutex, held for a few arithmetic operations.
 *
 * Lifetime: a mg_keys_t belongs beside the config it was loaded with (it borrows the config to
 * resolve model names) and is freed with it. The limiter state (buckets and budget spent) can be
 * handed from the old set to the new one at a reload (mg_keys_adopt_state) so that a reload does
 * not reset anyone's budget. State is in memory: a restart resets it. */
#pragma once
#include "config.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_KEY_MSG_MAX 512
#define MG_KEYS_MAX_RATE 1000000000LL /* largest rpm / tpm accepted */

typedef enum mg_budget_period {
    MG_PERIOD_NONE = 0, /* no budget */
    MG_PERIOD_HOUR,
    MG_PERIOD_DAY,
    MG_PERIOD_MONTH,
} mg_budget_period_t;

const char *mg_budget_period_name(mg_budget_period_t p); /* "hour", "day", "month", "none" */

struct mg_key_priv;

/* One configured key. Everything is owned by the mg_keys_t and read-only after load. */
typedef struct mg_key {
    char *id;        /* a name for logs, metrics and the access log; not secret */
    char **models;   /* allowed models/routes as written: refs, aliases, route names, provider
                        wildcards (provider id + "/" + "*"), "*"; n_models 0 = every model */
    size_t n_models;
    char **regions;  /* allowed data regions of hosted providers ("eu" also allows "eu-west-1",
                        see mg_region_allows); n_regions 0 = no restriction. Local providers are
                        always allowed. Pass as mg_route_input_t.allowed_regions. */
    size_t n_regions;
    int64_t rpm;     /* requests per minute, 0 = unlimited */
    int64_t tpm;     /* tokens per minute, 0 = unlimited */
    double budget;   /* cost units per budget_period, 0 = unlimited */
    mg_budget_period_t budget_period;
    struct mg_key_priv *priv; /* digest, resolved models, limiter state */
} mg_key_t;

typedef struct mg_keys mg_keys_t;

/* ---- loading --------------------------------------------------------------------------------- */

/* Builds the key set from the `gateway.keys` array. cfg (borrowed, must outlive the result; NULL
 * only in tests) resolves model names: an entry that resolves (ref or alias) allows that catalog
 * model under any of its names; a provider wildcard (provider id + "/" + "*") allows every
 * model of a configured provider; any other string is kept as a route name matched literally (a
 * policy route, or "default").
 *
 * Each element: {id, key: "${ENV}" | sha256: "64 hex digits", models?, regions?, rpm?, tpm?,
 * budget?: {amount, period: "hour"|"day"|"month"}}. Unknown members are errors.
 *
 * Returns 0 and *out (free with mg_keys_free), or -1 with a message naming the path, e.g.
 * `gateway.keys[2].rpm: expected a positive integer, got "x"` (err always NUL-terminated; it never
 * contains a key value). An empty array is an error: leave gateway.keys out to run without keys. */
int mg_keys_load(const cJSON *keys_array, const mg_config_t *cfg, mg_keys_t **out, char *err,
                 size_t errlen);

/* The same with the key path of the array (NULL = "gateway.keys") and, on failure, the node the
 * message is about in *err_node (may be NULL), so the config loader can prefix "file:line:col: "
 * with mg_json5_pos_of. */
int mg_keys_load_ex(const cJSON *keys_array, const mg_config_t *cfg, const char *path,
                    mg_keys_t **out, const cJSON **err_node, char *err, size_t errlen);

/* For the offline commands (route, test), which authenticate nothing: from then on, a key whose
 * environment variable is unset loads as a key that matches nothing instead of failing the load,
 * so that a policy can be tried without the production secrets. Process-wide; the server never
 * calls it. */
void mg_keys_offline(void);

void mg_keys_free(mg_keys_t *keys);

size_t mg_keys_count(const mg_keys_t *keys);
const mg_key_t *mg_keys_at(const mg_keys_t *keys, size_t i); /* borrowed */

/* At a reload: every key of next whose id exists in prev shares prev's limiter state from now on
 * (buckets, budget spent), under next's limits. Call it after loading next and before any thread
 * can see next; prev may be in use meanwhile (the state is refcounted and locked). Keys that are
 * new start fresh; the state of removed keys goes with prev. */
void mg_keys_adopt_state(mg_keys_t *next, const mg_keys_t *prev);

/* ---- lookup ---------------------------------------------------------------------------------- */

/* The key a request presented, from `Authorization: Bearer X` (scheme case-insensitive) or else
 * `x-api-key: X`; either header may be NULL. Returns a pointer into the header value and its
 * length in *len (len may be NULL; the value may end in spaces that *len excludes), or NULL when neither carries a non-empty key (the server then answers 401
 * "no API key" itself). Surrounding spaces are trimmed. */
const char *mg_keys_presented(const char *authorization, const char *x_api_key, size_t *len);

/* The configured key matching the NUL-terminated presented, or NULL. Constant time with respect to the keys:
 * the presented key is hashed once and its digest compared with mg_ct_equal against every
 * configured digest, without stopping at a match. */
const mg_key_t *mg_keys_find(const mg_keys_t *keys, const char *presented);
/* The same for presented[0..len) (not NUL-terminated), e.g. from mg_keys_presented. */
const mg_key_t *mg_keys_find_n(const mg_keys_t *keys, const char *presented, size_t len);

/* Digest comparisons made by mg_keys_find so far (tests and diagnostics). */
uint64_t mg_keys_comparisons(const mg_keys_t *keys);

/* ---- authorization and limits ---------------------------------------------------------------- */

typedef struct mg_key_verdict {
    int status;           /* 200 allowed, 401, 403 or 429 */
    const char *type;     /* NULL when allowed; "authentication_error" (401), "permission_error"
                             (403), "rate_limit_error" (429): pass to mg_reply_error */
    const char *code;     /* NULL when allowed; "invalid_api_key", "model_not_allowed",
                             "region_not_allowed", "rate_limit_exceeded" (rpm),
                             "tokens_limit_exceeded" (tpm), "budget_exceeded" */
    int64_t retry_after_s; /* 429: seconds until the request would pass (>= 1); else 0 */
    char message[MG_KEY_MSG_MAX]; /* for the client; names what is allowed, never the key */
} mg_key_verdict_t;

/* Whether key may make a request for model (the name the client asked: a ref, alias, route name
 * such as "default"; NULL = not known yet, model rule skipped) with data region region (what the
 * client asked for, e.g. x-moongate-region; NULL = none). key NULL → 401 "invalid API key".
 * Checks in this order: model (403), region (403), then the limits: budget spent in the current
 * period, tokens-per-minute debt, requests per minute; when several are exceeded the verdict names
 * the one that lasts longest and retry_after_s is that longest wait. A request that passes takes
 * one token of the rpm bucket; a refused one takes nothing.
 *
 * Limits: rpm is a token bucket of rpm requests refilled continuously over a minute (a burst of
 * rpm, then one per 60/rpm s). tpm is a bucket of tpm tokens that mg_keys_account drains after
 * each request, possibly into debt; requests are refused while it is in debt. The budget
 * refuses requests once the cost accounted in the current period reaches the amount (the request
 * that crosses it completes). Returns 0 when allowed, else out->status. */
int mg_keys_check(const mg_key_t *key, const char *model, const char *region, int64_t now_ms,
                  mg_key_verdict_t *out);
/* mg_keys_check's first part: the key, the model and the region, not the limits; takes nothing
 * from any bucket. For requests that send nothing upstream (token counts). */
int mg_keys_check_access(const mg_key_t *key, const char *model, const char *region, mg_key_verdict_t *out);

/* Whether the key allows the catalog model m (its ref, its provider's wildcard, "*" or an alias of
 * it listed), for filtering candidates if wanted. A key with no models list allows all. */
bool mg_keys_allows_model(const mg_key_t *key, const mg_model_t *m);

/* After a request completes (successfully or not, whenever tokens were used): drains tokens from
 * the tpm bucket and adds cost (catalog units, see mg_cost_of) to the current budget period.
 * key NULL is a no-op. Negative values count as 0. */
void mg_keys_account(const mg_key_t *key, int64_t tokens, double cost, int64_t now_ms);

/* Gives back the rpm token mg_keys_check took, for a request the gateway itself refused before
 * anything went upstream (an unknown model, a request that fits no candidate): such a request
 * uses up nothing. key NULL is a no-op. */
void mg_keys_refund(const mg_key_t *key, int64_t now_ms);

/* Budget spent in the current period (0 after the boundary), for /admin and tests. */
double mg_keys_spent(const mg_key_t *key, int64_t now_ms);

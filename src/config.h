/* The configuration: an OpenClaw model config (JSON5) plus moongate's own `gateway` block,
 * validated into an immutable, typed snapshot. Once mg_config_load returns, nothing in the
 * snapshot changes; a reload builds a new one. Uses json5.c for parsing; knows nothing of HTTP.
 *
 * Ownership: mg_config_t owns every string and array reachable from it; mg_config_free releases
 * all of it. Pointers into a config (models, providers, strings) are borrowed and live exactly as
 * long as the config. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mg_api {
    MG_API_OPENAI_COMPLETIONS, /* "openai-completions": {baseUrl}/chat/completions */
    MG_API_OPENAI_RESPONSES,   /* "openai-responses":   {baseUrl}/responses */
    MG_API_ANTHROPIC_MESSAGES, /* "anthropic-messages": {baseUrl}/v1/messages */
} mg_api_t;

const char *mg_api_name(mg_api_t api);

/* Input kinds a model accepts (OpenClaw `input: ["text", "image"]`). */
enum { MG_INPUT_TEXT = 1u << 0, MG_INPUT_IMAGE = 1u << 1 };

/* Prices per million tokens, in whatever unit the operator uses (OpenClaw `cost`). */
typedef struct mg_cost {
    double input, output, cache_read, cache_write;
} mg_cost_t;

/* Timeouts in milliseconds; 0 means "inherit" (per provider) or "none" (gateway level). */
typedef struct mg_timeouts {
    int64_t connect_ms;     /* TCP + TLS connect */
    int64_t first_token_ms; /* request sent → first content-bearing byte (a cold model loading) */
    int64_t idle_ms;        /* between two reads once the answer has started */
    int64_t total_ms;       /* whole attempt */
} mg_timeouts_t;

typedef struct mg_header {
    char *name;
    char *value;
} mg_header_t;

struct mg_provider;

/* Longest list of extraControlTokens (per provider, and gateway-wide). */
#define MG_MAX_EXTRA_TOKENS 64

/* gateway.providers.<id>.safety as an object: the safety filters' settings (compact.h
 * mg_safety_opts_t); -1 fields keep the filter's default. */
typedef struct mg_safety_conf {
    int control_tokens;            /* controlTokens: -1 default (on), 0 off, 1 on */
    int old_reasoning;             /* oldReasoning: -1 default (on), 0 off, 1 on */
    int64_t tool_result_max_bytes; /* toolResultMaxBytes: -1 default, 0 no cap */
    char **extra_tokens;           /* extraControlTokens: literal strings, ASCII case-insensitive */
    size_t n_extra_tokens;
} mg_safety_conf_t;

typedef struct mg_model {
    char *id;   /* the upstream's model id, sent in the request body */
    char *name; /* display name (defaults to id) */
    char *ref;  /* "provider/id", the catalog key */
    const struct mg_provider *provider; /* a copy of it when the model has its own api or headers
                                           (mg_provider_t.base) */
    bool reasoning;
    unsigned input; /* MG_INPUT_* bits */
    mg_cost_t cost;
    int64_t context_window; /* tokens */
    int64_t max_tokens;     /* max output tokens */
    bool builtin;           /* came from the built-in catalog (models.mode "merge") */
} mg_model_t;

typedef struct mg_provider {
    char *id;
    char *base_url;    /* as configured, trailing slash removed */
    char *api_key;     /* resolved value, or NULL when none/unset. Secret: never log it. */
    char *api_key_env; /* the first NAME that apiKey substitutes ("${NAME}", {source: "env"}), else NULL */
    mg_api_t api;
    mg_header_t *headers; /* extra headers sent upstream (values may be secrets) */
    size_t n_headers;
    mg_model_t *models;
    size_t n_models;
    char **tags; /* gateway.providers.<id>.tags, plus "local" or "hosted" derived from baseUrl */
    size_t n_tags;
    char *region;            /* gateway.providers.<id>.region, or NULL */
    char **betas;            /* gateway.providers.<id>.anthropicBetas: the anthropic-beta flags an
                                Anthropic client may turn on at this provider (none by default) */
    size_t n_betas;
    mg_timeouts_t timeouts;  /* gateway.providers.<id>.timeouts; 0 fields inherit */
    bool local;              /* baseUrl host is loopback/private, or tagged "local" */
    bool openai_host;        /* OpenAI's API: baseUrl host api.openai.com or *.openai.azure.com, or
                                the provider id "openai": its reasoning models refuse max_tokens */
    bool strip_reasoning;    /* gateway.providers.<id>.stripReasoning: its clients get final text only */
    int safety;              /* gateway.providers.<id>.safety: -1 default (on for local), 0 off, 1 on
                                (an object is on, with the settings below) */
    mg_safety_conf_t safety_conf;
    bool http2;              /* gateway.providers.<id>.http2: the (https) upstream speaks HTTP/2, so
                                streams share connections: wait for one rather than open more */
    char *ca_file;           /* gateway.providers.<id>.caFile: CA bundle for its TLS (absolute), or NULL */
    char *ca_file_at;        /* where the config names it, as gw.policy_at (gen.c checks the file) */
    bool builtin;
    /* OpenClaw's per-model api and headers: a model that declares its own points to a copy of its
     * provider (the same id, address, key, tags and settings; its own api; the provider's headers
     * with its own over them by name), held in mg_config_t.own_providers, and base is the catalog
     * provider it copies. NULL for a catalog provider, whose models_own says whether any of its
     * models has such a copy. Copies are not in mg_config_t.providers and have no models: what is
     * keyed by provider (health, cooldowns, metrics, the catalog) goes by the catalog provider. */
    const struct mg_provider *base;
    bool models_own;
} mg_provider_t;

/* The catalog provider of m: m->provider, or the one it copies (mg_provider_t.base). */
static inline const mg_provider_t *mg_model_catalog_provider(const mg_model_t *m)
{
    return m->provider->base ? m->provider->base : m->provider;
}

typedef struct mg_alias {
    char *alias;
    const mg_model_t *model;
} mg_alias_t;

typedef enum mg_models_mode { MG_MODE_MERGE, MG_MODE_REPLACE } mg_models_mode_t;

/* gateway.health: overrides of the health registry's defaults (health.h); -1 / 0 entries = default. */
typedef struct mg_health_conf {
    int64_t cooldowns_ms[8];
    size_t n_cooldowns;
    int failures_before_cooldown;
    int max_retries;
    double retry_budget_ratio;
    int64_t probe_before_expiry_ms;
} mg_health_conf_t;

struct mg_keys;

/* gateway.compaction (compact.h has what each knob does). */
typedef struct mg_compaction_conf {
    bool enabled;          /* gateway.compaction.enabled (default true) */
    int64_t margin_tokens; /* kept free besides the reserved output (default 512) */
    /* The compaction caps (compact.h mg_compact_opts_t); 0 = the module's default. */
    size_t tool_result_max_bytes; /* toolResultMaxBytes (16 KiB) */
    size_t message_max_bytes;     /* messageMaxBytes (8 KiB) */
    size_t min_keep_bytes;        /* minKeepBytes (512) */
    bool drop_current_steps;      /* dropCurrentSteps (false) */
    char **extra_tokens; /* extraControlTokens: stripped for every provider whose safety
                            filters are on, besides the provider's own */
    size_t n_extra_tokens;
    /* summarizer: the catalog model that summarizes dropped turns, NULL = none (a policy may
     * name one per candidate); summaryTimeoutMs (10 s); summaryMaxTokens (1024): the
     * summarizer's output cap, and the room kept for the summary. */
    const mg_model_t *summarizer;
    int64_t summary_timeout_ms;
    int64_t summary_max_tokens;
} mg_compaction_conf_t;

typedef struct mg_gateway_settings {
    char *listen_host;      /* default "127.0.0.1"; an IPv6 address comes without brackets */
    int listen_port;        /* default 8787 */
    size_t max_body_bytes;  /* default 10 MiB */
    size_t max_upstream_body_bytes; /* non-streaming answer cap, default 64 MiB */
    size_t max_event_bytes;     /* one upstream SSE event, default 1 MiB */
    size_t stream_buffer_bytes; /* per-stream client queue before the upstream pauses, default 256 KiB */
    int64_t drain_ms;           /* graceful stop: time given to requests in flight, default 10 s */
    int64_t keepalive_ms;       /* SSE comment on a quiet client stream, default 15 s (0 = never) */
    int threads;            /* serving threads, default 1 */
    unsigned max_connections;    /* default 10000 */
    mg_timeouts_t timeouts; /* defaults: connect 10 s, first token 120 s, idle 60 s, total 600 s */
    char *policy_path;      /* absolute, or NULL */
    char *policy_at;        /* "FILE:LINE:COL: gateway.policy", where the config names it (for
                               messages about that file), or NULL */
    int64_t policy_cpu_ms;    /* gateway.policyCpuMs: CPU budget per decision (0 = the engine's 5 ms) */
    int64_t policy_memory_mb; /* gateway.policyMemoryMb: per Lua state (0 = the engine's 32 MiB) */
    bool policy_error_static; /* gateway.onPolicyError "static": a failing policy falls back to the
                                 static chain instead of a 500 policy_error */
    char *error_patterns_path; /* gateway.errorPatterns: the operator's Lua rules (classify.h), or NULL */
    char *error_patterns_at;   /* where the config names it, as policy_at */
    mg_health_conf_t health;
    mg_compaction_conf_t compaction; /* gateway.compaction */
    struct mg_keys *keys;   /* gateway.keys (keys.h): client API keys; NULL = none required */
    char **allowed_regions; /* gateway.allowedRegions: hosted providers outside them are never
                               contacted (local ones always may be); NULL = no restriction */
    size_t n_allowed_regions;
    char **allowed_hosts; /* gateway.allowedHosts: Host names accepted besides localhost and IP
                             literals where the client's address is the only guard ("*": any) */
    size_t n_allowed_hosts;
    unsigned max_connections_per_ip; /* gateway.maxConnectionsPerIp, 0 = unlimited */
    int64_t body_timeout_ms; /* gateway.bodyTimeoutMs: a request body must arrive whole within this
                                (an absolute deadline against slow senders), default 30 s */
    int64_t header_timeout_ms; /* gateway.headerTimeoutMs: a connection must deliver a complete
                                  request head within this from when it opened or finished its
                                  previous request (slowloris; idle keep-alives close too), 30 s */
    size_t max_header_bytes;   /* gateway.maxHeaderBytes: request line + headers, default 16 KiB */
    bool log_content;          /* gateway.log.content: prompt and answer text in the access line */
    size_t log_content_max_bytes; /* gateway.log.contentMaxBytes: cap per text, default 4096 */
    char *admin_key;        /* gateway.adminKey (may be "${ENV}"); NULL = admin endpoints from loopback only. Secret. */
    char *log_path;         /* absolute, or NULL for stderr (config "-" or absent) */
    char *log_path_at;      /* where the config names it, as policy_at */
} mg_gateway_settings_t;

typedef struct mg_config {
    char *path;     /* the file this came from (or the name given to load_string) */
    char *base_dir; /* its directory: relative paths in the config resolve against it */
    mg_models_mode_t mode;
    mg_provider_t *providers;
    size_t n_providers;
    mg_provider_t **own_providers; /* the copies that models with their own api or headers point
                                      to (mg_provider_t.base); not part of the catalog */
    size_t n_own_providers;
    mg_alias_t *aliases;
    size_t n_aliases;
    const mg_model_t **default_chain; /* agents.defaults.model: primary, then fallbacks */
    size_t n_default_chain;
    mg_gateway_settings_t gw;
    char **warnings; /* "file:line:col: path: message" for ignored keys, unset environment
                      * variables and the like; the loader does not print them */
    size_t n_warnings;
} mg_config_t;

/* Loads and validates the config at path. Returns NULL on failure with a one-line message
 * "file:line:col: key.path: what is wrong" in err (always NUL-terminated). */
mg_config_t *mg_config_load(const char *path, char *err, size_t errlen);

/* The same from memory. name is used in messages; base_dir resolves relative paths (may be NULL
 * for the current directory). */
mg_config_t *mg_config_load_string(const char *text, size_t len, const char *name,
                                   const char *base_dir, char *err, size_t errlen);

void mg_config_free(mg_config_t *cfg);

/* Resolves "provider/id", then an alias (case-sensitive first, then case-insensitive), then a bare
 * model id when exactly one provider has it. NULL when none matches. Borrowed. */
const mg_model_t *mg_config_find_model(const mg_config_t *cfg, const char *name);
const mg_provider_t *mg_config_find_provider(const mg_config_t *cfg, const char *id);

/* The effective timeouts for a model: provider values where set, else the gateway's. */
mg_timeouts_t mg_config_timeouts(const mg_config_t *cfg, const mg_model_t *m);

/* Configuration: an OpenClaw model config plus moongate's `gateway` block, validated into an
 * immutable mg_config_t. See config.h.
 *
 * Flow: read the file; parse it with json5.c (a cJSON tree with a position for every node); then
 * validate block by block: `models` (in "merge" mode on top of the built-in catalog, which is
 * embedded from src/builtin_catalog.json5 and goes through the very same validation), `gateway`
 * (which names catalog providers), then `agents` (aliases and the default chain, which resolve
 * against the finished catalog) and the names that may be aliases (gateway.compaction.summarizer,
 * gateway.keys). Every message reads "FILE:LINE:COL: key.path: message": the
 * key path lives in one buffer that each level pushes onto and pops. The first error ends the
 * load; warnings (keys OpenClaw knows and we do not, unset environment variables) accumulate.
 *
 * OpenClaw sections are lenient (unknown keys warn) because users paste whole OpenClaw files;
 * the gateway block is strict (unknown keys fail) because a typo there would silently fall back
 * to a default, except for OpenClaw's own gateway settings beside moongate's (load_gateway). Validators return 0 or -1; after -1 the load is over, so they return at once
 * without restoring the key path (the message already holds it). The config under construction
 * stays consistent at every step (counts match what is allocated), so mg_config_free can always
 * release it. Secrets (resolved keys, header values) are wiped before they are freed.
 *
 * Uses cfgread.c (the key path, messages and typed readers, shared with keys.c), json5.c, cJSON,
 * util.h and the generated mg_embedded.h. Knows nothing of HTTP. */
#include "config.h"

#include "cfgread.h"
#include "json5.h"
#include "keys.h"
#include "mg_embedded.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MG_CONFIG_MAX_FILE (16u << 20) /* a config larger than this is a mistake */
#define MG_BUILTIN_CATALOG "builtin_catalog.json5"

typedef struct loader {
    mg_config_t *cfg;          /* being built; the caller frees it when loading fails */
    const char *file;          /* the document being validated, for messages: borrowed */
    const mg_json5_doc_t *doc; /* its positions: borrowed */
    mg_cfgread_t rd;           /* key path of the value being validated, e.g. "gateway.listen" */
    char *err;                 /* the caller's error buffer */
    size_t errlen;
    bool *key_in_config; /* per provider: apiKey was written in the config (not only built in) */
    struct model_own *own; /* models that declare their own api or headers, made into copies of their
                              provider once the catalog is final (give_models_their_own) */
    size_t n_own;
} loader_t;

/* A model's own api and headers (OpenClaw's ModelDefinitionConfig.api and .headers). */
typedef struct model_own {
    size_t k;   /* its provider's index */
    char *id;   /* its id */
    bool has_api;
    mg_api_t api;
    mg_header_t *headers; /* resolved; those whose variable is unset are left out */
    size_t n_headers;
} model_own_t;

static const char *const top_keys[] = {"models", "agents", "gateway", NULL};
static const char *const models_keys[] = {"mode", "providers", NULL};
static const char *const provider_keys[] = {"baseUrl", "apiKey", "api", "headers", "models", NULL};
static const char *const model_keys[] = {"id",            "name",      "reasoning", "input", "cost",
                                         "contextWindow", "maxTokens", "api",       "headers", NULL};
static const char *const cost_keys[] = {"input", "output", "cacheRead", "cacheWrite", NULL};
static const char *const agents_keys[] = {"defaults", NULL};
static const char *const defaults_keys[] = {"model", "models", NULL};
static const char *const chain_keys[] = {"primary", "fallbacks", NULL};
static const char *const alias_keys[] = {"alias", NULL};
static const char *const gateway_keys[] = {"listen",       "maxBodyBytes",      "maxUpstreamBodyBytes",
                                           "threads",      "maxConnections",    "timeouts",
                                           "policy",       "log",               "providers",
                                           "maxEventBytes", "streamBufferBytes", "drainMs",
                                           "keepAliveMs",  "adminKey",          "errorPatterns",
                                           "health",       "compaction",        "policyCpuMs",
                                           "policyMemoryMb", "onPolicyError",   "keys",
                                           "allowedRegions", "maxConnectionsPerIp", "bodyTimeoutMs",
                                           "headerTimeoutMs", "maxHeaderBytes", "allowedHosts", NULL};
/* OpenClaw's own gateway block (its server: port, bind, auth, Control UI, Tailscale, …), as of
 * OpenClaw's GatewayConfig early in 2026 (src/config/types.gateway.ts). Keys it adds later are
 * tolerated too (load_gateway). */
static const char *const openclaw_gateway_keys[] = {
    "port",   "mode",   "bind",           "customBindHost", "auth",  "controlUi", "tailscale",
    "tls",    "remote", "reload",         "trustedProxies", "http",  "nodes",     "allowRealIpFallback",
    "tools",  "webchat", "push",          "handshakeTimeoutMs",     "channelHealthCheckMinutes",
    "channelStaleEventThresholdMinutes", "channelMaxRestartsPerHour", NULL};
static const char *const compaction_keys[] = {
    "enabled",        "marginTokens",     "extraControlTokens", "toolResultMaxBytes",
    "messageMaxBytes", "minKeepBytes",    "dropCurrentSteps",   "summarizer",
    "summaryTimeoutMs", "summaryMaxTokens", NULL};
static const char *const safety_keys[] = {"controlTokens", "oldReasoning", "toolResultMaxBytes",
                                          "extraControlTokens", NULL};
static const char *const health_keys[] = {"cooldownsMs", "failuresBeforeCooldown", "maxRetries",
                                          "retryBudgetRatio", "probeBeforeExpiryMs", NULL};
static const char *const timeouts_keys[] = {"connectMs", "firstTokenMs", "idleMs", "totalMs", NULL};
static const char *const log_keys[] = {"path", "content", "contentMaxBytes", NULL};
static const char *const gw_provider_keys[] = {"tags",   "region", "timeouts", "stripReasoning",
                                               "safety", "http2",  "caFile", "anthropicBetas", NULL};

/* ---- messages -------------------------------------------------------------------------------- */

static void add_warning(mg_config_t *cfg, char *msg)
{
    cfg->warnings = mg_xrealloc(cfg->warnings, (cfg->n_warnings + 1) * sizeof *cfg->warnings);
    cfg->warnings[cfg->n_warnings++] = msg;
}

/* The reader's report callback: "FILE:LINE:COL: key.path: message" about node, at its key
 * (at_key) or at its value. The first error goes to the caller's buffer; warnings accumulate. */
static void report(mg_cfgread_t *r, const cJSON *node, bool at_key, bool is_error, const char *msg)
{
    loader_t *ld = r->ud;
    mg_buf_t b = {0};
    mg_json5_pos_t pos = mg_json5_pos_of(ld->doc, node);
    int line = at_key ? pos.line : pos.value_line, col = at_key ? pos.column : pos.value_column;
    mg_buf_puts(&b, ld->file);
    if (line > 0) mg_buf_printf(&b, ":%d:%d", line, col);
    mg_buf_puts(&b, ": ");
    if (r->path.len) {
        mg_buf_append(&b, r->path.data, r->path.len);
        mg_buf_puts(&b, ": ");
    }
    mg_buf_puts(&b, msg);
    if (is_error) {
        if (ld->errlen) snprintf(ld->err, ld->errlen, "%s", b.data);
        mg_buf_free(&b);
        return;
    }
    add_warning(ld->cfg, mg_buf_steal(&b));
}

/* JSON5 lets a later key replace an earlier one without a word. In a config that is nearly always
 * a paste gone wrong (a second `models` block, a provider given twice), so each one warns. */
static void warn_duplicate_keys(loader_t *ld)
{
    for (size_t i = 0; i < ld->doc->n_dups; i++) {
        const mg_json5_dup_t *d = &ld->doc->dups[i];
        char *q = mg_cfgread_quote(d->key);
        add_warning(ld->cfg, mg_xasprintf("%s:%d:%d: duplicate key %s: it replaces the one at %d:%d (the last one wins)",
                                          ld->file, d->line, d->column, q, d->was_line, d->was_column));
        free(q);
    }
}

/* ---- hosts and paths ------------------------------------------------------------------------- */

/* Copies the host of an http:// or https:// URL into host, lowercased, without IPv6 brackets or a
 * trailing dot. False when url is not such a URL, has no host, or contains spaces/controls. */
static bool url_host(const char *url, char *host, size_t hostlen)
{
    const char *h;
    if (strncasecmp(url, "http://", 7) == 0)
        h = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        h = url + 8;
    else
        return false;
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7F) return false;
    size_t auth = strcspn(h, "/?#");
    const char *at = memrchr(h, '@', auth); /* skip user:password@ */
    if (at) {
        auth -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    size_t n;
    if (auth && h[0] == '[') {
        const char *close = memchr(h, ']', auth);
        if (!close) return false;
        h++;
        n = (size_t)(close - h);
    } else {
        const char *colon = memchr(h, ':', auth);
        n = colon ? (size_t)(colon - h) : auth;
    }
    if (n && h[n - 1] == '.') n--;
    if (n == 0 || n >= hostlen) return false;
    for (size_t i = 0; i < n; i++) host[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
    host[n] = '\0';
    return true;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static bool ipv4_is_local(uint32_t a)
{
    return a == 0 || (a >> 24) == 127 || (a >> 24) == 10 || (a >> 20) == 0xAC1 /* 172.16/12 */ ||
           (a >> 16) == 0xC0A8 /* 192.168/16 */ || (a >> 16) == 0xA9FE /* 169.254/16 */;
}

/* Loopback, private, link-local or "this machine" addresses, and names that only resolve on a
 * local network. Such providers are tagged "local". */
static bool host_is_local(const char *host)
{
    if (!strcmp(host, "localhost") || has_suffix(host, ".localhost") || has_suffix(host, ".local") ||
        has_suffix(host, ".lan") || !strcmp(host, "host.docker.internal"))
        return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return ipv4_is_local(ntohl(a4.s_addr));
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        static const uint8_t loopback[16] = {[15] = 1}, any[16] = {0};
        static const uint8_t mapped[12] = {[10] = 0xFF, [11] = 0xFF};
        const uint8_t *b = a6.s6_addr;
        if (!memcmp(b, loopback, 16) || !memcmp(b, any, 16)) return true;
        if ((b[0] & 0xFE) == 0xFC) return true;                /* fc00::/7, unique local */
        if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return true; /* fe80::/10, link local */
        if (!memcmp(b, mapped, 12))
            return ipv4_is_local((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15]);
    }
    return false;
}

/* dir made absolute against the current directory (NULL or "" = the current directory). */
static char *absolute_dir(const char *dir)
{
    if (dir && dir[0] == '/') return mg_xstrdup(dir);
    char *cwd = getcwd(NULL, 0);
    char *out;
    if (!cwd) return mg_xstrdup(dir && dir[0] ? dir : ".");
    if (!dir || !dir[0] || !strcmp(dir, "."))
        out = mg_xstrdup(cwd);
    else
        out = mg_xasprintf("%s/%s", cwd, dir);
    free(cwd);
    return out;
}

/* The absolute directory holding the file at path. Caller frees. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return absolute_dir(NULL);
    if (slash == path) return mg_xstrdup("/");
    char *dir = mg_xstrndup(path, (size_t)(slash - path));
    char *out = absolute_dir(dir);
    free(dir);
    return out;
}

/* rel resolved against base (already absolute), without checking that it exists. Caller frees. */
static char *join_path(const char *base, const char *rel)
{
    if (rel[0] == '/') return mg_xstrdup(rel);
    while (rel[0] == '.' && rel[1] == '/') {
        rel += 2;
        while (*rel == '/') rel++;
    }
    size_t n = strlen(base);
    return mg_xasprintf("%s%s%s", base, n && base[n - 1] == '/' ? "" : "/", rel);
}

/* ---- the catalog ----------------------------------------------------------------------------- */

static size_t provider_index(const mg_config_t *cfg, const char *id)
{
    size_t k = 0;
    while (k < cfg->n_providers && strcmp(cfg->providers[k].id, id) != 0) k++;
    return k;
}

static size_t provider_append(loader_t *ld, const char *id, bool builtin)
{
    mg_config_t *cfg = ld->cfg;
    size_t k = cfg->n_providers;
    cfg->providers = mg_xrealloc(cfg->providers, (k + 1) * sizeof *cfg->providers);
    ld->key_in_config = mg_xrealloc(ld->key_in_config, (k + 1) * sizeof *ld->key_in_config);
    cfg->providers[k] = (mg_provider_t){.id = mg_xstrdup(id),
                                        .api = MG_API_OPENAI_COMPLETIONS,
                                        .builtin = builtin,
                                        .safety = -1,
                                        .safety_conf = {.control_tokens = -1,
                                                        .old_reasoning = -1,
                                                        .tool_result_max_bytes = -1}};
    ld->key_in_config[k] = false;
    cfg->n_providers = k + 1;
    return k;
}

static const mg_model_t *find_by_ref(const mg_config_t *cfg, const char *ref)
{
    for (size_t k = 0; k < cfg->n_providers; k++)
        for (size_t j = 0; j < cfg->providers[k].n_models; j++)
            if (!strcmp(cfg->providers[k].models[j].ref, ref)) return &cfg->providers[k].models[j];
    return NULL;
}

static void model_free_fields(mg_model_t *m)
{
    free(m->id);
    free(m->name);
    free(m->ref);
}

static void wipe_free(char *secret)
{
    if (secret) explicit_bzero(secret, strlen(secret));
    free(secret);
}

static bool valid_env_name(const char *s, size_t n)
{
    if (!n || (s[0] >= '0' && s[0] <= '9')) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7F) return true;
    return false;
}

/* OpenClaw's substitution: every "${NAME}" in s is replaced by the environment variable NAME
 * (NAME: letters, digits and _, not starting with a digit), and "$${NAME}" stands for a literal
 * "${NAME}". On success *out is the result (malloc'd), *first the first NAME referenced and
 * *missing the first one that is unset or empty (malloc'd or NULL); with a missing one *out is
 * NULL. A "${" with no NAME and "}" after it is an error (reported at v). */
static int expand_env(loader_t *ld, const cJSON *v, const char *s, char **out, char **first,
                      char **missing)
{
    mg_buf_t b = {0};
    *out = *first = *missing = NULL;
    while (*s) {
        if (s[0] == '$' && s[1] == '$' && s[2] == '{') { /* escaped: "$${" is a literal "${" */
            mg_buf_puts(&b, "${");
            s += 3;
            continue;
        }
        if (s[0] != '$' || s[1] != '{') {
            mg_buf_append(&b, s++, 1);
            continue;
        }
        const char *close = strchr(s + 2, '}');
        if (!close || !valid_env_name(s + 2, (size_t)(close - s - 2))) {
            wipe_free(b.data);
            free(*first), free(*missing);
            *first = *missing = NULL;
            /* The value is not repeated: it may be a literal key with a stray "${" in it. */
            return mg_cfgread_fail(&ld->rd, v, false,
                                   "a \"${\" must start \"${NAME}\", NAME made of letters, digits and _ "
                                   "(write \"$${\" for a literal \"${\")");
        }
        char *name = mg_xstrndup(s + 2, (size_t)(close - s - 2));
        const char *e = getenv(name);
        if (!*first) *first = mg_xstrdup(name);
        if (e && *e) mg_buf_puts(&b, e);
        else if (!*missing) *missing = mg_xstrdup(name);
        free(name);
        s = close + 1;
    }
    if (*missing) {
        wipe_free(b.data);
        return 0;
    }
    *out = b.data ? b.data : mg_xstrdup("");
    return 0;
}

static int resolve_secret_text(loader_t *ld, const cJSON *v, const char *text, bool warn_unset,
                               char **value, char **env);

/* Resolves a secret-bearing string v (an apiKey or header value), "${NAME}" substituted anywhere
 * in it (expand_env): *env gets the first NAME; when one is unset or empty, *env names it and
 * *value stays NULL (with a warning if warn_unset). Values must not contain control characters:
 * they end up in HTTP headers. */
static int resolve_secret(loader_t *ld, const cJSON *v, bool warn_unset, char **value, char **env)
{
    return resolve_secret_text(ld, v, v->valuestring, warn_unset, value, env);
}

static int resolve_secret_text(loader_t *ld, const cJSON *v, const char *text, bool warn_unset,
                               char **value, char **env)
{
    char *x, *first, *missing;
    *value = *env = NULL;
    if (expand_env(ld, v, text, &x, &first, &missing)) return -1;
    if (missing) {
        free(first);
        *env = missing;
        if (warn_unset) mg_cfgread_warn(&ld->rd, v, false, "environment variable %s is not set", missing);
        return 0;
    }
    *env = first;
    if (has_control(x)) {
        wipe_free(x);
        return first ? mg_cfgread_fail(&ld->rd, v, false, "environment variable %s contains a control character", first)
                     : mg_cfgread_fail(&ld->rd, v, false, "contains a control character");
    }
    if (*x) *value = x;
    else free(x);
    return 0;
}

static int load_base_url(loader_t *ld, const cJSON *pobj, mg_provider_t *p, bool required)
{
    const char *raw;
    int rc = mg_cfgread_string(&ld->rd, pobj, "baseUrl", true, &raw);
    if (rc < 0) return -1;
    if (rc == 0) return required ? mg_cfgread_fail_missing(&ld->rd, pobj, "baseUrl") : 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, "baseUrl");
    const cJSON *v = mg_cfgread_member(pobj, "baseUrl");
    char host[256], *s = NULL, *first = NULL, *missing = NULL;
    if (expand_env(ld, v, raw, &s, &first, &missing)) {
        /* reported */
    } else if (missing) {
        mg_cfgread_fail(&ld->rd, v, false, "environment variable %s is not set", missing);
    } else if (!url_host(s, host, sizeof host)) {
        mg_cfgread_fail_got(&ld->rd, v, first ? "expected an http:// or https:// URL (after ${…} substitution)"
                                              : "expected an http:// or https:// URL");
    } else {
        size_t n = strlen(s);
        while (n && s[n - 1] == '/') n--;
        free(p->base_url);
        p->base_url = mg_xstrndup(s, n);
    }
    free(s), free(first), free(missing);
    mg_cfgread_pop(&ld->rd, mark);
    return ld->rd.failed ? -1 : 0;
}

/* OpenClaw's SecretRef {source: "env", provider: "default", id: "NAME"}: as "${NAME}". Other
 * sources (file, exec, a secret store) are refused with what to write instead. Returns the
 * "${NAME}" text (malloc'd), or NULL once the error is reported. */
static char *secret_ref_text(loader_t *ld, const cJSON *ref)
{
    const char *source = NULL, *id = NULL;
    if (mg_cfgread_string(&ld->rd, ref, "source", true, &source) < 0 ||
        mg_cfgread_string(&ld->rd, ref, "id", true, &id) < 0)
        return NULL;
    for (const cJSON *m = ref->child; m; m = m->next)
        if (strcmp(m->string, "source") && strcmp(m->string, "id") && strcmp(m->string, "provider")) {
            mg_cfgread_fail(&ld->rd, m, true, "unknown key in a secret reference (source, provider, id)");
            return NULL;
        }
    if (!source || strcmp(source, "env") != 0) {
        mg_cfgread_fail(&ld->rd, ref, false,
                        "only {source: \"env\", id: \"NAME\"} secret references are read here (or \"${NAME}\"); "
                        "source %s%s%s is not supported",
                        source ? "\"" : "", source ? source : "(missing)", source ? "\"" : "");
        return NULL;
    }
    if (!id || !valid_env_name(id, strlen(id))) {
        mg_cfgread_fail(&ld->rd, ref, false, "a secret reference needs id: the name of an environment variable");
        return NULL;
    }
    return mg_xasprintf("${%s}", id);
}

static int load_api_key(loader_t *ld, const cJSON *pobj, mg_provider_t *p, bool builtin)
{
    const cJSON *v = mg_cfgread_member(pobj, "apiKey");
    char *ref_text = NULL;
    if (cJSON_IsObject(v)) {
        size_t rm = mg_cfgread_push_key(&ld->rd, "apiKey");
        ref_text = secret_ref_text(ld, v);
        mg_cfgread_pop(&ld->rd, rm);
        if (!ref_text) return -1;
    } else {
        const char *s;
        int rc = mg_cfgread_string(&ld->rd, pobj, "apiKey", false, &s);
        if (rc <= 0) return rc;
    }
    size_t mark = mg_cfgread_push_key(&ld->rd, "apiKey");
    wipe_free(p->api_key), p->api_key = NULL;
    free(p->api_key_env), p->api_key_env = NULL;
    /* Built-in keys that are unset are reported where a model of theirs is used (load_chain_entry),
     * not here: most configs never touch openai, say. */
    int rc = resolve_secret_text(ld, v, ref_text ? ref_text : v->valuestring, !builtin, &p->api_key,
                                 &p->api_key_env);
    free(ref_text);
    char host[256];
    if (!rc && !builtin && !p->api_key_env && p->api_key && p->base_url &&
        url_host(p->base_url, host, sizeof host) && !host_is_local(host))
        mg_cfgread_warn(&ld->rd, v, false,
                        "a literal key for a hosted provider; prefer \"${ENV_NAME}\"");
    mg_cfgread_pop(&ld->rd, mark);
    return rc;
}

/* obj.api (a provider's or a model's) into *out: 1 when set, 0 when absent, -1 after an error. */
static int read_api(loader_t *ld, const cJSON *obj, mg_api_t *out)
{
    const char *s;
    int rc = mg_cfgread_string(&ld->rd, obj, "api", false, &s);
    if (rc <= 0) return rc;
    static const mg_api_t apis[] = {MG_API_OPENAI_COMPLETIONS, MG_API_OPENAI_RESPONSES, MG_API_ANTHROPIC_MESSAGES};
    for (size_t i = 0; i < MG_ARRAY_LEN(apis); i++) {
        if (!strcmp(s, mg_api_name(apis[i]))) {
            *out = apis[i];
            return 1;
        }
    }
    size_t mark = mg_cfgread_push_key(&ld->rd, "api");
    mg_cfgread_fail_got(
        &ld->rd, mg_cfgread_member(obj, "api"),
        "expected \"openai-completions\", \"openai-responses\" or \"anthropic-messages\"");
    mg_cfgread_pop(&ld->rd, mark);
    return -1;
}

static int load_api(loader_t *ld, const cJSON *pobj, mg_provider_t *p)
{
    return read_api(ld, pobj, &p->api) < 0 ? -1 : 0;
}

/* RFC 9110 token characters. */
static bool valid_header_name(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!strchr("!#$%&'*+-.^_`|~", *s) && !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                                                 (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static void headers_free(mg_header_t *hs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(hs[i].name);
        wipe_free(hs[i].value);
    }
    free(hs);
}

/* obj.headers: { name: value } (a provider's or a model's), replacing *hs: 1 when set, 0 when
 * absent, -1 after an error. A header whose variable is unset is left out, with a warning. */
static int read_headers(loader_t *ld, const cJSON *obj, mg_header_t **hs, size_t *n)
{
    size_t mark = 0;
    const cJSON *h = mg_cfgread_object(&ld->rd, obj, "headers", &mark);
    if (!h) return ld->rd.failed ? -1 : 0;
    headers_free(*hs, *n);
    *n = 0;
    *hs = mg_xcalloc((size_t)cJSON_GetArraySize(h) + 1, sizeof **hs);
    for (const cJSON *m = h->child; m && !ld->rd.failed; m = m->next) {
        size_t inner = mg_cfgread_push_key(&ld->rd, m->string);
        char *value = NULL, *env = NULL;
        if (!valid_header_name(m->string))
            mg_cfgread_fail(&ld->rd, m, true, "not a valid header name");
        else if (!cJSON_IsString(m))
            mg_cfgread_fail_got(&ld->rd, m, "expected a string");
        else if (!resolve_secret(ld, m, true, &value, &env) && value)
            (*hs)[(*n)++] = (mg_header_t){mg_xstrdup(m->string), value}, value = NULL;
        wipe_free(value);
        free(env);
        mg_cfgread_pop(&ld->rd, inner);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return ld->rd.failed ? -1 : 1;
}

/* headers, replacing the built-in provider's headers when overriding. */
static int load_headers(loader_t *ld, const cJSON *pobj, mg_provider_t *p)
{
    return read_headers(ld, pobj, &p->headers, &p->n_headers) < 0 ? -1 : 0;
}

static int load_input(loader_t *ld, const cJSON *mobj, unsigned *out)
{
    const cJSON *v = mg_cfgread_member(mobj, "input");
    if (!v) return 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, "input");
    unsigned bits = 0;
    if (!cJSON_IsArray(v) || !v->child)
        mg_cfgread_fail_got(&ld->rd, v, "expected a non-empty array of \"text\" and \"image\"");
    size_t i = 0;
    for (const cJSON *e = v->child; e && !ld->rd.failed; e = e->next, i++) {
        size_t inner = mg_cfgread_push_index(&ld->rd, i);
        if (cJSON_IsString(e) && !strcmp(e->valuestring, "text"))
            bits |= MG_INPUT_TEXT;
        else if (cJSON_IsString(e) && !strcmp(e->valuestring, "image"))
            bits |= MG_INPUT_IMAGE;
        else
            mg_cfgread_fail_got(&ld->rd, e, "expected \"text\" or \"image\"");
        mg_cfgread_pop(&ld->rd, inner);
    }
    mg_cfgread_pop(&ld->rd, mark);
    *out = bits;
    return ld->rd.failed ? -1 : 0;
}

static int load_cost(loader_t *ld, const cJSON *mobj, mg_cost_t *cost)
{
    size_t mark = 0;
    const cJSON *c = mg_cfgread_object(&ld->rd, mobj, "cost", &mark);
    if (!c) return ld->rd.failed ? -1 : 0;
    if (mg_cfgread_check_keys(&ld->rd, c, cost_keys, false) ||
        mg_cfgread_nonneg(&ld->rd, c, "input", &cost->input) < 0 ||
        mg_cfgread_nonneg(&ld->rd, c, "output", &cost->output) < 0 ||
        mg_cfgread_nonneg(&ld->rd, c, "cacheRead", &cost->cache_read) < 0 ||
        mg_cfgread_nonneg(&ld->rd, c, "cacheWrite", &cost->cache_write) < 0)
        return -1;
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* One models[] entry of provider k. A config model with the id of a built-in one overrides the
 * fields it names; the others keep the built-in values (cost, input, reasoning, window, …). */
static int load_model(loader_t *ld, size_t k, const cJSON *mobj, bool builtin)
{
    mg_model_t m = {.input = MG_INPUT_TEXT, .context_window = 128000, .max_tokens = 8192, .builtin = builtin};
    const char *id = NULL, *name = NULL;
    int rc;
    if (!cJSON_IsObject(mobj)) return mg_cfgread_fail_got(&ld->rd, mobj, "expected an object");
    if (mg_cfgread_check_keys(&ld->rd, mobj, model_keys, false)) return -1;
    if ((rc = mg_cfgread_string(&ld->rd, mobj, "id", true, &id)) < 0) return -1;
    if (rc == 0) return mg_cfgread_fail_missing(&ld->rd, mobj, "id");

    mg_provider_t *p = &ld->cfg->providers[k];
    mg_model_t *slot = NULL;
    for (size_t j = 0; j < p->n_models && !slot; j++)
        if (!strcmp(p->models[j].id, id)) slot = &p->models[j];
    if (slot && slot->builtin == builtin) {
        size_t mark = mg_cfgread_push_key(&ld->rd, "id");
        char *q = mg_cfgread_quote(id);
        mg_cfgread_fail(&ld->rd, mg_cfgread_member(mobj, "id"), false, "duplicate model id %s", q);
        free(q);
        mg_cfgread_pop(&ld->rd, mark);
        return -1;
    }
    if (slot) { /* the built-in values are the defaults of what this entry leaves out */
        m = *slot;
        m.builtin = builtin;
        m.id = m.name = m.ref = NULL;
    }
    if (mg_cfgread_string(&ld->rd, mobj, "name", true, &name) < 0 ||
        mg_cfgread_bool(&ld->rd, mobj, "reasoning", &m.reasoning) < 0 ||
        load_input(ld, mobj, &m.input) || load_cost(ld, mobj, &m.cost) ||
        mg_cfgread_int(&ld->rd, mobj, "contextWindow", 1, MG_MAX_SAFE_INT, &m.context_window) < 0 ||
        mg_cfgread_int(&ld->rd, mobj, "maxTokens", 1, MG_MAX_SAFE_INT, &m.max_tokens) < 0)
        return -1;
    /* OpenClaw's per-model api and headers: kept aside until the provider is final
     * (give_models_their_own) */
    model_own_t own = {.k = k};
    int api_rc = read_api(ld, mobj, &own.api);
    int headers_rc = api_rc < 0 ? -1 : read_headers(ld, mobj, &own.headers, &own.n_headers);
    if (api_rc < 0 || headers_rc < 0) {
        headers_free(own.headers, own.n_headers);
        return -1;
    }
    if (api_rc > 0 || headers_rc > 0) {
        own.has_api = api_rc > 0;
        own.id = mg_xstrdup(id);
        ld->own = mg_xrealloc(ld->own, (ld->n_own + 1) * sizeof *ld->own);
        ld->own[ld->n_own++] = own;
    }
    if (!name && slot) name = slot->name;
    m.id = mg_xstrdup(id);
    m.name = mg_xstrdup(name ? name : id);
    m.ref = mg_xasprintf("%s/%s", p->id, id);
    if (slot) {
        model_free_fields(slot);
    } else {
        p->models = mg_xrealloc(p->models, (p->n_models + 1) * sizeof *p->models);
        slot = &p->models[p->n_models++];
    }
    *slot = m;
    return 0;
}

/* models.providers.<id> (or a provider of the built-in catalog). In "merge" mode a config provider
 * whose id is built in overrides the fields it names and merges its models by id. The path
 * already ends with the provider's key. */
static int load_provider(loader_t *ld, const cJSON *pobj, bool builtin)
{
    const char *id = pobj->string;
    if (!cJSON_IsObject(pobj)) return mg_cfgread_fail_got(&ld->rd, pobj, "expected an object");
    if (!id[0] || strchr(id, '/'))
        return mg_cfgread_fail(&ld->rd, pobj, true,
                               "a provider id must be non-empty and without '/'");
    if (mg_cfgread_check_keys(&ld->rd, pobj, provider_keys, false)) return -1;
    size_t k = provider_index(ld->cfg, id);
    bool override = k < ld->cfg->n_providers; /* only built-ins precede: config keys are unique */
    if (!override) k = provider_append(ld, id, builtin);
    mg_provider_t *p = &ld->cfg->providers[k];

    char *was_url = override && p->base_url ? mg_xstrdup(p->base_url) : NULL;
    int rc = load_base_url(ld, pobj, p, !override);
    /* A built-in provider moved to a plain-http server (openai: {baseUrl:
     * "http://127.0.0.1:1234/v1"}, a local one) keeps its key only when the config gives it again:
     * the hosted key would otherwise go, in clear, to whatever answers there. An https proxy for
     * the same API (its usual reason to move) keeps it. */
    if (!rc && was_url && strcmp(was_url, p->base_url) != 0 && strncmp(p->base_url, "https://", 8) != 0 &&
        !mg_cfgread_member(pobj, "apiKey") && (p->api_key || p->api_key_env)) {
        mg_cfgread_warn(&ld->rd, mg_cfgread_member(pobj, "baseUrl"), false,
                        "a plain-http baseUrl in place of the built-in one: the built-in key%s%s%s is not sent "
                        "to it (give apiKey if this server needs one)",
                        p->api_key_env ? " (" : "", p->api_key_env ? p->api_key_env : "", p->api_key_env ? ")" : "");
        wipe_free(p->api_key), p->api_key = NULL;
        free(p->api_key_env), p->api_key_env = NULL;
    }
    free(was_url);
    if (rc || load_api_key(ld, pobj, p, builtin) || load_api(ld, pobj, p) || load_headers(ld, pobj, p))
        return -1;
    if (mg_cfgread_member(pobj, "apiKey") && !builtin) ld->key_in_config[k] = true;

    const cJSON *ms = mg_cfgread_member(pobj, "models");
    if (!ms) return override ? 0 : mg_cfgread_fail_missing(&ld->rd, pobj, "models");
    size_t mark = mg_cfgread_push_key(&ld->rd, "models");
    if (!cJSON_IsArray(ms)) return mg_cfgread_fail_got(&ld->rd, ms, "expected an array");
    if (!ms->child && !override)
        return mg_cfgread_fail(&ld->rd, ms, false, "expected at least one model");
    size_t i = 0;
    for (const cJSON *m = ms->child; m; m = m->next, i++) {
        size_t inner = mg_cfgread_push_index(&ld->rd, i);
        if (load_model(ld, k, m, builtin)) return -1;
        mg_cfgread_pop(&ld->rd, inner);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

static const mg_embedded_file_t *find_embedded(const char *name)
{
    for (const mg_embedded_file_t *f = mg_embedded_files; f->name; f++)
        if (!strcmp(f->name, name)) return f;
    return NULL;
}

/* The built-in providers ("merge" mode): an object of provider id -> provider, like
 * models.providers. Validated like the config so that a broken catalog is reported, not used. */
static int load_builtin(loader_t *ld)
{
    const mg_embedded_file_t *f = find_embedded(MG_BUILTIN_CATALOG);
    mg_json5_doc_t doc = {0};
    const char *file = ld->file;
    const mg_json5_doc_t *outer = ld->doc;
    char *saved_path = mg_xstrdup(ld->rd.path.data); /* paths in the catalog start at its top */
    char perr[256];
    int rc = -1;
    if (!f) {
        snprintf(ld->err, ld->errlen, "%s: not embedded in this build", MG_BUILTIN_CATALOG);
        ld->rd.failed = true;
        goto done;
    }
    ld->file = MG_BUILTIN_CATALOG;
    ld->doc = &doc;
    mg_cfgread_pop(&ld->rd, 0);
    if (mg_json5_parse(f->text, f->len, &doc, perr, sizeof perr)) {
        snprintf(ld->err, ld->errlen, "%s:%s", MG_BUILTIN_CATALOG, perr);
        ld->rd.failed = true;
        goto done;
    }
    if (!cJSON_IsObject(doc.root)) {
        mg_cfgread_fail_got(&ld->rd, doc.root, "expected an object");
        goto done;
    }
    for (const cJSON *pobj = doc.root->child; pobj; pobj = pobj->next) {
        size_t inner = mg_cfgread_push_key(&ld->rd, pobj->string);
        if (load_provider(ld, pobj, true)) goto done;
        mg_cfgread_pop(&ld->rd, inner);
    }
    rc = 0;
done:
    mg_json5_free(&doc);
    ld->file = file;
    ld->doc = outer;
    mg_cfgread_pop(&ld->rd, 0);
    mg_buf_puts(&ld->rd.path, saved_path);
    free(saved_path);
    return rc;
}

/* The `models` block: mode, then the built-ins (merge), then the declared providers. */
static int load_models(loader_t *ld, const cJSON *root)
{
    size_t mark = 0;
    const cJSON *models = mg_cfgread_object(&ld->rd, root, "models", &mark);
    const char *mode = "merge";
    if (ld->rd.failed) return -1;
    if (models) {
        if (mg_cfgread_check_keys(&ld->rd, models, models_keys, false) ||
            mg_cfgread_string(&ld->rd, models, "mode", false, &mode) < 0)
            return -1;
        if (!strcmp(mode, "replace")) {
            ld->cfg->mode = MG_MODE_REPLACE;
        } else if (!strcmp(mode, "merge")) {
            ld->cfg->mode = MG_MODE_MERGE;
        } else {
            mg_cfgread_push_key(&ld->rd, "mode");
            return mg_cfgread_fail_got(&ld->rd, mg_cfgread_member(models, "mode"),
                                       "expected \"merge\" or \"replace\"");
        }
        mg_cfgread_pop(&ld->rd, mark);
    }
    if (ld->cfg->mode == MG_MODE_MERGE && load_builtin(ld)) return -1;
    if (!models) return 0;
    mg_cfgread_push_key(&ld->rd, "models");
    size_t pmark = 0;
    const cJSON *providers = mg_cfgread_object(&ld->rd, models, "providers", &pmark);
    if (ld->rd.failed) return -1;
    for (const cJSON *pobj = providers ? providers->child : NULL; pobj; pobj = pobj->next) {
        size_t inner = mg_cfgread_push_key(&ld->rd, pobj->string);
        if (load_provider(ld, pobj, false)) return -1;
        mg_cfgread_pop(&ld->rd, inner);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* ---- the gateway block ----------------------------------------------------------------------- */

/* Splits "HOST:PORT" or "[V6]:PORT" into a fresh host string and a port. False when malformed. */
static bool parse_listen(const char *s, char **host, int *port)
{
    const char *h = s, *colon;
    size_t n;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (!close || close[1] != ':') return false;
        h = s + 1;
        n = (size_t)(close - h);
        if (!n || n >= sizeof tmp) return false;
        memcpy(tmp, h, n);
        tmp[n] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1) return false;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || colon == s) return false;
        n = (size_t)(colon - s);
        for (size_t i = 0; i < n; i++)
            if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                  s[i] == '.' || s[i] == '-' || s[i] == '_'))
                return false; /* also rejects an IPv6 address without brackets */
    }
    const char *d = colon + 1;
    long v = 0;
    if (!*d || strlen(d) > 5) return false;
    for (; *d; d++) {
        if (*d < '0' || *d > '9') return false;
        v = v * 10 + (*d - '0');
    }
    if (v < 1 || v > 65535) return false;
    *host = mg_xstrndup(h, n);
    *port = (int)v;
    return true;
}

/* "timeouts": {connectMs, firstTokenMs, idleMs, totalMs}, each a non-negative integer. */
static int load_timeouts(loader_t *ld, const cJSON *parent, mg_timeouts_t *t)
{
    size_t mark = 0;
    const cJSON *o = mg_cfgread_object(&ld->rd, parent, "timeouts", &mark);
    if (!o) return ld->rd.failed ? -1 : 0;
    if (mg_cfgread_check_keys(&ld->rd, o, timeouts_keys, true) ||
        mg_cfgread_int(&ld->rd, o, "connectMs", 0, MG_MAX_SAFE_INT, &t->connect_ms) < 0 ||
        mg_cfgread_int(&ld->rd, o, "firstTokenMs", 0, MG_MAX_SAFE_INT, &t->first_token_ms) < 0 ||
        mg_cfgread_int(&ld->rd, o, "idleMs", 0, MG_MAX_SAFE_INT, &t->idle_ms) < 0 ||
        mg_cfgread_int(&ld->rd, o, "totalMs", 0, MG_MAX_SAFE_INT, &t->total_ms) < 0)
        return -1;
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* extraControlTokens: a list of literal strings the control-token filter strips. Each must be
 * one visible token: not empty, at most 128 bytes, no control characters, and not starting with
 * white space (the filter replaces a token by a line feed, so a token made of or starting with
 * white space could never be told apart from the text around it). Duplicates are dropped. */
static int load_token_list(loader_t *ld, const cJSON *obj, char ***out, size_t *n)
{
    const cJSON *v = mg_cfgread_member(obj, "extraControlTokens");
    if (!v) return 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, "extraControlTokens");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > MG_MAX_EXTRA_TOKENS)
        return mg_cfgread_fail_got(&ld->rd, v, "expected an array of at most 64 strings");
    *out = mg_xcalloc((size_t)cJSON_GetArraySize(v) + 1, sizeof **out);
    size_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        size_t im = mg_cfgread_push_index(&ld->rd, i);
        const char *t = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!t || !*t || strlen(t) > 128 || has_control(t) || *t == ' ')
            return mg_cfgread_fail_got(
                &ld->rd, e,
                "expected a token of 1 to 128 bytes, without control characters or a "
                "leading space");
        bool dup = false;
        for (size_t j = 0; j < *n && !dup; j++) dup = strcmp((*out)[j], t) == 0;
        if (!dup) (*out)[(*n)++] = mg_xstrdup(t);
        mg_cfgread_pop(&ld->rd, im);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* gateway.providers.<id>.safety: true/false, or an object of filter settings (which turns the
 * filters on). */
static int load_safety(loader_t *ld, const cJSON *o, mg_provider_t *p)
{
    const cJSON *v = mg_cfgread_member(o, "safety");
    if (!v) return 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, "safety");
    if (!cJSON_IsObject(v)) {
        if (!cJSON_IsBool(v))
            return mg_cfgread_fail_got(&ld->rd, v, "expected true, false or an object");
        p->safety = cJSON_IsTrue(v) ? 1 : 0;
        mg_cfgread_pop(&ld->rd, mark);
        return 0;
    }
    mg_safety_conf_t *sc = &p->safety_conf;
    bool b;
    int64_t n;
    int rc;
    if (mg_cfgread_check_keys(&ld->rd, v, safety_keys, true)) return -1;
    if ((rc = mg_cfgread_bool(&ld->rd, v, "controlTokens", &b)) < 0) return -1;
    if (rc) sc->control_tokens = b;
    if ((rc = mg_cfgread_bool(&ld->rd, v, "oldReasoning", &b)) < 0) return -1;
    if (rc) sc->old_reasoning = b;
    if ((rc = mg_cfgread_int(&ld->rd, v, "toolResultMaxBytes", 0, MG_MAX_SAFE_INT, &n)) < 0)
        return -1;
    if (rc) sc->tool_result_max_bytes = n;
    if (load_token_list(ld, v, &sc->extra_tokens, &sc->n_extra_tokens)) return -1;
    p->safety = 1;
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* "FILE:LINE:COL: gateway.KEY" (or gateway.providers.ID.caFile…), where the config sets obj[key]
 * (present; obj is the object the reader's path names): the prefix of a message about the file
 * that value names, which is only opened once the config has loaded (gen.c, main.c). */
static char *where(loader_t *ld, const cJSON *gw, const char *key)
{
    size_t mark = mg_cfgread_push_key(&ld->rd, key);
    mg_json5_pos_t pos = mg_json5_pos_of(ld->doc, mg_cfgread_member(gw, key));
    char *s = pos.value_line > 0 ? mg_xasprintf("%s:%d:%d: %s", ld->file, pos.value_line,
                                                pos.value_column, ld->rd.path.data)
                                 : mg_xasprintf("%s: %s", ld->file, ld->rd.path.data);
    mg_cfgread_pop(&ld->rd, mark);
    return s;
}

/* gateway.providers.<id>: tags, region and timeouts of a catalog provider. */
static int load_gateway_provider(loader_t *ld, const cJSON *o)
{
    mg_config_t *cfg = ld->cfg;
    size_t k = provider_index(cfg, o->string);
    if (k == cfg->n_providers)
        return mg_cfgread_fail(&ld->rd, o, true, "not a provider of the catalog");
    if (!cJSON_IsObject(o)) return mg_cfgread_fail_got(&ld->rd, o, "expected an object");
    if (mg_cfgread_check_keys(&ld->rd, o, gw_provider_keys, true)) return -1;
    mg_provider_t *p = &cfg->providers[k];
    const char *region;
    int rc = mg_cfgread_string(&ld->rd, o, "region", true, &region);
    if (rc < 0) return -1;
    if (rc) p->region = mg_xstrdup(region);
    if (load_timeouts(ld, o, &p->timeouts) ||
        mg_cfgread_bool(&ld->rd, o, "stripReasoning", &p->strip_reasoning) < 0)
        return -1;
    if (load_safety(ld, o, p)) return -1;
    if (mg_cfgread_bool(&ld->rd, o, "http2", &p->http2) < 0) return -1;
    if (p->http2 && p->base_url && strncmp(p->base_url, "https://", 8) != 0) {
        /* h2c is not offered: Debian 12's libcurl (7.88.1) fails requests that reuse a
         * prior-knowledge connection (curl issue 10634), and its Upgrade path dropped streams
         * under load in our runs. */
        mg_cfgread_push_key(&ld->rd, "http2");
        return mg_cfgread_fail(
            &ld->rd, mg_cfgread_member(o, "http2"), false,
            "HTTP/2 needs an https baseUrl (cleartext h2c is not supported); this provider's is %s",
            p->base_url);
    }
    const char *ca;
    if ((rc = mg_cfgread_string(&ld->rd, o, "caFile", true, &ca)) < 0) return -1;
    if (rc) {
        p->ca_file = join_path(ld->cfg->base_dir, ca);
        p->ca_file_at = where(ld, o, "caFile"); /* the file is read with the policy's (gen.c) */
    }
    rc = mg_cfgread_strings(&ld->rd, o, "tags", "expected an array of strings", NULL, true,
                            &p->tags, &p->n_tags);
    if (rc < 0) return -1;
    /* Beta flags are words of [a-z0-9.-] ("context-1m-2025-08-07"): the admin's list is all a
     * client can turn on, so no client text reaches the upstream this way. */
    rc = mg_cfgread_strings(&ld->rd, o, "anthropicBetas", "expected an array of anthropic-beta flags", NULL, true,
                            &p->betas, &p->n_betas);
    if (rc < 0) return -1;
    for (size_t i = 0; i < p->n_betas; i++)
        if (!p->betas[i][0] || strspn(p->betas[i], "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(p->betas[i]))
            return mg_cfgread_push_key(&ld->rd, "anthropicBetas"),
                   mg_cfgread_fail(&ld->rd, mg_cfgread_member(o, "anthropicBetas"), false,
                                   "\"%s\" is not an anthropic-beta flag (lowercase letters, digits, '.' and '-')",
                                   p->betas[i]);
    return 0;
}

/* gateway.health: the knobs of the health registry (health.h); absent ones keep its defaults. */
static int load_health(loader_t *ld, const cJSON *gw)
{
    mg_health_conf_t *h = &ld->cfg->gw.health;
    size_t mark = 0;
    int64_t v;
    int rc;
    const cJSON *o = mg_cfgread_object(&ld->rd, gw, "health", &mark);
    if (!o) return ld->rd.failed ? -1 : 0;
    if (mg_cfgread_check_keys(&ld->rd, o, health_keys, true)) return -1;
    const cJSON *cd = mg_cfgread_member(o, "cooldownsMs");
    if (cd) {
        size_t cm = mg_cfgread_push_key(&ld->rd, "cooldownsMs");
        if (!cJSON_IsArray(cd) || !cd->child || cJSON_GetArraySize(cd) > (int)MG_ARRAY_LEN(h->cooldowns_ms))
            return mg_cfgread_fail_got(&ld->rd, cd, "expected a list of 1 to 8 durations in ms");
        size_t i = 0;
        for (const cJSON *e = cd->child; e; e = e->next, i++) {
            size_t im = mg_cfgread_push_index(&ld->rd, i);
            if (!cJSON_IsNumber(e) || e->valuedouble < 1000 || e->valuedouble > 86400000 ||
                e->valuedouble != (double)(int64_t)e->valuedouble)
                return mg_cfgread_fail_got(&ld->rd, e, "expected an integer from 1000 to 86400000");
            h->cooldowns_ms[i] = (int64_t)e->valuedouble;
            mg_cfgread_pop(&ld->rd, im);
        }
        h->n_cooldowns = i;
        mg_cfgread_pop(&ld->rd, cm);
    }
    if ((rc = mg_cfgread_int(&ld->rd, o, "failuresBeforeCooldown", 1, 100, &v)) < 0) return -1;
    if (rc) h->failures_before_cooldown = (int)v;
    if ((rc = mg_cfgread_int(&ld->rd, o, "maxRetries", 0, 10, &v)) < 0) return -1;
    if (rc) h->max_retries = (int)v;
    if ((rc = mg_cfgread_int(&ld->rd, o, "probeBeforeExpiryMs", 0, 3600000, &v)) < 0) return -1;
    if (rc) h->probe_before_expiry_ms = v;
    const cJSON *r = mg_cfgread_member(o, "retryBudgetRatio");
    if (r) {
        size_t rm = mg_cfgread_push_key(&ld->rd, "retryBudgetRatio");
        if (!cJSON_IsNumber(r) || r->valuedouble < 0 || r->valuedouble > 1)
            return mg_cfgread_fail_got(&ld->rd, r, "expected a number from 0 to 1");
        h->retry_budget_ratio = r->valuedouble;
        mg_cfgread_pop(&ld->rd, rm);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* gateway.compaction. The summarizer is only type-checked here: it may be an alias, which is known
 * once `agents` is loaded (load_summarizer). */
static int load_compaction(loader_t *ld, const cJSON *gw)
{
    mg_compaction_conf_t *c = &ld->cfg->gw.compaction;
    size_t mark = 0;
    int64_t v;
    int rc;
    const char *s;
    const cJSON *cp = mg_cfgread_object(&ld->rd, gw, "compaction", &mark);
    if (!cp) return ld->rd.failed ? -1 : 0;
    if (mg_cfgread_check_keys(&ld->rd, cp, compaction_keys, true) ||
        mg_cfgread_bool(&ld->rd, cp, "enabled", &c->enabled) < 0 ||
        mg_cfgread_bool(&ld->rd, cp, "dropCurrentSteps", &c->drop_current_steps) < 0)
        return -1;
    if ((rc = mg_cfgread_int(&ld->rd, cp, "marginTokens", 0, 1000000, &v)) < 0) return -1;
    if (rc) c->margin_tokens = v;
    if ((rc = mg_cfgread_int(&ld->rd, cp, "toolResultMaxBytes", 256, 1 << 30, &v)) < 0) return -1;
    if (rc) c->tool_result_max_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, cp, "messageMaxBytes", 256, 1 << 30, &v)) < 0) return -1;
    if (rc) c->message_max_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, cp, "minKeepBytes", 64, 1 << 30, &v)) < 0) return -1;
    if (rc) {
        /* The later passes halve the caps down to this floor: above them it would never apply. */
        size_t tr = c->tool_result_max_bytes ? c->tool_result_max_bytes : 16 * 1024;
        size_t msg = c->message_max_bytes ? c->message_max_bytes : 8 * 1024;
        if ((size_t)v > tr || (size_t)v > msg) {
            mg_cfgread_push_key(&ld->rd, "minKeepBytes");
            return mg_cfgread_fail(
                &ld->rd, mg_cfgread_member(cp, "minKeepBytes"), false,
                "must not exceed toolResultMaxBytes (%zu) or messageMaxBytes (%zu)", tr, msg);
        }
        c->min_keep_bytes = (size_t)v;
    }
    if (load_token_list(ld, cp, &c->extra_tokens, &c->n_extra_tokens)) return -1;
    if (mg_cfgread_string(&ld->rd, cp, "summarizer", true, &s) < 0) return -1;
    if ((rc = mg_cfgread_int(&ld->rd, cp, "summaryTimeoutMs", 100, 600000, &v)) < 0) return -1;
    if (rc) c->summary_timeout_ms = v;
    if ((rc = mg_cfgread_int(&ld->rd, cp, "summaryMaxTokens", 16, 65536, &v)) < 0) return -1;
    if (rc) c->summary_max_tokens = v;
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* Edit distance between a and b, ignoring ASCII case (Levenshtein: one insertion, deletion or
 * substitution each); anything from 8 up is reported as 8. */
static size_t key_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b), row[65];
    if (n > 64 || m > 64 || (n > m ? n - m : m - n) >= 8) return 8;
    for (size_t j = 0; j <= m; j++) row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            char x = a[i - 1], y = b[j - 1];
            bool same = (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
            row[j] = MG_MIN(MG_MIN(row[j] + 1, row[j - 1] + 1), diag + (same ? 0 : 1));
            diag = up;
        }
    }
    return MG_MIN(row[m], (size_t)8);
}

/* The moongate gateway key that key looks like a typo of (the same but for case, or within one
 * edit for short keys and two for longer ones), or NULL. */
static const char *near_gateway_key(const char *key)
{
    const char *best = NULL;
    size_t best_d = 8;
    for (const char *const *k = gateway_keys; *k; k++) {
        size_t d = key_distance(key, *k), len = MG_MIN(strlen(key), strlen(*k));
        if (d <= (len <= 5 ? 1u : 2u) && d < best_d) best = *k, best_d = d;
    }
    return best;
}

static int load_gateway(loader_t *ld, const cJSON *root)
{
    mg_gateway_settings_t *g = &ld->cfg->gw;
    size_t mark = 0, inner = 0;
    const cJSON *gw = mg_cfgread_object(&ld->rd, root, "gateway", &mark);
    const char *s;
    int64_t v;
    int rc;
    if (!gw) return ld->rd.failed ? -1 : 0;
    /* A whole openclaw.json has OpenClaw's own gateway block beside the models: its settings are
     * not moongate's, so they are ignored with a warning; any other unknown key is an error. But
     * OpenClaw keeps adding settings: in a block that holds one of those it is known to have (the
     * block is OpenClaw's), an unknown key is taken for a newer one of them and ignored with a
     * warning too, unless it looks like a typo of one of moongate's, which stays an error. */
    bool openclaw_block = false;
    for (const cJSON *m = gw->child; m && !openclaw_block; m = m->next)
        for (const char *const *k = openclaw_gateway_keys; *k && !openclaw_block; k++)
            openclaw_block = !strcmp(*k, m->string);
    for (const cJSON *m = gw->child; m; m = m->next) {
        bool ours = false, openclaw = false;
        for (const char *const *k = gateway_keys; *k && !ours; k++) ours = !strcmp(*k, m->string);
        for (const char *const *k = openclaw_gateway_keys; *k && !ours && !openclaw; k++)
            openclaw = !strcmp(*k, m->string);
        if (ours) continue;
        size_t km = mg_cfgread_push_key(&ld->rd, m->string);
        const char *near = openclaw || !openclaw_block ? NULL : near_gateway_key(m->string);
        if (openclaw)
            mg_cfgread_warn(&ld->rd, m, true, "an OpenClaw gateway setting, not moongate's: ignored");
        else if (!openclaw_block)
            mg_cfgread_fail(&ld->rd, m, true, "unknown key");
        else if (near)
            mg_cfgread_fail(&ld->rd, m, true, "unknown key (did you mean \"%s\"?)", near);
        else
            mg_cfgread_warn(&ld->rd, m, true,
                            "unknown key ignored: not moongate's, so taken for a setting of OpenClaw's gateway "
                            "(this block has OpenClaw's)");
        mg_cfgread_pop(&ld->rd, km);
        if (ld->rd.failed) return -1;
    }

    if ((rc = mg_cfgread_string(&ld->rd, gw, "listen", true, &s)) < 0) return -1;
    if (rc) {
        char *host = NULL;
        int port = 0;
        if (!parse_listen(s, &host, &port)) {
            mg_cfgread_push_key(&ld->rd, "listen");
            return mg_cfgread_fail_got(
                &ld->rd, mg_cfgread_member(gw, "listen"),
                "expected \"HOST:PORT\" (e.g. \"127.0.0.1:8787\" or \"[::1]:8787\", port 1-65535)");
        }
        free(g->listen_host);
        g->listen_host = host;
        g->listen_port = port;
    }
    if ((rc = mg_cfgread_int(&ld->rd, gw, "maxBodyBytes", 1, MG_MAX_SAFE_INT, &v)) < 0) return -1;
    if (rc) g->max_body_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "maxUpstreamBodyBytes", 1, MG_MAX_SAFE_INT, &v)) < 0)
        return -1;
    if (rc) g->max_upstream_body_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "threads", 1, 64, &v)) < 0) return -1;
    if (rc) g->threads = (int)v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "maxConnections", 1, 1000000, &v)) < 0) return -1;
    if (rc) g->max_connections = (unsigned)v;
    if (load_timeouts(ld, gw, &g->timeouts)) return -1;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "maxEventBytes", 1024, MG_MAX_SAFE_INT, &v)) < 0)
        return -1;
    if (rc) g->max_event_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "streamBufferBytes", 4096, MG_MAX_SAFE_INT, &v)) < 0)
        return -1;
    if (rc) g->stream_buffer_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "drainMs", 0, MG_MAX_SAFE_INT, &v)) < 0) return -1;
    if (rc) g->drain_ms = v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "keepAliveMs", 0, MG_MAX_SAFE_INT, &v)) < 0) return -1;
    if (rc) g->keepalive_ms = v;

    const cJSON *ak = mg_cfgread_member(gw, "adminKey");
    if (ak) {
        size_t am = mg_cfgread_push_key(&ld->rd, "adminKey");
        if (!cJSON_IsString(ak) || !ak->valuestring[0])
            return mg_cfgread_fail_got(&ld->rd, ak, "expected a non-empty string");
        /* Unlike a provider's apiKey, an unset variable here is an error: without the key the
         * admin endpoints would be open to every loopback client, the opposite of what was asked. */
        char *env = NULL;
        if (resolve_secret(ld, ak, false, &g->admin_key, &env)) return -1;
        if (!g->admin_key) {
            mg_cfgread_fail(&ld->rd, ak, false,
                            "environment variable %s is not set (or empty): the admin endpoints would have no key",
                            env ? env : "?");
            free(env);
            return -1;
        }
        free(env);
        mg_cfgread_pop(&ld->rd, am);
    }

    if ((rc = mg_cfgread_string(&ld->rd, gw, "policy", true, &s)) < 0) return -1;
    if (rc) {
        g->policy_path = join_path(ld->cfg->base_dir, s);
        g->policy_at = where(ld, gw, "policy");
    }
    if ((rc = mg_cfgread_int(&ld->rd, gw, "bodyTimeoutMs", 100, 3600000, &v)) < 0) return -1;
    if (rc) g->body_timeout_ms = v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "headerTimeoutMs", 100, 3600000, &v)) < 0) return -1;
    if (rc) g->header_timeout_ms = v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "maxHeaderBytes", 1024, 1 << 20, &v)) < 0) return -1;
    if (rc) g->max_header_bytes = (size_t)v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "maxConnectionsPerIp", 0, 1000000, &v)) < 0) return -1;
    if (rc) g->max_connections_per_ip = (unsigned)v;
    if (mg_cfgread_strings(&ld->rd, gw, "allowedRegions", "expected an array of region names", NULL,
                           false, &g->allowed_regions, &g->n_allowed_regions) < 0)
        return -1;
    if (mg_cfgread_strings(&ld->rd, gw, "allowedHosts", "expected an array of host names", NULL, false,
                           &g->allowed_hosts, &g->n_allowed_hosts) < 0)
        return -1;
    for (size_t i = 0; i < g->n_allowed_hosts; i++) { /* i is the element's index: no repeats dropped */
        char *h = g->allowed_hosts[i];
        size_t len = strlen(h);
        if (len > 1 && h[len - 1] == '.') h[len - 1] = '\0'; /* "gw.example.org." is gw.example.org */
        if (strcmp(h, "*") != 0 && strpbrk(h, " \t/:@[]*")) {
            size_t at_key = mg_cfgread_push_key(&ld->rd, "allowedHosts");
            mg_cfgread_push_index(&ld->rd, i);
            mg_cfgread_fail(&ld->rd, cJSON_GetArrayItem(mg_cfgread_member(gw, "allowedHosts"), (int)i), false,
                            "expected a host name without port, scheme or wildcard (\"gw.example.org\"), or "
                            "\"*\" alone for any");
            mg_cfgread_pop(&ld->rd, at_key);
            return -1;
        }
    }
    if ((rc = mg_cfgread_int(&ld->rd, gw, "policyCpuMs", 1, 1000, &v)) < 0) return -1;
    if (rc) g->policy_cpu_ms = v;
    if ((rc = mg_cfgread_int(&ld->rd, gw, "policyMemoryMb", 1, 4096, &v)) < 0) return -1;
    if (rc) g->policy_memory_mb = v;
    if ((rc = mg_cfgread_string(&ld->rd, gw, "onPolicyError", true, &s)) < 0) return -1;
    if (rc) {
        if (strcmp(s, "error") && strcmp(s, "static")) {
            mg_cfgread_push_key(&ld->rd, "onPolicyError");
            return mg_cfgread_fail_got(&ld->rd, mg_cfgread_member(gw, "onPolicyError"),
                                       "expected \"error\" or \"static\"");
        }
        g->policy_error_static = strcmp(s, "static") == 0;
    }
    if ((rc = mg_cfgread_string(&ld->rd, gw, "errorPatterns", true, &s)) < 0) return -1;
    if (rc) {
        g->error_patterns_path = join_path(ld->cfg->base_dir, s);
        g->error_patterns_at = where(ld, gw, "errorPatterns");
    }
    if (load_health(ld, gw)) return -1;
    if (load_compaction(ld, gw)) return -1;

    const cJSON *log = mg_cfgread_object(&ld->rd, gw, "log", &inner);
    if (ld->rd.failed) return -1;
    if (log) {
        if (mg_cfgread_check_keys(&ld->rd, log, log_keys, true) ||
            (rc = mg_cfgread_string(&ld->rd, log, "path", true, &s)) < 0)
            return -1;
        if (rc && strcmp(s, "-") != 0) {
            g->log_path = join_path(ld->cfg->base_dir, s);
            g->log_path_at = where(ld, log, "path");
        }
        if (mg_cfgread_bool(&ld->rd, log, "content", &g->log_content) < 0) return -1;
        if ((rc = mg_cfgread_int(&ld->rd, log, "contentMaxBytes", 0, 16 << 20, &v)) < 0) return -1;
        if (rc) g->log_content_max_bytes = (size_t)v;
        mg_cfgread_pop(&ld->rd, inner);
    }

    const cJSON *providers = mg_cfgread_object(&ld->rd, gw, "providers", &inner);
    if (ld->rd.failed) return -1;
    for (const cJSON *o = providers ? providers->child : NULL; o; o = o->next) {
        size_t pm = mg_cfgread_push_key(&ld->rd, o->string);
        if (load_gateway_provider(ld, o)) return -1;
        mg_cfgread_pop(&ld->rd, pm);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* Whether host ends with suffix (which starts with a dot), case-insensitively. */
static bool host_ends_with(const char *host, const char *suffix)
{
    size_t h = strlen(host), n = strlen(suffix);
    return h > n && strcasecmp(host + h - n, suffix) == 0;
}

/* Derives local/hosted, puts that tag first, and points models at their (now final) provider. */
static void finish_providers(mg_config_t *cfg)
{
    for (size_t k = 0; k < cfg->n_providers; k++) {
        mg_provider_t *p = &cfg->providers[k];
        char host[256];
        bool has_host = p->base_url && url_host(p->base_url, host, sizeof host);
        bool local = has_host && host_is_local(host);
        for (size_t j = 0; j < p->n_tags; j++) local = local || !strcmp(p->tags[j], "local");
        /* "hosted" wins: a proxy on this machine (LiteLLM, say) that forwards to a hosted
         * provider is egress, whatever its address. */
        for (size_t j = 0; j < p->n_tags; j++)
            if (!strcmp(p->tags[j], "hosted")) local = false;
        p->local = local;
        /* OpenAI's own API: its host, Azure's, or the built-in provider's id when not local (an
         * https proxy in front of it keeps the name; a local server under that id does not) */
        p->openai_host = !local && (!strcmp(p->id, "openai") ||
                                    (has_host && (mg_str_eq_nocase(host, "api.openai.com") ||
                                                  host_ends_with(host, ".openai.azure.com"))));
        const char *derived = local ? "local" : "hosted";
        char **tags = mg_xcalloc(p->n_tags + 1, sizeof *tags);
        size_t n = 0;
        tags[n++] = mg_xstrdup(derived);
        for (size_t j = 0; j < p->n_tags; j++) {
            if (!strcmp(p->tags[j], derived))
                free(p->tags[j]);
            else
                tags[n++] = p->tags[j];
        }
        free(p->tags);
        p->tags = tags;
        p->n_tags = n;
        for (size_t j = 0; j < p->n_models; j++) p->models[j].provider = p;
    }
}

static char *xstrdup_or_null(const char *s)
{
    return s ? mg_xstrdup(s) : NULL;
}

static char **strings_copy(char *const *v, size_t n)
{
    char **out = mg_xcalloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++) out[i] = mg_xstrdup(v[i]);
    return out;
}

/* OpenClaw's per-model api and headers. A model that declares its own gets a copy of its (final)
 * provider with them, which m->provider points to: whatever reads a model's provider to send it
 * (the router, the relay, the codecs, the summarizer) sends it with its own API and headers, and
 * the copy keeps the provider's id, address, key, tags and settings, so that health, cooldowns,
 * metrics and the catalog, which go by cfg->providers and provider ids, still see one provider.
 * Its headers are the provider's, with the model's over them (names compared as HTTP does,
 * ignoring case). A model whose own settings change nothing keeps its provider. */
static void give_models_their_own(loader_t *ld)
{
    mg_config_t *cfg = ld->cfg;
    for (size_t i = 0; i < ld->n_own; i++) {
        const model_own_t *o = &ld->own[i];
        mg_provider_t *p = &cfg->providers[o->k];
        mg_model_t *m = NULL;
        for (size_t j = 0; j < p->n_models && !m; j++)
            if (!strcmp(p->models[j].id, o->id)) m = &p->models[j];
        mg_api_t api = o->has_api ? o->api : p->api;
        if (!m || (api == p->api && !o->n_headers)) continue;
        mg_provider_t *v = mg_xcalloc(1, sizeof *v);
        *v = *p; /* then every owned field is made its own */
        v->id = mg_xstrdup(p->id);
        v->base_url = xstrdup_or_null(p->base_url);
        v->api_key = xstrdup_or_null(p->api_key);
        v->api_key_env = xstrdup_or_null(p->api_key_env);
        v->api = api;
        v->headers = mg_xcalloc(p->n_headers + o->n_headers + 1, sizeof *v->headers);
        v->n_headers = 0;
        for (size_t h = 0; h < p->n_headers; h++)
            v->headers[v->n_headers++] = (mg_header_t){mg_xstrdup(p->headers[h].name), mg_xstrdup(p->headers[h].value)};
        for (size_t h = 0; h < o->n_headers; h++) {
            size_t at = 0;
            while (at < v->n_headers && strcasecmp(v->headers[at].name, o->headers[h].name) != 0) at++;
            if (at == v->n_headers) {
                v->n_headers++;
            } else {
                free(v->headers[at].name);
                wipe_free(v->headers[at].value);
            }
            v->headers[at] = (mg_header_t){mg_xstrdup(o->headers[h].name), mg_xstrdup(o->headers[h].value)};
        }
        v->models = NULL;
        v->n_models = 0;
        v->tags = strings_copy(p->tags, p->n_tags);
        v->betas = strings_copy(p->betas, p->n_betas);
        v->region = xstrdup_or_null(p->region);
        v->safety_conf.extra_tokens = strings_copy(p->safety_conf.extra_tokens, p->safety_conf.n_extra_tokens);
        v->ca_file = xstrdup_or_null(p->ca_file);
        v->ca_file_at = NULL; /* the provider's is checked */
        v->base = p;
        v->models_own = false;
        p->models_own = true;
        m->provider = v;
        cfg->own_providers = mg_xrealloc(cfg->own_providers, (cfg->n_own_providers + 1) * sizeof *cfg->own_providers);
        cfg->own_providers[cfg->n_own_providers++] = v;
    }
}

/* ---- agents: aliases and the default chain --------------------------------------------------- */

/* agents.defaults.models: { "provider/id": { alias } }. */
static int load_aliases(loader_t *ld, const cJSON *defaults)
{
    mg_config_t *cfg = ld->cfg;
    size_t mark = 0;
    const cJSON *models = mg_cfgread_object(&ld->rd, defaults, "models", &mark);
    if (!models) return ld->rd.failed ? -1 : 0;
    for (const cJSON *e = models->child; e; e = e->next) {
        size_t inner = mg_cfgread_push_key(&ld->rd, e->string);
        const mg_model_t *m = find_by_ref(cfg, e->string);
        const char *alias = NULL;
        int rc;
        if (!cJSON_IsObject(e)) return mg_cfgread_fail_got(&ld->rd, e, "expected an object");
        if (mg_cfgread_check_keys(&ld->rd, e, alias_keys, false)) return -1;
        if (!m) {
            mg_cfgread_warn(&ld->rd, e, true, "not a model of the catalog; ignored");
        } else if ((rc = mg_cfgread_string(&ld->rd, e, "alias", true, &alias)) < 0) {
            return -1;
        } else if (rc) {
            const cJSON *av = mg_cfgread_member(e, "alias");
            char *q = mg_cfgread_quote(alias);
            mg_cfgread_push_key(&ld->rd, "alias");
            if (find_by_ref(cfg, alias))
                rc = mg_cfgread_fail(&ld->rd, av, false, "alias %s is already the name of a model",
                                     q);
            else if (!strcmp(alias, "default")) /* the route name of agents.defaults.model */
                rc = mg_cfgread_fail(&ld->rd, av, false,
                                     "alias %s is reserved: it names the default chain (agents.defaults.model)", q);
            for (size_t i = 0; i < cfg->n_aliases && rc > 0; i++)
                if (!strcmp(cfg->aliases[i].alias, alias))
                    rc = mg_cfgread_fail(&ld->rd, av, false, "alias %s is already used for %s", q,
                                         cfg->aliases[i].model->ref);
            free(q);
            if (rc < 0) return -1;
            cfg->aliases = mg_xrealloc(cfg->aliases, (cfg->n_aliases + 1) * sizeof *cfg->aliases);
            cfg->aliases[cfg->n_aliases++] = (mg_alias_t){mg_xstrdup(alias), m};
        }
        mg_cfgread_pop(&ld->rd, inner);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* One name of agents.defaults.model: resolved, deduplicated, appended to the default chain. */
static int load_chain_entry(loader_t *ld, const cJSON *v)
{
    mg_config_t *cfg = ld->cfg;
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return mg_cfgread_fail_got(&ld->rd, v, "expected a non-empty string");
    const char *name = v->valuestring;
    const mg_model_t *m = mg_config_find_model(cfg, name);
    char *q = mg_cfgread_quote(name);
    if (!m) {
        mg_buf_t refs = {0};
        size_t hits = 0;
        for (size_t k = 0; k < cfg->n_providers; k++)
            for (size_t j = 0; j < cfg->providers[k].n_models; j++)
                if (!strcmp(cfg->providers[k].models[j].id, name))
                    mg_buf_printf(&refs, "%s%s", hits++ ? ", " : "", cfg->providers[k].models[j].ref);
        if (hits > 1)
            mg_cfgread_fail(&ld->rd, v, false, "model id %s is ambiguous (%s); write provider/id",
                            q, refs.data);
        else
            mg_cfgread_fail(&ld->rd, v, false,
                            "unknown model %s (not a provider/id, an alias or a model id)", q);
        mg_buf_free(&refs);
        free(q);
        return -1;
    }
    free(q);
    for (size_t i = 0; i < cfg->n_default_chain; i++) {
        if (cfg->default_chain[i] == m) {
            mg_cfgread_warn(&ld->rd, v, false, "%s is already in the chain; dropped", m->ref);
            return 0;
        }
    }
    cfg->default_chain = mg_xrealloc(cfg->default_chain, (cfg->n_default_chain + 1) * sizeof *cfg->default_chain);
    cfg->default_chain[cfg->n_default_chain++] = m;
    const mg_provider_t *p = mg_model_catalog_provider(m);
    if (p->api_key_env && !p->api_key && !ld->key_in_config[p - cfg->providers])
        mg_cfgread_warn(&ld->rd, v, false, "%s needs environment variable %s, which is not set",
                        m->ref, p->api_key_env);
    return 0;
}

/* agents.defaults.model: "name" or { primary: "name", fallbacks: ["name", ...] }. */
static int load_chain(loader_t *ld, const cJSON *defaults)
{
    const cJSON *model = mg_cfgread_member(defaults, "model");
    if (!model) return 0;
    size_t mark = mg_cfgread_push_key(&ld->rd, "model");
    if (cJSON_IsString(model)) {
        if (load_chain_entry(ld, model)) return -1;
    } else if (cJSON_IsObject(model)) {
        if (mg_cfgread_check_keys(&ld->rd, model, chain_keys, false)) return -1;
        const cJSON *primary = mg_cfgread_member(model, "primary"),
                    *fallbacks = mg_cfgread_member(model, "fallbacks");
        if (!primary) return mg_cfgread_fail_missing(&ld->rd, model, "primary");
        size_t inner = mg_cfgread_push_key(&ld->rd, "primary");
        if (load_chain_entry(ld, primary)) return -1;
        mg_cfgread_pop(&ld->rd, inner);
        if (fallbacks) {
            inner = mg_cfgread_push_key(&ld->rd, "fallbacks");
            if (!cJSON_IsArray(fallbacks))
                return mg_cfgread_fail_got(&ld->rd, fallbacks, "expected an array of model names");
            size_t i = 0;
            for (const cJSON *f = fallbacks->child; f; f = f->next, i++) {
                size_t e = mg_cfgread_push_index(&ld->rd, i);
                if (load_chain_entry(ld, f)) return -1;
                mg_cfgread_pop(&ld->rd, e);
            }
            mg_cfgread_pop(&ld->rd, inner);
        }
    } else {
        return mg_cfgread_fail_got(&ld->rd, model, "expected a model name or {primary, fallbacks}");
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* gateway.compaction.summarizer, once aliases are known: it must be a catalog model (the gateway
 * sends the dropped turns there, so it is held to the same rule as a policy's candidates). */
static int load_summarizer(loader_t *ld, const cJSON *root)
{
    const cJSON *gw = mg_cfgread_member(root, "gateway");
    const cJSON *cp = cJSON_IsObject(gw) ? mg_cfgread_member(gw, "compaction") : NULL;
    const cJSON *v = cJSON_IsObject(cp) ? mg_cfgread_member(cp, "summarizer") : NULL;
    if (!v) return 0; /* its type was checked with the rest of gateway.compaction */
    size_t mark = mg_cfgread_push_key(&ld->rd, "gateway");
    mg_cfgread_push_key(&ld->rd, "compaction");
    mg_cfgread_push_key(&ld->rd, "summarizer");
    const mg_model_t *m = mg_config_find_model(ld->cfg, v->valuestring);
    if (!m) {
        char *q = mg_cfgread_quote(v->valuestring);
        mg_cfgread_fail(&ld->rd, v, false,
                        "unknown model %s (not a provider/id, an alias or a model id)", q);
        free(q);
        return -1;
    }
    ld->cfg->gw.compaction.summarizer = m;
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* gateway.keys (keys.c), once the catalog and aliases are known so that model names resolve. */
static int load_keys(loader_t *ld, const cJSON *root)
{
    const cJSON *gw = mg_cfgread_member(root, "gateway");
    const cJSON *k = cJSON_IsObject(gw) ? mg_cfgread_member(gw, "keys") : NULL;
    if (!k || cJSON_IsNull(k)) return 0;
    const cJSON *node = NULL;
    char msg[512];
    if (mg_keys_load_ex(k, ld->cfg, "gateway.keys", &ld->cfg->gw.keys, &node, msg, sizeof msg) == 0) return 0;
    ld->rd.failed = true;
    mg_json5_pos_t pos = mg_json5_pos_of(ld->doc, node ? node : k);
    if (ld->errlen) snprintf(ld->err, ld->errlen, "%s:%d:%d: %s", ld->file, pos.value_line, pos.value_column, msg);
    return -1;
}

static int load_agents(loader_t *ld, const cJSON *root)
{
    size_t mark = 0, inner = 0;
    const cJSON *agents = mg_cfgread_object(&ld->rd, root, "agents", &mark);
    if (!agents) return ld->rd.failed ? -1 : 0;
    if (mg_cfgread_check_keys(&ld->rd, agents, agents_keys, false)) return -1;
    const cJSON *defaults = mg_cfgread_object(&ld->rd, agents, "defaults", &inner);
    if (ld->rd.failed) return -1;
    if (defaults) {
        /* aliases first: the chain may name a model by its alias */
        if (mg_cfgread_check_keys(&ld->rd, defaults, defaults_keys, false) ||
            load_aliases(ld, defaults) || load_chain(ld, defaults))
            return -1;
        mg_cfgread_pop(&ld->rd, inner);
    }
    mg_cfgread_pop(&ld->rd, mark);
    return 0;
}

/* ---- loading --------------------------------------------------------------------------------- */

/* Validates text into a new config. name is used in messages; base_dir must be absolute (it is
 * copied). Returns NULL with err filled on failure. */
static mg_config_t *load_text(const char *text, size_t len, const char *name, const char *base_dir, char *err,
                              size_t errlen)
{
    mg_config_t *cfg = mg_xcalloc(1, sizeof *cfg), *result = NULL;
    mg_json5_doc_t doc = {0};
    loader_t ld = {.cfg = cfg,
                   .file = name,
                   .doc = &doc,
                   .err = err,
                   .errlen = errlen,
                   .rd = {.report = report, .ud = &ld}};
    char perr[256];
    cfg->path = mg_xstrdup(name);
    cfg->base_dir = mg_xstrdup(base_dir);
    cfg->mode = MG_MODE_MERGE;
    cfg->gw = (mg_gateway_settings_t){
        .listen_host = mg_xstrdup("127.0.0.1"),
        .listen_port = 8787,
        .max_body_bytes = 10u << 20,
        .max_upstream_body_bytes = 64u << 20,
        .threads = 1,
        .max_connections = 10000,
        .max_event_bytes = 1u << 20,
        .stream_buffer_bytes = 256u << 10,
        .drain_ms = 10000,
        .body_timeout_ms = 30000,
        .header_timeout_ms = 30000,
        .max_header_bytes = 16u << 10,
        .log_content_max_bytes = 4096,
        .compaction = {.enabled = true, .margin_tokens = 512, .summary_timeout_ms = 10000,
                       .summary_max_tokens = 1024},
        .health = {.failures_before_cooldown = -1, .max_retries = -1, .retry_budget_ratio = -1,
                   .probe_before_expiry_ms = -1},
        .keepalive_ms = 15000,
        .timeouts = {.connect_ms = 10000, .first_token_ms = 120000, .idle_ms = 60000, .total_ms = 600000},
    };
    mg_buf_reserve(&ld.rd.path, 64); /* the path is always a valid (possibly empty) string */
    ld.rd.path.data[0] = '\0';

    if (mg_json5_parse(text, len, &doc, perr, sizeof perr)) {
        /* perr is "LINE:COL: message"; ours adds the file and the "syntax" key path */
        const char *msg = strstr(perr, ": ");
        if (msg)
            snprintf(err, errlen, "%s:%.*s: syntax: %s", name, (int)(msg - perr), perr, msg + 2);
        else
            snprintf(err, errlen, "%s: syntax: %s", name, perr);
        goto done;
    }
    if (!cJSON_IsObject(doc.root)) {
        mg_cfgread_fail_got(&ld.rd, doc.root, "expected an object at the top level");
        goto done;
    }
    warn_duplicate_keys(&ld);
    if (mg_cfgread_check_keys(&ld.rd, doc.root, top_keys, false) || load_models(&ld, doc.root) ||
        load_gateway(&ld, doc.root))
        goto done;
    finish_providers(cfg);
    give_models_their_own(&ld);
    if (load_agents(&ld, doc.root) || load_summarizer(&ld, doc.root) || load_keys(&ld, doc.root)) goto done;
    result = cfg, cfg = NULL;
done:
    mg_json5_free(&doc);
    mg_cfgread_free(&ld.rd);
    free(ld.key_in_config);
    for (size_t i = 0; i < ld.n_own; i++) {
        free(ld.own[i].id);
        headers_free(ld.own[i].headers, ld.own[i].n_headers);
    }
    free(ld.own);
    mg_config_free(cfg); /* NULL on success */
    return result;
}

/* Reads a whole file into a fresh NUL-terminated buffer. */
static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    if (mg_read_file(path, MG_CONFIG_MAX_FILE, text, len) == 0) return 0;
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return -1;
}

mg_config_t *mg_config_load(const char *path, char *err, size_t errlen)
{
    char *text = NULL, *dir = NULL;
    size_t len = 0;
    mg_config_t *cfg = NULL;
    if (errlen) err[0] = '\0';
    if (read_file(path, &text, &len, err, errlen)) goto done;
    dir = dir_of(path);
    cfg = load_text(text, len, path, dir, err, errlen);
done:
    free(text);
    free(dir);
    return cfg;
}

mg_config_t *mg_config_load_string(const char *text, size_t len, const char *name, const char *base_dir,
                                   char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    char *dir = absolute_dir(base_dir);
    mg_config_t *cfg = load_text(text, len, name ? name : "<string>", dir, err, errlen);
    free(dir);
    return cfg;
}

static void provider_free_fields(mg_provider_t *p)
{
    free(p->id);
    free(p->base_url);
    free(p->ca_file);
    free(p->ca_file_at);
    wipe_free(p->api_key);
    free(p->api_key_env);
    headers_free(p->headers, p->n_headers);
    for (size_t j = 0; j < p->n_models; j++) model_free_fields(&p->models[j]);
    free(p->models);
    for (size_t i = 0; i < p->n_tags; i++) free(p->tags[i]);
    free(p->tags);
    for (size_t i = 0; i < p->n_betas; i++) free(p->betas[i]);
    free(p->betas);
    free(p->region);
    for (size_t i = 0; i < p->safety_conf.n_extra_tokens; i++) free(p->safety_conf.extra_tokens[i]);
    free(p->safety_conf.extra_tokens);
}

void mg_config_free(mg_config_t *cfg)
{
    if (!cfg) return;
    for (size_t k = 0; k < cfg->n_providers; k++) provider_free_fields(&cfg->providers[k]);
    free(cfg->providers);
    for (size_t k = 0; k < cfg->n_own_providers; k++) {
        provider_free_fields(cfg->own_providers[k]);
        free(cfg->own_providers[k]);
    }
    free(cfg->own_providers);
    for (size_t i = 0; i < cfg->n_aliases; i++) free(cfg->aliases[i].alias);
    free(cfg->aliases);
    free(cfg->default_chain);
    free(cfg->gw.listen_host);
    free(cfg->gw.policy_path);
    free(cfg->gw.policy_at);
    free(cfg->gw.error_patterns_path);
    free(cfg->gw.error_patterns_at);
    free(cfg->gw.log_path);
    free(cfg->gw.log_path_at);
    wipe_free(cfg->gw.admin_key);
    mg_keys_free(cfg->gw.keys);
    for (size_t i = 0; i < cfg->gw.n_allowed_regions; i++) free(cfg->gw.allowed_regions[i]);
    free(cfg->gw.allowed_regions);
    for (size_t i = 0; i < cfg->gw.n_allowed_hosts; i++) free(cfg->gw.allowed_hosts[i]);
    free(cfg->gw.allowed_hosts);
    for (size_t i = 0; i < cfg->gw.compaction.n_extra_tokens; i++) free(cfg->gw.compaction.extra_tokens[i]);
    free(cfg->gw.compaction.extra_tokens);
    for (size_t i = 0; i < cfg->n_warnings; i++) free(cfg->warnings[i]);
    free(cfg->warnings);
    free(cfg->path);
    free(cfg->base_dir);
    free(cfg);
}

/* ---- queries --------------------------------------------------------------------------------- */

const char *mg_api_name(mg_api_t api)
{
    switch (api) {
    case MG_API_OPENAI_COMPLETIONS: return "openai-completions";
    case MG_API_OPENAI_RESPONSES: return "openai-responses";
    case MG_API_ANTHROPIC_MESSAGES: return "anthropic-messages";
    }
    return "unknown";
}

const mg_model_t *mg_config_find_model(const mg_config_t *cfg, const char *name)
{
    if (!cfg || !name) return NULL;
    const mg_model_t *m = find_by_ref(cfg, name);
    if (m) return m;
    for (size_t i = 0; i < cfg->n_aliases; i++)
        if (!strcmp(cfg->aliases[i].alias, name)) return cfg->aliases[i].model;
    for (size_t i = 0; i < cfg->n_aliases; i++)
        if (mg_str_eq_nocase(cfg->aliases[i].alias, name)) return cfg->aliases[i].model;
    const mg_model_t *bare = NULL;
    for (size_t k = 0; k < cfg->n_providers; k++) {
        for (size_t j = 0; j < cfg->providers[k].n_models; j++) {
            if (strcmp(cfg->providers[k].models[j].id, name) != 0) continue;
            if (bare) return NULL; /* ambiguous: the caller must say provider/id */
            bare = &cfg->providers[k].models[j];
        }
    }
    return bare;
}

const mg_provider_t *mg_config_find_provider(const mg_config_t *cfg, const char *id)
{
    if (!cfg || !id) return NULL;
    size_t k = provider_index(cfg, id);
    return k < cfg->n_providers ? &cfg->providers[k] : NULL;
}

mg_timeouts_t mg_config_timeouts(const mg_config_t *cfg, const mg_model_t *m)
{
    mg_timeouts_t t = cfg->gw.timeouts;
    if (!m || !m->provider) return t;
    const mg_timeouts_t *p = &m->provider->timeouts;
    if (p->connect_ms) t.connect_ms = p->connect_ms;
    if (p->first_token_ms) t.first_token_ms = p->first_token_ms;
    if (p->idle_ms) t.idle_ms = p->idle_ms;
    if (p->total_ms) t.total_ms = p->total_ms;
    return t;
}

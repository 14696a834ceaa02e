/* Unit tests for config validation (src/config.c): the OpenClaw model config as pasted, merge and
 * replace, the gateway block, key paths and positions in every message, and every example under
 * examples/ loading cleanly. Also the config reader both loaders share (src/cfgread.c): key
 * paths, how values are described, each typed reader and its message. */
#include "config.h"

#include "cfgread.h"
#include "health.h"
#include "keys.h"
#include "mg_test.h"
#include "util.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char err[512];

/* Loads text as "cfg.json5" from /etc/mg with no hosted keys in the environment. */
static mg_config_t *load(const char *text)
{
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("OPENAI_API_KEY");
    return mg_config_load_string(text, strlen(text), "cfg.json5", "/etc/mg", err, sizeof err);
}

static mg_config_t *load_ok(const char *text)
{
    mg_config_t *cfg = load(text);
    if (!cfg) fprintf(stderr, "  unexpected error: %s\n", err);
    MG_CHECK(cfg != NULL);
    return cfg;
}

/* Expects the load to fail with exactly want. */
static void expect_error(const char *text, const char *want)
{
    mg_config_t *cfg = load(text);
    MG_CHECK(cfg == NULL);
    MG_CHECK_STR(err, want);
    mg_config_free(cfg);
}

/* "cfg.json5:LINE:COL: rest" where LINE:COL is the first occurrence of needle in text (COL in
 * characters, as editors count): the test says what the message must point at instead of
 * counting columns by hand. Caller frees. */
static char *at(const char *text, const char *needle, const char *rest)
{
    const char *hit = strstr(text, needle);
    int line = 1, col = 1;
    MG_CHECK(hit != NULL);
    if (!hit) return mg_xstrdup("(needle not found)");
    for (const char *c = text; c < hit; c++) {
        if (*c == '\n') line++, col = 1;
        else col += ((unsigned char)*c & 0xC0) != 0x80;
    }
    return mg_xasprintf("cfg.json5:%d:%d: %s", line, col, rest);
}

/* Expects the load to fail with "cfg.json5:L:C: rest", L:C being where needle is in text. */
static void expect_error_at(const char *text, const char *needle, const char *rest)
{
    char *want = at(text, needle, rest);
    expect_error(text, want);
    free(want);
}

/* Expects the load to succeed with exactly one warning, want. */
static void expect_warning(const char *text, const char *want)
{
    mg_config_t *cfg = load_ok(text);
    if (!cfg) return;
    MG_CHECK_INT(cfg->n_warnings, 1);
    MG_CHECK_STR(cfg->n_warnings ? cfg->warnings[0] : NULL, want);
    mg_config_free(cfg);
}

/* One provider "p" at baseUrl with one model "m", plus extra text inside the top-level object. */
#define ONE_PROVIDER(url, extra)                                                                   \
    "{models: {mode: 'replace', providers: {p: {baseUrl: '" url "', models: [{id: 'm'}]}}}, " extra "}"

static const char *lmstudio_seed =
    "{\n"
    "  agents: {\n"
    "    defaults: {\n"
    "      model: { primary: \"lmstudio/minimax-m2.1-gs32\" },\n"
    "      models: {\n"
    "        \"anthropic/claude-opus-4-6\": { alias: \"Opus\" },\n"
    "        \"lmstudio/minimax-m2.1-gs32\": { alias: \"Minimax\" },\n"
    "      },\n"
    "    },\n"
    "  },\n"
    "  models: {\n"
    "    mode: \"merge\",\n"
    "    providers: {\n"
    "      lmstudio: {\n"
    "        baseUrl: \"http://127.0.0.1:1234/v1\",\n"
    "        apiKey: \"lmstudio\",\n"
    "        api: \"openai-responses\",\n"
    "        models: [\n"
    "          {\n"
    "            id: \"minimax-m2.1-gs32\",\n"
    "            name: \"MiniMax M2.1 GS32\",\n"
    "            reasoning: false,\n"
    "            input: [\"text\"],\n"
    "            cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },\n"
    "            contextWindow: 196608,\n"
    "            maxTokens: 8192,\n"
    "          },\n"
    "        ],\n"
    "      },\n"
    "    },\n"
    "  },\n"
    "}\n";

MG_TEST(openclaw_lmstudio_seed_loads_as_is)
{
    mg_config_t *cfg = load_ok(lmstudio_seed);
    if (!cfg) return;
    MG_CHECK_INT(cfg->mode, MG_MODE_MERGE);
    MG_CHECK_INT(cfg->n_warnings, 0);
    MG_CHECK_STR(cfg->path, "cfg.json5");
    MG_CHECK_STR(cfg->base_dir, "/etc/mg");
    const mg_provider_t *p = mg_config_find_provider(cfg, "lmstudio");
    MG_CHECK(p != NULL);
    if (!p) goto done;
    MG_CHECK_STR(p->base_url, "http://127.0.0.1:1234/v1");
    MG_CHECK_STR(p->api_key, "lmstudio");
    MG_CHECK(p->api_key_env == NULL);
    MG_CHECK_INT(p->api, MG_API_OPENAI_RESPONSES);
    MG_CHECK(p->local && !p->builtin);
    MG_CHECK_INT(p->n_tags, 1);
    MG_CHECK_STR(p->tags[0], "local");
    MG_CHECK_INT(p->n_models, 1);
    const mg_model_t *m = &p->models[0];
    MG_CHECK_STR(m->id, "minimax-m2.1-gs32");
    MG_CHECK_STR(m->name, "MiniMax M2.1 GS32");
    MG_CHECK_STR(m->ref, "lmstudio/minimax-m2.1-gs32");
    MG_CHECK(m->provider == p && !m->reasoning && !m->builtin);
    MG_CHECK_INT(m->input, MG_INPUT_TEXT);
    MG_CHECK_INT(m->context_window, 196608);
    MG_CHECK_INT(m->max_tokens, 8192);
    MG_CHECK(m->cost.input == 0 && m->cost.output == 0 && m->cost.cache_read == 0 && m->cost.cache_write == 0);
    MG_CHECK_INT(cfg->n_default_chain, 1);
    MG_CHECK(cfg->default_chain[0] == m);
    MG_CHECK_INT(cfg->n_aliases, 2);
    MG_CHECK(mg_config_find_model(cfg, "Minimax") == m);
    const mg_model_t *opus = mg_config_find_model(cfg, "Opus");
    MG_CHECK(opus != NULL && !strcmp(opus->ref, "anthropic/claude-opus-4-6") && opus->builtin);
    /* merge: the built-in hosted providers are there, with keys from the environment */
    const mg_provider_t *a = mg_config_find_provider(cfg, "anthropic");
    MG_CHECK(a && a->builtin && !a->local && a->api == MG_API_ANTHROPIC_MESSAGES);
    MG_CHECK(a && a->api_key == NULL && a->api_key_env && !strcmp(a->api_key_env, "ANTHROPIC_API_KEY"));
    MG_CHECK(a && a->n_tags == 1 && !strcmp(a->tags[0], "hosted"));
    MG_CHECK(mg_config_find_provider(cfg, "openai") != NULL);
    MG_CHECK_INT(cfg->n_providers, 3);
done:
    mg_config_free(cfg);
}

MG_TEST(error_names_file_line_column_and_key_path)
{
    expect_error("{\n"
                 "  models: {\n"
                 "    providers: {\n"
                 "      lmstudio: {\n"
                 "        baseUrl: \"http://127.0.0.1:1234/v1\",\n"
                 "        api: \"openai-responses\",\n"
                 "        models: [\n"
                 "          {\n"
                 "            id: \"m\",\n"
                 "            name: \"M\",\n"
                 "            reasoning: false,\n"
                 "            contextWindow: \"big\",\n"
                 "          },\n"
                 "        ],\n"
                 "      },\n"
                 "    },\n"
                 "  },\n"
                 "}\n",
                 "cfg.json5:12:28: models.providers.lmstudio.models[0].contextWindow: expected a positive "
                 "integer, got \"big\"");
}

MG_TEST(head_limits_content_logging_and_http2)
{
    mg_config_t *cfg = load_ok(ONE_PROVIDER("http://h", "gateway: {}"));
    if (cfg) { /* the defaults */
        MG_CHECK_INT(cfg->gw.header_timeout_ms, 30000);
        MG_CHECK_INT((long long)cfg->gw.max_header_bytes, 16384);
        MG_CHECK(!cfg->gw.log_content && cfg->gw.log_content_max_bytes == 4096);
        MG_CHECK(!cfg->providers[0].http2);
        mg_config_free(cfg);
    }
    cfg = load_ok(ONE_PROVIDER("https://h", "gateway: {headerTimeoutMs: 5000, maxHeaderBytes: 8192, "
                                            "log: {content: true, contentMaxBytes: 100}, "
                                            "providers: {p: {http2: true, caFile: 'ca/internal.pem'}}}"));
    if (cfg) {
        MG_CHECK_INT(cfg->gw.header_timeout_ms, 5000);
        MG_CHECK_INT((long long)cfg->gw.max_header_bytes, 8192);
        MG_CHECK(cfg->gw.log_content && cfg->gw.log_content_max_bytes == 100);
        MG_CHECK(cfg->providers[0].http2);
        MG_CHECK_STR(cfg->providers[0].ca_file, "/etc/mg/ca/internal.pem"); /* relative to the config */
        mg_config_free(cfg);
    }
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {providers: {p: {http2: true}}}"), "true}",
                    "gateway.providers.p.http2: HTTP/2 needs an https baseUrl (cleartext h2c is not "
                    "supported); this provider's is http://h");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {headerTimeoutMs: 50}"), "50}",
                    "gateway.headerTimeoutMs: expected an integer from 100 to 3600000, got 50");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {maxHeaderBytes: 'big'}"), "'big'",
                    "gateway.maxHeaderBytes: expected an integer from 1024 to 1048576, got \"big\"");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {log: {content: 'yes'}}"), "'yes'",
                    "gateway.log.content: expected true or false, got \"yes\"");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {providers: {p: {http2: 1}}}"), "1}",
                    "gateway.providers.p.http2: expected true or false, got 1");
}

MG_TEST(got_values_are_shown_by_kind)
{
    expect_error(ONE_PROVIDER("http://h", "gateway: {threads: 65}"),
                 "cfg.json5:1:108: gateway.threads: expected an integer from 1 to 64, got 65"); /* counted */
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {threads: 1.5}"), "1.5}}",
                    "gateway.threads: expected an integer from 1 to 64, got 1.5");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {threads: {}}"), "{}}}",
                    "gateway.threads: expected an integer from 1 to 64, got an empty object");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {threads: {a: 1}}"), "{a: 1}}}",
                    "gateway.threads: expected an integer from 1 to 64, got an object");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {threads: [2]}"), "[2]}}",
                    "gateway.threads: expected an integer from 1 to 64, got an array");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {threads: true}"), "true}}",
                    "gateway.threads: expected an integer from 1 to 64, got true");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {threads: NaN}"), "NaN}}",
                    "gateway.threads: expected an integer from 1 to 64, got NaN");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {maxBodyBytes: -Infinity}"), "-Infinity}}",
                    "gateway.maxBodyBytes: expected a positive integer, got -Infinity");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {maxBodyBytes: 0}"), "0}}",
                    "gateway.maxBodyBytes: expected a positive integer, got 0");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {maxBodyBytes: 1e300}"), "1e300}}",
                    "gateway.maxBodyBytes: expected a positive integer, got 1e+300");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {timeouts: {idleMs: -0.25}}"), "-0.25",
                 "gateway.timeouts.idleMs: expected a non-negative integer, got -0.25");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {listen: 'a \"quoted\"\\n name'}"), "'a",
                 "gateway.listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:8787\" or "
                 "\"[::1]:8787\", port 1-65535), got \"a \\\"quoted\\\"\\n name\"");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {policy: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', policy: 5}"), "5}",
                 "gateway.policy: expected a non-empty string, got 5");
    /* columns count characters (38 é before it: 76 bytes), as editors show them */
    expect_error("{gateway: {log: {path: 'éééééééééééééééééééééééééééééééééééééé'}, threads: 0}}",
                 "cfg.json5:1:76: gateway.threads: expected an integer from 1 to 64, got 0");
    expect_error_at("{models: {mode: 'replace', providers: {p: {baseUrl: 'http://h', models: [{id: 'm', name: "
                 "'ééééééééééééééééééééééééééééééééééééééééé', contextWindow: 'ééééééééééééééééééééééééééééééééééééééééé'}]}}}}",
                 "'ééééééééééééééééééééééééééééééééééééééééé'}", "models.providers.p.models[0].contextWindow: expected a positive integer, got "
                 "\"éééééééééééééééééééééééééééééé...\"");
}

MG_TEST(syntax_errors_and_unreadable_files)
{
    expect_error("{\n  models: {\n    mode: 'merge\n  },\n}", "cfg.json5:3:11: syntax: unterminated string");
    expect_error("", "cfg.json5:1:1: syntax: unexpected end of input");
    expect_error("[]", "cfg.json5:1:1: expected an object at the top level, got an empty array");
    mg_config_t *cfg = mg_config_load("/nonexistent/moongate.json5", err, sizeof err);
    MG_CHECK(cfg == NULL);
    MG_CHECK_STR(err, "/nonexistent/moongate.json5: cannot read: No such file or directory");
    cfg = mg_config_load("/", err, sizeof err);
    MG_CHECK(cfg == NULL);
    MG_CHECK_STR(err, "/: cannot read: Is a directory");
}

MG_TEST(unknown_openclaw_keys_warn_and_gateway_typos_fail)
{
    const char *text = "{\n"
                               "  channels: { whatsapp: {} },\n"
                               "  models: {\n"
                               "    bedrock: true,\n"
                               "    providers: {\n"
                               "      x: { baseUrl: 'http://10.0.0.2/v1', auth: 'token', models: [\n"
                               "        { id: 'm', compat: {}, cost: { input: 1, tier: 2 } },\n"
                               "      ] },\n"
                               "    },\n"
                               "  },\n"
                               "  agents: { list: [], defaults: { workspace: '~/w', models: {\n"
                               "    'x/m': { alias: 'M', params: {} } } } },\n"
                               "}";
    mg_config_t *cfg = load_ok(text);
    if (!cfg) return;
    static const char *const want[][2] = {
        {"channels", "channels: unknown key ignored"},
        {"bedrock", "models.bedrock: unknown key ignored"},
        {"auth", "models.providers.x.auth: unknown key ignored"},
        {"compat", "models.providers.x.models[0].compat: unknown key ignored"},
        {"tier", "models.providers.x.models[0].cost.tier: unknown key ignored"},
        {"list", "agents.list: unknown key ignored"},
        {"workspace", "agents.defaults.workspace: unknown key ignored"},
        {"params", "agents.defaults.models[\"x/m\"].params: unknown key ignored"},
    };
    MG_CHECK_INT(cfg->n_warnings, MG_ARRAY_LEN(want));
    for (size_t i = 0; i < MG_ARRAY_LEN(want) && i < cfg->n_warnings; i++) {
        char *w = at(text, want[i][0], want[i][1]);
        MG_CHECK_STR(cfg->warnings[i], w);
        free(w);
    }
    MG_CHECK(mg_config_find_model(cfg, "M") == mg_config_find_model(cfg, "x/m"));
    MG_CHECK(mg_config_find_model(cfg, "x/m")->cost.input == 1);
    mg_config_free(cfg);

    expect_error("{\n  gateway: { lisen: '0.0.0.0:80' },\n}", "cfg.json5:2:14: gateway.lisen: unknown key");
    /* A whole openclaw.json: OpenClaw's own gateway settings sit beside moongate's, ignored. */
    const char *whole = "{\n  gateway: { port: 18789, bind: 'loopback', auth: { mode: 'token', token: 'x' },\n"
                        "             listen: '127.0.0.1:8788' },\n"
                        "  models: { mode: 'replace', providers: { p: { baseUrl: 'http://127.0.0.1:1/v1', models: [{ id: 'm' }] } } },\n}";
    cfg = load_ok(whole);
    if (cfg) {
        MG_CHECK_INT(cfg->n_warnings, 3);
        const char *keys[] = {"port", "bind", "auth"};
        for (size_t i = 0; i < 3 && i < cfg->n_warnings; i++) {
            char *rest = mg_xasprintf("gateway.%s: an OpenClaw gateway setting, not moongate's: ignored", keys[i]);
            char *w = at(whole, keys[i], rest);
            MG_CHECK_STR(cfg->warnings[i], w);
            free(w);
            free(rest);
        }
        MG_CHECK_INT(cfg->gw.listen_port, 8788);
        mg_config_free(cfg);
    }
    /* OpenClaw keeps adding gateway settings: those known are ignored by name; in a block that holds
     * one of them (OpenClaw's block), an unknown key is taken for a newer one, unless it looks like
     * a typo of one of moongate's. */
    const char *newer = "{\n  gateway: { mode: 'local', allowRealIpFallback: false, handshakeTimeoutMs: 15000,\n"
                        "             channelMaxRestartsPerHour: 10, someFutureSetting: {a: 1}, listen: '127.0.0.1:8788' },\n}";
    cfg = load_ok(newer);
    if (cfg) {
        MG_CHECK_INT(cfg->n_warnings, 5);
        const char *keys[] = {"mode", "allowRealIpFallback", "handshakeTimeoutMs", "channelMaxRestartsPerHour"};
        for (size_t i = 0; i < 4 && i < cfg->n_warnings; i++) {
            char *rest = mg_xasprintf("gateway.%s: an OpenClaw gateway setting, not moongate's: ignored", keys[i]);
            char *w = at(newer, keys[i], rest);
            MG_CHECK_STR(cfg->warnings[i], w);
            free(w);
            free(rest);
        }
        char *w = at(newer, "someFutureSetting",
                     "gateway.someFutureSetting: unknown key ignored: not moongate's, so taken for a setting of "
                     "OpenClaw's gateway (this block has OpenClaw's)");
        MG_CHECK_STR(cfg->n_warnings == 5 ? cfg->warnings[4] : NULL, w);
        free(w);
        MG_CHECK_INT(cfg->gw.listen_port, 8788);
        mg_config_free(cfg);
    }
    expect_error("{gateway: {port: 18789, lisen: '0.0.0.0:80'}}",
                 "cfg.json5:1:25: gateway.lisen: unknown key (did you mean \"listen\"?)");
    expect_error("{gateway: {bind: 'lan', MaxBodybytes: 10}}",
                 "cfg.json5:1:25: gateway.MaxBodybytes: unknown key (did you mean \"maxBodyBytes\"?)");
    expect_error("{gateway: {tools: {}, allowedRegion: ['eu']}}",
                 "cfg.json5:1:23: gateway.allowedRegion: unknown key (did you mean \"allowedRegions\"?)");
    expect_error("{gateway: {someFutureSetting: 1}}", "cfg.json5:1:12: gateway.someFutureSetting: unknown key");
    expect_error("{gateway: {timeouts: {idle: 5}}}", "cfg.json5:1:23: gateway.timeouts.idle: unknown key");
    expect_error("{gateway: {log: {file: 'x'}}}", "cfg.json5:1:18: gateway.log.file: unknown key");
    expect_error("{gateway: {providers: {openai: {regoin: 'us'}}}}",
                 "cfg.json5:1:33: gateway.providers.openai.regoin: unknown key");
}

MG_TEST(merge_overrides_builtin_provider_and_merges_models)
{
    mg_config_t *cfg = load_ok("{models: {providers: {anthropic: {\n"
                               "  baseUrl: 'https://proxy.example.com/anthropic//',\n"
                               "  models: [\n"
                               "    {id: 'claude-opus-4-6', name: 'Opus via proxy', contextWindow: 100000},\n"
                               "    {id: 'claude-next'},\n"
                               "  ]}}}}");
    if (!cfg) return;
    const mg_provider_t *a = mg_config_find_provider(cfg, "anthropic");
    MG_CHECK_INT(cfg->n_providers, 2);
    MG_CHECK(a && a->builtin);
    if (!a) goto done;
    MG_CHECK_STR(a->base_url, "https://proxy.example.com/anthropic");
    MG_CHECK_INT(a->api, MG_API_ANTHROPIC_MESSAGES); /* not overridden: kept */
    MG_CHECK_STR(a->api_key_env, "ANTHROPIC_API_KEY");
    MG_CHECK_INT(a->n_models, 4);
    const mg_model_t *opus = mg_config_find_model(cfg, "anthropic/claude-opus-4-6");
    /* the fields the entry names win; the others keep the built-in values */
    MG_CHECK(opus && !opus->builtin && opus->context_window == 100000 && opus->max_tokens == 32000);
    MG_CHECK_STR(opus ? opus->name : NULL, "Opus via proxy");
    MG_CHECK(opus && opus->input == (MG_INPUT_TEXT | MG_INPUT_IMAGE) && opus->reasoning);
    MG_CHECK(opus && opus->cost.input == 5 && opus->cost.output == 25 && opus->cost.cache_write == 6.25);
    const mg_model_t *sonnet = mg_config_find_model(cfg, "anthropic/claude-sonnet-4-5");
    MG_CHECK(sonnet && sonnet->builtin && sonnet->max_tokens == 64000 && sonnet->input == (MG_INPUT_TEXT | MG_INPUT_IMAGE));
    MG_CHECK(sonnet && sonnet->cost.input == 3 && sonnet->cost.cache_write == 3.75);
    const mg_model_t *next = mg_config_find_model(cfg, "claude-next");
    MG_CHECK(next && next->provider == a && !strcmp(next->ref, "anthropic/claude-next"));
    MG_CHECK(next && next->max_tokens == 8192 && next->input == MG_INPUT_TEXT); /* a new id: the defaults */
done:
    mg_config_free(cfg);

    /* an override may set only the key, without models */
    setenv("MG_TEST_ANTHROPIC", "sk-ant-test", 1);
    cfg = load_ok("{models: {providers: {anthropic: {apiKey: '${MG_TEST_ANTHROPIC}'}}}}");
    if (cfg) {
        a = mg_config_find_provider(cfg, "anthropic");
        MG_CHECK_STR(a->api_key, "sk-ant-test");
        MG_CHECK_STR(a->api_key_env, "MG_TEST_ANTHROPIC");
        MG_CHECK_INT(a->n_models, 3);
        MG_CHECK_INT(cfg->n_warnings, 0);
        mg_config_free(cfg);
    }
    unsetenv("MG_TEST_ANTHROPIC");
}

/* A built-in provider pointed at a plain-http server (merge mode) does not carry the built-in key
 * there unless the config gives it again: it would reach whatever now answers at that address. */
/* OpenAI's API, whose reasoning models refuse max_tokens: its host, Azure's, or the id "openai"
 * unless that provider is local (a local server under the name knows max_tokens only). */
MG_TEST(openai_host)
{
    static const struct {
        const char *text;
        bool want;
    } cases[] = {
        {"{models: {mode: 'replace', providers: {x: {baseUrl: 'https://api.openai.com/v1', models: [{id: 'm'}]}}}}", true},
        {"{models: {mode: 'replace', providers: {x: {baseUrl: 'https://my.openai.azure.com/v1', models: [{id: 'm'}]}}}}", true},
        {"{models: {mode: 'replace', providers: {openai: {baseUrl: 'https://proxy.example.com/v1', models: [{id: 'm'}]}}}}", true},
        {"{models: {mode: 'replace', providers: {openai: {baseUrl: 'http://127.0.0.1:1234/v1', models: [{id: 'm'}]}}}}", false},
        {"{models: {mode: 'replace', providers: {x: {baseUrl: 'https://api.deepseek.com/v1', models: [{id: 'm'}]}}}}", false},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        mg_config_t *cfg = load_ok(cases[i].text);
        MG_CHECK(cfg && cfg->providers[0].openai_host == cases[i].want);
        mg_config_free(cfg);
    }
}

MG_TEST(anthropic_betas_are_flags)
{
    mg_config_t *cfg = load_ok(ONE_PROVIDER("http://h", "gateway: {providers: {p: {anthropicBetas: ['context-1m-2025-08-07']}}}"));
    MG_CHECK(cfg && cfg->providers[0].n_betas == 1 && !strcmp(cfg->providers[0].betas[0], "context-1m-2025-08-07"));
    mg_config_free(cfg);
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {providers: {p: {anthropicBetas: ['Bad Flag']}}}"), "['Bad",
                    "gateway.providers.p.anthropicBetas: \"Bad Flag\" is not an anthropic-beta flag (lowercase "
                    "letters, digits, '.' and '-')");
}

MG_TEST(a_moved_builtin_provider_leaves_its_key_behind)
{
    /* load() clears the hosted keys from the environment: load the string directly */
    setenv("OPENAI_API_KEY", "sk-real-openai", 1);
    static const char *const texts[] = {
        "{models: {providers: {openai: {baseUrl: 'http://127.0.0.1:1234/v1', api: 'openai-completions', "
        "models: [{id: 'local'}]}}}}",
        /* given again, an https proxy, or the host unchanged: the key stays */
        "{models: {providers: {openai: {baseUrl: 'https://proxy.example.com/v1', models: [{id: 'x'}]}}}}",
        "{models: {providers: {openai: {baseUrl: 'http://127.0.0.1:1234/v1', apiKey: '${OPENAI_API_KEY}', "
        "models: [{id: 'local'}]}}}}",
        "{models: {providers: {openai: {models: [{id: 'extra'}]}}}}",
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(texts); i++) {
        mg_config_t *cfg = mg_config_load_string(texts[i], strlen(texts[i]), "cfg.json5", "/etc/mg", err, sizeof err);
        MG_CHECK(cfg != NULL);
        if (!cfg) continue;
        const mg_provider_t *p = mg_config_find_provider(cfg, "openai");
        MG_CHECK((p->api_key == NULL) == (i == 0));
        MG_CHECK_INT(cfg->n_warnings, i == 0);
        if (i == 0 && cfg->n_warnings)
            MG_CHECK(strstr(cfg->warnings[0], "the built-in key (OPENAI_API_KEY) is not sent to it") != NULL);
        mg_config_free(cfg);
    }
    unsetenv("OPENAI_API_KEY");
}

MG_TEST(replace_mode_has_only_declared_providers)
{
    mg_config_t *cfg = load_ok(ONE_PROVIDER("http://127.0.0.1:9/", ""));
    if (!cfg) return;
    MG_CHECK_INT(cfg->mode, MG_MODE_REPLACE);
    MG_CHECK_INT(cfg->n_providers, 1);
    MG_CHECK(mg_config_find_provider(cfg, "anthropic") == NULL);
    MG_CHECK_STR(cfg->providers[0].base_url, "http://127.0.0.1:9");
    mg_config_free(cfg);
    expect_error_at(ONE_PROVIDER("http://h", "agents: {defaults: {model: 'anthropic/claude-opus-4-6'}}"),
                 "'anthropic/", "agents.defaults.model: unknown model \"anthropic/claude-opus-4-6\" (not a "
                 "provider/id, an alias or a model id)");
    expect_error("{models: {mode: 'mix'}}",
                 "cfg.json5:1:17: models.mode: expected \"merge\" or \"replace\", got \"mix\"");
    expect_error("{models: {mode: 'replace', providers: {anthropic: {apiKey: 'x'}}}}",
                 "cfg.json5:1:51: models.providers.anthropic.baseUrl: required key missing");
    cfg = load_ok("{models: {mode: 'replace'}}");
    MG_CHECK(cfg && cfg->n_providers == 0);
    mg_config_free(cfg);
    /* an empty config is fine: the built-ins and no default chain */
    cfg = load_ok("{}");
    MG_CHECK(cfg && cfg->n_providers == 2 && cfg->n_default_chain == 0 && cfg->n_warnings == 0);
    mg_config_free(cfg);
}

MG_TEST(provider_fields_are_validated)
{
    expect_error("{models: {providers: {x: {models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:26: models.providers.x.baseUrl: required key missing");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h'}}}}",
                 "cfg.json5:1:26: models.providers.x.models: required key missing");
    expect_error_at("{models: {providers: {x: {baseUrl: 'http://h', models: []}}}}", "[]",
                 "models.providers.x.models: expected at least one model");
    expect_error_at("{models: {providers: {x: {baseUrl: 'http://h', models: {}}}}}", "{}}",
                 "models.providers.x.models: expected an array, got an empty object");
    expect_error("{models: {providers: {x: {baseUrl: 'ftp://h', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:36: models.providers.x.baseUrl: expected an http:// or https:// URL, got \"ftp://h\"");
    expect_error("{models: {providers: {x: {baseUrl: 'http:///v1', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:36: models.providers.x.baseUrl: expected an http:// or https:// URL, got \"http:///v1\"");
    expect_error("{models: {providers: {x: {baseUrl: 'http://a b', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:36: models.providers.x.baseUrl: expected an http:// or https:// URL, got \"http://a b\"");
    expect_error_at("{models: {providers: {x: {baseUrl: 'http://h', api: 'ollama', models: [{id: 'm'}]}}}}",
                 "'ollama'", "models.providers.x.api: expected \"openai-completions\", \"openai-responses\" "
                 "or \"anthropic-messages\", got \"ollama\"");
    expect_error("{models: {providers: {'a/b': {baseUrl: 'http://h', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:23: models.providers[\"a/b\"]: a provider id must be non-empty and without '/'");
    expect_error("{models: {providers: {x: 'http://h'}}}",
                 "cfg.json5:1:26: models.providers.x: expected an object, got \"http://h\"");
    expect_error("{models: {providers: []}}", "cfg.json5:1:22: models.providers: expected an object, got an empty array");

    mg_config_t *cfg = load_ok("{models: {mode: 'replace', providers: {x: {baseUrl: 'HTTPS://H.example/v1/', "
                               "api: 'anthropic-messages', models: [{id: 'm'}]}}}}");
    if (cfg) {
        MG_CHECK_STR(cfg->providers[0].base_url, "HTTPS://H.example/v1");
        MG_CHECK_INT(cfg->providers[0].api, MG_API_ANTHROPIC_MESSAGES);
        MG_CHECK(cfg->providers[0].api_key == NULL && cfg->providers[0].api_key_env == NULL);
        mg_config_free(cfg);
    }
    cfg = load_ok("{models: {mode: 'replace', providers: {x: {baseUrl: 'http://h', models: [{id: 'm'}]}}}}");
    MG_CHECK(cfg && cfg->providers[0].api == MG_API_OPENAI_COMPLETIONS);
    mg_config_free(cfg);
}

/* An adminKey whose variable is unset or empty fails the load: the admin endpoints would
 * otherwise be open to every loopback client, as if no key had been asked for. */
MG_TEST(admin_key_from_an_unset_variable_is_an_error)
{
    unsetenv("MG_TEST_UNSET");
    setenv("MG_TEST_EMPTY", "", 1);
    setenv("MG_TEST_ADMIN", "adm-1", 1);
    const char *unset = ONE_PROVIDER("http://h", "gateway: {adminKey: '${MG_TEST_UNSET}'}");
    expect_error_at(unset, "'${MG_TEST_UNSET}'",
                    "gateway.adminKey: environment variable MG_TEST_UNSET is not set (or empty): the admin endpoints would have no key");
    expect_error_at(ONE_PROVIDER("http://h", "gateway: {adminKey: '${MG_TEST_EMPTY}'}"), "'${MG_TEST_EMPTY}'",
                    "gateway.adminKey: environment variable MG_TEST_EMPTY is not set (or empty): the admin endpoints would have no key");
    mg_config_t *cfg = load_ok(ONE_PROVIDER("http://h", "gateway: {adminKey: '${MG_TEST_ADMIN}'}"));
    if (cfg) MG_CHECK_STR(cfg->gw.admin_key, "adm-1");
    mg_config_free(cfg);
    unsetenv("MG_TEST_EMPTY");
    unsetenv("MG_TEST_ADMIN");
}

MG_TEST(api_keys_from_the_environment)
{
    setenv("MG_TEST_KEY", "sk-from-env", 1);
    unsetenv("MG_TEST_UNSET");
    const char *text = "{models: {mode: 'replace', providers: {\n"
                               "  a: {baseUrl: 'https://a.example', apiKey: '${MG_TEST_KEY}', models: [{id: 'm'}]},\n"
                               "  b: {baseUrl: 'https://b.example', apiKey: '${MG_TEST_UNSET}', models: [{id: 'm'}]},\n"
                               "  c: {baseUrl: 'http://localhost:1/v1', apiKey: 'sk-local', models: [{id: 'm'}]},\n"
                               "  d: {baseUrl: 'https://d.example', apiKey: 'sk-literal', models: [{id: 'm'}]},\n"
                               "  e: {baseUrl: 'https://e.example', apiKey: '', models: [{id: 'm'}]},\n"
                               "  f: {baseUrl: 'https://f.example', apiKey: null, models: [{id: 'm'}]},\n"
                               "}}}";
    mg_config_t *cfg = load_ok(text);
    if (!cfg) return;
    const mg_provider_t *p = mg_config_find_provider(cfg, "a");
    MG_CHECK_STR(p->api_key, "sk-from-env");
    MG_CHECK_STR(p->api_key_env, "MG_TEST_KEY");
    p = mg_config_find_provider(cfg, "b");
    MG_CHECK(p->api_key == NULL);
    MG_CHECK_STR(p->api_key_env, "MG_TEST_UNSET");
    MG_CHECK_STR(mg_config_find_provider(cfg, "c")->api_key, "sk-local");
    MG_CHECK_STR(mg_config_find_provider(cfg, "d")->api_key, "sk-literal");
    MG_CHECK(mg_config_find_provider(cfg, "e")->api_key == NULL);
    MG_CHECK(mg_config_find_provider(cfg, "f")->api_key == NULL);
    MG_CHECK_INT(cfg->n_warnings, 2);
    if (cfg->n_warnings == 2) {
        char *w = at(text, "'${MG_TEST_UNSET}'", "models.providers.b.apiKey: environment variable MG_TEST_UNSET is not set");
        MG_CHECK_STR(cfg->warnings[0], w);
        free(w);
        w = at(text, "'sk-literal'", "models.providers.d.apiKey: a literal key for a hosted provider; prefer \"${ENV_NAME}\"");
        MG_CHECK_STR(cfg->warnings[1], w);
        free(w);
    }
    mg_config_free(cfg);

    /* OpenClaw's substitution: "${NAME}" anywhere in the string (baseUrl too), "$${" for a
     * literal "${", and its SecretRef {source: "env", id}; one unset NAME leaves no key. */
    setenv("MG_TEST_KEY", "k1", 1);
    setenv("MG_TEST_HOST", "127.0.0.1:9", 1);
    const char *subst = "{models: {mode: 'replace', providers: {\n"
                        "  x: {baseUrl: 'http://${MG_TEST_HOST}/v1', apiKey: 'sk-${MG_TEST_KEY}-$${LIT}', models: [{id: 'm'}]},\n"
                        "  y: {baseUrl: 'https://y.example', apiKey: {source: 'env', provider: 'default', id: 'MG_TEST_KEY'}, models: [{id: 'm'}]},\n"
                        "  z: {baseUrl: 'https://z.example', apiKey: 'Bearer ${MG_TEST_KEY}${MG_TEST_UNSET}', models: [{id: 'm'}]},\n"
                        "}}}";
    cfg = load_ok(subst);
    if (cfg) {
        p = mg_config_find_provider(cfg, "x");
        MG_CHECK_STR(p->base_url, "http://127.0.0.1:9/v1");
        MG_CHECK_STR(p->api_key, "sk-k1-${LIT}");
        MG_CHECK_STR(p->api_key_env, "MG_TEST_KEY");
        p = mg_config_find_provider(cfg, "y");
        MG_CHECK_STR(p->api_key, "k1");
        MG_CHECK_STR(p->api_key_env, "MG_TEST_KEY");
        p = mg_config_find_provider(cfg, "z");
        MG_CHECK(p->api_key == NULL);
        MG_CHECK_STR(p->api_key_env, "MG_TEST_UNSET");
        MG_CHECK_INT(cfg->n_warnings, 1);
        char *w = at(subst, "'Bearer", "models.providers.z.apiKey: environment variable MG_TEST_UNSET is not set");
        MG_CHECK_STR(cfg->n_warnings ? cfg->warnings[0] : NULL, w);
        free(w);
        mg_config_free(cfg);
    }
    const char *bad = "{models: {providers: {x: {baseUrl: '${MG_TEST_UNSET}/v1', models: [{id: 'm'}]}}}}";
    expect_error_at(bad, "'${", "models.providers.x.baseUrl: environment variable MG_TEST_UNSET is not set");
    bad = "{models: {providers: {x: {baseUrl: 'http://h', apiKey: {source: 'file', id: 'K'}, models: [{id: 'm'}]}}}}";
    expect_error_at(bad, "{source",
                    "models.providers.x.apiKey: only {source: \"env\", id: \"NAME\"} secret references are read here "
                    "(or \"${NAME}\"); source \"file\" is not supported");
    bad = "{models: {providers: {x: {baseUrl: 'http://h', apiKey: {source: 'env'}, models: [{id: 'm'}]}}}}";
    expect_error_at(bad, "{source",
                    "models.providers.x.apiKey: a secret reference needs id: the name of an environment variable");
    unsetenv("MG_TEST_HOST");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', apiKey: '${NOT A NAME}', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:56: models.providers.x.apiKey: a \"${\" must start \"${NAME}\", NAME made of "
                 "letters, digits and _ (write \"$${\" for a literal \"${\")");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', apiKey: 'sk-${unclosed', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:56: models.providers.x.apiKey: a \"${\" must start \"${NAME}\", NAME made of "
                 "letters, digits and _ (write \"$${\" for a literal \"${\")");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', apiKey: 42, models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:56: models.providers.x.apiKey: expected a string, got 42");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', apiKey: 'a\\r\\nX-Evil: 1', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:56: models.providers.x.apiKey: contains a control character");
    setenv("MG_TEST_KEY", "line1\nline2", 1);
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', apiKey: '${MG_TEST_KEY}', models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:56: models.providers.x.apiKey: environment variable MG_TEST_KEY contains a control "
                 "character");
    unsetenv("MG_TEST_KEY");
}

MG_TEST(headers)
{
    setenv("MG_TEST_ORG", "org-123", 1);
    unsetenv("MG_TEST_NOPE");
    mg_config_t *cfg = load_ok("{models: {mode: 'replace', providers: {x: {baseUrl: 'http://h', headers: {\n"
                               "  'X-Title': 'moongate', 'OpenAI-Organization': '${MG_TEST_ORG}', 'X-Gone': '${MG_TEST_NOPE}'},\n"
                               "  models: [{id: 'm'}]}}}}");
    if (cfg) {
        const mg_provider_t *p = &cfg->providers[0];
        MG_CHECK_INT(p->n_headers, 2);
        if (p->n_headers == 2) {
            MG_CHECK_STR(p->headers[0].name, "X-Title");
            MG_CHECK_STR(p->headers[0].value, "moongate");
            MG_CHECK_STR(p->headers[1].name, "OpenAI-Organization");
            MG_CHECK_STR(p->headers[1].value, "org-123");
        }
        MG_CHECK_INT(cfg->n_warnings, 1);
        MG_CHECK_STR(cfg->warnings[0],
                     "cfg.json5:2:77: models.providers.x.headers[\"X-Gone\"]: environment variable MG_TEST_NOPE is not set");
        mg_config_free(cfg);
    }
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', headers: {'Bad Name': 'v'}, models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:58: models.providers.x.headers[\"Bad Name\"]: not a valid header name");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', headers: {'X-A': 'v\\r\\nX-Injected: 1'}, models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:65: models.providers.x.headers[\"X-A\"]: contains a control character");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', headers: {'X-A': 1}, models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:65: models.providers.x.headers[\"X-A\"]: expected a string, got 1");
    expect_error("{models: {providers: {x: {baseUrl: 'http://h', headers: ['X-A'], models: [{id: 'm'}]}}}}",
                 "cfg.json5:1:57: models.providers.x.headers: expected an object, got an array");
    unsetenv("MG_TEST_ORG");
}

MG_TEST(model_entries)
{
    mg_config_t *cfg = load_ok("{models: {mode: 'replace', providers: {x: {baseUrl: 'http://h', models: [\n"
                               "  {id: 'plain'},\n"
                               "  {id: 'full', name: 'Full', reasoning: true, input: ['text', 'image'],\n"
                               "   cost: {input: 0.5, output: 2, cacheRead: 0.05, cacheWrite: 1e-1},\n"
                               "   contextWindow: 0x40000, maxTokens: 32000.0},\n"
                               "]}}}}");
    if (cfg) {
        const mg_model_t *m = mg_config_find_model(cfg, "x/plain");
        MG_CHECK(m != NULL);
        if (m) {
            MG_CHECK_STR(m->name, "plain");
            MG_CHECK(!m->reasoning && m->input == MG_INPUT_TEXT);
            MG_CHECK_INT(m->context_window, 128000);
            MG_CHECK_INT(m->max_tokens, 8192);
            MG_CHECK(m->cost.input == 0 && m->cost.output == 0 && m->cost.cache_read == 0 && m->cost.cache_write == 0);
        }
        m = mg_config_find_model(cfg, "full");
        MG_CHECK(m != NULL);
        if (m) {
            MG_CHECK_STR(m->name, "Full");
            MG_CHECK(m->reasoning && m->input == (MG_INPUT_TEXT | MG_INPUT_IMAGE));
            MG_CHECK(m->cost.input == 0.5 && m->cost.output == 2 && m->cost.cache_read == 0.05 && m->cost.cache_write == 0.1);
            MG_CHECK_INT(m->context_window, 262144);
            MG_CHECK_INT(m->max_tokens, 32000);
        }
        mg_config_free(cfg);
    }
#define MODELS(list) "{models: {providers: {x: {baseUrl: 'http://h', models: [" list "]}}}}"
    expect_error_at(MODELS("{name: 'no id'}"), "{name", "models.providers.x.models[0].id: required key missing");
    expect_error_at(MODELS("{id: ''}"), "''", "models.providers.x.models[0].id: expected a non-empty string, got \"\"");
    expect_error_at(MODELS("'m'"), "'m'", "models.providers.x.models[0]: expected an object, got \"m\"");
    expect_error_at(MODELS("{id: 'm'}, {id: 'n'}, {id: 'm'}"), "'m'}]",
                 "models.providers.x.models[2].id: duplicate model id \"m\"");
    expect_error_at(MODELS("{id: 'm', reasoning: 'yes'}"), "'yes'",
                 "models.providers.x.models[0].reasoning: expected true or false, got \"yes\"");
    expect_error_at(MODELS("{id: 'm', input: ['text', 'audio']}"), "'audio'",
                 "models.providers.x.models[0].input[1]: expected \"text\" or \"image\", got \"audio\"");
    expect_error_at(MODELS("{id: 'm', input: []}"), "[]",
                 "models.providers.x.models[0].input: expected a non-empty array of \"text\" and "
                 "\"image\", got an empty array");
    expect_error_at(MODELS("{id: 'm', cost: {output: -1}}"), "-1",
                 "models.providers.x.models[0].cost.output: expected a non-negative number, got -1");
    expect_error_at(MODELS("{id: 'm', cost: 0}"), "0}",
                 "models.providers.x.models[0].cost: expected an object, got 0");
    expect_error_at(MODELS("{id: 'm', maxTokens: -8192}"), "-8192",
                 "models.providers.x.models[0].maxTokens: expected a positive integer, got -8192");
#undef MODELS
}

/* OpenClaw's per-model api and headers: the model points to a copy of its provider with them;
 * the catalog, what is keyed by provider and the key rules still see one provider. */
MG_TEST(model_own_api_and_headers)
{
#define SHA64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    setenv("MG_TEST_TENANT", "acme", 1);
    unsetenv("MG_TEST_NOPE");
    const char *text = "{models: {mode: 'replace', providers: {x: {baseUrl: 'http://10.0.0.5/v1', apiKey: 'k',\n"
                       "  headers: {'X-Shared': 'provider', 'X-Title': 'mg'}, models: [\n"
                       "  {id: 'plain'},\n"
                       "  {id: 'claude', api: 'anthropic-messages', headers: {'x-shared': 'model', 'X-Tenant': '${MG_TEST_TENANT}'}},\n"
                       "  {id: 'same', api: 'openai-completions'},\n"
                       "  {id: 'gone', headers: {'X-Gone': '${MG_TEST_NOPE}'}},\n"
                       "  {id: 'resp', api: 'openai-responses'},\n"
                       "]}}},\n"
                       " gateway: {providers: {x: {region: 'eu', tags: ['gpu']}},\n"
                       "           keys: [{id: 'k1', sha256: '" SHA64 "', models: ['x/*']}]}}";
    mg_config_t *cfg = load_ok(text);
    if (cfg) {
        const mg_provider_t *p = &cfg->providers[0];
        MG_CHECK_INT(cfg->n_providers, 1);
        MG_CHECK_INT(cfg->n_own_providers, 2); /* claude and resp: same and gone change nothing */
        MG_CHECK(p->base == NULL && p->models_own);
        const mg_model_t *plain = mg_config_find_model(cfg, "x/plain"), *claude = mg_config_find_model(cfg, "x/claude"),
                         *same = mg_config_find_model(cfg, "x/same"), *gone = mg_config_find_model(cfg, "x/gone"),
                         *resp = mg_config_find_model(cfg, "x/resp");
        MG_CHECK(plain && claude && same && gone && resp);
        if (plain && claude && same && gone && resp) {
            MG_CHECK(plain->provider == p && same->provider == p && gone->provider == p);
            const mg_provider_t *c = claude->provider;
            MG_CHECK(c != p && c->base == p && mg_model_catalog_provider(claude) == p);
            MG_CHECK(c->api == MG_API_ANTHROPIC_MESSAGES && p->api == MG_API_OPENAI_COMPLETIONS);
            MG_CHECK_STR(c->id, "x");
            MG_CHECK_STR(c->base_url, "http://10.0.0.5/v1");
            MG_CHECK_STR(c->api_key, "k");
            MG_CHECK_STR(c->region, "eu");
            MG_CHECK(c->n_tags == 2 && c->n_models == 0);
            MG_CHECK_INT(c->n_headers, 3); /* the provider's, the model's over them by name */
            if (c->n_headers == 3) {
                MG_CHECK_STR(c->headers[0].name, "x-shared");
                MG_CHECK_STR(c->headers[0].value, "model");
                MG_CHECK_STR(c->headers[1].name, "X-Title");
                MG_CHECK_STR(c->headers[2].name, "X-Tenant");
                MG_CHECK_STR(c->headers[2].value, "acme");
            }
            MG_CHECK(resp->provider->api == MG_API_OPENAI_RESPONSES && resp->provider->n_headers == 2);
            /* one provider for health: the copies' endpoint is the provider's */
            MG_CHECK(mg_health_endpoint(c) == mg_health_endpoint(p));
            MG_CHECK(mg_health_endpoint(resp->provider) == mg_health_endpoint(p));
            /* a key allowed every model of x may use those with their own copy */
            const mg_key_t *k = mg_keys_at(cfg->gw.keys, 0);
            MG_CHECK(mg_keys_allows_model(k, claude) && mg_keys_allows_model(k, plain));
        }
        MG_CHECK_INT(cfg->n_warnings, 1);
        char *w = at(text, "'${MG_TEST_NOPE}'", "models.providers.x.models[3].headers[\"X-Gone\"]: environment variable "
                                                  "MG_TEST_NOPE is not set");
        MG_CHECK_STR(cfg->n_warnings ? cfg->warnings[0] : NULL, w);
        free(w);
        uint64_t ep = mg_health_endpoint(p);
        mg_config_free(cfg);
        /* a model's own api or headers changing is another endpoint for the provider */
        setenv("MG_TEST_TENANT", "globex", 1);
        cfg = load_ok(text);
        if (cfg) {
            MG_CHECK(mg_health_endpoint(&cfg->providers[0]) != ep);
            mg_config_free(cfg);
        }
    }
#define MODELS(list) "{models: {providers: {x: {baseUrl: 'http://h', models: [" list "]}}}}"
    expect_error_at(MODELS("{id: 'm', api: 'ollama'}"), "'ollama'",
                    "models.providers.x.models[0].api: expected \"openai-completions\", \"openai-responses\" or "
                    "\"anthropic-messages\", got \"ollama\"");
    expect_error_at(MODELS("{id: 'm', headers: {'Bad Name': 'v'}}"), "'Bad Name'",
                    "models.providers.x.models[0].headers[\"Bad Name\"]: not a valid header name");
    expect_error_at(MODELS("{id: 'm', headers: 'X-A: 1'}"), "'X-A: 1'",
                    "models.providers.x.models[0].headers: expected an object, got \"X-A: 1\"");
#undef MODELS
#undef SHA64
    unsetenv("MG_TEST_TENANT");
}

MG_TEST(local_detection_and_tags)
{
    static const struct {
        const char *url;
        bool local;
    } cases[] = {
        {"http://localhost:1234/v1", true},    {"http://127.0.0.1:1234/v1", true},
        {"http://127.8.9.10", true},           {"http://10.1.2.3:8000/v1", true},
        {"http://172.16.0.1", true},           {"http://172.31.255.255", true},
        {"http://172.32.0.1", false},          {"http://192.168.1.20:8080", true},
        {"http://169.254.10.10", true},        {"http://0.0.0.0:1", true},
        {"http://[::1]:8000/v1", true},        {"http://[fd00::5]", true},
        {"http://[::ffff:192.168.0.1]/", true}, {"http://[2001:db8::1]", false},
        {"http://gpu-box.local:1234", true},   {"http://NAS.LAN/v1", true},
        {"http://host.docker.internal:1234", true}, {"http://user:pw@localhost/v1", true},
        {"https://api.example.com/v1", false}, {"http://8.8.8.8", false},
        {"http://11.0.0.1", false},            {"http://evil.local.example.com", false},
        {"http://localhost.:1", true},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        mg_buf_t b = {0};
        mg_buf_printf(&b, "{models: {mode: 'replace', providers: {p: {baseUrl: '%s', models: [{id: 'm'}]}}}}",
                      cases[i].url);
        mg_config_t *cfg = load_ok(b.data);
        if (cfg) {
            if (cfg->providers[0].local != cases[i].local) fprintf(stderr, "  wrong for %s\n", cases[i].url);
            MG_CHECK(cfg->providers[0].local == cases[i].local);
            MG_CHECK_STR(cfg->providers[0].tags[0], cases[i].local ? "local" : "hosted");
        }
        mg_config_free(cfg);
        mg_buf_free(&b);
    }
    /* configured tags follow the derived one; "local" in config forces local */
    mg_config_t *cfg = load_ok("{models: {mode: 'replace', providers: {\n"
                               "  a: {baseUrl: 'https://vpn-gpu.example.com', models: [{id: 'm'}]},\n"
                               "  b: {baseUrl: 'https://b.example.com', models: [{id: 'n'}]}}},\n"
                               " gateway: {providers: {\n"
                               "  a: {tags: ['gpu', 'local', 'gpu'], region: 'eu'},\n"
                               "  b: {tags: ['cheap', 'hosted']}}}}");
    if (cfg) {
        const mg_provider_t *a = mg_config_find_provider(cfg, "a"), *b = mg_config_find_provider(cfg, "b");
        MG_CHECK(a->local);
        MG_CHECK_INT(a->n_tags, 2);
        MG_CHECK_STR(a->tags[0], "local");
        MG_CHECK_STR(a->tags[1], "gpu");
        MG_CHECK_STR(a->region, "eu");
        MG_CHECK(!b->local && b->region == NULL);
        MG_CHECK_INT(b->n_tags, 2);
        MG_CHECK_STR(b->tags[0], "hosted");
        MG_CHECK_STR(b->tags[1], "cheap");
        mg_config_free(cfg);
    }
}

MG_TEST(gateway_defaults)
{
    mg_config_t *cfg = load_ok("{}");
    if (!cfg) return;
    MG_CHECK_STR(cfg->gw.listen_host, "127.0.0.1");
    MG_CHECK_INT(cfg->gw.listen_port, 8787);
    MG_CHECK_INT(cfg->gw.max_body_bytes, 10485760);
    MG_CHECK_INT(cfg->gw.max_upstream_body_bytes, 67108864);
    MG_CHECK_INT(cfg->gw.threads, 1);
    MG_CHECK_INT(cfg->gw.max_connections, 10000);
    MG_CHECK_INT(cfg->gw.timeouts.connect_ms, 10000);
    MG_CHECK_INT(cfg->gw.timeouts.first_token_ms, 120000);
    MG_CHECK_INT(cfg->gw.timeouts.idle_ms, 60000);
    MG_CHECK_INT(cfg->gw.timeouts.total_ms, 600000);
    MG_CHECK(cfg->gw.policy_path == NULL && cfg->gw.log_path == NULL);
    mg_config_free(cfg);
}

MG_TEST(gateway_settings)
{
    mg_config_t *cfg = load_ok("{gateway: {listen: '[::1]:9000', maxBodyBytes: 1024, maxUpstreamBodyBytes: 2048,\n"
                               "  threads: 2, maxConnections: 500, policy: 'policies/route.lua', log: {path: 'logs/mg.log'},\n"
                               "  timeouts: {connectMs: 1, firstTokenMs: 2, idleMs: 3, totalMs: 0},\n"
                               "  providers: {anthropic: {timeouts: {firstTokenMs: 5000}}}}}");
    if (!cfg) return;
    MG_CHECK_STR(cfg->gw.listen_host, "::1");
    MG_CHECK_INT(cfg->gw.listen_port, 9000);
    MG_CHECK_INT(cfg->gw.max_body_bytes, 1024);
    MG_CHECK_INT(cfg->gw.max_upstream_body_bytes, 2048);
    MG_CHECK_INT(cfg->gw.threads, 2);
    MG_CHECK_INT(cfg->gw.max_connections, 500);
    MG_CHECK_STR(cfg->gw.policy_path, "/etc/mg/policies/route.lua");
    MG_CHECK_STR(cfg->gw.log_path, "/etc/mg/logs/mg.log");
    /* where the value is, for "cannot read" messages about the file (gen.c) */
    MG_CHECK_STR(cfg->gw.policy_at, "cfg.json5:2:44: gateway.policy");
    MG_CHECK(cfg->gw.error_patterns_at == NULL);
    MG_CHECK_INT(cfg->gw.timeouts.total_ms, 0);
    mg_timeouts_t t = mg_config_timeouts(cfg, mg_config_find_model(cfg, "anthropic/claude-opus-4-6"));
    MG_CHECK_INT(t.connect_ms, 1);
    MG_CHECK_INT(t.first_token_ms, 5000);
    MG_CHECK_INT(t.idle_ms, 3);
    MG_CHECK_INT(t.total_ms, 0);
    t = mg_config_timeouts(cfg, mg_config_find_model(cfg, "openai/gpt-5"));
    MG_CHECK_INT(t.first_token_ms, 2);
    t = mg_config_timeouts(cfg, NULL);
    MG_CHECK_INT(t.first_token_ms, 2);
    mg_config_free(cfg);

    cfg = load_ok("{gateway: {listen: 'gpu-box.lan:80', policy: '/opt/p.lua', log: {path: '-'}}}");
    if (cfg) {
        MG_CHECK_STR(cfg->gw.listen_host, "gpu-box.lan");
        MG_CHECK_INT(cfg->gw.listen_port, 80);
        MG_CHECK_STR(cfg->gw.policy_path, "/opt/p.lua");
        MG_CHECK(cfg->gw.log_path == NULL);
        mg_config_free(cfg);
    }
    cfg = load_ok("{gateway: {listen: '0.0.0.0:65535', policy: './p.lua'}}");
    if (cfg) {
        MG_CHECK_STR(cfg->gw.listen_host, "0.0.0.0");
        MG_CHECK_INT(cfg->gw.listen_port, 65535);
        MG_CHECK_STR(cfg->gw.policy_path, "/etc/mg/p.lua");
        mg_config_free(cfg);
    }
    static const char *bad_listen[] = {"127.0.0.1", "127.0.0.1:0", ":8080", "::1:80", "1.2.3.4:70000",
                                       "h:80x", "[::1]80", "[zz]:80", "h:", "a b:80", "h:123456"};
    for (size_t i = 0; i < MG_ARRAY_LEN(bad_listen); i++) {
        mg_buf_t b = {0}, w = {0};
        mg_buf_printf(&b, "{gateway: {listen: '%s'}}", bad_listen[i]);
        mg_buf_printf(&w, "cfg.json5:1:20: gateway.listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:8787\" or "
                          "\"[::1]:8787\", port 1-65535), got \"%s\"", bad_listen[i]);
        expect_error(b.data, w.data);
        mg_buf_free(&b);
        mg_buf_free(&w);
    }
    expect_error("{gateway: {providers: {nope: {region: 'us'}}}}",
                 "cfg.json5:1:24: gateway.providers.nope: not a provider of the catalog");
    expect_error("{gateway: {providers: {openai: {tags: 'x'}}}}",
                 "cfg.json5:1:39: gateway.providers.openai.tags: expected an array of strings, got \"x\"");
    expect_error("{gateway: {providers: {openai: {tags: ['a', '']}}}}",
                 "cfg.json5:1:45: gateway.providers.openai.tags[1]: expected a non-empty string, got \"\"");
    expect_error("{gateway: {maxConnections: 2000000}}",
                 "cfg.json5:1:28: gateway.maxConnections: expected an integer from 1 to 1000000, got 2000000");
    expect_error("{gateway: 'fast'}", "cfg.json5:1:11: gateway: expected an object, got \"fast\"");
    expect_error("{gateway: {log: '-'}}", "cfg.json5:1:17: gateway.log: expected an object, got \"-\"");
}

MG_TEST(gateway_stream_settings_and_strip_reasoning)
{
    mg_config_t *cfg = load_ok("{}");
    if (cfg) {
        MG_CHECK_INT(cfg->gw.max_event_bytes, 1048576);
        MG_CHECK_INT(cfg->gw.stream_buffer_bytes, 262144);
        MG_CHECK_INT(cfg->gw.drain_ms, 10000);
        MG_CHECK_INT(cfg->gw.keepalive_ms, 15000);
        MG_CHECK(!mg_config_find_provider(cfg, "openai")->strip_reasoning);
        mg_config_free(cfg);
    }
    cfg = load_ok("{gateway: {maxEventBytes: 4096, streamBufferBytes: 8192, drainMs: 0, keepAliveMs: 500,\n"
                  "  providers: {openai: {stripReasoning: true}}}}");
    if (cfg) {
        MG_CHECK_INT(cfg->gw.max_event_bytes, 4096);
        MG_CHECK_INT(cfg->gw.stream_buffer_bytes, 8192);
        MG_CHECK_INT(cfg->gw.drain_ms, 0);
        MG_CHECK_INT(cfg->gw.keepalive_ms, 500);
        MG_CHECK(mg_config_find_provider(cfg, "openai")->strip_reasoning);
        MG_CHECK(!mg_config_find_provider(cfg, "anthropic")->strip_reasoning);
        mg_config_free(cfg);
    }
    expect_error("{gateway: {providers: {openai: {stripReasoning: 'yes'}}}}",
                 "cfg.json5:1:49: gateway.providers.openai.stripReasoning: expected true or false, got \"yes\"");
    expect_error("{gateway: {maxEventBytes: 10}}",
                 "cfg.json5:1:27: gateway.maxEventBytes: expected an integer from 1024 to 9007199254740992, got 10");
}

MG_TEST(default_chain)
{
    const char *base = "{models: {mode: 'replace', providers: {\n"
                       "  a: {baseUrl: 'http://a', models: [{id: 'm1'}, {id: 'shared'}]},\n"
                       "  b: {baseUrl: 'http://b', models: [{id: 'm2'}, {id: 'shared'}]}}},\n";
    mg_buf_t b = {0};
    mg_buf_printf(&b, "%s agents: {defaults: {model: {primary: 'Fast', fallbacks: ['b/m2', 'm1', 'a/m1', 'fast']},\n"
                      "  models: {'a/m1': {alias: 'Fast'}}}}}", base);
    mg_config_t *cfg = load_ok(b.data);
    if (cfg) {
        MG_CHECK_INT(cfg->n_default_chain, 2);
        if (cfg->n_default_chain == 2) {
            MG_CHECK_STR(cfg->default_chain[0]->ref, "a/m1");
            MG_CHECK_STR(cfg->default_chain[1]->ref, "b/m2");
        }
        static const char *const want[][2] = {
            {"'m1', 'a/m1'", "agents.defaults.model.fallbacks[1]: a/m1 is already in the chain; dropped"},
            {"'a/m1', 'fast'", "agents.defaults.model.fallbacks[2]: a/m1 is already in the chain; dropped"},
            {"'fast'", "agents.defaults.model.fallbacks[3]: a/m1 is already in the chain; dropped"},
        };
        MG_CHECK_INT(cfg->n_warnings, 3);
        for (size_t i = 0; i < 3 && i < cfg->n_warnings; i++) {
            char *w = at(b.data, want[i][0], want[i][1]);
            MG_CHECK_STR(cfg->warnings[i], w);
            free(w);
        }
        mg_config_free(cfg);
    }
    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: 'b/m2'}}}", base);
    cfg = load_ok(b.data);
    MG_CHECK(cfg && cfg->n_default_chain == 1 && !strcmp(cfg->default_chain[0]->ref, "b/m2"));
    mg_config_free(cfg);

    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: {primary: 'shared'}}}}", base);
    expect_error_at(b.data, "'shared'}}", "agents.defaults.model.primary: model id \"shared\" is ambiguous (a/shared, "
                         "b/shared); write provider/id");
    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: {primary: 'a/m1', fallbacks: ['a/m1', 'c/m3']}}}}", base);
    expect_error_at(b.data, "'c/m3'", "agents.defaults.model.fallbacks[1]: unknown model \"c/m3\" (not a "
                         "provider/id, an alias or a model id)");
    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: {fallbacks: ['a/m1']}}}}", base);
    expect_error_at(b.data, "{fallbacks", "agents.defaults.model.primary: required key missing");
    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: ['a/m1']}}}", base);
    expect_error_at(b.data, "['a/m1']", "agents.defaults.model: expected a model name or {primary, fallbacks}, "
                         "got an array");
    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: {primary: 'a/m1', fallbacks: 'b/m2'}}}}", base);
    expect_error_at(b.data, "'b/m2'}", "agents.defaults.model.fallbacks: expected an array of model names, got \"b/m2\"");
    mg_buf_reset(&b);
    mg_buf_printf(&b, "%s agents: {defaults: {model: {primary: ''}}}}", base);
    expect_error_at(b.data, "''}", "agents.defaults.model.primary: expected a non-empty string, got \"\"");
    mg_buf_free(&b);

    /* a chain through a built-in provider whose key is unset says so */
    cfg = load_ok("{agents: {defaults: {model: 'claude-sonnet-4-5'}}}");
    if (cfg) {
        MG_CHECK_INT(cfg->n_default_chain, 1);
        MG_CHECK_INT(cfg->n_warnings, 1);
        MG_CHECK_STR(cfg->warnings[0], "cfg.json5:1:29: agents.defaults.model: anthropic/claude-sonnet-4-5 needs "
                                       "environment variable ANTHROPIC_API_KEY, which is not set");
        mg_config_free(cfg);
    }
}

MG_TEST(duplicate_keys_warn)
{
    /* A second models block pasted below the first replaces it: said, with both places. */
    expect_warning("{models: {mode: 'merge'},\n gateway: {},\n models: {mode: 'merge'}}",
                   "cfg.json5:3:2: duplicate key \"models\": it replaces the one at 1:2 (the last one wins)");
    expect_warning("{gateway: {threads: 1, threads: 2}}",
                   "cfg.json5:1:24: duplicate key \"threads\": it replaces the one at 1:12 (the last one wins)");
}

MG_TEST(aliases)
{
    expect_warning("{agents: {defaults: {models: {'nope/x': {alias: 'X'}}}}}",
                   "cfg.json5:1:31: agents.defaults.models[\"nope/x\"]: not a model of the catalog; ignored");
    expect_error("{agents: {defaults: {models: {\n"
                 "  'anthropic/claude-opus-4-6': {alias: 'Big'},\n"
                 "  'openai/gpt-5': {alias: 'Big'}}}}}",
                 "cfg.json5:3:27: agents.defaults.models[\"openai/gpt-5\"].alias: alias \"Big\" is already used for "
                 "anthropic/claude-opus-4-6");
    expect_error("{agents: {defaults: {models: {'openai/gpt-5': {alias: 'anthropic/claude-opus-4-6'}}}}}",
                 "cfg.json5:1:55: agents.defaults.models[\"openai/gpt-5\"].alias: alias "
                 "\"anthropic/claude-opus-4-6\" is already the name of a model");
    expect_error("{agents: {defaults: {models: {'openai/gpt-5': {alias: 'default'}}}}}",
                 "cfg.json5:1:55: agents.defaults.models[\"openai/gpt-5\"].alias: alias \"default\" is reserved: "
                 "it names the default chain (agents.defaults.model)");
    expect_error("{agents: {defaults: {models: {'openai/gpt-5': 'G5'}}}}",
                 "cfg.json5:1:47: agents.defaults.models[\"openai/gpt-5\"]: expected an object, got \"G5\"");
    expect_error("{agents: {defaults: {models: {'openai/gpt-5': {alias: ''}}}}}",
                 "cfg.json5:1:55: agents.defaults.models[\"openai/gpt-5\"].alias: expected a non-empty string, got \"\"");
    expect_error("{agents: {defaults: 3}}", "cfg.json5:1:21: agents.defaults: expected an object, got 3");
    /* an entry without alias is fine (OpenClaw uses these for params) */
    mg_config_t *cfg = load_ok("{agents: {defaults: {models: {'openai/gpt-5': {}}}}}");
    MG_CHECK(cfg && cfg->n_aliases == 0 && cfg->n_warnings == 0);
    mg_config_free(cfg);
}

MG_TEST(find_model_order)
{
    mg_config_t *cfg = load_ok("{models: {mode: 'replace', providers: {\n"
                               "  a: {baseUrl: 'http://a', models: [{id: 'm1'}, {id: 'dup'}, {id: 'Fast'}]},\n"
                               "  b: {baseUrl: 'http://b', models: [{id: 'dup'}, {id: 'x/y'}]}}},\n"
                               " agents: {defaults: {models: {'b/dup': {alias: 'Fast'}, 'a/m1': {alias: 'Quick'}}}}}");
    if (!cfg) return;
    const mg_model_t *m1 = mg_config_find_model(cfg, "a/m1");
    MG_CHECK(m1 && !strcmp(m1->id, "m1"));
    MG_CHECK(mg_config_find_model(cfg, "Quick") == m1);
    MG_CHECK(mg_config_find_model(cfg, "quick") == m1);
    MG_CHECK(mg_config_find_model(cfg, "QUICK") == m1);
    MG_CHECK(mg_config_find_model(cfg, "m1") == m1);
    /* the alias beats the bare id "Fast" of a */
    MG_CHECK(mg_config_find_model(cfg, "Fast") == mg_config_find_model(cfg, "b/dup"));
    MG_CHECK(mg_config_find_model(cfg, "a/Fast") != NULL);
    MG_CHECK(mg_config_find_model(cfg, "dup") == NULL); /* ambiguous */
    MG_CHECK(mg_config_find_model(cfg, "x/y") == mg_config_find_model(cfg, "b/x/y"));
    MG_CHECK(mg_config_find_model(cfg, "b/x/y") != NULL);
    MG_CHECK(mg_config_find_model(cfg, "nope") == NULL);
    MG_CHECK(mg_config_find_model(cfg, "") == NULL);
    MG_CHECK(mg_config_find_model(cfg, NULL) == NULL);
    MG_CHECK(mg_config_find_provider(cfg, "b") == &cfg->providers[1]);
    MG_CHECK(mg_config_find_provider(cfg, "c") == NULL);
    MG_CHECK(mg_config_find_provider(cfg, NULL) == NULL);
    mg_config_free(cfg);
    mg_config_free(NULL);
}

MG_TEST(api_names)
{
    MG_CHECK_STR(mg_api_name(MG_API_OPENAI_COMPLETIONS), "openai-completions");
    MG_CHECK_STR(mg_api_name(MG_API_OPENAI_RESPONSES), "openai-responses");
    MG_CHECK_STR(mg_api_name(MG_API_ANTHROPIC_MESSAGES), "anthropic-messages");
}

MG_TEST(load_from_file_resolves_paths_against_its_directory)
{
    char dir[] = "/tmp/mg_config_test.XXXXXX";
    MG_CHECK(mkdtemp(dir) != NULL);
    char *path = mg_xasprintf("%s/moongate.json5", dir);
    FILE *f = fopen(path, "w");
    MG_CHECK(f != NULL);
    if (f) {
        fputs("// moongate\n{gateway: {policy: 'policy.lua', log: {path: '../mg.log'}}}\n", f);
        fclose(f);
    }
    mg_config_t *cfg = mg_config_load(path, err, sizeof err);
    MG_CHECK(cfg != NULL);
    if (cfg) {
        char *want = mg_xasprintf("%s/policy.lua", dir), *want_log = mg_xasprintf("%s/../mg.log", dir);
        MG_CHECK_STR(cfg->path, path);
        MG_CHECK_STR(cfg->base_dir, dir);
        MG_CHECK_STR(cfg->gw.policy_path, want);
        MG_CHECK_STR(cfg->gw.log_path, want_log);
        free(want);
        free(want_log);
        mg_config_free(cfg);
    }
    /* a relative path resolves against the current directory */
    char *cwd = getcwd(NULL, 0);
    MG_CHECK(chdir(dir) == 0);
    cfg = mg_config_load("moongate.json5", err, sizeof err);
    MG_CHECK(cfg != NULL);
    if (cfg) {
        MG_CHECK_STR(cfg->path, "moongate.json5");
        MG_CHECK(cfg->gw.policy_path && cfg->gw.policy_path[0] == '/');
        MG_CHECK(cfg->gw.policy_path && strstr(cfg->gw.policy_path, "/policy.lua") != NULL);
        mg_config_free(cfg);
    }
    /* load_string without a base_dir uses the current directory */
    cfg = mg_config_load_string("{gateway: {policy: 'p.lua'}}", 28, NULL, NULL, err, sizeof err);
    MG_CHECK(cfg != NULL);
    if (cfg) {
        MG_CHECK_STR(cfg->path, "<string>");
        MG_CHECK(cfg->base_dir[0] == '/');
        mg_config_free(cfg);
    }
    mg_config_free(mg_config_load_string("{gateway: 1}", 12, NULL, "rel/dir", err, sizeof err));
    MG_CHECK_STR(err, "<string>:1:11: gateway: expected an object, got 1");
    MG_CHECK(chdir(cwd) == 0);
    free(cwd);
    remove(path);
    rmdir(dir);
    free(path);
}

MG_TEST(every_example_loads)
{
    const char *dir = MG_SOURCE_DIR "/examples";
    DIR *d = opendir(dir);
    MG_CHECK(d != NULL);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 6, ".json5") != 0) continue;
        char *path = mg_xasprintf("%s/%s", dir, e->d_name);
        mg_config_t *cfg = mg_config_load(path, err, sizeof err);
        if (!cfg) fprintf(stderr, "  %s: %s\n", e->d_name, err);
        MG_CHECK(cfg != NULL);
        /* the only acceptable warnings are about keys not set in this environment */
        for (size_t i = 0; cfg && i < cfg->n_warnings; i++) {
            if (!strstr(cfg->warnings[i], "is not set")) fprintf(stderr, "  %s\n", cfg->warnings[i]);
            MG_CHECK(strstr(cfg->warnings[i], "is not set") != NULL);
        }
        /* hosted providers take their key from the environment, never from the file */
        for (size_t k = 0; cfg && k < cfg->n_providers; k++)
            MG_CHECK(cfg->providers[k].local || cfg->providers[k].api_key == NULL || cfg->providers[k].api_key_env);
        MG_CHECK(cfg && cfg->n_default_chain >= 1);
        mg_config_free(cfg);
        free(path);
        n++;
    }
    closedir(d);
    MG_CHECK(n >= 5);
}

MG_TEST(example_scenarios)
{
    mg_config_t *cfg = mg_config_load(MG_SOURCE_DIR "/examples/hybrid.json5", err, sizeof err);
    MG_CHECK(cfg && cfg->n_default_chain == 3);
    if (cfg && cfg->n_default_chain == 3) {
        MG_CHECK_STR(cfg->default_chain[0]->ref, "anthropic/claude-sonnet-4-5");
        MG_CHECK_STR(cfg->default_chain[1]->ref, "lmstudio/minimax-m2.1-gs32");
        MG_CHECK_STR(cfg->default_chain[2]->ref, "anthropic/claude-opus-4-6");
    }
    mg_config_free(cfg);
    cfg = mg_config_load(MG_SOURCE_DIR "/examples/local-first.json5", err, sizeof err);
    MG_CHECK(cfg && cfg->n_default_chain == 3 && !strcmp(cfg->default_chain[0]->ref, "lmstudio/minimax-m2.1-gs32"));
    mg_config_free(cfg);
    cfg = mg_config_load(MG_SOURCE_DIR "/examples/lmstudio-minimax.json5", err, sizeof err);
    MG_CHECK(cfg != NULL);
    if (cfg) {
        const mg_model_t *m = mg_config_find_model(cfg, "Minimax");
        MG_CHECK(m && m->context_window == 196608 && m->max_tokens == 8192 &&
                 m->provider->api == MG_API_OPENAI_RESPONSES && !strcmp(m->provider->base_url, "http://127.0.0.1:1234/v1"));
        MG_CHECK(mg_config_find_model(cfg, "Opus") == mg_config_find_model(cfg, "anthropic/claude-opus-4-6"));
        mg_config_free(cfg);
    }
    setenv("OPENROUTER_API_KEY", "sk-or-test", 1);
    cfg = mg_config_load(MG_SOURCE_DIR "/examples/regional.json5", err, sizeof err);
    MG_CHECK(cfg != NULL);
    if (cfg) {
        const mg_provider_t *p = mg_config_find_provider(cfg, "openrouter-us");
        MG_CHECK(p && !p->local && p->region && !strcmp(p->region, "us") && p->api == MG_API_OPENAI_COMPLETIONS);
        MG_CHECK(p && p->api_key && !strcmp(p->api_key, "sk-or-test"));
        MG_CHECK(mg_config_find_provider(cfg, "lmstudio") && mg_config_find_provider(cfg, "lmstudio")->local);
        mg_config_free(cfg);
    }
    unsetenv("OPENROUTER_API_KEY");
    cfg = mg_config_load(MG_SOURCE_DIR "/examples/openai-compatible.json5", err, sizeof err);
    MG_CHECK(cfg != NULL);
    if (cfg) {
        const mg_provider_t *p = mg_config_find_provider(cfg, "local");
        MG_CHECK(p && p->local && !strcmp(p->base_url, "http://127.0.0.1:8000/v1"));
        mg_config_free(cfg);
    }
}

/* ---- cfgread.c: the reader config.c and keys.c share --------------------------------------- */

/* Each message as "E|W path: msg @node-string-or-value", one per line. */
static void record(mg_cfgread_t *r, const cJSON *node, bool at_key, bool is_error, const char *msg)
{
    mg_buf_t *log = r->ud;
    mg_buf_printf(log, "%c %s: %s%s\n", is_error ? 'E' : 'W', r->path.data ? r->path.data : "", msg,
                  at_key ? " (at key)" : "");
}

MG_TEST(cfgread_paths)
{
    mg_buf_t log = {0};
    mg_cfgread_t r = {.report = record, .ud = &log};
    size_t m0 = mg_cfgread_push_key(&r, "gateway"); /* no dot on an empty path */
    MG_CHECK_INT(m0, 0);
    MG_CHECK_STR(r.path.data, "gateway");
    size_t m1 = mg_cfgread_push_key(&r, "keys");
    mg_cfgread_push_index(&r, 12);
    mg_cfgread_push_key(&r, "$ok_1");
    MG_CHECK_STR(r.path.data, "gateway.keys[12].$ok_1");
    mg_cfgread_pop(&r, m1);
    MG_CHECK_STR(r.path.data, "gateway");
    /* keys that are not identifiers are written as JSON strings in brackets */
    static const char *const odd[][2] = {
        {"a.b", "gateway[\"a.b\"]"}, {"1a", "gateway[\"1a\"]"}, {"", "gateway[\"\"]"},
        {"x-y", "gateway[\"x-y\"]"}, {"q\"", "gateway[\"q\\\"\"]"}, {"_", "gateway._"}};
    for (size_t i = 0; i < MG_ARRAY_LEN(odd); i++) {
        size_t m = mg_cfgread_push_key(&r, odd[i][0]);
        MG_CHECK_STR(r.path.data, odd[i][1]);
        mg_cfgread_pop(&r, m);
    }
    mg_cfgread_pop(&r, 0);
    MG_CHECK_STR(r.path.data, "");
    size_t m2 = mg_cfgread_push_key(&r, "a b"); /* quoted first key: no leading dot either */
    MG_CHECK_STR(r.path.data, "[\"a b\"]");
    mg_cfgread_pop(&r, m2);
    MG_CHECK_INT(log.len, 0);
    mg_cfgread_free(&r);
    mg_buf_free(&log);
}

MG_TEST(cfgread_describe)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"\"hi\"", "\"hi\""},
        {"1.5", "1.5"},
        {"0.1", "0.1"},
        {"-3", "-3"},
        {"1e20", "1e+20"},
        {"123456789012345", "123456789012345"},
        {"true", "true"},
        {"false", "false"},
        {"null", "null"},
        {"{}", "an empty object"},
        {"{\"a\":1}", "an object"},
        {"[]", "an empty array"},
        {"[1]", "an array"},
        /* cut after 60 bytes, not inside the 2-byte "é" that straddles byte 60 */
        {"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\u00e9zz\"",
         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\""},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        cJSON *v = cJSON_Parse(cases[i].json);
        MG_CHECK(v != NULL);
        char *got = mg_cfgread_describe(v);
        MG_CHECK_STR(got, cases[i].want);
        free(got);
        cJSON_Delete(v);
    }
    char *n = mg_cfgread_describe(NULL);
    MG_CHECK_STR(n, "null");
    free(n);
    char num[40];
    mg_cfgread_format_number(NAN, num, sizeof num);
    MG_CHECK_STR(num, "NaN");
    mg_cfgread_format_number(-INFINITY, num, sizeof num);
    MG_CHECK_STR(num, "-Infinity");
    mg_cfgread_format_number(12.5, num, sizeof num);
    MG_CHECK_STR(num, "12.5");
    mg_cfgread_format_number(1e15, num, sizeof num);
    MG_CHECK_STR(num, "1e+15");
}

MG_TEST(cfgread_readers)
{
    mg_buf_t log = {0};
    mg_cfgread_t r = {.report = record, .ud = &log};
    cJSON *o = cJSON_Parse("{\"s\":\"\",\"i\":7,\"f\":2.5,\"n\":null,\"b\":true,"
                           "\"list\":[\"a\",\"b\",\"a\"],\"empty\":[],\"obj\":{\"x\":1,\"y\":2}}");
    MG_CHECK(o != NULL);
    mg_cfgread_push_key(&r, "top");
    const char *s = NULL;
    int64_t i = 0;
    double d = 0;
    bool b = false;
    MG_CHECK_INT(mg_cfgread_string(&r, o, "s", false, &s), 1);
    MG_CHECK_STR(s, "");
    MG_CHECK_INT(mg_cfgread_int(&r, o, "i", 0, 10, &i), 1);
    MG_CHECK_INT(i, 7);
    MG_CHECK_INT(mg_cfgread_int(&r, o, "n", 0, 10, &i), 0); /* null is absent */
    MG_CHECK_INT(mg_cfgread_int(&r, o, "missing", 0, 10, &i), 0);
    MG_CHECK_INT(mg_cfgread_nonneg(&r, o, "f", &d), 1);
    MG_CHECK(d == 2.5);
    MG_CHECK_INT(mg_cfgread_bool(&r, o, "b", &b), 1);
    MG_CHECK(b);
    MG_CHECK(mg_cfgread_member(o, "n") == NULL);
    char **list = NULL;
    size_t n = 0;
    MG_CHECK_INT(mg_cfgread_strings(&r, o, "list", "expected a list", "hint", true, &list, &n), 1);
    MG_CHECK_INT(n, 2); /* unique: the second "a" is dropped */
    if (n == 2) MG_CHECK(!strcmp(list[0], "a") && !strcmp(list[1], "b") && list[2] == NULL);
    for (size_t k = 0; k < n; k++) free(list[k]);
    free(list);
    list = NULL, n = 0;
    MG_CHECK_INT(mg_cfgread_strings(&r, o, "empty", "expected a list", NULL, false, &list, &n), 1);
    MG_CHECK_INT(n, 0);
    free(list);
    size_t mark = 0;
    const cJSON *obj = mg_cfgread_object(&r, o, "obj", &mark);
    MG_CHECK(obj != NULL);
    static const char *const known[] = {"x", NULL};
    MG_CHECK_INT(mg_cfgread_check_keys(&r, obj, known, false), 0); /* lenient: a warning */
    mg_cfgread_pop(&r, mark);
    MG_CHECK_STR(log.data, "W top.obj.y: unknown key ignored (at key)\n");
    MG_CHECK(!r.failed);
    mg_cfgread_free(&r);
    mg_buf_free(&log);
    cJSON_Delete(o);
}

/* Each reader's message on a bad value, and that only the first error is reported. */
MG_TEST(cfgread_errors)
{
    static const struct {
        int which;
        const char *json, *want;
    } cases[] = {
        {0, "{\"k\":\"\"}", "E top.k: expected a non-empty string, got \"\"\n"},
        {1, "{\"k\":1.5}", "E top.k: expected a positive integer, got 1.5\n"},
        {2, "{\"k\":-1}", "E top.k: expected a non-negative integer, got -1\n"},
        {3, "{\"k\":11}", "E top.k: expected an integer from 0 to 10, got 11\n"},
        {4, "{\"k\":-0.5}", "E top.k: expected a non-negative number, got -0.5\n"},
        {5, "{\"k\":\"yes\"}", "E top.k: expected true or false, got \"yes\"\n"},
        {6, "{\"k\":{}}", "E top.k: expected a list, got an empty object\n"},
        {6, "{\"k\":[]}", "E top.k: expected a non-empty array (give one)\n"},
        {6, "{\"k\":[\"a\",\"\"]}", "E top.k[1]: expected a non-empty string, got \"\"\n"},
        {7, "{\"k\":[]}", "E top.k: expected an object, got an empty array\n"},
        {8, "{\"z\":1}", "E top.z: unknown key (at key)\n"},
        {9, "{}", "E top.k: required key missing\n"},
    };
    static const char *const known[] = {"k", NULL};
    for (size_t c = 0; c < MG_ARRAY_LEN(cases); c++) {
        mg_buf_t log = {0};
        mg_cfgread_t r = {.report = record, .ud = &log};
        mg_cfgread_push_key(&r, "top");
        cJSON *o = cJSON_Parse(cases[c].json);
        const char *s;
        int64_t i;
        double d;
        bool b;
        char **list = NULL;
        size_t n = 0, mark = 0;
        int rc = 0;
        switch (cases[c].which) {
        case 0: rc = mg_cfgread_string(&r, o, "k", true, &s); break;
        case 1: rc = mg_cfgread_int(&r, o, "k", 1, MG_MAX_SAFE_INT, &i); break;
        case 2: rc = mg_cfgread_int(&r, o, "k", 0, MG_MAX_SAFE_INT, &i); break;
        case 3: rc = mg_cfgread_int(&r, o, "k", 0, 10, &i); break;
        case 4: rc = mg_cfgread_nonneg(&r, o, "k", &d); break;
        case 5: rc = mg_cfgread_bool(&r, o, "k", &b); break;
        case 6:
            rc = mg_cfgread_strings(&r, o, "k", "expected a list", "give one", false, &list, &n);
            break;
        case 7: rc = mg_cfgread_object(&r, o, "k", &mark) ? 0 : -1; break;
        case 8: rc = mg_cfgread_check_keys(&r, o, known, true); break;
        default: rc = mg_cfgread_fail_missing(&r, o, "k"); break;
        }
        MG_CHECK_INT(rc, -1);
        MG_CHECK(r.failed);
        /* a later error is dropped: the first one stands */
        MG_CHECK_INT(mg_cfgread_fail(&r, o, false, "second"), -1);
        MG_CHECK_STR(log.data, cases[c].want);
        for (size_t k = 0; k < n; k++) free(list[k]);
        free(list);
        cJSON_Delete(o);
        mg_cfgread_free(&r);
        mg_buf_free(&log);
    }
}

MG_TEST(allowed_regions)
{
    mg_config_t *cfg = load_ok("{gateway: {allowedRegions: ['eu', 'ch']}}");
    if (cfg) {
        MG_CHECK_INT(cfg->gw.n_allowed_regions, 2);
        if (cfg->gw.n_allowed_regions == 2) {
            MG_CHECK_STR(cfg->gw.allowed_regions[1], "ch");
            MG_CHECK(cfg->gw.allowed_regions[2] == NULL);
        }
        mg_config_free(cfg);
    }
    expect_error("{gateway: {allowedRegions: 'eu'}}",
                 "cfg.json5:1:28: gateway.allowedRegions: expected an array of region names, got \"eu\"");
    expect_error("{gateway: {allowedRegions: ['eu', 5]}}",
                 "cfg.json5:1:35: gateway.allowedRegions[1]: expected a non-empty string, got 5");
}

MG_TEST(allowed_hosts)
{
    mg_config_t *cfg = load_ok("{gateway: {allowedHosts: ['gw.internal.', '*']}}");
    if (cfg) {
        MG_CHECK_INT(cfg->gw.n_allowed_hosts, 2);
        if (cfg->gw.n_allowed_hosts == 2) MG_CHECK_STR(cfg->gw.allowed_hosts[0], "gw.internal"); /* final dot */
        mg_config_free(cfg);
    }
    /* A URL, a host:port or a wildcard pattern is a likely slip: refused, at the element (its
     * index in the file, repeats before it included). */
    const char *want = "gateway.allowedHosts[2]: expected a host name without port, scheme or wildcard "
                       "(\"gw.example.org\"), or \"*\" alone for any";
    char *w = mg_xasprintf("cfg.json5:1:37: %s", want);
    expect_error("{gateway: {allowedHosts: ['a', 'a', 'http://gw.internal']}}", w);
    expect_error("{gateway: {allowedHosts: ['a', 'a', 'gw:8787']}}", w);
    expect_error("{gateway: {allowedHosts: ['a', 'a', '*.example.org']}}", w);
    free(w);
}

MG_TEST_MAIN()

/* gateway.compaction: every knob, the summarizer resolved like a chain entry (alias included). */
MG_TEST(gateway_compaction_settings)
{
    mg_config_t *cfg = load_ok("{}");
    if (cfg) {
        const mg_compaction_conf_t *c = &cfg->gw.compaction;
        MG_CHECK(c->enabled && !c->drop_current_steps && c->summarizer == NULL);
        MG_CHECK_INT(c->margin_tokens, 512);
        MG_CHECK_INT(c->tool_result_max_bytes, 0); /* 0: compact.c's default */
        MG_CHECK_INT(c->n_extra_tokens, 0);
        MG_CHECK_INT(c->summary_timeout_ms, 10000);
        MG_CHECK_INT(c->summary_max_tokens, 1024);
        mg_config_free(cfg);
    }
    const char *text = "{models: {mode: 'replace', providers: {\n"
                       "  lm: {baseUrl: 'http://127.0.0.1:1234/v1', models: [{id: 'small'}, {id: 'tiny'}]}}},\n"
                       " agents: {defaults: {model: 'lm/small', models: {'lm/tiny': {alias: 'Sum'}}}},\n"
                       " gateway: {compaction: {enabled: false, marginTokens: 100, toolResultMaxBytes: 4096,\n"
                       "   messageMaxBytes: 2048, minKeepBytes: 256, dropCurrentSteps: true,\n"
                       "   extraControlTokens: ['<|custom|>', '###END', '<|custom|>'], summarizer: 'sum',\n"
                       "   summaryTimeoutMs: 2500, summaryMaxTokens: 300}}}";
    cfg = load_ok(text);
    if (cfg) {
        const mg_compaction_conf_t *c = &cfg->gw.compaction;
        MG_CHECK(!c->enabled && c->drop_current_steps);
        MG_CHECK_INT(c->margin_tokens, 100);
        MG_CHECK_INT(c->tool_result_max_bytes, 4096);
        MG_CHECK_INT(c->message_max_bytes, 2048);
        MG_CHECK_INT(c->min_keep_bytes, 256);
        MG_CHECK_INT(c->n_extra_tokens, 2); /* the duplicate is dropped */
        if (c->n_extra_tokens == 2) {
            MG_CHECK_STR(c->extra_tokens[0], "<|custom|>");
            MG_CHECK_STR(c->extra_tokens[1], "###END");
        }
        MG_CHECK(c->summarizer == mg_config_find_model(cfg, "lm/tiny"));
        MG_CHECK_INT(c->summary_timeout_ms, 2500);
        MG_CHECK_INT(c->summary_max_tokens, 300);
        mg_config_free(cfg);
    }
}

MG_TEST(gateway_compaction_errors)
{
    expect_error("{gateway: {compaction: {extraControlTokens: 'x'}}}",
                 "cfg.json5:1:45: gateway.compaction.extraControlTokens: expected an array of at most 64 "
                 "strings, got \"x\"");
    expect_error("{gateway: {compaction: {extraControlTokens: ['ok', ' lead']}}}",
                 "cfg.json5:1:52: gateway.compaction.extraControlTokens[1]: expected a token of 1 to 128 bytes, "
                 "without control characters or a leading space, got \" lead\"");
    expect_error("{gateway: {compaction: {extraControlTokens: ['']}}}",
                 "cfg.json5:1:46: gateway.compaction.extraControlTokens[0]: expected a token of 1 to 128 bytes, "
                 "without control characters or a leading space, got \"\"");
    expect_error("{gateway: {compaction: {toolResultMaxBytes: 'big'}}}",
                 "cfg.json5:1:45: gateway.compaction.toolResultMaxBytes: expected an integer from 256 to "
                 "1073741824, got \"big\"");
    expect_error("{gateway: {compaction: {dropCurrentSteps: 1}}}",
                 "cfg.json5:1:43: gateway.compaction.dropCurrentSteps: expected true or false, got 1");
    expect_error("{gateway: {compaction: {minKeepBytes: 9000}}}",
                 "cfg.json5:1:39: gateway.compaction.minKeepBytes: must not exceed toolResultMaxBytes (16384) or "
                 "messageMaxBytes (8192)");
    expect_error("{gateway: {compaction: {summaryTimeoutMs: 0}}}",
                 "cfg.json5:1:43: gateway.compaction.summaryTimeoutMs: expected an integer from 100 to 600000, "
                 "got 0");
    expect_error("{gateway: {compaction: {summaryMaxTokens: -5}}}",
                 "cfg.json5:1:43: gateway.compaction.summaryMaxTokens: expected an integer from 16 to 65536, "
                 "got -5");
    expect_error("{gateway: {compaction: {summarizer: 3}}}",
                 "cfg.json5:1:37: gateway.compaction.summarizer: expected a non-empty string, got 3");
    const char *unknown = "{gateway: {compaction: {\n  summarizer: 'nope/model'}}}";
    expect_error_at(unknown, "'nope/model'",
                    "gateway.compaction.summarizer: unknown model \"nope/model\" (not a provider/id, an alias or a "
                    "model id)");
    expect_error("{gateway: {compaction: {summary: true}}}",
                 "cfg.json5:1:25: gateway.compaction.summary: unknown key");
}

/* gateway.providers.<id>.safety: a boolean as before, or an object of filter settings. */
MG_TEST(gateway_provider_safety_object)
{
    mg_config_t *cfg = load_ok("{gateway: {providers: {openai: {safety: false}, anthropic: {safety: {}}}}}");
    if (cfg) {
        MG_CHECK_INT(mg_config_find_provider(cfg, "openai")->safety, 0);
        const mg_provider_t *a = mg_config_find_provider(cfg, "anthropic");
        MG_CHECK_INT(a->safety, 1); /* an object turns the filters on */
        MG_CHECK_INT(a->safety_conf.control_tokens, -1);
        MG_CHECK_INT(a->safety_conf.old_reasoning, -1);
        MG_CHECK_INT(a->safety_conf.tool_result_max_bytes, -1);
        mg_config_free(cfg);
    }
    cfg = load_ok("{gateway: {providers: {openai: {safety: {controlTokens: false, oldReasoning: true,\n"
                  "  toolResultMaxBytes: 0, extraControlTokens: ['[[stop]]', '<END>']}}}}}");
    if (cfg) {
        const mg_provider_t *o = mg_config_find_provider(cfg, "openai");
        MG_CHECK_INT(o->safety, 1);
        MG_CHECK_INT(o->safety_conf.control_tokens, 0);
        MG_CHECK_INT(o->safety_conf.old_reasoning, 1);
        MG_CHECK_INT(o->safety_conf.tool_result_max_bytes, 0);
        MG_CHECK_INT(o->safety_conf.n_extra_tokens, 2);
        if (o->safety_conf.n_extra_tokens == 2) MG_CHECK_STR(o->safety_conf.extra_tokens[1], "<END>");
        MG_CHECK_INT(mg_config_find_provider(cfg, "anthropic")->safety, -1);
        mg_config_free(cfg);
    }
    expect_error("{gateway: {providers: {openai: {safety: 'yes'}}}}",
                 "cfg.json5:1:41: gateway.providers.openai.safety: expected true, false or an object, got \"yes\"");
    expect_error("{gateway: {providers: {openai: {safety: {controlTokens: 1}}}}}",
                 "cfg.json5:1:57: gateway.providers.openai.safety.controlTokens: expected true or false, got 1");
    expect_error("{gateway: {providers: {openai: {safety: {toolResultMaxBytes: -1}}}}}",
                 "cfg.json5:1:62: gateway.providers.openai.safety.toolResultMaxBytes: expected a non-negative "
                 "integer, got -1");
    expect_error("{gateway: {providers: {openai: {safety: {extraControlTokens: [7]}}}}}",
                 "cfg.json5:1:63: gateway.providers.openai.safety.extraControlTokens[0]: expected a token of 1 "
                 "to 128 bytes, without control characters or a leading space, got 7");
    expect_error("{gateway: {providers: {openai: {safety: {filters: []}}}}}",
                 "cfg.json5:1:42: gateway.providers.openai.safety.filters: unknown key");
}

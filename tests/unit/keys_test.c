/* Unit tests for keys.c and sha256.c, all on a fake wall clock: SHA-256 test vectors (FIPS 180-2
 * and padding boundaries), loading with exact error messages (none containing a key value),
 * constant-time lookup (every digest compared on every lookup), each rule (401 unknown key, 403
 * model, 403 region, 429 rpm / tpm / budget with the right retry-after and the reset at the period
 * boundary), state carried across a reload, and a multi-threaded run for the sanitizers. */
#include "keys.h"
#include "mg_test.h"
#include "sha256.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <pthread.h>

#define T_DAY 1710082800000LL /* 2024-03-10T15:00:00Z */
#define T_MIDNIGHT 1710115200000LL /* 2024-03-11T00:00:00Z */

static char err[512];

/* ---- SHA-256 --------------------------------------------------------------------------------- */

static void check_hex(const void *data, size_t len, const char *want)
{
    char hex[65];
    mg_sha256_hex(data, len, hex);
    MG_CHECK_STR(hex, want);
}

MG_TEST(sha256_fips_vectors)
{
    check_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_hex(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *million = mg_xmalloc(1000000);
    memset(million, 'a', 1000000);
    check_hex(million, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    /* The same million fed in uneven pieces. */
    mg_sha256_t ctx;
    uint8_t d1[32], d2[32];
    mg_sha256_init(&ctx);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = MG_MIN(step, 1000000 - off);
        mg_sha256_update(&ctx, million + off, n);
        off += n;
        step = step * 7 % 131 + 1;
    }
    mg_sha256_final(&ctx, d1);
    mg_sha256(million, 1000000, d2);
    MG_CHECK(memcmp(d1, d2, 32) == 0);
    free(million);
}

MG_TEST(sha256_padding_boundaries)
{
    char a[64];
    memset(a, 'a', sizeof a);
    check_hex(a, 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    check_hex(a, 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    check_hex(a, 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

/* ---- fixtures -------------------------------------------------------------------------------- */

/* lm: local; oa: hosted in "us" (big, huge; alias "Big" for oa/big); eu: hosted in "eu-west-1". */
static const char *cfg_text =
    "{\n"
    "  models: { mode: 'replace', providers: {\n"
    "    lm: { baseUrl: 'http://127.0.0.1:1234/v1', api: 'openai-completions', models: [{id: 'small'}] },\n"
    "    oa: { baseUrl: 'https://api.example.com/v1', apiKey: 'x', api: 'openai-completions',\n"
    "          models: [{id: 'big'}, {id: 'huge'}] },\n"
    "    eu: { baseUrl: 'https://eu.example.com/v1', apiKey: 'y', api: 'openai-completions',\n"
    "          models: [{id: 'mid'}] },\n"
    "  } },\n"
    "  agents: { defaults: { model: { primary: 'lm/small' }, models: { 'oa/big': { alias: 'Big' } } } },\n"
    "  gateway: { providers: { oa: { region: 'us' }, eu: { region: 'eu-west-1' } } },\n"
    "}\n";

static mg_config_t *test_cfg(void)
{
    mg_config_t *cfg = mg_config_load_string(cfg_text, strlen(cfg_text), "cfg.json5", NULL, err,
                                             sizeof err);
    if (!cfg) fprintf(stderr, "  config: %s\n", err);
    MG_CHECK(cfg != NULL);
    return cfg;
}

static void set_env(void)
{
    setenv("MG_TEST_KEY_A", "sk-alpha-123", 1);
    setenv("MG_TEST_KEY_B", "sk-bravo-456", 1);
    setenv("MG_TEST_KEY_C", "sk-charlie-789", 1);
    setenv("MG_TEST_KEY_BAD", "sk bad", 1);
    unsetenv("MG_TEST_KEY_UNSET");
}

/* Loads keys from JSON text against cfg (may be NULL); NULL with err set on failure. */
static mg_keys_t *load(const char *json, const mg_config_t *cfg)
{
    set_env();
    cJSON *arr = cJSON_Parse(json);
    MG_CHECK(arr != NULL);
    mg_keys_t *ks = NULL;
    if (mg_keys_load(arr, cfg, &ks, err, sizeof err) != 0) ks = NULL;
    cJSON_Delete(arr);
    return ks;
}

static mg_keys_t *load_ok(const char *json, const mg_config_t *cfg)
{
    mg_keys_t *ks = load(json, cfg);
    if (!ks) fprintf(stderr, "  unexpected error: %s\n", err);
    MG_CHECK(ks != NULL);
    return ks;
}

static void expect_error(const char *json, const char *want)
{
    mg_keys_t *ks = load(json, NULL);
    MG_CHECK(ks == NULL);
    MG_CHECK_STR(err, want);
    mg_keys_free(ks);
}

static const mg_key_t *by_id(const mg_keys_t *ks, const char *id)
{
    for (size_t i = 0; i < mg_keys_count(ks); i++)
        if (!strcmp(mg_keys_at(ks, i)->id, id)) return mg_keys_at(ks, i);
    return NULL;
}

/* ---- loading --------------------------------------------------------------------------------- */

MG_TEST(load_all_fields)
{
    mg_config_t *cfg = test_cfg();
    mg_keys_t *ks = load_ok(
        "[{\"id\":\"team-a\",\"key\":\"${MG_TEST_KEY_A}\",\"models\":[\"Big\",\"eu/*\",\"default\"],"
        "\"regions\":[\"eu\",\"ch\"],\"rpm\":60,\"tpm\":100000,"
        "\"budget\":{\"amount\":12.5,\"period\":\"month\"}},"
        "{\"id\":\"ops\",\"sha256\":\"9D09364CCBDEC68BB3EC7C31465F899371DC25BDBB95126C781A6816C4812EDB\"}]",
        cfg);
    if (!ks) goto out;
    MG_CHECK_INT(mg_keys_count(ks), 2);
    const mg_key_t *a = mg_keys_at(ks, 0), *o = mg_keys_at(ks, 1);
    MG_CHECK_STR(a->id, "team-a");
    MG_CHECK_INT(a->n_models, 3);
    MG_CHECK_STR(a->models[1], "eu/*");
    MG_CHECK_INT(a->n_regions, 2);
    MG_CHECK_STR(a->regions[1], "ch");
    MG_CHECK_INT(a->rpm, 60);
    MG_CHECK_INT(a->tpm, 100000);
    MG_CHECK(a->budget == 12.5);
    MG_CHECK(a->budget_period == MG_PERIOD_MONTH);
    MG_CHECK_STR(o->id, "ops");
    MG_CHECK_INT(o->n_models, 0);
    MG_CHECK_INT(o->rpm, 0);
    MG_CHECK(o->budget_period == MG_PERIOD_NONE);
    MG_CHECK(mg_keys_find(ks, "sk-ops-000") == o); /* upper-case hex is fine */
out:
    mg_keys_free(ks);
    mg_config_free(cfg);
}

MG_TEST(load_errors_exact)
{
    const char *A = "\"key\":\"${MG_TEST_KEY_A}\"";
    char j[512];
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s},{\"id\":\"b\",\"key\":\"${MG_TEST_KEY_B}\"},"
                          "{\"id\":\"c\",\"key\":\"${MG_TEST_KEY_C}\",\"rpm\":\"x\"}]", A);
    expect_error(j, "gateway.keys[2].rpm: expected a positive integer, got \"x\"");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"rpm\":0}]", A);
    expect_error(j, "gateway.keys[0].rpm: expected a positive integer, got 0");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"tpm\":1.5}]", A);
    expect_error(j, "gateway.keys[0].tpm: expected a positive integer, got 1.5");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"tpm\":5e12}]", A);
    expect_error(j, "gateway.keys[0].tpm: expected at most 1000000000, got 5000000000000");

    expect_error("{}", "gateway.keys: expected an array of keys, got an empty object");
    expect_error("[]", "gateway.keys: expected at least one key (leave gateway.keys out to run "
                       "without keys)");
    expect_error("[3]", "gateway.keys[0]: expected an object, got 3");
    snprintf(j, sizeof j, "[{%s}]", A);
    expect_error(j, "gateway.keys[0].id: required key missing");
    snprintf(j, sizeof j, "[{\"id\":\"a b\",%s}]", A);
    expect_error(j, "gateway.keys[0].id: expected a name of 1 to 64 letters, digits, '_', '-' or "
                    "'.', got \"a b\"");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s},{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_B}\"}]", A);
    expect_error(j, "gateway.keys[1].id: duplicate id \"a\" (also gateway.keys[0])");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"colour\":1}]", A);
    expect_error(j, "gateway.keys[0].colour: unknown key");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"rate.limit\":1}]", A);
    expect_error(j, "gateway.keys[0][\"rate.limit\"]: unknown key"); /* quoted as config.c does */
    expect_error("[{\"id\":\"a\"}]",
                 "gateway.keys[0]: required key missing: key (\"${NAME}\") or sha256 (hex digest)");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"sha256\":\"00\"}]", A);
    expect_error(j, "gateway.keys[0].sha256: give either key or sha256, not both");
    expect_error("[{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_UNSET}\"}]",
                 "gateway.keys[0].key: environment variable MG_TEST_KEY_UNSET is not set");
    expect_error("[{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_BAD}\"}]",
                 "gateway.keys[0].key: environment variable MG_TEST_KEY_BAD contains a space or "
                 "control character");
    expect_error("[{\"id\":\"a\",\"key\":5}]",
                 "gateway.keys[0].key: expected \"${NAME}\" naming an environment variable, got 5");
    /* A literal key or a key pasted where the digest goes is never repeated back. */
    expect_error("[{\"id\":\"a\",\"key\":\"sk-live-SECRET\"}]",
                 "gateway.keys[0].key: expected \"${NAME}\" naming an environment variable (key "
                 "values never go in the config; or give sha256), got a literal value");
    MG_CHECK(strstr(err, "SECRET") == NULL);
    expect_error("[{\"id\":\"a\",\"sha256\":\"sk-live-SECRET\"}]",
                 "gateway.keys[0].sha256: expected 64 hexadecimal digits (the SHA-256 of the key), "
                 "got a string of 14 characters");
    MG_CHECK(strstr(err, "SECRET") == NULL);
    expect_error("[{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_A}\"},{\"id\":\"b\",\"sha256\":"
                 "\"5f15641d9c593daa5cf5b2597af44c4813ff3f2802931722410c7575c8ed0b85\"}]",
                 "gateway.keys[1].sha256: the same key as gateway.keys[0] (a)");

    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"models\":\"*\"}]", A);
    expect_error(j, "gateway.keys[0].models: expected an array of strings, got \"*\"");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"models\":[]}]", A);
    expect_error(j, "gateway.keys[0].models: expected a non-empty array (leave models out to allow "
                    "every model)");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"regions\":[\"eu\",\"\"]}]", A);
    expect_error(j, "gateway.keys[0].regions[1]: expected a non-empty string, got \"\"");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"budget\":5}]", A);
    expect_error(j, "gateway.keys[0].budget: expected an object {amount, period}, got 5");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"budget\":{\"period\":\"day\"}}]", A);
    expect_error(j, "gateway.keys[0].budget.amount: required key missing");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"budget\":{\"amount\":1}}]", A);
    expect_error(j, "gateway.keys[0].budget.period: required key missing");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"budget\":{\"amount\":-1,\"period\":\"day\"}}]", A);
    expect_error(j, "gateway.keys[0].budget.amount: expected a positive number, got -1");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"budget\":{\"amount\":1,\"period\":\"week\"}}]", A);
    expect_error(j, "gateway.keys[0].budget.period: expected \"hour\", \"day\" or \"month\", got "
                    "\"week\"");
    snprintf(j, sizeof j, "[{\"id\":\"a\",%s,\"budget\":{\"amount\":1,\"period\":\"day\",\"x\":1}}]",
             A);
    expect_error(j, "gateway.keys[0].budget.x: unknown key");
}

MG_TEST(load_errors_need_config)
{
    mg_config_t *cfg = test_cfg();
    mg_keys_t *ks = load("[{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_A}\",\"models\":[\"lm/small\","
                         "\"nope/*\"]}]",
                         cfg);
    MG_CHECK(ks == NULL);
    MG_CHECK_STR(err, "gateway.keys[0].models[1]: unknown provider \"nope\"");
    mg_config_free(cfg);
}

MG_TEST(load_error_node_and_path)
{
    set_env();
    cJSON *arr = cJSON_Parse("[{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":-3}]");
    const cJSON *node = NULL;
    mg_keys_t *ks = NULL;
    MG_CHECK(mg_keys_load_ex(arr, NULL, "keys", &ks, &node, err, sizeof err) == -1);
    MG_CHECK(ks == NULL);
    MG_CHECK_STR(err, "keys[0].rpm: expected a positive integer, got -3");
    MG_CHECK(node == cJSON_GetObjectItem(arr->child, "rpm"));
    cJSON_Delete(arr);
}

/* ---- lookup ---------------------------------------------------------------------------------- */

static const char *three_keys = "[{\"id\":\"a\",\"key\":\"${MG_TEST_KEY_A}\"},"
                                "{\"id\":\"b\",\"key\":\"${MG_TEST_KEY_B}\"},"
                                "{\"id\":\"c\",\"key\":\"${MG_TEST_KEY_C}\"}]";

MG_TEST(find_compares_every_key)
{
    mg_keys_t *ks = load_ok(three_keys, NULL);
    if (!ks) return;
    uint64_t c0 = mg_keys_comparisons(ks);
    const mg_key_t *k = mg_keys_find(ks, "sk-alpha-123"); /* the first: no early exit */
    MG_CHECK(k && !strcmp(k->id, "a"));
    MG_CHECK_INT(mg_keys_comparisons(ks) - c0, 3);
    k = mg_keys_find(ks, "sk-charlie-789");
    MG_CHECK(k && !strcmp(k->id, "c"));
    MG_CHECK_INT(mg_keys_comparisons(ks) - c0, 6);
    MG_CHECK(mg_keys_find(ks, "sk-alpha-12") == NULL);
    MG_CHECK(mg_keys_find(ks, "sk-alpha-1234") == NULL);
    MG_CHECK(mg_keys_find(ks, "SK-ALPHA-123") == NULL);
    MG_CHECK_INT(mg_keys_comparisons(ks) - c0, 15);
    MG_CHECK(mg_keys_find(ks, "") == NULL);
    MG_CHECK(mg_keys_find(ks, NULL) == NULL);
    MG_CHECK(mg_keys_find(NULL, "sk-alpha-123") == NULL);
    k = mg_keys_find_n(ks, "sk-bravo-456 trailing", 12);
    MG_CHECK(k && !strcmp(k->id, "b"));
    mg_keys_free(ks);
}

MG_TEST(find_by_stored_hash)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"ops\",\"sha256\":"
                            "\"5f15641d9c593daa5cf5b2597af44c4813ff3f2802931722410c7575c8ed0b85\"}]",
                            NULL);
    if (!ks) return;
    const mg_key_t *k = mg_keys_find(ks, "sk-alpha-123");
    MG_CHECK(k && !strcmp(k->id, "ops"));
    mg_keys_free(ks);
}

MG_TEST(presented_headers)
{
    size_t n = 0;
    const char *v = mg_keys_presented("Bearer sk-1", NULL, &n);
    MG_CHECK(v && n == 4 && !strncmp(v, "sk-1", 4));
    v = mg_keys_presented("  bearer \t sk-2  ", "ignored", &n);
    MG_CHECK(v && n == 4 && !strncmp(v, "sk-2", 4));
    v = mg_keys_presented("Basic abc", " sk-3 ", &n);
    MG_CHECK(v && n == 4 && !strncmp(v, "sk-3", 4));
    v = mg_keys_presented("Bearer ", "sk-4", &n);
    MG_CHECK(v && n == 4 && !strncmp(v, "sk-4", 4));
    MG_CHECK(mg_keys_presented("Bearersk-5", NULL, &n) == NULL);
    MG_CHECK(mg_keys_presented(NULL, "   ", &n) == NULL);
    MG_CHECK(mg_keys_presented(NULL, NULL, &n) == NULL);
}

/* ---- rules ----------------------------------------------------------------------------------- */

MG_TEST(unknown_key_401)
{
    mg_key_verdict_t v;
    MG_CHECK_INT(mg_keys_check(NULL, "lm/small", NULL, T_DAY, &v), 401);
    MG_CHECK_INT(v.status, 401);
    MG_CHECK_STR(v.type, "authentication_error");
    MG_CHECK_STR(v.code, "invalid_api_key");
    MG_CHECK_STR(v.message, "invalid API key");
}

MG_TEST(model_rules_403)
{
    mg_config_t *cfg = test_cfg();
    mg_keys_t *ks = load_ok("[{\"id\":\"team-a\",\"key\":\"${MG_TEST_KEY_A}\","
                            "\"models\":[\"Big\",\"eu/*\",\"default\",\"fast-route\"]},"
                            "{\"id\":\"all\",\"key\":\"${MG_TEST_KEY_B}\",\"models\":[\"*\"]},"
                            "{\"id\":\"none\",\"key\":\"${MG_TEST_KEY_C}\"}]",
                            cfg);
    if (!ks) goto out;
    const mg_key_t *a = by_id(ks, "team-a");
    mg_key_verdict_t v;
    /* "Big" is the alias of oa/big: every name of that model passes. */
    MG_CHECK_INT(mg_keys_check(a, "Big", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(v.status, 200);
    MG_CHECK(v.code == NULL);
    MG_CHECK_INT(mg_keys_check(a, "oa/big", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(a, "big", NULL, T_DAY, &v), 0);   /* bare id, one provider has it */
    MG_CHECK_INT(mg_keys_check(a, "eu/mid", NULL, T_DAY, &v), 0); /* provider wildcard */
    MG_CHECK_INT(mg_keys_check(a, "mid", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(a, "default", NULL, T_DAY, &v), 0);    /* route names, literally */
    MG_CHECK_INT(mg_keys_check(a, "fast-route", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(a, NULL, NULL, T_DAY, &v), 0); /* model not known yet */

    MG_CHECK_INT(mg_keys_check(a, "oa/huge", NULL, T_DAY, &v), 403);
    MG_CHECK_STR(v.type, "permission_error");
    MG_CHECK_STR(v.code, "model_not_allowed");
    MG_CHECK_STR(v.message, "key team-a may not use model `oa/huge`; allowed: Big, eu/*, default, "
                            "fast-route");
    MG_CHECK_INT(mg_keys_check(a, "lm/small", NULL, T_DAY, &v), 403);
    MG_CHECK_INT(mg_keys_check(a, "Fast-Route", NULL, T_DAY, &v), 403);

    MG_CHECK_INT(mg_keys_check(by_id(ks, "all"), "oa/huge", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(by_id(ks, "none"), "anything", NULL, T_DAY, &v), 0);

    const mg_model_t *big = mg_config_find_model(cfg, "oa/big"),
                     *huge = mg_config_find_model(cfg, "oa/huge"),
                     *mid = mg_config_find_model(cfg, "eu/mid");
    MG_CHECK(mg_keys_allows_model(a, big));
    MG_CHECK(mg_keys_allows_model(a, mid));
    MG_CHECK(!mg_keys_allows_model(a, huge));
    MG_CHECK(mg_keys_allows_model(by_id(ks, "all"), huge));
    MG_CHECK(mg_keys_allows_model(by_id(ks, "none"), huge));
    MG_CHECK(!mg_keys_allows_model(NULL, huge));
out:
    mg_keys_free(ks);
    mg_config_free(cfg);
}

MG_TEST(region_rules_403)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"eu-team\",\"key\":\"${MG_TEST_KEY_A}\","
                            "\"regions\":[\"eu\",\"ch\"]},"
                            "{\"id\":\"free\",\"key\":\"${MG_TEST_KEY_B}\"}]",
                            NULL);
    if (!ks) return;
    const mg_key_t *k = by_id(ks, "eu-team");
    mg_key_verdict_t v;
    MG_CHECK_INT(mg_keys_check(k, "x", "eu", T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "x", "EU-west-1", T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "x", "ch", T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "x", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "x", "us", T_DAY, &v), 403);
    MG_CHECK_STR(v.type, "permission_error");
    MG_CHECK_STR(v.code, "region_not_allowed");
    MG_CHECK_STR(v.message, "key eu-team may not use data region `us`; allowed: eu, ch (local "
                            "providers are always allowed)");
    MG_CHECK_INT(mg_keys_check(k, "x", "europe", T_DAY, &v), 403);
    MG_CHECK_INT(mg_keys_check(by_id(ks, "free"), "x", "us", T_DAY, &v), 0);
    mg_keys_free(ks);
}

MG_TEST(rpm_429_retry_after)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":2}]", NULL);
    if (!ks) return;
    const mg_key_t *k = mg_keys_at(ks, 0);
    mg_key_verdict_t v;
    int64_t t = T_DAY;
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 429);
    MG_CHECK_STR(v.type, "rate_limit_error");
    MG_CHECK_STR(v.code, "rate_limit_exceeded");
    MG_CHECK_INT(v.retry_after_s, 30); /* one request every 30 s */
    MG_CHECK_STR(v.message, "key k is over its limit of 2 requests per minute; retry in 30 s");
    /* Refused requests take nothing: 10 s later 20 s are left. */
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 10000, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 20);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 29999, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 1);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 30000, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 30000, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 30);
    /* A long pause refills to the burst size, no more. */
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 3600000, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 3600000, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 3600000, &v), 429);
    /* The clock going backwards refills nothing. */
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 429);
    mg_keys_free(ks);
}

MG_TEST(refused_requests_take_no_rpm_token)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":1,"
                            "\"models\":[\"a\"],\"regions\":[\"eu\"]}]",
                            NULL);
    if (!ks) return;
    const mg_key_t *k = mg_keys_at(ks, 0);
    mg_key_verdict_t v;
    for (int i = 0; i < 3; i++) {
        MG_CHECK_INT(mg_keys_check(k, "b", NULL, T_DAY, &v), 403);
        MG_CHECK_INT(mg_keys_check(k, "a", "us", T_DAY, &v), 403);
    }
    MG_CHECK_INT(mg_keys_check(k, "a", "eu", T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "a", "eu", T_DAY, &v), 429);
    mg_keys_free(ks);
}

MG_TEST(tpm_429_after_accounting)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"tpm\":1000}]", NULL);
    if (!ks) return;
    const mg_key_t *k = mg_keys_at(ks, 0);
    mg_key_verdict_t v;
    int64_t t = T_DAY;
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 0);
    mg_keys_account(k, 600, 0, t);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 0); /* 400 left */
    mg_keys_account(k, 600, 0, t);                       /* 200 in debt */
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t, &v), 429);
    MG_CHECK_STR(v.code, "tokens_limit_exceeded");
    MG_CHECK_INT(v.retry_after_s, 12); /* 200 tokens at 1000/min */
    MG_CHECK_STR(v.message, "key k is over its limit of 1000 tokens per minute; retry in 12 s");
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 11999, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 1);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 12000, &v), 0);
    mg_keys_account(k, -5, 0, t + 12000); /* negative counts as 0 */
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, t + 12000, &v), 0);
    mg_keys_free(ks);
}

MG_TEST(budget_per_day_resets_at_midnight)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\","
                            "\"budget\":{\"amount\":1,\"period\":\"day\"}}]",
                            NULL);
    if (!ks) return;
    const mg_key_t *k = mg_keys_at(ks, 0);
    mg_key_verdict_t v;
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_DAY, &v), 0);
    mg_keys_account(k, 100, 0.625, T_DAY);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_DAY, &v), 0);
    mg_keys_account(k, 100, 0.5, T_DAY); /* the request that crosses it completes */
    MG_CHECK(mg_keys_spent(k, T_DAY) == 1.125);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_DAY, &v), 429);
    MG_CHECK_STR(v.code, "budget_exceeded");
    MG_CHECK_INT(v.retry_after_s, 9 * 3600); /* 15:00 → midnight UTC */
    MG_CHECK_STR(v.message,
                 "key k has used its budget of 1 per day (1.125 spent); it renews in 32400 s");
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_MIDNIGHT - 1, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 1);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_MIDNIGHT, &v), 0);
    MG_CHECK(mg_keys_spent(k, T_MIDNIGHT) == 0);
    /* Going back before midnight does not bring the old period back. */
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_MIDNIGHT - 1, &v), 0);
    mg_keys_free(ks);
}

MG_TEST(budget_per_month_and_hour)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"m\",\"key\":\"${MG_TEST_KEY_A}\","
                            "\"budget\":{\"amount\":2,\"period\":\"month\"}},"
                            "{\"id\":\"h\",\"key\":\"${MG_TEST_KEY_B}\","
                            "\"budget\":{\"amount\":0.5,\"period\":\"hour\"}}]",
                            NULL);
    if (!ks) return;
    const mg_key_t *m = by_id(ks, "m"), *h = by_id(ks, "h");
    mg_key_verdict_t v;
    /* Leap day, half a second before March. */
    int64_t feb29 = 1709251199500LL, mar1 = 1709251200000LL;
    mg_keys_account(m, 0, 2, feb29);
    MG_CHECK_INT(mg_keys_check(m, "x", NULL, feb29, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 1);
    MG_CHECK_INT(mg_keys_check(m, "x", NULL, mar1, &v), 0);
    /* New Year's Eve 2024, 23:00: an hour to go. */
    int64_t nye = 1735686000000LL, jan1 = 1735689600000LL;
    mg_keys_account(m, 0, 3, nye);
    MG_CHECK_INT(mg_keys_check(m, "x", NULL, nye, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 3600);
    MG_CHECK_INT(mg_keys_check(m, "x", NULL, jan1, &v), 0);
    /* Hourly: 15:00 + 20 min → 40 min to go. */
    mg_keys_account(h, 0, 0.5, T_DAY + 1200000);
    MG_CHECK_INT(mg_keys_check(h, "x", NULL, T_DAY + 1200000, &v), 429);
    MG_CHECK_INT(v.retry_after_s, 2400);
    MG_CHECK_STR(v.message,
                 "key h has used its budget of 0.5 per hour (0.5 spent); it renews in 2400 s");
    MG_CHECK_INT(mg_keys_check(h, "x", NULL, T_DAY + 3600000, &v), 0);
    mg_keys_free(ks);
}

MG_TEST(longest_limit_wins_and_403_before_429)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":1,"
                            "\"models\":[\"a\"],\"budget\":{\"amount\":1,\"period\":\"day\"}}]",
                            NULL);
    if (!ks) return;
    const mg_key_t *k = mg_keys_at(ks, 0);
    mg_key_verdict_t v;
    MG_CHECK_INT(mg_keys_check(k, "a", NULL, T_DAY, &v), 0);
    MG_CHECK_INT(mg_keys_check(k, "a", NULL, T_DAY, &v), 429);
    MG_CHECK_STR(v.code, "rate_limit_exceeded");
    MG_CHECK_INT(v.retry_after_s, 60);
    mg_keys_account(k, 10, 1, T_DAY);
    MG_CHECK_INT(mg_keys_check(k, "a", NULL, T_DAY, &v), 429);
    MG_CHECK_STR(v.code, "budget_exceeded"); /* 9 h beats 60 s */
    MG_CHECK_INT(v.retry_after_s, 32400);
    MG_CHECK_INT(mg_keys_check(k, "b", NULL, T_DAY, &v), 403);
    mg_keys_free(ks);
}

MG_TEST(reload_keeps_state)
{
    mg_keys_t *old = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":1,"
                             "\"budget\":{\"amount\":1,\"period\":\"day\"}},"
                             "{\"id\":\"gone\",\"key\":\"${MG_TEST_KEY_B}\"}]",
                             NULL);
    mg_keys_t *next = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":1,"
                              "\"budget\":{\"amount\":2,\"period\":\"day\"}},"
                              "{\"id\":\"new\",\"key\":\"${MG_TEST_KEY_C}\",\"rpm\":1}]",
                              NULL);
    if (!old || !next) goto out;
    mg_key_verdict_t v;
    MG_CHECK_INT(mg_keys_check(mg_keys_at(old, 0), "m", NULL, T_DAY, &v), 0);
    mg_keys_account(mg_keys_at(old, 0), 10, 1.5, T_DAY);
    mg_keys_adopt_state(next, old);
    mg_keys_free(old);
    old = NULL;
    const mg_key_t *k = by_id(next, "k");
    MG_CHECK(mg_keys_spent(k, T_DAY) == 1.5);
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_DAY, &v), 429); /* the rpm token is still spent */
    MG_CHECK_STR(v.code, "rate_limit_exceeded");
    MG_CHECK_INT(mg_keys_check(k, "m", NULL, T_DAY + 60000, &v), 0); /* under the new budget: 2 */
    MG_CHECK_INT(mg_keys_check(by_id(next, "new"), "m", NULL, T_DAY, &v), 0);
out:
    mg_keys_free(old);
    mg_keys_free(next);
}

/* ---- threads --------------------------------------------------------------------------------- */

typedef struct {
    const mg_keys_t *ks;
    int allowed;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    for (int i = 0; i < 500; i++) {
        const mg_key_t *k = mg_keys_find(a->ks, "sk-alpha-123");
        mg_key_verdict_t v;
        if (mg_keys_check(k, "m", NULL, T_DAY, &v) == 0) a->allowed++;
        mg_keys_account(k, 1, 0.25, T_DAY);
    }
    return NULL;
}

MG_TEST(threads_exact_counts)
{
    mg_keys_t *ks = load_ok("[{\"id\":\"k\",\"key\":\"${MG_TEST_KEY_A}\",\"rpm\":100,"
                            "\"tpm\":1000000,\"budget\":{\"amount\":100000,\"period\":\"day\"}},"
                            "{\"id\":\"b\",\"key\":\"${MG_TEST_KEY_B}\"}]",
                            NULL);
    if (!ks) return;
    pthread_t th[8];
    worker_arg_t args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (worker_arg_t){ks, 0};
        MG_CHECK(pthread_create(&th[i], NULL, worker, &args[i]) == 0);
    }
    int allowed = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        allowed += args[i].allowed;
    }
    MG_CHECK_INT(allowed, 100); /* exactly the rpm burst, at a frozen clock */
    MG_CHECK(mg_keys_spent(mg_keys_at(ks, 0), T_DAY) == 8 * 500 * 0.25);
    MG_CHECK_INT(mg_keys_comparisons(ks), 8 * 500 * 2);
    mg_keys_free(ks);
}

MG_TEST_MAIN()

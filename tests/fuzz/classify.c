/* libFuzzer target for src/classify.c. Byte 0 picks the mode:
 *   0: HTTP classification with the built-in rules. Bytes 1-2 give the status (100-599), the rest
 *      is "headers\n\nbody" (or all body). Checks: a valid class, OK only for 2xx, a rule id when a
 *      rule decided, sane retry-after/should-retry, the same answer twice, stream errors never OK;
 *      the echo guard, with the headers as the client's request, only blanks bytes.
 *   1: the Lua-pattern subset against real Lua. Byte 1 is the pattern length, then the pattern,
 *      then the subject. For every pattern mg_pattern_check accepts, mg_pattern_find must agree
 *      with string.find(subject, pattern) in a real lua_State (found or not, start and end),
 *      except where either gave up ("pattern too complex", or our step budget: then Lua is not
 *      even asked, it has no budget).
 *   2: an operator pattern file: mg_patterns_load_string must fail cleanly or give a set that
 *      classifies; nothing leaks (ASan) whatever the Lua code does.
 * Aborts on any violation. */
#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "fuzz_util.h"
#include "util.h"

static void fuzz_http(const uint8_t *d, size_t n)
{
    if (n < 2) return;
    long status = 100 + ((d[0] << 8 | d[1]) % 500);
    const char *rest = (const char *)d + 2;
    size_t rl = n - 2;
    const char *sep = memmem(rest, rl, "\n\n", 2);
    const char *headers = sep ? rest : "";
    size_t hl = sep ? (size_t)(sep - rest) : 0;
    const char *body = sep ? sep + 2 : rest;
    size_t bl = sep ? rl - hl - 2 : rl;

    mg_classification_t a = mg_classify_http2(NULL, status, headers, hl, body, bl, NULL);
    mg_classification_t b = mg_classify_http2(NULL, status, headers, hl, body, bl, NULL);
    CHECK((int)a.cls >= 0 && (int)a.cls < MG_CLASS_COUNT);
    CHECK(a.cls != MG_CLASS_CANCELLED && a.cls != MG_CLASS_NO_KEY);
    CHECK(a.cls != MG_CLASS_OK || (status >= 200 && status < 300));
    CHECK(!a.rule || a.rule[0]);
    CHECK(a.retry_after_ms >= -1);
    CHECK(a.should_retry >= -1 && a.should_retry <= 1);
    CHECK(a.cls == b.cls && a.rule == b.rule && a.should_retry == b.should_retry);
    CHECK(mg_classify_http(status, headers, hl, body, bl) == a.cls);

    mg_classification_t s = mg_classify_stream_error(NULL, body, bl, NULL);
    CHECK(s.cls != MG_CLASS_OK && (int)s.cls < MG_CLASS_COUNT);

    /* A window named in the text: never negative, at most 9 digits, and the same again. */
    int64_t w = mg_classify_context_window(body, bl, NULL);
    CHECK(w >= 0 && w <= 999999999);
    CHECK(w == mg_classify_context_window(body, bl, NULL));

    /* The echo guard, the header part standing for the client's request: it only turns bytes of
     * the text into spaces, and the guarded readings are still sane. */
    char *hs = mg_xstrndup(headers, hl);
    cJSON *req = cJSON_CreateArray();
    cJSON_AddItemToArray(req, cJSON_CreateString(hs));
    size_t gl = MG_MIN(bl, (size_t)8192);
    char *g = mg_xmalloc(gl + 1);
    memcpy(g, body, gl);
    mg_classify_blank_echoes(g, gl, req);
    for (size_t i = 0; i < gl; i++) CHECK(g[i] == body[i] || g[i] == ' ');
    mg_classification_t ga = mg_classify_http2(NULL, status, headers, hl, body, bl, req);
    CHECK((int)ga.cls >= 0 && (int)ga.cls < MG_CLASS_COUNT);
    CHECK(ga.cls != MG_CLASS_OK || (status >= 200 && status < 300));
    int64_t gw = mg_classify_context_window(body, bl, req);
    CHECK(gw >= 0 && gw <= 999999999);
    free(g);
    cJSON_Delete(req);
    free(hs);
}

static lua_State *oracle(void)
{
    static lua_State *L;
    if (!L) {
        L = luaL_newstate();
        luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
        lua_pop(L, 1);
    }
    return L;
}

static void fuzz_pattern(const uint8_t *d, size_t n)
{
    if (n < 1) return;
    size_t pl = MG_MIN((size_t)d[0], n - 1);
    const char *pat = (const char *)d + 1;
    const char *subj = pat + pl;
    size_t sl = n - 1 - pl;
    if (mg_pattern_check(pat, pl)) return;

    size_t s = 0, e = 0;
    int mine = mg_pattern_find(pat, pl, subj, sl, &s, &e);
    CHECK(mine >= -1 && mine <= 1);
    if (mine == 1) CHECK(s <= e && e <= sl);
    if (mine == -1) return; /* our step budget ran out: no verdict, and Lua could take hours */

    lua_State *L = oracle();
    lua_settop(L, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    lua_getfield(L, -1, "find");
    lua_pushlstring(L, subj, sl);
    lua_pushlstring(L, pat, pl);
    lua_pushinteger(L, 1);
    if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        /* Lua gives up on depth, exactly where we do; anything else means we accepted a pattern
         * that Lua calls malformed. */
        if (!msg || !strstr(msg, "too complex")) {
            fprintf(stderr, "lua rejected an accepted pattern: %s\n", msg ? msg : "?");
            abort();
        }
        return;
    }
    bool found = !lua_isnil(L, -2);
    CHECK(found == (mine == 1));
    if (found) {
        CHECK((size_t)lua_tointeger(L, -2) == s + 1);
        CHECK((size_t)lua_tointeger(L, -1) == e);
    }
}

static void fuzz_operator_file(const uint8_t *d, size_t n)
{
    char err[256];
    mg_patterns_t *p = mg_patterns_load_string((const char *)d, n, "fuzz.lua", err, sizeof err);
    if (!p) {
        CHECK(memchr(err, '\0', sizeof err) && err[0]);
        return;
    }
    size_t n_op;
    size_t total = mg_patterns_count(p, &n_op);
    CHECK(n_op <= total);
    static const char body[] = "{\"error\":{\"message\":\"prompt is too long\",\"type\":\"x\",\"code\":429}}";
    mg_classification_t c = mg_classify_http2(p, 400, "Retry-After: 1\r\n", 16, body, sizeof body - 1, NULL);
    CHECK((int)c.cls >= 0 && (int)c.cls < MG_CLASS_COUNT);
    c = mg_classify_stream_error(p, body, sizeof body - 1, NULL);
    CHECK(c.cls != MG_CLASS_OK);
    mg_patterns_release(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool budget_set;
    if (!budget_set) {
        /* A runaway file would hold each input for the product's full second: a loop is as
         * well caught in 20 ms, and the fuzzer gets on with other inputs. */
        mg_patterns_set_load_budget(200 * 1000, 20);
        budget_set = true;
    }
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0: fuzz_http(data + 1, size - 1); break;
    case 1: fuzz_pattern(data + 1, size - 1); break;
    default: fuzz_operator_file(data + 1, size - 1); break;
    }
    return 0;
}

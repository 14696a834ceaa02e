/* Error classification. See classify.h.
 *
 * Three parts:
 *   1. the class names and the transfer-result mapping;
 *   2. a Lua-pattern-subset matcher (written from the Lua 5.4 manual §6.4.1 semantics, minus
 *      captures, %b, %f and back-references), so rules are matched without a Lua state; the
 *      fuzzer (tests/fuzz/classify.c) checks it against string.find in a real Lua;
 *   3. the rule set: loaded from lua/error_patterns.lua (+ the operator's file) in a throwaway
 *      sandboxed lua_State that is closed before mg_patterns_load returns, then matched in C.
 *
 * Only the functions between "LONGJMP ZONE" markers run Lua code; they hold no C resource across a
 * Lua call except through the builder that the caller frees whatever happens. */
#include "classify.h"

#include "mg_embedded.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* =============================================================================================
 * 1. Classes */

static const char *const class_names[] = {
    [MG_CLASS_OK] = "ok",
    [MG_CLASS_CONNECT_ERROR] = "connect_error",
    [MG_CLASS_TIMEOUT] = "timeout",
    [MG_CLASS_RATE_LIMIT] = "rate_limit",
    [MG_CLASS_OVERLOADED] = "overloaded",
    [MG_CLASS_SERVER_ERROR] = "server_error",
    [MG_CLASS_AUTH] = "auth",
    [MG_CLASS_BILLING] = "billing",
    [MG_CLASS_MODEL_NOT_FOUND] = "model_not_found",
    [MG_CLASS_MODEL_NOT_LOADED] = "model_not_loaded",
    [MG_CLASS_CONTEXT_OVERFLOW] = "context_overflow",
    [MG_CLASS_CONTENT_FILTER] = "content_filter",
    [MG_CLASS_BAD_REQUEST] = "bad_request",
    [MG_CLASS_STREAM_BROKEN] = "stream_broken",
    [MG_CLASS_TOO_LARGE] = "too_large",
    [MG_CLASS_UNSUPPORTED] = "unsupported",
    [MG_CLASS_NO_KEY] = "no_key",
    [MG_CLASS_CANCELLED] = "cancelled",
};

_Static_assert(MG_ARRAY_LEN(class_names) == MG_CLASS_COUNT, "a class without a name");

const char *mg_class_name(mg_class_t c)
{
    return (size_t)c < MG_ARRAY_LEN(class_names) && class_names[c] ? class_names[c] : "unknown";
}

bool mg_class_from_name(const char *name, mg_class_t *out)
{
    for (size_t i = 0; name && i < MG_ARRAY_LEN(class_names); i++) {
        if (class_names[i] && strcmp(class_names[i], name) == 0) {
            *out = (mg_class_t)i;
            return true;
        }
    }
    return false;
}

mg_class_t mg_classify_xfer(mg_xfer_result_t r)
{
    switch (r) {
    case MG_XFER_OK: return MG_CLASS_OK;
    case MG_XFER_CONNECT_ERROR: return MG_CLASS_CONNECT_ERROR;
    case MG_XFER_TIMEOUT_CONNECT:
    case MG_XFER_TIMEOUT_FIRST_TOKEN:
    case MG_XFER_TIMEOUT_IDLE:
    case MG_XFER_TIMEOUT_TOTAL: return MG_CLASS_TIMEOUT;
    case MG_XFER_BROKEN: return MG_CLASS_STREAM_BROKEN;
    case MG_XFER_TOO_LARGE: return MG_CLASS_TOO_LARGE;
    case MG_XFER_CANCELLED: return MG_CLASS_CANCELLED;
    }
    return MG_CLASS_SERVER_ERROR;
}

const char *mg_xfer_timeout_name(mg_xfer_result_t r)
{
    switch (r) {
    case MG_XFER_TIMEOUT_CONNECT: return "connect";
    case MG_XFER_TIMEOUT_FIRST_TOKEN: return "first_token";
    case MG_XFER_TIMEOUT_IDLE: return "idle";
    case MG_XFER_TIMEOUT_TOTAL: return "total";
    default: return NULL;
    }
}

bool mg_class_moves_on(mg_class_t c)
{
    return c != MG_CLASS_OK && c != MG_CLASS_BAD_REQUEST && c != MG_CLASS_CONTENT_FILTER &&
           c != MG_CLASS_CANCELLED;
}

/* =============================================================================================
 * Headers */

/* Finds header name (case-insensitive) at a line start in the block; returns its value, trimmed. */
static const char *find_header(const char *h, size_t n, const char *name, size_t *vlen)
{
    size_t k = strlen(name);
    size_t i = 0;
    if (!h) return NULL;
    while (i < n) {
        const char *line = h + i;
        const char *eol = memchr(line, '\n', n - i);
        size_t ll = eol ? (size_t)(eol - line) : n - i;
        if (ll > k && strncasecmp(line, name, k) == 0 && line[k] == ':') {
            const char *v = line + k + 1;
            const char *end = line + ll;
            while (v < end && (*v == ' ' || *v == '\t')) v++;
            while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) end--;
            *vlen = (size_t)(end - v);
            return v;
        }
        i += ll + 1;
    }
    return NULL;
}

/* A non-negative decimal (digits, optional fraction) scaled by mult; -1 if v does not start so. */
static int64_t parse_scaled(const char *v, size_t vl, double mult)
{
    char tmp[64];
    if (vl == 0 || vl >= sizeof tmp || !isdigit((unsigned char)*v)) return -1;
    memcpy(tmp, v, vl);
    tmp[vl] = '\0';
    double d = strtod(tmp, NULL) * mult;
    if (!(d >= 0) || d > 9.0e15) return -1;
    return (int64_t)d;
}

/* An HTTP-date → ms since the epoch, or -1. RFC 9110 (5.6.7) has recipients accept all three
 * forms: IMF-fixdate "Wed, 21 Oct 2015 07:28:00 GMT", the obsolete RFC 850 "Wednesday,
 * 21-Oct-15 07:28:00 GMT" (a two-digit year: 69-99 are 19xx, the rest 20xx) and asctime's
 * "Wed Oct 21 07:28:00 2015". */
static int64_t parse_http_date(const char *v, size_t vl)
{
    static const char *const forms[] = {"%a, %d %b %Y %H:%M:%S", "%A, %d-%b-%y %H:%M:%S",
                                        "%a %b %d %H:%M:%S %Y"};
    char tmp[64];
    struct tm tm;
    if (vl >= sizeof tmp) return -1;
    memcpy(tmp, v, vl);
    tmp[vl] = '\0';
    const char *end = NULL;
    for (size_t i = 0; i < sizeof forms / sizeof *forms && !end; i++) {
        memset(&tm, 0, sizeof tm);
        end = strptime(tmp, forms[i], &tm);
    }
    if (!end) return -1;
    time_t t = timegm(&tm);
    return t < 0 ? -1 : (int64_t)t * 1000;
}

int64_t mg_retry_after_ms_at(const char *headers, size_t hlen, int64_t wall_now_ms)
{
    size_t vl;
    const char *v;
    int64_t ms;
    if (!headers) return -1;
    if ((v = find_header(headers, hlen, "retry-after-ms", &vl)) &&
        (ms = parse_scaled(v, vl, 1)) >= 0)
        return ms;
    if ((v = find_header(headers, hlen, "retry-after", &vl))) {
        if ((ms = parse_scaled(v, vl, 1000)) >= 0) return ms;
        int64_t at = parse_http_date(v, vl);
        if (at >= 0) return at > wall_now_ms ? at - wall_now_ms : 0;
    }
    return -1;
}

int64_t mg_retry_after_ms(const char *headers, size_t hlen)
{
    return mg_retry_after_ms_at(headers, hlen, mg_wall_ms());
}

/* Go-style duration as OpenAI writes it: "1s", "6m0s", "20ms", "1h2m3.5s"; -1 if malformed. */
static int64_t parse_go_duration(const char *v, size_t vl)
{
    double total = 0;
    size_t i = 0;
    if (vl == 0) return -1;
    while (i < vl) {
        size_t j = i;
        while (j < vl && (isdigit((unsigned char)v[j]) || v[j] == '.')) j++;
        if (j == i) return -1;
        char num[32];
        if (j - i >= sizeof num) return -1;
        memcpy(num, v + i, j - i);
        num[j - i] = '\0';
        double d = strtod(num, NULL);
        double unit;
        if (j + 2 <= vl && v[j] == 'm' && v[j + 1] == 's') unit = 1, j += 2;
        else if (j < vl && v[j] == 'h') unit = 3600e3, j++;
        else if (j < vl && v[j] == 'm') unit = 60e3, j++;
        else if (j < vl && v[j] == 's') unit = 1e3, j++;
        else return -1;
        total += d * unit;
        i = j;
    }
    return total > 9.0e15 ? -1 : (int64_t)total;
}

int64_t mg_ratelimit_reset_ms(const char *headers, size_t hlen)
{
    static const char *const kinds[] = {"requests", "tokens"};
    int64_t exhausted = -1, shortest = -1;
    for (size_t k = 0; k < 2; k++) {
        char name[64];
        size_t vl, rl;
        snprintf(name, sizeof name, "x-ratelimit-reset-%s", kinds[k]);
        const char *v = find_header(headers, hlen, name, &vl);
        if (!v) continue;
        int64_t ms = parse_go_duration(v, vl);
        if (ms < 0) continue;
        snprintf(name, sizeof name, "x-ratelimit-remaining-%s", kinds[k]);
        const char *r = find_header(headers, hlen, name, &rl);
        if (r && rl == 1 && r[0] == '0') exhausted = MG_MAX(exhausted, ms);
        if (shortest < 0 || ms < shortest) shortest = ms;
    }
    return exhausted >= 0 ? exhausted : shortest;
}

static int should_retry_header(const char *headers, size_t hlen)
{
    size_t vl;
    const char *v = find_header(headers, hlen, "x-should-retry", &vl);
    if (!v) return -1;
    if (vl == 4 && strncasecmp(v, "true", 4) == 0) return 1;
    if (vl == 5 && strncasecmp(v, "false", 5) == 0) return 0;
    return -1;
}

/* =============================================================================================
 * 2. The Lua-pattern subset. Semantics follow string.find in Lua 5.4: single-character classes
 * (., %a %c %d %g %l %p %s %u %w %x, the deprecated %z that 5.4 still honours, their complements,
 * %<punct> escapes, [sets] with ranges and classes, [^sets]), quantifiers * + - ?, ^ and $
 * anchors. No captures, %b, %f, %1-9. A depth limit equal to Lua's (200) and a step budget bound
 * the work on pathological patterns. */

enum { PM_MAXDEPTH = 200, PM_MAXSTEPS = 200000 };

typedef struct pm {
    const unsigned char *src;
    size_t slen;
    const unsigned char *pat;
    size_t plen;
    int depth;
    long steps;
    bool aborted;
} pm_t;

static bool class_match(int c, int cl)
{
    bool res;
    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'g': res = isgraph(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    case 'z': res = c == 0; break; /* deprecated; 5.4 still has it (the fuzzer found it) */
    default: return cl == c;
    }
    return isupper(cl) ? !res : res;
}

/* p at '[', ec at the closing ']'. */
static bool bracket_match(int c, size_t p, size_t ec, const unsigned char *pat)
{
    bool sig = true;
    if (pat[p + 1] == '^') {
        sig = false;
        p++;
    }
    while (++p < ec) {
        if (pat[p] == '%') {
            p++;
            if (class_match(c, pat[p])) return sig;
        } else if (pat[p + 1] == '-' && p + 2 < ec) {
            p += 2;
            if (pat[p - 2] <= c && c <= pat[p]) return sig;
        } else if (pat[p] == c) {
            return sig;
        }
    }
    return !sig;
}

/* End of the single-character class starting at p (the pattern is already validated). */
static size_t class_end(const pm_t *m, size_t p)
{
    unsigned char c = m->pat[p++];
    if (c == '%') return p + 1;
    if (c == '[') {
        if (m->pat[p] == '^') p++;
        do {
            if (m->pat[p++] == '%' && p < m->plen) p++;
        } while (m->pat[p] != ']');
        return p + 1;
    }
    return p;
}

static bool single_match(const pm_t *m, size_t s, size_t p, size_t ep)
{
    if (s >= m->slen) return false;
    int c = m->src[s];
    switch (m->pat[p]) {
    case '.': return true;
    case '%': return class_match(c, m->pat[p + 1]);
    case '[': return bracket_match(c, p, ep - 1, m->pat);
    default: return m->pat[p] == c;
    }
}

#define PM_FAIL ((size_t)-1)

static size_t do_match(pm_t *m, size_t s, size_t p);

static size_t max_expand(pm_t *m, size_t s, size_t p, size_t ep)
{
    size_t i = 0;
    while (single_match(m, s + i, p, ep)) i++;
    m->steps += (long)i;
    for (;;) {
        size_t r = do_match(m, s + i, ep + 1);
        if (r != PM_FAIL || m->aborted) return r;
        if (i-- == 0) return PM_FAIL;
    }
}

static size_t min_expand(pm_t *m, size_t s, size_t p, size_t ep)
{
    for (;;) {
        size_t r = do_match(m, s, ep + 1);
        if (r != PM_FAIL || m->aborted) return r;
        if (!single_match(m, s, p, ep)) return PM_FAIL;
        s++;
    }
}

static size_t do_match(pm_t *m, size_t s, size_t p)
{
    if (m->depth-- == 0) {
        m->aborted = true; /* Lua raises "pattern too complex" here */
        return PM_FAIL;
    }
    for (;;) {
        if (++m->steps > PM_MAXSTEPS) {
            m->aborted = true;
            s = PM_FAIL;
            break;
        }
        if (p == m->plen) break;
        if (m->pat[p] == '$' && p + 1 == m->plen) {
            if (s != m->slen) s = PM_FAIL;
            break;
        }
        size_t ep = class_end(m, p);
        int q = ep < m->plen ? m->pat[ep] : 0;
        if (!single_match(m, s, p, ep)) {
            if (q == '*' || q == '?' || q == '-') {
                p = ep + 1;
                continue;
            }
            s = PM_FAIL;
            break;
        }
        if (q == '?') {
            size_t r = do_match(m, s + 1, ep + 1);
            if (r != PM_FAIL || m->aborted) {
                s = r;
                break;
            }
            p = ep + 1;
            continue;
        }
        if (q == '+') {
            s = max_expand(m, s + 1, p, ep);
            break;
        }
        if (q == '*') {
            s = max_expand(m, s, p, ep);
            break;
        }
        if (q == '-') {
            s = min_expand(m, s, p, ep);
            break;
        }
        s++;
        p = ep;
    }
    m->depth++;
    return s;
}

int mg_pattern_find(const char *pattern, size_t plen, const char *subject, size_t slen,
                    size_t *start, size_t *end)
{
    pm_t m = {
        (const unsigned char *)subject, slen, (const unsigned char *)pattern, plen, 0, 0, false};
    size_t p0 = 0;
    bool anchor = plen > 0 && pattern[0] == '^';
    if (anchor) p0 = 1;
    for (size_t s = 0; s <= slen; s++) {
        m.depth = PM_MAXDEPTH;
        size_t e = do_match(&m, s, p0);
        if (m.aborted) return -1;
        if (e != PM_FAIL) {
            if (start) *start = s;
            if (end) *end = e;
            return 1;
        }
        if (anchor) break;
    }
    return 0;
}

const char *mg_pattern_check(const char *pat, size_t plen)
{
    if (memchr(pat, '\0', plen)) return "NUL byte in pattern";
    size_t i = plen > 0 && pat[0] == '^' ? 1 : 0;
    while (i < plen) {
        unsigned char c = (unsigned char)pat[i];
        if (c == '(' || c == ')')
            return "captures are not supported (write %( for a literal parenthesis)";
        if (c == '%') {
            if (i + 1 >= plen) return "malformed pattern (ends with '%')";
            unsigned char d = (unsigned char)pat[i + 1];
            if (d == 'b') return "%b is not supported";
            if (d == 'f') return "%f is not supported";
            if (isdigit(d)) return "back-references (%0-%9) are not supported";
            i += 2;
        } else if (c == '[') {
            size_t j = i + 1;
            if (j < plen && pat[j] == '^') j++;
            do {
                if (j >= plen) return "malformed pattern (missing ']')";
                if (pat[j++] == '%' && j < plen) j++;
            } while (j >= plen || pat[j] != ']');
            i = j + 1;
        } else {
            i++;
        }
        if (i < plen && (pat[i] == '*' || pat[i] == '+' || pat[i] == '-' || pat[i] == '?')) i++;
    }
    return NULL;
}

static bool is_class_letter(int c)
{
    return c && strchr("acdglpsuwxz", tolower(c)) != NULL;
}

void mg_pattern_lower_literals(char *pat, size_t plen)
{
    for (size_t i = 0; i < plen; i++) {
        if (pat[i] == '%' && i + 1 < plen) {
            if (!is_class_letter((unsigned char)pat[i + 1]))
                pat[i + 1] = (char)tolower((unsigned char)pat[i + 1]);
            i++;
        } else {
            pat[i] = (char)tolower((unsigned char)pat[i]);
        }
    }
}

/* =============================================================================================
 * 3. Rule sets */

enum { MAX_STATUS_RANGES = 8, MAX_FIELD_DEPTH = 8, MAX_UNLESS = 8 };

typedef struct rule {
    mg_class_t cls;
    uint8_t n_status; /* 0: any status (and errors without one) */
    uint16_t st_lo[MAX_STATUS_RANGES], st_hi[MAX_STATUS_RANGES];
    char *path[MAX_FIELD_DEPTH]; /* field path segments */
    uint8_t n_path;
    char *header;
    char *text; /* lowercased needle, or pattern with lowercased literals */
    size_t text_len;
    bool is_pattern;
    char *unless[MAX_UNLESS]; /* lowercased */
    size_t unless_len[MAX_UNLESS];
    uint8_t n_unless;
    char *id;
} rule_t;

struct mg_patterns {
    rule_t *rules;
    size_t n, cap;
    size_t n_operator;
    atomic_int refs;
    bool immortal;
};

static void rule_free(rule_t *r)
{
    for (size_t i = 0; i < r->n_path; i++) free(r->path[i]);
    for (size_t i = 0; i < r->n_unless; i++) free(r->unless[i]);
    free(r->header);
    free(r->text);
    free(r->id);
}

static void patterns_free(mg_patterns_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) rule_free(&p->rules[i]);
    free(p->rules);
    free(p);
}

mg_patterns_t *mg_patterns_retain(const mg_patterns_t *cp)
{
    mg_patterns_t *p = (mg_patterns_t *)cp;
    if (p && !p->immortal) atomic_fetch_add(&p->refs, 1);
    return p;
}

void mg_patterns_release(const mg_patterns_t *cp)
{
    mg_patterns_t *p = (mg_patterns_t *)cp;
    if (!p || p->immortal) return;
    if (atomic_fetch_sub(&p->refs, 1) == 1) patterns_free(p);
}

size_t mg_patterns_count(const mg_patterns_t *p, size_t *n_operator)
{
    if (n_operator) *n_operator = p ? p->n_operator : 0;
    return p ? p->n : 0;
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = mg_xstrndup(s, n);
    for (size_t i = 0; i < n; i++) d[i] = (char)tolower((unsigned char)d[i]);
    return d;
}

/* ------------------------------------------------------------------ LONGJMP ZONE: Lua loading */

/* A rules file is a table constructor: the built-ins take a few thousand instructions. The
 * budgets only stop a runaway file (a loop, a pcall'd error in a loop) from holding a reload. */
enum { LOAD_MEM_LIMIT = 16 << 20, LOAD_HOOK_EVERY = 1000, MAX_FILE_BYTES = 1 << 20 };
static long load_insn_budget = 5 * 1000 * 1000;
static int load_time_budget_ms = 1000;

void mg_patterns_set_load_budget(long insns, int ms)
{
    load_insn_budget = MG_MAX(insns, 100 * 1000);
    load_time_budget_ms = MG_MAX(ms, 1);
}

typedef struct lmem {
    size_t used, limit;
    long insns;
    int64_t deadline_ms; /* monotonic */
} lmem_t;

static void *load_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lmem_t *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        m->used -= old;
        return NULL;
    }
    if (nsize > old && m->used + (nsize - old) > m->limit) return NULL;
    void *np = realloc(ptr, nsize);
    if (!np) return NULL;
    m->used = m->used - old + nsize;
    return np;
}

/* Instruction and time budget. Once exhausted the hook fires on every instruction, so a pcall
 * inside the chunk cannot swallow the error and carry on. */
static void load_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lmem_t *m;
    lua_getallocf(L, (void **)&m);
    m->insns += LOAD_HOOK_EVERY;
    if (m->insns > load_insn_budget || mg_now_ms() > m->deadline_ms) {
        lua_sethook(L, load_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "error patterns: CPU budget exhausted (an endless loop?)");
    }
}

static int env_index(lua_State *L)
{
    const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    luaL_where(L, 1); /* level 1: the chunk that read the global (0 is this function) */
    lua_pushfstring(L, "unknown global '%s'", name);
    lua_concat(L, 2);
    return lua_error(L);
}

/* The chunk's _ENV: an allow-listed copy of the safe globals; unknown reads raise. */
static void push_sandbox_env(lua_State *L)
{
    static const char *const allowed[] = {"assert", "error",    "ipairs", "next",   "pairs",
                                          "pcall",  "select",   "tonumber", "tostring", "type",
                                          "xpcall", "_VERSION", "string", "table",  "math",
                                          "utf8"};
    lua_newtable(L);
    for (size_t i = 0; i < MG_ARRAY_LEN(allowed); i++) {
        lua_getglobal(L, allowed[i]);
        lua_setfield(L, -2, allowed[i]);
    }
    lua_newtable(L);
    lua_pushcfunction(L, env_index);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

typedef struct builder {
    mg_patterns_t *p;
    const char *name; /* for messages and default ids */
    bool builtins;    /* out: the operator's file asked for (or against) the built-ins */
} builder_t;

static const char *const rule_keys[] = {"class", "status", "field", "header", "match",
                                        "pattern", "unless", "id", "comment"};

static int rule_error(lua_State *L, builder_t *b, lua_Integer n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int rule_error(lua_State *L, builder_t *b, lua_Integer n, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s: rule %d: %s", b->name, (int)n, msg);
}

/* A string member of the rule at index t, or NULL when absent; raises on a wrong type or NUL. */
static const char *opt_string(lua_State *L, builder_t *b, lua_Integer n, int t, const char *key,
                              size_t *len)
{
    lua_pushstring(L, key);
    lua_rawget(L, t);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING) rule_error(L, b, n, "'%s' must be a string", key);
    size_t l;
    const char *s = lua_tolstring(L, -1, &l);
    if (memchr(s, '\0', l)) rule_error(L, b, n, "'%s' contains a NUL byte", key);
    if (l == 0) rule_error(L, b, n, "'%s' is empty", key);
    lua_pop(L, 1); /* still referenced by the rule table, so s stays valid */
    if (len) *len = l;
    return s;
}

static void add_status(lua_State *L, builder_t *b, lua_Integer n, rule_t *r)
{
    if (r->n_status == MAX_STATUS_RANGES) rule_error(L, b, n, "too many statuses");
    long lo = 0, hi = 0;
    int isint = 0;
    lua_Integer iv = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
    if (isint) {
        lo = hi = iv < 0 || iv > 999 ? 0 : (long)iv;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        char x1, x2, extra;
        int d;
        if (strlen(s) == 3 && sscanf(s, "%1d%c%c%c", &d, &x1, &x2, &extra) == 3 &&
            tolower((unsigned char)x1) == 'x' && tolower((unsigned char)x2) == 'x') {
            lo = d * 100L;
            hi = lo + 99;
        } else if (sscanf(s, "%ld-%ld%c", &lo, &hi, &extra) != 2) {
            rule_error(L, b, n, "status \"%s\" is not a number, \"4xx\" or \"500-599\"", s);
        }
    } else {
        rule_error(L, b, n, "status must be a number, a string like \"5xx\" or a list");
        return;
    }
    if (lo < 100 || hi > 599 || lo > hi) rule_error(L, b, n, "status out of range 100-599");
    r->st_lo[r->n_status] = (uint16_t)lo;
    r->st_hi[r->n_status] = (uint16_t)hi;
    r->n_status++;
}

static void convert_rule(lua_State *L, builder_t *b, lua_Integer n, int t)
{
    mg_patterns_t *p = b->p;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->rules = mg_xrealloc(p->rules, p->cap * sizeof *p->rules);
    }
    rule_t *r = &p->rules[p->n++]; /* owned by p from here, whatever is raised below */
    memset(r, 0, sizeof *r);

    /* Unknown keys are typos: refuse them rather than silently match too much. */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        bool known = false;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (size_t i = 0; i < MG_ARRAY_LEN(rule_keys); i++)
                known = known || strcmp(lua_tostring(L, -2), rule_keys[i]) == 0;
        if (!known) {
            lua_pop(L, 1);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
            rule_error(L, b, n, "unknown key '%s'", k);
        }
        lua_pop(L, 1);
    }

    const char *cls = opt_string(L, b, n, t, "class", NULL);
    if (!cls) rule_error(L, b, n, "'class' is required");
    if (!mg_class_from_name(cls, &r->cls) || r->cls == MG_CLASS_OK ||
        r->cls == MG_CLASS_CANCELLED || r->cls == MG_CLASS_NO_KEY)
        rule_error(L, b, n, "unknown class '%s'", cls);

    size_t idl;
    const char *id = opt_string(L, b, n, t, "id", &idl);
    r->id = id ? mg_xstrndup(id, idl) : mg_xasprintf("%s#%d", b->name, (int)n);

    lua_pushstring(L, "status");
    lua_rawget(L, t);
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_Integer k = (lua_Integer)lua_rawlen(L, -1);
        if (k == 0) rule_error(L, b, n, "'status' is an empty list");
        for (lua_Integer i = 1; i <= k; i++) {
            lua_rawgeti(L, -1, i);
            add_status(L, b, n, r);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        add_status(L, b, n, r);
    }
    lua_pop(L, 1);

    size_t fl;
    const char *field = opt_string(L, b, n, t, "field", &fl);
    const char *header = opt_string(L, b, n, t, "header", NULL);
    if (field && header) rule_error(L, b, n, "'field' and 'header' exclude each other");
    if (field) {
        const char *s = field, *end = field + fl;
        while (s <= end) {
            const char *dot = memchr(s, '.', (size_t)(end - s));
            const char *seg_end = dot ? dot : end;
            if (seg_end == s) rule_error(L, b, n, "field '%s' has an empty segment", field);
            if (r->n_path == MAX_FIELD_DEPTH) rule_error(L, b, n, "field '%s' is too deep", field);
            r->path[r->n_path++] = mg_xstrndup(s, (size_t)(seg_end - s));
            s = seg_end + 1;
        }
    }
    if (header) r->header = mg_xstrdup(header);

    size_t ml, pl;
    const char *match = opt_string(L, b, n, t, "match", &ml);
    const char *pattern = opt_string(L, b, n, t, "pattern", &pl);
    if (match && pattern) rule_error(L, b, n, "'match' and 'pattern' exclude each other");
    if (match) {
        r->text = lower_dup(match, ml);
        r->text_len = ml;
    } else if (pattern) {
        const char *why = mg_pattern_check(pattern, pl);
        if (why) rule_error(L, b, n, "bad pattern: %s", why);
        r->text = mg_xstrndup(pattern, pl);
        mg_pattern_lower_literals(r->text, pl);
        r->text_len = pl;
        r->is_pattern = true;
    }

    lua_pushstring(L, "unless");
    lua_rawget(L, t);
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TTABLE) {
        bool list = lua_type(L, -1) == LUA_TTABLE;
        lua_Integer k = list ? (lua_Integer)lua_rawlen(L, -1) : 1;
        for (lua_Integer i = 1; i <= k; i++) {
            if (list) lua_rawgeti(L, -1, i);
            size_t ul = 0;
            const char *u = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &ul) : NULL;
            if (!u || ul == 0 || memchr(u, '\0', ul))
                rule_error(L, b, n, "'unless' entries must be non-empty strings");
            if (r->n_unless == MAX_UNLESS) rule_error(L, b, n, "too many 'unless' entries");
            r->unless[r->n_unless] = lower_dup(u, ul);
            r->unless_len[r->n_unless++] = ul;
            if (list) lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        rule_error(L, b, n, "'unless' must be a string or a list of strings");
    }
    lua_pop(L, 1);

    if (!r->n_status && !r->n_path && !r->header && !r->text)
        rule_error(L, b, n, "matches everything: give a status, field, header, match or pattern");
}

/* Protected: converts the list at index 2 into rules appended to the builder at index 1. */
static int convert_list(lua_State *L)
{
    builder_t *b = lua_touserdata(L, 1);
    if (lua_type(L, 2) != LUA_TTABLE)
        return luaL_error(L, "%s: must return a table of rules", b->name);
    lua_pushstring(L, "rules");
    lua_rawget(L, 2);
    if (!lua_isnil(L, -1)) { /* {rules = {...}, builtins = false} */
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "%s: 'rules' must be a list", b->name);
        lua_pushstring(L, "builtins");
        lua_rawget(L, 2);
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            return luaL_error(L, "%s: 'builtins' must be a boolean", b->name);
        if (lua_isboolean(L, -1)) b->builtins = lua_toboolean(L, -1);
        lua_pop(L, 1);
        lua_replace(L, 2);
    } else {
        lua_pop(L, 1);
    }
    lua_Integer k = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= k; i++) {
        lua_rawgeti(L, 2, i);
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "%s: rule %d: not a table", b->name, (int)i);
        convert_rule(L, b, i, lua_gettop(L));
        lua_pop(L, 1);
    }
    return 0;
}

/* Runs one chunk in its own sandboxed environment and converts what it returns. Returns false with
 * the message in err. Nothing of the Lua state survives into the rules but copied strings. */
static bool load_chunk(lua_State *L, builder_t *b, const char *text, size_t len,
                       const char *chunkname, char *err, size_t errlen)
{
    lua_settop(L, 0);
    if (luaL_loadbufferx(L, text, len, chunkname, "t") != LUA_OK) goto lua_error;
    push_sandbox_env(L);
    lua_setupvalue(L, -2, 1);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) goto lua_error;
    lua_pushcfunction(L, convert_list);
    lua_pushlightuserdata(L, b);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) goto lua_error;
    lua_settop(L, 0);
    return true;
lua_error:
    snprintf(err, errlen, "%s",
             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error patterns: Lua error");
    lua_settop(L, 0);
    return false;
}

/* ------------------------------------------------------------------ end of LONGJMP ZONE */

static const mg_embedded_file_t *embedded(const char *name)
{
    for (const mg_embedded_file_t *f = mg_embedded_files; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

static lua_State *new_load_state(lmem_t *mem)
{
    mem->used = 0;
    mem->limit = LOAD_MEM_LIMIT;
    mem->insns = 0;
    mem->deadline_ms = mg_now_ms() + load_time_budget_ms;
    lua_State *L = lua_newstate(load_alloc, mem);
    if (!L) return NULL;
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                    {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8}};
    for (size_t i = 0; i < MG_ARRAY_LEN(libs); i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    lua_sethook(L, load_hook, LUA_MASKCOUNT, LOAD_HOOK_EVERY);
    return L;
}

static mg_patterns_t *load_all(const char *extra, size_t extra_len, const char *name, char *err,
                               size_t errlen)
{
    lmem_t mem;
    lua_State *L = NULL;
    mg_patterns_t *p = mg_xcalloc(1, sizeof *p);
    atomic_init(&p->refs, 1);
    char chunkname[512];
    builder_t b = {p, "error_patterns.lua", true};
    if (errlen) err[0] = '\0';

    L = new_load_state(&mem);
    if (!L) {
        snprintf(err, errlen, "error patterns: cannot create a Lua state");
        goto error;
    }
    if (extra) {
        const char *base = strrchr(name, '/');
        b.name = base ? base + 1 : name;
        snprintf(chunkname, sizeof chunkname, "@%s", name);
        if (!load_chunk(L, &b, extra, extra_len, chunkname, err, errlen)) goto error;
        p->n_operator = p->n;
    }
    if (b.builtins) {
        const mg_embedded_file_t *f = embedded("error_patterns.lua");
        if (!f) {
            snprintf(err, errlen,
                     "error patterns: lua/error_patterns.lua is not embedded in this build");
            goto error;
        }
        b.name = "error_patterns.lua";
        if (!load_chunk(L, &b, f->text, f->len, "=error_patterns.lua", err, errlen)) goto error;
    }
    lua_close(L);
    return p;
error:
    if (L) lua_close(L);
    patterns_free(p);
    return NULL;
}

mg_patterns_t *mg_patterns_load_string(const char *extra_text, size_t len, const char *name,
                                       char *err, size_t errlen)
{
    return load_all(extra_text, len, name ? name : "errorPatterns", err, errlen);
}

mg_patterns_t *mg_patterns_load(const char *extra_lua_path, char *err, size_t errlen)
{
    if (!extra_lua_path) return load_all(NULL, 0, NULL, err, errlen);
    FILE *f = fopen(extra_lua_path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", extra_lua_path, strerror(errno));
        return NULL;
    }
    char *text = mg_xmalloc(MAX_FILE_BYTES + 1);
    size_t n = fread(text, 1, MAX_FILE_BYTES + 1, f);
    bool bad = ferror(f);
    fclose(f);
    mg_patterns_t *p = NULL;
    if (bad) snprintf(err, errlen, "%s: read error", extra_lua_path);
    else if (n > MAX_FILE_BYTES)
        snprintf(err, errlen, "%s: larger than %d bytes", extra_lua_path, MAX_FILE_BYTES);
    else p = load_all(text, n, extra_lua_path, err, errlen);
    free(text);
    return p;
}

static mg_patterns_t *builtin_set;
static char builtin_err[256];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static void builtin_init(void)
{
    builtin_set = load_all(NULL, 0, NULL, builtin_err, sizeof builtin_err);
    if (!builtin_set) builtin_set = mg_xcalloc(1, sizeof *builtin_set);
    builtin_set->immortal = true;
}

const mg_patterns_t *mg_patterns_builtin(void)
{
    pthread_once(&builtin_once, builtin_init);
    return builtin_set;
}

const char *mg_patterns_builtin_error(void)
{
    pthread_once(&builtin_once, builtin_init);
    return builtin_err[0] ? builtin_err : NULL;
}

/* =============================================================================================
 * The echo guard. Servers quote parts of a bad request in their 400s: OpenAI `Invalid value:
 * '<value>'` and the name of an unknown parameter, pydantic (vLLM) the `input`. Read as the
 * server's own words, a client's "maximum context length is 1024 tokens" or "The model `m` does
 * not exist" would teach every client's requests a tiny window or cool the model down for all.
 * So before the wording rules and the window parse read an error, every run of the request's
 * text that the error quotes is blanked (spaces: offsets and the JSON stay as they were).
 *
 * The request's member names and string values are cut into pieces at the bytes a serializer may
 * write differently from the client (echo_breaks); a piece of at least ECHO_MIN_PIECE bytes found
 * whole in the text, case aside, is blanked, and so is one that runs to the end of the text (the
 * rules read only the body's start, which may cut a quoted value). Shorter pieces stay: common
 * words of the server's own message ("tokens", "model") must not go. A genuine overflow message
 * still reads: it is the server's template with numbers of its own, which no piece holds whole.
 *
 * Cost: one pass over the request's strings (linear, as its parse was), an index of the text's
 * 8-byte windows (the text is the start the rules read, 8 KiB at most), and one lookup for each
 * piece. The lookups' chain steps and compared bytes are capped at ECHO_WORK (milliseconds);
 * a request that needs more (only text repeated thousands of times gets there) has the whole text
 * blanked: its error is then read by its structured fields and its status only. */

enum { ECHO_MIN_PIECE = 8, ECHO_WORK = 1 << 22 };

typedef struct echo {
    const char *text; /* the text as it came: what pieces are looked for in */
    char *out;        /* the text the caller reads, blanked */
    size_t n;
    uint32_t *head; /* hash of an 8-byte window -> 1 + its last position, 0 none */
    uint32_t *next; /* position -> 1 + the previous position with the same hash, 0 none */
    size_t mask;
    long work;
    bool breaks[256]; /* echo_breaks, by byte: the request's strings are scanned byte by byte */
} echo_t;

_Static_assert(ECHO_MIN_PIECE == sizeof(uint64_t), "the index hashes windows of 8 bytes");

/* Bytes that may reach the error other than as the client wrote them: JSON escapes (quote,
 * backslash, slash), non-ASCII (\u-escaped by Python's json.dumps), Go's HTML-safe escapes (<, >,
 * &) and the quote Python's repr swaps. A run without them is quoted byte for byte, or not at
 * all. Control characters stay in a piece, as spaces (echo_fold). */
static bool echo_breaks(unsigned char c)
{
    return c == 0 || c >= 0x7f || c == '"' || c == '\\' || c == '/' || c == '\'' || c == '<' ||
           c == '>' || c == '&';
}

/* A byte as pieces and text are compared: case aside, and a control character as the space the
 * error's detail shows it as (its JSON text escapes it: \t there matches nothing). So
 * "n_ctx:\t2048" is one piece, not two too short to blank. */
static unsigned char echo_fold(unsigned char c)
{
    return c < 0x20 ? ' ' : (unsigned char)tolower(c);
}

static size_t echo_hash(const echo_t *e, const char *s)
{
    uint64_t k = 0;
    for (size_t i = 0; i < ECHO_MIN_PIECE; i++) k = k << 8 | (uint64_t)echo_fold((unsigned char)s[i]);
    return (size_t)((k * 0x9E3779B97F4A7C15u) >> 32) & e->mask;
}

/* Whether a quoted value may begin at position q of the text: at its start, after a byte no piece
 * holds (a quote, a backslash…), or after ": " (OpenAI names an unknown parameter so, unquoted).
 * A server's own sentence has its words after a word, not there. */
static bool echo_starts(const echo_t *e, size_t q)
{
    return q == 0 || e->breaks[(unsigned char)e->text[q - 1]] ||
           (q >= 2 && e->text[q - 1] == ' ' && e->text[q - 2] == ':');
}

/* Whether a quoted value may end before position at: the text's end, a byte no piece holds, or
 * punctuation or a space after it. */
static bool echo_ends(const echo_t *e, size_t at)
{
    return at >= e->n || e->breaks[(unsigned char)e->text[at]] || strchr(" .,;:)", e->text[at]);
}

/* Whether the text holds an ellipsis ("..." or U+2026) starting at position at: where a server
 * that shortens long values (pydantic's 'first 23...last 24') cut one. */
static bool echo_ellipsis(const echo_t *e, size_t at)
{
    return (at + 3 <= e->n && memcmp(e->text + at, "...", 3) == 0) ||
           (at + 3 <= e->n && memcmp(e->text + at, "\xe2\x80\xa6", 3) == 0);
}

/* Blanks where the text quotes piece p: whole, where a quoted value may begin and end; its head,
 * where the server cut it at the end of the text or before an ellipsis; its tail, after an
 * ellipsis. A run of the server's own words that a piece also holds (a prompt quoting "maximum
 * context length is") follows a word of the server's sentence ("This model's maximum…") and
 * stays. */
static void echo_piece(echo_t *e, const char *p, size_t len)
{
    for (uint32_t at = e->head[echo_hash(e, p)]; at && e->work <= ECHO_WORK; at = e->next[at - 1]) {
        size_t q = at - 1, m = MG_MIN(len, e->n - q), i = 0;
        while (i < m && echo_fold((unsigned char)e->text[q + i]) == echo_fold((unsigned char)p[i])) i++;
        e->work += 1 + (long)i;
        if (i < ECHO_MIN_PIECE || !echo_starts(e, q)) continue;
        bool whole = i == len && echo_ends(e, q + i);
        bool head = q + i == e->n || echo_ellipsis(e, q + i);
        if (whole || head) memset(e->out + q, ' ', i);
    }
    if (len <= ECHO_MIN_PIECE) return;
    const char *tail = p + len - ECHO_MIN_PIECE;
    for (uint32_t at = e->head[echo_hash(e, tail)]; at && e->work <= ECHO_WORK; at = e->next[at - 1]) {
        size_t end = at - 1 + ECHO_MIN_PIECE, j = 0;
        if (end > e->n) continue;
        while (j < len && j < end && echo_fold((unsigned char)e->text[end - 1 - j]) == echo_fold((unsigned char)p[len - 1 - j]))
            j++;
        e->work += 1 + (long)j;
        if (j >= ECHO_MIN_PIECE && j < len && end - j >= 3 && echo_ellipsis(e, end - j - 3) && echo_ends(e, end))
            memset(e->out + end - j, ' ', j);
    }
}

static void echo_string(echo_t *e, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u && e->work <= ECHO_WORK) {
        size_t k = 0;
        while (!e->breaks[u[k]]) k++; /* NUL breaks too */
        if (k >= ECHO_MIN_PIECE) echo_piece(e, (const char *)u, k);
        for (u += k; *u && e->breaks[*u]; u++) {}
    }
}

/* Depth is bounded by the request parser's nesting limit. */
static void echo_tree(echo_t *e, const cJSON *j)
{
    for (; j && e->work <= ECHO_WORK; j = j->next) {
        if (j->string) echo_string(e, j->string);
        if (cJSON_IsString(j) && j->valuestring) echo_string(e, j->valuestring);
        else echo_tree(e, j->child);
    }
}

void mg_classify_blank_echoes(char *text, size_t n, const cJSON *request)
{
    if (!request || n < ECHO_MIN_PIECE) return;
    size_t buckets = 16;
    while (buckets < 2 * n) buckets *= 2;
    char *copy = mg_xmalloc(n);
    memcpy(copy, text, n);
    echo_t e = {copy, text, n, mg_xcalloc(buckets, sizeof(uint32_t)),
                mg_xmalloc(n * sizeof(uint32_t)), buckets - 1, 0, {false}};
    for (int c = 0; c < 256; c++) e.breaks[c] = echo_breaks((unsigned char)c);
    for (size_t q = 0; q + ECHO_MIN_PIECE <= n; q++) {
        size_t h = echo_hash(&e, copy + q);
        e.next[q] = e.head[h];
        e.head[h] = (uint32_t)q + 1;
    }
    echo_tree(&e, request);
    if (e.work > ECHO_WORK) memset(text, ' ', n);
    free(copy);
    free(e.head);
    free(e.next);
}

/* =============================================================================================
 * Matching */

enum { SCAN_BYTES = 8192, FIELD_BYTES = 4096, MAX_JSON_BYTES = 256 * 1024 };

typedef struct cctx {
    long status; /* 0: the error has no status of its own */
    const char *headers;
    size_t hlen;
    const char *body;
    size_t blen;
    bool lowered;
    size_t lblen;
    cJSON *json;
    bool parsed;
    const cJSON *request; /* the client's request, whose echoes lbody does not show; may be NULL */
    char lbody[SCAN_BYTES];
} cctx_t;

static const char *ctx_lbody(cctx_t *c, size_t *len)
{
    if (!c->lowered) {
        c->lblen = MG_MIN(c->blen, sizeof c->lbody);
        for (size_t i = 0; i < c->lblen; i++)
            c->lbody[i] = (char)tolower((unsigned char)c->body[i]);
        mg_classify_blank_echoes(c->lbody, c->lblen, c->request);
        c->lowered = true;
    }
    *len = c->lblen;
    return c->lbody;
}

static const cJSON *ctx_json(cctx_t *c)
{
    if (!c->parsed) {
        c->parsed = true;
        if (c->blen > 0 && c->blen <= MAX_JSON_BYTES)
            c->json = cJSON_ParseWithLength(c->body, c->blen);
    }
    return c->json;
}

static bool contains(const char *hay, size_t n, const char *needle, size_t k)
{
    return k <= n && memmem(hay, n, needle, k) != NULL;
}

static size_t lower_into(char *dst, size_t cap, const char *s, size_t n)
{
    n = MG_MIN(n, cap);
    for (size_t i = 0; i < n; i++) dst[i] = (char)tolower((unsigned char)s[i]);
    return n;
}

static bool text_matches(const rule_t *r, const char *text, size_t n)
{
    if (!r->is_pattern) return contains(text, n, r->text, r->text_len);
    return mg_pattern_find(r->text, r->text_len, text, n, NULL, NULL) == 1;
}

static bool rule_matches(const rule_t *r, cctx_t *c)
{
    if (r->n_status) {
        bool ok = false;
        for (size_t i = 0; i < r->n_status && !ok; i++)
            ok = c->status >= r->st_lo[i] && c->status <= r->st_hi[i];
        if (!ok) return false;
    }
    if (r->header) {
        size_t vl;
        const char *v = find_header(c->headers, c->hlen, r->header, &vl);
        if (!v) return false;
        if (r->text) {
            char buf[FIELD_BYTES];
            size_t n = lower_into(buf, sizeof buf, v, vl);
            if (!text_matches(r, buf, n)) return false;
        }
    } else if (r->n_path) {
        const cJSON *j = ctx_json(c);
        for (size_t i = 0; j && i < r->n_path; i++)
            j = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, r->path[i]) : NULL;
        if (!j || cJSON_IsNull(j)) return false;
        if (r->text) {
            char buf[FIELD_BYTES];
            size_t n;
            if (cJSON_IsString(j)) {
                n = lower_into(buf, sizeof buf, j->valuestring, strlen(j->valuestring));
            } else if (cJSON_IsNumber(j)) {
                double d = j->valuedouble;
                if (d > -9.2e18 && d < 9.2e18 && d == (double)(long long)d) /* no UB on 1e300 */
                    n = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)d);
                else n = (size_t)snprintf(buf, sizeof buf, "%.17g", d);
            } else if (cJSON_IsBool(j)) {
                n = (size_t)snprintf(buf, sizeof buf, "%s", cJSON_IsTrue(j) ? "true" : "false");
            } else {
                return false; /* objects and arrays only satisfy an existence test */
            }
            if (!text_matches(r, buf, n)) return false;
        }
    } else if (r->text) {
        size_t n;
        const char *lb = ctx_lbody(c, &n);
        if (!text_matches(r, lb, n)) return false;
    }
    if (r->n_unless) {
        size_t n;
        const char *lb = ctx_lbody(c, &n);
        for (size_t i = 0; i < r->n_unless; i++)
            if (contains(lb, n, r->unless[i], r->unless_len[i])) return false;
    }
    return true;
}

static const rule_t *first_match(const mg_patterns_t *p, cctx_t *c)
{
    for (size_t i = 0; i < p->n; i++)
        if (rule_matches(&p->rules[i], c)) return &p->rules[i];
    return NULL;
}

/* Whether a 2xx body is in fact an error object. Cheap test first: success bodies rarely say
 * "error" in their first bytes, and those that do are parsed once. */
static bool body_is_error(cctx_t *c)
{
    size_t i = 0;
    while (i < c->blen && isspace((unsigned char)c->body[i])) i++;
    if (i == c->blen || c->body[i] != '{') return false;
    if (!memmem(c->body, MG_MIN(c->blen, 512), "\"error\"", 7)) return false;
    const cJSON *j = ctx_json(c);
    if (!cJSON_IsObject(j)) return false;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (e && !cJSON_IsNull(e) && !cJSON_IsFalse(e)) return true;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "object");
    if (cJSON_IsString(o) && strcmp(o->valuestring, "error") == 0) return true;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, "error") == 0;
}

static mg_class_t status_fallback(long status)
{
    if (status >= 200 && status < 300) return MG_CLASS_OK;
    if (status >= 400 && status < 500) return MG_CLASS_BAD_REQUEST;
    return MG_CLASS_SERVER_ERROR;
}

static void ctx_init(cctx_t *c, long status, const char *headers, size_t hlen, const char *body,
                     size_t blen, const cJSON *request)
{
    c->status = status;
    c->headers = headers;
    c->hlen = headers ? hlen : 0;
    c->body = body ? body : "";
    c->blen = body ? blen : 0;
    c->lowered = false;
    c->lblen = 0;
    c->json = NULL;
    c->request = request;
    c->parsed = false; /* lbody is filled on first use, not zeroed: it is 8 KiB */
}

static mg_classification_t classify(const mg_patterns_t *p, cctx_t *c, mg_class_t fallback)
{
    mg_classification_t out = {fallback, -1, -1, NULL};
    if (!p) p = mg_patterns_builtin();
    const rule_t *r = first_match(p, c);
    if (r) {
        out.cls = r->cls;
        out.rule = r->id;
    }
    return out;
}

mg_classification_t mg_classify_http2(const mg_patterns_t *p, long status, const char *headers,
                                      size_t hlen, const char *body, size_t blen,
                                      const cJSON *request)
{
    cctx_t ctx, *c = &ctx;
    mg_classification_t out;
    ctx_init(c, status, headers, hlen, body, blen, request);
    if (status >= 200 && status < 300) {
        if (!body_is_error(c)) {
            out = (mg_classification_t){MG_CLASS_OK, -1, -1, NULL};
            goto done;
        }
        c->status = 0; /* an error reported with 200 has no status of its own */
        out = classify(p, c, MG_CLASS_SERVER_ERROR);
    } else {
        out = classify(p, c, status_fallback(status));
    }
    out.retry_after_ms = mg_retry_after_ms_at(c->headers, c->hlen, mg_wall_ms());
    if (out.retry_after_ms < 0 && status == 429)
        out.retry_after_ms = mg_ratelimit_reset_ms(c->headers, c->hlen);
    out.should_retry = should_retry_header(c->headers, c->hlen);
done:
    cJSON_Delete(c->json);
    return out;
}

/* The error object of a stream's error event, put where the rules look for it (error.code,
 * error.type, error.message) when the event carries it elsewhere (PROTOCOLS.md A.2). Responses'
 * response.failed has it at response.error. Its bare error event {type:"error", code, message,
 * param} has the fields at the top level, with one slot, code, that servers fill with one of
 * OpenAI's codes (invalid_prompt) or with a type's name (invalid_request_error): judged as both. */
static void lift_stream_error(cJSON *j)
{
    if (!cJSON_IsObject(j) || cJSON_GetObjectItemCaseSensitive(j, "error")) return;
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(j, "response");
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(resp, "error");
    if (cJSON_IsObject(inner)) {
        cJSON_AddItemToObject(j, "error", cJSON_Duplicate(inner, true));
        return;
    }
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    if (!type || strcmp(type, "error") != 0) return;
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    static const char *const keys[] = {"code", "message", "param"};
    for (size_t i = 0; i < MG_ARRAY_LEN(keys); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        if (v) cJSON_AddItemToObject(e, keys[i], cJSON_Duplicate(v, true));
    }
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "code"));
    if (code) cJSON_AddStringToObject(e, "type", code);
}

/* The class of a stream's error that no rule knows. It has no status to fall back on, but
 * invalid_request_error names one: OpenAI's and Anthropic's type for a 400 (PROTOCOLS.md A.1,
 * A.3), the request's own fault ("No tool output found for function call call_1."). */
static mg_class_t stream_fallback(const cJSON *j)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "type"));
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code"));
    bool bad = (type && strcmp(type, "invalid_request_error") == 0) ||
               (code && strcmp(code, "invalid_request_error") == 0);
    return bad ? MG_CLASS_BAD_REQUEST : MG_CLASS_SERVER_ERROR;
}

mg_classification_t mg_classify_stream_error(const mg_patterns_t *p, const char *data, size_t len,
                                             const cJSON *request)
{
    cctx_t ctx, *c = &ctx;
    ctx_init(c, 0, NULL, 0, data, len, request);
    cJSON *j = (cJSON *)ctx_json(c);
    lift_stream_error(j);
    mg_classification_t out = classify(p, c, stream_fallback(j));
    cJSON_Delete(c->json);
    return out;
}

mg_class_t mg_classify_http(long status, const char *headers, size_t hlen, const char *body,
                            size_t blen)
{
    return mg_classify_http2(NULL, status, headers, hlen, body, blen, NULL).cls;
}

/* The digits at p (after spaces), as a count of tokens; 0 when there are none or too many. */
static int64_t tokens_at(const char *p, const char *end)
{
    while (p < end && *p == ' ') p++;
    int64_t v = 0;
    int digits = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (++digits > 9) return 0;
        v = v * 10 + (*p - '0');
    }
    return v;
}

int64_t mg_classify_context_window(const char *text, size_t len, const cJSON *request)
{
    /* The phrases servers put before the window (after the window: "-token context"). */
    static const char *const before[] = {
        "maximum context length is ",      /* OpenAI, vLLM, OpenRouter */
        "context length is only ",         /* vLLM >= 0.16 */
        "context length only supports ",   /* LM Studio */
        "context length of only ",         /* LM Studio ("…loaded with context length of only 4096") */
        "maximum model length of ",        /* vLLM ("…longer than the maximum model length of 4096") */
        "too large for model with ",       /* Mistral */
        "maximum prompt length is ",       /* xAI */
        "n_ctx: ",                         /* LM Studio (llama.cpp's message) */
        "\"n_ctx\":",                      /* llama.cpp's error field */
        "available context size (",        /* llama.cpp */
        "model's context length (",        /* SGLang */
        "maximum context length of ",      /* SGLang */
    };
    char low[4096];
    size_t n = lower_into(low, sizeof low, text ? text : "", text ? len : 0);
    mg_classify_blank_echoes(low, n, request);
    const char *end = low + n;
    for (size_t i = 0; i < MG_ARRAY_LEN(before); i++) {
        const char *hit = memmem(low, n, before[i], strlen(before[i]));
        int64_t w = hit ? tokens_at(hit + strlen(before[i]), end) : 0;
        if (w > 0) return w;
    }
    /* vLLM: "… over the 2048-token context." */
    const char *hit = memmem(low, n, "-token context", 14);
    if (hit) {
        const char *p = hit;
        while (p > low && p[-1] >= '0' && p[-1] <= '9') p--;
        if (p < hit) return tokens_at(p, hit);
    }
    return 0;
}

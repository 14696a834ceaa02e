/* Top-level member lookup and replacement on raw JSON text, the strict check, and the fixes
 * around cJSON's reading (escapes, duplicate names). See jsonutil.h. */
#include "jsonutil.h"

#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t skip_ws(const char *t, size_t i, size_t n)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) i++;
    return i;
}

/* i at an opening quote; returns the index after the closing quote. A quote closes the string
 * unless an odd run of backslashes precedes it (each backslash escapes the byte after it), so the
 * scan jumps from quote to quote (memchr) instead of walking every byte. */
static size_t skip_string(const char *t, size_t i, size_t n)
{
    for (i++; i < n;) {
        const char *q = memchr(t + i, '"', n - i);
        if (!q) return n;
        size_t k = (size_t)(q - t), b = 0;
        while (k - b > i && t[k - b - 1] == '\\') b++; /* the run stays inside the string */
        if (b % 2 == 0) return k + 1;
        i = k + 1;
    }
    return n;
}

/* i at the first byte of a value; returns the index after it. */
static size_t skip_value(const char *t, size_t i, size_t n)
{
    if (i >= n) return n;
    if (t[i] == '"') return skip_string(t, i, n);
    if (t[i] == '{' || t[i] == '[') {
        /* Bytes that matter inside a container: quotes and brackets. */
        static const unsigned char stop[256] = {
            ['"'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1};
        int depth = 0;
        for (; i < n; i++) {
            while (i < n && !stop[(unsigned char)t[i]]) i++;
            if (i >= n) break;
            char c = t[i];
            if (c == '"') {
                i = skip_string(t, i, n) - 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
        }
        return n;
    }
    while (i < n && t[i] != ',' && t[i] != '}' && t[i] != ']' && t[i] != ' ' && t[i] != '\n' &&
           t[i] != '\r' && t[i] != '\t')
        i++;
    return i;
}

/* The top-level members of the object text[0..n), one per call: *i starts at 0 (then holds where
 * to go on). Sets the key's bytes [*ks, *ke) (raw, between the quotes) and the value's [*vs, *ve);
 * false at the end (or at the first thing that is not a member). */
static bool next_member(const char *t, size_t n, size_t *i, size_t *ks, size_t *ke, size_t *vs, size_t *ve)
{
    size_t k = *i;
    if (k == 0) {
        k = skip_ws(t, 0, n);
        if (k >= n || t[k] != '{') return false;
        k++;
    } else {
        k = skip_ws(t, k, n);
        if (k >= n || t[k] != ',') return false;
        k++;
    }
    k = skip_ws(t, k, n);
    if (k >= n || t[k] != '"') return false;
    *ks = k + 1;
    *ke = skip_string(t, k, n) - 1;
    k = skip_ws(t, *ke + 1, n);
    if (k >= n || t[k] != ':') return false;
    *vs = skip_ws(t, k + 1, n);
    *ve = skip_value(t, *vs, n);
    *i = *ve;
    return true;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The value of the escape \uXXXX at t[i] (its backslash), or -1 when there is none. */
static long hex4(const char *t, size_t n, size_t i)
{
    if (i > n || n - i < 6 || t[i] != '\\' || t[i + 1] != 'u') return -1;
    long v = 0;
    for (size_t k = 2; k < 6; k++) {
        int h = hex_val(t[i + k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static bool is_high(long u)
{
    return u >= 0xD800 && u <= 0xDBFF;
}

static bool is_low(long u)
{
    return u >= 0xDC00 && u <= 0xDFFF;
}

/* The character of the escape at t[*i] (a backslash; n the end of the string's bytes) as cJSON
 * reads it once mg_json_fix_escapes has run; *i goes past it. -1: no escape cJSON reads. */
static long unescape(const char *t, size_t n, size_t *i)
{
    static const char from[8] = {'"', '\\', '/', 'b', 'f', 'n', 'r', 't'};
    static const char to[8] = {'"', '\\', '/', '\b', '\f', '\n', '\r', '\t'};
    if (n - *i < 2) return -1;
    const char *f = memchr(from, t[*i + 1], sizeof from);
    if (f) {
        *i += 2;
        return to[f - from];
    }
    long u = hex4(t, n, *i);
    if (u < 0) return -1;
    *i += 6;
    if (is_high(u)) {
        long lo = hex4(t, n, *i);
        if (!is_low(lo)) return 0xFFFD;
        *i += 6;
        return 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    }
    return u == 0 || is_low(u) ? 0xFFFD : u;
}

static size_t utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Whether the raw name t[ks..ke) is key once unescaped: cJSON routes {"mod\u0065l":…} by its
 * model, so the splice must find that member too, or the upstream would get two. */
static bool key_is(const char *t, size_t ks, size_t ke, const char *key, size_t klen)
{
    if (!memchr(t + ks, '\\', ke - ks)) return ke - ks == klen && memcmp(t + ks, key, klen) == 0;
    size_t i = ks, k = 0;
    while (i < ke) {
        char u[4];
        size_t un = 1;
        if (t[i] != '\\') {
            u[0] = t[i++];
        } else {
            long cp = unescape(t, ke, &i);
            if (cp < 0) return false;
            un = utf8_put(u, (uint32_t)cp);
        }
        if (un > klen - k || memcmp(key + k, u, un) != 0) return false;
        k += un;
    }
    return k == klen;
}

bool mg_json_member_span(const char *t, size_t n, const char *key, size_t *vstart, size_t *vend)
{
    size_t klen = strlen(key), i = 0, ks, ke, vs, ve;
    while (next_member(t, n, &i, &ks, &ke, &vs, &ve)) {
        if (key_is(t, ks, ke, key, klen)) {
            *vstart = vs, *vend = ve;
            return true; /* the first, as cJSON_GetObjectItem finds it */
        }
    }
    return false;
}

char *mg_json_set_member(const char *t, size_t n, const char *key, const char *raw, size_t *out_len)
{
    size_t klen = strlen(key), rlen = strlen(raw), i = 0, ks, ke, vs, ve, copied = 0;
    bool found = false;
    mg_buf_t b = {0};
    mg_buf_reserve(&b, n + rlen + klen + 8); /* one allocation, but for duplicates */
    /* Every occurrence: an upstream's parser may keep the first duplicate or the last. */
    while (next_member(t, n, &i, &ks, &ke, &vs, &ve)) {
        if (!key_is(t, ks, ke, key, klen)) continue;
        mg_buf_append(&b, t + copied, vs - copied);
        mg_buf_append(&b, raw, rlen);
        copied = ve;
        found = true;
    }
    if (found) {
        mg_buf_append(&b, t + copied, n - copied);
    } else {
        size_t k = skip_ws(t, 0, n) + 1; /* after '{' */
        size_t j = skip_ws(t, k, n);
        bool empty = j < n && t[j] == '}';
        mg_buf_append(&b, t, k);
        mg_buf_json_str(&b, key);
        mg_buf_puts(&b, ":");
        mg_buf_append(&b, raw, rlen);
        if (!empty) mg_buf_puts(&b, ",");
        mg_buf_append(&b, t + k, n - k);
    }
    *out_len = b.len;
    return mg_buf_steal(&b);
}

/* ---- strict check ---- */

#define STRICT_MAX_DEPTH 256 /* cJSON refuses past 1000 */
#define STRICT_MAX_NUMBER 60 /* cJSON reads at most 63 bytes of a number */

typedef struct strict {
    const char *t;
    size_t n, i;
    int depth;
    const char *const *keys; /* top-level members to capture (mg_json_strict_members) */
    size_t n_keys;
    mg_json_span_t *spans;
} strict_t;

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void st_ws(strict_t *s)
{
    while (s->i < s->n && is_ws(s->t[s->i]))
        s->i++;
}

/* \uXXXX at t[i] (the backslash): its code, or -1. */
static long st_hex4(const strict_t *s, size_t i)
{
    return hex4(s->t, s->n, i);
}

/* A string at s->i (its opening quote). Escapes as RFC 8259 allows and cJSON reads them: a \u
 * surrogate only as a high-low pair. No raw control bytes. is_key: no escapes at all. */
static bool st_string(strict_t *s, bool is_key)
{
    if (s->i >= s->n || s->t[s->i] != '"') return false;
    for (s->i++; s->i < s->n; s->i++) {
        unsigned char c = (unsigned char)s->t[s->i];
        if (c == '"') {
            s->i++;
            return true;
        }
        if (c < 0x20) return false;
        if (c != '\\') continue;
        if (is_key || s->i + 1 >= s->n) return false;
        char e = s->t[s->i + 1];
        if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
            e == 't') {
            s->i++;
            continue;
        }
        long u = st_hex4(s, s->i);
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) return false;
        if (u >= 0xD800 && u <= 0xDBFF) {
            long lo = st_hex4(s, s->i + 6);
            if (lo < 0xDC00 || lo > 0xDFFF) return false;
            s->i += 6;
        }
        s->i += 5; /* the loop steps past the last hex digit */
    }
    return false;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool st_number(strict_t *s)
{
    size_t start = s->i, i = s->i, n = s->n;
    const char *t = s->t;
    if (i < n && t[i] == '-') i++;
    if (i >= n) return false;
    if (t[i] == '0')
        i++;
    else if (t[i] >= '1' && t[i] <= '9')
        while (i < n && t[i] >= '0' && t[i] <= '9')
            i++;
    else
        return false;
    if (i < n && t[i] == '.') {
        i++;
        if (i >= n || t[i] < '0' || t[i] > '9') return false;
        while (i < n && t[i] >= '0' && t[i] <= '9')
            i++;
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-')) i++;
        if (i >= n || t[i] < '0' || t[i] > '9') return false;
        while (i < n && t[i] >= '0' && t[i] <= '9')
            i++;
    }
    s->i = i;
    return i - start <= STRICT_MAX_NUMBER;
}

static bool st_literal(strict_t *s, const char *lit, size_t len)
{
    if (s->n - s->i < len || memcmp(s->t + s->i, lit, len) != 0) return false;
    s->i += len;
    return true;
}

static bool st_value(strict_t *s)
{
    if (s->i >= s->n) return false;
    switch (s->t[s->i]) {
    case '"':
        return st_string(s, false);
    case 't':
        return st_literal(s, "true", 4);
    case 'f':
        return st_literal(s, "false", 5);
    case 'n':
        return st_literal(s, "null", 4);
    case '{':
    case '[': {
        bool obj = s->t[s->i] == '{';
        char close = obj ? '}' : ']';
        if (++s->depth > STRICT_MAX_DEPTH) return false;
        s->i++;
        st_ws(s);
        if (s->i < s->n && s->t[s->i] == close) {
            s->i++;
            s->depth--;
            return true;
        }
        for (;;) {
            mg_json_span_t *want = NULL;
            if (obj) {
                size_t ks = s->i + 1;
                if (!st_string(s, true)) return false;
                if (s->depth == 1) { /* a member of the root object: one asked for, first time? */
                    size_t kl = s->i - 1 - ks;
                    for (size_t k = 0; k < s->n_keys && !want; k++)
                        if (!s->spans[k].found && strlen(s->keys[k]) == kl &&
                            memcmp(s->keys[k], s->t + ks, kl) == 0)
                            want = &s->spans[k];
                }
                st_ws(s);
                if (s->i >= s->n || s->t[s->i] != ':') return false;
                s->i++;
                st_ws(s);
            }
            size_t vs = s->i;
            if (!st_value(s)) return false;
            if (want) *want = (mg_json_span_t){true, vs, s->i};
            st_ws(s);
            if (s->i >= s->n) return false;
            if (s->t[s->i] == ',') {
                s->i++;
                st_ws(s);
                continue;
            }
            if (s->t[s->i] != close) return false;
            s->i++;
            s->depth--;
            return true;
        }
    }
    default:
        return st_number(s);
    }
}

bool mg_json_strict(const char *text, size_t len, char *root)
{
    return mg_json_strict_members(text, len, root, NULL, 0, NULL);
}

bool mg_json_strict_members(const char *text, size_t len, char *root, const char *const *keys,
                            size_t n_keys, mg_json_span_t *spans)
{
    strict_t s = {text, len, 0, 0, keys, n_keys, spans};
    for (size_t k = 0; k < n_keys; k++)
        spans[k] = (mg_json_span_t){false, 0, 0};
    if (!text) return false;
    st_ws(&s);
    if (s.i >= len) return false;
    if (root) *root = text[s.i];
    if (!st_value(&s)) return false;
    st_ws(&s);
    return s.i == len;
}

/* ---- escapes cJSON mangles ---- */

size_t mg_json_control_byte(const char *text, size_t len)
{
    /* Eight bytes at a time (every request body passes here): a word with no byte under 0x20
     * is skipped whole; one with some (line ends, mostly) is looked at byte by byte. */
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, text + i, 8);
        if (!((w - ones * 0x20) & ~w & highs)) continue;
        for (size_t k = i; k < i + 8; k++) {
            unsigned char c = (unsigned char)text[k];
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return k;
        }
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return i;
    }
    return len;
}

char *mg_json_fix_escapes(const char *text, size_t len)
{
    char *out = NULL;
    const char *p = text && len ? memchr(text, '\\', len) : NULL;
    while (p) {
        size_t i = (size_t)(p - text);
        size_t step = 2; /* a backslash takes the byte after it: "\\u0000" is no escape */
        long u = hex4(text, len, i);
        if (u >= 0) {
            bool bad = u == 0 || is_low(u);
            step = 6;
            if (is_high(u)) {
                if (is_low(hex4(text, len, i + 6))) step = 12; /* a pair */
                else bad = true;
            }
            if (bad) {
                if (!out) {
                    out = mg_xmalloc(len + 1);
                    memcpy(out, text, len);
                    out[len] = '\0';
                }
                memcpy(out + i, "\\ufffd", 6);
            }
        }
        if (step >= len - i) break;
        p = memchr(text + i + step, '\\', len - i - step);
    }
    return out;
}

/* ---- duplicate member names ---- */

#define DUP_PAIRWISE 16 /* members up to which every pair is compared; past it, names are sorted */
#define DUP_PATH 160    /* what the message shows of where (longer paths are cut) */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A name the object j has twice, or NULL. A JSON schema's properties or a metadata object may
 * have hundreds of members: those are sorted, never compared pair by pair. */
static const char *dup_in(const cJSON *j)
{
    size_t n = 0;
    for (const cJSON *c = j->child; c; c = c->next)
        n++;
    if (n <= DUP_PAIRWISE) {
        for (const cJSON *a = j->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && strcmp(a->string, b->string) == 0) return a->string;
        return NULL;
    }
    const char **names = mg_xmalloc(n * sizeof *names);
    size_t k = 0;
    for (const cJSON *c = j->child; c; c = c->next)
        if (c->string) names[k++] = c->string;
    qsort(names, k, sizeof *names, cmp_names);
    const char *dup = NULL;
    for (size_t i = 1; i < k && !dup; i++)
        if (strcmp(names[i - 1], names[i]) == 0) dup = names[i];
    free(names);
    return dup;
}

/* path[0..plen) names where j is ("" for the root); the buffer holds DUP_PATH bytes. */
static bool dup_walk(const cJSON *j, char *path, size_t plen, char *msg, size_t msglen)
{
    if (cJSON_IsObject(j)) {
        const char *d = dup_in(j);
        if (d) {
            snprintf(msg, msglen, "duplicate key \"%.64s\" in %s", d, plen ? path : "the top-level object");
            return true;
        }
    } else if (!cJSON_IsArray(j)) {
        return false;
    }
    int index = 0;
    for (const cJSON *c = j->child; c; c = c->next, index++) {
        size_t room = DUP_PATH - plen;
        int w = cJSON_IsArray(j) ? snprintf(path + plen, room, "[%d]", index)
                                 : snprintf(path + plen, room, plen ? ".%.40s" : "%.40s", c->string ? c->string : "");
        size_t clen = w < 0 ? plen : MG_MIN(plen + (size_t)w, DUP_PATH - 1);
        if (dup_walk(c, path, clen, msg, msglen)) return true;
        path[plen] = '\0';
    }
    return false;
}

bool mg_json_duplicate_key(const cJSON *j, char *msg, size_t msglen)
{
    char path[DUP_PATH] = "";
    return dup_walk(j, path, 0, msg, msglen);
}

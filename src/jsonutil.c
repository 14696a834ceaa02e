/* Top-level member lookup and replacement on raw JSON text. See jsonutil.h. */
#include "jsonutil.h"

#include "util.h"

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

/* Keys with escapes are compared raw; "model" never needs escaping. */
static bool key_is(const char *t, size_t ks, size_t ke, const char *key, size_t klen)
{
    return ke - ks == klen && memcmp(t + ks, key, klen) == 0;
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

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* \uXXXX at t[i] (the backslash): its code, or -1. */
static long st_hex4(const strict_t *s, size_t i)
{
    if (s->n - i < 6 || s->t[i] != '\\' || s->t[i + 1] != 'u') return -1;
    long v = 0;
    for (size_t k = 2; k < 6; k++) {
        int h = hex_val(s->t[i + k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
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

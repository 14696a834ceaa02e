/* Top-level member lookup and replacement on raw JSON text. See jsonutil.h. */
#include "jsonutil.h"

#include "util.h"

#include <string.h>

static size_t skip_ws(const char *t, size_t i, size_t n)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) i++;
    return i;
}

/* i at an opening quote; returns the index after the closing quote. */
static size_t skip_string(const char *t, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (t[i] == '\\') i++;
        else if (t[i] == '"') return i + 1;
    }
    return n;
}

/* i at the first byte of a value; returns the index after it. */
static size_t skip_value(const char *t, size_t i, size_t n)
{
    if (i >= n) return n;
    if (t[i] == '"') return skip_string(t, i, n);
    if (t[i] == '{' || t[i] == '[') {
        int depth = 0;
        for (; i < n; i++) {
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

bool mg_json_member_span(const char *t, size_t n, const char *key, size_t *vstart, size_t *vend)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(t, 0, n);
    if (i >= n || t[i] != '{') return false;
    i++;
    bool found = false;
    for (;;) {
        i = skip_ws(t, i, n);
        if (i >= n || t[i] != '"') return found;
        size_t ks = i + 1, ke = skip_string(t, i, n) - 1;
        i = skip_ws(t, ke + 1, n);
        if (i >= n || t[i] != ':') return found;
        i = skip_ws(t, i + 1, n);
        size_t vs = i;
        i = skip_value(t, i, n);
        /* Keys with escapes are compared raw; "model" never needs escaping. The last duplicate
         * wins, as in cJSON. */
        if (ke - ks == klen && memcmp(t + ks, key, klen) == 0) {
            *vstart = vs;
            *vend = i;
            found = true;
        }
        i = skip_ws(t, i, n);
        if (i < n && t[i] == ',') {
            i++;
            continue;
        }
        return found;
    }
}

char *mg_json_set_member(const char *t, size_t n, const char *key, const char *raw, size_t *out_len)
{
    size_t vs, ve;
    mg_buf_t b = {0};
    if (mg_json_member_span(t, n, key, &vs, &ve)) {
        mg_buf_append(&b, t, vs);
        mg_buf_puts(&b, raw);
        mg_buf_append(&b, t + ve, n - ve);
    } else {
        size_t i = skip_ws(t, 0, n) + 1; /* after '{' */
        size_t j = skip_ws(t, i, n);
        bool empty = j < n && t[j] == '}';
        mg_buf_append(&b, t, i);
        mg_buf_json_str(&b, key);
        mg_buf_puts(&b, ":");
        mg_buf_puts(&b, raw);
        if (!empty) mg_buf_puts(&b, ",");
        mg_buf_append(&b, t + i, n - i);
    }
    *out_len = b.len;
    return mg_buf_steal(&b);
}

/* Allocation, buffers, clocks and string helpers. See util.h. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(size_t n, const char *file, int line)
{
    fprintf(stderr, "moongate: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *mg_xmalloc_at(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n, file, line);
    return p;
}

void *mg_xcalloc_at(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size, file, line);
    return p;
}

void *mg_xrealloc_at(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n, file, line);
    return q;
}

char *mg_xstrdup_at(const char *s, const char *file, int line)
{
    return mg_xstrndup_at(s, strlen(s), file, line);
}

char *mg_xstrndup_at(const char *s, size_t n, const char *file, int line)
{
    char *p = mg_xmalloc_at(n + 1, file, line);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *mg_xasprintf(const char *fmt, ...)
{
    mg_buf_t b = {0};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    mg_buf_reserve(&b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b.data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return b.data;
}

void mg_buf_reserve(mg_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = mg_xrealloc(b->data, cap);
    b->cap = cap;
}

void mg_buf_append(mg_buf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) mg_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void mg_buf_printf(mg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->data && b->cap - b->len > 1) {
        /* One pass when the text fits the room already there (the usual case for short fields);
         * a second one, after growing, only when it did not. */
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, room, fmt, ap);
        va_end(ap);
        if (n <= 0) {
            b->data[b->len] = '\0';
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
    } else {
        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n <= 0) return;
    }
    mg_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mg_buf_put_u64(mg_buf_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    mg_buf_append(b, tmp + i, sizeof tmp - i);
}

void mg_buf_put_i64(mg_buf_t *b, int64_t v)
{
    if (v < 0) {
        mg_buf_append(b, "-", 1);
        mg_buf_put_u64(b, (uint64_t)0 - (uint64_t)v); /* INT64_MIN included */
        return;
    }
    mg_buf_put_u64(b, (uint64_t)v);
}

/* mg_utf8_decode's body, inlined into the loops that check text (mg_utf8_valid_len,
 * mg_buf_json_strn): a call per character would cost more than the check itself. */
static inline __attribute__((always_inline)) size_t utf8_decode(const unsigned char *s, size_t n,
                                                                uint32_t *cp)
{
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

size_t mg_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    return utf8_decode(s, n, cp);
}

size_t mg_utf8_valid_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) { /* a run of ASCII (most JSON is): eight bytes at a time, then the rest */
            uint64_t w;
            while (n - i >= 8 && (memcpy(&w, p + i, 8), !(w & 0x8080808080808080ULL)))
                i += 8;
            while (i < n && p[i] < 0x80)
                i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_decode(p + i, n - i, &cp);
        if (!k) return i;
        i += k;
    }
    return n;
}

size_t mg_utf8_fit(const char *s, size_t len, size_t max)
{
    if (len <= max) return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* s[n] continues a character */
    return n;
}

static void append_repaired(mg_buf_t *b, const char *s, size_t n, const char *rep, size_t rep_len)
{
    for (;;) {
        size_t k = mg_utf8_valid_len(s, n);
        mg_buf_append(b, s, k);
        if (k == n) return;
        mg_buf_append(b, rep, rep_len); /* s[k] starts no well-formed sequence: it alone goes */
        s += k + 1;
        n -= k + 1;
    }
}

void mg_buf_append_utf8(mg_buf_t *b, const char *s, size_t n)
{
    append_repaired(b, s, n, "\xEF\xBF\xBD", 3);
}

void mg_buf_append_json_utf8(mg_buf_t *b, const char *s, size_t n)
{
    append_repaired(b, s, n, "\\ufffd", 6);
}

void mg_buf_json_strn(mg_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    mg_buf_reserve(b, n + 2);
    b->data[b->len++] = '"';
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') continue;
        if (c >= 0x80) { /* well-formed UTF-8 passes; any other byte becomes U+FFFD */
            uint32_t cp;
            size_t k = utf8_decode((const unsigned char *)s + i, n - i, &cp);
            if (k) {
                i += k - 1;
                continue;
            }
        }
        if (i > run) mg_buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': mg_buf_append(b, "\\\"", 2); break;
        case '\\': mg_buf_append(b, "\\\\", 2); break;
        case '\n': mg_buf_append(b, "\\n", 2); break;
        case '\r': mg_buf_append(b, "\\r", 2); break;
        case '\t': mg_buf_append(b, "\\t", 2); break;
        default:
            if (c >= 0x80) {
                mg_buf_append(b, "\\ufffd", 6);
            } else {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                mg_buf_append(b, esc, 6);
            }
        }
    }
    if (n > run) mg_buf_append(b, s + run, n - run);
    mg_buf_append(b, "\"", 1);
}

void mg_buf_json_str(mg_buf_t *b, const char *s)
{
    if (!s) {
        mg_buf_puts(b, "null");
        return;
    }
    mg_buf_json_strn(b, s, strlen(s));
}

void mg_buf_consume(mg_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void mg_buf_reset(mg_buf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void mg_buf_free(mg_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *mg_buf_steal(mg_buf_t *b)
{
    char *p = b->data;
    if (!p) p = mg_xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

int mg_read_file(const char *path, size_t max, char **text, size_t *len)
{
    mg_buf_t b = {0};
    FILE *f = fopen(path, "rb");
    char chunk[65536];
    size_t n;
    int saved;
    if (!f) return -1;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > max) {
            errno = EFBIG;
            goto error;
        }
        mg_buf_append(&b, chunk, n);
    }
    if (ferror(f)) goto error;
    fclose(f);
    *len = b.len;
    *text = mg_buf_steal(&b); /* "" for an empty file */
    return 0;
error:
    saved = errno;
    fclose(f);
    mg_buf_free(&b);
    errno = saved;
    return -1;
}

int64_t mg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool mg_str_eq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
    return *a == *b;
}

bool mg_str_has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool mg_ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Compare every byte of a, whatever b is, so the time depends on alen only. */
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < alen; i++) diff |= (unsigned char)(a[i] ^ (i < blen ? b[i] : 0));
    return diff == 0;
}

void mg_fmt_double(char *out, size_t n, double d, const char *inf, const char *neg_inf)
{
    if (isnan(d)) {
        snprintf(out, n, "NaN");
    } else if (isinf(d)) {
        snprintf(out, n, "%s", d > 0 ? inf : neg_inf);
    } else if (d == floor(d) && fabs(d) < 1e15) {
        snprintf(out, n, "%.0f", d);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, n, "%.*g", prec, d);
            if (strtod(out, NULL) == d) break;
        }
    }
}

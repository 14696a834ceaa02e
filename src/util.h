/* Small infrastructure shared by every module: allocation that aborts on failure, a growable
 * byte buffer, string helpers and a monotonic clock. Knows nothing of HTTP, curl or Lua.
 *
 * OOM policy: C infrastructure aborts with file:line when the allocator fails (a gateway that
 * cannot allocate a few bytes cannot serve anyone correctly). Lua allocation failure is different:
 * it is an ordinary error that fails one request (see policy.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* 1 when built with AddressSanitizer: the caches of freed objects (request.c, the IR arena) stand
 * aside then, so that it sees every use after free. */
#if defined(__SANITIZE_ADDRESS__)
#define MG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MG_ASAN 1
#endif
#endif
#ifndef MG_ASAN
#define MG_ASAN 0
#endif

#define MG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MG_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MG_MAX_SAFE_INT 9007199254740992LL /* 2^53: all integers up to here are exact in a double */

void *mg_xmalloc_at(size_t n, const char *file, int line);
void *mg_xcalloc_at(size_t n, size_t size, const char *file, int line);
void *mg_xrealloc_at(void *p, size_t n, const char *file, int line);
char *mg_xstrdup_at(const char *s, const char *file, int line);
char *mg_xstrndup_at(const char *s, size_t n, const char *file, int line);
#define mg_xmalloc(n) mg_xmalloc_at((n), __FILE__, __LINE__)
#define mg_xcalloc(n, s) mg_xcalloc_at((n), (s), __FILE__, __LINE__)
#define mg_xrealloc(p, n) mg_xrealloc_at((p), (n), __FILE__, __LINE__)
#define mg_xstrdup(s) mg_xstrdup_at((s), __FILE__, __LINE__)
#define mg_xstrndup(s, n) mg_xstrndup_at((s), (n), __FILE__, __LINE__)

/* printf into a fresh heap string; the caller frees it. */
char *mg_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer. Always NUL-terminated past len when data != NULL. */
typedef struct mg_buf {
    char *data;
    size_t len;
    size_t cap;
} mg_buf_t;

void mg_buf_reserve(mg_buf_t *b, size_t extra);
void mg_buf_append(mg_buf_t *b, const void *p, size_t n);
/* Inline so that the length of a literal (most calls) is known at compile time. */
static inline void mg_buf_puts(mg_buf_t *b, const char *s)
{
    mg_buf_append(b, s, strlen(s));
}
void mg_buf_printf(mg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the decimal form of v (what printf's %lld / %llu would write). */
void mg_buf_put_i64(mg_buf_t *b, int64_t v);
void mg_buf_put_u64(mg_buf_t *b, uint64_t v);
/* d in the shortest decimal that reads back as d (integers below 1e15 without a fraction), NaN as
 * "NaN" and the infinities as inf / -inf as the caller's format spells them. */
void mg_fmt_double(char *out, size_t n, double d, const char *inf, const char *neg_inf);

/* Decodes one well-formed UTF-8 sequence (no overlong forms, surrogates or values past U+10FFFF).
 * Returns its length and sets *cp, or returns 0 when s[0..n) does not start with one. */
size_t mg_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* The length of the longest prefix of s[0..n) that is well-formed UTF-8 by mg_utf8_decode: n when
 * all of it is. One pass; ASCII is skipped eight bytes at a time. */
size_t mg_utf8_valid_len(const char *s, size_t n);
/* How much of s (len bytes) fits in max bytes without splitting a UTF-8 character. */
size_t mg_utf8_fit(const char *s, size_t len, size_t max);
/* Appends s[0..n) with each byte that is not part of well-formed UTF-8 replaced by U+FFFD, one
 * per byte: the rule of mg_buf_json_strn. mg_buf_append_utf8 writes the character itself (for
 * text); mg_buf_append_json_utf8 writes the escape \ufffd, for JSON text whose bytes >= 0x80 all
 * lie inside string literals (what cJSON prints). Well-formed input is appended as it is. */
void mg_buf_append_utf8(mg_buf_t *b, const char *s, size_t n);
void mg_buf_append_json_utf8(mg_buf_t *b, const char *s, size_t n);

/* Appends s as a JSON string literal, quotes included: control characters, quotes and
 * backslashes escaped, and each byte that is not part of well-formed UTF-8 written as \ufffd, so
 * the output is valid UTF-8 whatever s holds. NULL: null. */
void mg_buf_json_str(mg_buf_t *b, const char *s);
void mg_buf_json_strn(mg_buf_t *b, const char *s, size_t n);
/* Drops the first n bytes. */
void mg_buf_consume(mg_buf_t *b, size_t n);
void mg_buf_reset(mg_buf_t *b);
void mg_buf_free(mg_buf_t *b);
/* Hands the bytes to the caller (who frees them) and leaves b empty. */
char *mg_buf_steal(mg_buf_t *b);

/* Reads the whole file at path (at most max bytes) into a fresh NUL-terminated buffer the caller
 * frees. Returns 0, or -1 with errno set (EFBIG when the file is larger than max). */
int mg_read_file(const char *path, size_t max, char **text, size_t *len);

/* Monotonic clock in milliseconds / microseconds; wall clock in milliseconds since the epoch. */
int64_t mg_now_ms(void);
int64_t mg_now_us(void);
int64_t mg_wall_ms(void);

bool mg_str_eq_nocase(const char *a, const char *b);
bool mg_str_has_prefix(const char *s, const char *prefix);
/* Constant-time comparison of two byte strings (length differences leak only the length). */
bool mg_ct_equal(const char *a, size_t alen, const char *b, size_t blen);

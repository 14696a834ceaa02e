/* A tiny unit-test harness: MG_TEST(name) defines a test, MG_CHECK* record failures without
 * stopping the test, and MG_TEST_MAIN runs them all and prints "N passed, N failed". */
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*mg_test_fn)(void);
typedef struct { const char *name; mg_test_fn fn; } mg_test_case_t;

extern int mg_test_failures;

/* A whole file, NUL-terminated ("" when empty), in *len its length; NULL when it cannot be
 * opened. The caller frees it. */
static inline char *mg_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, got;
    char *s = malloc(cap + 1);
    while (s && (got = fread(s + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) s = realloc(s, (cap *= 2) + 1);
    }
    fclose(f);
    if (!s) abort();
    s[n] = '\0';
    *len = n;
    return s;
}
#define MG_MAX_TESTS 512
extern mg_test_case_t mg_tests[MG_MAX_TESTS];
extern int mg_n_tests;

#define MG_TEST(name)                                                                  \
    static void name(void);                                                            \
    __attribute__((constructor)) static void reg_##name(void)                          \
    {                                                                                  \
        if (mg_n_tests < MG_MAX_TESTS) mg_tests[mg_n_tests++] = (mg_test_case_t){#name, name}; \
    }                                                                                  \
    static void name(void)

#define MG_CHECK(cond)                                                                 \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            mg_test_failures++;                                                        \
        }                                                                              \
    } while (0)

#define MG_CHECK_STR(got, want)                                                        \
    do {                                                                               \
        const char *g_ = (got), *w_ = (want);                                          \
        if (!g_ || !w_ || strcmp(g_, w_) != 0) {                                       \
            fprintf(stderr, "  %s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__,  \
                    g_ ? g_ : "(null)", w_ ? w_ : "(null)");                           \
            mg_test_failures++;                                                        \
        }                                                                              \
    } while (0)

#define MG_CHECK_INT(got, want)                                                        \
    do {                                                                               \
        long long g_ = (long long)(got), w_ = (long long)(want);                       \
        if (g_ != w_) {                                                                \
            fprintf(stderr, "  %s:%d: %s = %lld, want %lld\n", __FILE__, __LINE__, #got, g_, w_); \
            mg_test_failures++;                                                        \
        }                                                                              \
    } while (0)

#define MG_TEST_MAIN()                                                                 \
    int mg_test_failures;                                                              \
    mg_test_case_t mg_tests[MG_MAX_TESTS];                                             \
    int mg_n_tests;                                                                    \
    int main(void)                                                                     \
    {                                                                                  \
        int passed = 0, failed = 0;                                                    \
        for (int i = 0; i < mg_n_tests; i++) {                                         \
            int before = mg_test_failures;                                             \
            mg_tests[i].fn();                                                          \
            if (mg_test_failures == before) {                                          \
                passed++;                                                              \
            } else {                                                                   \
                failed++;                                                              \
                fprintf(stderr, "FAIL %s\n", mg_tests[i].name);                        \
            }                                                                          \
        }                                                                              \
        printf("%d passed, %d failed\n", passed, failed);                              \
        return failed ? 1 : 0;                                                         \
    }

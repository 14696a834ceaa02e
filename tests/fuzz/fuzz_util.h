/* What the libFuzzer targets in tests/fuzz/ share: the entry point that libFuzzer, or
 * replay_main.c under ctest, calls; and CHECK, which aborts with file:line and the condition, so
 * that a broken invariant is a crash the fuzzer reports and the replay fails on. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #c);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

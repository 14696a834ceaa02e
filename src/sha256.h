/* SHA-256 (FIPS 180-4), small and dependency-free: hashing client keys (keys.c) and policy sources.
 * Not for bulk data (no SIMD); a few hundred MB/s is plenty for keys and small files. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define MG_SHA256_LEN 32

typedef struct mg_sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    uint8_t block[64];
    size_t n; /* bytes waiting in block */
} mg_sha256_t;

/* Incremental use: init, any number of updates, final (which leaves ctx wiped). */
void mg_sha256_init(mg_sha256_t *ctx);
void mg_sha256_update(mg_sha256_t *ctx, const void *data, size_t len);
void mg_sha256_final(mg_sha256_t *ctx, uint8_t out[MG_SHA256_LEN]);

/* One shot. */
void mg_sha256(const void *data, size_t len, uint8_t out[MG_SHA256_LEN]);
/* One shot, as 64 lower-case hex digits plus NUL. */
void mg_sha256_hex(const void *data, size_t len, char out[2 * MG_SHA256_LEN + 1]);

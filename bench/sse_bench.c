/* Micro-benchmark of the SSE parser (src/sse.c) on realistic LLM chunk streams: 256 MiB of
 * OpenAI chat chunks (`data: {json ~200 bytes}\n\n`), the same with CRLF line ends, and Anthropic
 * `event:` + `data:` frames, fed in 16 KiB pieces as a socket would deliver them. Prints MB/s
 * (10^6 bytes per second) and events per second for each.
 *
 * Build and run (not part of the CMake build):
 *   cc -O2 -Isrc bench/sse_bench.c src/sse.c src/util.c -o build/sse_bench && build/sse_bench
 * Optional arguments: total MiB per stream kind (default 256), feed size in bytes (default 16384).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sse.h"
#include "util.h"

#define BUF_BYTES ((size_t)64 << 20) /* one generated stream, parsed repeatedly */

typedef struct {
    uint64_t events;
    uint64_t bytes;
    uint64_t check;
} sink_t;

static int on_event(void *ud, const mg_sse_event_t *ev)
{
    sink_t *s = ud;
    s->events++;
    s->bytes += ev->data_len;
    /* Touch the payload so the work cannot be optimised away (a relay would copy it out). */
    if (ev->data_len) s->check += (unsigned char)ev->data[ev->data_len - 1] + ev->type_len;
    return 0;
}

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

enum { KIND_OPENAI, KIND_OPENAI_CRLF, KIND_ANTHROPIC };

/* Fills b with whole events up to about BUF_BYTES. */
static void generate(mg_buf_t *b, int kind)
{
    static const char words[] =
        "the quick brown fox jumps over the lazy dog while a gateway "
        "relays tokens h\xc3\xa9llo \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x8c\x8d ";
    uint32_t seed = 12345;
    const char *nl = kind == KIND_OPENAI_CRLF ? "\r\n" : "\n";
    char text[64];
    while (b->len < BUF_BYTES - 1024) {
        size_t off = rnd(&seed) % (sizeof words - 40), n = 4 + rnd(&seed) % 32;
        memcpy(text, words + off, n);
        text[n] = '\0';
        for (size_t i = 0; i < n; i++)
            if (text[i] == '"' || text[i] == '\\') text[i] = '_';
        if (kind == KIND_ANTHROPIC)
            mg_buf_printf(b,
                          "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                          "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n",
                          text);
        else
            mg_buf_printf(b,
                          "data: {\"id\":\"chatcmpl-9abcdefghijklmnop\",\"object\":\"chat."
                          "completion.chunk\",\"created\":1718000000,\"model\":\"gpt-4o-mini\","
                          "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                          "\"finish_reason\":null}]}%s%s",
                          text, nl, nl);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t total_mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 256;
    size_t feed = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 16384;
    if (!total_mib || !feed) {
        fprintf(stderr, "usage: %s [total_MiB] [feed_bytes]\n", argv[0]);
        return 2;
    }
    static const char *const names[] = {"openai-chat LF", "openai-chat CRLF", "anthropic LF"};
    for (int kind = 0; kind < 3; kind++) {
        mg_buf_t b = {0};
        generate(&b, kind);
        size_t passes = ((total_mib << 20) + b.len / 2) / b.len;
        if (passes == 0) passes = 1;
        sink_t sink = {0};
        mg_sse_parser_t p;
        mg_sse_init(&p, 1 << 20);
        double t0 = now_s();
        for (size_t pass = 0; pass < passes; pass++) {
            for (size_t off = 0; off < b.len; off += feed) {
                size_t n = b.len - off < feed ? b.len - off : feed;
                if (mg_sse_feed(&p, b.data + off, n, on_event, &sink) != 0) {
                    fprintf(stderr, "parse error\n");
                    return 1;
                }
            }
        }
        double dt = now_s() - t0;
        mg_sse_free(&p);
        double bytes = (double)b.len * (double)passes;
        printf("%-17s %7.0f MB/s  %6.2f M events/s  (%.0f MiB, %.0f bytes/event, check %llu)\n",
               names[kind], bytes / dt / 1e6, (double)sink.events / dt / 1e6, bytes / (1 << 20),
               bytes / (double)sink.events, (unsigned long long)sink.check);
        mg_buf_free(&b);
    }
    return 0;
}

/* Unit tests for src/sse.c: one test per WHATWG event-stream rule, the size cap, end-of-stream
 * behaviour, and a property test that realistic provider streams cut at every byte (and in random
 * 1-7 byte pieces) give exactly the events of one whole feed, which are themselves checked against
 * hand-written expectations. */
#include "mg_test.h"
#include "sse.h"

#include <limits.h>
#include <stdint.h>

/* ---- an event recorder ---- */

#define MAX_EVENTS 64

typedef struct {
    int n;
    char *type[MAX_EVENTS];
    char *data[MAX_EVENTS];
    size_t data_len[MAX_EVENTS];
    char *id[MAX_EVENTS];
    long retry[MAX_EVENTS];
    mg_buf_t log;   /* every event serialised with lengths, for exact comparisons */
    int stop_after; /* return 7 from the callback after this many events (0 = never) */
    const char *in; /* the current input buffer, to observe zero-copy delivery */
    size_t in_len;
    int borrowed; /* events whose data pointed into the current input buffer */
} rec_t;

static int rec_cb(void *ud, const mg_sse_event_t *ev)
{
    rec_t *r = ud;
    if (r->n < MAX_EVENTS) {
        r->type[r->n] = mg_xstrndup(ev->type, ev->type_len);
        r->data[r->n] = mg_xstrndup(ev->data, ev->data_len);
        r->data_len[r->n] = ev->data_len;
        r->id[r->n] = mg_xstrndup(ev->id, ev->id_len);
        r->retry[r->n] = ev->retry_ms;
    }
    r->n++;
    mg_buf_printf(&r->log, "T%zu:", ev->type_len);
    mg_buf_append(&r->log, ev->type, ev->type_len);
    mg_buf_printf(&r->log, "D%zu:", ev->data_len);
    mg_buf_append(&r->log, ev->data, ev->data_len);
    mg_buf_printf(&r->log, "I%zu:", ev->id_len);
    mg_buf_append(&r->log, ev->id, ev->id_len);
    mg_buf_printf(&r->log, "R%ld\n", ev->retry_ms);
    if (r->in && ev->data_len && ev->data >= r->in && ev->data < r->in + r->in_len) r->borrowed++;
    return r->stop_after && r->n >= r->stop_after ? 7 : 0;
}

static void rec_free(rec_t *r)
{
    for (int i = 0; i < r->n && i < MAX_EVENTS; i++) {
        free(r->type[i]);
        free(r->data[i]);
        free(r->id[i]);
    }
    mg_buf_free(&r->log);
    memset(r, 0, sizeof *r);
}

/* Feeds s in pieces of the given sizes (the last size repeats), then finishes. max 0 = default
 * cap. Stores the comment count in *comments when given. */
static int feed_pieces(rec_t *r, const char *s, size_t n, size_t max, bool flush,
                       const size_t *sizes, size_t nsizes, uint64_t *comments)
{
    mg_sse_parser_t p;
    mg_sse_init(&p, max);
    int rc = 0;
    size_t off = 0, k = 0;
    while (off < n && !rc) {
        size_t step = sizes[k < nsizes ? k : nsizes - 1];
        k++;
        if (step > n - off) step = n - off;
        /* Each piece lives in its own heap block, scribbled over and freed after the feed, as a
         * socket buffer is reused: anything the parser kept pointing into it shows up. */
        char *piece = mg_xmalloc(step);
        memcpy(piece, s + off, step);
        r->in = piece;
        r->in_len = step;
        rc = mg_sse_feed(&p, piece, step, rec_cb, r);
        memset(piece, 0xAA, step);
        free(piece);
        MG_CHECK(mg_sse_buffered(&p) <= p.max);
        off += step;
    }
    r->in = NULL;
    if (!rc) rc = mg_sse_finish(&p, flush, rec_cb, r);
    if (comments) *comments = mg_sse_comments(&p);
    mg_sse_free(&p);
    return rc;
}

static int feed_whole(rec_t *r, const char *s, size_t n, size_t max, bool flush)
{
    size_t sz = n ? n : 1;
    return feed_pieces(r, s, n, max, flush, &sz, 1, NULL);
}

/* Parses a NUL-terminated stream in one feed with spec end-of-stream (no flush). */
static int parse_str(rec_t *r, const char *s)
{
    return feed_whole(r, s, strlen(s), 0, false);
}

/* ---- line endings ---- */

MG_TEST(test_lf_line_endings)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "data: a\n\ndata: b\n\n"), 0);
    MG_CHECK_INT(r.n, 2);
    MG_CHECK_STR(r.data[0], "a");
    MG_CHECK_STR(r.data[1], "b");
    MG_CHECK_STR(r.type[0], "message");
    rec_free(&r);
}

MG_TEST(test_crlf_line_endings)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "event: e\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), 0);
    MG_CHECK_INT(r.n, 2);
    MG_CHECK_STR(r.type[0], "e");
    MG_CHECK_STR(r.data[0], "a\nb");
    MG_CHECK_STR(r.data[1], "c");
    rec_free(&r);
}

MG_TEST(test_cr_line_endings)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "data: a\rdata: b\r\rdata: c\r\r"), 0);
    MG_CHECK_INT(r.n, 2);
    MG_CHECK_STR(r.data[0], "a\nb");
    MG_CHECK_STR(r.data[1], "c");
    rec_free(&r);
}

MG_TEST(test_mixed_line_endings)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "data: a\r\ndata: b\rdata: c\n\r\n"), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "a\nb\nc");
    rec_free(&r);
}

MG_TEST(test_cr_and_lf_split_across_feeds)
{
    /* "\r" ends one feed and "\n" starts the next: one line end, not a line end plus a blank line
     * (which would dispatch "a" alone). */
    static const char s[] = "data: a\r\ndata: b\r\n\r\n";
    size_t cut = strlen("data: a\r");
    size_t sizes[] = {cut, 1, 100};
    rec_t r = {0};
    MG_CHECK_INT(feed_pieces(&r, s, strlen(s), 0, false, sizes, 3, NULL), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "a\nb");
    rec_free(&r);

    /* A CR at the end of a feed followed by another CR: a line end and then a blank line. */
    static const char s2[] = "data: a\r\rdata: b\r\r";
    size_t sizes2[] = {cut, 1, 1, 100};
    MG_CHECK_INT(feed_pieces(&r, s2, strlen(s2), 0, false, sizes2, 4, NULL), 0);
    MG_CHECK_INT(r.n, 2);
    MG_CHECK_STR(r.data[0], "a");
    MG_CHECK_STR(r.data[1], "b");
    rec_free(&r);

    /* The pending CR survives empty feeds. */
    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    MG_CHECK_INT(mg_sse_feed(&p, "data: x\r", 8, rec_cb, &r), 0);
    MG_CHECK_INT(mg_sse_feed(&p, "", 0, rec_cb, &r), 0);
    MG_CHECK_INT(mg_sse_feed(&p, "\n\n", 2, rec_cb, &r), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "x");
    mg_sse_free(&p);
    rec_free(&r);
}

/* ---- fields ---- */

MG_TEST(test_multiline_data_joined_with_lf)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "data: {\"a\":\ndata:1,\ndata:  \"b\":2}\n\n"), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "{\"a\":\n1,\n \"b\":2}");
    rec_free(&r);
}

MG_TEST(test_comments_never_become_events)
{
    rec_t r = {0};
    uint64_t comments = 0;
    static const char s[] = ": OPENROUTER PROCESSING\n\n:\n\ndata: a\n: ping\ndata: b\n\n:x";
    size_t sz = sizeof s - 1;
    MG_CHECK_INT(feed_pieces(&r, s, sz, 0, true, &sz, 1, &comments), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "a\nb");
    MG_CHECK_INT(comments, 4);
    rec_free(&r);

    /* A comment cut by feeds is counted once, when its ':' arrives. */
    size_t one = 1;
    MG_CHECK_INT(feed_pieces(&r, s, sz, 0, true, &one, 1, &comments), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_INT(comments, 4);
    rec_free(&r);

    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    MG_CHECK_INT(mg_sse_feed(&p, ": pi", 4, rec_cb, &r), 0);
    MG_CHECK_INT(mg_sse_comments(&p), 1);
    MG_CHECK_INT(mg_sse_buffered(&p), 0);
    MG_CHECK_INT(mg_sse_feed(&p, "ng\n", 3, rec_cb, &r), 0);
    MG_CHECK_INT(mg_sse_comments(&p), 1);
    MG_CHECK_INT(mg_sse_events(&p), 0);
    mg_sse_free(&p);
    rec_free(&r);
}

MG_TEST(test_line_without_colon_is_field_with_empty_value)
{
    rec_t r = {0};
    /* "data" alone appends an empty line: the event has empty data but is dispatched. */
    MG_CHECK_INT(parse_str(&r, "data\n\ndata\ndata\n\nevent\ndata: x\n\n"), 0);
    MG_CHECK_INT(r.n, 3);
    MG_CHECK_STR(r.data[0], "");
    MG_CHECK_STR(r.data[1], "\n");
    MG_CHECK_STR(r.type[2], "message"); /* "event" with an empty value */
    MG_CHECK_STR(r.data[2], "x");
    rec_free(&r);
}

MG_TEST(test_only_one_leading_space_removed)
{
    rec_t r = {0};
    MG_CHECK_INT(
        parse_str(&r, "data:  x\n\ndata:x\n\ndata: \n\ndata:\tx\n\nevent:  t\ndata: y \n\n"), 0);
    MG_CHECK_INT(r.n, 5);
    MG_CHECK_STR(r.data[0], " x");
    MG_CHECK_STR(r.data[1], "x");
    MG_CHECK_STR(r.data[2], "");
    MG_CHECK_STR(r.data[3], "\tx");
    MG_CHECK_STR(r.type[4], " t");
    MG_CHECK_STR(r.data[4], "y ");
    rec_free(&r);
}

MG_TEST(test_colon_in_value_kept)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "data: a: b:c\n\n"), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "a: b:c");
    rec_free(&r);
}

MG_TEST(test_bom_stripped_once)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "\xEF\xBB\xBF"
                               "data: x\n\n"),
                 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "x");
    rec_free(&r);

    /* A second BOM is part of the first field name, which is then unknown and ignored. */
    MG_CHECK_INT(parse_str(&r, "\xEF\xBB\xBF\xEF\xBB\xBF"
                               "data: x\n\ndata: y\n\n"),
                 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "y");
    rec_free(&r);

    /* A BOM fed one byte at a time is still stripped. */
    static const char s[] = "\xEF\xBB\xBF"
                            "data: x\n\n";
    size_t one = 1;
    MG_CHECK_INT(feed_pieces(&r, s, strlen(s), 0, false, &one, 1, NULL), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "x");
    rec_free(&r);

    /* Only at the very start of the stream: later it is ordinary bytes. */
    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    MG_CHECK_INT(mg_sse_feed(&p, "data: a\n\n", 9, rec_cb, &r), 0);
    static const char later[] = "\xEF\xBB\xBF"
                                "data: b\n\ndata: \xEF\xBB\xBF\n\n";
    MG_CHECK_INT(mg_sse_feed(&p, later, sizeof later - 1, rec_cb, &r), 0);
    mg_sse_free(&p);
    MG_CHECK_INT(r.n, 2);
    MG_CHECK_STR(r.data[0], "a");
    MG_CHECK_STR(r.data[1], "\xEF\xBB\xBF");
    rec_free(&r);
}

MG_TEST(test_partial_bom_is_data)
{
    rec_t r = {0};
    /* EF BB then not BF: the two bytes are kept (here they begin the field name "\xEF\xBBdata",
     * unknown, so nothing), whether or not they arrive in separate feeds. */
    static const char s[] = "\xEF\xBB"
                            "data: x\n\ndata: y\n\n";
    size_t one = 1;
    MG_CHECK_INT(feed_pieces(&r, s, strlen(s), 0, false, &one, 1, NULL), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "y");
    rec_free(&r);

    /* A stream that is only "\xEF" then ends: flushing shows the byte was kept as a line. */
    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    MG_CHECK_INT(mg_sse_feed(&p, "\xEF", 1, rec_cb, &r), 0);
    MG_CHECK(mg_sse_pending(&p));
    MG_CHECK_INT(mg_sse_finish(&p, true, rec_cb, &r), 0);
    MG_CHECK_INT(r.n, 0);
    mg_sse_free(&p);

    /* "\xEF" ":" — not a comment, the BOM candidate byte starts the line. */
    MG_CHECK_INT(parse_str(&r, "\xEF:x\n\n"), 0);
    MG_CHECK_INT(r.n, 0);
    rec_free(&r);
}

MG_TEST(test_event_type_set_and_reset)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "event: content_block_delta\ndata: 1\n\ndata: 2\n\n"
                               "event: ping\n\ndata: 3\n\nevent: a\nevent: b\ndata: 4\n\n"),
                 0);
    MG_CHECK_INT(r.n, 4);
    MG_CHECK_STR(r.type[0], "content_block_delta");
    MG_CHECK_STR(r.type[1], "message");
    MG_CHECK_STR(r.type[2], "message"); /* "event: ping" without data dispatched nothing, reset */
    MG_CHECK_STR(r.data[2], "3");
    MG_CHECK_STR(r.type[3], "b");
    rec_free(&r);
}

MG_TEST(test_id_persists_and_nul_ignored)
{
    rec_t r = {0};
    static const char s[] = "data: a\n\nid: 42\ndata: b\n\ndata: c\n\nid: x\0y\ndata: d\n\n"
                            "id\ndata: e\n\nid: 7\n\ndata: f\n\n";
    MG_CHECK_INT(feed_whole(&r, s, sizeof s - 1, 0, false), 0);
    MG_CHECK_INT(r.n, 6);
    MG_CHECK_STR(r.id[0], "");
    MG_CHECK_STR(r.id[1], "42");
    MG_CHECK_STR(r.id[2], "42"); /* persists across events */
    MG_CHECK_STR(r.id[3], "42"); /* contains NUL: ignored */
    MG_CHECK_STR(r.id[4], "");   /* "id" alone sets it to empty */
    MG_CHECK_STR(r.id[5], "7");  /* set by an event that dispatched nothing */
    rec_free(&r);
}

MG_TEST(test_retry_digits_only)
{
    rec_t r = {0};
    mg_sse_parser_t p;
    mg_sse_init(&p, 0);
    static const char s[] = "retry: 3000\ndata: a\n\ndata: b\n\nretry: 30a0\ndata: c\n\n"
                            "retry: -5\nretry:\nretry:  5\nretry: 5 \ndata: d\n\n"
                            "retry: 99999999999999999999999\ndata: e\n\n";
    MG_CHECK_INT(mg_sse_feed(&p, s, sizeof s - 1, rec_cb, &r), 0);
    MG_CHECK_INT(r.n, 5);
    MG_CHECK_INT(r.retry[0], 3000);
    MG_CHECK_INT(r.retry[1], -1); /* per event: only when seen since the last blank line */
    MG_CHECK_INT(r.retry[2], -1);
    MG_CHECK_INT(r.retry[3], -1);
    MG_CHECK_INT(r.retry[4], LONG_MAX);
    MG_CHECK_INT(mg_sse_retry_ms(&p), LONG_MAX);
    mg_sse_free(&p);
    rec_free(&r);
}

MG_TEST(test_unknown_fields_ignored)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "foo: bar\ndata: x\nDATA: y\nData: z\ndata : w\nretries: 1\n\n"
                               "Data: only\n\n"),
                 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "x");
    MG_CHECK_INT(r.retry[0], -1);
    rec_free(&r);
}

MG_TEST(test_blank_lines_without_data_dispatch_nothing)
{
    rec_t r = {0};
    MG_CHECK_INT(parse_str(&r, "\n\n\r\n\r\revent: x\n\nid: 1\n\nretry: 5\n\n"), 0);
    MG_CHECK_INT(r.n, 0);
    rec_free(&r);
}

MG_TEST(test_bytes_pass_through_unchanged)
{
    /* Invalid UTF-8, NUL and a 4-byte character cut at every byte: payloads come out verbatim. */
    static const char s[] = "data: \xff\xfe\x00 h\xc3\xa9llo \xf0\x9f\x8c\x8d\n\n";
    static const char want[] = "\xff\xfe\x00 h\xc3\xa9llo \xf0\x9f\x8c\x8d";
    size_t n = sizeof s - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        size_t sizes[] = {cut ? cut : n, n};
        rec_t r = {0};
        MG_CHECK_INT(feed_pieces(&r, s, n, 0, false, sizes, 2, NULL), 0);
        MG_CHECK_INT(r.n, 1);
        if (r.n == 1) {
            MG_CHECK_INT(r.data_len[0], sizeof want - 1);
            MG_CHECK(memcmp(r.data[0], want, sizeof want - 1) == 0);
        }
        rec_free(&r);
    }
}

/* ---- size cap ---- */

MG_TEST(test_event_at_cap_accepted_over_cap_rejected)
{
    rec_t r = {0};
    /* The line "data:0123456789a" is 16 bytes: exactly the cap. */
    MG_CHECK_INT(feed_whole(&r, "data:0123456789a\n\n", 18, 16, false), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "0123456789a");
    rec_free(&r);
    MG_CHECK_INT(feed_whole(&r, "data:0123456789ab\n\n", 19, 16, false), MG_SSE_E_TOO_LARGE);
    MG_CHECK_INT(r.n, 0);
    rec_free(&r);
}

MG_TEST(test_cap_counts_joined_data_and_type)
{
    rec_t r = {0};
    /* Data buffer "aaaa\nbbbb\n" (10) + type "tt" (2) = 12, then a line of 5 > 16 - 12. */
    static const char s[] = "data: a\n\nevent:tt\ndata:aaaa\ndata:bbbb\ndata:\n\n";
    MG_CHECK_INT(feed_whole(&r, s, sizeof s - 1, 16, false), MG_SSE_E_TOO_LARGE);
    MG_CHECK_INT(r.n, 1); /* events before the failure were delivered */
    rec_free(&r);
    /* With the cap one larger it fits. */
    MG_CHECK_INT(feed_whole(&r, s, sizeof s - 1, 17, false), 0);
    MG_CHECK_INT(r.n, 2);
    MG_CHECK_STR(r.data[1], "aaaa\nbbbb\n");
    rec_free(&r);
}

MG_TEST(test_oversize_line_fails_before_buffering_it)
{
    /* A never-ending line fed byte by byte fails as soon as it passes the cap. */
    mg_sse_parser_t p;
    rec_t r = {0};
    mg_sse_init(&p, 64);
    int rc = 0;
    size_t fed = 0;
    while (!rc && fed < 10000) {
        rc = mg_sse_feed(&p, fed < 6 ? &"data: "[fed] : "x", 1, rec_cb, &r);
        MG_CHECK(mg_sse_buffered(&p) <= 64);
        MG_CHECK(p.line.cap <= 65);
        fed++;
    }
    MG_CHECK_INT(rc, MG_SSE_E_TOO_LARGE);
    MG_CHECK_INT(fed, 65);
    /* Sticky: later feeds and finish fail the same way without calling back. */
    MG_CHECK_INT(mg_sse_feed(&p, "\n\ndata: ok\n\n", 12, rec_cb, &r), MG_SSE_E_TOO_LARGE);
    MG_CHECK_INT(mg_sse_finish(&p, true, rec_cb, &r), MG_SSE_E_TOO_LARGE);
    MG_CHECK_INT(r.n, 0);
    mg_sse_free(&p);
    rec_free(&r);
}

MG_TEST(test_comments_and_many_small_events_not_capped)
{
    mg_sse_parser_t p;
    rec_t r = {0};
    mg_sse_init(&p, 32);
    mg_buf_t b = {0};
    mg_buf_puts(&b, ":");
    for (int i = 0; i < 1000; i++)
        mg_buf_puts(&b, "keepalive ");
    mg_buf_puts(&b, "\n");
    for (int i = 0; i < 100; i++)
        mg_buf_puts(&b, "data: 0123456789\n\n");
    for (size_t off = 0; off < b.len; off += 7)
        MG_CHECK_INT(mg_sse_feed(&p, b.data + off, MG_MIN(7, b.len - off), rec_cb, &r), 0);
    MG_CHECK_INT(r.n, 100);
    MG_CHECK_INT(mg_sse_comments(&p), 1);
    mg_buf_free(&b);
    mg_sse_free(&p);
    rec_free(&r);
}

MG_TEST(test_large_event_buffers_released)
{
    mg_sse_parser_t p;
    rec_t r = {0};
    mg_sse_init(&p, 1 << 20);
    mg_buf_t b = {0};
    mg_buf_puts(&b, "event: ");
    for (int i = 0; i < 2000; i++)
        mg_buf_puts(&b, "t123456789");
    mg_buf_puts(&b, "\ndata: ");
    for (int i = 0; i < 10000; i++)
        mg_buf_puts(&b, "0123456789");
    mg_buf_puts(&b, "\n\n");
    for (size_t off = 0; off < b.len; off += 4096)
        MG_CHECK_INT(mg_sse_feed(&p, b.data + off, MG_MIN(4096, b.len - off), rec_cb, &r), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_INT(r.data_len[0], 100000);
    MG_CHECK_INT(strlen(r.type[0]), 20000);
    MG_CHECK_INT(mg_sse_buffered(&p), 0);
    MG_CHECK_INT(p.line.cap, 0);
    MG_CHECK_INT(p.data_buf.cap, 0);
    MG_CHECK_INT(p.type_buf.cap, 0);
    mg_buf_free(&b);
    mg_sse_free(&p);
    rec_free(&r);
}

/* ---- callback stop, end of stream ---- */

MG_TEST(test_callback_stop_is_returned_and_sticky)
{
    mg_sse_parser_t p;
    rec_t r = {0};
    r.stop_after = 1;
    mg_sse_init(&p, 0);
    MG_CHECK_INT(mg_sse_feed(&p, "data: a\n\ndata: b\n\n", 18, rec_cb, &r), 7);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_INT(mg_sse_feed(&p, "data: c\n\n", 9, rec_cb, &r), 7);
    MG_CHECK_INT(mg_sse_finish(&p, true, rec_cb, &r), 7);
    MG_CHECK_INT(r.n, 1);
    mg_sse_free(&p);
    rec_free(&r);
}

MG_TEST(test_finish_discards_or_flushes_partial_event)
{
    static const char *const partial[] = {"data: x",     "data: x\n",         "data: x\r",
                                          "data: x\r\n", "event: e\ndata: x", ": c\ndata: x\n: c"};
    for (size_t i = 0; i < MG_ARRAY_LEN(partial); i++) {
        rec_t r = {0};
        mg_sse_parser_t p;
        mg_sse_init(&p, 0);
        MG_CHECK_INT(mg_sse_feed(&p, partial[i], strlen(partial[i]), rec_cb, &r), 0);
        MG_CHECK(mg_sse_pending(&p));
        MG_CHECK_INT(mg_sse_finish(&p, false, rec_cb, &r), 0); /* spec: discarded */
        MG_CHECK_INT(r.n, 0);
        mg_sse_free(&p);

        mg_sse_init(&p, 0);
        MG_CHECK_INT(mg_sse_feed(&p, partial[i], strlen(partial[i]), rec_cb, &r), 0);
        MG_CHECK_INT(mg_sse_finish(&p, true, rec_cb, &r), 0); /* SDKs: flushed */
        MG_CHECK_INT(r.n, 1);
        MG_CHECK_STR(r.n ? r.data[0] : NULL, "x");
        mg_sse_free(&p);
        rec_free(&r);
    }

    rec_t r = {0};
    MG_CHECK_INT(feed_whole(&r, "data: a\ndata: b", 15, 0, true), 0);
    MG_CHECK_INT(r.n, 1);
    MG_CHECK_STR(r.data[0], "a\nb");
    rec_free(&r);
    /* Nothing pending: flushing adds nothing. */
    MG_CHECK_INT(feed_whole(&r, "data: a\n\n: bye", 14, 0, true), 0);
    MG_CHECK_INT(r.n, 1);
    rec_free(&r);
    /* "event:" without data is not flushed into an event. */
    MG_CHECK_INT(feed_whole(&r, "event: ping", 11, 0, true), 0);
    MG_CHECK_INT(r.n, 0);
    rec_free(&r);
}

MG_TEST(test_use_after_finish_fails)
{
    mg_sse_parser_t p;
    rec_t r = {0};
    mg_sse_init(&p, 0);
    MG_CHECK(!mg_sse_pending(&p));
    MG_CHECK_INT(mg_sse_finish(&p, false, rec_cb, &r), 0);
    MG_CHECK_INT(mg_sse_feed(&p, "data: a\n\n", 9, rec_cb, &r), MG_SSE_E_FINISHED);
    MG_CHECK_INT(mg_sse_finish(&p, false, rec_cb, &r), MG_SSE_E_FINISHED);
    MG_CHECK_INT(r.n, 0);
    MG_CHECK_STR(mg_sse_strerror(MG_SSE_E_TOO_LARGE), "SSE event exceeds the size limit");
    mg_sse_free(&p);
    mg_sse_free(&p); /* idempotent */
}

MG_TEST(test_whole_event_in_one_feed_is_not_copied)
{
    rec_t r = {0};
    static const char s[] = "event: e\ndata: {\"x\":1}\n\ndata: {\"y\":2}\n\ndata: a\ndata: b\n\n";
    MG_CHECK_INT(feed_whole(&r, s, sizeof s - 1, 0, false), 0);
    MG_CHECK_INT(r.n, 3);
    MG_CHECK_INT(r.borrowed, 2); /* single-line events point into the input; the joined one not */
    MG_CHECK_STR(r.data[0], "{\"x\":1}");
    MG_CHECK_STR(r.type[0], "e");
    rec_free(&r);
}

/* ---- property test: any split of realistic streams gives the same events ---- */

typedef struct {
    const char *name;
    const char *text;
    size_t len;
    const char *want; /* expected log of the whole feed (spec end of stream) */
    uint64_t comments;
} stream_t;

#define S(lit) lit, sizeof(lit) - 1

static const stream_t streams[] = {
    {"openai-chat",
     S(": OPENROUTER PROCESSING\n\n"
       "data: "
       "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"
       "\"gpt\","
       "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_"
       "reason\":null}]}\n\n"
       "data: "
       "{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"H\xc3\xa9llo "
       "\xf0\x9f\x8c\x8d\"}}]}\n\n"
       ": ping\n\n"
       "data: "
       "{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}"
       "\n\n"
       "data: "
       "{\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":"
       "3}}\n\n"
       "data: [DONE]\n\n"),
     "T7:messageD165:{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
     "\"model\":\"gpt\","
     "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_"
     "reason\":null}]}I0:R-1\n"
     "T7:messageD77:{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
     "\"H\xc3\xa9llo \xf0\x9f\x8c\x8d\"}}]}I0:R-1\n"
     "T7:messageD77:{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_"
     "reason\":\"stop\"}]}I0:R-1\n"
     "T7:messageD82:{\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
     "\"completion_tokens\":3}}I0:R-1\n"
     "T7:messageD6:[DONE]I0:R-1\n",
     2},
    {"anthropic-crlf",
     S("event: message_start\r\n"
       "data: "
       "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"role\":\"assistant\","
       "\"content\":[]}}\r\n\r\n"
       "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
       ": keep-alive\r\n"
       "event: content_block_delta\r\n"
       "data: "
       "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"
       "\"\xe4\xbd\xa0\xe5\xa5\xbd\"}}\r\n\r\n"
       "event: message_delta\r\ndata: "
       "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\r\n\r\n"
       "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n"),
     "T13:message_startD81:{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"role\":"
     "\"assistant\",\"content\":[]}}I0:R-1\n"
     "T4:pingD16:{\"type\": \"ping\"}I0:R-1\n"
     "T19:content_block_deltaD86:{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
     "\"text_delta\",\"text\":\"\xe4\xbd\xa0\xe5\xa5\xbd\"}}I0:R-1\n"
     "T13:message_deltaD59:{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}I0:"
     "R-1\n"
     "T12:message_stopD23:{\"type\":\"message_stop\"}I0:R-1\n",
     1},
    {"responses-cr-bom",
     S("\xEF\xBB\xBF"
       "retry: 1500\rid: r1\revent: response.created\r"
       "data: "
       "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}"
       "\r\r"
       ":\r"
       "id: r2\revent: response.output_text.delta\rdata: "
       "{\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\r\r"
       "event: response.completed\rdata: {\"type\":\"response.completed\",\r"
       "data:\"response\":{\"status\":\"completed\"}}\r\r"),
     "T16:response.createdD77:{\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\","
     "\"status\":\"in_progress\"}}I2:r1R1500\n"
     "T26:response.output_text.deltaD50:{\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}"
     "I2:r2R-1\n"
     "T18:response.completedD64:{\"type\":\"response.completed\",\n\"response\":{\"status\":"
     "\"completed\"}}I2:r2R-1\n",
     1},
    {"mixed-edge",
     S("data\n\ndata:  two spaces\r\n:c\rfoo: bar\ndata\rdata: x\n\n\n\r\n"
       "id: a\0b\nevent\ndata: y\r\n\r\ndata: tail-without-blank-line"),
     "T7:messageD0:I0:R-1\n"
     "T7:messageD14: two spaces\n\nxI0:R-1\n"
     "T7:messageD1:yI0:R-1\n",
     1},
};

static uint32_t prng_next(uint32_t *s)
{
    /* xorshift32: deterministic, so a failure reproduces. */
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void check_same(const stream_t *st, const rec_t *ref, const rec_t *got, uint64_t refc,
                       uint64_t gotc, const char *how, size_t arg)
{
    if (got->log.len != ref->log.len || memcmp(got->log.data, ref->log.data, ref->log.len) != 0 ||
        gotc != refc) {
        fprintf(stderr, "  %s: %s %zu differs from whole feed\n", st->name, how, arg);
        mg_test_failures++;
    }
}

MG_TEST(test_property_any_split_same_events)
{
    uint32_t seed = 0x5eed5eedu;
    for (size_t s = 0; s < MG_ARRAY_LEN(streams); s++) {
        const stream_t *st = &streams[s];
        for (int flush = 0; flush <= 1; flush++) {
            rec_t ref = {0};
            uint64_t refc = 0;
            size_t whole = st->len;
            MG_CHECK_INT(feed_pieces(&ref, st->text, st->len, 0, flush, &whole, 1, &refc), 0);
            MG_CHECK_INT(refc, st->comments);
            if (!flush) {
                /* The whole feed itself is right, byte for byte. */
                if (ref.log.len != strlen(st->want) ||
                    memcmp(ref.log.data, st->want, ref.log.len)) {
                    fprintf(stderr, "  %s: whole feed gave:\n%.*s", st->name, (int)ref.log.len,
                            ref.log.data);
                    mg_test_failures++;
                }
            }

            /* Every two-way split. */
            for (size_t cut = 1; cut < st->len; cut++) {
                rec_t got = {0};
                uint64_t c = 0;
                size_t sizes[] = {cut, st->len};
                MG_CHECK_INT(feed_pieces(&got, st->text, st->len, 0, flush, sizes, 2, &c), 0);
                check_same(st, &ref, &got, refc, c, "split at", cut);
                rec_free(&got);
            }
            /* Random 1-7 byte pieces. */
            for (int iter = 0; iter < 1500; iter++) {
                size_t sizes[4096];
                size_t n = 0, total = 0;
                while (total < st->len && n < MG_ARRAY_LEN(sizes)) {
                    sizes[n] = 1 + prng_next(&seed) % 7;
                    total += sizes[n++];
                }
                rec_t got = {0};
                uint64_t c = 0;
                MG_CHECK_INT(feed_pieces(&got, st->text, st->len, 0, flush, sizes, n, &c), 0);
                check_same(st, &ref, &got, refc, c, "random pieces, iteration", (size_t)iter);
                rec_free(&got);
            }
            rec_free(&ref);
        }
    }
}

MG_TEST(test_property_flush_adds_only_the_tail)
{
    /* For "mixed-edge", flushing adds exactly the unterminated last event. */
    const stream_t *st = &streams[3];
    rec_t r = {0};
    MG_CHECK_INT(feed_whole(&r, st->text, st->len, 0, true), 0);
    MG_CHECK_INT(r.n, 4);
    MG_CHECK_STR(r.n == 4 ? r.data[3] : NULL, "tail-without-blank-line");
    rec_free(&r);
}

MG_TEST(test_property_cap_error_is_split_independent)
{
    /* With a cap that the third Anthropic event exceeds, every split fails at the same place
     * after the same events, and never holds more than the cap. */
    const stream_t *st = &streams[1];
    rec_t ref = {0};
    size_t whole = st->len;
    MG_CHECK_INT(feed_pieces(&ref, st->text, st->len, 100, false, &whole, 1, NULL),
                 MG_SSE_E_TOO_LARGE);
    MG_CHECK_INT(ref.n, 2);
    for (size_t cut = 1; cut < st->len; cut++) {
        rec_t got = {0};
        size_t sizes[] = {cut, st->len};
        MG_CHECK_INT(feed_pieces(&got, st->text, st->len, 100, false, sizes, 2, NULL),
                     MG_SSE_E_TOO_LARGE);
        check_same(st, &ref, &got, 0, 0, "capped split at", cut);
        rec_free(&got);
    }
    rec_free(&ref);
}

MG_TEST_MAIN()

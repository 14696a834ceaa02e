/* libFuzzer target for src/sse.c. Input layout: byte 0 chooses how the rest is cut into feeds,
 * the size cap and the end-of-stream mode; byte 1 seeds the piece sizes; the rest is the stream.
 *
 * Asserts (abort on failure):
 * - the events, return code and comment count of the cut feed equal those of one whole feed;
 * - the bytes held for an event never exceed the cap, nor does any buffer's allocation;
 * - with no error, the events equal those of a literal, unbounded transcription of the WHATWG
 *   algorithm below (and with MG_SSE_E_TOO_LARGE, they are a prefix of them);
 * - no type or id contains a line break, no data contains a CR. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "sse.h"
#include "util.h"

typedef struct {
    mg_buf_t log;
    size_t cap;
} fz_rec_t;

static void log_event(mg_buf_t *log, const char *t, size_t tl, const char *d, size_t dl,
                      const char *id, size_t il, long retry)
{
    mg_buf_printf(log, "T%zu:", tl);
    mg_buf_append(log, t, tl);
    mg_buf_printf(log, "D%zu:", dl);
    mg_buf_append(log, d, dl);
    mg_buf_printf(log, "I%zu:", il);
    mg_buf_append(log, id, il);
    mg_buf_printf(log, "R%ld\n", retry);
}

static int fz_cb(void *ud, const mg_sse_event_t *ev)
{
    fz_rec_t *r = ud;
    CHECK(ev->type && ev->data && ev->id);
    CHECK(ev->data_len < r->cap && ev->type_len <= r->cap && ev->id_len <= r->cap);
    CHECK(!memchr(ev->type, '\r', ev->type_len) && !memchr(ev->type, '\n', ev->type_len));
    CHECK(!memchr(ev->id, '\r', ev->id_len) && !memchr(ev->id, '\n', ev->id_len));
    CHECK(!memchr(ev->data, '\r', ev->data_len));
    log_event(&r->log, ev->type, ev->type_len, ev->data, ev->data_len, ev->id, ev->id_len,
              ev->retry_ms);
    return 0;
}

static void check_bounds(const mg_sse_parser_t *p, size_t cap)
{
    CHECK(mg_sse_buffered(p) <= cap);
    CHECK(p->line.cap <= cap + 1 && p->data_buf.cap <= cap + 1 && p->type_buf.cap <= cap + 1 &&
          p->id_buf.cap <= cap + 1);
}

/* ---- the reference: the spec's algorithm, literally, on the whole input, unbounded ---- */

typedef struct {
    mg_buf_t data, type, id, log;
    long retry;
} ref_t;

static void ref_dispatch(ref_t *r)
{
    /* "If the data buffer is an empty string, set the data buffer and the event type buffer to
     * the empty string and return. If the data buffer's last character is a U+000A LINE FEED
     * (LF) character, then remove the last character from the data buffer." */
    if (r->data.len) {
        size_t dl = r->data.len;
        if (r->data.data[dl - 1] == '\n') dl--;
        if (r->type.len)
            log_event(&r->log, r->type.data, r->type.len, r->data.data, dl,
                      r->id.data ? r->id.data : "", r->id.len, r->retry);
        else
            log_event(&r->log, "message", 7, r->data.data, dl, r->id.data ? r->id.data : "",
                      r->id.len, r->retry);
    }
    mg_buf_reset(&r->data);
    mg_buf_reset(&r->type);
    r->retry = -1;
}

static void ref_line(ref_t *r, const char *l, size_t n)
{
    if (n == 0) {
        ref_dispatch(r);
        return;
    }
    if (l[0] == ':') return;
    size_t c = 0;
    while (c < n && l[c] != ':')
        c++;
    const char *v = l + n;
    size_t vn = 0;
    if (c < n) {
        v = l + c + 1;
        vn = n - c - 1;
        if (vn && v[0] == ' ') v++, vn--;
    }
    if (c == 4 && !memcmp(l, "data", 4)) {
        mg_buf_append(&r->data, v, vn);
        mg_buf_append(&r->data, "\n", 1);
    } else if (c == 5 && !memcmp(l, "event", 5)) {
        mg_buf_reset(&r->type);
        mg_buf_append(&r->type, v, vn);
    } else if (c == 2 && !memcmp(l, "id", 2)) {
        if (!memchr(v, 0, vn)) {
            mg_buf_reset(&r->id);
            mg_buf_append(&r->id, v, vn);
        }
    } else if (c == 5 && !memcmp(l, "retry", 5)) {
        long ms = 0;
        size_t k = 0;
        for (; k < vn && v[k] >= '0' && v[k] <= '9'; k++) {
            int d = v[k] - '0';
            ms = ms > (LONG_MAX - d) / 10 ? LONG_MAX : ms * 10 + d;
        }
        if (vn && k == vn) r->retry = ms;
    }
}

static void ref_parse(const char *s, size_t n, int flush, mg_buf_t *out)
{
    ref_t r = {.retry = -1};
    size_t i = 0;
    if (n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) i = 3;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n')
            j++;
        if (j == n) { /* unterminated last line */
            if (flush) ref_line(&r, s + i, j - i);
            break;
        }
        ref_line(&r, s + i, j - i);
        if (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n') j++;
        i = j + 1;
    }
    if (flush) ref_dispatch(&r);
    *out = r.log;
    mg_buf_free(&r.data);
    mg_buf_free(&r.type);
    mg_buf_free(&r.id);
}

/* ---- the driver ---- */

/* Feeds s whole (pieces = 0), in fixed pieces, or (pieces = SIZE_MAX) in pseudo-random 1..16
 * byte pieces drawn from seed. */
static int run(const char *s, size_t n, size_t cap, int flush, size_t pieces, uint32_t seed,
               mg_buf_t *log, uint64_t *comments)
{
    mg_sse_parser_t p;
    fz_rec_t r = {.cap = cap};
    mg_sse_init(&p, cap);
    int rc = 0;
    size_t off = 0;
    while (off < n && !rc) {
        size_t step = pieces ? pieces : n;
        if (pieces == SIZE_MAX) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            step = 1 + seed % 16;
        }
        if (step > n - off) step = n - off;
        /* A private copy, scribbled over and freed after the feed: a pointer the parser kept
         * into it becomes a use-after-free that ASan reports, or garbage the comparison sees. */
        char *piece = mg_xmalloc(step);
        memcpy(piece, s + off, step);
        rc = mg_sse_feed(&p, piece, step, fz_cb, &r);
        memset(piece, 0xAA, step);
        free(piece);
        check_bounds(&p, cap);
        off += step;
    }
    if (!rc) rc = mg_sse_finish(&p, flush, fz_cb, &r);
    check_bounds(&p, cap);
    CHECK(mg_sse_feed(&p, "data: x\n\n", 9, fz_cb, &r) == (rc ? rc : MG_SSE_E_FINISHED));
    *comments = mg_sse_comments(&p);
    mg_sse_free(&p);
    *log = r.log;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t caps[4] = {16, 64, 4096, 1 << 20};
    if (size < 2) return 0;
    uint8_t mode = data[0];
    uint32_t seed = 0x9e3779b9u ^ ((uint32_t)data[1] << 8 | data[1]);
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    size_t cap = caps[(mode >> 4) & 3];
    int flush = (mode >> 6) & 1;
    /* Low nibble: 0 = pseudo-random 1..16 byte pieces, else fixed pieces of that many bytes
     * (bit 7 multiplies them by 37 to cut larger inputs coarsely). */
    size_t pieces = (mode & 15) ? (size_t)(mode & 15) * ((mode & 0x80) ? 37 : 1) : SIZE_MAX;

    mg_buf_t whole = {0}, cut = {0}, ref = {0};
    uint64_t cw = 0, cc = 0;
    int rw = run(s, n, cap, flush, 0, 0, &whole, &cw);
    int rcut = run(s, n, cap, flush, pieces, seed, &cut, &cc);
    CHECK(rw == 0 || rw == MG_SSE_E_TOO_LARGE);
    CHECK(rw == rcut);
    CHECK(cw == cc);
    CHECK(whole.len == cut.len && (whole.len == 0 || memcmp(whole.data, cut.data, whole.len) == 0));

    ref_parse(s, n, flush, &ref);
    if (rw == 0)
        CHECK(ref.len == whole.len && (ref.len == 0 || memcmp(ref.data, whole.data, ref.len) == 0));
    else
        CHECK(whole.len <= ref.len &&
              (whole.len == 0 || memcmp(ref.data, whole.data, whole.len) == 0));
    /* Under the largest cap no input this small can fail. */
    if (cap == caps[3] && n < cap) CHECK(rw == 0);

    mg_buf_free(&whole);
    mg_buf_free(&cut);
    mg_buf_free(&ref);
    return 0;
}

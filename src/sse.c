/* Incremental text/event-stream parser: bytes in, events out. See sse.h for the contract.
 *
 * Design: lines are found with memchr (one forward scan per terminator kind, positions cached so
 * CR-only streams stay linear). A line that lies wholly inside the current feed is processed in
 * place, and a `data` / `event` value taken from it is borrowed from the caller's buffer; it is
 * copied into the parser only when a second data line needs joining or when the feed returns
 * with the event still open. A line cut by the end of a feed is carried over in p->line. */
#include "sse.h"

#include <limits.h>
#include <string.h>

/* Buffers grown past this are released after use, so a stream that once carried a large event
 * does not keep its peak memory while idle (gateways hold thousands of parsers). */
#define SSE_KEEP_BYTES ((size_t)16 * 1024)

static const char sse_bom[3] = {'\xEF', '\xBB', '\xBF'};

void mg_sse_init(mg_sse_parser_t *p, size_t max_event_bytes)
{
    memset(p, 0, sizeof *p);
    p->max = max_event_bytes ? max_event_bytes : MG_SSE_DEFAULT_MAX_EVENT_BYTES;
    p->retry_ms = -1;
    p->last_retry_ms = -1;
    p->type = "";
}

void mg_sse_free(mg_sse_parser_t *p)
{
    mg_buf_free(&p->line);
    mg_buf_free(&p->data_buf);
    mg_buf_free(&p->type_buf);
    mg_buf_free(&p->id_buf);
    p->data = NULL;
    p->type = "";
    p->data_len = p->type_len = 0;
    p->has_data = p->data_borrowed = p->type_borrowed = false;
}

/* Bytes of the event in progress as counted against the cap: the spec's data buffer (every data
 * line plus its "\n") and the event type buffer. The unfinished line is added by the callers. */
static size_t event_cost(const mg_sse_parser_t *p)
{
    return (p->has_data ? p->data_len + 1 : 0) + p->type_len;
}

/* Makes room for need bytes plus a NUL. Callers have checked need <= p->max, so the capacity
 * never exceeds max + 1: growth is bounded by the cap, not just the length. */
static void buf_fit(mg_buf_t *b, size_t need, size_t max)
{
    if (need + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 256;
    if (cap < need + 1) cap = need + 1;
    if (cap > max + 1) cap = max + 1;
    b->data = mg_xrealloc(b->data, cap);
    b->cap = cap;
}

static void buf_set(mg_buf_t *b, const char *s, size_t n, size_t max)
{
    buf_fit(b, n, max);
    if (n) memmove(b->data, s, n);
    b->len = n;
    b->data[n] = '\0';
}

static void buf_add(mg_buf_t *b, const char *s, size_t n, size_t max)
{
    buf_fit(b, b->len + n, max);
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_trim(mg_buf_t *b)
{
    b->len = 0;
    if (b->cap > SSE_KEEP_BYTES) mg_buf_free(b);
}

/* Copies borrowed data / type into the parser before the caller's buffer goes away. */
static void own_event(mg_sse_parser_t *p)
{
    if (p->data_borrowed) {
        buf_set(&p->data_buf, p->data, p->data_len, p->max);
        p->data = p->data_buf.data;
        p->data_borrowed = false;
    }
    if (p->type_borrowed) {
        buf_set(&p->type_buf, p->type, p->type_len, p->max);
        p->type = p->type_buf.data;
        p->type_borrowed = false;
    }
}

/* A blank line: dispatch if the data buffer is non-empty, then reset data and type (the id
 * persists). Spec: "If the data buffer is an empty string, set the data buffer and the event type
 * buffer to the empty string and return." */
static int dispatch(mg_sse_parser_t *p, mg_sse_cb cb, void *ud)
{
    int rc = 0;
    if (p->has_data) {
        mg_sse_event_t ev = {
            .type = p->type_len ? p->type : "message",
            .type_len = p->type_len ? p->type_len : 7,
            .data = p->data_len ? p->data : "",
            .data_len = p->data_len,
            .id = p->id_buf.len ? p->id_buf.data : "",
            .id_len = p->id_buf.len,
            .retry_ms = p->retry_ms,
        };
        p->events++;
        rc = cb ? cb(ud, &ev) : 0;
    }
    p->has_data = p->data_borrowed = p->type_borrowed = false;
    p->data = NULL;
    p->data_len = 0;
    p->type = "";
    p->type_len = 0;
    p->retry_ms = -1;
    buf_trim(&p->data_buf);
    buf_trim(&p->type_buf);
    return rc;
}

static void field_data(mg_sse_parser_t *p, const char *v, size_t n, bool borrow)
{
    if (!p->has_data) {
        p->has_data = true;
        if (borrow) {
            p->data = v;
            p->data_len = n;
            p->data_borrowed = true;
            return;
        }
        buf_set(&p->data_buf, v, n, p->max);
    } else {
        /* A second line: join with "\n" in data_buf (copying a borrowed first line first). */
        if (p->data_borrowed) buf_set(&p->data_buf, p->data, p->data_len, p->max);
        p->data_borrowed = false;
        buf_add(&p->data_buf, "\n", 1, p->max);
        buf_add(&p->data_buf, v, n, p->max);
    }
    p->data = p->data_buf.data;
    p->data_len = p->data_buf.len;
}

static void field_event(mg_sse_parser_t *p, const char *v, size_t n, bool borrow)
{
    if (borrow) {
        p->type = v;
        p->type_borrowed = true;
    } else {
        buf_set(&p->type_buf, v, n, p->max);
        p->type = p->type_buf.data;
        p->type_borrowed = false;
    }
    p->type_len = n;
}

/* Spec: "If the field value consists of only ASCII digits, then interpret the field value as an
 * integer in base ten ... Otherwise, ignore the field." An empty value is ignored too (as every
 * browser does); huge values saturate at LONG_MAX. */
static void field_retry(mg_sse_parser_t *p, const char *v, size_t n)
{
    if (n == 0) return;
    long ms = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)v[i] - '0';
        if (d > 9) return;
        ms = ms > (LONG_MAX - (long)d) / 10 ? LONG_MAX : ms * 10 + (long)d;
    }
    p->retry_ms = p->last_retry_ms = ms;
}

/* One complete line (terminator excluded). borrow: line lies in the caller's buffer, which stays
 * valid until the feed returns, so values may be referenced rather than copied. */
static int process_line(mg_sse_parser_t *p, const char *line, size_t n, bool borrow, mg_sse_cb cb,
                        void *ud)
{
    if (n == 0) return dispatch(p, cb, ud);
    if (line[0] == ':') {
        p->comments++;
        return 0;
    }
    /* The cap counts the whole line as if it were buffered, whether or not it was: the outcome
     * must not depend on where the feeds were cut. */
    if (n > p->max - event_cost(p)) return MG_SSE_E_TOO_LARGE;

    const char *colon = memchr(line, ':', n);
    size_t name_len = colon ? (size_t)(colon - line) : n;
    const char *v = line + n;
    size_t vn = 0;
    if (colon) {
        v = colon + 1;
        vn = n - name_len - 1;
        if (vn && *v == ' ') { /* exactly one leading space is removed */
            v++;
            vn--;
        }
    }
    switch (name_len) {
    case 4:
        if (memcmp(line, "data", 4) == 0) field_data(p, v, vn, borrow);
        break;
    case 5:
        if (memcmp(line, "event", 5) == 0)
            field_event(p, v, vn, borrow);
        else if (memcmp(line, "retry", 5) == 0)
            field_retry(p, v, vn);
        break;
    case 2:
        /* Spec: "If the field value does not contain U+0000 NULL, then set the last event ID
         * buffer to the field value. Otherwise, ignore the field." */
        if (memcmp(line, "id", 2) == 0 && !memchr(v, '\0', vn)) buf_set(&p->id_buf, v, vn, p->max);
        break;
    default:
        break; /* unknown fields are ignored */
    }
    return 0;
}

/* Feeds bytes that follow the BOM check. Keeps its own stop code out of p->err: the caller
 * records it. */
static int feed_bytes(mg_sse_parser_t *p, const char *buf, size_t len, mg_sse_cb cb, void *ud)
{
    size_t i = 0;
    int rc = 0;
    if (len && p->cr_pending) {
        p->cr_pending = false;
        if (buf[0] == '\n') i = 1; /* second half of a CRLF cut between feeds */
    }
    /* Next LF / CR at or after i, or len when there is none; -1 = not searched yet. Each kind is
     * scanned forward at most once per feed, so lone-CR streams stay linear. */
    ptrdiff_t lf = -1, cr = -1;
    while (i < len) {
        if (lf < (ptrdiff_t)i) {
            const char *q = memchr(buf + i, '\n', len - i);
            lf = q ? q - buf : (ptrdiff_t)len;
        }
        if (cr < (ptrdiff_t)i) {
            const char *q = memchr(buf + i, '\r', len - i);
            cr = q ? q - buf : (ptrdiff_t)len;
        }
        size_t eol = (size_t)(lf < cr ? lf : cr);

        if (p->skip_line) {
            /* Rest of a comment line begun in an earlier feed: discard unbuffered. */
            if (eol == len) break;
            p->skip_line = false;
        } else if (p->line.len) {
            /* Continuation of a line begun in an earlier feed. */
            size_t piece = eol - i;
            if (piece > p->max - event_cost(p) - p->line.len) return MG_SSE_E_TOO_LARGE;
            buf_add(&p->line, buf + i, piece, p->max);
            if (eol == len) break;
            rc = process_line(p, p->line.data, p->line.len, false, cb, ud);
            buf_trim(&p->line);
            if (rc) return rc;
        } else if (eol == len) {
            /* A line cut by the end of this feed: carry it over (comments are only noted). */
            if (buf[i] == ':') {
                p->comments++;
                p->skip_line = true;
                break;
            }
            if (len - i > p->max - event_cost(p)) return MG_SSE_E_TOO_LARGE;
            buf_set(&p->line, buf + i, len - i, p->max);
            break;
        } else {
            rc = process_line(p, buf + i, eol - i, true, cb, ud);
            if (rc) return rc;
        }

        /* Consume the terminator: CRLF, LF, or CR (a CR ending the feed may own the next LF). */
        if (buf[eol] == '\r') {
            if (eol + 1 == len)
                p->cr_pending = true;
            else if (buf[eol + 1] == '\n')
                eol++;
        }
        i = eol + 1;
    }
    own_event(p);
    return 0;
}

int mg_sse_feed(mg_sse_parser_t *p, const char *buf, size_t len, mg_sse_cb cb, void *ud)
{
    if (p->err) return p->err;
    /* Spec: a single U+FEFF at the start of the stream is dropped. Its bytes may arrive one per
     * feed, so the matched prefix is remembered; on a mismatch it is replayed as ordinary bytes. */
    while (p->bom < 3 && len) {
        if ((unsigned char)buf[0] == (unsigned char)sse_bom[p->bom]) {
            p->bom++;
            buf++;
            len--;
            continue;
        }
        uint8_t matched = p->bom;
        p->bom = 3;
        int rc = feed_bytes(p, sse_bom, matched, cb, ud);
        if (rc) return p->err = rc;
    }
    int rc = feed_bytes(p, buf, len, cb, ud);
    if (rc) p->err = rc;
    return rc;
}

int mg_sse_finish(mg_sse_parser_t *p, bool flush_partial, mg_sse_cb cb, void *ud)
{
    if (p->err) return p->err;
    int rc = 0;
    if (p->bom < 3) { /* the stream ended inside what looked like a BOM: those bytes are data */
        uint8_t matched = p->bom;
        p->bom = 3;
        rc = feed_bytes(p, sse_bom, matched, cb, ud);
    }
    if (!rc && flush_partial) {
        /* As the SDKs' lineDecoder.flush(): an unterminated last line is completed, then the
         * event is dispatched as if a blank line had followed. */
        if (p->line.len && !p->skip_line)
            rc = process_line(p, p->line.data, p->line.len, false, cb, ud);
        if (!rc) rc = dispatch(p, cb, ud);
    }
    p->err = rc ? rc : MG_SSE_E_FINISHED;
    return rc;
}

uint64_t mg_sse_comments(const mg_sse_parser_t *p)
{
    return p->comments;
}

uint64_t mg_sse_events(const mg_sse_parser_t *p)
{
    return p->events;
}

size_t mg_sse_buffered(const mg_sse_parser_t *p)
{
    return event_cost(p) + p->line.len;
}

bool mg_sse_pending(const mg_sse_parser_t *p)
{
    return p->line.len || p->has_data || p->type_len || (p->bom > 0 && p->bom < 3);
}

long mg_sse_retry_ms(const mg_sse_parser_t *p)
{
    return p->last_retry_ms;
}

const char *mg_sse_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case MG_SSE_E_TOO_LARGE:
        return "SSE event exceeds the size limit";
    case MG_SSE_E_FINISHED:
        return "SSE stream already finished";
    default:
        return "SSE parsing stopped by the callback";
    }
}

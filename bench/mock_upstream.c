/* A fast mock of an OpenAI-style upstream for the benches: one thread, one epoll loop,
 * non-blocking sockets, HTTP/1.1 keep-alive. Uses nothing from moongate.
 *
 *   POST /v1/chat/completions (or /chat/completions)
 *     "stream": true in the body  -> an SSE answer: `--events` content chunks (fewer if the body's
 *                                   "max_tokens" is lower: handy for warm-ups), the first after
 *                                   `--first-ms`, then one every `--pacing-ms`; after the last
 *                                   one a finish chunk, a usage chunk and `data: [DONE]`.
 *     otherwise                   -> one chat.completion JSON (Content-Length).
 *   GET /v1/models (or /models)   -> a model list.
 *
 * Every content chunk carries `"seq":i` (0-based) and `"ts":T`, T being CLOCK_MONOTONIC in µs
 * taken just before the write, so a client on the same machine can compute the latency of each
 * event (its receive time minus T) and check that none is lost, duplicated or reordered.
 *
 * Seeded content (for checking every byte, tests/soak/): when the request body contains
 * `mgseed=<decimal>` anywhere (e.g. in the user's message, which survives any API translation),
 * the text of content chunk i is `--event-bytes` characters of [a-z0-5], character k being
 * SEED_ALPHABET[splitmix64(seed + (i * 2^20 + k + 1) * 0x9E3779B97F4A7C15) >> 59]. A client
 * that knows its seed can so check each event's text exactly, whatever API it speaks.
 *
 * Requests must carry their body with Content-Length (what curl and every SDK send); a chunked
 * request body is refused with 411. Streamed answers are chunked (HTTP/1.1), or close-delimited
 * with `--close` (and always for an HTTP/1.0 request).
 *
 * Pacing uses one binary min-heap of deadlines keyed by connection, so 10,000+ concurrent slow
 * streams cost O(log n) per event and nothing while they wait. A stream whose client has more than
 * 64 KiB unread (the socket would block) produces nothing more until it catches up, so a slow
 * reader holds the mock's memory bounded however long the answer (--events).
 *
 * Prints `READY <port>` on stdout once listening (use --port 0 for an ephemeral port) and a line
 * of counters on stderr when it gets SIGINT or SIGTERM. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_REQUEST_BYTES (4u << 20) /* head + body; more is answered 413 and closed */
#define MAX_HEAD_BYTES (64u << 10)
#define READ_CHUNK 16384
#define MAX_PENDING_OUT (64u << 10) /* a stream whose client lags this much is paused */

/* ---- options ---- */

static struct {
    const char *host;
    int port;
    int events;        /* content chunks per stream */
    int pacing_ms;     /* between chunks */
    int first_ms;      /* before the first chunk (a model's prefill) */
    int event_bytes;   /* content characters per chunk */
    int body_bytes;    /* content characters of a non-streamed answer */
    bool close_mode;   /* close-delimited streams instead of chunked */
    bool verbose;
} opt = {"127.0.0.1", 0, 20, 500, 0, 8, 64, false, false};

/* ---- small helpers ---- */

typedef struct {
    char *p;
    size_t off, len, cap; /* bytes [off, len) are pending */
} buf_t;

static void buf_reserve(buf_t *b, size_t extra)
{
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return;
    if (b->off) { /* slide down before growing */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + extra) cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_append(buf_t *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    *b = (buf_t){0};
}

/* ---- connections ---- */

typedef enum { ST_READ, ST_STREAM, ST_CLOSING } conn_state_t;

typedef struct conn {
    int fd;
    conn_state_t st;
    buf_t in, out;
    bool want_out;     /* EPOLLOUT registered */
    bool keep_alive;   /* of the request being answered */
    bool chunked;      /* the streamed answer uses chunked encoding */
    bool sent_continue;
    int seq;           /* next content chunk */
    int n_events;      /* content chunks of this stream: --events, or the request's max_tokens if lower */
    int64_t deadline;  /* of the next chunk, µs */
    size_t heap_idx;   /* SIZE_MAX when not waiting */
    char model[64];
    bool seeded;       /* the request carried mgseed=: content chunks are a function of seed, seq */
    uint64_t seed;
    struct conn *prev, *next; /* every open connection, so exit can free them */
} conn_t;

static conn_t *all_conns;

static int epfd;
static int64_t accept_paused_until; /* out of descriptors: the listening socket rests until then */
static volatile sig_atomic_t stop_flag;
static char *event_fill, *body_fill; /* the content text, generated once */

static struct {
    uint64_t accepted, requests, streams, streams_done, streams_aborted, events;
    size_t open, open_streams, max_open_streams;
} stats;

/* ---- the timer heap: waiting streams ordered by deadline ---- */

static conn_t **heap;
static size_t heap_n, heap_cap;

static void heap_set(size_t i, conn_t *c)
{
    heap[i] = c;
    c->heap_idx = i;
}

static void heap_up(size_t i)
{
    conn_t *c = heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent]->deadline <= c->deadline) break;
        heap_set(i, heap[parent]);
        i = parent;
    }
    heap_set(i, c);
}

static void heap_down(size_t i)
{
    conn_t *c = heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = c->deadline;
        if (l < heap_n && heap[l]->deadline < best) m = l, best = heap[l]->deadline;
        if (l + 1 < heap_n && heap[l + 1]->deadline < best) m = l + 1;
        if (m == i) break;
        heap_set(i, heap[m]);
        i = m;
    }
    heap_set(i, c);
}

static void heap_push(conn_t *c)
{
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = xrealloc(heap, heap_cap * sizeof *heap);
    }
    heap[heap_n] = c;
    c->heap_idx = heap_n++;
    heap_up(c->heap_idx);
}

static void heap_remove(conn_t *c)
{
    size_t i = c->heap_idx;
    if (i == SIZE_MAX) return;
    c->heap_idx = SIZE_MAX;
    conn_t *last = heap[--heap_n];
    if (i == heap_n) return;
    heap_set(i, last);
    heap_up(i);
    heap_down(last->heap_idx);
}

/* ---- I/O ---- */

static void set_out_interest(conn_t *c, bool want)
{
    if (c->want_out == want) return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

static void conn_close(conn_t *c)
{
    if (c->st == ST_STREAM) {
        stats.streams_aborted++;
        stats.open_streams--;
    }
    heap_remove(c);
    if (c->prev) c->prev->next = c->next;
    else all_conns = c->next;
    if (c->next) c->next->prev = c->prev;
    close(c->fd); /* also drops it from the epoll set */
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
    stats.open--;
}

/* Writes what it can. Returns -1 when the connection was closed (error, or done in ST_CLOSING). */
static int conn_flush(conn_t *c)
{
    while (c->out.off < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out_interest(c, true);
                return 0;
            }
            conn_close(c);
            return -1;
        }
        c->out.off += (size_t)w;
    }
    c->out.off = c->out.len = 0;
    set_out_interest(c, false);
    if (c->st == ST_CLOSING) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Appends one SSE event (`data: <json>\n\n`), framed as an HTTP chunk when chunked. */
static void put_event(conn_t *c, const char *json, size_t n)
{
    char hdr[16];
    if (c->chunked) {
        int h = snprintf(hdr, sizeof hdr, "%zx\r\n", n + 8);
        buf_append(&c->out, hdr, (size_t)h);
    }
    buf_append(&c->out, "data: ", 6);
    buf_append(&c->out, json, n);
    buf_append(&c->out, "\n\n", 2);
    if (c->chunked) buf_append(&c->out, "\r\n", 2);
}

static void put_response(conn_t *c, int status, const char *reason, const char *ctype, const char *body,
                         size_t n)
{
    char head[512];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     reason, ctype, n, c->keep_alive ? "" : "Connection: close\r\n");
    buf_append(&c->out, head, (size_t)h);
    buf_append(&c->out, body, n);
    if (!c->keep_alive) c->st = ST_CLOSING;
}

static void put_error(conn_t *c, int status, const char *reason, const char *msg)
{
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"code\":null}}", msg);
    put_response(c, status, reason, "application/json", body, (size_t)n);
}

static uint64_t splitmix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The seeded text of content chunk `seq` (see the top of the file); out holds --event-bytes + 1. */
static void seeded_fill(char *out, uint64_t seed, int seq)
{
    static const char SEED_ALPHABET[] = "abcdefghijklmnopqrstuvwxyz012345";
    for (int k = 0; k < opt.event_bytes; k++) {
        uint64_t x = seed + ((uint64_t)seq * (1u << 20) + (uint64_t)k + 1) * 0x9E3779B97F4A7C15ULL;
        out[k] = SEED_ALPHABET[splitmix64(x) >> 59];
    }
    out[opt.event_bytes] = '\0';
}

/* The next content chunk, or (after the last) the finish chunk, usage chunk and [DONE]. */
static void stream_step(conn_t *c, int64_t now)
{
    char ev[16384];
    if (c->seq < c->n_events) {
        char seeded[8001];
        if (c->seeded) seeded_fill(seeded, c->seed, c->seq);
        int n = snprintf(ev, sizeof ev,
                         "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                         "\"model\":\"%s\",\"seq\":%d,\"ts\":%" PRId64 ",\"choices\":[{\"index\":0,\"delta\":{%s"
                         "\"content\":\"%s\"},\"logprobs\":null,\"finish_reason\":null}]}",
                         c->model, c->seq, now_us(), c->seq == 0 ? "\"role\":\"assistant\"," : "",
                         c->seeded ? seeded : event_fill);
        put_event(c, ev, (size_t)n);
        c->seq++;
        stats.events++;
    }
    if (c->seq >= c->n_events) {
        int n = snprintf(ev, sizeof ev,
                         "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                         "\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                         "\"finish_reason\":\"stop\"}]}",
                         c->model);
        put_event(c, ev, (size_t)n);
        n = snprintf(ev, sizeof ev,
                     "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                     "\"model\":\"%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":%d,"
                     "\"total_tokens\":%d}}",
                     c->model, c->n_events, 12 + c->n_events);
        put_event(c, ev, (size_t)n);
        put_event(c, "[DONE]", 6);
        if (c->chunked) buf_append(&c->out, "0\r\n\r\n", 5);
        stats.streams_done++;
        stats.open_streams--;
        c->st = (c->chunked && c->keep_alive) ? ST_READ : ST_CLOSING;
        c->seq = -1;
        return;
    }
    c->deadline = now + (int64_t)opt.pacing_ms * 1000;
    heap_push(c);
}

static void start_stream(conn_t *c, bool http10)
{
    c->chunked = !opt.close_mode && !http10;
    if (!c->chunked) c->keep_alive = false;
    char head[256];
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n%s\r\n",
                     c->chunked ? "Transfer-Encoding: chunked\r\n" : "Connection: close\r\n");
    buf_append(&c->out, head, (size_t)h);
    c->st = ST_STREAM;
    c->seq = 0;
    stats.streams++;
    if (++stats.open_streams > stats.max_open_streams) stats.max_open_streams = stats.open_streams;
    int64_t now = now_us();
    if (opt.first_ms <= 0) {
        stream_step(c, now); /* the first chunk goes out with the head */
    } else {
        c->deadline = now + (int64_t)opt.first_ms * 1000;
        heap_push(c);
    }
}

/* Case-insensitive search for a header's value in the head [p, end); NULL when absent. */
static const char *header_value(const char *p, const char *end, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *line = memchr(p, '\n', (size_t)(end - p)); /* skip the request line */
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol;
    }
    return NULL;
}

/* Finds `"key"` followed by `:` in a JSON body; returns the first byte of the value or NULL. */
static const char *json_value(const char *p, size_t n, const char *key)
{
    size_t kl = strlen(key);
    const char *end = p + n;
    for (const char *s = p; s && s < end; s++) {
        s = memmem(s, (size_t)(end - s), key, kl);
        if (!s) return NULL;
        const char *v = s + kl;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')) v++;
        if (v < end && *v == ':') {
            v++;
            while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')) v++;
            return v < end ? v : NULL;
        }
    }
    return NULL;
}

/* Handles complete requests waiting in c->in. Returns -1 if the connection was closed. */
static int conn_process(conn_t *c)
{
    while (c->st == ST_READ && c->in.off < c->in.len) {
        const char *p = c->in.p + c->in.off;
        size_t avail = c->in.len - c->in.off;
        const char *hend = memmem(p, avail, "\r\n\r\n", 4);
        if (!hend) {
            if (avail > MAX_HEAD_BYTES) {
                c->keep_alive = false;
                put_error(c, 431, "Request Header Fields Too Large", "request head too large");
            }
            break;
        }
        size_t head_len = (size_t)(hend - p) + 4;
        const char *sp1 = memchr(p, ' ', head_len);
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - p)) : NULL;
        if (!sp1 || !sp2) {
            c->keep_alive = false;
            put_error(c, 400, "Bad Request", "bad request line");
            break;
        }
        bool http10 = (size_t)(hend - sp2) >= 9 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
        size_t vlen;
        const char *v = header_value(p, hend + 2, "Connection", &vlen);
        c->keep_alive = http10 ? (v && vlen == 10 && strncasecmp(v, "keep-alive", 10) == 0)
                               : !(v && vlen == 5 && strncasecmp(v, "close", 5) == 0);
        if (header_value(p, hend + 2, "Transfer-Encoding", &vlen)) {
            c->keep_alive = false;
            put_error(c, 411, "Length Required", "send the body with Content-Length");
            break;
        }
        size_t body_len = 0;
        if ((v = header_value(p, hend + 2, "Content-Length", &vlen))) body_len = strtoull(v, NULL, 10);
        if (head_len + body_len > MAX_REQUEST_BYTES) {
            c->keep_alive = false;
            put_error(c, 413, "Payload Too Large", "request too large");
            break;
        }
        if (avail < head_len + body_len) {
            v = header_value(p, hend + 2, "Expect", &vlen);
            if (v && !c->sent_continue && vlen == 12 && strncasecmp(v, "100-continue", 12) == 0) {
                buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                c->sent_continue = true;
            }
            break;
        }
        c->sent_continue = false;
        stats.requests++;
        const char *body = p + head_len;
        size_t mlen = (size_t)(sp1 - p), ulen = (size_t)(sp2 - sp1 - 1);
        const char *url = sp1 + 1;
        const char *q = memchr(url, '?', ulen);
        if (q) ulen = (size_t)(q - url);
#define IS(m, u) (mlen == strlen(m) && memcmp(p, m, mlen) == 0 && ulen == strlen(u) && memcmp(url, u, ulen) == 0)
        if (IS("POST", "/v1/chat/completions") || IS("POST", "/chat/completions")) {
            snprintf(c->model, sizeof c->model, "mock");
            const char *mv = json_value(body, body_len, "\"model\"");
            if (mv && *mv == '"') {
                size_t i = 0;
                for (mv++; mv < body + body_len && *mv != '"' && *mv != '\\' && i + 1 < sizeof c->model; mv++)
                    c->model[i++] = *mv;
                c->model[i] = '\0';
            }
            const char *sv = json_value(body, body_len, "\"stream\"");
            bool stream = sv && (size_t)(body + body_len - sv) >= 4 && memcmp(sv, "true", 4) == 0;
            c->n_events = opt.events;
            const char *sd = memmem(body, body_len, "mgseed=", 7);
            c->seeded = sd && sd + 7 < body + body_len && sd[7] >= '0' && sd[7] <= '9';
            c->seed = 0;
            if (c->seeded) {
                for (sd += 7; sd < body + body_len && *sd >= '0' && *sd <= '9'; sd++)
                    c->seed = c->seed * 10 + (uint64_t)(*sd - '0');
            }
            const char *mt = json_value(body, body_len, "\"max_tokens\"");
            if (mt && *mt >= '0' && *mt <= '9') {
                long k = strtol(mt, NULL, 10);
                if (k < c->n_events) c->n_events = (int)k;
            }
            c->in.off += head_len + body_len;
            if (stream) {
                start_stream(c, http10);
            } else {
                char *b = xrealloc(NULL, (size_t)opt.body_bytes + 512);
                int n = snprintf(b, (size_t)opt.body_bytes + 512,
                                 "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1700000000,"
                                 "\"model\":\"%s\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                                 "\"content\":\"%s\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                                 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":%d,\"total_tokens\":%d}}",
                                 c->model, body_fill, opt.events, 12 + opt.events);
                put_response(c, 200, "OK", "application/json", b, (size_t)n);
                free(b);
            }
            continue;
        }
        c->in.off += head_len + body_len;
        if (IS("GET", "/v1/models") || IS("GET", "/models")) {
            static const char models[] =
                "{\"object\":\"list\",\"data\":[{\"id\":\"m\",\"object\":\"model\",\"created\":1700000000,"
                "\"owned_by\":\"mock\"},{\"id\":\"mock\",\"object\":\"model\",\"created\":1700000000,"
                "\"owned_by\":\"mock\"}]}";
            put_response(c, 200, "OK", "application/json", models, sizeof models - 1);
        } else if (IS("GET", "/health")) {
            put_response(c, 200, "OK", "application/json", "{\"status\":\"ok\"}", 15);
        } else {
            put_error(c, 404, "Not Found", "no such endpoint");
        }
#undef IS
    }
    if (c->in.off == c->in.len) c->in.off = c->in.len = 0;
    return conn_flush(c);
}

static void on_readable(conn_t *c)
{
    for (;;) {
        buf_reserve(&c->in, READ_CHUNK);
        ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (r > 0) {
            c->in.len += (size_t)r;
            if (c->in.len - c->in.off > MAX_REQUEST_BYTES + MAX_HEAD_BYTES) break;
            if ((size_t)r < c->in.cap - c->in.len + (size_t)r) break; /* short read: drained */
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        /* EOF or error: a client that leaves mid-stream is an abort; otherwise just a close. */
        conn_close(c);
        return;
    }
    if (c->st == ST_READ) conn_process(c);
    else if (c->in.len - c->in.off > MAX_REQUEST_BYTES + MAX_HEAD_BYTES) conn_close(c); /* flooding */
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* The socket stays readable: rest it for 100 ms instead of spinning. */
                fprintf(stderr, "mock_upstream: accept: %s (raise ulimit -n)\n", strerror(errno));
                epoll_ctl(epfd, EPOLL_CTL_DEL, lfd, NULL);
                accept_paused_until = now_us() + 100000;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = xrealloc(NULL, sizeof *c);
        *c = (conn_t){.fd = fd, .st = ST_READ, .heap_idx = SIZE_MAX};
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = all_conns;
        if (all_conns) all_conns->prev = c;
        all_conns = c;
        stats.accepted++;
        stats.open++;
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mock_upstream [--host 127.0.0.1] [--port 0] [--events 20] [--pacing-ms 500]\n"
               "                     [--first-ms 0] [--event-bytes 8] [--body-bytes 64] [--close] [-v]\n"
               "Prints READY <port> on stdout once listening; counters on stderr at SIGINT/SIGTERM.\n");
}

static char *make_fill(int n)
{
    static const char words[] = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
    char *s = xrealloc(NULL, (size_t)n + 1);
    for (int i = 0; i < n; i++) s[i] = words[i % (sizeof words - 1)];
    s[n] = '\0';
    return s;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define INTARG(name, field, lo, hi)                                                                \
    if (strcmp(a, name) == 0 && v) {                                                               \
        long x = strtol(v, NULL, 10);                                                              \
        if (x < lo || x > hi) {                                                                    \
            fprintf(stderr, "mock_upstream: %s must be in [%d, %d]\n", name, lo, hi);              \
            return 2;                                                                              \
        }                                                                                          \
        opt.field = (int)x;                                                                        \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        INTARG("--port", port, 0, 65535)
        INTARG("--events", events, 0, 1000000)
        INTARG("--pacing-ms", pacing_ms, 0, 3600000)
        INTARG("--first-ms", first_ms, 0, 3600000)
        INTARG("--event-bytes", event_bytes, 0, 8000)
        INTARG("--body-bytes", body_bytes, 0, 64 << 20)
#undef INTARG
        if (strcmp(a, "--host") == 0 && v) {
            opt.host = v;
            i++;
        } else if (strcmp(a, "--close") == 0) {
            opt.close_mode = true;
        } else if (strcmp(a, "-v") == 0) {
            opt.verbose = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    event_fill = make_fill(opt.event_bytes);
    body_fill = make_fill(opt.body_bytes);

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sin.sin_addr) != 1) {
        fprintf(stderr, "mock_upstream: --host must be an IPv4 address\n");
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(lfd, 65535) != 0) {
        fprintf(stderr, "mock_upstream: cannot listen on %s:%d: %s\n", opt.host, opt.port, strerror(errno));
        return 1;
    }
    socklen_t sl = sizeof sin;
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("READY %d\n", ntohs(sin.sin_port));
    fflush(stdout);

    struct epoll_event evs[512];
    while (!stop_flag) {
        int timeout = -1;
        if (accept_paused_until && now_us() >= accept_paused_until) {
            accept_paused_until = 0;
            epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
        }
        int64_t next = heap_n ? heap[0]->deadline : 0;
        if (accept_paused_until && (!next || accept_paused_until < next)) next = accept_paused_until;
        if (next) {
            int64_t d = next - now_us();
            timeout = d <= 0 ? 0 : (int)((d + 999) / 1000);
        }
        int n = epoll_wait(epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (n < 0 && errno != EINTR) {
            perror("mock_upstream: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                on_accept(lfd);
                continue;
            }
            /* A connection closed earlier in this batch cannot appear again: each fd is reported
             * once per epoll_wait, and a closed conn's fd is gone from the set. */
            if (evs[i].events & EPOLLOUT) {
                if (conn_flush(c) < 0) continue;
                if (c->st == ST_READ && c->in.len > c->in.off && conn_process(c) < 0) continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
        int64_t now = now_us();
        while (heap_n && heap[0]->deadline <= now) {
            conn_t *c = heap[0];
            heap_remove(c);
            if (c->out.len - c->out.off > MAX_PENDING_OUT) {
                /* The client is not reading: write nothing more until it does, as a real server
                 * would (the stream's next event waits; checked again every 10 ms). */
                c->deadline = now + 10000;
                heap_push(c);
                continue;
            }
            stream_step(c, now);
            if (c->st == ST_READ) {
                if (conn_process(c) < 0) continue; /* flushes too, and serves a pipelined request */
            } else if (conn_flush(c) < 0) {
                continue;
            }
        }
    }
    fprintf(stderr,
            "mock_upstream: accepted=%" PRIu64 " requests=%" PRIu64 " streams=%" PRIu64 " streams_done=%" PRIu64
            " streams_aborted=%" PRIu64 " events=%" PRIu64 " max_open_streams=%zu open=%zu\n",
            stats.accepted, stats.requests, stats.streams, stats.streams_done, stats.streams_aborted, stats.events,
            stats.max_open_streams, stats.open);
    while (all_conns) conn_close(all_conns);
    free(heap);
    free(event_fill);
    free(body_fill);
    close(epfd);
    close(lfd);
    return 0;
}

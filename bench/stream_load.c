/* Load client for concurrent streaming chat completions: one thread, one epoll loop, N streams.
 * Uses nothing from moongate, so it measures the mock directly just as well as the gateway.
 *
 * Opens N streaming requests (`"stream": true`) to one URL, ramping up evenly over --ramp-ms
 * (stream i starts at i * ramp / N, at most --batch per loop turn) so loopback is not SYN-flooded
 * and the streams' events, which the mock paces from each stream's start, do not arrive in
 * artificial bursts, reads every stream to its end and checks it: HTTP 200, every content chunk
 * present exactly once and in order (the mock numbers them with "seq"), no error chunk, a
 * `data: [DONE]`, a complete HTTP body. A stream that fails any check is "dropped", with a reason.
 *
 * Latency: each content chunk of bench/mock_upstream.c carries "ts", the CLOCK_MONOTONIC µs at
 * which the mock wrote it. Per-event latency = the time the bytes were read here − ts (same
 * machine, same clock). Time to first event = first content chunk read − connect() started.
 * Run it once against the mock (direct) and once through the gateway: the difference is what the
 * gateway adds.
 *
 * With --pid, samples the process's VmRSS and CPU time (/proc/PID/status, /proc/PID/stat) every
 * 100 ms: before the first connection (idle), while every stream is open at once (plateau: all
 * launched, none ended normally yet, every open one receiving; the maximum RSS seen then) and the
 * peak over the run.
 *
 * Output: a human summary on stderr and one `RESULT key=value ...` line on stdout for scripts.
 * Exit status 0 when no stream was dropped, 3 when some were, 2 for usage errors. */
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
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define SAMPLE_MS 100
#define MAX_HEAD 65536
#define MAX_EVENT (1u << 20)

/* ---- options ---- */

static struct {
    char host[64];
    int port;
    char path[256];
    int streams;
    int events;   /* expected content chunks per stream; 0 = do not check the count */
    int ramp_ms;  /* spread the connects over this long */
    int batch;    /* at most this many connects per loop turn */
    int timeout_s;
    int pid;
    int max_tokens; /* sent as "max_tokens" when > 0 (the mock then sends at most that many chunks) */
    const char *model;
    const char *label;
    const char *dump; /* write "stream seq recv_us latency_us" per content event to this file */
} opt = {"127.0.0.1", 0, "/v1/chat/completions", 100, 0, 1000, 50, 120, 0, 0, "default", "", NULL};

/* ---- helpers ---- */

typedef struct {
    int64_t *v;
    size_t n, cap;
} samples_t;

static void samples_push(samples_t *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = x;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples; -1 when empty. */
static int64_t pct(const samples_t *s, double p)
{
    if (!s->n) return -1;
    size_t rank = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > s->n) rank = s->n;
    return s->v[rank - 1];
}

/* ---- one stream ---- */

typedef enum { P_WAIT, P_CONNECTING, P_SENDING, P_HEAD, P_BODY, P_DONE } phase_t;
typedef enum { B_CHUNKED, B_LENGTH, B_CLOSE } body_mode_t;
typedef enum { CS_SIZE, CS_EXT, CS_DATA, CS_DATA_END, CS_TRAILER, CS_COMPLETE } chunk_state_t;

typedef enum {
    V_OK,
    V_CONNECT,   /* connect() or send failed */
    V_STATUS,    /* not HTTP 200 */
    V_ERROR,     /* an error chunk or `event: error` */
    V_NO_DONE,   /* the body ended without data: [DONE] */
    V_SHORT,     /* fewer (or more) content chunks than --events */
    V_SEQ,       /* a chunk lost, duplicated or out of order */
    V_TRUNCATED, /* the connection ended inside the HTTP body */
    V_RESET,     /* read error (reset) */
    V_TIMEOUT,   /* still running at --timeout-s */
    V_BADHTTP,   /* unparseable response */
    V_COUNT
} result_t;

static const char *result_name[V_COUNT] = {"ok",  "connect", "status",    "error_chunk", "no_done", "short",
                                           "seq", "truncated", "reset", "timeout", "bad_http"};

typedef struct stream {
    int fd;
    int idx;
    phase_t phase;
    size_t woff;
    int64_t t_start, t_first;
    char *head;
    size_t head_len;
    int status;
    body_mode_t mode;
    uint64_t left; /* Content-Length or current chunk bytes left */
    chunk_state_t cs;
    uint64_t chunk_size;
    int trailer_line; /* characters on the current trailer line */
    bool size_digits;
    /* SSE */
    char *line;
    size_t line_len, line_cap;
    bool last_cr;
    char *data;
    size_t data_len, data_cap;
    bool has_data, too_big;
    int events, next_seq;
    bool saw_done, saw_error, bad_seq;
} stream_t;

static stream_t *streams;
static int epfd;
static char *request;
static size_t request_len;
static struct sockaddr_in addr;
static samples_t lat, ttft;
static uint64_t counts[V_COUNT];
static char first_fail[V_COUNT][256];
static int n_started, n_finished, n_receiving, n_active, max_receiving;
static uint64_t total_events;
static volatile sig_atomic_t interrupted;
static FILE *dump_f;

static void fail_note(result_t r, stream_t *s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_note(result_t r, stream_t *s, const char *fmt, ...)
{
    if (first_fail[r][0]) return;
    int n = snprintf(first_fail[r], sizeof first_fail[r], "stream %d: ", s->idx);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_fail[r] + n, sizeof first_fail[r] - (size_t)n, fmt, ap);
    va_end(ap);
}

static void finish(stream_t *s, result_t r)
{
    if (s->phase == P_DONE) return;
    if (s->phase == P_BODY && s->events > 0) n_receiving--;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->phase = P_DONE;
    counts[r]++;
    n_finished++;
    n_active--;
    free(s->head);
    free(s->line);
    free(s->data);
    s->head = s->line = s->data = NULL;
}

/* The verdict on a stream whose HTTP body ended (complete: the framing said so). */
static void judge(stream_t *s, bool complete)
{
    if (s->status != 200) {
        fail_note(V_STATUS, s, "HTTP %d: %.*s", s->status, (int)(s->data_len < 160 ? s->data_len : 160),
                  s->data ? s->data : "");
        finish(s, V_STATUS);
    } else if (s->saw_error) {
        finish(s, V_ERROR);
    } else if (!s->saw_done) {
        fail_note(V_NO_DONE, s, "%d events, body %s", s->events, complete ? "complete" : "cut");
        finish(s, V_NO_DONE);
    } else if (s->bad_seq) {
        finish(s, V_SEQ);
    } else if (opt.events && s->events != opt.events) {
        fail_note(V_SHORT, s, "%d content events, expected %d", s->events, opt.events);
        finish(s, V_SHORT);
    } else if (!complete) {
        fail_note(V_TRUNCATED, s, "connection closed inside the HTTP body after [DONE]");
        finish(s, V_TRUNCATED);
    } else {
        finish(s, V_OK);
    }
}

static int64_t json_int(const char *d, const char *key, bool *found)
{
    const char *p = strstr(d, key);
    *found = p != NULL;
    if (!p) return 0;
    return strtoll(p + strlen(key), NULL, 10);
}

static void dispatch(stream_t *s, int64_t t)
{
    if (!s->has_data) return;
    s->data[s->data_len] = '\0'; /* sse_line keeps room for it */
    const char *d = s->data;
    if (strcmp(d, "[DONE]") == 0) {
        s->saw_done = true;
    } else if (strstr(d, "\"error\"")) {
        if (!s->saw_error) fail_note(V_ERROR, s, "%.200s", d);
        s->saw_error = true;
    } else {
        bool has_seq, has_ts;
        int64_t seq = json_int(d, "\"seq\":", &has_seq);
        int64_t ts = json_int(d, "\"ts\":", &has_ts);
        if (has_seq) {
            if (seq != s->next_seq) {
                if (!s->bad_seq) fail_note(V_SEQ, s, "chunk seq %" PRId64 " where %d was due", seq, s->next_seq);
                s->bad_seq = true;
            }
            s->next_seq = (int)seq + 1;
            if (s->events++ == 0) {
                s->t_first = t;
                samples_push(&ttft, t - s->t_start);
                n_receiving++;
                if (n_receiving > max_receiving) max_receiving = n_receiving;
            }
            total_events++;
            if (has_ts) samples_push(&lat, t - ts);
            if (dump_f && has_ts)
                fprintf(dump_f, "%d %" PRId64 " %" PRId64 " %" PRId64 "\n", s->idx, seq, t, t - ts);
        }
    }
    s->has_data = false;
    s->data_len = 0;
}

/* One complete SSE line (WHATWG event-stream rules, minus id/retry which we do not need). */
static void sse_line(stream_t *s, int64_t t)
{
    const char *l = s->line ? s->line : "";
    size_t n = s->line_len;
    if (n == 0) {
        dispatch(s, t);
        return;
    }
    if (l[0] == ':') return; /* a comment: keep-alive */
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    if (colon && v < l + n && *v == ' ') v++;
    size_t vl = (size_t)(l + n - v);
    if (fl == 4 && memcmp(l, "data", 4) == 0) {
        if (s->data_len + vl + 1 > MAX_EVENT) {
            s->too_big = true;
            return;
        }
        if (s->data_len + vl + 2 > s->data_cap) {
            s->data_cap = (s->data_len + vl + 2) * 2;
            s->data = xrealloc(s->data, s->data_cap);
        }
        if (s->has_data) s->data[s->data_len++] = '\n';
        memcpy(s->data + s->data_len, v, vl);
        s->data_len += vl;
        s->has_data = true;
    } else if (fl == 5 && memcmp(l, "event", 5) == 0 && vl == 5 && memcmp(v, "error", 5) == 0) {
        if (!s->saw_error) fail_note(V_ERROR, s, "event: error");
        s->saw_error = true;
    }
}

static void sse_feed(stream_t *s, const char *p, size_t n, int64_t t)
{
    if (s->status != 200) { /* keep the start of an error body for the report */
        size_t keep = s->data_len < 512 ? 512 - s->data_len : 0;
        if (keep > n) keep = n;
        if (keep) {
            s->data_cap = s->data_len + keep + 1;
            s->data = xrealloc(s->data, s->data_cap);
            memcpy(s->data + s->data_len, p, keep);
            s->data_len += keep;
            s->data[s->data_len] = '\0';
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (s->last_cr) {
            s->last_cr = false;
            if (c == '\n') continue;
        }
        if (c == '\r' || c == '\n') {
            s->last_cr = c == '\r';
            sse_line(s, t);
            s->line_len = 0;
            continue;
        }
        /* Fast path: copy up to the next line end in one go. */
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        size_t k = j - i;
        if (s->line_len + k > MAX_EVENT) {
            s->too_big = true;
            i = j - 1;
            continue;
        }
        if (s->line_len + k > s->line_cap) {
            s->line_cap = (s->line_len + k) * 2;
            s->line = xrealloc(s->line, s->line_cap);
        }
        memcpy(s->line + s->line_len, p + i, k);
        s->line_len += k;
        i = j - 1;
    }
}

/* Feeds body bytes through the HTTP framing. Returns true when the body is complete. */
static bool body_feed(stream_t *s, const char *p, size_t n, int64_t t)
{
    if (s->mode == B_CLOSE) {
        sse_feed(s, p, n, t);
        return false;
    }
    if (s->mode == B_LENGTH) {
        size_t k = n < s->left ? n : (size_t)s->left;
        sse_feed(s, p, k, t);
        s->left -= k;
        return s->left == 0;
    }
    size_t i = 0;
    while (i < n) {
        char c = p[i];
        switch (s->cs) {
        case CS_SIZE:
            i++;
            if (c >= '0' && c <= '9') s->chunk_size = s->chunk_size * 16 + (uint64_t)(c - '0'), s->size_digits = true;
            else if (c >= 'a' && c <= 'f') s->chunk_size = s->chunk_size * 16 + (uint64_t)(c - 'a' + 10), s->size_digits = true;
            else if (c >= 'A' && c <= 'F') s->chunk_size = s->chunk_size * 16 + (uint64_t)(c - 'A' + 10), s->size_digits = true;
            else if (c == ';' || c == ' ' || c == '\t') s->cs = CS_EXT;
            else if (c == '\r') s->cs = CS_EXT;
            else if (c == '\n') goto size_done;
            else {
                s->status = -1;
                return true;
            }
            break;
        case CS_EXT:
            i++;
            if (c == '\n') goto size_done;
            break;
        size_done:
            if (!s->size_digits) {
                s->status = -1;
                return true;
            }
            s->left = s->chunk_size;
            s->chunk_size = 0;
            s->size_digits = false;
            s->cs = s->left ? CS_DATA : CS_TRAILER;
            s->trailer_line = 0;
            break;
        case CS_DATA: {
            size_t k = n - i < s->left ? n - i : (size_t)s->left;
            sse_feed(s, p + i, k, t);
            i += k;
            s->left -= k;
            if (!s->left) s->cs = CS_DATA_END;
            break;
        }
        case CS_DATA_END:
            i++;
            if (c == '\n') s->cs = CS_SIZE;
            break;
        case CS_TRAILER:
            i++;
            if (c == '\n') {
                if (s->trailer_line == 0) {
                    s->cs = CS_COMPLETE;
                    return true;
                }
                s->trailer_line = 0;
            } else if (c != '\r') {
                s->trailer_line++;
            }
            break;
        case CS_COMPLETE: return true;
        }
    }
    return false;
}

/* Parses the response head once complete; leaves any body bytes after it. Returns the offset of
 * the body in s->head, 0 if the head is not complete yet, -1 if it is malformed. */
static long head_parse(stream_t *s)
{
    char *end = memmem(s->head, s->head_len, "\r\n\r\n", 4);
    if (!end) return s->head_len > MAX_HEAD ? -1 : 0;
    *end = '\0';
    int status = 0;
    if (sscanf(s->head, "HTTP/1.%*d %d", &status) != 1) return -1;
    s->status = status;
    s->mode = B_CLOSE;
    for (char *line = strchr(s->head, '\n'); line; line = strchr(line, '\n')) {
        line++;
        if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strstr(line, "chunked")) {
            s->mode = B_CHUNKED;
        } else if (strncasecmp(line, "Content-Length:", 15) == 0 && s->mode != B_CHUNKED) {
            s->mode = B_LENGTH;
            s->left = strtoull(line + 15, NULL, 10);
        }
    }
    return (end - s->head) + 4;
}

static void on_bytes(stream_t *s, const char *p, size_t n, int64_t t)
{
    if (s->phase == P_HEAD) {
        s->head = xrealloc(s->head, s->head_len + n + 1);
        memcpy(s->head + s->head_len, p, n);
        s->head_len += n;
        for (;;) {
            long off = head_parse(s);
            if (off == 0) return;
            if (off < 0) {
                fail_note(V_BADHTTP, s, "unparseable response head");
                finish(s, V_BADHTTP);
                return;
            }
            if (s->status >= 100 && s->status < 200) { /* 100 Continue: the real head follows */
                memmove(s->head, s->head + off, s->head_len - (size_t)off);
                s->head_len -= (size_t)off;
                continue;
            }
            s->phase = P_BODY;
            char *rest = s->head + off;
            size_t rn = s->head_len - (size_t)off;
            if (s->mode == B_LENGTH && s->left == 0) {
                judge(s, true);
                return;
            }
            if (rn && body_feed(s, rest, rn, t)) {
                if (s->status == -1) {
                    fail_note(V_BADHTTP, s, "bad chunked framing");
                    finish(s, V_BADHTTP);
                } else {
                    judge(s, true);
                }
            }
            return;
        }
    }
    if (s->phase == P_BODY && body_feed(s, p, n, t)) {
        if (s->status == -1) {
            fail_note(V_BADHTTP, s, "bad chunked framing");
            finish(s, V_BADHTTP);
        } else {
            judge(s, true);
        }
    }
}

static void on_readable(stream_t *s)
{
    static char buf[65536];
    for (;;) {
        ssize_t r = recv(s->fd, buf, sizeof buf, 0);
        int64_t t = now_us();
        if (r > 0) {
            on_bytes(s, buf, (size_t)r, t);
            if (s->phase == P_DONE) return;
            if ((size_t)r < sizeof buf) return;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r == 0) {
            if (s->phase == P_BODY) {
                if (s->has_data || s->line_len) { /* an unterminated last event counts */
                    sse_line(s, t);
                    s->line_len = 0;
                    dispatch(s, t);
                }
                judge(s, s->mode == B_CLOSE);
            } else {
                fail_note(V_TRUNCATED, s, "connection closed before a response head");
                finish(s, V_TRUNCATED);
            }
        } else {
            fail_note(V_RESET, s, "recv: %s (after %d events)", strerror(errno), s->events);
            finish(s, V_RESET);
        }
        return;
    }
}

static void on_writable(stream_t *s)
{
    if (s->phase == P_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            fail_note(V_CONNECT, s, "connect: %s", strerror(err));
            finish(s, V_CONNECT);
            return;
        }
        s->phase = P_SENDING;
    }
    while (s->woff < request_len) {
        ssize_t w = send(s->fd, request + s->woff, request_len - s->woff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            fail_note(V_CONNECT, s, "send: %s", strerror(errno));
            finish(s, V_CONNECT);
            return;
        }
        s->woff += (size_t)w;
    }
    s->phase = P_HEAD;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};
    epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static void start_stream(stream_t *s)
{
    n_started++;
    n_active++;
    s->t_start = now_us();
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        fail_note(V_CONNECT, s, "socket: %s", strerror(errno));
        finish(s, V_CONNECT);
        return;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->phase = P_CONNECTING;
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        fail_note(V_CONNECT, s, "connect: %s", strerror(errno));
        finish(s, V_CONNECT);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
        fail_note(V_CONNECT, s, "epoll_ctl: %s", strerror(errno));
        finish(s, V_CONNECT);
    }
}

/* ---- /proc sampling ---- */

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime + stime of pid in seconds, -1 if unreadable. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stream_load --url http://127.0.0.1:PORT/v1/chat/completions -n STREAMS [--events E]\n"
            "                   [--ramp-ms 1000] [--batch 50] [--timeout-s 120] [--pid PID] [--model default]\n"
            "                   [--max-tokens K] [--label TEXT] [--dump FILE]\n"
            "--dump writes one line per content event: stream seq receive_us latency_us\n");
}

static int parse_url(const char *u)
{
    if (strncmp(u, "http://", 7) != 0) return -1;
    u += 7;
    const char *colon = strchr(u, ':'), *slash = strchr(u, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - u) >= sizeof opt.host) return -1;
    memcpy(opt.host, u, (size_t)(colon - u));
    opt.host[colon - u] = '\0';
    opt.port = atoi(colon + 1);
    snprintf(opt.path, sizeof opt.path, "%s", slash ? slash : "/");
    return opt.port > 0 && opt.port < 65536 ? 0 : -1;
}

int main(int argc, char **argv)
{
    bool have_url = false;
    /* Every option takes a value: arguments come in pairs. */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool help = strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
        if (help || !v) {
            usage(help ? stdout : stderr);
            return help ? 0 : 2;
        }
        if (strcmp(a, "--url") == 0) {
            if (parse_url(v) != 0) {
                fprintf(stderr, "stream_load: --url must be http://HOST:PORT/PATH\n");
                return 2;
            }
            have_url = true;
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "--streams") == 0) opt.streams = atoi(v);
        else if (strcmp(a, "--events") == 0) opt.events = atoi(v);
        else if (strcmp(a, "--ramp-ms") == 0) opt.ramp_ms = atoi(v);
        else if (strcmp(a, "--batch") == 0) opt.batch = atoi(v);
        else if (strcmp(a, "--timeout-s") == 0) opt.timeout_s = atoi(v);
        else if (strcmp(a, "--pid") == 0) opt.pid = atoi(v);
        else if (strcmp(a, "--model") == 0) opt.model = v;
        else if (strcmp(a, "--max-tokens") == 0) opt.max_tokens = atoi(v);
        else if (strcmp(a, "--label") == 0) opt.label = v;
        else if (strcmp(a, "--dump") == 0) opt.dump = v;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!have_url || opt.streams < 1 || opt.batch < 1 || opt.ramp_ms < 0 || opt.timeout_s < 1) {
        usage(stderr);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)opt.streams + 16)
            fprintf(stderr, "stream_load: warning: RLIMIT_NOFILE %llu is below %d streams; raise ulimit -n\n",
                    (unsigned long long)rl.rlim_cur, opt.streams);
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "stream_load: the host must be an IPv4 address\n");
        return 2;
    }
    char body[512], mt[32] = "";
    if (opt.max_tokens > 0) snprintf(mt, sizeof mt, ",\"max_tokens\":%d", opt.max_tokens);
    int bl = snprintf(body, sizeof body,
                      "{\"model\":\"%s\",\"stream\":true%s,\"messages\":[{\"role\":\"user\",\"content\":"
                      "\"Count slowly, please.\"}]}",
                      opt.model, mt);
    request = xrealloc(NULL, 1024);
    request_len = (size_t)snprintf(request, 1024,
                                   "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                                   "Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s",
                                   opt.path, opt.host, opt.port, bl, body);

    if (opt.dump && !(dump_f = fopen(opt.dump, "w"))) {
        fprintf(stderr, "stream_load: cannot write %s\n", opt.dump);
        return 2;
    }
    streams = calloc((size_t)opt.streams, sizeof *streams);
    if (!streams) abort();
    for (int i = 0; i < opt.streams; i++) streams[i] = (stream_t){.fd = -1, .idx = i, .phase = P_WAIT};
    epfd = epoll_create1(EPOLL_CLOEXEC);

    long rss_idle = opt.pid ? proc_rss_kb(opt.pid) : -1, rss_plateau = -1, rss_peak = rss_idle;
    double cpu0 = opt.pid ? proc_cpu_s(opt.pid) : -1, cpu_plat0 = -1, cpu_plat1 = -1;
    int64_t plat_t0 = 0, plat_t1 = 0;
    int plateau_samples = 0;

    /* Stream i is due at t0 + i * ramp / n: an even ramp, not bursts. */
    int64_t t0 = now_us(), next_sample = t0 + SAMPLE_MS * 1000;
#define DUE(i) (t0 + (opt.streams > 1 ? (int64_t)opt.ramp_ms * 1000 * (i) / (opt.streams - 1) : 0))
    int64_t deadline = t0 + (int64_t)opt.timeout_s * 1000000;
    int64_t t_all_started = 0;
    struct epoll_event evs[1024];

    while (n_finished < opt.streams && !interrupted) {
        int64_t now = now_us();
        if (now >= deadline) break;
        for (int k = 0; k < opt.batch && n_started < opt.streams && now >= DUE(n_started); k++) {
            start_stream(&streams[n_started]);
            if (n_started == opt.streams) t_all_started = now_us();
        }
        if (now >= next_sample) {
            next_sample += SAMPLE_MS * 1000;
            if (opt.pid) {
                long rss = proc_rss_kb(opt.pid);
                if (rss > rss_peak) rss_peak = rss;
                /* Plateau: everything launched, no stream ended normally yet, and every stream
                 * still open is receiving (streams that failed early do not hold it off). */
                bool plateau = n_started == opt.streams && counts[V_OK] == 0 && n_receiving == n_active &&
                               n_receiving > 0;
                if (plateau) {
                    if (rss > rss_plateau) rss_plateau = rss;
                    double c = proc_cpu_s(opt.pid);
                    if (!plateau_samples++) {
                        cpu_plat0 = c;
                        plat_t0 = now;
                    }
                    cpu_plat1 = c;
                    plat_t1 = now;
                }
            }
        }
        int64_t wake = next_sample;
        if (n_started < opt.streams && DUE(n_started) < wake) wake = DUE(n_started);
        if (deadline < wake) wake = deadline;
        int timeout = wake <= now ? 0 : (int)((wake - now + 999) / 1000);
        int n = epoll_wait(epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        for (int i = 0; i < n; i++) {
            stream_t *s = evs[i].data.ptr;
            if (s->phase == P_DONE) continue;
            if (evs[i].events & (EPOLLOUT | EPOLLERR) && (s->phase == P_CONNECTING || s->phase == P_SENDING))
                on_writable(s);
            else if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(s);
        }
    }
    int64_t t_end = now_us();
    if (dump_f) fclose(dump_f);
    for (int i = 0; i < opt.streams; i++) {
        stream_t *s = &streams[i];
        if (s->phase == P_DONE) continue;
        if (s->phase == P_WAIT) {
            n_started++;
            n_active++;
        }
        fail_note(V_TIMEOUT, s, "still open at the end (phase %d, %d events)", s->phase, s->events);
        finish(s, V_TIMEOUT);
    }
    double cpu1 = opt.pid ? proc_cpu_s(opt.pid) : -1;
    long rss_end = opt.pid ? proc_rss_kb(opt.pid) : -1;

    if (lat.n) qsort(lat.v, lat.n, sizeof *lat.v, cmp_i64);
    if (ttft.n) qsort(ttft.v, ttft.n, sizeof *ttft.v, cmp_i64);
    uint64_t dropped = 0;
    for (int r = 1; r < V_COUNT; r++) dropped += counts[r];
    double wall = (double)(t_end - t0) / 1e6;
    double plat_cpu_pct = plateau_samples > 1 && plat_t1 > plat_t0
                              ? 100.0 * (cpu_plat1 - cpu_plat0) / ((double)(plat_t1 - plat_t0) / 1e6)
                              : -1;
    double ramp_s = t_all_started ? (double)(t_all_started - t0) / 1e6 : -1;

    fprintf(stderr, "stream_load %s: %d streams to %s:%d%s, %.2f s (ramp %.2f s)\n", opt.label, opt.streams,
            opt.host, opt.port, opt.path, wall, ramp_s);
    fprintf(stderr, "  completed %" PRIu64 ", dropped %" PRIu64, counts[V_OK], dropped);
    for (int r = 1; r < V_COUNT; r++)
        if (counts[r]) fprintf(stderr, " [%s %" PRIu64 "]", result_name[r], counts[r]);
    fprintf(stderr, "\n  events %" PRIu64 " (%.0f/s), max receiving at once %d\n", total_events,
            wall > 0 ? (double)total_events / wall : 0, max_receiving);
    fprintf(stderr,
            "  per-event latency us: p50 %" PRId64 " p90 %" PRId64 " p99 %" PRId64 " p99.9 %" PRId64 " max %" PRId64
            "\n",
            pct(&lat, 50), pct(&lat, 90), pct(&lat, 99), pct(&lat, 99.9), pct(&lat, 100));
    fprintf(stderr, "  time to first event us: p50 %" PRId64 " p99 %" PRId64 " max %" PRId64 "\n", pct(&ttft, 50),
            pct(&ttft, 99), pct(&ttft, 100));
    if (opt.pid)
        fprintf(stderr,
                "  pid %d: RSS idle %ld kB, plateau %ld kB (%d samples), peak %ld kB, end %ld kB; CPU %.2f s, "
                "%.0f%% of a core at plateau\n",
                opt.pid, rss_idle, rss_plateau, plateau_samples, rss_peak, rss_end, cpu1 - cpu0, plat_cpu_pct);
    for (int r = 1; r < V_COUNT; r++)
        if (first_fail[r][0]) fprintf(stderr, "  first %s: %s\n", result_name[r], first_fail[r]);

    printf("RESULT label=%s n=%d completed=%" PRIu64 " dropped=%" PRIu64, opt.label[0] ? opt.label : "-", opt.streams,
           counts[V_OK], dropped);
    for (int r = 1; r < V_COUNT; r++) printf(" drop_%s=%" PRIu64, result_name[r], counts[r]);
    printf(" events=%" PRIu64 " max_receiving=%d wall_s=%.3f ramp_s=%.3f", total_events, max_receiving, wall, ramp_s);
    printf(" lat_p50_us=%" PRId64 " lat_p90_us=%" PRId64 " lat_p99_us=%" PRId64 " lat_p999_us=%" PRId64
           " lat_max_us=%" PRId64,
           pct(&lat, 50), pct(&lat, 90), pct(&lat, 99), pct(&lat, 99.9), pct(&lat, 100));
    printf(" ttft_p50_us=%" PRId64 " ttft_p99_us=%" PRId64, pct(&ttft, 50), pct(&ttft, 99));
    printf(" rss_idle_kb=%ld rss_plateau_kb=%ld rss_peak_kb=%ld rss_end_kb=%ld plateau_samples=%d cpu_s=%.3f "
           "plateau_cpu_pct=%.1f\n",
           rss_idle, rss_plateau, rss_peak, rss_end, plateau_samples, opt.pid ? cpu1 - cpu0 : -1.0, plat_cpu_pct);
    fflush(stdout);
    return interrupted ? 130 : dropped ? 3 : 0;
}

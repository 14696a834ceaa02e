/* Open-loop load at a fixed rate, for the "added latency at half of saturation" figures: one thread,
 * one epoll loop, N keep-alive connections, one POST at a time on each.
 *
 * Why not wrk: Debian's wrk has no fixed-rate mode, and pacing it from its Lua delay() hook (as
 * bench/wrk/chat.lua does) is bounded by its 1 ms timers: the requests of each millisecond leave
 * together, in bursts of R/1000. At half of a peer's saturation such a burst is half a
 * millisecond of that peer's CPU whatever the peer, so the last request of every burst waits that
 * long. Here each arrival has its own time, kept by a timerfd to the microsecond:
 *   --arrivals poisson   exponential gaps with mean 1/R (independent clients; the default)
 *   --arrivals uniform   exactly 1/R apart
 * An arrival takes an idle connection; when none is idle it waits for the first to become free
 * (counted as "queued"). Latency is measured from the arrival's scheduled time, so time spent
 * waiting for a connection, or behind a late timer, counts (no coordinated omission); "late"
 * counts requests that left more than 200 µs after their time.
 *
 * Usage: paced_load --port P --rate R [--host 127.0.0.1] [--path /v1/chat/completions]
 *          [--conns 16] [--duration 10] [--warmup 1] [--arrivals poisson|uniform]
 *          --body-file F [--header "Name: value"]... [--seed N]
 * Output: a human summary on stderr and one `PACED key=value ...` line on stdout. Requests in the
 * first --warmup seconds are sent but not counted. A non-2xx answer, a connection that fails or
 * closes mid-answer, or an answer still missing 10 s after the end counts as an error. Exit
 * status 0, or 3 when any request failed, 2 for usage errors. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
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
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_HEADERS 8
#define LATE_NS 200000 /* a request that leaves later than this after its time is "late" */

static struct {
    char host[64];
    int port;
    char path[256];
    double rate;
    int conns;
    double duration, warmup;
    bool uniform;
    const char *body_file;
    const char *headers[MAX_HEADERS];
    int n_headers;
    unsigned seed;
} opt = {"127.0.0.1", 0, "/v1/chat/completions", 0, 16, 10, 1, false, NULL, {0}, 0, 1};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct conn {
    int fd;
    bool busy;
    int64_t due_ns;   /* the scheduled time of the request in flight */
    size_t woff;      /* bytes of the request written */
    char *in;         /* the answer so far */
    size_t in_len, in_cap;
    struct conn *next_idle;
} conn_t;

static conn_t *conns;
static conn_t *idle;
static int epfd;
static struct sockaddr_in addr;
static char *request;
static size_t request_len;

static int64_t *queue; /* scheduled times of arrivals waiting for a connection (a ring) */
static size_t q_head, q_len, q_cap;

static int64_t *lat_us; /* counted answers: µs from scheduled time to the answer's last byte */
static size_t n_lat, lat_cap;
static uint64_t n_late, n_queued, n_errors, n_status, n_in_flight;
static int64_t t_count_from, t_end;

static void die(const char *msg)
{
    fprintf(stderr, "paced_load: %s: %s\n", msg, strerror(errno));
    exit(2);
}

static void q_push(int64_t t)
{
    if (q_len == q_cap) {
        size_t cap = q_cap ? q_cap * 2 : 1024;
        int64_t *q = xrealloc(NULL, cap * sizeof *q);
        for (size_t i = 0; i < q_len; i++) q[i] = queue[(q_head + i) % q_cap];
        free(queue);
        queue = q, q_head = 0, q_cap = cap;
    }
    queue[(q_head + q_len++) % q_cap] = t;
}

static int64_t q_pop(void)
{
    int64_t t = queue[q_head];
    q_head = (q_head + 1) % q_cap;
    q_len--;
    return t;
}

static void conn_open(conn_t *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) die("connect");
    /* The event names the connection and this socket of it: an event for a socket since closed
     * (one batch can hold both) is then told apart from the connection's new socket. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.u64 = (uint64_t)(c - conns + 1) << 32 | (uint32_t)c->fd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    c->in_len = 0;
}

static bool counted(int64_t due)
{
    return due >= t_count_from && due < t_end;
}

static void make_idle(conn_t *c)
{
    c->busy = false;
    c->next_idle = idle;
    idle = c;
}

static void try_write(conn_t *c)
{
    while (c->woff < request_len) {
        ssize_t w = send(c->fd, request + c->woff, request_len - c->woff, MSG_NOSIGNAL);
        if (w < 0) return; /* EAGAIN: EPOLLOUT comes back; an error shows up as EPOLLERR/HUP */
        c->woff += (size_t)w;
    }
}

/* Sends the request due at due on c (opened again first if it was closed while idle); queued:
 * it waited for a connection (counted as such, not as late as well). */
static void start(conn_t *c, int64_t due, bool queued)
{
    if (c->fd < 0) conn_open(c);
    c->busy = true;
    c->due_ns = due;
    c->woff = 0;
    c->in_len = 0;
    n_in_flight++;
    if (!queued && now_ns() - due > LATE_NS && counted(due)) n_late++;
    try_write(c);
}

/* An arrival at its scheduled time: on an idle connection, or queued for the next free one. */
static void arrive(int64_t due)
{
    if (!idle) {
        if (counted(due)) n_queued++;
        q_push(due);
        return;
    }
    conn_t *c = idle;
    idle = c->next_idle;
    start(c, due, false);
}

static void answered(conn_t *c, int status, bool keep_alive)
{
    int64_t t = now_ns();
    n_in_flight--;
    if (counted(c->due_ns)) {
        if (status < 200 || status > 299) {
            n_status++;
        } else {
            if (n_lat == lat_cap) {
                lat_cap = lat_cap ? lat_cap * 2 : 65536;
                lat_us = xrealloc(lat_us, lat_cap * sizeof *lat_us);
            }
            lat_us[n_lat++] = (t - c->due_ns) / 1000;
        }
    }
    if (!keep_alive) {
        close(c->fd);
        c->fd = -1; /* opened again when it is next used */
    }
    if (q_len) start(c, q_pop(), true);
    else make_idle(c);
}

/* The connection failed or closed: a request in flight on it is an error. It is opened again
 * when next used (an idle one stays in the idle list, where it already is), so a peer that is
 * down costs one attempt per request, not a loop of reconnects. */
static void failed(conn_t *c)
{
    close(c->fd);
    c->fd = -1;
    if (!c->busy) return;
    n_in_flight--;
    if (counted(c->due_ns)) n_errors++;
    if (q_len) start(c, q_pop(), true);
    else make_idle(c);
}

/* Whether the answer in c->in is complete: 1 yes (status, keep-alive set), 0 not yet, -1 bad. */
static int answer_complete(conn_t *c, int *status, bool *keep_alive)
{
    char *in = c->in;
    char *end = memmem(in, c->in_len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head_len = (size_t)(end - in) + 4;
    if (c->in_len < 12 || strncmp(in, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(in + 9);
    *keep_alive = in[7] == '1';
    long long length = -1;
    bool chunked = false;
    for (char *l = strstr(in, "\r\n") + 2; l < end; l = strstr(l, "\r\n") + 2) {
        if (!strncasecmp(l, "content-length:", 15)) length = atoll(l + 15);
        else if (!strncasecmp(l, "transfer-encoding:", 18)) {
            const char *ch = strcasestr(l, "chunked");
            chunked = ch && ch < strstr(l, "\r\n");
        }
        else if (!strncasecmp(l, "connection:", 11)) {
            const char *v = l + 11;
            while (*v == ' ') v++;
            if (!strncasecmp(v, "close", 5)) *keep_alive = false;
            if (!strncasecmp(v, "keep-alive", 10)) *keep_alive = true;
        }
    }
    size_t body = c->in_len - head_len;
    if (chunked) { /* walk the chunks; the answers are small, so rescanning is cheap */
        size_t p = head_len;
        for (;;) {
            char *crlf = memmem(in + p, c->in_len - p, "\r\n", 2);
            if (!crlf) return 0;
            unsigned long long n = strtoull(in + p, NULL, 16);
            p = (size_t)(crlf - in) + 2;
            if (n == 0) return memmem(in + p - 2, c->in_len - (p - 2), "\r\n\r\n", 4) ? 1 : 0;
            if (c->in_len < p + n + 2) return 0;
            p += n + 2;
        }
    }
    if (length < 0) return -1; /* neither: this tool does not read to the close */
    return body >= (size_t)length ? 1 : 0;
}

static void on_readable(conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 8192;
            c->in = xrealloc(c->in, c->in_cap + 1);
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r < 0 && errno == EAGAIN) return;
        if (r <= 0) {
            failed(c);
            return;
        }
        if (!c->busy) { /* bytes nobody asked for */
            failed(c);
            return;
        }
        c->in_len += (size_t)r;
        c->in[c->in_len] = '\0';
        int status = 0;
        bool keep_alive = true;
        int done = answer_complete(c, &status, &keep_alive);
        if (done < 0) {
            failed(c);
            return;
        }
        if (done) {
            answered(c, status, keep_alive);
            if (!keep_alive) return; /* a new socket: its events come separately */
        }
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(double p)
{
    if (!n_lat) return -1;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n_lat);
    if (rank < 1) rank = 1;
    return lat_us[(rank > n_lat ? n_lat : rank) - 1];
}

static void usage(void)
{
    fprintf(stderr, "usage: paced_load --port P --rate R --body-file F [--host H] [--path P] [--conns N]\n"
                    "         [--duration S] [--warmup S] [--arrivals poisson|uniform] [--header 'K: V']... [--seed N]\n");
    exit(2);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) b = xrealloc(b, cap = cap * 2 + 4096);
        size_t r = fread(b + n, 1, cap - n, f);
        if (!r) break;
        n += r;
    }
    fclose(f);
    while (n && (b[n - 1] == '\n' || b[n - 1] == '\r')) n--; /* a file's final newline is not the body's */
    *len = n;
    return b;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--host")) snprintf(opt.host, sizeof opt.host, "%s", v);
        else if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--path")) snprintf(opt.path, sizeof opt.path, "%s", v);
        else if (!strcmp(a, "--rate")) opt.rate = atof(v);
        else if (!strcmp(a, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(a, "--body-file")) opt.body_file = v;
        else if (!strcmp(a, "--seed")) opt.seed = (unsigned)atoi(v);
        else if (!strcmp(a, "--arrivals") && (!strcmp(v, "poisson") || !strcmp(v, "uniform"))) opt.uniform = v[0] == 'u';
        else if (!strcmp(a, "--header") && opt.n_headers < MAX_HEADERS) opt.headers[opt.n_headers++] = v;
        else usage();
        i++;
    }
    if (opt.port <= 0 || opt.rate <= 0 || opt.conns <= 0 || opt.duration <= 0 || opt.warmup < 0 || !opt.body_file) usage();
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) usage();
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    signal(SIGPIPE, SIG_IGN);

    size_t body_len;
    char *body = read_file(opt.body_file, &body_len);
    size_t hcap = 512 + strlen(opt.path) + strlen(opt.host);
    for (int i = 0; i < opt.n_headers; i++) hcap += strlen(opt.headers[i]) + 2;
    request = xrealloc(NULL, hcap + body_len);
    int n = snprintf(request, hcap,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "Authorization: Bearer bench\r\nContent-Length: %zu\r\n",
                     opt.path, opt.host, opt.port, body_len);
    for (int i = 0; i < opt.n_headers; i++) n += snprintf(request + n, hcap - (size_t)n, "%s\r\n", opt.headers[i]);
    n += snprintf(request + n, hcap - (size_t)n, "\r\n");
    memcpy(request + n, body, body_len);
    request_len = (size_t)n + body_len;
    free(body);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl");
    conns = calloc((size_t)opt.conns, sizeof *conns);
    if (!conns) die("calloc");
    for (int i = opt.conns - 1; i >= 0; i--) {
        conn_open(&conns[i]);
        make_idle(&conns[i]);
    }

    srand48(opt.seed);
    double gap_ns = 1e9 / opt.rate;
    int64_t t0 = now_ns() + 50000000; /* connections get 50 ms to open */
    t_count_from = t0 + (int64_t)(opt.warmup * 1e9);
    t_end = t_count_from + (int64_t)(opt.duration * 1e9);
    double next = (double)t0;
    int64_t hard_stop = t_end + 10000000000LL;
    struct epoll_event evs[256];
    bool arming = true;
    while (now_ns() < hard_stop) {
        int64_t now = now_ns();
        while (next <= (double)now && next < (double)t_end) {
            arrive((int64_t)next);
            next += opt.uniform ? gap_ns : -log(1.0 - drand48()) * gap_ns;
        }
        if (next >= (double)t_end) {
            if (arming) { /* no more arrivals: wait for the answers, up to the hard stop */
                struct itimerspec off = {{0, 0}, {0, 0}};
                timerfd_settime(tfd, 0, &off, NULL);
                arming = false;
            }
            if (!n_in_flight && !q_len) break;
        } else {
            int64_t due = (int64_t)next;
            struct itimerspec its = {{0, 0}, {due / 1000000000, due % 1000000000}};
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int ne = epoll_wait(epfd, evs, 256, arming ? -1 : 100);
        for (int i = 0; i < ne; i++) {
            uint64_t tag = evs[i].data.u64;
            if (!tag) { /* the timer */
                uint64_t x;
                ssize_t r = read(tfd, &x, sizeof x);
                (void)r;
                continue;
            }
            conn_t *c = &conns[(tag >> 32) - 1];
            if (c->fd != (int)(uint32_t)tag) continue; /* a socket since closed */
            if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
                failed(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT && c->busy) try_write(c);
            if (evs[i].events & EPOLLIN) on_readable(c);
        }
    }
    uint64_t unanswered = 0; /* counted requests still waiting or in flight at the end */
    for (int i = 0; i < opt.conns; i++) unanswered += conns[i].busy && counted(conns[i].due_ns);
    for (size_t i = 0; i < q_len; i++) unanswered += counted(queue[(q_head + i) % q_cap]);
    qsort(lat_us, n_lat, sizeof *lat_us, cmp_i64);
    uint64_t failures = n_errors + n_status + unanswered;
    double secs = opt.duration;
    fprintf(stderr,
            "paced_load: %s arrivals at %.0f/s over %d connections for %.1f s (+%.1f s warm-up): %zu answered "
            "(%.0f/s), p50 %" PRId64 " µs, p99 %" PRId64 " µs, max %" PRId64 " µs; %" PRIu64 " waited for a "
            "connection, %" PRIu64 " left late, %" PRIu64 " failed\n",
            opt.uniform ? "uniform" : "poisson", opt.rate, opt.conns, opt.duration, opt.warmup, n_lat,
            (double)n_lat / secs, pct(50), pct(99), n_lat ? lat_us[n_lat - 1] : -1, n_queued, n_late, failures);
    printf("PACED requests=%zu rate=%.0f p50_us=%" PRId64 " p90_us=%" PRId64 " p99_us=%" PRId64 " p999_us=%" PRId64
           " max_us=%" PRId64 " queued=%" PRIu64 " late=%" PRIu64 " err_status=%" PRIu64 " err_conn=%" PRIu64
           " unanswered=%" PRIu64 "\n",
           n_lat, (double)n_lat / secs, pct(50), pct(90), pct(99), pct(99.9), n_lat ? lat_us[n_lat - 1] : -1, n_queued,
           n_late, n_status, n_errors, unanswered);
    return failures ? 3 : 0;
}

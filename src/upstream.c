/* libcurl multi loop on its own thread, driven by epoll through curl's socket interface so that
 * thousands of concurrent transfers cost O(active sockets) per wake-up, not O(all). The same loop
 * runs a driver (the HTTP server's event source), so a request is read, routed, sent upstream,
 * answered and written back on one thread, without a hand-off. See upstream.h.
 *
 * Threads: every curl call happens on the loop thread. Code running on the loop thread (the
 * driver's callbacks) queues its commands (submit, cancel, resume) on a local list that the loop
 * works through before it waits again; other threads use the locked queue and the eventfd that
 * wakes the loop. The first-token and idle timers are ours (curl has only connect and total); a
 * scan every MG_SCAN_MS enforces them, so they fire within their value + MG_SCAN_MS. */
#include "upstream.h"

#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MG_SCAN_MS 100
/* Easy handles kept for reuse (reset, not freed): creating and freeing one per attempt cost about a
 * tenth of the gateway's CPU per request. */
#define MG_EASY_POOL 256

typedef enum { CMD_SUBMIT, CMD_CANCEL, CMD_RESUME } cmd_kind_t;

typedef struct cmd {
    cmd_kind_t kind;
    mg_xfer_t *x; /* holds a reference until processed */
} cmd_t;

struct mg_xfer {
    atomic_int refs;
    mg_upstream_t *up;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t body_len;
    mg_xfer_callbacks_t cb;
    void *ud;
    int64_t connect_timeout_ms, first_token_timeout_ms, idle_timeout_ms, total_timeout_ms;
    int64_t delay_ms;
    /* Loop-thread state below. */
    int64_t start_ms, last_data_ms, start_at_ms;
    bool first_token, paused, head_reported, data_aborted, finished, active;
    bool waiting; /* in the active list but not yet handed to curl (delay_ms) */
    bool get, http2;
    long status;
    mg_buf_t head;
    mg_xfer_t *prev, *next; /* the active list */
    char errbuf[CURL_ERROR_SIZE]; /* libcurl's own words for a failure ("certificate has expired") */
};

typedef struct mg_fd_state {
    uint32_t events;  /* registered for these */
    bool registered;  /* in the epoll set */
    bool wanted;      /* curl watches it */
} mg_fd_state_t;

typedef struct cmd_queue {
    cmd_t *cmds;
    size_t n, cap;
} cmd_queue_t;

struct mg_upstream {
    pthread_t thread;
    bool thread_started;
    int epfd, evfd;
    mg_loop_driver_t drv;
    CURLM *multi;
    CURL *pool[MG_EASY_POOL]; /* reset easy handles (loop thread only) */
    mg_fd_state_t *fds;       /* by descriptor: curl's sockets in epfd (see on_socket) */
    size_t n_fds;
    size_t n_pool;
    int64_t curl_deadline_ms; /* -1 when curl wants no timeout */
    int64_t next_scan_ms;
    mg_xfer_t *active;
    atomic_size_t n_active;
    pthread_mutex_t lock; /* guards cmds, stopping and exiting */
    cmd_queue_t cmds;     /* from other threads */
    cmd_queue_t local;    /* from the loop thread itself (no lock) */
    atomic_bool stopping; /* no new transfers; the running ones are cancelled */
    atomic_bool kick;     /* run the driver again (mg_upstream_kick) */
    bool cancelled_all;   /* loop thread: stopping has been carried out */
    bool exiting;         /* the loop thread ends */
    bool joined;
};

/* The loop this thread runs, if any: commands from it need neither the lock nor a wake-up. */
static _Thread_local mg_upstream_t *tl_loop;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *mg_xfer_result_name(mg_xfer_result_t r)
{
    switch (r) {
    case MG_XFER_OK: return "ok";
    case MG_XFER_CONNECT_ERROR: return "connect_error";
    case MG_XFER_TIMEOUT_CONNECT: return "timeout_connect";
    case MG_XFER_TIMEOUT_FIRST_TOKEN: return "timeout_first_token";
    case MG_XFER_TIMEOUT_IDLE: return "timeout_idle";
    case MG_XFER_TIMEOUT_TOTAL: return "timeout_total";
    case MG_XFER_BROKEN: return "stream_broken";
    case MG_XFER_TOO_LARGE: return "too_large";
    case MG_XFER_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static void xfer_free(mg_xfer_t *x)
{
    if (x->easy) curl_easy_cleanup(x->easy); /* never handed back to the pool (see finish) */
    curl_slist_free_all(x->headers);
    free(x->body);
    mg_buf_free(&x->head);
    free(x);
}

void mg_xfer_release(mg_xfer_t *x)
{
    if (x && atomic_fetch_sub(&x->refs, 1) == 1) xfer_free(x);
}

static void wake(mg_upstream_t *up)
{
    uint64_t one = 1;
    ssize_t w = write(up->evfd, &one, sizeof one);
    (void)w; /* EAGAIN means the counter is already non-zero: the loop will wake anyway */
}

static void queue_push(cmd_queue_t *q, cmd_kind_t kind, mg_xfer_t *x)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 64;
        q->cmds = mg_xrealloc(q->cmds, q->cap * sizeof *q->cmds);
    }
    atomic_fetch_add(&x->refs, 1);
    q->cmds[q->n++] = (cmd_t){kind, x};
}

static bool push_cmd(mg_upstream_t *up, cmd_kind_t kind, mg_xfer_t *x)
{
    if (kind == CMD_SUBMIT && atomic_load(&up->stopping)) return false;
    if (tl_loop == up) { /* the loop works through these before it waits again */
        queue_push(&up->local, kind, x);
        return true;
    }
    pthread_mutex_lock(&up->lock);
    if (up->stopping && kind == CMD_SUBMIT) {
        pthread_mutex_unlock(&up->lock);
        return false;
    }
    queue_push(&up->cmds, kind, x);
    pthread_mutex_unlock(&up->lock);
    wake(up);
    return true;
}

/* ---- curl callbacks (loop thread) ---- */

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    mg_xfer_t *x = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) mg_buf_reset(&x->head); /* a new status line */
    if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 100 && status < 200) return len; /* 1xx: the real head follows */
        x->status = status;
        if (!x->head_reported) {
            x->head_reported = true;
            x->last_data_ms = mg_now_ms();
            if (x->cb.on_head) x->cb.on_head(x->ud, status, x->head.data ? x->head.data : "", x->head.len);
        }
        return len;
    }
    if (x->head.len + len > 64 * 1024) return 0; /* a header block that large is an attack */
    mg_buf_append(&x->head, p, len);
    return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    mg_xfer_t *x = ud;
    size_t len = size * n;
    x->last_data_ms = mg_now_ms();
    if (!x->cb.on_data) return len;
    size_t r = x->cb.on_data(x->ud, x, p, len);
    if (r == MG_XFER_DATA_PAUSE) {
        x->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (r == MG_XFER_DATA_ABORT) {
        x->data_aborted = true;
        return 0;
    }
    return len;
}

/* curl's sockets in the loop's epoll set. A socket curl stops watching (its transfer ended, the
 * connection goes back to the cache) stays registered, so the next transfer on it costs no
 * epoll_ctl; an event on such a socket removes it then (the idle connection was closed by its
 * peer, which curl finds out on reuse). curl closes its sockets through on_close_socket, which
 * forgets them. Loop thread only (and the thread that frees the loop). */
static void fd_state_grow(mg_upstream_t *up, int fd)
{
    if ((size_t)fd < up->n_fds) return;
    size_t n = MG_MAX((size_t)fd + 1, up->n_fds * 2);
    up->fds = mg_xrealloc(up->fds, n * sizeof *up->fds);
    memset(up->fds + up->n_fds, 0, (n - up->n_fds) * sizeof *up->fds);
    up->n_fds = n;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    mg_upstream_t *up = userp;
    (void)e;
    (void)socketp;
    if (s < 0) return 0;
    fd_state_grow(up, s);
    mg_fd_state_t *st = &up->fds[s];
    if (what == CURL_POLL_REMOVE) {
        st->wanted = false; /* still registered: see above */
        return 0;
    }
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    st->wanted = true;
    if (st->registered && st->events == events) return 0;
    struct epoll_event ev = {.events = events, .data.fd = s};
    int op = st->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(up->epfd, op, s, &ev) != 0) {
        /* Out of step with the kernel (a descriptor closed behind our back): try the other way. */
        op = (op == EPOLL_CTL_ADD) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(up->epfd, op, s, &ev) != 0) return 0;
    }
    st->registered = true;
    st->events = events;
    return 0;
}

/* An event on a socket: true if curl wants it; otherwise the socket leaves the epoll set. */
static bool fd_wanted(mg_upstream_t *up, int fd)
{
    if (fd < 0 || (size_t)fd >= up->n_fds || !up->fds[fd].registered) return false;
    if (up->fds[fd].wanted) return true;
    epoll_ctl(up->epfd, EPOLL_CTL_DEL, fd, NULL);
    up->fds[fd].registered = false;
    return false;
}

static int on_close_socket(void *clientp, curl_socket_t s)
{
    mg_upstream_t *up = clientp;
    if (s >= 0 && (size_t)s < up->n_fds) up->fds[s] = (mg_fd_state_t){0}; /* close removes it from epoll */
    return close(s);
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    mg_upstream_t *up = userp;
    up->curl_deadline_ms = timeout_ms < 0 ? -1 : mg_now_ms() + timeout_ms;
    return 0;
}

/* ---- transfer lifecycle (loop thread) ---- */

static void finish(mg_upstream_t *up, mg_xfer_t *x, mg_xfer_result_t r, const char *detail)
{
    if (x->finished) return;
    x->finished = true;
    if (x->active) {
        if (!x->waiting) curl_multi_remove_handle(up->multi, x->easy);
        x->active = false;
        if (x->prev) x->prev->next = x->next;
        else up->active = x->next;
        if (x->next) x->next->prev = x->prev;
        atomic_fetch_sub(&up->n_active, 1);
    }
    if (x->cb.on_done) x->cb.on_done(x->ud, r, detail ? detail : "");
    /* Nothing touches the easy handle after on_done: back to the pool, reset (its connection stays
     * in the multi handle's cache). */
    if (x->easy && !x->active && up->n_pool < MG_EASY_POOL && tl_loop == up) {
        curl_easy_reset(x->easy);
        up->pool[up->n_pool++] = x->easy;
        x->easy = NULL;
    }
    mg_xfer_release(x); /* the loop's reference */
}

/* Hands a transfer to curl; its timers start now. */
static void launch(mg_upstream_t *up, mg_xfer_t *x)
{
    x->waiting = false;
    x->start_ms = x->last_data_ms = mg_now_ms();
    if (curl_multi_add_handle(up->multi, x->easy) != CURLM_OK)
        finish(up, x, MG_XFER_CONNECT_ERROR, "curl_multi_add_handle failed");
}

static void start(mg_upstream_t *up, mg_xfer_t *x)
{
    if (x->finished) return; /* cancelled before it started */
    if (atomic_load(&up->stopping)) { /* queued just before the stop */
        finish(up, x, MG_XFER_CANCELLED, "gateway stopping");
        return;
    }
    x->active = true;
    x->prev = NULL;
    x->next = up->active;
    if (up->active) up->active->prev = x;
    up->active = x;
    atomic_fetch_add(&up->n_active, 1);
    if (x->delay_ms > 0) {
        /* A delayed start (a retry's backoff) waits in the active list; the timer scan starts it. */
        x->waiting = true;
        x->start_at_ms = mg_now_ms() + x->delay_ms;
        return;
    }
    launch(up, x);
}

static mg_xfer_result_t map_curl_error(mg_xfer_t *x, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK: return MG_XFER_OK;
    case CURLE_WRITE_ERROR:
        if (x->data_aborted) return MG_XFER_TOO_LARGE;
        return x->head_reported ? MG_XFER_BROKEN : MG_XFER_CONNECT_ERROR;
    case CURLE_OPERATION_TIMEDOUT: {
        double connect = 0;
        curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME, &connect);
        return connect <= 0 ? MG_XFER_TIMEOUT_CONNECT : MG_XFER_TIMEOUT_TOTAL;
    }
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return MG_XFER_CONNECT_ERROR;
    default:
        /* Reset, empty reply, short body…: before the head it never answered; after it the
         * answer broke off. */
        return x->head_reported ? MG_XFER_BROKEN : MG_XFER_CONNECT_ERROR;
    }
}

static void read_done(mg_upstream_t *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        mg_xfer_t *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = msg->data.result;
        mg_xfer_result_t r = map_curl_error(x, rc);
        char why[160];
        snprintf(why, sizeof why, "%.159s", rc == CURLE_OK ? "" : x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        if (r == MG_XFER_TIMEOUT_CONNECT)
            snprintf(why, sizeof why, "connect timeout: not connected in %lld ms", (long long)x->connect_timeout_ms);
        else if (r == MG_XFER_TIMEOUT_TOTAL)
            snprintf(why, sizeof why, "total timeout: not finished in %lld ms", (long long)x->total_timeout_ms);
        finish(up, x, r, why);
    }
}

static void scan_timers(mg_upstream_t *up, int64_t now)
{
    mg_xfer_t *x = up->active;
    while (x) {
        mg_xfer_t *next = x->next;
        if (x->waiting) {
            if (now >= x->start_at_ms) launch(up, x);
            x = next;
            continue;
        }
        char why[96];
        if (!x->first_token && x->first_token_timeout_ms > 0 && now - x->start_ms >= x->first_token_timeout_ms) {
            snprintf(why, sizeof why, "first-token timeout: nothing in %lld ms", (long long)x->first_token_timeout_ms);
            finish(up, x, MG_XFER_TIMEOUT_FIRST_TOKEN, why);
        } else if (x->head_reported && x->idle_timeout_ms > 0 && !x->paused &&
                   /* Before a stream's first token its own timer governs: a server that sends
                    * its headers at once and then loads the model or runs a long prefill (vLLM,
                    * llama.cpp) is within firstTokenMs, even when that is longer than idleMs. */
                   (x->first_token || x->first_token_timeout_ms <= 0) &&
                   now - x->last_data_ms >= x->idle_timeout_ms) {
            snprintf(why, sizeof why, "idle timeout: no data for %lld ms", (long long)x->idle_timeout_ms);
            finish(up, x, MG_XFER_TIMEOUT_IDLE, why);
        }
        x = next;
    }
}

static void run_cmds(mg_upstream_t *up, cmd_t *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mg_xfer_t *x = cmds[i].x;
        switch (cmds[i].kind) {
        case CMD_SUBMIT: start(up, x); break;
        case CMD_CANCEL:
            if (!x->finished) finish(up, x, MG_XFER_CANCELLED, "cancelled");
            break;
        case CMD_RESUME:
            if (x->active && !x->waiting && x->paused) {
                x->paused = false;
                x->last_data_ms = mg_now_ms();
                /* Unpausing hands curl's held-back chunk to on_write at once. When that chunk
                 * ends the transfer (on_data aborted it: an event over the limit, a stream the
                 * decoder stopped), curl reports the error here and neither re-arms nor ends
                 * the transfer: end it now, or it would sit until a timer fired. */
                CURLcode rc = curl_easy_pause(x->easy, CURLPAUSE_CONT);
                if (rc != CURLE_OK && !x->finished) {
                    char why[160];
                    snprintf(why, sizeof why, "%.159s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
                    finish(up, x, map_curl_error(x, rc), why);
                }
            }
            break;
        }
        mg_xfer_release(x);
    }
}

/* Commands from other threads. */
static void process_cmds(mg_upstream_t *up)
{
    pthread_mutex_lock(&up->lock);
    cmd_queue_t q = up->cmds;
    up->cmds = (cmd_queue_t){0};
    pthread_mutex_unlock(&up->lock);
    run_cmds(up, q.cmds, q.n);
    free(q.cmds);
}

/* Commands from the loop thread itself; running them may queue more (a transfer that fails to
 * start reports at once, and its on_done may resume a request). */
static void process_local(mg_upstream_t *up)
{
    while (up->local.n) {
        cmd_queue_t q = up->local;
        up->local = (cmd_queue_t){0};
        run_cmds(up, q.cmds, q.n);
        free(q.cmds);
    }
}

static void cancel_all(mg_upstream_t *up)
{
    while (up->active) finish(up, up->active, MG_XFER_CANCELLED, "gateway stopping");
}

static void drive_curl_timeout(mg_upstream_t *up, int *running)
{
    if (up->curl_deadline_ms >= 0 && mg_now_ms() >= up->curl_deadline_ms) {
        up->curl_deadline_ms = -1;
        curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, running);
    }
}

static void *loop_main(void *arg)
{
    mg_upstream_t *up = arg;
    tl_loop = up;
    struct epoll_event evs[256];
    int running = 0;
    int64_t drv_due_ms = -1; /* the driver's own timeout, as an absolute time; -1: none */
    for (;;) {
        int64_t now = mg_now_ms();
        int64_t wait = 1000;
        if (up->curl_deadline_ms >= 0) wait = MG_MAX(0, up->curl_deadline_ms - now);
        if (up->active) wait = MG_MIN(wait, MG_MAX(0, up->next_scan_ms - now));
        if (drv_due_ms >= 0) wait = MG_MIN(wait, MG_MAX(0, drv_due_ms - now));
        if (up->local.n || atomic_load(&up->kick)) wait = 0;
        int n = epoll_wait(up->epfd, evs, (int)MG_ARRAY_LEN(evs), (int)wait);
        bool woke = false, drv_ready = false;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == up->evfd) {
                uint64_t v;
                ssize_t r = read(up->evfd, &v, sizeof v);
                (void)r;
                woke = true;
                continue;
            }
            if (fd == up->drv.fd) {
                drv_ready = true;
                continue;
            }
            if (!fd_wanted(up, fd)) continue;
            int flags = 0;
            if (evs[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(up->multi, fd, flags, &running);
        }
        if (woke) process_cmds(up);
        if (atomic_load(&up->stopping) && !up->cancelled_all) {
            up->cancelled_all = true;
            cancel_all(up);
        }
        /* The driver (the HTTP server) reads requests and writes answers; what it submits starts
         * right after, in this same pass, and what that ends (resuming requests) goes back to the
         * driver at once. */
        now = mg_now_ms();
        bool run_drv = drv_ready || (drv_due_ms >= 0 && now >= drv_due_ms);
        for (int round = 0; round < 16; round++) {
            if (run_drv || atomic_exchange(&up->kick, false)) up->drv.run(up->drv.ud);
            process_local(up);
            drive_curl_timeout(up, &running);
            read_done(up);
            run_drv = false;
            if (!atomic_load(&up->kick)) break;
        }
        now = mg_now_ms();
        if (now >= up->next_scan_ms) {
            scan_timers(up, now);
            up->next_scan_ms = now + MG_SCAN_MS;
        }
        int64_t t = up->drv.timeout_ms(up->drv.ud);
        drv_due_ms = t < 0 ? -1 : mg_now_ms() + t;
        pthread_mutex_lock(&up->lock);
        bool stop = up->exiting && up->cmds.n == 0;
        pthread_mutex_unlock(&up->lock);
        if (stop && !up->local.n) break;
    }
    cancel_all(up);
    tl_loop = NULL;
    return NULL;
}

mg_upstream_t *mg_upstream_new(void)
{
    pthread_once(&curl_once, curl_init_once);
    mg_upstream_t *up = mg_xcalloc(1, sizeof *up);
    up->epfd = epoll_create1(EPOLL_CLOEXEC);
    up->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    up->multi = curl_multi_init();
    up->curl_deadline_ms = -1;
    pthread_mutex_init(&up->lock, NULL);
    if (up->epfd < 0 || up->evfd < 0 || !up->multi) goto error;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = up->evfd};
    if (epoll_ctl(up->epfd, EPOLL_CTL_ADD, up->evfd, &ev) != 0) goto error;
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    /* Idle upstream connections kept for reuse: enough for bursts, bounded so a burst does not
     * leave thousands of sockets (and their buffers) open afterwards. */
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 512L);
    return up;
error:
    if (up->multi) curl_multi_cleanup(up->multi);
    if (up->epfd >= 0) close(up->epfd);
    if (up->evfd >= 0) close(up->evfd);
    pthread_mutex_destroy(&up->lock);
    free(up);
    return NULL;
}

bool mg_upstream_run(mg_upstream_t *up, const mg_loop_driver_t *drv)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = drv->fd};
    if (epoll_ctl(up->epfd, EPOLL_CTL_ADD, drv->fd, &ev) != 0) return false;
    up->drv = *drv;
    up->thread_started = pthread_create(&up->thread, NULL, loop_main, up) == 0;
    return up->thread_started;
}

void mg_upstream_kick(mg_upstream_t *up)
{
    atomic_store(&up->kick, true);
    if (tl_loop != up) wake(up);
}

void mg_upstream_stop(mg_upstream_t *up)
{
    pthread_mutex_lock(&up->lock);
    atomic_store(&up->stopping, true);
    pthread_mutex_unlock(&up->lock);
    wake(up);
}

void mg_upstream_join(mg_upstream_t *up)
{
    pthread_mutex_lock(&up->lock);
    bool joined = up->joined;
    atomic_store(&up->stopping, true);
    up->exiting = true;
    up->joined = true;
    pthread_mutex_unlock(&up->lock);
    if (joined || !up->thread_started) return;
    wake(up);
    pthread_join(up->thread, NULL);
}

void mg_upstream_free(mg_upstream_t *up)
{
    if (!up) return;
    mg_upstream_join(up);
    process_cmds(up); /* release anything queued after the loop's last look */
    run_cmds(up, up->local.cmds, up->local.n);
    free(up->local.cmds);
    cancel_all(up);
    for (size_t i = 0; i < up->n_pool; i++) curl_easy_cleanup(up->pool[i]);
    curl_multi_cleanup(up->multi);
    free(up->fds);
    close(up->epfd);
    close(up->evfd);
    pthread_mutex_destroy(&up->lock);
    free(up);
}

/* The easy handle is built here, on the caller's thread: until it is queued nobody else can see
 * it, and the loop thread then only adds it to the multi. On the loop thread it comes from the
 * pool of reset handles. */
/* ca_file: NULL or a CA bundle path (curl keeps its own copy). */
static void setup_easy(mg_xfer_t *x, const char *url, const char *ca_file)
{
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    x->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, x->up);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    /* https negotiates HTTP/2 by ALPN (curl's default), and the multi handle multiplexes streams
     * on a shared connection. For a provider known to speak it, PIPEWAIT makes a new transfer
     * wait for a connection to be known as multiplexing instead of opening its own: one
     * descriptor per ~100 streams instead of one per stream. */
    if (x->http2) curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    if (ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    if (x->get) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
    }
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    if (x->connect_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)x->connect_timeout_ms);
    if (x->total_timeout_ms > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)x->total_timeout_ms);
}

mg_xfer_t *mg_xfer_submit(mg_upstream_t *up, const mg_xfer_spec_t *spec)
{
    mg_xfer_t *x = mg_xcalloc(1, sizeof *x);
    atomic_init(&x->refs, 2); /* the caller's and the loop's */
    x->up = up;
    x->cb = spec->cb;
    x->ud = spec->ud;
    x->connect_timeout_ms = spec->connect_timeout_ms;
    x->first_token_timeout_ms = spec->first_token_timeout_ms;
    x->idle_timeout_ms = spec->idle_timeout_ms;
    x->total_timeout_ms = spec->total_timeout_ms;
    x->delay_ms = spec->delay_ms;
    x->get = spec->get;
    x->http2 = spec->http2;
    if (spec->body_owned) {
        x->body = (char *)spec->body;
    } else {
        x->body = mg_xmalloc(spec->body_len + 1);
        if (spec->body_len) memcpy(x->body, spec->body, spec->body_len);
    }
    x->body_len = spec->body_len;
    for (size_t i = 0; i < spec->n_headers; i++) {
        struct curl_slist *l = curl_slist_append(x->headers, spec->headers[i]);
        if (!l) abort();
        x->headers = l;
    }
    /* No "Expect: 100-continue" round trip for large bodies. */
    x->headers = curl_slist_append(x->headers, "Expect:");
    if (tl_loop == up && up->n_pool) x->easy = up->pool[--up->n_pool];
    else x->easy = curl_easy_init();
    if (!x->easy || !x->headers) abort();
    setup_easy(x, spec->url, spec->ca_file);
    if (!push_cmd(up, CMD_SUBMIT, x)) {
        xfer_free(x); /* never queued: no callback will come */
        return NULL;
    }
    return x;
}

void mg_xfer_cancel(mg_xfer_t *x)
{
    push_cmd(x->up, CMD_CANCEL, x);
}

void mg_xfer_resume(mg_xfer_t *x)
{
    push_cmd(x->up, CMD_RESUME, x);
}

void mg_xfer_mark_first_token(mg_xfer_t *x)
{
    x->first_token = true;
}

size_t mg_upstream_active(mg_upstream_t *up)
{
    return atomic_load(&up->n_active);
}

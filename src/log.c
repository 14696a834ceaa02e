/* JSON-lines logging to stderr or a file. See log.h. */
#include "log.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO;
static mg_log_level_t log_min = MG_LOG_INFO;

static const char *level_name[] = {"debug", "info", "warn", "error"};

int mg_log_open(const char *path)
{
    int fd = STDERR_FILENO;
    if (path && strcmp(path, "-") != 0) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0) return -1;
    }
    pthread_mutex_lock(&log_lock);
    int old = log_fd;
    log_fd = fd;
    pthread_mutex_unlock(&log_lock);
    if (old != STDERR_FILENO && old != fd) close(old);
    return 0;
}

void mg_log_close(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_fd != STDERR_FILENO) close(log_fd);
    log_fd = STDERR_FILENO;
    pthread_mutex_unlock(&log_lock);
}

void mg_log_set_level(mg_log_level_t min)
{
    log_min = min;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return; /* nowhere left to report it */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) of now into ts; returns its length. The calendar part is
 * formatted once per second per thread. */
static size_t format_ts(char ts[40])
{
    static _Thread_local time_t cached_sec = (time_t)-1;
    static _Thread_local char cached[20]; /* "YYYY-MM-DDTHH:MM:SS" */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long ms = now.tv_nsec / 1000000;
    if (now.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        size_t k = strftime(ts, 40, "%Y-%m-%dT%H:%M:%S", &tm);
        if (k != sizeof cached - 1) { /* not a four-digit year: as it comes, uncached */
            snprintf(ts + k, 40 - k, ".%03ldZ", ms);
            return strlen(ts);
        }
        memcpy(cached, ts, sizeof cached);
        cached_sec = now.tv_sec;
    }
    memcpy(ts, cached, 19);
    ts[19] = '.';
    ts[20] = (char)('0' + ms / 100);
    ts[21] = (char)('0' + ms / 10 % 10);
    ts[22] = (char)('0' + ms % 10);
    ts[23] = 'Z';
    ts[24] = '\0';
    return 24;
}

/* Lines of a batch (mg_log_batch_begin/end), per thread: static storage, nothing to free when a
 * thread ends. */
#define MG_LOG_BATCH_BYTES (32 * 1024)
static _Thread_local bool batching;
static _Thread_local size_t batch_len;
static _Thread_local char batch[MG_LOG_BATCH_BYTES];

static void batch_flush(void)
{
    if (!batch_len) return;
    pthread_mutex_lock(&log_lock);
    write_all(log_fd, batch, batch_len);
    pthread_mutex_unlock(&log_lock);
    batch_len = 0;
}

void mg_log_batch_begin(void)
{
    batching = true;
}

void mg_log_batch_end(void)
{
    batch_flush();
    batching = false;
}

void mg_log_json(mg_log_level_t level, const char *msg, const char *extra)
{
    if (level < log_min) return;
    char ts[40];
    size_t ts_len = format_ts(ts);

    /* Assembled in place when the line fits (an access line does), on the heap otherwise. */
    char stack[2048];
    mg_buf_t b = {stack, 0, sizeof stack};
    stack[0] = '\0';
    size_t msg_len = msg ? strlen(msg) : 0, extra_len = extra ? strlen(extra) : 0;
    /* A JSON escape is at most 6 bytes. */
    bool fits = 64 + ts_len + 6 * msg_len + extra_len < sizeof stack;
    if (!fits) b = (mg_buf_t){0};
    mg_buf_puts(&b, "{\"ts\":\"");
    mg_buf_append(&b, ts, ts_len);
    mg_buf_puts(&b, "\",\"level\":\"");
    mg_buf_puts(&b, level_name[level]);
    mg_buf_puts(&b, "\",\"msg\":");
    if (msg)
        mg_buf_json_strn(&b, msg, msg_len);
    else
        mg_buf_puts(&b, "null");
    if (extra_len) {
        mg_buf_puts(&b, ",");
        mg_buf_append(&b, extra, extra_len);
    }
    mg_buf_puts(&b, "}\n");
    if (batching && b.len <= sizeof batch) {
        if (batch_len + b.len > sizeof batch) batch_flush();
        memcpy(batch + batch_len, b.data, b.len);
        batch_len += b.len;
    } else {
        pthread_mutex_lock(&log_lock);
        write_all(log_fd, b.data, b.len);
        pthread_mutex_unlock(&log_lock);
    }
    if (!fits) mg_buf_free(&b);
}

void mg_log(mg_log_level_t level, const char *msg, const char *fmt, ...)
{
    if (level < log_min) return;
    char detail[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    mg_buf_t extra = {0};
    mg_buf_puts(&extra, "\"detail\":");
    mg_buf_json_str(&extra, detail);
    mg_log_json(level, msg, extra.data);
    mg_buf_free(&extra);
}

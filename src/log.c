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

void mg_log_json(mg_log_level_t level, const char *msg, const char *extra)
{
    if (level < log_min) return;
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t k = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + k, sizeof ts - k, ".%03ldZ", now.tv_nsec / 1000000);

    mg_buf_t b = {0};
    mg_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_name[level]);
    mg_buf_json_str(&b, msg);
    if (extra && *extra) {
        mg_buf_puts(&b, ",");
        mg_buf_puts(&b, extra);
    }
    mg_buf_puts(&b, "}\n");
    pthread_mutex_lock(&log_lock);
    write_all(log_fd, b.data, b.len);
    pthread_mutex_unlock(&log_lock);
    mg_buf_free(&b);
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

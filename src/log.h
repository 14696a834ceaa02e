/* Structured logging: every line written is one JSON object, to stderr or a file. Used for the
 * per-request access line and for the few operational events (start, stop, reload, state change).
 * Thread-safe: each line is assembled first and written with a single write(2).
 *
 * Secrets: callers never pass API keys or Authorization values; nothing here could tell. */
#pragma once
#include <stdbool.h>

typedef enum mg_log_level { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR } mg_log_level_t;

/* Sends log lines to path ("-" or NULL = stderr). Returns 0, or -1 with errno set (the previous
 * destination is kept). Safe to call again to reopen a rotated file. */
int mg_log_open(const char *path);
void mg_log_close(void);
void mg_log_set_level(mg_log_level_t min);

/* Writes {"ts":…,"level":…,"msg":msg[,extra]}. extra, when not NULL, is a sequence of JSON members
 * without braces (`"k":1,"s":"x"`), already escaped by the caller (mg_buf_json_str). */
void mg_log_json(mg_log_level_t level, const char *msg, const char *extra);

/* printf-style convenience for plain text events: {"…","msg":msg,"detail":"<formatted>"}. */
void mg_log(mg_log_level_t level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

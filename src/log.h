/* Structured logging: every line written is one JSON object, to stderr or a file. Used for the
 * per-request access line and for the few operational events (start, stop, reload, state change).
 * Thread-safe: each line is assembled first and written with a single write(2), or, inside a
 * batch, with the other lines of the batch.
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

/* A batch: until mg_log_batch_end, this thread's lines are collected (up to 32 KiB, then written)
 * and written together at the end, one write(2) for many lines. A serving thread batches each
 * pass of its HTTP server, so a pass that completes many requests writes their access lines
 * once. Lines of other threads are not held back. */
void mg_log_batch_begin(void);
void mg_log_batch_end(void);

/* printf-style convenience for plain text events: {"…","msg":msg,"detail":"<formatted>"}. */
void mg_log(mg_log_level_t level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

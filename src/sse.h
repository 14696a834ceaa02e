/* Incremental text/event-stream (SSE) parser. Takes bytes, emits events. Knows nothing of curl,
 * HTTP or Lua; uses only util.h (allocation that aborts on OOM).
 *
 * Follows the WHATWG HTML Living Standard, "Server-sent events", section "Interpreting an event
 * stream": LF, CR and CRLF line ends (a CR at the end of one feed and its LF at the start of the
 * next count as one line end), `data` lines joined with "\n", comment lines (starting with ':')
 * never become events, a line without ':' is a field name with an empty value, one leading space
 * after the colon is removed, one UTF-8 BOM at the very start is dropped, fields event / data /
 * id / retry, a blank line dispatches.
 *
 * It works on bytes: UTF-8 is neither decoded nor validated, so payloads (JSON relayed by the
 * gateway) come out byte for byte, and a feed may end anywhere, even inside a multi-byte character.
 *
 * Memory is bounded: the bytes held for the event in progress (the unfinished line, the data
 * buffer and the event type) never exceed max_event_bytes; a stream that would need more is an
 * error (MG_SSE_E_TOO_LARGE), never a bigger buffer. Comment lines are skipped as they arrive and
 * are never buffered, whatever their length. When a whole event lies inside one feed its data and
 * type are handed to the callback straight from the caller's buffer, with no copy.
 *
 * Not thread-safe; one parser per stream. Callbacks must not call back into the same parser. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Errors are negative. They are sticky: once a call has failed, every later feed/finish on the
 * parser returns the same code without calling the callback. */
#define MG_SSE_E_TOO_LARGE (-1) /* an event needed more than max_event_bytes */
#define MG_SSE_E_FINISHED (-2)  /* mg_sse_feed/mg_sse_finish called after mg_sse_finish */

/* Used by mg_sse_init when max_event_bytes is 0. */
#define MG_SSE_DEFAULT_MAX_EVENT_BYTES ((size_t)1 << 20)

/* One dispatched event. Every pointer is borrowed and valid only during the callback; the bytes
 * are NOT NUL-terminated (data may point into the caller's input buffer): use the lengths. */
typedef struct mg_sse_event {
    const char *type; /* the `event` field, or "message" when it was absent or empty */
    size_t type_len;
    const char *data; /* the `data` lines joined with "\n" (the spec's trailing "\n" removed) */
    size_t data_len;
    const char *id; /* the last event ID: persists across events per spec; "" until one is set */
    size_t id_len;
    long retry_ms; /* a valid `retry` field seen since the previous blank line, else -1 */
} mg_sse_event_t;

/* Called once per dispatched event. Return 0 to continue; any nonzero value stops parsing at once
 * (the rest of the input is dropped), is returned by mg_sse_feed / mg_sse_finish, and is sticky
 * like an error. Use positive values so they cannot be mistaken for MG_SSE_E_*. */
typedef int (*mg_sse_cb)(void *ud, const mg_sse_event_t *ev);

/* Embeddable; treat the fields as private and use the accessors below. */
typedef struct mg_sse_parser {
    size_t max;         /* max_event_bytes */
    int err;            /* sticky: 0, MG_SSE_E_* or a callback's stop value */
    uint8_t bom;        /* bytes of a leading BOM matched so far; 3 once the BOM check is over */
    bool cr_pending;    /* the last byte fed was a CR line end: skip one LF at the next feed */
    bool skip_line;     /* inside a comment line that started in an earlier feed */
    bool has_data;      /* at least one `data` line since the last blank line */
    bool data_borrowed; /* data points into the current input, not into data_buf */
    bool type_borrowed; /* type points into the current input, not into type_buf */
    long retry_ms;      /* retry seen since the last blank line, -1 if none */
    long last_retry_ms; /* last valid retry of the whole stream, -1 if none */
    uint64_t comments;  /* comment lines seen (keep-alive evidence) */
    uint64_t events;    /* events dispatched */
    const char *data;   /* the joined data (without the spec's trailing "\n") */
    size_t data_len;
    const char *type; /* the event type buffer ("" = none) */
    size_t type_len;
    mg_buf_t line; /* the unfinished line carried over from an earlier feed */
    mg_buf_t data_buf;
    mg_buf_t type_buf;
    mg_buf_t id_buf; /* last event ID (persists) */
} mg_sse_parser_t;

/* Prepares *p for a new stream. max_event_bytes caps the bytes held for one event (0 selects
 * MG_SSE_DEFAULT_MAX_EVENT_BYTES). Allocates nothing; buffers grow on demand, never past the cap.
 */
void mg_sse_init(mg_sse_parser_t *p, size_t max_event_bytes);

/* Parses len bytes of the stream (any slice: a feed may end anywhere), calling cb for each event
 * completed by them. buf is borrowed for the duration of the call. Returns 0, a negative
 * MG_SSE_E_* code, or the callback's nonzero value. */
int mg_sse_feed(mg_sse_parser_t *p, const char *buf, size_t len, mg_sse_cb cb, void *ud);

/* End of stream. Per spec an event not yet terminated by a blank line is discarded
 * (flush_partial = false). The OpenAI and Anthropic SDKs dispatch it anyway (flush_partial = true:
 * an unterminated last line is completed, then the event is dispatched if it has data). Returns
 * like mg_sse_feed. The stream is then over: later feed/finish calls return MG_SSE_E_FINISHED (or
 * the earlier error); mg_sse_init starts a new stream after mg_sse_free. */
int mg_sse_finish(mg_sse_parser_t *p, bool flush_partial, mg_sse_cb cb, void *ud);

/* Frees the buffers; *p may be re-initialised with mg_sse_init. Safe on a zeroed parser. */
void mg_sse_free(mg_sse_parser_t *p);

/* Comment lines seen so far, counted when their ':' arrives. The gateway treats an increase as
 * keep-alive evidence (e.g. ": OPENROUTER PROCESSING"); comments are never delivered as events. */
uint64_t mg_sse_comments(const mg_sse_parser_t *p);

/* Events dispatched so far. */
uint64_t mg_sse_events(const mg_sse_parser_t *p);

/* Bytes held for the event in progress (unfinished line + data buffer + event type), as counted
 * against max_event_bytes. Always <= max_event_bytes. */
size_t mg_sse_buffered(const mg_sse_parser_t *p);

/* True when an unfinished line or an undispatched event is pending: at end of stream this means
 * the upstream stopped mid-event. */
bool mg_sse_pending(const mg_sse_parser_t *p);

/* The last valid `retry` value of the stream in milliseconds, or -1. Gateways may ignore it. */
long mg_sse_retry_ms(const mg_sse_parser_t *p);

/* A static description of an MG_SSE_E_* code (or "callback stopped" for other nonzero values). */
const char *mg_sse_strerror(int err);

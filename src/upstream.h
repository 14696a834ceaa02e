/* The upstream client: one thread running a libcurl multi loop on epoll, with connection reuse.
 * Serving threads never call curl; they hand transfers to this thread through a locked queue and
 * an eventfd wake-up. Each transfer reports through three callbacks, all run on the upstream
 * thread: on_head (status and headers), on_data (body bytes; may ask to pause), on_done (exactly
 * once per submitted transfer, whatever happened, including cancel).
 *
 * Uses libcurl only; knows nothing of HTTP serving, JSON or Lua. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_upstream mg_upstream_t;
typedef struct mg_xfer mg_xfer_t;

/* Why a transfer ended (the HTTP status, if any, is reported through on_head). */
typedef enum mg_xfer_result {
    MG_XFER_OK = 0,          /* the whole response was received */
    MG_XFER_CONNECT_ERROR,   /* could not resolve/connect/send, or reset before any response */
    MG_XFER_TIMEOUT_CONNECT,
    MG_XFER_TIMEOUT_FIRST_TOKEN,
    MG_XFER_TIMEOUT_IDLE,
    MG_XFER_TIMEOUT_TOTAL,
    MG_XFER_BROKEN,          /* the connection failed after the response had started */
    MG_XFER_TOO_LARGE,       /* on_data refused the bytes (a size cap) */
    MG_XFER_CANCELLED,       /* mg_xfer_cancel */
} mg_xfer_result_t;

const char *mg_xfer_result_name(mg_xfer_result_t r);

/* Returned by on_data to stop the transfer (it then ends as MG_XFER_TOO_LARGE). */
#define MG_XFER_DATA_ABORT ((size_t)-1)
/* Returned by on_data to pause: the bytes are NOT consumed; curl offers them again after
 * mg_xfer_resume. */
#define MG_XFER_DATA_PAUSE ((size_t)-2)

typedef struct mg_xfer_callbacks {
    /* The final response head. headers is the raw header block ("Name: value\r\n"…), borrowed. */
    void (*on_head)(void *ud, long status, const char *headers, size_t headers_len);
    /* Body bytes (borrowed). Returns n when consumed, or MG_XFER_DATA_PAUSE / _ABORT. x is the
     * transfer itself, for mg_xfer_mark_first_token. */
    size_t (*on_data)(void *ud, mg_xfer_t *x, const char *p, size_t n);
    /* The end. detail is a short human-readable reason (borrowed, may be ""). After it returns the
     * transfer no longer touches ud. */
    void (*on_done)(void *ud, mg_xfer_result_t result, const char *detail);
} mg_xfer_callbacks_t;

typedef struct mg_xfer_spec {
    const char *url;
    const char *const *headers; /* "Name: value" strings, n_headers of them; copied */
    size_t n_headers;
    bool get;         /* GET instead of POST (health probes); body ignored */
    int64_t delay_ms; /* start this long after submit (a retry's backoff); 0 = at once */
    const char *body; /* POST body; copied unless body_owned */
    size_t body_len;
    bool body_owned;  /* the transfer takes ownership of body (malloc'd) */
    bool http2;       /* the upstream multiplexes: new transfers wait for a shared connection */
    const char *ca_file; /* CA bundle to verify the upstream's certificate; NULL = the system's */
    int64_t connect_timeout_ms;
    int64_t first_token_timeout_ms; /* until mg_xfer_mark_first_token; 0 = none */
    int64_t idle_timeout_ms;        /* between reads once data flows; 0 = none */
    int64_t total_timeout_ms;       /* 0 = none */
    mg_xfer_callbacks_t cb;
    void *ud;
} mg_xfer_spec_t;

/* Creates the loop and starts its thread. Returns NULL on failure. */
mg_upstream_t *mg_upstream_new(void);
/* Stops the loop: every transfer still running ends with MG_XFER_CANCELLED, later submits fail
 * (return NULL), cancels and resumes become no-ops. The object stays valid until freed. */
void mg_upstream_stop(mg_upstream_t *up);
/* Stops (if not yet) and frees. */
void mg_upstream_free(mg_upstream_t *up);

/* Queues a transfer. Thread-safe. Returns a handle holding one reference for the caller (release
 * it with mg_xfer_release), or NULL if the loop is stopping (then no callback is ever called). */
mg_xfer_t *mg_xfer_submit(mg_upstream_t *up, const mg_xfer_spec_t *spec);
/* Asks the loop to abort the transfer; on_done follows with MG_XFER_CANCELLED unless it already
 * ended. Thread-safe; the caller must still hold its reference. */
void mg_xfer_cancel(mg_xfer_t *x);
/* Unpauses a transfer paused by on_data. Thread-safe. */
void mg_xfer_resume(mg_xfer_t *x);
/* Called from on_data (upstream thread) once the first content-bearing byte arrived: ends the
 * first-token timer and starts the idle timer. */
void mg_xfer_mark_first_token(mg_xfer_t *x);
void mg_xfer_release(mg_xfer_t *x);

/* Number of transfers in flight (approximate; for metrics and tests). */
size_t mg_upstream_active(mg_upstream_t *up);

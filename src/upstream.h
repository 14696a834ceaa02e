/* The upstream client: a thread running a libcurl multi loop on epoll, with connection reuse, and
 * beside it a driver: the HTTP server's event source, so that serving and upstream work share one
 * thread and a request needs no hand-off. The server runs one such loop per serving thread.
 * Commands from the loop's own thread are queued locally; other threads hand them over through a
 * locked queue and an eventfd wake-up. Each transfer reports through three callbacks, all run on
 * the loop thread: on_head (status and headers), on_data (body bytes; may ask to pause), on_done (exactly
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

/* Another event source run on the loop's thread: the HTTP server. The loop watches fd and calls
 * run() when it is readable, or when timeout_ms() (asked after every pass; < 0: none) has passed.
 * Transfers submitted from run() start in the same pass, with no wake-up. */
typedef struct mg_loop_driver {
    int fd;
    void (*run)(void *ud);
    int64_t (*timeout_ms)(void *ud);
    void *ud;
} mg_loop_driver_t;

/* Creates the loop; it runs once mg_upstream_run starts its thread. Returns NULL on failure. */
mg_upstream_t *mg_upstream_new(void);
/* Starts the loop's thread, with its driver (copied). Returns false on failure. */
bool mg_upstream_run(mg_upstream_t *up, const mg_loop_driver_t *drv);
/* Asks the loop to run its driver soon (at once when called from the loop thread, after the
 * current step). Thread-safe. */
void mg_upstream_kick(mg_upstream_t *up);
/* Stops taking transfers: every transfer still running ends with MG_XFER_CANCELLED, later submits
 * fail (return NULL). The loop keeps running its driver. Thread-safe. */
void mg_upstream_stop(mg_upstream_t *up);
/* Stops, ends the loop's thread (the driver is no longer run) and waits for it. Not from the loop
 * thread. */
void mg_upstream_join(mg_upstream_t *up);
/* Joins (if not yet) and frees. */
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

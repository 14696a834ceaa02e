/* Outcome → error class: what went wrong with one attempt, read from the transfer result, the
 * HTTP status, the headers and the error body as the servers we know write them. Pure. */
#pragma once
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mg_class {
    MG_CLASS_OK = 0,
    MG_CLASS_CONNECT_ERROR,
    MG_CLASS_TIMEOUT,
    MG_CLASS_RATE_LIMIT,
    MG_CLASS_OVERLOADED,
    MG_CLASS_SERVER_ERROR,
    MG_CLASS_AUTH,
    MG_CLASS_BILLING,
    MG_CLASS_MODEL_NOT_FOUND,
    MG_CLASS_MODEL_NOT_LOADED,
    MG_CLASS_CONTEXT_OVERFLOW,
    MG_CLASS_CONTENT_FILTER,
    MG_CLASS_BAD_REQUEST,
    MG_CLASS_STREAM_BROKEN,
    MG_CLASS_TOO_LARGE,   /* the answer exceeded gateway.maxUpstreamBodyBytes */
    MG_CLASS_UNSUPPORTED, /* the gateway cannot talk to this candidate for this request */
    MG_CLASS_NO_KEY,      /* the provider's apiKey environment variable is unset */
    MG_CLASS_CANCELLED,
} mg_class_t;

const char *mg_class_name(mg_class_t c);

/* Class of a transfer that did not complete normally (result != MG_XFER_OK). */
mg_class_t mg_classify_xfer(mg_xfer_result_t r);

/* Class of a completed HTTP exchange. 2xx is OK unless the body says otherwise (some servers
 * report errors with 200). headers is the raw header block; either may be empty. */
mg_class_t mg_classify_http(long status, const char *headers, size_t hlen, const char *body, size_t blen);

/* Whether the router moves on to the next candidate after this class (the default; policies can
 * override). bad_request and content_filter go back to the client: the request itself is at fault. */
bool mg_class_moves_on(mg_class_t c);

/* Reads retry-after-ms or retry-after (seconds) from a raw header block; -1 when absent. */
int64_t mg_retry_after_ms(const char *headers, size_t hlen);

/* The HTTP server: libmicrohttpd glue. Endpoints, request bodies and their limits, suspend and
 * resume around upstream work, and turning replies into responses. Each serving thread
 * (gateway.threads) runs an MHD daemon (epoll) together with its own upstream loop (upstream.h);
 * a request waiting for an upstream is suspended, never blocking a thread. */
#pragma once
#include "upstream.h"

#include <stdbool.h>

typedef struct mg_server mg_server_t;

/* Starts listening on host:port with the current generation's settings, and the serving threads.
 * Returns NULL and logs why on failure. */
mg_server_t *mg_server_start(const char *host, int port);
/* Stops accepting new connections (graceful stop begins). */
void mg_server_quiesce(mg_server_t *srv);
/* Cancels every upstream transfer and refuses new ones (the end of the drain); the requests they
 * served end with errors, which the serving threads still deliver. */
void mg_server_stop_upstreams(mg_server_t *srv);
/* Requests in progress (bodies being read, waiting on upstreams, or replies being sent). */
unsigned mg_server_in_flight(mg_server_t *srv);
/* Ends the serving threads, closes what is left and frees. */
void mg_server_stop(mg_server_t *srv);

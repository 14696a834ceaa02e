/* The HTTP server: libmicrohttpd glue. Endpoints, request bodies and their limits, suspend and
 * resume around upstream work, and turning replies into responses. MHD runs event-driven (epoll)
 * on its own thread(s); a request waiting for an upstream is suspended, never blocking a thread. */
#pragma once
#include "upstream.h"

#include <stdbool.h>

typedef struct mg_server mg_server_t;

/* Starts listening on host:port with the current generation's settings. Returns NULL and logs why
 * on failure. up is borrowed and must outlive the server. */
mg_server_t *mg_server_start(const char *host, int port, mg_upstream_t *up);
/* Stops accepting new connections (graceful stop begins). */
void mg_server_quiesce(mg_server_t *srv);
/* Requests in progress (bodies being read, waiting on upstreams, or replies being sent). */
unsigned mg_server_in_flight(mg_server_t *srv);
void mg_server_stop(mg_server_t *srv);

/* The router runs a request's plan: it resolves the model asked into ordered candidates, starts
 * one attempt at a time on the upstream loop, classifies how each ended, and either commits the
 * answer, moves on to the next candidate, or builds the final error. Runs on the serving thread;
 * only the transfer callbacks it installs run on the upstream thread.
 *
 * The candidate list is the seam for the Lua policy: today it comes from the config (the model
 * asked, or `default` = agents.defaults.model primary then fallbacks). */
#pragma once
#include "health.h"
#include "request.h"
#include "tokens.h"

typedef enum mg_route_step {
    MG_ROUTE_WAIT,  /* an attempt is in flight: wait until req->wake is called, then resume */
    MG_ROUTE_REPLY, /* *reply is ready to send */
    MG_ROUTE_STREAM, /* an attempt committed: stream req->out to the client */
} mg_route_step_t;

/* The process-wide health registry the router consults and feeds (NULL: none, as in unit tests). */
void mg_router_set_health(mg_health_t *h);
mg_health_t *mg_router_health(void);

/* The process-wide token calibration (tokens.h), kept across reloads (NULL: raw estimates). */
void mg_router_set_calib(mg_tokens_calib_t *c);
mg_tokens_calib_t *mg_router_calib(void);

/* Called once the whole body is in req->body. */
mg_route_step_t mg_router_begin(mg_req_t *req, mg_reply_t *reply);
/* Called after the current attempt is done (mg_req_current(req)->done seen under the lock). */
mg_route_step_t mg_router_resume(mg_req_t *req, mg_reply_t *reply);
/* Whether the attempt in flight has finished; call with req->lock held. */
bool mg_router_attempt_done_locked(mg_req_t *req);
/* The client left: cancel the attempt in flight, if any. */
void mg_router_abort(mg_req_t *req);

/* x-moongate-compaction for the answer, when the request was changed to fit; false if not. */
bool mg_router_compaction_header(const mg_req_t *req, mg_buf_t *out);

/* At the end of a request: tokens and cost of the answer into the metrics, and the reported
 * prompt size into the token calibration. */
void mg_router_account(mg_req_t *req);

/* x-moongate-route: "gen=<n>; <provider/id>=<class>[:<status>]; …" in attempt order. */
void mg_router_route_header(const mg_req_t *req, mg_buf_t *out);
/* The access log line's members (without braces), for log.c. */
void mg_router_access_json(const mg_req_t *req, mg_buf_t *out);

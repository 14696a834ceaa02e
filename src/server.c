/* libmicrohttpd glue. See server.h.
 *
 * One worker per serving thread (gateway.threads): an MHD daemon in external epoll mode with
 * suspend/resume, run as the driver of that thread's upstream loop (upstream.h), so a request and
 * its upstream transfers live on one thread. The daemons share one listening socket. An API
 * request goes: first call → a mg_req_t becomes the connection's context; upload calls → the body
 * accumulates under gateway.maxBodyBytes; final call → the router starts an attempt and the
 * connection is suspended; the attempt's end resumes it; MHD calls the handler again and the
 * router either replies or starts the next attempt. The completion callback writes the access
 * line and cancels an attempt left running by a vanished client. */
#include "server.h"

#include "gen.h"
#include "health.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "reload.h"
#include "request.h"
#include "policy.h"
#include "router.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <time.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MG_WATCH_MS 250

/* One per accepted connection (MHD's socket context), for the request-head deadline: MHD calls
 * nothing of ours until a request's headers are complete, so a client that sends them slowly, or
 * never, would otherwise hold its connection for as long as it keeps trickling bytes. */
typedef struct mg_conn {
    struct mg_conn *prev, *next;
    MHD_socket fd;
    int64_t since_ms; /* opened, or finished its previous request: the head is due from here */
    bool in_request;  /* headers complete: the request's own deadlines apply */
    bool started;     /* a request line arrived (the URI callback): a slow head, not an idle one */
    bool cut;
    size_t get_body;        /* bytes of a GET's or HEAD's body, read and dropped (on_request) */
    struct mg_ip_count *ip; /* its client address's count (gateway.maxConnectionsPerIp) */
} mg_conn_t;

/* Open connections per client address, across all workers. */
typedef struct mg_ip_count {
    struct mg_ip_count *next;
    unsigned n;
    int family;
    unsigned char addr[16];
} mg_ip_count_t;
#define MG_IP_BUCKETS 1024

typedef struct mg_worker {
    struct mg_server *srv;
    struct MHD_Daemon *daemon;
    mg_upstream_t *up;
    MHD_socket quiesced; /* its listening socket once quiesced: ours to close after the stop */
    unsigned conn_limit;  /* its share of gateway.maxConnections */
    bool was_full;        /* [its thread] the last pass ended with conn_limit connections open */
    atomic_uint open_conns; /* connections its daemon holds (MHD's connection notifications) */
    /* Requests this thread has taken (GET /health shows them): written by its thread at every
     * request, so padded onto a cache line of its own, shared with no other worker's fields. */
    char pad_before[64];
    atomic_uint_fast64_t requests;
    char pad_after[64 - sizeof(atomic_uint_fast64_t)];
} mg_worker_t;

struct mg_server {
    mg_worker_t *workers;
    int n_workers;
    pthread_mutex_t conn_lock; /* guards conns and ips */
    mg_conn_t *conns;
    mg_ip_count_t *ips[MG_IP_BUCKETS];
    pthread_t watchdog;
    bool watchdog_running;
    atomic_bool stopping;
    pthread_mutex_t reg_lock; /* guards the registry of live requests */
    mg_req_t *reg;
    atomic_uint in_flight;
};

/* In external mode libmicrohttpd handles a resume on its next MHD_run: the loop is told to run it. */
static void wake(mg_req_t *req)
{
    MHD_resume_connection(req->conn);
    mg_upstream_kick(req->up);
}

/* The longest Retry-After an SDK is left to wait on by itself (send_reply). */
#define MG_SDK_RETRY_MAX_S 60

static void add_header(struct MHD_Response *resp, const char *name, const char *value)
{
    MHD_add_response_header(resp, name, value);
}

/* Queues reply as the response (taking its body). req may be NULL for non-API endpoints. */
static enum MHD_Result send_reply(struct MHD_Connection *c, mg_req_t *req, mg_reply_t *r)
{
    size_t len = r->body.len;
    char *body = mg_buf_steal(&r->body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    add_header(resp, "Content-Type", r->content_type ? r->content_type : "application/json");
    if (r->retry_after_s >= 0 && (r->status == 429 || r->status == 503)) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)r->retry_after_s);
        add_header(resp, "Retry-After", ra);
        /* The official SDKs retry a 429 twice by default, sleeping as long as Retry-After says:
         * a key's budget until midnight would hold the caller for hours. Past a minute they are
         * told not to (both obey x-should-retry), and the caller hears at once. */
        if (r->retry_after_s > MG_SDK_RETRY_MAX_S) add_header(resp, "x-should-retry", "false");
    }
    if (r->status == 405 && r->allow) add_header(resp, "Allow", r->allow);
    if (req) {
        req->status = r->status;
        add_header(resp, "x-request-id", req->id);
        if (req->ep == MG_EP_MESSAGES) add_header(resp, "request-id", req->id); /* Anthropic SDK's _request_id */
        if (req->n_attempts || req->trace[0] || req->is_api) { /* refusals too: the policy's trace */
            mg_buf_t route = {0};
            mg_router_route_header(req, &route);
            add_header(resp, "x-moongate-route", route.data);
            mg_buf_free(&route);
        }
        const mg_model_t *mm = req->served ? req->served : req->counted_for;
        if (mm) add_header(resp, "x-moongate-model", mm->ref);
        mg_buf_t cmp = {0};
        if (req->served && mg_router_compaction_header(req, &cmp)) add_header(resp, "x-moongate-compaction", cmp.data);
        mg_buf_free(&cmp);
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, mg_req_t *req, int status, const char *type,
                                  const char *code, const char *msg)
{
    mg_reply_t r = {.retry_after_s = -1};
    mg_reply_error(&r, req ? req->ep : MG_EP_CHAT, status, type, code, msg);
    return send_reply(c, req, &r);
}

static enum MHD_Result send_method_error(struct MHD_Connection *c, mg_req_t *req, const char *allow, const char *msg)
{
    mg_reply_t r = {.retry_after_s = -1, .allow = allow};
    mg_reply_error(&r, req ? req->ep : MG_EP_CHAT, 405, "invalid_request_error", "method_not_allowed", msg);
    return send_reply(c, req, &r);
}

/* The URL's length as sent, less the escapes libmicrohttpd decoded: "?" or "&", key, "=", value. */
static enum MHD_Result add_query_length(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    *(size_t *)cls += 1 + strlen(key) + (value ? 1 + strlen(value) : 0);
    return MHD_YES;
}

/* ---- GET endpoints ---- */

/* The names GET /v1/models lists, in order: every provider/id, every alias, and "default" when
 * there is a default chain; with the provider that owns each and its display name. catalog_names
 * gives the i-th of them (false past the last); catalogs are small, so the walk is fine. */
typedef struct {
    const char *id, *owner, *display_name;
    const mg_model_t *model; /* the model the name serves; NULL for "default" */
} catalog_name_t;

static bool catalog_names(const mg_config_t *cfg, size_t i, catalog_name_t *out)
{
    for (size_t p = 0; p < cfg->n_providers; p++) {
        const mg_provider_t *pv = &cfg->providers[p];
        if (i < pv->n_models) {
            *out = (catalog_name_t){pv->models[i].ref, pv->id, pv->models[i].name, &pv->models[i]};
            return true;
        }
        i -= pv->n_models;
    }
    if (i < cfg->n_aliases) {
        *out = (catalog_name_t){cfg->aliases[i].alias, cfg->aliases[i].model->provider->id,
                                cfg->aliases[i].alias, cfg->aliases[i].model};
        return true;
    }
    if (i == cfg->n_aliases && cfg->n_default_chain) {
        *out = (catalog_name_t){"default", "moongate", "default", NULL};
        return true;
    }
    return false;
}

/* One model object: OpenAI's {"id","object":"model","created","owned_by"}, or Anthropic's
 * {"type":"model","id","display_name","created_at"} (created: RFC 3339) for clients that send
 * anthropic-version. */
static void model_object(mg_buf_t *b, bool anthropic, const catalog_name_t *n, int64_t loaded_ms)
{
    if (anthropic) {
        char created[32];
        time_t t = (time_t)(loaded_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
        mg_buf_puts(b, "{\"type\":\"model\",\"id\":");
        mg_buf_json_str(b, n->id);
        mg_buf_puts(b, ",\"display_name\":");
        mg_buf_json_str(b, n->display_name ? n->display_name : n->id);
        mg_buf_printf(b, ",\"created_at\":\"%s\"", created);
        /* The fields the SDK types as always there: the windows the catalog knows, the rest
         * unknown (null), every model active. */
        const mg_model_t *m = n->model;
        if (m && m->context_window > 0) mg_buf_printf(b, ",\"max_input_tokens\":%lld", (long long)m->context_window);
        else mg_buf_puts(b, ",\"max_input_tokens\":null");
        if (m && m->max_tokens > 0) mg_buf_printf(b, ",\"max_tokens\":%lld", (long long)m->max_tokens);
        else mg_buf_puts(b, ",\"max_tokens\":null");
        mg_buf_puts(b, ",\"lifecycle\":\"active\",\"capabilities\":null,\"line\":null,\"deprecated_at\":null,"
                       "\"retires_at\":null}");
        return;
    }
    mg_buf_puts(b, "{\"id\":");
    mg_buf_json_str(b, n->id);
    mg_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":", (long long)(loaded_ms / 1000));
    mg_buf_json_str(b, n->owner);
    mg_buf_puts(b, "}");
}

/* The catalog as the caller's key sees it: the names it may ask for (mg_keys_check_access's model
 * check, the one a request of that name passes), in catalog order; every name without a key.
 * Returns the count; *out is malloc'd (NULL when empty or out of memory: an empty list). */
static size_t visible_names(const mg_config_t *cfg, const mg_key_t *key, catalog_name_t **out)
{
    size_t total = 0, n = 0;
    catalog_name_t e;
    while (catalog_names(cfg, total, &e)) total++;
    *out = total ? malloc(total * sizeof **out) : NULL;
    if (!*out) return 0;
    mg_key_verdict_t v;
    for (size_t i = 0; i < total && catalog_names(cfg, i, &e); i++)
        if (!key || mg_keys_check_access(key, e.id, NULL, &v) == 0) (*out)[n++] = e;
    return n;
}

/* GET /v1/models (name NULL): the catalog in OpenAI's list shape, or Anthropic's
 * ({"data":[…],"has_more","first_id","last_id"}) for clients that send anthropic-version;
 * GET /v1/models/{name}: one of its entries (the SDKs' models.retrieve), 404 if it has none.
 * With client keys, only the names the caller's key may use. */
static enum MHD_Result serve_models(struct MHD_Connection *c, mg_req_t *req, const char *name)
{
    mg_gen_t *g = mg_gen_acquire();
    bool anthropic = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version") != NULL;
    mg_reply_t r = {.status = 200, .content_type = "application/json", .retry_after_s = -1};
    catalog_name_t *names;
    size_t total = visible_names(g->cfg, req->key, &names);
    if (name) {
        size_t i = 0;
        while (i < total && strcmp(names[i].id, name) != 0) i++;
        if (i < total) {
            model_object(&r.body, anthropic, &names[i], g->loaded_wall_ms);
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "no model \"%.200s\" in this gateway's catalog (GET /v1/models lists them)",
                     name);
            mg_reply_error(&r, req->ep, 404, "invalid_request_error", "model_not_found", msg);
        }
        goto done;
    }
    /* Anthropic's list pages: limit (1..1000, default 20) entries after after_id, or the limit
     * entries just before before_id. A cursor no longer in the catalog (a reload removed it)
     * gives an empty last page rather than an error, so a paging loop ends. */
    size_t from = 0, to = total;
    bool more = false;
    if (anthropic) {
        const char *lim = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
        const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after_id");
        const char *before = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "before_id");
        char *end = NULL;
        long limit = lim ? strtol(lim, &end, 10) : 20;
        if ((lim && (!*lim || *end)) || limit < 1 || limit > 1000 || (after && before)) {
            mg_reply_error(&r, req->ep, 400, "invalid_request_error", NULL,
                           after && before ? "give after_id or before_id, not both"
                                           : "limit: an integer from 1 to 1000");
            goto done;
        }
        const char *cursor = after ? after : before;
        size_t at = 0;
        while (cursor && at < total && strcmp(names[at].id, cursor) != 0) at++;
        if (cursor && at == total) {
            from = to = 0;
        } else if (after) {
            from = at + 1;
            to = total - from > (size_t)limit ? from + (size_t)limit : total;
            more = to < total;
        } else if (before) {
            to = at;
            from = to > (size_t)limit ? to - (size_t)limit : 0;
            more = from > 0;
        } else {
            to = total > (size_t)limit ? (size_t)limit : total;
            more = to < total;
        }
    }
    mg_buf_puts(&r.body, anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[");
    for (size_t i = from; i < to; i++) {
        if (i > from) mg_buf_puts(&r.body, ",");
        model_object(&r.body, anthropic, &names[i], g->loaded_wall_ms);
    }
    if (anthropic) {
        mg_buf_printf(&r.body, "],\"has_more\":%s,\"first_id\":", more ? "true" : "false");
        mg_buf_json_str(&r.body, from < to ? names[from].id : NULL);
        mg_buf_puts(&r.body, ",\"last_id\":");
        mg_buf_json_str(&r.body, from < to ? names[to - 1].id : NULL);
        mg_buf_puts(&r.body, "}");
    } else {
        mg_buf_puts(&r.body, "]}");
    }
done:
    free(names);
    mg_gen_release(g);
    return send_reply(c, req, &r);
}

static size_t upstream_active(mg_server_t *srv)
{
    size_t n = 0;
    for (int i = 0; i < srv->n_workers; i++) n += mg_upstream_active(srv->workers[i].up);
    return n;
}

static enum MHD_Result serve_health(mg_server_t *srv, struct MHD_Connection *c)
{
    mg_gen_t *g = mg_gen_acquire();
    mg_reply_t r = {.status = 200, .content_type = "application/json", .retry_after_s = -1};
    mg_buf_printf(&r.body, "{\"status\":\"ok\",\"generation\":%llu,\"in_flight\":%u,\"upstream_active\":%zu",
                  (unsigned long long)g->id, atomic_load(&srv->in_flight), upstream_active(srv));
    mg_gen_release(g);
    mg_buf_puts(&r.body, ",\"requests_by_thread\":[");
    for (int i = 0; i < srv->n_workers; i++)
        mg_buf_printf(&r.body, "%s%llu", i ? "," : "",
                      (unsigned long long)atomic_load_explicit(&srv->workers[i].requests, memory_order_relaxed));
    mg_buf_puts(&r.body, "]}");
    return send_reply(c, NULL, &r);
}

/* ---- Host ---- */

/* This machine's own name (gethostname, at start), which clients on the machine or the network
 * use as naturally as localhost: accepted like it, whole or up to its first dot. */
static char self_name[256];

/* Whether a Host header names this gateway as a local client or the admin would: an IP literal
 * (IPv4, or IPv6 in brackets), localhost or a name under .localhost, this machine's name, or one
 * of gateway.allowedHosts ("*" allows any), compared without the port and case. */
static bool host_allowed(const char *host, const mg_gateway_settings_t *gw)
{
    char name[256];
    size_t n = strlen(host);
    if (n >= sizeof name) return false;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end || (end[1] != '\0' && end[1] != ':')) return false;
        size_t len = (size_t)(end - host - 1);
        memcpy(name, host + 1, len);
        name[len] = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, name, &a6) == 1;
    }
    const char *colon = strchr(host, ':');
    size_t len = colon ? (size_t)(colon - host) : n;
    if (colon && strchr(colon + 1, ':')) return false; /* an IPv6 literal must be bracketed */
    memcpy(name, host, len);
    name[len] = '\0';
    if (len && name[len - 1] == '.') name[--len] = '\0'; /* "localhost." is localhost */
    struct in_addr a4;
    if (inet_pton(AF_INET, name, &a4) == 1) return true;
    if (strcasecmp(name, "localhost") == 0) return true;
    if (len > 10 && strcasecmp(name + len - 10, ".localhost") == 0) return true;
    if (self_name[0]) {
        size_t short_len = strcspn(self_name, ".");
        if (strcasecmp(name, self_name) == 0 || (len == short_len && strncasecmp(name, self_name, len) == 0))
            return true;
    }
    for (size_t i = 0; i < gw->n_allowed_hosts; i++)
        if (strcmp(gw->allowed_hosts[i], "*") == 0 || strcasecmp(gw->allowed_hosts[i], name) == 0) return true;
    return false;
}

/* ---- admin ---- */

/* The admin endpoints need `Authorization: Bearer <gateway.adminKey>` when an admin key is configured, and
 * otherwise answers loopback clients only. */
static bool admin_allowed(struct MHD_Connection *c, const mg_config_t *cfg)
{
    if (cfg->gw.admin_key) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return false;
        auth += 7;
        return mg_ct_equal(cfg->gw.admin_key, strlen(cfg->gw.admin_key), auth, strlen(auth));
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return false;
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ci->client_addr;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

static enum MHD_Result serve_admin(mg_server_t *srv, struct MHD_Connection *c, mg_req_t *req, const char *url,
                                   const char *method)
{
    mg_reply_t r = {.status = 200, .content_type = "application/json", .retry_after_s = -1};
    if (!admin_allowed(c, req->gen->cfg))
        return send_error(c, req, 401, "authentication_error", "admin_unauthorized",
                          req->gen->cfg->gw.admin_key
                              ? "the admin endpoints need Authorization: Bearer <gateway.adminKey>"
                              : "the admin endpoints answer loopback clients only (or set gateway.adminKey)");
    if (strcmp(url, "/admin/reload") == 0) {
        if (strcmp(method, "POST") != 0) return send_method_error(c, req, "POST", "use POST /admin/reload");
        char err[1024];
        unsigned long long id = mg_reload(req->gen->cfg->path, "admin", err, sizeof err);
        if (!id) return send_error(c, req, 400, "invalid_request_error", "reload_failed", err);
        mg_buf_printf(&r.body, "{\"result\":\"ok\",\"generation\":%llu", id);
        /* and what its config's load warned of, as the log has it (unless another reload already
         * replaced that generation) */
        mg_gen_t *g = mg_gen_acquire();
        if (g && g->id == id && g->cfg->n_warnings) {
            mg_buf_puts(&r.body, ",\"warnings\":[");
            for (size_t i = 0; i < g->cfg->n_warnings; i++) {
                if (i) mg_buf_puts(&r.body, ",");
                mg_buf_json_str(&r.body, g->cfg->warnings[i]);
            }
            mg_buf_puts(&r.body, "]");
        }
        mg_gen_release(g);
        mg_buf_puts(&r.body, "}");
        return send_reply(c, req, &r);
    }
    if (strcmp(url, "/admin/health") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return send_method_error(c, req, "GET, HEAD", "use GET /admin/health");
        if (mg_router_health()) mg_health_dump_json(mg_router_health(), &r.body, mg_now_ms());
        else mg_buf_puts(&r.body, "{}");
        if (mg_router_calib() && r.body.len && r.body.data[r.body.len - 1] == '}') {
            /* The token estimate's per-model calibration sits beside the health entries. */
            r.body.len--;
            mg_buf_puts(&r.body, r.body.len > 1 ? ",\"token_calibration\":" : "\"token_calibration\":");
            mg_tokens_calib_dump_json(mg_router_calib(), &r.body);
            mg_buf_puts(&r.body, "}");
        }
        return send_reply(c, req, &r);
    }
    if (strcmp(url, "/admin/policy") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return send_method_error(c, req, "GET, HEAD", "use GET /admin/policy");
        mg_gen_t *g = mg_gen_acquire();
        unsigned long long ok, failed;
        mg_reload_counts(&ok, &failed);
        mg_buf_printf(&r.body, "{\"generation\":%llu,\"loaded_at_ms\":%lld,\"config\":{\"path\":",
                      (unsigned long long)g->id, (long long)g->loaded_wall_ms);
        mg_buf_json_str(&r.body, g->cfg->path);
        mg_buf_puts(&r.body, "},\"policy\":{\"path\":");
        mg_buf_json_str(&r.body, mg_policy_path(g->policy));
        mg_buf_puts(&r.body, ",\"sha256\":");
        mg_buf_json_str(&r.body, mg_policy_sha256(g->policy));
        mg_buf_printf(&r.body, ",\"loaded_at_ms\":%lld,\"on_failure\":%s,\"on_complete\":%s",
                      (long long)mg_policy_loaded_ms(g->policy),
                      mg_policy_has_hook(g->policy, "on_failure") ? "true" : "false",
                      mg_policy_has_hook(g->policy, "on_complete") ? "true" : "false");
        mg_policy_stats_t ps = mg_policy_stats(g->policy);
        mg_buf_printf(&r.body, ",\"decisions\":%llu,\"errors\":%llu", (unsigned long long)ps.decisions,
                      (unsigned long long)ps.errors);
        mg_buf_printf(&r.body, "},\"reloads\":{\"ok\":%llu,\"failed\":%llu},\"in_flight\":%u}", ok, failed,
                      atomic_load(&srv->in_flight));
        mg_gen_release(g);
        return send_reply(c, req, &r);
    }
    return send_error(c, req, 404, "invalid_request_error", "not_found", "no such admin endpoint");
}

/* ---- API requests ---- */

static bool api_endpoint(const char *url, mg_endpoint_t *ep)
{
    static const struct {
        const char *path;
        mg_endpoint_t ep;
    } eps[] = {{"/v1/chat/completions", MG_EP_CHAT}, {"/v1/responses", MG_EP_RESPONSES}, {"/v1/messages", MG_EP_MESSAGES}};
    for (size_t i = 0; i < MG_ARRAY_LEN(eps); i++) {
        if (strcmp(url, eps[i].path) == 0) {
            *ep = eps[i].ep;
            return true;
        }
    }
    return false;
}

/* MHD's content reader for a committed stream: hands over queued bytes, suspends the connection
 * when there are none yet (the relay wakes it), resumes a paused upstream once drained. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    mg_req_t *req = cls;
    pthread_mutex_lock(&req->lock);
    if (req->out.len) {
        size_t n = MG_MIN(max, req->out.len);
        memcpy(buf, req->out.data, n);
        mg_buf_consume(&req->out, n);
        bool resume = req->upstream_paused && req->out.len < req->out_cap / 2;
        if (resume) req->upstream_paused = false;
        mg_xfer_t *x = req->committed->xfer;
        pthread_mutex_unlock(&req->lock);
        if (resume) mg_xfer_resume(x);
        return (ssize_t)n;
    }
    if (req->out_done) {
        pthread_mutex_unlock(&req->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    pthread_mutex_unlock(&req->lock);
    return 0;
}

static void stream_free(void *cls)
{
    mg_metrics_active_streams(-1);
    mg_req_release(cls);
}

static enum MHD_Result send_stream(struct MHD_Connection *c, mg_req_t *req)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, req, stream_free);
    if (!resp) return MHD_NO;
    mg_req_ref(req); /* the response's; released by stream_free */
    mg_metrics_active_streams(+1);
    req->status = 200;
    add_header(resp, "Content-Type", "text/event-stream");
    add_header(resp, "Cache-Control", "no-cache");
    add_header(resp, "x-request-id", req->id);
    if (req->ep == MG_EP_MESSAGES) add_header(resp, "request-id", req->id);
    mg_buf_t route = {0};
    mg_router_route_header(req, &route);
    add_header(resp, "x-moongate-route", route.data);
    mg_buf_free(&route);
    add_header(resp, "x-moongate-model", req->served->ref);
    mg_buf_t cmp = {0};
    if (mg_router_compaction_header(req, &cmp)) add_header(resp, "x-moongate-compaction", cmp.data);
    mg_buf_free(&cmp);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Runs the router until a reply is ready (queued) or an attempt is in flight (suspended). */
static enum MHD_Result drive(struct MHD_Connection *c, mg_req_t *req, mg_route_step_t step, mg_reply_t *reply)
{
    while (step == MG_ROUTE_WAIT) {
        pthread_mutex_lock(&req->lock);
        if (!mg_router_attempt_done_locked(req)) {
            req->suspended = true;
            MHD_suspend_connection(c);
            pthread_mutex_unlock(&req->lock);
            return MHD_YES;
        }
        pthread_mutex_unlock(&req->lock);
        step = mg_router_resume(req, reply);
    }
    if (step == MG_ROUTE_STREAM) return send_stream(c, req);
    return send_reply(c, req, reply);
}

/* Request headers as the policy sees them: lower-case names, credentials left out. */
static enum MHD_Result keep_header(void *cls, enum MHD_ValueKind kind, const char *name, const char *value)
{
    mg_req_t *req = cls;
    /* At most 64 are kept for the policy, but never at the expense of the ones routing reads (a
     * proxy in front may add x-moongate-region after the client's own headers). */
    bool routing = name && (strncasecmp(name, "x-moongate-", 11) == 0 || mg_str_eq_nocase(name, "x-data-region"));
    if (!name || !value || (req->n_hdrs >= 64 && !routing)) return MHD_YES;
    if (mg_policy_header_is_secret(name)) return MHD_YES; /* credentials: the policy's one list */
    req->hdrs = mg_xrealloc(req->hdrs, (req->n_hdrs + 1) * sizeof *req->hdrs);
    char *n = mg_xstrdup(name);
    for (char *p = n; *p; p++) *p = (char)tolower((unsigned char)*p);
    req->hdrs[req->n_hdrs++] = (mg_kv_t){n, mg_xstrdup(value)};
    return MHD_YES;
}

static void registry_add(mg_server_t *srv, mg_req_t *req)
{
    pthread_mutex_lock(&srv->reg_lock);
    req->reg_next = srv->reg;
    if (srv->reg) srv->reg->reg_prev = req;
    srv->reg = req;
    pthread_mutex_unlock(&srv->reg_lock);
}

/* ---- connections and the request-head deadline ---- */

static mg_conn_t *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static size_t ip_bucket(const unsigned char *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ key[i]) * 16777619u;
    return h % MG_IP_BUCKETS;
}

/* The count of the connection's client address, created at 0 if new (conn_lock held). NULL for an
 * address that is neither IPv4 nor IPv6. */
static mg_ip_count_t *ip_count_locked(mg_server_t *srv, const struct sockaddr *sa)
{
    unsigned char key[16];
    size_t len;
    if (!sa) return NULL;
    if (sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        len = 4;
    } else if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        len = 16;
    } else {
        return NULL;
    }
    mg_ip_count_t **slot = &srv->ips[ip_bucket(key, len)];
    for (mg_ip_count_t *e = *slot; e; e = e->next)
        if (e->family == sa->sa_family && memcmp(e->addr, key, len) == 0) return e;
    mg_ip_count_t *e = mg_xcalloc(1, sizeof *e);
    e->family = sa->sa_family;
    memcpy(e->addr, key, len);
    e->next = *slot;
    *slot = e;
    return e;
}

static void ip_release_locked(mg_server_t *srv, mg_ip_count_t *e)
{
    if (!e || --e->n) return;
    for (mg_ip_count_t **q = &srv->ips[ip_bucket(e->addr, e->family == AF_INET ? 4 : 16)]; *q; q = &(*q)->next) {
        if (*q == e) {
            *q = e->next;
            free(e);
            return;
        }
    }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    mg_server_t *srv = ((mg_worker_t *)cls)->srv;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add_explicit(&((mg_worker_t *)cls)->open_conns, 1, memory_order_relaxed);
        mg_conn_t *k = mg_xcalloc(1, sizeof *k);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : MHD_INVALID_SOCKET;
        k->since_ms = mg_now_ms();
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        /* Every address is counted, so that a limit a reload sets or lowers counts the
         * connections already open too. */
        mg_gen_t *g = mg_gen_acquire();
        unsigned limit = g ? g->cfg->gw.max_connections_per_ip : 0;
        mg_gen_release(g);
        bool over = false;
        pthread_mutex_lock(&srv->conn_lock);
        k->next = srv->conns;
        if (srv->conns) srv->conns->prev = k;
        srv->conns = k;
        if ((k->ip = ip_count_locked(srv, ai ? ai->client_addr : NULL))) over = ++k->ip->n > limit && limit;
        /* Over gateway.maxConnectionsPerIp (counted across all serving threads): closed before a
         * byte is read, as libmicrohttpd's own limit does. Marked under the lock, which is how
         * the watchdog reads and writes cut. */
        over = over && k->fd != MHD_INVALID_SOCKET;
        if (over) k->cut = true;
        pthread_mutex_unlock(&srv->conn_lock);
        if (over) shutdown(k->fd, SHUT_RDWR);
        *socket_ctx = k;
        return;
    }
    /* MHD closes the socket only after this notification: once k is unlinked here, the watchdog
     * can no longer shut down a descriptor number that a new connection may reuse. */
    atomic_fetch_sub_explicit(&((mg_worker_t *)cls)->open_conns, 1, memory_order_relaxed);
    mg_conn_t *k = *socket_ctx;
    if (!k) return;
    pthread_mutex_lock(&srv->conn_lock);
    if (k->prev) k->prev->next = k->next;
    else srv->conns = k->next;
    if (k->next) k->next->prev = k->prev;
    ip_release_locked(srv, k->ip);
    pthread_mutex_unlock(&srv->conn_lock);
    free(k);
    *socket_ctx = NULL;
}

/* The context on_request's first call finds for a path that holds an escaped NUL ("%00"):
 * libmicrohttpd decodes it and the path would end there ("/v1/chat/completions%00junk" would be
 * served as chat completions), so such a request is refused. */
static char nul_in_path;

/* The request line has arrived (MHD's URI callback): what follows is a request head, not idling.
 * Returns the request's initial context for on_request: NULL, or &nul_in_path. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *c)
{
    mg_server_t *srv = ((mg_worker_t *)cls)->srv;
    mg_conn_t *k = conn_of(c);
    if (k) {
        pthread_mutex_lock(&srv->conn_lock);
        k->started = true;
        pthread_mutex_unlock(&srv->conn_lock);
    }
    for (const char *p = uri; p && *p && *p != '?'; p++)
        if (p[0] == '%' && p[1] == '0' && p[2] == '0') return &nul_in_path;
    return NULL;
}

static void conn_set_in_request(mg_server_t *srv, struct MHD_Connection *c, bool in_request)
{
    mg_conn_t *k = conn_of(c);
    if (!k) return;
    pthread_mutex_lock(&srv->conn_lock);
    k->in_request = in_request;
    if (!in_request) { /* the next head is due from now (keep-alive) */
        k->started = false;
        k->get_body = 0;
        k->since_ms = mg_now_ms();
    }
    pthread_mutex_unlock(&srv->conn_lock);
}

/* Shuts down connections whose request head is not complete within gateway.headerTimeoutMs of
 * their opening (or of their previous request's end), however their bytes are paced; MHD then
 * closes them. One warning per pass for slow heads; idle keep-alive connections go quietly. */
static void watch_conns(mg_server_t *srv, int64_t now, int64_t limit_ms)
{
    unsigned slow = 0, idle = 0;
    pthread_mutex_lock(&srv->conn_lock);
    for (mg_conn_t *k = srv->conns; k; k = k->next) {
        if (k->in_request || k->cut || now - k->since_ms < limit_ms || k->fd == MHD_INVALID_SOCKET) continue;
        k->cut = true;
        shutdown(k->fd, SHUT_RDWR);
        if (k->started) slow++;
        else idle++;
    }
    pthread_mutex_unlock(&srv->conn_lock);
    if (slow)
        mg_log(MG_LOG_WARN, "request head timeout",
               "closed %u connection(s) whose request headers were not complete within gateway.headerTimeoutMs (%lld ms)",
               slow, (long long)limit_ms);
    if (idle)
        mg_log(MG_LOG_DEBUG, "idle connection closed", "%u keep-alive connection(s) idle for %lld ms", idle,
               (long long)limit_ms);
}

static enum MHD_Result reply_too_large(struct MHD_Connection *c, mg_req_t *req)
{
    char msg[128];
    snprintf(msg, sizeof msg, "the request body exceeds gateway.maxBodyBytes (%zu bytes)",
             req->gen->cfg->gw.max_body_bytes);
    pthread_mutex_lock(&req->lock);
    req->body_phase = false;
    pthread_mutex_unlock(&req->lock);
    return send_error(c, req, 413, "invalid_request_error", "request_too_large", msg);
}

/* The framing headers of a request, every line of them (cls: framing_t): how many Content-Length
 * lines and whether they agree, how many Transfer-Encoding lines and the last one. */
typedef struct {
    int n_length, n_te;
    bool lengths_differ;
    const char *first_length, *te;
} framing_t;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    framing_t *f = cls;
    if (key && mg_str_eq_nocase(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->n_te++;
        f->te = value ? value : "";
    }
    if (!key || !mg_str_eq_nocase(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) return MHD_YES;
    if (f->n_length++ == 0) f->first_length = value ? value : "";
    else if (strcmp(f->first_length, value ? value : "") != 0) f->lengths_differ = true;
    return MHD_YES;
}

/* What RFC 9112 (section 6.3) says a server must refuse in how a request's body is framed, since a
 * proxy in front may read the same bytes another way (request smuggling): status and message, or
 * 0. libmicrohttpd 0.9.75 takes the first Content-Length, and lets Content-Length sit beside
 * Transfer-Encoding. Refused in the request's first call, so the connection is closed after. */
static int framing_error(struct MHD_Connection *c, const char **msg)
{
    framing_t f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
    const char *te = f.te;
    if (f.n_te > 1) { /* a proxy that joins them would read "chunked, identity" */
        *msg = "a request may carry one Transfer-Encoding line";
        return 400;
    }
    if (te && f.n_length) {
        *msg = "a request may not carry both Content-Length and Transfer-Encoding";
        return 400;
    }
    if (f.lengths_differ) {
        *msg = "the request carries Content-Length headers that disagree";
        return 400;
    }
    if (te) {
        while (*te == ' ' || *te == '\t') te++;
        size_t n = strlen(te);
        while (n && (te[n - 1] == ' ' || te[n - 1] == '\t')) n--;
        if (n != 7 || strncasecmp(te, "chunked", 7) != 0) {
            *msg = "Transfer-Encoding other than chunked is not supported";
            return 501;
        }
    }
    return 0;
}

/* The endpoint a path names, for the error format and the access log even of a request refused
 * from its head: the three APIs, and the token counts (Anthropic's and Responses'). Another path
 * takes Anthropic's format when the request carries anthropic-version. Returns whether the path is
 * an API endpoint. */
static bool classify_path(struct MHD_Connection *c, const char *url, mg_req_t *req)
{
    if (api_endpoint(url, &req->ep)) return true;
    if (strcmp(url, "/v1/messages/count_tokens") == 0 || strcmp(url, "/v1/responses/input_tokens") == 0) {
        req->ep = url[4] == 'm' ? MG_EP_MESSAGES : MG_EP_RESPONSES;
        req->count_tokens = true;
        return true;
    }
    if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version")) req->ep = MG_EP_MESSAGES;
    return false;
}

/* Finds a Content-Encoding line that is not identity (cls: const char **, set to its value). */
static enum MHD_Result find_encoding(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    if (key && value && *value && mg_str_eq_nocase(key, MHD_HTTP_HEADER_CONTENT_ENCODING) &&
        !mg_str_eq_nocase(value, "identity")) {
        *(const char **)cls = value;
        return MHD_NO; /* found: stop the walk */
    }
    return MHD_YES;
}

/* First call for a request: every request but /health gets an mg_req_t, so that each one (errors
 * included) ends with an access line. Requests that can be answered at once are answered here. */
static enum MHD_Result on_new_request(mg_worker_t *w, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version, void **ctx, bool nul)
{
    mg_server_t *srv = w->srv;
    atomic_fetch_add_explicit(&w->requests, 1, memory_order_relaxed);
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0; /* HEAD: the same, without the body */
    const char *framing_msg = NULL;
    int framing = framing_error(c, &framing_msg);
    if (strcmp(url, "/health") == 0 && !framing && !nul)
        return is_get ? serve_health(srv, c) : send_method_error(c, NULL, "GET, HEAD", "this endpoint accepts GET only");
    mg_gen_t *g = mg_gen_acquire();
    mg_req_t *req = mg_req_new(g, w->up);
    req->method = mg_xstrndup(method, strnlen(method, 16));
    req->path = mg_xstrndup(url, strnlen(url, 512));
    req->conn = c;
    atomic_fetch_add(&srv->in_flight, 1);
    registry_add(srv, req);
    *ctx = req;
    req->is_api = classify_path(c, url, req);
    if (framing)
        return send_error(c, req, framing, "invalid_request_error",
                          framing == 501 ? "not_implemented" : "bad_request_framing", framing_msg);
    if (nul) return send_error(c, req, 400, "invalid_request_error", "invalid_path", "the path holds an escaped NUL (%00)");
    /* HTTP/1.1 requires Host (RFC 9112 section 3.2); the Host checks below rely on it. */
    if (version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
        !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST))
        return send_error(c, req, 400, "invalid_request_error", "missing_host", "an HTTP/1.1 request needs a Host header");

    /* An oversized head is answered in the API's own error format (a head beyond what
     * libmicrohttpd's connection buffer holds gets its plain page before this code runs). */
    size_t max_head = g->cfg->gw.max_header_bytes, url_len = strlen(url);
    const union MHD_ConnectionInfo *hi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (hi && hi->header_size > max_head / 2) /* only then can the query make the URL too long */
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_query_length, &url_len);
    if (url_len > max_head / 2 || (hi && hi->header_size > max_head)) { /* ep: classify_path */
        char msg[160];
        if (url_len > max_head / 2) {
            snprintf(msg, sizeof msg, "the URL is %zu bytes; the limit is half of gateway.maxHeaderBytes (%zu)",
                     url_len, max_head / 2);
            return send_error(c, req, 414, "invalid_request_error", "uri_too_long", msg);
        }
        snprintf(msg, sizeof msg, "the request headers are %zu bytes; gateway.maxHeaderBytes is %zu",
                 hi->header_size, max_head);
        return send_error(c, req, 431, "invalid_request_error", "request_header_fields_too_large", msg);
    }

    /* A request that carries Origin comes from a web page. moongate sends no CORS headers, so no
     * page can make real use of it; but a page can still *send* requests (a cross-site form or
     * fetch, or DNS rebinding, which makes the page same-origin with 127.0.0.1). Where the only
     * guard is the client's address (no gateway.keys for the API, no adminKey for the admin
     * endpoints), any site the local user visits could spend the providers' keys or reload the
     * config: such requests are refused. With keys configured they need a key like any other. */
    bool admin = strncmp(url, "/admin/", 7) == 0;
    bool address_only = admin ? !g->cfg->gw.admin_key : !g->cfg->gw.keys && strncmp(url, "/v1/", 4) == 0;
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (address_only && origin) {
        return send_error(c, req, 403, "permission_error", "origin_not_allowed",
                          admin ? "browser requests (with an Origin header) to /admin/* need gateway.adminKey"
                                : "browser requests (with an Origin header) need a client key (gateway.keys)");
    }
    /* DNS rebinding: a page whose own name now resolves to this address is same-origin with it,
     * and a browser sends its GETs without Origin, so the check above cannot see it read
     * /v1/models or /admin/policy. Its requests still carry its own name in Host: where the
     * address is the only guard, Host must be an IP literal, localhost, or a name the admin lists
     * in gateway.allowedHosts. */
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (address_only && host && !host_allowed(host, &g->cfg->gw)) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "Host %.80s is not this gateway's name: add it to gateway.allowedHosts%s", host,
                 admin ? ", or set gateway.adminKey" : ", or configure client keys (gateway.keys)");
        /* Said in the log too (at most every 10 s), for the admin whose clients reach the gateway
         * by a name it does not know yet: they would otherwise see only their 403s. */
        static _Atomic int64_t last_warned = INT64_MIN / 2;
        int64_t now = mg_now_ms(), was = atomic_load(&last_warned);
        if (now - was >= 10000 && atomic_compare_exchange_strong(&last_warned, &was, now))
            mg_log(MG_LOG_WARN, "host not allowed", "%s", msg);
        return send_error(c, req, 403, "permission_error", "host_not_allowed", msg);
    }
    if (admin) return serve_admin(srv, c, req, url, method);
    if (strcmp(url, "/metrics") == 0) {
        if (!is_get) return send_method_error(c, req, "GET, HEAD", "this endpoint accepts GET only");
        mg_reply_t r = {.status = 200, .content_type = MG_METRICS_CONTENT_TYPE, .retry_after_s = -1};
        mg_metrics_render(&r.body);
        return send_reply(c, req, &r);
    }
    /* GET /v1/models, or /v1/models/{name} (a name may hold '/': provider/id, escaped or not). */
    bool models = strcmp(url, "/v1/models") == 0;
    const char *model_name = strncmp(url, "/v1/models/", 11) == 0 && url[11] ? url + 11 : NULL;
    models = models || model_name;
    /* classify_path named the endpoint (and its error format) and the token counts */
    if (!models && !req->is_api)
        return send_error(c, req, 404, "invalid_request_error", "not_found", "no such endpoint");
    if (g->cfg->gw.keys) {
        /* Client keys: Authorization: Bearer or x-api-key (Anthropic's SDKs), compared in
         * constant time (keys.c). The key never reaches a log line or an upstream. */
        size_t n = 0;
        const char *pk = mg_keys_presented(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                                           MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key"), &n);
        if (!pk)
            return send_error(c, req, 401, "authentication_error", "missing_api_key",
                              "this gateway needs an API key: send Authorization: Bearer <key> or x-api-key: <key>");
        req->key = mg_keys_find_n(g->cfg->gw.keys, pk, n);
        if (!req->key) return send_error(c, req, 401, "authentication_error", "invalid_api_key", "invalid API key");
    }
    if (models) {
        if (!is_get) return send_method_error(c, req, "GET, HEAD", "this endpoint accepts GET only");
        return serve_models(c, req, model_name);
    }
    if (strcmp(method, "POST") != 0) return send_method_error(c, req, "POST", "this endpoint accepts POST only");
    const char *ce = NULL; /* the first Content-Encoding line other than identity, of all of them */
    MHD_get_connection_values(c, MHD_HEADER_KIND, find_encoding, &ce);
    if (ce) {
        char msg[160];
        snprintf(msg, sizeof msg, "Content-Encoding %.60s is not supported: send the JSON body uncompressed", ce);
        return send_error(c, req, 415, "invalid_request_error", "unsupported_content_encoding", msg);
    }
    MHD_get_connection_values(c, MHD_HEADER_KIND, keep_header, req);
    const char *strip = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-moongate-strip-reasoning");
    req->strip_reasoning = strip && (!strcmp(strip, "1") || mg_str_eq_nocase(strip, "true") || mg_str_eq_nocase(strip, "yes"));
    /* A declared length over the limit is refused before a byte of the body is read. */
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > g->cfg->gw.max_body_bytes) return reply_too_large(c, req);
    pthread_mutex_lock(&req->lock);
    req->body_phase = true;
    req->last_body_ms = mg_now_ms();
    pthread_mutex_unlock(&req->lock);
    return MHD_YES;
}

/* The context of a GET between its first and second call (see on_request). */
static char deferred_get;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **ctx)
{
    mg_worker_t *w = cls;
    mg_req_t *req = *ctx;
    /* The absolute form of a request target ("POST http://host/v1/messages", RFC 9112 section
     * 3.2.2), which a server must accept: the path is what follows the authority. */
    if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0) {
        const char *path = strchr(strstr(url, "://") + 3, '/');
        url = path ? path : "/";
    }
    bool nul = req == (mg_req_t *)&nul_in_path;
    if (!req || nul) {
        *ctx = NULL;
        /* libmicrohttpd 0.9.75 closes the connection after a reply queued in the very first call
         * (it cannot know the request had no body to skip): a GET or HEAD is answered on the
         * second call, so that health checks and model lists keep their connection. A request
         * to refuse for its framing or its path is answered now, which closes it. */
        const char *framing_msg;
        if ((strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) && !nul && !framing_error(c, &framing_msg)) {
            /* Not "in request" yet: until its last call (a body it may carry, read and dropped,
             * included) the head deadline (headerTimeoutMs) still covers it. */
            *ctx = &deferred_get;
            return MHD_YES;
        }
        conn_set_in_request(w->srv, c, true);
        return on_new_request(w, c, url, method, version, ctx, nul);
    }
    if (req == (mg_req_t *)&deferred_get) {
        if (*upload_size) {
            /* A GET with a body (curl -X GET -d …): it means nothing to a GET; read and dropped,
             * and the answer comes once the request is whole (libmicrohttpd cannot queue one
             * before). Past 64 KiB the connection is closed instead. */
            size_t n = *upload_size;
            *upload_size = 0;
            mg_conn_t *k = conn_of(c);
            bool over = false;
            if (k) {
                pthread_mutex_lock(&w->srv->conn_lock);
                k->get_body += n;
                over = k->get_body > 64 * 1024;
                pthread_mutex_unlock(&w->srv->conn_lock);
            }
            return over ? MHD_NO : MHD_YES;
        }
        *ctx = NULL;
        conn_set_in_request(w->srv, c, true);
        return on_new_request(w, c, url, method, version, ctx, false);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (!req->body_phase) return MHD_YES; /* already answered (413) */
        size_t max = req->gen->cfg->gw.max_body_bytes;
        if (req->body_too_large || req->body.len + n > max) {
            /* A chunked body over the limit: read on and drop the rest, so the client (still
             * sending) gets its 413 instead of a reset; past 16 times the limit, answer now. */
            if (!req->body_too_large) mg_buf_free(&req->body);
            req->body_too_large = true;
            req->discarded += n;
            if (req->discarded > 16 * max) return reply_too_large(c, req);
        } else {
            mg_buf_append(&req->body, upload, n);
        }
        pthread_mutex_lock(&req->lock);
        req->last_body_ms = mg_now_ms();
        pthread_mutex_unlock(&req->lock);
        return MHD_YES;
    }
    mg_reply_t reply = {.retry_after_s = -1};
    if (req->body_phase) {
        if (req->body_too_large) return reply_too_large(c, req);
        pthread_mutex_lock(&req->lock);
        req->body_phase = false;
        pthread_mutex_unlock(&req->lock);
        return drive(c, req, mg_router_begin(req, &reply), &reply);
    }
    if (req->status) return MHD_YES; /* answered already; MHD is finishing the exchange */
    return drive(c, req, mg_router_resume(req, &reply), &reply);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode toe)
{
    mg_server_t *srv = ((mg_worker_t *)cls)->srv;
    mg_req_t *req = *ctx;
    conn_set_in_request(srv, c, false);
    if (req == (mg_req_t *)&deferred_get || req == (mg_req_t *)&nul_in_path) *ctx = req = NULL;
    if (!req) return;
    *ctx = NULL;
    /* client_gone: the watchdog saw the client leave while its request waited (prefill, a summary,
     * a retry's backoff) and cancelled it; the router then answered an error that MHD could still
     * "send" into the dead socket, so toe may say COMPLETED_OK. It is an abort all the same (499,
     * not the 502 nobody received). */
    bool gone = false;
    pthread_mutex_lock(&req->lock);
    gone = req->client_gone;
    pthread_mutex_unlock(&req->lock);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK || gone) {
        req->client_aborted = true;
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) mg_router_abort(req);
        pthread_mutex_lock(&req->lock);
        bool timed_out = req->body_timed_out, streaming = req->committed != NULL;
        pthread_mutex_unlock(&req->lock);
        /* For the log: 408 for a body past its deadline, else nginx's 499 "client closed request";
         * a stream whose 200 went out keeps it (client_aborted says the client left), whichever
         * side noticed the client leave first. */
        if (!req->status || (req->client_gone && !streaming)) req->status = timed_out ? 408 : 499;
    }
    pthread_mutex_lock(&srv->reg_lock);
    if (req->reg_prev) req->reg_prev->reg_next = req->reg_next;
    else srv->reg = req->reg_next;
    if (req->reg_next) req->reg_next->reg_prev = req->reg_prev;
    pthread_mutex_unlock(&srv->reg_lock);
    mg_buf_t line = {0};
    pthread_mutex_lock(&req->lock);
    mg_router_access_json(req, &line);
    req->conn = NULL;
    pthread_mutex_unlock(&req->lock);
    if (req->is_api) { /* an API request (not /v1/models, /metrics, /admin), refused ones too */
        /* Counted before the access line is written, so whoever reads the line sees the counts. */
        /* A token count is its own api, and nothing was served or spent (no on_complete). */
        mg_metrics_api_t api = req->count_tokens ? MG_METRICS_API_COUNT_TOKENS : (mg_metrics_api_t)req->ep;
        const mg_model_t *m = req->count_tokens ? req->counted_for : req->served;
        mg_metrics_request(api, m ? m->ref : NULL, req->status);
        mg_metrics_latency(api, (double)(mg_now_ms() - req->start_ms) / 1000.0);
        if (req->model_asked && !req->count_tokens) mg_router_account(req);
    }
    mg_log_json(MG_LOG_INFO, "access", line.data);
    mg_buf_free(&line);
    atomic_fetch_sub(&srv->in_flight, 1);
    mg_req_release(req);
}

/* While a connection is suspended MHD does not notice the client leaving, so this thread looks
 * every MG_WATCH_MS: a suspended connection whose socket reads EOF has lost its client, and the
 * attempt in flight is cancelled (its on_done then wakes the connection so MHD can close it).
 * The same pass sends SSE comment keep-alives on committed streams that have been quiet. */
static void watch_one(mg_req_t *req, int64_t now)
{
    bool cancel = false, w = false;
    pthread_mutex_lock(&req->lock);
    bool body_late = req->body_phase && now - req->start_ms >= req->gen->cfg->gw.body_timeout_ms;
    if (req->body_phase && req->conn && (body_late || now - req->last_body_ms >= MG_WATCH_MS * 2)) {
        /* libmicrohttpd 0.9.75 in epoll mode misses an EOF that arrives together with the last
         * bytes of a partial body, and keeps such a connection open until its timeout. A body
         * that stalls at EOF is shut down here, which wakes MHD to close it properly. The same
         * for a body still incomplete past gateway.bodyTimeoutMs: a slow sender (slowloris)
         * holds nothing for longer than that, however it paces its bytes. */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        char ch;
        bool late = body_late; /* checked on every pass: bytes paced under 2 passes apart must not hide it */
        if (ci && (late || recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 0)) {
            if (late) req->body_timed_out = true; /* the access line says 408 */
            shutdown(ci->connect_fd, SHUT_RDWR);
        }
    } else if (req->suspended && req->conn && !req->client_gone) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        char ch;
        if (ci && recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
            req->client_gone = true;
            cancel = true;
        } else if (req->committed && !req->out_done && req->gen->cfg->gw.keepalive_ms > 0 &&
                   now - req->last_out_ms >= req->gen->cfg->gw.keepalive_ms) {
            mg_buf_puts(&req->out, ": keep-alive\n\n");
            req->last_out_ms = now;
            w = mg_req_take_wake_locked(req);
        }
    }
    pthread_mutex_unlock(&req->lock);
    if (cancel) mg_router_abort(req);
    if (w) mg_req_wake(req);
}

static void *watchdog_main(void *arg)
{
    mg_server_t *srv = arg;
    unsigned tick = 0;
    while (!atomic_load(&srv->stopping)) {
        struct timespec ts = {0, MG_WATCH_MS * 1000000L};
        nanosleep(&ts, NULL);
        int64_t now = mg_now_ms();
        mg_gen_t *g = mg_gen_acquire();
        /* Once a second: expire cooldowns, probe providers near the end of theirs. */
        if (++tick % (1000 / MG_WATCH_MS) == 0 && mg_router_health())
            mg_probe_tick(mg_router_health(), g->cfg, srv->workers[0].up, now);
        int64_t head_ms = g->cfg->gw.header_timeout_ms;
        mg_gen_release(g);
        watch_conns(srv, now, head_ms);
        pthread_mutex_lock(&srv->reg_lock);
        for (mg_req_t *r = srv->reg; r; r = r->reg_next) watch_one(r, now);
        pthread_mutex_unlock(&srv->reg_lock);
    }
    return NULL;
}

__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    /* A client that closes before finishing its request (or one the head deadline cut), or
     * that leaves while its answer is being sent (the access line says client_aborted), is
     * routine, not a warning: under a slowloris flood or many clients leaving streams it would
     * be one line per connection. */
    bool routine = strncmp(msg, "Connection socket is closed", 27) == 0 ||
                   (strncmp(msg, "Failed to send", 14) == 0 &&
                    (strstr(msg, "closed by remote peer") || strstr(msg, "no longer available for sending")));
    mg_log(routine ? MG_LOG_DEBUG : MG_LOG_WARN, "http", "%s", msg);
}

/* The driver of a worker's loop: MHD's epoll descriptor, MHD_run, MHD's timeout. */
static void worker_run(void *ud)
{
    mg_worker_t *w = ud;
    mg_log_batch_begin(); /* the access lines of the requests this pass completes: one write */
    MHD_run(w->daemon);
    /* At its connection limit libmicrohttpd takes the listening socket out of its epoll set, and
     * puts it back only at the start of a later pass, once connections have closed. When the pass
     * that closed them is the last thing to happen on this thread, no later pass comes (nothing
     * is readable, no timeout is due) and the thread never accepts again: with every thread in
     * that state the gateway is deaf. So a pass that brings a full daemon under its limit is
     * followed by one more, which re-arms the listening socket. */
    unsigned open = atomic_load_explicit(&w->open_conns, memory_order_relaxed);
    if (w->was_full && open < w->conn_limit) {
        MHD_run(w->daemon);
        open = atomic_load_explicit(&w->open_conns, memory_order_relaxed);
    }
    w->was_full = open >= w->conn_limit;
    mg_log_batch_end();
}

static int64_t worker_timeout(void *ud)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(((mg_worker_t *)ud)->daemon, &t) != MHD_YES) return -1;
    return t > INT32_MAX ? INT32_MAX : (int64_t)t;
}

/* Creates worker i's daemon and loop (not yet running). The first daemon binds sa; the others
 * take a duplicate of its listening socket. */
static bool worker_init(mg_server_t *srv, int i, const struct addrinfo *ai, int port, MHD_socket listen_fd,
                        const mg_gateway_settings_t *gw)
{
    mg_worker_t *w = &srv->workers[i];
    w->srv = srv;
    w->quiesced = MHD_INVALID_SOCKET;
    w->up = mg_upstream_new();
    if (!w->up) return false;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    MHD_socket dup_fd = MHD_INVALID_SOCKET;
    if (i > 0 && (dup_fd = dup(listen_fd)) < 0) return false;
    struct MHD_OptionItem where[] = {
        i == 0 ? (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr}
               : (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, dup_fd, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* gateway.maxConnections is split between the serving threads: the remainder goes to the
     * first ones, so the shares add up to it (rounding each share up let n - 1 more in); every
     * thread takes at least one. */
    unsigned n_w = (unsigned)srv->n_workers;
    unsigned limit = gw->max_connections / n_w + ((unsigned)i < gw->max_connections % n_w ? 1u : 0u);
    if (limit == 0) limit = 1;
    w->conn_limit = limit;
    w->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, w, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_ARRAY, where,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_NOTIFY_CONNECTION, on_connection, w,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, w, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    if (!w->daemon) {
        if (dup_fd != MHD_INVALID_SOCKET) close(dup_fd);
        return false;
    }
    return true;
}

static void workers_free(mg_server_t *srv)
{
    /* The loops end first (cancelling their transfers), so that no MHD_run races the stop; then the
     * daemons close what is left, whose completion callbacks find the transfers already over. */
    for (int i = 0; i < srv->n_workers; i++)
        if (srv->workers[i].up) mg_upstream_join(srv->workers[i].up);
    for (int i = 0; i < srv->n_workers; i++) {
        mg_worker_t *w = &srv->workers[i];
        if (w->daemon) MHD_stop_daemon(w->daemon);
        if (w->quiesced != MHD_INVALID_SOCKET) close(w->quiesced);
    }
    for (int i = 0; i < srv->n_workers; i++) mg_upstream_free(srv->workers[i].up);
    free(srv->workers);
}

mg_server_t *mg_server_start(const char *host, int port)
{
    mg_gen_t *g = mg_gen_acquire();
    const mg_gateway_settings_t *gw = &g->cfg->gw;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0 || !ai) {
        mg_log(MG_LOG_ERROR, "listen failed", "cannot resolve %s: %s", host, gai_strerror(rc));
        mg_gen_release(g);
        return NULL;
    }
    mg_server_t *srv = mg_xcalloc(1, sizeof *srv);
    if (gethostname(self_name, sizeof self_name - 1) != 0) self_name[0] = '\0';
    srv->n_workers = gw->threads > 0 ? gw->threads : 1;
    srv->workers = mg_xcalloc((size_t)srv->n_workers, sizeof *srv->workers);
    pthread_mutex_init(&srv->reg_lock, NULL);
    pthread_mutex_init(&srv->conn_lock, NULL);
    mg_req_wake_fn = wake;
    MHD_socket listen_fd = MHD_INVALID_SOCKET;
    const char *failed = NULL;
    for (int i = 0; i < srv->n_workers && !failed; i++) {
        if (!worker_init(srv, i, ai, port, listen_fd, gw)) {
            failed = i == 0 ? "address in use, or not permitted" : "cannot start a serving thread";
            break;
        }
        if (i == 0) {
            const union MHD_DaemonInfo *li = MHD_get_daemon_info(srv->workers[0].daemon, MHD_DAEMON_INFO_LISTEN_FD);
            listen_fd = li ? li->listen_fd : MHD_INVALID_SOCKET;
        }
    }
    freeaddrinfo(ai);
    for (int i = 0; i < srv->n_workers && !failed; i++) {
        mg_worker_t *w = &srv->workers[i];
        const union MHD_DaemonInfo *ei = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        mg_loop_driver_t drv = {.fd = ei ? ei->epoll_fd : -1, .run = worker_run, .timeout_ms = worker_timeout, .ud = w};
        if (drv.fd < 0 || !mg_upstream_run(w->up, &drv)) failed = "cannot start a serving thread";
    }
    if (failed) {
        mg_log(MG_LOG_ERROR, "listen failed", "cannot listen on %s:%d (%s)", host, port, failed);
        workers_free(srv);
        pthread_mutex_destroy(&srv->reg_lock);
        pthread_mutex_destroy(&srv->conn_lock);
        free(srv);
        mg_gen_release(g);
        return NULL;
    }
    srv->watchdog_running = pthread_create(&srv->watchdog, NULL, watchdog_main, srv) == 0;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->workers[0].daemon, MHD_DAEMON_INFO_BIND_PORT);
    int bound = info ? info->port : port;
    mg_buf_t extra = {0};
    size_t nkeys = gw->keys ? mg_keys_count(gw->keys) : 0;
    bool loopback = strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
    mg_buf_printf(&extra, "\"addr\":\"%s%s%s:%d\",\"threads\":%d,\"generation\":%llu,\"client_keys\":%zu",
                  strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", bound, srv->n_workers,
                  (unsigned long long)g->id, nkeys);
    if (!nkeys)
        mg_buf_puts(&extra, loopback ? ",\"note\":\"no client keys configured: listening on loopback only\""
                                     : ",\"note\":\"no client keys configured and not on loopback: anyone who can reach this address can use it; "
                                       "clients that use a DNS name other than this machine's need it in gateway.allowedHosts\"");
    mg_log_json(nkeys || loopback ? MG_LOG_INFO : MG_LOG_WARN, "listening", extra.data);
    mg_buf_free(&extra);
    mg_gen_release(g);
    return srv;
}

void mg_server_quiesce(mg_server_t *srv)
{
    for (int i = 0; i < srv->n_workers; i++) {
        mg_worker_t *w = &srv->workers[i];
        if (w->quiesced != MHD_INVALID_SOCKET) continue;
        w->quiesced = MHD_quiesce_daemon(w->daemon);
        /* Quiesced, the socket still listens: the kernel would complete new connections that
         * nobody accepts, reset at exit after the drain. Shut down, it refuses them at once (a
         * load balancer tries elsewhere); the descriptor itself stays open until the stop. */
        if (w->quiesced != MHD_INVALID_SOCKET) shutdown(w->quiesced, SHUT_RDWR);
    }
}

void mg_server_stop_upstreams(mg_server_t *srv)
{
    for (int i = 0; i < srv->n_workers; i++) mg_upstream_stop(srv->workers[i].up);
}

unsigned mg_server_in_flight(mg_server_t *srv)
{
    return atomic_load(&srv->in_flight);
}

void mg_server_stop(mg_server_t *srv)
{
    if (!srv) return;
    atomic_store(&srv->stopping, true);
    if (srv->watchdog_running) pthread_join(srv->watchdog, NULL);
    workers_free(srv);
    pthread_mutex_destroy(&srv->reg_lock);
    pthread_mutex_destroy(&srv->conn_lock);
    for (size_t i = 0; i < MG_IP_BUCKETS; i++) {
        while (srv->ips[i]) {
            mg_ip_count_t *e = srv->ips[i];
            srv->ips[i] = e->next;
            free(e);
        }
    }
    free(srv);
}

/* Plan execution: candidates, attempts, fallback, the final reply. See router.h. */
#include "router.h"

#include "health.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "tokens.h"

#include "summary.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mg_health_t *health;       /* process-wide; NULL in unit tests */
static mg_tokens_calib_t *calib;  /* process-wide token calibration; NULL: raw estimates */

void mg_router_set_calib(mg_tokens_calib_t *c)
{
    calib = c;
}

mg_tokens_calib_t *mg_router_calib(void)
{
    return calib;
}

void mg_router_set_health(mg_health_t *h)
{
    health = h;
}

mg_health_t *mg_router_health(void)
{
    return health;
}

/* ---- planning ---- */

/* Keeps the candidates that are not cooling down, in order; when all are, only the one whose
 * cooldown ends first (a stale view must not fail the request closed). The others are noted for
 * the access log. */
static void order_by_health(mg_req_t *req)
{
    if (!health || req->n_cands == 0) return;
    size_t idx[MG_MAX_CANDIDATES];
    size_t n = mg_health_order(health, req->cands, req->n_cands, mg_now_ms(), idx);
    const mg_model_t *kept[MG_MAX_CANDIDATES];
    mg_candidate_t kept_opts[MG_MAX_CANDIDATES];
    bool keep[MG_MAX_CANDIDATES] = {0};
    for (size_t i = 0; i < n; i++) {
        kept[i] = req->cands[idx[i]];
        kept_opts[i] = req->cand_opts[idx[i]];
        keep[idx[i]] = true;
    }
    for (size_t i = 0; i < req->n_cands; i++)
        if (!keep[i] && req->n_skipped < MG_MAX_CANDIDATES) req->skipped[req->n_skipped++] = req->cands[i];
    memcpy(req->cands, kept, n * sizeof *kept);
    memcpy(req->cand_opts, kept_opts, n * sizeof *kept_opts);
    req->n_cands = n;
}

static void reply_unknown_model(mg_req_t *req, mg_reply_t *reply);

/* ---- the policy's view of live state (health.c) ---- */

static void live_fill(const mg_health_stats_t *st, int64_t now, mg_live_state_t *out)
{
    out->healthy = st->healthy;
    out->cooling_down = st->cooling_down;
    out->cooldown_until_ms = st->cooling_down ? mg_wall_ms() + (st->cooldown_until_ms - now) : 0;
    out->latency_ms_p50 = st->latency_samples ? (double)st->latency_p50 : -1;
    out->ttft_ms_p50 = st->ttft_samples ? (double)st->ttft_p50 : -1;
    out->in_flight = st->in_flight;
    out->error_rate = st->error_rate;
    out->last_error_class = st->failures_total ? mg_class_name(st->last_class) : NULL;
    out->learned_context_window = st->learned_window;
}

static bool live_model(void *ud, const mg_model_t *m, mg_live_state_t *out)
{
    mg_health_stats_t st;
    int64_t now = mg_now_ms();
    if (!health || !mg_health_query(health, m->provider->id, m->ref, now, &st) || !st.known) return false;
    live_fill(&st, now, out);
    return true;
}

static bool live_provider(void *ud, const mg_provider_t *p, mg_live_state_t *out)
{
    mg_health_stats_t st;
    int64_t now = mg_now_ms();
    if (!health || !mg_health_query(health, p->id, NULL, now, &st) || !st.known) return false;
    live_fill(&st, now, out);
    return true;
}

static const mg_live_view_t live_view = {NULL, live_model, live_provider};

/* Whether a message holds a part of type t, in a tool result's content too. */
static bool has_part(const mg_ir_request_t *ir, mg_ir_part_type_t t)
{
    for (size_t i = 0; i < ir->n_messages; i++)
        for (size_t k = 0; k < ir->messages[i].n_parts; k++) {
            const mg_ir_part_t *p = &ir->messages[i].parts[k];
            if (p->type == t) return true;
            for (size_t j = 0; j < p->n_parts; j++)
                if (p->parts[j].type == t) return true;
        }
    return false;
}

/* req.metadata: the body's "metadata" object (OpenAI's string map, Anthropic's user_id), name =
 * text; numbers and booleans as their text, anything else left out. Copied into the arena. */
static void fill_metadata(mg_req_t *req, mg_route_input_t *in)
{
    const cJSON *md = req->json ? cJSON_GetObjectItemCaseSensitive(req->json, "metadata") : NULL;
    if (!cJSON_IsObject(md)) return;
    size_t n = 0;
    for (const cJSON *e = md->child; e && n < 64; e = e->next) n++;
    if (!n) return;
    mg_kv_t *kv = mg_ir_alloc(req->arena, n * sizeof *kv);
    size_t k = 0;
    for (const cJSON *e = md->child; e && k < n; e = e->next) {
        char num[64];
        const char *v = NULL;
        if (!e->string) continue;
        if (cJSON_IsString(e)) {
            v = e->valuestring;
        } else if (cJSON_IsBool(e)) {
            v = cJSON_IsTrue(e) ? "true" : "false";
        } else if (cJSON_IsNumber(e)) {
            double d = e->valuedouble;
            if (d == (double)(long long)d && d > -1e15 && d < 1e15) snprintf(num, sizeof num, "%lld", (long long)d);
            else snprintf(num, sizeof num, "%.15g", d);
            v = num;
        }
        if (!v) continue;
        kv[k++] = (mg_kv_t){mg_ir_strdup(req->arena, e->string), mg_ir_strdup(req->arena, v)};
    }
    in->metadata = kv;
    in->n_metadata = k;
}

/* The request as the policy sees it; borrowed from req, valid as long as req. */
static void fill_input(mg_req_t *req)
{
    static const char *const ep_names[] = {"chat", "responses", "messages"};
    mg_route_input_t *in = &req->pin;
    memset(in, 0, sizeof *in);
    in->cfg = req->gen->cfg;
    in->model = req->model_asked;
    in->endpoint = ep_names[req->ep];
    in->stream = req->stream;
    in->max_output_tokens = req->ir_ready ? req->ir.max_output_tokens : -1;
    if (req->ir_ready) {
        mg_tokens_opts_t to = {.calib = NULL};
        in->prompt_tokens = mg_tokens_estimate(&req->ir, &to);
        in->has_tools = req->ir.n_tools > 0;
        in->has_images = has_part(&req->ir, MG_IR_PART_IMAGE);
    } else {
        in->prompt_tokens = (int64_t)(req->body.len / 3);
    }
    in->headers = req->hdrs;
    in->n_headers = req->n_hdrs;
    fill_metadata(req, in);
    if (req->gen->cfg->gw.allowed_regions) {
        in->gateway_regions = (const char *const *)req->gen->cfg->gw.allowed_regions;
        in->n_gateway_regions = req->gen->cfg->gw.n_allowed_regions;
    }
    if (req->key) {
        in->key_id = req->key->id;
        in->key = req->key;
        if (req->key->n_regions) {
            in->allowed_regions = (const char *const *)req->key->regions;
            in->n_allowed_regions = req->key->n_regions;
        }
    }
    for (size_t i = 0; i < req->n_hdrs; i++)
        if (!in->data_region && strcmp(req->hdrs[i].name, "x-moongate-region") == 0) /* the first, as req.headers */
            in->data_region = req->hdrs[i].value;
}

/* Asks the policy for the plan. Returns false with *reply set when the request ends here (a
 * rejection, or a policy that failed). */
static bool plan(mg_req_t *req, mg_reply_t *reply)
{
    fill_input(req);
    mg_plan_t pl;
    int rc = mg_policy_route(req->gen->policy, &req->pin, &live_view, &pl);
    mg_metrics_policy_decision((double)pl.elapsed_us / 1e6);
    size_t tl = strnlen(pl.trace, sizeof req->trace - 1); /* as snprintf "%s", without printf */
    memcpy(req->trace, pl.trace, tl);
    req->trace[tl] = '\0';
    if (rc < 0) {
        mg_log(MG_LOG_ERROR, "policy", "%s", pl.error);
        if (!req->gen->cfg->gw.policy_error_static) {
            mg_reply_error(reply, req->ep, 500, "server_error", "policy_error", pl.error);
            return false;
        }
        mg_policy_static_plan(req->gen->cfg, &req->pin, &pl); /* gateway.onPolicyError: "static" */
    }
    if (pl.rejected) { /* the policy's own words (util.unknown_model lists what exists) */
        mg_reply_error(reply, req->ep, pl.status, "invalid_request_error", pl.code, pl.message);
        return false;
    }
    for (size_t i = 0; i < pl.n_cands && req->n_cands < MG_MAX_CANDIDATES; i++) {
        req->cand_opts[req->n_cands] = pl.cands[i];
        req->cands[req->n_cands++] = pl.cands[i].model;
    }
    order_by_health(req);
    return true;
}

/* The policy's options for candidate m (defaults when it has none). */
static mg_candidate_t cand_options(const mg_req_t *req, const mg_model_t *m)
{
    for (size_t i = 0; i < req->n_cands; i++)
        if (req->cands[i] == m) return req->cand_opts[i];
    return (mg_candidate_t){.model = m, .max_output_tokens = -1, .compaction = -1, .strip_reasoning = -1};
}

static void reply_unknown_model(mg_req_t *req, mg_reply_t *reply)
{
    const mg_config_t *cfg = req->gen->cfg;
    mg_buf_t msg = {0};
    if (strcmp(req->model_asked, "default") == 0)
        mg_buf_puts(&msg, "no default model is configured (agents.defaults.model)");
    else
        mg_buf_printf(&msg, "The model `%s` does not exist in this gateway's catalog", req->model_asked);
    mg_buf_puts(&msg, ". Available:");
    size_t shown = 0;
    for (size_t p = 0; p < cfg->n_providers; p++)
        for (size_t k = 0; k < cfg->providers[p].n_models && shown < 50; k++, shown++)
            mg_buf_printf(&msg, "%s %s", shown ? "," : "", cfg->providers[p].models[k].ref);
    for (size_t k = 0; k < cfg->n_aliases && shown < 60; k++, shown++)
        mg_buf_printf(&msg, ", %s", cfg->aliases[k].alias);
    if (cfg->n_default_chain) mg_buf_puts(&msg, ", default");
    mg_reply_error(reply, req->ep, 404, "invalid_request_error", "model_not_found", msg.data);
    mg_buf_free(&msg);
}

/* ---- attempts ---- */

/* The model as its request must be fitted: with the window its server named in an earlier
 * overflow (mg_health_learn_window), if any. */
static const mg_model_t *fit_model(const mg_model_t *m, mg_model_t *tmp)
{
    return mg_compact_fit_model(m, mg_health_window(health, m->ref, mg_now_ms()), tmp);
}

/* The window m really has, as far as the gateway knows: the configured one, or the smaller one its
 * server named. 0 when unknown. */
static int64_t effective_window(const mg_model_t *m)
{
    mg_model_t tmp;
    return fit_model(m, &tmp)->context_window;
}

/* m overflowed: from now on only a larger window is worth a try (start_next). */
static void note_overflow(mg_req_t *req, const mg_model_t *m)
{
    int64_t w = effective_window(m);
    req->overflowed = true;
    if (w > req->overflow_window) req->overflow_window = w;
}

static mg_attempt_t *new_attempt(mg_req_t *req, const mg_model_t *m)
{
    mg_attempt_t *a = &req->attempts[req->n_attempts++];
    memset(a, 0, sizeof *a);
    a->req = req;
    a->model = m;
    a->start_ms = a->end_ms = mg_now_ms();
    a->ttft_ms = -1;
    a->retry_after_ms = a->next_seq = -1;
    return a;
}

/* Records an attempt that ended before any byte left (no key, no translation…). */
static void settle_locally(mg_attempt_t *a, mg_class_t cls, const char *detail)
{
    a->done = true;
    a->cls = cls;
    snprintf(a->detail, sizeof a->detail, "%.*s", (int)sizeof a->detail - 1, detail);
}

/* a, b and c end to end in a fresh string the caller frees (one allocation, no printf). */
static char *join3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *p = mg_xmalloc(la + lb + lc + 1);
    memcpy(p, a, la);
    memcpy(p + la, b, lb);
    memcpy(p + la + lb, c, lc);
    p[la + lb + lc] = '\0';
    return p;
}

static char *upstream_url(const mg_provider_t *p)
{
    switch (p->api) {
    case MG_API_OPENAI_COMPLETIONS: return join3(p->base_url, "/chat/completions", "");
    case MG_API_OPENAI_RESPONSES: return join3(p->base_url, "/responses", "");
    case MG_API_ANTHROPIC_MESSAGES: {
        size_t n = strlen(p->base_url);
        bool has_v1 = n >= 3 && strcmp(p->base_url + n - 3, "/v1") == 0;
        return join3(p->base_url, has_v1 ? "" : "/v1", "/messages");
    }
    }
    return NULL;
}

/* Headers of a request to provider p: ours, the provider's, and of the client's only an
 * Anthropic client's anthropic-beta to an Anthropic upstream (beta, or NULL). */
typedef struct up_headers {
    const char *v[40];
    char *owned[40];
    size_t n, n_owned;
} up_headers_t;

static void upstream_headers(const mg_provider_t *p, bool stream, const char *beta, up_headers_t *h)
{
    h->n = h->n_owned = 0;
    h->v[h->n++] = "Content-Type: application/json";
    h->v[h->n++] = stream ? "Accept: text/event-stream" : "Accept: application/json";
    if (p->api == MG_API_ANTHROPIC_MESSAGES) {
        if (p->api_key && *p->api_key)
            h->v[h->n++] = h->owned[h->n_owned++] = join3("x-api-key: ", p->api_key, "");
        h->v[h->n++] = "anthropic-version: 2023-06-01";
    } else if (p->api_key && *p->api_key) {
        h->v[h->n++] = h->owned[h->n_owned++] = join3("Authorization: Bearer ", p->api_key, "");
    }
    bool beta_set = false; /* the admin's own anthropic-beta wins */
    for (size_t i = 0; i < p->n_headers && h->n < MG_ARRAY_LEN(h->v); i++) {
        h->v[h->n++] = h->owned[h->n_owned++] = join3(p->headers[i].name, ": ", p->headers[i].value);
        beta_set = beta_set || mg_str_eq_nocase(p->headers[i].name, "anthropic-beta");
    }
    if (beta && !beta_set && h->n < MG_ARRAY_LEN(h->v))
        h->v[h->n++] = h->owned[h->n_owned++] = join3("anthropic-beta: ", beta, "");
}

/* The client's anthropic-beta flags that the provider allows (gateway.providers.<id>.anthropicBetas),
 * comma-joined, when its request goes to an upstream of its own API, Anthropic's: the SDKs'
 * `betas` and Claude Code's features (1M context, interleaved thinking) ask for them this way.
 * Only listed flags pass, so no client text reaches the upstream (which quotes an unknown flag in
 * its error) and no client turns on what the operator did not. NULL when none. */
static char *client_betas(const mg_req_t *req, const mg_provider_t *p)
{
    if (!p->n_betas) return NULL;
    bool *asked = mg_xcalloc(p->n_betas, sizeof *asked);
    for (size_t i = 0; i < req->n_hdrs; i++) {
        if (strcmp(req->hdrs[i].name, "anthropic-beta") != 0) continue;
        for (const char *f = req->hdrs[i].value; *f;) {
            f += strspn(f, " ,");
            size_t n = strcspn(f, " ,");
            for (size_t k = 0; n && k < p->n_betas; k++)
                if (strlen(p->betas[k]) == n && strncmp(p->betas[k], f, n) == 0) asked[k] = true;
            f += n;
        }
    }
    mg_buf_t b = {0};
    for (size_t k = 0; k < p->n_betas; k++) {
        if (!asked[k]) continue;
        if (b.len) mg_buf_puts(&b, ",");
        mg_buf_puts(&b, p->betas[k]);
    }
    free(asked);
    return b.data;
}

static void up_headers_free(up_headers_t *h)
{
    for (size_t i = 0; i < h->n_owned; i++)
        free(h->owned[i]);
    h->n_owned = 0;
}

/* ---- compaction: the candidate's settings, the policy's hook, summaries ---- */

/* The safety filters for provider p: its gateway.providers.<id>.safety object over the
 * defaults, and the extra control tokens of gateway.compaction then its own. extra must have
 * room for 2 * MG_MAX_EXTRA_TOKENS entries; so borrows it and the config. */
static void safety_opts_for(const mg_config_t *cfg, const mg_provider_t *p, mg_safety_opts_t *so,
                            const char **extra)
{
    const mg_safety_conf_t *sc = &p->safety_conf;
    mg_safety_opts_init(so);
    if (sc->control_tokens >= 0) so->control_tokens = sc->control_tokens;
    if (sc->old_reasoning >= 0) so->old_reasoning = sc->old_reasoning;
    if (sc->tool_result_max_bytes >= 0)
        so->tool_result_max_bytes = (size_t)sc->tool_result_max_bytes;
    size_t n = 0;
    for (size_t i = 0; i < cfg->gw.compaction.n_extra_tokens; i++)
        extra[n++] = cfg->gw.compaction.extra_tokens[i];
    for (size_t i = 0; i < sc->n_extra_tokens; i++)
        extra[n++] = sc->extra_tokens[i];
    so->extra_tokens = extra;
    so->n_extra_tokens = n;
}

/* Tokens of the "[Summary of N earlier turns by moongate: …]" wrapper, kept besides the summary. */
#define SUMMARY_WRAPPER_TOKENS 32

/* Compaction for candidate m: gateway.compaction over the module's defaults, the policy's
 * compaction option first. */
static void compact_opts_for(const mg_config_t *cfg, const mg_model_t *m, const mg_candidate_t *opt,
                             mg_compact_opts_t *co)
{
    const mg_compaction_conf_t *cc = &cfg->gw.compaction;
    mg_compact_opts_init(co);
    co->enabled = opt->compaction >= 0 ? opt->compaction == 1 : cc->enabled;
    co->tokens = (mg_tokens_opts_t){.calib = calib, .model_ref = m->ref};
    if (cc->tool_result_max_bytes) co->tool_result_max_bytes = cc->tool_result_max_bytes;
    if (cc->message_max_bytes) co->message_max_bytes = cc->message_max_bytes;
    if (cc->min_keep_bytes) co->min_keep_bytes = cc->min_keep_bytes;
    co->drop_current_steps = cc->drop_current_steps;
    co->summary_reserve_tokens = cc->summary_max_tokens + SUMMARY_WRAPPER_TOKENS;
    co->summary_timeout_ms = cc->summary_timeout_ms;
}

/* Who summarizes the turns dropped for this candidate: the policy's choice, else the config's. */
static const mg_model_t *summarizer_for(const mg_req_t *req, const mg_candidate_t *opt)
{
    if (opt->summarize == 0) return NULL;
    if (opt->summarize == 1) return opt->summarizer;
    return req->gen->cfg->gw.compaction.summarizer;
}

/* Appends "; text" to the request's trace (x-moongate-route, the access log), printable ASCII
 * only, cut to fit. */
static void trace_note(mg_req_t *req, const char *text)
{
    size_t len = strlen(req->trace), cap = sizeof req->trace;
    if (len && len + 2 < cap) {
        memcpy(req->trace + len, "; ", 2);
        len += 2;
    }
    for (const char *c = text; *c && len + 1 < cap; c++)
        req->trace[len++] = (*c >= 0x20 && *c < 0x7f) ? *c : '?';
    req->trace[len] = '\0';
}

/* Records why a summary or the policy's compaction was not used: the attempt's note (access log)
 * and a warning line. */
static void compaction_note(mg_req_t *req, mg_attempt_t *a, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void compaction_note(mg_req_t *req, mg_attempt_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->compaction_note, sizeof a->compaction_note, fmt, ap);
    va_end(ap);
    mg_log(MG_LOG_WARN, "compaction", "%s %s: %s", req->id, a->model->ref, a->compaction_note);
}

/* The policy's compact hook, for a candidate the request does not fit: 1 with *cand replaced by
 * the hook's result once C has checked it (well formed, within budget), else 0 (the hook left it
 * to the gateway, or failed, or its result was refused: the note says which) and the caller
 * compacts deterministically. */
static int policy_compact(mg_req_t *req, mg_attempt_t *a, mg_ir_request_t *cand, int64_t budget,
                          const mg_compact_opts_t *co)
{
    mg_compact_call_t call = {.model = a->model,
                              .budget = budget,
                              .tokens = co->tokens,
                              .req = cand,
                              .arena = req->arena};
    int rc = mg_policy_compact(req->gen->policy, &req->pin, &live_view, &call);
    if (call.trace[0]) trace_note(req, call.trace);
    if (rc == 0) return 0;
    char why[MG_POLICY_MSG_MAX];
    if (rc < 0) {
        compaction_note(req, a,
                        "the policy's compact hook failed, compacted by moongate instead: %s",
                        call.error);
        trace_note(req, "compact hook failed");
        return 0;
    }
    if (mg_compact_validate(&call.result, budget, &co->tokens, why, sizeof why) != 0) {
        compaction_note(req, a,
                        "the policy's compact hook returned a request that was refused, compacted "
                        "by moongate instead: %s",
                        why);
        trace_note(req, "compact hook result refused");
        return 0;
    }
    mg_compact_report_t *r = &a->compaction;
    r->budget = budget;
    r->tokens_before = mg_tokens_estimate(cand, &co->tokens);
    r->raw_fixed_after = 0;
    r->raw_after =
        mg_tokens_raw(&call.result, mg_tokens_image_cost(&co->tokens), &r->raw_fixed_after);
    r->tokens_after = mg_tokens_estimate(&call.result, &co->tokens);
    if (call.result.n_messages < cand->n_messages)
        r->dropped_messages += (int)(cand->n_messages - call.result.n_messages);
    r->filters |= MG_COMPACT_F_POLICY;
    *cand = call.result;
    return 1;
}

/* The summarizer's transfer (upstream thread): the answer is collected whole, under a cap. */
#define SUMMARY_BODY_MAX (1u << 20)

static void summary_head(void *ud, long status, const char *headers, size_t len)
{
    mg_req_t *req = ud;
    req->summary.status = status;
    mg_buf_reset(&req->summary.headers);
    mg_buf_append(&req->summary.headers, headers, len);
}

static size_t summary_data(void *ud, mg_xfer_t *x, const char *p, size_t n)
{
    mg_req_t *req = ud;
    if (req->summary.body.len + n > SUMMARY_BODY_MAX) return MG_XFER_DATA_ABORT;
    mg_buf_append(&req->summary.body, p, n);
    return n;
}

static void summary_done(void *ud, mg_xfer_result_t result, const char *detail)
{
    mg_req_t *req = ud;
    pthread_mutex_lock(&req->lock);
    req->summary.result = result;
    snprintf(req->summary.detail, sizeof req->summary.detail, "%s", detail);
    req->summary.done = true;
    bool w = mg_req_take_wake_locked(req);
    pthread_mutex_unlock(&req->lock);
    if (w) mg_req_wake(req);
    mg_req_release(req); /* the run's reference */
}

/* Ends the summary run's health attempt: its outcome (c) counts for the summarizer as an
 * attempt's would (latency, cooldowns, Retry-After); a cancelled one is not counted. */
static void summary_health(mg_req_t *req, mg_classification_t c)
{
    mg_summary_run_t *run = &req->summary;
    if (!health || !run->health_begun) return;
    const char *pid = run->model->provider->id;
    int64_t now = mg_now_ms();
    mg_health_attempt_end(health, pid, run->model->ref);
    run->health_begun = false;
    if (c.cls == MG_CLASS_CANCELLED) return;
    mg_health_outcome_t o = mg_health_outcome(c.cls);
    o.endpoint = mg_health_endpoint(run->model->provider); /* as of the request's generation */
    o.xfer = run->result;
    o.http_status = run->status;
    o.latency_ms = now - run->start_ms;
    o.retry_after_ms = c.retry_after_ms;
    o.should_retry = c.should_retry;
    if (c.cls != MG_CLASS_OK && run->detail[0]) o.message = run->detail;
    mg_health_report(health, pid, run->model->ref, &o, now);
}

/* The summary this request already has of exactly what summarizer s would now be asked, or NULL. */
static const mg_summary_memo_t *summary_memo(const mg_req_t *req, const mg_model_t *s,
                                             const char *asked, size_t asked_len)
{
    for (const mg_summary_memo_t *m = req->summaries; m; m = m->next)
        if (m->model == s && m->asked_len == asked_len && memcmp(m->asked, asked, asked_len) == 0)
            return m;
    return NULL;
}

/* Asks summarizer s (non-streaming, through the upstream loop) for a summary of the turns
 * compaction drops from this candidate, and parks the candidate: it is compacted again from
 * filtered with room kept for the summary, and the deterministic result (cand, a->compaction)
 * is kept for when no summary comes. Returns true when the run started (the request waits:
 * finish_summary sends the candidate), false when the caller sends cand now: with no summary
 * (the note says why), or with the one an earlier candidate or try of this request had made of
 * the same turns (then cand and a->compaction are replaced; the note says so). */
static bool start_summary(mg_req_t *req, mg_attempt_t *a, const mg_model_t *s,
                          const mg_ir_request_t *filtered, const mg_compact_report_t *filtered_rep,
                          mg_ir_request_t *cand, int64_t budget, const mg_compact_opts_t *co,
                          int64_t delay_ms)
{
    const mg_config_t *cfg = req->gen->cfg;
    const mg_provider_t *sp = s->provider;
    mg_summary_run_t *run = &req->summary;
    if (!mg_policy_region_ok(&req->pin, s)) {
        compaction_note(req, a,
                        "no summary: summarizer %s (region %s) may not receive this request's data",
                        s->ref, sp->region ? sp->region : "none");
        return false;
    }
    bool in_plan = false; /* a key that lists a route name allows that route's plan */
    for (size_t i = 0; i < req->n_cands && !in_plan; i++) in_plan = req->cands[i] == s;
    if (req->key && !in_plan && !mg_keys_allows_model(req->key, s)) { /* the key's models hold for it too */
        compaction_note(req, a, "no summary: the caller's key may not use summarizer %s", s->ref);
        return false;
    }
    if (sp->api_key_env && !sp->api_key) {
        compaction_note(req, a,
                        "no summary: summarizer %s needs environment variable %s, which is not set",
                        s->ref, sp->api_key_env);
        return false;
    }
    mg_ir_request_t reserved = *filtered;
    reserved.max_output_tokens = cand->max_output_tokens; /* capped like the compacted request */
    mg_compact_report_t rrep = *filtered_rep;
    /* The output cap was applied after the filters: it holds for this request too. */
    rrep.filters |= a->compaction.filters & MG_COMPACT_F_MAX_TOKENS;
    rrep.max_tokens_asked = a->compaction.max_tokens_asked;
    rrep.max_tokens_sent = a->compaction.max_tokens_sent;
    if (mg_compact(req->arena, &reserved, budget - co->summary_reserve_tokens, co, &rrep) !=
            MG_COMPACT_CHANGED ||
        rrep.note_index < 0 || rrep.n_dropped == 0) {
        compaction_note(req, a, "no summary: no room for one in this model's budget of %lld tokens",
                        (long long)budget);
        return false;
    }
    int64_t max_tokens = cfg->gw.compaction.summary_max_tokens;
    mg_model_t s_learned;
    size_t cap = mg_summary_input_cap(fit_model(s, &s_learned), max_tokens);
    if (!cap) {
        compaction_note(req, a, "no summary: summarizer %s has too small a context window", s->ref);
        return false;
    }
    mg_safety_opts_t so;
    const char *extra[2 * MG_MAX_EXTRA_TOKENS];
    safety_opts_for(cfg, sp, &so, extra);
    mg_ir_request_t sreq;
    mg_summary_request(req->arena, rrep.dropped, rrep.n_dropped,
                       rrep.dropped_turns - filtered_rep->dropped_turns, cap, max_tokens, &so,
                       &sreq);
    char err[256];
    mg_ir_request_opts_t o = {.model = s->id, .default_max_tokens = max_tokens,
                              .prefer_max_completion_tokens = s->reasoning && sp->openai_host};
    cJSON *j = mg_ir_encode_request(sp->api, &sreq, &o, err, sizeof err);
    if (!j) {
        compaction_note(req, a, "no summary: the request for %s cannot be encoded: %s", s->ref,
                        err);
        return false;
    }
    size_t body_len;
    char *body = mg_ir_print_json(j, &body_len);
    cJSON_Delete(j);
    const mg_summary_memo_t *memo = summary_memo(req, s, body, body_len);
    if (memo) {
        free(body);
        if (mg_compact_insert_summary(req->arena, &reserved, budget, co, &rrep, memo->text,
                                      memo->text_len) != 0) {
            compaction_note(req, a, "summary by %s (made for an earlier try) did not fit this "
                                    "model's budget, the drop note stands", s->ref);
            return false;
        }
        *cand = reserved;
        a->compaction = rrep;
        a->compaction.budget = budget;
        a->raw_estimate = a->compaction.raw_after;
        a->raw_fixed = a->compaction.raw_fixed_after;
        /* Not a warning: the access log's note says where the summary came from. */
        snprintf(a->compaction_note, sizeof a->compaction_note,
                 "summary by %s reused: an earlier try dropped the same turns", s->ref);
        return false;
    }
    /* A summarizer that is failing would hold every such request for summaryTimeoutMs: while it
     * cools down, the drop note stands at once. */
    int64_t until = 0;
    if (health && !mg_health_available(health, sp->id, s->ref, mg_now_ms(), &until)) {
        free(body);
        compaction_note(req, a, "no summary: summarizer %s is cooling down for %lld ms more", s->ref,
                        (long long)MG_MAX(0, until - mg_now_ms()));
        return false;
    }

    run->model = s;
    run->asked = mg_ir_strndup(req->arena, body, body_len);
    run->asked_len = body_len;
    run->reserved = reserved;
    run->reserved_report = rrep;
    run->fallback = *cand;
    run->fallback_report = a->compaction;
    run->opts = *co;
    run->budget = budget;
    run->delay_ms = delay_ms;
    run->status = 0;
    run->result = MG_XFER_OK;
    run->detail[0] = '\0';
    mg_buf_reset(&run->body);
    mg_buf_reset(&run->headers);
    run->done = false;
    run->start_ms = mg_now_ms();
    mg_timeouts_t t = mg_config_timeouts(cfg, s);
    int64_t tmo = cfg->gw.compaction.summary_timeout_ms;
    up_headers_t hd;
    upstream_headers(sp, false, NULL, &hd);
    char *url = upstream_url(sp);
    mg_xfer_spec_t spec = {
        .url = url,
        .headers = hd.v,
        .n_headers = hd.n,
        .body = body,
        .body_len = body_len,
        .body_owned = true,
        .http2 = sp->http2,
        .ca_file = sp->ca_file,
        .connect_timeout_ms = t.connect_ms > 0 ? MG_MIN(t.connect_ms, tmo) : tmo,
        .total_timeout_ms = tmo, /* the bound on the whole summary: a late answer is no answer */
        .cb = {summary_head, summary_data, summary_done},
        .ud = req,
    };
    mg_req_ref(req); /* the run's reference, released by summary_done */
    pthread_mutex_lock(&req->lock); /* active and xfer are read by the watchdog (mg_router_abort) */
    run->active = true;
    pthread_mutex_unlock(&req->lock);
    if (health) {
        mg_health_attempt_begin(health, sp->id, s->ref, false, run->start_ms);
        run->health_begun = true;
    }
    mg_xfer_t *x = mg_xfer_submit(req->up, &spec);
    pthread_mutex_lock(&req->lock);
    run->xfer = x;
    if (!x) run->active = false;
    pthread_mutex_unlock(&req->lock);
    req->summary_ran = req->summary_ran || x != NULL;
    free(url);
    up_headers_free(&hd);
    if (!x) {
        summary_health(req, (mg_classification_t){.cls = MG_CLASS_CANCELLED}); /* not counted */
        mg_req_release(req);
        compaction_note(req, a, "no summary: the gateway is stopping");
        return false;
    }
    return true;
}

static bool send_attempt(mg_req_t *req, mg_attempt_t *a, const mg_ir_request_t *cand, bool rewrite,
                         int64_t delay_ms);

/* Whether an assistant turn of r holds a thinking block without Anthropic's signature. */
static bool has_unsigned_thinking(const mg_ir_request_t *r)
{
    for (size_t i = 0; i < r->n_messages; i++)
        for (size_t k = 0; r->messages[i].role == MG_IR_ASSISTANT && k < r->messages[i].n_parts; k++) {
            const mg_ir_part_t *pt = &r->messages[i].parts[k];
            if (pt->type == MG_IR_PART_REASONING && !pt->redacted && !(pt->signature && *pt->signature))
                return true;
        }
    return false;
}

/* Whether the safety filters run for p's requests: on when the provider says so, or by default
 * for a local one. */
static bool safety_on(const mg_provider_t *p)
{
    return p->safety > 0 || (p->safety < 0 && p->local);
}


/* Starts one attempt at model m (after delay_ms: a retry's backoff): filters and compacts the
 * candidate's copy of the request, then sends it, or first waits for a summary of the turns it
 * dropped (the attempt is then in flight as far as the server can tell). Returns false when it
 * could not even start (then it is settled locally with the reason). */
static bool submit(mg_req_t *req, const mg_model_t *m, bool is_retry, int64_t delay_ms)
{
    const mg_config_t *cfg = req->gen->cfg;
    const mg_provider_t *p = m->provider;
    mg_attempt_t *a = new_attempt(req, m);
    a->is_retry = is_retry;
    mg_candidate_t opt = cand_options(req, m);
    a->strip_reasoning = opt.strip_reasoning >= 0 ? opt.strip_reasoning || req->strip_reasoning
                                                  : req->strip_reasoning || p->strip_reasoning;
    if (p->api_key_env && !p->api_key) {
        char d[160];
        snprintf(d, sizeof d, "environment variable %s is not set", p->api_key_env);
        settle_locally(a, MG_CLASS_NO_KEY, d);
        return false;
    }
    /* A model whose config says it takes no images (input: ["text"], also the default) is not
     * sent them: a local server would drop them or fail in its own way. */
    if (!(m->input & MG_INPUT_IMAGE) && req->pin.has_images) { /* fill_input found them */
        settle_locally(a, MG_CLASS_UNSUPPORTED, "the request has images and the model's input is text only");
        return false;
    }
    /* Same API: the body passes through with only the model changed (and, for Chat streams, usage
     * asked for). Otherwise, or when a Responses/Messages client must not see reasoning, the
     * request goes through the internal model (ir.h) into the upstream's API. */
    bool same = p->api == req->client_api;
    a->mode = same && req->client_api == MG_API_OPENAI_COMPLETIONS ? MG_RELAY_CHAT_RAW
              : same && !a->strip_reasoning                         ? MG_RELAY_RAW
                                                                    : MG_RELAY_TRANSLATE;
    /* Safety filters and compaction work on this candidate's own copy of the request: what fits
     * and needs no filtering goes out as the client sent it. */
    bool rewrite = false;
    mg_ir_request_t cand;
    mg_compact_report_init(&a->compaction);
    a->compaction_note[0] = '\0';
    if (!req->ir_ready && (safety_on(p) || a->mode == MG_RELAY_TRANSLATE)) {
        settle_locally(a, MG_CLASS_UNSUPPORTED,
                       safety_on(p) ? "the request could not be decoded, so the safety filters cannot run"
                                    : "the request could not be decoded for translation");
        return false;
    }
    if (!req->ir_ready) return send_attempt(req, a, NULL, false, delay_ms);
    cand = req->ir;
    if (opt.max_output_tokens > 0 && (cand.max_output_tokens < 0 || cand.max_output_tokens > opt.max_output_tokens)) {
        cand.max_output_tokens = opt.max_output_tokens; /* the policy's output cap */
        rewrite = true;
    }
    /* What the client's own bytes cannot carry to this upstream, though the API is the same:
     * OpenAI's reasoning models refuse max_tokens on Chat (the o-series, gpt-5; the encoder writes
     * max_completion_tokens; other hosts, DeepSeek's say, know only max_tokens), and Anthropic
     * refuses a thinking block without its signature (one moongate made up from another API's
     * reasoning, replayed by the client; the encoder leaves such blocks out). */
    if (same && p->api == MG_API_OPENAI_COMPLETIONS && m->reasoning && p->openai_host && cand.max_output_tokens >= 0 &&
        !cand.max_completion_tokens_field)
        rewrite = true;
    if (same && p->api == MG_API_ANTHROPIC_MESSAGES && has_unsigned_thinking(&cand)) rewrite = true;
    if (safety_on(p)) {
        mg_safety_opts_t so;
        const char *extra[2 * MG_MAX_EXTRA_TOKENS];
        safety_opts_for(cfg, p, &so, extra);
        rewrite = mg_safety_filter(req->arena, &cand, &so, &a->compaction) == 1 || rewrite;
    }
    mg_model_t learned;
    const mg_model_t *fit = fit_model(m, &learned);
    a->fit_window = fit->context_window;
    int64_t budget = mg_compact_budget(fit, cand.max_output_tokens, cfg->gw.compaction.margin_tokens);
    mg_compact_opts_t co;
    compact_opts_for(cfg, m, &opt, &co);
    /* What the filters left, before anything is cut: where a summary run starts again. */
    const mg_ir_request_t filtered = cand;
    const mg_compact_report_t filtered_rep = a->compaction;
    /* The policy's compact hook has the first go, for a request that does not fit and may be
     * compacted; the deterministic compaction otherwise, and whenever the hook's result fails. */
    bool hook = co.enabled && budget != INT64_MAX && req->gen->policy &&
                mg_policy_has_hook(req->gen->policy, "compact") &&
                mg_tokens_estimate(&cand, &co.tokens) > budget;
    int rc;
    if (hook && policy_compact(req, a, &cand, budget, &co) == 1)
        rc = MG_COMPACT_CHANGED;
    else
        rc = mg_compact(req->arena, &cand, budget, &co, &a->compaction);
    if (rc == MG_COMPACT_OVERFLOW) {
        char d[160];
        snprintf(d, sizeof d, "estimated %lld prompt tokens, over this model's budget of %lld (window %lld%s)",
                 (long long)a->compaction.tokens_before, (long long)budget, (long long)fit->context_window,
                 fit == m ? "" : ", as its server said");
        req->est_tokens = MG_MAX(req->est_tokens, a->compaction.tokens_before);
        settle_locally(a, MG_CLASS_CONTEXT_OVERFLOW, d);
        return false;
    }
    rewrite = rewrite || rc == MG_COMPACT_CHANGED;
    /* The prompt fits the window less the output reserved for it: the request's max tokens,
     * capped by the model's maxTokens. A request asking for more than that goes out asking for
     * the reserved output when prompt + what it asks would be over the window, compacted or not
     * (vLLM refuses prompt + max_tokens over the window with a 400). */
    int64_t reserved = mg_compact_reserved_output(fit, cand.max_output_tokens);
    if (cand.max_output_tokens > reserved && fit->context_window > 0 &&
        a->compaction.tokens_after + cand.max_output_tokens + MG_MAX(cfg->gw.compaction.margin_tokens, 0) >
            fit->context_window) {
        a->compaction.max_tokens_asked = cand.max_output_tokens;
        cand.max_output_tokens = reserved;
        a->compaction.max_tokens_sent = reserved;
        a->compaction.filters |= MG_COMPACT_F_MAX_TOKENS;
        rewrite = true;
    }
    a->raw_estimate = a->compaction.raw_after;
    a->raw_fixed = a->compaction.raw_fixed_after;
    const mg_model_t *summarizer = summarizer_for(req, &opt);
    if (rc == MG_COMPACT_CHANGED && a->compaction.n_dropped > 0 && summarizer &&
        start_summary(req, a, summarizer, &filtered, &filtered_rep, &cand, budget, &co, delay_ms))
        return true; /* the candidate goes out once the summarizer has answered (finish_summary) */
    return send_attempt(req, a, &cand, rewrite, delay_ms);
}

/* Sends attempt a with the candidate's request cand (NULL: the client's request could not be
 * decoded, so only its own bytes can go, to an upstream of its own API), re-encoded when rewrite
 * or the APIs differ. Returns false when it could not even start (then it is settled locally). */
static bool send_attempt(mg_req_t *req, mg_attempt_t *a, const mg_ir_request_t *cand, bool rewrite,
                         int64_t delay_ms)
{
    const mg_config_t *cfg = req->gen->cfg;
    const mg_model_t *m = a->model;
    const mg_provider_t *p = m->provider;
    const mg_candidate_t opt = cand_options(req, m);
    bool same = p->api == req->client_api;
    bool is_retry = a->is_retry;
    char *body = NULL;
    size_t body_len = 0;
    if (same && !rewrite) {
        mg_buf_t model = {0};
        mg_buf_json_str(&model, m->id);
        body = mg_json_set_member(req->body.data, req->body.len, "model", model.data, &body_len);
        mg_buf_free(&model);
        if (req->stream && p->api == MG_API_OPENAI_COMPLETIONS) {
            /* Usage is always asked for, so it is always recorded; the client sees the usage
             * chunk only if it asked (relay.c). */
            size_t n2;
            char *b2 = mg_json_set_member(body, body_len, "stream_options", "{\"include_usage\":true}", &n2);
            free(body);
            body = b2;
            body_len = n2;
        }
    } else if (!cand) {
        settle_locally(a, MG_CLASS_UNSUPPORTED, "the request could not be decoded for translation");
        return false;
    } else {
        char err[256];
        mg_model_t learned;
        mg_ir_request_opts_t o = {.model = m->id,
                                  .default_max_tokens =
                                      mg_compact_reserved_output(fit_model(m, &learned), cand->max_output_tokens),
                                  .prefer_max_completion_tokens = m->reasoning && p->openai_host};
        cJSON *j = mg_ir_encode_request(p->api, cand, &o, err, sizeof err);
        if (!j) {
            settle_locally(a, MG_CLASS_UNSUPPORTED, err);
            return false;
        }
        body = mg_ir_print_json(j, &body_len); /* valid UTF-8 whatever the client's bytes */
        cJSON_Delete(j);
    }

    up_headers_t hd;
    char *beta = same && p->api == MG_API_ANTHROPIC_MESSAGES ? client_betas(req, p) : NULL;
    upstream_headers(p, req->stream, beta, &hd);
    free(beta);

    mg_timeouts_t t = mg_config_timeouts(cfg, m);
    if (opt.connect_ms > 0) t.connect_ms = opt.connect_ms;
    if (opt.first_token_ms > 0) t.first_token_ms = opt.first_token_ms;
    if (opt.idle_ms > 0) t.idle_ms = opt.idle_ms;
    if (opt.total_ms > 0) t.total_ms = opt.total_ms;
    char *url = upstream_url(p);
    a->body_cap = cfg->gw.max_upstream_body_bytes;
    mg_xfer_spec_t spec = {
        .url = url,
        .headers = hd.v,
        .n_headers = hd.n,
        .body = body,
        .body_len = body_len,
        .body_owned = true,
        .http2 = p->http2,
        .ca_file = p->ca_file,
        .delay_ms = delay_ms,
        .connect_timeout_ms = t.connect_ms,
        /* A whole (non-streamed) answer arrives at the end: first-token does not apply. */
        .first_token_timeout_ms = req->stream ? t.first_token_ms : 0,
        .idle_timeout_ms = t.idle_ms,
        .total_timeout_ms = t.total_ms,
        .cb = mg_relay_callbacks(),
        .ud = a,
    };
    mg_req_ref(req); /* the attempt's reference, released by on_done */
    int64_t now = mg_now_ms();
    a->start_ms = now + delay_ms; /* it leaves after its backoff */
    if (health) {
        /* The clock of health is now: a cooldown must not be settled as over before it is. */
        mg_health_attempt_begin(health, p->id, m->ref, is_retry, now);
        a->health_begun = true;
    }
    a->xfer = mg_xfer_submit(req->up, &spec);
    free(url);
    up_headers_free(&hd);
    if (!a->xfer) {
        mg_req_release(req);
        if (a->health_begun) mg_health_attempt_end(health, p->id, m->ref);
        a->health_begun = false;
        settle_locally(a, MG_CLASS_CANCELLED, "gateway stopping");
        return false;
    }
    return true;
}

/* Starts the next candidate that can be tried. Returns false when none is left. */
static bool start_next(mg_req_t *req)
{
    pthread_mutex_lock(&req->lock);
    bool gone = req->client_gone;
    pthread_mutex_unlock(&req->lock);
    if (gone) return false; /* nobody is waiting for an answer any more */
    while (req->next_cand < req->n_cands && req->n_attempts < MG_MAX_ATTEMPTS) {
        const mg_model_t *m = req->cands[req->next_cand++];
        /* After a context overflow only a larger window is worth a try. */
        if (req->overflowed && !mg_health_should_try(req->overflow_window, effective_window(m))) {
            if (req->n_skipped < MG_MAX_CANDIDATES) req->skipped[req->n_skipped++] = m;
            continue;
        }
        if (submit(req, m, false, 0)) return true;
        mg_metrics_attempt(m->ref, mg_req_current(req)->cls);
    }
    return false;
}

/* Whether every attempt of req ended in class cls; with local, only attempts that never left
 * (settled by the gateway, no upstream status) count. */
static bool all_attempts(const mg_req_t *req, mg_class_t cls, bool local)
{
    for (size_t i = 0; i < req->n_attempts; i++)
        if (req->attempts[i].cls != cls || (local && req->attempts[i].status)) return false;
    return req->n_attempts > 0;
}

/* Seconds until one of the candidates rate-limited this request may be asked again: the soonest
 * of their hints (Retry-After and the like), else of their cooldowns; -1 when neither is known. */
static int64_t retry_after_s(const mg_req_t *req)
{
    int64_t ms = -1, now = mg_now_ms();
    for (size_t i = 0; i < req->n_attempts; i++) {
        const mg_attempt_t *a = &req->attempts[i];
        int64_t until = 0, wait = a->retry_after_ms;
        if (wait < 0 && health && !mg_health_available(health, a->model->provider->id, a->model->ref, now, &until))
            wait = MG_MAX(0, until - now);
        if (wait >= 0 && (ms < 0 || wait < ms)) ms = MG_MIN(wait, MG_HEALTH_MAX_RETRY_AFTER_MS);
    }
    return ms < 0 ? -1 : (ms + 999) / 1000;
}

static void reply_all_failed(mg_req_t *req, mg_reply_t *reply)
{
    /* A client error only when some candidate said the request is too long and the others could
     * not be tried for want of a key: a plan of keyless candidates alone is no overflow. */
    bool overflow = false;
    for (size_t i = 0; i < req->n_attempts; i++)
        if (req->attempts[i].cls == MG_CLASS_CONTEXT_OVERFLOW) overflow = true;
    for (size_t i = 0; i < req->n_attempts; i++)
        overflow = overflow && (req->attempts[i].cls == MG_CLASS_CONTEXT_OVERFLOW || req->attempts[i].cls == MG_CLASS_NO_KEY);
    if (overflow) {
        /* Nothing could take the request: a client error, named with the figures. */
        const mg_model_t *largest = NULL;
        int64_t largest_w = 0;
        for (size_t i = 0; i < req->n_cands; i++) {
            int64_t w = effective_window(req->cands[i]);
            if (!largest || w > largest_w) {
                largest = req->cands[i];
                largest_w = w;
            }
        }
        mg_buf_t msg = {0};
        /* Anthropic's own words first for its clients: Claude Code and others recognise an
         * overflow by "prompt is too long: N tokens > M maximum" (its error has no code). */
        if (req->ep == MG_EP_MESSAGES && req->est_tokens > 0 && largest)
            mg_buf_printf(&msg, "prompt is too long: %lld tokens > %lld maximum; ", (long long)req->est_tokens,
                          (long long)largest_w);
        else if (req->ep == MG_EP_MESSAGES)
            mg_buf_puts(&msg, "prompt is too long; ");
        if (req->est_tokens > 0)
            mg_buf_printf(&msg, "the request is estimated at %lld prompt tokens", (long long)req->est_tokens);
        else
            mg_buf_puts(&msg, "the request does not fit the context window of any candidate");
        if (largest)
            mg_buf_printf(&msg, "; the largest context window available is %lld tokens (%s), output reserved included",
                          (long long)largest_w, largest->ref);
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "context_length_exceeded", msg.data);
        mg_buf_free(&msg);
        return;
    }
    mg_buf_t msg = {0};
    mg_buf_printf(&msg, "all %zu candidate%s failed:", req->n_attempts, req->n_attempts == 1 ? "" : "s");
    for (size_t i = 0; i < req->n_attempts; i++) {
        const mg_attempt_t *a = &req->attempts[i];
        mg_buf_printf(&msg, "%s %s: %s", i ? ";" : "", a->model->ref, mg_class_name(a->cls));
        /* with the upstream's own message, or what went wrong (HEALTH.md's detail) */
        if (a->status && a->detail[0]) mg_buf_printf(&msg, " (HTTP %ld: %s)", a->status, a->detail);
        else if (a->status) mg_buf_printf(&msg, " (HTTP %ld)", a->status);
        else if (a->detail[0]) mg_buf_printf(&msg, " (%s)", a->detail);
    }
    if (req->n_attempts == 0) mg_buf_puts(&msg, " none could be tried");
    if (all_attempts(req, MG_CLASS_RATE_LIMIT, false)) {
        /* Every upstream asked said "later": so does the gateway, with the soonest time known. */
        mg_reply_error(reply, req->ep, 429, "rate_limit_error", "rate_limit_exceeded", msg.data);
        reply->retry_after_s = retry_after_s(req);
    } else if (all_attempts(req, MG_CLASS_UNSUPPORTED, true)) {
        /* No candidate's API can carry what the request asks for (the gateway could not even
         * send it): the request has to change. */
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "unsupported_request", msg.data);
    } else {
        /* OpenAI's type for a 5xx, as every other 5xx the gateway writes (an Anthropic client
         * gets api_error); the code says what happened. */
        mg_reply_error(reply, req->ep, 502, "server_error", "all_candidates_failed", msg.data);
    }
    mg_buf_free(&msg);
}

/* Advances past settled attempts until one is in flight or the plan is exhausted. */
static mg_route_step_t advance(mg_req_t *req, mg_reply_t *reply)
{
    bool fallback = req->n_attempts > 0;
    if (start_next(req)) {
        if (fallback) mg_metrics_fallback();
        return MG_ROUTE_WAIT;
    }
    reply_all_failed(req, reply);
    return MG_ROUTE_REPLY;
}

/* POST /v1/messages/count_tokens and /v1/responses/input_tokens: the gateway's own estimate of
 * the prompt, calibrated for the model that would serve it (the plan's first candidate), as
 * {"input_tokens": N} (Responses: with "object": "response.input_tokens"). Nothing goes
 * upstream: the estimate errs high, as compaction's does (docs/COMPACTION.md), which is the
 * safe side for a client deciding when to compact its own context. */
static mg_route_step_t count_tokens(mg_req_t *req, mg_reply_t *reply, const char *decode_error)
{
    if (!req->ir_ready) {
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "invalid_request", decode_error);
        return MG_ROUTE_REPLY;
    }
    if (!req->n_cands) {
        reply_unknown_model(req, reply);
        return MG_ROUTE_REPLY;
    }
    const mg_model_t *m = req->cands[0];
    mg_candidate_t opt = cand_options(req, m);
    mg_compact_opts_t co;
    compact_opts_for(req->gen->cfg, m, &opt, &co);
    req->counted_for = m;
    reply->status = 200;
    reply->content_type = "application/json";
    long long n = (long long)mg_tokens_estimate(&req->ir, &co.tokens);
    if (req->ep == MG_EP_RESPONSES)
        mg_buf_printf(&reply->body, "{\"object\":\"response.input_tokens\",\"input_tokens\":%lld}", n);
    else
        mg_buf_printf(&reply->body, "{\"input_tokens\":%lld}", n);
    return MG_ROUTE_REPLY;
}

mg_route_step_t mg_router_begin(mg_req_t *req, mg_reply_t *reply)
{
    /* The document lives in the request's arena, as long as the model that borrows from it. */
    req->arena = mg_ir_arena_new();
    /* A byte order mark (PowerShell and .NET clients, files saved with one) is not part of the
     * JSON: dropped, so that what goes upstream as it came, with "model" spliced, starts with the
     * object itself. */
    if (req->body.len >= 3 && memcmp(req->body.data, "\xEF\xBB\xBF", 3) == 0) {
        memmove(req->body.data, req->body.data + 3, req->body.len - 3);
        req->body.len -= 3;
        req->body.data[req->body.len] = '\0';
    }
    size_t ctl = req->body.len ? mg_json_control_byte(req->body.data, req->body.len) : 0;
    if (ctl < req->body.len) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is not valid JSON: a control byte (0x%02x) at offset %zu",
                 (unsigned char)req->body.data[ctl], ctl);
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "invalid_json", msg);
        return MG_ROUTE_REPLY;
    }
    const char *end = NULL;
    req->json = mg_ir_parse_json(req->arena, req->body.data ? req->body.data : "", req->body.len, &end);
    if (req->json && end) {
        /* One JSON text, with nothing but JSON's white space around it: cJSON also skips other
         * control bytes (and a second mark) before it, which the splice of same-API bodies
         * would not. */
        const char *p = req->body.data, *stop = req->body.data + req->body.len;
        while (p < stop && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
        while (end < stop && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
        bool before = cJSON_IsObject(req->json) && p < stop && *p != '{';
        if (end < stop || before) {
            mg_reply_error(reply, req->ep, 400, "invalid_request_error", "invalid_json",
                           before ? "the request body is not valid JSON: bytes before the JSON object"
                                  : "the request body is not valid JSON: something follows the JSON object");
            return MG_ROUTE_REPLY;
        }
    }
    if (!req->json && mg_ir_parse_too_large()) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body holds too many JSON values: reading it would take more "
                 "than %zu MiB", MG_MAX(MG_IR_PARSE_MAX_BYTES, 2 * req->body.len) >> 20);
        mg_reply_error(reply, req->ep, 413, "invalid_request_error", "request_too_large", msg);
        return MG_ROUTE_REPLY;
    }
    if (!req->json || !cJSON_IsObject(req->json)) {
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "invalid_json",
                       req->json ? "the request body must be a JSON object"
                                 : "the request body is not valid JSON");
        return MG_ROUTE_REPLY;
    }
    char dup[160], msg[224];
    if (mg_json_duplicate_key(req->json, dup, sizeof dup)) {
        /* cJSON reads the first of two same-named members, many upstreams' parsers the last: the
         * request checked here (model, messages) would not be the one the upstream reads. */
        snprintf(msg, sizeof msg, "the request body is ambiguous: %s", dup);
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "duplicate_key", msg);
        return MG_ROUTE_REPLY;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(req->json, "model");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(req->json, "stream");
    const char *wrong = model && !cJSON_IsNull(model) && !cJSON_IsString(model) ? "\"model\" must be a string"
                        : stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream) ? "\"stream\" must be true or false"
                                                                                   : NULL;
    if (wrong) {
        req->model_asked = mg_xstrdup(cJSON_IsString(model) ? model->valuestring : "");
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "invalid_type", wrong);
        return MG_ROUTE_REPLY;
    }
    if (req->count_tokens && req->ep == MG_EP_RESPONSES && !cJSON_IsString(model)) {
        req->model_asked = mg_xstrdup("default"); /* input_tokens' model is optional */
    } else if (!cJSON_IsString(model) || !model->valuestring[0]) {
        req->model_asked = mg_xstrdup("");
        mg_reply_error(reply, req->ep, 404, "invalid_request_error", "model_not_found",
                       "the request has no \"model\": send a provider/id, an alias, or \"default\"");
        return MG_ROUTE_REPLY;
    } else {
        req->model_asked = mg_xstrdup(model->valuestring);
    }
    static const mg_api_t client_apis[] = {[MG_EP_CHAT] = MG_API_OPENAI_COMPLETIONS,
                                           [MG_EP_RESPONSES] = MG_API_OPENAI_RESPONSES,
                                           [MG_EP_MESSAGES] = MG_API_ANTHROPIC_MESSAGES};
    req->client_api = client_apis[req->ep];
    req->stream = cJSON_IsTrue(stream);
    if (req->stream) {
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(req->json, "stream_options");
        req->wants_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
        const mg_gateway_settings_t *gw = &req->gen->cfg->gw;
        req->out_cap = gw->stream_buffer_bytes ? gw->stream_buffer_bytes : 256 * 1024;
    }
    /* Compaction, the safety filters and the policy's view (token estimate, tools, images) need
     * the internal model of every request; a request the decoder cannot read still passes through
     * to an upstream of its own API (which then says what is wrong with it), but cannot be
     * translated. */
    if (req->key) {
        const char *region = NULL;
        for (size_t i = 0; i < req->n_hdrs; i++)
            if (!region && strcmp(req->hdrs[i].name, "x-moongate-region") == 0) region = req->hdrs[i].value;
        mg_key_verdict_t v;
        /* A token count sends nothing upstream: it needs access, and takes nothing of the limits. */
        int rc = req->count_tokens ? mg_keys_check_access(req->key, req->model_asked, region, &v)
                                   : mg_keys_check(req->key, req->model_asked, region, mg_wall_ms(), &v);
        if (rc != 0) {
            mg_reply_error(reply, req->ep, v.status, v.type, v.code, v.message);
            reply->retry_after_s = v.status == 429 ? v.retry_after_s : -1;
            fill_input(req); /* on_complete sees who was refused and for what */
            return MG_ROUTE_REPLY;
        }
        req->key_passed = !req->count_tokens;
    }
    char err[256];
    req->ir_ready = mg_ir_decode_request(req->client_api, req->json, req->arena, &req->ir, err, sizeof err) == 0;
    if (!plan(req, reply)) return MG_ROUTE_REPLY;
    if (req->count_tokens) return count_tokens(req, reply, err);
    /* A request the decoder cannot read goes, as it came, only to candidates of its own API
     * without filters to run on it (submit() skips the others as unsupported); with no such
     * candidate the client hears why at once. */
    bool raw_ok = false;
    for (size_t i = 0; i < req->n_cands; i++) {
        const mg_provider_t *p = req->cands[i]->provider;
        bool strip = req->cand_opts[i].strip_reasoning >= 0 ? req->cand_opts[i].strip_reasoning || req->strip_reasoning
                                                            : req->strip_reasoning || p->strip_reasoning;
        /* A provider with safety filters on is never sent what the gateway could not read. */
        bool need_ir = p->api != req->client_api || (strip && req->client_api != MG_API_OPENAI_COMPLETIONS) ||
                       safety_on(p);
        raw_ok = raw_ok || !need_ir;
    }
    if (req->n_cands && !raw_ok && !req->ir_ready) {
        mg_reply_error(reply, req->ep, 400, "invalid_request_error", "invalid_request", err);
        return MG_ROUTE_REPLY;
    }
    return advance(req, reply);
}

bool mg_router_attempt_done_locked(mg_req_t *req)
{
    mg_attempt_t *a = mg_req_current(req);
    if (req->summary.active) return req->summary.done; /* the attempt waits for its summary */
    return !a || a->done || req->committed;
}

static void reply_upstream_error_body(mg_req_t *req, mg_attempt_t *a, mg_reply_t *reply);

/* Whether a's answer is a JSON object with a non-null "error" member (one too long to be an error
 * body, MG_IR_ERROR_JSON_MAX, is not). */
static bool answer_is_error(const mg_attempt_t *a)
{
    cJSON *j = mg_ir_parse_error_body(a->body.data, a->body.len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    bool is = err && !cJSON_IsNull(err);
    cJSON_Delete(j);
    return is;
}

/* The upstream's own words for its error answer, as the attempt's detail (the access log,
 * /admin/health's last message): the message of its error body, or the start of its text. The
 * body is scrubbed of the provider's secrets first, whole, so that no cut leaves the head of one;
 * the message again once read (a JSON escape may have spelt one). */
static void note_upstream_error(mg_attempt_t *a)
{
    mg_relay_scrub_secrets(&a->body, a->model->provider);
    mg_ir_arena_t *arena = mg_ir_arena_new();
    mg_ir_error_t e;
    mg_ir_error_from_body(arena, a->status, a->body.data, a->body.len, &e);
    mg_relay_set_detail(a, "", e.message, e.message ? strlen(e.message) : 0);
    mg_ir_arena_free(arena);
}

/* The request itself is at fault: the upstream's error goes back with its status, as it is when it
 * is already in the client API's shape ({"error": {"message": …}}), else re-encoded into it with
 * the message it carried (LM Studio's string errors, vLLM's unwrapped ones, plain text).
 * The provider's secrets are scrubbed from the body before any of it is cut, and from the reply
 * (a JSON escape in the body may have spelt one that the re-encoded message now spells out). */
static void reply_upstream_error(mg_req_t *req, mg_attempt_t *a, mg_reply_t *reply)
{
    mg_relay_scrub_secrets(&a->body, a->model->provider);
    reply_upstream_error_body(req, a, reply);
    mg_relay_scrub_secrets(&reply->body, a->model->provider);
}

static void reply_upstream_error_body(mg_req_t *req, mg_attempt_t *a, mg_reply_t *reply)
{
    if (a->model->provider->api != req->client_api && !(req->client_api != MG_API_ANTHROPIC_MESSAGES &&
                                                        a->model->provider->api != MG_API_ANTHROPIC_MESSAGES)) {
        /* Between Anthropic's error shape and OpenAI's: re-encoded in the client's. */
        mg_ir_arena_t *arena = mg_ir_arena_new();
        mg_ir_error_t e;
        mg_ir_error_from_body(arena, a->status, a->body.data, a->body.len, &e);
        char *txt = mg_ir_encode_error(req->client_api, &e);
        reply->status = (int)a->status;
        reply->content_type = "application/json";
        mg_buf_reset(&reply->body);
        mg_buf_puts(&reply->body, txt);
        free(txt);
        mg_ir_arena_free(arena);
        return;
    }
    /* A body too long to be an error's (MG_IR_ERROR_JSON_MAX) is read as text: its first bytes. */
    cJSON *j = mg_ir_parse_error_body(a->body.data, a->body.len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *msg = NULL;
    if (cJSON_IsObject(err) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "message")) &&
        (req->ep != MG_EP_MESSAGES || cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "type")))) {
        reply->status = (int)a->status;
        reply->content_type = "application/json";
        reply->body = a->body;
        a->body = (mg_buf_t){0};
        cJSON_Delete(j);
        return;
    }
    if (cJSON_IsObject(err)) msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"));
    else if (cJSON_IsString(err)) msg = err->valuestring;
    if (!msg) msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "message"));
    char raw[512];
    if (!msg) {
        snprintf(raw, sizeof raw, "%.*s", (int)MG_MIN(a->body.len, sizeof raw - 1), a->body.data ? a->body.data : "");
        msg = raw[0] ? raw : "the upstream rejected the request";
    }
    mg_reply_error(reply, req->ep, (int)a->status, "invalid_request_error", NULL, msg);
    cJSON_Delete(j);
}

/* A number member (its value's span, when found) of strict JSON text read as cJSON_IsNumber and
 * (int64_t)valuedouble would: 1 a number (*v set), 0 absent or not a number, -1 not sure (not a
 * plain integer of at most 15 digits: ask cJSON). */
static int usage_int(const char *t, const mg_json_span_t *sp, int64_t *v)
{
    if (!sp->found) return 0;
    size_t vs = sp->start, ve = sp->end;
    bool neg = t[vs] == '-';
    size_t i = vs + neg;
    if (!neg && (t[i] < '0' || t[i] > '9')) return 0; /* a string, an object, true… */
    if (ve - i > 15) return -1;
    int64_t x = 0;
    for (; i < ve; i++) {
        if (t[i] < '0' || t[i] > '9') return -1; /* a fraction or an exponent */
        x = x * 10 + (t[i] - '0');
    }
    *v = neg ? -x : x;
    return 1;
}

/* read_usage on strict JSON text: false when it cannot say for sure (cJSON reads it then). */
static bool read_usage_text(const char *t, size_t n, int64_t *pt, bool *has_pt, int64_t *ct, bool *has_ct,
                            int64_t *cached, bool *has_cached, int64_t *cw, bool *has_cw)
{
    static const char *const keys[4] = {"prompt_tokens", "completion_tokens", "prompt_tokens_details",
                                        "cache_creation_input_tokens"}; /* the last: LiteLLM's */
    static const char *const inner_keys[2] = {"cached_tokens", "cache_write_tokens"}; /* the last: OpenRouter's */
    mg_json_span_t sp[4], in[2] = {{false, 0, 0}, {false, 0, 0}};
    char root, inner_root;
    if (!mg_json_strict_members(t, n, &root, keys, 4, sp) || root != '{') return false;
    /* The details object is strict too (inside strict text): this pass only finds its member. */
    if (sp[2].found && t[sp[2].start] == '{' &&
        !mg_json_strict_members(t + sp[2].start, sp[2].end - sp[2].start, &inner_root, inner_keys, 2, in))
        return false;
    int r1 = usage_int(t, &sp[0], pt), r2 = usage_int(t, &sp[1], ct);
    const char *inner = t + (sp[2].found ? sp[2].start : 0);
    int r3 = usage_int(inner, &in[0], cached);
    int r4 = usage_int(inner, &in[1], cw);
    if (r4 == 0) r4 = usage_int(t, &sp[3], cw);
    if (r1 < 0 || r2 < 0 || r3 < 0 || r4 < 0) return false;
    *has_pt = r1 == 1, *has_ct = r2 == 1, *has_cached = r3 == 1, *has_cw = r4 == 1;
    return true;
}

/* The usage of a whole Chat Completions answer, read from its top-level "usage" member alone:
 * where the classifier's pass left it, or found now. */
static void read_usage(mg_req_t *req, mg_attempt_t *a)
{
    size_t vs, ve;
    if (a->usage_known) {
        if (!a->usage.found) return;
        vs = a->usage.start, ve = a->usage.end;
    } else if (!a->body.data || !mg_json_member_span(a->body.data, a->body.len, "usage", &vs, &ve)) {
        return;
    }
    int64_t pt = 0, ct = 0, cached = 0, cw = 0;
    bool has_pt, has_ct, has_cached, has_cw;
    if (read_usage_text(a->body.data + vs, ve - vs, &pt, &has_pt, &ct, &has_ct, &cached, &has_cached, &cw, &has_cw)) {
        pthread_mutex_lock(&req->lock);
        if (has_pt) a->prompt_tokens = pt;
        if (has_ct) a->completion_tokens = ct;
        if (has_cached) a->cached_tokens = cached;
        if (has_cw) a->cache_write_tokens = cw;
        pthread_mutex_unlock(&req->lock);
        return;
    }
    cJSON *u = mg_ir_parse_json(req->arena, a->body.data + vs, ve - vs, NULL); /* serving thread's */
    const cJSON *jpt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
    const cJSON *jct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
    const cJSON *jpd = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details");
    const cJSON *jcached = cJSON_GetObjectItemCaseSensitive(jpd, "cached_tokens");
    pthread_mutex_lock(&req->lock);
    if (cJSON_IsNumber(jpt)) a->prompt_tokens = (int64_t)jpt->valuedouble;
    if (cJSON_IsNumber(jct)) a->completion_tokens = (int64_t)jct->valuedouble;
    if (cJSON_IsNumber(jcached)) a->cached_tokens = (int64_t)jcached->valuedouble;
    const cJSON *jcw = cJSON_GetObjectItemCaseSensitive(jpd, "cache_write_tokens");
    if (!cJSON_IsNumber(jcw)) jcw = cJSON_GetObjectItemCaseSensitive(u, "cache_creation_input_tokens");
    if (cJSON_IsNumber(jcw)) a->cache_write_tokens = (int64_t)jcw->valuedouble;
    pthread_mutex_unlock(&req->lock);
}

/* The token counts of a decoded whole answer, for the access log and the metrics. */
static void record_usage(mg_req_t *req, mg_attempt_t *a, const mg_ir_usage_t *u)
{
    pthread_mutex_lock(&req->lock);
    if (u->input >= 0) a->prompt_tokens = u->input;
    if (u->output >= 0) a->completion_tokens = u->output;
    if (u->cache_read >= 0) a->cached_tokens = u->cache_read;
    if (u->cache_write >= 0) a->cache_write_tokens = u->cache_write;
    pthread_mutex_unlock(&req->lock);
}

/* A whole answer from a Responses or Messages upstream, or for a Responses or Messages client:
 * through the internal model (its usage recorded on the way), unless the APIs match and nothing
 * is stripped, in which case only the usage is read. */
static void translate_answer(mg_req_t *req, mg_attempt_t *a)
{
    mg_api_t up = a->model->provider->api;
    mg_ir_arena_t *arena = mg_ir_arena_new();
    cJSON *j = mg_ir_parse_json(arena, a->body.data ? a->body.data : "", a->body.len, NULL);
    mg_ir_response_t r;
    char err[256];
    if (j && mg_ir_codec(up)->decode_response(j, arena, NULL, &r, err, sizeof err) == 0) {
        record_usage(req, a, &r.usage);
        if (up != req->client_api || a->strip_reasoning) {
            mg_ir_output_opts_t o = {.strip_reasoning = a->strip_reasoning,
                                     .keep_upstream_id = a->model->provider->api == req->client_api,
                                     .default_model = a->model->id, .request = req->json};
            cJSON *out = mg_ir_codec(req->client_api)->encode_response(&r, &o);
            size_t n;
            char *txt = mg_ir_print_json(out, &n); /* valid UTF-8 whatever the upstream's bytes */
            mg_buf_reset(&a->body);
            mg_buf_append(&a->body, txt, n);
            free(txt);
            cJSON_Delete(out);
        }
    }
    mg_ir_arena_free(arena);
}

/* gateway.log.content: the text of a decoded answer, for the access line. */
static void note_response_text(mg_attempt_t *a, const mg_ir_response_t *r)
{
    char *text = mg_ir_join_text(r->parts, r->n_parts, "");
    if (text) mg_req_note_answer(a, text, strlen(text));
    free(text);
}

typedef struct {
    mg_ir_encoder_t *enc;
    mg_buf_t *out;
} push_ctx_t;

static int push_event(void *ud, const mg_ir_event_t *ev)
{
    push_ctx_t *p = ud;
    mg_ir_encoder_push(p->enc, ev, p->out);
    return 0;
}

/* The answer of an upstream that ignored "stream": true, sent to the client as the stream it
 * asked for (its API's events, all at once), with usage read as for any answer. */
static void stream_whole_answer(mg_req_t *req, mg_attempt_t *a, mg_reply_t *reply)
{
    mg_api_t up = a->model->provider->api;
    mg_ir_arena_t *arena = mg_ir_arena_new();
    cJSON *j = mg_ir_parse_json(arena, a->body.data ? a->body.data : "", a->body.len, NULL);
    mg_ir_response_t r;
    char err[256];
    mg_buf_reset(&reply->body);
    reply->status = 200;
    reply->content_type = "text/event-stream";
    if (j && mg_ir_codec(up)->decode_response(j, arena, NULL, &r, err, sizeof err) == 0) {
        record_usage(req, a, &r.usage);
        if (req->gen->cfg->gw.log_content) note_response_text(a, &r);
        mg_ir_output_opts_t o = {.strip_reasoning = a->strip_reasoning, .include_usage = req->wants_usage,
                                 .keep_upstream_id = a->model->provider->api == req->client_api,
                                 .default_model = a->model->id, .request = req->json};
        mg_ir_encoder_t *enc = mg_ir_encoder_new(req->client_api, &o);
        push_ctx_t p = {enc, &reply->body};
        mg_ir_response_events(&r, push_event, &p);
        mg_ir_encoder_free(enc);
    }
    mg_ir_arena_free(arena);
}

/* gateway.log.content, whole answers: the text of the answer as the client gets it. */
static void note_answer(mg_req_t *req, mg_attempt_t *a)
{
    mg_ir_arena_t *arena = mg_ir_arena_new();
    cJSON *j = mg_ir_parse_json(arena, a->body.data ? a->body.data : "", a->body.len, NULL);
    mg_ir_response_t r;
    char err[128];
    if (j && mg_ir_codec(req->client_api)->decode_response(j, arena, NULL, &r, err, sizeof err) == 0)
        note_response_text(a, &r);
    mg_ir_arena_free(arena);
}

/* The attempt that served the client, if any. */
static const mg_attempt_t *served_attempt(const mg_req_t *req)
{
    for (size_t i = req->n_attempts; i-- > 0;)
        if (req->served && req->attempts[i].model == req->served && req->attempts[i].cls == MG_CLASS_OK)
            return &req->attempts[i];
    return NULL;
}

/* The attempt whose answer the client got, to be charged: the one that served it, or else the
 * stream that reached it and then ended badly (the client went away, the upstream cut it, a
 * graceful stop): the upstream did that work, and a hosted one bills it. NULL: nothing served. */
static const mg_attempt_t *billed_attempt(const mg_req_t *req)
{
    const mg_attempt_t *a = served_attempt(req);
    for (size_t i = req->n_attempts; !a && i-- > 0;)
        if (req->served && req->attempts[i].model == req->served) a = &req->attempts[i];
    return a;
}

/* Tokens and cost of the answer (per million tokens, from the catalog), non-cached input apart.
 * What the upstream did not report (a stream that ended before its usage, a server that sends
 * none) is estimated: the prompt by the calibrated estimate of what was sent, the output by the
 * content events relayed (about one token each), or a whole answer's by its text; *estimated
 * says so. */
static double usage_cost(const mg_req_t *req, const mg_attempt_t *a, int64_t *in, int64_t *out, int64_t *cached,
                         int64_t *cache_write, bool *estimated)
{
    *estimated = false;
    int64_t prompt = a->prompt_tokens, completion = a->completion_tokens;
    if (prompt <= 0) {
        /* a request the decoder could not read has no estimate: its size, as the policy sees it */
        prompt = a->compaction.tokens_after > 0 ? a->compaction.tokens_after : (int64_t)(req->body.len / 3);
        *estimated = prompt > 0;
    }
    if (completion <= 0 && (a->content_events > 0 || a->answer_estimate > 0)) {
        completion = a->content_events > 0 ? a->content_events : a->answer_estimate;
        *estimated = true;
    }
    *cached = MG_MAX(a->cached_tokens, 0);
    *cache_write = MG_MAX(a->cache_write_tokens, 0);
    *in = MG_MAX(prompt - *cached - *cache_write, 0);
    *out = MG_MAX(completion, 0);
    return mg_cost_of(&a->model->cost, *in, *out, *cached, *cache_write);
}

bool mg_router_compaction_header(const mg_req_t *req, mg_buf_t *out)
{
    const mg_attempt_t *a = served_attempt(req);
    if (!a || !mg_compact_report_changed(&a->compaction)) return false;
    mg_compact_report_header(&a->compaction, out);
    return true;
}

void mg_router_account(mg_req_t *req)
{
    pthread_mutex_lock(&req->lock);
    const mg_attempt_t *a = served_attempt(req), *billed = billed_attempt(req);
    int64_t in = 0, out = 0, cached = 0, cache_write = 0;
    bool estimated = false;
    double cost = billed ? usage_cost(req, billed, &in, &out, &cached, &cache_write, &estimated) : 0;
    int64_t reported = a ? a->prompt_tokens : 0;
    pthread_mutex_unlock(&req->lock);
    if (req->gen->policy && mg_policy_has_hook(req->gen->policy, "on_complete")) {
        /* What is charged, so that a policy keeping its own books sees a stream the client left. */
        mg_completion_t c = {.model = billed ? billed->model : NULL,
                             .status = req->status,
                             .prompt_tokens = billed ? in + cached + cache_write : -1,
                             .completion_tokens = billed ? out : -1,
                             .estimated = billed && estimated,
                             .latency_ms = mg_now_ms() - req->start_ms,
                             .ttft_ms = billed ? billed->ttft_ms : -1,
                             .attempts = (int)req->n_attempts};
        const mg_attempt_t *last = mg_req_current(req);
        if (!a && last) c.error_class = mg_class_name(last->cls);
        /* A stream that reached the client and then broke (or that the client left) was served,
         * and ended with that class all the same. */
        mg_class_t end = a && a == req->committed && a->done
                             ? (a->fail_cls ? a->fail_cls : a->result != MG_XFER_OK ? mg_classify_xfer(a->result) : MG_CLASS_OK)
                             : MG_CLASS_OK;
        if (end != MG_CLASS_OK) c.error_class = mg_class_name(end);
        mg_policy_on_complete(req->gen->policy, &req->pin, &live_view, &c);
    }
    if (a && calib && a->raw_estimate > 0 && reported > 0 && !req->ir.previous_response_id)
        mg_tokens_calib_observe(calib, a->model->ref, a->raw_estimate, a->raw_fixed, reported);
    if (req->summary_tokens || req->summary_cost > 0)
        mg_keys_account(req->key, req->summary_tokens, req->summary_cost, mg_wall_ms());
    if (!billed) {
        /* Nothing went upstream (the gateway refused it itself: no model, no fit, nothing that
         * could carry it): the rpm token the key check took goes back. Not for a request that
         * was refused by the key check itself, which took none. */
        bool sent = req->summary_ran;
        for (size_t i = 0; i < req->n_attempts && !sent; i++) sent = req->attempts[i].xfer != NULL;
        if (!sent && req->key_passed) mg_keys_refund(req->key, mg_wall_ms());
        return;
    }
    mg_metrics_tokens(billed->model->ref, in, out, cached, cache_write);
    mg_metrics_cost(billed->model->ref, cost);
    mg_keys_account(req->key, in + out + cached + cache_write, cost, mg_wall_ms());
}

/* A whole Chat Completions answer: reasoning into its one place, or out when stripping. */
static void normalize_answer(mg_req_t *req, const mg_attempt_t *a, mg_buf_t *body)
{
    bool strip = a->strip_reasoning;
    if (req->ep != MG_EP_CHAT || !body->data) return;
    /* A key that appears nowhere cannot be a member: the answer surely lacks it. "id" appears in
     * every tool call too, so where it appears the top level is looked at. */
    size_t vs, ve;
    bool no_id = !memmem(body->data, body->len, "\"id\"", 4) ||
                 !mg_json_member_span(body->data, body->len, "id", &vs, &ve);
    bool no_created = !memmem(body->data, body->len, "\"created\"", 9);
    if (!strip && !no_id && !no_created && !memmem(body->data, body->len, "\"reasoning\"", 11) &&
        !memmem(body->data, body->len, "<think>", 7))
        return;
    cJSON *j = mg_ir_parse_text(body->data, body->len);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    bool changed = false;
    /* An answer without an id or a creation time gets them, as a translated one would (the
     * SDKs and logs key on the id). */
    if (no_id && cJSON_IsObject(j)) {
        char *id = mg_ir_placeholder_id("chatcmpl-moongate");
        cJSON_AddStringToObject(j, "id", id);
        free(id);
        changed = true;
    }
    if (no_created && cJSON_IsObject(j)) {
        mg_ir_add_int(j, "created", mg_wall_ms() / 1000);
        changed = true;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, choices)
    {
        cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");
        mg_think_t think = {0};
        if (cJSON_IsObject(msg) && mg_relay_split_think(&think, msg)) changed = true;
        if (think.carry_len) {
            /* The answer ended on a held-back fragment: text when no think block had opened
             * ("<thi"), reasoning when it ended inside one ("…</thi"). */
            const char *key = think.state == 0 ? "content" : "reasoning_content";
            const char *prev = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, key));
            char *joined = mg_xasprintf("%s%.*s", prev ? prev : "", (int)think.carry_len, think.carry);
            cJSON_DeleteItemFromObjectCaseSensitive(msg, key);
            cJSON_AddStringToObject(msg, key, joined);
            free(joined);
        }
        if (cJSON_IsObject(msg) && mg_relay_normalize_reasoning(msg, strip)) changed = true;
    }
    if (changed) {
        size_t n;
        char *p = mg_ir_print_json(j, &n); /* re-printed: repaired like a translated answer */
        mg_buf_reset(body);
        mg_buf_append(body, p, n);
        free(p);
    }
    cJSON_Delete(j);
}

/* The summarizer run the current attempt waited for has ended: the candidate goes out with the
 * summary in place of the drop note, or, on any failure (no answer in time, an error status, an
 * answer that cannot be read, an empty or unfitting summary), with the deterministic note, and
 * the attempt's note says why. */
/* A summarizer's answer is a billed upstream call: its usage (as reported, else estimated from
 * what was asked and the answer's size) goes to the metrics now, under the summarizer's name,
 * and to the request's key with the request's own charge (mg_router_account). */
static void charge_summary(mg_req_t *req, const mg_summary_run_t *run)
{
    const mg_model_t *s = run->model;
    mg_ir_arena_t *ar = mg_ir_arena_new();
    cJSON *j = mg_ir_parse_json(ar, run->body.data ? run->body.data : "", run->body.len, NULL);
    mg_ir_response_t r;
    char err[128];
    mg_ir_usage_t u = MG_IR_USAGE_UNKNOWN;
    if (j && mg_ir_codec(s->provider->api)->decode_response(j, ar, NULL, &r, err, sizeof err) == 0) u = r.usage;
    mg_ir_arena_free(ar);
    int64_t cached = MG_MAX(u.cache_read, 0), cw = MG_MAX(u.cache_write, 0);
    int64_t prompt = u.input >= 0 ? u.input : (int64_t)(run->asked_len / 3);
    int64_t in = MG_MAX(prompt - cached - cw, 0);
    int64_t out = u.output >= 0 ? u.output : (int64_t)(run->body.len / 4);
    double cost = mg_cost_of(&s->cost, in, out, cached, cw);
    mg_metrics_tokens(s->ref, in, out, cached, cw);
    mg_metrics_cost(s->ref, cost);
    req->summary_tokens += in + out + cached + cw;
    req->summary_cost += cost;
    req->summary_model = s;
}

static mg_route_step_t finish_summary(mg_req_t *req, mg_reply_t *reply)
{
    mg_summary_run_t *run = &req->summary;
    mg_attempt_t *a = mg_req_current(req);
    /* Detached under the lock: the watchdog's mg_router_abort reads it there. */
    pthread_mutex_lock(&req->lock);
    run->active = false;
    mg_xfer_t *x = run->xfer;
    run->xfer = NULL;
    bool gone = req->client_gone;
    pthread_mutex_unlock(&req->lock);
    mg_xfer_release(x);
    /* The summarizer's class, for health: from the transfer and the status (a 2xx whose summary
     * cannot be read is judged below). A transfer cut because the client left is cancelled. */
    mg_classification_t c = {.cls = MG_CLASS_OK, .retry_after_ms = -1, .should_retry = -1};
    if (run->result != MG_XFER_OK) {
        c.cls = mg_classify_xfer(run->result);
    } else if (run->status < 200 || run->status >= 300) {
        c = mg_classify_http2(req->gen->patterns, run->status, run->headers.data, run->headers.len,
                              run->body.data, run->body.len, req->json);
        if (c.cls == MG_CLASS_OK) c.cls = MG_CLASS_SERVER_ERROR;
    }
    /* An answer that came back is billed, used or not (the client may have left meanwhile); so
     * is one cut short (the body cap, a broken connection) and one that timed out once connected
     * (summaryTimeoutMs): a hosted upstream bills the work it began. Its usage is then estimated
     * from what was asked and what came. Error statuses, and requests that may never have
     * reached it (no connection; cancelled before an answer began), are not. */
    bool answered = run->status >= 200 && run->status < 300;
    bool timed_out = run->status == 0 && (run->result == MG_XFER_TIMEOUT_TOTAL || run->result == MG_XFER_TIMEOUT_IDLE ||
                                          run->result == MG_XFER_TIMEOUT_FIRST_TOKEN);
    if (answered || timed_out) charge_summary(req, run);
    if (gone || req->client_aborted) {
        summary_health(req, c);
        settle_locally(a, MG_CLASS_CANCELLED, "the client left while the summary was being made");
        mg_metrics_attempt(a->model->ref, a->cls);
        return advance(req, reply);
    }
    char why[sizeof run->detail + 64] = "";
    const char *text = NULL;
    size_t len = 0;
    int64_t took = mg_now_ms() - run->start_ms;
    if (run->result == MG_XFER_TIMEOUT_TOTAL || run->result == MG_XFER_TIMEOUT_CONNECT) {
        snprintf(why, sizeof why, "no answer within summaryTimeoutMs (%lld ms)",
                 (long long)run->opts.summary_timeout_ms);
    } else if (run->result != MG_XFER_OK) {
        snprintf(why, sizeof why, "%s%s%s", mg_xfer_result_name(run->result),
                 run->detail[0] ? ": " : "", run->detail);
    } else if (run->status < 200 || run->status >= 300) {
        snprintf(why, sizeof why, "it answered HTTP %ld", run->status);
    } else if (mg_summary_read(run->model->provider->api, run->body.data, run->body.len, req->arena,
                               &text, &len, why, sizeof why) != 0) {
        c.cls = MG_CLASS_SERVER_ERROR; /* why says what was wrong with the answer */
    } else if (mg_compact_insert_summary(req->arena, &run->reserved, run->budget, &run->opts,
                                         &run->reserved_report, text, len) != 0) {
        snprintf(why, sizeof why, "its summary did not fit the model's budget"); /* not its fault */
    }
    summary_health(req, c);
    mg_buf_free(&run->body);
    mg_buf_free(&run->headers);
    mg_ir_request_t cand;
    if (!why[0]) {
        mg_summary_memo_t *memo = mg_ir_alloc(req->arena, sizeof *memo);
        *memo = (mg_summary_memo_t){req->summaries, run->model, run->asked, text, run->asked_len, len};
        req->summaries = memo;
        cand = run->reserved;
        a->compaction = run->reserved_report;
        a->compaction.budget = run->budget;
    } else {
        cand = run->fallback;
        a->compaction = run->fallback_report;
        /* why may quote the summarizer's answer: its provider's secrets go first */
        mg_buf_t w = {0};
        mg_buf_puts(&w, why);
        mg_relay_scrub_secrets(&w, run->model->provider);
        compaction_note(req, a, "summary by %s failed after %lld ms, the drop note stands: %s",
                        run->model->ref, (long long)took, w.data ? w.data : "");
        mg_buf_free(&w);
    }
    a->raw_estimate = a->compaction.raw_after;
    a->raw_fixed = a->compaction.raw_fixed_after;
    if (send_attempt(req, a, &cand, true, run->delay_ms)) return MG_ROUTE_WAIT;
    mg_metrics_attempt(a->model->ref, a->cls);
    return advance(req, reply);
}

/* The smallest window learned from an error (learn_window). */
#define MG_MIN_LEARNED_WINDOW 1024

/* An overflow whose error names the server's window, under the configured one (LM Studio or
 * llama.cpp loaded with a smaller context than contextWindow says): the window is learned for
 * the model, with a warning when it is new. Returns true when a resend fitted to it may get an
 * answer, that is when the request was fitted to a larger window. */
static bool learn_window(mg_attempt_t *a)
{
    const mg_model_t *m = a->model;
    int64_t w = mg_classify_context_window(a->body.data, a->body.len, a->req->json);
    if (w <= 0) w = mg_classify_context_window(a->detail, strlen(a->detail), a->req->json);
    /* Under MG_MIN_LEARNED_WINDOW nothing would fit anyway (half goes to the answer, then the
     * margin), and such a figure is more likely a misread than a server's window. */
    if (w < MG_MIN_LEARNED_WINDOW || (m->context_window > 0 && w >= m->context_window)) return false;
    int64_t now = mg_now_ms();
    if (mg_health_window(health, m->ref, now) != w)
        mg_log(MG_LOG_WARN, "health",
               "%s: its server says its context window is %lld tokens, under the configured contextWindow of "
               "%lld; requests to it are fitted to %lld tokens for %d minutes (set contextWindow, or load "
               "the model with a larger context)",
               m->ref, (long long)w, (long long)m->context_window, (long long)w, MG_HEALTH_WINDOW_TTL_MS / 60000);
    mg_health_learn_window(health, m->provider->id, m->ref, mg_health_endpoint(m->provider), w, now);
    int64_t in_force = mg_health_window(health, m->ref, now); /* 0 when the endpoint changed meanwhile */
    return in_force > 0 && (a->fit_window <= 0 || in_force < a->fit_window);
}

mg_route_step_t mg_router_resume(mg_req_t *req, mg_reply_t *reply)
{
    if (req->summary.active) return finish_summary(req, reply);
    mg_attempt_t *a = mg_req_current(req);
    pthread_mutex_lock(&req->lock);
    bool committed = req->committed == a;
    pthread_mutex_unlock(&req->lock);
    if (committed) {
        /* The client's stream starts; the attempt's end is reported through the output queue. */
        a->cls = MG_CLASS_OK;
        req->served = a->model;
        return MG_ROUTE_STREAM;
    }
    mg_classification_t c = mg_relay_classify(req, a);
    a->cls = c.cls;
    a->retry_after_ms = c.retry_after_ms;
    if (a->cls != MG_CLASS_OK && a->result == MG_XFER_OK && !a->is_sse && !a->detail[0]) {
        /* An error body is told by its own message, whatever the status (LM Studio answers 200
         * {"error":"Unexpected endpoint…"}); another unusable answer by what is wrong with it. */
        if (a->status >= 400 || answer_is_error(a)) note_upstream_error(a);
        if (!a->detail[0]) snprintf(a->detail, sizeof a->detail, "%s", mg_relay_answer_problem(a));
    }
    mg_metrics_attempt(a->model->ref, a->cls);

    mg_health_decision_t d = {.action = a->cls == MG_CLASS_OK                                 ? MG_HEALTH_STOP
                                        : mg_class_moves_on(a->cls) || !a->status ? MG_HEALTH_NEXT
                                                                                           : MG_HEALTH_STOP};
    if (health && a->health_begun) {
        const char *pid = a->model->provider->id;
        int64_t now = mg_now_ms();
        mg_health_attempt_end(health, pid, a->model->ref);
        a->health_begun = false;
        if (a->cls != MG_CLASS_CANCELLED) {
            mg_health_outcome_t o = mg_health_outcome(a->cls);
            o.endpoint = mg_health_endpoint(a->model->provider); /* as of the request's generation */
            o.xfer = a->result;
            o.http_status = a->status;
            o.retry_after_ms = c.retry_after_ms;
            o.should_retry = c.should_retry;
            o.latency_ms = a->end_ms - a->start_ms;
            o.message = a->detail;
            mg_health_report(health, pid, a->model->ref, &o, now);
            d = mg_health_decide(health, pid, a->model->ref, &o, req->retries, now);
        }
    }
    if (a->cls == MG_CLASS_CONTEXT_OVERFLOW && a->status > 0 && learn_window(a) && !req->refitted && req->ir_ready &&
        req->n_attempts < MG_MAX_ATTEMPTS) {
        /* Fitted to a window the server does not have: once per request, the same model again,
         * fitted to the one it named, before any other candidate (a local model's request stays
         * local). */
        req->refitted = true;
        pthread_mutex_lock(&req->lock);
        bool gone = req->client_gone;
        pthread_mutex_unlock(&req->lock);
        if (gone) return advance(req, reply);
        trace_note(req, "refit: the server named a smaller context window");
        if (submit(req, a->model, true, 0)) return MG_ROUTE_WAIT;
        mg_metrics_attempt(a->model->ref, mg_req_current(req)->cls);
        note_overflow(req, a->model);
        return advance(req, reply);
    }
    if (a->cls == MG_CLASS_OK && req->stream) {
        /* Asked to stream, the upstream answered whole: the client gets that answer as a stream. */
        req->served = a->model;
        stream_whole_answer(req, a, reply);
        return MG_ROUTE_REPLY;
    }
    if (a->cls == MG_CLASS_OK) {
        req->served = a->model;
        if (a->model->provider->api == MG_API_OPENAI_COMPLETIONS && req->client_api == MG_API_OPENAI_COMPLETIONS) {
            read_usage(req, a);
            normalize_answer(req, a, &a->body);
        } else {
            translate_answer(req, a);
        }
        if (req->gen->cfg->gw.log_content) note_answer(req, a);
        if (a->completion_tokens <= 0) /* no usage to charge: the answer's size, as sent */
            a->answer_estimate = mg_tokens_text(a->body.data ? a->body.data : "", a->body.len);
        reply->status = (int)a->status;
        reply->content_type = "application/json";
        reply->body = a->body;
        a->body = (mg_buf_t){0};
        return MG_ROUTE_REPLY;
    }
    if (d.action == MG_HEALTH_STOP && a->status >= 400) {
        reply_upstream_error(req, a, reply);
        return MG_ROUTE_REPLY;
    }
    if (a->cls != MG_CLASS_OK && a->cls != MG_CLASS_CANCELLED && mg_policy_has_hook(req->gen->policy, "on_failure")) {
        /* The policy's on_failure has the last word over the defaults. */
        size_t idx = 0;
        while (idx < req->n_cands && req->cands[idx] != a->model) idx++;
        mg_failure_t f = {idx, a->model, mg_class_name(a->cls), a->status, c.retry_after_ms, (int)req->n_attempts};
        mg_failure_decision_t fd;
        int frc = mg_policy_on_failure(req->gen->policy, &req->pin, &live_view, &f, &fd);
        if (fd.trace[0]) trace_note(req, fd.trace); /* gw.trace works in on_failure too */
        if (frc < 0)
            mg_log(MG_LOG_ERROR, "policy", "%s", fd.error);
        else if (fd.action == MG_FAILURE_STOP)
            d.action = MG_HEALTH_STOP;
        else if (fd.action == MG_FAILURE_RETRY && req->retries < 5)
            d = (mg_health_decision_t){.action = MG_HEALTH_RETRY, .delay_ms = fd.delay_ms};
        else if (fd.action == MG_FAILURE_NEXT && d.action == MG_HEALTH_RETRY)
            d.action = MG_HEALTH_NEXT;
    }
    if (d.action == MG_HEALTH_STOP && a->cls != MG_CLASS_OK) {
        /* on_failure said stop (or the defaults did, for a failure with no status): the client
         * gets the gateway's answer for the attempts so far, as if this candidate were the last
         * (429 with Retry-After when all were rate limits, 502 otherwise). Not the upstream's own
         * error: a 401 there is about the provider's key, not the client's. The failures that are
         * the request's own (bad_request…) were answered above, before the hook, when they came
         * with an error status; one that came inside a 2xx stream (a content filter's refusal as
         * an error event) is the client's to see as well, in its API's format. */
        if (!mg_class_moves_on(a->cls) && a->cls != MG_CLASS_CANCELLED && a->status < 400) {
            mg_reply_error(reply, req->ep, 400, "invalid_request_error", mg_class_name(a->cls),
                           a->detail[0] ? a->detail : "the upstream refused the request");
            return MG_ROUTE_REPLY;
        }
        reply_all_failed(req, reply);
        return MG_ROUTE_REPLY;
    }
    if (a->cls == MG_CLASS_CONTEXT_OVERFLOW) note_overflow(req, a->model);
    pthread_mutex_lock(&req->lock);
    bool gone = req->client_gone;
    pthread_mutex_unlock(&req->lock);
    if (d.action == MG_HEALTH_RETRY && !gone && req->n_attempts < MG_MAX_ATTEMPTS) {
        req->retries++;
        if (submit(req, a->model, true, d.delay_ms)) return MG_ROUTE_WAIT;
    }
    req->retries = 0;
    return advance(req, reply);
}

void mg_router_abort(mg_req_t *req)
{
    /* From the watchdog: the transfers are read, and cancelled (which takes a reference), under
     * the request's lock, so the serving thread cannot release one in between (finish_summary
     * detaches the summarizer's under it). */
    pthread_mutex_lock(&req->lock);
    if (req->summary.active) {
        /* The attempt has not left yet: stop its summarizer (its end wakes the request). */
        if (!req->summary.done && req->summary.xfer) mg_xfer_cancel(req->summary.xfer);
        pthread_mutex_unlock(&req->lock);
        return;
    }
    mg_attempt_t *a = mg_req_current(req);
    if (a && a->xfer && !a->done) {
        a->cls = MG_CLASS_CANCELLED;
        mg_xfer_cancel(a->xfer);
    }
    pthread_mutex_unlock(&req->lock);
}

void mg_router_route_header(const mg_req_t *req, mg_buf_t *out)
{
    mg_buf_reserve(out, 128);
    mg_buf_puts(out, "gen=");
    mg_buf_put_u64(out, (uint64_t)req->gen->id);
    if (req->trace[0]) {
        /* The policy's decision trace; its own "; " separators become ", " inside the value. */
        mg_buf_puts(out, "; trace=");
        for (const char *p = req->trace; *p; p++) mg_buf_append(out, *p == ';' ? "," : p, 1);
    }
    for (size_t i = 0; i < req->n_attempts; i++) {
        const mg_attempt_t *a = &req->attempts[i];
        mg_buf_puts(out, "; ");
        mg_buf_puts(out, a->model->ref);
        mg_buf_puts(out, "=");
        mg_buf_puts(out, mg_class_name(a->cls));
        if (a->status) {
            mg_buf_puts(out, ":");
            mg_buf_put_i64(out, a->status);
        }
    }
}

/* The access line is written once per request: its fields are appended directly rather than
 * through printf. */
void mg_router_access_json(const mg_req_t *req, mg_buf_t *out)
{
    static const char *const ep_names[] = {"chat", "responses", "messages"};
    mg_buf_reserve(out, 768);
    mg_buf_puts(out, "\"id\":");
    mg_buf_json_str(out, req->id);
    if (req->key) {
        mg_buf_puts(out, ",\"key\":");
        mg_buf_json_str(out, req->key->id);
    }
    mg_buf_puts(out, ",\"method\":");
    mg_buf_json_str(out, req->method);
    mg_buf_puts(out, ",\"path\":");
    mg_buf_json_str(out, req->path);
    if (req->is_api) { /* not for the model list, health, metrics, admin or an unknown path */
        mg_buf_puts(out, ",\"api\":\"");
        mg_buf_puts(out, ep_names[req->ep]);
        mg_buf_puts(out, "\"");
    }
    mg_buf_puts(out, ",\"gen\":");
    mg_buf_put_u64(out, (uint64_t)req->gen->id);
    mg_buf_puts(out, ",\"model\":");
    mg_buf_json_str(out, req->model_asked);
    mg_buf_puts(out, req->stream ? ",\"stream\":true,\"status\":" : ",\"stream\":false,\"status\":");
    mg_buf_put_i64(out, req->status);
    mg_buf_puts(out, ",\"served\":");
    mg_buf_json_str(out, req->served ? req->served->ref : NULL);
    mg_buf_puts(out, ",\"attempts\":[");
    int64_t now = -1; /* read once, and only when an attempt is still running */
    for (size_t i = 0; i < req->n_attempts; i++) {
        const mg_attempt_t *a = &req->attempts[i];
        mg_class_t cls = a->cls;
        if (a == req->committed && a->done && cls == MG_CLASS_OK) {
            /* How the relayed stream itself ended. */
            if (a->fail_cls) cls = a->fail_cls;
            else if (a->result != MG_XFER_OK) cls = mg_classify_xfer(a->result);
        }
        mg_buf_puts(out, i ? ",{\"model\":" : "{\"model\":");
        mg_buf_json_str(out, a->model->ref);
        mg_buf_puts(out, ",\"outcome\":\"");
        mg_buf_puts(out, mg_class_name(cls));
        mg_buf_puts(out, "\",\"status\":");
        mg_buf_put_i64(out, a->status);
        mg_buf_puts(out, ",\"ms\":");
        if (!a->done && now < 0) now = mg_now_ms();
        /* 0 for a retry cancelled during its backoff (its start was still ahead) */
        mg_buf_put_i64(out, MG_MAX((a->done ? a->end_ms : now) - a->start_ms, 0));
        if (a == req->committed) {
            mg_buf_puts(out, ",\"content_events\":");
            mg_buf_put_i64(out, a->content_events);
            mg_buf_puts(out, ",\"relayed_bytes\":");
            mg_buf_put_i64(out, a->relayed_bytes);
        }
        if (a->prompt_tokens || a->completion_tokens) {
            mg_buf_puts(out, ",\"prompt_tokens\":");
            mg_buf_put_i64(out, a->prompt_tokens);
            mg_buf_puts(out, ",\"completion_tokens\":");
            mg_buf_put_i64(out, a->completion_tokens);
        }
        if (a->detail[0]) {
            mg_buf_puts(out, ",\"detail\":");
            mg_buf_json_str(out, a->detail);
        }
        if (a->compaction_note[0]) { /* why a summary or the policy's compaction was not used */
            mg_buf_puts(out, ",\"compaction_note\":");
            mg_buf_json_str(out, a->compaction_note);
        }
        mg_buf_puts(out, "}");
    }
    mg_buf_puts(out, "]");
    if (req->trace[0]) {
        mg_buf_puts(out, ",\"trace\":");
        mg_buf_json_str(out, req->trace);
    }
    if (req->n_skipped) {
        mg_buf_puts(out, ",\"skipped\":[");
        for (size_t i = 0; i < req->n_skipped; i++) {
            if (i) mg_buf_puts(out, ",");
            mg_buf_json_str(out, req->skipped[i]->ref);
        }
        mg_buf_puts(out, "]");
    }
    const mg_attempt_t *sa = served_attempt(req);
    if (sa && mg_compact_report_changed(&sa->compaction)) {
        mg_buf_t h = {0};
        mg_compact_report_header(&sa->compaction, &h);
        mg_buf_puts(out, ",\"compaction\":");
        mg_buf_json_str(out, h.data);
        mg_buf_free(&h);
    }
    const mg_attempt_t *ba = billed_attempt(req);
    if (ba) {
        int64_t in, o, cached, cache_write;
        bool estimated;
        double cost = usage_cost(req, ba, &in, &o, &cached, &cache_write, &estimated);
        mg_buf_puts(out, ",\"tokens\":{\"in\":");
        mg_buf_put_i64(out, in);
        mg_buf_puts(out, ",\"out\":");
        mg_buf_put_i64(out, o);
        mg_buf_puts(out, ",\"cached\":");
        mg_buf_put_i64(out, cached);
        if (cache_write > 0) {
            mg_buf_puts(out, ",\"cache_write\":");
            mg_buf_put_i64(out, cache_write);
        }
        if (estimated) mg_buf_puts(out, ",\"estimated\":true");
        if (cost == 0 && !signbit(cost)) mg_buf_puts(out, "},\"cost\":0"); /* what %.6g writes */
        else mg_buf_printf(out, "},\"cost\":%.6g", cost);
    }
    if (req->summary_model) { /* the summaries' own charge, beside the answer's */
        mg_buf_puts(out, ",\"summary\":{\"model\":");
        mg_buf_json_str(out, req->summary_model->ref);
        mg_buf_puts(out, ",\"tokens\":");
        mg_buf_put_i64(out, req->summary_tokens);
        mg_buf_printf(out, ",\"cost\":%.6g}", req->summary_cost);
    }
    if (sa) {
        if (sa->ttft_ms >= 0) {
            mg_buf_puts(out, ",\"ttft_ms\":");
            mg_buf_put_i64(out, sa->ttft_ms);
        }
    }
    const mg_gateway_settings_t *gw = &req->gen->cfg->gw;
    if (gw->log_content && req->model_asked) {
        /* Off by default: prompts and answers are the users' data. The prompt is the request
         * body as the client sent it; the answer, the text it got. Both capped. */
        size_t n = mg_utf8_fit(req->body.data ? req->body.data : "", req->body.len, gw->log_content_max_bytes);
        mg_buf_puts(out, ",\"prompt\":");
        mg_buf_json_strn(out, req->body.data ? req->body.data : "", n);
        if (n < req->body.len) {
            mg_buf_puts(out, ",\"prompt_cut_bytes\":");
            mg_buf_put_u64(out, req->body.len - n);
        }
        if (sa) {
            mg_buf_puts(out, ",\"answer\":");
            mg_buf_json_strn(out, sa->answer.data ? sa->answer.data : "", sa->answer.len);
            if (sa->answer_cut) mg_buf_puts(out, ",\"answer_cut\":true");
        }
    }
    mg_buf_puts(out, req->client_aborted ? ",\"client_aborted\":true,\"total_ms\":"
                                         : ",\"client_aborted\":false,\"total_ms\":");
    mg_buf_put_i64(out, mg_now_ms() - req->start_ms);
}

/* Health probes and registry wiring. See probe.h. */
#include "probe.h"

#include "log.h"
#include "metrics.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mg_probe_settings(const mg_config_t *cfg, mg_health_settings_t *s)
{
    mg_health_settings_default(s);
    const mg_health_conf_t *c = &cfg->gw.health;
    if (c->n_cooldowns) {
        for (size_t i = 0; i < c->n_cooldowns && i < MG_HEALTH_MAX_STEPS; i++) s->cooldowns_ms[i] = c->cooldowns_ms[i];
        s->n_cooldowns = MG_MIN(c->n_cooldowns, (size_t)MG_HEALTH_MAX_STEPS);
    }
    if (c->failures_before_cooldown >= 0) s->failures_before_cooldown = (unsigned)c->failures_before_cooldown;
    if (c->max_retries >= 0) s->max_retries = (unsigned)c->max_retries;
    if (c->retry_budget_ratio >= 0) s->retry_budget_ratio = c->retry_budget_ratio;
    if (c->probe_before_expiry_ms >= 0) s->probe_before_expiry_ms = c->probe_before_expiry_ms;
}

/* Called with the registry's lock held: log and count, nothing else. */
static void on_change(void *ud, const mg_health_change_t *ch)
{
    mg_buf_t e = {0};
    mg_buf_printf(&e, "\"scope\":\"%s\",\"key\":", mg_health_scope_name(ch->scope));
    mg_buf_json_str(&e, ch->key);
    mg_buf_printf(&e, ",\"state\":\"%s\",\"reason\":", ch->cooling ? "cooling_down" : "healthy");
    mg_buf_json_str(&e, ch->reason);
    if (ch->cooling) {
        mg_buf_printf(&e, ",\"class\":\"%s\",\"cooldown_ms\":%lld,\"consecutive_failures\":%u,\"message\":",
                      mg_class_name(ch->cls), (long long)(ch->cooldown_until_ms - ch->now_ms),
                      ch->consecutive_failures);
        mg_buf_json_str(&e, ch->message);
    }
    mg_log_json(ch->cooling ? MG_LOG_WARN : MG_LOG_INFO, "health", e.data);
    mg_buf_free(&e);
    if (ch->scope == MG_HEALTH_SCOPE_PROVIDER) mg_metrics_provider_cooling(ch->key, ch->cooling);
}

mg_health_t *mg_probe_health_new(const mg_config_t *cfg)
{
    mg_health_settings_t s;
    mg_probe_settings(cfg, &s);
    mg_health_t *h = mg_health_new(&s);
    mg_health_set_callback(h, on_change, NULL);
    mg_health_add_config(h, cfg, mg_now_ms());
    return h;
}

void mg_probe_health_update(mg_health_t *h, const mg_config_t *cfg)
{
    mg_health_settings_t s;
    mg_probe_settings(cfg, &s);
    mg_health_configure(h, &s);
    mg_health_add_config(h, cfg, mg_now_ms());
}

/* One probe in flight: the provider it is for (a copy of what the answer needs) and the body. */
typedef struct probe {
    mg_health_t *h;
    uint64_t endpoint;      /* mg_health_endpoint of the provider as the probe began */
    mg_provider_t provider; /* shallow copy: id and models point into a config that may be
                               reloaded, so the strings are duplicated below */
    char *id;
    mg_model_t *models;
    long status;
    mg_buf_t body;
} probe_t;

static void probe_head(void *ud, long status, const char *headers, size_t len)
{
    ((probe_t *)ud)->status = status;
}

static size_t probe_data(void *ud, mg_xfer_t *x, const char *p, size_t n)
{
    probe_t *pr = ud;
    if (pr->body.len + n > (1u << 20)) return MG_XFER_DATA_ABORT;
    mg_buf_append(&pr->body, p, n);
    return n;
}

static void probe_done(void *ud, mg_xfer_result_t r, const char *detail)
{
    probe_t *pr = ud;
    long status = r == MG_XFER_OK ? pr->status : 0;
    mg_health_probe_response(pr->h, &pr->provider, pr->endpoint, status, pr->body.data, pr->body.len, detail,
                             mg_now_ms());
    for (size_t i = 0; i < pr->provider.n_models; i++) {
        free(pr->models[i].id);
        free(pr->models[i].ref);
    }
    free(pr->models);
    free(pr->id);
    mg_buf_free(&pr->body);
    free(pr);
}

static void start_probe(mg_health_t *h, const mg_provider_t *p, mg_upstream_t *up)
{
    probe_t *pr = mg_xcalloc(1, sizeof *pr);
    pr->h = h;
    pr->endpoint = mg_health_endpoint(p);
    pr->provider = *p;
    pr->id = mg_xstrdup(p->id);
    pr->provider.id = pr->id;
    pr->models = mg_xcalloc(p->n_models ? p->n_models : 1, sizeof *pr->models);
    for (size_t i = 0; i < p->n_models; i++) {
        pr->models[i] = p->models[i];
        pr->models[i].id = mg_xstrdup(p->models[i].id);
        pr->models[i].ref = mg_xstrdup(p->models[i].ref);
        pr->models[i].provider = &pr->provider;
    }
    pr->provider.models = pr->models;
    /* Pointers the registry does not read are cleared so nothing dangles after a reload. */
    pr->provider.base_url = pr->provider.api_key = pr->provider.api_key_env = pr->provider.region = NULL;
    pr->provider.headers = NULL;
    pr->provider.n_headers = 0;
    pr->provider.tags = NULL;
    pr->provider.n_tags = 0;

    size_t n = strlen(p->base_url);
    bool anthropic = p->api == MG_API_ANTHROPIC_MESSAGES;
    bool has_v1 = n >= 3 && strcmp(p->base_url + n - 3, "/v1") == 0;
    char *url = mg_xasprintf("%s%s/models", p->base_url, anthropic && !has_v1 ? "/v1" : "");
    const char *hdrs[40];
    char *owned[40];
    size_t nh = 0, no = 0;
    hdrs[nh++] = "Accept: application/json";
    if (p->api_key && *p->api_key) {
        hdrs[nh++] = owned[no++] = anthropic ? mg_xasprintf("x-api-key: %s", p->api_key)
                                             : mg_xasprintf("Authorization: Bearer %s", p->api_key);
        if (anthropic) hdrs[nh++] = "anthropic-version: 2023-06-01";
    }
    for (size_t i = 0; i < p->n_headers && nh < MG_ARRAY_LEN(hdrs); i++)
        hdrs[nh++] = owned[no++] = mg_xasprintf("%s: %s", p->headers[i].name, p->headers[i].value);
    mg_xfer_spec_t spec = {
        .url = url,
        .headers = hdrs,
        .n_headers = nh,
        .get = true,
        .http2 = p->http2,
        .ca_file = p->ca_file,
        .connect_timeout_ms = 3000,
        .total_timeout_ms = 10000,
        .cb = {probe_head, probe_data, probe_done},
        .ud = pr,
    };
    mg_xfer_t *x = mg_xfer_submit(up, &spec);
    if (x) mg_xfer_release(x); /* fire and forget: probe_done frees pr */
    else probe_done(pr, MG_XFER_CANCELLED, "gateway stopping");
    free(url);
    for (size_t i = 0; i < no; i++) free(owned[i]);
}

void mg_probe_tick(mg_health_t *h, const mg_config_t *cfg, mg_upstream_t *up, int64_t now_ms)
{
    mg_health_tick(h, now_ms);
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const mg_provider_t *p = &cfg->providers[i];
        if (p->api_key_env && !p->api_key) continue; /* nothing to prove without a key */
        if (mg_health_probe_due(h, p->id, now_ms)) start_probe(h, p, up);
    }
}

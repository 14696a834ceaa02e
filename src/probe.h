/* Active health probes and the health registry's wiring to the config: once a second, for every
 * provider the registry says is due (cooling down, near the end of its cooldown, no probe in
 * flight), GET {baseUrl}/models on the upstream loop — the seeds' own troubleshooting check — and
 * hand the answer to the registry. Also logs health state changes, once each. */
#pragma once
#include "config.h"
#include "health.h"
#include "upstream.h"

/* The registry's settings from the config's gateway.health (defaults where unset). */
void mg_probe_settings(const mg_config_t *cfg, mg_health_settings_t *out);
/* A registry for cfg, with state changes logged and counted in the metrics. */
mg_health_t *mg_probe_health_new(const mg_config_t *cfg);
/* After a reload: new settings, new providers and models. */
void mg_probe_health_update(mg_health_t *h, const mg_config_t *cfg);
/* One pass: expire cooldowns, start the probes that are due. Thread-safe. */
void mg_probe_tick(mg_health_t *h, const mg_config_t *cfg, mg_upstream_t *up, int64_t now_ms);

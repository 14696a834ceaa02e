/* Generation snapshots and their atomic publication. See gen.h.
 * A mutex guards the current pointer while a reference is taken: acquire is a few tens of
 * nanoseconds and runs once per request, which keeps the code obviously correct. */
#include "gen.h"

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t cur_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_gen_t *current;
static atomic_uint_fast64_t next_id = 1;

/* A file the config names that cannot be read is most likely a wrong path in the config: said as
 * config errors are, at the value that names it ("FILE:LINE:COL: gateway.policy: cannot read
 * PATH: why"). What is wrong inside a file that reads, its loader says, at the file's own line. */
static bool readable(const char *path, const char *at, char *err, size_t errlen)
{
    if (!at || access(path, R_OK) == 0) return true;
    snprintf(err, errlen, "%s: cannot read %s: %s", at, path, strerror(errno));
    return false;
}

/* A provider's caFile (gateway.providers.<id>.caFile) must read and hold a PEM certificate:
 * libcurl would otherwise fail every request to that provider (connect_error, then a cooldown),
 * and say so only to the first request. OpenSSL, libcurl's TLS library here, reads a CA bundle as
 * PEM: "-----BEGIN CERTIFICATE-----" (or TRUSTED CERTIFICATE, X509 CERTIFICATE). */
static bool ca_file_ok(const mg_provider_t *p, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    if (!p->ca_file || !p->ca_file_at) return true;
    if (mg_read_file(p->ca_file, 16u << 20, &text, &len) != 0) {
        snprintf(err, errlen, "%s: cannot read %s: %s", p->ca_file_at, p->ca_file, strerror(errno));
        return false;
    }
    bool cert = false;
    static const char begin[] = "-----BEGIN ", end[] = "CERTIFICATE-----";
    for (const char *b = text; !cert && (b = memmem(b, len - (size_t)(b - text), begin, sizeof begin - 1));) {
        b += sizeof begin - 1;
        size_t line = strcspn(b, "\r\n");
        cert = line >= sizeof end - 1 && memcmp(b + line - (sizeof end - 1), end, sizeof end - 1) == 0;
    }
    free(text);
    if (!cert)
        snprintf(err, errlen, "%s: %s holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                 p->ca_file_at, p->ca_file);
    return cert;
}

/* gateway.log.path must be one the process can append to: the file writable, or its directory
 * when the file does not exist yet. A reload to a path that cannot be written is refused (the old
 * generation and its log stay) rather than taken and then failing to reopen the log. */
static bool log_path_ok(const mg_gateway_settings_t *gw, char *err, size_t errlen)
{
    if (!gw->log_path || access(gw->log_path, W_OK) == 0) return true;
    int e = errno;
    if (e == ENOENT) {
        const char *slash = strrchr(gw->log_path, '/');
        char *dir = slash ? mg_xstrndup(gw->log_path, slash == gw->log_path ? 1 : (size_t)(slash - gw->log_path))
                          : mg_xstrdup(".");
        bool ok = access(dir, W_OK | X_OK) == 0;
        e = errno;
        free(dir);
        if (ok) return true;
    }
    snprintf(err, errlen, "%s: cannot write %s: %s", gw->log_path_at ? gw->log_path_at : "gateway.log.path",
             gw->log_path, strerror(e));
    return false;
}

mg_gen_t *mg_gen_build(mg_config_t *cfg, char *err, size_t errlen)
{
    const mg_patterns_t *pats = mg_patterns_builtin();
    bool files_ok = !(cfg->gw.error_patterns_path &&
                      !readable(cfg->gw.error_patterns_path, cfg->gw.error_patterns_at, err, errlen)) &&
                    !(cfg->gw.policy_path && !readable(cfg->gw.policy_path, cfg->gw.policy_at, err, errlen));
    for (size_t i = 0; i < cfg->n_providers && files_ok; i++) files_ok = ca_file_ok(&cfg->providers[i], err, errlen);
    files_ok = files_ok && log_path_ok(&cfg->gw, err, errlen);
    if (!files_ok) {
        mg_config_free(cfg);
        return NULL;
    }
    if (cfg->gw.error_patterns_path) {
        pats = mg_patterns_load(cfg->gw.error_patterns_path, err, errlen);
        if (!pats) {
            mg_config_free(cfg);
            return NULL;
        }
    }
    mg_policy_limits_t lim = mg_policy_limits_default();
    if (cfg->gw.policy_cpu_ms > 0) lim.cpu_ms = cfg->gw.policy_cpu_ms;
    if (cfg->gw.policy_memory_mb > 0) lim.mem_bytes = cfg->gw.policy_memory_mb << 20;
    mg_policy_t *policy = mg_policy_load(cfg, &lim, err, errlen);
    if (!policy) {
        mg_patterns_release(pats);
        mg_config_free(cfg);
        return NULL;
    }
    mg_gen_t *g = mg_xcalloc(1, sizeof *g);
    g->policy = policy;
    atomic_init(&g->refs, 1);
    g->id = atomic_fetch_add(&next_id, 1);
    g->cfg = cfg;
    g->patterns = pats;
    g->loaded_wall_ms = mg_wall_ms();
    return g;
}

void mg_gen_publish(mg_gen_t *gen)
{
    pthread_mutex_lock(&cur_lock);
    mg_gen_t *old = current;
    current = gen;
    pthread_mutex_unlock(&cur_lock);
    mg_gen_release(old);
}

mg_gen_t *mg_gen_acquire(void)
{
    pthread_mutex_lock(&cur_lock);
    mg_gen_t *g = current;
    if (g) atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&cur_lock);
    return g;
}

void mg_gen_release(mg_gen_t *gen)
{
    if (!gen || atomic_fetch_sub(&gen->refs, 1) != 1) return;
    mg_patterns_release(gen->patterns);
    mg_policy_free(gen->policy); /* it borrows the config */
    mg_config_free(gen->cfg);
    free(gen);
}

void mg_gen_shutdown(void)
{
    mg_gen_publish(NULL);
}

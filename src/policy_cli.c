/* `moongate route` and `moongate test`. See policy_cli.h. */
#include "policy_cli.h"

#include "config.h"
#include "keys.h"
#include "lua_testfile.h"
#include "policy.h"
#include "util.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Resolves the state's names against the config: aliases become refs; unknown names are an
 * error (a typo in a state file would otherwise silently test nothing). */
static int normalize_live(const mg_config_t *cfg, mg_tcase_t *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->live.n; i++) {
        mg_live_entry_t *e = &c->live_entries[i];
        if (e->provider) {
            if (!mg_config_find_provider(cfg, e->name)) {
                snprintf(err, errlen, "state.providers: '%s' is not a provider of the catalog",
                         e->name);
                return -1;
            }
        } else {
            const mg_model_t *m = mg_config_find_model(cfg, e->name);
            if (!m) {
                snprintf(err, errlen, "state.models: '%s' is not a model of the catalog", e->name);
                return -1;
            }
            e->name = m->ref; /* borrowed from cfg, which outlives the case */
        }
    }
    if (c->has_failure) {
        c->failure.model = mg_config_find_model(cfg, c->failure_model);
        if (!c->failure.model) {
            snprintf(err, errlen, "failure.model: '%s' is not a model of the catalog",
                     c->failure_model);
            return -1;
        }
    }
    c->in.cfg = cfg;
    /* As the gateway fills them: the data region from the x-moongate-region header; the key that
     * key_id names, with its allowed regions unless the request gives them itself. */
    if (!c->in.data_region)
        for (size_t i = 0; i < c->in.n_headers; i++)
            if (!c->in.data_region && c->in.headers[i].name &&
                mg_str_eq_nocase(c->in.headers[i].name, "x-moongate-region"))
                c->in.data_region = c->in.headers[i].value;
    for (size_t i = 0; c->in.key_id && i < mg_keys_count(cfg->gw.keys); i++) {
        const mg_key_t *k = mg_keys_at(cfg->gw.keys, i);
        if (strcmp(k->id, c->in.key_id)) continue;
        c->in.key = k; /* its models apply after the policy, as live */
        if (!c->in.allowed_regions && k->n_regions) {
            c->in.allowed_regions = (const char *const *)k->regions;
            c->in.n_allowed_regions = k->n_regions;
        }
    }
    /* Live, req.key_id is always a configured key's: another name is a typo that would test a
     * request no client can send. */
    if (c->in.key_id && !c->in.key) {
        snprintf(err, errlen, "request.key_id: '%s' is not the id of a key in gateway.keys", c->in.key_id);
        return -1;
    }
    /* The gateway applies its own region list to every request: so does a try or a test, unless
     * the request names one to simulate. */
    if (!c->in.gateway_regions && cfg->gw.allowed_regions) {
        c->in.gateway_regions = (const char *const *)cfg->gw.allowed_regions;
        c->in.n_gateway_regions = cfg->gw.n_allowed_regions;
    }
    return 0;
}

static void print_candidate(FILE *out, size_t i, const mg_candidate_t *c)
{
    fprintf(out, "%s%zu. %s", i ? "          " : "plan      ", i + 1, c->model->ref);
    if (c->connect_ms) fprintf(out, "  connect_ms=%lld", (long long)c->connect_ms);
    if (c->first_token_ms) fprintf(out, "  first_token_ms=%lld", (long long)c->first_token_ms);
    if (c->idle_ms) fprintf(out, "  idle_ms=%lld", (long long)c->idle_ms);
    if (c->total_ms) fprintf(out, "  total_ms=%lld", (long long)c->total_ms);
    if (c->max_output_tokens >= 0)
        fprintf(out, "  max_output_tokens=%lld", (long long)c->max_output_tokens);
    if (c->compaction >= 0) fprintf(out, "  compaction=%s", c->compaction ? "on" : "off");
    if (c->strip_reasoning >= 0)
        fprintf(out, "  strip_reasoning=%s", c->strip_reasoning ? "on" : "off");
    if (c->summarize >= 0)
        fprintf(out, "  summarizer=%s", c->summarize ? c->summarizer->ref : "none");
    fprintf(out, "\n");
}

int mg_cli_route(const char *config_path, const char *request_path, const char *state_path,
                 FILE *out)
{
    char err[1024];
    int rc = 2;
    mg_policy_t *p = NULL;
    mg_tcase_t *c = mg_xcalloc(1, sizeof *c);
    mg_keys_offline(); /* a policy can be tried without the client keys' secrets */
    mg_config_t *cfg = mg_config_load(config_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "moongate route: %s\n", err);
        goto done;
    }
    p = mg_policy_load(cfg, NULL, err, sizeof err);
    if (!p) {
        fprintf(stderr, "moongate route: policy: %s\n", err);
        goto done;
    }
    if (mg_tcase_from_json(request_path, state_path, c, err, sizeof err) ||
        normalize_live(cfg, c, err, sizeof err)) {
        fprintf(stderr, "moongate route: %s\n", err);
        goto done;
    }
    const mg_route_input_t *in = &c->in;
    fprintf(out, "policy    %s  sha256=%.16s\n", mg_policy_path(p), mg_policy_sha256(p));
    fprintf(out, "request   model=%s endpoint=%s prompt_tokens=%lld", in->model, in->endpoint,
            (long long)in->prompt_tokens);
    if (in->max_output_tokens >= 0)
        fprintf(out, " max_output_tokens=%lld", (long long)in->max_output_tokens);
    fprintf(out, " stream=%s tools=%s images=%s", in->stream ? "yes" : "no",
            in->has_tools ? "yes" : "no", in->has_images ? "yes" : "no");
    if (in->data_region) fprintf(out, " data_region=%s", in->data_region);
    if (in->key_id) fprintf(out, " key=%s", in->key_id);
    fprintf(out, "\n");
    if (c->live.n)
        fprintf(out, "state     %zu entr%s from %s\n", c->live.n, c->live.n == 1 ? "y" : "ies",
                state_path);
    mg_live_view_t live = mg_live_static_view(&c->live);
    mg_plan_t *plan = mg_xmalloc(sizeof *plan);
    int prc = mg_policy_route(p, in, &live, plan);
    if (prc) {
        fprintf(out, "error     %s\n", plan->error);
        rc = 1;
    } else if (plan->rejected) {
        fprintf(out, "rejected  %d %s: %s\n", plan->status, plan->code, plan->message);
        rc = 0;
    } else {
        for (size_t i = 0; i < plan->n_cands; i++)
            print_candidate(out, i, &plan->cands[i]);
        rc = 0;
    }
    if (plan->trace[0]) fprintf(out, "trace     %s\n", plan->trace);
    fprintf(out, "decided in %lld us (nothing was sent)\n", (long long)plan->elapsed_us);
    free(plan);
done:
    mg_tcase_clear(c);
    free(c);
    mg_policy_free(p);
    mg_config_free(cfg);
    return rc;
}

/* ---- moongate test ----------------------------------------------------------------------------
 */

typedef struct counts {
    int passed, failed;
} counts_t;

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void run_case(mg_testfile_t *tf, size_t i, const char *file, const mg_config_t *cfg,
                     mg_policy_t *p, counts_t *n, FILE *out)
{
    char err[1024];
    mg_tcase_t *c = mg_xcalloc(1, sizeof *c);
    if (mg_testfile_case(tf, i, c, err, sizeof err)) {
        fprintf(out, "FAIL %s: %s\n", file, err);
        n->failed++;
        goto done;
    }
    if (normalize_live(cfg, c, err, sizeof err)) {
        fprintf(out, "FAIL %s: %s: %s\n", file, c->name, err);
        n->failed++;
        goto done;
    }
    mg_live_view_t live = mg_live_static_view(&c->live);
    mg_plan_t *plan = mg_xmalloc(sizeof *plan);
    mg_failure_decision_t fd;
    mg_tresult_t r = {0};
    if (c->has_failure) {
        r.rc = mg_policy_on_failure(p, &c->in, &live, &c->failure, &fd);
        r.fd = &fd;
    } else {
        r.rc = mg_policy_route(p, &c->in, &live, plan);
        r.plan = plan;
    }
    int v = mg_testfile_check(tf, i, &r, err, sizeof err);
    free(plan);
    if (v == 1) {
        fprintf(out, "ok   %s: %s\n", file, c->name);
        n->passed++;
    } else {
        fprintf(out, "FAIL %s: %s: %s\n", file, c->name, err);
        n->failed++;
    }
done:
    mg_tcase_clear(c);
    free(c);
}

static void run_file(const char *path, counts_t *n, FILE *out)
{
    char err[1024];
    const char *file = base_name(path);
    mg_config_t *cfg = NULL;
    mg_policy_t *p = NULL;
    mg_testfile_t *tf = mg_testfile_load(path, err, sizeof err);
    if (!tf) {
        fprintf(out, "FAIL %s: %s\n", file, err);
        n->failed++;
        return;
    }
    cfg = mg_config_load(mg_testfile_config(tf), err, sizeof err);
    if (!cfg) {
        fprintf(out, "FAIL %s: config: %s\n", file, err);
        n->failed++;
        goto done;
    }
    p = mg_testfile_policy(tf)
            ? mg_policy_load_file(cfg, mg_testfile_policy(tf), NULL, err, sizeof err)
            : mg_policy_load(cfg, NULL, err, sizeof err);
    if (!p) {
        fprintf(out, "FAIL %s: policy: %s\n", file, err);
        n->failed++;
        goto done;
    }
    if (mg_testfile_count(tf) == 0) {
        fprintf(out, "FAIL %s: no cases\n", file);
        n->failed++;
    }
    for (size_t i = 0; i < mg_testfile_count(tf); i++)
        run_case(tf, i, file, cfg, p, n, out);
done:
    mg_policy_free(p);
    mg_config_free(cfg);
    mg_testfile_free(tf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && !strcmp(s + n - m, suffix);
}

int mg_cli_test(const char *path, FILE *out)
{
    counts_t n = {0, 0};
    struct stat st;
    mg_keys_offline(); /* a policy can be tested without the client keys' secrets */
    char **files = NULL;
    size_t nf = 0;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "moongate test: %s: no such file or directory\n", path);
        return 2;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".lua")) continue;
            files = mg_xrealloc(files, (nf + 1) * sizeof *files);
            files[nf++] = mg_xasprintf("%s/%s", path, e->d_name);
        }
        if (d) closedir(d);
        if (nf) qsort(files, nf, sizeof *files, cmp_str);
    } else {
        files = mg_xmalloc(sizeof *files);
        files[nf++] = mg_xstrdup(path);
    }
    if (nf == 0) {
        fprintf(stderr, "moongate test: no *.lua test files in %s\n", path);
        free(files);
        return 2;
    }
    for (size_t i = 0; i < nf; i++) {
        run_file(files[i], &n, out);
        free(files[i]);
    }
    free(files);
    fprintf(out, "%d passed, %d failed\n", n.passed, n.failed);
    return n.failed ? 1 : 0;
}

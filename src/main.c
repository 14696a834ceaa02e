/* moongate: arguments, signals, start and stop. Nothing else lives here. */
#include "config.h"
#include "gen.h"
#include "log.h"
#include "policy_cli.h"
#include "probe.h"
#include "router.h"
#include "reload.h"
#include "server.h"
#include "upstream.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <time.h>

#define MG_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "moongate %s, an LLM routing gateway\n\n"
            "usage:\n"
            "  moongate serve --config FILE [--listen HOST:PORT]   serve the gateway\n"
            "  moongate check --config FILE                        validate a config (and its policy) and exit\n"
            "  moongate route --config FILE --request REQ.json [--state STATE.json]\n"
            "                                                      print the plan the policy makes, sending nothing\n"
            "  moongate test DIR|FILE                              run policy test files (Lua)\n"
            "  moongate version\n",
            MG_VERSION);
}

static int parse_listen(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon[1] == '\0') return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    *host = mg_xstrndup(h, hl);
    *port = (int)p;
    return 0;
}

/* Loads the config; its warnings go to stderr as text (check) or as JSON log lines (serve). */
static mg_config_t *load_config(const char *path, bool json_log)
{
    char err[1024];
    mg_config_t *cfg = mg_config_load(path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "moongate: %s\n", err);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_warnings; i++) {
        if (json_log) mg_log(MG_LOG_WARN, "config", "%s", cfg->warnings[i]);
        else fprintf(stderr, "moongate: warning: %s\n", cfg->warnings[i]);
    }
    return cfg;
}

static int cmd_check(const char *path)
{
    mg_config_t *cfg = load_config(path, false);
    if (!cfg) return 1;
    /* Everything a generation loads (error patterns, the policy, CA files, the log path) is
     * checked too. */
    char err[1024];
    mg_gen_t *g = mg_gen_build(cfg, err, sizeof err);
    if (!g) {
        fprintf(stderr, "moongate: %s\n", err);
        return 1;
    }
    size_t models = 0;
    for (size_t i = 0; i < cfg->n_providers; i++) models += cfg->providers[i].n_models;
    printf("%s: ok: %zu providers, %zu models, %zu aliases", path, cfg->n_providers, models, cfg->n_aliases);
    if (cfg->n_default_chain) {
        printf(", default:");
        for (size_t i = 0; i < cfg->n_default_chain; i++)
            printf("%s %s", i ? " ->" : "", cfg->default_chain[i]->ref);
    }
    printf("\n");
    mg_gen_release(g);
    return 0;
}

/* How long a changed file must stay unchanged before it is reloaded: editors write twice. */
#define MG_SETTLE_MS 150

/* Watches the files the current generation was built from: config, policy, error patterns.
 * Returns true when one of the files the last load read has changed since it read it: armed too
 * late to be told, so the caller reloads as for a file change. */
static bool arm_watch(mg_watch_t *w)
{
    if (!w) return false;
    mg_gen_t *g = mg_gen_acquire();
    char *pend[2] = {NULL, NULL};
    size_t np = mg_reload_pending_paths(pend, 2);
    /* and the files of a reload that failed on them, so that fixing them retries it */
    const char *paths[] = {g->cfg->path, g->cfg->gw.policy_path, g->cfg->gw.error_patterns_path,
                           np > 0 ? pend[0] : NULL, np > 1 ? pend[1] : NULL};
    mg_watch_set(w, paths, MG_ARRAY_LEN(paths));
    mg_gen_release(g);
    free(pend[0]);
    free(pend[1]);
    return mg_reload_files_changed(); /* after arming: what changes from here on, inotify reports */
}

/* After a reload, whatever triggered it (SIGHUP and file changes here, POST /admin/reload on a
 * serving thread, which reaches us through mg_reload_done_fd): reopens the log (it may have moved,
 * or been rotated: SIGHUP is also the rotation signal) and re-arms the watcher on the files of
 * whichever generation is current, so that a file a reload newly names is watched at once.
 * Returns arm_watch's answer. */
static bool after_reload(mg_watch_t *w)
{
    mg_reload_done_take(); /* this pass covers every reload that ended so far */
    mg_gen_t *g = mg_gen_acquire();
    if (mg_log_open(g->cfg->gw.log_path) != 0)
        mg_log(MG_LOG_ERROR, "log reopen failed", "%s: %s", g->cfg->gw.log_path, strerror(errno));
    mg_gen_release(g);
    return arm_watch(w);
}

static bool reload(const char *path, const char *why, mg_watch_t *w)
{
    char err[1024];
    mg_reload(path, why, err, sizeof err);
    return after_reload(w);
}

/* Raises the descriptor limit to its hard maximum and returns it: it bounds how many connections
 * can be served. */
static long raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

static int cmd_serve(const char *path, const char *listen)
{
    mg_reload_note_config(path);
    mg_config_t *cfg = load_config(path, true);
    if (!cfg) return 1;
    char *host = NULL;
    int port = cfg->gw.listen_port;
    if (listen) {
        if (parse_listen(listen, &host, &port) != 0) {
            fprintf(stderr, "moongate: --listen %s: expected HOST:PORT\n", listen);
            mg_config_free(cfg);
            return 2;
        }
    } else {
        host = mg_xstrdup(cfg->gw.listen_host);
    }
    mg_reload_set_start(&cfg->gw); /* as configured, before the descriptor limit trims it */
    if (mg_log_open(cfg->gw.log_path) != 0) {
        fprintf(stderr, "moongate: %s: cannot write %s: %s\n", cfg->gw.log_path_at ? cfg->gw.log_path_at : "gateway.log.path",
                cfg->gw.log_path, strerror(errno));
        free(host);
        mg_config_free(cfg);
        return 1;
    }
    long fds = raise_fd_limit();
    /* A client connection costs one descriptor and its upstream transfer another, unless every
     * provider speaks HTTP/2 (gateway.providers.<id>.http2), where ~100 streams share one. */
    bool shared = cfg->n_providers > 0;
    for (size_t i = 0; i < cfg->n_providers; i++) shared = shared && cfg->providers[i].http2;
    long need = shared ? (long)cfg->gw.max_connections + (long)cfg->gw.max_connections / 100 + 64
                       : (long)cfg->gw.max_connections * 2 + 64;
    if (fds > 0 && need > fds) {
        /* Past this, upstream sockets would fail to open and a healthy upstream would be blamed
         * (connect_error): accept fewer clients instead. */
        unsigned fit = (unsigned)MG_MAX(shared ? (fds - 64) * 100 / 101 : (fds - 64) / 2, 1);
        mg_log(MG_LOG_WARN, "descriptor limit",
               "the descriptor limit (%ld) allows %u connections, not gateway.maxConnections (%u); using %u "
               "(raise `ulimit -n` to serve more)",
               fds, fit, cfg->gw.max_connections, fit);
        cfg->gw.max_connections = fit;
    }

    /* Signals are taken synchronously by this thread; every thread started below inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[1024];
    mg_reload_note_named(cfg);
    mg_gen_t *gen = mg_gen_build(cfg, err, sizeof err);
    if (!gen) {
        fprintf(stderr, "moongate: %s\n", err);
        free(host);
        return 1;
    }
    mg_health_t *health = mg_probe_health_new(gen->cfg);
    mg_router_set_health(health);
    mg_tokens_calib_t *calib = mg_tokens_calib_new();
    mg_router_set_calib(calib);
    mg_gen_publish(gen);
    int rc = 1;
    int done_fd = mg_reload_done_fd(); /* before the server: an admin reload may come at once */
    /* Watched before the server says "listening": an edit made as soon as it does is seen. */
    mg_watch_t *watch = mg_watch_new();
    bool stale = arm_watch(watch); /* a file changed since it was read above */
    mg_server_t *srv = mg_server_start(host, port);
    if (!srv) {
        mg_watch_free(watch);
        goto out;
    }

    /* The main thread waits for signals (signalfd), config/policy file changes (inotify) and the
     * end of reloads it did not start (the admin endpoint's). */
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    /* A file changed: reload once things settle (editors write twice). */
    int64_t change_at = stale ? mg_now_ms() + MG_SETTLE_MS : -1;
    for (;;) {
        struct pollfd pfd[3] = {{.fd = sfd, .events = POLLIN},
                                {.fd = watch ? mg_watch_fd(watch) : -1, .events = POLLIN},
                                {.fd = done_fd, .events = POLLIN}};
        int timeout = change_at < 0 ? -1 : (int)MG_MAX(0, change_at - mg_now_ms());
        int n = poll(pfd, 3, timeout);
        if (n < 0 && errno != EINTR) break;
        bool changed = false;
        if (pfd[2].revents & POLLIN) changed = after_reload(watch); /* POST /admin/reload */
        if (pfd[1].revents & POLLIN && mg_watch_changed(watch)) changed = true;
        if (changed) change_at = mg_now_ms() + MG_SETTLE_MS;
        if (change_at >= 0 && mg_now_ms() >= change_at) {
            change_at = -1;
            if (reload(path, "file change", watch)) change_at = mg_now_ms() + MG_SETTLE_MS;
        }
        if (!(pfd[0].revents & POLLIN)) continue;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si) continue;
        if (si.ssi_signo == SIGHUP) {
            if (reload(path, "SIGHUP", watch)) change_at = mg_now_ms() + MG_SETTLE_MS;
            continue;
        }
        mg_log(MG_LOG_INFO, "stopping", "signal %u: draining %u requests", si.ssi_signo, mg_server_in_flight(srv));
        break;
    }
    mg_watch_free(watch);
    close(sfd);
    /* Graceful stop: no new connections; requests in flight get gateway.drainMs to finish; then
     * the upstream transfers left are cancelled, which wakes and ends the remaining requests. */
    mg_server_quiesce(srv);
    mg_gen_t *g = mg_gen_acquire();
    int64_t deadline = mg_now_ms() + g->cfg->gw.drain_ms;
    mg_gen_release(g);
    while (mg_server_in_flight(srv) > 0 && mg_now_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    mg_server_stop_upstreams(srv);
    deadline = mg_now_ms() + 2000;
    while (mg_server_in_flight(srv) > 0 && mg_now_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    mg_log(MG_LOG_INFO, "stopped", "%u requests still open at exit", mg_server_in_flight(srv));
    rc = 0;
out:
    mg_server_stop(srv);
    mg_gen_shutdown();
    mg_router_set_health(NULL);
    mg_health_free(health);
    mg_router_set_calib(NULL);
    mg_tokens_calib_free(calib);
    mg_log_close();
    free(host);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    const char *config = NULL, *listen = NULL, *request = NULL, *state = NULL, *target = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--request") == 0 && i + 1 < argc) {
            request = argv[++i];
        } else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) {
            state = argv[++i];
        } else if (strcmp(cmd, "test") == 0 && !target && argv[i][0] != '-') {
            target = argv[i];
        } else if (i + 1 == argc && (!strcmp(argv[i], "--config") || !strcmp(argv[i], "--listen") ||
                                     !strcmp(argv[i], "--request") || !strcmp(argv[i], "--state"))) {
            fprintf(stderr, "moongate: %s needs a value\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            fprintf(stderr, "moongate: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("moongate %s\n", MG_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if ((strcmp(cmd, "serve") == 0 || strcmp(cmd, "check") == 0) && !config) {
        fprintf(stderr, "moongate %s: --config FILE is required\n", cmd);
        return 2;
    }
    if (strcmp(cmd, "route") == 0) {
        if (!config || !request) {
            fprintf(stderr, "moongate route: --config FILE and --request REQ.json are required\n");
            return 2;
        }
        return mg_cli_route(config, request, state, stdout);
    }
    if (strcmp(cmd, "test") == 0) {
        if (!target) {
            fprintf(stderr, "moongate test: a directory or file of policy tests is required\n");
            return 2;
        }
        return mg_cli_test(target, stdout);
    }
    if (strcmp(cmd, "serve") == 0) return cmd_serve(config, listen);
    if (strcmp(cmd, "check") == 0) return cmd_check(config);
    fprintf(stderr, "moongate: unknown command %s\n", cmd);
    usage(stderr);
    return 2;
}

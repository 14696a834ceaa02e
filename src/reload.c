/* Generation reload and file watching. See reload.h. */
#include "reload.h"

#include "config.h"
#include "gen.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "router.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long reloads_ok, reloads_failed;
static char *pending[2]; /* mg_reload_pending_paths; under reload_lock */

static void set_pending(char *policy, char *patterns)
{
    free(pending[0]);
    free(pending[1]);
    pending[0] = policy;
    pending[1] = patterns;
}

/* The settings the server reads only at start, as the config had them then (under reload_lock).
 * A reload is compared with these, not with the previous generation: what runs is what started,
 * so a change is named on every reload until it is undone, and undoing it is silent. */
static struct {
    bool set;
    char *listen_host;
    int listen_port;
    int threads;
    unsigned max_connections;
} started;

static atomic_int done_fd = -1; /* mg_reload_done_fd; created under reload_lock */

/* mg_reload_note_read: a lock of its own, since the start notes reads outside any reload and the
 * main thread compares while a serving thread may be reloading. */
static pthread_mutex_t read_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *path;
    struct stat st;
    bool exists;
} reads[3];

static bool same_file_state(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void note_read(size_t slot, const char *path)
{
    pthread_mutex_lock(&read_lock);
    free(reads[slot].path);
    reads[slot].path = path ? mg_xstrdup(path) : NULL;
    reads[slot].exists = path && stat(path, &reads[slot].st) == 0;
    pthread_mutex_unlock(&read_lock);
}

bool mg_reload_files_changed(void)
{
    bool changed = false;
    pthread_mutex_lock(&read_lock);
    for (size_t i = 0; i < MG_ARRAY_LEN(reads); i++) {
        if (!reads[i].path) continue;
        struct stat now;
        bool exists = stat(reads[i].path, &now) == 0;
        if (exists != reads[i].exists || (exists && !same_file_state(&now, &reads[i].st))) changed = true;
        /* Seen: the caller reloads for it once, whether or not that reload reads the file. */
        reads[i].exists = exists;
        if (exists) reads[i].st = now;
    }
    pthread_mutex_unlock(&read_lock);
    return changed;
}

void mg_reload_note_config(const char *path)
{
    note_read(0, path);
}

void mg_reload_note_named(const mg_config_t *cfg)
{
    note_read(1, cfg->gw.policy_path);
    note_read(2, cfg->gw.error_patterns_path);
}

void mg_reload_set_start(const mg_gateway_settings_t *gw)
{
    pthread_mutex_lock(&reload_lock);
    free(started.listen_host);
    started.listen_host = mg_xstrdup(gw->listen_host);
    started.listen_port = gw->listen_port;
    started.threads = gw->threads;
    started.max_connections = gw->max_connections;
    started.set = true;
    pthread_mutex_unlock(&reload_lock);
}

/* A reload that sets them differently says so, since nothing else would show that they have not
 * taken effect. reload_lock held. */
static void warn_start_only(const mg_gateway_settings_t *now)
{
    if (!started.set) return;
    if (started.listen_port != now->listen_port ||
        strcmp(started.listen_host, now->listen_host) != 0)
        mg_log(MG_LOG_WARN, "reload", "gateway.listen changed to %s:%d: it takes effect on restart (unless --listen sets it)",
               now->listen_host, now->listen_port);
    if (started.threads != now->threads)
        mg_log(MG_LOG_WARN, "reload", "gateway.threads changed to %d: it takes effect on restart", now->threads);
    if (started.max_connections != now->max_connections)
        mg_log(MG_LOG_WARN, "reload",
               "gateway.maxConnections changed to %u: it takes effect on restart",
               now->max_connections);
}

/* Tells whoever polls mg_reload_done_fd that a reload ended (reload_lock held). */
static void signal_done(void)
{
    uint64_t one = 1;
    int fd = atomic_load(&done_fd);
    if (fd >= 0 && write(fd, &one, sizeof one) < 0) {
        /* only EAGAIN (the counter full), and then it is readable anyway */
    }
}

unsigned long long mg_reload(const char *config_path, const char *why, char *err, size_t errlen)
{
    pthread_mutex_lock(&reload_lock);
    int64_t t0 = mg_now_us();
    mg_reload_note_config(config_path);
    mg_config_t *cfg = mg_config_load(config_path, err, errlen);
    if (cfg) mg_reload_note_named(cfg);
    /* mg_gen_build frees cfg when it fails: keep the files it named, to watch them. */
    char *want_policy = cfg && cfg->gw.policy_path ? mg_xstrdup(cfg->gw.policy_path) : NULL;
    char *want_patterns = cfg && cfg->gw.error_patterns_path ? mg_xstrdup(cfg->gw.error_patterns_path) : NULL;
    mg_gen_t *g = cfg ? mg_gen_build(cfg, err, errlen) : NULL;
    if (g) {
        free(want_policy);
        free(want_patterns);
        set_pending(NULL, NULL);
    } else if (cfg) {
        set_pending(want_policy, want_patterns);
    }
    unsigned long long id = 0;
    mg_buf_t extra = {0};
    mg_buf_puts(&extra, "\"why\":");
    mg_buf_json_str(&extra, why);
    if (!g) {
        reloads_failed++;
        mg_metrics_reload(false);
        mg_buf_puts(&extra, ",\"result\":\"error\",\"error\":");
        mg_buf_json_str(&extra, err);
        mg_gen_t *cur = mg_gen_acquire();
        mg_buf_printf(&extra, ",\"generation\":%llu", cur ? (unsigned long long)cur->id : 0ULL);
        mg_gen_release(cur);
        mg_log_json(MG_LOG_ERROR, "reload", extra.data);
    } else {
        mg_gen_t *cur = mg_gen_acquire();
        if (cur) mg_keys_adopt_state(g->cfg->gw.keys, cur->cfg->gw.keys); /* limits carry over */
        mg_gen_release(cur);
        /* What the config's load warned of (keys ignored, unset variables, keys given twice), as the
         * start logs it: an edit that a reload takes is where such a mistake is most often made. */
        for (size_t i = 0; i < g->cfg->n_warnings; i++) mg_log(MG_LOG_WARN, "config", "%s", g->cfg->warnings[i]);
        warn_start_only(&g->cfg->gw);
        id = g->id;
        if (mg_router_health()) mg_probe_health_update(mg_router_health(), g->cfg);
        mg_gen_publish(g);
        reloads_ok++;
        mg_metrics_reload(true);
        mg_buf_printf(&extra, ",\"result\":\"ok\",\"generation\":%llu,\"ms\":%.3f", id,
                      (double)(mg_now_us() - t0) / 1000.0);
        mg_log_json(MG_LOG_INFO, "reload", extra.data);
    }
    mg_buf_free(&extra);
    signal_done(); /* failed too: the pending paths may have changed */
    pthread_mutex_unlock(&reload_lock);
    return id;
}

int mg_reload_done_fd(void)
{
    pthread_mutex_lock(&reload_lock);
    if (atomic_load(&done_fd) < 0) atomic_store(&done_fd, eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    pthread_mutex_unlock(&reload_lock);
    return atomic_load(&done_fd);
}

bool mg_reload_done_take(void)
{
    /* no lock: the descriptor is made once, before the reloads that write to it */
    uint64_t n = 0;
    int fd = atomic_load(&done_fd);
    return fd >= 0 && read(fd, &n, sizeof n) == (ssize_t)sizeof n && n > 0;
}

size_t mg_reload_pending_paths(char **out, size_t n)
{
    size_t k = 0;
    pthread_mutex_lock(&reload_lock);
    for (size_t i = 0; i < 2 && k < n; i++)
        if (pending[i]) out[k++] = mg_xstrdup(pending[i]);
    pthread_mutex_unlock(&reload_lock);
    return k;
}

void mg_reload_counts(unsigned long long *ok, unsigned long long *failed)
{
    pthread_mutex_lock(&reload_lock);
    *ok = reloads_ok;
    *failed = reloads_failed;
    pthread_mutex_unlock(&reload_lock);
}

/* ---- watching ---- */

/* Directory watches (one descriptor per directory, shared by its names) and the names in them. A
 * path costs one name, plus one per symlink it goes through. */
#define MG_WATCH_MAX 32
#define MG_WATCH_HOPS 40 /* symlinks followed for one path, as the kernel's ELOOP limit */

struct mg_watch {
    int fd;
    int wd[MG_WATCH_MAX];
    char *dir[MG_WATCH_MAX];
    char *name[MG_WATCH_MAX];
    size_t n;
};

mg_watch_t *mg_watch_new(void)
{
    mg_watch_t *w = mg_xcalloc(1, sizeof *w);
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        free(w);
        return NULL;
    }
    return w;
}

static void clear(mg_watch_t *w)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->wd[i] >= 0) inotify_rm_watch(w->fd, w->wd[i]);
        free(w->dir[i]);
        free(w->name[i]);
    }
    w->n = 0;
}

void mg_watch_free(mg_watch_t *w)
{
    if (!w) return;
    clear(w);
    close(w->fd);
    free(w);
}

int mg_watch_fd(const mg_watch_t *w)
{
    return w->fd;
}

/* Watches name in dir ("" is the root), once. */
static void watch_name(mg_watch_t *w, const char *dir, const char *name)
{
    if (!dir[0]) dir = "/";
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->dir[i], dir) && !strcmp(w->name[i], name)) return;
    if (w->n == MG_WATCH_MAX) {
        mg_log(MG_LOG_WARN, "watch", "not watching %s/%s: over %d watched names; edits there need SIGHUP or "
               "POST /admin/reload", dir, name, MG_WATCH_MAX);
        return;
    }
    size_t k = w->n++;
    w->dir[k] = mg_xstrdup(dir);
    w->name[k] = mg_xstrdup(name);
    /* A directory watched twice returns the same descriptor; that is fine. */
    w->wd[k] = inotify_add_watch(w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF);
    if (w->wd[k] < 0) /* fs.inotify.max_user_watches reached, a directory it may not read… */
        mg_log(MG_LOG_WARN, "watch", "cannot watch %s for changes to %s: %s; edits there need SIGHUP or "
               "POST /admin/reload", dir, name, strerror(errno));
}

/* Watches what reading path depends on. It is resolved one component at a time, as the kernel
 * does: each symlink met is watched by its name in its directory (replacing or retargeting it
 * changes what path reads), and so is the file it ends at, in the directory it really is in (an
 * edit there). That covers a link made with `ln -sfn`, `sed -i` on a link (which replaces it by a
 * file), and a Kubernetes ConfigMap volume: moongate.json5 -> ..data/moongate.json5 and
 * ..data -> ..2024_01, where kubelet renames a new ..data over the old one and then removes the
 * old directory. A component that does not exist is watched in the directory before it, so that
 * creating it is seen. */
static void watch_path(mg_watch_t *w, const char *path)
{
    char done[PATH_MAX], rest[PATH_MAX], next[PATH_MAX], target[PATH_MAX];
    int hops = 0;
    done[0] = '\0'; /* absolute, no trailing slash: "" is the root */
    if (path[0] != '/' && !getcwd(done, sizeof done)) return;
    if (!strcmp(done, "/")) done[0] = '\0';
    if ((size_t)snprintf(rest, sizeof rest, "%s", path) >= sizeof rest) return;
    const char *r = rest;
    for (;;) {
        while (*r == '/') r++;
        if (!*r) return;
        size_t n = strcspn(r, "/");
        char name[NAME_MAX + 1];
        if (n > NAME_MAX) return;
        memcpy(name, r, n);
        name[n] = '\0';
        r += n;
        bool last = r[strspn(r, "/")] == '\0';
        if (!strcmp(name, ".")) continue;
        if (!strcmp(name, "..")) { /* physical: done has no symlink in it */
            char *slash = strrchr(done, '/');
            if (slash) *slash = '\0';
            continue;
        }
        if ((size_t)snprintf(next, sizeof next, "%s/%s", done, name) >= sizeof next) return;
        struct stat st;
        if (lstat(next, &st) != 0) {
            watch_name(w, done, name);
            return;
        }
        if (S_ISLNK(st.st_mode)) {
            watch_name(w, done, name);
            ssize_t k = ++hops > MG_WATCH_HOPS ? -1 : readlink(next, target, sizeof target - 1);
            if (k <= 0) return;
            target[k] = '\0';
            /* the rest of the path now follows the link's target (r is inside rest: copy first) */
            if ((size_t)snprintf(next, sizeof next, "%s/%s", target, r) >= sizeof next) return;
            memcpy(rest, next, strlen(next) + 1);
            r = rest;
            if (target[0] == '/') done[0] = '\0';
            continue;
        }
        if (last) {
            watch_name(w, done, name);
            return;
        }
        memcpy(done, next, strlen(next) + 1);
    }
}

void mg_watch_set(mg_watch_t *w, const char *const *paths, size_t n)
{
    clear(w);
    for (size_t i = 0; i < n; i++)
        if (paths[i]) watch_path(w, paths[i]);
}

bool mg_watch_changed(mg_watch_t *w)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool changed = false;
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            for (size_t i = 0; i < w->n; i++) {
                if (ev->wd != w->wd[i]) continue;
                /* a watched name changed, or a watched directory went away (the files in it with it) */
                if (ev->len ? strcmp(ev->name, w->name[i]) == 0 : (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0)
                    changed = true;
            }
            p += sizeof *ev + ev->len;
        }
    }
    return changed;
}

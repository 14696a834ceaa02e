/* Reload: build a new generation from the config file (and what it names), validate it off the
 * serving path, and publish it atomically; a broken file changes nothing and says why. Requests in
 * flight keep the generation they started with (gen.h). Triggers: SIGHUP and file changes (main.c
 * through mg_watch_*), and POST /admin/reload (server.c); after each, main.c re-arms the watcher
 * (mg_reload_done_fd).
 *
 * Uses config.c and gen.c; knows nothing of HTTP. */
#pragma once
#include "config.h"

#include <stdbool.h>
#include <stddef.h>

/* Loads config_path into a new generation and publishes it. Serialized: concurrent calls run one
 * after the other. Returns the new generation id, or 0 with a one-line reason in err (the current
 * generation keeps serving). why ("SIGHUP", "file change", "admin") goes into the log line; a
 * reload that succeeds logs the config's warnings first, as the start does ("msg":"config"). */
unsigned long long mg_reload(const char *config_path, const char *why, char *err, size_t errlen);

/* Records the settings that only take effect at start (gateway.listen, threads, maxConnections)
 * as the config that started the server had them: a reload that sets them otherwise logs a
 * warning that they take effect on restart. Without it, reloads warn of nothing. Copies. */
void mg_reload_set_start(const mg_gateway_settings_t *gw);

/* A descriptor (eventfd; created by the first call, -1 if it cannot be) that polls readable after
 * each reload, successful or not, whatever triggered it: the thread that owns the watcher re-arms
 * it there (and reopens the log), since POST /admin/reload reloads on a serving thread.
 * mg_reload_done_take clears it and says whether a reload ended since the last take. */
int mg_reload_done_fd(void);
bool mg_reload_done_take(void);

/* The policy and errorPatterns files named by the config of the last reload, when that reload
 * failed after its config loaded (e.g. the config names a new policy file that does not load):
 * watched too, so that fixing that file retries the reload. Up to n copies into out (the caller
 * frees them); returns how many. */
size_t mg_reload_pending_paths(char **out, size_t n);

/* The files a load reads, each noted (stat) just before it is read, by the start and by every
 * reload: the config file (mg_reload_note_config), then the policy and errorPatterns files it
 * names (mg_reload_note_named). A change made after that read and before the watcher is armed on
 * the file would otherwise be missed: inotify reports only what happens once armed.
 * mg_reload_files_changed says whether a noted file is no longer as it was (another inode, size,
 * mtime or ctime; gone, or back): the thread that owns the watcher asks right after arming it, and
 * reloads if so. What it saw becomes the state to compare with next time: a file that a failed
 * reload did not read again (its config broken) is not reported twice for the same change, and
 * what changes from then on inotify reports. */
void mg_reload_note_config(const char *path);
void mg_reload_note_named(const mg_config_t *cfg);
bool mg_reload_files_changed(void);

/* Reload counters since start, for /admin/policy and metrics. */
void mg_reload_counts(unsigned long long *ok, unsigned long long *failed);

/* A watcher for the files a generation depends on: inotify on their directories, so that editors
 * that replace files by rename are seen too, and on the directory of each symlink a path goes
 * through (the path as given, a Kubernetes ConfigMap's ..data), so that a link replaced or
 * pointed elsewhere is seen as a change of the file. */
typedef struct mg_watch mg_watch_t;

mg_watch_t *mg_watch_new(void);
void mg_watch_free(mg_watch_t *w);
/* The descriptor to poll for readability. */
int mg_watch_fd(const mg_watch_t *w);
/* Watches exactly these files from now on (NULL entries are skipped), each as given and through
 * every symlink it resolves by, now. */
void mg_watch_set(mg_watch_t *w, const char *const *paths, size_t n);
/* Reads pending events; true when one of the watched files changed. */
bool mg_watch_changed(mg_watch_t *w);

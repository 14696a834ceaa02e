/* Config reader: what the config loaders (config.c, keys.c) share to validate a cJSON tree and
 * say where it is wrong. A reader holds the key path of the value being read (e.g.
 * `gateway.keys[0].rpm`) in one buffer that each level pushes onto and pops; the typed readers
 * check one member and, when it is wrong, hand a message (without the path) to the loader's report
 * callback, which adds the path and whatever position it knows ("FILE:LINE:COL: " in config.c).
 * The first error wins (later ones are dropped); readers return -1 after it, and loaders then
 * return at once without restoring the path (it names the bad value).
 *
 * Messages have one shape: "expected <what>, got <value>", values shown as a person wrote them
 * (strings quoted and cut after about 60 bytes, numbers in their shortest form, containers by
 * type). Uses cJSON and util.h; knows nothing of files, positions or what the keys mean. */
#pragma once
#include "util.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_cfgread mg_cfgread_t;

/* Receives one message: an error (the first only) or a warning, about node's key (at_key) or its
 * value. r->path holds the key path it is about; msg is borrowed for the call. */
typedef void (*mg_cfgread_report_fn)(mg_cfgread_t *r, const cJSON *node, bool at_key, bool is_error,
                                     const char *msg);

struct mg_cfgread {
    mg_buf_t path;               /* owned: release with mg_cfgread_free */
    bool failed;                 /* an error was reported */
    mg_cfgread_report_fn report; /* required */
    void *ud;                    /* for report */
};

void mg_cfgread_free(mg_cfgread_t *r); /* the path buffer; the struct is the caller's */

/* ---- the key path ---------------------------------------------------------------------------- */

/* Appends ".key" (just "key" on an empty path), or `["key"]` (a JSON string) when key is not an
 * identifier ([A-Za-z_$][A-Za-z0-9_$]*). Returns the length to restore with mg_cfgread_pop. */
size_t mg_cfgread_push_key(mg_cfgread_t *r, const char *key);
size_t mg_cfgread_push_index(mg_cfgread_t *r, size_t i); /* appends "[i]" */
void mg_cfgread_pop(mg_cfgread_t *r, size_t mark);

/* ---- messages -------------------------------------------------------------------------------- */

/* Reports an error (unless one was reported before) and returns -1, for `return
 * mg_cfgread_fail(...)`. */
int mg_cfgread_fail(mg_cfgread_t *r, const cJSON *node, bool at_key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void mg_cfgread_warn(mg_cfgread_t *r, const cJSON *node, bool at_key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "<expected>, got <v>" at v's value; returns -1. */
int mg_cfgread_fail_got(mg_cfgread_t *r, const cJSON *v, const char *expected);
/* "parent.key: required key missing", at the value of obj (the object that lacks it); -1. */
int mg_cfgread_fail_missing(mg_cfgread_t *r, const cJSON *obj, const char *key);

/* A number as a person wrote it: integers (below 1e15) without a fraction, others in the
 * shortest form that reads back the same, NaN and ±Infinity by name. */
void mg_cfgread_format_number(double d, char *out, size_t n);
/* A JSON string literal of s, cut after about 60 bytes (on a UTF-8 character boundary) with
 * `..."` closing it. Caller frees. */
char *mg_cfgread_quote(const char *s);
/* What v is, for "got ...": a string quoted (as mg_cfgread_quote), a number as written, true,
 * false, null (also for v NULL), "an (empty) object", "an (empty) array". Caller frees. */
char *mg_cfgread_describe(const cJSON *v);

/* ---- typed readers --------------------------------------------------------------------------- */

/* obj[key], with null treated as absent. Borrowed. */
const cJSON *mg_cfgread_member(const cJSON *obj, const char *key);

/* Reports each member of obj whose key is not in known (NULL-terminated), at its key: an error
 * "unknown key" when strict (returns -1), else a warning "unknown key ignored" (returns 0). */
int mg_cfgread_check_keys(mg_cfgread_t *r, const cJSON *obj, const char *const *known, bool strict);

/* These look at obj[key]: they return 1 and set *out when it is present and valid, 0 when it is
 * absent (null counts as absent) and -1 after an error naming the key's path. */

/* A string (nonempty: not ""); *out is borrowed from obj. */
int mg_cfgread_string(mg_cfgread_t *r, const cJSON *obj, const char *key, bool nonempty,
                      const char **out);
/* An integer from min to max ("expected a positive integer" / "a non-negative integer" when max
 * is MG_MAX_SAFE_INT and min 1 / 0, else "an integer from min to max"). */
int mg_cfgread_int(mg_cfgread_t *r, const cJSON *obj, const char *key, int64_t min, int64_t max,
                   int64_t *out);
int mg_cfgread_nonneg(mg_cfgread_t *r, const cJSON *obj, const char *key, double *out); /* >= 0 */
int mg_cfgread_bool(mg_cfgread_t *r, const cJSON *obj, const char *key, bool *out);

/* An array of non-empty strings, copied: *out gets a new array of count + 1 entries (calloc'd, so
 * NULL-terminated) and *n counts the copies as they are made, so that whoever owns *out can free
 * it (each string, then the array) whether the read succeeded or not. Not an array: "<expected>,
 * got ..."; empty, when empty_hint is given: "expected a non-empty array (<empty_hint>)"; a bad
 * element: "expected a non-empty string, got ..." at its index. unique drops repeated strings. */
int mg_cfgread_strings(mg_cfgread_t *r, const cJSON *obj, const char *key, const char *expected,
                       const char *empty_hint, bool unique, char ***out, size_t *n);

/* obj[key] when it is an object: pushes key (*mark gets the length to pop back to, once done with
 * the object) and returns it. NULL when absent, or after an error (then r->failed is set). */
const cJSON *mg_cfgread_object(mg_cfgread_t *r, const cJSON *obj, const char *key, size_t *mark);

/* Config reader: key paths, messages and typed readers over a cJSON tree. See cfgread.h. */
#include "cfgread.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mg_cfgread_free(mg_cfgread_t *r)
{
    mg_buf_free(&r->path);
}

/* ---- the key path ---------------------------------------------------------------------------- */

static bool is_plain_key(const char *k)
{
    if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || *k == '_' || *k == '$'))
        return false;
    for (k++; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') ||
              *k == '_' || *k == '$'))
            return false;
    return true;
}

size_t mg_cfgread_push_key(mg_cfgread_t *r, const char *key)
{
    size_t mark = r->path.len;
    if (is_plain_key(key)) {
        if (mark) mg_buf_puts(&r->path, ".");
        mg_buf_puts(&r->path, key);
    } else {
        mg_buf_puts(&r->path, "[");
        mg_buf_json_str(&r->path, key);
        mg_buf_puts(&r->path, "]");
    }
    return mark;
}

size_t mg_cfgread_push_index(mg_cfgread_t *r, size_t i)
{
    size_t mark = r->path.len;
    mg_buf_printf(&r->path, "[%zu]", i);
    return mark;
}

void mg_cfgread_pop(mg_cfgread_t *r, size_t mark)
{
    r->path.len = mark;
    if (r->path.data) r->path.data[mark] = '\0';
}

/* ---- messages -------------------------------------------------------------------------------- */

static void vreport(mg_cfgread_t *r, const cJSON *node, bool at_key, bool is_error, const char *fmt,
                    va_list ap) __attribute__((format(printf, 5, 0)));
static void vreport(mg_cfgread_t *r, const cJSON *node, bool at_key, bool is_error, const char *fmt,
                    va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *msg = mg_xmalloc(n > 0 ? (size_t)n + 1 : 1);
    if (n > 0)
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
    else
        msg[0] = '\0';
    r->report(r, node, at_key, is_error, msg);
    free(msg);
}

int mg_cfgread_fail(mg_cfgread_t *r, const cJSON *node, bool at_key, const char *fmt, ...)
{
    if (r->failed) return -1;
    r->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vreport(r, node, at_key, true, fmt, ap);
    va_end(ap);
    return -1;
}

void mg_cfgread_warn(mg_cfgread_t *r, const cJSON *node, bool at_key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(r, node, at_key, false, fmt, ap);
    va_end(ap);
}

void mg_cfgread_format_number(double d, char *out, size_t n)
{
    mg_fmt_double(out, n, d, "Infinity", "-Infinity"); /* JSON5's spellings */
}

char *mg_cfgread_quote(const char *s)
{
    mg_buf_t b = {0};
    size_t n = strlen(s), cut = n;
    if (cut > 60) {
        cut = 60;
        while (cut && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
    }
    mg_buf_json_strn(&b, s, cut);
    if (cut < n) {
        b.len--; /* reopen the closing quote */
        mg_buf_puts(&b, "...\"");
    }
    return mg_buf_steal(&b);
}

char *mg_cfgread_describe(const cJSON *v)
{
    char num[40];
    if (cJSON_IsString(v)) return mg_cfgread_quote(v->valuestring);
    if (cJSON_IsNumber(v)) {
        mg_cfgread_format_number(v->valuedouble, num, sizeof num);
        return mg_xstrdup(num);
    }
    if (cJSON_IsTrue(v)) return mg_xstrdup("true");
    if (cJSON_IsFalse(v)) return mg_xstrdup("false");
    if (!v || cJSON_IsNull(v)) return mg_xstrdup("null");
    if (cJSON_IsObject(v)) return mg_xstrdup(v->child ? "an object" : "an empty object");
    if (cJSON_IsArray(v)) return mg_xstrdup(v->child ? "an array" : "an empty array");
    return mg_xstrdup("a value");
}

int mg_cfgread_fail_got(mg_cfgread_t *r, const cJSON *v, const char *expected)
{
    char *got = mg_cfgread_describe(v);
    mg_cfgread_fail(r, v, false, "%s, got %s", expected, got);
    free(got);
    return -1;
}

int mg_cfgread_fail_missing(mg_cfgread_t *r, const cJSON *obj, const char *key)
{
    size_t mark = mg_cfgread_push_key(r, key);
    mg_cfgread_fail(r, obj, false, "required key missing");
    mg_cfgread_pop(r, mark);
    return -1;
}

/* ---- typed readers --------------------------------------------------------------------------- */

const cJSON *mg_cfgread_member(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

int mg_cfgread_check_keys(mg_cfgread_t *r, const cJSON *obj, const char *const *known, bool strict)
{
    for (const cJSON *m = obj->child; m; m = m->next) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++) ok = strcmp(*k, m->string) == 0;
        if (ok) continue;
        size_t mark = mg_cfgread_push_key(r, m->string);
        int rc = 0;
        if (strict)
            rc = mg_cfgread_fail(r, m, true, "unknown key");
        else
            mg_cfgread_warn(r, m, true, "unknown key ignored");
        mg_cfgread_pop(r, mark);
        if (rc) return -1;
    }
    return 0;
}

/* obj[key] for a reader: the value, with key pushed (*mark to pop back to), or NULL if absent. */
static const cJSON *enter(mg_cfgread_t *r, const cJSON *obj, const char *key, size_t *mark)
{
    const cJSON *v = mg_cfgread_member(obj, key);
    if (v) *mark = mg_cfgread_push_key(r, key);
    return v;
}

/* A reader's end: pops back to mark; 1 when ok, else -1 after "<expected>, got <v>". */
static int leave(mg_cfgread_t *r, const cJSON *v, size_t mark, bool ok, const char *expected)
{
    int rc = ok ? 1 : mg_cfgread_fail_got(r, v, expected);
    mg_cfgread_pop(r, mark);
    return rc;
}

int mg_cfgread_string(mg_cfgread_t *r, const cJSON *obj, const char *key, bool nonempty,
                      const char **out)
{
    size_t mark = 0;
    const cJSON *v = enter(r, obj, key, &mark);
    if (!v) return 0;
    bool ok = cJSON_IsString(v) && (!nonempty || v->valuestring[0]);
    if (ok) *out = v->valuestring;
    return leave(r, v, mark, ok, nonempty ? "expected a non-empty string" : "expected a string");
}

int mg_cfgread_int(mg_cfgread_t *r, const cJSON *obj, const char *key, int64_t min, int64_t max,
                   int64_t *out)
{
    size_t mark = 0;
    const cJSON *v = enter(r, obj, key, &mark);
    if (!v) return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    bool ok = isfinite(d) && d == floor(d) && d >= (double)min && d <= (double)max;
    char what[80] = "";
    if (ok)
        *out = (int64_t)d;
    else if (min == 1 && max == MG_MAX_SAFE_INT)
        snprintf(what, sizeof what, "expected a positive integer");
    else if (min == 0 && max == MG_MAX_SAFE_INT)
        snprintf(what, sizeof what, "expected a non-negative integer");
    else
        snprintf(what, sizeof what, "expected an integer from %lld to %lld", (long long)min,
                 (long long)max);
    return leave(r, v, mark, ok, what);
}

int mg_cfgread_nonneg(mg_cfgread_t *r, const cJSON *obj, const char *key, double *out)
{
    size_t mark = 0;
    const cJSON *v = enter(r, obj, key, &mark);
    if (!v) return 0;
    bool ok = cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= 0;
    if (ok) *out = v->valuedouble;
    return leave(r, v, mark, ok, "expected a non-negative number");
}

int mg_cfgread_bool(mg_cfgread_t *r, const cJSON *obj, const char *key, bool *out)
{
    size_t mark = 0;
    const cJSON *v = enter(r, obj, key, &mark);
    if (!v) return 0;
    if (cJSON_IsBool(v)) *out = cJSON_IsTrue(v);
    return leave(r, v, mark, cJSON_IsBool(v), "expected true or false");
}

int mg_cfgread_strings(mg_cfgread_t *r, const cJSON *obj, const char *key, const char *expected,
                       const char *empty_hint, bool unique, char ***out, size_t *n)
{
    size_t mark = 0;
    const cJSON *v = enter(r, obj, key, &mark);
    if (!v) return 0;
    if (!cJSON_IsArray(v)) return mg_cfgread_fail_got(r, v, expected);
    if (!v->child && empty_hint)
        return mg_cfgread_fail(r, v, false, "expected a non-empty array (%s)", empty_hint);
    *out = mg_xcalloc((size_t)cJSON_GetArraySize(v) + 1, sizeof **out);
    size_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        size_t inner = mg_cfgread_push_index(r, i);
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return mg_cfgread_fail_got(r, e, "expected a non-empty string");
        bool dup = false;
        for (size_t j = 0; unique && j < *n && !dup; j++)
            dup = strcmp((*out)[j], e->valuestring) == 0;
        if (!dup) (*out)[(*n)++] = mg_xstrdup(e->valuestring);
        mg_cfgread_pop(r, inner);
    }
    mg_cfgread_pop(r, mark);
    return 1;
}

const cJSON *mg_cfgread_object(mg_cfgread_t *r, const cJSON *obj, const char *key, size_t *mark)
{
    const cJSON *v = enter(r, obj, key, mark);
    if (!v) return NULL;
    if (!cJSON_IsObject(v)) {
        mg_cfgread_fail_got(r, v, "expected an object");
        return NULL;
    }
    return v;
}

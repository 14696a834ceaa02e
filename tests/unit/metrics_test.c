/* Unit tests for metrics.c: exact exposition lines after known operations, label escaping, the
 * cardinality caps (folding into model="other"), the cooldown gauge both ways, mg_cost_of, a
 * multi-threaded run whose final counts must be exact (under ASan/UBSan in the sanitizer build),
 * and a validator of the text exposition format 0.0.4 that every render in this file goes
 * through: line grammar, HELP/TYPE before samples, families contiguous, series unique, histogram
 * buckets increasing and cumulative with +Inf equal to _count. */
#include "metrics.h"
#include "mg_test.h"
#include "request.h"
#include "util.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>

_Static_assert((int)MG_METRICS_API_CHAT == (int)MG_EP_CHAT, "api values follow mg_endpoint_t");
_Static_assert((int)MG_METRICS_API_RESPONSES == (int)MG_EP_RESPONSES, "api values follow mg_endpoint_t");
_Static_assert((int)MG_METRICS_API_MESSAGES == (int)MG_EP_MESSAGES, "api values follow mg_endpoint_t");

/* ---- a validator for the text format 0.0.4 --------------------------------------------------- */

typedef struct family {
    char name[128];
    char type[16];
    bool help, typed, closed; /* closed: its samples ended (another family's began) */
} family_t;

typedef struct vstate {
    family_t fam[64];
    int n_fam;
    int current; /* family of the last sample, -1 none */
    char **series; /* "name{labels}" seen, for uniqueness */
    size_t n_series;
    /* the histogram series in progress */
    char hkey[1100];
    double last_le;
    double last_cnt, inf_cnt;
    bool saw_inf, in_hist;
} vstate_t;

static bool name_start(int c, bool colon)
{
    return isalpha(c) || c == '_' || (colon && c == ':');
}

static bool name_char(int c, bool colon)
{
    return isalnum(c) || c == '_' || (colon && c == ':');
}

/* Reads a metric (colon) or label name at *p. */
static bool read_name(const char **p, bool colon, char *out, size_t n)
{
    const char *s = *p;
    if (!name_start((unsigned char)*s, colon)) return false;
    size_t i = 0;
    while (name_char((unsigned char)*s, colon)) {
        if (i + 1 < n) out[i++] = *s;
        s++;
    }
    out[i] = '\0';
    *p = s;
    return true;
}

/* A Go ParseFloat-style value: decimal or exponent notation, +Inf, -Inf, NaN. */
static bool read_value(const char **p, double *out)
{
    const char *s = *p;
    if (!strncmp(s, "+Inf", 4) || !strncmp(s, "-Inf", 4)) {
        *out = s[0] == '+' ? INFINITY : -INFINITY;
        *p = s + 4;
        return true;
    }
    if (!strncmp(s, "NaN", 3)) {
        *out = NAN;
        *p = s + 3;
        return true;
    }
    const char *q = s;
    if (*q == '+' || *q == '-') q++;
    if (!isdigit((unsigned char)*q) && *q != '.') return false;
    for (; *q && *q != ' ' && *q != '\n'; q++)
        if (!isdigit((unsigned char)*q) && !strchr(".eE+-", *q)) return false;
    char *end;
    *out = strtod(s, &end);
    if (end != q) return false;
    *p = q;
    return true;
}

static int fail_v(char *why, size_t n, int line, const char *msg, const char *text)
{
    snprintf(why, n, "line %d: %s: %.80s", line, msg, text);
    return -1;
}

static family_t *find_family(vstate_t *v, const char *name)
{
    for (int i = 0; i < v->n_fam; i++)
        if (!strcmp(v->fam[i].name, name)) return &v->fam[i];
    return NULL;
}

static family_t *add_family(vstate_t *v, const char *name)
{
    family_t *f = find_family(v, name);
    if (f || v->n_fam == 64) return f;
    f = &v->fam[v->n_fam++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return f;
}

/* The family a sample belongs to: its own name, or for histograms name minus _bucket/_sum/_count. */
static family_t *family_of(vstate_t *v, const char *sample, const char **suffix)
{
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    *suffix = "";
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(sample), k = strlen(sfx[i]);
        if (n > k && !strcmp(sample + n - k, sfx[i])) {
            char base[128];
            snprintf(base, sizeof base, "%.*s", (int)(n - k), sample);
            family_t *f = find_family(v, base);
            if (f && !strcmp(f->type, "histogram")) {
                *suffix = sfx[i];
                return f;
            }
        }
    }
    return find_family(v, sample);
}

/* Returns 0 when every line of text is valid exposition format, else -1 and why. */
static int validate(const char *text, char *why, size_t whylen)
{
    vstate_t *v = mg_xcalloc(1, sizeof *v);
    v->current = -1;
    int rc = 0, lineno = 0;
    size_t tlen = strlen(text);
    if (tlen && text[tlen - 1] != '\n') {
        rc = fail_v(why, whylen, 0, "output does not end with a newline", "");
        goto out;
    }
    for (const char *line = text; *line && rc == 0;) {
        const char *eol = strchr(line, '\n');
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(eol - line), line);
        line = eol + 1;
        lineno++;
        const char *p = buf;
        char name[128];
        if (!*p) continue;
        if (*p == '#') {
            bool help = !strncmp(p, "# HELP ", 7), type = !strncmp(p, "# TYPE ", 7);
            if (!help && !type) continue; /* a comment */
            p += 7;
            if (!read_name(&p, true, name, sizeof name)) {
                rc = fail_v(why, whylen, lineno, "bad metric name", buf);
                break;
            }
            family_t *f = add_family(v, name);
            if (!f || (help && f->help) || (type && f->typed)) {
                rc = fail_v(why, whylen, lineno, "HELP or TYPE repeated", buf);
                break;
            }
            if (f->closed || (v->current >= 0 && &v->fam[v->current] == f)) {
                rc = fail_v(why, whylen, lineno, "HELP/TYPE after the family's samples", buf);
                break;
            }
            if (help) {
                f->help = true;
                if (*p && *p++ != ' ') rc = fail_v(why, whylen, lineno, "no space after name", buf);
                for (; *p && !rc; p++)
                    if (*p == '\\' && p[1] != '\\' && p[1] != 'n')
                        rc = fail_v(why, whylen, lineno, "bad escape in HELP", buf);
                    else if (*p == '\\')
                        p++;
            } else {
                f->typed = true;
                if (*p++ != ' ') rc = fail_v(why, whylen, lineno, "no space after name", buf);
                static const char *const types[] = {"counter", "gauge", "histogram", "summary",
                                                    "untyped"};
                bool ok = false;
                for (int i = 0; i < 5 && !ok; i++) ok = !strcmp(p, types[i]);
                if (!ok && !rc) rc = fail_v(why, whylen, lineno, "unknown type", buf);
                snprintf(f->type, sizeof f->type, "%s", p);
            }
            continue;
        }

        /* A sample: name{labels} value [timestamp] */
        if (!read_name(&p, true, name, sizeof name)) {
            rc = fail_v(why, whylen, lineno, "bad metric name", buf);
            break;
        }
        const char *suffix;
        family_t *f = family_of(v, name, &suffix);
        if (!f || !f->typed) {
            rc = fail_v(why, whylen, lineno, "sample before its TYPE", buf);
            break;
        }
        int fi = (int)(f - v->fam);
        if (f->closed) {
            rc = fail_v(why, whylen, lineno, "family samples not contiguous", buf);
            break;
        }
        if (v->current >= 0 && v->current != fi) v->fam[v->current].closed = true;
        v->current = fi;

        char labels[512] = "", nole[512] = "", le[256] = "";
        bool has_le = false;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                char lname[128], lval[256];
                size_t lv = 0;
                if (!read_name(&p, false, lname, sizeof lname) || *p++ != '=' || *p++ != '"') {
                    rc = fail_v(why, whylen, lineno, "bad label", buf);
                    break;
                }
                for (; *p && *p != '"'; p++) {
                    if (*p == '\\') {
                        p++;
                        if (*p != '\\' && *p != '"' && *p != 'n') {
                            rc = fail_v(why, whylen, lineno, "bad escape in label value", buf);
                            break;
                        }
                    }
                    if (lv + 2 < sizeof lval) lval[lv++] = *p;
                }
                lval[lv] = '\0';
                if (rc) break;
                if (*p++ != '"') {
                    rc = fail_v(why, whylen, lineno, "unterminated label value", buf);
                    break;
                }
                if (strstr(labels, lname) && strstr(labels, lname)[strlen(lname)] == '=') {
                    rc = fail_v(why, whylen, lineno, "label repeated", buf);
                    break;
                }
                snprintf(labels + strlen(labels), sizeof labels - strlen(labels), "%s=%s,",
                         lname, lval);
                if (!strcmp(lname, "le")) {
                    has_le = true;
                    snprintf(le, sizeof le, "%s", lval);
                } else {
                    snprintf(nole + strlen(nole), sizeof nole - strlen(nole), "%s=%s,", lname,
                             lval);
                }
                if (*p == ',') p++;
                else if (*p != '}') {
                    rc = fail_v(why, whylen, lineno, "expected , or }", buf);
                    break;
                }
            }
            if (rc) break;
            p++;
        }
        double val;
        if (*p++ != ' ' || !read_value(&p, &val)) {
            rc = fail_v(why, whylen, lineno, "bad value", buf);
            break;
        }
        if (*p == ' ') {
            p++;
            if (*p == '-') p++;
            if (!isdigit((unsigned char)*p)) rc = fail_v(why, whylen, lineno, "bad timestamp", buf);
            while (isdigit((unsigned char)*p)) p++;
        }
        if (*p && !rc) rc = fail_v(why, whylen, lineno, "trailing characters", buf);
        if (rc) break;

        char key[1100];
        snprintf(key, sizeof key, "%s{%s}", name, labels);
        for (size_t i = 0; i < v->n_series && !rc; i++)
            if (!strcmp(v->series[i], key)) rc = fail_v(why, whylen, lineno, "duplicate series", buf);
        if (rc) break;
        v->series = mg_xrealloc(v->series, (v->n_series + 1) * sizeof *v->series);
        v->series[v->n_series++] = mg_xstrdup(key);

        /* Histogram semantics. */
        if (!strcmp(f->type, "counter") && (val < 0 || isnan(val)))
            rc = fail_v(why, whylen, lineno, "negative counter", buf);
        if (!strcmp(suffix, "_bucket")) {
            double lev;
            const char *lp = le;
            if (!has_le || !read_value(&lp, &lev) || *lp) {
                rc = fail_v(why, whylen, lineno, "bucket without a valid le", buf);
                break;
            }
            char hk[1100];
            snprintf(hk, sizeof hk, "%s{%s}", f->name, nole);
            if (!v->in_hist || strcmp(hk, v->hkey)) {
                if (v->in_hist) rc = fail_v(why, whylen, lineno, "histogram without _count", buf);
                snprintf(v->hkey, sizeof v->hkey, "%s", hk);
                v->in_hist = true;
                v->saw_inf = false;
                v->last_le = -INFINITY;
                v->last_cnt = 0;
            } else if (v->saw_inf) {
                rc = fail_v(why, whylen, lineno, "bucket after +Inf", buf);
            }
            if (!(lev > v->last_le)) rc = fail_v(why, whylen, lineno, "le not increasing", buf);
            if (val < v->last_cnt) rc = fail_v(why, whylen, lineno, "buckets not cumulative", buf);
            v->last_le = lev;
            v->last_cnt = val;
            if (isinf(lev)) {
                v->saw_inf = true;
                v->inf_cnt = val;
            }
        } else if (!strcmp(suffix, "_count")) {
            char hk[1100];
            snprintf(hk, sizeof hk, "%s{%s}", f->name, nole);
            if (!v->in_hist || strcmp(hk, v->hkey) || !v->saw_inf)
                rc = fail_v(why, whylen, lineno, "_count without buckets ending in +Inf", buf);
            else if (val != v->inf_cnt)
                rc = fail_v(why, whylen, lineno, "_count differs from the +Inf bucket", buf);
            v->in_hist = false;
        } else if (!strcmp(suffix, "_sum")) {
            char hk[1100];
            snprintf(hk, sizeof hk, "%s{%s}", f->name, nole);
            if (!v->in_hist || strcmp(hk, v->hkey))
                rc = fail_v(why, whylen, lineno, "_sum outside its histogram", buf);
        } else if (!strcmp(f->type, "histogram")) {
            rc = fail_v(why, whylen, lineno, "histogram sample without a suffix", buf);
        }
    }
    if (!rc && v->in_hist) rc = fail_v(why, whylen, lineno, "histogram without _count", "");
    for (int i = 0; i < v->n_fam && !rc; i++)
        if (!v->fam[i].help || !v->fam[i].typed)
            rc = fail_v(why, whylen, lineno, "family without HELP and TYPE", v->fam[i].name);
out:
    for (size_t i = 0; i < v->n_series; i++) free(v->series[i]);
    free(v->series);
    free(v);
    return rc;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Renders and validates; the caller frees the result. */
static char *render(void)
{
    mg_buf_t b = {0};
    mg_metrics_render(&b);
    char why[256];
    if (validate(b.data, why, sizeof why) != 0) {
        fprintf(stderr, "  invalid exposition: %s\n", why);
        mg_test_failures++;
    }
    return mg_buf_steal(&b);
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return true;
    return false;
}

#define CHECK_LINE(text, line)                                                                    \
    do {                                                                                          \
        if (!has_line((text), (line))) {                                                          \
            fprintf(stderr, "  %s:%d: missing line: %s\n", __FILE__, __LINE__, (line));           \
            mg_test_failures++;                                                                   \
        }                                                                                         \
    } while (0)

/* The lines of text starting with prefix, concatenated (each with its newline). Caller frees. */
static char *lines_with(const char *text, const char *prefix)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, "");
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        if (mg_str_has_prefix(line, prefix)) mg_buf_append(&b, line, (size_t)(eol - line) + 1);
        line = eol + 1;
    }
    return mg_buf_steal(&b);
}

static size_t count_lines_with(const char *text, const char *prefix)
{
    char *l = lines_with(text, prefix);
    size_t n = 0;
    for (const char *p = l; *p; p++) n += *p == '\n';
    free(l);
    return n;
}

/* The value of the sample line starting with "series ", or NAN. */
static double sample_value(const char *text, const char *series)
{
    char pre[512];
    snprintf(pre, sizeof pre, "%s ", series);
    for (const char *line = text; *line;) {
        if (mg_str_has_prefix(line, pre)) return strtod(line + strlen(pre), NULL);
        line = strchr(line, '\n') + 1;
    }
    return NAN;
}

/* ---- tests ----------------------------------------------------------------------------------- */

MG_TEST(empty_registry_renders_every_family)
{
    mg_metrics_reset();
    char *t = render();
    static const char *const families[][2] = {
        {"requests_total", "counter"},          {"attempts_total", "counter"},
        {"fallbacks_total", "counter"},         {"request_duration_seconds", "histogram"},
        {"ttft_seconds", "histogram"},          {"tokens_total", "counter"},
        {"cost_total", "counter"},              {"active_streams", "gauge"},
        {"policy_decision_seconds", "histogram"}, {"reloads_total", "counter"},
        {"providers_cooling_down", "gauge"},
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(families); i++) {
        char line[200];
        snprintf(line, sizeof line, "# TYPE moongate_%s %s", families[i][0], families[i][1]);
        CHECK_LINE(t, line);
        snprintf(line, sizeof line, "# HELP moongate_%s ", families[i][0]);
        MG_CHECK(strstr(t, line) != NULL);
    }
    CHECK_LINE(t, "moongate_fallbacks_total 0");
    CHECK_LINE(t, "moongate_active_streams 0");
    CHECK_LINE(t, "moongate_providers_cooling_down 0");
    CHECK_LINE(t, "moongate_reloads_total{result=\"ok\"} 0");
    CHECK_LINE(t, "moongate_reloads_total{result=\"error\"} 0");
    CHECK_LINE(t, "moongate_request_duration_seconds_count{api=\"messages\"} 0");
    CHECK_LINE(t, "moongate_policy_decision_seconds_bucket{le=\"+Inf\"} 0");
    MG_CHECK(strstr(t, "moongate_requests_total{") == NULL);
    MG_CHECK(strstr(t, "moongate_ttft_seconds_bucket") == NULL);
    free(t);
}

MG_TEST(exact_lines_after_known_operations)
{
    mg_metrics_reset();
    mg_metrics_request(MG_METRICS_API_CHAT, "oa/gpt-4o", 200);
    mg_metrics_request(MG_METRICS_API_CHAT, "oa/gpt-4o", 200);
    mg_metrics_request(MG_METRICS_API_CHAT, "lm/qwen", 200);
    mg_metrics_request(MG_METRICS_API_MESSAGES, NULL, 502);
    mg_metrics_request(MG_METRICS_API_RESPONSES, "lm/qwen", 429);
    mg_metrics_request(MG_METRICS_API_RESPONSES, "lm/qwen", 42); /* not an HTTP status */
    mg_metrics_attempt("oa/gpt-4o", MG_CLASS_OK);
    mg_metrics_attempt("oa/gpt-4o", MG_CLASS_RATE_LIMIT);
    mg_metrics_attempt("oa/gpt-4o", MG_CLASS_RATE_LIMIT);
    mg_metrics_attempt("lm/qwen", MG_CLASS_CONNECT_ERROR);
    mg_metrics_fallback();
    mg_metrics_fallback();
    mg_metrics_latency(MG_METRICS_API_CHAT, 0.3);
    mg_metrics_latency(MG_METRICS_API_CHAT, 1.5);
    mg_metrics_latency(MG_METRICS_API_CHAT, 1000);
    mg_metrics_latency(MG_METRICS_API_CHAT, -1);  /* ignored */
    mg_metrics_latency(MG_METRICS_API_CHAT, NAN); /* ignored */
    mg_metrics_ttft("lm/qwen", 0.25);
    mg_metrics_ttft("lm/qwen", 0.75);
    mg_metrics_tokens("oa/gpt-4o", 1000, 200, 300, 0);
    mg_metrics_tokens("oa/gpt-4o", 24, 0, -5, 7);
    mg_metrics_cost("oa/gpt-4o", 0.0125);
    mg_metrics_cost("oa/gpt-4o", 0.0125);
    mg_metrics_active_streams(+1);
    mg_metrics_active_streams(+1);
    mg_metrics_active_streams(-1);
    mg_metrics_policy_decision(0.0003);
    mg_metrics_reload(true);
    mg_metrics_reload(false);
    mg_metrics_reload(true);
    char *t = render();

    char *got = lines_with(t, "moongate_requests_total{");
    MG_CHECK_STR(got, "moongate_requests_total{api=\"chat\",model=\"lm/qwen\",status=\"200\"} 1\n"
                      "moongate_requests_total{api=\"chat\",model=\"oa/gpt-4o\",status=\"200\"} 2\n"
                      "moongate_requests_total{api=\"responses\",model=\"lm/qwen\",status=\"0\"} 1\n"
                      "moongate_requests_total{api=\"responses\",model=\"lm/qwen\",status=\"429\"} 1\n"
                      "moongate_requests_total{api=\"messages\",model=\"none\",status=\"502\"} 1\n");
    free(got);
    got = lines_with(t, "moongate_attempts_total{");
    MG_CHECK_STR(got, "moongate_attempts_total{model=\"lm/qwen\",outcome=\"connect_error\"} 1\n"
                      "moongate_attempts_total{model=\"oa/gpt-4o\",outcome=\"ok\"} 1\n"
                      "moongate_attempts_total{model=\"oa/gpt-4o\",outcome=\"rate_limit\"} 2\n");
    free(got);
    CHECK_LINE(t, "moongate_fallbacks_total 2");

    got = lines_with(t, "moongate_request_duration_seconds_");
    MG_CHECK_STR(got,
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.005\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.01\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.025\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.05\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.25\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"0.5\"} 1\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"1\"} 1\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"2.5\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"5\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"10\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"30\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"60\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"120\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"300\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"600\"} 2\n"
                 "moongate_request_duration_seconds_bucket{api=\"chat\",le=\"+Inf\"} 3\n"
                 "moongate_request_duration_seconds_sum{api=\"chat\"} 1001.8\n"
                 "moongate_request_duration_seconds_count{api=\"chat\"} 3\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.005\"} 0\n"
                 /* (responses and messages: all zero) */
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.01\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.025\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.05\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.25\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"0.5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"2.5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"10\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"30\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"60\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"120\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"300\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"600\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"responses\",le=\"+Inf\"} 0\n"
                 "moongate_request_duration_seconds_sum{api=\"responses\"} 0\n"
                 "moongate_request_duration_seconds_count{api=\"responses\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.005\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.01\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.025\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.05\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.25\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"0.5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"2.5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"10\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"30\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"60\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"120\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"300\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"600\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"messages\",le=\"+Inf\"} 0\n"
                 "moongate_request_duration_seconds_sum{api=\"messages\"} 0\n"
                 "moongate_request_duration_seconds_count{api=\"messages\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.005\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.01\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.025\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.05\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.25\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"0.5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"1\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"2.5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"5\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"10\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"30\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"60\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"120\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"300\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"600\"} 0\n"
                 "moongate_request_duration_seconds_bucket{api=\"count_tokens\",le=\"+Inf\"} 0\n"
                 "moongate_request_duration_seconds_sum{api=\"count_tokens\"} 0\n"
                 "moongate_request_duration_seconds_count{api=\"count_tokens\"} 0\n");
    free(got);

    got = lines_with(t, "moongate_ttft_seconds_");
    MG_CHECK_STR(got, "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"0.05\"} 0\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"0.1\"} 0\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"0.25\"} 1\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"0.5\"} 1\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"1\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"2\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"5\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"10\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"20\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"30\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"60\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"120\"} 2\n"
                      "moongate_ttft_seconds_bucket{model=\"lm/qwen\",le=\"+Inf\"} 2\n"
                      "moongate_ttft_seconds_sum{model=\"lm/qwen\"} 1\n"
                      "moongate_ttft_seconds_count{model=\"lm/qwen\"} 2\n");
    free(got);

    got = lines_with(t, "moongate_tokens_total{");
    MG_CHECK_STR(got, "moongate_tokens_total{model=\"oa/gpt-4o\",direction=\"in\"} 1024\n"
                      "moongate_tokens_total{model=\"oa/gpt-4o\",direction=\"out\"} 200\n"
                      "moongate_tokens_total{model=\"oa/gpt-4o\",direction=\"cache_read\"} 300\n"
                      "moongate_tokens_total{model=\"oa/gpt-4o\",direction=\"cache_write\"} 7\n");
    free(got);
    got = lines_with(t, "moongate_cost_total{");
    MG_CHECK_STR(got, "moongate_cost_total{model=\"oa/gpt-4o\"} 0.025\n");
    free(got);
    CHECK_LINE(t, "moongate_active_streams 1");
    CHECK_LINE(t, "moongate_policy_decision_seconds_bucket{le=\"0.00025\"} 0");
    CHECK_LINE(t, "moongate_policy_decision_seconds_bucket{le=\"0.0005\"} 1");
    CHECK_LINE(t, "moongate_policy_decision_seconds_sum 0.0003");
    CHECK_LINE(t, "moongate_policy_decision_seconds_count 1");
    CHECK_LINE(t, "moongate_reloads_total{result=\"ok\"} 2");
    CHECK_LINE(t, "moongate_reloads_total{result=\"error\"} 1");

    /* The same state renders byte-identically. */
    char *t2 = render();
    MG_CHECK_STR(t2, t);
    free(t2);
    free(t);
}

MG_TEST(bucket_bounds_are_inclusive)
{
    mg_metrics_reset();
    mg_metrics_ttft("m/x", 0.5); /* exactly on a bound: counted in le="0.5" */
    mg_metrics_ttft("m/x", 120);
    mg_metrics_ttft("m/x", 120.5);
    char *t = render();
    CHECK_LINE(t, "moongate_ttft_seconds_bucket{model=\"m/x\",le=\"0.25\"} 0");
    CHECK_LINE(t, "moongate_ttft_seconds_bucket{model=\"m/x\",le=\"0.5\"} 1");
    CHECK_LINE(t, "moongate_ttft_seconds_bucket{model=\"m/x\",le=\"120\"} 2");
    CHECK_LINE(t, "moongate_ttft_seconds_bucket{model=\"m/x\",le=\"+Inf\"} 3");
    CHECK_LINE(t, "moongate_ttft_seconds_sum{model=\"m/x\"} 241");
    free(t);
}

MG_TEST(label_values_escaped)
{
    mg_metrics_reset();
    mg_metrics_attempt("we\"ird\\model\nname", MG_CLASS_TIMEOUT);
    mg_metrics_cost("we\"ird\\model\nname", 1.5);
    char *t = render();
    CHECK_LINE(t, "moongate_attempts_total{model=\"we\\\"ird\\\\model\\nname\",outcome=\"timeout\"} 1");
    CHECK_LINE(t, "moongate_cost_total{model=\"we\\\"ird\\\\model\\nname\"} 1.5");
    free(t);
}

MG_TEST(models_past_the_cap_fold_into_other)
{
    mg_metrics_reset();
    char ref[64];
    for (int i = 0; i < MG_METRICS_MAX_MODELS + 50; i++) {
        snprintf(ref, sizeof ref, "p/m%04d", i);
        mg_metrics_attempt(ref, MG_CLASS_OK);
        mg_metrics_attempt(ref, MG_CLASS_OK);
    }
    char *t = render();
    MG_CHECK_INT(count_lines_with(t, "moongate_attempts_total{"), MG_METRICS_MAX_MODELS + 1);
    MG_CHECK(sample_value(t, "moongate_attempts_total{model=\"p/m0000\",outcome=\"ok\"}") == 2);
    MG_CHECK(sample_value(t, "moongate_attempts_total{model=\"p/m0999\",outcome=\"ok\"}") == 2);
    MG_CHECK(isnan(sample_value(t, "moongate_attempts_total{model=\"p/m1000\",outcome=\"ok\"}")));
    MG_CHECK(sample_value(t, "moongate_attempts_total{model=\"other\",outcome=\"ok\"}") == 100);
    free(t);
    /* A model seen before the cap keeps its own series. */
    mg_metrics_attempt("p/m0001", MG_CLASS_OK);
    t = render();
    MG_CHECK(sample_value(t, "moongate_attempts_total{model=\"p/m0001\",outcome=\"ok\"}") == 3);
    free(t);
}

MG_TEST(request_series_past_the_cap_fold_into_other)
{
    mg_metrics_reset();
    char ref[64];
    uint64_t total = 0;
    /* 900 models × 12 statuses = 10800 combinations > MG_METRICS_MAX_SERIES. */
    for (int i = 0; i < 900; i++) {
        snprintf(ref, sizeof ref, "p/m%04d", i);
        for (int s = 0; s < 12; s++) {
            mg_metrics_request(MG_METRICS_API_CHAT, ref, 200 + s);
            total++;
        }
    }
    char *t = render();
    size_t n = count_lines_with(t, "moongate_requests_total{");
    MG_CHECK(n <= MG_METRICS_MAX_SERIES + 12);
    MG_CHECK(n >= MG_METRICS_MAX_SERIES);
    /* Nothing is lost: the samples add up. */
    char *l = lines_with(t, "moongate_requests_total{");
    double sum = 0;
    for (const char *p = l; *p; p = strchr(p, '\n') + 1) sum += strtod(strchr(p, ' ') + 1, NULL);
    MG_CHECK(sum == (double)total);
    MG_CHECK(sample_value(t, "moongate_requests_total{api=\"chat\",model=\"other\",status=\"211\"}") >= 1);
    free(l);
    free(t);
}

static int64_t fake_cooling(void *ud)
{
    return *(int *)ud;
}

MG_TEST(cooling_gauge_both_ways)
{
    mg_metrics_reset();
    mg_metrics_provider_cooling("a", true);
    mg_metrics_provider_cooling("a", true); /* idempotent */
    mg_metrics_provider_cooling("b", true);
    mg_metrics_provider_cooling("c", false); /* never cooling: no-op */
    char *t = render();
    CHECK_LINE(t, "moongate_providers_cooling_down 2");
    free(t);
    mg_metrics_provider_cooling("a", false);
    t = render();
    CHECK_LINE(t, "moongate_providers_cooling_down 1");
    free(t);
    int seven = 7;
    mg_metrics_set_cooling_source(fake_cooling, &seven);
    t = render();
    CHECK_LINE(t, "moongate_providers_cooling_down 7");
    free(t);
    mg_metrics_set_cooling_source(NULL, NULL);
    t = render();
    CHECK_LINE(t, "moongate_providers_cooling_down 1");
    free(t);
    mg_metrics_reset();
}

MG_TEST(cost_of_prices_per_million)
{
    mg_cost_t c = {.input = 3, .output = 15, .cache_read = 0.3, .cache_write = 3.75};
    double v = mg_cost_of(&c, 1000, 500, 2000, 100); /* 3000 + 7500 + 600 + 375 per million */
    MG_CHECK(fabs(v - 0.011475) < 1e-15);
    MG_CHECK(mg_cost_of(NULL, 1000, 1000, 0, 0) == 0);
    MG_CHECK(mg_cost_of(&c, -10, 0, 0, 0) == 0);
    mg_cost_t free_model = {0};
    MG_CHECK(mg_cost_of(&free_model, 1000000, 1000000, 0, 0) == 0);
    mg_cost_t one = {.input = 1};
    MG_CHECK(mg_cost_of(&one, 1000000, 0, 0, 0) == 1);
}

MG_TEST(api_names)
{
    MG_CHECK_STR(mg_metrics_api_name(MG_METRICS_API_CHAT), "chat");
    MG_CHECK_STR(mg_metrics_api_name(MG_METRICS_API_RESPONSES), "responses");
    MG_CHECK_STR(mg_metrics_api_name(MG_METRICS_API_MESSAGES), "messages");
    MG_CHECK_STR(mg_metrics_api_name((mg_metrics_api_t)7), "unknown");
}

/* ---- the validator itself rejects what it should ---------------------------------------------- */

MG_TEST(validator_rejects_bad_exposition)
{
    static const char *const bad[] = {
        "moongate_x 1\n", /* no TYPE */
        "# TYPE a counter\na{l=\"x} 1\n",
        "# HELP a h\n# TYPE a counter\na{l=\"\\t\"} 1\n",
        "# HELP a h\n# TYPE a counter\na 1 2 3\n",
        "# HELP a h\n# TYPE a counter\na one\n",
        "# HELP a h\n# TYPE a counter\na 1\na 2\n",
        "# HELP a h\n# TYPE a counter\n# HELP b h\n# TYPE b counter\na 1\nb 1\na{x=\"1\"} 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n"
        "h_count 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n"
        "h_count 3\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP a h\n# TYPE a counter\na -1\n",
        "# HELP a h\n# TYPE a counter\na 1",
        "# HELP 1a h\n",
        "# HELP a h\n# TYPE a countr\n",
    };
    char why[256];
    for (size_t i = 0; i < MG_ARRAY_LEN(bad); i++) {
        if (validate(bad[i], why, sizeof why) == 0) {
            fprintf(stderr, "  accepted bad input %zu: %s\n", i, bad[i]);
            mg_test_failures++;
        }
    }
    MG_CHECK(validate("# HELP h h\n# TYPE h histogram\nh_bucket{a=\"x\",le=\"1\"} 1\n"
                      "h_bucket{a=\"x\",le=\"+Inf\"} 2\nh_sum{a=\"x\"} 3.5\nh_count{a=\"x\"} 2\n"
                      "# a comment\n\n# HELP c c\\\\d\\n\n# TYPE c gauge\nc{x=\"\\\"\",} -1.5e3 "
                      "1700000000000\n",
                      why, sizeof why) == 0);
}

/* ---- threads --------------------------------------------------------------------------------- */

#define N_THREADS 8
#define N_ITER 20000

static void *hammer(void *p)
{
    int id = *(int *)p;
    char own[32];
    snprintf(own, sizeof own, "p/thread%d", id);
    for (int i = 0; i < N_ITER; i++) {
        mg_metrics_request(MG_METRICS_API_CHAT, "p/shared", 200);
        mg_metrics_request((mg_metrics_api_t)(i % 3), own, 200 + i % 5); /* new series on the fly */
        mg_metrics_attempt("p/shared", (mg_class_t)(i % MG_CLASS_COUNT));
        mg_metrics_tokens("p/shared", 3, 2, 1, 0);
        mg_metrics_cost("p/shared", 0.5);
        mg_metrics_latency(MG_METRICS_API_MESSAGES, 0.25);
        mg_metrics_ttft(own, 1);
        mg_metrics_active_streams(+1);
        mg_metrics_active_streams(-1);
        mg_metrics_fallback();
        mg_metrics_policy_decision(0.001);
        if (i % 1000 == 0) mg_metrics_provider_cooling(own, i % 2000 == 0);
        if (id == 0 && i % 2000 == 0) { /* a scraper among the writers */
            mg_buf_t b = {0};
            mg_metrics_render(&b);
            char why[256];
            if (validate(b.data, why, sizeof why) != 0) {
                fprintf(stderr, "  invalid mid-run exposition: %s\n", why);
                mg_test_failures++; /* only thread 0 writes it */
            }
            mg_buf_free(&b);
        }
    }
    return NULL;
}

MG_TEST(concurrent_counts_are_exact)
{
    mg_metrics_reset();
    pthread_t th[N_THREADS];
    int ids[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        ids[i] = i;
        MG_CHECK(pthread_create(&th[i], NULL, hammer, &ids[i]) == 0);
    }
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    char *t = render();
    const double all = (double)N_THREADS * N_ITER;
    MG_CHECK(sample_value(t, "moongate_requests_total{api=\"chat\",model=\"p/shared\",status=\"200\"}") == all);
    double per_thread = 0;
    for (int a = 0; a < 3; a++)
        for (int s = 200; s < 205; s++) {
            char series[128];
            snprintf(series, sizeof series,
                     "moongate_requests_total{api=\"%s\",model=\"p/thread3\",status=\"%d\"}",
                     mg_metrics_api_name((mg_metrics_api_t)a), s);
            double v = sample_value(t, series);
            if (!isnan(v)) per_thread += v;
        }
    MG_CHECK(per_thread == N_ITER);
    double attempts = 0;
    char *l = lines_with(t, "moongate_attempts_total{model=\"p/shared\"");
    for (const char *p = l; *p; p = strchr(p, '\n') + 1) attempts += strtod(strchr(p, ' ') + 1, NULL);
    free(l);
    MG_CHECK(attempts == all);
    MG_CHECK(sample_value(t, "moongate_tokens_total{model=\"p/shared\",direction=\"in\"}") == 3 * all);
    MG_CHECK(sample_value(t, "moongate_tokens_total{model=\"p/shared\",direction=\"out\"}") == 2 * all);
    MG_CHECK(sample_value(t, "moongate_tokens_total{model=\"p/shared\",direction=\"cache_read\"}") == all);
    MG_CHECK(sample_value(t, "moongate_cost_total{model=\"p/shared\"}") == 0.5 * all);
    MG_CHECK(sample_value(t, "moongate_request_duration_seconds_count{api=\"messages\"}") == all);
    MG_CHECK(sample_value(t, "moongate_request_duration_seconds_sum{api=\"messages\"}") == 0.25 * all);
    MG_CHECK(sample_value(t, "moongate_ttft_seconds_count{model=\"p/thread5\"}") == N_ITER);
    MG_CHECK(sample_value(t, "moongate_fallbacks_total") == all);
    MG_CHECK(sample_value(t, "moongate_active_streams") == 0);
    MG_CHECK(sample_value(t, "moongate_policy_decision_seconds_count") == all);
    /* Each thread last reported its provider at i = 19000: not cooling. */
    MG_CHECK(sample_value(t, "moongate_providers_cooling_down") == 0);
    free(t);
    mg_metrics_reset();
}

MG_TEST_MAIN()

/* Fidelity suite for the translation layer: every client API × every upstream API, whole and
 * streamed, against golden files under tests/fixtures/translate/.
 *
 * Inputs (written by fixtures/translate/gen_inputs.py) are named <case>.<api>.<ext>:
 *   requests/   a client request in <api>            → golden <case>.<api>-to-<upstream>.json
 *   responses/  an upstream whole answer in <api>    → golden <case>.<api>-to-<client>.json
 *   streams/    an upstream SSE stream in <api>      → golden <case>.<api>-to-<client>.sse
 * Cases named reasoning* or think* also get a .strip golden (strip_reasoning on).
 *
 * Besides the goldens, properties that catch framing bugs the eye misses:
 *   - requests: encoding is idempotent through the upstream's own decoder
 *     (encode(decode(encode(x))) == encode(x));
 *   - responses and streams: what the client's own decoder reads back from the produced body or
 *     SSE bytes (text, reasoning, tool calls, finish class, usage, error) equals what the
 *     upstream's decoder read from the input.
 *
 * MG_UPDATE_GOLDEN=1 rewrites the goldens instead of comparing; review every change by eye
 * against PROTOCOLS.md (what the SDKs accept). A mismatch prints `diff -u golden got`. */
#include "ir.h"
#include "mg_test.h"
#include "translate_pipe.h"
#include "sse.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CREATED 1750000000

/* ---- files and goldens ---- */

static void write_file(const char *path, const char *s, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "  cannot write %s\n", path);
        mg_test_failures++;
        return;
    }
    fwrite(s, 1, n, f);
    fclose(f);
}

static bool updating(void)
{
    const char *e = getenv("MG_UPDATE_GOLDEN");
    return e && *e && strcmp(e, "0") != 0;
}

static void check_golden(const char *path, const char *got, size_t n)
{
    if (updating()) {
        write_file(path, got, n);
        return;
    }
    size_t wl;
    char *want = mg_test_read_file(path, &wl);
    if (!want) {
        fprintf(stderr, "  missing golden %s (run with MG_UPDATE_GOLDEN=1, then review it)\n", path);
        mg_test_failures++;
        return;
    }
    if (wl != n || memcmp(want, got, n) != 0) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        char tmp[512];
        snprintf(tmp, sizeof tmp, "golden-%s.got", base);
        write_file(tmp, got, n);
        fprintf(stderr, "  golden mismatch: %s (got: %s)\n", path, tmp);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "diff -u '%s' '%s' | head -80 1>&2", path, tmp);
        if (system(cmd) == -1) fprintf(stderr, "  (diff not available)\n");
        mg_test_failures++;
    }
    free(want);
}

/* Sorted input files of a fixture directory (names without "-to-"), NULL-terminated. */
static char **list_inputs(const char *dir)
{
    DIR *d = opendir(dir);
    char **v = NULL;
    size_t n = 0;
    if (!d) return mg_xcalloc(1, sizeof *v);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, "-to-") || strstr(e->d_name, ".py")) continue;
        v = mg_xrealloc(v, (n + 2) * sizeof *v);
        v[n++] = mg_xstrdup(e->d_name);
        v[n] = NULL;
    }
    closedir(d);
    for (size_t i = 0; i + 1 < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(v[i], v[j]) > 0) {
                char *t = v[i];
                v[i] = v[j];
                v[j] = t;
            }
    return v ? v : mg_xcalloc(1, sizeof *v);
}

static void free_list(char **v)
{
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

/* "<case>.<api>.<ext>" → case and api index; false when the name does not fit. */
static bool split_name(const char *name, char *cas, size_t cl, int *api)
{
    const char *dot1 = strchr(name, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2) return false;
    snprintf(cas, cl, "%.*s", (int)(dot1 - name), name);
    for (int i = 0; i < 3; i++)
        if ((size_t)(dot2 - dot1 - 1) == strlen(apis[i].name) && strncmp(dot1 + 1, apis[i].name, strlen(apis[i].name)) == 0) {
            *api = i;
            return true;
        }
    return false;
}

static bool has_reasoning_case(const char *cas)
{
    return strncmp(cas, "reasoning", 9) == 0 || strncmp(cas, "think", 5) == 0;
}

/* ---- comparing answers ---- */

static int finish_class(mg_ir_finish_t f)
{
    switch (f) {
    case MG_IR_FINISH_LENGTH:
    case MG_IR_FINISH_CONTEXT_WINDOW: return 1;
    case MG_IR_FINISH_TOOL_CALLS: return 2;
    case MG_IR_FINISH_CONTENT_FILTER: return 3;
    default: return 0;
    }
}

static const char *norm_args(const char *a)
{
    return a && *a ? a : "{}";
}

static void check_usage_field(const char *label, const char *what, int64_t want, int64_t got, bool required)
{
    if (want < 0) return;
    if (got < 0 && !required) return;
    if (got != want) {
        fprintf(stderr, "  %s: usage.%s = %lld, want %lld\n", label, what, (long long)got, (long long)want);
        mg_test_failures++;
    }
}

/* up: what the upstream's decoder read; cl: what the client's decoder read back. */
static void compare_answers(const char *label, const mg_ir_response_t *up, const mg_ir_response_t *cl, bool strip)
{
    char *t1 = concat(up, MG_IR_PART_TEXT), *t2 = concat(cl, MG_IR_PART_TEXT);
    if (strcmp(t1, t2) != 0) {
        fprintf(stderr, "  %s: text \"%s\", want \"%s\"\n", label, t2, t1);
        mg_test_failures++;
    }
    free(t1);
    free(t2);
    char *r1 = concat(up, MG_IR_PART_REASONING), *r2 = concat(cl, MG_IR_PART_REASONING);
    if (strcmp(strip ? "" : r1, r2) != 0) {
        fprintf(stderr, "  %s: reasoning \"%s\", want \"%s\"\n", label, r2, strip ? "" : r1);
        mg_test_failures++;
    }
    free(r1);
    free(r2);
    size_t n1 = 0, n2 = 0;
    const mg_ir_part_t *c1[32], *c2[32];
    for (size_t i = 0; i < up->n_parts && n1 < 32; i++)
        if (up->parts[i].type == MG_IR_PART_TOOL_CALL) c1[n1++] = &up->parts[i];
    for (size_t i = 0; i < cl->n_parts && n2 < 32; i++)
        if (cl->parts[i].type == MG_IR_PART_TOOL_CALL) c2[n2++] = &cl->parts[i];
    if (n1 != n2) {
        fprintf(stderr, "  %s: %zu tool calls, want %zu\n", label, n2, n1);
        mg_test_failures++;
    } else {
        for (size_t i = 0; i < n1; i++) {
            if (strcmp(c1[i]->id, c2[i]->id) || strcmp(c1[i]->name, c2[i]->name) ||
                strcmp(norm_args(c1[i]->arguments), norm_args(c2[i]->arguments))) {
                fprintf(stderr, "  %s: tool call %zu = %s %s %s, want %s %s %s\n", label, i, c2[i]->id, c2[i]->name,
                        c2[i]->arguments, c1[i]->id, c1[i]->name, c1[i]->arguments);
                mg_test_failures++;
            }
        }
    }
    int f1 = finish_class(mg_ir_effective_finish(up->finish, n1 > 0));
    int f2 = finish_class(mg_ir_effective_finish(cl->finish, n2 > 0));
    if (f1 != f2) {
        fprintf(stderr, "  %s: finish %s, want %s\n", label, mg_ir_finish_name(cl->finish), mg_ir_finish_name(up->finish));
        mg_test_failures++;
    }
    check_usage_field(label, "input", up->usage.input, cl->usage.input, true);
    check_usage_field(label, "output", up->usage.output, cl->usage.output, true);
    check_usage_field(label, "cache_read", up->usage.cache_read, cl->usage.cache_read, false);
    check_usage_field(label, "cache_write", up->usage.cache_write, cl->usage.cache_write, false);
    check_usage_field(label, "reasoning", up->usage.reasoning, cl->usage.reasoning, false);
}

/* ---- requests ---- */

MG_TEST(requests_all_pairs_match_goldens)
{
    char **files = list_inputs(FIX "/requests");
    int cases = 0;
    for (size_t f = 0; files[f]; f++) {
        char cas[128], path[1024];
        int from;
        if (!split_name(files[f], cas, sizeof cas, &from)) continue;
        snprintf(path, sizeof path, FIX "/requests/%s", files[f]);
        size_t len = 0;
        char *text = mg_test_read_file(path, &len);
        cJSON *body = cJSON_ParseWithLength(text, len);
        MG_CHECK(body != NULL);
        mg_ir_arena_t *a = mg_ir_arena_new();
        mg_ir_request_t ir;
        char err[256] = "";
        if (!body || mg_ir_decode_request(apis[from].api, body, a, &ir, err, sizeof err) != 0) {
            fprintf(stderr, "  %s: decode failed: %s\n", files[f], err);
            mg_test_failures++;
        } else {
            for (int to = 0; to < 3; to++) {
                char label[256];
                snprintf(label, sizeof label, "%s-to-%s", files[f], apis[to].name);
                mg_ir_request_opts_t o = {.model = "up-model", .default_max_tokens = 8192};
                cJSON *enc = mg_ir_encode_request(apis[to].api, &ir, &o, err, sizeof err);
                if (!enc) {
                    fprintf(stderr, "  %s: encode failed: %s\n", label, err);
                    mg_test_failures++;
                    continue;
                }
                char *s = cJSON_Print(enc);
                mg_buf_t g = {0};
                mg_buf_puts(&g, s);
                mg_buf_puts(&g, "\n");
                snprintf(path, sizeof path, FIX "/requests/%s.%s-to-%s.json", cas, apis[from].name, apis[to].name);
                check_golden(path, g.data, g.len);
                /* Idempotence through the upstream's own decoder. */
                mg_ir_arena_t *a2 = mg_ir_arena_new();
                mg_ir_request_t ir2;
                if (mg_ir_decode_request(apis[to].api, enc, a2, &ir2, err, sizeof err) != 0) {
                    fprintf(stderr, "  %s: the upstream decoder refuses the encoded request: %s\n", label, err);
                    mg_test_failures++;
                } else {
                    cJSON *enc2 = mg_ir_encode_request(apis[to].api, &ir2, &o, err, sizeof err);
                    char *s2 = enc2 ? cJSON_Print(enc2) : NULL;
                    if (!s2 || strcmp(s, s2) != 0) {
                        fprintf(stderr, "  %s: re-encoding is not idempotent:\n%s\n--- vs ---\n%s\n", label, s,
                                s2 ? s2 : err);
                        mg_test_failures++;
                    }
                    cJSON_free(s2);
                    cJSON_Delete(enc2);
                }
                mg_ir_arena_free(a2);
                cJSON_free(s);
                mg_buf_free(&g);
                cJSON_Delete(enc);
            }
            cases++;
        }
        mg_ir_arena_free(a);
        cJSON_Delete(body);
        free(text);
    }
    MG_CHECK(cases >= 12);
    free_list(files);
}

/* ---- whole responses ---- */

MG_TEST(responses_all_pairs_match_goldens)
{
    char **files = list_inputs(FIX "/responses");
    int cases = 0;
    for (size_t f = 0; files[f]; f++) {
        char cas[128], path[1024];
        int from;
        if (!split_name(files[f], cas, sizeof cas, &from)) continue;
        snprintf(path, sizeof path, FIX "/responses/%s", files[f]);
        size_t len = 0;
        char *text = mg_test_read_file(path, &len);
        cJSON *body = cJSON_ParseWithLength(text, len);
        mg_ir_arena_t *a = mg_ir_arena_new();
        mg_ir_response_t up;
        char err[256] = "";
        const mg_ir_codec_t *uc = mg_ir_codec(apis[from].api);
        if (!body || uc->decode_response(body, a, &(mg_ir_decode_opts_t){0}, &up, err, sizeof err) != 0) {
            fprintf(stderr, "  %s: decode failed: %s\n", files[f], err);
            mg_test_failures++;
        } else {
            for (int to = 0; to < 3; to++) {
                for (int strip = 0; strip <= (has_reasoning_case(cas) ? 1 : 0); strip++) {
                    char label[256];
                    snprintf(label, sizeof label, "%s-to-%s%s", files[f], apis[to].name, strip ? ".strip" : "");
                    mg_ir_output_opts_t o = {.created = CREATED, .strip_reasoning = strip};
                    cJSON *out = mg_ir_translate_response(apis[from].api, apis[to].api, text, len, NULL, &o, err, sizeof err);
                    if (!out) {
                        fprintf(stderr, "  %s: translate failed: %s\n", label, err);
                        mg_test_failures++;
                        continue;
                    }
                    char *s = cJSON_Print(out);
                    mg_buf_t g = {0};
                    mg_buf_puts(&g, s);
                    mg_buf_puts(&g, "\n");
                    snprintf(path, sizeof path, FIX "/responses/%s.%s-to-%s%s.json", cas, apis[from].name,
                             apis[to].name, strip ? ".strip" : "");
                    check_golden(path, g.data, g.len);
                    /* Read back with the client's own decoder. */
                    mg_ir_response_t cl;
                    mg_ir_decode_opts_t nothink = {.no_think_tags = true};
                    if (mg_ir_codec(apis[to].api)->decode_response(out, a, &nothink, &cl, err, sizeof err) != 0) {
                        fprintf(stderr, "  %s: the client decoder refuses it: %s\n", label, err);
                        mg_test_failures++;
                    } else {
                        compare_answers(label, &up, &cl, strip);
                    }
                    cJSON_free(s);
                    mg_buf_free(&g);
                    cJSON_Delete(out);
                }
            }
            cases++;
        }
        mg_ir_arena_free(a);
        cJSON_Delete(body);
        free(text);
    }
    MG_CHECK(cases >= 13);
    free_list(files);
}

/* ---- streams ---- */


MG_TEST(streams_all_pairs_match_goldens_and_round_trip)
{
    char **files = list_inputs(FIX "/streams");
    int cases = 0;
    for (size_t f = 0; files[f]; f++) {
        char cas[128], path[1024];
        int from;
        if (!split_name(files[f], cas, sizeof cas, &from)) continue;
        snprintf(path, sizeof path, FIX "/streams/%s", files[f]);
        size_t len = 0;
        char *text = mg_test_read_file(path, &len);
        for (int to = 0; to < 3; to++) {
            for (int strip = 0; strip <= (has_reasoning_case(cas) ? 1 : 0); strip++) {
                char label[256];
                snprintf(label, sizeof label, "%s-to-%s%s", files[f], apis[to].name, strip ? ".strip" : "");
                mg_ir_output_opts_t o = {.created = CREATED, .strip_reasoning = strip, .include_usage = true};
                pipe_ctx_t up = {.strip = strip};
                up.enc = mg_ir_encoder_new(apis[to].api, &o);
                run_pipe(&up, apis[from].api, text, len, 7, false);
                if (!mg_ir_encoder_done(up.enc)) {
                    fprintf(stderr, "  %s: the client stream was not terminated\n", label);
                    mg_test_failures++;
                }
                snprintf(path, sizeof path, FIX "/streams/%s.%s-to-%s%s.sse", cas, apis[from].name, apis[to].name,
                         strip ? ".strip" : "");
                check_golden(path, up.out.data ? up.out.data : "", up.out.len);

                /* What the client reads back, with the client's own decoder. */
                pipe_ctx_t cl = {0};
                run_pipe(&cl, apis[to].api, up.out.data ? up.out.data : "", up.out.len, 5, true);
                mg_ir_arena_t *a = mg_ir_arena_new();
                mg_ir_response_t r1, r2;
                mg_ir_collector_response(&up.col, a, &r1);
                mg_ir_collector_response(&cl.col, a, &r2);
                if (up.col.failed != cl.col.failed || up.col.ended != cl.col.ended) {
                    fprintf(stderr, "  %s: client saw failed=%d ended=%d, want failed=%d ended=%d\n", label,
                            cl.col.failed, cl.col.ended, up.col.failed, up.col.ended);
                    mg_test_failures++;
                } else if (up.col.failed && strcmp(up.col.error.message, cl.col.error.message) != 0) {
                    fprintf(stderr, "  %s: error \"%s\", want \"%s\"\n", label, cl.col.error.message,
                            up.col.error.message);
                    mg_test_failures++;
                }
                compare_answers(label, &r1, &r2, false /* strip already applied to up.col */);
                mg_ir_arena_free(a);
                mg_ir_collector_free(&up.col);
                mg_ir_collector_free(&cl.col);
                mg_ir_encoder_free(up.enc);
                mg_buf_free(&up.out);
                mg_buf_free(&cl.out);
            }
        }
        cases++;
        free(text);
    }
    MG_CHECK(cases >= 20);
    free_list(files);
}

/* Every codec implements the whole interface (STYLE 19: providers with the same functions). */
MG_TEST(every_codec_is_complete)
{
    for (int i = 0; i < 3; i++) {
        const mg_ir_codec_t *c = mg_ir_codec(apis[i].api);
        MG_CHECK(c->api == apis[i].api);
        MG_CHECK_STR(c->name, mg_api_name(apis[i].api));
        MG_CHECK(c->decode_request && c->encode_request && c->decode_response && c->encode_response &&
                 c->encode_error && c->decoder_new && c->decoder_feed && c->decoder_finish && c->decoder_free &&
                 c->encoder_new && c->encoder_push && c->encoder_done && c->encoder_free);
    }
}

MG_TEST_MAIN()

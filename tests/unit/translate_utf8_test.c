/* Translated output is valid UTF-8 whatever bytes the other side sent. cJSON neither checks UTF-8
 * when it parses nor when it prints, so an upstream's (or a client's) bytes that are not UTF-8
 * used to reach the other side as they came, in an invalid JSON text. Now each such byte becomes
 * U+FFFD, one per byte, as the gateway's own writer (mg_buf_json_strn) has it.
 *
 * For each kind of bad byte sequence (cut, overlong, surrogate, past U+10FFFF or F4, a lone
 * continuation byte, a character cut between two stream deltas), over every client × upstream
 * pair: whole answers (the decoder, the client's encoder, mg_ir_print_json as the router prints
 * them), streams (the decoder and the client's stream encoder, fed in pieces so that the bad bytes
 * are also cut between two reads) and requests re-encoded for another API. Each output must be
 * valid UTF-8, and the client's own decoder must read back U+FFFD where the bad bytes were. The
 * inputs are the translation fixtures (tests/fixtures/translate/) with bad bytes put in. */
#include "ir.h"
#include "mg_test.h"
#include "translate_pipe.h"
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define R "\xEF\xBF\xBD" /* U+FFFD */

/* in: bytes an upstream or client sent inside a JSON string (no quote or backslash); want: what a
 * client must read back. No hex digit follows a hex escape (it would be read as part of it). */
static const struct {
    const char *what, *in, *want;
} cases[] = {
    {"valid", "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80",
     "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"},
    {"cut 3-byte at the end", "caf\xE2\x82", "caf" R R},
    {"cut 3-byte before ASCII", "a\xE2\x82 z", "a" R R " z"},
    {"cut 4-byte", "x\xF0\x9F\x98y", "x" R R R "y"},
    {"overlong 2-byte", "<\xC0\xAF>", "<" R R ">"},
    {"overlong 3-byte", "<\xE0\x80\xAF>", "<" R R R ">"},
    {"overlong 4-byte", "<\xF0\x80\x80\xAF>", "<" R R R R ">"},
    {"surrogate", "<\xED\xA0\x80>", "<" R R R ">"},
    {"past U+10FFFF", "<\xF4\x90\x80\x80>", "<" R R R R ">"},
    {"F5 lead byte", "<\xF5\x80\x80\x80>", "<" R R R R ">"},
    {"FF", "<\xFF>", "<" R ">"},
    {"lone continuation", "a\x80z\xBF", "a" R "z" R},
    {"valid after bad", "\x80\xC3\xA9", R "\xC3\xA9"},
};

static char *read_fixture(const char *rel)
{
    char path[1024];
    size_t n;
    snprintf(path, sizeof path, FIX "/%s", rel);
    char *s = mg_test_read_file(path, &n);
    if (!s) {
        fprintf(stderr, "  cannot read %s\n", path);
        abort();
    }
    return s;
}

/* s with every occurrence of each from[i] replaced by to[i] (in one left-to-right pass). */
static char *subst(const char *s, const char *const *from, const char *const *to, size_t n)
{
    mg_buf_t b = {0};
    mg_buf_puts(&b, "");
    while (*s) {
        size_t i;
        for (i = 0; i < n; i++)
            if (strncmp(s, from[i], strlen(from[i])) == 0) break;
        if (i < n) {
            mg_buf_puts(&b, to[i]);
            s += strlen(from[i]);
        } else {
            mg_buf_append(&b, s++, 1);
        }
    }
    return mg_buf_steal(&b);
}

static bool valid_utf8(const char *s, size_t n)
{
    return mg_utf8_valid_len(s, n) == n;
}

#define CHECK_VALID(label, s, n)                                                                   \
    do {                                                                                           \
        if (!valid_utf8((s), (n))) {                                                               \
            fprintf(stderr, "  %s:%d: %s: output is not valid UTF-8\n", __FILE__, __LINE__,        \
                    label);                                                                        \
            mg_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_TEXT(label, got, want)                                                               \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        if (!g_ || strcmp(g_, w_) != 0) {                                                          \
            fprintf(stderr, "  %s:%d: %s: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, label,   \
                    g_ ? g_ : "(null)", w_);                                                       \
            mg_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

/* ---- the printer itself ---- */

MG_TEST(print_json_repairs_and_leaves_valid_text_as_cjson_prints_it)
{
    for (size_t c = 0; c < MG_ARRAY_LEN(cases); c++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", cases[c].in);
        cJSON_AddStringToObject(j, cases[c].in, "key"); /* member names too */
        size_t n = 0;
        char *got = mg_ir_print_json(j, &n);
        char *plain = cJSON_PrintUnformatted(j);
        MG_CHECK_INT(n, strlen(got));
        CHECK_VALID(cases[c].what, got, n);
        if (c == 0) MG_CHECK_STR(got, plain); /* well-formed: byte for byte what cJSON prints */
        cJSON *back = cJSON_ParseWithLength(got, n);
        CHECK_TEXT(cases[c].what,
                   cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(back, "text")),
                   cases[c].want);
        MG_CHECK(back && back->child && back->child->next &&
                 strcmp(back->child->next->string, cases[c].want) == 0);
        cJSON_Delete(back);
        free(got);
        cJSON_free(plain);
        cJSON_Delete(j);
    }
}

/* ---- whole answers ---- */

MG_TEST(whole_answers_reach_every_client_as_valid_utf8)
{
    for (size_t c = 0; c < MG_ARRAY_LEN(cases); c++) {
        for (int from = 0; from < 3; from++) {
            char rel[128];
            snprintf(rel, sizeof rel, "responses/tools.%s.json", apis[from].name);
            char *fixture = read_fixture(rel);
            char model[64];
            snprintf(model, sizeof model, "up-model%s", cases[c].in);
            const char *f[] = {"Let me check.", "Paris", "up-model"},
                       *t[] = {cases[c].in, cases[c].in, model};
            char *body = subst(fixture, f, t, 3);
            for (int to = 0; to < 3; to++) {
                char label[256];
                snprintf(label, sizeof label, "%s: %s answer to a %s client", cases[c].what,
                         apis[from].name, apis[to].name);
                char err[200] = "";
                mg_ir_output_opts_t o = {.created = 1};
                cJSON *out = mg_ir_translate_response(apis[from].api, apis[to].api, body,
                                                      strlen(body), NULL, &o, err, sizeof err);
                if (!out) {
                    fprintf(stderr, "  %s: %s\n", label, err);
                    mg_test_failures++;
                    continue;
                }
                size_t n;
                char *txt = mg_ir_print_json(out, &n);
                cJSON_Delete(out);
                CHECK_VALID(label, txt, n);
                /* What the client's own decoder reads back. */
                mg_ir_arena_t *a = mg_ir_arena_new();
                cJSON *back = mg_ir_parse_json(a, txt, n, NULL);
                mg_ir_response_t r;
                if (!back || mg_ir_codec(apis[to].api)
                                     ->decode_response(back, a, NULL, &r, err, sizeof err) != 0) {
                    fprintf(stderr, "  %s: the client cannot read it back: %s\n", label, err);
                    mg_test_failures++;
                } else {
                    char *text = concat(&r, MG_IR_PART_TEXT);
                    CHECK_TEXT(label, text, cases[c].want);
                    free(text);
                    char want_model[64], want_args[128];
                    snprintf(want_model, sizeof want_model, "up-model%s", cases[c].want);
                    CHECK_TEXT(label, r.model, want_model);
                    snprintf(want_args, sizeof want_args, "{\"city\":\"%s\"}", cases[c].want);
                    const char *args = NULL;
                    for (size_t i = 0; i < r.n_parts; i++)
                        if (r.parts[i].type == MG_IR_PART_TOOL_CALL) args = r.parts[i].arguments;
                    CHECK_TEXT(label, args, want_args);
                }
                mg_ir_arena_free(a);
                free(txt);
            }
            free(body);
            free(fixture);
        }
    }
}

/* ---- streams ---- */


typedef struct {
    const char *name;    /* an event's name, or NULL for every event */
    const char *path[8]; /* NULL-terminated */
    mg_buf_t got;        /* the string at path in each such event, joined */
} find_t;

static int on_find(void *ud, const mg_sse_event_t *ev)
{
    find_t *f = ud;
    if (f->name &&
        (ev->type_len != strlen(f->name) || memcmp(ev->type, f->name, ev->type_len) != 0))
        return 0;
    cJSON *j = cJSON_ParseWithLength(ev->data, ev->data_len);
    const cJSON *v = j;
    for (int i = 0; v && f->path[i]; i++)
        v = f->path[i][0] == '#' ? cJSON_GetArrayItem(v, atoi(f->path[i] + 1))
                                 : cJSON_GetObjectItemCaseSensitive(v, f->path[i]);
    if (cJSON_IsString(v)) {
        mg_buf_puts(&f->got, v->valuestring);
    }
    cJSON_Delete(j);
    return 0;
}

/* The strings at path in the client's events named name, joined ("" when none). Caller frees. */
static char *find_in_stream(const mg_buf_t *out, const char *name, const char *const *path)
{
    find_t f = {.name = name};
    for (int i = 0; path[i] && i < 7; i++)
        f.path[i] = path[i];
    mg_buf_puts(&f.got, "");
    mg_sse_parser_t sp;
    mg_sse_init(&sp, 0);
    mg_sse_feed(&sp, out->data ? out->data : "", out->len, on_find, &f);
    mg_sse_free(&sp);
    return mg_buf_steal(&f.got);
}

/* One upstream stream (the text fixture with d1 and d2 as its two text deltas and bad bytes in its
 * model name) to every client, fed whole and in pieces of 1, 2, 3 and 7 bytes. */
static void check_stream(const char *what, const char *d1, const char *d2, const char *want_text,
                         const char *bad, const char *want_bad)
{
    for (int from = 0; from < 3; from++) {
        char rel[128], joined[128], model[64], want_model[64];
        snprintf(rel, sizeof rel, "streams/text.%s.sse", apis[from].name);
        snprintf(joined, sizeof joined, "%s%s", d1, d2);
        snprintf(model, sizeof model, "up-model%s", bad);
        snprintf(want_model, sizeof want_model, "up-model%s", want_bad);
        char *fixture = read_fixture(rel);
        /* Responses repeats the whole text in its .done events: the deltas joined. */
        const char *f[] = {"\"Hello there!\"", "\"Hel\"", "\"lo there!\"", "up-model"};
        char q1[64], q2[64], qj[130];
        snprintf(q1, sizeof q1, "\"%s\"", d1);
        snprintf(q2, sizeof q2, "\"%s\"", d2);
        snprintf(qj, sizeof qj, "\"%s\"", joined);
        const char *t[] = {qj, q1, q2, model};
        char *up = subst(fixture, f, t, 4);
        size_t up_len = strlen(up);
        static const size_t pieces[] = {0, 1, 2, 3, 7};
        for (int to = 0; to < 3; to++) {
            for (size_t k = 0; k < MG_ARRAY_LEN(pieces); k++) {
                char label[256];
                snprintf(label, sizeof label, "%s: %s stream to a %s client, pieces of %zu", what,
                         apis[from].name, apis[to].name, pieces[k]);
                mg_ir_output_opts_t o = {.created = 1, .include_usage = true};
                pipe_ctx_t p = {0};
                p.enc = mg_ir_encoder_new(apis[to].api, &o);
                run_pipe(&p, apis[from].api, up, up_len, pieces[k] ? pieces[k] : up_len, true);
                MG_CHECK(mg_ir_encoder_done(p.enc));
                CHECK_VALID(label, p.out.data, p.out.len);
                /* The client's own decoder reads the deltas back. */
                pipe_ctx_t cl = {0};
                run_pipe(&cl, apis[to].api, p.out.data, p.out.len, p.out.len, true);
                mg_ir_arena_t *a = mg_ir_arena_new();
                mg_ir_response_t r;
                mg_ir_collector_response(&cl.col, a, &r);
                char *text = concat(&r, MG_IR_PART_TEXT);
                CHECK_TEXT(label, text, want_text);
                free(text);
                /* The model name, where the client's API shows it in a stream. */
                static const char *const chat_model[] = {"model", NULL};
                static const char *const resp_model[] = {"response", "model", NULL};
                static const char *const ant_model[] = {"message", "model", NULL};
                const char *const *mp = to == 0 ? chat_model : to == 1 ? resp_model : ant_model;
                const char *first = to == 0 ? NULL : to == 1 ? "response.created" : "message_start";
                char *m = find_in_stream(&p.out, first, mp);
                if (to == 0 && strlen(m) > strlen(want_model))
                    m[strlen(want_model)] = '\0'; /* each chunk names it */
                CHECK_TEXT(label, m, want_model);
                free(m);
                if (to == 1) {
                    /* The whole text Responses repeats says what the deltas said. */
                    static const char *const done_text[] = {"text", NULL};
                    static const char *const completed_text[] = {
                        "response", "output", "#0", "content", "#0", "text", NULL};
                    char *d = find_in_stream(&p.out, "response.output_text.done", done_text);
                    char *c = find_in_stream(&p.out, "response.completed", completed_text);
                    CHECK_TEXT(label, d, want_text);
                    CHECK_TEXT(label, c, want_text);
                    free(d);
                    free(c);
                }
                mg_ir_arena_free(a);
                mg_ir_collector_free(&p.col);
                mg_ir_collector_free(&cl.col);
                mg_ir_encoder_free(p.enc);
                mg_buf_free(&p.out);
                mg_buf_free(&cl.out);
            }
        }
        free(up);
        free(fixture);
    }
}

MG_TEST(streams_reach_every_client_as_valid_utf8)
{
    for (size_t c = 0; c < MG_ARRAY_LEN(cases); c++) {
        char d2[64], want[128];
        snprintf(d2, sizeof d2, "|%s", cases[c].in);
        snprintf(want, sizeof want, "%s|%s", cases[c].want, cases[c].want);
        check_stream(cases[c].what, cases[c].in, d2, want, cases[c].in, cases[c].want);
    }
}

MG_TEST(a_character_cut_between_two_deltas_is_two_replacements_everywhere)
{
    /* "café!" with its é (C3 A9) cut between two deltas: each delta is a JSON text of its own,
     * and each half alone is not UTF-8. Every client reads U+FFFD for each byte, in the deltas
     * and in the whole text Responses repeats at the end alike. */
    check_stream("é cut between deltas", "caf\xC3", "\xA9!", "caf" R R "!", "", "");
    /* A 4-byte character cut 1 + 3. */
    check_stream("emoji cut between deltas", "a\xF0", "\x9F\x98\x80z", "a" R R R R "z", "", "");
}

/* ---- requests ---- */

MG_TEST(requests_re_encoded_for_another_api_are_valid_utf8)
{
    /* "@" is where the bytes go: a system prompt and a user message, in each API's words. */
    static const char *const tmpl[3] = {
        "{\"model\":\"moon\",\"max_tokens\":16,\"messages\":["
        "{\"role\":\"system\",\"content\":\"S@\"},{\"role\":\"user\",\"content\":\"U@\"}]}",
        "{\"model\":\"moon\",\"max_output_tokens\":16,\"instructions\":\"S@\","
        "\"input\":[{\"role\":\"user\",\"content\":\"U@\"}]}",
        "{\"model\":\"moon\",\"max_tokens\":16,\"system\":\"S@\","
        "\"messages\":[{\"role\":\"user\",\"content\":\"U@\"}]}",
    };
    for (size_t c = 0; c < MG_ARRAY_LEN(cases); c++) {
        for (int from = 0; from < 3; from++) {
            const char *at[] = {"@"}, *in[] = {cases[c].in};
            char *body = subst(tmpl[from], at, in, 1);
            for (int to = 0; to < 3; to++) {
                char label[256], err[200] = "";
                snprintf(label, sizeof label, "%s: %s request to a %s upstream", cases[c].what,
                         apis[from].name, apis[to].name);
                mg_ir_arena_t *a = mg_ir_arena_new();
                cJSON *j = mg_ir_parse_json(a, body, strlen(body), NULL);
                mg_ir_request_t ir;
                MG_CHECK(j &&
                         mg_ir_decode_request(apis[from].api, j, a, &ir, err, sizeof err) == 0);
                cJSON *enc = mg_ir_encode_request(
                    apis[to].api, &ir, &(mg_ir_request_opts_t){.model = "up"}, err, sizeof err);
                MG_CHECK(enc != NULL);
                size_t n;
                char *txt = mg_ir_print_json(enc, &n);
                cJSON_Delete(enc);
                CHECK_VALID(label, txt, n);
                /* What the upstream's decoder reads. */
                cJSON *back = mg_ir_parse_json(a, txt, n, NULL);
                mg_ir_request_t r2;
                MG_CHECK(back &&
                         mg_ir_decode_request(apis[to].api, back, a, &r2, err, sizeof err) == 0);
                char ws[64], wu[64];
                snprintf(ws, sizeof ws, "S%s", cases[c].want);
                snprintf(wu, sizeof wu, "U%s", cases[c].want);
                CHECK_TEXT(label, r2.n_system ? r2.system[0].text : NULL, ws);
                CHECK_TEXT(label,
                           r2.n_messages && r2.messages[0].n_parts ? r2.messages[0].parts[0].text
                                                                   : NULL,
                           wu);
                free(txt);
                mg_ir_arena_free(a);
            }
            free(body);
        }
    }
}

MG_TEST_MAIN()

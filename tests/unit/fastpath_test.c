/* Unit tests for the per-request fast paths: each must say exactly what the slower code it stands
 * in for says. mg_json_strict / mg_json_strict_members against cJSON (hand-picked edge cases, the
 * fuzz corpora and fixtures, and random mutations of them), mg_json_member_span's string skipping
 * against a byte-by-byte reference, mg_ir_parse_json against cJSON_Parse, and the mg_buf helpers
 * (printf, integers, JSON strings) against printf and a reference escaper. */
#include "ir.h"
#include "jsonutil.h"
#include "mg_test.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- mg_json_strict / mg_json_strict_members vs cJSON ---- */

static char type_byte(const cJSON *j)
{
    if (cJSON_IsObject(j)) return '{';
    if (cJSON_IsArray(j)) return '[';
    if (cJSON_IsString(j)) return '"';
    if (cJSON_IsTrue(j)) return 't';
    if (cJSON_IsFalse(j)) return 'f';
    if (cJSON_IsNull(j)) return 'n';
    return '0';
}

static char *print_span(const char *t, size_t vs, size_t ve)
{
    cJSON *v = cJSON_ParseWithLength(t + vs, ve - vs);
    char *p = v ? cJSON_PrintUnformatted(v) : NULL;
    cJSON_Delete(v);
    return p;
}

static int n_strict, n_checked;

/* When strict says yes, cJSON must read the text, with the same root type and, for an object, the
 * same first member for every key it has (and none for a key it lacks). */
static void check_against_cjson(const char *t, size_t n)
{
    char root = 0;
    bool strict = mg_json_strict(t, n, &root);
    cJSON *j = cJSON_ParseWithLength(t, n);
    n_checked++;
    if (strict) {
        n_strict++;
        MG_CHECK(j != NULL);
        if (!j) {
            fprintf(stderr, "  strict but not cJSON: %.*s\n", (int)MG_MIN(n, 200), t);
            return;
        }
        char want = type_byte(j);
        MG_CHECK_INT(root == '-' || (root >= '0' && root <= '9') ? '0' : root, want);
        if (cJSON_IsObject(j)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, j)
            {
                const char *keys[2] = {c->string, "no such key \x01"};
                mg_json_span_t sp[2];
                MG_CHECK(mg_json_strict_members(t, n, NULL, keys, 2, sp));
                MG_CHECK(sp[0].found && !sp[1].found);
                const cJSON *first = cJSON_GetObjectItemCaseSensitive(j, c->string);
                char *a = cJSON_PrintUnformatted(first), *b = print_span(t, sp[0].start, sp[0].end);
                MG_CHECK_STR(b, a);
                free(a);
                free(b);
            }
        }
    }
    cJSON_Delete(j);
}

MG_TEST(strict_edge_cases)
{
    static const char *const yes[] = {
        "{}",
        "[]",
        " {\"a\":1} ",
        "\t[1,2,{\"b\":[true,false,null]}]\r\n",
        "\"x\"",
        "0",
        "-0",
        "-1.5e+10",
        "1E-2",
        "{\"a\":\"\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\"}",
        "{\"a\":1,\"a\":2}",
        "{\"s\":\"\xc3\xa9\"}",
        "{\"error\":null,\"choices\":[]}",
        "12345678901234567890123456789012345678901234567890123456789",
    };
    static const char *const no[] = {
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "01",
        "+1",
        "1.",
        ".5",
        "1e",
        "-",
        "nul",
        "truex",
        "{\"a\" 1}",
        "{\"a\":1}x",
        "\xef\xbb\xbf{}",
        "\x0b{}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"\\uZZZZ\"}",
        "{\"k\\u0041\":1}",
        "{\"a\":\"tab\there\"}",
        "1234567890123456789012345678901234567890123456789012345678901",
        "[1 2]",
        "{1:2}",
        "\"abc",
        "{\"a\":1}{",
        "[\"a\\\"]",
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(yes); i++) {
        MG_CHECK(mg_json_strict(yes[i], strlen(yes[i]), NULL));
        check_against_cjson(yes[i], strlen(yes[i]));
    }
    for (size_t i = 0; i < MG_ARRAY_LEN(no); i++) {
        if (mg_json_strict(no[i], strlen(no[i]), NULL))
            fprintf(stderr, "  unexpectedly strict: %s\n", no[i]);
        MG_CHECK(!mg_json_strict(no[i], strlen(no[i]), NULL));
    }
    MG_CHECK(!mg_json_strict(NULL, 0, NULL));
    /* Nesting: fine well inside cJSON's limit, "not sure" beyond ours. */
    char deep[2 * 300 + 1];
    for (int d = 0; d < 300; d++)
        deep[d] = '[', deep[600 - 1 - d] = ']';
    deep[600] = '\0';
    MG_CHECK(!mg_json_strict(deep, 600, NULL));
    MG_CHECK(mg_json_strict(deep + 100, 400, NULL));
    /* First of duplicates, as cJSON; nested members are not top-level ones. */
    const char *dup = "{\"b\":{\"a\":3,\"c\":4},\"a\":1,\"a\":2}";
    const char *keys[3] = {"a", "c", "b"};
    mg_json_span_t sp[3];
    char root = 0;
    MG_CHECK(mg_json_strict_members(dup, strlen(dup), &root, keys, 3, sp));
    MG_CHECK(root == '{');
    MG_CHECK(sp[0].found && sp[0].end - sp[0].start == 1 && dup[sp[0].start] == '1');
    MG_CHECK(!sp[1].found);
    MG_CHECK(sp[2].found && dup[sp[2].start] == '{' && dup[sp[2].end - 1] == '}');
    size_t vs, ve;
    MG_CHECK(mg_json_member_span(dup, strlen(dup), "a", &vs, &ve)); /* the same one */
    MG_CHECK(vs == sp[0].start && ve == sp[0].end);
    /* An array root has no members. */
    MG_CHECK(mg_json_strict_members("[{\"a\":1}]", 9, &root, keys, 1, sp) && root == '[' &&
             !sp[0].found);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Each file as it is, then mutated: bytes replaced by JSON-significant ones, deleted, cut. */
static void check_file_and_mutations(const char *t, size_t n)
{
    static const char sig[] = "{}[]\",:\\/u0123456789-+.eEtrfalsn \t\n\x01\x7f\xc3";
    check_against_cjson(t, n);
    char *m = mg_xmalloc(n + 1);
    for (int k = 0; k < 200 && n; k++) {
        memcpy(m, t, n);
        size_t len = n;
        int edits = 1 + (int)(next_rand() % 3);
        for (int e = 0; e < edits && len; e++) {
            size_t at = (size_t)(next_rand() % len);
            switch (next_rand() % 3) {
            case 0:
                m[at] = sig[next_rand() % (sizeof sig - 1)];
                break;
            case 1:
                memmove(m + at, m + at + 1, len - at - 1), len--;
                break;
            default:
                len = at;
                break;
            }
        }
        check_against_cjson(m, len);
    }
    free(m);
}

static void walk(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "  cannot open %s\n", dir);
        mg_test_failures++;
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t n;
        char *t = mg_test_read_file(path, &n);
        if (t) check_file_and_mutations(t, n);
        free(t);
    }
    closedir(d);
}

MG_TEST(strict_agrees_with_cjson_on_corpora)
{
    n_strict = n_checked = 0;
    walk(MG_SOURCE_DIR "/tests/fuzz/corpus/decode_request");
    walk(MG_SOURCE_DIR "/tests/fixtures/translate/responses");
    walk(MG_SOURCE_DIR "/tests/fixtures/translate/requests");
    /* Both outcomes must have been exercised. */
    MG_CHECK(n_strict > 100);
    MG_CHECK(n_checked - n_strict > 100);
}

/* ---- mg_json_member_span: string skipping vs the byte-by-byte reference ---- */

static size_t ref_skip_string(const char *t, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (t[i] == '\\')
            i++;
        else if (t[i] == '"')
            return i + 1;
    }
    return n;
}

/* A one-member object whose value is a string: where the reference says the string ends decides
 * whether a second member after it is found, and where. */
MG_TEST(member_span_string_skipping)
{
    static const char alpha[] = "ab\\\"";
    char body[64];
    for (int k = 0; k < 20000; k++) {
        size_t len = next_rand() % 12;
        char s[16];
        for (size_t i = 0; i < len; i++)
            s[i] = alpha[next_rand() % 4];
        int n = snprintf(body, sizeof body, "{\"a\":\"%.*s\",\"k\":1}", (int)len, s);
        size_t end = ref_skip_string(body, 5, (size_t)n), vs, ve;
        bool want = end < (size_t)n && strncmp(body + end, ",\"k\":1}", 7) == 0;
        bool got = mg_json_member_span(body, (size_t)n, "k", &vs, &ve);
        if (want != got) fprintf(stderr, "  %s: want %d\n", body, want);
        MG_CHECK(want == got);
        if (want && got) MG_CHECK_INT(vs, end + 5);
    }
}

/* ---- mg_ir_parse_json: the same tree as cJSON, in the arena ---- */

MG_TEST(arena_parse_matches_cjson)
{
    static const char *const texts[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo\"}],\"n\":1."
        "5e3}",
        "[1,2,3]",
        "\"x\"",
        "{\"a\":",
        "",
        "  {\"k\":[{},{\"x\":null}]}  trailing",
    };
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < MG_ARRAY_LEN(texts); i++) {
            mg_ir_arena_t *a = mg_ir_arena_new();
            const char *end1 = NULL, *end2 = NULL;
            size_t n = strlen(texts[i]);
            cJSON *x = mg_ir_parse_json(a, texts[i], n, &end1);
            cJSON *y = cJSON_ParseWithLengthOpts(texts[i], n, &end2, 0);
            MG_CHECK((x == NULL) == (y == NULL));
            if (x && y) {
                char *p = cJSON_PrintUnformatted(x), *q = cJSON_PrintUnformatted(y);
                MG_CHECK_STR(p, q);
                free(p); /* printed outside a parse: plain malloc */
                free(q);
                MG_CHECK(end1 == end2);
            }
            cJSON_Delete(y);
            mg_ir_arena_free(a);
        }
    }
    /* A tree built outside a parse still goes through cJSON_Delete as before. */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "k", "v");
    cJSON_Delete(o);
}

/* ---- mg_buf helpers ---- */

/* The length of the well-formed UTF-8 sequence at s, by RFC 3629's table of byte ranges, or 0. */
static size_t ref_utf8_len(const unsigned char *s, size_t n)
{
    static const struct {
        unsigned char lo0, hi0, lo1, hi1;
        size_t len;
    } t[] = {{0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3}, {0xE1, 0xEC, 0x80, 0xBF, 3},
             {0xED, 0xED, 0x80, 0x9F, 3}, {0xEE, 0xEF, 0x80, 0xBF, 3}, {0xF0, 0xF0, 0x90, 0xBF, 4},
             {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4}};
    for (size_t r = 0; r < MG_ARRAY_LEN(t); r++) {
        if (s[0] < t[r].lo0 || s[0] > t[r].hi0) continue;
        if (n < t[r].len || s[1] < t[r].lo1 || s[1] > t[r].hi1) return 0;
        for (size_t k = 2; k < t[r].len; k++)
            if (s[k] < 0x80 || s[k] > 0xBF) return 0;
        return t[r].len;
    }
    return 0;
}

static void ref_json_str(mg_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    mg_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = ref_utf8_len((const unsigned char *)s + i, n - i);
            if (k) {
                mg_buf_append(b, s + i, k);
                i += k - 1;
            } else {
                mg_buf_append(b, "\\ufffd", 6);
            }
        } else if (c == '"')
            mg_buf_append(b, "\\\"", 2);
        else if (c == '\\')
            mg_buf_append(b, "\\\\", 2);
        else if (c == '\n')
            mg_buf_append(b, "\\n", 2);
        else if (c == '\r')
            mg_buf_append(b, "\\r", 2);
        else if (c == '\t')
            mg_buf_append(b, "\\t", 2);
        else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            mg_buf_append(b, esc, 6);
        } else {
            mg_buf_append(b, &s[i], 1);
        }
    }
    mg_buf_append(b, "\"", 1);
}

MG_TEST(buf_json_strn_matches_reference)
{
    for (int k = 0; k < 5000; k++) {
        char s[40];
        size_t n = next_rand() % sizeof s;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = next_rand();
            s[i] = (char)(r % 4 == 0 ? (char)(r >> 8)
                                     : "ab\"\\\n\r\t\x01\x1f\x7f\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80\xed\xa0\xf4\x90"[(r >> 8) % 24]);
        }
        mg_buf_t a = {0}, b = {0};
        mg_buf_puts(&a, "x");
        mg_buf_puts(&b, "x");
        mg_buf_json_strn(&a, s, n);
        ref_json_str(&b, s, n);
        MG_CHECK_INT(a.len, b.len);
        MG_CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0 && a.data[a.len] == '\0');
        mg_buf_free(&a);
        mg_buf_free(&b);
    }
    mg_buf_t c = {0};
    mg_buf_json_str(&c, NULL);
    MG_CHECK_STR(c.data, "null");
    mg_buf_free(&c);
    /* Well-formed UTF-8 passes as is; overlongs, surrogates, values past U+10FFFF, stray and cut
     * bytes become U+FFFD, one per byte. */
    static const struct {
        const char *in, *want;
    } cases[] = {{"\xe2\x82\xac \xf0\x9f\x98\x80", "\"\xe2\x82\xac \xf0\x9f\x98\x80\""},
                 {"\xc0\xaf", "\"\\ufffd\\ufffd\""},
                 {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},
                 {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
                 {"a\xff" "b", "\"a\\ufffdb\""},
                 {"\xe2\x82", "\"\\ufffd\\ufffd\""}};
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        mg_buf_t d = {0};
        mg_buf_json_str(&d, cases[i].in);
        MG_CHECK_STR(d.data, cases[i].want);
        mg_buf_free(&d);
    }
}

/* The longest well-formed prefix, by the reference table. */
static size_t ref_valid_len(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t k = (unsigned char)s[i] < 0x80 ? 1
                                              : ref_utf8_len((const unsigned char *)s + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

MG_TEST(utf8_valid_len_and_repair_follow_the_json_writer)
{
    for (int k = 0; k < 20000; k++) {
        char s[48];
        size_t n = next_rand() % sizeof s;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = next_rand();
            /* mostly ASCII runs (the eight-byte skip), with every kind of lead and tail byte */
            static const char tails[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                                        "\xed\xa0\xf4\x90\xc0\xbf\xff";
            s[i] = (char)(r % 3   ? "abcdefgh"[(r >> 8) % 8]
                          : r % 2 ? (char)(r >> 8)
                                  : tails[(r >> 8) % 16]);
            if (!s[i]) s[i] = 'z'; /* a C string for cJSON below */
        }
        MG_CHECK_INT(mg_utf8_valid_len(s, n), ref_valid_len(s, n));
        /* The repair puts U+FFFD where mg_buf_json_strn writes \ufffd, and nothing else changes. */
        mg_buf_t json = {0}, raw = {0}, esc = {0};
        mg_buf_json_strn(&json, s, n);
        cJSON *j = cJSON_ParseWithLength(json.data, json.len);
        mg_buf_append_utf8(&raw, s, n);
        MG_CHECK(cJSON_IsString(j) && strlen(j->valuestring) == raw.len &&
                 memcmp(j->valuestring, raw.data, raw.len) == 0);
        MG_CHECK_INT(mg_utf8_valid_len(raw.data, raw.len), raw.len);
        mg_buf_append_json_utf8(&esc, s, n);
        MG_CHECK_INT(mg_utf8_valid_len(esc.data, esc.len), esc.len);
        if (ref_valid_len(s, n) == n)
            MG_CHECK(raw.len == n && esc.len == n && memcmp(esc.data, s, n) == 0);
        cJSON_Delete(j);
        mg_buf_free(&json);
        mg_buf_free(&raw);
        mg_buf_free(&esc);
    }
    static const struct {
        const char *in, *want;
    } cases[] = {{"caf\xe2\x82", "caf\\ufffd\\ufffd"},         /* cut */
                 {"\xc0\xaf", "\\ufffd\\ufffd"},               /* overlong */
                 {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"},     /* surrogate */
                 {"\xf5\x80", "\\ufffd\\ufffd"},               /* past F4 */
                 {"a\x80" "b", "a\\ufffdb"},                  /* lone continuation */
                 {"0123456789\xe2\x82\xac", "0123456789\xe2\x82\xac"}};
    for (size_t i = 0; i < MG_ARRAY_LEN(cases); i++) {
        mg_buf_t b = {0};
        mg_buf_append_json_utf8(&b, cases[i].in, strlen(cases[i].in));
        MG_CHECK_STR(b.data, cases[i].want);
        mg_buf_free(&b);
    }
    MG_CHECK_INT(mg_utf8_valid_len("abcdefghijklmno\x80", 16), 15);
    MG_CHECK_INT(mg_utf8_valid_len("", 0), 0);
}

MG_TEST(buf_integers_match_printf)
{
    const int64_t vals[] = {0,   1,    -1,        9,         10,        99,
                            100, -100, 123456789, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    char want[64];
    for (size_t i = 0; i < MG_ARRAY_LEN(vals); i++) {
        mg_buf_t b = {0};
        mg_buf_put_i64(&b, vals[i]);
        snprintf(want, sizeof want, "%" PRId64, vals[i]);
        MG_CHECK_STR(b.data, want);
        mg_buf_free(&b);
    }
    for (int k = 0; k < 1000; k++) {
        uint64_t v = next_rand() >> (next_rand() % 64);
        mg_buf_t b = {0};
        mg_buf_put_u64(&b, v);
        mg_buf_put_i64(&b, (int64_t)v);
        snprintf(want, sizeof want, "%" PRIu64 "%" PRId64, v, (int64_t)v);
        MG_CHECK_STR(b.data, want);
        mg_buf_free(&b);
    }
}

MG_TEST(buf_printf_one_and_two_passes)
{
    mg_buf_t b = {0};
    mg_buf_printf(&b, "%s", ""); /* nothing written: no buffer either, as before */
    MG_CHECK(b.data == NULL);
    mg_buf_t ref = {0};
    char line[200];
    for (int i = 0; i < 300; i++) {
        /* Short pieces fit the room already there; every 7th is longer than any room left. */
        int w = i % 7 == 0 ? 150 : 3;
        mg_buf_printf(&b, "[%*d|%s]", w, i, i % 2 ? "odd" : "");
        int n = snprintf(line, sizeof line, "[%*d|%s]", w, i, i % 2 ? "odd" : "");
        mg_buf_append(&ref, line, (size_t)n);
    }
    MG_CHECK_INT(b.len, ref.len);
    MG_CHECK_STR(b.data, ref.data);
    MG_CHECK(strlen(b.data) == b.len);
    mg_buf_free(&b);
    mg_buf_free(&ref);
}

MG_TEST_MAIN()

/* Unit tests for the JSON5 reader (src/json5.c): every construct of the spec, positions of every
 * node, and each error message with its exact line:column. */
#include "json5.h"

#include "mg_test.h"
#include "util.h"

#include <math.h>

static char err[256];

/* Parses text (strlen) and expects success; the caller frees doc. */
static cJSON *parse_ok(mg_json5_doc_t *doc, const char *text)
{
    int rc = mg_json5_parse(text, strlen(text), doc, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  unexpected error for %s: %s\n", text, err);
    MG_CHECK(rc == 0);
    return doc->root;
}

/* Parses text[0..len) and expects failure; returns the message. */
static const char *parse_fail_n(const char *text, size_t len)
{
    mg_json5_doc_t doc;
    int rc = mg_json5_parse(text, len, &doc, err, sizeof err);
    MG_CHECK(rc == -1);
    MG_CHECK(doc.root == NULL && doc.pos == NULL && doc.n_pos == 0);
    if (rc == 0) mg_json5_free(&doc);
    return err;
}

static const char *parse_fail(const char *text)
{
    return parse_fail_n(text, strlen(text));
}

static double num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    MG_CHECK(cJSON_IsNumber(v));
    return v ? v->valuedouble : -12345;
}

static const char *str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    MG_CHECK(cJSON_IsString(v));
    return v ? v->valuestring : NULL;
}

/* Counts nodes and checks that each one has a position. */
static size_t count_with_pos(const mg_json5_doc_t *doc, const cJSON *node)
{
    size_t n = 1;
    mg_json5_pos_t p = mg_json5_pos_of(doc, node);
    MG_CHECK(p.node == node && p.line >= 1 && p.column >= 1 && p.value_line >= 1);
    for (const cJSON *c = node->child; c; c = c->next) n += count_with_pos(doc, c);
    return n;
}

MG_TEST(comments_trailing_commas_and_unquoted_keys)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "// leading comment\n"
                              "{ /* block\n comment */ a: 1, $b_: [1, 2,], _c9: 'x', // tail\n"
                              "  'single': 2, \"double\": 3, caf\xc3\xa9: 4, \\u0061bc: 5, }");
    MG_CHECK(cJSON_IsObject(r));
    MG_CHECK_INT(num(r, "a"), 1);
    MG_CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "$b_")), 2);
    MG_CHECK_STR(str(r, "_c9"), "x");
    MG_CHECK_INT(num(r, "single"), 2);
    MG_CHECK_INT(num(r, "double"), 3);
    MG_CHECK_INT(num(r, "caf\xc3\xa9"), 4);
    MG_CHECK_INT(num(r, "abc"), 5);
    MG_CHECK_INT(cJSON_GetArraySize(r), 7);
    mg_json5_free(&doc);
    MG_CHECK(doc.root == NULL && doc.pos == NULL);
}

MG_TEST(string_escapes)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "{a: '\\'\\\"\\\\\\b\\f\\n\\r\\t\\v', b: \"\\x41\\u00e9\\ud83d\\ude00\", "
                              "c: 'it\\'s \"q\"', d: \"\\a\\/\\%\", e: '', f: \"\\u2028\"}");
    MG_CHECK_STR(str(r, "a"), "'\"\\\b\f\n\r\t\v");
    MG_CHECK_STR(str(r, "b"), "A\xc3\xa9\xf0\x9f\x98\x80");
    MG_CHECK_STR(str(r, "c"), "it's \"q\"");
    MG_CHECK_STR(str(r, "d"), "a/%"); /* NonEscapeCharacter stands for itself */
    MG_CHECK_STR(str(r, "e"), "");
    MG_CHECK_STR(str(r, "f"), "\xe2\x80\xa8");
    mg_json5_free(&doc);
}

MG_TEST(line_continuations_and_raw_separators)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "{a: 'one \\\ntwo', b: \"x\\\r\ny\", c: 'p\\\rq', d: 'l\\\xe2\x80\xa8m',\n"
                              " e: 'raw\xe2\x80\xa8ls\xe2\x80\xa9ps', f: 1}");
    MG_CHECK_STR(str(r, "a"), "one two");
    MG_CHECK_STR(str(r, "b"), "xy");
    MG_CHECK_STR(str(r, "c"), "pq");
    MG_CHECK_STR(str(r, "d"), "lm");
    MG_CHECK_STR(str(r, "e"), "raw\xe2\x80\xa8ls\xe2\x80\xa9ps");
    /* the continuations counted as lines: \n, \r\n, \r, U+2028, then the real \n */
    mg_json5_pos_t p = mg_json5_pos_of(&doc, cJSON_GetObjectItemCaseSensitive(r, "f"));
    MG_CHECK_INT(p.line, 6);
    MG_CHECK_INT(p.column, 18); /* characters: the raw U+2028 and U+2029 in e are one each */
    mg_json5_free(&doc);
}

MG_TEST(numbers)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "{a: 0x1F, b: -0xff, c: +0XA, d: .5, e: 5., f: +1, g: 1e3, h: -1.5E-2, i: 0,"
                              " j: -0, k: 0.25, l: 123456789012, m: 1e999, n: 0xFFFFFFFFFFFF}");
    MG_CHECK(num(r, "a") == 31);
    MG_CHECK(num(r, "b") == -255);
    MG_CHECK(num(r, "c") == 10);
    MG_CHECK(num(r, "d") == 0.5);
    MG_CHECK(num(r, "e") == 5);
    MG_CHECK(num(r, "f") == 1);
    MG_CHECK(num(r, "g") == 1000);
    MG_CHECK(num(r, "h") == -0.015);
    MG_CHECK(num(r, "i") == 0);
    MG_CHECK(num(r, "j") == 0 && signbit(num(r, "j")));
    MG_CHECK(num(r, "k") == 0.25);
    MG_CHECK(num(r, "l") == 123456789012.0);
    MG_CHECK(isinf(num(r, "m")));
    MG_CHECK(num(r, "n") == 281474976710655.0);
    mg_json5_free(&doc);
}

MG_TEST(infinity_and_nan)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "[Infinity, -Infinity, +Infinity, NaN, -NaN, +NaN]");
    double v[6];
    int i = 0;
    for (cJSON *c = r->child; c && i < 6; c = c->next) v[i++] = c->valuedouble;
    MG_CHECK_INT(i, 6);
    MG_CHECK(isinf(v[0]) && v[0] > 0);
    MG_CHECK(isinf(v[1]) && v[1] < 0);
    MG_CHECK(isinf(v[2]) && v[2] > 0);
    MG_CHECK(isnan(v[3]) && isnan(v[4]) && isnan(v[5]));
    mg_json5_free(&doc);
}

MG_TEST(literals_and_scalar_roots)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "[true, false, null, 'x', {}, []]");
    MG_CHECK(cJSON_IsTrue(cJSON_GetArrayItem(r, 0)));
    MG_CHECK(cJSON_IsFalse(cJSON_GetArrayItem(r, 1)));
    MG_CHECK(cJSON_IsNull(cJSON_GetArrayItem(r, 2)));
    MG_CHECK(cJSON_IsObject(cJSON_GetArrayItem(r, 4)) && cJSON_GetArrayItem(r, 4)->child == NULL);
    mg_json5_free(&doc);
    r = parse_ok(&doc, "  42  ");
    MG_CHECK(cJSON_IsNumber(r) && r->valuedouble == 42);
    mg_json5_free(&doc);
    r = parse_ok(&doc, "'just a string'");
    MG_CHECK(cJSON_IsString(r) && !strcmp(r->valuestring, "just a string"));
    mg_json5_free(&doc);
}

MG_TEST(whitespace_kinds)
{
    mg_json5_doc_t doc;
    /* BOM, VT, FF, NBSP, U+2028, U+2029, U+3000, U+FEFF inside, then the value */
    cJSON *r = parse_ok(&doc, "\xef\xbb\xbf\v\f\xc2\xa0\xe2\x80\xa8\xe2\x80\xa9\xe3\x80\x80\xef\xbb\xbf{a:\xc2\xa0 1}");
    MG_CHECK_INT(num(r, "a"), 1);
    mg_json5_pos_t p = mg_json5_pos_of(&doc, r);
    MG_CHECK_INT(p.line, 3); /* U+2028 and U+2029 end lines */
    MG_CHECK_INT(p.column, 3); /* columns count characters: U+3000 and U+FEFF are one each */
    mg_json5_free(&doc);
    /* a BOM takes no column */
    r = parse_ok(&doc, "\xef\xbb\xbf{a: 1}");
    p = mg_json5_pos_of(&doc, r);
    MG_CHECK_INT(p.line, 1);
    MG_CHECK_INT(p.column, 1);
    mg_json5_free(&doc);
}

MG_TEST(positions_of_every_node)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "{\n"
                              "  a: 1,\n"
                              "  \"b\": [true, {c: null}],\r\n"
                              "\tlong_key:\r'v',\n"
                              "}");
    mg_json5_pos_t p = mg_json5_pos_of(&doc, r);
    MG_CHECK(p.node == r);
    MG_CHECK_INT(p.line, 1);
    MG_CHECK_INT(p.column, 1);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(r, "a");
    p = mg_json5_pos_of(&doc, a);
    MG_CHECK_INT(p.line, 2);
    MG_CHECK_INT(p.column, 3); /* the key */
    MG_CHECK_INT(p.value_line, 2);
    MG_CHECK_INT(p.value_column, 6); /* the value */
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "b");
    p = mg_json5_pos_of(&doc, b);
    MG_CHECK_INT(p.column, 3);
    MG_CHECK_INT(p.value_column, 8);
    p = mg_json5_pos_of(&doc, b->child);
    MG_CHECK_INT(p.line, 3);
    MG_CHECK_INT(p.column, 9);
    MG_CHECK_INT(p.value_column, 9);
    const cJSON *c = b->child->next->child;
    p = mg_json5_pos_of(&doc, c);
    MG_CHECK_INT(p.column, 16);
    MG_CHECK_INT(p.value_column, 19);
    p = mg_json5_pos_of(&doc, cJSON_GetObjectItemCaseSensitive(r, "long_key"));
    MG_CHECK_INT(p.line, 4); /* CRLF is one line end, a lone CR another */
    MG_CHECK_INT(p.column, 2);
    MG_CHECK_INT(p.value_line, 5);
    MG_CHECK_INT(p.value_column, 1);
    MG_CHECK_INT(count_with_pos(&doc, r), 7);
    MG_CHECK_INT(doc.n_pos, 7);
    mg_json5_free(&doc);
}

MG_TEST(pos_of_unknown_node)
{
    mg_json5_doc_t doc;
    parse_ok(&doc, "{a: 1}");
    cJSON *other = cJSON_CreateNull();
    mg_json5_pos_t p = mg_json5_pos_of(&doc, other);
    MG_CHECK(p.node == NULL && p.line == 0 && p.column == 0 && p.value_line == 0);
    p = mg_json5_pos_of(&doc, NULL);
    MG_CHECK(p.node == NULL && p.line == 0);
    p = mg_json5_pos_of(NULL, other);
    MG_CHECK(p.node == NULL && p.line == 0);
    cJSON_Delete(other);
    mg_json5_free(&doc);
}

MG_TEST(duplicate_keys_last_wins)
{
    mg_json5_doc_t doc;
    cJSON *r = parse_ok(&doc, "{a: {x: [1, 2]}, b: 2, a: 3}");
    MG_CHECK_INT(cJSON_GetArraySize(r), 2);
    MG_CHECK_INT(num(r, "a"), 3);
    MG_CHECK_INT(num(r, "b"), 2);
    mg_json5_pos_t p = mg_json5_pos_of(&doc, cJSON_GetObjectItemCaseSensitive(r, "a"));
    MG_CHECK_INT(p.column, 24);
    MG_CHECK_INT(p.value_column, 27);
    /* the replaced subtree's positions are gone: root, b, a */
    MG_CHECK_INT(doc.n_pos, 3);
    MG_CHECK_INT(count_with_pos(&doc, r), 3);
    /* the replacement is listed: the later key and where the replaced one was */
    MG_CHECK_INT(doc.n_dups, 1);
    if (doc.n_dups == 1) {
        MG_CHECK_STR(doc.dups[0].key, "a");
        MG_CHECK_INT(doc.dups[0].column, 24);
        MG_CHECK_INT(doc.dups[0].was_column, 2);
        MG_CHECK_INT(doc.dups[0].was_line, 1);
    }
    mg_json5_free(&doc);
    /* three of one key: two replacements, each naming the one it replaced */
    r = parse_ok(&doc, "{k: 1,\nk: 2,\n  k: 3}");
    MG_CHECK_INT(num(r, "k"), 3);
    MG_CHECK_INT(doc.n_dups, 2);
    if (doc.n_dups == 2) {
        MG_CHECK_INT(doc.dups[0].line, 2);
        MG_CHECK_INT(doc.dups[0].was_line, 1);
        MG_CHECK_INT(doc.dups[1].line, 3);
        MG_CHECK_INT(doc.dups[1].column, 3);
        MG_CHECK_INT(doc.dups[1].was_line, 2);
    }
    mg_json5_free(&doc);
    /* duplicates in nested and sibling objects stay apart */
    r = parse_ok(&doc, "{o: {k: 1}, p: {k: 2}, o: {k: 3, k: 4}}");
    MG_CHECK_INT(num(cJSON_GetObjectItemCaseSensitive(r, "o"), "k"), 4);
    MG_CHECK_INT(num(cJSON_GetObjectItemCaseSensitive(r, "p"), "k"), 2);
    MG_CHECK_INT(count_with_pos(&doc, r), 5);
    MG_CHECK_INT(doc.n_pos, 5);
    MG_CHECK_INT(doc.n_dups, 2); /* o, and k inside the second o; p's k is no duplicate */
    mg_json5_free(&doc);
}

MG_TEST(wide_and_deep_inputs_are_fast_and_positioned)
{
    /* 50,000 members and as many array elements: linear time, every position found */
    mg_buf_t b = {0};
    mg_buf_puts(&b, "{");
    for (int i = 0; i < 50000; i++) mg_buf_printf(&b, "k%d: [%d],\n", i, i);
    mg_buf_puts(&b, "k7: 'dup'}");
    mg_json5_doc_t doc;
    int64_t t0 = mg_now_ms();
    int rc = mg_json5_parse(b.data, b.len, &doc, err, sizeof err);
    MG_CHECK_INT(rc, 0);
    MG_CHECK(mg_now_ms() - t0 < 5000);
    MG_CHECK_INT(count_with_pos(&doc, doc.root), 1 + 2 * 49999 + 1);
    mg_json5_pos_t p = mg_json5_pos_of(&doc, cJSON_GetObjectItemCaseSensitive(doc.root, "k49999"));
    MG_CHECK_INT(p.line, 50000);
    mg_json5_free(&doc);
    mg_buf_free(&b);

    /* exactly MG_JSON5_MAX_DEPTH levels parse; one more fails at the extra bracket */
    for (int i = 0; i < MG_JSON5_MAX_DEPTH; i++) mg_buf_puts(&b, "[");
    for (int i = 0; i < MG_JSON5_MAX_DEPTH; i++) mg_buf_puts(&b, "]");
    MG_CHECK_INT(mg_json5_parse(b.data, b.len, &doc, err, sizeof err), 0);
    mg_json5_free(&doc);
    mg_buf_reset(&b);
    for (int i = 0; i < 100000; i++) mg_buf_puts(&b, "{a:[");
    MG_CHECK_STR(parse_fail_n(b.data, b.len), "1:257: nesting deeper than 128");
    mg_buf_free(&b);
}

MG_TEST(errors_end_of_input_and_garbage)
{
    MG_CHECK_STR(parse_fail(""), "1:1: unexpected end of input");
    MG_CHECK_STR(parse_fail("  \n  // only a comment\n"), "3:1: unexpected end of input");
    MG_CHECK_STR(parse_fail("[1, 2"), "1:6: unexpected end of input");
    MG_CHECK_STR(parse_fail("{a: 1,"), "1:7: unexpected end of input");
    MG_CHECK_STR(parse_fail("{a"), "1:3: unexpected end of input");
    MG_CHECK_STR(parse_fail("{a: 1} x"), "1:8: unexpected character 'x' after the value");
    MG_CHECK_STR(parse_fail("{}\n{}"), "2:1: unexpected character '{' after the value");
    MG_CHECK_STR(parse_fail("[1 2]"), "1:4: unexpected character '2', expected ',' or ']'");
    MG_CHECK_STR(parse_fail("{a: 1 b: 2}"), "1:7: unexpected character 'b', expected ',' or '}'");
    MG_CHECK_STR(parse_fail("{a 1}"), "1:4: unexpected character '1', expected ':' after the key");
    MG_CHECK_STR(parse_fail("{1: 2}"), "1:2: unexpected character '1', expected a key or '}'");
    MG_CHECK_STR(parse_fail("{a: 1,,}"), "1:7: unexpected character ',', expected a key or '}'");
    MG_CHECK_STR(parse_fail("[1,,2]"), "1:4: unexpected character ','");
    MG_CHECK_STR(parse_fail("[,]"), "1:2: unexpected character ','");
    MG_CHECK_STR(parse_fail("{a: lmstudio}"), "1:5: unexpected identifier 'lmstudio' (strings need quotes)");
    MG_CHECK_STR(parse_fail("undefined"), "1:1: unexpected identifier 'undefined' (strings need quotes)");
    MG_CHECK_STR(parse_fail("\x01"), "1:1: unexpected character U+0001");
    MG_CHECK_STR(parse_fail("/ 1"), "1:1: unexpected character '/'");
    MG_CHECK_STR(parse_fail("[\xe2\x82\xac]"), "1:2: unexpected identifier '\xe2\x82\xac' (strings need quotes)");
}

MG_TEST(errors_strings_and_comments)
{
    MG_CHECK_STR(parse_fail("{\n  a: 1,\n  bb: 'unterminated\\\n"), "3:7: unterminated string");
    MG_CHECK_STR(parse_fail("{a: \"abc"), "1:5: unterminated string");
    MG_CHECK_STR(parse_fail("{a: \"abc\\"), "1:5: unterminated string");
    MG_CHECK_STR(parse_fail("{\n  a: 'x\n'}"), "2:6: unterminated string"); /* a raw line break */
    MG_CHECK_STR(parse_fail("'a\rb'"), "1:1: unterminated string");
    MG_CHECK_STR(parse_fail("1 /* never closed"), "1:3: unterminated comment");
    MG_CHECK_STR(parse_fail("{\n /* a\n */ a: 1, /*"), "3:11: unterminated comment");
    MG_CHECK_STR(parse_fail("'\\1'"), "1:2: invalid escape '\\1'");
    MG_CHECK_STR(parse_fail("'\\01'"), "1:2: invalid escape '\\0' before a digit");
    MG_CHECK_STR(parse_fail("'ab\\x4g'"), "1:4: invalid \\x escape (needs two hex digits)");
    MG_CHECK_STR(parse_fail("'\\u12'"), "1:2: invalid \\u escape (needs four hex digits)");
    MG_CHECK_STR(parse_fail("'\\ud800'"), "1:2: unpaired surrogate in \\u escape");
    MG_CHECK_STR(parse_fail("'\\ud800\\u0041'"), "1:2: unpaired surrogate in \\u escape");
    MG_CHECK_STR(parse_fail("'\\udc00'"), "1:2: unpaired surrogate in \\u escape");
    MG_CHECK_STR(parse_fail("'\\0'"), "1:2: NUL character in string (not supported)");
    MG_CHECK_STR(parse_fail("'\\x00'"), "1:2: NUL character in string (not supported)");
    MG_CHECK_STR(parse_fail("'\\u0000'"), "1:2: NUL character in string (not supported)");
    MG_CHECK_STR(parse_fail_n("'a\0b'", 5), "1:3: NUL character in string (not supported)");
    MG_CHECK_STR(parse_fail("{a\\x41: 1}"), "1:3: invalid escape in identifier");
    MG_CHECK_STR(parse_fail("{\\u0031a: 1}"), "1:2: \\u escape is not an identifier character");
}

MG_TEST(errors_numbers)
{
    MG_CHECK_STR(parse_fail("{a: 01}"), "1:5: leading zeros are not allowed");
    MG_CHECK_STR(parse_fail("-00.5"), "1:1: leading zeros are not allowed");
    MG_CHECK_STR(parse_fail("0x"), "1:1: invalid number (no hex digits after 0x)");
    MG_CHECK_STR(parse_fail("[1e]"), "1:4: invalid number (no digits in the exponent)");
    MG_CHECK_STR(parse_fail("1e+"), "1:4: invalid number (no digits in the exponent)");
    MG_CHECK_STR(parse_fail("."), "1:1: invalid number");
    MG_CHECK_STR(parse_fail("[-]"), "1:2: invalid number");
    MG_CHECK_STR(parse_fail("- 1"), "1:1: invalid number");
    MG_CHECK_STR(parse_fail("1a"), "1:2: unexpected character 'a' after a number");
    MG_CHECK_STR(parse_fail("0x1Fg"), "1:5: unexpected character 'g' after a number");
    MG_CHECK_STR(parse_fail("-Infinityx"), "1:10: unexpected character 'x' after a number");
    MG_CHECK_STR(parse_fail("1.5.3"), "1:4: unexpected character '.' after the value");
    MG_CHECK_STR(parse_fail("infinity"), "1:1: unexpected identifier 'infinity' (strings need quotes)");
}

MG_TEST(errors_invalid_utf8)
{
    MG_CHECK_STR(parse_fail("'\xff'"), "1:2: invalid UTF-8");
    MG_CHECK_STR(parse_fail("'ok \xc0\xaf'"), "1:5: invalid UTF-8");          /* overlong '/' */
    MG_CHECK_STR(parse_fail("'\xed\xa0\x80'"), "1:2: invalid UTF-8");         /* encoded surrogate */
    MG_CHECK_STR(parse_fail("'\xf4\x90\x80\x80'"), "1:2: invalid UTF-8");     /* past U+10FFFF */
    MG_CHECK_STR(parse_fail("'\xe2\x82'"), "1:2: invalid UTF-8");             /* truncated */
    MG_CHECK_STR(parse_fail("// \xff\n1"), "1:4: invalid UTF-8");
    MG_CHECK_STR(parse_fail("/* \n \xfe */ 1"), "2:2: invalid UTF-8");
    MG_CHECK_STR(parse_fail("\n\xff"), "2:1: invalid UTF-8");
    MG_CHECK_STR(parse_fail("{k\xff: 1}"), "1:3: invalid UTF-8");
    MG_CHECK_STR(parse_fail("[1]\xc3"), "1:4: invalid UTF-8");
}

MG_TEST(error_buffer_is_bounded_and_terminated)
{
    mg_json5_doc_t doc;
    char small[8];
    memset(small, 'x', sizeof small);
    MG_CHECK_INT(mg_json5_parse("[1 2]", 5, &doc, small, sizeof small), -1);
    MG_CHECK_STR(small, "1:4: un");
    MG_CHECK_INT(mg_json5_parse(NULL, 0, &doc, small, sizeof small), -1);
    MG_CHECK_STR(small, "1:1: un");
    /* the length is honoured: no read past it, even without a NUL */
    char buf[4] = {'[', '1', ']', 'x'};
    MG_CHECK_INT(mg_json5_parse(buf, 3, &doc, err, sizeof err), 0);
    mg_json5_free(&doc);
}

MG_TEST_MAIN()

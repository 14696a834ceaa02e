/* JSON5 reader: text in, cJSON tree plus a position for every node out. See json5.h.
 *
 * One pass of recursive descent over a bounds-checked byte cursor. The cursor tracks the current
 * line and where it started, so a position costs two integers and no re-scan. Positions are
 * appended to an array as nodes are made and sorted by node address once at the end, so that
 * mg_json5_pos_of is a binary search. Duplicate keys are found with one hash table for the whole
 * document (keyed by object and key), which keeps the parse linear however wide an object is.
 *
 * Grammar and escapes follow https://spec.json5.org/ (ECMAScript 5.1 lexical rules). Identifier
 * characters are approximated: ASCII letters, digits, $ and _, plus any non-ASCII code point that
 * is not whitespace or a line terminator (the Unicode ID_Start/ID_Continue tables are not worth
 * their size for config keys).
 *
 * Uses cJSON for the tree and util.h for allocation (out of memory aborts). */
#include "json5.h"

#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct loc {
    int line, col;
} loc_t;

/* A member already seen in some object: the document-wide duplicate-key index. */
typedef struct key_slot {
    const cJSON *obj; /* NULL = empty slot */
    cJSON *item;      /* the member; item->string is its key */
    uint64_t hash;
    loc_t at;         /* where its key starts */
} key_slot_t;

typedef struct parser {
    const unsigned char *s;
    size_t len;
    size_t i;          /* cursor */
    int line;          /* line of the cursor, 1-based */
    size_t line_start; /* offset where that line starts */
    size_t col_at, col; /* here()'s last answer on this line: col characters before offset col_at */
    char *err;
    size_t errlen;
    bool failed;
    mg_json5_pos_t *pos; /* owned; handed to the doc on success */
    size_t n_pos, cap_pos;
    key_slot_t *keys; /* owned; open addressing, capacity a power of two */
    size_t n_keys, cap_keys;
    cJSON *graveyard; /* owned; members replaced by a later duplicate, freed at the end */
    mg_json5_dup_t *dups; /* owned; handed to the doc on success */
    size_t n_dups;
    mg_buf_t scratch; /* owned; string and number text being decoded */
} parser_t;

/* cJSON reports allocation failure with NULL; our policy is to abort (see util.h). */
static cJSON *cj_check(cJSON *j, int line)
{
    if (!j) {
        fprintf(stderr, "moongate: out of memory in cJSON at %s:%d\n", __FILE__, line);
        abort();
    }
    return j;
}
#define CJ(x) cj_check((x), __LINE__)

/* Where the parser is: the column counts characters, as editors show it, not bytes (a UTF-8
 * continuation byte adds none). Counted on from the last answer when the cursor is further on
 * the same line, so a long one-line document costs one pass, not one per node. */
static loc_t here(parser_t *p)
{
    if (p->col_at < p->line_start || p->col_at > p->i) p->col_at = p->line_start, p->col = 0;
    for (; p->col_at < p->i; p->col_at++) p->col += (p->s[p->col_at] & 0xC0) != 0x80;
    return (loc_t){p->line, p->col >= INT32_MAX ? INT32_MAX : (int)p->col + 1};
}

/* Records the first error as "line:col: message"; returns -1 for `return fail(...)`. */
static int fail(parser_t *p, loc_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser_t *p, loc_t at, const char *fmt, ...)
{
    if (p->failed) return -1;
    p->failed = true;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->errlen) snprintf(p->err, p->errlen, "%d:%d: %s", at.line, at.col, msg);
    return -1;
}

/* ---- characters ------------------------------------------------------------------------------ */

static void utf8_encode(mg_buf_t *b, uint32_t cp)
{
    unsigned char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp, n = 1;
    } else if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6)), o[1] = (unsigned char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12)), o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        o[0] = (unsigned char)(0xF0 | (cp >> 18)), o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    mg_buf_append(b, o, n);
}

/* JSON5 WhiteSpace other than line terminators: TAB VT FF SP NBSP BOM and the Unicode Zs class. */
static bool is_space_cp(uint32_t cp)
{
    return cp == 0x09 || cp == 0x0B || cp == 0x0C || cp == 0x20 || cp == 0xA0 || cp == 0xFEFF ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static bool is_ident_start(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '$' || cp == '_';
    return !is_space_cp(cp) && cp != 0x2028 && cp != 0x2029 && !(cp >= 0xD800 && cp <= 0xDFFF);
}

static bool is_ident_part(uint32_t cp)
{
    return is_ident_start(cp) || (cp >= '0' && cp <= '9');
}

static bool is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

static int hex_val(unsigned c)
{
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* Length of the line terminator at offset i (LF, CR, CRLF, U+2028, U+2029), or 0. */
static size_t eol_len(const parser_t *p, size_t i)
{
    if (i >= p->len) return 0;
    unsigned char c = p->s[i];
    if (c == '\n') return 1;
    if (c == '\r') return (i + 1 < p->len && p->s[i + 1] == '\n') ? 2 : 1;
    if (c == 0xE2 && i + 2 < p->len && p->s[i + 1] == 0x80 && (p->s[i + 2] == 0xA8 || p->s[i + 2] == 0xA9))
        return 3;
    return 0;
}

static void take_newline(parser_t *p, size_t n)
{
    p->i += n;
    p->line++;
    p->line_start = p->i;
}

/* Fails with the right message for whatever is at the cursor when it was not expected there:
 * the end of input, malformed UTF-8, or a character followed by context (e.g. ", expected ':'"). */
static int fail_unexpected(parser_t *p, const char *context)
{
    loc_t at = here(p);
    if (p->i >= p->len) return fail(p, at, "unexpected end of input");
    unsigned c = p->s[p->i];
    if (c > 0x20 && c < 0x7F) return fail(p, at, "unexpected character '%c'%s", (char)c, context);
    uint32_t cp;
    if (!mg_utf8_decode(p->s + p->i, p->len - p->i, &cp)) return fail(p, at, "invalid UTF-8");
    return fail(p, at, "unexpected character U+%04X%s", (unsigned)cp, context);
}

/* ---- whitespace and comments ----------------------------------------------------------------- */

/* Skips the body of a comment or a run of non-ASCII text: one character, validating UTF-8. */
static int skip_char(parser_t *p)
{
    if (p->s[p->i] < 0x80) {
        p->i++;
        return 0;
    }
    uint32_t cp;
    size_t n = mg_utf8_decode(p->s + p->i, p->len - p->i, &cp);
    if (!n) return fail(p, here(p), "invalid UTF-8");
    p->i += n;
    return 0;
}

static int skip_ws(parser_t *p)
{
    while (p->i < p->len) {
        unsigned char c = p->s[p->i];
        size_t n;
        if (c == ' ' || c == '\t' || c == '\v' || c == '\f') {
            p->i++;
        } else if ((n = eol_len(p, p->i))) {
            take_newline(p, n);
        } else if (c == '/' && p->i + 1 < p->len && p->s[p->i + 1] == '/') {
            p->i += 2; /* a line comment runs to the line terminator, which the loop then takes */
            while (p->i < p->len && !eol_len(p, p->i))
                if (skip_char(p)) return -1;
        } else if (c == '/' && p->i + 1 < p->len && p->s[p->i + 1] == '*') {
            loc_t start = here(p);
            p->i += 2;
            for (;;) {
                if (p->i >= p->len) return fail(p, start, "unterminated comment");
                if (p->s[p->i] == '*' && p->i + 1 < p->len && p->s[p->i + 1] == '/') {
                    p->i += 2;
                    break;
                }
                if ((n = eol_len(p, p->i))) {
                    take_newline(p, n);
                } else if (skip_char(p)) {
                    return -1;
                }
            }
        } else if (c >= 0x80) {
            uint32_t cp;
            n = mg_utf8_decode(p->s + p->i, p->len - p->i, &cp);
            if (!n) return fail(p, here(p), "invalid UTF-8");
            if (!is_space_cp(cp)) break;
            p->i += n;
        } else {
            break;
        }
    }
    return 0;
}

/* ---- positions and the duplicate-key index --------------------------------------------------- */

static void record(parser_t *p, const cJSON *node, loc_t key, loc_t value)
{
    if (p->n_pos == p->cap_pos) {
        p->cap_pos = p->cap_pos ? p->cap_pos * 2 : 64;
        p->pos = mg_xrealloc(p->pos, p->cap_pos * sizeof *p->pos);
    }
    p->pos[p->n_pos++] = (mg_json5_pos_t){node, key.line, key.col, value.line, value.col};
}

static uint64_t key_hash(const cJSON *obj, const char *key)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const unsigned char *k = (const unsigned char *)key; *k; k++) h = (h ^ *k) * 1099511628211ull;
    return h ^ ((uint64_t)(uintptr_t)obj * 0x9E3779B97F4A7C15ull);
}

static void keys_grow(parser_t *p)
{
    size_t cap = p->cap_keys ? p->cap_keys * 2 : 64;
    key_slot_t *slots = mg_xcalloc(cap, sizeof *slots);
    for (size_t k = 0; k < p->cap_keys; k++) {
        if (!p->keys[k].obj) continue;
        size_t j = (size_t)p->keys[k].hash & (cap - 1);
        while (slots[j].obj) j = (j + 1) & (cap - 1);
        slots[j] = p->keys[k];
    }
    free(p->keys);
    p->keys = slots;
    p->cap_keys = cap;
}

/* Adds item to obj under key (starting at kat). A key obj already has is replaced (the last one
 * wins) and the replacement noted in p->dups; the old member goes to the graveyard rather than
 * being freed, so that no later node can reuse its address while its position entry still
 * exists. */
static void add_member(parser_t *p, cJSON *obj, const char *key, cJSON *item, loc_t kat)
{
    if ((p->n_keys + 1) * 2 > p->cap_keys) keys_grow(p);
    uint64_t h = key_hash(obj, key);
    size_t j = (size_t)h & (p->cap_keys - 1);
    for (; p->keys[j].obj; j = (j + 1) & (p->cap_keys - 1)) {
        key_slot_t *s = &p->keys[j];
        if (s->hash == h && s->obj == obj && strcmp(s->item->string, key) == 0) {
            cJSON_AddItemToArray(p->graveyard, cJSON_DetachItemViaPointer(obj, s->item));
            p->dups = mg_xrealloc(p->dups, (p->n_dups + 1) * sizeof *p->dups);
            p->dups[p->n_dups++] = (mg_json5_dup_t){mg_xstrdup(key), kat.line, kat.col, s->at.line, s->at.col};
            break;
        }
    }
    if (!p->keys[j].obj) p->n_keys++;
    if (!cJSON_AddItemToObject(obj, key, item)) CJ(NULL);
    p->keys[j] = (key_slot_t){obj, item, h, kat};
}

static int cmp_pos(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const mg_json5_pos_t *)a)->node;
    uintptr_t y = (uintptr_t)((const mg_json5_pos_t *)b)->node;
    return x < y ? -1 : x > y;
}

static mg_json5_pos_t *find_pos(mg_json5_pos_t *pos, size_t n, const cJSON *node)
{
    mg_json5_pos_t key = {.node = node};
    return bsearch(&key, pos, n, sizeof *pos, cmp_pos);
}

/* Marks the entries of a replaced subtree dead (line 0) so that compaction drops them. */
static void mark_dead(parser_t *p, const cJSON *node)
{
    mg_json5_pos_t *e = find_pos(p->pos, p->n_pos, node);
    if (e) e->line = 0;
    for (const cJSON *c = node->child; c; c = c->next) mark_dead(p, c);
}

/* ---- values ---------------------------------------------------------------------------------- */

static cJSON *parse_value(parser_t *p, int depth, loc_t *at);

static int read_hex(parser_t *p, int digits, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        int h = p->i < p->len ? hex_val(p->s[p->i]) : -1;
        if (h < 0) return -1;
        v = v * 16 + (uint32_t)h;
        p->i++;
    }
    *out = v;
    return 0;
}

/* A \u escape in a string: one code unit, or a surrogate pair written as two escapes. The cursor
 * is just past "\u"; at is the backslash. */
static int parse_u_escape(parser_t *p, loc_t at, uint32_t *cp)
{
    uint32_t hi, lo;
    if (read_hex(p, 4, &hi)) return fail(p, at, "invalid \\u escape (needs four hex digits)");
    if (hi >= 0xDC00 && hi <= 0xDFFF) return fail(p, at, "unpaired surrogate in \\u escape");
    if (hi < 0xD800 || hi > 0xDBFF) {
        *cp = hi;
        return 0;
    }
    if (p->i + 2 > p->len || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
        return fail(p, at, "unpaired surrogate in \\u escape");
    p->i += 2;
    if (read_hex(p, 4, &lo)) return fail(p, at, "invalid \\u escape (needs four hex digits)");
    if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, at, "unpaired surrogate in \\u escape");
    *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    return 0;
}

/* One escape sequence; the cursor is on the backslash. start is the string's opening quote. */
static int parse_escape(parser_t *p, mg_buf_t *out, loc_t start)
{
    loc_t at = here(p);
    p->i++;
    if (p->i >= p->len) return fail(p, start, "unterminated string");
    size_t n = eol_len(p, p->i);
    if (n) { /* LineContinuation: the backslash and the line terminator vanish */
        take_newline(p, n);
        return 0;
    }
    unsigned char c = p->s[p->i];
    uint32_t cp = 0;
    switch (c) {
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'v': cp = '\v'; break;
    case '0':
        if (p->i + 1 < p->len && is_digit(p->s[p->i + 1])) return fail(p, at, "invalid escape '\\0' before a digit");
        return fail(p, at, "NUL character in string (not supported)");
    case 'x':
        p->i++;
        if (read_hex(p, 2, &cp)) return fail(p, at, "invalid \\x escape (needs two hex digits)");
        if (!cp) return fail(p, at, "NUL character in string (not supported)");
        utf8_encode(out, cp);
        return 0;
    case 'u':
        p->i++;
        if (parse_u_escape(p, at, &cp)) return -1;
        if (!cp) return fail(p, at, "NUL character in string (not supported)");
        utf8_encode(out, cp);
        return 0;
    default:
        if (is_digit(c)) return fail(p, at, "invalid escape '\\%c'", (char)c);
        /* ' " \ and every NonEscapeCharacter stand for themselves */
        if (c >= 0x80) {
            n = mg_utf8_decode(p->s + p->i, p->len - p->i, &cp);
            if (!n) return fail(p, here(p), "invalid UTF-8");
            mg_buf_append(out, p->s + p->i, n);
            p->i += n;
            return 0;
        }
        cp = c;
        break;
    }
    p->i++;
    utf8_encode(out, cp);
    return 0;
}

/* A single- or double-quoted string, decoded into out (reset first). */
static int parse_string(parser_t *p, mg_buf_t *out)
{
    loc_t start = here(p);
    unsigned char q = p->s[p->i++];
    mg_buf_reset(out);
    mg_buf_reserve(out, 0); /* an empty string still has a NUL-terminated buffer */
    for (;;) {
        size_t run = p->i;
        while (run < p->len) {
            unsigned char c = p->s[run];
            if (c == q || c == '\\' || c == '\n' || c == '\r' || c == 0 || c >= 0x80) break;
            run++;
        }
        mg_buf_append(out, p->s + p->i, run - p->i);
        p->i = run;
        if (p->i >= p->len) return fail(p, start, "unterminated string");
        unsigned char c = p->s[p->i];
        if (c == q) {
            p->i++;
            return 0;
        }
        if (c == '\\') {
            if (parse_escape(p, out, start)) return -1;
        } else if (c == '\n' || c == '\r') {
            /* almost always a missing closing quote, so say that, where the string began */
            return fail(p, start, "unterminated string");
        } else if (c == 0) {
            return fail(p, here(p), "NUL character in string (not supported)");
        } else { /* non-ASCII, including U+2028/U+2029 which JSON5 allows raw in strings */
            uint32_t cp;
            size_t n = mg_utf8_decode(p->s + p->i, p->len - p->i, &cp);
            if (!n) return fail(p, here(p), "invalid UTF-8");
            mg_buf_append(out, p->s + p->i, n);
            p->i += n;
        }
    }
}

/* An IdentifierName (unquoted key, or a word such as null) into out (reset first). Returns 0 with
 * an empty out when the cursor is not on an identifier start. */
static int parse_identifier(parser_t *p, mg_buf_t *out)
{
    mg_buf_reset(out);
    mg_buf_reserve(out, 0);
    bool first = true;
    while (p->i < p->len) {
        unsigned char c = p->s[p->i];
        uint32_t cp;
        size_t n;
        if (c == '\\') {
            loc_t at = here(p);
            if (p->i + 1 >= p->len || p->s[p->i + 1] != 'u') return fail(p, at, "invalid escape in identifier");
            p->i += 2;
            if (read_hex(p, 4, &cp)) return fail(p, at, "invalid \\u escape (needs four hex digits)");
            if (!(first ? is_ident_start(cp) : is_ident_part(cp)))
                return fail(p, at, "\\u escape is not an identifier character");
            utf8_encode(out, cp);
        } else {
            n = mg_utf8_decode(p->s + p->i, p->len - p->i, &cp);
            if (!n) return fail(p, here(p), "invalid UTF-8");
            if (!(first ? is_ident_start(cp) : is_ident_part(cp))) break;
            mg_buf_append(out, p->s + p->i, n);
            p->i += n;
        }
        first = false;
    }
    return 0;
}

static bool at_ident_char(const parser_t *p)
{
    uint32_t cp;
    if (p->i >= p->len) return false;
    if (p->s[p->i] == '\\') return true;
    return mg_utf8_decode(p->s + p->i, p->len - p->i, &cp) && is_ident_part(cp);
}

static bool match_word(parser_t *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->i < n || memcmp(p->s + p->i, w, n) != 0) return false;
    p->i += n;
    return true;
}

static cJSON *make_number(double v)
{
    /* cJSON_CreateNumber converts to int for valueint, which is undefined for NaN */
    cJSON *n = CJ(cJSON_CreateNumber(isnan(v) ? 0.0 : v));
    n->valuedouble = v;
    return n;
}

static cJSON *parse_number(parser_t *p)
{
    loc_t at = here(p);
    size_t start = p->i;
    double sign = 1.0, v;
    if (p->s[p->i] == '+' || p->s[p->i] == '-') sign = p->s[p->i++] == '-' ? -1.0 : 1.0;
    if (match_word(p, "Infinity")) {
        v = sign * INFINITY;
    } else if (match_word(p, "NaN")) {
        v = NAN;
    } else if (p->i + 1 < p->len && p->s[p->i] == '0' && (p->s[p->i + 1] | 0x20) == 'x') {
        p->i += 2;
        size_t h0 = p->i;
        v = 0;
        for (int h; p->i < p->len && (h = hex_val(p->s[p->i])) >= 0; p->i++) v = v * 16 + h;
        if (p->i == h0) return fail(p, at, "invalid number (no hex digits after 0x)"), NULL;
        v *= sign;
    } else {
        size_t d0 = p->i;
        if (p->i + 1 < p->len && p->s[p->i] == '0' && is_digit(p->s[p->i + 1]))
            return fail(p, at, "leading zeros are not allowed"), NULL;
        while (p->i < p->len && is_digit(p->s[p->i])) p->i++;
        size_t int_digits = p->i - d0, frac_digits = 0;
        if (p->i < p->len && p->s[p->i] == '.') {
            size_t f0 = ++p->i;
            while (p->i < p->len && is_digit(p->s[p->i])) p->i++;
            frac_digits = p->i - f0;
        }
        if (!int_digits && !frac_digits) return fail(p, at, "invalid number"), NULL;
        if (p->i < p->len && (p->s[p->i] | 0x20) == 'e') {
            p->i++;
            if (p->i < p->len && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
            size_t e0 = p->i;
            while (p->i < p->len && is_digit(p->s[p->i])) p->i++;
            if (p->i == e0) return fail(p, here(p), "invalid number (no digits in the exponent)"), NULL;
        }
        /* The text is validated, so strtod sees only [+-]digits[.digits][e[+-]digits]. */
        mg_buf_reset(&p->scratch);
        mg_buf_append(&p->scratch, p->s + start, p->i - start);
        v = strtod(p->scratch.data, NULL);
    }
    /* ES5 7.8.3: the character after a numeric literal must not be an IdentifierStart or digit */
    if (at_ident_char(p)) return fail_unexpected(p, " after a number"), NULL;
    return make_number(v);
}

static cJSON *parse_word(parser_t *p, loc_t at)
{
    if (parse_identifier(p, &p->scratch)) return NULL;
    const char *w = p->scratch.data;
    if (!strcmp(w, "null")) return CJ(cJSON_CreateNull());
    if (!strcmp(w, "true")) return CJ(cJSON_CreateTrue());
    if (!strcmp(w, "false")) return CJ(cJSON_CreateFalse());
    if (!strcmp(w, "Infinity")) return make_number(INFINITY);
    if (!strcmp(w, "NaN")) return make_number(NAN);
    /* Show at most 40 bytes of the word, cut on a character boundary. */
    size_t n = p->scratch.len;
    if (n > 40) {
        n = 40;
        while (n && (w[n] & 0xC0) == 0x80) n--;
    }
    fail(p, at, "unexpected identifier '%.*s%s' (strings need quotes)", (int)n, w, n < p->scratch.len ? "..." : "");
    return NULL;
}

static cJSON *parse_array(parser_t *p, int depth)
{
    cJSON *arr = CJ(cJSON_CreateArray());
    p->i++; /* [ */
    for (;;) {
        if (skip_ws(p)) goto error;
        if (p->i < p->len && p->s[p->i] == ']') break;
        loc_t at;
        cJSON *v = parse_value(p, depth, &at);
        if (!v) goto error;
        record(p, v, at, at);
        cJSON_AddItemToArray(arr, v);
        if (skip_ws(p)) goto error;
        if (p->i < p->len && p->s[p->i] == ',') {
            p->i++;
        } else if (p->i < p->len && p->s[p->i] == ']') {
            break;
        } else {
            fail_unexpected(p, ", expected ',' or ']'");
            goto error;
        }
    }
    p->i++; /* ] */
    return arr;
error:
    cJSON_Delete(arr);
    return NULL;
}

static cJSON *parse_object(parser_t *p, int depth)
{
    cJSON *obj = CJ(cJSON_CreateObject());
    char *key = NULL;
    p->i++; /* { */
    for (;;) {
        if (skip_ws(p)) goto error;
        if (p->i < p->len && p->s[p->i] == '}') break;
        loc_t kat = here(p);
        unsigned char c = p->i < p->len ? p->s[p->i] : 0;
        if (c == '"' || c == '\'') {
            if (parse_string(p, &p->scratch)) goto error;
        } else {
            if (p->i < p->len && parse_identifier(p, &p->scratch)) goto error;
            if (p->i >= p->len || p->scratch.len == 0) {
                fail_unexpected(p, ", expected a key or '}'");
                goto error;
            }
        }
        key = mg_xstrndup(p->scratch.data, p->scratch.len); /* scratch is reused by the value */
        if (skip_ws(p)) goto error;
        if (p->i >= p->len || p->s[p->i] != ':') {
            fail_unexpected(p, ", expected ':' after the key");
            goto error;
        }
        p->i++;
        if (skip_ws(p)) goto error;
        loc_t vat;
        cJSON *v = parse_value(p, depth, &vat);
        if (!v) goto error;
        record(p, v, kat, vat);
        add_member(p, obj, key, v, kat);
        free(key), key = NULL;
        if (skip_ws(p)) goto error;
        if (p->i < p->len && p->s[p->i] == ',') {
            p->i++;
        } else if (p->i < p->len && p->s[p->i] == '}') {
            break;
        } else {
            fail_unexpected(p, ", expected ',' or '}'");
            goto error;
        }
    }
    p->i++; /* } */
    return obj;
error:
    free(key);
    cJSON_Delete(obj);
    return NULL;
}

/* Parses the value at the cursor (whitespace already skipped); *at receives where it starts.
 * depth is the number of arrays/objects around it. Returns NULL after fail(). */
static cJSON *parse_value(parser_t *p, int depth, loc_t *at)
{
    *at = here(p);
    if (p->i >= p->len) return fail_unexpected(p, ""), NULL;
    unsigned char c = p->s[p->i];
    if (c == '{' || c == '[') {
        if (depth + 1 > MG_JSON5_MAX_DEPTH) return fail(p, *at, "nesting deeper than %d", MG_JSON5_MAX_DEPTH), NULL;
        return c == '{' ? parse_object(p, depth + 1) : parse_array(p, depth + 1);
    }
    if (c == '"' || c == '\'') {
        if (parse_string(p, &p->scratch)) return NULL;
        return CJ(cJSON_CreateString(p->scratch.data));
    }
    if (is_digit(c) || c == '+' || c == '-' || c == '.') return parse_number(p);
    if (at_ident_char(p) && !is_digit(c)) return parse_word(p, *at);
    return fail_unexpected(p, ""), NULL;
}

static void free_dups(mg_json5_dup_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) free(d[i].key);
    free(d);
}

/* ---- public ---------------------------------------------------------------------------------- */

int mg_json5_parse(const char *text, size_t len, mg_json5_doc_t *doc, char *err, size_t errlen)
{
    parser_t p = {.s = (const unsigned char *)(text ? text : ""), .len = text ? len : 0,
                  .line = 1, .err = err, .errlen = errlen};
    cJSON *root = NULL;
    int rc = -1;
    *doc = (mg_json5_doc_t){0};
    if (errlen) err[0] = '\0';
    p.graveyard = CJ(cJSON_CreateArray());
    if (p.len >= 3 && memcmp(p.s, "\xEF\xBB\xBF", 3) == 0) p.i = p.line_start = 3; /* BOM */

    if (skip_ws(&p)) goto done;
    loc_t at;
    root = parse_value(&p, 0, &at);
    if (!root) goto done;
    record(&p, root, at, at);
    if (skip_ws(&p)) goto done;
    if (p.i < p.len) {
        fail_unexpected(&p, " after the value");
        goto done;
    }

    qsort(p.pos, p.n_pos, sizeof *p.pos, cmp_pos);
    if (p.graveyard->child) { /* drop the entries of members replaced by a duplicate key */
        for (const cJSON *g = p.graveyard->child; g; g = g->next) mark_dead(&p, g);
        size_t k = 0;
        for (size_t j = 0; j < p.n_pos; j++)
            if (p.pos[j].line) p.pos[k++] = p.pos[j];
        p.n_pos = k;
    }
    doc->root = root, root = NULL;
    doc->pos = p.pos, p.pos = NULL;
    doc->n_pos = p.n_pos;
    doc->dups = p.dups, p.dups = NULL;
    doc->n_dups = p.n_dups, p.n_dups = 0;
    rc = 0;
done:
    cJSON_Delete(root);
    cJSON_Delete(p.graveyard);
    free(p.pos);
    free(p.keys);
    free_dups(p.dups, p.n_dups);
    mg_buf_free(&p.scratch);
    return rc;
}

mg_json5_pos_t mg_json5_pos_of(const mg_json5_doc_t *doc, const cJSON *node)
{
    mg_json5_pos_t none = {0};
    if (!doc || !node || !doc->n_pos) return none;
    const mg_json5_pos_t *e = find_pos(doc->pos, doc->n_pos, node);
    return e ? *e : none;
}

void mg_json5_free(mg_json5_doc_t *doc)
{
    if (!doc) return;
    cJSON_Delete(doc->root);
    free(doc->pos);
    free_dups(doc->dups, doc->n_dups);
    *doc = (mg_json5_doc_t){0};
}

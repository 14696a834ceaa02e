/* JSON5 reader (https://spec.json5.org/) producing cJSON trees, with the source position of every
 * value so that config errors can name file:line:column. Pure: text in, tree out; no I/O.
 *
 * Supports: // and block comments, trailing commas, unquoted (ECMAScript identifier) keys, single-
 * quoted strings, escapes incl. \x, \u (surrogate pairs) and line continuations, hex integers,
 * leading/trailing decimal points, explicit +, Infinity, NaN. Nesting is capped (MG_JSON5_MAX_DEPTH)
 * and input must be valid UTF-8. Duplicate keys: the last one wins (as JSON5/ES5 does), and each
 * replacement is listed in the doc (dups) so that a caller can warn of it.
 * One deliberate departure: a NUL character in a string (\0, \x00, \u0000 or a raw 0 byte) is
 * rejected, because cJSON strings end at the first NUL and would silently be cut there.
 * Lines end at LF, CR, CRLF, U+2028 and U+2029 (outside strings, and in line continuations);
 * columns count bytes; a leading BOM takes no column. Linear time; positions are looked up by
 * binary search. */
#pragma once
#include <cjson/cJSON.h>
#include <stddef.h>

#define MG_JSON5_MAX_DEPTH 128

typedef struct mg_json5_pos {
    const cJSON *node;
    int line;   /* 1-based; for an object member, where its key starts */
    int column; /* 1-based, in bytes */
    int value_line;   /* where the value itself starts (differs from line/column only for */
    int value_column; /* object members): errors about a value point here, about a key above */
} mg_json5_pos_t;

/* A key given twice in one object: the later member replaced the earlier. */
typedef struct mg_json5_dup {
    char *key;
    int line, column;         /* where the later key starts (the one that counts) */
    int was_line, was_column; /* where the replaced one started */
} mg_json5_dup_t;

typedef struct mg_json5_doc {
    cJSON *root;
    mg_json5_pos_t *pos; /* one entry per node (value position; for object members, the key's) */
    size_t n_pos;
    mg_json5_dup_t *dups; /* in the order met */
    size_t n_dups;
} mg_json5_doc_t;

/* Parses text[0..len). On success returns 0 and fills doc (free with mg_json5_free). On failure
 * returns -1, doc is left empty, and err receives "line:col: message" (always NUL-terminated). */
int mg_json5_parse(const char *text, size_t len, mg_json5_doc_t *doc, char *err, size_t errlen);

/* Position of node, or all zeros when unknown (node is not from doc). O(log n). */
mg_json5_pos_t mg_json5_pos_of(const mg_json5_doc_t *doc, const cJSON *node);

void mg_json5_free(mg_json5_doc_t *doc);

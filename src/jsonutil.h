/* Byte-level helpers over JSON text: over text already known to be valid (cJSON parsed it), the
 * lookup and change of one member of a request without re-serialising it (the rest goes upstream
 * byte for byte); a strict check that tells when a text is one cJSON reads the same way, so
 * that a whole answer can be judged from its bytes without building a tree; and the two fixes
 * that make cJSON read a text as other parsers do (escapes it would mangle, duplicate names). */
#pragma once
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* Member names are compared as cJSON reads them, escapes decoded ("mod\u0065l" is "model"), with
 * \u0000 and lone surrogates read as U+FFFD as mg_json_fix_escapes has them. */

/* Finds the value of top-level member key in the JSON object text[0..len): the first occurrence,
 * the one cJSON_GetObjectItem finds. On success sets [*vstart, *vend) to the value's bytes (quotes
 * included for strings) and returns true. */
bool mg_json_member_span(const char *text, size_t len, const char *key, size_t *vstart, size_t *vend);

/* Returns a new malloc'd copy of text with the top-level member key set to raw_value (JSON text):
 * replaced in place when present (every occurrence, so that no duplicate of a client's survives
 * whichever one the upstream's parser keeps), otherwise inserted right after the opening brace.
 * *out_len gets the new length. text must be a valid JSON object. */
char *mg_json_set_member(const char *text, size_t len, const char *key, const char *raw_value,
                         size_t *out_len);

/* Whether text[0..len) is one JSON value in the strict grammar of RFC 8259, with only the four
 * JSON whitespace bytes around it, and within the bounds where cJSON reads it the same way
 * (numbers of at most 60 bytes, nesting under 256, \u surrogates in high-low pairs, no raw
 * control bytes in strings) and no escape in any object key. true: cJSON_ParseWithLength would
 * succeed on it, and member names compare byte for byte; false: not known, ask cJSON. *root, when
 * not NULL, gets the first byte of the value ('{', '[', '"', 't', 'f', 'n', '-' or a digit). */
bool mg_json_strict(const char *text, size_t len, char *root);

/* A member's value: [start, end) of the text, when found. */
typedef struct mg_json_span {
    bool found;
    size_t start, end;
} mg_json_span_t;

/* mg_json_strict that also notes, in the same pass, the value of the first top-level member of an
 * object root named keys[k] in spans[k] (n_keys of each; spans are meaningful only when it
 * returns true). */
bool mg_json_strict_members(const char *text, size_t len, char *root, const char *const *keys, size_t n_keys,
                            mg_json_span_t *spans);

/* The offset of the first byte under 0x20 other than tab, line feed and carriage return in
 * text[0..len), or len when there is none. JSON allows none of them, in strings or between
 * tokens; cJSON takes them as white space (and in strings as they are), while the member lookup
 * above and the upstream's parser do not: a body holding one is refused before either reads it. */
size_t mg_json_control_byte(const char *text, size_t len);

/* A copy of text[0..len) (malloc'd, NUL-terminated, the same length: the caller frees it) in
 * which every \u0000 and every lone surrogate escape (a high \uD800-\uDBFF not followed by a low
 * \uDC00-\uDFFF, a low not preceded by a high) is \ufffd; NULL when there is none, the common
 * case, which costs a memchr from one backslash to the next and no copy. To apply before cJSON
 * parses: it keeps strings as C strings, so "a\u0000b" would be "a" in the tree (and in whatever
 * moongate prints from it), and it refuses a lone surrogate (JSON.stringify of a string cut
 * inside an emoji), failing the whole text, where raw bytes that are not UTF-8 only get U+FFFD
 * when printed (mg_ir_print_json). */
char *mg_json_fix_escapes(const char *text, size_t len);

/* Whether an object anywhere in the tree j has two members of the same name (compared as cJSON
 * decoded them). cJSON keeps both and its lookups find the first, while many parsers (Python,
 * JavaScript, Go) keep the last: a request moongate checked by one could reach an upstream that
 * reads the other. On true, msg (msglen bytes, at least 1) names the member and where, e.g.
 * `duplicate key "role" in messages[2]`. One pass over the tree; the names of an object of many
 * members are sorted, never compared pair by pair. */
bool mg_json_duplicate_key(const cJSON *j, char *msg, size_t msglen);

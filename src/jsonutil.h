/* Byte-level helpers over JSON text: over text already known to be valid (cJSON parsed it), the
 * lookup and change of one member of a request without re-serialising it (the rest goes upstream
 * byte for byte); and a strict check that tells when a text is one cJSON reads the same way, so
 * that a whole answer can be judged from its bytes without building a tree. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

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

/* Byte-level helpers over JSON text that is already known to be valid (cJSON parsed it), used to
 * change one member of a request without re-serialising it: the rest goes upstream byte for byte. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* Finds the value of top-level member key in the JSON object text[0..len). On success sets
 * [*vstart, *vend) to the value's bytes (quotes included for strings) and returns true. */
bool mg_json_member_span(const char *text, size_t len, const char *key, size_t *vstart, size_t *vend);

/* Returns a new malloc'd copy of text with the top-level member key set to raw_value (JSON text):
 * replaced in place when present, otherwise inserted right after the opening brace. *out_len gets
 * the new length. text must be a valid JSON object. */
char *mg_json_set_member(const char *text, size_t len, const char *key, const char *raw_value,
                         size_t *out_len);

/* What the three codec files (api_openai_chat.c, api_openai_responses.c, api_anthropic.c) do
 * alike, written once: the walk over a content array, OpenAI image URLs, request fields that two
 * or three APIs spell the same way, the tools array, the stream decoders' terminal events and the
 * stream encoders' error frame. Where the APIs differ in substance the codec files keep their own
 * code. Not for other modules (the model's own helpers, mg_ir_jstr and the like, are in ir.h).
 * Pure; uses ir.h, cJSON and util.h. Ownership as in ir.h: decoded strings are borrowed from the
 * document or allocated in the arena; every cJSON an encoding helper returns is the caller's. */
#pragma once
#include "ir.h"

/* In a stream decoder whose callback and its argument are named cb and ud: emits ev, and returns
 * from the enclosing function with the callback's value when it is nonzero. */
#define MG_CODEC_EMIT(ev)                                                                          \
    do {                                                                                           \
        int rc_ = cb(ud, &(ev));                                                                   \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* ---- decoding ---- */

/* The string member key of o, or "" when there is none. */
const char *mg_codec_jtext(const cJSON *o, const char *key);
/* v as unformatted JSON text in the arena. */
const char *mg_codec_json_text(mg_ir_arena_t *a, const cJSON *v);

/* One element of a content array, type its "type" member (never NULL): appends what it decodes
 * to pv. ud is mg_codec_decode_content's. 0, or -1 with a reason in err. */
typedef int (*mg_codec_part_fn)(mg_ir_arena_t *a, const cJSON *item, const char *type, mg_ir_parts_t *pv,
                                void *ud, char *err, size_t errlen);
/* How an API reads a content field: its element decoder and its two error messages. */
typedef struct mg_codec_content {
    mg_codec_part_fn part;
    const char *not_array; /* content that is neither a string, null nor an array */
    const char *no_type;   /* an element without a "type" */
    bool string_items;     /* a string element is a TEXT part (vLLM reads Chat content so) */
} mg_codec_content_t;
/* A content field: absent or null adds nothing, a string one TEXT part, an array its elements
 * through how->part in order. 0, or -1 with err (the first failing element stops the walk). */
int mg_codec_decode_content(const mg_codec_content_t *how, mg_ir_arena_t *a, const cJSON *content,
                            mg_ir_parts_t *pv, void *ud, char *err, size_t errlen);
/* Appends a TEXT part holding item's string member key ("" when missing). */
mg_ir_part_t *mg_codec_add_text(mg_ir_arena_t *a, mg_ir_parts_t *pv, const cJSON *item, const char *key);
/* Appends an IMAGE part for an OpenAI image URL: a base64 data URL is split into media_type and
 * data (mg_ir_parse_data_url), any other URL kept as url ("" when NULL). detail is borrowed. */
mg_ir_part_t *mg_codec_add_image_url(mg_ir_arena_t *a, mg_ir_parts_t *pv, const char *url, const char *detail);
/* Appends the TEXT parts of src to dst (system and developer content becomes the system prompt). */
void mg_codec_add_texts(mg_ir_arena_t *a, mg_ir_parts_t *dst, const mg_ir_parts_t *src);

/* body's numeric temperature and top_p into r (the three APIs spell them alike). */
void mg_codec_decode_sampling(const cJSON *body, mg_ir_request_t *r);
/* stop: a string or an array of them (non-strings skipped) into r->stop; anything else nothing. */
void mg_codec_decode_stop(mg_ir_arena_t *a, const cJSON *stop, mg_ir_request_t *r);
/* A function tool's description, parameter schema (an object under schema_key, else NULL) and
 * strict flag, read from fn. The name is the caller's: each API words its absence apart. */
void mg_codec_decode_tool(mg_ir_tool_t *o, const cJSON *fn, const char *schema_key);
/* An OpenAI output format: type "json_object", "json_schema" (name, schema and strict read from
 * schema_obj) or anything else (text). type NULL leaves r alone. */
void mg_codec_decode_format(mg_ir_request_t *r, const char *type, const cJSON *schema_obj);
/* An OpenAI tool_choice string: "none", "required", else auto. */
mg_ir_tool_choice_t mg_codec_openai_tool_choice(const char *s);
/* OpenAI's {"type":"allowed_tools"} tool choice, which other APIs lack: r->tools is cut to the
 * tools it lists (Chat {"type":"function","function":{"name"}}, Responses {"type":"function",
 * "name"}; another type matches a built-in tool of that type) and the choice becomes mode's,
 * "required" or auto (none of them exists: every tool stays, with the choice "none"). Call once
 * r->tools is decoded; false when tc is not such a choice. */
bool mg_codec_openai_allowed_tools(const cJSON *tc, mg_ir_request_t *r);
/* Copies body's members that are not in known (n names) into r->extras, in order. */
void mg_codec_decode_extras(const cJSON *body, mg_ir_request_t *r, const char *const *known, size_t n);

/* ---- encoding ---- */

/* {"type":type,"text":text} (text NULL: no text member, as cJSON does). Caller owns it. */
cJSON *mg_codec_text_json(const char *type, const char *text);
/* The URL an OpenAI API takes for an IMAGE part: a data URL for base64 data, else its url ("").
 * Caller frees. */
char *mg_codec_image_url(const mg_ir_part_t *p);
/* Whether any of the n parts is an IMAGE; an OPAQUE one. */
bool mg_codec_has_image(const mg_ir_part_t *parts, size_t n);
bool mg_codec_has_opaque(const mg_ir_part_t *parts, size_t n);
/* Adds key: the TEXT parts joined with blank lines ("" when there are none). */
void mg_codec_add_joined(cJSON *o, const char *key, const mg_ir_part_t *parts, size_t n);
/* Adds key: an array of the n strings. */
void mg_codec_add_strings(cJSON *o, const char *key, const char *const *v, size_t n);
/* The failure for an OPAQUE part of another API: "content of type "x" cannot be sent to <to>".
 * Returns -1. */
int mg_codec_opaque_fail(const mg_ir_part_t *p, mg_api_t to, char *err, size_t errlen);
/* A tool result's content on its way to `to`, held to the rule of top-level content: an OPAQUE
 * part in it (a document, a search result, a file) goes only to the API the request came from,
 * else the request fails as mg_codec_opaque_fail says (the candidate is skipped, rather than sent
 * with the part silently gone). 0, or -1 with err. */
int mg_codec_check_result(const mg_ir_request_t *ir, const mg_ir_part_t *result, mg_api_t to, char *err,
                          size_t errlen);

/* Builds a function tool the way the codec's API writes it (caller owns the result); same says
 * whether the request came from that API. */
typedef cJSON *(*mg_codec_tool_fn)(const mg_ir_tool_t *t, bool same);
/* Adds "tools" to o: each function tool through tool_json; a tool the model does not represent
 * (t->raw) copied as written when the request came from `to`, else a failure naming it (-1 with
 * err; o then holds a partial array, which the caller deletes with o). 0 on success. */
int mg_codec_encode_tools(cJSON *o, const mg_ir_request_t *ir, mg_api_t to, mg_codec_tool_fn tool_json,
                          char *err, size_t errlen);
/* Adds a function tool's name, description (when set) and parameter schema (under schema_key; an
 * empty object schema when it declared none). */
void mg_codec_add_tool_fields(cJSON *o, const mg_ir_tool_t *t, const char *schema_key);
/* OpenAI tool_choice into o: "auto", "none" or "required" as a string; NAMED as an object
 * {"type":"function"} that is returned for the caller to add the name where its API wants it;
 * UNSET adds nothing. NULL unless NAMED. */
cJSON *mg_codec_openai_tool_choice_json(cJSON *o, mg_ir_tool_choice_t c);
/* The name (default "response"), schema and strict flag of a json_schema output format. */
void mg_codec_add_format_schema(cJSON *o, const mg_ir_request_t *ir);
/* The OpenAI error body (Chat and Responses alike):
 * {"error":{"message","type","param":null,"code"}}; type derived as mg_ir_error_type(api…).
 * Caller frees. */
char *mg_codec_openai_error(mg_api_t api, int status, const char *type, const char *code, const char *message);

/* The answer id a client of the API whose ids start with prefix ("chatcmpl-", "msg_", "resp_")
 * sees: opt_id as given when set; the upstream's id as it came when it already starts with
 * prefix (the same API, or a server that follows it); else prefix + the upstream's whole id with
 * every byte outside [A-Za-z0-9_-] made "_", so the id has the shape the client's SDK and tools
 * expect and still leads back to the upstream's logs ("msg_chatcmpl-abc", "chatcmpl-msg_01x");
 * fallback + "-" + a process-unique suffix when the upstream sent none
 * ("chatcmpl-moongate-674a1b2c00002a"). With prefix "" the upstream's id is kept as it came (an
 * answer re-encoded for a client of the upstream's own API: mg_ir_output_opts_t.keep_upstream_id).
 * Whole answers and streams derive it alike. Caller frees. */
char *mg_codec_answer_id(const char *prefix, const char *opt_id, const char *up_id, const char *fallback);

/* A tool call id as Anthropic takes it (tool_use.id and tool_result.tool_use_id must match
 * ^[a-zA-Z0-9_-]+$; OpenAI's APIs take any string, e.g. Kimi K2's "functions.get_weather:0"):
 * every byte outside [A-Za-z0-9_-] made "_", the rule answer ids follow. Applied alike to a call
 * and to the result that answers it, so the pairs still match; ids already valid are unchanged,
 * so an Anthropic client's own ids come back as they went. NULL is "". Caller frees. */
char *mg_codec_anthropic_tool_id(const char *id);
/* An id for a tool call whose upstream sent none (Ollama's and vLLM's Chat streams, some
 * compatible servers): prefix ("call_", "toolu_") + a per-process random part + a process-wide
 * counter, so that ids never repeat across the answers of one conversation (Anthropic refuses
 * duplicate tool_use ids), nor across restarts. Made once per call by the decoder, which keeps it
 * for every event of that call. Caller frees. */
char *mg_codec_new_call_id(const char *prefix);

/* ---- streams ---- */

/* Emits a text-carrying event (a delta, a signature) unless s is NULL or empty; the callback's
 * value, or 0. */
int mg_codec_emit_text(mg_ir_event_type_t type, const char *s, int index, mg_ir_event_cb cb, void *ud);
/* The same for a piece of a refusal (a TEXT_DELTA marked refusal). */
int mg_codec_emit_refusal(const char *s, mg_ir_event_cb cb, void *ud);
/* The terminal events of a decoder: each sets *ended (so that the decoder ignores what follows)
 * and returns the callback's value. END; ERROR e; ERROR from an error event whose payload could
 * not be read (status 500, the given type, its whole text as the message: the relay scrubs the
 * provider's secrets out of it before it cuts it, so that a cut leaves no head of one); and ERROR for a
 * stream that stopped before the answer was complete (status 502, the given type). */
int mg_codec_emit_end(bool *ended, mg_ir_event_cb cb, void *ud);
int mg_codec_emit_error(bool *ended, const mg_ir_error_t *e, mg_ir_event_cb cb, void *ud);
int mg_codec_emit_raw_error(bool *ended, const char *type, const char *data, size_t len, mg_ir_event_cb cb,
                            void *ud);
int mg_codec_emit_truncated(bool *ended, const char *type, mg_ir_event_cb cb, void *ud);

/* An ERROR event as one SSE frame whose data is the API's error body (encode_error, status 500
 * when e has none); name is the `event:` line, NULL for none. */
void mg_codec_error_frame(mg_buf_t *out, const char *name, const mg_ir_error_t *e,
                          char *(*encode_error)(int status, const char *type, const char *code,
                                                const char *message));

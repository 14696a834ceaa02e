/* The internal model between the three client APIs and the three upstream APIs (DESIGN.md: "one
 * internal request model"): a request, a whole response, and the events of a streamed response.
 * Each API file (api_openai_chat.c, api_openai_responses.c, api_anthropic.c) decodes its JSON into
 * this model and encodes this model into its JSON, so translation is 3 decoders + 3 encoders per
 * direction, not 9 special cases. Pure: knows nothing of HTTP, curl, Lua or threads. Uses cJSON
 * and util.h.
 *
 * Ownership, once for the whole layer:
 * - A decoded request or response lives in an mg_ir_arena_t. Its strings and arrays are allocated
 *   in the arena or BORROWED from the cJSON document that was decoded (cJSON pointers in the model
 *   are borrowed, const, and never freed through the model; only `extras` is a tree the arena
 *   owns). So the decoded document must
 *   outlive the model, and the arena is released once, at the end of the request
 *   (mg_ir_arena_free). Code that edits a model (compaction) allocates its new strings in the same
 *   arena and never frees anything.
 * - Encoders never keep pointers into the model: every cJSON they return is a fresh tree the caller
 *   owns (cJSON_Delete), and borrowed subtrees are copied into it.
 * - Stream events are borrowed views, valid only during the callback that receives them.
 *
 * Threads: nothing here is shared; one decoder and one encoder per stream, used by one thread at
 * a time. Allocation failure aborts (util.h OOM policy). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "config.h" /* mg_api_t */
#include "util.h"

/* ---------------------------------------------------------------------------------------------
 * Arena: what lives exactly as long as one request. */

typedef struct mg_ir_arena mg_ir_arena_t;

mg_ir_arena_t *mg_ir_arena_new(void);
/* Frees every allocation and every kept cJSON tree. NULL is fine. */
void mg_ir_arena_free(mg_ir_arena_t *a);
/* Zeroed memory, aligned for any type, freed with the arena. */
void *mg_ir_alloc(mg_ir_arena_t *a, size_t n);
char *mg_ir_strdup(mg_ir_arena_t *a, const char *s);          /* NULL → NULL */
char *mg_ir_strndup(mg_ir_arena_t *a, const char *s, size_t n); /* NUL-terminated copy */
/* Parses len bytes of JSON as cJSON_ParseWithLengthOpts(text, len, end, 0) does, into a tree
 * whose nodes and strings live in the arena: it goes with the arena, never through cJSON_Delete.
 * Read it only: nothing may be detached from it, replaced or deleted in it, or set through a
 * cJSON call that frees (cJSON_SetValuestring…); copy with cJSON_Duplicate to edit. NULL when the
 * text is not JSON (its partial tree stays in the arena). end may be NULL. \u0000 and lone
 * surrogate escapes are read as U+FFFD (mg_json_fix_escapes): text itself is not changed. */
cJSON *mg_ir_parse_json(mg_ir_arena_t *a, const char *text, size_t len, const char **end);
/* The same for a stream event, a tool call's arguments or an error body: a tree from malloc (the
 * caller cJSON_Deletes it), NULL when the text is not JSON. Budgeted as mg_ir_parse_json is. */
cJSON *mg_ir_parse_text(const char *text, size_t len);
/* What one mg_ir_parse_json or mg_ir_parse_text may allocate (or twice the text's length, if
 * more): a document needing more is refused (NULL), so that a body made of millions of tiny
 * values (64+ bytes of cJSON node each) cannot take gigabytes. */
#define MG_IR_PARSE_MAX_BYTES ((size_t)64 << 20)
/* Whether the calling thread's last parse failed for want of that memory. */
bool mg_ir_parse_too_large(void);
/* The longest upstream error body read as JSON: the classifier's cap for the same bodies
 * (classify.c MAX_JSON_BYTES). Only its message is wanted, and a real one is a few hundred bytes;
 * a longer body is read as text (its first bytes), so that a hostile upstream's error of millions
 * of tiny values costs no tree at all (at most 8 MiB of one under this cap, freed at once). */
#define MG_IR_ERROR_JSON_MAX ((size_t)256 << 10)
/* mg_ir_parse_text for an upstream's error body: NULL as well when it is empty or longer than
 * MG_IR_ERROR_JSON_MAX. */
cJSON *mg_ir_parse_error_body(const char *body, size_t len);
/* Takes ownership of j: it is deleted with the arena. Returns j. */
cJSON *mg_ir_keep_json(mg_ir_arena_t *a, cJSON *j);
/* Grows an arena array of elem-sized items from n to at least n + 1 (amortised doubling; the old
 * block stays in the arena). Use as: arr = mg_ir_grow(a, arr, n, &cap, sizeof *arr); arr[n++] = … */
void *mg_ir_grow(mg_ir_arena_t *a, void *arr, size_t n, size_t *cap, size_t elem);

/* ---------------------------------------------------------------------------------------------
 * The request. */

typedef enum mg_ir_role {
    MG_IR_USER,
    MG_IR_ASSISTANT,
    MG_IR_TOOL, /* holds only TOOL_RESULT parts (Chat role "tool", Anthropic tool_result blocks,
                   Responses function_call_output items) */
} mg_ir_role_t;

typedef enum mg_ir_part_type {
    MG_IR_PART_TEXT,
    MG_IR_PART_IMAGE,
    MG_IR_PART_TOOL_CALL,
    MG_IR_PART_TOOL_RESULT,
    MG_IR_PART_REASONING,
    /* A part this model does not represent (audio, files, documents, server tools…): kept raw and
     * re-emitted only when encoding for the API it came from (mg_ir_request_t.source); any other
     * encoder refuses the request (the candidate cannot serve it). */
    MG_IR_PART_OPAQUE,
} mg_ir_part_type_t;

typedef struct mg_ir_part {
    mg_ir_part_type_t type;
    const char *text; /* TEXT; REASONING (the readable thinking or summary, maybe "") */
    /* TEXT of an answer: the model's refusal (Chat message.refusal, a Responses refusal part),
     * which structured-output clients check instead of parsing it as the answer. Anthropic has
     * no such block: its encoder writes it as text. */
    bool refusal;
    /* IMAGE: either url (http/https) or media_type + data (base64, no "data:" prefix). */
    const char *url;
    const char *media_type;
    const char *data;
    const char *detail; /* OpenAI image detail, or NULL */
    /* TOOL_CALL: id, name, arguments (JSON text; never NULL after decoding, "{}" when empty).
     * TOOL_RESULT: id is the id of the call it answers; parts its content (TEXT / IMAGE, and
     * OPAQUE under the same rule as anywhere: documents, search results, files). */
    const char *id;
    const char *name;
    const char *arguments;
    struct mg_ir_part *parts;
    size_t n_parts;
    bool is_error; /* TOOL_RESULT */
    /* REASONING, opaque round-trip state; each is only meaningful to the API that produced it. */
    const char *signature; /* Anthropic thinking signature */
    const char *redacted;  /* Anthropic redacted_thinking data (text is NULL then) */
    const char *encrypted; /* Responses encrypted_content; id holds the rs_ item id */
    /* TOOL_CALL and assistant TEXT decoded from a Responses request: the id of the input item
     * they came from (fc_…, msg_…), or NULL. OpenAI pairs a reasoning item with the item after it
     * by this id, so the Responses encoder writes it back (same API only; the others have no
     * such ids). Consecutive TEXT parts of one message item share it. */
    const char *item_id;
    const cJSON *cache_control; /* Anthropic cache_control on this block, or NULL */
    const cJSON *raw;           /* OPAQUE: the part as the source API wrote it */
} mg_ir_part_t;

typedef struct mg_ir_message {
    mg_ir_role_t role;
    mg_ir_part_t *parts;
    size_t n_parts;
    /* Chat: the message object as the client wrote it, or NULL. A Chat re-encode of a Chat
     * request (compaction, the safety filters) copies the members the codec does not write
     * (name, DeepSeek's and Mistral's prefix…); other APIs have no place for them. */
    const cJSON *raw;
} mg_ir_message_t;

typedef struct mg_ir_tool {
    const char *name;
    const char *description;  /* or NULL */
    const cJSON *parameters;  /* JSON schema, or NULL (encoders send an empty object schema) */
    int strict;               /* -1 unset, 0, 1 */
    const cJSON *cache_control;
    const cJSON *raw; /* a non-function tool (built-in / server tool), same-API only like OPAQUE */
} mg_ir_tool_t;

typedef enum mg_ir_tool_choice {
    MG_IR_TOOL_CHOICE_UNSET,
    MG_IR_TOOL_CHOICE_AUTO,
    MG_IR_TOOL_CHOICE_NONE,
    MG_IR_TOOL_CHOICE_REQUIRED, /* Anthropic "any" */
    MG_IR_TOOL_CHOICE_NAMED,    /* tool_choice_name */
} mg_ir_tool_choice_t;

typedef enum mg_ir_effort {
    MG_IR_EFFORT_UNSET,
    MG_IR_EFFORT_NONE, /* reasoning explicitly off (Anthropic thinking disabled, effort "none") */
    MG_IR_EFFORT_MINIMAL,
    MG_IR_EFFORT_LOW,
    MG_IR_EFFORT_MEDIUM,
    MG_IR_EFFORT_HIGH,
} mg_ir_effort_t;

typedef enum mg_ir_format_type {
    MG_IR_FORMAT_UNSET,
    MG_IR_FORMAT_TEXT,
    MG_IR_FORMAT_JSON_OBJECT,
    MG_IR_FORMAT_JSON_SCHEMA,
} mg_ir_format_type_t;

typedef struct mg_ir_request {
    mg_api_t source; /* the API this was decoded from (extras and OPAQUE parts belong to it) */
    const char *model;
    mg_ir_part_t *system; /* TEXT parts: system prompt, developer and system messages, instructions */
    size_t n_system;
    mg_ir_message_t *messages;
    size_t n_messages;
    mg_ir_tool_t *tools;
    size_t n_tools;
    mg_ir_tool_choice_t tool_choice;
    const char *tool_choice_name;
    int parallel_tool_calls;   /* -1 unset, 0, 1 */
    int64_t max_output_tokens; /* -1 unset */
    bool max_completion_tokens_field; /* Chat: the client used max_completion_tokens */
    const char **stop;
    size_t n_stop;
    bool has_temperature, has_top_p;
    double temperature, top_p;
    mg_ir_effort_t effort;
    mg_ir_effort_t output_effort; /* Anthropic's output_config.effort: the reasoning effort another
                                     API is asked for when nothing else says one (an Anthropic
                                     upstream gets output_config as it came) */
    int64_t reasoning_budget;       /* Anthropic thinking budget_tokens, -1 unset */
    bool reasoning_adaptive;        /* Anthropic thinking {type:"adaptive"} */
    const char *reasoning_summary;  /* Responses reasoning.summary, or NULL */
    bool stream;
    bool include_usage; /* Chat stream_options.include_usage (what the CLIENT asked for) */
    const char *user;   /* Chat/Responses user, Anthropic metadata.user_id */
    mg_ir_format_type_t format;
    const char *format_name;
    const cJSON *format_schema;
    int format_strict; /* -1 unset */
    int n;             /* Chat n (choices); 1 when absent. Other APIs cannot serve n > 1 */
    const char *previous_response_id; /* Responses server-side state: same API only */
    /* A member of the request that only its own API has and that cannot be left out without
     * changing what is asked (Anthropic's mcp_servers): its name, and every other API's encoder
     * refuses the request (the candidate is skipped as unsupported). NULL: none. */
    const char *own_api_only;
    /* Top-level members the decoder did not model, in source order (an object owned by the
     * arena). Copied only when encoding for the same API. */
    cJSON *extras;
} mg_ir_request_t;

/* ---------------------------------------------------------------------------------------------
 * The response (whole, and as events). */

typedef enum mg_ir_finish {
    MG_IR_FINISH_NONE,
    MG_IR_FINISH_STOP,           /* Anthropic end_turn, Chat stop, Responses completed */
    MG_IR_FINISH_STOP_SEQUENCE,  /* Anthropic stop_sequence */
    MG_IR_FINISH_LENGTH,         /* max_tokens / length / incomplete max_output_tokens */
    MG_IR_FINISH_TOOL_CALLS,     /* tool_use / tool_calls */
    MG_IR_FINISH_CONTENT_FILTER, /* refusal / content_filter */
    MG_IR_FINISH_PAUSE,          /* Anthropic pause_turn */
    MG_IR_FINISH_CONTEXT_WINDOW, /* Anthropic model_context_window_exceeded */
} mg_ir_finish_t;

/* Token counts; -1 = unknown. input is the WHOLE prompt, cached tokens included (the OpenAI
 * convention; PROTOCOLS B.4): Anthropic's input_tokens = input - cache_read - cache_write. */
typedef struct mg_ir_usage {
    int64_t input;
    int64_t output;
    int64_t cache_read;
    int64_t cache_write;
    int64_t reasoning; /* included in output */
} mg_ir_usage_t;

#define MG_IR_USAGE_UNKNOWN ((mg_ir_usage_t){-1, -1, -1, -1, -1})

typedef struct mg_ir_response {
    const char *id;
    const char *model;
    int64_t created; /* unix seconds, 0 = unknown */
    mg_ir_part_t *parts; /* REASONING, TEXT and TOOL_CALL parts in output order */
    size_t n_parts;
    mg_ir_finish_t finish;
    const char *stop_sequence;
    mg_ir_usage_t usage;
} mg_ir_response_t;

/* An error from an upstream (HTTP body or in-stream event), in neutral form. */
typedef struct mg_ir_error {
    int status;          /* the HTTP status that fits (429, 500, 529…) */
    const char *type;    /* as the upstream named it ("overloaded_error", "server_error"), or NULL */
    const char *code;    /* OpenAI-style code ("context_length_exceeded"), or NULL */
    const char *message; /* never NULL once filled */
} mg_ir_error_t;

typedef enum mg_ir_event_type {
    MG_IR_EV_START,            /* id, model, created, usage (what is known at start) */
    MG_IR_EV_REASONING_DELTA,  /* text */
    MG_IR_EV_REASONING_SIGNATURE, /* text = the opaque signature (Anthropic) */
    MG_IR_EV_TEXT_DELTA,       /* text */
    MG_IR_EV_TOOL_CALL_START,  /* index, id, name */
    MG_IR_EV_TOOL_CALL_DELTA,  /* index, text = an arguments fragment */
    MG_IR_EV_BLOCK_END,        /* the current block (thinking, text or tool call) is complete */
    MG_IR_EV_OPAQUE_BLOCK,     /* a block this model does not represent began (Anthropic's
                                  redacted_thinking, server tool use and results): content for
                                  the commit point, carried only by a stream passed through */
    MG_IR_EV_FINISH,           /* finish, stop_sequence; at most once (decoders keep the first) */
    MG_IR_EV_USAGE,            /* usage: a full snapshot; the latest one wins */
    MG_IR_EV_END,              /* the upstream said the answer is complete */
    MG_IR_EV_ERROR,            /* error: the stream failed; nothing follows */
} mg_ir_event_type_t;

/* One stream event. Every pointer is borrowed and valid only during the callback. */
typedef struct mg_ir_event {
    mg_ir_event_type_t type;
    const char *text; /* NOT NUL-terminated: use text_len */
    size_t text_len;
    bool refusal;     /* TEXT_DELTA: a piece of a refusal (mg_ir_part_t.refusal) */
    int index;        /* TOOL_CALL_*: the ordinal of the call in this answer (0, 1, …) */
    const char *id;   /* START: response id; TOOL_CALL_START: call id (NUL-terminated) */
    const char *name; /* TOOL_CALL_START: function name */
    const char *model;
    int64_t created;
    mg_ir_finish_t finish;
    const char *stop_sequence;
    mg_ir_usage_t usage;
    mg_ir_error_t error;
} mg_ir_event_t;

/* Called for each decoded event. Return 0 to go on; a nonzero value stops the decoder, which
 * returns it. */
typedef int (*mg_ir_event_cb)(void *ud, const mg_ir_event_t *ev);

/* Text, tool call or reasoning delta: something an answer is made of. The gateway's commit point
 * is the first such event (a FINISH with no content before it is an empty answer, which the relay
 * may also treat as committing). Reasoning counts even when the client's encoder strips it. */
bool mg_ir_event_is_content(const mg_ir_event_t *ev);

const char *mg_ir_event_name(mg_ir_event_type_t t);
const char *mg_ir_finish_name(mg_ir_finish_t f);

/* ---------------------------------------------------------------------------------------------
 * Options. */

/* Encoding a request for an upstream. */
typedef struct mg_ir_request_opts {
    const char *model;          /* the upstream's model id (required) */
    int64_t default_max_tokens; /* Anthropic max_tokens when the request has none: the model's
                                   maxTokens; <= 0 means 4096 */
    bool prefer_max_completion_tokens; /* Chat: send max_completion_tokens (OpenAI's o-series
                                          and gpt-5 refuse max_tokens) rather than max_tokens
                                          (what local servers know). The router sets it for a
                                          model with reasoning: true on a provider that is not
                                          local */
} mg_ir_request_opts_t;

/* Encoding an answer for a client (whole or streamed). */
typedef struct mg_ir_output_opts {
    const char *model;    /* model name shown to the client; NULL = the upstream's */
    const char *default_model; /* shown when the upstream names none (some local servers): the
                                  catalog id of the model that answered */
    const char *id;       /* response id to show; NULL = the upstream's (or a made-up one) */
    int64_t created;      /* unix seconds; 0 = the upstream's, else the wall clock */
    bool strip_reasoning; /* drop reasoning entirely: only final text and tool calls go out */
    bool include_usage;   /* Chat streams: send the usage chunk (the client's
                             stream_options.include_usage). Other APIs always carry usage. */
    bool keep_upstream_id; /* the upstream's id as it came, without the client API's prefix: an
                              answer re-encoded for a client of the upstream's own API */
    /* The client's request body, or NULL. A Response object repeats the request's parameters
     * (instructions, metadata, tools, text.format, temperature…): the Responses encoder echoes
     * them from here, else shows the API's defaults. Borrowed: read only while the encoder is
     * made (it keeps a copy of what it echoes) or the whole answer encoded. */
    const cJSON *request;
} mg_ir_output_opts_t;

/* Decoding an upstream stream or response. */
typedef struct mg_ir_decode_opts {
    bool no_think_tags; /* Chat: do NOT split "<think>…</think>" at the start of content into
                           reasoning (it is split by default, for local models) */
} mg_ir_decode_opts_t;

/* ---------------------------------------------------------------------------------------------
 * The codec interface: one per API, all with the same functions (a test checks each is complete).
 * Functions that fail write a one-line reason into err (always NUL-terminated when errlen > 0). */

typedef struct mg_ir_codec {
    mg_api_t api;
    const char *name;
    /* Client request JSON → model. body is borrowed and must outlive *out. 0 or -1. */
    int (*decode_request)(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *out, char *err,
                          size_t errlen);
    /* Model → upstream request JSON (caller owns it), or NULL when this API cannot carry the
     * request (an OPAQUE part from another API, n > 1, previous_response_id…). */
    cJSON *(*encode_request)(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts, char *err,
                             size_t errlen);
    /* Upstream whole response JSON → model. body borrowed, must outlive *out. 0 or -1. */
    int (*decode_response)(const cJSON *body, mg_ir_arena_t *a, const mg_ir_decode_opts_t *opts,
                           mg_ir_response_t *out, char *err, size_t errlen);
    /* Model → client whole response JSON (caller owns it). Never fails. */
    cJSON *(*encode_response)(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts);
    /* An HTTP error body in this API's format (caller frees the string). type and code may be
     * NULL: they are then derived from status. */
    char *(*encode_error)(int status, const char *type, const char *code, const char *message);
    /* Stream decoder (upstream SSE events → model events) and encoder (model events → client
     * SSE bytes): see the mg_ir_decoder_* / mg_ir_encoder_* wrappers below. */
    void *(*decoder_new)(const mg_ir_decode_opts_t *opts);
    int (*decoder_feed)(void *st, const char *type, size_t type_len, const char *data,
                        size_t data_len, mg_ir_event_cb cb, void *ud);
    int (*decoder_finish)(void *st, mg_ir_event_cb cb, void *ud);
    void (*decoder_free)(void *st);
    void *(*encoder_new)(const mg_ir_output_opts_t *opts);
    void (*encoder_push)(void *st, const mg_ir_event_t *ev, mg_buf_t *out);
    bool (*encoder_done)(const void *st);
    void (*encoder_free)(void *st);
} mg_ir_codec_t;

/* The codec of an API (never NULL for a valid mg_api_t). */
const mg_ir_codec_t *mg_ir_codec(mg_api_t api);

/* ---------------------------------------------------------------------------------------------
 * Streams. Per upstream SSE event (from sse.h):
 *     mg_ir_decoder_feed(dec, ev->type, ev->type_len, ev->data, ev->data_len, on_ir_event, ctx);
 * and in on_ir_event: commit check (mg_ir_event_is_content), then
 *     mg_ir_encoder_push(enc, ev, &bytes_for_client);
 * At the end of the upstream body call mg_ir_decoder_finish (which emits END, or an ERROR when
 * the upstream stopped before finishing). mg_ir_encoder_done tells whether the client's stream
 * has been terminated (END or ERROR written). */

typedef struct mg_ir_decoder mg_ir_decoder_t;
typedef struct mg_ir_encoder mg_ir_encoder_t;

/* opts may be NULL. The decoder reads `type` to recognise typed events (Anthropic, Responses,
 * LM Studio's "error"); data is one event's payload. Bytes are borrowed for the call. Returns 0 or
 * the callback's nonzero value. Events after an ERROR or END are ignored. */
mg_ir_decoder_t *mg_ir_decoder_new(mg_api_t upstream, const mg_ir_decode_opts_t *opts);
int mg_ir_decoder_feed(mg_ir_decoder_t *d, const char *type, size_t type_len, const char *data,
                       size_t data_len, mg_ir_event_cb cb, void *ud);
int mg_ir_decoder_finish(mg_ir_decoder_t *d, mg_ir_event_cb cb, void *ud);
void mg_ir_decoder_free(mg_ir_decoder_t *d);

/* opts may be NULL; its strings are copied. push appends the SSE bytes the client must receive
 * for ev (possibly none) to out. Once END or ERROR was pushed the encoder is done and ignores
 * further events. An encoder never emits bytes that break its client SDK: it opens the message
 * lazily if START never came, closes blocks itself, and ends a stream that got END without FINISH
 * as a normal stop. */
mg_ir_encoder_t *mg_ir_encoder_new(mg_api_t client, const mg_ir_output_opts_t *opts);
void mg_ir_encoder_push(mg_ir_encoder_t *e, const mg_ir_event_t *ev, mg_buf_t *out);
bool mg_ir_encoder_done(const mg_ir_encoder_t *e);
void mg_ir_encoder_free(mg_ir_encoder_t *e);

/* ---------------------------------------------------------------------------------------------
 * Whole-body helpers for the request path. */

/* Decodes a client request (mg_ir_codec(from)->decode_request). */
int mg_ir_decode_request(mg_api_t from, const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *out,
                         char *err, size_t errlen);
cJSON *mg_ir_encode_request(mg_api_t to, const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                            char *err, size_t errlen);
/* The events a stream of r would have carried, in order, to cb: START, each reasoning, text and
 * tool call part (its delta, then BLOCK_END), FINISH, USAGE, END. For an upstream that answered a
 * streaming request with a whole response: an encoder turns these into the client's stream.
 * Returns 0 or cb's nonzero value. */
int mg_ir_response_events(const mg_ir_response_t *r, mg_ir_event_cb cb, void *ud);

/* A unique answer id for an answer whose upstream gave none: fallback + "-" + a process-unique
 * suffix ("chatcmpl-moongate-674a1b2c00002a"), as the codecs make them. Caller frees. */
char *mg_ir_placeholder_id(const char *fallback);

/* j as unformatted JSON text that is valid UTF-8, whatever bytes its strings hold. cJSON parses
 * and prints string bytes as they are, so an upstream's (or a client's) bytes that are not UTF-8
 * would reach the other side as they came; here each such byte is written \ufffd, one per byte
 * as mg_buf_json_strn does. Well-formed text comes out as cJSON_PrintUnformatted writes it (one
 * more pass over it, no copy). Translated answers and requests, and the stream events encoders
 * build as trees (mg_ir_sse_json), are printed through this; what encoders write by hand goes
 * through mg_buf_json_str. *len (when not NULL) gets the length; the caller frees the text
 * (free()). */
char *mg_ir_print_json(const cJSON *j, size_t *len);

/* Upstream response body text (API `from`) → client response JSON (API `to`); caller owns it.
 * NULL with err when the body is not a valid response. */
cJSON *mg_ir_translate_response(mg_api_t from, mg_api_t to, const char *body, size_t len,
                                const mg_ir_decode_opts_t *dopts, const mg_ir_output_opts_t *opts,
                                char *err, size_t errlen);

/* Reads an error out of an upstream error body in any of the formats we know (OpenAI, Anthropic,
 * vLLM's unwrapped {"object":"error"}, LM Studio's {"error":"string"}, OpenRouter's numeric code,
 * a Responses `error` event or `response.failed`). http_status is the status it came with (0 or
 * 200 when in a stream; the status is then derived from the type/code). A message in any of the
 * known context-overflow wordings (classify.c) gets code "context_length_exceeded". Strings are
 * copied into the arena. Always fills *out (a body it cannot read, or one longer than
 * MG_IR_ERROR_JSON_MAX, becomes its first 500 bytes, trimmed: scrub secrets from body first). */
void mg_ir_error_from_body(mg_ir_arena_t *a, long http_status, const char *body, size_t len,
                           mg_ir_error_t *out);
/* The same from a parsed document; strings borrowed from j. Returns false (and leaves *out
 * untouched) when j carries no error. */
bool mg_ir_error_from_json(const cJSON *j, long http_status, mg_ir_error_t *out);
/* An upstream error re-encoded as an HTTP error body for the client's API (caller frees). */
char *mg_ir_encode_error(mg_api_t client, const mg_ir_error_t *e);

/* A code for Responses' `error` event and response.failed: e->code, else one derived from the
 * type and status ("server_error", "rate_limit_exceeded", "invalid_prompt"…). */
const char *mg_ir_error_code(const mg_ir_error_t *e);
/* The error type an API's clients expect for (status, upstream type). */
const char *mg_ir_error_type(mg_api_t api, int status, const char *type);

/* ---------------------------------------------------------------------------------------------
 * Collector: folds stream events into a whole response, following the same block rules as the
 * encoders (a new part when the kind changes, after BLOCK_END, and at each TOOL_CALL_START). Used
 * by the Responses encoder (response.completed repeats the whole output), by tests and fuzzers,
 * and available for access logging. Each delta is kept as the encoders write it: its bytes that
 * are not well-formed UTF-8 become U+FFFD (mg_buf_append_utf8), delta by delta, so the whole text
 * repeats what the deltas said even when an upstream cut a character between two of them. */

typedef struct mg_ir_cpart {
    mg_ir_part_type_t type; /* TEXT, REASONING or TOOL_CALL */
    bool refusal;           /* TEXT */
    mg_buf_t text;          /* text, reasoning, or arguments */
    mg_buf_t signature;
    char *id, *name;
    int index; /* TOOL_CALL */
} mg_ir_cpart_t;

typedef struct mg_ir_collector {
    char *id, *model;
    int64_t created;
    mg_ir_cpart_t *parts;
    size_t n_parts, cap;
    bool open;   /* the last part may still grow */
    int n_tools; /* TOOL_CALL_START seen */
    mg_ir_finish_t finish;
    char *stop_sequence;
    mg_ir_usage_t usage;
    bool started, ended, failed;
    mg_ir_error_t error; /* when failed; strings owned by the collector */
} mg_ir_collector_t;

void mg_ir_collector_init(mg_ir_collector_t *c);
void mg_ir_collector_push(mg_ir_collector_t *c, const mg_ir_event_t *ev);
/* A view of what was collected; strings are borrowed from c (valid until it changes or is
 * freed), arrays allocated in a. */
void mg_ir_collector_response(const mg_ir_collector_t *c, mg_ir_arena_t *a, mg_ir_response_t *out);
void mg_ir_collector_free(mg_ir_collector_t *c);

/* ---------------------------------------------------------------------------------------------
 * Small helpers shared by the codecs (not for other modules). */

const char *mg_ir_jstr(const cJSON *o, const char *key);   /* string member or NULL */
/* The name of a stream event: its payload's own "type", else the SSE `event:` line (copied into
 * buf, cut to fit). The result is borrowed from j or buf. */
const char *mg_ir_event_type(const cJSON *j, const char *type, size_t type_len, char *buf, size_t buflen);
/* x when it is an array, else NULL: for cJSON_ArrayForEach (whose argument is unparenthesised). */
static inline cJSON *mg_ir_arr(const cJSON *x)
{
    return cJSON_IsArray(x) ? (cJSON *)x : NULL;
}
int64_t mg_ir_jint(const cJSON *o, const char *key, int64_t dflt); /* number member or dflt */
const cJSON *mg_ir_jget(const cJSON *o, const char *key);  /* any member or NULL */
/* Parses a "data:<media>;base64,<data>" URL into the arena. */
bool mg_ir_parse_data_url(mg_ir_arena_t *a, const char *url, const char **media_type,
                          const char **data);
/* "data:<media_type>;base64,<data>" (caller frees). */
char *mg_ir_data_url(const char *media_type, const char *data);
/* Effort ↔ Anthropic thinking budget (low 1024, medium 2048, high 4096, as LiteLLM maps them). */
int64_t mg_ir_effort_budget(mg_ir_effort_t e);
mg_ir_effort_t mg_ir_budget_effort(int64_t budget);
const char *mg_ir_effort_name(mg_ir_effort_t e); /* "low"…; NULL for UNSET */
mg_ir_effort_t mg_ir_effort_parse(const char *s); /* UNSET for unknown */
/* The effective effort of a request (effort, else from the budget, else UNSET). */
mg_ir_effort_t mg_ir_request_effort(const mg_ir_request_t *ir);
/* A growable list of parts in the arena. */
typedef struct mg_ir_parts {
    mg_ir_part_t *v;
    size_t n, cap;
} mg_ir_parts_t;
mg_ir_part_t *mg_ir_parts_add(mg_ir_arena_t *a, mg_ir_parts_t *pv, mg_ir_part_type_t type);
/* Appends a message to r (messages grown in the arena; *cap tracks the capacity). */
mg_ir_message_t *mg_ir_add_message(mg_ir_arena_t *a, mg_ir_request_t *r, size_t *cap,
                                   mg_ir_role_t role, const mg_ir_parts_t *parts);
/* Fills *r with the defaults (everything unset, n = 1, extras an empty object in the arena). */
void mg_ir_request_init(mg_ir_arena_t *a, mg_ir_request_t *r, mg_api_t source);
/* Joins TEXT parts with sep into a heap string (caller frees); NULL when there are none. */
char *mg_ir_join_text(const mg_ir_part_t *parts, size_t n, const char *sep);
/* The finish to tell a client: with tool calls, a STOP/NONE finish is really TOOL_CALLS (clients
 * such as Claude Code run tools only on tool_use); without any, TOOL_CALLS is a STOP; NONE is a
 * STOP. */
mg_ir_finish_t mg_ir_effective_finish(mg_ir_finish_t f, bool has_tool_calls);
/* Whether a model part (OPAQUE, raw tool) from `source` can be sent to `target`. */
bool mg_ir_same_api(mg_api_t source, mg_api_t target);
/* Appends "event: <name>\ndata: <json>\n\n" (name NULL: data line only). json is a finished
 * single-line JSON text. */
void mg_ir_sse_frame(mg_buf_t *out, const char *name, const char *json, size_t json_len);
/* Appends a decimal integer (the hot paths avoid printf). */
void mg_ir_buf_int(mg_buf_t *b, int64_t v);
/* Serialises j with mg_ir_print_json and appends it as one frame. */
void mg_ir_sse_json(mg_buf_t *out, const char *name, const cJSON *j);
/* snprintf into err when errlen > 0; returns -1 (for `return mg_ir_fail(...)`). */
int mg_ir_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Copies the request's unmodelled top-level members (ir->extras) into o, where o has no member of
 * that name yet. Only for the API the request came from. */
void mg_ir_copy_extras(cJSON *o, const mg_ir_request_t *ir);
/* The wall clock in unix seconds, or opts->created, or upstream. */
int64_t mg_ir_created(const mg_ir_output_opts_t *opts, int64_t upstream);
/* The model name an answer shows: opts->model, else the upstream's when it named one, else
   opts->default_model, else "". opts may be NULL. */
const char *mg_ir_model_shown(const mg_ir_output_opts_t *opts, const char *upstream);
/* {"type":"object","properties":{}}: the schema of a tool that declared none (caller owns). */
cJSON *mg_ir_empty_schema(void);
/* cJSON helpers: add an int64 number; add a duplicate of a borrowed subtree (NULL → nothing). */
void mg_ir_add_int(cJSON *o, const char *key, int64_t v);
void mg_ir_add_dup(cJSON *o, const char *key, const cJSON *v);

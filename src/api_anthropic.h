/* Anthropic Messages (POST /v1/messages), both as the client's API and as the upstream's
 * ("anthropic-messages"): requests, whole responses, stream events and error bodies, to and from
 * the internal model (ir.h). PROTOCOLS.md A.3 for the wire, B.1–B.5 for the translation rules:
 * system at top level, max_tokens required, the first message a user one, roles alternating
 * (consecutive same-role messages merged, tool results folded into a user message of tool_result
 * blocks), thinking blocks with their signatures kept for the round trip, input_tokens excluding
 * the cache. Pure; uses ir.h, cJSON and util.h. Ownership as in ir.h. */
#pragma once
#include "ir.h"

extern const mg_ir_codec_t mg_anthropic_codec;

/* Request JSON ↔ model. decode: body borrowed, must outlive *out; a role:"system" message
 * (SDK 1.11) joins the system prompt. encode: caller owns the result; NULL (with err) when the
 * request holds what Anthropic cannot carry (n > 1, another API's opaque parts or tools).
 * max_tokens defaults to opts->default_max_tokens; thinking gets a budget from the effort
 * (ir.h mg_ir_effort_budget) kept below max_tokens, and then temperature/top_p values Anthropic
 * refuses alongside thinking are left out. No thinking when the last assistant message holds a
 * tool_use and does not open with signed thinking (Anthropic refuses that). Tool ids are made
 * valid for Anthropic (mg_codec_anthropic_tool_id), in requests and answers alike. */
int mg_anthropic_decode_request(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *out,
                                char *err, size_t errlen);
cJSON *mg_anthropic_encode_request(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                                   char *err, size_t errlen);

/* Whole response JSON ↔ model. decode fails on an error body. */
int mg_anthropic_decode_response(const cJSON *body, mg_ir_arena_t *a,
                                 const mg_ir_decode_opts_t *opts, mg_ir_response_t *out, char *err,
                                 size_t errlen);
cJSON *mg_anthropic_encode_response(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts);

/* {"type":"error","error":{"type","message"}}; type NULL or not an Anthropic type → derived
 * from status. code is unused. Caller frees. */
char *mg_anthropic_encode_error(int status, const char *type, const char *code, const char *message);

/* Stream decoder: message_start … message_stop → model events. */
void *mg_anthropic_decoder_new(const mg_ir_decode_opts_t *opts);
int mg_anthropic_decoder_feed(void *st, const char *type, size_t type_len, const char *data,
                              size_t data_len, mg_ir_event_cb cb, void *ud);
int mg_anthropic_decoder_finish(void *st, mg_ir_event_cb cb, void *ud);
void mg_anthropic_decoder_free(void *st);

/* Stream encoder: every frame has an `event:` line; message_start first; content_block_start /
 * delta / stop with increasing index (a new block whenever the kind changes); the stop reason is
 * held until the end so message_delta carries it together with usage.output_tokens (B.5.1), then
 * message_stop. An ERROR becomes `event: error`. */
void *mg_anthropic_encoder_new(const mg_ir_output_opts_t *opts);
void mg_anthropic_encoder_push(void *st, const mg_ir_event_t *ev, mg_buf_t *out);
bool mg_anthropic_encoder_done(const void *st);
void mg_anthropic_encoder_free(void *st);

/* stop_reason ↔ model (PROTOCOLS B.3). */
const char *mg_anthropic_stop_reason(mg_ir_finish_t f);
mg_ir_finish_t mg_anthropic_parse_stop_reason(const char *s);

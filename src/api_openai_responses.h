/* OpenAI Responses (POST /v1/responses), both as the client's API and as the upstream's
 * ("openai-responses"): requests, whole responses, stream events and error bodies, to and from
 * the internal model (ir.h). PROTOCOLS.md A.2 for the wire and B.1–B.6 for the translation rules.
 * Reasoning goes to clients as reasoning items with summary_text parts; both summary and raw
 * reasoning_text are read from upstreams. Pure; uses ir.h, cJSON and util.h. Ownership as in
 * ir.h. */
#pragma once
#include "ir.h"

extern const mg_ir_codec_t mg_openai_responses_codec;

/* Request JSON ↔ model. decode: body borrowed, must outlive *out; input items of one assistant
 * turn (reasoning, message, function_call) become one assistant message, consecutive
 * function_call_output items one tool message. encode: caller owns the result; NULL (with err)
 * when the request holds what Responses cannot carry (n > 1, another API's opaque parts or
 * tools). Stop sequences have no Responses field and are dropped; function tools from other APIs
 * are sent with strict:false (Responses' default is strict). The item ids of function_call and
 * assistant message items are kept and written back for a request from Responses (OpenAI pairs
 * reasoning items with the item after them by id). */
int mg_openai_responses_decode_request(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *out,
                                       char *err, size_t errlen);
cJSON *mg_openai_responses_encode_request(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                                          char *err, size_t errlen);

/* Whole response JSON ↔ model. decode fails on an error body or status "failed". */
int mg_openai_responses_decode_response(const cJSON *body, mg_ir_arena_t *a,
                                        const mg_ir_decode_opts_t *opts, mg_ir_response_t *out,
                                        char *err, size_t errlen);
cJSON *mg_openai_responses_encode_response(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts);

/* Same shape as Chat: {"error":{"message","type","param":null,"code"}}. Caller frees. */
char *mg_openai_responses_encode_error(int status, const char *type, const char *code,
                                       const char *message);

/* Stream decoder: response.created … response.completed / incomplete / failed → model events. */
void *mg_openai_responses_decoder_new(const mg_ir_decode_opts_t *opts);
int mg_openai_responses_decoder_feed(void *st, const char *type, size_t type_len, const char *data,
                                     size_t data_len, mg_ir_event_cb cb, void *ud);
int mg_openai_responses_decoder_finish(void *st, mg_ir_event_cb cb, void *ud);
void mg_openai_responses_decoder_free(void *st);

/* Stream encoder: response.created (then response.in_progress) first; for each item
 * output_item.added before its content_part / summary_part .added before its deltas, then the
 * .done events and output_item.done; sequence_number +1 on every event from 0; the whole output
 * and usage in response.completed (response.incomplete for length / content filter). An ERROR
 * becomes an `error` event followed by response.failed. Every frame has an `event:` line. */
void *mg_openai_responses_encoder_new(const mg_ir_output_opts_t *opts);
void mg_openai_responses_encoder_push(void *st, const mg_ir_event_t *ev, mg_buf_t *out);
bool mg_openai_responses_encoder_done(const void *st);
void mg_openai_responses_encoder_free(void *st);

/* OpenAI Chat Completions (POST /v1/chat/completions), both as the client's API and as the
 * upstream's ("openai-completions"): requests, whole responses, stream events and error bodies,
 * to and from the internal model (ir.h). Also reads what OpenAI-compatible servers do differently
 * (PROTOCOLS.md A.1, A.6): `reasoning_content` and `reasoning` deltas, `<think>…</think>` inside
 * content from local models, errors inside 200 streams (`data: {"error":…}`, vLLM's
 * `{"object":"error"}`, LM Studio's `event: error`) and OpenRouter's `finish_reason:"error"`.
 * Pure; uses ir.h, cJSON and util.h. Ownership as in ir.h. */
#pragma once
#include "ir.h"

/* The codec table entry (all functions below, for mg_ir_codec). */
extern const mg_ir_codec_t mg_openai_chat_codec;

/* Request JSON ↔ model. decode: body is borrowed and must outlive *out. encode: caller owns the
 * result; NULL (with err) when the request holds something Chat cannot carry. It sends
 * max_tokens (max_completion_tokens when the client used it or opts say so) and, when streaming,
 * stream_options.include_usage=true (translation to the other APIs needs the usage). */
int mg_openai_chat_decode_request(const cJSON *body, mg_ir_arena_t *a, mg_ir_request_t *out,
                                  char *err, size_t errlen);
cJSON *mg_openai_chat_encode_request(const mg_ir_request_t *ir, const mg_ir_request_opts_t *opts,
                                     char *err, size_t errlen);

/* Whole response JSON ↔ model (choice 0 only). decode fails on an error body. */
int mg_openai_chat_decode_response(const cJSON *body, mg_ir_arena_t *a,
                                   const mg_ir_decode_opts_t *opts, mg_ir_response_t *out,
                                   char *err, size_t errlen);
cJSON *mg_openai_chat_encode_response(const mg_ir_response_t *r, const mg_ir_output_opts_t *opts);

/* {"error":{"message","type","param":null,"code"}}; type/code NULL → derived from status.
 * Caller frees. */
char *mg_openai_chat_encode_error(int status, const char *type, const char *code,
                                  const char *message);

/* Stream decoder: `data:` chunks → model events ([DONE] → END; a stream that closes after its
 * finish_reason without [DONE] ends normally at decoder_finish). State from decoder_new, freed by
 * decoder_free. */
void *mg_openai_chat_decoder_new(const mg_ir_decode_opts_t *opts);
int mg_openai_chat_decoder_feed(void *st, const char *type, size_t type_len, const char *data,
                                size_t data_len, mg_ir_event_cb cb, void *ud);
int mg_openai_chat_decoder_finish(void *st, mg_ir_event_cb cb, void *ud);
void mg_openai_chat_decoder_free(void *st);

/* Stream encoder: model events → `data: {chunk}` frames. The first chunk carries
 * delta.role "assistant"; reasoning goes out as delta.reasoning_content (unless stripped); the
 * finish_reason chunk, then the usage chunk (choices: [], only with opts.include_usage), then
 * `data: [DONE]`. An ERROR becomes `data: {"error":{…}}` and the stream ends without [DONE]. */
void *mg_openai_chat_encoder_new(const mg_ir_output_opts_t *opts);
void mg_openai_chat_encoder_push(void *st, const mg_ir_event_t *ev, mg_buf_t *out);
bool mg_openai_chat_encoder_done(const void *st);
void mg_openai_chat_encoder_free(void *st);

/* Chat finish_reason ↔ model (PROTOCOLS B.3). */
const char *mg_openai_chat_finish_reason(mg_ir_finish_t f);
mg_ir_finish_t mg_openai_chat_parse_finish(const char *s);

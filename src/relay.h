/* The upstream-thread half of an attempt: the transfer callbacks. A whole answer is collected
 * under a size cap; a streamed (text/event-stream) answer is parsed event by event, held back
 * until its first content-bearing event (the commit point), then relayed to the client's output
 * queue as it arrives, with backpressure. Errors inside the stream are failures, never content.
 *
 * Runs only on the request's serving thread (its upstream loop), except mg_relay_callbacks which is
 * a constant. */
#pragma once
#include "request.h"

/* The callbacks to put in an mg_xfer_spec_t whose ud is an mg_attempt_t. */
mg_xfer_callbacks_t mg_relay_callbacks(void);

/* Puts the reasoning of a Chat Completions message or delta in its one place, reasoning_content
 * (renaming vLLM/Ollama/OpenRouter's "reasoning"), or drops it when strip. Returns whether msg
 * changed. Pure. */
bool mg_relay_normalize_reasoning(cJSON *msg, bool strip);

/* Moves a leading <think>…</think> block of a Chat message's or delta's "content" into
 * "reasoning_content", keeping state across deltas in t (zeroed at the start of an answer).
 * Returns whether msg changed. Pure. */
bool mg_relay_split_think(mg_think_t *t, cJSON *msg);

/* Replaces each of the provider's secrets (its key and header values of 8 bytes or more) in b by
 * "[redacted]": some servers echo the request, headers included, in their error text, and what
 * comes of it (the client's reply, the access log, /admin/health) must not carry them. Run it on
 * the whole text, before any cut, so that no head of a secret is left. Any thread. */
void mg_relay_scrub_secrets(mg_buf_t *b, const mg_provider_t *p);
/* Sets a->detail to prefix then text[0..len), scrubbed (mg_relay_scrub_secrets) and only then cut
 * to fit (on a UTF-8 boundary), control characters as spaces: the one way upstream words reach
 * it. text may be NULL when len is 0. */
void mg_relay_set_detail(mg_attempt_t *a, const char *prefix, const char *text, size_t len);

/* The class of a settled, uncommitted attempt (serving thread, after done). For a Chat answer it
 * also notes where the answer's usage is (a->usage_known, a->usage), for the router. */
mg_classification_t mg_relay_classify(const mg_req_t *req, mg_attempt_t *a);
/* For an answer mg_relay_classify rejected although the transfer and status were fine: what was
 * wrong with it (static string), for the route trace. */
const char *mg_relay_answer_problem(const mg_attempt_t *a);

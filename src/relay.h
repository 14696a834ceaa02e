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

/* The class of a settled, uncommitted attempt (serving thread, after done). For a Chat answer it
 * also notes where the answer's usage is (a->usage_known, a->usage), for the router. */
mg_classification_t mg_relay_classify(const mg_req_t *req, mg_attempt_t *a);
/* For an answer mg_relay_classify rejected although the transfer and status were fine: what was
 * wrong with it (static string), for the route trace. */
const char *mg_relay_answer_problem(const mg_attempt_t *a);

/* Summaries of dropped turns (issue 7, optional): the request a summarizer model is sent, built
 * from the messages compaction dropped, and the summary read back out of its answer. Pure: the
 * router sends the request (upstream.c, asynchronously) and compact.c puts the summary in the
 * drop note's place (mg_compact_insert_summary). Uses ir.h and compact.h (the control-token
 * filter); knows nothing of HTTP, curl or Lua.
 *
 * What the summarizer sees is bounded and filtered, because it is a model too and the dropped
 * turns are as untrusted as the rest of the conversation: a fixed instruction as the system
 * prompt, and one user message holding the dropped messages flattened to text ("[user]",
 * "[assistant]", "[tool call name]" and "[tool result]" headers), without reasoning or media,
 * each text cut in the middle above MG_SUMMARY_PART_MAX bytes, the whole cut in the middle to at
 * most max_input bytes, and control tokens stripped. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "compact.h"
#include "ir.h"

#define MG_SUMMARY_INPUT_MAX (48 * 1024) /* most bytes of conversation a summarizer is sent */
#define MG_SUMMARY_PART_MAX (4 * 1024)   /* per text, tool-call arguments or tool result */
#define MG_SUMMARY_INPUT_MIN 256         /* below this much room there is nothing to summarize */

/* The most conversation bytes to send to summarizer model m asking for max_tokens of output:
 * MG_SUMMARY_INPUT_MAX, or less when m's window is smaller (about 3 bytes a token, a margin kept
 * for the instruction). 0 when m cannot take even MG_SUMMARY_INPUT_MIN bytes. */
size_t mg_summary_input_cap(const mg_model_t *m, int64_t max_tokens);

/* Builds the summarizer's request in *out (everything allocated in a): the instruction, then
 * the n dropped messages (n_turns user turns) flattened as described above into one user text of
 * at most max_input bytes, with control tokens stripped as safety says (its control_tokens
 * switch is ignored: the filter always runs here). max_output_tokens = max_tokens, no stream. */
void mg_summary_request(mg_ir_arena_t *a, const mg_ir_message_t *dropped, size_t n, int n_turns,
                        size_t max_input, int64_t max_tokens, const mg_safety_opts_t *safety,
                        mg_ir_request_t *out);

/* Reads the summary out of a summarizer's whole answer in API api (a 2xx body): the text parts
 * joined, white space trimmed, allocated in a. 0, or -1 with a one-line reason (not an answer,
 * an empty summary). */
int mg_summary_read(mg_api_t api, const char *body, size_t len, mg_ir_arena_t *a, const char **text,
                    size_t *text_len, char *err, size_t errlen);

/* Token estimates for a request, and their calibration per model. Pure counting over the internal
 * model (ir.h): no tokenizer, no HTTP, no Lua. Uses util.h and a pthread mutex (calibration only).
 *
 * The estimate is conservative on purpose: it should be at or above what the upstream's tokenizer
 * reports, because the gateway uses it to decide whether a request fits a model's window, and an
 * estimate that errs low sends requests that the upstream rejects (or, worse, silently truncates:
 * small local servers often cut the prompt without an error).
 *   - ASCII bytes count 2/7 of a token each (bytes / 3.5; real tokenizers give about 4 for prose,
 *     3 to 3.5 for code and JSON);
 *   - every other character counts one token (one per UTF-8 lead byte: CJK, Cyrillic, emoji…;
 *     continuation bytes count nothing);
 *   - an image costs a fixed number of tokens (mg_tokens_opts_t.image_tokens);
 *   - tool schemas count their JSON size; messages, parts, tool calls and tools add a small fixed
 *     overhead each (the chat template's role markers and separators).
 * The hot loop is a byte scan, 8 bytes per step: well under 50 µs for a 100 KB prompt.
 *
 * Calibration: upstreams report the real prompt size (usage.input). Each report is compared with
 * the raw estimate of what was sent, and a per-model ratio (an EWMA of real/raw, plus 2.5 times
 * an EWMA of its absolute deviation, clamped to [0.5, 2.0]) scales later estimates for that
 * model. The bias keeps the scaled estimate above the real count for nearly every request (about
 * 2 standard deviations); outliers are clipped (Huber) so one odd report cannot swing it. The
 * ratio is the tokenizer's over our text count, so it scales the counted share only: the fixed
 * cost of images and inline media stays as it is, and prompts that hold any are not observed
 * (their report mixes the real image cost with our guess of it).
 *
 * Threads: estimating is pure and reentrant. A calibration table is shared: observe (upstream
 * thread) and the readers (serving threads) take its mutex for a few dozen nanoseconds. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir.h"
#include "util.h"

#define MG_TOKENS_IMAGE_DEFAULT 1600 /* a ~1.15 MP image on Anthropic; OpenAI high detail ≤ 1,105 \
                                      */
#define MG_TOKENS_RATIO_MIN 0.5
#define MG_TOKENS_RATIO_MAX 2.0
/* Reports for requests estimated below this many raw tokens are ignored: for tiny prompts the
 * fixed template overheads, not the text, decide the count. */
#define MG_TOKENS_CALIB_MIN_RAW 256

typedef struct mg_tokens_calib mg_tokens_calib_t;

/* How to estimate. Zeroed (or NULL) means: uncalibrated, default image cost. */
typedef struct mg_tokens_opts {
    const mg_tokens_calib_t *calib; /* NULL: raw estimate (ratio 1) */
    const char *model_ref;          /* "provider/id": the calibration key (NULL: ratio 1) */
    int64_t image_tokens;           /* per image (and per inline document); <= 0: the default */
} mg_tokens_opts_t;

/* Tokens of a text of n bytes (any bytes; invalid UTF-8 is counted, never rejected). */
int64_t mg_tokens_text(const char *s, size_t n);

/* The whole request: system parts, messages, tools (with schemas), response format schema. opts
 * may be NULL. Calibrated when opts names a table and a model; otherwise the raw estimate. */
int64_t mg_tokens_estimate(const mg_ir_request_t *req, const mg_tokens_opts_t *opts);

/* The same split in parts, so that compaction can re-estimate one message at a time. The raw
 * estimate is exactly base + the sum of message costs; the calibrated one is
 * mg_tokens_scale(raw, fixed, ratio). Each adds the fixed share of its cost (images and inline
 * media, image_tokens each) to *fixed, which may be NULL. */
int64_t mg_tokens_request_base(const mg_ir_request_t *req, int64_t image_tokens, int64_t *fixed);
int64_t mg_tokens_message(const mg_ir_message_t *m, int64_t image_tokens, int64_t *fixed);
int64_t mg_tokens_part(const mg_ir_part_t *p, int64_t image_tokens, int64_t *fixed);
/* The raw (uncalibrated) estimate of the whole request; its fixed share added to *fixed (may be
 * NULL). */
int64_t mg_tokens_raw(const mg_ir_request_t *req, int64_t image_tokens, int64_t *fixed);
/* ceil((raw − fixed) × ratio) + fixed, saturating: calibration scales the counted share of a raw
 * estimate, never the fixed cost of its images (fixed is clamped to [0, raw]). */
int64_t mg_tokens_scale(int64_t raw, int64_t fixed, double ratio);
/* The image cost opts stands for (the default when unset). */
int64_t mg_tokens_image_cost(const mg_tokens_opts_t *opts);

/* ---- calibration ---- */

mg_tokens_calib_t *mg_tokens_calib_new(void);
void mg_tokens_calib_free(mg_tokens_calib_t *c); /* NULL is fine */

/* One upstream report. raw_estimate must be the RAW estimate of the request as it was sent
 * (mg_tokens_estimate with no calibration; compaction reports it as raw_after) and fixed its
 * fixed share (raw_fixed_after), reported the upstream's whole prompt count (cached tokens
 * included: mg_ir_usage_t.input). Ignored when either count is <= 0, when raw_estimate <
 * MG_TOKENS_CALIB_MIN_RAW, and when fixed > 0 (images: see the top). model_ref is copied. */
void mg_tokens_calib_observe(mg_tokens_calib_t *c, const char *model_ref, int64_t raw_estimate,
                             int64_t fixed, int64_t reported);

/* The ratio to apply for a model: 1.0 when c or model_ref is NULL or nothing was observed. */
double mg_tokens_calib_ratio(const mg_tokens_calib_t *c, const char *model_ref);

/* Appends a JSON object keyed by model ref, sorted, for /admin/health:
 * {"ollama/qwen3":{"ratio":0.922,"mean":0.871,"spread":0.0205,"samples":42}} */
void mg_tokens_calib_dump_json(const mg_tokens_calib_t *c, mg_buf_t *out);

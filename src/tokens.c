/* Token estimates and per-model calibration. See tokens.h for the rules and their reasons. */
#include "tokens.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Fixed overheads, in tokens: role markers and separators of the chat templates (ChatML spends 4
 * per message, Llama 3 about 5 with its header ids; tool calls and results carry ids and names
 * in wrappers). Rounded up. */
#define REQUEST_OVERHEAD 3
#define MESSAGE_OVERHEAD 5
#define PART_OVERHEAD 1
#define TOOL_CALL_OVERHEAD 8
#define TOOL_RESULT_OVERHEAD 6
#define TOOL_OVERHEAD 10
/* A string in an OPAQUE part longer than this, under a media key or in a data: URL, is inline
 * media (a PDF, audio…): it costs what an image costs, not its base64 length. */
#define MEDIA_MIN_BYTES 256

/* ---- text ---- */

/* Adds up the eight byte lanes of v (each lane < 256). */
static size_t lane_sum(uint64_t v)
{
    v = (v & 0x00FF00FF00FF00FFull) + ((v >> 8) & 0x00FF00FF00FF00FFull);
    return (size_t)((v * 0x0001000100010001ull) >> 48);
}

int64_t mg_tokens_text(const char *s, size_t n)
{
    if (!s || !n) return 0;
    const unsigned char *p = (const unsigned char *)s;
    size_t hi = 0, lead = 0, i = 0;
    /* 8 bytes per step, no branches and no popcount instruction needed: per byte lane, bit 7
     * marks non-ASCII and bit 7 AND bit 6 a UTF-8 lead byte (>= 0xC0); the lane counters are
     * folded every 255 steps, before they can overflow. */
    const uint64_t ones = 0x0101010101010101ull;
    while (i + 8 <= n) {
        uint64_t acc_hi = 0, acc_lead = 0;
        size_t stop = i + 8 * 255 < n ? i + 8 * 255 : n;
        for (; i + 8 <= stop; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            acc_hi += (w >> 7) & ones;
            acc_lead += ((w & (w << 1)) >> 7) & ones;
        }
        hi += lane_sum(acc_hi);
        lead += lane_sum(acc_lead);
    }
    for (; i < n; i++) {
        hi += p[i] >> 7;
        lead += (p[i] & 0xC0) == 0xC0;
    }
    size_t ascii = n - hi;
    return (int64_t)((ascii * 2 + 6) / 7 + lead);
}

static int64_t str_tokens(const char *s)
{
    return s ? mg_tokens_text(s, strlen(s)) : 0;
}

/* ---- JSON (schemas, opaque parts) ---- */

typedef struct jcount {
    int64_t tokens; /* from strings */
    size_t punct;   /* bytes of syntax, numbers and literals (ASCII) */
    int64_t image_tokens;
    int64_t fixed; /* the share of tokens that is media (image_tokens each) */
} jcount_t;

static bool is_media_key(const char *k)
{
    return k && (strcmp(k, "data") == 0 || strcmp(k, "file_data") == 0);
}

/* Whether object o holds its data as plain text (Anthropic's document source {"type":"text",
 * "media_type":"text/plain","data":…}): then data is counted as text, not as media. */
static bool text_source(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "media_type");
    return (cJSON_IsString(t) && strcmp(t->valuestring, "text") == 0) ||
           (cJSON_IsString(mt) && strncmp(mt->valuestring, "text/", 5) == 0);
}

/* parent: the object j's members belong to (NULL for the top). */
static void json_walk(jcount_t *c, const cJSON *j, const cJSON *parent)
{
    for (; j; j = j->next) {
        if (j->string) {
            c->tokens += str_tokens(j->string);
            c->punct += 3; /* "":  */
        }
        c->punct += 1; /* , */
        if (cJSON_IsString(j) && j->valuestring) {
            size_t n = strlen(j->valuestring);
            if (n > MEDIA_MIN_BYTES &&
                ((is_media_key(j->string) && !(parent && text_source(parent))) ||
                 strncmp(j->valuestring, "data:", 5) == 0)) {
                c->tokens += c->image_tokens;
                c->fixed += c->image_tokens;
            } else {
                c->tokens += mg_tokens_text(j->valuestring, n);
                c->punct += 2;
            }
        } else if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
            c->punct += 2;
            json_walk(c, j->child, cJSON_IsObject(j) ? j : NULL);
        } else {
            c->punct += 6; /* a number or a literal */
        }
    }
}

static int64_t json_tokens(const cJSON *j, int64_t image_tokens, int64_t *fixed)
{
    if (!j) return 0;
    jcount_t c = {0, 0, image_tokens, 0};
    /* Walk j alone, not its siblings. */
    cJSON copy = *j;
    copy.next = NULL;
    json_walk(&c, &copy, NULL);
    if (fixed) *fixed += c.fixed;
    return c.tokens + (int64_t)((c.punct * 2 + 6) / 7);
}

/* ---- the request ---- */

int64_t mg_tokens_image_cost(const mg_tokens_opts_t *opts)
{
    return opts && opts->image_tokens > 0 ? opts->image_tokens : MG_TOKENS_IMAGE_DEFAULT;
}

int64_t mg_tokens_part(const mg_ir_part_t *p, int64_t image_tokens, int64_t *fixed)
{
    int64_t t = PART_OVERHEAD;
    switch (p->type) {
    case MG_IR_PART_TEXT:
        t += str_tokens(p->text);
        break;
    case MG_IR_PART_IMAGE:
        t += image_tokens;
        if (fixed) *fixed += image_tokens;
        break;
    case MG_IR_PART_TOOL_CALL:
        t +=
            TOOL_CALL_OVERHEAD + str_tokens(p->id) + str_tokens(p->name) + str_tokens(p->arguments);
        break;
    case MG_IR_PART_TOOL_RESULT:
        t += TOOL_RESULT_OVERHEAD + str_tokens(p->id);
        for (size_t i = 0; i < p->n_parts; i++)
            t += mg_tokens_part(&p->parts[i], image_tokens, fixed);
        break;
    case MG_IR_PART_REASONING:
        /* Encrypted or redacted reasoning stands for the model's hidden thinking: base64 of
         * ciphertext, about 4 bytes per token of the original. The signature is not prompt. */
        t += str_tokens(p->text);
        if (p->redacted) t += (int64_t)(strlen(p->redacted) / 4);
        if (p->encrypted) t += (int64_t)(strlen(p->encrypted) / 4);
        break;
    case MG_IR_PART_OPAQUE:
        t += json_tokens(p->raw, image_tokens, fixed);
        break;
    }
    return t;
}

int64_t mg_tokens_message(const mg_ir_message_t *m, int64_t image_tokens, int64_t *fixed)
{
    int64_t t = MESSAGE_OVERHEAD;
    for (size_t i = 0; i < m->n_parts; i++)
        t += mg_tokens_part(&m->parts[i], image_tokens, fixed);
    return t;
}

int64_t mg_tokens_request_base(const mg_ir_request_t *req, int64_t image_tokens, int64_t *fixed)
{
    int64_t t = REQUEST_OVERHEAD;
    if (req->n_system) t += MESSAGE_OVERHEAD;
    for (size_t i = 0; i < req->n_system; i++)
        t += mg_tokens_part(&req->system[i], image_tokens, fixed);
    for (size_t i = 0; i < req->n_tools; i++) {
        const mg_ir_tool_t *tool = &req->tools[i];
        t += TOOL_OVERHEAD;
        if (tool->raw) {
            t += json_tokens(tool->raw, image_tokens, fixed);
            continue;
        }
        t += str_tokens(tool->name) + str_tokens(tool->description);
        t += json_tokens(tool->parameters, image_tokens, fixed);
    }
    if (req->format_schema)
        t += TOOL_OVERHEAD + json_tokens(req->format_schema, image_tokens, fixed);
    for (size_t i = 0; i < req->n_stop; i++)
        t += str_tokens(req->stop[i]);
    return t;
}

int64_t mg_tokens_scale(int64_t raw, int64_t fixed, double ratio)
{
    if (ratio == 1.0 || raw <= 0) return raw;
    if (fixed < 0) fixed = 0;
    if (fixed > raw) fixed = raw;
    double v = ceil((double)(raw - fixed) * ratio) + (double)fixed;
    if (v >= 9.0e18) return INT64_MAX;
    return (int64_t)v;
}

int64_t mg_tokens_raw(const mg_ir_request_t *req, int64_t image_tokens, int64_t *fixed)
{
    int64_t raw = mg_tokens_request_base(req, image_tokens, fixed);
    for (size_t i = 0; i < req->n_messages; i++)
        raw += mg_tokens_message(&req->messages[i], image_tokens, fixed);
    return raw;
}

int64_t mg_tokens_estimate(const mg_ir_request_t *req, const mg_tokens_opts_t *opts)
{
    int64_t fixed = 0;
    int64_t raw = mg_tokens_raw(req, mg_tokens_image_cost(opts), &fixed);
    if (!opts || !opts->calib || !opts->model_ref) return raw;
    return mg_tokens_scale(raw, fixed, mg_tokens_calib_ratio(opts->calib, opts->model_ref));
}

/* ---- calibration ---- */

/* EWMA weight of a new observation: about the last 10 requests matter. */
#define CALIB_ALPHA 0.1
/* The spread a model starts with (its first ratio is a single sample). */
#define CALIB_SPREAD0 0.1
/* One observation's ratio is clamped to this range before it is averaged, so a single absurd
 * report (a server that counts a cached prefix twice, say) cannot swing the mean far. */
#define CALIB_OBS_MIN 0.25
#define CALIB_OBS_MAX 4.0
#define CALIB_CLIP 4.0
/* The ratio used is mean + CALIB_BIAS × spread: with a spread that is an average absolute
 * deviation, 2.5 of them sit about two standard deviations above the mean. */
#define CALIB_BIAS 2.5
#define CALIB_MAX_MODELS 4096

typedef struct calib_entry {
    char *ref; /* NULL: free slot */
    double mean, spread;
    int64_t samples;
} calib_entry_t;

struct mg_tokens_calib {
    pthread_mutex_t mu;
    calib_entry_t *slots; /* open addressing, power-of-two size, at most half full */
    size_t cap, used;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static calib_entry_t *find_slot(calib_entry_t *slots, size_t cap, const char *ref)
{
    size_t i = (size_t)hash_str(ref) & (cap - 1);
    while (slots[i].ref && strcmp(slots[i].ref, ref) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

mg_tokens_calib_t *mg_tokens_calib_new(void)
{
    mg_tokens_calib_t *c = mg_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->cap = 16;
    c->slots = mg_xcalloc(c->cap, sizeof *c->slots);
    return c;
}

void mg_tokens_calib_free(mg_tokens_calib_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->cap; i++)
        free(c->slots[i].ref);
    free(c->slots);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static double effective_ratio(const calib_entry_t *e)
{
    double r = e->mean + CALIB_BIAS * e->spread;
    if (r < MG_TOKENS_RATIO_MIN) r = MG_TOKENS_RATIO_MIN;
    if (r > MG_TOKENS_RATIO_MAX) r = MG_TOKENS_RATIO_MAX;
    return r;
}

static void grow(mg_tokens_calib_t *c)
{
    size_t ncap = c->cap * 2;
    calib_entry_t *ns = mg_xcalloc(ncap, sizeof *ns);
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].ref) *find_slot(ns, ncap, c->slots[i].ref) = c->slots[i];
    free(c->slots);
    c->slots = ns;
    c->cap = ncap;
}

void mg_tokens_calib_observe(mg_tokens_calib_t *c, const char *model_ref, int64_t raw_estimate,
                             int64_t fixed, int64_t reported)
{
    /* The ratio scales text only; with images in the prompt, the report mixes the upstream's real
     * image cost with our fixed guess of it, and says nothing reliable about the text. */
    if (!c || !model_ref || raw_estimate < MG_TOKENS_CALIB_MIN_RAW || fixed > 0 || reported <= 0)
        return;
    double r = (double)reported / (double)raw_estimate;
    if (r < CALIB_OBS_MIN) r = CALIB_OBS_MIN;
    if (r > CALIB_OBS_MAX) r = CALIB_OBS_MAX;
    pthread_mutex_lock(&c->mu);
    calib_entry_t *e = find_slot(c->slots, c->cap, model_ref);
    if (!e->ref) {
        if (c->used >= CALIB_MAX_MODELS) goto out;
        if ((c->used + 1) * 2 > c->cap) {
            grow(c);
            e = find_slot(c->slots, c->cap, model_ref);
        }
        e->ref = mg_xstrdup(model_ref);
        e->mean = r;
        e->spread = CALIB_SPREAD0;
        e->samples = 1;
        c->used++;
        goto out;
    }
    /* Huber-style: a residual counts at most CALIB_CLIP spreads, so one outlier moves the ratio
     * a little while a real shift (every report high) still wins in a few steps, because the
     * spread grows with each clipped residual. */
    double d = r - e->mean, lim = CALIB_CLIP * e->spread;
    if (lim < 0.05 * e->mean) lim = 0.05 * e->mean;
    if (d > lim) d = lim;
    if (d < -lim) d = -lim;
    e->mean += CALIB_ALPHA * d;
    e->spread += CALIB_ALPHA * (fabs(d) - e->spread);
    e->samples++;
out:
    pthread_mutex_unlock(&c->mu);
}

double mg_tokens_calib_ratio(const mg_tokens_calib_t *cc, const char *model_ref)
{
    if (!cc || !model_ref) return 1.0;
    mg_tokens_calib_t *c = (mg_tokens_calib_t *)cc; /* the mutex is the only thing written */
    double r = 1.0;
    pthread_mutex_lock(&c->mu);
    calib_entry_t *e = find_slot(c->slots, c->cap, model_ref);
    if (e->ref) r = effective_ratio(e);
    pthread_mutex_unlock(&c->mu);
    return r;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const calib_entry_t *)a)->ref, ((const calib_entry_t *)b)->ref);
}

void mg_tokens_calib_dump_json(const mg_tokens_calib_t *cc, mg_buf_t *out)
{
    if (!cc) {
        mg_buf_puts(out, "{}");
        return;
    }
    mg_tokens_calib_t *c = (mg_tokens_calib_t *)cc;
    pthread_mutex_lock(&c->mu);
    calib_entry_t *v = mg_xmalloc((c->used ? c->used : 1) * sizeof *v);
    size_t n = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].ref) v[n++] = c->slots[i];
    qsort(v, n, sizeof *v, cmp_entry);
    mg_buf_puts(out, "{");
    for (size_t i = 0; i < n; i++) {
        if (i) mg_buf_puts(out, ",");
        mg_buf_json_str(out, v[i].ref);
        mg_buf_printf(out, ":{\"ratio\":%.4f,\"mean\":%.4f,\"spread\":%.4f,\"samples\":%lld}",
                      effective_ratio(&v[i]), v[i].mean, v[i].spread, (long long)v[i].samples);
    }
    mg_buf_puts(out, "}");
    pthread_mutex_unlock(&c->mu);
    free(v);
}

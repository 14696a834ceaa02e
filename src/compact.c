/* Compaction and safety filters over the internal model. See compact.h for the contract.
 *
 * How it works: the request's messages are copied into a working list (wmsg_t) that records, per
 * message, its current parts (copied into the arena on the first change: copy-on-write, so the
 * caller's arrays are never written), which parts were removed, whether the whole message was
 * dropped, and its token cost. The raw total (base + message costs + the note) is kept up to date
 * after every step, so "does it fit yet?" costs nothing; at the end the list is materialized
 * into new arrays and the result is re-estimated from scratch as a last check.
 *
 * Shrinkable texts are "slots" that remember their original text, so every later, tighter cut
 * starts from the original again and leaves exactly one marker with an exact count. */
#include "compact.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NONE ((size_t)-1)

/* A marker is at most this many bytes ("\n[… 18,446,744,073,709,551,615 characters elided by
 * moongate …]\n" is 73); a text is cut only when that saves something. */
#define MARKER_SLACK 80
#define MIN_KEEP_FLOOR 64
#define SUMMARY_MIN_BYTES 32
#define DEFAULT_SUMMARY_RESERVE 1024

static const char MARK_OPEN[] = "[\xE2\x80\xA6 "; /* "[… " */
static const char MARK_CLOSE[] = " characters elided by moongate \xE2\x80\xA6]";

/* ---------------------------------------------------------------------------------------------
 * UTF-8 and text helpers. */

static bool is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* The largest character boundary <= pos (valid UTF-8 has at most 3 continuation bytes in a row;
 * in invalid input we stop after 3, which cannot break a valid character either). */
static size_t utf8_floor(const char *s, size_t len, size_t pos)
{
    if (pos >= len) return len;
    for (int k = 0; k < 3 && pos > 0 && is_cont((unsigned char)s[pos]); k++)
        pos--;
    return pos;
}

static size_t utf8_ceil(const char *s, size_t len, size_t pos)
{
    for (int k = 0; k < 3 && pos < len && is_cont((unsigned char)s[pos]); k++)
        pos++;
    return pos;
}

static uint64_t count_chars(const char *s, size_t n)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += !is_cont((unsigned char)s[i]);
    return c;
}

static void put_thousands(mg_buf_t *b, uint64_t v)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) mg_buf_puts(b, ",");
        mg_buf_append(b, &digits[i], 1);
    }
}

/* Characters a range of text stands for: its own, except that an earlier marker inside it counts
 * the characters it says were elided (so cutting an already cut text keeps an honest count). */
static uint64_t elided_chars(const char *s, size_t n)
{
    uint64_t total = count_chars(s, n);
    const size_t ol = sizeof MARK_OPEN - 1, cl = sizeof MARK_CLOSE - 1;
    for (size_t i = 0; i + ol + cl < n; i++) {
        if (s[i] != '[' || memcmp(s + i, MARK_OPEN, ol) != 0) continue;
        size_t j = i + ol;
        uint64_t v = 0;
        bool any = false;
        while (j < n && (isdigit((unsigned char)s[j]) || s[j] == ',')) {
            if (s[j] != ',') v = v * 10 + (uint64_t)(s[j] - '0');
            any = true;
            j++;
        }
        if (!any || j + cl > n || memcmp(s + j, MARK_CLOSE, cl) != 0) continue;
        uint64_t self = count_chars(s + i, j + cl - i);
        total = total - self + v;
        i = j + cl - 1;
    }
    return total;
}

/* About `keep` bytes of s as head + marker + tail, cut at character boundaries (and at a line end
 * when one is near). NULL when that would not make it shorter. *elided: bytes cut out. */
static char *shrink_text(mg_ir_arena_t *a, const char *s, size_t len, size_t keep, size_t *elided)
{
    if (keep < MIN_KEEP_FLOOR) keep = MIN_KEEP_FLOOR;
    if (len <= keep + MARKER_SLACK) return NULL;
    size_t head = keep / 2, tail = keep - head;
    size_t h = utf8_floor(s, len, head);
    for (size_t k = h, lo = head - head / 4; k > lo; k--)
        if (s[k - 1] == '\n') {
            h = k;
            break;
        }
    size_t t = utf8_ceil(s, len, len - tail);
    for (size_t k = t, hi = len - tail + tail / 4; k < hi && k < len; k++)
        if (k > 0 && s[k - 1] == '\n') {
            t = k;
            break;
        }
    if (t < h) t = h;
    mg_buf_t b = {0};
    mg_buf_reserve(&b, h + (len - t) + MARKER_SLACK);
    mg_buf_append(&b, s, h);
    mg_buf_puts(&b, "\n");
    mg_buf_puts(&b, MARK_OPEN);
    put_thousands(&b, elided_chars(s + h, t - h));
    mg_buf_puts(&b, MARK_CLOSE);
    mg_buf_puts(&b, "\n");
    mg_buf_append(&b, s + t, len - t);
    char *r = mg_ir_strndup(a, b.data, b.len);
    mg_buf_free(&b);
    *elided = t - h;
    return r;
}

/* Tool-call arguments are JSON that encoders parse (Anthropic sends an object): cut the long
 * string values inside it and print it again, so it stays valid. NULL when it is not JSON or
 * nothing in it is long. */
static size_t shrink_json_strings(mg_ir_arena_t *a, cJSON *j, size_t keep)
{
    size_t el = 0;
    for (cJSON *c = j ? j->child : NULL, *next; c; c = next) {
        next = c->next;
        if (cJSON_IsString(c) && c->valuestring) {
            size_t e = 0;
            char *ns = shrink_text(a, c->valuestring, strlen(c->valuestring), keep, &e);
            if (ns) {
                cJSON *n = cJSON_CreateString(ns);
                if (!n) abort();       /* OOM policy */
                n->string = c->string; /* the key moves to the new item (parsed keys are owned) */
                c->string = NULL;
                cJSON_ReplaceItemViaPointer(j, c, n);
                el += e;
            }
        } else if (cJSON_IsArray(c) || cJSON_IsObject(c)) {
            el += shrink_json_strings(a, c, keep);
        }
    }
    return el;
}

static char *shrink_args(mg_ir_arena_t *a, const char *s, size_t len, size_t keep, size_t *elided)
{
    cJSON *j = cJSON_ParseWithLength(s, len);
    if (!j) return NULL;
    char *r = NULL;
    size_t el = shrink_json_strings(a, j, keep);
    if (el) {
        char *p = cJSON_PrintUnformatted(j);
        if (!p) abort(); /* OOM policy */
        r = mg_ir_strdup(a, p);
        cJSON_free(p);
        *elided = el;
    }
    cJSON_Delete(j);
    return r;
}

/* ---------------------------------------------------------------------------------------------
 * Budget and report. */

int64_t mg_compact_reserved_output(const mg_model_t *m, int64_t requested)
{
    int64_t cap = m && m->max_tokens > 0 ? m->max_tokens : 0;
    int64_t win = m ? m->context_window : 0;
    if (requested > 0) {
        /* At most maxTokens, and at most half the window: a request asking for the whole window
         * (Anthropic clients must ask for something) keeps room for its prompt, as with a
         * learned window. It is lowered only when prompt + what it asks would not fit. */
        if (win > 0 && (cap <= 0 || cap > win / 2)) cap = win / 2;
        return cap > 0 && requested > cap ? cap : requested;
    }
    if (cap <= 0) return 4096;
    if (win > 0 && cap > win / 2) return win / 2;
    return cap;
}

const mg_model_t *mg_compact_fit_model(const mg_model_t *m, int64_t learned, mg_model_t *tmp)
{
    if (!m || learned <= 0 || (m->context_window > 0 && learned >= m->context_window)) return m;
    *tmp = *m;
    tmp->context_window = learned;
    if (tmp->max_tokens > learned / 2) tmp->max_tokens = learned / 2;
    return tmp;
}

int64_t mg_compact_budget(const mg_model_t *m, int64_t requested, int64_t margin)
{
    if (!m || m->context_window <= 0) return INT64_MAX;
    return m->context_window - mg_compact_reserved_output(m, requested) - (margin > 0 ? margin : 0);
}

void mg_compact_report_init(mg_compact_report_t *r)
{
    memset(r, 0, sizeof *r);
    r->note_index = -1;
}

bool mg_compact_report_changed(const mg_compact_report_t *r)
{
    return r && r->filters != 0;
}

static const char *const FILTER_NAMES[] = {
    "control_tokens", "old_reasoning", "tool_result_cap", "shrink",
    "drop_turns",     "summary",       "drop_steps",      "policy",          "max_tokens",
};

const char *mg_compact_filter_name(unsigned bit)
{
    for (size_t i = 0; i < MG_ARRAY_LEN(FILTER_NAMES); i++)
        if (bit == 1u << i) return FILTER_NAMES[i];
    return NULL;
}

void mg_compact_report_header(const mg_compact_report_t *r, mg_buf_t *out)
{
    mg_buf_printf(out, "tokens=%lld->%lld; dropped_turns=%d; ", (long long)r->tokens_before,
                  (long long)r->tokens_after, r->dropped_turns);
    if (r->dropped_steps) mg_buf_printf(out, "dropped_steps=%d; ", r->dropped_steps);
    if (r->filters & MG_COMPACT_F_MAX_TOKENS)
        mg_buf_printf(out, "max_tokens=%lld->%lld; ", (long long)r->max_tokens_asked, (long long)r->max_tokens_sent);
    mg_buf_printf(out, "elided_bytes=%lld; filters=", (long long)r->elided_bytes);
    bool any = false;
    for (size_t i = 0; i < MG_ARRAY_LEN(FILTER_NAMES); i++) {
        if (!(r->filters & (1u << i))) continue;
        if (any) mg_buf_puts(out, ",");
        mg_buf_puts(out, FILTER_NAMES[i]);
        any = true;
    }
    if (!any) mg_buf_puts(out, "none");
}

void mg_compact_opts_init(mg_compact_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->enabled = true;
    o->tool_result_max_bytes = 16 * 1024;
    o->message_max_bytes = 8 * 1024;
    o->min_keep_bytes = 512;
    o->drop_note = true;
    o->summary_reserve_tokens = DEFAULT_SUMMARY_RESERVE;
    o->summary_timeout_ms = 10000;
}

void mg_safety_opts_init(mg_safety_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->control_tokens = true;
    o->old_reasoning = true;
    o->tool_result_max_bytes = 32 * 1024;
}

/* ---------------------------------------------------------------------------------------------
 * Control tokens. Untrusted text (user and tool content) must not carry the markers a chat
 * template uses for role boundaries: a server that tokenizes the rendered prompt with special
 * tokens enabled (llama.cpp, vLLM, Ollama) would turn "<|im_start|>system" in a tool result into a
 * real system turn. Matched:
 *   <|word|>           ChatML, Llama 3, Phi, GLM, Granite, Command-R, gpt-oss harmony… (any case;
 *                      no spaces inside, so F#/Elm "<| x |>" pipelines are left alone)
 *   <｜…｜>            DeepSeek's full-width bars
 *   [INST] [/INST] [SYSTEM_PROMPT] [AVAILABLE_TOOLS] [TOOL_CALLS] [TOOL_RESULTS] [THINK]…
 *                      Llama 2 / Mistral (any case, spaces allowed inside the brackets)
 *   <<SYS>> <</SYS>>   Llama 2 (any case, spaces allowed)
 *   <start_of_turn> <end_of_turn> <bos> <eos>   Gemma (any case)
 *   <s> </s>           BOS/EOS of Llama 2 / Mistral (exact case: <S> is ordinary HTML)
 *   extra tokens       literal, ASCII case-insensitive, from the config
 * Each is replaced by a line feed, which none of the built-in patterns can contain: removing a
 * token can therefore never join its neighbours into a new one ("<|im_<|x|>start|>",
 * "[IN<s>ST]"), and one pass is enough whatever the nesting (a space would not do: "[ INST ]" is
 * matched). Extra tokens are literal and may contain anything, so the scan is repeated while it
 * finds some, at most MAX_STRIP_PASSES times. */

#define MAX_STRIP_PASSES 8

static const char *const BRACKET_WORDS[] = {
    "INST",         "SYSTEM_PROMPT", "AVAILABLE_TOOLS", "TOOL_CALLS",
    "TOOL_RESULTS", "TOOL_CONTENT",  "THINK",           "SYS",
};
static const char *const ANGLE_WORDS[] = {"start_of_turn", "end_of_turn", "bos", "eos"};

static bool ident_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '.' || c == ':';
}

static size_t skip_spaces(const char *s, size_t len, size_t j)
{
    while (j < len && (s[j] == ' ' || s[j] == '\t'))
        j++;
    return j;
}

/* Matches one of words (case-insensitive) at s[j…]; returns the end or NONE. */
static size_t match_word(const char *s, size_t len, size_t j, const char *const *words, size_t n)
{
    if (j >= len || !isalpha((unsigned char)s[j])) return NONE;
    int c0 = tolower((unsigned char)s[j]);
    for (size_t w = 0; w < n; w++) {
        if (tolower((unsigned char)words[w][0]) != c0) continue;
        size_t wl = strlen(words[w]);
        if (j + wl <= len && strncasecmp(s + j, words[w], wl) == 0 &&
            (j + wl == len || !ident_char((unsigned char)s[j + wl])))
            return j + wl;
    }
    return NONE;
}

/* The length of a control token starting at s[i], or 0. */
static size_t match_token(const char *s, size_t len, size_t i, const mg_safety_opts_t *o)
{
    unsigned char c = (unsigned char)s[i];
    if (c == '<' && i + 1 < len) {
        if (s[i + 1] == '|') {
            size_t j = i + 2;
            while (j < len && j - i < 2 + 64 && ident_char((unsigned char)s[j]))
                j++;
            if (j > i + 2 && j + 1 < len && s[j] == '|' && s[j + 1] == '>') return j + 2 - i;
        } else if (i + 3 < len && memcmp(s + i + 1, "\xEF\xBD\x9C", 3) == 0) { /* <｜ */
            for (size_t j = i + 4; j + 3 < len && j - i < 128; j++) {
                unsigned char d = (unsigned char)s[j];
                if (d == '<' || d == '>' || d == '\n' || d == ' ') break;
                if (j > i + 4 && memcmp(s + j, "\xEF\xBD\x9C>", 4) == 0) return j + 4 - i;
            }
        } else if (s[i + 1] == '<') { /* << /SYS >> */
            size_t j = skip_spaces(s, len, i + 2);
            if (j < len && s[j] == '/') j = skip_spaces(s, len, j + 1);
            if (j + 3 <= len && strncasecmp(s + j, "SYS", 3) == 0) {
                j = skip_spaces(s, len, j + 3);
                if (j + 1 < len && s[j] == '>' && s[j + 1] == '>') return j + 2 - i;
            }
        } else {
            size_t j = i + 1;
            if (s[j] == '/') j++;
            if (j + 1 < len && s[j] == 's' && s[j + 1] == '>') return j + 2 - i;
            size_t e = match_word(s, len, j, ANGLE_WORDS, MG_ARRAY_LEN(ANGLE_WORDS));
            if (e != NONE && e < len && s[e] == '>') return e + 1 - i;
        }
    } else if (c == '[') {
        size_t j = skip_spaces(s, len, i + 1);
        if (j < len && s[j] == '/') j = skip_spaces(s, len, j + 1);
        size_t e = match_word(s, len, j, BRACKET_WORDS, MG_ARRAY_LEN(BRACKET_WORDS));
        if (e != NONE) {
            e = skip_spaces(s, len, e);
            if (e < len && s[e] == ']') return e + 1 - i;
        }
    }
    for (size_t k = 0; o && k < o->n_extra_tokens; k++) {
        const char *t = o->extra_tokens[k];
        if (!t || isspace((unsigned char)*t) || tolower((unsigned char)*t) != tolower(c)) continue;
        size_t tl = strlen(t);
        if (tl && i + tl <= len && strncasecmp(s + i, t, tl) == 0) return tl;
    }
    return 0;
}

/* The bytes a control token can start with: '<', '[' and the first letters of the extra tokens
 * (both cases). Candidates are found with memchr, one cursor per byte, so text without any of
 * them is skipped at memchr speed. */
typedef struct triggers {
    unsigned char c[2 + 2 * 16];
    size_t n;
    bool slow; /* too many distinct first bytes: test every byte */
    bool set[256];
} triggers_t;

static void triggers_init(triggers_t *t, const mg_safety_opts_t *o)
{
    memset(t, 0, sizeof *t);
    const unsigned char base[2] = {'<', '['};
    for (size_t k = 0; k < 2 + 2 * (o ? o->n_extra_tokens : 0); k++) {
        unsigned char f;
        if (k < 2) {
            f = base[k];
        } else {
            const char *e = o->extra_tokens[(k - 2) / 2];
            if (!e || !*e || isspace((unsigned char)*e)) continue;
            f = (unsigned char)((k % 2) ? toupper((unsigned char)*e) : tolower((unsigned char)*e));
        }
        if (t->set[f]) continue;
        t->set[f] = true;
        if (t->n < sizeof t->c)
            t->c[t->n++] = f;
        else
            t->slow = true;
    }
}

/* One scan of s, every control token replaced by a line feed in out; returns how many. bounds
 * (n_bounds ascending offsets into s, the ends of the texts s joins; may be NULL) are moved to
 * the same places in out, so that out splits back into those texts: a bound inside a token moves
 * to just after its line feed, which stays with the text where the token starts. */
static size_t strip_pass(const char *s, size_t len, const mg_safety_opts_t *o, const triggers_t *t,
                         mg_buf_t *out, size_t *bounds, size_t n_bounds)
{
    size_t removed = 0, last = 0, b = 0;
    size_t next[sizeof t->c]; /* per trigger byte: its next position at or after i, or len */
    for (size_t k = 0; k < t->n; k++) {
        const char *q = memchr(s, t->c[k], len);
        next[k] = q ? (size_t)(q - s) : len;
    }
    size_t i = 0;
    for (;;) {
        if (t->slow) {
            while (i < len && !t->set[(unsigned char)s[i]])
                i++;
        } else {
            size_t m = len;
            for (size_t k = 0; k < t->n; k++) {
                if (next[k] < i) {
                    const char *q = memchr(s + i, t->c[k], len - i);
                    next[k] = q ? (size_t)(q - s) : len;
                }
                if (next[k] < m) m = next[k];
            }
            i = m;
        }
        if (i >= len) break;
        size_t m = match_token(s, len, i, o);
        if (!m) {
            i++;
            continue;
        }
        for (; b < n_bounds && bounds[b] <= i; b++)
            bounds[b] = out->len + (bounds[b] - last);
        mg_buf_append(out, s + last, i - last);
        mg_buf_puts(out, "\n");
        for (; b < n_bounds && bounds[b] <= i + m; b++)
            bounds[b] = out->len;
        removed++;
        i += m;
        last = i;
    }
    if (!removed) return 0;
    for (; b < n_bounds; b++)
        bounds[b] = out->len + (bounds[b] - last);
    mg_buf_append(out, s + last, len - last);
    return removed;
}

/* Strips s pass after pass (see MAX_STRIP_PASSES), bounds as in strip_pass. Returns how many
 * tokens were removed; when some were, *res holds the result (the caller frees it). */
static size_t strip_all(const char *s, size_t len, const mg_safety_opts_t *o, size_t *bounds,
                        size_t n_bounds, mg_buf_t *res)
{
    triggers_t trig;
    triggers_init(&trig, o);
    mg_buf_t cur = {0}, next = {0};
    const char *p = s;
    size_t plen = len, total = 0;
    for (int pass = 0; pass < MAX_STRIP_PASSES; pass++) {
        size_t n = strip_pass(p, plen, o, &trig, &next, bounds, n_bounds);
        if (!n) break;
        total += n;
        mg_buf_free(&cur);
        cur = next;
        memset(&next, 0, sizeof next);
        p = cur.data;
        plen = cur.len;
    }
    mg_buf_free(&next);
    *res = cur;
    return total;
}

char *mg_safety_strip_tokens(mg_ir_arena_t *a, const char *s, size_t len, const mg_safety_opts_t *o,
                             int *removed)
{
    if (removed) *removed = 0;
    if (!s || !len) return NULL;
    mg_buf_t res = {0};
    size_t total = strip_all(s, len, o, NULL, 0, &res);
    char *r = NULL;
    if (total) r = mg_ir_strndup(a, res.data, res.len);
    mg_buf_free(&res);
    if (removed) *removed = (int)total;
    return r;
}

/* The control-token filter on a run of n adjacent text parts of one message. Servers join such
 * parts with nothing between them, so the run is matched as one text: a token split across parts
 * ("<|im_", "start|>system") is caught. nt[k] receives part k's new text (arena), or NULL when
 * it is unchanged; "" when nothing of it is left (all of it was inside a token that started in
 * an earlier part). Returns the number of tokens removed. */
static int strip_text_run(mg_ir_arena_t *a, const mg_ir_part_t *p, size_t n,
                          const mg_safety_opts_t *o, char **nt)
{
    int removed = 0;
    if (n == 1) {
        nt[0] = mg_safety_strip_tokens(a, p[0].text, strlen(p[0].text), o, &removed);
        return removed;
    }
    mg_buf_t joined = {0}, res = {0};
    size_t *bounds = mg_xmalloc(n * sizeof *bounds);
    for (size_t k = 0; k < n; k++) {
        mg_buf_puts(&joined, p[k].text);
        bounds[k] = joined.len; /* the end of part k */
    }
    size_t total = joined.len ? strip_all(joined.data, joined.len, o, bounds, n, &res) : 0;
    for (size_t k = 0; total && k < n; k++) {
        size_t from = k ? bounds[k - 1] : 0, len = bounds[k] - from;
        nt[k] = len == strlen(p[k].text) && memcmp(res.data + from, p[k].text, len) == 0
                    ? NULL
                    : mg_ir_strndup(a, res.data + from, len);
    }
    mg_buf_free(&joined);
    mg_buf_free(&res);
    free(bounds);
    return (int)total;
}

/* ---------------------------------------------------------------------------------------------
 * The working copy of a request's messages. */

typedef struct wmsg {
    mg_ir_message_t m; /* m.parts is the caller's array until parts_owned */
    bool parts_owned;
    bool *removed; /* per part, NULL until one is removed */
    size_t n_live;
    int64_t cost;  /* raw tokens; 0 once dropped or emptied */
    int64_t fixed; /* the share of cost that calibration does not scale (images) */
    bool dropped;
    bool pinned; /* tool results before any assistant message: they answer calls made outside
                    the request (a stored response's, previous_response_id) and are never dropped */
} wmsg_t;

typedef enum { SLOT_TEXT, SLOT_RESULT, SLOT_ARGS, SLOT_REASONING } slot_kind_t;

typedef struct slot {
    size_t msg, part, inner; /* inner: index inside a tool result's parts, or NONE */
    slot_kind_t kind;
    const char *orig;
    size_t len;
    size_t keep; /* current cut, NONE when intact */
    int64_t elided;
    bool old; /* in a unit before the last one */
} slot_t;

typedef struct cstate {
    mg_ir_arena_t *a;
    const mg_ir_request_t *in;
    int64_t img;
    double ratio;
    int64_t budget;
    int64_t total; /* raw: base + sum of costs + note_cost */
    int64_t fixed; /* the fixed share of total (images: see mg_tokens_scale) */
    int64_t note_cost;
    wmsg_t *w;
    size_t n;
    slot_t *slots;
    size_t n_slots, cap_slots;
    size_t last_unit;      /* start of the last unit (0 when there is no user message) */
    size_t user_end;       /* end of the protected user run [last_unit, user_end) */
    size_t keep_reasoning; /* an assistant message whose reasoning is current (NONE) */
    bool changed;
    int dropped_turns, dropped_steps, dropped_messages;
    unsigned filters;
    int shrunk;
} cstate_t;

/* A message's raw cost; its fixed share in *fixed. */
static int64_t wmsg_cost(const cstate_t *st, const wmsg_t *w, int64_t *fixed)
{
    *fixed = 0;
    if (w->dropped || (w->m.n_parts > 0 && w->n_live == 0)) return 0;
    int64_t c = mg_tokens_message(&w->m, st->img, fixed);
    if (w->removed)
        for (size_t j = 0; j < w->m.n_parts; j++) {
            if (!w->removed[j]) continue;
            int64_t f = 0;
            c -= mg_tokens_part(&w->m.parts[j], st->img, &f);
            *fixed -= f;
        }
    return c;
}

static void recost(cstate_t *st, size_t i)
{
    wmsg_t *w = &st->w[i];
    st->total -= w->cost;
    st->fixed -= w->fixed;
    w->cost = wmsg_cost(st, w, &w->fixed);
    st->total += w->cost;
    st->fixed += w->fixed;
}

static bool fits(const cstate_t *st)
{
    return mg_tokens_scale(st->total, st->fixed, st->ratio) <= st->budget;
}

/* costs false: the token costs and total are left at 0 (the safety filters never weigh them,
 * and estimating every message was most of their time). */
static void init_state(cstate_t *st, mg_ir_arena_t *a, const mg_ir_request_t *in, int64_t img,
                       double ratio, int64_t budget, bool costs)
{
    memset(st, 0, sizeof *st);
    st->a = a;
    st->in = in;
    st->img = img;
    st->ratio = ratio;
    st->budget = budget;
    st->n = in->n_messages;
    st->w = mg_ir_alloc(a, (st->n + 1) * sizeof *st->w);
    st->total = costs ? mg_tokens_request_base(in, img, &st->fixed) : 0;
    for (size_t i = 0; i < st->n; i++) {
        wmsg_t *w = &st->w[i];
        w->m = in->messages[i];
        w->n_live = w->m.n_parts;
        if (!costs) continue;
        w->cost = wmsg_cost(st, w, &w->fixed);
        st->total += w->cost;
        st->fixed += w->fixed;
    }
    for (size_t i = 0; i < st->n && in->messages[i].role != MG_IR_ASSISTANT; i++)
        st->w[i].pinned = in->messages[i].role == MG_IR_TOOL;
    /* The last unit starts at the first message of the last run of user messages. */
    st->last_unit = 0;
    st->user_end = 0;
    for (size_t i = st->n; i-- > 0;) {
        if (in->messages[i].role != MG_IR_USER) continue;
        size_t s = i;
        while (s > 0 && in->messages[s - 1].role == MG_IR_USER)
            s--;
        st->last_unit = s;
        st->user_end = i + 1;
        break;
    }
    /* A tool exchange answered in the same client message as the last user text (Anthropic:
     * tool_result blocks plus text) is still the current turn: its reasoning stays. */
    st->keep_reasoning = NONE;
    size_t k = st->last_unit;
    if (k > 0 && in->messages[k - 1].role == MG_IR_TOOL) {
        while (k > 0 && in->messages[k - 1].role == MG_IR_TOOL)
            k--;
        if (k > 0 && in->messages[k - 1].role == MG_IR_ASSISTANT) st->keep_reasoning = k - 1;
    }
}

static void ensure_parts(cstate_t *st, size_t i)
{
    wmsg_t *w = &st->w[i];
    if (w->parts_owned) return;
    mg_ir_part_t *p = mg_ir_alloc(st->a, (w->m.n_parts + 1) * sizeof *p);
    if (w->m.n_parts) memcpy(p, w->m.parts, w->m.n_parts * sizeof *p);
    w->m.parts = p;
    w->parts_owned = true;
}

static mg_ir_part_t *ensure_inner(cstate_t *st, size_t i, size_t j)
{
    ensure_parts(st, i);
    mg_ir_part_t *p = &st->w[i].m.parts[j];
    const mg_ir_part_t *orig = &st->in->messages[i].parts[j];
    if (p->parts == orig->parts && p->n_parts) {
        mg_ir_part_t *v = mg_ir_alloc(st->a, p->n_parts * sizeof *v);
        memcpy(v, p->parts, p->n_parts * sizeof *v);
        p->parts = v;
    }
    return p;
}

static void remove_part(cstate_t *st, size_t i, size_t j)
{
    wmsg_t *w = &st->w[i];
    if (!w->removed) w->removed = mg_ir_alloc(st->a, w->m.n_parts * sizeof *w->removed);
    if (w->removed[j]) return;
    w->removed[j] = true;
    w->n_live--;
    st->changed = true;
}

static bool part_removed(const wmsg_t *w, size_t j)
{
    return w->removed && w->removed[j];
}

/* Drops the reasoning of assistant messages before the last unit (except the current tool
 * exchange's, see init_state). With check, stops as soon as the request fits. */
static bool drop_old_reasoning(cstate_t *st, bool check)
{
    bool any = false;
    for (size_t i = 0; i < st->last_unit; i++) {
        if (check && fits(st)) break;
        wmsg_t *w = &st->w[i];
        if (w->dropped || w->m.role != MG_IR_ASSISTANT || i == st->keep_reasoning) continue;
        bool here = false;
        for (size_t j = 0; j < w->m.n_parts; j++)
            if (w->m.parts[j].type == MG_IR_PART_REASONING && !part_removed(w, j)) {
                remove_part(st, i, j);
                here = true;
            }
        if (here) {
            recost(st, i);
            any = true;
        }
    }
    if (any) st->filters |= MG_COMPACT_F_OLD_REASONING;
    return any;
}

/* New messages array from the working list, with an optional note first. */
/* Whether materialize writes message i (not dropped, not cut to nothing). */
static bool written(const cstate_t *st, size_t i)
{
    return !st->w[i].dropped && !(st->w[i].m.n_parts > 0 && st->w[i].n_live == 0);
}

/* Where materialize puts the drop note: first, but after the pinned tool results that open the
 * request (they answer the calls that come before everything; returns how many are written). */
static size_t note_at(const cstate_t *st)
{
    size_t k = 0;
    for (size_t i = 0; i < st->n && st->w[i].pinned; i++)
        if (written(st, i)) k++;
    return k;
}

static void materialize(cstate_t *st, const char *note, mg_ir_request_t *out)
{
    *out = *st->in;
    mg_ir_message_t *v = mg_ir_alloc(st->a, (st->n + 1) * sizeof *v);
    size_t k = 0;
    size_t at = note_at(st);
    for (size_t i = 0; i <= st->n; i++) {
        if (k == at && note) {
            mg_ir_part_t *p = mg_ir_alloc(st->a, sizeof *p);
            p->type = MG_IR_PART_TEXT;
            p->text = note;
            v[k++] = (mg_ir_message_t){MG_IR_USER, p, 1, NULL};
        }
        if (i == st->n) break;
        wmsg_t *w = &st->w[i];
        if (!written(st, i)) continue;
        mg_ir_message_t m = w->m;
        if (w->removed) {
            mg_ir_part_t *p = mg_ir_alloc(st->a, (w->n_live + 1) * sizeof *p);
            size_t q = 0;
            for (size_t j = 0; j < w->m.n_parts; j++)
                if (!w->removed[j]) p[q++] = w->m.parts[j];
            m.parts = p;
            m.n_parts = q;
        }
        v[k++] = m;
    }
    out->messages = v;
    out->n_messages = k;
}

/* ---------------------------------------------------------------------------------------------
 * Compaction. */

static void add_slot(cstate_t *st, size_t i, size_t j, size_t inner, slot_kind_t kind,
                     const char *s, size_t min_len)
{
    if (!s) return;
    size_t len = strlen(s);
    if (len <= min_len) return;
    st->slots = mg_ir_grow(st->a, st->slots, st->n_slots, &st->cap_slots, sizeof *st->slots);
    st->slots[st->n_slots++] = (slot_t){i, j, inner, kind, s, len, NONE, 0, i < st->last_unit};
}

static void collect_slots(cstate_t *st, size_t min_keep)
{
    size_t min_len = min_keep + MARKER_SLACK;
    for (size_t i = 0; i < st->n; i++) {
        const mg_ir_message_t *m = &st->in->messages[i];
        bool protected_run = i >= st->last_unit && i < st->user_end;
        for (size_t j = 0; j < m->n_parts; j++) {
            const mg_ir_part_t *p = &m->parts[j];
            if (m->role == MG_IR_TOOL && p->type == MG_IR_PART_TOOL_RESULT) {
                for (size_t k = 0; k < p->n_parts; k++)
                    if (p->parts[k].type == MG_IR_PART_TEXT)
                        add_slot(st, i, j, k, SLOT_RESULT, p->parts[k].text, min_len);
            } else if (m->role == MG_IR_TOOL) {
                continue;
            } else if (p->type == MG_IR_PART_TEXT && !protected_run) {
                add_slot(st, i, j, NONE, SLOT_TEXT, p->text, min_len);
            } else if (p->type == MG_IR_PART_TOOL_CALL && m->role == MG_IR_ASSISTANT) {
                add_slot(st, i, j, NONE, SLOT_ARGS, p->arguments, min_len);
            } else if (p->type == MG_IR_PART_REASONING && m->role == MG_IR_ASSISTANT &&
                       !p->signature && !p->redacted && !p->encrypted) {
                /* Signed or encrypted reasoning goes back unchanged or not at all. */
                add_slot(st, i, j, NONE, SLOT_REASONING, p->text, min_len);
            }
        }
    }
}

static bool apply_slot(cstate_t *st, slot_t *s, size_t keep)
{
    if (keep < MIN_KEEP_FLOOR) keep = MIN_KEEP_FLOOR;
    if (s->keep != NONE && s->keep <= keep) return false;
    if (s->len <= keep + MARKER_SLACK) return false;
    wmsg_t *w = &st->w[s->msg];
    if (w->dropped || part_removed(w, s->part)) return false;
    size_t el = 0;
    char *ns = s->kind == SLOT_ARGS ? shrink_args(st->a, s->orig, s->len, keep, &el)
                                    : shrink_text(st->a, s->orig, s->len, keep, &el);
    if (!ns) return false;
    if (s->inner != NONE) {
        mg_ir_part_t *r = ensure_inner(st, s->msg, s->part);
        ((mg_ir_part_t *)r->parts)[s->inner].text = ns;
    } else {
        ensure_parts(st, s->msg);
        mg_ir_part_t *p = &w->m.parts[s->part];
        if (s->kind == SLOT_ARGS)
            p->arguments = ns;
        else
            p->text = ns;
    }
    if (s->keep == NONE) st->shrunk++;
    s->keep = keep;
    s->elided = (int64_t)el;
    st->changed = true;
    st->filters |= MG_COMPACT_F_SHRINK;
    recost(st, s->msg);
    return true;
}

static const char *note_text(cstate_t *st)
{
    int t = st->dropped_turns, s = st->dropped_steps;
    if (!t && !s) return NULL;
    mg_buf_t b = {0};
    mg_buf_puts(&b, "[\xE2\x80\xA6 ");
    if (t) mg_buf_printf(&b, "%d earlier turn%s", t, t == 1 ? "" : "s");
    if (t && s) mg_buf_puts(&b, " and ");
    if (s) mg_buf_printf(&b, "%d %stool step%s", s, t ? "" : "earlier ", s == 1 ? "" : "s");
    mg_buf_puts(&b, " elided by moongate to fit the context window \xE2\x80\xA6]");
    char *r = mg_ir_strndup(st->a, b.data, b.len);
    mg_buf_free(&b);
    return r;
}

static void update_note(cstate_t *st, bool with_note)
{
    int64_t c = 0;
    const char *t = with_note ? note_text(st) : NULL;
    if (t) {
        mg_ir_part_t p = {.type = MG_IR_PART_TEXT, .text = t};
        mg_ir_message_t m = {MG_IR_USER, &p, 1, NULL};
        c = mg_tokens_message(&m, st->img, NULL); /* text: no fixed share */
    }
    st->total += c - st->note_cost;
    st->note_cost = c;
}

/* Drops messages [from, to) but the pinned ones; returns how many it dropped. */
static size_t drop_range(cstate_t *st, size_t from, size_t to)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++) {
        if (st->w[i].dropped || st->w[i].pinned) continue;
        st->w[i].dropped = true;
        st->dropped_messages++;
        recost(st, i);
        n++;
    }
    if (n) st->changed = true;
    return n;
}

/* Stage 3: whole units, oldest first, never the last one. */
static void drop_turns(cstate_t *st, bool with_note)
{
    if (st->last_unit == 0) return;
    size_t start = 0;
    while (start < st->last_unit && !fits(st)) {
        size_t end = start + 1;
        /* A unit ends where the next run of user messages starts. */
        while (end < st->last_unit && !(st->in->messages[end].role == MG_IR_USER &&
                                        st->in->messages[end - 1].role != MG_IR_USER))
            end++;
        if (drop_range(st, start, end)) {
            st->dropped_turns++;
            st->filters |= MG_COMPACT_F_DROP_TURNS;
            update_note(st, with_note);
        }
        start = end;
    }
}

/* Stage 5: the current turn's tool steps (an assistant run and the tool results after it),
 * oldest first, never the last step. */
static void drop_steps(cstate_t *st, bool with_note)
{
    size_t n = st->n, i = st->user_end;
    if (st->user_end == 0) return;
    while (i < n && st->in->messages[i].role != MG_IR_ASSISTANT)
        i++;
    while (i < n && !fits(st)) {
        size_t end = i + 1;
        while (end < n && st->in->messages[end].role == MG_IR_ASSISTANT)
            end++;
        while (end < n && st->in->messages[end].role != MG_IR_ASSISTANT)
            end++;
        if (end >= n) break; /* the last step stays */
        drop_range(st, i, end);
        st->dropped_steps++;
        st->filters |= MG_COMPACT_F_DROP_STEPS;
        update_note(st, with_note);
        i = end;
    }
}

typedef struct run_result {
    mg_ir_request_t req;
    int rc;
    mg_compact_report_t rep;
} run_result_t;

static int64_t sum_elided(const cstate_t *st)
{
    int64_t e = 0;
    for (size_t k = 0; k < st->n_slots; k++) {
        const slot_t *s = &st->slots[k];
        if (s->keep != NONE && !st->w[s->msg].dropped && !part_removed(&st->w[s->msg], s->part))
            e += s->elided;
    }
    return e;
}

static void compact_run(mg_ir_arena_t *a, const mg_ir_request_t *in, int64_t budget,
                        const mg_compact_opts_t *o, run_result_t *res)
{
    cstate_t st;
    int64_t img = mg_tokens_image_cost(&o->tokens);
    double ratio = o->tokens.calib && o->tokens.model_ref
                       ? mg_tokens_calib_ratio(o->tokens.calib, o->tokens.model_ref)
                       : 1.0;
    init_state(&st, a, in, img, ratio, budget, true);
    mg_compact_report_t *r = &res->rep;
    r->budget = budget;
    r->tokens_before = mg_tokens_scale(st.total, st.fixed, ratio);
    r->tokens_after = r->tokens_before;
    r->raw_after = st.total;
    r->raw_fixed_after = st.fixed;
    res->req = *in;
    if (fits(&st)) {
        res->rc = MG_COMPACT_FITS;
        return;
    }
    res->rc = MG_COMPACT_OVERFLOW;
    if (!o->enabled) return;

    size_t tr_max = o->tool_result_max_bytes ? o->tool_result_max_bytes : 16 * 1024;
    size_t msg_max = o->message_max_bytes ? o->message_max_bytes : 8 * 1024;
    size_t floor = o->min_keep_bytes >= MIN_KEEP_FLOOR ? o->min_keep_bytes : MIN_KEEP_FLOOR;
    collect_slots(&st, floor);

    /* 1. Earlier turns' reasoning. */
    drop_old_reasoning(&st, true);
    /* 2. Oversized tool results anywhere, long older texts and arguments. */
    for (size_t k = 0; k < st.n_slots && !fits(&st); k++) {
        slot_t *s = &st.slots[k];
        if (s->kind == SLOT_RESULT)
            apply_slot(&st, s, tr_max);
        else if (s->old && s->kind != SLOT_REASONING)
            apply_slot(&st, s, msg_max);
    }
    /* 3. Oldest units. */
    if (!fits(&st)) drop_turns(&st, o->drop_note);
    /* 4. Tighter and tighter cuts over everything that may be cut. */
    for (size_t cap = MG_MAX(tr_max, msg_max); !fits(&st) && cap > floor;) {
        cap = MG_MAX(cap / 2, floor);
        for (size_t k = 0; k < st.n_slots && !fits(&st); k++)
            apply_slot(&st, &st.slots[k], cap);
    }
    /* 5. Early steps of the current turn. */
    if (!fits(&st) && o->drop_current_steps) drop_steps(&st, o->drop_note);
    if (!fits(&st)) {
        r->tokens_after = mg_tokens_scale(st.total, st.fixed, ratio);
        return;
    }

    const char *note = o->drop_note ? note_text(&st) : NULL;
    materialize(&st, note, &res->req);
    /* The running total is exact by construction; re-estimating the result is the last check. */
    int64_t fixed = 0;
    int64_t raw = mg_tokens_raw(&res->req, img, &fixed);
    int64_t est = mg_tokens_scale(raw, fixed, ratio);
    if (est > budget) {
        res->req = *in;
        return;
    }
    res->rc = MG_COMPACT_CHANGED;
    r->tokens_after = est;
    r->raw_after = raw;
    r->raw_fixed_after = fixed;
    r->dropped_turns += st.dropped_turns;
    r->dropped_steps += st.dropped_steps;
    r->dropped_messages += st.dropped_messages;
    r->elided_bytes += sum_elided(&st);
    r->shrunk_parts += st.shrunk;
    r->filters |= st.filters;
    r->note_index = note ? (int)note_at(&st) : -1;
    /* The dropped originals, in order, for a summarizer. */
    mg_ir_message_t *d = mg_ir_alloc(a, (st.n + 1) * sizeof *d);
    size_t nd = 0;
    for (size_t i = 0; i < st.n; i++)
        if (st.w[i].dropped) d[nd++] = in->messages[i];
    r->dropped = d;
    r->n_dropped = nd;
}

/* The most raw tokens that still fit budget at this ratio, fixed of them being images (which the
 * ratio does not scale) and the rest text. */
static int64_t raw_room(int64_t budget, int64_t fixed, double ratio)
{
    if (ratio == 1.0 || budget <= 0 || budget > ((int64_t)1 << 50)) return budget;
    if (fixed > budget) return budget; /* nothing fits: any room <= the images' share */
    int64_t x = (int64_t)((double)(budget - fixed) / ratio);
    while (x > 0 && mg_tokens_scale(fixed + x, fixed, ratio) > budget)
        x--;
    while (mg_tokens_scale(fixed + x + 1, fixed, ratio) <= budget)
        x++;
    return fixed + x;
}

static int64_t summary_msg_cost(mg_ir_arena_t *a, int turns, const char *text, size_t len, bool cut,
                                int64_t img, const char **out)
{
    mg_buf_t b = {0};
    mg_buf_printf(&b, "[Summary of %d earlier turn%s by moongate: ", turns, turns == 1 ? "" : "s");
    mg_buf_append(&b, text, len);
    mg_buf_puts(&b, cut ? " [\xE2\x80\xA6]]" : "]");
    mg_ir_part_t p = {.type = MG_IR_PART_TEXT, .text = b.data};
    mg_ir_message_t m = {MG_IR_USER, &p, 1, NULL};
    int64_t c = mg_tokens_message(&m, img, NULL);
    if (out) *out = mg_ir_strndup(a, b.data, b.len);
    mg_buf_free(&b);
    return c;
}

int mg_compact_insert_summary(mg_ir_arena_t *a, mg_ir_request_t *req, int64_t budget,
                              const mg_compact_opts_t *opts, mg_compact_report_t *report,
                              const char *text, size_t len)
{
    if (!report || report->note_index < 0 || (size_t)report->note_index >= req->n_messages || !text)
        return -1;
    size_t ni = (size_t)report->note_index;
    const mg_ir_message_t *note = &req->messages[ni];
    if (note->role != MG_IR_USER || note->n_parts != 1 || note->parts[0].type != MG_IR_PART_TEXT)
        return -1;
    const mg_tokens_opts_t *to = opts ? &opts->tokens : NULL;
    int64_t img = mg_tokens_image_cost(to);
    double ratio =
        to && to->calib && to->model_ref ? mg_tokens_calib_ratio(to->calib, to->model_ref) : 1.0;
    /* A summary is model output about untrusted text: it gets the control-token filter too. */
    mg_safety_opts_t so;
    mg_safety_opts_init(&so);
    const char *clean = mg_safety_strip_tokens(a, text, len, &so, NULL);
    if (clean) len = strlen(text = clean);
    int64_t fixed = 0; /* the note is text: its fixed share is 0 */
    int64_t raw_without = mg_tokens_raw(req, img, &fixed) - mg_tokens_message(note, img, NULL);
    int64_t room = raw_room(budget, fixed, ratio) - raw_without;
    int turns = report->dropped_turns;
    const char *msg = NULL;
    if (summary_msg_cost(a, turns, text, len, false, img, NULL) <= room) {
        summary_msg_cost(a, turns, text, len, false, img, &msg);
    } else {
        size_t lo = 0,
               hi = len; /* the longest prefix that fits, by bisection (cost grows with it) */
        while (lo < hi) {
            size_t mid = lo + (hi - lo + 1) / 2;
            if (summary_msg_cost(a, turns, text, mid, true, img, NULL) <= room)
                lo = mid;
            else
                hi = mid - 1;
        }
        size_t k = utf8_floor(text, len, lo);
        if (k < SUMMARY_MIN_BYTES) return -1;
        summary_msg_cost(a, turns, text, k, true, img, &msg);
    }
    mg_ir_message_t *v = mg_ir_alloc(a, (req->n_messages + 1) * sizeof *v);
    memcpy(v, req->messages, req->n_messages * sizeof *v);
    mg_ir_part_t *p = mg_ir_alloc(a, sizeof *p);
    p->type = MG_IR_PART_TEXT;
    p->text = msg;
    v[ni] = (mg_ir_message_t){MG_IR_USER, p, 1, NULL};
    req->messages = v;
    report->filters |= MG_COMPACT_F_SUMMARY;
    report->summarized_turns = turns;
    report->raw_fixed_after = 0;
    report->raw_after = mg_tokens_raw(req, img, &report->raw_fixed_after);
    report->tokens_after = mg_tokens_scale(report->raw_after, report->raw_fixed_after, ratio);
    return 0;
}

int mg_compact(mg_ir_arena_t *a, mg_ir_request_t *req, int64_t budget,
               const mg_compact_opts_t *opts, mg_compact_report_t *report)
{
    mg_compact_opts_t dflt;
    if (!opts) {
        mg_compact_opts_init(&dflt);
        opts = &dflt;
    }
    mg_compact_report_t base;
    if (report)
        base = *report;
    else
        mg_compact_report_init(&base);
    run_result_t res = {.rep = base};
    compact_run(a, req, budget, opts, &res);

    if (res.rc == MG_COMPACT_CHANGED && res.rep.dropped_turns > base.dropped_turns &&
        opts->summarize && opts->drop_note) {
        /* Compact again with room kept for the summary, then ask for it. If that cannot fit or
         * the summarizer fails, the first (deterministic) result stands. */
        int64_t reserve = opts->summary_reserve_tokens > 0 ? opts->summary_reserve_tokens
                                                           : DEFAULT_SUMMARY_RESERVE;
        run_result_t r2 = {.rep = base};
        compact_run(a, req, budget - reserve, opts, &r2);
        if (r2.rc == MG_COMPACT_CHANGED && r2.rep.note_index >= 0) {
            double ratio = opts->tokens.calib && opts->tokens.model_ref
                               ? mg_tokens_calib_ratio(opts->tokens.calib, opts->tokens.model_ref)
                               : 1.0;
            int64_t room = raw_room(budget, r2.rep.raw_fixed_after, ratio) - r2.rep.raw_after;
            size_t max_bytes = room > 40 ? (size_t)(room - 40) * 3 : 0;
            const char *text = NULL;
            size_t len = 0;
            int64_t t0 = mg_now_ms();
            int64_t tmo = opts->summary_timeout_ms > 0 ? opts->summary_timeout_ms : 10000;
            if (max_bytes >= SUMMARY_MIN_BYTES &&
                opts->summarize(opts->summarize_ud, r2.rep.dropped, r2.rep.n_dropped,
                                r2.rep.dropped_turns - base.dropped_turns, max_bytes, tmo, a, &text,
                                &len) == 0 &&
                text && mg_now_ms() - t0 <= tmo &&
                mg_compact_insert_summary(a, &r2.req, budget, opts, &r2.rep, text, len) == 0) {
                res = r2;
                res.rep.budget = budget;
            }
        }
    }
    if (report) *report = res.rep;
    if (res.rc == MG_COMPACT_CHANGED) *req = res.req;
    return res.rc;
}

/* ---------------------------------------------------------------------------------------------
 * Validation. */

static bool utf8_valid(const char *str)
{
    if (!str) return true;
    const unsigned char *s = (const unsigned char *)str, *end = s + strlen(str);
    while (s < end) {
        if (end - s >= 8) { /* ASCII runs 8 bytes at a time */
            uint64_t w;
            memcpy(&w, s, 8);
            if (!(w & 0x8080808080808080ull)) {
                s += 8;
                continue;
            }
        }
        uint32_t cp;
        size_t n = mg_utf8_decode(s, (size_t)(end - s), &cp);
        if (!n) return false;
        s += n;
    }
    return true;
}

static bool part_utf8(const mg_ir_part_t *p)
{
    if (!utf8_valid(p->text) || !utf8_valid(p->id) || !utf8_valid(p->name) ||
        !utf8_valid(p->arguments))
        return false;
    for (size_t k = 0; k < p->n_parts; k++)
        if (!part_utf8(&p->parts[k])) return false;
    return true;
}

int mg_compact_validate(const mg_ir_request_t *req, int64_t budget, const mg_tokens_opts_t *opts,
                        char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (req->n_messages == 0) return mg_ir_fail(err, errlen, "the request has no messages");
    /* With previous_response_id the calls live upstream: the request may open with their
     * results (tool messages before any assistant one), which pair with nothing here. */
    size_t lead = 0;
    while (req->previous_response_id && lead < req->n_messages && req->messages[lead].role == MG_IR_TOOL)
        lead++;
    if (lead < req->n_messages && req->messages[lead].role != MG_IR_USER)
        return mg_ir_fail(err, errlen, "the first message must be from the user");
    for (size_t k = 0; k < req->n_system; k++)
        if (!part_utf8(&req->system[k])) return mg_ir_fail(err, errlen, "system: invalid UTF-8");
    /* The last assistant message that made calls, while its results may still follow, and which
     * of its parts (calls) were answered. */
    const mg_ir_message_t *calls = NULL;
    bool *answered = NULL;
    int rc = 0;
#define VFAIL(...)                                                                                 \
    do {                                                                                           \
        rc = mg_ir_fail(err, errlen, __VA_ARGS__);                                                 \
        goto out;                                                                                  \
    } while (0)
    for (size_t i = 0; i <= req->n_messages; i++) {
        const mg_ir_message_t *m = i < req->n_messages ? &req->messages[i] : NULL;
        if (calls && (!m || m->role != MG_IR_TOOL)) {
            for (size_t c = 0; c < calls->n_parts; c++)
                if (calls->parts[c].type == MG_IR_PART_TOOL_CALL && !answered[c])
                    VFAIL("tool call %s has no result", calls->parts[c].id);
            calls = NULL;
        }
        if (!m) break;
        if (i < lead) { /* results of the stored response's calls: only their own shape is checked */
            for (size_t j = 0; j < m->n_parts; j++) {
                if (m->parts[j].type != MG_IR_PART_TOOL_RESULT || !m->parts[j].id)
                    VFAIL("messages[%zu]: a tool message holds only tool results, each with an id", i + 1);
                if (!part_utf8(&m->parts[j])) VFAIL("messages[%zu]: invalid UTF-8", i + 1);
            }
            continue;
        }
        if (m->role == MG_IR_TOOL && !calls)
            VFAIL("messages[%zu]: tool results without a tool call before them", i + 1);
        if (m->role == MG_IR_TOOL && m->n_parts == 0)
            VFAIL("messages[%zu]: an empty tool message", i + 1);
        bool has_calls = false;
        for (size_t j = 0; j < m->n_parts; j++) {
            const mg_ir_part_t *p = &m->parts[j];
            if (!part_utf8(p)) VFAIL("messages[%zu]: invalid UTF-8", i + 1);
            if (m->role == MG_IR_TOOL) {
                if (p->type != MG_IR_PART_TOOL_RESULT)
                    VFAIL("messages[%zu]: a tool message holds only tool results", i + 1);
                if (!p->id) VFAIL("messages[%zu]: a tool result without an id", i + 1);
                size_t c = 0;
                while (c < calls->n_parts && !(calls->parts[c].type == MG_IR_PART_TOOL_CALL &&
                                               strcmp(calls->parts[c].id, p->id) == 0))
                    c++;
                if (c == calls->n_parts)
                    VFAIL("messages[%zu]: tool result %s answers no call of the assistant message "
                          "before it",
                          i + 1, p->id);
                answered[c] = true;
            } else if (p->type == MG_IR_PART_TOOL_RESULT) {
                VFAIL("messages[%zu]: a tool result outside a tool message", i + 1);
            } else if (p->type == MG_IR_PART_TOOL_CALL) {
                if (m->role != MG_IR_ASSISTANT)
                    VFAIL("messages[%zu]: a tool call outside an assistant message", i + 1);
                if (!p->id || !p->name)
                    VFAIL("messages[%zu]: a tool call without an id or a name", i + 1);
                has_calls = true;
            }
        }
        if (has_calls) {
            free(answered);
            answered = mg_xcalloc(m->n_parts, sizeof *answered);
            calls = m;
        }
    }
    if (budget != INT64_MAX) {
        int64_t est = mg_tokens_estimate(req, opts);
        if (est > budget)
            VFAIL("estimated %lld prompt tokens exceed the budget of %lld", (long long)est,
                  (long long)budget);
    }
out:
#undef VFAIL
    free(answered);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Safety filters. */

/* Cuts a tool result's text parts so that together they hold about cap bytes. */
static void cap_tool_result(cstate_t *st, size_t i, size_t j, size_t cap, int64_t *elided)
{
    const mg_ir_part_t *r = &st->w[i].m.parts[j];
    size_t total = 0;
    for (size_t k = 0; k < r->n_parts; k++)
        if (r->parts[k].type == MG_IR_PART_TEXT && r->parts[k].text)
            total += strlen(r->parts[k].text);
    if (total <= cap + MARKER_SLACK) return;
    for (size_t k = 0; k < r->n_parts; k++) {
        const mg_ir_part_t *q = &st->w[i].m.parts[j].parts[k];
        if (q->type != MG_IR_PART_TEXT || !q->text) continue;
        size_t len = strlen(q->text), el = 0;
        size_t keep = (size_t)((double)cap * (double)len / (double)total);
        char *ns = shrink_text(st->a, q->text, len, keep, &el);
        if (!ns) continue;
        mg_ir_part_t *rr = ensure_inner(st, i, j);
        ((mg_ir_part_t *)rr->parts)[k].text = ns;
        *elided += (int64_t)el;
        st->shrunk++;
        st->changed = true;
        st->filters |= MG_COMPACT_F_TOOL_RESULT_CAP;
    }
}

static bool is_text(const mg_ir_part_t *p)
{
    return p->type == MG_IR_PART_TEXT && p->text;
}

/* Control tokens out of the user message i's text parts [j, j + n), adjacent ones matched as one
 * text (strip_text_run). A part left empty is removed: some APIs refuse empty text blocks. */
static int strip_user_run(cstate_t *st, size_t i, size_t j, size_t n, const mg_safety_opts_t *o)
{
    char *small[8] = {0}; /* most runs are one part: no allocation for them */
    char **nt = n <= MG_ARRAY_LEN(small) ? small : mg_ir_alloc(st->a, n * sizeof *nt);
    int removed = strip_text_run(st->a, &st->in->messages[i].parts[j], n, o, nt);
    for (size_t k = 0; removed && k < n; k++) {
        if (!nt[k]) continue;
        ensure_parts(st, i);
        st->w[i].m.parts[j + k].text = nt[k];
        if (!*nt[k]) remove_part(st, i, j + k);
    }
    if (removed) st->changed = true;
    return removed;
}

/* The same over the runs of text parts inside the tool result at message i, part j. */
static int strip_tool_result(cstate_t *st, size_t i, size_t j, const mg_safety_opts_t *o)
{
    const mg_ir_part_t *in = st->in->messages[i].parts[j].parts;
    size_t n_in = st->in->messages[i].parts[j].n_parts;
    char *small[8] = {0};
    char **nt = n_in <= MG_ARRAY_LEN(small) ? small : mg_ir_alloc(st->a, n_in * sizeof *nt);
    int removed = 0;
    for (size_t k = 0; k < n_in; k++) {
        if (!is_text(&in[k])) continue;
        size_t n = 1;
        while (k + n < n_in && is_text(&in[k + n]))
            n++;
        removed += strip_text_run(st->a, &in[k], n, o, &nt[k]);
        k += n - 1;
    }
    if (!removed) return 0;
    mg_ir_part_t *r = ensure_inner(st, i, j);
    mg_ir_part_t *v = (mg_ir_part_t *)r->parts;
    size_t q = 0;
    for (size_t k = 0; k < n_in; k++) {
        if (nt[k] && !*nt[k]) continue; /* emptied: left out */
        v[q] = in[k];
        if (nt[k]) v[q].text = nt[k];
        q++;
    }
    r->n_parts = q;
    st->changed = true;
    return removed;
}

int mg_safety_filter(mg_ir_arena_t *a, mg_ir_request_t *req, const mg_safety_opts_t *opts,
                     mg_compact_report_t *report)
{
    mg_safety_opts_t dflt;
    if (!opts) {
        mg_safety_opts_init(&dflt);
        opts = &dflt;
    }
    cstate_t st;
    init_state(&st, a, req, MG_TOKENS_IMAGE_DEFAULT, 1.0, INT64_MAX, false);
    int removed = 0;
    int64_t elided = 0;
    for (size_t i = 0; i < st.n; i++) {
        const mg_ir_message_t *m = &req->messages[i];
        for (size_t j = 0; j < m->n_parts; j++) {
            const mg_ir_part_t *p = &m->parts[j];
            if (opts->control_tokens && m->role == MG_IR_USER && is_text(p)) {
                size_t n = 1;
                while (j + n < m->n_parts && is_text(&m->parts[j + n]))
                    n++;
                removed += strip_user_run(&st, i, j, n, opts);
                j += n - 1;
            } else if (m->role == MG_IR_TOOL && p->type == MG_IR_PART_TOOL_RESULT) {
                if (opts->control_tokens) removed += strip_tool_result(&st, i, j, opts);
                if (opts->tool_result_max_bytes)
                    cap_tool_result(&st, i, j, opts->tool_result_max_bytes, &elided);
            }
        }
    }
    if (removed) st.filters |= MG_COMPACT_F_CONTROL_TOKENS;
    if (opts->old_reasoning) drop_old_reasoning(&st, false);
    if (!st.changed) return 0;
    mg_ir_request_t out;
    materialize(&st, NULL, &out);
    *req = out;
    if (report) {
        report->filters |= st.filters;
        report->control_tokens += removed;
        report->elided_bytes += elided;
        report->shrunk_parts += st.shrunk;
    }
    return 1;
}

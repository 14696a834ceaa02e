/* Helpers shared by tokens_test.c, compact_test.c, compact_prop_test.c, tests/fuzz/compact.c and
 * bench/compact_bench.c: build IR requests in C, render them as readable text, check the
 * compaction invariants independently of mg_compact_validate, and generate random
 * conversations from a seeded PRNG. */
#pragma once
#pragma GCC diagnostic ignored "-Wunused-function"
#include "compact.h"
#include "ir.h"
#include "tokens.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- building ---- */

typedef struct tb {
    mg_ir_arena_t *a;
    mg_ir_request_t r;
} tb_t;

static void tb_init(tb_t *b, mg_api_t src)
{
    b->a = mg_ir_arena_new();
    mg_ir_request_init(b->a, &b->r, src);
}

static void tb_free(tb_t *b)
{
    mg_ir_arena_free(b->a);
    b->a = NULL;
}

static mg_ir_part_t *tb_push_part(mg_ir_arena_t *a, mg_ir_part_t **v, size_t *n)
{
    mg_ir_part_t *nv = mg_ir_alloc(a, (*n + 1) * sizeof *nv);
    if (*n) memcpy(nv, *v, *n * sizeof *nv);
    *v = nv;
    return &nv[(*n)++];
}

static mg_ir_message_t *tb_msg(tb_t *b, mg_ir_role_t role)
{
    mg_ir_message_t *nv = mg_ir_alloc(b->a, (b->r.n_messages + 1) * sizeof *nv);
    if (b->r.n_messages) memcpy(nv, b->r.messages, b->r.n_messages * sizeof *nv);
    b->r.messages = nv;
    mg_ir_message_t *m = &nv[b->r.n_messages++];
    m->role = role;
    return m;
}

static mg_ir_message_t *tb_last(tb_t *b)
{
    return &b->r.messages[b->r.n_messages - 1];
}

static mg_ir_part_t *tb_part(tb_t *b, mg_ir_part_type_t t)
{
    mg_ir_message_t *m = tb_last(b);
    mg_ir_part_t *p = tb_push_part(b->a, &m->parts, &m->n_parts);
    p->type = t;
    return p;
}

static void tb_system(tb_t *b, const char *text)
{
    mg_ir_part_t *p = tb_push_part(b->a, &b->r.system, &b->r.n_system);
    p->type = MG_IR_PART_TEXT;
    p->text = mg_ir_strdup(b->a, text);
}

static void tb_user(tb_t *b, const char *text)
{
    tb_msg(b, MG_IR_USER);
    tb_part(b, MG_IR_PART_TEXT)->text = mg_ir_strdup(b->a, text);
}

static void tb_assistant(tb_t *b, const char *text)
{
    tb_msg(b, MG_IR_ASSISTANT);
    if (text) tb_part(b, MG_IR_PART_TEXT)->text = mg_ir_strdup(b->a, text);
}

static void tb_text(tb_t *b, const char *text)
{
    tb_part(b, MG_IR_PART_TEXT)->text = mg_ir_strdup(b->a, text);
}

static void tb_image(tb_t *b)
{
    mg_ir_part_t *p = tb_part(b, MG_IR_PART_IMAGE);
    p->media_type = "image/png";
    p->data = "iVBORw0KGgo=";
}

static void tb_reasoning(tb_t *b, const char *text, const char *signature)
{
    mg_ir_part_t *p = tb_part(b, MG_IR_PART_REASONING);
    p->text = mg_ir_strdup(b->a, text);
    p->signature = signature ? mg_ir_strdup(b->a, signature) : NULL;
}

static void tb_call(tb_t *b, const char *id, const char *name, const char *args)
{
    mg_ir_part_t *p = tb_part(b, MG_IR_PART_TOOL_CALL);
    p->id = mg_ir_strdup(b->a, id);
    p->name = mg_ir_strdup(b->a, name);
    p->arguments = mg_ir_strdup(b->a, args ? args : "{}");
}

/* A tool result in the last message when it is a tool message, else in a new one. */
static mg_ir_part_t *tb_result_in(tb_t *b, const char *id, const char *text, bool new_msg)
{
    if (new_msg || !b->r.n_messages || tb_last(b)->role != MG_IR_TOOL) tb_msg(b, MG_IR_TOOL);
    mg_ir_part_t *p = tb_part(b, MG_IR_PART_TOOL_RESULT);
    p->id = mg_ir_strdup(b->a, id);
    if (text) {
        mg_ir_part_t *q = tb_push_part(b->a, &p->parts, &p->n_parts);
        q->type = MG_IR_PART_TEXT;
        q->text = mg_ir_strdup(b->a, text);
    }
    return p;
}

static void tb_result(tb_t *b, const char *id, const char *text)
{
    tb_result_in(b, id, text, false);
}

/* A string of n bytes made of the repeated pattern (whole characters only). */
static char *tb_fill(mg_ir_arena_t *a, const char *pattern, size_t n)
{
    char *s = mg_ir_alloc(a, n + 1);
    size_t pl = strlen(pattern), k = 0;
    while (k + pl <= n) {
        memcpy(s + k, pattern, pl);
        k += pl;
    }
    while (k < n)
        s[k++] = '.';
    s[n] = '\0';
    return s;
}

/* ---- rendering ---- */

static void rd_str(mg_buf_t *o, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\n')
            mg_buf_puts(o, "\\n");
        else
            mg_buf_append(o, s, 1);
    }
}

static void rd_part(mg_buf_t *o, const mg_ir_part_t *p)
{
    switch (p->type) {
    case MG_IR_PART_TEXT:
        rd_str(o, p->text);
        break;
    case MG_IR_PART_IMAGE:
        mg_buf_puts(o, "[image]");
        break;
    case MG_IR_PART_TOOL_CALL:
        mg_buf_printf(o, "[call %s %s ", p->id, p->name);
        rd_str(o, p->arguments);
        mg_buf_puts(o, "]");
        break;
    case MG_IR_PART_TOOL_RESULT:
        mg_buf_printf(o, "[result %s: ", p->id);
        for (size_t k = 0; k < p->n_parts; k++) {
            if (k) mg_buf_puts(o, " + ");
            rd_part(o, &p->parts[k]);
        }
        mg_buf_puts(o, "]");
        break;
    case MG_IR_PART_REASONING:
        mg_buf_puts(o, "[reasoning");
        if (p->signature) mg_buf_puts(o, " signed");
        mg_buf_puts(o, ": ");
        rd_str(o, p->text);
        mg_buf_puts(o, "]");
        break;
    case MG_IR_PART_OPAQUE:
        mg_buf_puts(o, "[opaque]");
        break;
    }
}

/* One line per message: "system: …", "user: …", "assistant: …", "tool: …"; parts joined by
 * " | ". Caller frees. */
static char *render(const mg_ir_request_t *r)
{
    mg_buf_t o = {0};
    for (size_t i = 0; i < r->n_system; i++) {
        mg_buf_puts(&o, "system: ");
        rd_part(&o, &r->system[i]);
        mg_buf_puts(&o, "\n");
    }
    static const char *const roles[] = {"user", "assistant", "tool"};
    for (size_t i = 0; i < r->n_messages; i++) {
        const mg_ir_message_t *m = &r->messages[i];
        mg_buf_printf(&o, "%s: ", roles[m->role]);
        for (size_t j = 0; j < m->n_parts; j++) {
            if (j) mg_buf_puts(&o, " | ");
            rd_part(&o, &m->parts[j]);
        }
        mg_buf_puts(&o, "\n");
    }
    if (!o.data) return strdup("");
    return mg_buf_steal(&o);
}

/* ---- invariants, checked without compact.c ---- */

static bool ck_utf8(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (s && *s) {
        int n = *s < 0x80 ? 0 : (*s >> 5) == 6 ? 1 : (*s >> 4) == 14 ? 2 : (*s >> 3) == 30 ? 3 : -1;
        if (n < 0) return false;
        for (int k = 1; k <= n; k++)
            if ((s[k] & 0xC0) != 0x80) return false;
        s += n + 1;
    }
    return true;
}

static bool ck_part_utf8(const mg_ir_part_t *p)
{
    if (!ck_utf8(p->text) || !ck_utf8(p->arguments)) return false;
    for (size_t k = 0; k < p->n_parts; k++)
        if (!ck_part_utf8(&p->parts[k])) return false;
    return true;
}

static bool ck_parts_equal(const mg_ir_part_t *a, const mg_ir_part_t *b)
{
    if (a->type != b->type) return false;
#define SEQ(f) ((a->f == NULL) == (b->f == NULL) && (!a->f || strcmp(a->f, b->f) == 0))
    if (!SEQ(text) || !SEQ(id) || !SEQ(name) || !SEQ(arguments) || !SEQ(signature) || !SEQ(data))
        return false;
#undef SEQ
    if (a->n_parts != b->n_parts) return false;
    for (size_t k = 0; k < a->n_parts; k++)
        if (!ck_parts_equal(&a->parts[k], &b->parts[k])) return false;
    return true;
}

static bool ck_msg_equal(const mg_ir_message_t *a, const mg_ir_message_t *b)
{
    if (a->role != b->role || a->n_parts != b->n_parts) return false;
    for (size_t j = 0; j < a->n_parts; j++)
        if (!ck_parts_equal(&a->parts[j], &b->parts[j])) return false;
    return true;
}

/* Structure: first message from the user, each assistant message's calls answered exactly by the
 * tool messages right after it, no tool message elsewhere. "" when fine, else a reason. */
static const char *ck_structure(const mg_ir_request_t *r)
{
    static char why[256];
    if (!r->n_messages) return "no messages";
    if (r->messages[0].role != MG_IR_USER) return "first message not from the user";
    for (size_t i = 0; i < r->n_messages; i++) {
        const mg_ir_message_t *m = &r->messages[i];
        if (m->role == MG_IR_TOOL) {
            size_t k = i;
            while (k > 0 && r->messages[k - 1].role == MG_IR_TOOL)
                k--;
            if (k == 0 || r->messages[k - 1].role != MG_IR_ASSISTANT) return "orphan tool message";
            const mg_ir_message_t *am = &r->messages[k - 1];
            for (size_t j = 0; j < m->n_parts; j++) {
                bool found = false;
                for (size_t c = 0; c < am->n_parts; c++)
                    found |= am->parts[c].type == MG_IR_PART_TOOL_CALL &&
                             strcmp(am->parts[c].id, m->parts[j].id) == 0;
                if (!found) {
                    snprintf(why, sizeof why, "result %s without its call", m->parts[j].id);
                    return why;
                }
            }
        }
        if (m->role == MG_IR_ASSISTANT) {
            for (size_t c = 0; c < m->n_parts; c++) {
                if (m->parts[c].type != MG_IR_PART_TOOL_CALL) continue;
                bool found = false;
                for (size_t k = i + 1; k < r->n_messages && r->messages[k].role == MG_IR_TOOL; k++)
                    for (size_t j = 0; j < r->messages[k].n_parts; j++)
                        found |= strcmp(r->messages[k].parts[j].id, m->parts[c].id) == 0;
                if (!found) {
                    snprintf(why, sizeof why, "call %s without its result", m->parts[c].id);
                    return why;
                }
            }
        }
    }
    return "";
}

/* Index of the first message of the last run of user messages (n when there is none). */
static size_t ck_last_user_run(const mg_ir_request_t *r, size_t *end)
{
    for (size_t i = r->n_messages; i-- > 0;) {
        if (r->messages[i].role != MG_IR_USER) continue;
        *end = i + 1;
        while (i > 0 && r->messages[i - 1].role == MG_IR_USER)
            i--;
        return i;
    }
    *end = r->n_messages;
    return r->n_messages;
}

/* Everything mg_compact promises about (in → out, rc). in must be valid. "" or a reason. */
static const char *ck_compaction(const mg_ir_request_t *in, const mg_ir_request_t *out, int rc,
                                 int64_t budget, const mg_tokens_opts_t *to)
{
    static char why[512];
    int64_t before = mg_tokens_estimate(in, to);
    if (rc == MG_COMPACT_FITS || rc == MG_COMPACT_OVERFLOW) {
        if (out->messages != in->messages || out->n_messages != in->n_messages)
            return "request changed although nothing was to change";
        if (rc == MG_COMPACT_FITS && before > budget)
            return "FITS but the estimate exceeds the budget";
        if (rc == MG_COMPACT_OVERFLOW && before <= budget) return "OVERFLOW although it fits";
        return "";
    }
    if (rc != MG_COMPACT_CHANGED) return "unknown return code";
    if (before <= budget) return "CHANGED although it fitted";
    int64_t after = mg_tokens_estimate(out, to);
    if (after > budget) {
        snprintf(why, sizeof why, "estimate %lld > budget %lld", (long long)after,
                 (long long)budget);
        return why;
    }
    const char *s = ck_structure(out);
    if (*s) return s;
    if (out->system != in->system || out->n_system != in->n_system) return "system parts changed";
    if (out->tools != in->tools || out->n_tools != in->n_tools) return "tools changed";
    size_t ie, oe;
    size_t is = ck_last_user_run(in, &ie), os = ck_last_user_run(out, &oe);
    if (is < in->n_messages) {
        size_t k = ie - is;
        if (os == out->n_messages || oe - os < k) return "last user turn lost";
        for (size_t j = 0; j < k; j++)
            if (!ck_msg_equal(&in->messages[is + j], &out->messages[oe - k + j]))
                return "last user turn changed";
    }
    for (size_t i = 0; i < out->n_messages; i++)
        for (size_t j = 0; j < out->messages[i].n_parts; j++)
            if (!ck_part_utf8(&out->messages[i].parts[j])) return "invalid UTF-8 introduced";
    return "";
}

/* ---- random conversations ---- */

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t rng_below(rng_t *r, size_t n)
{
    return n ? (size_t)(rng_next(r) % n) : 0;
}

static bool rng_chance(rng_t *r, unsigned percent)
{
    return rng_below(r, 100) < percent;
}

/* Random text: words, numbers, punctuation, newlines, accented letters, CJK, emoji, and now and
 * then a chat-template token. Cut from a 1 MB pool made once (copying is much cheaper than
 * building megabytes piece by piece, under ASan above all), at character boundaries. About n
 * bytes. */
static char *rng_text(rng_t *r, mg_ir_arena_t *a, size_t n)
{
    static const char *const pieces[] = {
        "the ",
        "moongate ",
        "token ",
        "context ",
        "window ",
        "42 ",
        "{\"k\": [1, 2]} ",
        "\n",
        "caf\xC3\xA9 ",
        "\xE4\xB8\xAD\xE6\x96\x87 ",
        "\xF0\x9F\x98\x80 ",
        "na\xC3\xAFve ",
        "x < y ",
        "[note] ",
        "<b>bold</b> ",
        "\xD0\x9F\xD1\x80\xD0\xB8 ",
        "tab\t",
        "- item\n",
    };
    static const char *const tokens[] = {"<|im_start|>", "<|eot_id|>", "[INST]",
                                         "<</SYS>>",     "</s>",       "<start_of_turn>"};
    static char *pool;
    static size_t pool_len;
    if (!pool) {
        rng_t pr = {12345};
        mg_buf_t b = {0};
        while (b.len < ((size_t)1 << 20)) {
            if (rng_chance(&pr, 1))
                mg_buf_puts(&b, tokens[rng_below(&pr, MG_ARRAY_LEN(tokens))]);
            else
                mg_buf_puts(&b, pieces[rng_below(&pr, MG_ARRAY_LEN(pieces))]);
        }
        pool_len = b.len;
        pool = mg_buf_steal(&b); /* lives as long as the process */
    }
    if (n > pool_len / 2) n = pool_len / 2;
    size_t off = rng_below(r, pool_len - n);
    while (off > 0 && (pool[off] & 0xC0) == 0x80)
        off--;
    size_t end = off + n;
    while (end < pool_len && (pool[end] & 0xC0) == 0x80)
        end++;
    return mg_ir_strndup(a, pool + off, end - off);
}

/* A size: mostly small, sometimes big, rarely huge. */
static size_t rng_size(rng_t *r, size_t huge)
{
    unsigned k = (unsigned)rng_below(r, 100);
    if (k < 60) return 1 + rng_below(r, 200);
    if (k < 90) return 200 + rng_below(r, 3000);
    if (k < 98) return 3000 + rng_below(r, 20000);
    return 20000 + rng_below(r, huge > 20000 ? huge - 20000 : 1);
}

/* A random valid conversation: units of a user run, then tool steps (assistant with optional
 * reasoning, text and parallel calls, then their results in one or several tool messages),
 * maybe a final assistant answer. The last unit may end in tool results (an agent loop). */
static void rng_conversation(rng_t *r, tb_t *b, size_t max_units, size_t huge)
{
    tb_init(b, (mg_api_t)rng_below(r, 3));
    size_t ns = rng_below(r, 3);
    for (size_t i = 0; i < ns; i++)
        tb_system(b, rng_text(r, b->a, rng_size(r, 2000)));
    size_t nt = rng_below(r, 3);
    if (nt) {
        b->r.tools = mg_ir_alloc(b->a, nt * sizeof *b->r.tools);
        for (size_t i = 0; i < nt; i++) {
            mg_ir_tool_t *t = &b->r.tools[b->r.n_tools++];
            t->name = i == 0 ? "read_file" : i == 1 ? "search" : "run";
            t->description = rng_text(r, b->a, rng_size(r, 500));
            t->parameters = mg_ir_keep_json(
                b->a,
                cJSON_Parse("{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\","
                            "\"description\":\"where\"}},\"required\":[\"path\"]}"));
            t->strict = -1;
        }
    }
    size_t units = 1 + rng_below(r, max_units);
    int call_no = 0;
    for (size_t u = 0; u < units; u++) {
        size_t nu = 1 + (rng_chance(r, 15) ? 1 : 0);
        for (size_t k = 0; k < nu; k++) {
            tb_user(b, rng_text(r, b->a, rng_size(r, huge)));
            /* A second text part: random cuts of the pool may split a token across the two. */
            if (rng_chance(r, 10)) tb_text(b, rng_text(r, b->a, rng_size(r, huge)));
            if (rng_chance(r, 10)) tb_image(b);
        }
        bool last = u + 1 == units;
        size_t steps = rng_below(r, 4);
        for (size_t s = 0; s < steps; s++) {
            tb_assistant(b, NULL);
            if (rng_chance(r, 40))
                tb_reasoning(b, rng_text(r, b->a, rng_size(r, 4000)),
                             rng_chance(r, 50) ? "sig" : NULL);
            if (rng_chance(r, 50)) tb_text(b, rng_text(r, b->a, rng_size(r, 4000)));
            size_t nc = 1 + (rng_chance(r, 30) ? rng_below(r, 3) : 0);
            char ids[4][24];
            for (size_t c = 0; c < nc; c++) {
                snprintf(ids[c], sizeof ids[c], "call_%d", call_no++);
                if (rng_chance(r, 10)) {
                    mg_buf_t args = {0};
                    mg_buf_puts(&args, "{\"path\":\"a.txt\",\"content\":");
                    mg_buf_json_str(&args, rng_text(r, b->a, rng_size(r, huge)));
                    mg_buf_puts(&args, "}");
                    tb_call(b, ids[c], "write", args.data);
                    mg_buf_free(&args);
                } else {
                    tb_call(b, ids[c], "read_file", "{\"path\":\"src/x.c\"}");
                }
            }
            bool separate = rng_chance(r, 50);
            for (size_t c = 0; c < nc; c++) {
                mg_ir_part_t *p = tb_result_in(b, ids[c], rng_text(r, b->a, rng_size(r, huge)),
                                               separate || c == 0);
                if (rng_chance(r, 5)) {
                    mg_ir_part_t *q = tb_push_part(b->a, &p->parts, &p->n_parts);
                    q->type = MG_IR_PART_IMAGE;
                    q->url = "https://example.com/x.png";
                }
            }
        }
        /* Earlier units mostly end with an answer; some end in tool results followed by the
         * next user text (Anthropic: tool_result blocks and text in one message). The last unit
         * rarely ends with an assistant message (a prefill). */
        if (last ? rng_chance(r, 15) : !rng_chance(r, 15)) {
            tb_assistant(b, NULL);
            if (rng_chance(r, 30)) tb_reasoning(b, rng_text(r, b->a, rng_size(r, 2000)), "sig");
            tb_text(b, rng_text(r, b->a, rng_size(r, 4000)));
        }
    }
}

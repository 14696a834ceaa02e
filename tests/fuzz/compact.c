/* libFuzzer target for src/compact.c and src/tokens.c. The input is a little program that builds
 * a request (valid or not, any bytes in its texts), then the safety filter and compaction run on
 * it with options and a budget taken from the input.
 *
 * Layout: byte 0 = option bits, bytes 1-2 = budget (× 8 tokens), byte 3 = caps; then ops, each
 * one byte (op = b % 10, argument = b / 10) followed, for texts, by one length byte L and L bytes
 * of text (cut at the first NUL):
 *   0 user text   1 assistant text   2 tool call (id = "c" + arg % 6) in the last assistant
 *   message   3 tool result (id = "c" + arg % 6) in the last tool message   4 reasoning (signed
 *   when arg is odd)   5 image in the last message   6 system text   7 repeat the last text
 *   (arg × 1 KB, to make texts big)   8 new tool message for the next result   9 big tool call
 *   arguments (JSON with a long string)
 *
 * Asserts (abort on failure):
 * - the control-token filter reaches a fixed point: its output, filtered again, has no token,
 *   and is never longer than its input;
 * - for every input: compaction returns FITS, CHANGED or OVERFLOW; FITS and OVERFLOW change
 *   nothing; CHANGED fits the budget;
 * - for a valid input (mg_compact_validate with no budget): the filter keeps it valid, and a
 *   compacted one is valid, fits, keeps system parts and the last user turn, introduces no
 *   invalid UTF-8 (ck_compaction, the property tests' checker). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/compact_testlib.h"
#include "fuzz_util.h"

typedef struct cur {
    const uint8_t *p;
    size_t n;
} cur_t;

static int next(cur_t *c)
{
    if (!c->n) return -1;
    c->n--;
    return *c->p++;
}

static const char *text_arg(cur_t *c, mg_ir_arena_t *a)
{
    int l = next(c);
    if (l < 0) return "";
    size_t n = (size_t)l < c->n ? (size_t)l : c->n;
    const char *s = mg_ir_strndup(a, (const char *)c->p, n); /* stops at a NUL via strlen */
    c->p += n;
    c->n -= n;
    return s;
}

static mg_ir_message_t *last_of(tb_t *b, mg_ir_role_t role)
{
    if (!b->r.n_messages || tb_last(b)->role != role) tb_msg(b, role);
    return tb_last(b);
}

static void check_strip(mg_ir_arena_t *a, const uint8_t *data, size_t size,
                        const mg_safety_opts_t *o)
{
    char *s = mg_ir_strndup(a, (const char *)data, size);
    size_t len = strlen(s);
    int n = 0;
    char *r = mg_safety_strip_tokens(a, s, len, o, &n);
    CHECK((r == NULL) == (n == 0));
    if (!r) return;
    CHECK(strlen(r) < len);
    int again = 0;
    CHECK(mg_safety_strip_tokens(a, r, strlen(r), o, &again) == NULL && again == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    static const char *const extra[] = {"###", "<|x"};
    mg_safety_opts_t so;
    mg_safety_opts_init(&so);
    so.old_reasoning = data[0] & 2;
    so.tool_result_max_bytes = (data[0] & 4) ? 64 + (size_t)data[3] * 16 : 0;
    if (data[0] & 8) {
        so.extra_tokens = extra;
        so.n_extra_tokens = 2;
    }
    tb_t b;
    tb_init(&b, (mg_api_t)(data[0] % 3));
    check_strip(b.a, data, size, &so);

    mg_compact_opts_t o;
    mg_compact_opts_init(&o);
    o.drop_note = !(data[0] & 16);
    o.drop_current_steps = data[0] & 32;
    o.tool_result_max_bytes = 64 + (size_t)data[3] * 8;
    o.message_max_bytes = 64 + (size_t)data[3] * 4;
    o.min_keep_bytes = data[3] & 1 ? 64 : 200;
    int64_t budget = ((int64_t)data[1] << 8 | data[2]) * 8;

    cur_t c = {data + 4, size - 4};
    const char *last_text = "";
    int op;
    while ((op = next(&c)) >= 0) {
        int arg = op / 10;
        char id[4] = {'c', (char)('0' + arg % 6), 0};
        switch (op % 10) {
        case 0:
            tb_user(&b, last_text = text_arg(&c, b.a));
            break;
        case 1:
            tb_assistant(&b, last_text = text_arg(&c, b.a));
            break;
        case 2:
            last_of(&b, MG_IR_ASSISTANT);
            tb_call(&b, id, "f", "{\"a\":1}");
            break;
        case 3:
            tb_result(&b, id, last_text = text_arg(&c, b.a));
            break;
        case 4:
            last_of(&b, MG_IR_ASSISTANT);
            tb_reasoning(&b, last_text = text_arg(&c, b.a), arg % 2 ? "sig" : NULL);
            break;
        case 5:
            if (b.r.n_messages) tb_image(&b);
            break;
        case 6:
            tb_system(&b, text_arg(&c, b.a));
            break;
        case 7:
            if (b.r.n_messages && tb_last(&b)->n_parts &&
                tb_last(&b)->parts[tb_last(&b)->n_parts - 1].type == MG_IR_PART_TEXT) {
                size_t l = strlen(last_text);
                if (!l) break;
                size_t want = (size_t)(arg + 1) * 1024;
                char *big = tb_fill(b.a, last_text, want - want % l);
                tb_last(&b)->parts[tb_last(&b)->n_parts - 1].text = big;
            }
            break;
        case 8:
            tb_msg(&b, MG_IR_TOOL);
            break;
        case 9: {
            last_of(&b, MG_IR_ASSISTANT);
            mg_buf_t j = {0};
            mg_buf_puts(&j, "{\"content\":");
            mg_buf_json_str(&j, tb_fill(b.a, "data ", (size_t)(arg + 1) * 500));
            mg_buf_puts(&j, ",\"n\":[1,{\"k\":\"v\"}]}");
            tb_call(&b, id, "write", j.data);
            mg_buf_free(&j);
            break;
        }
        }
    }

    char err[256];
    bool valid = mg_compact_validate(&b.r, INT64_MAX, NULL, err, sizeof err) == 0;
    mg_compact_report_t rep;
    mg_compact_report_init(&rep);
    mg_ir_request_t before = b.r;
    int ch = mg_safety_filter(b.a, &b.r, &so, &rep);
    CHECK(ch == 0 || ch == 1);
    CHECK(ch == 1 || b.r.messages == before.messages);
    if (valid) CHECK(mg_compact_validate(&b.r, INT64_MAX, NULL, err, sizeof err) == 0);

    mg_ir_request_t in = b.r;
    int rc = mg_compact(b.a, &b.r, budget, &o, &rep);
    CHECK(rc == MG_COMPACT_FITS || rc == MG_COMPACT_CHANGED || rc == MG_COMPACT_OVERFLOW);
    if (rc != MG_COMPACT_CHANGED)
        CHECK(b.r.messages == in.messages && b.r.n_messages == in.n_messages);
    if (rc == MG_COMPACT_CHANGED) CHECK(mg_tokens_estimate(&b.r, NULL) <= budget);
    if (valid) {
        const char *why = ck_compaction(&in, &b.r, rc, budget, NULL);
        if (*why) fprintf(stderr, "invariant: %s\n", why);
        CHECK(*why == '\0');
        if (rc == MG_COMPACT_CHANGED)
            CHECK(mg_compact_validate(&b.r, budget, NULL, err, sizeof err) == 0);
    }
    mg_buf_t h = {0};
    mg_compact_report_header(&rep, &h);
    mg_buf_free(&h);
    tb_free(&b);
    return 0;
}

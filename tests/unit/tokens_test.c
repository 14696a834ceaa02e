/* Token estimates (tokens.c): the counting rules, additivity, and per-model calibration. */
#include "compact_testlib.h"
#include "mg_test.h"
#include "tokens.h"

#include <math.h>
#include <pthread.h>

static int64_t naive_text(const char *s, size_t n)
{
    size_t ascii = 0, lead = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        ascii += c < 0x80;
        lead += c >= 0xC0;
    }
    return (int64_t)((ascii * 2 + 6) / 7 + lead);
}

MG_TEST(text_rules)
{
    MG_CHECK_INT(mg_tokens_text("", 0), 0);
    MG_CHECK_INT(mg_tokens_text(NULL, 5), 0);
    MG_CHECK_INT(mg_tokens_text("a", 1), 1);            /* rounds up */
    MG_CHECK_INT(mg_tokens_text("abcdefg", 7), 2);      /* 3.5 bytes a token */
    MG_CHECK_INT(mg_tokens_text("Hello world", 11), 4); /* cl100k: 2 */
    /* One token per non-ASCII character, whatever its length. */
    MG_CHECK_INT(mg_tokens_text("\xE4\xB8\xAD\xE6\x96\x87", 6), 2); /* 中文 */
    MG_CHECK_INT(mg_tokens_text("\xF0\x9F\x98\x80", 4), 1);         /* 😀 */
    MG_CHECK_INT(mg_tokens_text("caf\xC3\xA9", 5), 1 + 1);          /* "caf" + é */
    /* Stray continuation bytes count nothing; a lone lead byte counts one. */
    MG_CHECK_INT(mg_tokens_text("\x80\x80\x80", 3), 0);
    MG_CHECK_INT(mg_tokens_text("\xFF", 1), 1);
}

MG_TEST(text_scan_matches_naive_at_every_alignment)
{
    rng_t r = {7};
    char buf[300];
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = rng_below(&r, sizeof buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)(rng_chance(&r, 70) ? 'a' + rng_below(&r, 26) : rng_next(&r) & 0xFF);
        size_t off = rng_below(&r, n + 1);
        if (mg_tokens_text(buf + off, n - off) != naive_text(buf + off, n - off)) {
            MG_CHECK(false);
            break;
        }
    }
}

MG_TEST(estimate_is_the_sum_of_its_parts)
{
    rng_t r = {11};
    for (int iter = 0; iter < 200; iter++) {
        tb_t b;
        rng_conversation(&r, &b, 6, 30000);
        int64_t img = 700;
        mg_tokens_opts_t o = {NULL, NULL, img};
        int64_t sum = mg_tokens_request_base(&b.r, img, NULL);
        for (size_t i = 0; i < b.r.n_messages; i++)
            sum += mg_tokens_message(&b.r.messages[i], img, NULL);
        MG_CHECK_INT(mg_tokens_estimate(&b.r, &o), sum);
        tb_free(&b);
    }
}

MG_TEST(images_tools_and_overheads)
{
    tb_t b;
    tb_init(&b, MG_API_OPENAI_COMPLETIONS);
    tb_user(&b, "hi");
    int64_t one = mg_tokens_estimate(&b.r, NULL);
    MG_CHECK(one >= 1 + 5); /* text + message overhead */
    tb_image(&b);
    MG_CHECK_INT(mg_tokens_estimate(&b.r, NULL) - one, MG_TOKENS_IMAGE_DEFAULT + 1);
    mg_tokens_opts_t o = {NULL, NULL, 85};
    MG_CHECK_INT(mg_tokens_estimate(&b.r, &o) - one, 85 + 1);

    /* A tool schema counts its serialized size (about bytes / 3.5). */
    int64_t before = mg_tokens_estimate(&b.r, NULL);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\","
                         "\"description\":\"The city and country, e.g. Paris, France\"}},"
                         "\"required\":[\"city\"]}";
    mg_ir_tool_t tool = {.name = "get_weather", .description = "Current weather", .strict = -1};
    tool.parameters = mg_ir_keep_json(b.a, cJSON_Parse(schema));
    b.r.tools = &tool;
    b.r.n_tools = 1;
    int64_t with_tool = mg_tokens_estimate(&b.r, NULL);
    int64_t schema_tokens = (int64_t)(strlen(schema) * 2 / 7);
    MG_CHECK(with_tool - before >= schema_tokens);
    MG_CHECK(with_tool - before <= schema_tokens + 40);

    /* Inline media in an opaque part costs an image, not its base64 length. */
    mg_buf_t big = {0};
    mg_buf_puts(&big, "{\"type\":\"document\",\"source\":{\"type\":\"base64\",\"data\":\"");
    for (int i = 0; i < 20000; i++)
        mg_buf_puts(&big, "QUJD");
    mg_buf_puts(&big, "\"}}");
    tb_t d;
    tb_init(&d, MG_API_ANTHROPIC_MESSAGES);
    tb_user(&d, "summarize");
    int64_t base = mg_tokens_estimate(&d.r, NULL);
    tb_part(&d, MG_IR_PART_OPAQUE)->raw = mg_ir_keep_json(d.a, cJSON_Parse(big.data));
    int64_t doc = mg_tokens_estimate(&d.r, NULL) - base;
    MG_CHECK(doc >= MG_TOKENS_IMAGE_DEFAULT && doc < MG_TOKENS_IMAGE_DEFAULT + 50);
    /* A plain-text document's data is its text: counted as text, not as a fixed media cost. */
    mg_buf_reset(&big);
    mg_buf_puts(&big, "{\"type\":\"document\",\"source\":{\"type\":\"text\",\"media_type\":\"text/plain\",\"data\":\"");
    for (int i = 0; i < 20000; i++)
        mg_buf_puts(&big, "word ");
    mg_buf_puts(&big, "\"}}");
    int64_t with_doc = mg_tokens_estimate(&d.r, NULL);
    tb_part(&d, MG_IR_PART_OPAQUE)->raw = mg_ir_keep_json(d.a, cJSON_Parse(big.data));
    int64_t text_doc = mg_tokens_estimate(&d.r, NULL) - with_doc;
    MG_CHECK(text_doc >= mg_tokens_text(big.data + 80, 100000 - 1000));
    mg_buf_free(&big);
    tb_free(&d);

    /* Encrypted reasoning counts; the signature does not. */
    tb_assistant(&b, NULL);
    int64_t e0 = mg_tokens_estimate(&b.r, NULL);
    mg_ir_part_t *p = tb_part(&b, MG_IR_PART_REASONING);
    p->text = "";
    p->signature = "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl";
    int64_t e1 = mg_tokens_estimate(&b.r, NULL);
    MG_CHECK(e1 - e0 <= 2);
    p->encrypted = tb_fill(b.a, "abcd", 4000);
    MG_CHECK_INT(mg_tokens_estimate(&b.r, NULL) - e1, 1000);
    tb_free(&b);
}

MG_TEST(scale)
{
    MG_CHECK_INT(mg_tokens_scale(1000, 0, 1.0), 1000);
    MG_CHECK_INT(mg_tokens_scale(1000, 0, 0.8), 800);
    MG_CHECK_INT(mg_tokens_scale(1001, 0, 0.8), 801); /* rounds up */
    MG_CHECK_INT(mg_tokens_scale(0, 0, 1.5), 0);
    MG_CHECK_INT(mg_tokens_scale(INT64_MAX / 2, 0, 2.0) > 0, 1);
}

/* A synthetic tokenizer whose real count is true_ratio × raw, with ±noise uniform jitter. */
static int64_t synthetic(rng_t *r, int64_t raw, double true_ratio, double noise)
{
    double j = ((double)rng_below(r, 20001) / 10000.0 - 1.0) * noise;
    return (int64_t)llround((double)raw * true_ratio * (1.0 + j));
}

static void converge(double true_ratio, double noise, double lo, double hi)
{
    mg_tokens_calib_t *c = mg_tokens_calib_new();
    rng_t r = {(uint64_t)(true_ratio * 1000)};
    int under = 0, n_checked = 0;
    for (int i = 0; i < 400; i++) {
        int64_t raw = 500 + (int64_t)rng_below(&r, 50000);
        int64_t real = synthetic(&r, raw, true_ratio, noise);
        if (i >= 100) { /* after warm-up: how often is the calibrated estimate below the truth? */
            int64_t est = mg_tokens_scale(raw, 0, mg_tokens_calib_ratio(c, "p/m"));
            under += est < real;
            n_checked++;
        }
        mg_tokens_calib_observe(c, "p/m", raw, 0, real);
    }
    double ratio = mg_tokens_calib_ratio(c, "p/m");
    if (!(ratio >= lo && ratio <= hi))
        fprintf(stderr, "  true %.2f noise %.2f: ratio %.4f not in [%.2f, %.2f]\n", true_ratio,
                noise, ratio, lo, hi);
    MG_CHECK(ratio >= lo && ratio <= hi);
    /* Conservative: below the real count for at most 3% of requests. */
    if (under * 100 > n_checked * 3)
        fprintf(stderr, "  true %.2f: %d of %d estimates below the truth\n", true_ratio, under,
                n_checked);
    MG_CHECK(under * 100 <= n_checked * 3);
    mg_tokens_calib_free(c);
}

MG_TEST(calibration_converges_on_a_synthetic_tokenizer)
{
    converge(0.80, 0.05, 0.80, 0.90); /* our estimate errs high: the ratio comes down */
    converge(1.30, 0.05, 1.30, 1.45); /* a tokenizer that splits more (old 32K vocabularies) */
    converge(1.00, 0.00, 1.00, 1.01); /* exact: no spread left */
    converge(0.60, 0.10, 0.60, 0.75);
}

MG_TEST(calibration_clamps_and_ignores_nonsense)
{
    mg_tokens_calib_t *c = mg_tokens_calib_new();
    MG_CHECK(mg_tokens_calib_ratio(c, "a/x") == 1.0); /* never seen */
    MG_CHECK(mg_tokens_calib_ratio(NULL, "a/x") == 1.0);
    for (int i = 0; i < 200; i++)
        mg_tokens_calib_observe(c, "a/high", 1000, 0, 3000);
    MG_CHECK(mg_tokens_calib_ratio(c, "a/high") == MG_TOKENS_RATIO_MAX);
    for (int i = 0; i < 200; i++)
        mg_tokens_calib_observe(c, "a/low", 1000, 0, 200);
    MG_CHECK(mg_tokens_calib_ratio(c, "a/low") == MG_TOKENS_RATIO_MIN);
    mg_tokens_calib_observe(c, "a/small", 100, 0, 90); /* below MG_TOKENS_CALIB_MIN_RAW */
    mg_tokens_calib_observe(c, "a/small", 1000, 0, 0); /* no report */
    mg_tokens_calib_observe(c, "a/small", -5, 0, 1000);
    mg_tokens_calib_observe(c, NULL, 1000, 0, 1000);
    MG_CHECK(mg_tokens_calib_ratio(c, "a/small") == 1.0);
    /* One absurd report moves the ratio, but not far. */
    for (int i = 0; i < 100; i++)
        mg_tokens_calib_observe(c, "a/steady", 1000, 0, 900);
    double before = mg_tokens_calib_ratio(c, "a/steady");
    mg_tokens_calib_observe(c, "a/steady", 1000, 0, 1000000);
    double after = mg_tokens_calib_ratio(c, "a/steady");
    MG_CHECK(after > before && after < before + 0.05);
    /* But a real shift (every report higher from now on) wins within a few dozen reports. */
    for (int i = 0; i < 40; i++)
        mg_tokens_calib_observe(c, "a/steady", 1000, 0, 1300);
    MG_CHECK(mg_tokens_calib_ratio(c, "a/steady") >= 1.3);
    mg_tokens_calib_free(c);
}

MG_TEST(calibrated_estimate_uses_the_models_ratio)
{
    mg_tokens_calib_t *c = mg_tokens_calib_new();
    for (int i = 0; i < 300; i++)
        mg_tokens_calib_observe(c, "local/small", 10000, 0, 15000);
    tb_t b;
    tb_init(&b, MG_API_OPENAI_COMPLETIONS);
    tb_user(&b, tb_fill(b.a, "lorem ipsum ", 35000));
    int64_t raw = mg_tokens_estimate(&b.r, NULL);
    mg_tokens_opts_t o = {c, "local/small", 0};
    MG_CHECK_INT(mg_tokens_estimate(&b.r, &o),
                 mg_tokens_scale(raw, 0, mg_tokens_calib_ratio(c, "local/small")));
    MG_CHECK(mg_tokens_estimate(&b.r, &o) >= raw * 3 / 2);
    o.model_ref = "hosted/other";
    MG_CHECK_INT(mg_tokens_estimate(&b.r, &o), raw);
    tb_free(&b);
    mg_tokens_calib_free(c);
}

/* Calibration is a ratio to our text count: an image's fixed cost is not multiplied by it, and a
 * prompt with images teaches it nothing (its report holds the real image cost, not ours). */
MG_TEST(calibration_leaves_images_alone)
{
    mg_tokens_calib_t *c = mg_tokens_calib_new();
    for (int i = 0; i < 300; i++)
        mg_tokens_calib_observe(c, "local/low", 10000, 0, 5000);
    double ratio = mg_tokens_calib_ratio(c, "local/low");
    MG_CHECK(ratio < 0.6);
    tb_t b;
    tb_init(&b, MG_API_OPENAI_COMPLETIONS);
    tb_user(&b, tb_fill(b.a, "lorem ipsum ", 7000));
    mg_tokens_opts_t o = {c, "local/low", 0};
    int64_t text_only = mg_tokens_estimate(&b.r, &o);
    for (int i = 0; i < 10; i++)
        tb_image(&b);
    int64_t fixed = 0;
    int64_t raw = mg_tokens_raw(&b.r, MG_TOKENS_IMAGE_DEFAULT, &fixed);
    MG_CHECK_INT(fixed, 10 * MG_TOKENS_IMAGE_DEFAULT);
    MG_CHECK_INT(raw, mg_tokens_estimate(&b.r, NULL));
    int64_t est = mg_tokens_estimate(&b.r, &o);
    MG_CHECK_INT(est, mg_tokens_scale(raw, fixed, ratio));
    /* Ten images add their ten fixed costs (and a scaled part overhead each), not half of them. */
    MG_CHECK(est - text_only >= 10 * MG_TOKENS_IMAGE_DEFAULT);
    MG_CHECK(est - text_only <= 10 * (MG_TOKENS_IMAGE_DEFAULT + 1));
    /* Inline media in an opaque part is a fixed cost too. */
    mg_ir_part_t *q = tb_part(&b, MG_IR_PART_OPAQUE);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "type", "document");
    cJSON_AddStringToObject(doc, "data", tb_fill(b.a, "QUJD", 4000));
    q->raw = mg_ir_keep_json(b.a, doc);
    fixed = 0;
    mg_tokens_raw(&b.r, MG_TOKENS_IMAGE_DEFAULT, &fixed);
    MG_CHECK_INT(fixed, 11 * MG_TOKENS_IMAGE_DEFAULT);
    /* scale: the fixed share is clamped to [0, raw]. */
    MG_CHECK_INT(mg_tokens_scale(1000, 400, 0.5), 700);
    MG_CHECK_INT(mg_tokens_scale(1000, 5000, 0.5), 1000);
    MG_CHECK_INT(mg_tokens_scale(1000, -1, 0.5), 500);
    /* A report for a prompt with images is not observed. */
    for (int i = 0; i < 50; i++)
        mg_tokens_calib_observe(c, "local/img", 10000, 1600, 3000);
    MG_CHECK(mg_tokens_calib_ratio(c, "local/img") == 1.0);
    mg_tokens_calib_observe(c, "local/low", 10000, 1600, 20000);
    MG_CHECK(mg_tokens_calib_ratio(c, "local/low") == ratio);
    tb_free(&b);
    mg_tokens_calib_free(c);
}

MG_TEST(calibration_dump_json)
{
    mg_tokens_calib_t *c = mg_tokens_calib_new();
    mg_buf_t out = {0};
    mg_tokens_calib_dump_json(c, &out);
    MG_CHECK_STR(out.data, "{}");
    mg_buf_reset(&out);
    /* Enough models to make the table grow, inserted out of order. */
    for (int i = 40; i-- > 0;) {
        char ref[32];
        snprintf(ref, sizeof ref, "prov/m%02d", i);
        mg_tokens_calib_observe(c, ref, 1000, 0, 900 + i);
    }
    mg_tokens_calib_observe(c, "a \"quoted\"/id", 1000, 0, 1000);
    mg_tokens_calib_dump_json(c, &out);
    cJSON *j = cJSON_Parse(out.data);
    MG_CHECK(j != NULL);
    MG_CHECK_INT(cJSON_GetArraySize(j), 41);
    MG_CHECK_STR(j->child->string, "a \"quoted\"/id"); /* sorted */
    const cJSON *m = cJSON_GetObjectItem(j, "prov/m10");
    MG_CHECK(m && cJSON_GetObjectItem(m, "samples")->valueint == 1);
    MG_CHECK(m && fabs(cJSON_GetObjectItem(m, "mean")->valuedouble - 0.91) < 1e-9);
    MG_CHECK(m && fabs(cJSON_GetObjectItem(m, "ratio")->valuedouble - 1.16) < 1e-3);
    cJSON_Delete(j);
    mg_buf_free(&out);
    mg_tokens_calib_free(c);
    mg_tokens_calib_dump_json(NULL, &out);
    MG_CHECK_STR(out.data, "{}");
    mg_buf_free(&out);
}

typedef struct {
    mg_tokens_calib_t *c;
    int id;
} thr_arg_t;

static void *hammer(void *p)
{
    thr_arg_t *t = p;
    char ref[16];
    for (int i = 0; i < 20000; i++) {
        snprintf(ref, sizeof ref, "p/m%d", (i + t->id) % 50);
        if (t->id % 2)
            mg_tokens_calib_observe(t->c, ref, 1000, 0, 800 + i % 100);
        else
            (void)mg_tokens_calib_ratio(t->c, ref);
    }
    return NULL;
}

MG_TEST(calibration_is_thread_safe)
{
    mg_tokens_calib_t *c = mg_tokens_calib_new();
    pthread_t th[4];
    thr_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg_t){c, i};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    mg_buf_t out = {0};
    mg_tokens_calib_dump_json(c, &out);
    cJSON *j = cJSON_Parse(out.data);
    MG_CHECK_INT(cJSON_GetArraySize(j), 50);
    int64_t samples = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) samples += (int64_t)cJSON_GetObjectItem(e, "samples")->valuedouble;
    MG_CHECK_INT(samples, 40000);
    cJSON_Delete(j);
    mg_buf_free(&out);
    mg_tokens_calib_free(c);
}

MG_TEST_MAIN()

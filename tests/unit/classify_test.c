/* Unit tests for classify.c: one fixture per upstream wording (PROTOCOLS.md A.5, A.6). */
#include "classify.h"
#include "mg_test.h"

typedef struct {
    long status;
    const char *headers;
    const char *body;
    mg_class_t want;
} fixture_t;

static const fixture_t fixtures[] = {
    {200, "", "{\"choices\":[]}", MG_CLASS_OK},
    {400, "", "{\"error\":{\"message\":\"This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens.\",\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: 210000 tokens > 200000 maximum\"}}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"object\":\"error\",\"message\":\"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"error\":{\"message\":\"You passed 1015 input tokens and requested 10 output tokens. However, the model's context length is only 1024 tokens\",\"type\":\"BadRequestError\",\"param\":\"input_tokens\",\"code\":400}}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"error\":{\"code\":400,\"message\":\"request (4390 tokens) exceeds the available context size (4096 tokens), try increasing it\",\"type\":\"exceed_context_size_error\"}}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"error\":\"The number of tokens to keep from the initial prompt is greater than the context length (n_keep: 13055>= n_ctx: 4096).\"}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"error\":{\"message\":\"the prompt is longer than the context length currently available to the model\",\"type\":\"invalid_request_error\"}}", MG_CLASS_CONTEXT_OVERFLOW},
    {400, "", "{\"error\":{\"message\":\"temperature must be <= 2\",\"type\":\"invalid_request_error\"}}", MG_CLASS_BAD_REQUEST},
    {401, "", "{\"error\":{\"message\":\"bad key\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}", MG_CLASS_AUTH},
    {403, "", "{}", MG_CLASS_AUTH},
    {402, "", "{\"error\":{\"code\":402,\"message\":\"Insufficient credits\"}}", MG_CLASS_BILLING},
    {404, "", "{\"error\":{\"message\":\"model \\\"x\\\" not found, try pulling it first\",\"type\":\"not_found_error\"}}", MG_CLASS_MODEL_NOT_FOUND},
    {408, "", "", MG_CLASS_TIMEOUT},
    {429, "Retry-After: 2\r\n", "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}", MG_CLASS_RATE_LIMIT},
    {429, "", "{\"error\":{\"message\":\"Too many tokens, please wait: rate limit\"}}", MG_CLASS_RATE_LIMIT},
    {503, "", "{\"error\":{\"message\":\"Loading model\",\"type\":\"unavailable_error\",\"code\":503}}", MG_CLASS_OVERLOADED},
    {529, "", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", MG_CLASS_OVERLOADED},
    {500, "", "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}", MG_CLASS_SERVER_ERROR},
    {502, "", "<html>bad gateway</html>", MG_CLASS_SERVER_ERROR},
};

MG_TEST(http_fixtures)
{
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        const fixture_t *f = &fixtures[i];
        mg_class_t got = mg_classify_http(f->status, f->headers, strlen(f->headers), f->body, strlen(f->body));
        if (got != f->want)
            fprintf(stderr, "  fixture %zu (HTTP %ld): got %s, want %s\n", i, f->status, mg_class_name(got),
                    mg_class_name(f->want));
        MG_CHECK(got == f->want);
    }
}

MG_TEST(transfer_results)
{
    MG_CHECK(mg_classify_xfer(MG_XFER_CONNECT_ERROR) == MG_CLASS_CONNECT_ERROR);
    MG_CHECK(mg_classify_xfer(MG_XFER_TIMEOUT_FIRST_TOKEN) == MG_CLASS_TIMEOUT);
    MG_CHECK(mg_classify_xfer(MG_XFER_TIMEOUT_IDLE) == MG_CLASS_TIMEOUT);
    MG_CHECK(mg_classify_xfer(MG_XFER_BROKEN) == MG_CLASS_STREAM_BROKEN);
    MG_CHECK(mg_classify_xfer(MG_XFER_CANCELLED) == MG_CLASS_CANCELLED);
}

MG_TEST(fallback_decisions)
{
    MG_CHECK(mg_class_moves_on(MG_CLASS_CONNECT_ERROR));
    MG_CHECK(mg_class_moves_on(MG_CLASS_RATE_LIMIT));
    MG_CHECK(mg_class_moves_on(MG_CLASS_OVERLOADED));
    MG_CHECK(mg_class_moves_on(MG_CLASS_SERVER_ERROR));
    MG_CHECK(mg_class_moves_on(MG_CLASS_TIMEOUT));
    MG_CHECK(!mg_class_moves_on(MG_CLASS_BAD_REQUEST));
    MG_CHECK(!mg_class_moves_on(MG_CLASS_OK));
}

MG_TEST(retry_after)
{
    const char *h = "Content-Type: application/json\r\nRetry-After: 3\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), 3000);
    h = "retry-after-ms: 250\r\nRetry-After: 3\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), 250);
    h = "X: y\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), -1);
}

MG_TEST_MAIN()

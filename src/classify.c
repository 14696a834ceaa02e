/* Error classification. See classify.h. The body wordings come from ../shared/PROTOCOLS.md A.5
 * and A.6 (OpenAI, Anthropic, vLLM, llama.cpp, LM Studio, Ollama, OpenRouter). */
#include "classify.h"

#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const class_names[] = {
    [MG_CLASS_OK] = "ok",
    [MG_CLASS_CONNECT_ERROR] = "connect_error",
    [MG_CLASS_TIMEOUT] = "timeout",
    [MG_CLASS_RATE_LIMIT] = "rate_limit",
    [MG_CLASS_OVERLOADED] = "overloaded",
    [MG_CLASS_SERVER_ERROR] = "server_error",
    [MG_CLASS_AUTH] = "auth",
    [MG_CLASS_BILLING] = "billing",
    [MG_CLASS_MODEL_NOT_FOUND] = "model_not_found",
    [MG_CLASS_MODEL_NOT_LOADED] = "model_not_loaded",
    [MG_CLASS_CONTEXT_OVERFLOW] = "context_overflow",
    [MG_CLASS_CONTENT_FILTER] = "content_filter",
    [MG_CLASS_BAD_REQUEST] = "bad_request",
    [MG_CLASS_STREAM_BROKEN] = "stream_broken",
    [MG_CLASS_TOO_LARGE] = "too_large",
    [MG_CLASS_UNSUPPORTED] = "unsupported",
    [MG_CLASS_NO_KEY] = "no_key",
    [MG_CLASS_CANCELLED] = "cancelled",
};

const char *mg_class_name(mg_class_t c)
{
    return (size_t)c < MG_ARRAY_LEN(class_names) && class_names[c] ? class_names[c] : "unknown";
}

mg_class_t mg_classify_xfer(mg_xfer_result_t r)
{
    switch (r) {
    case MG_XFER_OK: return MG_CLASS_OK;
    case MG_XFER_CONNECT_ERROR: return MG_CLASS_CONNECT_ERROR;
    case MG_XFER_TIMEOUT_CONNECT:
    case MG_XFER_TIMEOUT_FIRST_TOKEN:
    case MG_XFER_TIMEOUT_IDLE:
    case MG_XFER_TIMEOUT_TOTAL: return MG_CLASS_TIMEOUT;
    case MG_XFER_BROKEN: return MG_CLASS_STREAM_BROKEN;
    case MG_XFER_TOO_LARGE: return MG_CLASS_TOO_LARGE;
    case MG_XFER_CANCELLED: return MG_CLASS_CANCELLED;
    }
    return MG_CLASS_SERVER_ERROR;
}

/* Case-insensitive substring search bounded by n. */
static bool contains(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    if (k == 0 || n < k) return false;
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0) return true;
    return false;
}

static bool is_context_overflow(const char *b, size_t n)
{
    static const char *const words[] = {
        "context_length_exceeded", "exceed_context_size_error", "prompt is too long",
        "exceeds the context window", "maximum context length", "exceeds the available context size",
        "greater than the context length", "exceed context limit", "prompt too long",
        "reduce the length of the messages", "input does not fit in context length",
        "longer than the context length", "context length is only",
    };
    if (contains(b, n, "rate limit") || contains(b, n, "too many requests")) return false;
    for (size_t i = 0; i < MG_ARRAY_LEN(words); i++)
        if (contains(b, n, words[i])) return true;
    return false;
}

mg_class_t mg_classify_http(long status, const char *headers, size_t hlen, const char *body, size_t blen)
{
    (void)headers;
    (void)hlen;
    if (!body) blen = 0;
    if (status >= 200 && status < 300) return MG_CLASS_OK;
    if (is_context_overflow(body, blen)) return MG_CLASS_CONTEXT_OVERFLOW;
    switch (status) {
    case 401:
    case 403: return MG_CLASS_AUTH;
    case 402: return MG_CLASS_BILLING;
    case 404: return MG_CLASS_MODEL_NOT_FOUND;
    case 408: return MG_CLASS_TIMEOUT;
    case 429: return MG_CLASS_RATE_LIMIT;
    case 503:
    case 529: return MG_CLASS_OVERLOADED;
    default: break;
    }
    if (status >= 500) return MG_CLASS_SERVER_ERROR;
    if (contains(body, blen, "content_filter") || contains(body, blen, "moderation"))
        return MG_CLASS_CONTENT_FILTER;
    return MG_CLASS_BAD_REQUEST;
}

bool mg_class_moves_on(mg_class_t c)
{
    return c != MG_CLASS_OK && c != MG_CLASS_BAD_REQUEST && c != MG_CLASS_CONTENT_FILTER &&
           c != MG_CLASS_CANCELLED;
}

/* Finds header name (case-insensitive) at a line start in the block; returns its value. */
static const char *find_header(const char *h, size_t n, const char *name, size_t *vlen)
{
    size_t k = strlen(name);
    size_t i = 0;
    while (i < n) {
        const char *line = h + i;
        const char *eol = memchr(line, '\n', n - i);
        size_t ll = eol ? (size_t)(eol - line) : n - i;
        if (ll > k && strncasecmp(line, name, k) == 0 && line[k] == ':') {
            const char *v = line + k + 1;
            const char *end = line + ll;
            while (v < end && (*v == ' ' || *v == '\t')) v++;
            while (end > v && (end[-1] == '\r' || end[-1] == ' ')) end--;
            *vlen = (size_t)(end - v);
            return v;
        }
        i += ll + 1;
    }
    return NULL;
}

int64_t mg_retry_after_ms(const char *headers, size_t hlen)
{
    size_t vl;
    const char *v;
    if (!headers) return -1;
    if ((v = find_header(headers, hlen, "retry-after-ms", &vl)) && vl > 0 && isdigit((unsigned char)*v))
        return strtoll(v, NULL, 10);
    if ((v = find_header(headers, hlen, "retry-after", &vl)) && vl > 0 && isdigit((unsigned char)*v))
        return (int64_t)(strtod(v, NULL) * 1000);
    return -1;
}

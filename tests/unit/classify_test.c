/* Unit tests for classify.c: one fixture per upstream wording (PROTOCOLS.md A.1, A.3, A.5, A.6),
 * each naming the rule that must decide it, the stream-error and 200-error paths, retry-after,
 * operator pattern files (precedence, the sandbox, every load error), the Lua-pattern subset and
 * the cost of one classification. */
#include "classify.h"
#include "mg_test.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

typedef struct {
    const char *server;
    long status;
    const char *headers;
    const char *body;
    mg_class_t want;
    const char *rule; /* the rule id that must decide, or NULL for the status fallback */
} fixture_t;

#define OAI_ERR(msg, type, code) "{\"error\":{\"message\":\"" msg "\",\"type\":" type ",\"param\":null,\"code\":" code "}}"
#define ANT_ERR(type, msg) "{\"type\":\"error\",\"error\":{\"type\":\"" type "\",\"message\":\"" msg "\"},\"request_id\":\"req_1\"}"

static const fixture_t http_fixtures[] = {
    /* ---- OpenAI (A.1) */
    {"openai", 400, "", OAI_ERR("This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens. Please reduce the length of the messages.", "\"invalid_request_error\"", "\"context_length_exceeded\""), MG_CLASS_CONTEXT_OVERFLOW, "openai.context_length_exceeded"},
    {"openai responses", 400, "", OAI_ERR("Your input exceeds the context window of this model. Please adjust your input and try again.", "\"invalid_request_error\"", "\"context_length_exceeded\""), MG_CLASS_CONTEXT_OVERFLOW, "openai.context_length_exceeded"},
    {"openai responses (no code)", 400, "", OAI_ERR("Your input exceeds the context window of this model.", "\"invalid_request_error\"", "null"), MG_CLASS_CONTEXT_OVERFLOW, "openai.exceeds_context_window"},
    {"openai", 401, "", OAI_ERR("Incorrect API key provided: sk-abc.", "\"invalid_request_error\"", "\"invalid_api_key\""), MG_CLASS_AUTH, "http.401_403"},
    {"openai", 403, "", OAI_ERR("Country, region, or territory not supported", "\"request_forbidden\"", "\"unsupported_country_region_territory\""), MG_CLASS_AUTH, "http.401_403"},
    {"openai", 404, "", OAI_ERR("The model `gpt-9` does not exist or you do not have access to it.", "\"invalid_request_error\"", "\"model_not_found\""), MG_CLASS_MODEL_NOT_FOUND, "openai.model_not_found"},
    {"openai", 429, "retry-after: 20\r\n", OAI_ERR("Rate limit reached for gpt-x in organization org-1 on requests per min (RPM): Limit 3, Used 3, Requested 1.", "\"requests\"", "\"rate_limit_exceeded\""), MG_CLASS_RATE_LIMIT, "http.429"},
    {"openai", 429, "", OAI_ERR("You exceeded your current quota, please check your plan and billing details.", "\"insufficient_quota\"", "\"insufficient_quota\""), MG_CLASS_BILLING, "openai.insufficient_quota"},
    {"openai", 500, "", OAI_ERR("The server had an error while processing your request.", "\"server_error\"", "null"), MG_CLASS_SERVER_ERROR, NULL},
    {"openai", 503, "", OAI_ERR("The engine is currently overloaded, please try again later.", "\"server_error\"", "null"), MG_CLASS_OVERLOADED, "http.503_529"},
    {"openai", 400, "", OAI_ERR("Invalid prompt: your prompt was flagged as potentially violating our usage policy.", "\"invalid_request_error\"", "\"invalid_prompt\""), MG_CLASS_CONTENT_FILTER, "openai.invalid_prompt"},
    {"azure openai", 400, "", "{\"error\":{\"message\":\"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.\",\"type\":null,\"param\":\"prompt\",\"code\":\"content_filter\",\"status\":400}}", MG_CLASS_CONTENT_FILTER, "azure.content_filter"},
    {"openai", 400, "", OAI_ERR("Invalid value for 'temperature': must be <= 2.", "\"invalid_request_error\"", "\"invalid_value\""), MG_CLASS_BAD_REQUEST, NULL},

    /* ---- Anthropic (A.3) */
    {"anthropic", 400, "", ANT_ERR("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"), MG_CLASS_CONTEXT_OVERFLOW, "anthropic.prompt_too_long"},
    {"anthropic", 400, "", ANT_ERR("invalid_request_error", "input length and `max_tokens` exceed context limit: 197202 + 21333 > 200000, decrease input length or `max_tokens` and try again"), MG_CLASS_CONTEXT_OVERFLOW, "anthropic.exceed_context_limit"},
    {"anthropic", 401, "", ANT_ERR("authentication_error", "invalid x-api-key"), MG_CLASS_AUTH, "anthropic.authentication_error"},
    {"anthropic", 402, "", ANT_ERR("billing_error", "Your credit balance is too low."), MG_CLASS_BILLING, "anthropic.billing_error"},
    {"anthropic", 403, "", ANT_ERR("permission_error", "Your API key does not have permission to use the specified resource."), MG_CLASS_AUTH, "anthropic.permission_error"},
    {"anthropic", 404, "", ANT_ERR("not_found_error", "model: claude-nope"), MG_CLASS_MODEL_NOT_FOUND, "not_found_error.type"},
    {"anthropic", 413, "", ANT_ERR("request_too_large", "Request exceeds the maximum allowed number of bytes."), MG_CLASS_BAD_REQUEST, "http.413"},
    {"anthropic", 429, "retry-after: 30\r\n", ANT_ERR("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."), MG_CLASS_RATE_LIMIT, "http.429"},
    {"anthropic", 429, "", "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Spend limit reached.\",\"details\":{\"error_code\":\"enforced_spend_limit_reached\"}}}", MG_CLASS_BILLING, "anthropic.spend_limit"},
    {"anthropic", 500, "", ANT_ERR("api_error", "Internal server error"), MG_CLASS_SERVER_ERROR, NULL},
    {"anthropic", 529, "", ANT_ERR("overloaded_error", "Overloaded"), MG_CLASS_OVERLOADED, "anthropic.overloaded_error"},
    {"anthropic", 400, "", ANT_ERR("invalid_request_error", "Output blocked by content filtering policy"), MG_CLASS_CONTENT_FILTER, "anthropic.content_filtering"},

    /* ---- vLLM, old shape (no error wrapper, integer code) and new shape (A.5) */
    {"vllm<=0.15", 400, "", "{\"object\":\"error\",\"message\":\"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}", MG_CLASS_CONTEXT_OVERFLOW, "openai.maximum_context_length"},
    {"vllm<=0.15", 404, "", "{\"object\":\"error\",\"message\":\"The model `llama-x` does not exist.\",\"type\":\"NotFoundError\",\"param\":null,\"code\":404}", MG_CLASS_MODEL_NOT_FOUND, "generic.model_does_not_exist"},
    {"vllm>=0.16", 400, "", "{\"error\":{\"message\":\"You passed 1015 input tokens and requested 10 output tokens. However, the model's context length is only 1024 tokens, resulting in a maximum input length of 1014 tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=1015)\",\"type\":\"BadRequestError\",\"param\":\"input_tokens\",\"code\":400}}", MG_CLASS_CONTEXT_OVERFLOW, "vllm.you_passed"},
    {"vllm 2026", 400, "", "{\"error\":{\"message\":\"'max_tokens' is too large: your request has 8 input tokens plus 2045 'max_tokens', over the 2048-token context.\",\"type\":\"BadRequestError\",\"param\":\"max_tokens\",\"code\":400}}", MG_CLASS_CONTEXT_OVERFLOW, "vllm.request_has_input_tokens"},
    {"vllm prompt ids", 400, "", "{\"error\":{\"message\":\"The decoder prompt (length 5000) is longer than the maximum model length of 4096.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}}", MG_CLASS_CONTEXT_OVERFLOW, "vllm.maximum_model_length"},
    {"vllm>=0.16", 404, "", "{\"error\":{\"message\":\"The model `x` does not exist.\",\"type\":\"NotFoundError\",\"param\":\"model\",\"code\":404}}", MG_CLASS_MODEL_NOT_FOUND, "generic.model_does_not_exist"},

    /* ---- sglang (vLLM's old shape) */
    {"sglang", 400, "", "{\"object\":\"error\",\"message\":\"The input (400013 tokens) is longer than the model's context length (262144 tokens).\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}", MG_CLASS_CONTEXT_OVERFLOW, "sglang.longer_than_context_length"},
    {"sglang", 400, "", "{\"object\":\"error\",\"message\":\"Requested token count exceeds the model's maximum context length of 64000 tokens. You requested a total of 71897 tokens: 7897 tokens from the input messages and 64000 tokens for the completion.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}", MG_CLASS_CONTEXT_OVERFLOW, "sglang.requested_token_count"},

    /* ---- llama.cpp llama-server (A.5, A.6) */
    {"llama.cpp", 400, "", "{\"error\":{\"code\":400,\"message\":\"request (4390 tokens) exceeds the available context size (4096 tokens), try increasing it\",\"type\":\"exceed_context_size_error\",\"n_prompt_tokens\":4390,\"n_ctx\":4096}}", MG_CLASS_CONTEXT_OVERFLOW, "llamacpp.exceed_context_size_error"},
    {"llama.cpp old", 400, "", "{\"error\":{\"code\":400,\"message\":\"the request exceeds the available context size. try increasing the context size or enable context shift\",\"type\":\"invalid_request_error\"}}", MG_CLASS_CONTEXT_OVERFLOW, "llamacpp.available_context_size"},
    {"llama.cpp old 500", 500, "", "{\"error\":{\"code\":500,\"message\":\"the request exceeds the available context size, try increasing it\",\"type\":\"server_error\"}}", MG_CLASS_CONTEXT_OVERFLOW, "llamacpp.available_context_size"},
    {"llama.cpp generation", 500, "", "{\"error\":{\"code\":500,\"message\":\"Context size has been exceeded.\",\"type\":\"server_error\"}}", MG_CLASS_CONTEXT_OVERFLOW, "llamacpp.context_size_exceeded"},
    {"llama.cpp", 503, "", "{\"error\":{\"code\":503,\"message\":\"Loading model\",\"type\":\"unavailable_error\"}}", MG_CLASS_MODEL_NOT_LOADED, "llamacpp.unavailable_error"},
    {"llama.cpp", 503, "", "{\"error\":{\"code\":503,\"message\":\"no slot available\",\"type\":\"unavailable_error\"}}", MG_CLASS_OVERLOADED, "llamacpp.no_slot"},
    {"llama.cpp", 401, "", "{\"error\":{\"code\":401,\"message\":\"Invalid API Key\",\"type\":\"authentication_error\"}}", MG_CLASS_AUTH, "anthropic.authentication_error"},
    {"llama.cpp", 501, "", "{\"error\":{\"code\":501,\"message\":\"This server does not support embeddings. Start it with `--embeddings`\",\"type\":\"not_supported_error\"}}", MG_CLASS_UNSUPPORTED, "llamacpp.not_supported_error"},
    {"llama.cpp", 404, "", "{\"error\":{\"code\":404,\"message\":\"File Not Found\",\"type\":\"not_found_error\"}}", MG_CLASS_MODEL_NOT_FOUND, "not_found_error.type"},
    /* Started without --jinja: any request with tools is refused, a 500 or (older builds) a 400. */
    {"llama.cpp no --jinja", 500, "", "{\"error\":{\"code\":500,\"message\":\"tools param requires --jinja flag\",\"type\":\"server_error\"}}", MG_CLASS_UNSUPPORTED, "llamacpp.tools_need_jinja"},
    {"llama.cpp no --jinja", 400, "", "{\"error\":{\"code\":400,\"message\":\"tools param requires --jinja flag\",\"type\":\"invalid_request_error\"}}", MG_CLASS_UNSUPPORTED, "llamacpp.tools_need_jinja"},
    {"llama.cpp no --jinja", 500, "", "{\"error\":{\"code\":500,\"message\":\"Unsupported param: tool_choice\",\"type\":\"server_error\"}}", MG_CLASS_UNSUPPORTED, "llamacpp.tool_choice_needs_jinja"},
    {"llama.cpp old", 500, "", "{\"error\":{\"code\":500,\"message\":\"Cannot use tools with stream\",\"type\":\"server_error\"}}", MG_CLASS_UNSUPPORTED, "llamacpp.tools_with_stream"},

    /* ---- LM Studio (A.5, A.6): error can be a STRING */
    {"lmstudio", 400, "", "{\"error\":\"The number of tokens to keep from the initial prompt is greater than the context length (n_keep: 13055>= n_ctx: 4096). Try to load the model with a larger context length, or provide a shorter input.\"}", MG_CLASS_CONTEXT_OVERFLOW, "lmstudio.n_keep"},
    {"lmstudio", 400, "", "{\"error\":{\"message\":\"No models loaded. Please load a model in the developer page or use the `lms load` command.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}", MG_CLASS_MODEL_NOT_LOADED, "lmstudio.no_models_loaded"},
    {"lmstudio", 400, "", "{\"error\":\"Failed to load model \\\"qwen3-8b\\\". Error: insufficient system resources\"}", MG_CLASS_MODEL_NOT_LOADED, "lmstudio.failed_to_load"},
    {"lmstudio", 404, "", "{\"error\":{\"message\":\"Model is not loaded: qwen3-8b\",\"type\":\"invalid_request_error\"}}", MG_CLASS_MODEL_NOT_LOADED, "generic.model_is_not_loaded"},
    {"lmstudio keep first", 400, "", "{\"error\":\"Trying to keep the first 6042 tokens when context the overflows. However, the model is loaded with context length of only 4096 tokens, which is not enough. Try to load the model with a larger context length, or provide a shorter input\"}", MG_CLASS_CONTEXT_OVERFLOW, "lmstudio.context_length_of_only"},
    {"lmstudio 200", 200, "", "{\"error\":{\"message\":\"Input does not fit in context length. The input has 31430 tokens, but the context length only supports 30000 tokens.\"},\"message\":\"Input does not fit in context length.\"}", MG_CLASS_CONTEXT_OVERFLOW, "lmstudio.does_not_fit"},

    /* ---- Ollama OpenAI compat (A.5, A.6) */
    {"ollama", 404, "", OAI_ERR("model \\\"llama9\\\" not found, try pulling it first", "\"not_found_error\"", "null"), MG_CLASS_MODEL_NOT_FOUND, "ollama.try_pulling"},
    {"ollama", 400, "", OAI_ERR("the prompt is longer than the context length currently available to the model; shorten the prompt, adjust the context length in settings, or use a model with a longer context length", "\"invalid_request_error\"", "null"), MG_CLASS_CONTEXT_OVERFLOW, "ollama.longer_than_context"},
    {"ollama old", 400, "", OAI_ERR("prompt too long; exceeded max context length by 100918 tokens", "\"invalid_request_error\"", "null"), MG_CLASS_CONTEXT_OVERFLOW, "ollama.exceeded_max_context"},
    {"ollama embeddings", 400, "", OAI_ERR("the input length exceeds the context length", "\"invalid_request_error\"", "null"), MG_CLASS_CONTEXT_OVERFLOW, "ollama.input_length_exceeds"},
    {"ollama", 500, "", OAI_ERR("model requires more system memory (12.0 GiB) than is available (8.0 GiB)", "\"api_error\"", "null"), MG_CLASS_MODEL_NOT_LOADED, "ollama.system_memory"},
    {"ollama", 500, "", OAI_ERR("llama runner process has terminated: exit status 2", "\"api_error\"", "null"), MG_CLASS_MODEL_NOT_LOADED, "ollama.runner_terminated"},
    {"ollama", 503, "", OAI_ERR("server busy, please try again.  maximum pending requests exceeded", "\"api_error\"", "null"), MG_CLASS_OVERLOADED, "ollama.server_busy"},
    {"ollama", 400, "", OAI_ERR("registry.ollama.ai/library/gemma:2b does not support tools", "\"invalid_request_error\"", "null"), MG_CLASS_UNSUPPORTED, "ollama.does_not_support"},
    {"ollama native", 404, "", "{\"error\":\"model 'llama9' not found\"}", MG_CLASS_MODEL_NOT_FOUND, "http.404"},

    /* ---- OpenRouter (A.6): error.code is the status */
    {"openrouter", 400, "", "{\"error\":{\"code\":400,\"message\":\"This endpoint's maximum context length is 8192 tokens. However, you requested about 9000 tokens (8000 of text input, 1000 in the output). Please reduce the length of either one, or use the \\\"middle-out\\\" transform to compress your prompt automatically.\"}}", MG_CLASS_CONTEXT_OVERFLOW, "openai.maximum_context_length"},
    {"openrouter", 401, "", "{\"error\":{\"code\":401,\"message\":\"No auth credentials found\"}}", MG_CLASS_AUTH, "http.401_403"},
    {"openrouter", 402, "", "{\"error\":{\"code\":402,\"message\":\"This request requires more credits, or fewer max_tokens. You requested up to 4096 tokens, but can only afford 100.\"}}", MG_CLASS_BILLING, "openrouter.code.402"},
    {"openrouter", 403, "", "{\"error\":{\"code\":403,\"message\":\"x-ai/grok requires moderation on OpenAI. Your input was flagged for \\\"violence\\\".\",\"metadata\":{\"reasons\":[\"violence\"],\"flagged_input\":\"...\",\"provider_name\":\"OpenAI\",\"model_slug\":\"x-ai/grok\"}}}", MG_CLASS_CONTENT_FILTER, "openrouter.moderation"},
    {"openrouter", 408, "", "{\"error\":{\"code\":408,\"message\":\"Request timed out\"}}", MG_CLASS_TIMEOUT, "http.408_504_524"},
    {"openrouter", 429, "Retry-After: 5\r\n", "{\"error\":{\"code\":429,\"message\":\"Rate limit exceeded: free-models-per-min.\"}}", MG_CLASS_RATE_LIMIT, "http.429"},
    {"openrouter", 502, "", "{\"error\":{\"code\":502,\"message\":\"Provider returned error\",\"metadata\":{\"provider_name\":\"Foo\",\"raw\":\"upstream died\"}}}", MG_CLASS_SERVER_ERROR, NULL},
    {"openrouter", 503, "Retry-After: 3\r\n", "{\"error\":{\"code\":503,\"message\":\"No instances available for the requested routing.\"}}", MG_CLASS_OVERLOADED, "openrouter.code.503"},
    {"openrouter", 400, "", "{\"error\":{\"code\":400,\"message\":\"openai/gpt-9 is not a valid model ID\"}}", MG_CLASS_MODEL_NOT_FOUND, "openrouter.not_a_valid_model"},
    {"openrouter", 404, "", "{\"error\":{\"code\":404,\"message\":\"No endpoints found for meta/llama-9.\"}}", MG_CLASS_MODEL_NOT_FOUND, "openrouter.no_endpoints"},

    /* ---- Generic statuses, proxies, non-JSON bodies */
    {"proxy", 502, "", "<html><body>502 Bad Gateway</body></html>", MG_CLASS_SERVER_ERROR, NULL},
    {"proxy", 504, "", "<html>Gateway Timeout</html>", MG_CLASS_TIMEOUT, "http.408_504_524"},
    {"cloudflare", 524, "", "error code: 524", MG_CLASS_TIMEOUT, "http.408_504_524"},
    {"any", 422, "", "{\"detail\":\"validation error\"}", MG_CLASS_BAD_REQUEST, NULL},
    {"any", 400, "", "", MG_CLASS_BAD_REQUEST, NULL},
    {"any", 500, "", "", MG_CLASS_SERVER_ERROR, NULL},
    {"case", 400, "", "{\"error\":{\"message\":\"PROMPT IS TOO LONG: 5 > 4\"}}", MG_CLASS_CONTEXT_OVERFLOW, "anthropic.prompt_too_long"},
    /* A rate-limit wording vetoes the overflow wording (Bedrock-style "too many tokens"). */
    {"veto", 400, "", "{\"error\":{\"message\":\"Rate limit: prompt is too long for your tier, slow down\"}}", MG_CLASS_BAD_REQUEST, NULL},
    /* 2xx: a success body stays ok even when its text says "error"; an error object does not. */
    {"success", 200, "", "{\"id\":\"c1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"an error: prompt is too long\"},\"finish_reason\":\"stop\"}]}", MG_CLASS_OK, NULL},
    {"success", 200, "", "{\"choices\":[]}", MG_CLASS_OK, NULL},
    {"200 error", 200, "", "{\"error\":{\"code\":502,\"message\":\"Provider disconnected\"}}", MG_CLASS_SERVER_ERROR, NULL},
    {"200 error", 200, "", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", MG_CLASS_OVERLOADED, "anthropic.overloaded_error"},
};

static void check_fixture(const char *kind, size_t i, const char *server, mg_classification_t got, mg_class_t want,
                          const char *rule)
{
    bool ok = got.cls == want && ((!rule && !got.rule) || (rule && got.rule && strcmp(rule, got.rule) == 0));
    if (!ok) {
        fprintf(stderr, "  %s fixture %zu (%s): got %s by %s, want %s by %s\n", kind, i, server,
                mg_class_name(got.cls), got.rule ? got.rule : "(status)", mg_class_name(want),
                rule ? rule : "(status)");
        mg_test_failures++;
    }
}

MG_TEST(builtin_patterns_load)
{
    MG_CHECK(mg_patterns_builtin_error() == NULL);
    size_t n_op = 99;
    MG_CHECK(mg_patterns_count(mg_patterns_builtin(), &n_op) > 60);
    MG_CHECK_INT(n_op, 0);
}

MG_TEST(every_http_wording)
{
    for (size_t i = 0; i < MG_ARRAY_LEN(http_fixtures); i++) {
        const fixture_t *f = &http_fixtures[i];
        mg_classification_t got =
            mg_classify_http2(NULL, f->status, f->headers, strlen(f->headers), f->body, strlen(f->body), NULL);
        check_fixture("http", i, f->server, got, f->want, f->rule);
        /* The original API agrees. */
        MG_CHECK(mg_classify_http(f->status, f->headers, strlen(f->headers), f->body, strlen(f->body)) == f->want);
    }
}

/* Errors inside a 200 stream: the event's data only, no status. */
static const fixture_t stream_fixtures[] = {
    {"lmstudio event: error", 0, "", "{\"error\":{\"message\":\"Input does not fit in context length. The input has 31430 tokens, but the context length only supports 30000 tokens.\"},\"message\":\"Input does not fit in context length.\"}", MG_CLASS_CONTEXT_OVERFLOW, "lmstudio.does_not_fit"},
    {"anthropic event: error", 0, "", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", MG_CLASS_OVERLOADED, "anthropic.overloaded_error"},
    {"anthropic event: error", 0, "", "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}", MG_CLASS_SERVER_ERROR, NULL},
    {"anthropic event: error", 0, "", "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}", MG_CLASS_RATE_LIMIT, "rate_limit_error.type"},
    {"openai/vllm data: error", 0, "", "{\"error\":{\"message\":\"engine died\",\"type\":\"server_error\",\"param\":null,\"code\":null}}", MG_CLASS_SERVER_ERROR, NULL},
    {"vllm old data: error", 0, "", "{\"object\":\"error\",\"message\":\"This model's maximum context length is 2048 tokens. However, you requested 3000 tokens.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}", MG_CLASS_CONTEXT_OVERFLOW, "openai.maximum_context_length"},
    {"llama.cpp data: error", 0, "", "{\"error\":{\"code\":400,\"message\":\"request (9000 tokens) exceeds the available context size (8192 tokens), try increasing it\",\"type\":\"exceed_context_size_error\",\"n_prompt_tokens\":9000,\"n_ctx\":8192}}", MG_CLASS_CONTEXT_OVERFLOW, "llamacpp.exceed_context_size_error"},
    {"llama.cpp data: error", 0, "", "{\"error\":{\"code\":500,\"message\":\"Context size has been exceeded.\",\"type\":\"server_error\"}}", MG_CLASS_CONTEXT_OVERFLOW, "llamacpp.context_size_exceeded"},
    {"responses response.failed", 0, "", "{\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"context_length_exceeded\",\"message\":\"Your input exceeds the context window of this model.\"}}}", MG_CLASS_CONTEXT_OVERFLOW, "openai.context_length_exceeded"}, /* error.code, lifted from response.error */
    {"responses response.failed", 0, "", "{\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached for requests\"}}}", MG_CLASS_RATE_LIMIT, "rate_limit_exceeded.code"},
    {"responses response.failed", 0, "", "{\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"insufficient_quota\",\"message\":\"You exceeded your current quota\"}}}", MG_CLASS_BILLING, "openai.insufficient_quota"},
    /* Responses' bare error event (A.2): its flat code, message and type are judged as the error
     * object's, as response.failed's are; its code may be a type's name. */
    {"responses error event", 0, "", "{\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit reached\",\"param\":null,\"sequence_number\":3}", MG_CLASS_RATE_LIMIT, "rate_limit_exceeded.code"},
    {"responses error event", 0, "", "{\"type\":\"error\",\"code\":\"insufficient_quota\",\"message\":\"You exceeded your current quota\",\"param\":null}", MG_CLASS_BILLING, "openai.insufficient_quota"},
    {"responses error event", 0, "", "{\"type\":\"error\",\"sequence_number\":1,\"code\":\"invalid_prompt\",\"message\":\"Invalid prompt: your prompt was flagged as potentially violating our usage policy.\",\"param\":null}", MG_CLASS_CONTENT_FILTER, "openai.invalid_prompt"},
    {"responses error event", 0, "", "{\"type\":\"error\",\"code\":\"context_length_exceeded\",\"message\":\"Your input exceeds the context window of this model.\",\"param\":\"input\"}", MG_CLASS_CONTEXT_OVERFLOW, "openai.context_length_exceeded"},
    {"responses error event", 0, "", "{\"type\":\"error\",\"code\":\"overloaded_error\",\"message\":\"Overloaded\",\"param\":null}", MG_CLASS_OVERLOADED, "anthropic.overloaded_error"},
    {"responses error event", 0, "", "{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error\",\"param\":null}", MG_CLASS_SERVER_ERROR, NULL},
    /* No rule, but invalid_request_error names a 400: the request's own fault, nested or flat. */
    {"responses error event", 0, "", "{\"type\":\"error\",\"sequence_number\":1,\"code\":\"invalid_request_error\",\"message\":\"No tool output found for function call call_1.\",\"param\":\"input\"}", MG_CLASS_BAD_REQUEST, NULL},
    {"responses response.failed", 0, "", "{\"type\":\"response.failed\",\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"invalid_request_error\",\"message\":\"No tool output found for function call call_1.\"}}}", MG_CLASS_BAD_REQUEST, NULL},
    {"anthropic event: error", 0, "", "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"messages: text content blocks must be non-empty\"}}", MG_CLASS_BAD_REQUEST, NULL},
    {"openrouter mid-stream", 0, "", "{\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"error\":{\"code\":502,\"message\":\"Provider disconnected\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}", MG_CLASS_SERVER_ERROR, NULL},
    {"openrouter mid-stream", 0, "", "{\"error\":{\"code\":429,\"message\":\"Provider rate limited\"},\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}", MG_CLASS_RATE_LIMIT, "openrouter.code.429"},
    /* status rules never match without a status: a bare 404-looking message is not "http.404" */
    {"no status", 0, "", "{\"error\":{\"message\":\"Not Found\"}}", MG_CLASS_SERVER_ERROR, NULL},
    {"not json", 0, "", "upstream exploded", MG_CLASS_SERVER_ERROR, NULL},
};

MG_TEST(every_stream_error_wording)
{
    for (size_t i = 0; i < MG_ARRAY_LEN(stream_fixtures); i++) {
        const fixture_t *f = &stream_fixtures[i];
        check_fixture("stream", i, f->server, mg_classify_stream_error(NULL, f->body, strlen(f->body), NULL), f->want,
                      f->rule);
    }
    MG_CHECK(mg_classify_stream_error(NULL, NULL, 0, NULL).cls == MG_CLASS_SERVER_ERROR);
}

/* The window each overflow fixture names (0: none), found by a piece of its text: every overflow
 * fixture, whole answers and stream errors alike, must be listed here. And texts that name none. */
MG_TEST(context_window_named_by_the_error)
{
    static const struct {
        const char *needle;
        int64_t window;
    } named[] = {
        {"length is 4096 tokens. However, your messages", 4096},       /* OpenAI */
        {"you requested 5000 tokens (4000 in the messages", 4096},     /* vLLM <= 0.15 */
        {"You passed 1015 input tokens", 1024},                        /* vLLM >= 0.16 */
        {"over the 2048-token context", 2048},                         /* vLLM 2026 */
        {"maximum model length of 4096", 4096},                        /* vLLM prompt ids */
        {"is 2048 tokens. However, you requested 3000", 2048},         /* vLLM in a stream */
        {"The input (400013 tokens)", 262144},                         /* SGLang */
        {"You requested a total of 71897", 64000},                     /* SGLang */
        {"request (4390 tokens)", 4096},                               /* llama.cpp */
        {"request (9000 tokens)", 8192},                               /* llama.cpp in a stream */
        {"n_ctx: 4096", 4096},                                         /* LM Studio */
        {"context length of only 4096", 4096},                         /* LM Studio */
        {"context length only supports 30000", 30000},                 /* LM Studio, also in a stream */
        {"This endpoint's maximum context length is 8192", 8192},      /* OpenRouter */
        {"exceeds the context window of this model", 0},               /* OpenAI Responses */
        {"prompt is too long: 210000", 0},                             /* Anthropic: hosted, configured */
        {"exceed context limit", 0},
        {"PROMPT IS TOO LONG", 0},
        {"the request exceeds the available context size", 0},        /* llama.cpp, old */
        {"Context size has been exceeded", 0},
        {"longer than the context length currently available", 0},    /* Ollama */
        {"exceeded max context length by", 0},
        {"the input length exceeds the context length", 0},
    };
    const fixture_t *sets[] = {http_fixtures, stream_fixtures};
    size_t lens[] = {MG_ARRAY_LEN(http_fixtures), MG_ARRAY_LEN(stream_fixtures)};
    size_t checked = 0;
    for (size_t s = 0; s < 2; s++) {
        for (size_t i = 0; i < lens[s]; i++) {
            const fixture_t *f = &sets[s][i];
            if (f->want != MG_CLASS_CONTEXT_OVERFLOW) continue;
            size_t k = 0;
            while (k < MG_ARRAY_LEN(named) && !strstr(f->body, named[k].needle)) k++;
            if (k == MG_ARRAY_LEN(named)) {
                fprintf(stderr, "overflow fixture %s #%zu is not in the table: %s\n", f->server, i, f->body);
                MG_CHECK(false);
                continue;
            }
            MG_CHECK_INT(mg_classify_context_window(f->body, strlen(f->body), NULL), named[k].window);
            checked++;
        }
    }
    MG_CHECK(checked >= 28);
    static const char *const none[] = {
        "", "maximum context length is unknown", "maximum context length is 99999999999 tokens",
        "over the -token context",
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(none); i++) MG_CHECK_INT(mg_classify_context_window(none[i], strlen(none[i]), NULL), 0);
    MG_CHECK_INT(mg_classify_context_window(NULL, 0, NULL), 0);
    MG_CHECK_INT(mg_classify_context_window("Maximum Context Length Is 512 tokens", 36, NULL), 512);
    MG_CHECK_INT(mg_classify_context_window("prompt contains 40000 tokens, too large for model with 32768 maximum context length", 84, NULL), 32768);
}

/* ---- the echo guard: what an error quotes of the client's request is not read as the server's */

/* OpenAI's 400 for a bad enum value, quoting it, serialized by cJSON (quotes and backslashes
 * escaped, non-ASCII as it is). The caller frees it. */
static char *quoting_error(const char *value)
{
    char msg[16384];
    snprintf(msg, sizeof msg, "Invalid value: '%s'. Supported values are: 'low', 'medium', and 'high'.", value);
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "invalid_request_error");
    cJSON_AddStringToObject(e, "param", "reasoning_effort");
    cJSON_AddStringToObject(e, "code", "invalid_value");
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return out;
}

/* A request whose reasoning_effort is value. */
static cJSON *request_with(const char *value)
{
    cJSON *r = cJSON_Parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    cJSON_AddStringToObject(r, "reasoning_effort", value);
    return r;
}

static mg_class_t class_of(const char *body, const cJSON *req)
{
    return mg_classify_http2(NULL, 400, "", 0, body, strlen(body), req).cls;
}

/* text after mg_classify_blank_echoes with req (static buffer). */
static const char *blanked(const char *text, const cJSON *req)
{
    static char buf[8192];
    size_t n = strlen(text);
    memcpy(buf, text, n + 1);
    mg_classify_blank_echoes(buf, n, req);
    return buf;
}

MG_TEST(echoed_words_change_no_class_and_teach_no_window)
{
    static const struct {
        const char *value;
        mg_class_t without_guard;
    } attacks[] = {
        {"maximum context length is 1024 tokens", MG_CLASS_CONTEXT_OVERFLOW},
        {"The model `m` does not exist", MG_CLASS_MODEL_NOT_FOUND},
        {"model not loaded", MG_CLASS_MODEL_NOT_LOADED},
        {"enforced_spend_limit_reached", MG_CLASS_BILLING},
        {"it's \"maximum context length is 2048 tokens\"", MG_CLASS_CONTEXT_OVERFLOW}, /* quotes inside */
        {"Größe: maximum context length is 2048 tokens", MG_CLASS_CONTEXT_OVERFLOW},    /* non-ASCII */
        {"C:\\tmp\\n_ctx: 2048 tokens", MG_CLASS_BAD_REQUEST},                        /* backslashes */
    };
    for (size_t i = 0; i < MG_ARRAY_LEN(attacks); i++) {
        cJSON *req = request_with(attacks[i].value);
        char *body = quoting_error(attacks[i].value);
        MG_CHECK(class_of(body, NULL) == attacks[i].without_guard);
        if (class_of(body, req) != MG_CLASS_BAD_REQUEST) {
            fprintf(stderr, "echo #%zu read as the server's: %s\n", i, body);
            MG_CHECK(false);
        }
        MG_CHECK_INT(mg_classify_context_window(body, strlen(body), req), 0);
        free(body);
        cJSON_Delete(req);
    }
    /* The window the unguarded parse would learn. */
    char *body = quoting_error("C:\\tmp\\n_ctx: 2048 tokens");
    MG_CHECK_INT(mg_classify_context_window(body, strlen(body), NULL), 2048);
    free(body);
}

MG_TEST(echoes_escaped_by_the_server)
{
    /* Python's json.dumps writes non-ASCII as \u escapes; Go writes < > & so. */
    cJSON *req = request_with("maximum context length is 1024 tokens \xE2\x80\x94 d\xC3\xA9j\xC3\xA0 vu");
    const char *py = "{\"error\":{\"message\":\"Invalid value: 'maximum context length is 1024 tokens \\u2014 "
                     "d\\u00e9j\\u00e0 vu'.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_value\"}}";
    MG_CHECK(class_of(py, NULL) == MG_CLASS_CONTEXT_OVERFLOW);
    MG_CHECK(class_of(py, req) == MG_CLASS_BAD_REQUEST);
    MG_CHECK_INT(mg_classify_context_window(py, strlen(py), req), 0);
    cJSON_Delete(req);
    req = request_with("The model <m> does not exist");
    const char *go = "{\"error\":{\"message\":\"invalid value \\\"The model \\u003cm\\u003e does not exist\\\"\"}}";
    MG_CHECK(class_of(go, NULL) == MG_CLASS_MODEL_NOT_FOUND);
    MG_CHECK(class_of(go, req) == MG_CLASS_BAD_REQUEST);
    cJSON_Delete(req);
    /* The client escaped its text; the server quotes it decoded. */
    req = cJSON_Parse("{\"reasoning_effort\":\"\\u006daximum context length is 1024 tokens\"}");
    const char *plain = "{\"error\":{\"message\":\"Invalid value: 'maximum context length is 1024 tokens'.\"}}";
    MG_CHECK(class_of(plain, req) == MG_CLASS_BAD_REQUEST);
    cJSON_Delete(req);
    /* An unknown parameter's name is quoted as well. */
    req = cJSON_Parse("{\"model\":\"m\",\"The model `m` does not exist\":1}");
    const char *unknown = "{\"error\":{\"message\":\"Unrecognized request argument supplied: The model `m` does not exist\"}}";
    MG_CHECK(class_of(unknown, NULL) == MG_CLASS_MODEL_NOT_FOUND);
    MG_CHECK(class_of(unknown, req) == MG_CLASS_BAD_REQUEST);
    cJSON_Delete(req);
}

MG_TEST(echo_guard_edges)
{
    cJSON *req = request_with("Maximum Context Length Is 1024 Tokens");
    /* At the very start and the very end of the text, and case aside. */
    MG_CHECK_STR(blanked("maximum context length is 1024 tokens", req), "                                     ");
    MG_CHECK_STR(blanked("x: Maximum Context Length Is 1024 Tokens", req), "x:                                      ");
    /* Cut short by the end of what the rules read: blanked as far as it goes. */
    MG_CHECK_STR(blanked("x: maximum context len", req), "x:                    ");
    /* A piece of the value is not enough: the whole piece must be there. */
    MG_CHECK_STR(blanked("maximum context length is 4096 tokens", req), "maximum context length is 4096 tokens");
    cJSON_Delete(req);
    /* Pieces under 8 bytes stay: the server's own words must not go. */
    req = cJSON_Parse("{\"a\":\"tokens\",\"b\":\"is 4096\",\"tokens\":[\"length\"]}");
    MG_CHECK_STR(blanked("maximum context length is 4096 tokens", req), "maximum context length is 4096 tokens");
    cJSON_Delete(req);
    /* Repeated quotes are all blanked; nothing without a request. */
    req = request_with("n_ctx: 2048");
    MG_CHECK_STR(blanked("'n_ctx: 2048' / 'n_ctx: 2048'", req), "'           ' / '           '");
    MG_CHECK_STR(blanked("n_ctx: 2048", NULL), "n_ctx: 2048");
    cJSON_Delete(req);
    /* Inside a stream's error event too. */
    req = request_with("The model `m` does not exist");
    const char *ev = "{\"error\":{\"message\":\"Invalid value: 'The model `m` does not exist'\",\"type\":\"server_error\"}}";
    MG_CHECK(mg_classify_stream_error(NULL, ev, strlen(ev), NULL).cls == MG_CLASS_MODEL_NOT_FOUND);
    MG_CHECK(mg_classify_stream_error(NULL, ev, strlen(ev), req).cls == MG_CLASS_SERVER_ERROR);
    cJSON_Delete(req);
    /* A quote that crosses the 8 KiB the rules read is blanked up to there. */
    char value[9100];
    snprintf(value, sizeof value, "maximum context length is 1024 tokens ");
    memset(value + strlen(value), 'z', 9000);
    value[sizeof value - 1] = '\0';
    req = request_with(value);
    char *body = quoting_error(value);
    MG_CHECK(class_of(body, NULL) == MG_CLASS_CONTEXT_OVERFLOW);
    MG_CHECK(class_of(body, req) == MG_CLASS_BAD_REQUEST);
    free(body);
    cJSON_Delete(req);
}

/* A server that shortens long values it quotes (pydantic: 'first 23...last 24') quotes a head and
 * a tail of the piece: both are blanked, as far as they go. */
MG_TEST(echoes_shortened_by_the_server)
{
    cJSON *req = request_with("maximum context length is 1024 tokens zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz "
                              "window n_ctx: 2048 tokens");
    const char *body = "{\"detail\":[{\"msg\":\"Input should be 'low', 'medium' or 'high'\","
                       "\"input\":\"maximum context length ...ndow n_ctx: 2048 tokens\"}]}";
    MG_CHECK_STR(blanked("'maximum context length ...ndow n_ctx: 2048 tokens'", req),
                 "'                       ...                       '");
    MG_CHECK_INT(mg_classify_context_window(body, strlen(body), NULL), 2048);
    MG_CHECK_INT(mg_classify_context_window(body, strlen(body), req), 0);
    cJSON_Delete(req);
}

/* A control character in the client's text is a space in the error's detail (where the window
 * is read again): "n_ctx:\t2048" is one piece there, not two too short to blank. */
MG_TEST(echoes_with_control_characters)
{
    cJSON *req = request_with("n_ctx:\t2048");
    const char *detail = "Invalid value: 'n_ctx: 2048'.";
    MG_CHECK_INT(mg_classify_context_window(detail, strlen(detail), NULL), 2048);
    MG_CHECK_INT(mg_classify_context_window(detail, strlen(detail), req), 0);
    cJSON_Delete(req);
}

MG_TEST(a_genuine_overflow_still_reads_when_the_prompt_names_it)
{
    /* The client's prompt talks about the very words; the server's message is its own. */
    cJSON *req = cJSON_Parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                             "\"What is the maximum context length of this model?\\nIs its maximum context length "
                             "4096 tokens? n_ctx: 4096?\"},{\"role\":\"user\",\"content\":\"Summarize: the context length of models grows.\"}]}");
    for (size_t i = 0; i < MG_ARRAY_LEN(http_fixtures); i++) {
        const fixture_t *f = &http_fixtures[i];
        if (f->want != MG_CLASS_CONTEXT_OVERFLOW) continue;
        mg_classification_t c = mg_classify_http2(NULL, f->status, f->headers, strlen(f->headers), f->body,
                                                  strlen(f->body), req);
        MG_CHECK(c.cls == MG_CLASS_CONTEXT_OVERFLOW);
        MG_CHECK_INT(mg_classify_context_window(f->body, strlen(f->body), req),
                     mg_classify_context_window(f->body, strlen(f->body), NULL));
    }
    const char *openai = http_fixtures[0].body;
    MG_CHECK_INT(mg_classify_context_window(openai, strlen(openai), req), 4096);
    cJSON_Delete(req);
    /* A piece of the server's message that the request quotes as a term of its own (a coding
     * agent's error-mapping code) stays in the server's sentence: it follows a word there, where
     * no quoted value begins. */
    req = cJSON_Parse("{\"messages\":[{\"role\":\"user\",\"content\":\"if 'maximum context length is' in "
                      "msg: ... What does 'context length' mean?\"}]}");
    MG_CHECK(class_of(openai, req) == MG_CLASS_CONTEXT_OVERFLOW);
    MG_CHECK_INT(mg_classify_context_window(openai, strlen(openai), req), 4096);
    cJSON_Delete(req);
    /* The price: a request quoting the server's message from its start has it blanked in its
     * own error (only its own), which then reads by its fields and status. */
    req = cJSON_Parse("{\"messages\":[{\"role\":\"user\",\"content\":\"saw 'This model' and stopped\"}]}");
    MG_CHECK(class_of(openai, req) == MG_CLASS_CONTEXT_OVERFLOW); /* error.code */
    cJSON_Delete(req);
}

MG_TEST(echo_guard_work_is_capped)
{
    /* A text of one byte repeated, and pieces that start like every window of it: past the cap
     * the whole text goes, the server's own words with it (the error is read by fields only). */
    char text[8192];
    memcpy(text, "n_ctx: 4096 ", 12);
    memset(text + 12, 'a', sizeof text - 13);
    text[sizeof text - 1] = '\0';
    cJSON *few = cJSON_CreateArray(), *many = cJSON_CreateArray();
    for (int i = 0; i < 5; i++) cJSON_AddItemToArray(few, cJSON_CreateString("aaaaaaaab"));
    for (int i = 0; i < 2000; i++) cJSON_AddItemToArray(many, cJSON_CreateString("aaaaaaaab"));
    MG_CHECK(strncmp(blanked(text, few), "n_ctx: 4096 aaaa", 16) == 0);
    int64_t t0 = mg_now_us();
    const char *b = blanked(text, many);
    int64_t dt = mg_now_us() - t0;
    MG_CHECK(strspn(b, " ") == strlen(text));
    printf("  echo guard past its cap: %lld us\n", (long long)dt);
    MG_CHECK(dt < 200000); /* generous: ASan/UBSan */
    cJSON_Delete(few);
    cJSON_Delete(many);
}

MG_TEST(transfer_results)
{
    MG_CHECK(mg_classify_xfer(MG_XFER_OK) == MG_CLASS_OK);
    MG_CHECK(mg_classify_xfer(MG_XFER_CONNECT_ERROR) == MG_CLASS_CONNECT_ERROR);
    MG_CHECK(mg_classify_xfer(MG_XFER_TIMEOUT_CONNECT) == MG_CLASS_TIMEOUT);
    MG_CHECK(mg_classify_xfer(MG_XFER_TIMEOUT_FIRST_TOKEN) == MG_CLASS_TIMEOUT);
    MG_CHECK(mg_classify_xfer(MG_XFER_TIMEOUT_IDLE) == MG_CLASS_TIMEOUT);
    MG_CHECK(mg_classify_xfer(MG_XFER_TIMEOUT_TOTAL) == MG_CLASS_TIMEOUT);
    MG_CHECK(mg_classify_xfer(MG_XFER_BROKEN) == MG_CLASS_STREAM_BROKEN);
    MG_CHECK(mg_classify_xfer(MG_XFER_TOO_LARGE) == MG_CLASS_TOO_LARGE);
    MG_CHECK(mg_classify_xfer(MG_XFER_CANCELLED) == MG_CLASS_CANCELLED);
    MG_CHECK_STR(mg_xfer_timeout_name(MG_XFER_TIMEOUT_CONNECT), "connect");
    MG_CHECK_STR(mg_xfer_timeout_name(MG_XFER_TIMEOUT_FIRST_TOKEN), "first_token");
    MG_CHECK_STR(mg_xfer_timeout_name(MG_XFER_TIMEOUT_IDLE), "idle");
    MG_CHECK_STR(mg_xfer_timeout_name(MG_XFER_TIMEOUT_TOTAL), "total");
    MG_CHECK(mg_xfer_timeout_name(MG_XFER_BROKEN) == NULL);
}

MG_TEST(class_names_round_trip)
{
    for (int i = 0; i < MG_CLASS_COUNT; i++) {
        mg_class_t c;
        MG_CHECK(mg_class_from_name(mg_class_name((mg_class_t)i), &c) && (int)c == i);
    }
    mg_class_t c;
    MG_CHECK(!mg_class_from_name("nope", &c));
    MG_CHECK_STR(mg_class_name((mg_class_t)99), "unknown");
}

MG_TEST(fallback_decisions)
{
    MG_CHECK(mg_class_moves_on(MG_CLASS_CONNECT_ERROR));
    MG_CHECK(mg_class_moves_on(MG_CLASS_RATE_LIMIT));
    MG_CHECK(mg_class_moves_on(MG_CLASS_OVERLOADED));
    MG_CHECK(mg_class_moves_on(MG_CLASS_SERVER_ERROR));
    MG_CHECK(mg_class_moves_on(MG_CLASS_TIMEOUT));
    MG_CHECK(mg_class_moves_on(MG_CLASS_CONTEXT_OVERFLOW));
    MG_CHECK(mg_class_moves_on(MG_CLASS_UNSUPPORTED));
    MG_CHECK(!mg_class_moves_on(MG_CLASS_BAD_REQUEST));
    MG_CHECK(!mg_class_moves_on(MG_CLASS_CONTENT_FILTER));
    MG_CHECK(!mg_class_moves_on(MG_CLASS_OK));
    MG_CHECK(!mg_class_moves_on(MG_CLASS_CANCELLED));
}

MG_TEST(retry_after)
{
    const char *h = "Content-Type: application/json\r\nRetry-After: 3\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), 3000);
    h = "retry-after-ms: 250\r\nRetry-After: 3\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), 250);
    h = "Retry-After: 1.5\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), 1500);
    h = "X: y\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), -1);
    h = "Retry-After: soon\r\n";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), -1);
    MG_CHECK_INT(mg_retry_after_ms(NULL, 0), -1);
    /* HTTP-date against an injected wall clock: 2015-10-21 07:28:00 GMT = 1445412480 s. */
    h = "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n";
    MG_CHECK_INT(mg_retry_after_ms_at(h, strlen(h), 1445412480000LL - 4000), 4000);
    MG_CHECK_INT(mg_retry_after_ms_at(h, strlen(h), 1445412480000LL + 4000), 0);
    /* The two obsolete forms recipients must accept too: RFC 850 and asctime. */
    h = "Retry-After: Wednesday, 21-Oct-15 07:28:00 GMT\r\n";
    MG_CHECK_INT(mg_retry_after_ms_at(h, strlen(h), 1445412480000LL - 4000), 4000);
    h = "Retry-After: Wed Oct 21 07:28:00 2015\r\n";
    MG_CHECK_INT(mg_retry_after_ms_at(h, strlen(h), 1445412480000LL - 9000), 9000);
    h = "Retry-After: Sun Nov  6 08:49:37 1994\r\n"; /* asctime pads the day with a space */
    MG_CHECK_INT(mg_retry_after_ms_at(h, strlen(h), 784111777000LL - 1000), 1000);
    /* The last header without a line break is still read. */
    h = "a: b\r\nretry-after: 7";
    MG_CHECK_INT(mg_retry_after_ms(h, strlen(h)), 7000);
}

MG_TEST(ratelimit_reset_headers)
{
    const char *h = "x-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 6m0s\r\n"
                    "x-ratelimit-remaining-tokens: 100\r\nx-ratelimit-reset-tokens: 20ms\r\n";
    MG_CHECK_INT(mg_ratelimit_reset_ms(h, strlen(h)), 360000);
    h = "x-ratelimit-remaining-requests: 5\r\nx-ratelimit-reset-requests: 1s\r\n"
        "x-ratelimit-remaining-tokens: 7\r\nx-ratelimit-reset-tokens: 1h2m3.5s\r\n";
    MG_CHECK_INT(mg_ratelimit_reset_ms(h, strlen(h)), 1000);
    h = "x-ratelimit-reset-tokens: 1h2m3.5s\r\n";
    MG_CHECK_INT(mg_ratelimit_reset_ms(h, strlen(h)), 3723500);
    h = "x-ratelimit-reset-tokens: 5x\r\n";
    MG_CHECK_INT(mg_ratelimit_reset_ms(h, strlen(h)), -1);
    /* A 429 without retry-after takes the reset; retry-after wins when both are there. */
    const char *body = "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}";
    h = "x-ratelimit-remaining-tokens: 0\r\nx-ratelimit-reset-tokens: 2.5s\r\n";
    mg_classification_t c = mg_classify_http2(NULL, 429, h, strlen(h), body, strlen(body), NULL);
    MG_CHECK(c.cls == MG_CLASS_RATE_LIMIT);
    MG_CHECK_INT(c.retry_after_ms, 2500);
    h = "retry-after: 1\r\nx-ratelimit-remaining-tokens: 0\r\nx-ratelimit-reset-tokens: 2.5s\r\n";
    MG_CHECK_INT(mg_classify_http2(NULL, 429, h, strlen(h), body, strlen(body), NULL).retry_after_ms, 1000);
    /* Only a 429 reads the resets (they are on every OpenAI answer). */
    h = "x-ratelimit-remaining-tokens: 0\r\nx-ratelimit-reset-tokens: 2.5s\r\n";
    MG_CHECK_INT(mg_classify_http2(NULL, 500, h, strlen(h), "", 0, NULL).retry_after_ms, -1);
}

MG_TEST(should_retry_header)
{
    const char *h = "x-should-retry: false\r\n";
    MG_CHECK_INT(mg_classify_http2(NULL, 503, h, strlen(h), "", 0, NULL).should_retry, 0);
    h = "X-Should-Retry: true\r\n";
    MG_CHECK_INT(mg_classify_http2(NULL, 503, h, strlen(h), "", 0, NULL).should_retry, 1);
    MG_CHECK_INT(mg_classify_http2(NULL, 503, "", 0, "", 0, NULL).should_retry, -1);
}

/* ---- operator pattern files */

static mg_patterns_t *load_text(const char *text, char *err, size_t errlen)
{
    return mg_patterns_load_string(text, strlen(text), "/etc/moongate/ops.lua", err, errlen);
}

MG_TEST(operator_rules_come_first)
{
    char err[256];
    mg_patterns_t *p = load_text("-- the site's own wording\n"
                                 "return {\n"
                                 "  { id = 'mine', class = 'overloaded', status = 400, match = 'Temperature' },\n"
                                 "  { class = 'rate_limit', header = 'x-upstream-status', match = 'THROTTLED' },\n"
                                 "  { class = 'billing', pattern = 'quota of %d+ credits exceeded' },\n"
                                 "  { class = 'server_error', status = '5xx', field = 'error.detail.kind', match = 'oom' },\n"
                                 "  { class = 'model_not_loaded', status = { 409, '420-421' } },\n"
                                 "}\n",
                                 err, sizeof err);
    MG_CHECK(p != NULL);
    if (!p) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    size_t n_op;
    MG_CHECK_INT(mg_patterns_count(p, &n_op), mg_patterns_count(mg_patterns_builtin(), NULL) + 5);
    MG_CHECK_INT(n_op, 5);
    const char *b = "{\"error\":{\"message\":\"temperature must be <= 2\"}}";
    mg_classification_t c = mg_classify_http2(p, 400, "", 0, b, strlen(b), NULL);
    MG_CHECK(c.cls == MG_CLASS_OVERLOADED);
    MG_CHECK_STR(c.rule, "mine");
    /* the built-ins still see the same body as bad_request */
    MG_CHECK(mg_classify_http2(NULL, 400, "", 0, b, strlen(b), NULL).cls == MG_CLASS_BAD_REQUEST);
    const char *h = "X-Upstream-Status: throttled-by-proxy\r\n";
    c = mg_classify_http2(p, 400, h, strlen(h), "{}", 2, NULL);
    MG_CHECK(c.cls == MG_CLASS_RATE_LIMIT);
    MG_CHECK_STR(c.rule, "ops.lua#2");
    b = "{\"message\":\"Your Quota of 500 credits exceeded\"}";
    MG_CHECK(mg_classify_http2(p, 400, "", 0, b, strlen(b), NULL).cls == MG_CLASS_BILLING);
    b = "{\"message\":\"Your quota of many credits exceeded\"}";
    MG_CHECK(mg_classify_http2(p, 400, "", 0, b, strlen(b), NULL).cls == MG_CLASS_BAD_REQUEST);
    b = "{\"error\":{\"detail\":{\"kind\":\"OOM\"}}}";
    MG_CHECK(mg_classify_http2(p, 507, "", 0, b, strlen(b), NULL).cls == MG_CLASS_SERVER_ERROR);
    MG_CHECK_STR(mg_classify_http2(p, 507, "", 0, b, strlen(b), NULL).rule, "ops.lua#4");
    MG_CHECK(mg_classify_http2(p, 409, "", 0, "", 0, NULL).cls == MG_CLASS_MODEL_NOT_LOADED);
    MG_CHECK(mg_classify_http2(p, 421, "", 0, "", 0, NULL).cls == MG_CLASS_MODEL_NOT_LOADED);
    MG_CHECK(mg_classify_http2(p, 422, "", 0, "", 0, NULL).cls == MG_CLASS_BAD_REQUEST);
    /* reference counting: a retained set survives one release */
    MG_CHECK(mg_patterns_retain(p) == p);
    mg_patterns_release(p);
    MG_CHECK(mg_classify_http2(p, 409, "", 0, "", 0, NULL).cls == MG_CLASS_MODEL_NOT_LOADED);
    mg_patterns_release(p);
    /* the built-in set ignores retain/release */
    mg_patterns_release(mg_patterns_retain(mg_patterns_builtin()));
    mg_patterns_release(mg_patterns_builtin());
    MG_CHECK(mg_patterns_count(mg_patterns_builtin(), NULL) > 60);
}

MG_TEST(operator_can_drop_builtins)
{
    char err[256];
    mg_patterns_t *p = load_text("return { builtins = false, rules = { { class = 'auth', status = 418 } } }", err,
                                 sizeof err);
    MG_CHECK(p != NULL);
    if (!p) return;
    MG_CHECK_INT(mg_patterns_count(p, NULL), 1);
    MG_CHECK(mg_classify_http2(p, 418, "", 0, "", 0, NULL).cls == MG_CLASS_AUTH);
    /* without built-ins a 429 falls back on its status: a 4xx */
    mg_classification_t c = mg_classify_http2(p, 429, "", 0, "", 0, NULL);
    MG_CHECK(c.cls == MG_CLASS_BAD_REQUEST && c.rule == NULL);
    mg_patterns_release(p);
}

MG_TEST(operator_file_on_disk)
{
    char path[] = "/tmp/mg_patterns_XXXXXX";
    int fd = mkstemp(path);
    MG_CHECK(fd >= 0);
    if (fd < 0) return;
    const char *text = "return { { id = 'disk', class = 'content_filter', match = 'naughty' } }\n";
    MG_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    char err[256];
    mg_patterns_t *p = mg_patterns_load(path, err, sizeof err);
    MG_CHECK(p != NULL);
    if (p) {
        mg_classification_t c = mg_classify_http2(p, 400, "", 0, "{\"m\":\"NAUGHTY words\"}", 21, NULL);
        MG_CHECK(c.cls == MG_CLASS_CONTENT_FILTER);
        MG_CHECK_STR(c.rule, "disk");
        mg_patterns_release(p);
    }
    unlink(path);
    MG_CHECK(mg_patterns_load(path, err, sizeof err) == NULL);
    MG_CHECK(strstr(err, "cannot open") != NULL);
    /* NULL path: the built-ins alone */
    p = mg_patterns_load(NULL, err, sizeof err);
    MG_CHECK(p != NULL);
    MG_CHECK_INT(mg_patterns_count(p, NULL), mg_patterns_count(mg_patterns_builtin(), NULL));
    mg_patterns_release(p);
}

typedef struct {
    const char *text;
    const char *want; /* substring of the error */
} bad_file_t;

static const bad_file_t bad_files[] = {
    {"return { { class = 'nope', status = 400 } }", "ops.lua: rule 1: unknown class 'nope'"},
    {"return { { class = 'ok', status = 400 } }", "unknown class 'ok'"},
    {"return { { class = 'auth', statuss = 401 } }", "rule 1: unknown key 'statuss'"},
    {"return { { class = 'auth' } }", "matches everything"},
    {"return { { status = 401 } }", "'class' is required"},
    {"return { { class = 'auth', status = 700 } }", "status out of range"},
    {"return { { class = 'auth', status = 'five' } }", "is not a number"},
    {"return { { class = 'auth', status = {} } }", "empty list"},
    {"return { { class = 'auth', match = 5 } }", "'match' must be a string"},
    {"return { { class = 'auth', match = '' } }", "'match' is empty"},
    {"return { { class = 'auth', match = 'a', pattern = 'b' } }", "exclude each other"},
    {"return { { class = 'auth', field = 'a', header = 'b' } }", "exclude each other"},
    {"return { { class = 'auth', field = 'error..code' } }", "empty segment"},
    {"return { { class = 'auth', pattern = '%b()' } }", "bad pattern: %b is not supported"},
    {"return { { class = 'auth', pattern = '(%d+) tokens' } }", "captures are not supported"},
    {"return { { class = 'auth', pattern = '[abc' } }", "missing ']'"},
    {"return { { class = 'auth', pattern = 'x%' } }", "ends with '%'"},
    {"return { { class = 'auth', unless = { 1 } } }", "'unless' entries"},
    {"return { { class = 'auth', match = 'x' }, 'oops' }", "rule 2: not a table"},
    {"return 42", "must return a table of rules"},
    {"return { rules = 'x' }", "'rules' must be a list"},
    {"return { rules = {}, builtins = 'no' }", "'builtins' must be a boolean"},
    /* the sandbox */
    {"local f = io.open('/etc/passwd') return {}", "/etc/moongate/ops.lua:1: unknown global 'io'"},
    {"os.exit(1) return {}", "unknown global 'os'"},
    {"return load('return {}')()", "unknown global 'load'"},
    {"require('socket') return {}", "unknown global 'require'"},
    {"dofile('/etc/passwd') return {}", "unknown global 'dofile'"},
    {"rawset(_ENV, 'x', 1) return {}", "unknown global 'rawset'"},
    {"while true do end", "CPU budget exhausted"},
    {"while true do pcall(function() while true do end end) end", "CPU budget exhausted"},
    /* the error inside pcall is cheap in instructions but not in time: the clock stops it */
    {"while true do pcall(function() while trun do end end) end", "CPU budget exhausted"},
    {"local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end return {}", "not enough memory"},
    {"return { {", "ops.lua:1:"},
    {"\x1bLua binary chunk", "attempt to load a binary chunk"},
    {"error('custom failure')", "custom failure"},
};

MG_TEST(operator_file_errors)
{
    for (size_t i = 0; i < MG_ARRAY_LEN(bad_files); i++) {
        char err[256] = "";
        mg_patterns_t *p = load_text(bad_files[i].text, err, sizeof err);
        if (p || !strstr(err, bad_files[i].want)) {
            fprintf(stderr, "  bad file %zu: loaded=%d err=\"%s\", want \"%s\"\n", i, p != NULL, err,
                    bad_files[i].want);
            mg_test_failures++;
        }
        mg_patterns_release(p);
    }
}

/* ---- the Lua-pattern subset */

typedef struct {
    const char *pat, *subject;
    int want;
    size_t start, end;
} pat_case_t;

static const pat_case_t pat_cases[] = {
    {"abc", "xxabcxx", 1, 2, 5},
    {"^abc", "xxabc", 0, 0, 0},
    {"^abc", "abcxx", 1, 0, 3},
    {"abc$", "abcxx", 0, 0, 0},
    {"abc$", "xxabc", 1, 2, 5},
    {"a.c", "a-c", 1, 0, 3},
    {"%d+ tokens", "you passed 1015 tokens", 1, 11, 22},
    {"%d+", "none", 0, 0, 0},
    {"a%d*b", "ab", 1, 0, 2},
    {"a%d-b", "a12b", 1, 0, 4},
    {"a.-b", "axxbyyb", 1, 0, 4},
    {"a.*b", "axxbyyb", 1, 0, 7},
    {"colou?r", "color", 1, 0, 5},
    {"colou?r", "colour", 1, 0, 6},
    {"[%w_]+", "  err_code!", 1, 2, 10},
    {"[^%s]+", "   x1 ", 1, 3, 5},
    {"[a-c]+", "zzbcaz", 1, 2, 5},
    {"%.%-", "a.-b", 1, 1, 3},
    {"%S+$", "a bc", 1, 2, 4},
    {"", "abc", 1, 0, 0},
    {"x*", "", 1, 0, 0},
    {"[]]", "a]b", 1, 1, 2},
    {"[^]]", "]]a", 1, 2, 3},
    {"^$", "", 1, 0, 0},
    {"a$b", "a$b", 1, 0, 3},
};

MG_TEST(pattern_subset)
{
    for (size_t i = 0; i < MG_ARRAY_LEN(pat_cases); i++) {
        const pat_case_t *c = &pat_cases[i];
        size_t s = 99, e = 99;
        MG_CHECK(mg_pattern_check(c->pat, strlen(c->pat)) == NULL);
        int got = mg_pattern_find(c->pat, strlen(c->pat), c->subject, strlen(c->subject), &s, &e);
        if (got != c->want || (got == 1 && (s != c->start || e != c->end))) {
            fprintf(stderr, "  pattern %zu '%s' on '%s': got %d [%zu,%zu), want %d [%zu,%zu)\n", i, c->pat,
                    c->subject, got, s, e, c->want, c->start, c->end);
            mg_test_failures++;
        }
    }
    /* lowered literals keep class letters: %S stays a class, 'A' becomes 'a', %Q becomes %q */
    char p[] = "AB%S%d[X-Z]%Q";
    mg_pattern_lower_literals(p, strlen(p));
    MG_CHECK_STR(p, "ab%S%d[x-z]%q");
    MG_CHECK(mg_pattern_check("%1", 2) != NULL);
    MG_CHECK(mg_pattern_check("%f[%w]", 6) != NULL);
    MG_CHECK(mg_pattern_check("a\0b", 3) != NULL);
}

MG_TEST(pattern_step_budget)
{
    /* Nested lazy expansions on a long subject without the final letter: exponential in Lua, cut
     * short here. */
    char subject[4000];
    memset(subject, 'a', sizeof subject - 1);
    subject[sizeof subject - 1] = '\0';
    const char *pat = "a-a-a-a-a-a-a-a-b";
    int64_t t0 = mg_now_us();
    int r = mg_pattern_find(pat, strlen(pat), subject, strlen(subject), NULL, NULL);
    int64_t dt = mg_now_us() - t0;
    MG_CHECK_INT(r, -1);
    MG_CHECK(dt < 500000);
    /* Lua's depth limit: 250 matching optional items recurse deeper than 200 levels. */
    char deep[600] = "", as[300];
    for (int i = 0; i < 250; i++) strcat(deep, "a?");
    strcat(deep, "b");
    memset(as, 'a', sizeof as);
    MG_CHECK_INT(mg_pattern_find(deep, strlen(deep), as, sizeof as, NULL, NULL), -1);
    MG_CHECK_INT(mg_pattern_find(deep, strlen(deep), "aab", 3, NULL, NULL), 1);
}

/* ---- cost: the brief is "a few microseconds" per classification */

MG_TEST(classification_cost)
{
    const char *bodies[] = {
        http_fixtures[0].body,                                   /* decided by an early field rule */
        "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}", /* walks every rule */
        http_fixtures[50].body,
    };
    enum { N = 20000 };
    for (size_t k = 0; k < MG_ARRAY_LEN(bodies); k++) {
        volatile int sink = 0;
        int64_t t0 = mg_now_us();
        for (int i = 0; i < N; i++) sink += mg_classify_http2(NULL, 500, "", 0, bodies[k], strlen(bodies[k]), NULL).cls;
        double us = (double)(mg_now_us() - t0) / N;
        printf("  classification %zu: %.2f us (%zu bytes)\n", k, us, strlen(bodies[k]));
        /* generous: this also runs under ASan/UBSan in CI */
        MG_CHECK(us < 100.0);
        (void)sink;
    }
}

MG_TEST_MAIN()

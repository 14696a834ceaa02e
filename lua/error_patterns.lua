--[[ Built-in error patterns: how the upstreams we know word their failures, mapped to error
classes (src/classify.h). Evaluated ONCE, in a throwaway sandboxed Lua state, when the gateway
loads or reloads its patterns; the rules are then matched in C (src/classify.c), so nothing here
runs per request.

Each rule is a table:
  class   (required) ok-less class name: connect_error timeout rate_limit overloaded server_error
          auth billing model_not_found model_not_loaded context_overflow content_filter
          bad_request stream_broken too_large unsupported
  status  optional: 429, {503, 529}, "5xx", or "500-599" (or a list mixing them). Rules with a
          status never match an error found inside a 200 stream (it has no status of its own).
  field   optional: a dotted path into the JSON body ("error.code", "error.metadata.reasons").
          Numbers compare as their decimal text. Without match/pattern, the field must merely exist.
  header  optional, instead of field: a response header name; its value is the text matched.
  match   optional: a plain substring, case-insensitive.
  pattern optional, instead of match: a Lua pattern (no captures, %b, %f or back-references),
          matched against the lowercased text with the pattern's literal letters lowercased.
  unless  optional: a substring or list of substrings of the whole body that veto the rule.
  id      optional: a name for logs and tests (default "<file>#<n>").
With neither field nor header, match/pattern look at the body (its first 8 KiB), and they and
unless do not see what it quotes of the client's request (the echo guard, docs/HEALTH.md): a client
cannot write the words. Field and header values are read as the server wrote them, so keep field
rules to structured fields (error.code, error.type), not to error.message.
An error event inside a stream is judged with its error object at `error` wherever the event
carries it: OpenAI Responses' response.failed (response.error) and its bare error event
({type="error", code, message}: code is read as error.code and as error.type), so the error.*
rules below cover them too.

The FIRST matching rule wins, so order matters: operator rules (gateway.errorPatterns) are
checked before all of these; then billing disguised as rate limits, then context overflow,
content filter, model state, and the plain status codes last. What no rule matches falls back to
the status: 2xx ok, 4xx bad_request, anything else server_error. An error inside a stream has no
status: it is bad_request when its error's type or code is invalid_request_error (a 400 by name),
else server_error.

Sources: ../shared/PROTOCOLS.md A.1, A.3, A.5, A.6 and the servers' own code. ]]

-- Rate-limit wordings that must never be read as a context overflow ("Too many tokens, please
-- wait" is throttling, not a window).
local RL = { "rate limit", "rate_limit", "too many requests", "throttl" }

return {
    ------------------------------------------------------------------ billing (never retried)
    -- OpenAI answers 429 for an empty account; retrying or waiting does not help.
    { id = "openai.insufficient_quota", class = "billing", field = "error.code", match = "insufficient_quota" },
    { id = "openai.insufficient_quota.type", class = "billing", field = "error.type", match = "insufficient_quota" },
    -- Anthropic 429 with error.details.error_code = enforced_spend_limit_reached.
    { id = "anthropic.spend_limit", class = "billing", match = "enforced_spend_limit_reached" },
    { id = "anthropic.billing_error", class = "billing", field = "error.type", match = "billing_error" },
    -- OpenRouter reports the status as error.code, also inside a 200 stream.
    { id = "openrouter.code.402", class = "billing", field = "error.code", pattern = "^402$" },
    { id = "http.402", class = "billing", status = 402 },

    ------------------------------------------------------------------ context overflow
    -- Structured signals first (PROTOCOLS A.5: match status and fields before wordings).
    { id = "openai.context_length_exceeded", class = "context_overflow", field = "error.code", match = "context_length_exceeded" },
    { id = "llamacpp.exceed_context_size_error", class = "context_overflow", field = "error.type", match = "exceed_context_size_error" },
    -- Wordings, at any status (LM Studio and others report overflow inside a 200 stream).
    { id = "anthropic.prompt_too_long", class = "context_overflow", match = "prompt is too long", unless = RL },
    { id = "anthropic.exceed_context_limit", class = "context_overflow", match = "exceed context limit", unless = RL },
    { id = "openai.exceeds_context_window", class = "context_overflow", match = "exceeds the context window", unless = RL },
    { id = "openai.maximum_context_length", class = "context_overflow", match = "maximum context length is", unless = RL },
    { id = "generic.context_length_exceeded", class = "context_overflow", match = "context_length_exceeded" },
    { id = "generic.context_length_exceeded.words", class = "context_overflow", match = "context length exceeded", unless = RL },
    { id = "vllm.you_passed", class = "context_overflow", pattern = "you passed %d+ input tokens" },
    { id = "vllm.context_length_is_only", class = "context_overflow", match = "context length is only", unless = RL },
    { id = "vllm.request_has_input_tokens", class = "context_overflow", pattern = "your request has %d+ input tokens" },
    { id = "vllm.maximum_model_length", class = "context_overflow", match = "longer than the maximum model length" },
    { id = "sglang.longer_than_context_length", class = "context_overflow", match = "is longer than the model's context length" },
    { id = "sglang.requested_token_count", class = "context_overflow", match = "requested token count exceeds the model's maximum context length" },
    { id = "llamacpp.available_context_size", class = "context_overflow", match = "exceeds the available context size" },
    { id = "llamacpp.context_size_exceeded", class = "context_overflow", match = "context size has been exceeded" },
    { id = "lmstudio.n_keep", class = "context_overflow", match = "greater than the context length" },
    { id = "lmstudio.does_not_fit", class = "context_overflow", match = "input does not fit in context length" },
    { id = "lmstudio.context_length_of_only", class = "context_overflow", match = "context length of only" },
    { id = "ollama.longer_than_context", class = "context_overflow", match = "longer than the context length", unless = RL },
    { id = "ollama.input_length_exceeds", class = "context_overflow", match = "input length exceeds the context length" },
    { id = "ollama.exceeded_max_context", class = "context_overflow", match = "exceeded max context length" },
    { id = "generic.reduce_length", class = "context_overflow", match = "reduce the length of the messages", unless = RL },
    { id = "generic.input_token_count", class = "context_overflow", pattern = "input token count.-exceeds the maximum" },
    { id = "generic.exceeds_maximum_context", class = "context_overflow", match = "exceeds model's maximum context length" },
    { id = "generic.maximum_input_length", class = "context_overflow", match = "exceeds the maximum allowed input length" },
    { id = "generic.token_count_exceeds_limit", class = "context_overflow", pattern = "token count of %d+ exceeds the limit" },
    { id = "mistral.too_large_for_model", class = "context_overflow", pattern = "too large for model with %d+ maximum context length" },
    { id = "xai.maximum_prompt_length", class = "context_overflow", match = "maximum prompt length is" },

    ------------------------------------------------------------------ content filter
    { id = "azure.content_filter", class = "content_filter", field = "error.code", match = "content_filter" },
    { id = "openai.content_policy_violation", class = "content_filter", field = "error.code", match = "content_policy_violation" },
    { id = "openai.invalid_prompt", class = "content_filter", field = "error.code", match = "invalid_prompt" },
    -- OpenRouter moderation (403): metadata carries reasons and flagged_input.
    { id = "openrouter.moderation", class = "content_filter", field = "error.metadata.flagged_input" },
    { id = "openrouter.moderation.reasons", class = "content_filter", field = "error.metadata.reasons" },
    { id = "anthropic.content_filtering", class = "content_filter", match = "content filtering policy" },

    ------------------------------------------------------------------ model state
    -- llama.cpp uses unavailable_error (503) both for "no slot available" and "Loading model".
    { id = "llamacpp.no_slot", class = "overloaded", match = "no slot available" },
    { id = "llamacpp.unavailable_error", class = "model_not_loaded", field = "error.type", match = "unavailable_error" },
    { id = "generic.loading_model", class = "model_not_loaded", match = "loading model" },
    { id = "generic.model_is_loading", class = "model_not_loaded", match = "is currently loading" },
    { id = "generic.model_is_not_loaded", class = "model_not_loaded", match = "model is not loaded" },
    { id = "generic.model_not_loaded", class = "model_not_loaded", match = "model not loaded" },
    { id = "lmstudio.no_models_loaded", class = "model_not_loaded", match = "no models loaded" },
    { id = "lmstudio.failed_to_load", class = "model_not_loaded", match = "failed to load model" },
    { id = "ollama.system_memory", class = "model_not_loaded", match = "requires more system memory" },
    { id = "ollama.runner_terminated", class = "model_not_loaded", match = "llama runner process has terminated" },

    -- Ollama: 404 model "x" not found, try pulling it first (not loaded would be wrong: it is
    -- not on the machine at all).
    { id = "ollama.try_pulling", class = "model_not_found", match = "try pulling it first" },
    { id = "openai.model_not_found", class = "model_not_found", field = "error.code", match = "model_not_found" },
    { id = "openrouter.not_a_valid_model", class = "model_not_found", match = "is not a valid model id" },
    { id = "openrouter.no_endpoints", class = "model_not_found", match = "no endpoints found" },
    { id = "generic.model_does_not_exist", class = "model_not_found", pattern = "the model .- does not exist" },
    { id = "not_found_error.type", class = "model_not_found", field = "error.type", match = "not_found_error" },
    { id = "vllm.not_found.type", class = "model_not_found", field = "type", pattern = "^notfounderror$" },
    { id = "http.404", class = "model_not_found", status = 404 },

    ------------------------------------------------------------------ this candidate cannot do it
    -- The request is fine; another candidate may serve it (tools, images, thinking…).
    { id = "llamacpp.not_supported_error", class = "unsupported", field = "error.type", match = "not_supported_error" },
    { id = "ollama.does_not_support", class = "unsupported", match = "does not support", status = { "4xx" } },
    -- llama-server started without --jinja refuses tools (500 server_error, 400 in some builds);
    -- older builds refuse tools in a stream. Wordings of llama.cpp's oaicompat_chat_params_parse.
    { id = "llamacpp.tools_need_jinja", class = "unsupported", match = "tools param requires --jinja flag" },
    { id = "llamacpp.tool_choice_needs_jinja", class = "unsupported", match = "unsupported param: tool_choice" },
    { id = "llamacpp.tools_with_stream", class = "unsupported", match = "cannot use tools with stream" },
    { id = "http.501", class = "unsupported", status = 501 },

    ------------------------------------------------------------------ auth
    { id = "anthropic.authentication_error", class = "auth", field = "error.type", match = "authentication_error" },
    { id = "anthropic.permission_error", class = "auth", field = "error.type", match = "permission_error" },
    { id = "http.401_403", class = "auth", status = { 401, 403 } },

    ------------------------------------------------------------------ rate limit, overloaded
    { id = "http.429", class = "rate_limit", status = 429 },
    { id = "rate_limit_error.type", class = "rate_limit", field = "error.type", match = "rate_limit_error" },
    { id = "rate_limit_exceeded.code", class = "rate_limit", field = "error.code", match = "rate_limit_exceeded" },
    { id = "openrouter.code.429", class = "rate_limit", field = "error.code", pattern = "^429$" },
    { id = "anthropic.overloaded_error", class = "overloaded", field = "error.type", match = "overloaded_error" },
    { id = "llamacpp.server_overloaded", class = "overloaded", field = "error.type", match = "server_overloaded" },
    { id = "ollama.server_busy", class = "overloaded", match = "server busy" },
    { id = "openrouter.code.503", class = "overloaded", field = "error.code", pattern = "^503$" },
    { id = "openrouter.code.529", class = "overloaded", field = "error.code", pattern = "^529$" },
    { id = "http.503_529", class = "overloaded", status = { 503, 529 } },

    ------------------------------------------------------------------ timeouts, sizes
    { id = "http.408_504_524", class = "timeout", status = { 408, 504, 524 } },
    -- 413 request_too_large is the request's byte size (a proxy limit), not its tokens.
    { id = "http.413", class = "bad_request", status = 413 },
}

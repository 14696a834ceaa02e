-- Tests for policies/cost_latency.lua, run by `moongate test policies/tests`.
-- Estimated cost of 1000 prompt tokens + 4096 reserved output (per 1e6 tokens):
--   lmstudio 0, gpt-5-mini 0.0084, haiku 0.0215, sonnet 0.0644.
local SONNET, HAIKU = "anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5"
local MINI, LOCAL = "openai/gpt-5-mini", "lmstudio/qwen3-coder-30b"

local measured = { models = {
  [SONNET] = { latency_ms = 800, ttft_ms = 300 },
  [MINI] = { latency_ms = 1500, ttft_ms = 200 },
  [HAIKU] = { latency_ms = 400, ttft_ms = 350 },
} }

return {
  config = "../../examples/policy-cost-latency.json5",
  cases = {
    { name = "cost is the default: cheapest first",
      request = { model = "default", prompt_tokens = 1000 },
      expect = { candidates = { LOCAL, MINI, HAIKU, SONNET }, trace = "cost: " } },
    { name = "a candidate whose window is too small is left out",
      request = { model = "default", prompt_tokens = 40000 },
      expect = { candidates = { MINI, HAIKU, SONNET } } },
    { name = "an unhealthy cheap candidate goes last",
      request = { model = "default" },
      state = { models = { [LOCAL] = { healthy = false } } },
      expect = { candidates = { MINI, HAIKU, SONNET, LOCAL } } },
    { name = "latency mode tries a candidate not measured yet first, then by measured latency",
      request = { model = "default", headers = { ["x-moongate-optimize"] = "latency" } },
      state = measured,
      expect = { candidates = { LOCAL, HAIKU, SONNET, MINI }, trace = "latency: " } },
    { name = "once every candidate is measured, the fastest is first",
      request = { model = "default", headers = { ["x-moongate-optimize"] = "latency" } },
      state = { models = { [SONNET] = { latency_ms = 800 }, [MINI] = { latency_ms = 1500 },
                           [HAIKU] = { latency_ms = 400 }, [LOCAL] = { latency_ms = 2500 } } },
      expect = { candidates = { HAIKU, SONNET, MINI, LOCAL } } },
    { name = "streamed requests order by time to first token",
      request = { model = "default", stream = true, headers = { ["x-moongate-optimize"] = "Latency" } },
      state = measured,
      expect = { candidates = { LOCAL, MINI, SONNET, HAIKU } } },
    { name = "metadata can choose the mode",
      request = { model = "default", metadata = { optimize = "latency" } },
      state = measured,
      expect = { first = LOCAL, trace = "latency: " } },
    { name = "an unknown mode is a 400",
      request = { model = "default", headers = { ["x-moongate-optimize"] = "speed" } },
      expect = { reject = { status = 400, code = "invalid_optimize" } } },
    { name = "a model asked by name stays first, its fallbacks are reordered",
      request = { model = "sonnet" },
      expect = { candidates = { SONNET, LOCAL, MINI, HAIKU } } },
    { name = "a chain member asked by name keeps only its own fallbacks",
      request = { model = "haiku" },
      expect = { candidates = { HAIKU, LOCAL } } },
    { name = "an unknown model is a 404",
      request = { model = "cheapest" },
      expect = { reject = { status = 404, code = "model_not_found" } } },
  },
}

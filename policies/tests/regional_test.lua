-- Tests for policies/regional.lua, run by `moongate test policies/tests`.
-- mistral-eu: region eu-west; openrouter-us: region us; anthropic: no region; lmstudio: local.
local LOCAL, MISTRAL = "lmstudio/qwen3-coder-30b", "mistral-eu/mistral-large-latest"
local MINIMAX, SONNET = "openrouter-us/minimax/minimax-m2.1", "anthropic/claude-sonnet-4-5"

return {
  config = "../../examples/policy-regional.json5",
  cases = {
    { name = "no data region: the chain unchanged",
      request = { model = "default" },
      expect = { candidates = { LOCAL, MISTRAL, MINIMAX, SONNET } } },
    { name = "eu data stays in eu (and local)",
      request = { model = "default", data_region = "eu" },
      expect = { candidates = { LOCAL, MISTRAL }, trace = "region eu dropped " .. MINIMAX .. "," .. SONNET } },
    { name = "the x-data-region header works too",
      request = { model = "default", headers = { ["X-Data-Region"] = "us" } },
      expect = { candidates = { LOCAL, MINIMAX } } },
    { name = "regions compare without case",
      request = { model = "default", data_region = "EU-WEST" },
      expect = { candidates = { LOCAL, MISTRAL } } },
    { name = "a region nobody serves leaves only the local box",
      request = { model = "default", data_region = "ap" },
      expect = { candidates = { LOCAL } } },
    { name = "a hosted model without a region is refused for regional data",
      request = { model = SONNET, data_region = "eu" },
      expect = { reject = { status = 403, code = "region_not_allowed",
                            message = "no candidate for model " .. SONNET .. " may receive data of region eu: " ..
                                      SONNET .. " (no region) is not in that region (local providers are always allowed)" } } },
    { name = "a model in another region is refused, with its region named",
      request = { model = MINIMAX, data_region = "eu" },
      expect = { reject = { status = 403, code = "region_not_allowed", message_contains = MINIMAX .. " (region us), " } } },
    { name = "a model asked by alias keeps its allowed fallbacks only",
      request = { model = "mistral", data_region = "eu" },
      expect = { candidates = { MISTRAL } } },
    { name = "the caller key's regions are enforced in C after the policy",
      request = { model = "default", allowed_regions = { "us" } },
      expect = { candidates = { LOCAL, MINIMAX }, trace = "region restriction dropped " .. MISTRAL .. " (region eu-west)" } },
    { name = "a gateway region list that refuses everything is a 403, never an egress",
      request = { model = MINIMAX, gateway_regions = { "eu" } },
      expect = { reject = { status = 403, code = "region_not_allowed", message_contains = "of the gateway" } } },
  },
}

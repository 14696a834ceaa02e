-- local_first.lua: local providers first while they are healthy and the prompt fits their
-- context window; hosted providers as the safety net.
--
-- Starting from the candidates of the model asked (gw.util.chain_for: "default" is
-- agents.defaults.model, a chain member starts the chain there, another model stands alone):
--   1. local candidates that are healthy and fit (gw.util.fits): prompt_tokens + reserved output
--      tokens (req.max_output_tokens, else min(model max_tokens, RESERVE)) <= context_window, the
--      prompt within the gateway's budget for the model (else it would drop turns to fit a small
--      card, which the hosted safety net can take whole), and images only to models that take
--      them;
--   2. hosted candidates, in chain order (the safety net). When the chain has none (a local
--      model asked by name), the hosted models of agents.defaults.model are added;
--   3. local candidates that fit but are unhealthy or cooling down, as a last resort.
-- Local candidates that cannot fit are left out (they would only fail with a context error).
-- Nothing left → 400 context_length_exceeded.
-- Local models get a longer first-token timeout: a cold local model may need to load first.
local util = gw.util

local RESERVE = 4096                -- output tokens kept free when the request sets no maximum
local LOCAL_FIRST_TOKEN_MS = 180000 -- cold start of a local model

function route(req)
  local chain = util.chain_for(req.model)
  if not chain then return util.unknown_model(req) end
  local first, hosted, last = {}, {}, {}
  for _, ref in ipairs(chain) do
    if not util.is_local(ref) then
      hosted[#hosted + 1] = ref
    elseif req.has_images and not gw.catalog.models[ref].input.image then
      gw.trace("%s: takes no images", ref)
    elseif not util.fits(ref, req, util.output_reserve(ref, req, RESERVE)) then
      gw.trace("%s: does not fit (%d prompt tokens)", ref, req.prompt_tokens)
    elseif gw.healthy(ref) then
      first[#first + 1] = {model = ref, first_token_ms = LOCAL_FIRST_TOKEN_MS}
    else
      gw.trace("%s: unhealthy, last", ref)
      last[#last + 1] = {model = ref, first_token_ms = LOCAL_FIRST_TOKEN_MS}
    end
  end
  if #hosted == 0 then
    for _, ref in ipairs(util.default_chain()) do
      if not util.is_local(ref) then hosted[#hosted + 1] = ref end
    end
  end
  local plan = util.concat(first, hosted, last)
  if #plan == 0 then
    return gw.reject(400, "context_length_exceeded", string.format(
      "the prompt (%d tokens) does not fit the context window of any candidate for %s",
      req.prompt_tokens, req.model))
  end
  return plan
end

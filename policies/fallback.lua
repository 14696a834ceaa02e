-- fallback.lua: the primary model, then its fallbacks (agents.defaults.model).
--
--   "default"                  → the whole chain: primary, fallback 1, fallback 2, …
--   a model of the chain       → the chain from that model on (its fallbacks follow)
--   any other catalog model    → that model alone
--   anything else              → 404 model_not_found (listing what exists)
--
-- One change from the static chain: candidates that the live state reports unhealthy or cooling
-- down are moved to the end (still tried, as a last resort), so a broken primary does not cost
-- every request a failed attempt first. On a rate limit with a short retry-after, the same
-- candidate is retried once after that delay; every other failure moves on to the next one.
local util = gw.util
local concat = table.concat

local MAX_RETRY_WAIT_MS = 2000 -- longer waits go to the next candidate instead

function route(req)
  local chain = util.chain_for(req.model)
  if not chain then return util.unknown_model(req) end
  local ready, resting = util.partition(chain, gw.healthy)
  if #resting > 0 then
    gw.trace("unhealthy last: %s", concat(resting, ","))
    return util.concat(ready, resting)
  end
  return chain
end

function on_failure(req, f)
  if f.error_class == "rate_limit" and f.attempt == 1 and f.retry_after_ms and f.retry_after_ms <= MAX_RETRY_WAIT_MS then
    gw.trace("retry %s after %d ms", f.model, f.retry_after_ms)
    return "retry", f.retry_after_ms
  end
  return "next"
end

-- cost_latency.lua: the cheapest healthy candidate first, or the fastest.
--
-- The mode comes from the request: the header x-moongate-optimize, else the metadata field
-- "optimize", else DEFAULT_MODE. Its value is "cost" or "latency"; anything else is a 400.
--
--   cost:    estimated price of this request on each candidate, from the catalog's cost fields:
--            (prompt_tokens * cost.input + reserved output * cost.output) / 1e6, where the
--            reserved output is req.max_output_tokens, else min(model max_tokens, 4096).
--   latency: measured median time to first token for streamed requests, median latency
--            otherwise (from the live state). Candidates not measured yet come first, in chain
--            order, so that each gets measured: otherwise the first measured one would keep
--            winning and a faster model further down the chain would never be found.
--
-- Candidates are those of the model asked (gw.util.chain_for). For "default" the whole chain is
-- reordered; for a model asked by name that model stays first and its fallbacks are reordered.
-- Candidates whose context window cannot hold the request are left out; unhealthy or cooling
-- down ones go last. Ties keep chain order.
local util = gw.util
local concat = table.concat

local DEFAULT_MODE = "cost"

local function mode_of(req)
  local m = req.headers["x-moongate-optimize"] or req.metadata.optimize or DEFAULT_MODE
  return string.lower(m)
end

function route(req)
  local chain = util.chain_for(req.model)
  if not chain then return util.unknown_model(req) end
  local mode = mode_of(req)
  local key
  if mode == "cost" then
    key = util.by_cost(req)
  elseif mode == "latency" then
    key = util.by_latency(req)
  else
    return gw.reject(400, "invalid_optimize", "x-moongate-optimize must be \"cost\" or \"latency\", not \"" .. mode .. "\"")
  end
  local head = {}
  if req.model ~= "default" then
    head[1] = table.remove(chain, 1)
  end
  local fitting = util.filter(chain, util.fits, req)
  local ready, resting = util.partition(fitting, gw.healthy)
  local ordered
  if mode == "latency" then
    local untried, measured = util.partition(ready, function(x) return key(x) == nil end)
    ordered = util.concat(untried, util.sort_by(measured, key))
  else
    ordered = util.sort_by(ready, key)
  end
  local plan = util.concat(head, ordered, resting)
  if #plan == 0 then
    return gw.reject(400, "context_length_exceeded", string.format(
      "the prompt (%d tokens) does not fit the context window of any candidate for %s", req.prompt_tokens, req.model))
  end
  gw.trace("%s: %s", mode, concat(plan, ","))
  return plan
end

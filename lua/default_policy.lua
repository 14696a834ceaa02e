-- The built-in policy, used when gateway.policy is not set. It reproduces the static router:
-- "default" → agents.defaults.model (primary, then fallbacks); a model of that chain starts the
-- chain there; any other catalog model is tried alone; anything else is a 404 model_not_found.
local util = gw.util

function route(req)
  local chain = util.chain_for(req.model)
  if not chain then return util.unknown_model(req) end
  return chain
end

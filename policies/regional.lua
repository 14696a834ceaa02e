-- regional.lua: only providers whose region the request's data region allows; local providers
-- are always allowed; when none is allowed, a clear refusal — never a silent egress.
--
-- The data region is req.data_region (the x-moongate-region header), else the x-data-region
-- header; a caller key's regions are req.allowed_regions, which C enforces after this policy. A provider's region is gateway.providers.<id>.region; a region
-- allows the provider when gw.region_allows(data_region, provider_region) ("eu" allows "eu" and
-- "eu-west-1"). Hosted providers without a region are never allowed for a regional request.
--
--   no data region             → the candidates of the model asked, unchanged
--   some candidates allowed    → those, in order (the trace names the ones dropped)
--   none allowed               → 403 region_not_allowed naming every refused candidate
--
-- Candidates are those of the model asked (gw.util.chain_for), so the chain's order is kept.
-- C enforces the caller key's and the gateway's own region lists again after this policy.
local util = gw.util
local concat = table.concat

local function describe(ref)
  local m = gw.catalog.models[ref]
  if m.region then return ref .. " (region " .. m.region .. ")" end
  return ref .. " (no region)"
end

function route(req)
  local chain = util.chain_for(req.model)
  if not chain then return util.unknown_model(req) end
  local region = util.data_region(req)
  if not region then return chain end
  local allowed, refused = util.partition(chain, util.region_ok, region)
  if #allowed == 0 then
    local parts = {}
    for i, ref in ipairs(refused) do parts[i] = describe(ref) end
    return gw.reject(403, "region_not_allowed", string.format(
      "no candidate for model %s may receive data of region %s: %s %s not in that region " ..
      "(local providers are always allowed)",
      req.model, region, concat(parts, ", "), #parts == 1 and "is" or "are"))
  end
  if #refused > 0 then gw.trace("region %s dropped %s", region, concat(refused, ",")) end
  return allowed
end

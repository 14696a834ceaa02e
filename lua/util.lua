-- gw.util: helpers for common routing patterns. Compiled into the binary (scripts/embed.cmake),
-- loaded into every policy state after gw is built; documented in docs/POLICIES.md.
-- Pure Lua over the gw API: no state between calls, every list returned is a fresh table.
local gw = gw
local catalog = gw.catalog
local default_chain = catalog.default_chain
local type, sort, concat = type, table.sort, table.concat

local util = {}

-- The catalog never changes within a state: its numbers are copied once into plain tables, so
-- the helpers below do one table lookup instead of walking read-only proxies on every call.
local INFO = {}
for _, m in ipairs(catalog.model_list) do
  INFO[m.ref] = {
    model = m, cw = m.context_window, max_tokens = m.max_tokens, image = m.input.image,
    cost_in = m.cost.input, cost_out = m.cost.output, is_local = m.is_local, region = m.region,
  }
end

-- INFO for a ref, an alias or a model table; nil when unknown.
local function info(x)
  if type(x) == "table" then x = x.ref end
  if type(x) ~= "string" then return nil end
  local i = INFO[x]
  if i then return i end
  local m = gw.resolve(x)
  return m and INFO[m.ref]
end

local function copy(list)
  local out = {}
  for i = 1, #list do out[i] = list[i] end
  return out
end

-- The catalog model for a ref, an alias or a model table; nil when unknown.
function util.model(x)
  local i = info(x)
  return i and i.model
end

-- The ref ("provider/id") of a ref, alias or model table; nil when unknown.
function util.ref(x)
  local m = util.model(x)
  return m and m.ref
end

-- A fresh copy of agents.defaults.model: primary, then fallbacks.
function util.default_chain()
  return copy(default_chain)
end

-- What the static router does with a model name (or a req): "default" → the default chain; a
-- model of the chain → the chain from that model on; any other catalog model → that model alone;
-- unknown (or "default" with no chain) → nil.
function util.chain_for(name)
  if type(name) ~= "string" then name = name.model end
  if name == "default" then
    if #default_chain == 0 then return nil end
    return copy(default_chain)
  end
  local m = gw.resolve(name)
  if not m then return nil end
  local out, found = {}, false
  for i = 1, #default_chain do
    local ref = default_chain[i]
    if ref == m.ref then found = true end
    if found then out[#out + 1] = ref end
  end
  if not found then out[1] = m.ref end
  return out
end

-- Output tokens to reserve on model m: req.max_output_tokens when the request sets one, else
-- the smaller of the model's max_tokens and `default` (4096).
local function reserve_of(i, req, default)
  local want = req.max_output_tokens
  if want then return want end
  default = default or 4096
  local mt = i and i.max_tokens
  if mt and mt > 0 and mt < default then return mt end
  return default
end

function util.output_reserve(m, req, default)
  return reserve_of(info(m), req, default)
end

-- Whether req fits model m: prompt tokens + reserved output within its context window (0 =
-- unknown window: fits), and the prompt within the gateway's own budget for m (gw.prompt_budget:
-- the window less the output it reserves and its margin), so that the gateway will not compact
-- it; and images only to models that take images.
function util.fits(m, req, reserve)
  local i = info(m)
  if not i then return false end
  if req.has_images and not i.image then return false end
  local cw = i.cw
  if not cw or cw <= 0 then return true end
  if req.prompt_tokens + (reserve or reserve_of(i, req)) > cw then return false end
  return req.prompt_tokens <= gw.prompt_budget(i.model, req.max_output_tokens)
end

-- gw.healthy: not known unhealthy or cooling down (model and provider).
function util.healthy(x)
  return gw.healthy(x)
end

-- Whether the model's provider is local (loopback/private address or tagged "local").
function util.is_local(x)
  local i = info(x)
  return i ~= nil and i.is_local
end

-- The request's data region: req.data_region, else the x-data-region header, else nil.
function util.data_region(req)
  return req.data_region or req.headers["x-data-region"]
end

-- Whether model x may serve data of `region`: local providers always; hosted ones when their
-- provider region is allowed by gw.region_allows; everything when region is nil.
function util.region_ok(x, region)
  local i = info(x)
  if not i then return false end
  if region == nil or i.is_local then return true end
  return i.region ~= nil and gw.region_allows(region, i.region)
end

-- The elements of list for which pred(element, ...) is true, in order.
function util.filter(list, pred, ...)
  local out = {}
  for i = 1, #list do
    if pred(list[i], ...) then out[#out + 1] = list[i] end
  end
  return out
end

-- Two lists: the elements for which pred(element, ...) is true, and the others, in order.
function util.partition(list, pred, ...)
  local yes, no = {}, {}
  for i = 1, #list do
    local v = list[i]
    if pred(v, ...) then yes[#yes + 1] = v else no[#no + 1] = v end
  end
  return yes, no
end

-- A new list: the elements of every list given, in order.
function util.concat(...)
  local out = {}
  for k = 1, select("#", ...) do
    local list = select(k, ...)
    for i = 1, #list do out[#out + 1] = list[i] end
  end
  return out
end

-- Whether list contains x (by ref for models: "a/b" and the model table match).
function util.contains(list, x)
  local r = util.ref(x) or x
  for i = 1, #list do
    local v = list[i]
    if v == x or util.ref(v) == r then return true end
  end
  return false
end

-- A new list without repeated models (first occurrence kept).
function util.dedupe(list)
  local seen, out = {}, {}
  for i = 1, #list do
    local v = list[i]
    local r = util.ref(v) or v
    if not seen[r] then
      seen[r] = true
      out[#out + 1] = v
    end
  end
  return out
end

-- A new list sorted by key(element) ascending; stable; elements whose key is nil go last.
function util.sort_by(list, key)
  local d = {}
  for i = 1, #list do d[i] = {k = key(list[i]), i = i, v = list[i]} end
  sort(d, function(a, b)
    if a.k == nil or b.k == nil then
      if a.k ~= nil then return true end
      if b.k ~= nil then return false end
      return a.i < b.i
    end
    if a.k ~= b.k then return a.k < b.k end
    return a.i < b.i
  end)
  local out = {}
  for i = 1, #d do out[i] = d[i].v end
  return out
end

-- Estimated cost of serving req on model m, in the catalog's cost unit (cost fields are per
-- million tokens): prompt_tokens * cost.input + reserved output * cost.output, / 1e6.
function util.cost(m, req, reserve)
  local i = info(m)
  if not i then return nil end
  local out = reserve or reserve_of(i, req)
  return (req.prompt_tokens * i.cost_in + out * i.cost_out) / 1e6
end

-- A key function for util.sort_by: estimated cost of req.
function util.by_cost(req)
  return function(x) return util.cost(x, req) end
end

-- Measured median latency of model x in ms (time to first token when which == "ttft"), or nil
-- when there are no samples.
function util.latency(x, which)
  local h = gw.health(x)
  if which == "ttft" then return h.ttft_ms end
  return h.latency_ms
end

-- A key function for util.sort_by: time to first token for streamed requests, else latency.
function util.by_latency(req)
  local which = req.stream and "ttft" or "total"
  return function(x) return util.latency(x, which) end
end

-- The 404 model_not_found rejection, worded like the static router's.
function util.unknown_model(req)
  local name = type(req) == "string" and req or req.model
  local parts = {}
  local list = catalog.model_list
  for i = 1, #list do
    if i > 50 then break end
    parts[#parts + 1] = list[i].ref
  end
  local aliases = catalog.alias_list
  for i = 1, #aliases do
    if i > 10 then break end
    parts[#parts + 1] = aliases[i]
  end
  if #default_chain > 0 then parts[#parts + 1] = "default" end
  local head
  if name == "default" then
    head = "no default model is configured (agents.defaults.model)"
  else
    head = "The model `" .. tostring(name) .. "` does not exist in this gateway's catalog"
  end
  return gw.reject(404, "model_not_found", head .. ". Available: " .. concat(parts, ", "))
end

-- The refs of a list of models (or refs).
function util.refs(list)
  local out = {}
  for i = 1, #list do out[i] = util.ref(list[i]) or list[i] end
  return out
end

return util

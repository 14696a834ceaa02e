-- The checks of `moongate test` (policy test files), compiled into the binary. Runs in the test
-- file's own sandbox, not in policy states. check(case, result) compares one case's `expect`
-- with what the policy did; the file format is documented in docs/POLICIES.md ("Testing").
local type, tostring, concat, find, format = type, tostring, table.concat, string.find, string.format
local pairs, ipairs, sort, mathtype = pairs, ipairs, table.sort, math.type

local testing = {}

local OPTION_KEYS = {
  "connect_ms", "first_token_ms", "idle_ms", "total_ms", "max_output_tokens", "compaction", "strip_reasoning",
  "summarizer",
}

-- "[a/b, c/d]" or "reject 403 code: message" or "policy error: ...".
function testing.describe(r)
  if not r.ok then return "policy error: " .. tostring(r.error) end
  if r.action then
    return r.action .. (r.action == "retry" and (" after " .. tostring(r.delay_ms) .. " ms") or "")
  end
  if r.rejected then return format("reject %d %s: %s", r.status, r.code, r.message) end
  local parts = {}
  for i, c in ipairs(r.candidates) do
    local opts = {}
    for _, k in ipairs(OPTION_KEYS) do
      if c[k] ~= nil then opts[#opts + 1] = k .. "=" .. tostring(c[k]) end
    end
    parts[i] = c.model .. (#opts > 0 and ("{" .. concat(opts, ",") .. "}") or "")
  end
  return "[" .. concat(parts, ", ") .. "]"
end

local function fail(r, fmt, ...)
  return false, format(fmt, ...) .. "; got " .. testing.describe(r)
end

local function check_candidate(want, got, i, r)
  if type(want) == "string" then
    if not got or got.model ~= want then return fail(r, "candidate #%d: expected %s", i, want) end
    return true
  end
  if type(want) ~= "table" or type(want.model) ~= "string" then
    error(format("expect.candidates[%d] must be a ref or {model = ref, option = value...}", i), 0)
  end
  if not got or got.model ~= want.model then return fail(r, "candidate #%d: expected %s", i, want.model) end
  for k, v in pairs(want) do
    if k ~= "model" then
      local g = got[k]
      if g ~= v then
        return fail(r, "candidate #%d (%s): expected %s = %s, got %s", i, want.model, k, tostring(v), tostring(g))
      end
    end
  end
  return true
end

-- The fields `expect` may have, and those of `expect.reject` and of a candidate entry.
local EXPECT_KEYS = { "candidates", "first", "reject", "error", "action", "delay_ms", "trace" }
local REJECT_KEYS = { "status", "code", "message", "message_contains" }
local CANDIDATE_KEYS = { "model" }
for _, k in ipairs(OPTION_KEYS) do CANDIDATE_KEYS[#CANDIDATE_KEYS + 1] = k end

-- Raises "<where>: unknown field 'x' (known: ...)" when t has a key not in known.
local function check_keys(t, where, known)
  local set, bad = {}, {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(t) do
    if not set[k] then
      bad[#bad + 1] = type(k) == "string" and ("'" .. k .. "'") or ("a " .. type(k) .. " key")
    end
  end
  if #bad == 0 then return end
  sort(bad)
  error(format("%s: unknown field%s %s (known: %s)", where, #bad > 1 and "s" or "", concat(bad, ", "),
    concat(known, ", ")), 0)
end

-- Raises "<where>: expected a <want>, got ..." unless v is nil or a want ("integer" or a type).
local function check_type(v, where, want)
  if v == nil or (want == "integer" and mathtype(v) == "integer") or type(v) == want then return end
  error(format("%s: expected %s %s, got %s", where, want == "integer" and "an" or "a", want, tostring(v)), 0)
end

-- `expect` itself: a misspelt field would be ignored and a contradictory one (a rejection and
-- candidates) half checked, and the case would pass for the wrong reason.
local function check_expect(case, e)
  check_keys(e, "expect", EXPECT_KEYS)
  local outcomes = {}
  for _, k in ipairs({ "error", "reject", "candidates", "first", "action" }) do
    if e[k] ~= nil and not (k == "first" and e.candidates ~= nil) then outcomes[#outcomes + 1] = k end
  end
  if #outcomes > 1 then
    error(format("expect: %s and %s contradict each other (a case has one outcome)", outcomes[1],
      outcomes[2]), 0)
  end
  if case.failure ~= nil then
    for _, k in ipairs({ "reject", "candidates", "first" }) do
      if e[k] ~= nil then
        error(format("expect.%s: a failure case checks on_failure's decision (action, delay_ms), not a plan",
          k), 0)
      end
    end
  elseif e.action ~= nil or e.delay_ms ~= nil then
    error(format("expect.%s: only a failure case (one with `failure`) has an action",
      e.action ~= nil and "action" or "delay_ms"), 0)
  end
  check_type(e.error, "expect.error", "string")
  check_type(e.trace, "expect.trace", "string")
  check_type(e.delay_ms, "expect.delay_ms", "integer")
  check_type(e.candidates, "expect.candidates", "table")
  if e.action ~= nil and e.action ~= "next" and e.action ~= "stop" and e.action ~= "retry" then
    error(format("expect.action: expected \"next\", \"stop\" or \"retry\", got %s", tostring(e.action)), 0)
  end
  if e.delay_ms ~= nil and e.action ~= "retry" then
    error("expect.delay_ms: only with action = \"retry\"", 0)
  end
  if e.reject ~= nil then
    check_type(e.reject, "expect.reject", "table")
    check_keys(e.reject, "expect.reject", REJECT_KEYS)
    check_type(e.reject.status, "expect.reject.status", "integer")
    check_type(e.reject.code, "expect.reject.code", "string")
    check_type(e.reject.message, "expect.reject.message", "string")
    check_type(e.reject.message_contains, "expect.reject.message_contains", "string")
  end
  if e.candidates ~= nil then
    for k in pairs(e.candidates) do
      if mathtype(k) ~= "integer" or k < 1 or k > #e.candidates then
        error("expect.candidates: expected a list (refs or {model = ref, option = value...})", 0)
      end
    end
    for i, c in ipairs(e.candidates) do
      if type(c) == "table" then check_keys(c, format("expect.candidates[%d]", i), CANDIDATE_KEYS) end
    end
  end
  if type(e.first) == "table" then check_keys(e.first, "expect.first", CANDIDATE_KEYS) end
end

function testing.check(case, r)
  local e = case.expect
  if type(e) ~= "table" then error("the case has no `expect` table", 0) end
  check_expect(case, e)
  if e.error then
    if r.ok then return fail(r, "expected a policy error containing %q", e.error) end
    if not find(r.error, e.error, 1, true) then return fail(r, "expected a policy error containing %q", e.error) end
    return true
  end
  if not r.ok then return false, "unexpected " .. testing.describe(r) end
  if e.action then
    if r.action ~= e.action then return fail(r, "expected action %s", e.action) end
    if e.delay_ms and r.delay_ms ~= e.delay_ms then return fail(r, "expected delay_ms %d", e.delay_ms) end
  elseif e.reject then
    local want = e.reject
    if not r.rejected then return fail(r, "expected a rejection") end
    if want.status and r.status ~= want.status then return fail(r, "expected status %d", want.status) end
    if want.code and r.code ~= want.code then return fail(r, "expected code %s", want.code) end
    if want.message and r.message ~= want.message then return fail(r, "expected message %q", want.message) end
    if want.message_contains and not find(r.message, want.message_contains, 1, true) then
      return fail(r, "expected a message containing %q", want.message_contains)
    end
  elseif e.candidates or e.first then
    if r.rejected then return fail(r, "expected candidates") end
    if e.candidates then
      for i = 1, #e.candidates do
        local ok, why = check_candidate(e.candidates[i], r.candidates[i], i, r)
        if not ok then return false, why end
      end
      if #r.candidates ~= #e.candidates then return fail(r, "expected %d candidates", #e.candidates) end
    end
    if e.first then
      local ok, why = check_candidate(e.first, r.candidates[1], 1, r)
      if not ok then return false, why end
    end
  elseif not e.trace then
    error("`expect` needs one of candidates, first, reject, error, action or trace", 0)
  end
  if e.trace and not find(r.trace or "", e.trace, 1, true) then
    return false, format("expected the trace to contain %q; got %q", e.trace, r.trace or "")
  end
  return true
end

return testing

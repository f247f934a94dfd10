-- wrk script for benchmarks/bench_allocate.py.
-- HQ_MODE=trivial: GET the baseline endpoint under the service's middleware.
-- HQ_MODE=bare: GET the same view without any middleware (benchmarks/wsgi.py).
-- HQ_MODE=allocate: every request allocates 1 unit for a new job.
-- HQ_MODE=floor: the same allocations through the bare WSGI floor handler.
-- HQ_MODE=job: every request admits a new job of 1 unit of each of HQ_RESOURCES.
-- HQ_MODE=check: every request checks 1 unit (POST /api/v1/allocations/check).
-- HQ_MODE=get: every request GETs HQ_PATH (a list's first page, one object).
-- HQ_MODE=mixed: each connection alternates allocate and release of what it got.
-- HQ_MODE=budget: allocate, report consumption, settle with a final value (a budget).
-- HQ_RESOURCE: the resource type to allocate (default concurrent_gpus).
-- Users (HQ_USERS, comma-separated) are dealt out to the threads; each thread's
-- requests go round-robin over its users. Counters are written to HQ_OUT as JSON.

local mode = os.getenv("HQ_MODE")
local resource = os.getenv("HQ_RESOURCE") or "concurrent_gpus"
local job_resources = {}
for slug in string.gmatch(os.getenv("HQ_RESOURCES") or "", "[^,]+") do
  table.insert(job_resources, '"' .. slug .. '":1')
end
local job_resources_json = "{" .. table.concat(job_resources, ",") .. "}"
local key = os.getenv("HQ_KEY")
local out = os.getenv("HQ_OUT")
local all_users = {}
for user in string.gmatch(os.getenv("HQ_USERS") or "", "[^,]+") do
  table.insert(all_users, user)
end

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
  table.insert(threads, thread)
end

function init(args)
  -- HQ_SEED tells concurrent wrk processes apart (their thread indexes repeat).
  math.randomseed(os.time() * 1000 + index + 7919 * tonumber(os.getenv("HQ_SEED") or "0"))
  users = {}
  for i, user in ipairs(all_users) do
    table.insert(users, user)
  end
  next_user = index
  pending = {}
  settling = {}
  allocated, released, consumed, refused, failed = 0, 0, 0, 0, 0
end

local function uuid4()
  local t = {}
  for i = 1, 16 do t[i] = math.random(0, 255) end
  t[7] = (t[7] % 16) + 64
  t[9] = (t[9] % 64) + 128
  return string.format(
    "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
    t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8],
    t[9], t[10], t[11], t[12], t[13], t[14], t[15], t[16])
end

local headers = {}

function request()
  headers["Authorization"] = "Api-Key " .. key
  if mode == "trivial" then
    return wrk.format("GET", "/bench/trivial", headers)
  end
  if mode == "bare" then
    return wrk.format("GET", "/bench/bare", headers)
  end
  if mode == "get" then
    return wrk.format("GET", os.getenv("HQ_PATH"), headers)
  end
  if mode == "mixed" and #pending > 0 then
    local id = table.remove(pending)
    return wrk.format("DELETE", "/api/v1/allocations/" .. id, headers)
  end
  if mode == "budget" and #settling > 0 then
    local id = table.remove(settling)
    return wrk.format(
      "DELETE", "/api/v1/allocations/" .. id .. "?consumed_value=1", headers)
  end
  if mode == "budget" and #pending > 0 then
    local id = table.remove(pending)
    headers["Content-Type"] = "application/json"
    local req = wrk.format("POST", "/api/v1/allocations/" .. id .. "/consume",
                           headers, '{"consumed_value":0.5}')
    headers["Content-Type"] = nil
    return req
  end
  local user = users[(next_user % #users) + 1]
  next_user = next_user + 1
  headers["Content-Type"] = "application/json"
  if mode == "job" then
    local body = '{"entity_type":"user","entity_id":"' .. user ..
        '","job_id":"' .. uuid4() .. '","resources":' .. job_resources_json .. '}'
    local req = wrk.format("POST", "/api/v1/jobs", headers, body)
    headers["Content-Type"] = nil
    return req
  end
  local body = '{"entity_type":"user","entity_id":"' .. user ..
      '","resource_type":"' .. resource .. '","requested_value":1,"job_id":"' ..
      uuid4() .. '"}'
  local path = "/api/v1/allocations"
  if mode == "floor" then
    path = "/bench/floor/allocations"
  elseif mode == "check" then
    path = "/api/v1/allocations/check"
  end
  local req = wrk.format("POST", path, headers, body)
  headers["Content-Type"] = nil
  return req
end

function response(status, headers, body)
  if mode == "trivial" or mode == "bare" then
    return
  end
  if mode == "get" or mode == "check" then
    if status ~= 200 then failed = failed + 1 end
    return
  end
  if status == 201 then
    allocated = allocated + 1
    if mode == "mixed" or mode == "budget" then
      local id = string.match(body, '"id":"([0-9a-f%-]+)"')
      if id then table.insert(pending, id) end
    end
  elseif status == 200 and mode == "budget" and
      string.find(body, '"status":"active"', 1, true) then
    -- A consumption report: settle that allocation next.
    consumed = consumed + 1
    local id = string.match(body, '"id":"([0-9a-f%-]+)"')
    if id then table.insert(settling, id) end
  elseif status == 200 then
    released = released + 1
  elseif status == 429 then
    refused = refused + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local a, r, c, x, f = 0, 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    a = a + (thread:get("allocated") or 0)
    r = r + (thread:get("released") or 0)
    c = c + (thread:get("consumed") or 0)
    x = x + (thread:get("refused") or 0)
    f = f + (thread:get("failed") or 0)
  end
  local file = io.open(out, "w")
  file:write(string.format(
    '{"requests":%d,"seconds":%f,"errors":%d,"allocated":%d,"released":%d,' ..
    '"consumed":%d,"refused":%d,"failed":%d,"p50_ms":%f,"p99_ms":%f}',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
    a, r, c, x, f, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  file:close()
end

-- wrk script: each request reserves 1 unit of the same product (maximum
-- contention) under a reference unique to this thread and request.
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"reference":"bench-%s-%d-%d","lines":[{"product_id":"%s","warehouse_id":"%s","quantity":1}]}',
    os.getenv("RUN") or "0", tid or 0, counter, os.getenv("PRODUCT"), os.getenv("WAREHOUSE"))
  return wrk.format("POST", "/api/v1/reservations", {
    ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
    ["Content-Type"] = "application/json",
  }, body)
end

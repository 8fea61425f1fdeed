-- wrk script: each request signs in to the bench tenant with the right
-- password; the answers are counted by status and printed at the end.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"tenant":"' .. os.getenv("SLUG") .. '","email":"bench@example.com","password":"correct horse 42"}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  codes = {}
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("codes")) do
      io.write(string.format("status %d: %d\n", status, n))
    end
  end
end

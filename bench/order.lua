-- wrk script: each request places an order of 1 to 3 lines on SKUs drawn
-- from a few contended products, for one of the bench's customers.
-- Env: TOKEN, WAREHOUSE, CUSTOMERS and PRODUCTS (comma-separated ids).
local function split(s)
  local out = {}
  for id in string.gmatch(s or "", "[^,]+") do out[#out + 1] = id end
  return out
end
local customers = split(os.getenv("CUSTOMERS"))
local products = split(os.getenv("PRODUCTS"))
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
  ["Content-Type"] = "application/json",
}

function request()
  local first = math.random(#products)
  local lines = {}
  for i = 0, math.random(3) - 1 do
    local product = products[(first + i - 1) % #products + 1]
    lines[#lines + 1] = string.format('{"product_id":"%s","quantity":%d,"unit_price":%d}',
      product, math.random(2), 100 * math.random(50))
  end
  local body = string.format('{"customer_id":"%s","warehouse_id":"%s","currency":"EUR","lines":[%s]}',
    customers[math.random(#customers)], os.getenv("WAREHOUSE"), table.concat(lines, ","))
  return wrk.format("POST", "/api/v1/orders", headers, body)
end

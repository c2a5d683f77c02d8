-- Posts pre-signed bodies from a file of "signature<TAB>body" lines, each once, in order.
-- An optional second argument paces each connection: that many milliseconds between a response
-- and its next request (wrk has no fixed-rate mode; this approximates one at low load).
local items = {}
local counter = 0
local pause_ms = 0

init = function(args)
  pause_ms = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    items[#items + 1] = {line:sub(1, tab - 1), line:sub(tab + 1)}
  end
end

request = function()
  counter = counter + 1
  local item = items[((counter - 1) % #items) + 1]
  return wrk.format("POST", "/webhooks/stripe",
    {["Content-Type"] = "application/json", ["Stripe-Signature"] = item[1]}, item[2])
end

delay = function()
  return pause_ms
end

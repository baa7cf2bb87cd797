-- bench/checkout/checkout.lua: the wrk script of `bench/run checkout`.
--
--   wrk ... -s checkout.lua URL -- MODE PREFIX COUNT [RATE]
--
-- MODE "carts":    POST /api/v1/carts/{PREFIX}{t}_{i}/items (fills the carts)
-- MODE "checkout": POST /api/v1/orders/checkout for cart {PREFIX}{t}_{i},
--                  with a unique Idempotency-Key (the cart id) per request.
-- Each wrk thread t sends COUNT requests (i = 1..COUNT), then stops (up to
-- one more per connection may be in flight then: fill COUNT + connections
-- carts). With RATE (requests/s per thread) the sends are paced open-loop:
-- request k of a thread is due at start + k / RATE, and delay()
-- waits until then (LuaJIT ffi reads CLOCK_MONOTONIC); a send that is due
-- while every connection of the thread is busy goes out late, and those are
-- counted ("late") so that the report shows when the pacing was not kept.
-- The figures come from done(): 202 (or 201) answers, other statuses, and the
-- time from the first send to the last answer (wrk's own Requests/sec counts
-- its whole -d duration, including the time after the last request).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_ts;
int clock_gettime(int clk, bench_ts *ts);
]]
local ts = ffi.new("bench_ts")
local function now_ms()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end

function init(args)
    mode = args[1]
    prefix = args[2]
    count = tonumber(args[3])
    rate = tonumber(args[4] or "0")
    sent, ok, other, late, late_max = 0, 0, 0, 0, 0
    first_ms, last_ms = 0, 0
    next_due = nil
    finished = false
end

function delay()
    if rate <= 0 then
        return 0
    end
    local t = now_ms()
    if next_due == nil then
        next_due = t
    end
    local period = 1000 / rate
    local due = next_due
    next_due = next_due + period
    if due >= t then
        return due - t
    end
    late = late + 1
    if t - due > late_max then
        late_max = t - due
    end
    return 0
end

-- Stops this thread, and tells the driver (it stops wrk when all are done).
local function finish()
    if not finished then
        finished = true
        io.stderr:write("THREAD_DONE\n")
        wrk.thread:stop()
    end
end

function request()
    if sent >= count then
        finish()
    end
    sent = sent + 1
    if first_ms == 0 then
        first_ms = now_ms()
    end
    local cart = prefix .. tid .. "_" .. sent
    local h = { ["Content-Type"] = "application/json", ["X-User-Id"] = "u_" .. cart }
    if mode == "carts" then
        return wrk.format("POST", "/api/v1/carts/" .. cart .. "/items", h,
            '{"product_id":"p_bench","quantity":1}')
    end
    h["Idempotency-Key"] = "bk_" .. cart
    return wrk.format("POST", "/api/v1/orders/checkout", h,
        '{"cart_id":"' .. cart .. '","shipping_address":{"street":"1 Bench St",' ..
        '"city":"San Francisco","state":"CA","zip":"94102","country":"USA"},' ..
        '"payment_method":{"type":"credit_card","card_token":"tok_ok"}}')
end

function response(status, headers, body)
    if status == 202 or status == 201 then
        ok = ok + 1
    else
        other = other + 1
        if other <= 3 then
            io.stderr:write("checkout.lua: status " .. status .. ": " .. body:sub(1, 200) .. "\n")
        end
    end
    last_ms = now_ms()
    if ok + other >= count then
        finish()
    end
end

function done(summary, latency, requests)
    local n_ok, n_other, n_late, lmax, t0, t1 = 0, 0, 0, 0, math.huge, 0
    for _, t in ipairs(threads) do
        n_ok = n_ok + t:get("ok")
        n_other = n_other + t:get("other")
        n_late = n_late + t:get("late")
        lmax = math.max(lmax, t:get("late_max"))
        local f, l = t:get("first_ms"), t:get("last_ms")
        if f > 0 and f < t0 then t0 = f end
        if l > t1 then t1 = l end
    end
    local secs = (t1 - t0) / 1000
    if secs <= 0 then secs = 1e-9 end
    io.write(string.format(
        "RESULT ok=%d other=%d secs=%.3f per_s=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f late=%d late_max_ms=%.1f\n",
        n_ok, n_other, secs, n_ok / secs, latency:percentile(50) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000, n_late, lmax))
end

-- POST /v1/listings?heartbeat=true rotating through BENCH_LISTINGS distinct
-- listings over BENCH_SERVICES services (defaults 62,500 over 50). The bodies are
-- the ones `hakken-bench` preloads: keep `listing()` in sync with src/main.rs.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local n = tonumber(os.getenv("BENCH_LISTINGS") or "62500")
local services = tonumber(os.getenv("BENCH_SERVICES") or "50")
local reqs = {}
local idx = 0

function listing(i)
  return string.format('{"service":"hb-%d","host":"10.%d.%d.%d:8080","zone":"z%d"}',
    i % services, math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256, i % 3)
end

function init(args)
  -- Pre-formatted requests: no per-request Lua formatting on the load core.
  local headers = { ["Content-Type"] = "application/json" }
  for i = 0, n - 1 do
    reqs[i + 1] = wrk.format("POST", "/v1/listings?heartbeat=true", headers, listing(i))
  end
  -- Each thread starts at its own offset (one thread is what the bench uses).
  idx = math.random(0, n - 1)
end

function request()
  idx = idx % n + 1
  return reqs[idx]
end

-- wrk script for benchmarks/run.js (scenario "pipeline"): every write
-- carries DEPTH pipelined GET requests (default 16), built once with
-- wrk.format. wrk counts each response as one request and expects DEPTH
-- responses before it writes the next batch.
--   wrk -t1 -c100 -d5s -s pipeline.lua http://127.0.0.1:PORT/ -- 16
local batch

function init(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format(nil, "/")
  end
  batch = table.concat(r)
end

function request()
  return batch
end

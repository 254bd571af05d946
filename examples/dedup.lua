-- dedup.lua: drops near-duplicate images (the same photo re-encoded,
-- resized, converted) before the model sees them, by perceptual hash.
--
-- A stage after decode (examples/dedup.yaml; docs/stages.md). Each image's
-- dHash: the picture shrunk to 9x8 grey pixels, one bit per pair of
-- neighbours in a row (is the left one brighter?), 64 bits. Two images whose
-- hashes differ in at most `max_distance` bits (config, default 4) are the
-- same picture: the first one seen goes on, with its hash in the column
-- `dhash`; later ones are dropped (recorded as done: a rerun skips them).
--
-- The hashes seen are this worker's state, so the stage runs with
-- `workers: 1` to see every row; they take about 100 bytes each (10 M
-- images: 1 GiB, the limit of a Lua state). Lookups go through
-- max_distance + 1 bands of the hash: two hashes that close agree on at
-- least one band exactly (pigeonhole), so a row is compared only with the
-- hashes that share a band with it, not with all of them.

local max_distance, bands, band_bits, index, n_kept, n_dropped

function init(config)
  max_distance = config.max_distance or 4
  assert(math.type(max_distance) == "integer" and max_distance >= 0 and max_distance < 32,
         "config.max_distance must be an integer from 0 to 31")
  bands = max_distance + 1
  band_bits = 64 // bands
  index = {}
  for b = 1, bands do index[b] = {} end
  n_kept, n_dropped = 0, 0
end

local function dhash(gray)
  local h = 0
  for y = 0, 7 do
    for x = 0, 7 do
      local i = y * 9 + x + 1
      h = (h << 1) | (gray:byte(i) > gray:byte(i + 1) and 1 or 0)
    end
  end
  return h
end

local function distance(a, b)
  local x, n = a ~ b, 0
  while x ~= 0 do
    x = x & (x - 1)
    n = n + 1
  end
  return n
end

-- The key of band b (1-based) of h; the last band takes the bits left over.
local function band(h, b)
  local bits = b == bands and 64 - band_bits * (bands - 1) or band_bits
  local mask = bits == 64 and -1 or (1 << bits) - 1
  return (h >> (band_bits * (b - 1))) & mask
end

function process(row)
  local h = dhash(row:gray(9, 8))
  for b = 1, bands do
    local bucket = index[b][band(h, b)]
    if bucket then
      for _, seen in ipairs(bucket) do
        if distance(seen, h) <= max_distance then
          n_dropped = n_dropped + 1
          return nil
        end
      end
    end
  end
  for b = 1, bands do
    local key = band(h, b)
    local bucket = index[b][key]
    if bucket then bucket[#bucket + 1] = h else index[b][key] = {h} end
  end
  n_kept = n_kept + 1
  row.columns.dhash = string.format("%016x", h)
  return row
end

function close()
  sluice.log(string.format("%d images kept, %d near-duplicates dropped", n_kept, n_dropped))
end

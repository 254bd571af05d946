-- tags.lua: turns the model's answer into JSON tags, and drops rows whose
-- answer is too short to be worth keeping.
--
-- A stage after the engine (examples/tags.yaml; docs/stages.md). Config:
--   stopwords   a file of words never to make tags of, one a line (# comments)
--   min_length  rows whose answer is shorter (in characters) are dropped
--               (recorded as done: a rerun skips them); default 0
--
-- The tag rule (the same in the C plugin, docs/stages.md "The tag rule"):
-- the answer lowercased (ASCII), split at every byte that is not an ASCII
-- letter or digit; words of fewer than 3 characters and stopwords left out;
-- each word once, in the order it first appears; at most 16. The tags go to
-- the column `tags` as a JSON array (declared in the stage's `columns`, so a
-- Parquet output has the column).

local MAX_TAGS, MIN_WORD = 16, 3
local stop, min_length

-- ASCII only, whatever the locale (string.lower and %w follow the C locale).
local LOWER = {}
for c = 65, 90 do LOWER[string.char(c)] = string.char(c + 32) end
local function lower(s) return (s:gsub("[A-Z]", LOWER)) end

function init(config)
  min_length = config.min_length or 0
  stop = {}
  if config.stopwords then
    local f = assert(io.open(config.stopwords, "r"))
    for line in f:lines() do
      local word = lower(line:gsub("#.*", ""):match("^%s*(.-)%s*$"))
      if word ~= "" then stop[word] = true end
    end
    f:close()
  end
end

local function tags_of(text)
  local tags, seen = {}, {}
  for word in lower(text):gmatch("[0-9a-z]+") do
    if #word >= MIN_WORD and not stop[word] and not seen[word] then
      seen[word] = true
      tags[#tags + 1] = word
      if #tags == MAX_TAGS then break end
    end
  end
  return tags
end

function process(row)
  local answer = row.answer or ""
  if (utf8.len(answer) or #answer) < min_length then
    return nil
  end
  row.columns.tags = tags_of(answer)
  return row
end

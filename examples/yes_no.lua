-- yes_no.lua: keeps the images a model says "yes" to, by the probability of
-- "yes" rather than the word it happened to write.
--
-- A stage after the engine (examples/yes_no.yaml; docs/stages.md). The job
-- asks a yes/no question with log-probabilities (--logprobs N, or a task's
-- "sampling": {"logprobs": N}); at the answer's first token this adds the
-- probabilities of the alternatives that read "yes" (any case, spaces
-- around: " Yes", "yes", "YES") into the column p_yes, and drops the row
-- when p_yes is under the threshold (a dropped row is recorded as done: a
-- rerun skips it). Config:
--   threshold  keep rows with p_yes at least this (default 0.5); 0 keeps all
--   task       the task that asks (with --task/--tasks); none: the answer
--   word       the answer that counts (default "yes"; "oui", "true", ...)

local threshold, task, word

function init(config)
  threshold = config.threshold or 0.5
  task = config.task
  word = (config.word or "yes"):lower()
end

local function reads_yes(token)
  return token:lower():match("^%s*(.-)%s*$") == word
end

function process(row)
  local lp
  if task then lp = row:task_logprobs(task) else lp = row.logprobs end
  if not lp then
    error("no log-probabilities: run the job with --logprobs N (or the task's sampling.logprobs)")
  end
  local first = lp.content[1]
  local p_yes = 0.0
  if first then
    for _, alt in ipairs(first.top_logprobs) do
      if reads_yes(alt.token) then p_yes = p_yes + math.exp(alt.logprob) end
    end
  end
  row.columns.p_yes = p_yes
  if p_yes < threshold then return nil end
  return row
end

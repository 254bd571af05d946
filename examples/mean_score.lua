-- mean_score.lua: writes the mean of a rating's choices weighted by their
-- scores (the expected rating): with --choices 1,2,...,10 and scores
-- {"7": 0.5, "8": 0.5, ...} the column holds 7.5. A finer measure than the
-- choice taken, and the one aesthetic filters rank by.
--
-- A stage after the engine (examples/rate.yaml; docs/stages.md) of a job
-- whose choices are numbers (a task's "choices" with `task`). Config:
--   column  the column to write (default "score_mean")
--   task    the task with the choices (none: the job's)

local column, task

function init(config)
  column = config.column or "score_mean"
  task = config.task
end

function process(row)
  local scores
  if task then scores = row:task_scores(task) else scores = row.scores end
  if not scores then
    error("no scores: run the job with --choices (or the task's \"choices\")")
  end
  local mean = 0
  for choice, p in pairs(scores) do
    local value = tonumber(choice)
    if not value then
      error("choice '" .. choice .. "' is not a number: a mean needs numeric choices")
    end
    mean = mean + value * p
  end
  row.columns[column] = mean
  return row
end

-- keep_if.lua: keeps the rows whose score for one choice reaches a
-- threshold; drops the others (a dropped row is recorded as done: a rerun
-- skips it).
--
-- A stage after the engine (examples/filter.yaml; docs/stages.md) of a job
-- with choices (--choices yes,no, or a task's "choices"): the model's
-- score for each choice is in row.scores (row:task_scores(name) for a
-- task's). Config:
--   choice     the choice that must score high enough (default "yes")
--   threshold  keep rows scoring at least this (default 0.5)
--   task       the task with the choices (none: the job's)
--   column     also write the score into this column (default: none)

local choice, threshold, task, column

function init(config)
  choice = config.choice or "yes"
  threshold = config.threshold or 0.5
  task = config.task
  column = config.column
end

function process(row)
  local scores
  if task then scores = row:task_scores(task) else scores = row.scores end
  if not scores then
    error("no scores: run the job with --choices (or the task's \"choices\")")
  end
  local p = scores[choice]
  if p == nil then
    error("'" .. choice .. "' is not one of the choices")
  end
  if column then row.columns[column] = p end
  if p < threshold then return nil end
  return row
end

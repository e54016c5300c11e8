-- Argo CD health check for modelconv.io/ModelConversion.
--
-- Install it under the key resource.customizations.health.modelconv.io_ModelConversion of
-- the argocd-cm ConfigMap (docs/install.md shows how). It reads the status that the operator
-- writes: a summary condition Ready and one condition per stage, each with
-- observedGeneration.
--
--   Healthy      Ready is True for the current generation.
--   Degraded     a stage condition or Ready is False with a failure reason; the message
--                names the condition, its reason and the operator's message.
--   Progressing  no status yet, a spec change the operator has not observed, or stages still
--                running or waiting.
--
-- Argo CD runs this with gopher-lua (Lua 5.1), so it uses nothing newer.

-- Reasons of a False condition that mean "not done yet", not "failed": the controller's
-- Pending, Running, InProgress and Skipped (modelconv.controller.status).
local waiting_reasons = {
  Pending = true,
  Running = true,
  InProgress = true,
  Skipped = true,
}

-- Stage conditions in pipeline order, so the first failing stage is the one reported.
local stage_types = { "Trained", "Exported", "Converted", "Validated", "DeviceVerified", "Published" }

local function observed_current(condition, generation)
  if generation == nil or condition.observedGeneration == nil then
    return true
  end
  return condition.observedGeneration >= generation
end

local function describe(condition)
  local text = condition.type .. " is " .. condition.status
  if condition.reason ~= nil and condition.reason ~= "" then
    text = text .. " (" .. condition.reason .. ")"
  end
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local function is_failure(condition)
  return condition.status == "False" and not waiting_reasons[condition.reason or ""]
end

local health = {}
local generation = obj.metadata and obj.metadata.generation or nil

if obj.status == nil or obj.status.conditions == nil then
  health.status = "Progressing"
  health.message = "Waiting for the modelconv operator to report status"
  return health
end

local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  if condition.type ~= nil then
    conditions[condition.type] = condition
  end
end

local ready = conditions["Ready"]
if ready == nil then
  health.status = "Progressing"
  health.message = "Waiting for the modelconv operator to set the Ready condition"
  return health
end

if not observed_current(ready, generation) then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return health
end

if ready.status == "True" then
  health.status = "Healthy"
  health.message = ready.message or "Converted, validated and published"
  return health
end

for _, stage_type in ipairs(stage_types) do
  local condition = conditions[stage_type]
  if condition ~= nil and observed_current(condition, generation) and is_failure(condition) then
    health.status = "Degraded"
    health.message = describe(condition)
    return health
  end
end

if is_failure(ready) then
  health.status = "Degraded"
  health.message = describe(ready)
  return health
end

health.status = "Progressing"
health.message = describe(ready)
return health

-- sluice-batch job repository, version 2: which of an execution's parameters do
-- not identify its instance (JSON array of names; '[]' for executions recorded
-- before, whose parameters all identified it). The instance key
-- (batch_job_instance.params_key) is the canonical JSON of the identifying
-- parameters only, so instances recorded before keep their keys.
ALTER TABLE batch_job_execution ADD COLUMN non_identifying TEXT NOT NULL DEFAULT '[]';

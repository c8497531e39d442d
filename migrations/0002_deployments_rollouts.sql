-- Deployments, releases, rollouts and their steps, deploy locks and backups;
-- and what the agent registry needs beyond 0001.

ALTER TABLE agents
  ADD COLUMN deployments            jsonb NOT NULL DEFAULT '[]'::jsonb,
  ADD COLUMN controller_id          text NOT NULL DEFAULT '',
  ADD COLUMN image_disk_free_bytes  bigint NOT NULL DEFAULT 0,
  ADD COLUMN backup_disk_free_bytes bigint NOT NULL DEFAULT 0,
  ADD COLUMN connected_at           timestamptz;

-- One row per stack under management. pinned_version is the release that
-- should run: a restarted controller never drifts from it.
CREATE TABLE deployments (
  name            text PRIMARY KEY,
  manifest_yaml   text NOT NULL,
  manifest_sha256 text NOT NULL,
  file_name       text NOT NULL DEFAULT '',
  pinned_version  text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- release is a serialized hoist.v1.Release; version is repeated for keys.
CREATE TABLE releases (
  deployment text NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
  version    text NOT NULL,
  release    bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (deployment, version)
);

CREATE TABLE rollouts (
  id               text PRIMARY KEY,
  deployment       text NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
  kind             text NOT NULL CHECK (kind IN ('deploy', 'upgrade', 'rollback')),
  from_version     text NOT NULL DEFAULT '',
  to_version       text NOT NULL,
  strategy         text NOT NULL,
  on_failure       text NOT NULL,
  state            text NOT NULL CHECK (state IN ('pending', 'running', 'grace', 'succeeded',
                                                  'failed', 'cancelled', 'rolled_back')),
  plan             bytea NOT NULL,
  error            text NOT NULL DEFAULT '',
  requested_by     text NOT NULL,
  cancel_requested boolean NOT NULL DEFAULT false,
  backup_id        text NOT NULL DEFAULT '',
  rollback_command text NOT NULL DEFAULT '',
  created_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  finished_at      timestamptz
);
CREATE INDEX rollouts_deployment ON rollouts (deployment, created_at DESC);

-- Every step of a rollout, in execution order (seq). action is a serialized
-- hoist.v1.Step for agent steps (step_id, epoch and deadline are filled when
-- sent); result the serialized hoist.v1.StepResult.
CREATE TABLE rollout_steps (
  rollout_id  text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
  seq         integer NOT NULL,
  phase       integer NOT NULL,
  phase_name  text NOT NULL,
  batch       integer NOT NULL,
  step_id     text NOT NULL,
  kind        text NOT NULL,
  agent_id    text NOT NULL DEFAULT '',
  description text NOT NULL,
  action      bytea,
  timeout_ms  bigint NOT NULL,
  state       text NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
  attempts    integer NOT NULL DEFAULT 0,
  result      bytea,
  error       text NOT NULL DEFAULT '',
  started_at  timestamptz,
  finished_at timestamptz,
  PRIMARY KEY (rollout_id, seq),
  UNIQUE (step_id)
);

-- What watchers stream and `hoist status` replays.
CREATE TABLE rollout_events (
  id         bigserial PRIMARY KEY,
  rollout_id text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
  at         timestamptz NOT NULL DEFAULT now(),
  kind       text NOT NULL,
  step_id    text NOT NULL DEFAULT '',
  message    text NOT NULL DEFAULT '',
  detail     bytea
);
CREATE INDEX rollout_events_rollout ON rollout_events (rollout_id, id);

-- One rollout at a time per deployment. The row lives exactly as long as its
-- rollout is unfinished and is deleted in the transaction that finishes it,
-- so a crash never leaves it stale: the next leader resumes the rollout.
CREATE TABLE deploy_locks (
  deployment  text PRIMARY KEY REFERENCES deployments (name) ON DELETE CASCADE,
  rollout_id  text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
  owner       text NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now()
);

-- Backups taken before upgrades; artifacts is a serialized hoist.v1.BackupResult.
CREATE TABLE backups (
  id           text PRIMARY KEY,
  deployment   text NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
  rollout_id   text NOT NULL DEFAULT '',
  agent_id     text NOT NULL,
  version      text NOT NULL DEFAULT '',
  artifacts    bytea NOT NULL,
  size_bytes   bigint NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backups_deployment ON backups (deployment, created_at DESC);

-- The controller's first schema: leadership, agents and what runs on them,
-- and the audit log.

-- One row: the current leader and its epoch, the fencing token. The epoch
-- only ever grows; every leader-only write re-reads it FOR SHARE in its own
-- transaction and fails if it changed.
CREATE TABLE hoist_leader (
  id           smallint PRIMARY KEY CHECK (id = 1),
  epoch        bigint NOT NULL CHECK (epoch >= 0),
  leader_id    text,
  address      text,
  acquired_at  timestamptz,
  heartbeat_at timestamptz
);
INSERT INTO hoist_leader (id, epoch) VALUES (1, 0);

CREATE TABLE agents (
  id               text PRIMARY KEY,
  host_name        text NOT NULL,
  labels           jsonb NOT NULL DEFAULT '{}'::jsonb,
  agent_version    text NOT NULL,
  docker_version   text NOT NULL DEFAULT '',
  protocol_version integer NOT NULL,
  connected        boolean NOT NULL DEFAULT false,
  lost             boolean NOT NULL DEFAULT false,
  first_seen       timestamptz NOT NULL DEFAULT now(),
  last_heartbeat   timestamptz
);

-- The inventory each agent reports: managed containers on its host.
CREATE TABLE agent_containers (
  agent_id     text NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
  container_id text NOT NULL,
  name         text NOT NULL,
  deployment   text NOT NULL,
  service      text NOT NULL,
  slot         text NOT NULL CHECK (slot IN ('blue', 'green')),
  replica      integer NOT NULL CHECK (replica >= 0),
  image        text NOT NULL,
  image_digest text NOT NULL DEFAULT '',
  version      text NOT NULL DEFAULT '',
  state        text NOT NULL,
  health       text NOT NULL,
  exit_code    integer NOT NULL DEFAULT 0,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (agent_id, container_id)
);
CREATE INDEX agent_containers_deployment ON agent_containers (deployment, service);

CREATE TABLE audit_log (
  id         bigserial PRIMARY KEY,
  at         timestamptz NOT NULL DEFAULT now(),
  actor      text NOT NULL,
  action     text NOT NULL,
  deployment text,
  rollout_id text,
  outcome    text NOT NULL CHECK (outcome IN ('ok', 'failed', 'refused')),
  detail     text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_deployment ON audit_log (deployment, id DESC);

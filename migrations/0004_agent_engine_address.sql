-- Each agent reports its Docker Engine's ID and the address other hosts reach
-- it at, so that an operator can see that the hosts are distinct.
ALTER TABLE agents
  ADD COLUMN docker_engine_id text NOT NULL DEFAULT '',
  ADD COLUMN address text NOT NULL DEFAULT '';

-- Blue-green rollouts: which slot of a deployment the proxy sends traffic to,
-- and an operator's request to end a rollout's grace period early.

-- The slot whose containers serve. A blue-green rollout starts the new
-- version in the other slot and flips this when it switches the proxy;
-- `hoist cutover` flips it back and forth during the grace period. Rolling
-- rollouts replace the containers of this slot in place.
ALTER TABLE deployments
  ADD COLUMN live_slot text NOT NULL DEFAULT 'blue' CHECK (live_slot IN ('blue', 'green'));

-- Set by `hoist cutover --finish`; the leader's executor ends the grace
-- period when it sees it (any replica may set it, like cancel_requested).
ALTER TABLE rollouts
  ADD COLUMN finish_requested boolean NOT NULL DEFAULT false;

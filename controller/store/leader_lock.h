#pragma once

// The database side of leader election: a lock that one replica at a time
// holds, the epoch (fencing token) bumped on every win, and a way for a
// follower to hear a graceful release. controller/leader_election.h decides
// when to call what; PgLeaderLock does it in Postgres; tests script it.

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/leadership.h"

namespace hoist {

class LeaderLock {
 public:
  virtual ~LeaderLock() = default;

  // Opens the lock's session when it is not open.
  virtual absl::Status Connect() = 0;
  virtual bool connected() const = 0;
  // Ends the session; the database frees the lock if it was still held.
  virtual void Disconnect() = 0;

  // Tries to take the lock. When taken, bumps the epoch, records `me` (its
  // replica id and address) as the leader and returns the new epoch; returns
  // 0 when another replica holds it.
  virtual absl::StatusOr<uint64_t> TryAcquire(const LeaderInfo& me) = 0;
  // The leader as recorded in the database.
  virtual absl::StatusOr<LeaderInfo> ReadLeader() = 0;
  // Waits at most `timeout` for a leader's graceful release; returns early
  // when one is heard.
  virtual absl::Status AwaitRelease(absl::Duration timeout) = 0;
  // Proves the lock is still held by `me` with its epoch: FAILED_PRECONDITION
  // once another replica has taken a newer epoch, UNAVAILABLE when the
  // database does not answer.
  virtual absl::Status Heartbeat(const LeaderInfo& me) = 0;
  // Frees the lock and wakes the followers.
  virtual absl::Status Release() = 0;
};

}  // namespace hoist

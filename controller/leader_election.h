#pragma once

// Leader election among hoistd replicas that share one Postgres.
//
// The leader holds a session-level advisory lock on a dedicated connection and
// bumps the epoch row (the fencing token) each time it wins. It heartbeats on
// that connection and believes it leads only while its last heartbeat is
// younger than the lease. The lock session runs with a server-side
// idle_session_timeout longer than the lease, so a frozen or cut-off leader's
// session is ended by Postgres, which frees the lock, only after the leader
// has stopped believing it leads. Followers poll the try-lock with jitter and
// LISTEN for a graceful release, so that they take over at once.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "shared/clock.h"

namespace hoist {

// The advisory lock key of leadership ("hoistldr").
inline constexpr int64_t kLeaderLockKey = 0x686f6973746c6472;
// The channel a leader notifies when it steps down gracefully.
inline constexpr const char* kLeaderReleasedChannel = "hoist_leader_released";

struct LeaderElectionOptions {
  // Unique name of this replica, recorded in the leader row.
  std::string replica_id;
  // The gRPC address followers hand out as the leader's.
  std::string advertise_address;
  // How often a follower tries the lock (jittered by +-50%).
  absl::Duration poll_interval = absl::Milliseconds(200);
  // How often the leader proves it still holds the lock.
  absl::Duration heartbeat_interval = absl::Milliseconds(400);
  // The leader demotes itself when no heartbeat succeeded for this long.
  absl::Duration lease = absl::Milliseconds(2500);
  // Postgres ends the lock session after this much silence; must exceed the
  // lease so that a stale leader has always demoted itself first.
  absl::Duration idle_session_timeout = absl::Seconds(3);
};

struct LeaderInfo {
  std::string replica_id;  // empty when nobody has led yet
  std::string address;
  uint64_t epoch = 0;
};

class LeaderElector {
 public:
  // Called on the election thread when this replica wins (with the new epoch)
  // or loses (with 0) leadership.
  using RoleCallback = std::function<void(uint64_t epoch)>;

  LeaderElector(std::string conninfo, LeaderElectionOptions options, Clock* clock);
  // Stops the election thread, releasing leadership if held.
  ~LeaderElector();

  // Starts the election thread.
  void Start(RoleCallback on_change = nullptr);

  // Stops the thread. When leading, releases the lock and notifies the
  // followers so that one takes over at once.
  void Stop();

  // True while this replica holds the lock and its last heartbeat is within
  // the lease, by this process's clock.
  bool IsLeader() const;

  // The epoch this replica leads with, or 0 when it does not lead.
  uint64_t epoch() const;

  // The leader as last read from Postgres (this replica when it leads).
  LeaderInfo CurrentLeader() const;

  // Blocks until this replica leads or the timeout passes; for tests and tools.
  bool WaitForLeadership(absl::Duration timeout) const;

 private:
  void Run();
  void SetRole(bool leader, uint64_t epoch);

  const std::string conninfo_;
  const LeaderElectionOptions options_;
  Clock* const clock_;
  RoleCallback on_change_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_heartbeat_ok_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  LeaderInfo known_leader_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace hoist

#pragma once

// Leader election among hoistd replicas that share one database.
//
// The leader holds the lock (controller/store/leader_lock.h) and bumps the
// epoch, the fencing token, each time it wins. It heartbeats through the lock
// and believes it leads only while its last heartbeat is younger than the
// lease, by this process's clock; the database ends a silent lock session
// only after a longer timeout, so a frozen or cut-off leader has always
// stopped believing it leads before another can win. Followers try the lock
// with jitter and wait for a graceful release in between, so that they take
// over at once.
//
// The decisions are made one round at a time (Round) against the LeaderLock
// interface and the Clock, so they run on a fake of each in unit tests; the
// election thread only runs rounds and waits between them.

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/leadership.h"
#include "controller/store/leader_lock.h"
#include "shared/clock.h"

namespace hoist {

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
  // The database ends the lock session after this much silence; must exceed
  // the lease so that a stale leader has always demoted itself first.
  absl::Duration idle_session_timeout = absl::Seconds(3);
};

class LeaderElector final : public Leadership {
 public:
  // Called on the election thread when this replica wins (with the new epoch)
  // or loses (with 0) leadership.
  using RoleCallback = Observer;

  // Elects through Postgres (PgLeaderLock on `conninfo`).
  LeaderElector(std::string conninfo, LeaderElectionOptions options, Clock* clock);
  // Elects through `lock`.
  LeaderElector(std::unique_ptr<LeaderLock> lock, LeaderElectionOptions options, Clock* clock);
  // Stops the election thread, releasing leadership if held.
  ~LeaderElector() override;

  // The address recorded for followers to hand out, when it is known only
  // after the options were made (a port picked at bind time); before Start.
  void SetAdvertiseAddress(std::string address);

  // Starts the election thread; `on_change`, when given, is observed first.
  void Start(RoleCallback on_change = nullptr);

  // Stops the thread. When leading, releases the lock and notifies the
  // followers so that one takes over at once.
  void Stop();

  // True while this replica holds the lock and its last heartbeat is within
  // the lease, by this process's clock.
  bool IsLeader() const;

  // Leadership: the epoch is 0 as soon as the lease has run out, before the
  // election thread has noticed.
  uint64_t epoch() const override;
  LeaderInfo CurrentLeader() const override;
  void Observe(Observer observer) override;

  // Blocks until this replica leads or the timeout passes; for tests and tools.
  bool WaitForLeadership(absl::Duration timeout) const;

  // What the election does after a round: wait for a release notification
  // (a follower), or wait without one.
  struct Pause {
    bool await_release = false;
    absl::Duration wait;
  };
  // One round of the election: connect if needed, then try the lock (a
  // follower) or prove it still held (the leader). The election thread runs
  // these; unit tests run them by hand.
  Pause Round();
  // The end of the election: releases the lock when leading, disconnects.
  void Finish();

 private:
  void Run();
  Pause FollowerRound();
  Pause LeaderRound(uint64_t epoch, absl::Time last_ok);
  // Drops the lock's session (which frees a held lock) and demotes.
  void Drop(absl::string_view why);
  void SetRole(bool leader, uint64_t epoch);
  absl::Duration Jittered(absl::Duration d);
  bool Stopping() const;
  // This replica as the lock records it.
  LeaderInfo Me(uint64_t epoch) const;

  const LeaderElectionOptions options_;
  Clock* const clock_;
  const std::unique_ptr<LeaderLock> lock_;
  std::mt19937_64 rng_;  // the election thread's (or the test's) only

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_heartbeat_ok_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  LeaderInfo known_leader_ ABSL_GUARDED_BY(mu_);
  std::vector<Observer> observers_ ABSL_GUARDED_BY(mu_);
  std::string advertise_address_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace hoist

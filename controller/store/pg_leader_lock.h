#pragma once

// LeaderLock in Postgres: a session-level advisory lock on a dedicated
// connection, the epoch in the hoist_leader row, LISTEN/NOTIFY for a graceful
// release. The session runs with a server-side idle_session_timeout longer
// than the lease, so a frozen or cut-off leader's session is ended by
// Postgres, which frees the lock, only after that leader has stopped
// believing it leads.

#include <cstdint>
#include <memory>
#include <string>

#include <pqxx/pqxx>

#include "absl/time/time.h"
#include "controller/store/leader_lock.h"

namespace hoist {

// The advisory lock key of leadership ("hoistldr").
inline constexpr int64_t kLeaderLockKey = 0x686f6973746c6472;
// The channel a leader notifies when it steps down gracefully.
inline constexpr const char* kLeaderReleasedChannel = "hoist_leader_released";

struct PgLeaderLockOptions {
  // Names the lock's session (application_name).
  std::string replica_id;
  // The elector's lease: a heartbeat queued behind a writer gives up after
  // half of it.
  absl::Duration lease = absl::Milliseconds(2500);
  // Postgres ends the lock session after this much silence (> lease).
  absl::Duration idle_session_timeout = absl::Seconds(3);
};

class PgLeaderLock final : public LeaderLock {
 public:
  PgLeaderLock(std::string conninfo, PgLeaderLockOptions options);
  ~PgLeaderLock() override;

  absl::Status Connect() override;
  bool connected() const override { return conn_ != nullptr; }
  void Disconnect() override;
  absl::StatusOr<uint64_t> TryAcquire(const LeaderInfo& me) override;
  absl::StatusOr<LeaderInfo> ReadLeader() override;
  absl::Status AwaitRelease(absl::Duration timeout) override;
  absl::Status Heartbeat(const LeaderInfo& me) override;
  absl::Status Release() override;

 private:
  class ReleaseListener;

  const std::string conninfo_;
  const PgLeaderLockOptions options_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<ReleaseListener> listener_;
};

}  // namespace hoist

#pragma once

// Applies the controller's schema migrations to Postgres: each in one
// transaction with its bookkeeping (or, opted in, as one idempotent statement
// outside a transaction), tracked with checksums, and kept to one runner at a
// time by a session-level advisory try-lock polled until a deadline.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/store/migration.h"
#include "shared/clock.h"

namespace hoist {

// The advisory lock key that keeps migration runners apart ("hoistmig").
inline constexpr int64_t kMigrationLockKey = 0x686f6973746d6967;

struct MigrateReport {
  std::vector<int> applied_now;  // versions applied by this call
  int already_applied = 0;       // versions that were there before
};

class PgMigrator {
 public:
  struct Options {
    // Recorded in the tracking table: who applied each migration.
    std::string applied_by = "hoistd";
    // How long to keep trying for the lock while another runner holds it.
    absl::Duration lock_timeout = absl::Seconds(60);
    absl::Duration lock_poll = absl::Milliseconds(100);
  };

  PgMigrator(std::string conninfo, std::vector<Migration> migrations, Options options, Clock* clock);

  // Creates the tracking table if needed, checks what is recorded against the
  // files (see PendingMigrations) and applies what is pending, in order.
  // Running it again is a no-op. A failing migration is rolled back, recorded
  // as failed with Postgres' message, and returned as an error naming its file;
  // the migrations before it stay applied.
  absl::StatusOr<MigrateReport> Migrate();

  // What the tracking table records, by version. Empty when it does not exist.
  absl::StatusOr<std::vector<AppliedMigration>> Applied();

  // The checks of Migrate without applying anything: OK when the database is
  // consistent with this binary and nothing is pending.
  absl::Status Verify();

  // The migrations Migrate would apply, without running any.
  absl::StatusOr<std::vector<Migration>> Plan();

  // Clears the record of a failed or running migration so that the next
  // Migrate runs it again. Refuses applied ones.
  absl::Status Retry(int version);

  const std::vector<Migration>& migrations() const { return migrations_; }

 private:
  std::string conninfo_;
  std::vector<Migration> migrations_;
  Options options_;
  Clock* clock_;
};

}  // namespace hoist

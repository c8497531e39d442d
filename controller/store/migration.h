#pragma once

// Migrations of the controller's own schema as data: parsed from
// NNNN_name.sql files, checksummed, and compared with what a database
// records. Pure logic; the Postgres side is PgMigrator.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/store/embedded_migrations.h"

namespace hoist {

struct Migration {
  int version = 0;           // NNNN
  std::string name;          // the part after NNNN_, without .sql
  std::string file_name;     // NNNN_name.sql
  std::string sql;
  std::string checksum;      // hex sha256 of the file, CRLF normalised to LF
  bool no_transaction = false;  // first line is "-- hoist:no-transaction"
};

// The first line that puts a migration outside a transaction.
inline constexpr absl::string_view kNoTransactionMarker = "-- hoist:no-transaction";

// Hex sha256 of `content` with "\r\n" normalised to "\n".
std::string MigrationChecksum(absl::string_view content);

// Parses and orders migration files. Refuses names not shaped NNNN_name.sql,
// duplicate versions, empty files and no-transaction files holding more than
// one statement, naming the file.
absl::StatusOr<std::vector<Migration>> ParseMigrations(const std::vector<EmbeddedFile>& files);

// What the tracking table says about one version.
enum class MigrationState { kRunning, kApplied, kFailed };

struct AppliedMigration {
  int version = 0;
  std::string name;
  std::string checksum;
  MigrationState state = MigrationState::kApplied;
  absl::Time started_at;
  absl::Time finished_at;
  int64_t duration_ms = 0;
  std::string applied_by;
  std::string error;
};

absl::string_view MigrationStateName(MigrationState s);
absl::StatusOr<MigrationState> ParseMigrationState(absl::string_view s);

// Compares the files with the tracking table and returns the pending
// migrations in order. FAILED_PRECONDITION, with what to do, when the
// database records a version this binary does not know (a newer hoistd ran),
// a checksum that differs from its file, a migration left failed or running,
// or a pending migration older than an applied one.
absl::StatusOr<std::vector<Migration>> PendingMigrations(
    const std::vector<Migration>& known, const std::vector<AppliedMigration>& applied);

}  // namespace hoist

#include "controller/store/pg_migrator.h"

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "shared/pg.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

constexpr const char* kCreateTrackingTable = R"sql(
CREATE TABLE IF NOT EXISTS hoist_schema_migrations (
  version     integer PRIMARY KEY,
  name        text NOT NULL,
  checksum    text NOT NULL,
  state       text NOT NULL CHECK (state IN ('running', 'applied', 'failed')),
  started_at  timestamptz NOT NULL,
  finished_at timestamptz,
  duration_ms bigint,
  applied_by  text NOT NULL,
  error       text
))sql";

std::string PgError(const std::exception& e) {
  return std::string(absl::StripTrailingAsciiWhitespace(e.what()));
}

absl::Time ToTime(const pqxx::field& f) {
  if (f.is_null()) return absl::InfinitePast();
  return absl::FromUnixMicros(static_cast<int64_t>(f.as<double>() * 1e6));
}

absl::StatusOr<std::vector<AppliedMigration>> ReadApplied(pqxx::connection& conn) {
  std::vector<AppliedMigration> out;
  try {
    pqxx::nontransaction tx(conn);
    if (tx.exec1("SELECT to_regclass('hoist_schema_migrations') IS NULL")[0].as<bool>()) return out;
    pqxx::result r = tx.exec(
        "SELECT version, name, checksum, state, extract(epoch FROM started_at), "
        "extract(epoch FROM finished_at), coalesce(duration_ms, 0), applied_by, coalesce(error, '') "
        "FROM hoist_schema_migrations ORDER BY version");
    for (const auto& row : r) {
      AppliedMigration a;
      a.version = row[0].as<int>();
      a.name = row[1].as<std::string>();
      a.checksum = row[2].as<std::string>();
      auto state = ParseMigrationState(row[3].as<std::string>());
      if (!state.ok()) return state.status();
      a.state = *state;
      a.started_at = ToTime(row[4]);
      a.finished_at = ToTime(row[5]);
      a.duration_ms = row[6].as<int64_t>();
      a.applied_by = row[7].as<std::string>();
      a.error = row[8].as<std::string>();
      out.push_back(std::move(a));
    }
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(absl::StrCat("reading the migration table: ", PgError(e)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("reading the migration table: ", PgError(e)));
  }
  return out;
}

// Holds the session-level migration lock on `conn` until destroyed.
class MigrationLock {
 public:
  explicit MigrationLock(pqxx::connection& conn) : conn_(conn) {}
  ~MigrationLock() {
    if (!held_) return;
    try {
      pqxx::nontransaction tx(conn_);
      tx.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
    } catch (const std::exception&) {
      // The session ending releases it anyway.
    }
  }
  // Polls pg_try_advisory_lock until it succeeds or the timeout passes; never
  // blocks inside Postgres, so a stuck runner cannot wedge this one.
  absl::Status Acquire(Clock* clock, absl::Duration timeout, absl::Duration poll) {
    const absl::Time deadline = clock->Now() + timeout;
    bool logged = false;
    while (true) {
      try {
        pqxx::nontransaction tx(conn_);
        if (tx.exec_params1("SELECT pg_try_advisory_lock($1)", kMigrationLockKey)[0].as<bool>()) {
          held_ = true;
          return absl::OkStatus();
        }
      } catch (const std::exception& e) {
        return absl::UnavailableError(absl::StrCat("taking the migration lock: ", PgError(e)));
      }
      if (clock->Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "another hoistd kept the migration lock for ", absl::FormatDuration(timeout),
            "; check for a stuck `hoistd migrate` in pg_stat_activity"));
      }
      if (!logged) {
        spdlog::info("another hoistd is migrating the schema; waiting up to {}", absl::FormatDuration(timeout));
        logged = true;
      }
      clock->SleepFor(poll);
    }
  }

 private:
  pqxx::connection& conn_;
  bool held_ = false;
};

}  // namespace

PgMigrator::PgMigrator(std::string conninfo, std::vector<Migration> migrations, Options options,
                       Clock* clock)
    : conninfo_(std::move(conninfo)),
      migrations_(std::move(migrations)),
      options_(std::move(options)),
      clock_(clock) {}

absl::StatusOr<std::vector<AppliedMigration>> PgMigrator::Applied() {
  auto conn = PgConnect(conninfo_, {.application_name = "hoistd-migrate"});
  if (!conn.ok()) return conn.status();
  return ReadApplied(**conn);
}

absl::StatusOr<std::vector<Migration>> PgMigrator::Plan() {
  auto applied = Applied();
  if (!applied.ok()) return applied.status();
  return PendingMigrations(migrations_, *applied);
}

absl::Status PgMigrator::Verify() {
  auto pending = Plan();
  if (!pending.ok()) return pending.status();
  if (!pending->empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        pending->size(), " migration(s) pending, the first ", pending->front().file_name,
        "; start hoistd or run `hoistd migrate apply` to apply them"));
  }
  return absl::OkStatus();
}

absl::Status PgMigrator::Retry(int version) {
  auto conn = PgConnect(conninfo_, {.application_name = "hoistd-migrate"});
  if (!conn.ok()) return conn.status();
  MigrationLock lock(**conn);
  if (auto s = lock.Acquire(clock_, options_.lock_timeout, options_.lock_poll); !s.ok()) return s;
  try {
    pqxx::work tx(**conn);
    pqxx::result r = tx.exec_params(
        "DELETE FROM hoist_schema_migrations WHERE version = $1 AND state IN ('failed', 'running') "
        "RETURNING version",
        version);
    if (r.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("migration ", version, " has no failed or running record to clear"));
    }
    tx.commit();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("clearing migration ", version, ": ", PgError(e)));
  }
  return absl::OkStatus();
}

absl::StatusOr<MigrateReport> PgMigrator::Migrate() {
  auto conn_or = PgConnect(conninfo_, {.application_name = "hoistd-migrate"});
  if (!conn_or.ok()) return conn_or.status();
  pqxx::connection& conn = **conn_or;
  MigrationLock lock(conn);
  if (auto s = lock.Acquire(clock_, options_.lock_timeout, options_.lock_poll); !s.ok()) return s;
  try {
    pqxx::nontransaction tx(conn);
    tx.exec0(kCreateTrackingTable);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("creating the migration table: ", PgError(e)));
  }
  // Read under the lock: another runner may have applied everything meanwhile.
  auto applied = ReadApplied(conn);
  if (!applied.ok()) return applied.status();
  auto pending = PendingMigrations(migrations_, *applied);
  if (!pending.ok()) return pending.status();

  MigrateReport report;
  report.already_applied = static_cast<int>(applied->size());
  for (const Migration& m : *pending) {
    const absl::Time start = clock_->Now();
    spdlog::info("applying migration {}{}", m.file_name, m.no_transaction ? " (no transaction)" : "");
    std::string failure;
    try {
      if (m.no_transaction) {
        pqxx::nontransaction tx(conn);
        tx.exec_params0(
            "INSERT INTO hoist_schema_migrations (version, name, checksum, state, started_at, applied_by) "
            "VALUES ($1, $2, $3, 'running', now(), $4) "
            "ON CONFLICT (version) DO UPDATE SET state = 'running', started_at = now(), "
            "applied_by = EXCLUDED.applied_by",
            m.version, m.name, m.checksum, options_.applied_by);
        tx.exec(m.sql);
        tx.exec_params0(
            "UPDATE hoist_schema_migrations SET state = 'applied', finished_at = now(), "
            "duration_ms = $2 WHERE version = $1",
            m.version, absl::ToInt64Milliseconds(clock_->Now() - start));
      } else {
        pqxx::work tx(conn);
        tx.exec(m.sql);
        tx.exec_params0(
            "INSERT INTO hoist_schema_migrations "
            "(version, name, checksum, state, started_at, finished_at, duration_ms, applied_by) "
            "VALUES ($1, $2, $3, 'applied', now(), clock_timestamp(), $4, $5)",
            m.version, m.name, m.checksum, absl::ToInt64Milliseconds(clock_->Now() - start),
            options_.applied_by);
        tx.commit();
      }
    } catch (const pqxx::in_doubt_error& e) {
      return absl::UnavailableError(absl::StrCat(
          "migration ", m.file_name, ": the connection was lost during COMMIT, so whether it applied is unknown; "
          "`hoistd migrate status` tells once the database is reachable: ", PgError(e)));
    } catch (const pqxx::broken_connection& e) {
      // A transactional migration died with its transaction and runs again at
      // the next start; a no-transaction one left "running" is run again too.
      return absl::UnavailableError(absl::StrCat("migration ", m.file_name, ": connection lost: ", PgError(e),
                                                 "; the next start runs it again"));
    } catch (const std::exception& e) {
      failure = PgError(e);
    }
    if (!failure.empty()) {
      try {
        pqxx::work tx(conn);
        tx.exec_params0(
            "INSERT INTO hoist_schema_migrations "
            "(version, name, checksum, state, started_at, finished_at, duration_ms, applied_by, error) "
            "VALUES ($1, $2, $3, 'failed', now(), now(), $4, $5, $6) "
            "ON CONFLICT (version) DO UPDATE SET state = 'failed', finished_at = now(), error = EXCLUDED.error",
            m.version, m.name, m.checksum, absl::ToInt64Milliseconds(clock_->Now() - start),
            options_.applied_by, failure);
        tx.commit();
      } catch (const std::exception& e) {
        spdlog::error("could not record the failure of {}: {}", m.file_name, PgError(e));
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", m.file_name, " failed and was rolled back: ", failure,
          m.version > 1 ? "; the migrations before it stay applied" : ""));
    }
    report.applied_now.push_back(m.version);
  }
  return report;
}

}  // namespace hoist

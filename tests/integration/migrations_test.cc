// The schema migrator against a real Postgres.

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/synchronization/mutex.h"

#include "controller/store/pg_migrator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/clock.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fixtures/postgres_test.h"

namespace hoist::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class MigrationsTest : public PostgresTest {
 protected:
  PgMigrator Migrator(const std::vector<EmbeddedFile>& files, std::string who = "test") {
    auto ms = ParseMigrations(files);
    EXPECT_TRUE(ms.ok()) << ms.status();
    return PgMigrator(url_, ms.ok() ? *ms : std::vector<Migration>{}, {.applied_by = who}, RealClock::Get());
  }

  int64_t Count(const std::string& sql) {
    pqxx::connection c(url_);
    pqxx::nontransaction tx(c);
    return tx.exec1(sql)[0].as<int64_t>();
  }

  bool TableExists(const std::string& name) {
    return Count("SELECT count(*) FROM pg_tables WHERE tablename = '" + name + "'") == 1;
  }

};

const std::vector<EmbeddedFile> kV1 = {{"0001_items.sql", "CREATE TABLE items (id int PRIMARY KEY, v text);\n"}};
const std::vector<EmbeddedFile> kV3 = {
    {"0001_items.sql", "CREATE TABLE items (id int PRIMARY KEY, v text);\n"},
    {"0002_seed.sql", "INSERT INTO items VALUES (1, 'one');\n"},
    {"0003_index.sql", "-- hoist:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_v ON items (v);\n"}};

TEST_F(MigrationsTest, FreshInstallOfTheShippedSchemaThenNoOp) {
  auto ms = ParseMigrations(EmbeddedMigrationFiles());
  ASSERT_TRUE(ms.ok());
  PgMigrator m(url_, *ms, {.applied_by = "hoistd-1"}, RealClock::Get());
  auto first = m.Migrate();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->applied_now.size(), ms->size());
  EXPECT_TRUE(TableExists("hoist_leader"));
  EXPECT_EQ(Count("SELECT epoch FROM hoist_leader"), 0);
  auto applied = m.Applied();
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(applied->front().applied_by, "hoistd-1");
  EXPECT_EQ(applied->front().checksum, ms->front().checksum);
  EXPECT_EQ(applied->front().state, MigrationState::kApplied);

  auto again = m.Migrate();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->applied_now.empty()) << "a re-run must be a no-op";
  EXPECT_TRUE(m.Verify().ok());
}

TEST_F(MigrationsTest, UpgradeAcrossSeveralVersions) {
  ASSERT_TRUE(Migrator(kV1).Migrate().ok());
  PgMigrator v3 = Migrator(kV3);
  auto plan = v3.Plan();
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ(plan->front().file_name, "0002_seed.sql");
  EXPECT_EQ(v3.Verify().code(), absl::StatusCode::kFailedPrecondition);
  auto r = v3.Migrate();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->applied_now, ElementsAre(2, 3));
  EXPECT_EQ(r->already_applied, 1);
  EXPECT_EQ(Count("SELECT count(*) FROM items"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_v'"), 1);
  EXPECT_TRUE(v3.Verify().ok());
}

TEST_F(MigrationsTest, FailingMigrationRollsBackRecordsAndKeepsEarlierOnes) {
  std::vector<EmbeddedFile> files = kV1;
  // Creates a table, then fails: the table must not survive.
  files.push_back({"0002_broken.sql", "CREATE TABLE half (a int);\nINSERT INTO nowhere VALUES (1);\n"});
  PgMigrator m = Migrator(files);
  auto r = m.Migrate();
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("0002_broken.sql failed and was rolled back"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("nowhere"));
  EXPECT_TRUE(TableExists("items")) << "0001 must stay applied";
  EXPECT_FALSE(TableExists("half")) << "the failed migration's schema change must be rolled back";
  EXPECT_EQ(Count("SELECT count(*) FROM hoist_schema_migrations WHERE version = 2 AND state = 'failed' "
                  "AND error LIKE '%nowhere%'"),
            1);
  // Start-up refuses until the operator clears it.
  auto refused = m.Migrate();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("hoistd migrate retry 2"));

  // The fixed file runs after a retry.
  files.back().content = "CREATE TABLE half (a int);\n";
  PgMigrator fixed = Migrator(files);
  ASSERT_TRUE(fixed.Retry(2).ok());
  auto ok = fixed.Migrate();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->applied_now, ElementsAre(2));
  EXPECT_TRUE(TableExists("half"));
}

TEST_F(MigrationsTest, ChecksumMismatchIsRefused) {
  ASSERT_TRUE(Migrator(kV1).Migrate().ok());
  std::vector<EmbeddedFile> edited = {{"0001_items.sql", "CREATE TABLE items (id bigint PRIMARY KEY);\n"}};
  PgMigrator m = Migrator(edited);
  auto r = m.Migrate();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("must never change"));
  EXPECT_EQ(m.Verify().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(MigrationsTest, UnknownNewerVersionIsRefused) {
  ASSERT_TRUE(Migrator(kV3).Migrate().ok());
  auto r = Migrator(kV1).Migrate();
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("newer hoistd"));
}

TEST_F(MigrationsTest, ConcurrentRunnersApplyEachMigrationOnce) {
  // 0002 appends a row: applied twice, the table would hold two rows (or the
  // tracking insert would fail).
  const std::vector<EmbeddedFile> files = {
      {"0001_log.sql", "CREATE TABLE applied_log (at timestamptz DEFAULT clock_timestamp());\n"},
      {"0002_append.sql", "INSERT INTO applied_log DEFAULT VALUES;\nSELECT pg_sleep(0.3);\n"}};
  constexpr int kRunners = 4;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::atomic<int> applied_total{0};
  absl::Mutex mu;
  std::vector<std::string> errors;
  for (int i = 0; i < kRunners; ++i) {
    threads.emplace_back([&, i] {
      auto ms = ParseMigrations(files);
      PgMigrator m(url_, *ms, {.applied_by = "runner-" + std::to_string(i)}, RealClock::Get());
      auto r = m.Migrate();
      if (r.ok()) {
        ++ok;
        applied_total += static_cast<int>(r->applied_now.size());
      } else {
        absl::MutexLock lock(&mu);
        errors.push_back(r.status().ToString());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kRunners) << ::testing::PrintToString(errors);
  EXPECT_EQ(applied_total.load(), 2) << "each migration applied by exactly one runner";
  EXPECT_EQ(Count("SELECT count(*) FROM applied_log"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM hoist_schema_migrations WHERE state = 'applied'"), 2);
}

TEST_F(MigrationsTest, LockHeldElsewhereTimesOutWithoutBlocking) {
  pqxx::connection holder(url_);
  pqxx::nontransaction tx(holder);
  ASSERT_TRUE(tx.exec_params1("SELECT pg_try_advisory_lock($1)", kMigrationLockKey)[0].as<bool>());
  auto ms = ParseMigrations(kV1);
  // A fake clock: the minute-long deadline passes without a minute of waiting,
  // which also shows the wait is polled, never blocked inside Postgres.
  FakeClock clock;
  const absl::Time start = clock.Now();
  PgMigrator m(url_, *ms, {.applied_by = "t", .lock_timeout = absl::Minutes(1)}, &clock);
  auto r = m.Migrate();
  EXPECT_GE(clock.Now() - start, absl::Minutes(1));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("migration lock"));
  EXPECT_FALSE(TableExists("items"));
}

}  // namespace
}  // namespace hoist::testing

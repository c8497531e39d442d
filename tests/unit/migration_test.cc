#include "controller/store/migration.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(MigrationParseTest, OrdersByVersionAndReadsTheMarker) {
  auto ms = ParseMigrations({{"0002_index.sql", "-- hoist:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n"},
                             {"0001_initial.sql", "CREATE TABLE t (a int);\n"}});
  ASSERT_TRUE(ms.ok()) << ms.status();
  ASSERT_EQ(ms->size(), 2u);
  EXPECT_EQ((*ms)[0].version, 1);
  EXPECT_EQ((*ms)[0].name, "initial");
  EXPECT_FALSE((*ms)[0].no_transaction);
  EXPECT_EQ((*ms)[1].version, 2);
  EXPECT_TRUE((*ms)[1].no_transaction);
}

TEST(MigrationParseTest, ChecksumIgnoresLineEndingsOnly) {
  EXPECT_EQ(MigrationChecksum("a\r\nb\n"), MigrationChecksum("a\nb\n"));
  EXPECT_NE(MigrationChecksum("a\nb\n"), MigrationChecksum("a\nb \n"));
  // sha256("") is well known.
  EXPECT_EQ(MigrationChecksum(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(MigrationParseTest, RefusesBadFilesNamingThem) {
  struct Case {
    const char* name;
    const char* content;
    const char* why;
  };
  for (const Case& c : {Case{"1_x.sql", "SELECT 1;", "NNNN_name.sql"}, Case{"0001_x.txt", "SELECT 1;", ".sql"},
                        Case{"00a1_x.sql", "SELECT 1;", "4-digit"}, Case{"0000_x.sql", "SELECT 1;", "4-digit"},
                        Case{"0001_Bad-Name.sql", "SELECT 1;", "a-z, 0-9"},
                        Case{"0001_empty.sql", "-- nothing\n\n", "no SQL"},
                        Case{"0001_two.sql", "-- hoist:no-transaction\nSELECT 1;\nSELECT 2;\n", "exactly one"}}) {
    auto ms = ParseMigrations({{c.name, c.content}});
    ASSERT_FALSE(ms.ok()) << "accepted " << c.name;
    EXPECT_THAT(Msg(ms.status()), HasSubstr(c.name));
    EXPECT_THAT(Msg(ms.status()), HasSubstr(c.why));
  }
  auto dup = ParseMigrations({{"0001_a.sql", "SELECT 1;"}, {"0001_b.sql", "SELECT 1;"}});
  EXPECT_THAT(Msg(dup.status()), HasSubstr("used twice"));
}

std::vector<Migration> Three() {
  return *ParseMigrations({{"0001_a.sql", "SELECT 1;"}, {"0002_b.sql", "SELECT 2;"}, {"0003_c.sql", "SELECT 3;"}});
}

AppliedMigration Applied(const Migration& m, MigrationState state = MigrationState::kApplied) {
  AppliedMigration a;
  a.version = m.version;
  a.name = m.name;
  a.checksum = m.checksum;
  a.state = state;
  return a;
}

TEST(PendingMigrationsTest, ReturnsWhatIsNotApplied) {
  auto known = Three();
  auto pending = PendingMigrations(known, {Applied(known[0])});
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].version, 2);
  EXPECT_TRUE(PendingMigrations(known, {Applied(known[0]), Applied(known[1]), Applied(known[2])})->empty());
}

TEST(PendingMigrationsTest, RefusesANewerDatabase) {
  auto known = Three();
  AppliedMigration future;
  future.version = 9;
  future.name = "from_the_future";
  auto p = PendingMigrations(known, {Applied(known[0]), future});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(p.status()), HasSubstr("newer hoistd"));
  EXPECT_THAT(Msg(p.status()), HasSubstr("from_the_future"));
}

TEST(PendingMigrationsTest, RefusesAChangedFile) {
  auto known = Three();
  AppliedMigration changed = Applied(known[1]);
  changed.checksum = "0000000000000000";
  auto p = PendingMigrations(known, {Applied(known[0]), changed});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(p.status()), HasSubstr("0002_b.sql"));
  EXPECT_THAT(Msg(p.status()), HasSubstr("must never change"));
}

TEST(PendingMigrationsTest, RefusesFailedOrRunningWithTheWayOut) {
  auto known = Three();
  for (MigrationState st : {MigrationState::kFailed, MigrationState::kRunning}) {
    AppliedMigration a = Applied(known[1], st);
    a.error = "syntax error at or near \"TABEL\"";
    auto p = PendingMigrations(known, {Applied(known[0]), a});
    ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(Msg(p.status()), HasSubstr(absl::StrCat("was left ", MigrationStateName(st))));
    EXPECT_THAT(Msg(p.status()), HasSubstr("hoistd migrate retry 2"));
  }
}

TEST(PendingMigrationsTest, RerunsAnInterruptedNoTransactionMigration) {
  auto known = *ParseMigrations({{"0001_a.sql", "SELECT 1;"},
                                 {"0002_idx.sql", "-- hoist:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n"}});
  auto p = PendingMigrations(known, {Applied(known[0]), Applied(known[1], MigrationState::kRunning)});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 1u);
  EXPECT_EQ((*p)[0].version, 2);
}

TEST(PendingMigrationsTest, RefusesAGapBelowAnAppliedVersion) {
  auto known = Three();
  auto p = PendingMigrations(known, {Applied(known[0]), Applied(known[2])});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(p.status()), HasSubstr("0002_b.sql is not applied"));
}

TEST(EmbeddedMigrationsTest, TheShippedSchemaParses) {
  auto ms = ParseMigrations(EmbeddedMigrationFiles());
  ASSERT_TRUE(ms.ok()) << ms.status();
  ASSERT_FALSE(ms->empty());
  EXPECT_EQ(ms->front().file_name, "0001_initial.sql");
}

}  // namespace
}  // namespace hoist

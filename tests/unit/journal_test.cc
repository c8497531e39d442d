#include "agent/journal.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <string>

#include "absl/time/clock.h"
#include "agent/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::MakeOwnedTempDir("hoist-journal-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
  }
  void TearDown() override { testing::RemoveTree(dir_); }

  std::unique_ptr<StepJournal> Open() {
    auto journal = StepJournal::Open(dir_ + "/state");
    EXPECT_TRUE(journal.ok()) << journal.status();
    return journal.ok() ? std::move(*journal) : nullptr;
  }

  static hoist::v1::Step StartStep(const std::string& id) {
    hoist::v1::Step step;
    step.set_step_id(id);
    step.set_epoch(3);
    auto* start = step.mutable_start_instance();
    start->mutable_instance()->set_deployment("shop");
    start->mutable_instance()->set_service("api");
    start->set_version("1.5.0");
    start->mutable_spec()->set_image("registry.local/shop/api:1.5.0");
    (*start->mutable_spec()->mutable_env())["DB_PASSWORD"] = "s3cret-value-in-journal";
    return step;
  }

  static hoist::v1::StepResult ResultFor(const std::string& id, absl::Time finished) {
    hoist::v1::StepResult result;
    result.set_step_id(id);
    result.set_epoch(3);
    result.set_outcome(hoist::v1::STEP_OUTCOME_SUCCEEDED);
    result.mutable_start()->set_container_id("abc123");
    result.mutable_finished_at()->set_seconds(absl::ToUnixSeconds(finished));
    return result;
  }

  std::string dir_;
};

TEST_F(JournalTest, StartedStepIsInterruptedUntilItsResultIsRecorded) {
  auto journal = Open();
  ASSERT_NE(journal, nullptr);
  absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  ASSERT_TRUE(journal->RecordStarted(StartStep("s-1"), t0).ok());

  auto entry = journal->Lookup("s-1");
  ASSERT_TRUE(entry.ok()) << entry.status();
  ASSERT_TRUE(entry->has_value());
  EXPECT_TRUE((*entry)->interrupted());
  EXPECT_EQ((*entry)->started_at, t0);
  EXPECT_EQ((*entry)->step.start_instance().version(), "1.5.0");

  ASSERT_TRUE(journal->RecordResult(ResultFor("s-1", t0 + absl::Seconds(5))).ok());
  // A new journal on the same directory sees what the old one wrote.
  journal.reset();
  journal = Open();
  ASSERT_NE(journal, nullptr);
  entry = journal->Lookup("s-1");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  ASSERT_FALSE((*entry)->interrupted());
  EXPECT_EQ((*entry)->result->start().container_id(), "abc123");
  auto none = journal->Lookup("never-seen");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(JournalTest, EnvValuesNeverReachTheDisk) {
  auto journal = Open();
  ASSERT_NE(journal, nullptr);
  ASSERT_TRUE(journal->RecordStarted(StartStep("s-env"), absl::Now()).ok());
  auto raw = ReadFileToString(dir_ + "/state/journal/s-env.step");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_THAT(*raw, Not(HasSubstr("s3cret-value-in-journal")));
  auto entry = journal->Lookup("s-env");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  // The key stays, so that a person reading the journal sees what was set.
  EXPECT_EQ((*entry)->step.start_instance().spec().env().count("DB_PASSWORD"), 1u);
}

TEST_F(JournalTest, InterruptedListsOnlyStepsWithoutResults) {
  auto journal = Open();
  ASSERT_NE(journal, nullptr);
  absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  ASSERT_TRUE(journal->RecordStarted(StartStep("done"), t0).ok());
  ASSERT_TRUE(journal->RecordResult(ResultFor("done", t0)).ok());
  ASSERT_TRUE(journal->RecordStarted(StartStep("open-b"), t0 + absl::Seconds(2)).ok());
  ASSERT_TRUE(journal->RecordStarted(StartStep("open-a"), t0 + absl::Seconds(1)).ok());
  auto open = journal->Interrupted();
  ASSERT_TRUE(open.ok()) << open.status();
  ASSERT_EQ(open->size(), 2u);
  EXPECT_EQ((*open)[0].step.step_id(), "open-a") << "oldest first";
  EXPECT_EQ((*open)[1].step.step_id(), "open-b");
}

TEST_F(JournalTest, HigherEpochIsPersistedAndLowerRefusedNamingBoth) {
  auto journal = Open();
  ASSERT_NE(journal, nullptr);
  EXPECT_EQ(journal->highest_epoch(), 0u);
  ASSERT_TRUE(journal->AcceptEpoch(7).ok());
  ASSERT_TRUE(journal->AcceptEpoch(7).ok()) << "the same epoch is accepted again";
  journal.reset();
  journal = Open();
  ASSERT_NE(journal, nullptr);
  EXPECT_EQ(journal->highest_epoch(), 7u);
  absl::Status stale = journal->AcceptEpoch(6);
  EXPECT_TRUE(absl::IsFailedPrecondition(stale)) << stale;
  EXPECT_THAT(std::string(stale.message()), HasSubstr("epoch 6"));
  EXPECT_THAT(std::string(stale.message()), HasSubstr("epoch 7"));
}

TEST_F(JournalTest, CorruptEpochFileIsAnErrorNotAReset) {
  ASSERT_TRUE(MakeDirs(dir_ + "/state").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/state/epoch", "not a number").ok());
  auto journal = StepJournal::Open(dir_ + "/state");
  ASSERT_FALSE(journal.ok());
  EXPECT_TRUE(absl::IsDataLoss(journal.status())) << journal.status();
}

TEST_F(JournalTest, PruneRemovesOnlyEntriesOlderThanKeep) {
  auto journal = Open();
  ASSERT_NE(journal, nullptr);
  absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  ASSERT_TRUE(journal->RecordStarted(StartStep("old"), now - absl::Hours(24 * 9)).ok());
  ASSERT_TRUE(journal->RecordResult(ResultFor("old", now - absl::Hours(24 * 9))).ok());
  ASSERT_TRUE(journal->RecordStarted(StartStep("recent"), now - absl::Hours(24)).ok());
  ASSERT_TRUE(journal->RecordResult(ResultFor("recent", now - absl::Hours(24))).ok());
  ASSERT_TRUE(journal->RecordStarted(StartStep("old-open"), now - absl::Hours(24 * 8)).ok());

  auto removed = journal->Prune(now, absl::Hours(24 * 7));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 2);
  EXPECT_FALSE(journal->Lookup("old")->has_value());
  EXPECT_FALSE(journal->Lookup("old-open")->has_value());
  EXPECT_TRUE(journal->Lookup("recent")->has_value());
  auto names = ListDir(dir_ + "/state/journal");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 2u) << "recent.step and recent.result remain, no temp files";
}

TEST_F(JournalTest, StepIdsWithAnyCharactersRoundTrip) {
  auto journal = Open();
  ASSERT_NE(journal, nullptr);
  std::string odd = "rollout/42 step:3 ../..";
  std::string long_id(128, 'x');
  for (const std::string& id : {odd, long_id}) {
    ASSERT_TRUE(journal->RecordStarted(StartStep(id), absl::Now()).ok()) << id;
    auto entry = journal->Lookup(id);
    ASSERT_TRUE(entry.ok() && entry->has_value()) << id;
    EXPECT_EQ((*entry)->step.step_id(), id);
  }
  EXPECT_EQ(StepJournal::FileKey(odd).find('/'), std::string::npos);
  EXPECT_NE(StepJournal::FileKey("a/b"), StepJournal::FileKey("a_b"));
}

}  // namespace
}  // namespace hoist::agent

namespace hoist::agent {
namespace {

TEST(JournalPruneFilesTest, RemovesFilesWrittenBeforeTheCutoffOnly) {
  auto dir = testing::MakeOwnedTempDir("hoist-prune-files");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteFileAtomic(*dir + "/old.log", "old").ok());
  ASSERT_TRUE(WriteFileAtomic(*dir + "/new.log", "new").ok());
  struct timespec times[2] = {{1000, 0}, {1000, 0}};  // written in 1970
  ASSERT_EQ(utimensat(AT_FDCWD, (*dir + "/old.log").c_str(), times, 0), 0);
  auto removed = StepJournal::PruneFilesBefore(*dir, absl::Now() - absl::Hours(1));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_FALSE(PathExists(*dir + "/old.log"));
  EXPECT_TRUE(PathExists(*dir + "/new.log"));
  auto none = StepJournal::PruneFilesBefore(*dir + "/absent", absl::Now());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  testing::RemoveTree(*dir);
}

}  // namespace
}  // namespace hoist::agent

// GroupCommit: callers that arrive while a write is in flight are written
// together by the next one, and each gets its own outcome.

#include "controller/store/group_commit.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/eventually.h"

namespace hoist {
namespace {

TEST(GroupCommitTest, ACallerAloneIsWrittenAtOnceWithItsOwnOutcome) {
  std::vector<size_t> sizes;
  GroupCommit<int> commit([&](const std::vector<GroupCommit<int>::Entry*>& batch) {
    sizes.push_back(batch.size());
    for (auto* e : batch) {
      e->status = *e->value % 2 == 0 ? absl::OkStatus() : absl::InvalidArgumentError(absl::StrCat("odd ", *e->value));
    }
  });
  EXPECT_TRUE(commit.Commit(2).ok());
  absl::Status odd = commit.Commit(3);
  EXPECT_EQ(odd.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(odd.message(), "odd 3");
  EXPECT_EQ(sizes, (std::vector<size_t>{1, 1}));
}

TEST(GroupCommitTest, CallersArrivingDuringAWriteAreWrittenTogetherNext) {
  absl::Notification first_started, release_first;
  std::vector<std::vector<int>> batches;  // written one at a time: no lock needed
  GroupCommit<int> commit([&](const std::vector<GroupCommit<int>::Entry*>& batch) {
    std::vector<int> values;
    for (auto* e : batch) values.push_back(*e->value);
    batches.push_back(values);
    if (batches.size() == 1) {
      first_started.Notify();
      release_first.WaitForNotification();
    }
    for (auto* e : batch) {
      e->status = *e->value == 13 ? absl::DataLossError("row 13") : absl::OkStatus();
    }
  });
  std::vector<absl::Status> results(21);
  std::vector<std::thread> threads;
  threads.emplace_back([&] { results[0] = commit.Commit(0); });
  first_started.WaitForNotification();
  // Twenty more while the first is being written.
  for (int i = 1; i <= 20; ++i) {
    threads.emplace_back([&, i] { results[i] = commit.Commit(i); });
  }
  EXPECT_TRUE(testing::EventuallyHolds(
      "the twenty callers to queue behind the first write", absl::Seconds(10), [&] { return commit.Queued(); },
      [](auto queued) { return queued >= 20; }, absl::Milliseconds(1)));
  release_first.Notify();
  for (auto& t : threads) t.join();

  ASSERT_EQ(batches.size(), 2u) << "the twenty queued callers should be written in one go";
  EXPECT_EQ(batches[0], std::vector<int>{0});
  EXPECT_EQ(batches[1].size(), 20u);
  for (int i = 0; i <= 20; ++i) {
    if (i == 13) {
      EXPECT_EQ(results[i].code(), absl::StatusCode::kDataLoss);
    } else {
      EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
    }
  }
}

}  // namespace
}  // namespace hoist

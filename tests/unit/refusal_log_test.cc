// Refusals reach the audit log from a writer thread of their own, in order,
// and a stop writes what was queued first.

#include <gtest/gtest.h>

#include "controller/refusal_log.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/in_memory_rollout_store.h"

namespace hoist {
namespace {

rollout::AuditEntry Refusal(const std::string& actor) {
  return rollout::AuditEntry{.actor = actor, .action = "StartRollout", .deployment = "shop", .outcome = "refused",
                             .detail = "an operator certificate of level read may not StartRollout"};
}

TEST(RefusalLogTest, RefusalsAreWrittenInOrderAndAStopWritesWhatIsQueued) {
  testing::FakeClock clock;
  testing::InMemoryRolloutStore store(&clock);
  RefusalLog log(&store);
  for (int i = 0; i < 50; ++i) log.Write(Refusal("operator-" + std::to_string(i)));
  log.Stop();
  auto audit = store.ListAudit("shop", 100, 0);
  ASSERT_TRUE(audit.ok()) << audit.status();
  ASSERT_EQ(audit->size(), 50u);
  // Newest first.
  EXPECT_EQ(audit->front().actor(), "operator-49");
  EXPECT_EQ(audit->back().actor(), "operator-0");
  EXPECT_EQ(audit->back().outcome(), "refused");
}

TEST(RefusalLogTest, NothingIsWrittenAfterTheStop) {
  testing::FakeClock clock;
  testing::InMemoryRolloutStore store(&clock);
  RefusalLog log(&store);
  log.Stop();
  log.Write(Refusal("late"));
  log.Stop();
  auto audit = store.ListAudit("", 10, 0);
  ASSERT_TRUE(audit.ok()) << audit.status();
  EXPECT_TRUE(audit->empty());
}

}  // namespace
}  // namespace hoist

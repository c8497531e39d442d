// Many hosts at once: 200 simulated hosts (real agent sessions with their own
// certificates, on in-memory Docker Engines; tests/sim) against two real
// hoistd replicas on a real Postgres, over mTLS, taking a service with one
// replica per host through its first deploy and a rolling upgrade.

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/test_env.h"
#include "tests/sim/scale_stack.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;

TEST(ScaleTest, TwoHundredSimulatedHostsTakeARollingUpgradeToSucceeded) {
  constexpr int kHosts = 200;
  auto pg = PostgresCluster::Start();
  HOIST_REQUIRE_REAL_PART(pg.status());
  auto fleet = HoistFleet::Start(nullptr, pg->get(), ScaleFleet(kHosts));
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  HoistFleet& f = **fleet;

  f.MustHoist({"apply", f.WriteFile("stack.yaml", ScaleStack("scale", kHosts, kHosts / 10))});
  for (const char* version : {"1.0.0", "1.1.0"}) {
    f.MustHoist({"release", "create", f.WriteFile(absl::StrCat("release-", version, ".yaml"),
                                                  ScaleRelease("scale", version))});
  }
  std::string first = f.MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  EXPECT_THAT(first, HasSubstr("SUCCEEDED"));
  std::string out = f.MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  EXPECT_THAT(out, HasSubstr("SUCCEEDED"));

  // Every host runs exactly one healthy app container, at 1.1.0.
  std::string matrix = f.MustHoist({"matrix", "--output", "json"});
  auto m = nlohmann::json::parse(matrix, nullptr, false);
  ASSERT_TRUE(m.is_object() && m["cells"].is_array()) << matrix.substr(0, 2000);
  std::set<std::string> hosts;
  for (const auto& cell : m["cells"]) {
    EXPECT_EQ(cell.value("service", ""), "app");
    EXPECT_EQ(cell.value("version", ""), "1.1.0") << cell.dump();
    EXPECT_EQ(cell.value("instances", 0), 1) << cell.dump();
    EXPECT_EQ(cell.value("healthy", 0), 1) << cell.dump();
    hosts.insert(cell.value("agentId", ""));
  }
  EXPECT_EQ(static_cast<int>(hosts.size()), kHosts);
  EXPECT_EQ(m.value("pinnedVersion", ""), "1.1.0");
  f.set_dump_logs_at_exit(HasFailure());
}

}  // namespace
}  // namespace hoist::testing

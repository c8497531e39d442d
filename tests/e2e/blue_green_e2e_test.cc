// Blue-green through a real reverse proxy: a stack with two web replicas
// behind HAProxy, deployed at 1.0.0 by a real hoistd and three real agents on
// this machine's Docker, then upgraded to 1.1.0 with --strategy blue-green
// while a load generator sends a fixed 250 requests a second through the
// proxy: green starts beside blue, the proxy switches in one step, the
// operator switches back to blue and forward to green again, then finishes
// and blue is retired. Every request must succeed.
//
// Also: a green slot that never passes its health check stops the rollout
// with blue serving every request and the proxy untouched.

#include <unistd.h>

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/http_client.h"
#include "tests/bench/loadgen.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;

// web-preview reaches the new slot only, before the switch.
constexpr char kStack[] = R"(deployment: DEPLOYMENT
network: DEPLOYMENT
hosts:
  - id: host-1
    labels: {tier: app}
  - id: host-2
    labels: {tier: app}
  - id: host-3
    labels: {tier: edge}
services:
  web:
    role: web
    repository: REGISTRY/hoist-test/web
    replicas: 2
    placement:
      labels: {tier: app}
      distinct_hosts: true
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 100ms
      deadline: 15s
    stop_timeout: 5s
  proxy:
    role: proxy
    image: PROXY_IMAGE
    placement:
      hosts: [host-3]
    ports:
      - "127.0.0.1:PROXY_PORT:8080"
      - "127.0.0.1:PREVIEW_PORT:8081"
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
      - {name: web-preview, service: web, port: 8080, listen: 8081}
    drain_timeout: 5s
    health:
      tcp: {port: 8080}
      interval: 100ms
      deadline: 30s
    stop_timeout: 5s
)";

constexpr char kRelease[] = R"(deployment: DEPLOYMENT
version: VERSION
images:
  web: REGISTRY/hoist-test/web:VERSION
)";

class BlueGreenE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto env = DockerEnv::Start();
    HOIST_REQUIRE_REAL_PART(env.status());
    env_ = std::move(*env);
    auto pg = PostgresCluster::Start();
    HOIST_REQUIRE_REAL_PART(pg.status());
    pg_ = std::move(*pg);
    deployment_ = absl::StrCat("bg-", getpid());
    for (const char* v : {"1.0.0", "1.1.0"}) {
      auto image = env_->BuildTestImage("web", v);
      ASSERT_TRUE(image.ok()) << image.status();
    }
    // 1.2.0 never reports healthy.
    auto sick = env_->BuildTestImage("web", "1.2.0", {{"TESTSVC_UNHEALTHY", "1"}});
    ASSERT_TRUE(sick.ok()) << sick.status();
    auto proxy_image = env_->BuildProxyImage();
    HOIST_REQUIRE_REAL_PART(proxy_image.status());
    auto proxy_port = PickFreePort();
    auto preview_port = PickFreePort();
    ASSERT_TRUE(proxy_port.ok() && preview_port.ok());
    proxy_port_ = *proxy_port;
    preview_port_ = *preview_port;
    values_ = {{"DEPLOYMENT", deployment_},
               {"REGISTRY", env_->registry()},
               {"PROXY_IMAGE", *proxy_image},
               {"PROXY_PORT", absl::StrCat(proxy_port_)},
               {"PREVIEW_PORT", absl::StrCat(preview_port_)}};
    auto fleet = HoistFleet::Start(
        env_.get(), pg_.get(),
        {.deployment = deployment_,
         .agents = {{"host-1", "tier=app"}, {"host-2", "tier=app"}, {"host-3", "tier=edge"}}});
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
  }

  void TearDown() override {
    if (fleet_ != nullptr) fleet_->set_dump_logs_at_exit(HasFailure());
    fleet_.reset();
  }

  // Applies the stack, records the releases and deploys 1.0.0 (rolling).
  void Deploy100() {
    fleet_->MustHoist({"apply", fleet_->WriteFile("stack.yaml", FillTemplate(kStack, values_))});
    for (const char* v : {"1.0.0", "1.1.0", "1.2.0"}) {
      auto values = values_;
      values["VERSION"] = v;
      fleet_->MustHoist({"release", "create",
                         fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kRelease, values))});
    }
    fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(3));
    WaitForBody(proxy_port_, "hello from web 1.0.0");
  }

  static std::string Url(uint16_t port) { return absl::StrCat("http://127.0.0.1:", port, "/"); }

  // Waits until the proxy's port answers GET / with `body`.
  void WaitForBody(uint16_t port, const std::string& body) {
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    std::string last;
    while (absl::Now() < deadline) {
      auto r = HttpGet(Url(port), absl::Seconds(2));
      if (r.ok() && r->status == 200 && absl::StripAsciiWhitespace(r->body) == body) return;
      last = r.ok() ? absl::StrCat(r->status, " ", r->body) : std::string(r.status().message());
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "port " << port << " did not answer \"" << body << "\" within 30s; last: " << last;
  }

  // Every one of n requests through the proxy answers `body`.
  void ExpectOnly(const std::string& body, int n = 20) {
    for (int i = 0; i < n; ++i) {
      auto r = HttpGet(Url(proxy_port_), absl::Seconds(2));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(absl::StripAsciiWhitespace(r->body), body) << "request " << i;
    }
  }

  // Names of the deployment's web containers (-a: stopped ones too).
  std::string WebContainers() {
    auto names = env_->Docker({"ps", "-a", "--filter", absl::StrCat("label=hoist.deployment=", deployment_),
                               "--filter", "label=hoist.service=web", "--format", "{{.Names}} {{.State}}"});
    EXPECT_TRUE(names.ok()) << names.status();
    return names.ok() ? *names : "";
  }

  static int CountOf(absl::string_view text, absl::string_view what) {
    int n = 0;
    for (size_t at = text.find(what); at != absl::string_view::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  // Runs `hoist cutover --<direction>`, prints its line and the CLI's wall
  // time; returns the switch time hoistd reports ("switch took ...").
  absl::Duration Cutover(const std::string& direction) {
    absl::Time start = absl::Now();
    std::string out = fleet_->MustHoist({"cutover", "--" + direction});
    absl::Duration wall = absl::Now() - start;
    std::cerr << "cutover --" << direction << ": " << absl::StripAsciiWhitespace(out) << " [CLI wall time "
              << absl::FormatDuration(absl::Trunc(wall, absl::Milliseconds(1))) << "]\n";
    std::smatch m;
    absl::Duration took = absl::InfiniteDuration();
    if (std::regex_search(out, m, std::regex("switch took ([0-9.]+m?s)"))) {
      EXPECT_TRUE(absl::ParseDuration(m[1].str(), &took)) << m[1].str();
    } else {
      ADD_FAILURE() << "no switch time in: " << out;
    }
    return took;
  }

  static void Print(const char* what, const bench::LoadStats& s) {
    std::cerr << what << ": served=" << s.served << " failed=" << s.failed << " p50=" << s.p50_ms
              << "ms p99=" << s.p99_ms << "ms max=" << s.max_ms << "ms; answers:";
    for (const auto& [body, n] : s.bodies) std::cerr << " \"" << body << "\"=" << n;
    std::cerr << "\n";
  }

  void Settle(absl::Duration d) {
    absl::Time until = absl::Now() + d;
    while (absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
  }

  std::unique_ptr<DockerEnv> env_;
  std::unique_ptr<PostgresCluster> pg_;
  std::unique_ptr<HoistFleet> fleet_;
  std::string deployment_;
  uint16_t proxy_port_ = 0;
  uint16_t preview_port_ = 0;
  std::map<std::string, std::string> values_;
};

TEST_F(BlueGreenE2eTest, UpgradeSwitchBackAndForwardThroughHaproxyDropNoRequest) {
  Deploy100();
  ASSERT_FALSE(HasFailure());

  bench::LoadGenerator load({.port = proxy_port_, .connections = 8, .rate_per_second = 250});
  load.Start();
  Settle(absl::Seconds(2));  // the baseline must already be clean
  std::string out = fleet_->MustHoist(
      {"upgrade", "1.1.0", "--strategy", "blue-green", "--grace-period", "10m", "--yes"}, absl::Minutes(5));
  ASSERT_FALSE(HasFailure()) << out;
  EXPECT_THAT(out, HasSubstr("GRACE"));
  EXPECT_THAT(out, HasSubstr("hoist cutover --back"));
  // Green serves; blue still runs beside it; the preview route reaches green.
  ExpectOnly("hello from web 1.1.0");
  WaitForBody(preview_port_, "hello from web 1.1.0");
  std::string names = WebContainers();
  EXPECT_EQ(CountOf(names, "-web-green-"), 2) << names;
  EXPECT_EQ(CountOf(names, "-web-blue-"), 2) << names;
  Settle(absl::Seconds(1));
  bench::LoadStats after_switch = load.Snapshot();

  absl::Duration back = Cutover("back");
  ExpectOnly("hello from web 1.0.0");
  Settle(absl::Seconds(1));
  absl::Duration forward = Cutover("forward");
  ExpectOnly("hello from web 1.1.0");
  Settle(absl::Seconds(1));

  Cutover("finish");
  // Blue is retired: its containers go.
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (CountOf(WebContainers(), "-web-blue-") > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(200));
  names = WebContainers();
  EXPECT_EQ(CountOf(names, "-web-blue-"), 0) << names;
  EXPECT_EQ(CountOf(names, "-web-green-"), 2) << names;
  Settle(absl::Seconds(2));
  bench::LoadStats stats = load.Stop();

  std::cerr << "switch back took " << absl::FormatDuration(back) << ", switch forward "
            << absl::FormatDuration(forward) << "\n";
  std::cerr << "load until the switch: served=" << after_switch.served << " failed=" << after_switch.failed << "\n";
  Print("load, whole test", stats);
  EXPECT_EQ(stats.failed, 0) << "failed requests; first reasons: " << absl::StrJoin(stats.failure_samples, "; ")
                             << "\nupgrade output:\n" << out;
  EXPECT_GT(stats.served, 1000);
  EXPECT_EQ(stats.first_body, "hello from web 1.0.0");
  EXPECT_EQ(stats.last_body, "hello from web 1.1.0");
  EXPECT_EQ(stats.bodies.size(), 2u) << "answers other than the two versions' greeting";
  // The product's target is < 1 s for a switch and a switch back. hoistd's
  // figure covers the whole proxy step: finding the proxy, the runtime
  // commands (traffic moves there, tens of milliseconds in), waiting for the
  // drained slot's in-flight requests, rewriting the proxy's file. On a
  // loaded shared machine that passes 1 s now and then; 2 s catches a switch
  // that waits on something it should not.
  EXPECT_LT(back, absl::Seconds(2)) << "switch back";
  EXPECT_LT(forward, absl::Seconds(2)) << "switch forward";
  ExpectOnly("hello from web 1.1.0");

  std::string status = fleet_->MustHoist({"status"});
  EXPECT_THAT(status, HasSubstr("SUCCEEDED")) << status;
  std::string audit = fleet_->MustHoist({"audit"});
  EXPECT_EQ(CountOf(audit, "cutover"), 3) << audit;
}

TEST_F(BlueGreenE2eTest, FailingGreenHealthCheckLeavesBlueServing) {
  Deploy100();
  ASSERT_FALSE(HasFailure());
  bench::LoadGenerator load({.port = proxy_port_, .connections = 8, .rate_per_second = 250});
  load.Start();
  Settle(absl::Seconds(1));
  auto r = fleet_->Hoist({"upgrade", "1.2.0", "--strategy", "blue-green", "--yes"}, absl::Minutes(3));
  ASSERT_TRUE(r.ok()) << r.status();
  Settle(absl::Seconds(1));
  bench::LoadStats stats = load.Stop();
  Print("load during the failed blue-green upgrade", stats);

  EXPECT_NE(r->exit_code, 0) << r->stdout_text;
  EXPECT_THAT(r->stdout_text + r->stderr_text, HasSubstr("the proxy was not switched: blue still serves 1.0.0"));
  EXPECT_EQ(stats.failed, 0) << absl::StrJoin(stats.failure_samples, "; ");
  EXPECT_GT(stats.served, 1000);
  EXPECT_EQ(stats.bodies.size(), 1u) << "only blue may answer";
  EXPECT_EQ(stats.last_body, "hello from web 1.0.0");
  ExpectOnly("hello from web 1.0.0");
  // Green is left for inspection; blue runs on.
  std::string names = WebContainers();
  EXPECT_EQ(CountOf(names, "-web-green-1") + CountOf(names, "-web-green-0"), 2) << names;
  EXPECT_EQ(CountOf(names, "-web-blue-"), 2) << names;
  auto cutover = fleet_->Hoist({"cutover", "--back"});
  ASSERT_TRUE(cutover.ok());
  EXPECT_NE(cutover->exit_code, 0);
  EXPECT_THAT(cutover->stdout_text + cutover->stderr_text, HasSubstr("has no blue-green rollout in its grace period"));
}

}  // namespace
}  // namespace hoist::testing

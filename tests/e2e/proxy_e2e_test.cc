// Zero downtime through a real reverse proxy: a stack with two web replicas
// behind HAProxy (Hoist's proxy image, built FROM scratch out of this host's
// HAProxy), deployed and upgraded 1.0.0 -> 1.1.0 by a real hoistd and three
// real agents on this machine's Docker, while a load generator sends a fixed
// 250 requests a second through the proxy's published port. Every request
// must succeed, and the answers must move from 1.0.0 to 1.1.0.
//
// Also: a proxy_update naming an unknown route fails the step and leaves the
// proxy serving as before.

#include <sys/wait.h>

#include <csignal>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/http_client.h"
#include "shared/subprocess.h"
#include "agent/agent_policy.h"
#include "agent/docker/docker_client.h"
#include "agent/journal.h"
#include "agent/step_executor.h"
#include "shared/clock.h"
#include "tests/bench/loadgen.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"

namespace hoist::testing {
namespace {

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
      deadline: 60s
    stop_timeout: 5s
  proxy:
    role: proxy
    image: PROXY_IMAGE
    placement:
      hosts: [host-3]
    ports:
      - "127.0.0.1:PROXY_PORT:8080"
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
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

class ProxyE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto env = DockerEnv::Start();
    HOIST_REQUIRE_REAL_PART(env.status());
    env_ = std::move(*env);
    auto pg = PostgresCluster::Start();
    HOIST_REQUIRE_REAL_PART(pg.status());
    pg_ = std::move(*pg);
    deployment_ = absl::StrCat("zd-", getpid());

    for (const char* v : {"1.0.0", "1.1.0"}) {
      auto image = env_->BuildTestImage("web", v);
      ASSERT_TRUE(image.ok()) << image.status();
    }
    auto proxy_image = env_->BuildProxyImage();
    HOIST_REQUIRE_REAL_PART(proxy_image.status());
    auto proxy_port = PickFreePort();
    ASSERT_TRUE(proxy_port.ok());
    proxy_port_ = *proxy_port;
    values_ = {{"DEPLOYMENT", deployment_},
               {"REGISTRY", env_->registry()},
               {"PROXY_IMAGE", *proxy_image},
               {"PROXY_PORT", absl::StrCat(proxy_port_)}};
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

  static int CountOf(absl::string_view text, absl::string_view what) {
    int n = 0;
    for (size_t at = text.find(what); at != absl::string_view::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  std::string MustHoist(std::vector<std::string> args, absl::Duration timeout = absl::Minutes(1)) {
    return fleet_->MustHoist(std::move(args), timeout);
  }

  void ApplyStackAndReleases() {
    MustHoist({"apply", fleet_->WriteFile("stack.yaml", FillTemplate(kStack, values_))});
    for (const char* v : {"1.0.0", "1.1.0"}) {
      auto values = values_;
      values["VERSION"] = v;
      MustHoist({"release", "create",
                 fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kRelease, values))});
    }
  }

  std::string ProxyUrl() const { return absl::StrCat("http://127.0.0.1:", proxy_port_, "/"); }

  // Waits until the proxy answers GET / with `body`.
  void WaitForProxyBody(const std::string& body) {
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    std::string last;
    while (absl::Now() < deadline) {
      auto r = HttpGet(ProxyUrl(), absl::Seconds(2));
      if (r.ok() && r->status == 200 && absl::StripAsciiWhitespace(r->body) == body) return;
      last = r.ok() ? absl::StrCat(r->status, " ", r->body) : std::string(r.status().message());
      absl::SleepFor(absl::Milliseconds(100));
    }
    FAIL() << "the proxy did not answer \"" << body << "\" within 30s; last: " << last;
  }

  std::unique_ptr<DockerEnv> env_;
  std::unique_ptr<PostgresCluster> pg_;
  std::unique_ptr<HoistFleet> fleet_;
  std::string deployment_;
  uint16_t proxy_port_ = 0;
  std::map<std::string, std::string> values_;
};

TEST_F(ProxyE2eTest, RollingUpgradeThroughHaproxyDropsNoRequest) {
  ApplyStackAndReleases();
  MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(3));
  ASSERT_FALSE(HasFailure());
  WaitForProxyBody("hello from web 1.0.0");
  ASSERT_FALSE(HasFailure());

  bench::LoadGenerator load({.port = proxy_port_, .connections = 8, .rate_per_second = 250});
  load.Start();
  // Load before the upgrade begins: the baseline must already be clean.
  absl::Time warm = absl::Now() + absl::Seconds(2);
  while (absl::Now() < warm) absl::SleepFor(absl::Milliseconds(50));
  std::string out = MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  absl::Time settle = absl::Now() + absl::Seconds(2);
  while (absl::Now() < settle) absl::SleepFor(absl::Milliseconds(50));
  bench::LoadStats stats = load.Stop();

  std::cerr << "load: served=" << stats.served << " failed=" << stats.failed << " p50=" << stats.p50_ms
            << "ms p99=" << stats.p99_ms << "ms max=" << stats.max_ms << "ms; 1.0.0 answers "
            << stats.bodies["hello from web 1.0.0"] << ", 1.1.0 answers " << stats.bodies["hello from web 1.1.0"] << "\n";
  EXPECT_EQ(stats.failed, 0) << "failed requests during the upgrade; first reasons: "
                             << absl::StrJoin(stats.failure_samples, "; ") << "\nupgrade output:\n" << out;
  // At 250/s for the upgrade's length; a stalled generator would prove nothing.
  EXPECT_GT(stats.served, 1000);
  EXPECT_EQ(stats.first_body, "hello from web 1.0.0");
  EXPECT_EQ(stats.last_body, "hello from web 1.1.0");
  EXPECT_EQ(stats.bodies.size(), 2u) << "answers other than the two versions' greeting";
  // Once the upgrade ended, only 1.1.0 answers.
  for (int i = 0; i < 20; ++i) {
    auto r = HttpGet(ProxyUrl(), absl::Seconds(2));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(absl::StripAsciiWhitespace(r->body), "hello from web 1.1.0");
  }
  // The old containers are gone: the proxy holds only the new backends.
  auto names = env_->Docker({"ps", "--filter", absl::StrCat("label=hoist.deployment=", deployment_), "--filter",
                             "label=hoist.service=web", "--format", "{{.Names}}"});
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(CountOf(*names, "-1.1.0"), 2) << *names;
  EXPECT_EQ(CountOf(*names, "-1.0.0"), 0) << *names;
}

// The agent alone, on real Docker: a proxy instance started with its
// configuration, a backend added through the runtime API, then an update that
// names a route the proxy does not have: the step fails, saying so, and the
// proxy keeps serving the backend it had.
class ProxyStepsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto env = DockerEnv::Start();
    HOIST_REQUIRE_REAL_PART(env.status());
    env_ = std::move(*env);
    auto dir = MakeOwnedTempDir("hoist-proxy-steps");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    auto web = env_->BuildTestImage("web", "1.0.0");
    ASSERT_TRUE(web.ok()) << web.status();
    web_image_ = *web;
    auto proxy = env_->BuildProxyImage();
    HOIST_REQUIRE_REAL_PART(proxy.status());
    proxy_image_ = *proxy;
    deployment_ = absl::StrCat("ps-", getpid());
    policy_.agent_id = "proxy-e2e";
    policy_.extra_labels = {{std::string(DockerEnv::kRunLabel), env_->run_id()}};
    auto journal = agent::StepJournal::Open(dir_ + "/state");
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = std::move(*journal);
    executor_ = std::make_unique<agent::StepExecutor>(&docker_, journal_.get(), policy_, RealClock::Get());
  }
  void TearDown() override {
    executor_.reset();
    if (env_ != nullptr) (void)env_->Cleanup();  // containers and the network carry the run label
    if (!dir_.empty()) RemoveTree(dir_);
  }

  hoist::v1::Step NewStep(const std::string& id) {
    hoist::v1::Step step;
    step.set_step_id(absl::StrCat(id, "-", deployment_));
    step.set_epoch(1);
    step.mutable_deadline()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Minutes(1)));
    return step;
  }

  hoist::v1::Step Start(const std::string& service, const std::string& image, uint16_t host_port) {
    hoist::v1::Step step = NewStep(absl::StrCat("start-", service));
    auto* start = step.mutable_start_instance();
    start->mutable_instance()->set_deployment(deployment_);
    start->mutable_instance()->set_service(service);
    start->set_version("1.0.0");
    start->mutable_spec()->set_image(image);
    start->mutable_spec()->set_network(deployment_);
    auto* port = start->mutable_spec()->add_ports();
    port->set_container_port(8080);
    port->set_host_port(host_port);
    port->set_host_ip("127.0.0.1");
    if (service == "proxy") {
      auto* f = start->mutable_proxy()->add_frontends();
      f->set_route("web");
      f->set_listen_port(8080);
    }
    return step;
  }

  hoist::v1::Step Update(const std::string& id, const std::string& route, const std::string& address) {
    hoist::v1::Step step = NewStep(id);
    auto* u = step.mutable_proxy_update();
    u->set_deployment(deployment_);
    u->set_service("proxy");
    u->mutable_drain_timeout()->set_seconds(2);
    auto* r = u->add_routes();
    r->set_name(route);
    auto* b = r->add_backends();
    b->set_name("web-0");
    b->set_address(address);
    b->set_port(8080);
    b->set_state(hoist::v1::BACKEND_STATE_READY);
    return step;
  }

  std::unique_ptr<DockerEnv> env_;
  std::string dir_, web_image_, proxy_image_, deployment_;
  agent::AgentPolicy policy_;
  docker::DockerClient docker_;
  std::unique_ptr<agent::StepJournal> journal_;
  std::unique_ptr<agent::StepExecutor> executor_;
};

TEST_F(ProxyStepsE2eTest, UnknownRouteFailsTheStepAndLeavesTheProxyServing) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok());
  hoist::v1::StepResult web = executor_->Run(Start("web", web_image_, 0), nullptr);
  ASSERT_EQ(web.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << web.message();
  hoist::v1::StepResult proxy = executor_->Run(Start("proxy", proxy_image_, *port), nullptr);
  ASSERT_EQ(proxy.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << proxy.message();
  std::string web_name = web.start().container_name();
  hoist::v1::StepResult good = executor_->Run(Update("good", "web", web_name), nullptr);
  ASSERT_EQ(good.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << good.message();
  std::string url = absl::StrCat("http://127.0.0.1:", *port, "/");
  auto before = HttpGet(url);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->status, 200) << before->body;

  hoist::v1::StepResult bad_route = executor_->Run(Update("bad-route", "api", web_name), nullptr);
  hoist::v1::StepResult bad_address = executor_->Run(Update("bad-address", "web", "no-such-container"), nullptr);

  EXPECT_EQ(bad_route.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_EQ(bad_route.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(bad_route.message(), ::testing::HasSubstr("the proxy has no route \"api\"; its routes: web"));
  EXPECT_EQ(bad_address.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_THAT(bad_address.message(), ::testing::HasSubstr("\"no-such-container\" is not an IP"));
  auto after = HttpGet(url);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(after->body, before->body);
  // The configuration file mirrors the runtime state (a restarted proxy keeps the backend).
  auto config = env_->Docker({"cp", absl::StrCat(deployment_, "-proxy-blue-0-1.0.0:/etc/haproxy/haproxy.cfg"), "-"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(*config, ::testing::HasSubstr("    server web-0 "));
}

}  // namespace
}  // namespace hoist::testing

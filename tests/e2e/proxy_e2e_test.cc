// Zero downtime through a real reverse proxy: a stack with two web replicas
// behind HAProxy (Hoist's proxy image, built FROM scratch out of this host's
// HAProxy), deployed and upgraded 1.0.0 -> 1.1.0 by a real hoistd and three
// real agents on this machine's Docker, while a load generator sends a fixed
// 250 requests a second through the proxy's published port. Every request
// must succeed, and the answers must move from 1.0.0 to 1.1.0.
//
// Blue-green through the same proxy: 1.0.0 -> 1.1.0 with --strategy
// blue-green under the same load: green starts beside blue, the proxy
// switches in one step, the operator switches back to blue and forward to
// green again, then finishes and blue is retired; and a green slot that never
// passes its health check stops the rollout with blue serving every request.
//
// Also: a proxy_update naming an unknown route fails the step and leaves the
// proxy serving as before.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
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
#include "agent/haproxy.h"
#include "agent/journal.h"
#include "agent/step_executor.h"
#include "shared/clock.h"
#include "tests/bench/loadgen.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"
#include "tests/fixtures/under_load.h"

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
      deadline: 20s
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
      # Blue-green points it at the new slot before the switch.
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

  static int CountOf(absl::string_view text, absl::string_view what) {
    int n = 0;
    for (size_t at = text.find(what); at != absl::string_view::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  std::string MustHoist(std::vector<std::string> args, absl::Duration timeout = absl::Minutes(1)) {
    return fleet_->MustHoist(std::move(args), timeout);
  }

  void ApplyStackAndReleases(const std::vector<std::string>& versions = {"1.0.0", "1.1.0"}) {
    MustHoist({"apply", fleet_->WriteFile("stack.yaml", FillTemplate(kStack, values_))});
    for (const std::string& v : versions) {
      auto values = values_;
      values["VERSION"] = v;
      MustHoist({"release", "create",
                 fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kRelease, values))});
    }
  }

  static std::string Url(uint16_t port) { return absl::StrCat("http://127.0.0.1:", port, "/"); }
  std::string ProxyUrl() const { return Url(proxy_port_); }

  // Waits until the proxy answers GET / with `body` (on the preview route's port when asked).
  void WaitForProxyBody(const std::string& body, bool preview = false) {
    ASSERT_TRUE(EventuallyHolds(
        absl::StrCat("the proxy to answer \"", body, "\""), absl::Seconds(30),
        [&] {
          auto r = HttpGet(Url(preview ? preview_port_ : proxy_port_), absl::Seconds(2));
          return r.ok() ? absl::StrCat(r->status, " ", absl::StripAsciiWhitespace(r->body))
                        : std::string(r.status().message());
        },
        [&](const std::string& answer) { return answer == absl::StrCat(200, " ", body); }, absl::Milliseconds(100)));
  }

  // Every one of n requests through the proxy answers `body`.
  void ExpectOnly(const std::string& body, int n = 20) {
    for (int i = 0; i < n; ++i) {
      auto r = HttpGet(ProxyUrl(), absl::Seconds(2));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(absl::StripAsciiWhitespace(r->body), body) << "request " << i;
    }
  }

  // Names and states of the deployment's web containers, stopped ones too.
  std::string WebContainers() {
    auto names = env_->Docker({"ps", "-a", "--filter", absl::StrCat("label=hoist.deployment=", deployment_),
                               "--filter", "label=hoist.service=web", "--format", "{{.Names}} {{.State}}"});
    EXPECT_TRUE(names.ok()) << names.status();
    return names.ok() ? *names : "";
  }

  struct Switch {
    absl::Duration took;   // as hoistd reports it: the whole proxy step
    absl::Duration moved = absl::InfiniteDuration();  // until the proxy first answered `body`, seen from outside
  };

  // Runs `hoist cutover --<direction>` while polling the proxy for `body`.
  Switch Cutover(const std::string& direction, const std::string& body) {
    Switch out{absl::InfiniteDuration(), absl::InfiniteDuration()};
    const absl::Time start = absl::Now();
    std::atomic<bool> done{false};
    std::atomic<int64_t> moved_ns{-1};
    std::thread poller([&] {
      while (!done.load()) {
        auto r = HttpGet(ProxyUrl(), absl::Seconds(2));
        if (r.ok() && absl::StripAsciiWhitespace(r->body) == body) {
          moved_ns = absl::ToInt64Nanoseconds(absl::Now() - start);
          return;
        }
      }
    });
    std::string text = MustHoist({"cutover", "--" + direction});
    const absl::Duration wall = absl::Now() - start;
    // The poller sees the switch at the latest with its next request after the command returned.
    Eventually(absl::Seconds(5), [&] { return moved_ns.load() >= 0; }, absl::Milliseconds(10));
    done = true;
    poller.join();
    if (moved_ns.load() >= 0) out.moved = absl::Nanoseconds(moved_ns.load());
    std::smatch m;
    if (std::regex_search(text, m, std::regex("switch took ([0-9.]+m?s)"))) {
      EXPECT_TRUE(absl::ParseDuration(m[1].str(), &out.took)) << m[1].str();
    } else {
      ADD_FAILURE() << "no switch time in: " << text;
    }
    std::cerr << "cutover --" << direction << ": " << absl::StripAsciiWhitespace(text) << " [traffic moved after "
              << absl::FormatDuration(absl::Trunc(out.moved, absl::Milliseconds(1))) << ", CLI wall time "
              << absl::FormatDuration(absl::Trunc(wall, absl::Milliseconds(1))) << "]\n";
    return out;
  }

  static void Print(const char* what, const bench::LoadStats& s) {
    std::cerr << what << ": served=" << s.served << " failed=" << s.failed << " p50=" << s.p50_ms
              << "ms p99=" << s.p99_ms << "ms max=" << s.max_ms << "ms; answers:";
    for (const auto& [body, n] : s.bodies) std::cerr << " \"" << body << "\"=" << n;
    std::cerr << "\n";
  }

  std::unique_ptr<DockerEnv> env_;
  std::unique_ptr<PostgresCluster> pg_;
  std::unique_ptr<HoistFleet> fleet_;
  std::string deployment_;
  uint16_t proxy_port_ = 0;
  uint16_t preview_port_ = 0;
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
  // Load before the upgrade begins: the baseline must already be clean
  // (two seconds' worth of answers, none failed).
  ASSERT_TRUE(LetRequestsThrough(load, 500));
  EXPECT_EQ(load.Snapshot().failed, 0) << "requests failed before the upgrade began";
  std::string out = MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  // And load once it is done: two seconds' worth more.
  EXPECT_TRUE(LetRequestsThrough(load, 500));
  bench::LoadStats stats = load.Stop();

  Print("load during the rolling upgrade", stats);
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

TEST_F(ProxyE2eTest, BlueGreenUpgradeSwitchBackAndForwardDropNoRequest) {
  ApplyStackAndReleases();
  MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(3));
  WaitForProxyBody("hello from web 1.0.0");
  ASSERT_FALSE(HasFailure());

  bench::LoadGenerator load({.port = proxy_port_, .connections = 8, .rate_per_second = 250});
  load.Start();
  // The baseline must already be clean: two seconds' worth of answers, none failed.
  ASSERT_TRUE(LetRequestsThrough(load, 500));
  EXPECT_EQ(load.Snapshot().failed, 0) << "requests failed before the upgrade began";
  std::string out = MustHoist({"upgrade", "1.1.0", "--strategy", "blue-green", "--grace-period", "10m", "--yes"},
                              absl::Minutes(5));
  ASSERT_FALSE(HasFailure()) << out;
  EXPECT_THAT(out, ::testing::HasSubstr("GRACE"));
  EXPECT_THAT(out, ::testing::HasSubstr("hoist cutover --back"));
  // Green serves, blue still runs beside it, the preview route reaches green.
  ExpectOnly("hello from web 1.1.0");
  WaitForProxyBody("hello from web 1.1.0", /*preview=*/true);
  std::string names = WebContainers();
  EXPECT_EQ(CountOf(names, "-web-green-"), 2) << names;
  EXPECT_EQ(CountOf(names, "-web-blue-"), 2) << names;
  // Each switch under a second's worth of load before it.
  EXPECT_TRUE(LetRequestsThrough(load, 250));

  Switch back = Cutover("back", "hello from web 1.0.0");
  ExpectOnly("hello from web 1.0.0");
  EXPECT_TRUE(LetRequestsThrough(load, 250));
  Switch forward = Cutover("forward", "hello from web 1.1.0");
  ExpectOnly("hello from web 1.1.0");
  EXPECT_TRUE(LetRequestsThrough(load, 250));
  MustHoist({"cutover", "--finish"});
  // Blue is retired: its containers go.
  Eventually(absl::Seconds(60), [&] { return CountOf(WebContainers(), "-web-blue-") == 0; }, absl::Milliseconds(200));
  names = WebContainers();
  EXPECT_EQ(CountOf(names, "-web-blue-"), 0) << names;
  EXPECT_EQ(CountOf(names, "-web-green-"), 2) << names;
  // Two seconds' worth of load once blue is gone.
  EXPECT_TRUE(LetRequestsThrough(load, 500));
  bench::LoadStats stats = load.Stop();

  Print("load during the blue-green upgrade, switch back, forward and finish", stats);
  EXPECT_EQ(stats.failed, 0) << "failed requests; first reasons: " << absl::StrJoin(stats.failure_samples, "; ")
                             << "\nupgrade output:\n" << out;
  EXPECT_GT(stats.served, 1000);
  EXPECT_EQ(stats.first_body, "hello from web 1.0.0");
  EXPECT_EQ(stats.last_body, "hello from web 1.1.0");
  EXPECT_EQ(stats.bodies.size(), 2u) << "answers other than the two versions' greeting";
  // Each switch moved the traffic (the proxy answered the other slot's
  // greeting at the latest 5 s after the command returned) and hoistd
  // reported its time. How fast is for tests/bench/zero_downtime.sh to
  // measure (hoist_bluegreen_back_s), not for a timed test on a shared machine.
  EXPECT_NE(back.moved, absl::InfiniteDuration()) << "switch back: the proxy never answered blue's greeting";
  EXPECT_NE(forward.moved, absl::InfiniteDuration()) << "switch forward: the proxy never answered green's greeting";
  EXPECT_GT(back.took, absl::ZeroDuration()) << "switch back";
  EXPECT_GT(forward.took, absl::ZeroDuration()) << "switch forward";
  ExpectOnly("hello from web 1.1.0");
  std::string status = MustHoist({"status"});
  EXPECT_THAT(status, ::testing::HasSubstr("SUCCEEDED")) << status;
  EXPECT_EQ(CountOf(MustHoist({"audit"}), "cutover"), 3);
}

TEST_F(ProxyE2eTest, BlueGreenWithAFailingGreenHealthCheckLeavesBlueServing) {
  // 1.2.0 never reports healthy.
  auto sick = env_->BuildTestImage("web", "1.2.0", {{"TESTSVC_UNHEALTHY", "1"}});
  ASSERT_TRUE(sick.ok()) << sick.status();
  ApplyStackAndReleases({"1.0.0", "1.2.0"});
  MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(3));
  WaitForProxyBody("hello from web 1.0.0");
  ASSERT_FALSE(HasFailure());

  bench::LoadGenerator load({.port = proxy_port_, .connections = 8, .rate_per_second = 250});
  load.Start();
  // A second's worth of answers before the upgrade and after it.
  ASSERT_TRUE(LetRequestsThrough(load, 250));
  auto r = fleet_->Hoist({"upgrade", "1.2.0", "--strategy", "blue-green", "--yes"}, absl::Minutes(3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(LetRequestsThrough(load, 250));
  bench::LoadStats stats = load.Stop();
  Print("load during the failed blue-green upgrade", stats);

  EXPECT_NE(r->exit_code, 0) << r->stdout_text;
  EXPECT_THAT(r->stdout_text + r->stderr_text,
              ::testing::HasSubstr("the proxy was not switched: blue still serves 1.0.0"));
  EXPECT_EQ(stats.failed, 0) << absl::StrJoin(stats.failure_samples, "; ");
  EXPECT_GT(stats.served, 1000);
  EXPECT_EQ(stats.bodies.size(), 1u) << "only blue may answer";
  ExpectOnly("hello from web 1.0.0");
  // Green is left for inspection; blue runs on.
  std::string names = WebContainers();
  EXPECT_EQ(CountOf(names, "-web-green-"), 2) << names;
  EXPECT_EQ(CountOf(names, "-web-blue-"), 2) << names;
  auto cutover = fleet_->Hoist({"cutover", "--back"});
  ASSERT_TRUE(cutover.ok());
  EXPECT_NE(cutover->exit_code, 0);
  EXPECT_THAT(cutover->stdout_text + cutover->stderr_text,
              ::testing::HasSubstr("has no blue-green rollout in its grace period"));
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

  // Starts web and the proxy (publishing its route on 127.0.0.1:port) and
  // routes "web" to the web container through the proxy's runtime API.
  void StartWebBehindTheProxy(uint16_t port) {
    hoist::v1::StepResult web = executor_->Run(Start("web", web_image_, 0), nullptr);
    ASSERT_EQ(web.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << web.message();
    hoist::v1::StepResult proxy = executor_->Run(Start("proxy", proxy_image_, port), nullptr);
    ASSERT_EQ(proxy.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << proxy.message();
    web_name_ = web.start().container_name();
    proxy_name_ = proxy.start().container_name();
    hoist::v1::StepResult good = executor_->Run(Update("good", "web", web_name_), nullptr);
    ASSERT_EQ(good.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << good.message();
  }

  std::unique_ptr<DockerEnv> env_;
  std::string dir_, web_image_, proxy_image_, deployment_;
  std::string web_name_, proxy_name_;  // StartWebBehindTheProxy's containers
  agent::AgentPolicy policy_;
  docker::DockerClient docker_;
  std::unique_ptr<agent::StepJournal> journal_;
  std::unique_ptr<agent::StepExecutor> executor_;
};

TEST_F(ProxyStepsE2eTest, UnknownRouteFailsTheStepAndLeavesTheProxyServing) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok());
  ASSERT_NO_FATAL_FAILURE(StartWebBehindTheProxy(*port));
  const std::string& web_name = web_name_;
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

// True when a TCP connection to ip:port succeeds within two seconds.
bool TcpConnects(const std::string& ip, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

TEST_F(ProxyStepsE2eTest, TheRuntimeApiIsAUnixSocketOnlyTheAgentReaches) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok());
  // The agent drives the proxy (through the socket in its state directory).
  ASSERT_NO_FATAL_FAILURE(StartWebBehindTheProxy(*port));
  const std::string& name = proxy_name_;
  auto ip = env_->Docker({"inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name});
  ASSERT_TRUE(ip.ok()) << ip.status();
  const std::string proxy_ip(absl::StripAsciiWhitespace(*ip));
  ASSERT_FALSE(proxy_ip.empty());
  // What any container on the proxy's network sees: the routes answer, the
  // runtime API port does not exist.
  EXPECT_TRUE(TcpConnects(proxy_ip, 8080)) << "the proxy's frontend should answer on " << proxy_ip;
  EXPECT_FALSE(TcpConnects(proxy_ip, agent::kHaproxyRuntimePort))
      << "HAProxy's runtime API answers on the proxy's network address " << proxy_ip;
  auto ports = env_->Docker({"port", name});
  ASSERT_TRUE(ports.ok());
  EXPECT_THAT(*ports, ::testing::Not(::testing::HasSubstr("9999")));
  // The socket's directory is the agent's alone.
  struct stat st {};
  ASSERT_EQ(stat(absl::StrCat(dir_, "/state/proxy-api/", name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

}  // namespace
}  // namespace hoist::testing

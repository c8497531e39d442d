// Hoist on hosts that are really separate: each test host is a network
// namespace with its own address and its own dockerd (deploy/lib/hosts.sh),
// the registry, the controllers' Postgres and hoistd run in namespaces of
// their own, and every host pulls its images from the registry over the
// test network. Label multihost (and e2e); root only.

#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "shared/http_client.h"
#include "shared/subprocess.h"
#include "tests/bench/loadgen.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/reference_stack.h"
#include "tests/fixtures/test_env.h"
#include "tests/fixtures/test_hosts.h"
#include "tests/fixtures/under_load.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Runs docker against one test host's daemon.
absl::StatusOr<std::string> DockerOn(const TestNode& node, std::vector<std::string> args) {
  args.insert(args.begin(), {"docker", "-H", node.docker_host});
  auto r = RunCommand(args, {.timeout = absl::Minutes(2)});
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError(absl::StrCat(QuoteArgv(args), ": ", r->stderr_text));
  return r->stdout_text;
}

std::set<std::string> Lines(const std::string& text) {
  std::set<std::string> out;
  for (absl::string_view l : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    out.insert(std::string(absl::StripAsciiWhitespace(l)));
  }
  return out;
}

TEST(TestHostsTest, HostsAreSeparateAndTeardownLeavesNothing) {
  HOIST_REQUIRE_REAL_PART(TestHosts::Available());
  auto hosts = TestHosts::Start({.nodes = {"reg:docker", "host-1:docker", "host-2:docker"}, .registry_node = "reg"});
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  std::cout << "test hosts: 3 daemons and a registry up in " << (*hosts)->start_seconds() << " s\n";
  const TestNode& h1 = (*hosts)->node("host-1");
  const TestNode& h2 = (*hosts)->node("host-2");
  EXPECT_NE(h1.engine_id, h2.engine_id) << "two hosts report one Docker engine";
  EXPECT_NE(h1.address, h2.address);

  // An image pushed from the build host is on no test host until one pulls it.
  auto env = DockerEnv::Start({.docker_host = (*hosts)->node("reg").docker_host, .registry = (*hosts)->registry()});
  ASSERT_TRUE(env.ok()) << env.status();
  auto image = (*env)->BuildTestImage("solo", "1.0.0");
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_TRUE(DockerOn(h1, {"pull", "-q", *image}).ok());
  auto on_h1 = DockerOn(h1, {"images", "-q", *image});
  auto on_h2 = DockerOn(h2, {"images", "-q", *image});
  ASSERT_TRUE(on_h1.ok() && on_h2.ok());
  EXPECT_FALSE(Lines(*on_h1).empty()) << "host-1 pulled it";
  EXPECT_TRUE(Lines(*on_h2).empty()) << "host-2 never pulled it, yet has it";

  // A container on host-1 is served at host-1's address and seen by host-1's daemon only.
  auto id = DockerOn(h1, {"run", "-d", "-p", absl::StrCat(h1.address, ":18080:8080"), *image});
  ASSERT_TRUE(id.ok()) << id.status();
  auto ps2 = DockerOn(h2, {"ps", "-q"});
  ASSERT_TRUE(ps2.ok());
  EXPECT_TRUE(Lines(*ps2).empty()) << "host-2's daemon lists host-1's container";
  // host-2 reaches it over the test network.
  std::string body;
  Eventually(
      absl::Seconds(20),
      [&] {
        auto r = RunCommand(h2.Inside({"curl", "-s", "-m", "2", absl::StrCat("http://", h1.address, ":18080/health")}),
                            {.timeout = absl::Seconds(5)});
        if (r.ok() && absl::StrContains(r->stdout_text, "1.0.0")) body = r->stdout_text;
        return !body.empty();
      },
      absl::Milliseconds(100));
  EXPECT_THAT(body, HasSubstr("\"version\":\"1.0.0\"")) << "host-2 could not reach host-1's container";

  env->reset();
  // Stop() checks that no namespace, veth, bridge, daemon, mount or directory is left.
  absl::Status stopped = (*hosts)->Stop();
  EXPECT_TRUE(stopped.ok()) << stopped;
}

// Separate test hosts (each "NAME:docker" node its own dockerd), a build
// daemon with the registry on node reg, Postgres in node pg, and later a
// fleet; all torn down after the test, which checks that nothing is left.
class SeparateHostsTest : public ::testing::Test {
 protected:
  void StartHosts(const std::vector<std::string>& nodes) {
    HOIST_REQUIRE_REAL_PART(TestHosts::Available());
    auto hosts = TestHosts::Start({.nodes = nodes, .registry_node = "reg"});
    ASSERT_TRUE(hosts.ok()) << hosts.status();
    hosts_ = std::move(*hosts);
    int daemons = 0;
    for (const std::string& n : nodes) daemons += absl::EndsWith(n, ":docker") ? 1 : 0;
    std::cout << "test hosts: " << daemons << " daemons, a registry and " << nodes.size() - daemons
              << " more nodes up in " << hosts_->start_seconds() << " s\n";
    auto env = DockerEnv::Start({.docker_host = hosts_->node("reg").docker_host, .registry = hosts_->registry()});
    ASSERT_TRUE(env.ok()) << env.status();
    env_ = std::move(*env);
    const TestNode& pg_node = hosts_->node("pg");
    auto pg = PostgresCluster::Start({.netns = pg_node.netns, .listen_address = pg_node.address});
    HOIST_REQUIRE_REAL_PART(pg.status());
    pg_ = std::move(*pg);
  }

  // Finds the line of `out` that holds `label` followed by a hoist command
  // (or starts with `label` when it begins with "hoist "), and runs that
  // command exactly as printed (it must succeed).
  std::string RunPrinted(const std::string& out, const std::string& label) {
    const bool whole = absl::StartsWith(label, "hoist ");
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      size_t at = line.find(label);
      if (at == absl::string_view::npos) continue;
      absl::string_view command = absl::StripAsciiWhitespace(line.substr(whole ? at : at + label.size()));
      std::vector<std::string> argv = absl::StrSplit(command, ' ', absl::SkipEmpty());
      if (argv.empty() || argv[0] != "hoist") break;
      argv.erase(argv.begin());
      std::cout << "running the printed command: " << command << "\n";
      return fleet_->MustHoist(argv, absl::Minutes(5));
    }
    ADD_FAILURE() << "no \"" << label << "hoist ...\" line in:\n" << out;
    return "";
  }

  void TearDown() override {
    if (fleet_ != nullptr) fleet_->set_dump_logs_at_exit(HasFailure());
    fleet_.reset();
    pg_.reset();
    env_.reset();
    if (hosts_ != nullptr) {
      absl::Status s = hosts_->Stop();
      EXPECT_TRUE(s.ok()) << s;
    }
  }

  std::unique_ptr<TestHosts> hosts_;
  std::unique_ptr<DockerEnv> env_;
  std::unique_ptr<PostgresCluster> pg_;
  std::unique_ptr<HoistFleet> fleet_;
};

constexpr char kStack[] = R"(deployment: DEPLOYMENT
network: DEPLOYMENT
hosts:
  - {id: host-1, address: ADDR1, labels: {tier: app}}
  - {id: host-2, address: ADDR2, labels: {tier: app}}
  - {id: host-3, address: ADDR3, labels: {tier: app}}
services:
  api:
    role: api
    repository: REGISTRY/hoist-test/api
    placement:
      hosts: [host-2]
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 100ms
      deadline: 30s
    stop_timeout: 5s
  worker:
    role: worker
    repository: REGISTRY/hoist-test/worker
    replicas: 3
    placement:
      labels: {tier: app}
      distinct_hosts: true
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 100ms
      deadline: 30s
    stop_timeout: 5s
    rolling:
      max_parallel: 3
  scheduler:
    role: scheduler
    repository: REGISTRY/hoist-test/scheduler
    placement:
      hosts: [host-1]
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 100ms
      deadline: 30s
    stop_timeout: 5s
  web:
    role: web
    repository: REGISTRY/hoist-test/web
    replicas: 2
    placement:
      hosts: [host-1, host-2]
      distinct_hosts: true
    ports: [WEB_PORTS]
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 100ms
      deadline: 30s
    stop_timeout: 5s
  proxy:
    role: proxy
    image: PROXY_IMAGE
    placement:
      hosts: [host-3]
    ports: ["ADDR3:18000:8080"]
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
    drain_timeout: 5s
    health:
      tcp: {port: 8080}
      interval: 100ms
      deadline: 30s
    stop_timeout: 5s
)";

class MultiHostE2eTest : public SeparateHostsTest {
 protected:
  void SetUp() override {
    // The crashed-host case runs only when asked (see its test): skipped
    // here, before the hosts are made, so that a skip costs nothing.
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    if (name == "HostCrashedMidUpgradeBootsAgainAndTheUpgradeFinishes" && std::getenv("HOIST_TEST_CRASH") == nullptr) {
      GTEST_SKIP() << "set HOIST_TEST_CRASH=1 to run it (tests/bench/chaos.sh --faults host_crash covers crashes)";
    }
    ASSERT_NO_FATAL_FAILURE(
        StartHosts({"reg:docker", "pg", "ctl-1", "ctl-2", "host-1:docker", "host-2:docker", "host-3:docker"}));
    deployment_ = absl::StrCat("mh-", getpid());
    for (const char* service : {"api", "worker", "scheduler", "web"}) {
      for (const char* v : {"1.0.0", "1.1.0"}) {
        auto image = env_->BuildTestImage(service, v);
        ASSERT_TRUE(image.ok()) << image.status();
      }
    }
    auto proxy_image = env_->BuildProxyImage();
    HOIST_REQUIRE_REAL_PART(proxy_image.status());
    values_ = {{"DEPLOYMENT", deployment_},
               {"REGISTRY", env_->registry()},
               {"PROXY_IMAGE", *proxy_image},
               {"ADDR1", hosts_->node("host-1").address},
               {"ADDR2", hosts_->node("host-2").address},
               {"ADDR3", hosts_->node("host-3").address}};
  }

  // hoistd replicas in nodes ctl-1.., and an agent in each of host-1..3.
  void StartFleet(int controllers) {
    auto fleet = HoistFleet::Start(
        env_.get(), pg_.get(),
        {.deployment = deployment_,
         .agents = {{"host-1", "tier=app"}, {"host-2", "tier=app"}, {"host-3", "tier=app"}},
         .controllers = controllers,
         .hosts = hosts_.get()});
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
  }

  // The stack filled with `values` as `file`, and releases 1.0.0 and 1.1.0;
  // runs the "Next:" command release create printed, as printed.
  void ApplyStack(std::map<std::string, std::string> values, const std::string& file = "stack.yaml",
                  bool run_next = true) {
    fleet_->MustHoist({"apply", fleet_->WriteFile(file, FillTemplate(kStack, values))});
    for (const char* v : {"1.0.0", "1.1.0"}) {
      values["VERSION"] = v;
      std::string out = fleet_->MustHoist(
          {"release", "create",
           fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kReferenceRelease, values))});
      if (run_next && std::string(v) == "1.0.0") RunPrinted(out, "Next: ");
    }
  }

  // `controllers` hoistd replicas, the stack with web on ports Docker
  // chooses, 1.0.0 deployed and answering through the proxy on host-3.
  void DeployWithChosenPorts(int controllers) {
    ASSERT_NO_FATAL_FAILURE(StartFleet(controllers));
    auto values = values_;
    values["WEB_PORTS"] = "{container: 8080}";
    ApplyStack(values);
    fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
    WaitForProxyBody("hello from web 1.0.0");
  }

  // The stack with web on a fixed host port.
  void ApplyWiredStack() {
    auto values = values_;
    values["WEB_PORTS"] = "\"18080:8080\"";
    ApplyStack(values);
  }

  // The tags of the deployment's images on one host's daemon (not the
  // forwarder's, which the agent makes there itself).
  std::set<std::string> ImagesOn(const std::string& host) {
    auto out = DockerOn(hosts_->node(host), {"images", "--format", "{{.Repository}}:{{.Tag}}"});
    EXPECT_TRUE(out.ok()) << out.status();
    std::set<std::string> images = out.ok() ? Lines(*out) : std::set<std::string>{};
    std::erase_if(images, [](const std::string& i) { return absl::StartsWith(i, "hoist-forward:"); });
    return images;
  }

  // A container on `host`'s daemon, on the deployment's network, to call
  // services by name from (the test image of `service` at 1.0.0, pulled
  // there already); returns its name.
  std::string StartCaller(const std::string& host, const std::string& service) {
    const std::string name = absl::StrCat(deployment_, "-caller-", host);
    auto id = DockerOn(hosts_->node(host), {"run", "-d", "--name", name, "--network", deployment_, "--label",
                                            env_->label(), Image(service, "1.0.0"), "--port", "9999"});
    EXPECT_TRUE(id.ok()) << id.status();
    return name;
  }

  // GET url from inside the caller container on `host`: the body, or the error.
  absl::StatusOr<std::string> GetFrom(const std::string& host, const std::string& caller, const std::string& url) {
    auto out = DockerOn(hosts_->node(host), {"exec", caller, "/testsvc", "get", url});
    if (!out.ok()) return out.status();
    return std::string(absl::StripAsciiWhitespace(*out));
  }

  // What the proxy on host-3 answers, asked from this process over the test network.
  std::string ThroughProxy() {
    auto r = RunCommand({"curl", "-s", "-m", "2", absl::StrCat("http://", hosts_->node("host-3").address, ":18000/")},
                        {.timeout = absl::Seconds(5)});
    return r.ok() ? std::string(absl::StripAsciiWhitespace(r->stdout_text)) : "";
  }

  // Waits up to 30 s for the proxy to answer `body`.
  void WaitForProxyBody(const std::string& body) {
    EXPECT_TRUE(EventuallyHolds(
        absl::StrCat("the proxy on host-3 to answer \"", body, "\""), absl::Seconds(30), [&] { return ThroughProxy(); },
        [&](const std::string& answer) { return answer == body; }, absl::Milliseconds(100)));
  }

  std::string Image(const std::string& service, const std::string& version) {
    return absl::StrCat(env_->registry(), "/hoist-test/", service, ":", version);
  }

  std::string deployment_;
  std::map<std::string, std::string> values_;
};

TEST_F(MultiHostE2eTest, StackAcrossThreeDaemonsDeploysAndUpgradesPullingOnEachHost) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  // Three agents, three engines, each at its own address.
  auto agents = nlohmann::json::parse(fleet_->MustHoist({"agents", "--output", "json"}), nullptr, false);
  ASSERT_TRUE(agents.is_object()) << agents.dump();
  std::set<std::string> engines;
  for (const auto& a : agents["agents"]) {
    const std::string id = a.value("id", "");
    EXPECT_EQ(a.value("dockerEngineId", ""), hosts_->node(id).engine_id) << id;
    EXPECT_EQ(a.value("address", ""), hosts_->node(id).address) << id;
    engines.insert(a.value("dockerEngineId", ""));
  }
  EXPECT_EQ(engines.size(), 3u) << agents.dump();

  // web behind a proxy on another host, on hosts whose address is a name
  // Docker cannot bind a port to: refused by plan with the fix, before
  // anything is touched.
  auto values = values_;
  values["WEB_PORTS"] = "{container: 8080}";
  values["ADDR1"] = "host-1.internal";
  values["ADDR2"] = "host-2.internal";
  ApplyStack(values, "unwired.yaml", /*run_next=*/false);  // its plan is refused, below
  auto refused = fleet_->Hoist({"plan", "1.0.0"});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 1) << refused->stdout_text << refused->stderr_text;
  EXPECT_THAT(refused->stderr_text,
              HasSubstr("services.proxy.routes.web sends traffic to web:8080, which runs on another Docker host than "
                        "the proxy (host-3), and these hosts have no IP address to publish it on: host-1 "
                        "(\"host-1.internal\"), host-2 (\"host-2.internal\")"));
  EXPECT_THAT(refused->stderr_text, HasSubstr("Give each host its IP in hosts[].address"));
  for (const char* host : {"host-1", "host-2", "host-3"}) {
    EXPECT_TRUE(ImagesOn(host).empty()) << host << " pulled although the plan was refused";
  }

  // With the hosts' addresses: each web replica publishes 8080 on a port
  // Docker chooses, on its own host's address, and the proxy on host-3
  // reaches it there.
  values["ADDR1"] = values_["ADDR1"];
  values["ADDR2"] = values_["ADDR2"];
  fleet_->MustHoist({"apply", fleet_->WriteFile("stack.yaml", FillTemplate(kStack, values))});
  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  WaitForProxyBody("hello from web 1.0.0");
  for (const char* host : {"host-1", "host-2"}) {
    auto ports = DockerOn(hosts_->node(host), {"ps", "--filter", "label=hoist.service=web", "--format", "{{.Ports}}"});
    ASSERT_TRUE(ports.ok()) << ports.status();
    EXPECT_THAT(*ports, HasSubstr(absl::StrCat(hosts_->node(host).address, ":"))) << host;
    EXPECT_THAT(*ports, HasSubstr("->8080/tcp")) << host;
    EXPECT_THAT(*ports, Not(HasSubstr("0.0.0.0"))) << host << ": published on every interface";
  }

  // Each host pulled what it runs, and only that.
  EXPECT_EQ(ImagesOn("host-1"), (std::set<std::string>{Image("worker", "1.0.0"), Image("scheduler", "1.0.0"),
                                                       Image("web", "1.0.0")}));
  EXPECT_EQ(ImagesOn("host-2"),
            (std::set<std::string>{Image("worker", "1.0.0"), Image("api", "1.0.0"), Image("web", "1.0.0")}));
  EXPECT_EQ(ImagesOn("host-3"), (std::set<std::string>{Image("worker", "1.0.0"), values_["PROXY_IMAGE"]}));

  // The upgrade replaces web start-first on hosts the proxy does not run
  // on, under load through the proxy: nothing fails.
  bench::LoadGenerator load(
      {.host = hosts_->node("host-3").address, .port = 18000, .connections = 8, .rate_per_second = 200});
  load.Start();
  // The baseline must already be clean: two seconds' worth of answers, none failed.
  ASSERT_TRUE(LetRequestsThrough(load, 400));
  EXPECT_EQ(load.Snapshot().failed, 0) << "requests failed before the upgrade began";
  std::string out = fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  // And two seconds' worth more once it is done.
  EXPECT_TRUE(LetRequestsThrough(load, 400));
  bench::LoadStats stats = load.Stop();
  std::cout << "load through the proxy on host-3 during the upgrade: " << stats.served << " served, " << stats.failed
            << " failed, p99 " << stats.p99_ms << " ms\n";
  EXPECT_EQ(stats.failed, 0) << "first reasons: " << absl::StrJoin(stats.failure_samples, "; ") << "\n" << out;
  EXPECT_GT(stats.served, 500) << "the load generator stalled";
  EXPECT_EQ(stats.first_body, "hello from web 1.0.0");
  EXPECT_EQ(stats.last_body, "hello from web 1.1.0");
  WaitForProxyBody("hello from web 1.1.0");
  std::string matrix = fleet_->MustHoist({"matrix"});
  EXPECT_THAT(matrix, Not(HasSubstr("1.0.0"))) << matrix;
  EXPECT_THAT(matrix, HasSubstr(hosts_->node("host-2").address)) << "the matrix shows each host's address";
  EXPECT_THAT(matrix, Not(HasSubstr("skew"))) << matrix;
  for (const char* host : {"host-1", "host-2", "host-3"}) {
    std::set<std::string> images = ImagesOn(host);
    EXPECT_TRUE(images.count(Image("worker", "1.1.0"))) << host << " never pulled worker 1.1.0";
    auto running = DockerOn(hosts_->node(host), {"ps", "--filter", absl::StrCat("label=hoist.deployment=", deployment_),
                                                 "--format", "{{.Image}}"});
    ASSERT_TRUE(running.ok()) << running.status();
    for (const std::string& image : Lines(*running)) {
      if (image == values_["PROXY_IMAGE"]) continue;  // pinned by the manifest, not versioned by releases
      if (absl::StartsWith(image, "hoist-forward:")) continue;  // the agent's own forwarders
      EXPECT_THAT(image, HasSubstr(":1.1.0")) << host;
    }
  }
  auto on_h2 = DockerOn(hosts_->node("host-2"), {"ps", "--filter", "label=hoist.service=api", "--format", "{{.Image}}"});
  ASSERT_TRUE(on_h2.ok());
  EXPECT_EQ(Lines(*on_h2), (std::set<std::string>{Image("api", "1.1.0")})) << "the api runs on host-2 only";
}

// Services reach each other by name whatever host they run on: on each
// Docker host where a service does not run, the agent keeps a forwarder
// with the service's name that relays to its instances on the other hosts,
// and the rollout points it at each new instance before the old one stops.
TEST_F(MultiHostE2eTest, ServicesReachEachOtherByNameAcrossHosts) {
  ASSERT_NO_FATAL_FAILURE(DeployWithChosenPorts(1));
  // api runs on host-2 only; web on host-1 and host-2; the scheduler on host-1.
  const std::string caller1 = StartCaller("host-1", "web");
  const std::string caller3 = StartCaller("host-3", "worker");
  auto api = GetFrom("host-1", caller1, "http://api:8080/");
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(*api, "hello from api 1.0.0") << "host-1 reaches api on host-2 by its name";
  auto web = GetFrom("host-3", caller3, "http://web:8080/");
  ASSERT_TRUE(web.ok()) << web.status();
  EXPECT_EQ(*web, "hello from web 1.0.0") << "host-3 reaches web on host-1 and host-2 by its name";
  auto scheduler = GetFrom("host-3", caller3, "http://scheduler:8080/");
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  EXPECT_EQ(*scheduler, "hello from scheduler 1.0.0");
  // A forwarder where the service does not run, none where it does.
  auto forwarders = [&](const std::string& host) {
    auto out = DockerOn(hosts_->node(host), {"ps", "--filter", absl::StrCat("label=hoist.deployment=", deployment_),
                                             "--filter", "label=hoist.forward", "--format",
                                             "{{.Label \"hoist.forward\"}}"});
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? Lines(*out) : std::set<std::string>{};
  };
  EXPECT_EQ(forwarders("host-1"), (std::set<std::string>{"api", "proxy"}));
  EXPECT_EQ(forwarders("host-2"), (std::set<std::string>{"scheduler", "proxy"}));
  EXPECT_EQ(forwarders("host-3"), (std::set<std::string>{"api", "scheduler", "web"}));

  // Calls by name from host-1 to api on host-2 while api is replaced
  // start-first (its new instance on a new port): none fails.
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0};
  std::vector<std::string> errors;
  std::set<std::string> bodies;
  std::thread calls([&] {
    while (!stop.load()) {
      auto r = GetFrom("host-1", caller1, "http://api:8080/");
      if (r.ok()) {
        ++served;
        bodies.insert(*r);
      } else {
        ++failed;
        if (errors.size() < 5) errors.push_back(std::string(r.status().message()));
      }
    }
  });
  std::string out = fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  // A few more calls once the upgrade is done.
  const int before_end = served + failed;
  EXPECT_TRUE(EventuallyHolds(
      "three more calls by name once the upgrade is done", absl::Seconds(30),
      [&] { return served + failed - before_end; }, [](int more) { return more >= 3; }));
  stop = true;
  calls.join();
  std::cout << "calls by name from host-1 to api on host-2 during the upgrade: " << served << " served, " << failed
            << " failed\n";
  EXPECT_EQ(failed, 0) << absl::StrJoin(errors, "\n") << "\n" << out;
  EXPECT_GT(served, 5);
  EXPECT_TRUE(bodies.contains("hello from api 1.0.0") && bodies.contains("hello from api 1.1.0"))
      << absl::StrJoin(bodies, ", ");
  api = GetFrom("host-1", caller1, "http://api:8080/");
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(*api, "hello from api 1.1.0");
  web = GetFrom("host-3", caller3, "http://web:8080/");
  ASSERT_TRUE(web.ok()) << web.status();
  EXPECT_EQ(*web, "hello from web 1.1.0");
  EXPECT_THAT(out, HasSubstr("point api:8080 on host-1")) << "the plan names the forwarder steps";
  for (const auto& [host, caller] : {std::pair{"host-1", caller1}, std::pair{"host-3", caller3}}) {
    EXPECT_TRUE(DockerOn(hosts_->node(host), {"rm", "-f", caller}).ok());
  }
}

// deploy/examples/piprio.yaml and rat.yaml as they are, with only what must
// differ here replaced: registry and image names, host addresses, env and
// config files, and the commands the test images provide under other names
// (psql for Piprio's Python migration runner and pg_isready, testsvc for the
// scheduler's check and the smoke tests). Each host id is a separate host
// with its own dockerd.
class ExampleStacksE2eTest : public SeparateHostsTest {
 protected:
  // db_user: the superuser of a Postgres image built for the stack; empty: none.
  void StartExampleHosts(const std::vector<std::string>& hosts, const std::string& db_user) {
    if (!db_user.empty()) HOIST_REQUIRE_REAL_PART(DockerEnv::PostgresImagePrerequisites());
    std::vector<std::string> nodes = {"reg:docker", "pg", "ctl-1"};
    for (const std::string& h : hosts) nodes.push_back(h + ":docker");
    ASSERT_NO_FATAL_FAILURE(StartHosts(nodes));
    if (!db_user.empty()) {
      auto db = env_->BuildPostgresImage(db_user);
      ASSERT_TRUE(db.ok()) << db.status();
      db_image_ = *db;
    }
    auto proxy = env_->BuildProxyImage();
    HOIST_REQUIRE_REAL_PART(proxy.status());
    proxy_image_ = *proxy;
  }

  // The fleet, with each agent labelled as the manifest labels its host.
  void StartFleet(const std::string& deployment, const std::vector<std::pair<std::string, std::string>>& agents) {
    auto fleet = HoistFleet::Start(env_.get(), pg_.get(),
                                   {.deployment = deployment, .agents = agents, .hosts = hosts_.get()});
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
  }

  // A test image of the example's service `name` (tagged <deployment>-<name>)
  // at each of versions_; with migrations (version -> SQL), on the
  // database image, for its psql.
  void BuildImage(const std::string& deployment, const std::string& name, const std::string& port,
                  const std::map<std::string, const char*>& migrations = {},
                  std::map<std::string, std::string> env = {}) {
    for (const std::string& v : versions_) {
      const std::string image = absl::StrCat(deployment, "-", name);
      if (port != "8080") env["TESTSVC_PORT"] = port;
      absl::StatusOr<std::string> built =
          migrations.empty() ? env_->BuildTestImage(image, v, env)
                             : env_->BuildTestImageOn(db_image_, image, v, env, {{"/migrations.sql", migrations.at(v)}});
      ASSERT_TRUE(built.ok()) << built.status();
    }
  }

  // The example file with `replace` applied, every key required to match.
  std::string Example(const std::string& file, const std::vector<std::pair<std::string, std::string>>& replace) {
    std::ifstream in(std::string(HOIST_SOURCE_DIR) + "/deploy/examples/" + file);
    std::stringstream text;
    text << in.rdbuf();
    std::string out = text.str();
    EXPECT_FALSE(out.empty()) << file;
    for (const auto& [from, to] : replace) {
      EXPECT_THAT(out, HasSubstr(from)) << file << " no longer has " << from;
      out = absl::StrReplaceAll(out, {{from, to}});
    }
    return out;
  }

  // Applies the stack and creates a release at each of versions_ from the
  // example's release file (whose own version is release_version).
  void Apply(const std::string& stack, const std::string& release_file,
             const std::vector<std::pair<std::string, std::string>>& release_replace,
             const std::string& release_version = "1.1.0") {
    fleet_->MustHoist({"apply", fleet_->WriteFile("stack.yaml", stack)});
    for (const std::string& v : versions_) {
      auto replace = release_replace;
      replace.emplace_back(release_version, v);
      fleet_->MustHoist({"release", "create",
                         fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), Example(release_file, replace))});
    }
  }

  // psql in the database container on `host`: the rows' text.
  std::string Sql(const std::string& host, const std::string& deployment, const std::string& database,
                  const std::string& sql) {
    auto names = DockerOn(hosts_->node(host), {"ps", "-q", "--filter", "label=hoist.service=postgres", "--filter",
                                               absl::StrCat("label=hoist.deployment=", deployment)});
    EXPECT_TRUE(names.ok() && !Lines(*names).empty()) << "no postgres container on " << host;
    if (!names.ok() || Lines(*names).empty()) return "";
    auto out = DockerOn(hosts_->node(host), {"exec", *Lines(*names).begin(), "/usr/lib/postgresql/15/bin/psql", "-At",
                                             "-d", database, "-c", sql});
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : "";
  }

  // The images of containers of `deployment` running on `host`, forwarders aside.
  std::set<std::string> RunningImages(const std::string& host, const std::string& deployment) {
    auto out = DockerOn(hosts_->node(host), {"ps", "--filter", absl::StrCat("label=hoist.deployment=", deployment),
                                             "--filter", "label=hoist.service", "--format", "{{.Image}}"});
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? Lines(*out) : std::set<std::string>{};
  }

  std::string Get(const std::string& host, int port) {
    auto r = RunCommand({"curl", "-s", "-m", "2", absl::StrCat("http://", hosts_->node(host).address, ":", port, "/")},
                        {.timeout = absl::Seconds(5)});
    return r.ok() ? std::string(absl::StripAsciiWhitespace(r->stdout_text)) : "";
  }

  // The files in `path` of the running container of `service` on `host`:
  // relative name -> bytes.
  std::map<std::string, std::string> FilesIn(const std::string& host, const std::string& service,
                                             const std::string& path) {
    std::map<std::string, std::string> out;
    auto id = DockerOn(hosts_->node(host), {"ps", "-q", "--filter", absl::StrCat("label=hoist.service=", service)});
    EXPECT_TRUE(id.ok() && Lines(*id).size() == 1) << "one running " << service << " on " << host;
    if (!id.ok() || Lines(*id).size() != 1) return out;
    const std::string dir = fleet_->dir() + "/copy-" + std::to_string(++copies_);
    std::filesystem::create_directories(dir);
    EXPECT_TRUE(DockerOn(hosts_->node(host), {"cp", absl::StrCat(*Lines(*id).begin(), ":", path, "/."), dir}).ok());
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      out[std::filesystem::relative(e.path(), dir).string()] = bytes.str();
    }
    return out;
  }

  std::string db_image_, proxy_image_;
  std::vector<std::string> versions_ = {"1.0.0", "1.1.0"};
  int copies_ = 0;
};

// What the examples' migration runners and pg_isready checks become here:
// the psql of the test images (an api image sits on the database image).
constexpr char kPsqlMigration[] =
    "[exec, /usr/lib/postgresql/15/bin/psql, -h, postgres, -v, ON_ERROR_STOP=1, -f, /migrations.sql]";
constexpr char kPsqlCheck[] = "[psql, -At, -c, select 1]";

// Piprio's migrations: 1.0.0 creates the database and seeds it, 1.1.0 changes it.
constexpr char kPiprioMigration100[] =
    "SELECT 'CREATE DATABASE piprio' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'piprio')\\gexec\n"
    "\\c piprio\n"
    "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, v text NOT NULL);\n"
    "INSERT INTO items VALUES (1, 'seeded by 1.0.0') ON CONFLICT (id) DO NOTHING;\n";
constexpr char kPiprioMigration110[] =
    "\\c piprio\n"
    "ALTER TABLE items ADD COLUMN IF NOT EXISTS note text;\n"
    "UPDATE items SET v = 'changed by 1.1.0', note = 'new in 1.1.0' WHERE id = 1;\n";

// Four hosts: the proxy on edge-1, api, workers and web on app-1 and app-2,
// Postgres on db-1. api's migration reaches postgres:5432 on db-1 by name
// from app-1; the proxy reaches web and api on the app hosts.
TEST_F(ExampleStacksE2eTest, PiprioDeploysAndUpgradesOnFourSeparateHosts) {
  ASSERT_NO_FATAL_FAILURE(StartExampleHosts({"app-1", "app-2", "edge-1", "db-1"}, "piprio"));
  const std::string deployment = "piprio";
  ASSERT_NO_FATAL_FAILURE(
      BuildImage(deployment, "api", "8000", {{"1.0.0", kPiprioMigration100}, {"1.1.0", kPiprioMigration110}}));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "worker", "8080"));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "scheduler", "8080"));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "web", "3000"));
  ASSERT_NO_FATAL_FAILURE(StartFleet(
      deployment, {{"app-1", "tier=app"}, {"app-2", "tier=app"}, {"edge-1", "tier=edge"}, {"db-1", "tier=data"}}));
  const std::string registry = absl::StrCat(env_->registry(), "/hoist-test/piprio-");
  const std::string piprio_env =
      fleet_->WriteFile("piprio.env", "PIPRIO_SECRET_KEY=test-secret\nPIPRIO_OBJECT_STORE_URL=http://store\n");
  const std::string postgres_env = fleet_->WriteFile("postgres.env", "POSTGRES_PASSWORD=unused-trust-auth\n");
  const std::string stack = Example(
      "piprio.yaml",
      {{"registry.local:5000/piprio/", registry},
       {"registry.local:5000/haproxy:2.6.12", proxy_image_},
       {"registry.local:5000/postgres:15.4", db_image_},
       {"10.0.0.11", hosts_->node("app-1").address},
       {"10.0.0.12", hosts_->node("app-2").address},
       {"10.0.0.10", hosts_->node("edge-1").address},
       {"10.0.0.20", hosts_->node("db-1").address},
       {"/etc/piprio/piprio.env", piprio_env},
       {"/etc/piprio/postgres.env", postgres_env},
       {"[python, migrations/run_migrations.py]", kPsqlMigration},
       {"[piprio-scheduler, --check]", "[/testsvc, probe, \"http://127.0.0.1:8080/health\"]"},
       {"[pg_isready, -U, piprio]", kPsqlCheck},
       {"[python, scripts/smoke_test.py]", "[probe, \"http://api:8000/health\"]"}});
  Apply(stack, "piprio-release-1.1.0.yaml", {{"registry.local:5000/piprio/", registry}});

  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  // The migration ran from app-1 against postgres on db-1, by name.
  EXPECT_EQ(Sql("db-1", deployment, "piprio", "select v from items"), "seeded by 1.0.0");
  EXPECT_EQ(Get("edge-1", 80), "hello from piprio-web 1.0.0");
  EXPECT_EQ(Get("edge-1", 443), "hello from piprio-api 1.0.0");

  // Load through the proxy on edge-1 while everything behind it moves.
  bench::LoadGenerator load(
      {.host = hosts_->node("edge-1").address, .port = 80, .connections = 4, .rate_per_second = 100});
  load.Start();
  // A second's worth of answers before the upgrade and after it.
  ASSERT_TRUE(LetRequestsThrough(load, 100));
  std::string out = fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(8));
  EXPECT_TRUE(LetRequestsThrough(load, 100));
  bench::LoadStats stats = load.Stop();
  std::cout << "load through the proxy on edge-1 during the Piprio upgrade: " << stats.served << " served, "
            << stats.failed << " failed\n";
  EXPECT_EQ(stats.failed, 0) << absl::StrJoin(stats.failure_samples, "; ") << "\n" << out;
  EXPECT_EQ(stats.last_body, "hello from piprio-web 1.1.0");
  EXPECT_EQ(Sql("db-1", deployment, "piprio", "select v || '/' || note from items"), "changed by 1.1.0/new in 1.1.0");
  EXPECT_EQ(Get("edge-1", 443), "hello from piprio-api 1.1.0");
  // Each host runs what the manifest places there, at 1.1.0, pulled there.
  for (const char* host : {"app-1", "app-2"}) {
    std::set<std::string> images = RunningImages(host, deployment);
    EXPECT_TRUE(images.contains(registry + "api:1.1.0") && images.contains(registry + "web:1.1.0") &&
                images.contains(registry + "worker:1.1.0"))
        << host << ": " << absl::StrJoin(images, ", ");
    for (const std::string& i : images) EXPECT_THAT(i, HasSubstr(":1.1.0")) << host;
  }
  EXPECT_EQ(RunningImages("edge-1", deployment), (std::set<std::string>{proxy_image_}));
  EXPECT_EQ(RunningImages("db-1", deployment), (std::set<std::string>{db_image_}));
  EXPECT_THAT(fleet_->MustHoist({"backups"}), HasSubstr("piprio-pre-1.1.0"));

  // Back to 1.0.0: 1.1.0's migration ran, so a plain rollback is refused
  // with the command that restores the upgrade's backup; run as printed, it
  // brings back 1.0.0's data (on db-1) and images (on every host).
  auto refused = fleet_->Hoist({"rollback"});
  ASSERT_TRUE(refused.ok()) << refused.status();
  const std::string refusal = refused->stdout_text + refused->stderr_text;
  EXPECT_NE(refused->exit_code, 0) << refusal;
  EXPECT_THAT(refusal, HasSubstr("--restore piprio-pre-1.1.0")) << refusal;
  RunPrinted(refusal, "hoist rollback -d ");
  EXPECT_EQ(Sql("db-1", deployment, "piprio", "select v from items"), "seeded by 1.0.0");
  EXPECT_EQ(Get("edge-1", 443), "hello from piprio-api 1.0.0");
  for (const char* host : {"app-1", "app-2"}) {
    for (const std::string& i : RunningImages(host, deployment)) EXPECT_THAT(i, HasSubstr(":1.0.0")) << host;
  }
}

// Two hosts: everything of RAT on rat-1, its Postgres on rat-2. ratd (whose
// start-up migrations the test stands in for) reaches postgres:5432 on
// rat-2 by name; the must_match rules move ratd, runner, ratq and portal
// together.
TEST_F(ExampleStacksE2eTest, RatDeploysAndUpgradesOnTwoSeparateHosts) {
  ASSERT_NO_FATAL_FAILURE(StartExampleHosts({"rat-1", "rat-2"}, "rat"));
  const std::string deployment = "rat";
  // ratd sits on the database image for its psql.
  constexpr char kNoMigration[] = "SELECT 1;\n";
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "ratd", "8080", {{"1.0.0", kNoMigration}, {"1.1.0", kNoMigration}}));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "runner", "50052"));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "ratq", "50051"));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "portal", "3000"));
  ASSERT_NO_FATAL_FAILURE(StartFleet(deployment, {{"rat-1", "role=app"}, {"rat-2", "role=data"}}));
  const std::string registry = absl::StrCat(env_->registry(), "/hoist-test/rat-");
  const std::string rat_env = fleet_->WriteFile("rat.env", "RAT_SECRET=test\n");
  const std::string postgres_env = fleet_->WriteFile("postgres.env", "POSTGRES_PASSWORD=unused-trust-auth\n");
  const std::string stack =
      Example("rat.yaml", {{"registry.local:5000/rat/", registry},
                           {"registry.local:5000/postgres:16.2", db_image_},
                           {"10.0.1.11", hosts_->node("rat-1").address},
                           {"10.0.1.12", hosts_->node("rat-2").address},
                           {"/etc/rat/rat.env", rat_env},
                           {"/etc/rat/postgres.env", postgres_env},
                           {"[pg_isready, -U, rat]", kPsqlCheck},
                           {"[ratd, smoke-test]", "[probe, \"http://ratd:8080/health\"]"}});
  Apply(stack, "rat-release-1.1.0.yaml", {{"registry.local:5000/rat/", registry}});
  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  // What ratd does on its first start: its database, created from rat-1 by name.
  auto ratd = DockerOn(hosts_->node("rat-1"), {"ps", "-q", "--filter", "label=hoist.service=ratd"});
  ASSERT_TRUE(ratd.ok() && !Lines(*ratd).empty());
  auto created = DockerOn(hosts_->node("rat-1"), {"exec", *Lines(*ratd).begin(), "/testsvc", "exec",
                                                  "/usr/lib/postgresql/15/bin/psql", "-h", "postgres", "-c",
                                                  "CREATE DATABASE rat"});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(Sql("rat-2", deployment, "postgres", "select count(*) from pg_database where datname = 'rat'"), "1");
  EXPECT_EQ(Get("rat-1", 3000), "") << "portal publishes on rat-1's loopback only";

  std::string out = fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(8));
  EXPECT_THAT(out, HasSubstr("SUCCEEDED"));
  std::set<std::string> images = RunningImages("rat-1", deployment);
  EXPECT_EQ(images, (std::set<std::string>{registry + "ratd:1.1.0", registry + "runner:1.1.0", registry + "ratq:1.1.0",
                                          registry + "portal:1.1.0"}));
  EXPECT_EQ(RunningImages("rat-2", deployment), (std::set<std::string>{db_image_}));
  EXPECT_THAT(fleet_->MustHoist({"backups"}), HasSubstr("rat-pre-1.1.0"));
}

// Rack Gateway's migration (`rack-gateway-api migrate`) runs from the new
// image on gw-1 against postgres on db-1, by name, before any gateway moves.
constexpr char kGatewayMigration110[] =
    "SELECT 'CREATE DATABASE rack_gateway' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = "
    "'rack_gateway')\\gexec\n"
    "\\c rack_gateway\n"
    "CREATE TABLE IF NOT EXISTS racks (name text PRIMARY KEY);\n"
    "INSERT INTO racks VALUES ('production') ON CONFLICT DO NOTHING;\n";
constexpr char kGatewayMigration120[] =
    "\\c rack_gateway\n"
    "ALTER TABLE racks ADD COLUMN IF NOT EXISTS region text;\n"
    "UPDATE racks SET region = 'us-east-1';\n";

TEST_F(ExampleStacksE2eTest, RackGatewayMigratesThenRollsThreeGatewaysKeepingTwoServing) {
  versions_ = {"1.1.0", "1.2.0"};
  ASSERT_NO_FATAL_FAILURE(StartExampleHosts({"gw-1", "gw-2", "db-1"}, "rack_gateway"));
  const std::string deployment = "rack-gateway";
  ASSERT_NO_FATAL_FAILURE(
      BuildImage(deployment, "gateway", "8080", {{"1.1.0", kGatewayMigration110}, {"1.2.0", kGatewayMigration120}}));
  ASSERT_NO_FATAL_FAILURE(StartFleet(deployment, {{"gw-1", ""}, {"gw-2", ""}, {"db-1", ""}}));
  const std::string image = absl::StrCat(env_->registry(), "/hoist-test/rack-gateway-gateway");
  const std::string stack = Example(
      "rack-gateway.yaml",
      {{"docker.io/docspringcom/rack-gateway", image},
       {"docker.io/library/postgres:16.2", db_image_},
       {"10.0.2.11", hosts_->node("gw-1").address},
       {"10.0.2.12", hosts_->node("gw-2").address},
       {"10.0.2.20", hosts_->node("db-1").address},
       {"/etc/rack-gateway/gateway.env", fleet_->WriteFile("gateway.env", "SESSION_SECRET=test\n")},
       {"/etc/rack-gateway/postgres.env", fleet_->WriteFile("postgres.env", "POSTGRES_PASSWORD=unused\n")},
       {"[rack-gateway-api, migrate]", kPsqlMigration},
       {"[pg_isready, -U, rack_gateway]", kPsqlCheck}});
  Apply(stack, "rack-gateway-release-1.2.0.yaml", {{"docker.io/docspringcom/rack-gateway:v", image + ":"}}, "1.2.0");
  fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  EXPECT_EQ(Sql("db-1", deployment, "rack_gateway", "select name from racks"), "production");

  // The plan: the migration gate first, then one gateway at a time, each
  // new one healthy before an old one stops (so three serve throughout,
  // more than the two Rack Gateway asks for).
  std::string plan = fleet_->MustHoist({"plan", "1.2.0"});
  EXPECT_THAT(plan, HasSubstr("migrate-gateway")) << plan;
  EXPECT_THAT(plan, HasSubstr("1 at a time, never fewer than 3 healthy")) << plan;
  std::string out = fleet_->MustHoist({"upgrade", "1.2.0", "--yes"}, absl::Minutes(8));
  EXPECT_EQ(Sql("db-1", deployment, "rack_gateway", "select name || '/' || region from racks"),
            "production/us-east-1");
  EXPECT_EQ(RunningImages("gw-1", deployment), (std::set<std::string>{image + ":1.2.0"}));
  EXPECT_EQ(RunningImages("gw-2", deployment), (std::set<std::string>{image + ":1.2.0"}));
  auto count = DockerOn(hosts_->node("gw-1"), {"ps", "-q", "--filter", "label=hoist.service=gateway"});
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(Lines(*count).size(), 2u) << "replicas 0 and 2 on gw-1, replica 1 on gw-2";
  EXPECT_THAT(fleet_->MustHoist({"backups"}), HasSubstr("rack-gateway-pre-1.2.0"));
}

// RyTask's migrate job (role job) runs on app-1 against postgres on db-1 by
// name, before api and worker move; a failing one stops the rollout with
// api, worker and the data as they were.
constexpr char kRyTaskMigration100[] =
    "SELECT 'CREATE DATABASE rytask' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'rytask')\\gexec\n"
    "\\c rytask\n"
    "BEGIN;\n"
    "CREATE TABLE IF NOT EXISTS tasks (id int PRIMARY KEY, title text NOT NULL);\n"
    "INSERT INTO tasks VALUES (1, 'seeded by 1.0.0') ON CONFLICT DO NOTHING;\n"
    "COMMIT;\n";
constexpr char kRyTaskMigration110[] =
    "\\c rytask\n"
    "BEGIN;\n"
    "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS done boolean NOT NULL DEFAULT false;\n"
    "UPDATE tasks SET title = 'changed by 1.1.0' WHERE id = 1;\n"
    "COMMIT;\n";
constexpr char kRyTaskMigration120Broken[] =
    "\\c rytask\n"
    "BEGIN;\n"
    "UPDATE tasks SET title = 'changed by 1.2.0' WHERE id = 1;\n"
    "SELECT 1 / 0 AS migration_0031;\n"
    "COMMIT;\n";

TEST_F(ExampleStacksE2eTest, RyTaskRunsItsMigrateJobFirstAndAFailedOneChangesNothing) {
  versions_ = {"1.0.0", "1.1.0", "1.2.0"};
  ASSERT_NO_FATAL_FAILURE(StartExampleHosts({"app-1", "db-1"}, "rytask"));
  const std::string deployment = "rytask";
  ASSERT_NO_FATAL_FAILURE(BuildImage(
      deployment, "migrate", "8080",
      {{"1.0.0", kRyTaskMigration100}, {"1.1.0", kRyTaskMigration110}, {"1.2.0", kRyTaskMigration120Broken}}));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "api", "3000"));
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "worker", "8080"));
  ASSERT_NO_FATAL_FAILURE(StartFleet(deployment, {{"app-1", ""}, {"db-1", ""}}));
  const std::string registry = absl::StrCat(env_->registry(), "/hoist-test/rytask-");
  const std::string stack = Example(
      "rytask.yaml",
      {{"ghcr.io/rytask/", registry},
       {"docker.io/library/postgres:16.2", db_image_},
       {"10.0.3.11", hosts_->node("app-1").address},
       {"10.0.3.20", hosts_->node("db-1").address},
       {"/etc/rytask/rytask.env", fleet_->WriteFile("rytask.env", "AUTH_SECRET=test\n")},
       {"/etc/rytask/postgres.env", fleet_->WriteFile("postgres.env", "POSTGRES_PASSWORD=unused\n")},
       {"[node, packages/db/migrate.js]", kPsqlMigration},
       {"[pg_isready, -U, rytask]", kPsqlCheck}});
  Apply(stack, "rytask-release-1.1.0.yaml", {{"ghcr.io/rytask/", registry}});
  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  EXPECT_EQ(Sql("db-1", deployment, "rytask", "select title from tasks"), "seeded by 1.0.0");
  std::string plan = fleet_->MustHoist({"plan", "1.1.0"});
  EXPECT_LT(plan.find("run-migrate"), plan.find("replace-api")) << plan;
  fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  EXPECT_EQ(Sql("db-1", deployment, "rytask", "select title || '/' || done from tasks"), "changed by 1.1.0/false");
  EXPECT_EQ(RunningImages("app-1", deployment),
            (std::set<std::string>{registry + "api:1.1.0", registry + "worker:1.1.0"}));

  // 1.2.0's migration fails half-way: nothing else moves, the data is as it was.
  auto failed = fleet_->Hoist({"upgrade", "1.2.0", "--yes"}, absl::Minutes(5));
  ASSERT_TRUE(failed.ok()) << failed.status();
  const std::string failed_out = failed->stdout_text + failed->stderr_text;
  EXPECT_NE(failed->exit_code, 0) << failed_out;
  EXPECT_THAT(failed_out, HasSubstr("division by zero")) << failed_out;
  EXPECT_EQ(Sql("db-1", deployment, "rytask", "select title from tasks"), "changed by 1.1.0");
  EXPECT_EQ(RunningImages("app-1", deployment),
            (std::set<std::string>{registry + "api:1.1.0", registry + "worker:1.1.0"}));
  EXPECT_THAT(failed_out, HasSubstr("put back as before: record 1.1.0 as rytask's pinned version again")) << failed_out;
  EXPECT_THAT(fleet_->MustHoist({"status"}), HasSubstr("FAILED"));
}

// BetweenRows: one container whose /data its start-up migrations change.
// A rollback restores the /data the upgrade's backup held, byte for byte,
// with the older image.
TEST_F(ExampleStacksE2eTest, BetweenRowsRollsBackByRestoringItsDataVolumeByteForByte) {
  versions_ = {"0.16.1", "0.16.2"};
  ASSERT_NO_FATAL_FAILURE(StartExampleHosts({"br-1"}, ""));
  const std::string deployment = "betweenrows";
  ASSERT_NO_FATAL_FAILURE(BuildImage(deployment, "betweenrows", "5435", {},
                                     {{"TESTSVC_DATA_FILE", "/data/migrations.log"}}));
  ASSERT_NO_FATAL_FAILURE(StartFleet(deployment, {{"br-1", ""}}));
  const std::string image = absl::StrCat(env_->registry(), "/hoist-test/betweenrows-betweenrows");
  const std::string stack =
      Example("betweenrows.yaml",
              {{"ghcr.io/getbetweenrows/betweenrows", image},
               {"10.0.4.11", hosts_->node("br-1").address},
               {"/etc/betweenrows/betweenrows.env", fleet_->WriteFile("betweenrows.env", "BR_ADMIN_PASSWORD=t\n")}});
  Apply(stack, "betweenrows-release-0.16.2.yaml", {{"ghcr.io/getbetweenrows/betweenrows", image}}, "0.16.2");
  fleet_->MustHoist({"upgrade", "0.16.1", "--yes"}, absl::Minutes(5));
  const std::map<std::string, std::string> before = FilesIn("br-1", "betweenrows", "/data");
  EXPECT_EQ(before, (std::map<std::string, std::string>{{"migrations.log", "betweenrows-betweenrows 0.16.1 migrated\n"}}));

  fleet_->MustHoist({"upgrade", "0.16.2", "--yes"}, absl::Minutes(5));
  std::map<std::string, std::string> upgraded = FilesIn("br-1", "betweenrows", "/data");
  EXPECT_EQ(upgraded["migrations.log"],
            "betweenrows-betweenrows 0.16.1 migrated\nbetweenrows-betweenrows 0.16.2 migrated\n");

  // The downgrade BetweenRows documents: /data from the backup, the older image.
  auto backups = nlohmann::json::parse(fleet_->MustHoist({"backups", "--output", "json"}), nullptr, false);
  ASSERT_TRUE(backups.is_object() && backups["backups"].is_array() && backups["backups"].size() == 1u)
      << backups.dump();
  const std::string backup = backups["backups"][0].value("id", "");
  fleet_->MustHoist({"rollback", "--to", "0.16.1", "--restore", backup, "--confirm", deployment}, absl::Minutes(5));
  EXPECT_EQ(FilesIn("br-1", "betweenrows", "/data"), before) << "the volume is restored byte for byte";
  EXPECT_EQ(RunningImages("br-1", deployment), (std::set<std::string>{image + ":0.16.1"}));
}

// A release that requires an env var the stack keeps in an env file on the
// hosts: pre-flight asks the agents which names their env files set (values
// never leave the hosts), refuses while none does, and passes once the file
// on api's host sets it.
TEST_F(MultiHostE2eTest, RequiredEnvIsLookedUpInTheHostsEnvFilesByName) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  const std::string env_file = fleet_->WriteFile("api.env", "# the api's settings\nSHOP_MODE=test\n");
  auto values = values_;
  values["WEB_PORTS"] = "{container: 8080}";
  std::string stack = FillTemplate(kStack, values);
  stack = absl::StrReplaceAll(stack, {{"  api:\n    role: api\n",
                                       absl::StrCat("  api:\n    role: api\n    env_files: [", env_file, "]\n")}});
  fleet_->MustHoist({"apply", fleet_->WriteFile("stack.yaml", stack)});
  for (const char* v : {"1.0.0", "1.1.0"}) {
    values["VERSION"] = v;
    std::string release = FillTemplate(kReferenceRelease, values);
    if (std::string(v) == "1.1.0") release += "required_env: [SHOP_KEY]\n";
    fleet_->MustHoist({"release", "create", fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), release)});
  }
  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));

  // host-2's agent restarts: its memory of the http probes is gone, so the
  // inventory reports api and web there without a health result. Pre-flight
  // probes them again rather than refusing the upgrade.
  const absl::Status stopped = fleet_->Stop("host-2", SIGTERM, absl::Seconds(20));
  ASSERT_TRUE(stopped.ok()) << "host-2's agent did not stop within 20 s: " << stopped;
  const absl::Status restarted = fleet_->Restart("host-2");
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_TRUE(Eventually(
      absl::Seconds(30),
      [&] {
        auto agents = fleet_->Hoist({"agents", "--output", "json"});
        auto j = nlohmann::json::parse(agents.ok() ? agents->stdout_text : "", nullptr, false);
        bool back = false;
        if (j.is_object()) {
          for (const auto& a : j["agents"]) {
            back = back || (a.value("id", "") == "host-2" && a.value("connected", false));
          }
        }
        return back;
      },
      absl::Milliseconds(100)))
      << "host-2's agent did not reconnect within 30 s";

  auto refused = fleet_->Hoist({"plan", "1.1.0"});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 1) << refused->stdout_text << refused->stderr_text;
  EXPECT_THAT(refused->stderr_text,
              HasSubstr("release 1.1.0 requires SHOP_KEY, which no service's env and no host's env files set"));

  std::ofstream(env_file, std::ios::app) << "SHOP_KEY='s3cret-shop-key'\n";
  std::string plan = fleet_->MustHoist({"plan", "1.1.0"});
  EXPECT_THAT(plan, Not(HasSubstr("requires SHOP_KEY"))) << plan;
  std::string out = fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(5));
  EXPECT_THAT(out, HasSubstr("env vars release 1.1.0 needs are set: SHOP_KEY")) << out;
  EXPECT_THAT(out, HasSubstr("api replica 0 (1.0.0) on host-2 passes its health check now")) << out;
  // Names travelled, the value did not: neither the answers nor the logs hold it.
  std::string status = fleet_->MustHoist({"status", "--output", "json"});
  EXPECT_THAT(plan + out + status, Not(HasSubstr("s3cret-shop-key")));
  std::ostringstream logs;
  fleet_->DumpLogs(logs);
  EXPECT_THAT(logs.str(), Not(HasSubstr("s3cret-shop-key")));
}

// The manifest's smoke test runs from web's new image on web's host and
// reaches the proxy on host-3; --smoke-test replaces it for one rollout. A
// failing one stops a blue-green upgrade before the switch (1.0.0 still
// serves), and fails a rolling one at its end with a rollback command that,
// run as printed, brings 1.0.0 back.
TEST_F(MultiHostE2eTest, SmokeTestsGateTheRolloutAndThePrintedRollbackRunsAsPrinted) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  auto values = values_;
  values["WEB_PORTS"] = "{container: 8080}";
  const std::string proxy_url = absl::StrCat("http://", hosts_->node("host-3").address, ":18000/");
  std::string stack = FillTemplate(kStack, values) +
                      absl::StrCat("smoke_test:\n  service: web\n  command: [get, \"", proxy_url,
                                   "\"]\n  timeout: 30s\n");
  fleet_->MustHoist({"apply", fleet_->WriteFile("stack.yaml", stack)});
  for (const char* v : {"1.0.0", "1.1.0"}) {
    values["VERSION"] = v;
    fleet_->MustHoist({"release", "create",
                       fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kReferenceRelease, values))});
  }
  std::string deployed = fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  EXPECT_THAT(deployed, HasSubstr("run the smoke test with the web 1.0.0 image")) << deployed;
  WaitForProxyBody("hello from web 1.0.0");

  auto bg = fleet_->Hoist({"upgrade", "1.1.0", "--strategy", "blue-green", "--yes", "--smoke-test",
                           "job --exit-code 3"},
                          absl::Minutes(5));
  ASSERT_TRUE(bg.ok()) << bg.status();
  const std::string bg_out = bg->stdout_text + bg->stderr_text;
  EXPECT_NE(bg->exit_code, 0) << bg_out;
  EXPECT_THAT(bg_out, HasSubstr("smoke-test")) << bg_out;
  EXPECT_THAT(bg_out, HasSubstr("exit code 3")) << bg_out;
  EXPECT_THAT(bg_out, HasSubstr("the proxy was not switched")) << bg_out;
  EXPECT_EQ(ThroughProxy(), "hello from web 1.0.0");

  auto rolling = fleet_->Hoist({"upgrade", "1.1.0", "--yes", "--smoke-test", "job --exit-code 3"}, absl::Minutes(5));
  ASSERT_TRUE(rolling.ok()) << rolling.status();
  const std::string rolling_out = rolling->stdout_text + rolling->stderr_text;
  EXPECT_NE(rolling->exit_code, 0) << rolling_out;
  EXPECT_THAT(rolling_out, HasSubstr("to roll back, run:")) << rolling_out;
  WaitForProxyBody("hello from web 1.1.0");  // everything moved; the test failed at the end
  RunPrinted(rolling_out, "hoist rollback ");
  WaitForProxyBody("hello from web 1.0.0");
}

// Blue-green with the proxy on a host of its own: green starts beside blue
// on host-1 and host-2, each instance on a port Docker chose, and the proxy
// on host-3 switches to it, back, and forward again; finish retires blue.
TEST_F(MultiHostE2eTest, BlueGreenWithTheProxyOnAnotherHostSwitchesBackAndFinishes) {
  ASSERT_NO_FATAL_FAILURE(DeployWithChosenPorts(1));

  bench::LoadGenerator load(
      {.host = hosts_->node("host-3").address, .port = 18000, .connections = 8, .rate_per_second = 200});
  load.Start();
  // Two seconds' worth of answers before the upgrade begins.
  ASSERT_TRUE(LetRequestsThrough(load, 400));
  std::string out = fleet_->MustHoist(
      {"upgrade", "1.1.0", "--strategy", "blue-green", "--grace-period", "10m", "--yes"}, absl::Minutes(5));
  WaitForProxyBody("hello from web 1.1.0");
  for (const char* host : {"host-1", "host-2"}) {
    auto names = DockerOn(hosts_->node(host), {"ps", "--filter", "label=hoist.service=web", "--format", "{{.Names}}"});
    ASSERT_TRUE(names.ok()) << names.status();
    EXPECT_THAT(*names, HasSubstr("-web-blue-")) << host << ": blue should still run during the grace period";
    EXPECT_THAT(*names, HasSubstr("-web-green-")) << host;
  }
  // The commands the upgrade printed for the operator are run as printed.
  RunPrinted(out, "switch back at once: ");
  WaitForProxyBody("hello from web 1.0.0");
  fleet_->MustHoist({"cutover", "--forward"});
  WaitForProxyBody("hello from web 1.1.0");
  RunPrinted(out, "retire blue now: ");
  auto blue_left = [&] {
    int n = 0;
    for (const char* host : {"host-1", "host-2"}) {
      auto names = DockerOn(hosts_->node(host), {"ps", "-a", "--filter", "label=hoist.service=web", "--format",
                                                 "{{.Names}}"});
      if (!names.ok() || absl::StrContains(*names, "-web-blue-")) ++n;
    }
    return n;
  };
  Eventually(absl::Seconds(60), [&] { return blue_left() == 0; }, absl::Milliseconds(200));
  EXPECT_EQ(blue_left(), 0) << "finish should retire blue on both hosts";
  // A second's worth of answers once blue is gone.
  EXPECT_TRUE(LetRequestsThrough(load, 200));
  bench::LoadStats stats = load.Stop();
  std::cout << "load through the proxy on host-3 during blue-green, back, forward and finish: " << stats.served
            << " served, " << stats.failed << " failed, p99 " << stats.p99_ms << " ms\n";
  EXPECT_EQ(stats.failed, 0) << "first reasons: " << absl::StrJoin(stats.failure_samples, "; ") << "\n" << out;
  EXPECT_GT(stats.served, 500) << "the load generator stalled";
  EXPECT_EQ(stats.last_body, "hello from web 1.1.0");
  EXPECT_EQ(stats.bodies.size(), 2u) << "answers other than the two versions' greeting";
  std::string status = fleet_->MustHoist({"status"});
  EXPECT_THAT(status, HasSubstr("SUCCEEDED")) << status;
}

class FaultE2eTest : public MultiHostE2eTest {
 protected:
  // Hits the leader's host with `fault` on its node, checks that the other
  // replica takes the lead, that the agents follow it, and that an upgrade
  // runs through it while the fault lasts; then `undo`es the fault and
  // checks that the old leader follows and changed nothing.
  void HandOver(absl::string_view what, absl::Status (TestHosts::*fault)(absl::string_view),
                absl::Status (TestHosts::*undo)(absl::string_view));
  // Deploys 1.0.0 (web on ports Docker chooses, the proxy on host-3) with
  // `controllers` hoistd replicas, starts the upgrade to 1.1.0, runs `fault`
  // once host-1 has begun a start step, and checks that the upgrade
  // SUCCEEDED with every replica once at 1.1.0 and the proxy serving it.
  void MidUpgrade(const std::string& what, int controllers, const std::function<void()>& fault);
};

void FaultE2eTest::HandOver(absl::string_view what, absl::Status (TestHosts::*fault)(absl::string_view),
                            absl::Status (TestHosts::*undo)(absl::string_view)) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(2));
  ASSERT_NO_FATAL_FAILURE(ApplyWiredStack());
  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
  const int old = fleet_->Leader();
  ASSERT_GE(old, 0) << "no replica says it leads";
  const int next = 1 - old;
  const std::string old_node = absl::StrCat("ctl-", old + 1);

  ASSERT_TRUE((hosts_.get()->*fault)(old_node).ok());
  const absl::Time frozen = absl::Now();
  ASSERT_TRUE(Eventually(absl::Seconds(30), [&] { return fleet_->Leader() == next; }, absl::Milliseconds(100)))
      << "replica " << next + 1 << " did not take the lead within 30 s";
  const absl::Duration took_lead = absl::Now() - frozen;
  // The leader plans with the agents in session with it: the plan succeeds
  // once every agent has followed it.
  std::string last;
  ASSERT_TRUE(Eventually(
      frozen + absl::Seconds(60) - absl::Now(),
      [&] {
        auto plan = fleet_->Hoist({"plan", "1.1.0"}, absl::Seconds(20), fleet_->replica_address(next));
        if (plan.ok() && plan->exit_code == 0) return true;
        last = plan.ok() ? plan->stderr_text : std::string(plan.status().message());
        return false;
      },
      absl::Milliseconds(200)))
      << "the agents did not follow the new leader within 60 s; last: " << last;
  const absl::Duration agents_followed = absl::Now() - frozen;
  std::cout << "leader " << what << ": replica " << next + 1 << " led after " << absl::FormatDuration(took_lead)
            << ", every agent followed it after " << absl::FormatDuration(agents_followed) << "\n";

  fleet_->MustHoist({"upgrade", "1.1.0", "--yes", "--controller", fleet_->replica_address(next)}, absl::Minutes(5));
  WaitForProxyBody("hello from web 1.1.0");

  ASSERT_TRUE((hosts_.get()->*undo)(old_node).ok());
  int leader = -1;
  Eventually(
      absl::Seconds(30),
      [&] {
        leader = fleet_->Leader();
        auto old_health = HttpGet(fleet_->replica_http(old) + "/health", absl::Seconds(1));
        return leader == next && old_health.ok() && absl::StrContains(old_health->body, "\"follower\"");
      },
      absl::Milliseconds(200));
  EXPECT_EQ(leader, next) << "the old leader took the lead back, or nobody leads";
  auto old_health = HttpGet(fleet_->replica_http(old) + "/health", absl::Seconds(1));
  ASSERT_TRUE(old_health.ok()) << old_health.status();
  EXPECT_THAT(old_health->body, HasSubstr("\"follower\"")) << "the old leader should follow";
  std::string matrix = fleet_->MustHoist({"matrix", "--controller", fleet_->replica_address(next)});
  EXPECT_THAT(matrix, HasSubstr("(pinned 1.1.0)")) << matrix;
  EXPECT_THAT(matrix, Not(HasSubstr("skew"))) << matrix;
}

// The leader's host hangs: every process in it stopped, its sockets open,
// so nothing but a missing answer tells it from a quiet one.
TEST_F(FaultE2eTest, FrozenLeaderHostHandsOverAndTheAgentsFollowTheNewLeader) {
  HandOver("frozen", &TestHosts::Freeze, &TestHosts::Thaw);
}

// The leader's host drops off the network, its processes running.
TEST_F(FaultE2eTest, CutOffLeaderHostHandsOverAndTheAgentsFollowTheNewLeader) {
  HandOver("cut off", &TestHosts::Cut, &TestHosts::Heal);
}

void FaultE2eTest::MidUpgrade(const std::string& what, int controllers, const std::function<void()>& fault) {
  ASSERT_NO_FATAL_FAILURE(DeployWithChosenPorts(controllers));

  // The upgrade runs in the background; the fault comes once host-1's agent
  // has begun a start step of it.
  const std::string agent_log = fleet_->dir() + "/host-1.log";
  auto log_size = [&] {
    std::ifstream in(agent_log, std::ios::binary | std::ios::ate);
    return in ? static_cast<std::streamoff>(in.tellg()) : std::streamoff(0);
  };
  const std::streamoff before = log_size();
  absl::StatusOr<CommandResult> upgrade = absl::UnknownError("not run");
  // The CLI may lose the replica it watches through (a killed leader): the
  // rollout's end is read from hoist status below.
  std::thread runner([&] { upgrade = fleet_->Hoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(3)); });
  const bool started = Eventually(
      absl::Minutes(2),
      [&] {
        std::ifstream in(agent_log, std::ios::binary);
        in.seekg(before);
        std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return absl::StrContains(tail, "(start_instance) epoch");
      },
      absl::Milliseconds(20));
  EXPECT_TRUE(started) << "host-1 began no start step within 2 minutes";
  const absl::Time hit = absl::Now();
  fault();
  runner.join();
  std::string status;
  Eventually(
      absl::Minutes(3),
      [&] {
        auto r = fleet_->Hoist({"status"});
        status = r.ok() ? r->stdout_text : "";
        return absl::StrContains(status, "1.0.0 -> 1.1.0 SUCCEEDED") ||
               absl::StrContains(status, "1.0.0 -> 1.1.0 FAILED") ||
               absl::StrContains(status, "1.0.0 -> 1.1.0 CANCELLED");
      },
      absl::Milliseconds(200));
  EXPECT_THAT(status, HasSubstr("1.0.0 -> 1.1.0 SUCCEEDED")) << status;
  EXPECT_THAT(status, HasSubstr("deploy lock     free")) << status;
  std::cout << what << " mid-upgrade; the upgrade ended " << absl::FormatDuration(absl::Now() - hit)
            << " after it (the CLI that started it exited "
            << (upgrade.ok() ? std::to_string(upgrade->exit_code) : std::string(upgrade.status().message())) << ")\n";

  WaitForProxyBody("hello from web 1.1.0");
  // Each replica once, running, at 1.1.0.
  for (const char* host : {"host-1", "host-2", "host-3"}) {
    auto ps = DockerOn(hosts_->node(host), {"ps", "-a", "--filter", absl::StrCat("label=hoist.deployment=", deployment_),
                                            "--filter", "label=hoist.service", "--format", "{{.Names}} {{.State}}"});
    ASSERT_TRUE(ps.ok()) << ps.status();
    for (const std::string& line : Lines(*ps)) {
      if (absl::StrContains(line, "-proxy-")) continue;
      EXPECT_THAT(line, HasSubstr("-1.1.0 running")) << host;
    }
  }
  std::string matrix = fleet_->MustHoist({"matrix"});
  EXPECT_THAT(matrix, Not(HasSubstr("1.0.0"))) << matrix;
  EXPECT_THAT(matrix, Not(HasSubstr("skew"))) << matrix;
  // The proxy reaches both web replicas: ten answers, none failed.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ThroughProxy(), "hello from web 1.1.0");
}

// A Docker host loses power in the middle of an upgrade: every process on
// it (dockerd, containerd, the containers, the agent) dies at once. It boots
// again on the same disk, its agent comes back, and the upgrade finishes
// with each replica once, at the new version, the proxy on another host
// reaching web at the port it had.
TEST_F(FaultE2eTest, HostCrashedMidUpgradeBootsAgainAndTheUpgradeFinishes) {
  // Not in the default run: on this machine's fuse-overlayfs a crash kills
  // the FUSE daemons under the node's mounts, and a process of the node has
  // been seen to outlive SIGKILL for 10 s. tests/bench/chaos.sh runs the
  // host_crash fault at seven steps of the reference upgrade instead.
  if (std::getenv("HOIST_TEST_CRASH") == nullptr) {
    GTEST_SKIP() << "set HOIST_TEST_CRASH=1 to run it (tests/bench/chaos.sh --faults host_crash covers crashes)";
  }
  MidUpgrade("host-1 crashed (down 3 s)", 1, [&] {
    ASSERT_TRUE(hosts_->Crash("host-1").ok());
    absl::SleepFor(absl::Seconds(3));  // the host stays down a while, on purpose
    ASSERT_TRUE(hosts_->Boot("host-1").ok());
    ASSERT_TRUE(fleet_->Restart("host-1").ok());
  });
}

// The leading hoistd is killed (SIGKILL) in the middle of an upgrade: the
// other replica takes the lead and finishes it; the killed one comes back
// as a follower.
TEST_F(FaultE2eTest, LeaderKilledMidUpgradeAndTheOtherReplicaFinishesIt) {
  MidUpgrade("the leader killed (kill -9)", 2, [&] {
    const int leader = fleet_->Leader();
    ASSERT_GE(leader, 0) << "no replica says it leads";
    const std::string replica = absl::StrCat("hoistd-", leader + 1);
    ASSERT_TRUE(fleet_->Stop(replica, SIGKILL).ok());
    // It comes back once the other replica leads, so that it comes back as a follower.
    ASSERT_TRUE(EventuallyHolds(
        "the other replica to take the lead", absl::Seconds(30), [&] { return fleet_->Leader(); },
        [&](int now) { return now >= 0 && now != leader; }, absl::Milliseconds(100)));
    ASSERT_TRUE(fleet_->Restart(replica).ok());
  });
}

// The controllers' Postgres restarts in the middle of an upgrade (a minor
// upgrade, a managed database's failover): a pause, and the upgrade finishes.
TEST_F(FaultE2eTest, PostgresRestartedMidUpgradeAndTheUpgradeFinishes) {
  MidUpgrade("the controllers' Postgres restarted", 1, [&] { ASSERT_TRUE(pg_->Restart().ok()); });
}

}  // namespace
}  // namespace hoist::testing

#include "agent/step_executor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "agent/file_util.h"
#include "agent/container_names.h"
#include "agent/inventory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/labels.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_docker_api.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using hoist::testing::Eventually;
using hoist::testing::FakeClock;
using hoist::testing::FakeDockerApi;

constexpr char kApiImage[] = "registry.local/shop/api:1.5.0";
constexpr char kJobImage[] = "registry.local/shop/migrate:1.5.0";

// A one-response-per-connection HTTP server on 127.0.0.1, for probes.
class LocalHttpServer {
 public:
  LocalHttpServer(int status, std::string body) : status_(status), body_(std::move(body)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~LocalHttpServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  int requests() const { return requests_; }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) continue;
      std::string request;
      char buf[1024];
      while (request.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(conn, buf, sizeof(buf));
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      ++requests_;
      std::string response = absl::StrCat("HTTP/1.1 ", status_, " X\r\nContent-Type: application/json\r\nContent-Length: ",
                                           body_.size(), "\r\nConnection: close\r\n\r\n", body_);
      ssize_t ignored = ::write(conn, response.data(), response.size());
      (void)ignored;
      ::close(conn);
    }
  }
  int status_;
  std::string body_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

class StepExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::MakeOwnedTempDir("hoist-steps-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    docker_.AddRegistryImage(kApiImage, "sha256:aaaa", 3);
    docker_.AddLocalImage(kJobImage, "sha256:jobimage");
    policy_.agent_id = "agent-1";
    policy_.backup_dir = dir_ + "/backups";
    policy_.extra_labels = {{"hoist.test.run", "unit"}};
    policy_.env_file_dirs = {dir_};
    NewExecutor();
  }
  void TearDown() override {
    executor_.reset();
    testing::RemoveTree(dir_);
  }

  // A fresh executor and journal on the same state directory: an agent restart.
  void NewExecutor() {
    executor_.reset();
    journal_.reset();
    auto journal = StepJournal::Open(dir_ + "/state");
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = std::move(*journal);
    executor_ = std::make_unique<StepExecutor>(&docker_, journal_.get(), policy_, &clock_);
  }

  hoist::v1::Step NewStep(const std::string& id, uint64_t epoch = 5) {
    hoist::v1::Step step;
    step.set_step_id(id);
    step.set_epoch(epoch);
    step.mutable_deadline()->set_seconds(absl::ToUnixSeconds(clock_.Now() + absl::Hours(1)));
    return step;
  }

  static hoist::v1::InstanceRef Instance(const std::string& service = "api", uint32_t replica = 0) {
    hoist::v1::InstanceRef ref;
    ref.set_deployment("shop");
    ref.set_service(service);
    ref.set_slot(hoist::v1::SLOT_BLUE);
    ref.set_replica(replica);
    return ref;
  }

  hoist::v1::Step StartStep(const std::string& id, const std::string& version = "1.5.0") {
    hoist::v1::Step step = NewStep(id);
    auto* start = step.mutable_start_instance();
    *start->mutable_instance() = Instance();
    start->set_version(version);
    auto* spec = start->mutable_spec();
    spec->set_image(kApiImage);
    auto* port = spec->add_ports();
    port->set_container_port(8080);
    port->set_host_ip("127.0.0.1");
    return step;
  }

  hoist::v1::Step JobStep(const std::string& id) {
    hoist::v1::Step step = NewStep(id);
    auto* job = step.mutable_run_job();
    job->set_deployment("shop");
    job->set_name("migrate");
    job->set_version("1.5.0");
    job->mutable_spec()->set_image(kJobImage);
    return step;
  }

  hoist::v1::StepResult Run(const hoist::v1::Step& step) { return executor_->Run(step, nullptr); }

  // Makes the API image pullable and pulls it, so that containers can be created.
  void PullApiImage() {
    hoist::v1::Step pull = NewStep("pull-api");
    pull.mutable_pull_image()->set_image(kApiImage);
    ASSERT_EQ(Run(pull).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  }

  std::string dir_;
  FakeClock clock_;
  FakeDockerApi docker_{&clock_};
  AgentPolicy policy_;
  std::unique_ptr<StepJournal> journal_;
  std::unique_ptr<StepExecutor> executor_;
};

// Evaluates result once (it is often a Run call).
#define EXPECT_OUTCOME(result, outcome_value, code_value)                                          \
  do {                                                                                             \
    const hoist::v1::StepResult& result_ = (result);                                               \
    EXPECT_EQ(result_.outcome(), hoist::v1::outcome_value) << result_.DebugString();               \
    EXPECT_EQ(result_.code(), static_cast<int>(absl::StatusCode::code_value)) << result_.message(); \
  } while (0)

// ---- pull ----

TEST_F(StepExecutorTest, PullReportsProgressAndTheImageDigest) {
  hoist::v1::Step step = NewStep("pull-1");
  step.mutable_pull_image()->set_image(kApiImage);
  std::vector<hoist::v1::StepProgress> progress;
  hoist::v1::StepResult result = executor_->Run(step, [&](const hoist::v1::StepProgress& p) { progress.push_back(p); });
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(result.pull().image_digest(), "sha256:aaaa");
  ASSERT_EQ(progress.size(), 3u) << "one line per finished layer";
  EXPECT_EQ(progress.back().step_id(), "pull-1");
  EXPECT_EQ(progress.back().pull().layers_done(), 3u);
  EXPECT_EQ(progress.back().pull().bytes_done(), progress.back().pull().bytes_total());
}

TEST_F(StepExecutorTest, PullOfAnUnknownImageFailsWithDockersReason) {
  hoist::v1::Step step = NewStep("pull-missing");
  step.mutable_pull_image()->set_image("registry.local/shop/api:9.9.9");
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kNotFound);
  EXPECT_THAT(result.message(), HasSubstr("manifest unknown"));
}

// The host port the agent picked for 127.0.0.1:0 was taken before Docker
// bound it: the container is made again (with another port) and starts.
TEST_F(StepExecutorTest, PortTakenBetweenPickAndStartIsPickedAgain) {
  ASSERT_NO_FATAL_FAILURE(PullApiImage());
  docker_.FailNext("Start", absl::InternalError("driver failed programming external connectivity: Error starting "
                                                "userland proxy: listen tcp4 127.0.0.1:32786: bind: address already "
                                                "in use"));
  hoist::v1::StepResult result = Run(StartStep("start-port"));
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Calls("Create"), 2);
  EXPECT_EQ(docker_.Calls("Remove"), 1);

  // Any other start failure is the step's failure, with no second container.
  docker_.FailNext("Start", absl::InternalError("OCI runtime create failed"));
  hoist::v1::StepResult other = Run(StartStep("start-other", "1.6.0"));
  EXPECT_OUTCOME(other, STEP_OUTCOME_FAILED, kInternal);
  EXPECT_EQ(docker_.Calls("Create"), 3);
}

TEST_F(StepExecutorTest, ReadEnvNamesAnswersWithNamesOnlyAndNamesMissingFiles) {
  const std::string env_file = dir_ + "/shop.env";
  const std::string broken = dir_ + "/broken.env";
  ASSERT_TRUE(WriteFileAtomic(env_file, "# shop\nexport SHOP_KEY='very-secret'\nOLD_NAME=x\n").ok());
  ASSERT_TRUE(WriteFileAtomic(broken, "this line has no equals sign\n").ok());
  hoist::v1::Step step = NewStep("env-1");
  auto* read = step.mutable_read_env_names();
  read->set_deployment("shop");
  for (const std::string& f : {env_file, broken, dir_ + "/absent.env"}) read->add_env_files(f);
  for (const char* n : {"SHOP_KEY", "NEW_NAME", "OLD_NAME"}) read->add_names(n);
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_THAT(result.env_names().set(), ::testing::ElementsAre("OLD_NAME", "SHOP_KEY"));
  EXPECT_THAT(result.env_names().missing_files(), ::testing::ElementsAre(dir_ + "/absent.env"));
  EXPECT_EQ(result.env_names().unreadable_files().count(broken), 1u) << result.DebugString();
  EXPECT_THAT(result.DebugString(), Not(HasSubstr("very-secret")));

  // A relative path, a bad name, or a deployment the agent does not serve is refused.
  hoist::v1::Step bad = NewStep("env-2");
  bad.mutable_read_env_names()->set_deployment("shop");
  bad.mutable_read_env_names()->add_env_files("shop.env");
  EXPECT_OUTCOME(Run(bad), STEP_OUTCOME_REFUSED, kInvalidArgument);
  hoist::v1::Step bad_name = NewStep("env-3");
  bad_name.mutable_read_env_names()->set_deployment("shop");
  bad_name.mutable_read_env_names()->add_env_files(env_file);
  bad_name.mutable_read_env_names()->add_names("1BAD");
  EXPECT_OUTCOME(Run(bad_name), STEP_OUTCOME_REFUSED, kInvalidArgument);
}

// A start that carries the release's digest runs only the content the
// release recorded: a tag whose local image has another digest is refused.
TEST_F(StepExecutorTest, StartRefusesAnImageWhoseDigestIsNotTheReleases) {
  ASSERT_NO_FATAL_FAILURE(PullApiImage());
  hoist::v1::Step pushed_again = StartStep("start-drift");
  pushed_again.mutable_start_instance()->set_image_digest("sha256:recorded-before");
  hoist::v1::StepResult refused = Run(pushed_again);
  EXPECT_OUTCOME(refused, STEP_OUTCOME_FAILED, kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("is sha256:aaaa on this host, but its release recorded sha256:recorded-before"));
  EXPECT_THAT(refused.message(), HasSubstr("nothing was started"));
  EXPECT_EQ(docker_.Calls("Create"), 0);

  hoist::v1::Step same = StartStep("start-same");
  same.mutable_start_instance()->set_image_digest("sha256:aaaa");
  EXPECT_OUTCOME(Run(same), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Calls("Create"), 1);
}

// ---- forward ----

// The bytes of the file `name` in a ustar archive, or "" when absent.
std::string TarFile(const std::string& tar, const std::string& name) {
  for (size_t at = 0; at + 512 <= tar.size();) {
    std::string entry(tar.c_str() + at, strnlen(tar.c_str() + at, 100));
    if (entry.empty()) break;
    size_t size = std::strtoul(std::string(tar, at + 124, 12).c_str(), nullptr, 8);
    if (entry == name) return tar.substr(at + 512, size);
    at += 512 + (size + 511) / 512 * 512;
  }
  return "";
}

hoist::v1::ForwardPort* AddForwardPort(hoist::v1::ForwardUpdate* f, uint32_t listen,
                                       const std::vector<std::pair<std::string, uint32_t>>& targets) {
  hoist::v1::ForwardPort* p = f->add_ports();
  p->set_listen_port(listen);
  for (const auto& [address, port] : targets) {
    hoist::v1::ProxyBackend* b = p->add_targets();
    b->set_address(address);
    b->set_port(port);
  }
  return p;
}

TEST_F(StepExecutorTest, ForwardUpdateKeepsOneForwarderPerServiceAndChangesItsTargetsInPlace) {
  const std::string binary = dir_ + "/hoist-forward";
  ASSERT_TRUE(WriteFileAtomic(binary, "#!static forwarder\n").ok());
  policy_.forward_binary = binary;
  NewExecutor();
  hoist::v1::Step step = NewStep("fwd-1");
  hoist::v1::ForwardUpdate* f = step.mutable_forward_update();
  f->set_deployment("shop");
  f->set_service("db");
  f->set_network("shop");
  AddForwardPort(f, 5432, {{"10.0.0.20", 32768}});
  hoist::v1::StepResult first = Run(step);
  EXPECT_OUTCOME(first, STEP_OUTCOME_SUCCEEDED, kOk);

  // Its image is made here from the binary, once.
  EXPECT_EQ(docker_.Calls("ImportImage"), 1);
  auto forwarder = docker_.Find("shop-forward-db");
  ASSERT_TRUE(forwarder.has_value());
  EXPECT_EQ(TarFile(docker_.ImportedFrom(forwarder->spec.image), "hoist-forward"), "#!static forwarder\n");
  EXPECT_THAT(forwarder->spec.image, ::testing::StartsWith("hoist-forward:"));
  EXPECT_EQ(forwarder->spec.network, "shop");
  EXPECT_THAT(forwarder->spec.network_aliases, ::testing::ElementsAre("db"));
  EXPECT_EQ(forwarder->spec.labels.at("hoist.forward"), "db");
  EXPECT_EQ(forwarder->spec.labels.at("hoist.deployment"), "shop");
  EXPECT_EQ(forwarder->spec.labels.at("hoist.test.run"), "unit") << "the agent's object labels";
  EXPECT_FALSE(forwarder->spec.labels.contains("hoist.service")) << "a forwarder is no instance";
  EXPECT_EQ(forwarder->info.state, "running");
  EXPECT_EQ(TarFile(docker_.ArchiveAt("shop-forward-db", "/etc/hoist-forward"), "targets"),
            "5432 10.0.0.20 32768\nend\n");

  // New targets on the same port: written into the running forwarder, no new container.
  hoist::v1::Step moved = NewStep("fwd-2");
  *moved.mutable_forward_update() = *f;
  moved.mutable_forward_update()->clear_ports();
  hoist::v1::ForwardPort* p = AddForwardPort(moved.mutable_forward_update(), 5432, {{"10.0.0.21", 32770}});
  hoist::v1::ProxyBackend* draining = p->add_targets();
  draining->set_address("10.0.0.20");
  draining->set_port(32768);
  draining->set_state(hoist::v1::BACKEND_STATE_DRAIN);
  EXPECT_OUTCOME(Run(moved), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Calls("Create"), 1);
  EXPECT_EQ(docker_.Calls("ImportImage"), 1);
  EXPECT_EQ(TarFile(docker_.ArchiveAt("shop-forward-db", "/etc/hoist-forward"), "targets"),
            "5432 10.0.0.21 32770\nend\n")
      << "a target that is not READY is left out";

  // Another set of listen ports needs a new forwarder.
  hoist::v1::Step widened = NewStep("fwd-3");
  *widened.mutable_forward_update() = *moved.mutable_forward_update();
  AddForwardPort(widened.mutable_forward_update(), 8008, {{"10.0.0.21", 32771}});
  EXPECT_OUTCOME(Run(widened), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Calls("Create"), 2);
  EXPECT_EQ(docker_.Find("shop-forward-db")->spec.labels.at("hoist.forward.ports"), "5432,8008");

  // No ports: the forwarder goes.
  hoist::v1::Step gone = NewStep("fwd-4");
  *gone.mutable_forward_update() = *f;
  gone.mutable_forward_update()->clear_ports();
  EXPECT_OUTCOME(Run(gone), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_FALSE(docker_.Find("shop-forward-db").has_value());
}

TEST_F(StepExecutorTest, ForwardUpdateRefusesBadFieldsAndSaysWhenTheAgentHasNoForwarder) {
  auto step_with = [&](const std::string& id, const std::function<void(hoist::v1::ForwardUpdate*)>& edit) {
    hoist::v1::Step step = NewStep(id);
    hoist::v1::ForwardUpdate* f = step.mutable_forward_update();
    f->set_deployment("shop");
    f->set_service("db");
    f->set_network("shop");
    AddForwardPort(f, 5432, {{"10.0.0.20", 32768}});
    edit(f);
    return step;
  };
  hoist::v1::StepResult named = Run(step_with("bad-1", [](auto* f) { f->mutable_ports(0)->mutable_targets(0)->set_address("db-1"); }));
  EXPECT_OUTCOME(named, STEP_OUTCOME_REFUSED, kInvalidArgument);
  EXPECT_THAT(named.message(), HasSubstr("forward_update.ports[0].targets[0].address"));
  EXPECT_OUTCOME(Run(step_with("bad-2", [](auto* f) { f->clear_network(); })), STEP_OUTCOME_REFUSED, kInvalidArgument);
  EXPECT_OUTCOME(Run(step_with("bad-3", [](auto* f) { AddForwardPort(f, 5432, {}); })), STEP_OUTCOME_REFUSED,
                 kInvalidArgument);
  policy_.deployments = {"shop"};
  NewExecutor();
  EXPECT_OUTCOME(Run(step_with("bad-5", [](auto* f) { f->set_deployment("other"); })), STEP_OUTCOME_REFUSED,
                 kPermissionDenied);
  // No binary: the step fails and says how to fix it.
  hoist::v1::StepResult none = Run(step_with("no-binary", [](auto*) {}));
  EXPECT_OUTCOME(none, STEP_OUTCOME_FAILED, kFailedPrecondition);
  EXPECT_THAT(none.message(), HasSubstr("--forward-binary"));
  EXPECT_EQ(docker_.Calls("Create"), 0);
}

// ---- idempotence and fencing ----

TEST_F(StepExecutorTest, ReSentStepReplaysItsResultWithoutRunningAgain) {
  PullApiImage();
  hoist::v1::StepResult first = Run(StartStep("start-1"));
  EXPECT_OUTCOME(first, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_FALSE(first.replayed());
  hoist::v1::StepResult again = Run(StartStep("start-1"));
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.start().container_id(), first.start().container_id());
  EXPECT_EQ(docker_.Calls("Create"), 1);
  EXPECT_EQ(docker_.Calls("Start"), 1);
}

TEST_F(StepExecutorTest, SameStepSentTwiceWhileRunningRunsOnce) {
  absl::Notification pulling, release;
  docker_.SetBeforeCall([&](absl::string_view method) {
    if (method == "Pull" && !pulling.HasBeenNotified()) {
      pulling.Notify();
      release.WaitForNotification();
    }
  });
  hoist::v1::Step step = NewStep("pull-twice");
  step.mutable_pull_image()->set_image(kApiImage);
  hoist::v1::StepResult first, second;
  std::thread a([&] { first = Run(step); });
  ASSERT_TRUE(pulling.WaitForNotificationWithTimeout(absl::Seconds(10)));
  std::thread b([&] { second = Run(step); });
  Eventually(absl::Seconds(10), [&] { return executor_->WaitersFor("pull-twice") != 0; }, absl::Milliseconds(1));
  EXPECT_EQ(executor_->WaitersFor("pull-twice"), 1) << "the second sender should wait for the first run";
  EXPECT_THAT(executor_->RunningStepIds(), ElementsAre("pull-twice"));
  release.Notify();
  a.join();
  b.join();
  EXPECT_EQ(docker_.Calls("Pull"), 1);
  EXPECT_OUTCOME(first, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_OUTCOME(second, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_TRUE(second.replayed());
  EXPECT_EQ(second.pull().image_digest(), "sha256:aaaa");
}

TEST_F(StepExecutorTest, StaleEpochIsRefusedNamingBothEpochs) {
  hoist::v1::Step current = NewStep("pull-epoch-5", 5);
  current.mutable_pull_image()->set_image(kApiImage);
  ASSERT_EQ(Run(current).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  hoist::v1::Step stale = NewStep("pull-epoch-4", 4);
  stale.mutable_pull_image()->set_image(kApiImage);
  hoist::v1::StepResult result = Run(stale);
  EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kFailedPrecondition);
  EXPECT_THAT(result.message(), HasSubstr("epoch 4"));
  EXPECT_THAT(result.message(), HasSubstr("epoch 5"));
  EXPECT_EQ(docker_.Calls("Pull"), 1) << "a stale step touches nothing";
}

TEST_F(StepExecutorTest, HigherEpochPersistsAcrossANewExecutor) {
  hoist::v1::Step step = NewStep("pull-epoch-9", 9);
  step.mutable_pull_image()->set_image(kApiImage);
  ASSERT_EQ(Run(step).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  NewExecutor();
  hoist::v1::Step older = NewStep("pull-epoch-8", 8);
  older.mutable_pull_image()->set_image(kApiImage);
  EXPECT_OUTCOME(Run(older), STEP_OUTCOME_REFUSED, kFailedPrecondition);
  EXPECT_EQ(journal_->highest_epoch(), 9u);
}

// ---- validation and policy ----

TEST_F(StepExecutorTest, MalformedStepsAreRefusedNamingTheField) {
  struct Case {
    std::string want_field;
    std::function<void(hoist::v1::Step*)> mutate;
  };
  std::vector<Case> cases = {
      {"action: missing", [](hoist::v1::Step* s) { s->clear_start_instance(); }},
      {"epoch: missing", [](hoist::v1::Step* s) { s->set_epoch(0); }},
      {"start_instance.instance.deployment: missing",
       [](hoist::v1::Step* s) { s->mutable_start_instance()->mutable_instance()->clear_deployment(); }},
      {"start_instance.instance.service: missing",
       [](hoist::v1::Step* s) { s->mutable_start_instance()->mutable_instance()->clear_service(); }},
      {"start_instance.version: missing", [](hoist::v1::Step* s) { s->mutable_start_instance()->clear_version(); }},
      {"start_instance.spec.image: \"registry.local/shop/api\" names no tag or digest",
       [](hoist::v1::Step* s) { s->mutable_start_instance()->mutable_spec()->set_image("registry.local/shop/api"); }},
      {"start_instance.spec.image: \"localhost:5000/api\" names no tag",
       [](hoist::v1::Step* s) { s->mutable_start_instance()->mutable_spec()->set_image("localhost:5000/api"); }},
      {"start_instance.spec.volumes[0].target: \"data\" is not an absolute path",
       [](hoist::v1::Step* s) {
         auto* v = s->mutable_start_instance()->mutable_spec()->add_volumes();
         v->set_source("shop-data");
         v->set_target("data");
       }},
      {"start_instance.spec.labels: \"hoist.version\" is Hoist's own label",
       [](hoist::v1::Step* s) { (*s->mutable_start_instance()->mutable_spec()->mutable_labels())["hoist.version"] = "x"; }},
      {"start_instance.spec.ports[0].container_port",
       [](hoist::v1::Step* s) { s->mutable_start_instance()->mutable_spec()->mutable_ports(0)->set_container_port(0); }},
      {"start_instance.spec.env_files[0]",
       [](hoist::v1::Step* s) { s->mutable_start_instance()->mutable_spec()->add_env_files("relative/.env"); }},
      {"probe_health.check: no kind of check",
       [](hoist::v1::Step* s) {
         *s->mutable_probe_health()->mutable_instance() = Instance();
         s->mutable_probe_health()->mutable_check();
       }},
      {"backup.items[0]: no kind",
       [](hoist::v1::Step* s) {
         s->mutable_backup()->set_deployment("shop");
         s->mutable_backup()->set_backup_id("b1");
         s->mutable_backup()->add_items();
       }},
      {"restore.artifacts[0].sha256",
       [](hoist::v1::Step* s) {
         s->mutable_restore()->set_deployment("shop");
         s->mutable_restore()->set_backup_id("b1");
         auto* a = s->mutable_restore()->add_artifacts();
         a->set_kind("config");
         a->set_source("/etc/shop.env");
         a->set_path("/backups/shop/b1/01-config");
         a->set_sha256("abc");
       }},
  };
  int n = 0;
  for (const Case& c : cases) {
    hoist::v1::Step step = StartStep(absl::StrCat("bad-", n++));
    c.mutate(&step);
    hoist::v1::StepResult result = Run(step);
    EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kInvalidArgument);
    EXPECT_THAT(result.message(), HasSubstr(c.want_field));
  }
  EXPECT_EQ(docker_.Calls("Create"), 0);
  EXPECT_EQ(docker_.Calls("List"), 0);
}

TEST_F(StepExecutorTest, PolicyRefusesPrivilegedHostPathsAndTheDockerSocket) {
  PullApiImage();
  hoist::v1::Step privileged = StartStep("priv");
  privileged.mutable_start_instance()->mutable_spec()->set_privileged(true);
  hoist::v1::StepResult result = Run(privileged);
  EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
  EXPECT_THAT(result.message(), HasSubstr("start_instance.spec.privileged"));

  hoist::v1::Step host_path = StartStep("host-path");
  auto* v = host_path.mutable_start_instance()->mutable_spec()->add_volumes();
  v->set_source("/srv/shop-config");
  v->set_target("/config");
  result = Run(host_path);
  EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
  EXPECT_THAT(result.message(),
              HasSubstr("start_instance.spec.volumes[0].source: \"/srv/shop-config\" is a host path"));

  hoist::v1::Step other = StartStep("other-deployment");
  other.mutable_start_instance()->mutable_instance()->set_deployment("billing");
  policy_.deployments = {"shop"};
  NewExecutor();
  result = Run(other);
  EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
  EXPECT_THAT(result.message(), HasSubstr("does not serve deployment \"billing\""));

  // Host paths allowed: the Docker socket still needs its own permission,
  // also through a directory that holds it.
  policy_.allow_host_paths = true;
  NewExecutor();
  for (std::string source : {"/var/run/docker.sock", "/run", "/var/run/"}) {
    hoist::v1::Step socket = StartStep(absl::StrCat("socket-", source));
    auto* m = socket.mutable_start_instance()->mutable_spec()->add_volumes();
    m->set_source(source);
    m->set_target("/var/run/docker.sock");
    result = Run(socket);
    EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
    EXPECT_THAT(result.message(), HasSubstr("exposes the Docker socket"));
  }
  EXPECT_EQ(docker_.Calls("Create"), 0);

  result = Run(host_path);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
}

TEST_F(StepExecutorTest, TheAgentsAllowSettingsKeepAStackInsideItsOwnCorner) {
  PullApiImage();
  policy_.allow_host_paths = true;
  NewExecutor();
  // Host paths allowed, and still never the kernel's or the runtimes' state.
  for (std::string source : {"/proc/1/root", "/run/containerd/containerd.sock", "/var/lib", "/etc", "/dev"}) {
    hoist::v1::Step bind = StartStep(absl::StrCat("bind-", source));
    auto* m = bind.mutable_start_instance()->mutable_spec()->add_volumes();
    m->set_source(source);
    m->set_target("/host");
    hoist::v1::StepResult result = Run(bind);
    EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
    EXPECT_THAT(result.message(), HasSubstr("which no container of this agent mounts")) << source;
  }
  // The host's network stack, or another container's.
  for (std::string network : {"host", "container:shop-db"}) {
    hoist::v1::Step step = StartStep(absl::StrCat("net-", network));
    step.mutable_start_instance()->mutable_spec()->set_network(network);
    hoist::v1::StepResult result = Run(step);
    EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
    EXPECT_THAT(result.message(), HasSubstr("--allow-host-network"));
  }
  // Env files outside the allowed directories, also through a symlink.
  std::ofstream(dir_ + "/ok.env") << "A=1\n";
  ASSERT_EQ(symlink("/etc/passwd", (dir_ + "/sneaky.env").c_str()), 0);
  for (std::string file : {std::string("/etc/shadow"), dir_ + "/../passwd.env", dir_ + "/sneaky.env"}) {
    hoist::v1::Step step = StartStep(absl::StrCat("env-", file.size()));
    step.mutable_start_instance()->mutable_spec()->add_env_files(file);
    hoist::v1::StepResult result = Run(step);
    EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kPermissionDenied);
    EXPECT_THAT(result.message(), HasSubstr("outside the directories this agent reads env files from")) << file;
  }
  // Another deployment's volume and a compose project's network.
  docker_.AddForeignVolume("billing-data", {{"hoist.managed", "true"}, {"hoist.deployment", "billing"}});
  docker_.AddForeignNetwork("wiki_default", {{"com.docker.compose.project", "wiki"}});
  hoist::v1::Step volume = StartStep("foreign-volume");
  auto* vm = volume.mutable_start_instance()->mutable_spec()->add_volumes();
  vm->set_source("billing-data");
  vm->set_target("/data");
  hoist::v1::StepResult result = Run(volume);
  EXPECT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_THAT(result.message(), HasSubstr("volume billing-data belongs to deployment billing"));
  hoist::v1::Step network = StartStep("foreign-network");
  network.mutable_start_instance()->mutable_spec()->set_network("wiki_default");
  result = Run(network);
  EXPECT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_THAT(result.message(), HasSubstr("network wiki_default belongs to docker compose project wiki"));
  EXPECT_EQ(docker_.Calls("Create"), 0) << "nothing refused may reach Docker";

  // A new named volume is made with the deployment's labels; allowed settings let the rest through.
  hoist::v1::Step own = StartStep("own-volume");
  auto* om = own.mutable_start_instance()->mutable_spec()->add_volumes();
  om->set_source("shop-data");
  om->set_target("/data");
  own.mutable_start_instance()->mutable_spec()->add_env_files(dir_ + "/ok.env");
  result = Run(own);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  auto labels = docker_.VolumeLabels("shop-data");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(labels->at("hoist.deployment"), "shop");
}

TEST_F(StepExecutorTest, UnlabelledContainerWithTheSameNameIsLeftUntouched) {
  PullApiImage();
  std::string id = docker_.AddContainer("shop-api-blue-0-1.5.0", kApiImage, {{"maintainer", "someone"}}, "exited");
  hoist::v1::StepResult result = Run(StartStep("start-clash"));
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kAlreadyExists);
  EXPECT_THAT(result.message(), HasSubstr("exists without Hoist's labels"));
  EXPECT_THAT(result.message(), HasSubstr("shop-api-blue-0-1.5.0"));
  auto still = docker_.Find(id);
  ASSERT_TRUE(still.has_value());
  EXPECT_EQ(still->info.state, "exited");
  EXPECT_EQ(docker_.Calls("Start"), 0);
  EXPECT_EQ(docker_.Calls("Create"), 0);

  // Stop and remove of that instance find nothing of Hoist's to touch.
  hoist::v1::Step remove = NewStep("remove-clash");
  *remove.mutable_remove_instance()->mutable_instance() = Instance();
  remove.mutable_remove_instance()->set_force(true);
  EXPECT_OUTCOME(Run(remove), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_TRUE(docker_.Find(id).has_value());
  EXPECT_EQ(docker_.Calls("Remove"), 0);
}

TEST_F(StepExecutorTest, ContainerOfADeploymentNotServedIsLeftUntouched) {
  PullApiImage();
  policy_.deployments = {"shop"};
  NewExecutor();
  // Managed by Hoist, but for a deployment this agent does not serve, under our name.
  std::string id = docker_.AddContainer("shop-api-blue-0-1.5.0", kApiImage,
                                        {{"hoist.managed", "true"}, {"hoist.deployment", "billing"}}, "exited");
  hoist::v1::StepResult result = Run(StartStep("start-foreign"));
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kAlreadyExists);
  EXPECT_EQ(docker_.Find(id)->info.state, "exited");
}

// ---- start / stop / remove ----

TEST_F(StepExecutorTest, StartLabelsTheContainerAndMergesEnvFilesUnderEnv) {
  PullApiImage();
  std::string env_file = dir_ + "/shop.env";
  ASSERT_TRUE(WriteFileAtomic(env_file, "# shop\nexport FROM_FILE=file\nOVERRIDDEN=\"file\"\n\n").ok());
  hoist::v1::Step step = StartStep("start-labels");
  auto* spec = step.mutable_start_instance()->mutable_spec();
  spec->add_env_files(env_file);
  (*spec->mutable_env())["OVERRIDDEN"] = "step";
  (*spec->mutable_labels())["team"] = "payments";
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(result.start().container_name(), "shop-api-blue-0-1.5.0");
  auto c = docker_.Find(result.start().container_id());
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->info.state, "running");
  const auto& labels = c->info.labels;
  EXPECT_EQ(labels.at("hoist.managed"), "true");
  EXPECT_EQ(labels.at("hoist.deployment"), "shop");
  EXPECT_EQ(labels.at("hoist.service"), "api");
  EXPECT_EQ(labels.at("hoist.slot"), "blue");
  EXPECT_EQ(labels.at("hoist.replica"), "0");
  EXPECT_EQ(labels.at("hoist.version"), "1.5.0");
  EXPECT_EQ(labels.at("hoist.step"), "start-labels");
  EXPECT_EQ(labels.at("hoist.agent"), "agent-1");
  EXPECT_EQ(labels.at("team"), "payments");
  EXPECT_EQ(labels.at("hoist.test.run"), "unit");
  EXPECT_EQ(c->spec.env.at("FROM_FILE"), "file");
  EXPECT_EQ(c->spec.env.at("OVERRIDDEN"), "step") << "spec.env wins over env files";
  EXPECT_EQ(result.start().address(), absl::StrCat("127.0.0.1:", c->info.published_ports.at("8080/tcp")));
}

TEST_F(StepExecutorTest, StartIsIdempotentAndStartsAStoppedContainer) {
  PullApiImage();
  hoist::v1::StepResult first = Run(StartStep("start-a"));
  ASSERT_EQ(first.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << first.message();
  // Another step for the same instance and version (a new leader re-planning),
  // naming the slot as unspecified, which means blue.
  hoist::v1::Step again = StartStep("start-b");
  again.mutable_start_instance()->mutable_instance()->clear_slot();
  hoist::v1::StepResult second = Run(again);
  EXPECT_OUTCOME(second, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_FALSE(second.replayed());
  EXPECT_EQ(second.start().container_id(), first.start().container_id());
  EXPECT_EQ(docker_.Calls("Create"), 1);
  EXPECT_EQ(docker_.Calls("Start"), 1) << "a running container is not started again";

  ASSERT_TRUE(docker_.Stop(first.start().container_id(), absl::Seconds(1)).ok());
  hoist::v1::StepResult third = Run(StartStep("start-c"));
  EXPECT_OUTCOME(third, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Find(first.start().container_id())->info.state, "running");
  EXPECT_EQ(docker_.Calls("Create"), 1);
}

TEST_F(StepExecutorTest, StartRefusesToReplaceAnotherVersionUnderTheSameName) {
  PullApiImage();
  ASSERT_EQ(Run(StartStep("start-v1")).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  hoist::v1::Step other = StartStep("start-v2", "1.6.0");
  other.mutable_start_instance()->set_container_name("shop-api-blue-0-1.5.0");
  hoist::v1::StepResult result = Run(other);
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kAlreadyExists);
  EXPECT_THAT(result.message(), HasSubstr("version 1.5.0"));
}

TEST_F(StepExecutorTest, StopAndRemoveAreIdempotent) {
  PullApiImage();
  hoist::v1::StepResult started = Run(StartStep("start-sr"));
  ASSERT_EQ(started.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  const std::string id = started.start().container_id();

  hoist::v1::Step remove_running = NewStep("remove-running");
  *remove_running.mutable_remove_instance()->mutable_instance() = Instance();
  hoist::v1::StepResult refused = Run(remove_running);
  EXPECT_OUTCOME(refused, STEP_OUTCOME_FAILED, kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("set remove_instance.force"));

  hoist::v1::Step stop = NewStep("stop-1");
  *stop.mutable_stop_instance()->mutable_instance() = Instance();
  stop.mutable_stop_instance()->mutable_timeout()->set_seconds(7);
  EXPECT_OUTCOME(Run(stop), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Find(id)->info.state, "exited");
  EXPECT_EQ(docker_.last_stop_timeout(), absl::Seconds(7));
  stop.set_step_id("stop-2");
  EXPECT_OUTCOME(Run(stop), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Calls("Stop"), 1) << "a stopped container is not stopped again";

  hoist::v1::Step remove = NewStep("remove-1");
  *remove.mutable_remove_instance()->mutable_instance() = Instance();
  EXPECT_OUTCOME(Run(remove), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_FALSE(docker_.Find(id).has_value());
  remove.set_step_id("remove-2");
  EXPECT_OUTCOME(Run(remove), STEP_OUTCOME_SUCCEEDED, kOk);
  stop.set_step_id("stop-3");
  EXPECT_OUTCOME(Run(stop), STEP_OUTCOME_SUCCEEDED, kOk);  // stopping an absent instance succeeds
}

TEST_F(StepExecutorTest, ForcedRemoveStopsFirstAndVersionNarrowsIt) {
  PullApiImage();
  ASSERT_EQ(Run(StartStep("start-f")).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  hoist::v1::Step other_version = NewStep("remove-other-version");
  *other_version.mutable_remove_instance()->mutable_instance() = Instance();
  other_version.mutable_remove_instance()->set_version("1.4.0");
  other_version.mutable_remove_instance()->set_force(true);
  EXPECT_OUTCOME(Run(other_version), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.Containers().size(), 1u) << "only version 1.4.0 was to be removed";

  hoist::v1::Step remove = NewStep("remove-forced");
  *remove.mutable_remove_instance()->mutable_instance() = Instance();
  remove.mutable_remove_instance()->set_force(true);
  EXPECT_OUTCOME(Run(remove), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_TRUE(docker_.Containers().empty());
  EXPECT_EQ(docker_.Calls("Stop"), 1);
}

TEST_F(StepExecutorTest, PassedDeadlineFailsBeforeTouchingAnything) {
  PullApiImage();
  hoist::v1::Step step = StartStep("late");
  step.mutable_deadline()->set_seconds(absl::ToUnixSeconds(clock_.Now() - absl::Seconds(1)));
  EXPECT_OUTCOME(Run(step), STEP_OUTCOME_FAILED, kDeadlineExceeded);
  EXPECT_EQ(docker_.Calls("Create"), 0);
}

TEST_F(StepExecutorTest, ProxyUpdateWithoutAServiceIsRefused) {
  hoist::v1::Step step = NewStep("proxy");
  step.mutable_proxy_update()->set_deployment("shop");
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_REFUSED, kInvalidArgument);
  EXPECT_THAT(result.message(), HasSubstr("proxy_update.service: missing"));
}

TEST_F(StepExecutorTest, ProxyUpdateWithNoProxyRunningHereFails) {
  hoist::v1::Step step = NewStep("proxy");
  step.mutable_proxy_update()->set_deployment("shop");
  step.mutable_proxy_update()->set_service("edge");
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kFailedPrecondition);
  EXPECT_THAT(result.message(), HasSubstr("no running container of proxy service edge of deployment shop"));
}

TEST_F(StepExecutorTest, StartCreatesTheDeploymentNetworkFirst) {
  PullApiImage();
  hoist::v1::Step step = StartStep("start-net");
  step.mutable_start_instance()->mutable_spec()->set_network("shop-net");
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_TRUE(docker_.HasNetwork("shop-net"));
}

// ---- jobs ----

TEST_F(StepExecutorTest, JobExitingZeroSucceedsWithItsLogTail) {
  std::string logs;
  for (int i = 1; i <= 60; ++i) absl::StrAppend(&logs, "line ", i, "\n");
  docker_.SetImageBehavior(kJobImage, {.exits = true, .exit_code = 0, .logs = logs});
  hoist::v1::Step step = JobStep("job-ok");
  step.mutable_run_job()->set_remove_after(true);
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(result.job().exit_code(), 0);
  std::vector<std::string> tail = absl::StrSplit(result.job().log_tail(), '\n');
  ASSERT_EQ(tail.size(), 50u) << "log_tail_lines defaults to 50";
  EXPECT_EQ(tail.front(), "line 11");
  EXPECT_EQ(tail.back(), "line 60");
  auto kept = ReadFileToString(dir_ + "/state/jobs/job-ok.log");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(*kept, logs);
  EXPECT_TRUE(docker_.Containers().empty()) << "remove_after removes the job container";
}

TEST_F(StepExecutorTest, JobExitingOneFailsAndKeepsItsContainer) {
  docker_.SetImageBehavior(kJobImage, {.exits = true, .exit_code = 1, .logs = "relation exists\n"});
  hoist::v1::Step step = JobStep("job-fail-step-with-a-long-id");
  step.mutable_run_job()->set_log_tail_lines(5);
  hoist::v1::StepResult result = Run(step);
  EXPECT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_EQ(result.job().exit_code(), 1);
  EXPECT_EQ(result.job().log_tail(), "relation exists");
  EXPECT_THAT(result.message(), HasSubstr("exited with code 1"));
  auto containers = docker_.Containers();
  ASSERT_EQ(containers.size(), 1u);
  EXPECT_THAT(containers[0].info.name, ::testing::StartsWith("shop-job-migrate-1.5.0-"));
  EXPECT_EQ(containers[0].info.labels.at("hoist.job"), "migrate");
  EXPECT_EQ(containers[0].info.labels.at("hoist.step"), "job-fail-step-with-a-long-id");
}

// ---- probes ----

hoist::v1::Step ProbeStep(hoist::v1::Step step, hoist::v1::InstanceRef instance) {
  auto* check = step.mutable_probe_health()->mutable_check();
  *step.mutable_probe_health()->mutable_instance() = std::move(instance);
  check->mutable_interval()->set_seconds(1);
  check->mutable_timeout()->set_seconds(1);
  check->mutable_deadline()->set_seconds(5);
  return step;
}

// Starts the api instance with its port 8080 published on the server's port.
#define START_BEHIND(server, id)                                                                         \
  do {                                                                                                   \
    PullApiImage();                                                                                      \
    hoist::v1::Step start_ = StartStep(id);                                                              \
    start_.mutable_start_instance()->mutable_spec()->mutable_ports(0)->set_host_port((server).port()); \
    ASSERT_EQ(Run(start_).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);                                 \
  } while (0)

hoist::v1::Step HttpProbeStep(hoist::v1::Step step, const std::string& expected_version) {
  auto* http = step.mutable_probe_health()->mutable_check()->mutable_http();
  http->set_path("/health");
  http->set_port(8080);
  http->set_expected_version(expected_version);
  return step;
}

TEST_F(StepExecutorTest, HttpProbePassesWithTheExpectedVersion) {
  LocalHttpServer server(200, R"({"status":"ok","version":"1.5.0"})");
  START_BEHIND(server, "start-probe");
  hoist::v1::Step probe = HttpProbeStep(ProbeStep(NewStep("probe-ok"), Instance()), "1.5.0");
  std::vector<hoist::v1::StepProgress> progress;
  hoist::v1::StepResult result = executor_->Run(probe, [&](const hoist::v1::StepProgress& p) { progress.push_back(p); });
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(result.probe().attempts(), 1u);
  EXPECT_EQ(result.probe().version(), "1.5.0");
  ASSERT_EQ(progress.size(), 1u);
  EXPECT_TRUE(progress[0].probe().passed());
  EXPECT_EQ(server.requests(), 1);
}

TEST_F(StepExecutorTest, HttpProbeFailsAtItsDeadlineReportingEveryAttempt) {
  LocalHttpServer server(200, R"({"status":"ok","version":"1.4.0"})");
  START_BEHIND(server, "start-probe-old");
  hoist::v1::Step probe = HttpProbeStep(ProbeStep(NewStep("probe-wrong-version"), Instance()), "1.5.0");
  std::vector<hoist::v1::StepProgress> progress;
  hoist::v1::StepResult result = executor_->Run(probe, [&](const hoist::v1::StepProgress& p) { progress.push_back(p); });
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kDeadlineExceeded);
  // Attempts at 0, 1, 2, 3 and 4 s; the next would start at the 5 s deadline.
  EXPECT_EQ(result.probe().attempts(), 5u);
  ASSERT_EQ(progress.size(), 5u);
  for (size_t i = 0; i < progress.size(); ++i) {
    EXPECT_EQ(progress[i].probe().attempt(), i + 1);
    EXPECT_FALSE(progress[i].probe().passed());
  }
  EXPECT_THAT(result.message(), HasSubstr("version 1.4.0, expected 1.5.0"));
}

TEST_F(StepExecutorTest, TcpDockerAndCommandProbes) {
  LocalHttpServer server(200, "{}");
  PullApiImage();
  docker_.SetImageBehavior(kApiImage, {.health = "unhealthy"});
  hoist::v1::Step start = StartStep("start-probes");
  start.mutable_start_instance()->mutable_spec()->mutable_ports(0)->set_host_port(server.port());
  hoist::v1::StepResult started = Run(start);
  ASSERT_EQ(started.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);

  hoist::v1::Step tcp = ProbeStep(NewStep("probe-tcp"), Instance());
  tcp.mutable_probe_health()->mutable_check()->mutable_tcp()->set_port(8080);
  EXPECT_OUTCOME(Run(tcp), STEP_OUTCOME_SUCCEEDED, kOk);

  hoist::v1::Step unhealthy = ProbeStep(NewStep("probe-docker-bad"), Instance());
  unhealthy.mutable_probe_health()->mutable_check()->mutable_docker();
  hoist::v1::StepResult result = Run(unhealthy);
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kDeadlineExceeded);
  EXPECT_THAT(result.message(), HasSubstr("Docker health: unhealthy"));

  docker_.SetHealth(started.start().container_id(), "healthy");
  hoist::v1::Step healthy = ProbeStep(NewStep("probe-docker-ok"), Instance());
  healthy.mutable_probe_health()->mutable_check()->mutable_docker();
  EXPECT_OUTCOME(Run(healthy), STEP_OUTCOME_SUCCEEDED, kOk);

  int execs = 0;
  docker_.SetExecHandler([&](const FakeDockerApi::Container&, const std::vector<std::string>& argv,
                             const std::function<absl::Status(absl::string_view)>&,
                             absl::string_view) -> absl::StatusOr<docker::ExecResult> {
    EXPECT_THAT(argv, ElementsAre("/bin/check", "--ready"));
    return docker::ExecResult{++execs < 3 ? 1 : 0, "not yet"};
  });
  hoist::v1::Step command = ProbeStep(NewStep("probe-command"), Instance());
  command.mutable_probe_health()->mutable_check()->mutable_command()->add_command("/bin/check");
  command.mutable_probe_health()->mutable_check()->mutable_command()->add_command("--ready");
  result = Run(command);
  EXPECT_OUTCOME(result, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(result.probe().attempts(), 3u);
}

TEST_F(StepExecutorTest, ProbeOfAnInstanceWithoutContainerSaysSo) {
  hoist::v1::Step probe = ProbeStep(NewStep("probe-nothing"), Instance("worker"));
  probe.mutable_probe_health()->mutable_check()->mutable_tcp()->set_port(8080);
  hoist::v1::StepResult result = Run(probe);
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kDeadlineExceeded);
  EXPECT_THAT(result.message(), HasSubstr("no running container of instance shop/worker/blue/0"));
}

// ---- backup and restore ----

class BackupTest : public StepExecutorTest {
 protected:
  void SetUp() override {
    StepExecutorTest::SetUp();
    PullApiImage();  // the helper container needs an image present
    ASSERT_EQ(Run(StartStep("start-db")).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
    docker_.SetVolumeData("shop-data", "volume bytes v1");
    config_ = dir_ + "/shop.env";
    ASSERT_TRUE(WriteFileAtomic(config_, "API_KEY=k1\n").ok());
  }

  hoist::v1::Step BackupStep(const std::string& id, const std::string& backup_id = "b-1") {
    hoist::v1::Step step = NewStep(id);
    auto* backup = step.mutable_backup();
    backup->set_deployment("shop");
    backup->set_backup_id(backup_id);
    backup->add_items()->mutable_volume()->set_volume("shop-data");
    backup->add_items()->mutable_config()->set_path(config_);
    return step;
  }

  hoist::v1::Step RestoreStep(const std::string& id, const hoist::v1::BackupResult& backup) {
    hoist::v1::Step step = NewStep(id);
    auto* restore = step.mutable_restore();
    restore->set_deployment("shop");
    restore->set_backup_id("b-1");
    *restore->mutable_artifacts() = backup.artifacts();
    return step;
  }

  hoist::v1::Step PostgresBackupStep(const std::string& id, const std::string& backup_id,
                                     const std::string& database) {
    hoist::v1::Step step = NewStep(id);
    step.mutable_backup()->set_deployment("shop");
    step.mutable_backup()->set_backup_id(backup_id);
    auto* pg = step.mutable_backup()->add_items()->mutable_postgres();
    *pg->mutable_instance() = Instance();
    pg->set_database(database);
    pg->set_user("shop");
    return step;
  }

  int HelperContainers() {
    int n = 0;
    for (const auto& c : docker_.Containers()) n += c.info.labels.count("hoist.helper");
    return n;
  }

  std::string config_;
};

// backup.keep: after each backup the agent keeps the newest `keep` of the
// deployment's backups and says which it removed; an unfinished one stays.
TEST_F(BackupTest, OlderBackupsBeyondKeepArePrunedAndReported) {
  ASSERT_TRUE(MakeDirs(dir_ + "/backups/shop/b-0.partial").ok());
  std::vector<std::string> pruned;
  for (int i = 1; i <= 4; ++i) {
    hoist::v1::Step step = BackupStep(absl::StrCat("backup-", i), absl::StrCat("b-", i));
    step.mutable_backup()->set_keep(2);
    hoist::v1::StepResult r = Run(step);
    EXPECT_OUTCOME(r, STEP_OUTCOME_SUCCEEDED, kOk);
    pruned.insert(pruned.end(), r.backup().pruned().begin(), r.backup().pruned().end());
    // Distinct manifest times, oldest first, whatever the file system's
    // clock resolution: the agent keeps the newest by them.
    std::error_code ec;
    std::filesystem::last_write_time(absl::StrCat(dir_, "/backups/shop/b-", i, "/manifest.json"),
                                     std::filesystem::file_time_type::clock::now() - std::chrono::minutes(10 - i), ec);
    EXPECT_FALSE(ec) << ec.message();
  }
  EXPECT_THAT(pruned, ::testing::ElementsAre("b-1", "b-2"));
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-1"));
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-2"));
  EXPECT_TRUE(PathExists(dir_ + "/backups/shop/b-3/manifest.json"));
  EXPECT_TRUE(PathExists(dir_ + "/backups/shop/b-4/manifest.json"));
  EXPECT_TRUE(PathExists(dir_ + "/backups/shop/b-0.partial")) << "an unfinished backup is not counted or removed";
  // keep 0 (an older controller): nothing is removed.
  hoist::v1::StepResult all = Run(BackupStep("backup-5", "b-5"));
  EXPECT_TRUE(all.backup().pruned().empty());
  EXPECT_TRUE(PathExists(dir_ + "/backups/shop/b-3/manifest.json"));
}

TEST_F(BackupTest, BackupAndRestoreAVolumeAndAConfigFile) {
  hoist::v1::StepResult backup = Run(BackupStep("backup-1"));
  EXPECT_OUTCOME(backup, STEP_OUTCOME_SUCCEEDED, kOk);
  ASSERT_EQ(backup.backup().artifacts_size(), 2);
  const auto& volume = backup.backup().artifacts(0);
  const auto& config = backup.backup().artifacts(1);
  EXPECT_EQ(volume.kind(), "volume");
  EXPECT_EQ(volume.source(), "shop-data");
  EXPECT_EQ(volume.sha256(), Sha256Hex("volume bytes v1"));
  EXPECT_EQ(volume.size_bytes(), 15u);
  EXPECT_THAT(volume.path(), ::testing::StartsWith(dir_ + "/backups/shop/b-1/"));
  EXPECT_EQ(config.kind(), "config");
  EXPECT_EQ(config.source(), config_);
  EXPECT_EQ(config.sha256(), Sha256Hex("API_KEY=k1\n"));
  EXPECT_TRUE(PathExists(dir_ + "/backups/shop/b-1/manifest.json"));
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-1.partial"));
  EXPECT_EQ(HelperContainers(), 0) << "helper containers are removed";

  // The backup id belongs to that step now.
  hoist::v1::StepResult reuse = Run(BackupStep("backup-other"));
  EXPECT_OUTCOME(reuse, STEP_OUTCOME_FAILED, kAlreadyExists);

  docker_.SetVolumeData("shop-data", "volume bytes changed by the upgrade");
  ASSERT_TRUE(WriteFileAtomic(config_, "API_KEY=k2\n").ok());
  hoist::v1::StepResult restored = Run(RestoreStep("restore-1", backup.backup()));
  EXPECT_OUTCOME(restored, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ(docker_.VolumeData("shop-data"), "volume bytes v1");
  EXPECT_EQ(*ReadFileToString(config_), "API_KEY=k1\n");
  EXPECT_EQ(HelperContainers(), 0);
}

TEST_F(BackupTest, CorruptedArtifactIsRefusedBeforeAnythingIsRestored) {
  hoist::v1::StepResult backup = Run(BackupStep("backup-c"));
  ASSERT_EQ(backup.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << backup.message();
  ASSERT_TRUE(WriteFileAtomic(backup.backup().artifacts(1).path(), "API_KEY=evil\n").ok());
  docker_.SetVolumeData("shop-data", "current");
  hoist::v1::StepResult result = Run(RestoreStep("restore-c", backup.backup()));
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kDataLoss);
  EXPECT_THAT(result.message(), HasSubstr("restore.artifacts[1]"));
  EXPECT_THAT(result.message(), HasSubstr("refusing to restore a corrupted artifact"));
  EXPECT_EQ(docker_.Calls("PutArchive"), 0) << "the intact volume artifact was not restored either";
  EXPECT_EQ(docker_.VolumeData("shop-data"), "current");
}

TEST_F(BackupTest, RestoreReadsArtifactsOnlyFromItsBackupDirectory) {
  hoist::v1::StepResult backup = Run(BackupStep("backup-p"));
  ASSERT_EQ(backup.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  hoist::v1::Step step = RestoreStep("restore-p", backup.backup());
  step.mutable_restore()->mutable_artifacts(0)->set_path(dir_ + "/backups/shop/b-1/../../../shop.env");
  EXPECT_OUTCOME(Run(step), STEP_OUTCOME_REFUSED, kPermissionDenied);
}

TEST_F(BackupTest, FailedBackupLeavesNoDirectory) {
  docker_.FailNext("GetArchive", absl::InternalError("daemon exploded"));
  hoist::v1::StepResult result = Run(BackupStep("backup-fail"));
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kInternal);
  EXPECT_THAT(result.message(), HasSubstr("archive volume shop-data: daemon exploded"));
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-1"));
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-1.partial"));
  EXPECT_EQ(HelperContainers(), 0);
  EXPECT_EQ(result.backup().artifacts_size(), 0);
}

TEST_F(BackupTest, PostgresDumpStreamsToTheArtifactAndRestoresThroughStdin) {
  const std::string dump = std::string("PGDMP\0\1binary dump", 18);
  std::vector<std::string> restore_argv;
  std::string restore_stdin;
  docker_.SetExecHandler([&](const FakeDockerApi::Container& c, const std::vector<std::string>& argv,
                             const std::function<absl::Status(absl::string_view)>& sink,
                             absl::string_view stdin_data) -> absl::StatusOr<docker::ExecResult> {
    EXPECT_EQ(c.info.name, "shop-api-blue-0-1.5.0");
    if (argv[0] == "pg_dump") {
      EXPECT_THAT(argv, ElementsAre("pg_dump", "--format=custom", "-U", "shop", "shopdb"));
      if (auto s = sink(absl::string_view(dump).substr(0, 7)); !s.ok()) return s;
      if (auto s = sink(absl::string_view(dump).substr(7)); !s.ok()) return s;
      return docker::ExecResult{0, ""};
    }
    restore_argv = argv;
    restore_stdin = std::string(stdin_data);
    return docker::ExecResult{0, ""};
  });
  hoist::v1::Step step = PostgresBackupStep("backup-pg", "b-1", "shopdb");
  hoist::v1::StepResult backup = Run(step);
  EXPECT_OUTCOME(backup, STEP_OUTCOME_SUCCEEDED, kOk);
  ASSERT_EQ(backup.backup().artifacts_size(), 1);
  EXPECT_EQ(backup.backup().artifacts(0).sha256(), Sha256Hex(dump));
  EXPECT_EQ(*ReadFileToString(backup.backup().artifacts(0).path()), dump);

  hoist::v1::Step restore = RestoreStep("restore-pg", backup.backup());
  *restore.mutable_restore()->mutable_database_instance() = Instance();
  restore.mutable_restore()->set_database_user("shop");
  EXPECT_OUTCOME(Run(restore), STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_THAT(restore_argv, ElementsAre("pg_restore", "--clean", "--if-exists", "-U", "shop", "-d", "shopdb"));
  EXPECT_EQ(restore_stdin, dump);
}

TEST_F(BackupTest, FailingPgDumpFailsTheBackupWithItsStderr) {
  docker_.SetExecHandler([&](const FakeDockerApi::Container&, const std::vector<std::string>&,
                             const std::function<absl::Status(absl::string_view)>&,
                             absl::string_view) -> absl::StatusOr<docker::ExecResult> {
    return docker::ExecResult{1, "pg_dump: error: database \"nope\" does not exist\n"};
  });
  hoist::v1::Step step = PostgresBackupStep("backup-pg-fail", "b-2", "nope");
  hoist::v1::StepResult result = Run(step);
  EXPECT_OUTCOME(result, STEP_OUTCOME_FAILED, kInternal);
  EXPECT_THAT(result.message(), HasSubstr("database \"nope\" does not exist"));
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-2.partial"));
}

// ---- reconcile after a restart ----

TEST_F(StepExecutorTest, ReconcileDecidesAnInterruptedStartFromDocker) {
  PullApiImage();
  // The agent crashed after creating and starting the container, before the result.
  hoist::v1::Step step = StartStep("start-crashed");
  ASSERT_TRUE(journal_->RecordStarted(step, clock_.Now()).ok());
  std::map<std::string, std::string> labels = {
      {"hoist.managed", "true"}, {"hoist.deployment", "shop"}, {"hoist.service", "api"},
      {"hoist.slot", "blue"},    {"hoist.replica", "0"},       {"hoist.version", "1.5.0"},
      {"hoist.step", "start-crashed"}};
  std::string id = docker_.AddContainer("shop-api-blue-0-1.5.0", kApiImage, labels, "running");
  NewExecutor();
  auto results = executor_->Reconcile();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_OUTCOME((*results)[0], STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ((*results)[0].start().container_id(), id);
  hoist::v1::StepResult resent = Run(step);
  EXPECT_TRUE(resent.replayed());
  EXPECT_EQ(resent.start().container_id(), id);
  EXPECT_EQ(docker_.Calls("Create"), 0);
}

TEST_F(StepExecutorTest, InterruptedStartWithoutContainerRunsWhenReSent) {
  PullApiImage();
  hoist::v1::Step step = StartStep("start-before-create");
  (*step.mutable_start_instance()->mutable_spec()->mutable_env())["TOKEN"] = "needed-after-restart";
  ASSERT_TRUE(journal_->RecordStarted(step, clock_.Now()).ok());
  NewExecutor();
  auto results = executor_->Reconcile();
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE(results->empty()) << "the journal keeps no env values, so only the re-sent step can create it";
  hoist::v1::StepResult resent = Run(step);
  EXPECT_OUTCOME(resent, STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_FALSE(resent.replayed());
  EXPECT_EQ(docker_.Find(resent.start().container_id())->spec.env.at("TOKEN"), "needed-after-restart");
}

TEST_F(StepExecutorTest, ReconcileTakesTheExitCodeOfAnInterruptedJob) {
  hoist::v1::Step step = JobStep("job-crashed");
  ASSERT_TRUE(journal_->RecordStarted(step, clock_.Now()).ok());
  std::string name = JobContainerName("shop", "migrate", "1.5.0", "job-crashed");
  docker_.AddContainer(name, kJobImage,
                       {{"hoist.managed", "true"}, {"hoist.deployment", "shop"}, {"hoist.job", "migrate"},
                        {"hoist.step", "job-crashed"}},
                       "running");
  // Still running at the restart: the new agent waits for it, it exits 3.
  docker_.SetBeforeCall([&](absl::string_view method) {
    if (method == "Wait") docker_.FinishContainer(name, 3);
  });
  NewExecutor();
  auto results = executor_->Reconcile();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_EQ((*results)[0].job().exit_code(), 3);
  EXPECT_EQ(docker_.Calls("Create"), 0);
  EXPECT_TRUE(Run(step).replayed());
}

TEST_F(StepExecutorTest, ShutdownMidJobLeavesItForTheNextAgent) {
  docker_.SetImageBehavior(kJobImage, {.exits = true, .exit_code = 0, .hold = true, .logs = "migrated\n"});
  hoist::v1::Step step = JobStep("job-interrupted");
  std::string name = JobContainerName("shop", "migrate", "1.5.0", "job-interrupted");
  hoist::v1::StepResult interrupted;
  std::thread runner([&] { interrupted = Run(step); });
  ASSERT_TRUE(docker_.AwaitContainer(
      name, [](const FakeDockerApi::Container& c) { return c.info.state == "running"; }, absl::Seconds(10)));
  executor_->Shutdown();
  runner.join();
  EXPECT_OUTCOME(interrupted, STEP_OUTCOME_FAILED, kCancelled);
  auto entry = journal_->Lookup("job-interrupted");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_TRUE((*entry)->interrupted()) << "no result is journaled for a step cut short by a shutdown";

  docker_.FinishContainer(name, 0);
  NewExecutor();
  auto results = executor_->Reconcile();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_OUTCOME((*results)[0], STEP_OUTCOME_SUCCEEDED, kOk);
  EXPECT_EQ((*results)[0].job().log_tail(), "migrated");
  EXPECT_EQ(docker_.Calls("Create"), 1);
}

TEST_F(BackupTest, ReconcileRemovesAPartialBackupAndReplaysACompleteOne) {
  hoist::v1::Step partial = BackupStep("backup-partial", "b-partial");
  ASSERT_TRUE(journal_->RecordStarted(partial, clock_.Now()).ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/backups/shop/b-partial.partial").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/backups/shop/b-partial.partial/01-volume-shop-data.tar", "half").ok());

  // A backup that completed just before the crash, without its journaled result.
  hoist::v1::Step complete = BackupStep("backup-complete", "b-complete");
  hoist::v1::StepResult done = Run(complete);
  ASSERT_EQ(done.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(journal_->RecordStarted(complete, clock_.Now()).ok());  // drops the result

  NewExecutor();
  auto results = executor_->Reconcile();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 2u);
  for (const auto& r : *results) {
    if (r.step_id() == "backup-partial") {
      EXPECT_OUTCOME(r, STEP_OUTCOME_FAILED, kAborted);
      EXPECT_THAT(r.message(), HasSubstr("agent restarted during the backup"));
    } else {
      EXPECT_OUTCOME(r, STEP_OUTCOME_SUCCEEDED, kOk);
      ASSERT_EQ(r.backup().artifacts_size(), 2);
      EXPECT_EQ(r.backup().artifacts(0).sha256(), done.backup().artifacts(0).sha256());
    }
  }
  EXPECT_FALSE(PathExists(dir_ + "/backups/shop/b-partial.partial"));
  EXPECT_EQ(Run(partial).outcome(), hoist::v1::STEP_OUTCOME_FAILED) << "the re-sent step replays the failure";
}

// ---- secrets ----

TEST_F(StepExecutorTest, EnvValuesNeverAppearInLogs) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);

  PullApiImage();
  std::string env_file = dir_ + "/secret.env";
  ASSERT_TRUE(WriteFileAtomic(env_file, "FILE_SECRET=file-secret-value-77\n").ok());
  hoist::v1::Step step = StartStep("start-secret");
  auto* spec = step.mutable_start_instance()->mutable_spec();
  (*spec->mutable_env())["DB_PASSWORD"] = "hunter2-secret-value";
  spec->add_env_files(env_file);
  EXPECT_EQ(Run(step).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  // The failure paths log too.
  hoist::v1::Step failing = StartStep("start-secret-fail", "1.6.0");
  (*failing.mutable_start_instance()->mutable_spec()->mutable_env())["DB_PASSWORD"] = "hunter2-secret-value";
  docker_.FailNext("Create", absl::InternalError("create failed"));
  EXPECT_EQ(Run(failing).outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  hoist::v1::Step bad_env = StartStep("start-secret-bad", "1.7.0");
  (*bad_env.mutable_start_instance()->mutable_spec()->mutable_env())["BAD=KEY"] = "hunter2-secret-value";
  EXPECT_EQ(Run(bad_env).outcome(), hoist::v1::STEP_OUTCOME_REFUSED);

  spdlog::set_default_logger(previous);
  std::string text = captured.str();
  EXPECT_THAT(text, HasSubstr("start-secret")) << "the capture works";
  EXPECT_THAT(text, Not(HasSubstr("hunter2-secret-value")));
  EXPECT_THAT(text, Not(HasSubstr("file-secret-value-77")));
  auto journal_files = ListDir(dir_ + "/state/journal");
  ASSERT_TRUE(journal_files.ok()) << journal_files.status();
  for (const std::string& name : *journal_files) {
    EXPECT_THAT(*ReadFileToString(dir_ + "/state/journal/" + name), Not(HasSubstr("hunter2-secret-value"))) << name;
  }
}

// ---- inventory ----

TEST_F(StepExecutorTest, InventoryListsManagedContainersOfServedDeployments) {
  PullApiImage();
  policy_.deployments = {"shop"};
  NewExecutor();
  hoist::v1::StepResult started = Run(StartStep("start-inv"));
  ASSERT_EQ(started.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  docker_.SetImageBehavior(kJobImage, {.exits = true, .exit_code = 0});
  ASSERT_EQ(Run(JobStep("job-inv")).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  docker_.AddContainer("unrelated", kApiImage, {});
  docker_.AddContainer("billing-api", kApiImage,
                       {{"hoist.managed", "true"}, {"hoist.deployment", "billing"}, {"hoist.service", "api"}});

  auto inventory = TakeInventory(docker_, policy_, &clock_);
  ASSERT_TRUE(inventory.ok()) << inventory.status();
  ASSERT_EQ(inventory->containers_size(), 1);
  const auto& c = inventory->containers(0);
  EXPECT_EQ(c.instance().deployment(), "shop");
  EXPECT_EQ(c.instance().service(), "api");
  EXPECT_EQ(c.instance().slot(), hoist::v1::SLOT_BLUE);
  EXPECT_EQ(c.container_id(), started.start().container_id());
  EXPECT_EQ(c.name(), "shop-api-blue-0-1.5.0");
  EXPECT_EQ(c.image(), kApiImage);
  EXPECT_EQ(c.image_digest(), "sha256:aaaa");
  EXPECT_EQ(c.version(), "1.5.0");
  EXPECT_EQ(c.state(), hoist::v1::CONTAINER_STATE_RUNNING);
  EXPECT_EQ(inventory->taken_at().seconds(), absl::ToUnixSeconds(clock_.Now()));
}

}  // namespace
}  // namespace hoist::agent

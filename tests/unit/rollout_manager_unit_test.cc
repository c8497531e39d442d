// RolloutManager on in-memory fakes: a small stack over three hosts, the
// real planner and executor, the stores in memory, the agents scripted by
// FakeStepDispatcher and time on a FakeClock. Leadership reaches the parts in
// one place, RolloutManagerUnitTest::Lead.

#include "controller/rollout/rollout_manager.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "controller/rollout/step_kind.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/protocol.h"
#include "shared/sha256.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_step_dispatcher.h"
#include "tests/fakes/in_memory_agent_store.h"
#include "tests/fakes/in_memory_rollout_store.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using rollout::StoredRollout;
using rollout::StoredStep;
using Reply = FakeStepDispatcher::Reply;

constexpr absl::Duration kWait = absl::Seconds(10);
const std::vector<std::string> kHosts = {"host-1", "host-2", "host-3"};

// An API on both app hosts, workers replaced one at a time, a web front end
// on the edge host.
constexpr char kStack[] = R"(deployment: shop
hosts:
  - id: host-1
    labels: {tier: app}
  - id: host-2
    labels: {tier: app}
  - id: host-3
    labels: {tier: edge}
services:
  api:
    role: api
    repository: registry.test/shop/api
    replicas: 2
    placement:
      labels: {tier: app}
      distinct_hosts: true
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      deadline: 30s
  worker:
    role: worker
    repository: registry.test/shop/worker
    replicas: 2
    placement:
      labels: {tier: app}
    health:
      http: {path: /health, port: 8080}
      interval: 200ms
      deadline: 30s
    rolling:
      max_parallel: 1
      pause: 50ms
  web:
    role: web
    repository: registry.test/shop/web
    placement:
      hosts: [host-3]
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080}
      interval: 200ms
      deadline: 30s
)";

// A release of shop naming an image for every versioned service.
hoist::v1::Release ReleaseOf(const std::string& version) {
  hoist::v1::Release r;
  r.set_deployment("shop");
  r.set_version(version);
  for (const char* service : {"api", "worker", "web"}) {
    (*r.mutable_images())[service] = absl::StrCat("registry.test/shop/", service, ":", version);
  }
  return r;
}

// A running, healthy container of shop in the blue slot.
hoist::v1::ContainerInfo Container(const std::string& service, uint32_t replica, const std::string& version) {
  hoist::v1::ContainerInfo c;
  c.mutable_instance()->set_deployment("shop");
  c.mutable_instance()->set_service(service);
  c.mutable_instance()->set_slot(hoist::v1::SLOT_BLUE);
  c.mutable_instance()->set_replica(replica);
  c.set_container_id(absl::StrCat(service, "-", replica, "-", version));
  c.set_name(absl::StrCat("shop-", service, "-blue-", replica, "-", version));
  c.set_image(absl::StrCat("registry.test/shop/", service, ":", version));
  c.set_version(version);
  c.set_state(hoist::v1::CONTAINER_STATE_RUNNING);
  c.set_health(hoist::v1::HEALTH_HEALTHY);
  return c;
}

class RolloutManagerUnitTest : public ::testing::Test {
 protected:
  RolloutManagerUnitTest()
      : store_(&clock_),
        agents_(&clock_),
        dispatcher_(kHosts),
        executor_(&store_, &dispatcher_, &clock_, Options()),
        manager_(&store_, &agents_, &dispatcher_, &executor_, &clock_) {}

  // Every host connected with room to spare, and the stack applied.
  void SetUp() override {
    Lead();
    for (const std::string& id : kHosts) {
      hoist::v1::Hello hello;
      hello.set_agent_id(id);
      hello.set_host_name(id + ".test");
      hello.set_protocol_version(kProtocolVersion);
      (*hello.mutable_labels())["tier"] = id == "host-3" ? "edge" : "app";
      hello.set_image_disk_free_bytes(100ull << 30);
      hello.set_backup_disk_free_bytes(100ull << 30);
      ASSERT_TRUE(agents_.RecordHello(epoch_, hello, "replica-a").ok());
    }
    ASSERT_NO_FATAL_FAILURE(Apply(kStack));
  }

  // This replica wins an election: the stores' fence moves to the new
  // epoch, the dispatcher holds the sessions and the executor hears it.
  void Lead() {
    epoch_ = store_.BumpEpoch();
    agents_.SetEpoch(epoch_);
    dispatcher_.SetLeading(true);
    executor_.OnLeadership(epoch_);
  }

  static rollout::ExecutorOptions Options() {
    rollout::ExecutorOptions options;
    options.resume_interval = absl::Hours(1);  // no resume passes of its own during a test
    return options;
  }

  void Apply(const std::string& yaml) {
    hoist::v1::ApplyStackRequest request;
    request.set_manifest_yaml(yaml);
    request.set_file_name("stack.yaml");
    auto d = manager_.ApplyStack(epoch_, request, "tester");
    ASSERT_TRUE(d.ok()) << d.status();
  }

  void Releases(const std::vector<std::string>& versions) {
    for (const std::string& v : versions) {
      auto r = manager_.CreateRelease(epoch_, ReleaseOf(v), "tester");
      ASSERT_TRUE(r.ok()) << r.status();
    }
  }

  // shop as a finished deploy of `version` leaves it: pinned, and every
  // replica running it where the planner puts it, as the agents report.
  void Running(const std::string& version) {
    ASSERT_TRUE(store_.Pin(epoch_, "shop", version).ok());
    std::map<std::string, hoist::v1::Inventory> reported;
    *reported["host-1"].add_containers() = Container("api", 0, version);
    *reported["host-1"].add_containers() = Container("worker", 0, version);
    *reported["host-2"].add_containers() = Container("api", 1, version);
    *reported["host-2"].add_containers() = Container("worker", 1, version);
    *reported["host-3"].add_containers() = Container("web", 0, version);
    ASSERT_TRUE(agents_.ReplaceInventories(epoch_, reported).ok());
  }

  absl::StatusOr<hoist::v1::Rollout> Start(const std::string& version) {
    hoist::v1::StartRolloutRequest request;
    request.set_deployment("shop");
    request.set_target_version(version);
    return manager_.StartRollout(epoch_, request, "tester");
  }

  std::vector<StoredRollout> History() {
    auto h = store_.ListRollouts("shop", 100);
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? *h : std::vector<StoredRollout>{};
  }

  // An upgrade shop-up-1 (1.0.0 -> 1.1.0, after backup shop-pre-1.1.0)
  // whose one step, a job in phase `phase`, succeeded.
  void UpgradeRanJob(const std::string& phase, const std::string& job_name) {
    StoredRollout upgrade;
    upgrade.id = "shop-up-1";
    upgrade.deployment = "shop";
    upgrade.kind = "upgrade";
    upgrade.from_version = "1.0.0";
    upgrade.to_version = "1.1.0";
    upgrade.requested_by = "tester";
    upgrade.backup_id = "shop-pre-1.1.0";
    StoredStep job;
    job.phase_name = phase;
    job.step_id = absl::StrCat("shop-up-1/", job_name);
    job.kind = rollout::StepKind::kRunJob;
    job.agent_id = "host-1";
    job.description = absl::StrCat("run ", job_name);
    hoist::v1::Step action;
    action.mutable_run_job()->set_deployment("shop");
    action.mutable_run_job()->set_name(job_name);
    job.action = action;
    ASSERT_TRUE(store_.CreateRollout(epoch_, upgrade, {job}).ok());
    ASSERT_TRUE(store_.MarkStepRunning(epoch_, upgrade.id, 0).ok());
    ASSERT_TRUE(store_.FinishStep(epoch_, upgrade.id, 0, hoist::v1::STEP_STATE_SUCCEEDED, "", std::nullopt).ok());
    ASSERT_TRUE(store_.SetRolloutState(epoch_, upgrade.id, hoist::v1::ROLLOUT_STATE_SUCCEEDED, "").ok());
  }

  std::vector<hoist::v1::Lock> Locks() {
    auto l = store_.ListLocks();
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? *l : std::vector<hoist::v1::Lock>{};
  }

  // The newest audit entry of `action`; an empty one when there is none.
  hoist::v1::AuditEvent Audited(const std::string& action) {
    auto entries = store_.ListAudit("", 1000, 0);
    EXPECT_TRUE(entries.ok()) << entries.status();
    if (entries.ok()) {
      for (const hoist::v1::AuditEvent& e : *entries) {
        if (e.action() == action) return e;
      }
    }
    ADD_FAILURE() << "nothing audited as " << action;
    return {};
  }

  FakeClock clock_;
  InMemoryRolloutStore store_;
  InMemoryAgentStore agents_;
  FakeStepDispatcher dispatcher_;
  rollout::Executor executor_;
  rollout::RolloutManager manager_;
  uint64_t epoch_ = 0;
};

TEST_F(RolloutManagerUnitTest, ApplyStackStoresTheDeploymentAndAuditsIt) {
  auto d = manager_.GetDeployment("shop");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name(), "shop");
  EXPECT_EQ(d->manifest_sha256(), Sha256Hex(kStack));
  EXPECT_EQ(d->pinned_version(), "") << "a stack just applied has never been deployed";
  const hoist::v1::AuditEvent a = Audited("stack.apply");
  EXPECT_EQ(a.outcome(), "ok");
  EXPECT_EQ(a.deployment(), "shop");
  EXPECT_EQ(a.actor(), "tester");
}

TEST_F(RolloutManagerUnitTest, InvalidStackIsRefusedNamingTheFieldAndTheRefusalIsAudited) {
  std::string text = absl::StrReplaceAll(kStack, {{"deployment: shop", "deployment: broken"}});
  text.replace(text.find("interval: 200ms"), 15, "interval: fast");
  hoist::v1::ApplyStackRequest request;
  request.set_manifest_yaml(text);
  request.set_file_name("stack.yaml");
  auto d = manager_.ApplyStack(epoch_, request, "tester");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_THAT(d.status().message(), HasSubstr("services.api.health.interval"));
  EXPECT_EQ(store_.GetDeployment("broken").status().code(), absl::StatusCode::kNotFound);
  const hoist::v1::AuditEvent a = Audited("stack.apply");
  EXPECT_EQ(a.outcome(), "refused");
  EXPECT_THAT(a.detail(), HasSubstr("services.api.health.interval"));
}

TEST_F(RolloutManagerUnitTest, ReleaseWithAnUnpinnedImageIsRefusedNamingItsFileAndLine) {
  hoist::v1::CreateReleaseRequest request;
  *request.mutable_release() = ReleaseOf("1.0.0");
  (*request.mutable_release()->mutable_images())["api"] = "registry.test/shop/api:latest";
  request.set_file_name("release.yaml");
  (*request.mutable_field_lines())["images.api"] = 4;
  auto r = manager_.CreateRelease(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("release.yaml:4: images.api \"registry.test/shop/api:latest\""));
  EXPECT_EQ(store_.GetRelease("shop", "1.0.0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Audited("release.create").outcome(), "refused");
}

TEST_F(RolloutManagerUnitTest, ReleaseWithoutAnImageForAVersionedServiceIsRefusedNamingIt) {
  hoist::v1::Release release = ReleaseOf("1.0.0");
  release.mutable_images()->erase("web");
  auto r = manager_.CreateRelease(epoch_, release, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("release.images: no image for service \"web\""));
}

TEST_F(RolloutManagerUnitTest, ReleaseOfAnUnknownDeploymentIsNotFound) {
  hoist::v1::Release release = ReleaseOf("1.0.0");
  release.set_deployment("nope");
  auto r = manager_.CreateRelease(epoch_, release, "tester");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST_F(RolloutManagerUnitTest, FirstDeployIsStoredWithItsStepsTakesTheLockAndRuns) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0"}));
  dispatcher_.Answer("pull_image", "host-3", Reply::kHang);  // holds the rollout in its pull batch
  auto r = Start("1.0.0");
  ASSERT_TRUE(r.ok()) << r.status();
  // "<deployment>-<the fake clock's time>-<its microseconds' last 16 bits>"
  EXPECT_EQ(r->id(), "shop-20270115-080000-8000");

  auto stored = store_.GetRollout(r->id());
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->kind, "deploy");
  EXPECT_EQ(stored->from_version, "");
  EXPECT_EQ(stored->to_version, "1.0.0");
  EXPECT_EQ(stored->requested_by, "tester");
  auto steps = store_.GetSteps(r->id());
  ASSERT_TRUE(steps.ok());
  ASSERT_FALSE(steps->empty());
  for (const StoredStep& s : *steps) {
    EXPECT_EQ(s.step_id.rfind(r->id() + "/", 0), 0u) << s.step_id << ": step ids must be unique across rollouts";
  }
  const std::vector<hoist::v1::Lock> locks = Locks();
  ASSERT_EQ(locks.size(), 1u);
  EXPECT_EQ(locks[0].rollout_id(), r->id());
  EXPECT_EQ(locks[0].owner(), "tester");
  EXPECT_TRUE(dispatcher_.WaitHanging(1, kWait)) << "the executor should be running the rollout";
  EXPECT_EQ(Audited("rollout.deploy").outcome(), "ok");
}

TEST_F(RolloutManagerUnitTest, StartWhileTheLockIsHeldIsRefusedNamingTheHolder) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0", "1.1.0"}));
  dispatcher_.Answer("pull_image", "host-3", Reply::kHang);
  auto first = Start("1.0.0");
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Advance(absl::Hours(1));

  auto second = Start("1.1.0");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat("locked by rollout ", first->id())));
  EXPECT_EQ(History().size(), 1u) << "the refused rollout must not be stored";
  const std::vector<hoist::v1::Lock> locks = Locks();
  ASSERT_EQ(locks.size(), 1u);
  EXPECT_EQ(locks[0].rollout_id(), first->id());
  EXPECT_EQ(Audited("rollout.deploy").outcome(), "refused");
}

TEST_F(RolloutManagerUnitTest, StartNamingAPlanThatChangedIsAbortedAndNothingIsStored) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0"}));
  hoist::v1::StartRolloutRequest request;
  request.set_deployment("shop");
  request.set_target_version("1.0.0");
  auto shown = manager_.PlanUpgrade(request);
  ASSERT_TRUE(shown.ok()) << shown.status();
  const std::string digest = rollout::PlanDigest(*shown);

  request.set_expected_plan_digest("0123456789abcdef");
  auto refused = manager_.StartRollout(epoch_, request, "tester");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAborted) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("the plan changed since it was shown"));
  EXPECT_THAT(refused.status().message(), HasSubstr(digest));
  EXPECT_TRUE(History().empty());
  EXPECT_TRUE(Locks().empty()) << "a refused start must not take the lock";
  EXPECT_TRUE(dispatcher_.Dispatched().empty());

  request.set_expected_plan_digest(digest);
  auto started = manager_.StartRollout(epoch_, request, "tester");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(History().size(), 1u);
}

TEST_F(RolloutManagerUnitTest, NegativeGracePeriodIsRefusedNamingTheField) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0"}));
  hoist::v1::StartRolloutRequest request;
  request.set_deployment("shop");
  request.set_target_version("1.0.0");
  request.mutable_grace_period()->set_seconds(-5);
  auto r = manager_.StartRollout(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("grace_period"));
  EXPECT_TRUE(History().empty());
}

TEST_F(RolloutManagerUnitTest, RollbackWithoutAVersionGoesToTheNewestReleaseOlderThanThePinnedOne) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0", "1.1.0", "1.2.0", "1.3.0"}));
  ASSERT_NO_FATAL_FAILURE(Running("1.2.0"));
  hoist::v1::RollbackRequest request;
  request.set_deployment("shop");
  auto r = manager_.Rollback(epoch_, request, "tester");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->is_rollback());
  auto stored = store_.GetRollout(r->id());
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->kind, "rollback");
  EXPECT_EQ(stored->from_version, "1.2.0");
  EXPECT_EQ(stored->to_version, "1.1.0");
  EXPECT_EQ(stored->on_failure, hoist::v1::ON_FAILURE_STOP) << "a rollback never rolls back by itself";
}

TEST_F(RolloutManagerUnitTest, RollbackOfADeploymentNeverDeployedIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0"}));
  hoist::v1::RollbackRequest request;
  request.set_deployment("shop");
  auto r = manager_.Rollback(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("shop has never been deployed"));
  EXPECT_EQ(Audited("rollback").outcome(), "refused");
}

TEST_F(RolloutManagerUnitTest, RollbackWithNoOlderReleaseIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0"}));
  ASSERT_NO_FATAL_FAILURE(Running("1.0.0"));
  hoist::v1::RollbackRequest request;
  request.set_deployment("shop");
  auto r = manager_.Rollback(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("has no release older than 1.0.0"));
  EXPECT_TRUE(History().empty());
}

TEST_F(RolloutManagerUnitTest, RollbackAcrossAMigrationNamesTheBackupToRestoreAndStartsNothing) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0", "1.1.0"}));
  ASSERT_NO_FATAL_FAILURE(Running("1.1.0"));
  // The upgrade to 1.1.0 ran api's migration gate, after a backup.
  ASSERT_NO_FATAL_FAILURE(UpgradeRanJob("migrate-api", "migrate"));

  hoist::v1::RollbackRequest request;
  request.set_deployment("shop");
  request.set_to_version("1.0.0");
  auto r = manager_.Rollback(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("rollout shop-up-1 (1.0.0 -> 1.1.0) ran a migration since 1.0.0"));
  EXPECT_THAT(r.status().message(),
              HasSubstr("hoist rollback -d shop --to 1.0.0 --restore shop-pre-1.1.0 --confirm shop"));
  EXPECT_EQ(History().size(), 1u) << "no rollback may be stored";
}

TEST_F(RolloutManagerUnitTest, RollbackAcrossAOneShotMigrationJobIsRefusedToo) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0", "1.1.0"}));
  ASSERT_NO_FATAL_FAILURE(Running("1.1.0"));
  // A stack may run its migrations as a job service (RyTask's `migrate`).
  ASSERT_NO_FATAL_FAILURE(UpgradeRanJob("run-db-migrate", "db-migrate"));

  hoist::v1::RollbackRequest request;
  request.set_deployment("shop");
  request.set_to_version("1.0.0");
  auto r = manager_.Rollback(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("rollout shop-up-1 (1.0.0 -> 1.1.0) ran a migration since 1.0.0"));
  EXPECT_EQ(History().size(), 1u) << "no rollback may be stored";
}

TEST_F(RolloutManagerUnitTest, RestoringABackupNeedsTheDeploymentNameConfirmed) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0", "1.1.0"}));
  ASSERT_NO_FATAL_FAILURE(Running("1.1.0"));
  hoist::v1::RollbackRequest request;
  request.set_deployment("shop");
  request.set_to_version("1.0.0");
  request.set_restore_backup_id("shop-pre-1.1.0");
  request.set_confirm_name("shpo");
  auto r = manager_.Rollback(epoch_, request, "tester");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("confirm by passing --confirm shop"));
  EXPECT_TRUE(History().empty());
}

TEST_F(RolloutManagerUnitTest, CancelStopsTheRolloutAfterTheBatchInFlightAndIsAudited) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0"}));
  dispatcher_.Answer("pull_image", "host-3", Reply::kHang);
  auto r = Start("1.0.0");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(dispatcher_.WaitHanging(1, kWait));

  auto cancelled = manager_.Cancel(r->id(), "wrong day", "tester");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  auto requested = store_.GetRolloutStatus(r->id());
  ASSERT_TRUE(requested.ok());
  EXPECT_TRUE(requested->cancel_requested);
  dispatcher_.ReleaseHanging();
  ASSERT_TRUE(executor_.WaitIdle(r->id(), kWait));
  auto done = store_.GetRollout(r->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state, hoist::v1::ROLLOUT_STATE_CANCELLED);
  EXPECT_TRUE(Locks().empty());
  const hoist::v1::AuditEvent a = Audited("rollout.cancel");
  EXPECT_EQ(a.outcome(), "ok");
  EXPECT_EQ(a.detail(), "wrong day");
}

TEST_F(RolloutManagerUnitTest, CancelOfAnUnknownRolloutIsNotFound) {
  auto r = manager_.Cancel("shop-nope", "typo", "tester");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST_F(RolloutManagerUnitTest, CutoverNeedsADirectionAndABlueGreenRolloutInItsGracePeriod) {
  hoist::v1::CutoverRequest request;
  request.set_deployment("shop");
  auto undirected = manager_.Cutover(epoch_, request, "tester");
  EXPECT_EQ(undirected.status().code(), absl::StatusCode::kInvalidArgument) << undirected.status();
  EXPECT_THAT(undirected.status().message(), HasSubstr("direction"));

  request.set_direction(hoist::v1::CUTOVER_DIRECTION_BACK);
  auto refused = manager_.Cutover(epoch_, request, "tester");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_THAT(refused.status().message(),
              HasSubstr("has no blue-green rollout in its grace period (it has no rollout yet)"));
  EXPECT_EQ(Audited("cutover").outcome(), "refused");
}

TEST_F(RolloutManagerUnitTest, DeploymentShowsEnvNamesButNeverTheirValues) {
  ASSERT_NO_FATAL_FAILURE(Apply(absl::StrReplaceAll(
      kStack, {{"    role: api\n", "    role: api\n    env:\n      DB_PASSWORD: hunter2\n"}})));
  auto stored = store_.GetDeployment("shop");
  ASSERT_TRUE(stored.ok());
  ASSERT_THAT(stored->manifest_yaml, HasSubstr("hunter2")) << "the store keeps the value for the agents";

  auto shown = manager_.GetDeployment("shop");
  ASSERT_TRUE(shown.ok()) << shown.status();
  EXPECT_THAT(shown->manifest_yaml(), HasSubstr("DB_PASSWORD"));
  EXPECT_THAT(shown->manifest_yaml(), HasSubstr("(secret)"));
  EXPECT_THAT(shown->manifest_yaml(), Not(HasSubstr("hunter2")));

  manager_.SetSecretFingerprint([](absl::string_view) { return std::string("fp-1"); });
  auto fingerprinted = manager_.GetDeployment("shop");
  ASSERT_TRUE(fingerprinted.ok());
  EXPECT_THAT(fingerprinted->manifest_yaml(), HasSubstr("(secret fp-1)"));
}

TEST_F(RolloutManagerUnitTest, StatusNamesLostAgentsAndServicesOffThePinnedVersion) {
  ASSERT_NO_FATAL_FAILURE(Releases({"1.0.0", "1.1.0"}));
  ASSERT_NO_FATAL_FAILURE(Running("1.1.0"));
  // api replica 0 still runs 1.0.0 on host-1.
  hoist::v1::Inventory host1;
  *host1.add_containers() = Container("api", 0, "1.0.0");
  *host1.add_containers() = Container("worker", 0, "1.1.0");
  ASSERT_TRUE(agents_.ReplaceInventory(epoch_, "host-1", host1).ok());
  // No heartbeat from any host for a minute.
  clock_.Advance(absl::Minutes(1));
  ASSERT_TRUE(agents_.MarkLost(epoch_, absl::Seconds(30)).ok());

  auto status = manager_.Status("shop");
  ASSERT_TRUE(status.ok()) << status.status();
  std::vector<std::string> problems(status->problems().begin(), status->problems().end());
  EXPECT_THAT(problems, ::testing::Contains("agent host-2 is lost (no heartbeat)"));
  EXPECT_THAT(problems, ::testing::Contains("api on host-1 runs 1.0.0, not the pinned 1.1.0"));
  EXPECT_THAT(problems, Not(::testing::Contains(HasSubstr("worker on host-1"))));
  EXPECT_EQ(status->instances_size(), 5);
}

}  // namespace
}  // namespace hoist::testing

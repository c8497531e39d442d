// The rollout executor on in-memory fakes: plans written by hand (no
// planner), stored in InMemoryRolloutStore, their agent steps answered by
// FakeStepDispatcher, time on a FakeClock. Leadership reaches an executor in
// one place, ExecutorUnitTest::NewLeader, which moves the store's epoch as a
// new leader's election would.

#include "controller/rollout/executor.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/rollout/planner.h"
#include "controller/rollout/step_kind.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/proto_time.h"
#include "shared/protocol.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_step_dispatcher.h"
#include "tests/fakes/in_memory_rollout_store.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using rollout::Executor;
using rollout::StoredRollout;
using rollout::StoredStep;
using Reply = FakeStepDispatcher::Reply;

constexpr absl::Duration kWait = absl::Seconds(10);
constexpr char kApiImage[] = "registry.test/shop/api:1.1.0";
const std::vector<std::string> kHosts = {"host-1", "host-2", "host-3"};

// One step of a plan written by hand; phases are numbered in the order they
// first appear.
struct StepSpec {
  std::string phase;
  int batch = 0;
  std::string kind;   // its StepKindName
  std::string agent;  // empty for controller steps
  absl::Duration timeout = absl::ZeroDuration();
};

// How a plan's rollout (shop, 1.0.0 -> 1.1.0) is stored.
struct RolloutSpec {
  std::string kind = "upgrade";
  hoist::v1::OnFailure on_failure = hoist::v1::ON_FAILURE_STOP;
  hoist::v1::Strategy strategy = hoist::v1::STRATEGY_ROLLING;
  hoist::v1::Slot target_slot = hoist::v1::SLOT_UNSPECIFIED;
};

// The action of an agent step of `kind` on api replica `replica`, moving it
// from 1.0.0 to 1.1.0.
hoist::v1::Step Action(rollout::StepKind kind, uint32_t replica) {
  using rollout::StepKind;
  hoist::v1::Step a;
  hoist::v1::InstanceRef instance;
  instance.set_deployment("shop");
  instance.set_service("api");
  instance.set_slot(hoist::v1::SLOT_BLUE);
  instance.set_replica(replica);
  switch (kind) {
    case StepKind::kPullImage:
      a.mutable_pull_image()->set_image(kApiImage);
      break;
    case StepKind::kStartInstance:
      *a.mutable_start_instance()->mutable_instance() = instance;
      a.mutable_start_instance()->set_version("1.1.0");
      a.mutable_start_instance()->mutable_spec()->set_image(kApiImage);
      break;
    case StepKind::kStopInstance:
      *a.mutable_stop_instance()->mutable_instance() = instance;
      a.mutable_stop_instance()->set_version("1.0.0");
      break;
    case StepKind::kProbeHealth:
      *a.mutable_probe_health()->mutable_instance() = instance;
      a.mutable_probe_health()->set_version("1.1.0");
      break;
    case StepKind::kRunJob:
      a.mutable_run_job()->set_deployment("shop");
      a.mutable_run_job()->set_name("migrate");
      a.mutable_run_job()->set_version("1.1.0");
      a.mutable_run_job()->mutable_spec()->set_image(kApiImage);
      break;
    case StepKind::kBackup:
      a.mutable_backup()->set_deployment("shop");
      a.mutable_backup()->set_backup_id("shop-pre-1.1.0");
      break;
    default:
      ADD_FAILURE() << "no action for a step of kind " << kind;
  }
  return a;
}

int Count(const std::vector<std::string>& ids, const std::string& id) {
  return static_cast<int>(std::count(ids.begin(), ids.end(), id));
}

class ExecutorUnitTest : public ::testing::Test {
 protected:
  ExecutorUnitTest() : store_(&clock_), dispatcher_(kHosts) {}

  // The deployment as an earlier leader left it: shop at 1.0.0, with
  // releases 1.0.0 and 1.1.0.
  void SetUp() override {
    const uint64_t epoch = store_.BumpEpoch();
    rollout::StoredDeployment d;
    d.name = "shop";
    d.manifest_yaml = "deployment: shop\n";
    d.file_name = "stack.yaml";
    ASSERT_TRUE(store_.PutDeployment(epoch, d).ok());
    for (const char* version : {"1.0.0", "1.1.0"}) {
      hoist::v1::Release r;
      r.set_deployment("shop");
      r.set_version(version);
      (*r.mutable_images())["api"] = absl::StrCat("registry.test/shop/api:", version);
      ASSERT_TRUE(store_.PutRelease(epoch, r).ok());
    }
    ASSERT_TRUE(store_.Pin(epoch, "shop", "1.0.0").ok());
  }

  // A replica wins an election: the epoch moves on and its new executor
  // hears it (and resumes what is unfinished).
  Executor* NewLeader() {
    const uint64_t epoch = store_.BumpEpoch();
    Executor* e = NewExecutor();
    e->OnLeadership(epoch);
    return e;
  }
  // The executor of a replica that does not lead.
  Executor* NewExecutor() {
    rollout::ExecutorOptions options;
    options.default_step_timeout = absl::Minutes(7);
    // No resume passes of its own during a test: a runner that stopped stays
    // stopped until a new leader resumes its rollout.
    options.resume_interval = absl::Hours(1);
    options.max_resume_backoff = absl::Hours(1);
    executors_.push_back(std::make_unique<Executor>(&store_, &dispatcher_, &clock_, options));
    return executors_.back().get();
  }
  void StepDown(Executor* e) { e->OnLeadership(0); }

  // Stores the rollout of `plan`, pending, as the manager would; returns its id.
  std::string Store(const std::vector<StepSpec>& plan, const RolloutSpec& spec = {}) {
    StoredRollout r;
    r.id = absl::StrCat("shop-r", ++rollouts_);
    r.deployment = "shop";
    r.kind = spec.kind;
    r.from_version = "1.0.0";
    r.to_version = "1.1.0";
    r.strategy = spec.strategy;
    r.on_failure = spec.on_failure;
    r.requested_by = "tester";
    r.rollback_command = "hoist rollback -d shop --to 1.0.0";
    r.plan.set_target_slot(spec.target_slot);
    std::vector<std::string> phases;
    std::vector<StoredStep> steps;
    for (const StepSpec& p : plan) {
      if (std::find(phases.begin(), phases.end(), p.phase) == phases.end()) {
        phases.push_back(p.phase);
        hoist::v1::PlannedPhase* ph = r.plan.add_phases();
        ph->set_name(p.phase);
        ph->set_reason(absl::StrCat("why ", p.phase));
      }
      StoredStep s;
      s.seq = static_cast<int>(steps.size());
      s.phase = static_cast<int>(std::find(phases.begin(), phases.end(), p.phase) - phases.begin());
      s.phase_name = p.phase;
      s.batch = p.batch;
      const std::optional<rollout::StepKind> kind = rollout::ParseStepKind(p.kind);
      if (!kind.has_value()) {
        ADD_FAILURE() << "no step kind is named " << p.kind;
        continue;
      }
      s.kind = *kind;
      s.agent_id = p.agent;
      s.step_id = absl::StrCat(r.id, "/s", s.seq, "-", p.kind, p.agent.empty() ? "" : "-", p.agent);
      s.description = *kind == rollout::StepKind::kPinBack ? "put the pin back to 1.0.0"
                      : p.agent.empty()                    ? p.kind
                                                           : absl::StrCat(p.kind, " on ", p.agent);
      if (!p.agent.empty()) {
        const auto host = std::find(kHosts.begin(), kHosts.end(), p.agent);
        s.action = Action(*kind, static_cast<uint32_t>(host - kHosts.begin()));
      }
      s.timeout = p.timeout;
      steps.push_back(std::move(s));
    }
    absl::Status stored = store_.CreateRollout(store_.epoch(), r, steps);
    EXPECT_TRUE(stored.ok()) << stored;
    return r.id;
  }

  // Stores the rollout of `plan` and launches it on `e`.
  std::string Launch(Executor* e, const std::vector<StepSpec>& plan, const RolloutSpec& spec = {}) {
    const std::string id = Store(plan, spec);
    absl::Status launched = e->Launch(id);
    EXPECT_TRUE(launched.ok()) << launched;
    return id;
  }

  // The rollout once `e` no longer runs it.
  StoredRollout Finished(Executor* e, const std::string& id) {
    EXPECT_TRUE(e->WaitIdle(id, kWait)) << "rollout " << id << " still runs after " << kWait;
    auto r = store_.GetRollout(id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : StoredRollout{};
  }

  std::vector<StoredStep> Steps(const std::string& id) {
    auto s = store_.GetSteps(id);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::vector<StoredStep>{};
  }

  std::vector<hoist::v1::RolloutEvent> Events(const std::string& id) {
    auto e = store_.EventsAfter(id, 0);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *e : std::vector<hoist::v1::RolloutEvent>{};
  }

  std::vector<std::string> EventKinds(const std::string& id) {
    std::vector<std::string> kinds;
    for (const auto& e : Events(id)) kinds.push_back(e.kind());
    return kinds;
  }

  // The message of the rollout's last event of `kind`; "" when there is none.
  std::string LastEvent(const std::string& id, const std::string& kind) {
    std::string message;
    for (const auto& e : Events(id)) {
      if (e.kind() == kind) message = e.message();
    }
    return message;
  }

  bool Locked() {
    auto locks = store_.ListLocks();
    EXPECT_TRUE(locks.ok()) << locks.status();
    return locks.ok() && !locks->empty();
  }

  std::string Pinned() {
    auto d = store_.GetDeployment("shop");
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? d->pinned_version : "";
  }

  FakeClock clock_;
  InMemoryRolloutStore store_;
  FakeStepDispatcher dispatcher_;
  // Last: destroyed (their runners stopped) before the fakes they use.
  std::vector<std::unique_ptr<Executor>> executors_;
  int rollouts_ = 0;
};

TEST_F(ExecutorUnitTest, RunsThePlanBatchByBatchToSucceeded) {
  Executor* leader = NewLeader();
  const std::string id = Launch(leader, {{"preflight", 0, "preflight"},
                                         {"pull", 0, "pull_image", "host-1"},
                                         {"pull", 0, "pull_image", "host-2"},
                                         {"pin", 0, "pin"},
                                         {"replace-api", 0, "start_instance", "host-1"},
                                         {"replace-api", 1, "start_instance", "host-2"}});
  const StoredRollout done = Finished(leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;

  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 6u);
  for (const StoredStep& s : steps) {
    EXPECT_EQ(s.state, hoist::v1::STEP_STATE_SUCCEEDED) << s.description;
    EXPECT_EQ(s.attempts, 1) << s.description;
  }
  // Each batch waits for the one before: both pulls (in either order), then
  // replica 0, then replica 1.
  const std::vector<std::string> sent = dispatcher_.DeliveredIds();
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_THAT(std::vector<std::string>(sent.begin(), sent.begin() + 2),
              UnorderedElementsAre(steps[1].step_id, steps[2].step_id));
  EXPECT_EQ(sent[2], steps[4].step_id);
  EXPECT_EQ(sent[3], steps[5].step_id);

  EXPECT_EQ(Pinned(), "1.1.0");
  EXPECT_FALSE(Locked()) << "a finished rollout releases the deploy lock";
  const std::vector<std::string> kinds = EventKinds(id);
  ASSERT_FALSE(kinds.empty());
  EXPECT_EQ(kinds.front(), "rollout_started");
  EXPECT_EQ(kinds.back(), "rollout_succeeded");
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "phase_started"), 4);
  EXPECT_EQ(LastEvent(id, "phase_started"), "replace-api: why replace-api");
}

TEST_F(ExecutorUnitTest, AgentStepCarriesItsIdRolloutAndADeadlineFromItsTimeout) {
  Executor* leader = NewLeader();
  const absl::Time now = clock_.Now();
  const std::string id = Launch(leader, {{"replace-api", 0, "start_instance", "host-1", absl::Seconds(30)},
                                         {"replace-api", 1, "start_instance", "host-2"}});
  ASSERT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);

  const std::vector<FakeStepDispatcher::Dispatch> sent = dispatcher_.Dispatched();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].agent_id, "host-1");
  EXPECT_EQ(sent[0].step.step_id(), Steps(id)[0].step_id);
  EXPECT_EQ(sent[0].step.rollout_id(), id);
  EXPECT_TRUE(sent[0].step.has_start_instance());
  EXPECT_EQ(ToTime(sent[0].step.deadline()), now + absl::Seconds(30));
  EXPECT_EQ(ToTime(sent[1].step.deadline()), now + absl::Minutes(7))
      << "a step without a timeout gets the executor's default";
}

TEST_F(ExecutorUnitTest, FailedStepFailsTheRolloutAndLaterBatchesNeverRun) {
  Executor* leader = NewLeader();
  std::atomic<int> rollbacks{0};
  leader->SetRollbackLauncher([&](const StoredRollout&) -> absl::StatusOr<std::string> {
    ++rollbacks;
    return std::string("unexpected");
  });
  dispatcher_.Answer("start_instance", "host-1", Reply::kFail, "port 8080 is already allocated");
  const std::string id = Launch(leader, {{"pull", 0, "pull_image", "host-1"},
                                         {"replace-api", 0, "start_instance", "host-1"},
                                         {"replace-api", 1, "start_instance", "host-2"}});
  const StoredRollout done = Finished(leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(done.error, HasSubstr("start_instance on host-1: port 8080 is already allocated"));
  EXPECT_THAT(done.error, HasSubstr("\nto roll back: hoist rollback -d shop --to 1.0.0"));

  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[1].state, hoist::v1::STEP_STATE_FAILED);
  EXPECT_EQ(steps[1].error, "port 8080 is already allocated");
  EXPECT_EQ(steps[2].state, hoist::v1::STEP_STATE_SKIPPED);
  EXPECT_EQ(steps[2].attempts, 0);
  EXPECT_EQ(Count(dispatcher_.DeliveredIds(), steps[2].step_id), 0) << "a batch after the failure was sent";
  EXPECT_FALSE(Locked());
  EXPECT_EQ(rollbacks.load(), 0) << "on-failure stop must not roll back";
  EXPECT_EQ(EventKinds(id).back(), "rollout_failed");
  auto audit = store_.ListAudit("shop", 1, 0);
  ASSERT_TRUE(audit.ok() && !audit->empty());
  EXPECT_EQ(audit->front().action(), "rollout.upgrade");
  EXPECT_EQ(audit->front().outcome(), "failed");
}

TEST_F(ExecutorUnitTest, FailedUpgradeWithOnFailureRollbackStartsTheRollback) {
  Executor* leader = NewLeader();
  std::string rolled_back;
  std::string from;
  leader->SetRollbackLauncher([&](const StoredRollout& failed) -> absl::StatusOr<std::string> {
    rolled_back = failed.id;
    from = failed.from_version;
    return std::string("shop-rollback-1");
  });
  dispatcher_.Answer("probe_health", "host-2", Reply::kFail, "/health answered 503");
  const std::string id = Launch(leader,
                                {{"replace-api", 0, "start_instance", "host-1"},
                                 {"replace-api", 1, "probe_health", "host-1"},
                                 {"replace-api", 2, "start_instance", "host-2"},
                                 {"replace-api", 3, "probe_health", "host-2"}},
                                {.on_failure = hoist::v1::ON_FAILURE_ROLLBACK});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_EQ(rolled_back, id) << "the launcher should have been given the failed rollout";
  EXPECT_EQ(from, "1.0.0");
  EXPECT_THAT(LastEvent(id, "rollback_started"), HasSubstr("rollout shop-rollback-1"));
}

TEST_F(ExecutorUnitTest, FailureBeforeAnythingChangedSaysSoAndNeedsNoRollback) {
  Executor* leader = NewLeader();
  std::atomic<int> rollbacks{0};
  leader->SetRollbackLauncher([&](const StoredRollout&) -> absl::StatusOr<std::string> {
    ++rollbacks;
    return std::string("unexpected");
  });
  dispatcher_.Answer("pull_image", "host-2", Reply::kFail, "manifest unknown");
  const std::string id = Launch(leader,
                                {{"pull", 0, "pull_image", "host-1"},
                                 {"pull", 0, "pull_image", "host-2"},
                                 {"pin", 0, "pin"},
                                 {"replace-api", 0, "start_instance", "host-1"}},
                                {.on_failure = hoist::v1::ON_FAILURE_ROLLBACK});
  const StoredRollout done = Finished(leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(done.error, HasSubstr(absl::StrCat(kNothingChangedLine, "shop runs 1.0.0 as before")));
  EXPECT_THAT(done.error, Not(HasSubstr("to roll back")));
  EXPECT_EQ(Pinned(), "1.0.0");
  EXPECT_EQ(rollbacks.load(), 0);
  EXPECT_THAT(LastEvent(id, "rollback_not_needed"), HasSubstr("failed in its pull phase"));
}

TEST_F(ExecutorUnitTest, FailedMigrationGateIsPutBackByTheUndoPhase) {
  Executor* leader = NewLeader();
  std::atomic<int> rollbacks{0};
  leader->SetRollbackLauncher([&](const StoredRollout&) -> absl::StatusOr<std::string> {
    ++rollbacks;
    return std::string("unexpected");
  });
  dispatcher_.Answer("run_job", "", Reply::kFail, "migration 0042 failed");
  const std::string id = Launch(leader,
                                {{"pull", 0, "pull_image", "host-1"},
                                 {"pin", 0, "pin"},
                                 {"migrate-api", 0, "run_job", "host-1"},
                                 {"replace-api", 0, "start_instance", "host-1"},
                                 {rollout::kUndoGatePhase, 0, "pin_back"}},
                                {.on_failure = hoist::v1::ON_FAILURE_ROLLBACK});
  const StoredRollout done = Finished(leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(done.error, HasSubstr("run_job on host-1: migration 0042 failed"));
  EXPECT_THAT(done.error, HasSubstr("\nput back as before: put the pin back to 1.0.0"));
  EXPECT_EQ(Pinned(), "1.0.0") << "the undo phase should have put the old pin back";

  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 5u);
  EXPECT_EQ(steps[3].state, hoist::v1::STEP_STATE_SKIPPED) << "no service moves after a failed gate";
  EXPECT_EQ(Count(dispatcher_.DeliveredIds(), steps[3].step_id), 0);
  EXPECT_EQ(steps[4].state, hoist::v1::STEP_STATE_SUCCEEDED);
  EXPECT_EQ(rollbacks.load(), 0) << "a gate that was put back needs no rollback";
  EXPECT_THAT(LastEvent(id, "rollback_not_needed"), HasSubstr("the failed gate was undone"));
}

TEST_F(ExecutorUnitTest, UndoPhaseDoesNotRunWhenNothingFailed) {
  Executor* leader = NewLeader();
  const std::string id = Launch(leader, {{"pin", 0, "pin"},
                                         {"replace-api", 0, "start_instance", "host-1"},
                                         {rollout::kUndoGatePhase, 0, "pin_back"}});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[2].state, hoist::v1::STEP_STATE_SKIPPED);
  EXPECT_EQ(steps[2].attempts, 0);
  EXPECT_EQ(Pinned(), "1.1.0");
}

TEST_F(ExecutorUnitTest, PreflightFailsNamingTheAgentsThatAreNotConnected) {
  Executor* leader = NewLeader();
  dispatcher_.Disconnect("host-2");
  const std::string id = Launch(leader, {{"preflight", 0, "preflight"},
                                         {"pull", 0, "pull_image", "host-1"},
                                         {"pull", 0, "pull_image", "host-2"}});
  const StoredRollout done = Finished(leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(done.error, HasSubstr(kNothingChangedLine));
  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps[0].state, hoist::v1::STEP_STATE_FAILED);
  EXPECT_EQ(steps[0].error, "agents not connected: host-2; start them or check their controller address");
  EXPECT_TRUE(dispatcher_.DeliveredIds().empty()) << "no agent step may run after a failed pre-flight";
}

TEST_F(ExecutorUnitTest, StaleEpochStopsTheRunnerAndItsResultIsNotRecorded) {
  Executor* leader = NewLeader();
  dispatcher_.Answer("start_instance", "host-1", Reply::kHang);
  const std::string id = Launch(leader, {{"replace-api", 0, "start_instance", "host-1"},
                                         {"replace-api", 1, "start_instance", "host-2"}});
  ASSERT_TRUE(dispatcher_.WaitHanging(1, kWait)) << "the first step never reached its agent";

  // Another replica wins an election; nobody tells this leader.
  store_.BumpEpoch();
  const int fenced = store_.fenced_writes();
  dispatcher_.ReleaseHanging();
  ASSERT_TRUE(leader->WaitIdle(id, kWait)) << "a runner whose writes are fenced should stop";

  EXPECT_GT(store_.fenced_writes(), fenced) << "the stale leader should have tried to record the step";
  auto r = store_.GetRollout(id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, hoist::v1::ROLLOUT_STATE_RUNNING) << "the rollout is left to the current leader";
  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].state, hoist::v1::STEP_STATE_RUNNING) << "the stale leader's result must not be recorded";
  EXPECT_FALSE(steps[0].result.has_value());
  EXPECT_EQ(steps[1].attempts, 0);
  EXPECT_EQ(Count(dispatcher_.DeliveredIds(), steps[1].step_id), 0) << "a stale leader started another batch";
  EXPECT_TRUE(Locked()) << "the lock stays with the unfinished rollout";
  for (const std::string& kind : EventKinds(id)) {
    EXPECT_NE(kind, "step_done");
    EXPECT_NE(kind, "rollout_failed");
  }
}

TEST_F(ExecutorUnitTest, NewLeaderResumesAndResendsTheStepThatWasRunning) {
  Executor* old_leader = NewLeader();
  dispatcher_.Answer("start_instance", "host-1", Reply::kHang);
  const std::string id = Launch(old_leader, {{"pull", 0, "pull_image", "host-1"},
                                             {"replace-api", 0, "start_instance", "host-1"},
                                             {"replace-api", 1, "start_instance", "host-2"}});
  ASSERT_TRUE(dispatcher_.WaitHanging(1, kWait));
  StepDown(old_leader);
  ASSERT_TRUE(old_leader->WaitIdle(id, kWait)) << "the old leader's runner did not stop";
  auto mid = store_.GetRollout(id);
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->state, hoist::v1::ROLLOUT_STATE_RUNNING) << "a leader that steps down leaves the rollout running";

  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 3u);
  Executor* new_leader = NewLeader();
  ASSERT_TRUE(dispatcher_.WaitDelivered(steps[1].step_id, 2, kWait))
      << "the new leader did not send the running step again";
  dispatcher_.ReleaseHanging();
  const StoredRollout done = Finished(new_leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;

  EXPECT_EQ(dispatcher_.Executions(steps[1].step_id), 1) << "the agent runs a step sent again once";
  EXPECT_EQ(Count(dispatcher_.DeliveredIds(), steps[0].step_id), 1) << "a finished step is not sent again";
  const std::vector<StoredStep> after = Steps(id);
  EXPECT_EQ(after[1].attempts, 2);
  EXPECT_EQ(after[2].state, hoist::v1::STEP_STATE_SUCCEEDED);
  EXPECT_THAT(LastEvent(id, "rollout_resumed"), HasSubstr(absl::StrCat("epoch ", store_.epoch())));
}

TEST_F(ExecutorUnitTest, CancelEndsTheRolloutAfterTheBatchInFlight) {
  Executor* leader = NewLeader();
  dispatcher_.Answer("start_instance", "host-1", Reply::kHang);
  const std::string id = Launch(leader, {{"replace-api", 0, "start_instance", "host-1"},
                                         {"replace-api", 1, "start_instance", "host-2"}});
  ASSERT_TRUE(dispatcher_.WaitHanging(1, kWait));
  ASSERT_TRUE(store_.RequestCancel(id).ok());  // any replica may ask
  dispatcher_.ReleaseHanging();

  const StoredRollout done = Finished(leader, id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_CANCELLED);
  EXPECT_EQ(done.error, "cancelled by an operator; steps already done stay done");
  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].state, hoist::v1::STEP_STATE_SUCCEEDED) << "the step running at the cancel finishes";
  EXPECT_EQ(steps[1].state, hoist::v1::STEP_STATE_SKIPPED);
  EXPECT_EQ(Count(dispatcher_.DeliveredIds(), steps[1].step_id), 0);
  EXPECT_FALSE(Locked());
  EXPECT_EQ(EventKinds(id).back(), "rollout_cancelled");
}

TEST_F(ExecutorUnitTest, PauseWaitsOnTheInjectedClock) {
  Executor* leader = NewLeader();
  const absl::Time start = clock_.Now();
  const std::string id = Launch(leader, {{"replace-api", 0, "start_instance", "host-1"},
                                         {"replace-api", 1, "pause", "", absl::Minutes(10)},
                                         {"replace-api", 2, "start_instance", "host-2"}});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
  EXPECT_GE(clock_.Now() - start, absl::Minutes(10));
  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_GE(steps[1].finished_at - steps[1].started_at, absl::Minutes(10));
  EXPECT_GE(steps[2].started_at, steps[1].finished_at) << "the next batch starts after the pause";
}

TEST_F(ExecutorUnitTest, LaunchIsRefusedWhenThisReplicaDoesNotLead) {
  Executor* follower = NewExecutor();
  const std::string id = Store({{"replace-api", 0, "start_instance", "host-1"}});
  absl::Status s = follower->Launch(id);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("does not lead"));
  auto r = store_.GetRollout(id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, hoist::v1::ROLLOUT_STATE_PENDING);
  EXPECT_TRUE(dispatcher_.Dispatched().empty());
}

TEST_F(ExecutorUnitTest, BackupIsRecordedAndTheBackupsItsAgentPrunedAreForgotten) {
  Executor* leader = NewLeader();
  hoist::v1::BackupRecord older;
  older.set_id("shop-pre-1.0.0");
  older.set_deployment("shop");
  older.set_agent_id("host-1");
  ASSERT_TRUE(store_.RecordBackup(store_.epoch(), older).ok());
  dispatcher_.FillResults([](const std::string&, const hoist::v1::Step& step, hoist::v1::StepResult* r) {
    if (!step.has_backup()) return;
    hoist::v1::BackupArtifact* a = r->mutable_backup()->add_artifacts();
    a->set_kind("postgres");
    a->set_path("/var/backups/shop/shop-pre-1.1.0/db.dump");
    a->set_verified_by("pg_restore --list");
    r->mutable_backup()->add_pruned("shop-pre-1.0.0");
  });
  const std::string id = Launch(leader, {{"backup", 0, "backup", "host-1"}});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);

  auto backups = store_.ListBackups("shop");
  ASSERT_TRUE(backups.ok()) << backups.status();
  ASSERT_EQ(backups->size(), 1u) << "the pruned backup should be forgotten";
  const hoist::v1::BackupRecord& b = backups->front();
  EXPECT_EQ(b.id(), "shop-pre-1.1.0");
  EXPECT_EQ(b.version(), "1.0.0") << "a backup holds the data of the version it was taken from";
  EXPECT_EQ(b.rollout_id(), id);
  EXPECT_EQ(b.agent_id(), "host-1");
  EXPECT_TRUE(b.verified());
  EXPECT_EQ(b.artifacts_size(), 1);
}

TEST_F(ExecutorUnitTest, PullRecordsTheDigestInTheReleaseAndTheStartRequiresIt) {
  Executor* leader = NewLeader();
  dispatcher_.FillResults([](const std::string&, const hoist::v1::Step& step, hoist::v1::StepResult* r) {
    if (step.has_pull_image()) r->mutable_pull()->set_image_digest("sha256:aaa");
  });
  const std::string id = Launch(leader, {{"pull", 0, "pull_image", "host-1"},
                                         {"replace-api", 0, "start_instance", "host-1"}});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);

  auto release = store_.GetRelease("shop", "1.1.0");
  ASSERT_TRUE(release.ok());
  ASSERT_TRUE(release->digests().contains("api"));
  EXPECT_EQ(release->digests().at("api"), "sha256:aaa");
  const std::vector<FakeStepDispatcher::Dispatch> sent = dispatcher_.Dispatched();
  ASSERT_EQ(sent.size(), 2u);
  ASSERT_TRUE(sent[1].step.has_start_instance());
  EXPECT_EQ(sent[1].step.start_instance().image_digest(), "sha256:aaa");
}

TEST_F(ExecutorUnitTest, PullOfATagPushedAgainFailsTheStep) {
  Executor* leader = NewLeader();
  ASSERT_TRUE(store_.RecordDigests(store_.epoch(), "shop", "1.1.0", {{"api", "sha256:first"}}).ok());
  dispatcher_.FillResults([](const std::string&, const hoist::v1::Step& step, hoist::v1::StepResult* r) {
    if (step.has_pull_image()) r->mutable_pull()->set_image_digest("sha256:second");
  });
  const std::string id = Launch(leader, {{"pull", 0, "pull_image", "host-1"},
                                         {"replace-api", 0, "start_instance", "host-1"}});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_FAILED);
  const std::vector<StoredStep> steps = Steps(id);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].state, hoist::v1::STEP_STATE_FAILED);
  EXPECT_THAT(steps[0].error, HasSubstr("the tag was pushed again"));
  EXPECT_THAT(steps[0].error, HasSubstr("sha256:first"));
  EXPECT_EQ(Count(dispatcher_.DeliveredIds(), steps[1].step_id), 0);
}

TEST_F(ExecutorUnitTest, GracePeriodEndsOnTheClockThenTheOldSlotIsRetired) {
  Executor* leader = NewLeader();
  const absl::Time start = clock_.Now();
  const std::string id = Launch(leader,
                                {{"switch", 0, "live_slot"},
                                 {"grace", 0, "grace", "", absl::Minutes(1)},
                                 {"retire-blue", 0, "stop_instance", "host-1"}},
                                {.strategy = hoist::v1::STRATEGY_BLUE_GREEN, .target_slot = hoist::v1::SLOT_GREEN});
  EXPECT_EQ(Finished(leader, id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
  EXPECT_GE(clock_.Now() - start, absl::Minutes(1)) << "the grace period is counted on the injected clock";
  auto d = store_.GetDeployment("shop");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->live_slot, hoist::v1::SLOT_GREEN);

  const std::vector<hoist::v1::RolloutEvent> events = Events(id);
  // The index of the first event of `kind`; events.size() when there is none.
  auto at = [&](const std::string& kind) {
    size_t i = 0;
    while (i < events.size() && events[i].kind() != kind) ++i;
    return i;
  };
  const size_t started = at("grace_started");
  const size_t ended = at("grace_ended");
  ASSERT_LT(started, events.size());
  ASSERT_LT(ended, events.size());
  EXPECT_LT(started, ended);
  EXPECT_EQ(events[started].rollout_state(), hoist::v1::ROLLOUT_STATE_GRACE);
  EXPECT_EQ(events[ended].message(), "the grace period is over: retiring blue");
  EXPECT_EQ(dispatcher_.DeliveredIds().size(), 1u) << "the old slot is retired once the period is over";
}

}  // namespace
}  // namespace hoist::testing

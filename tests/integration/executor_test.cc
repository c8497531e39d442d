// The rollout executor against a real Postgres: plans made by the real
// RolloutManager from a small stack, stored in PgRolloutStore, run by the real
// Executor, with agents played by FakeAgents, a StepDispatcher that keeps a
// journal like hoist-agent does (a re-sent step id returns its recorded
// result; it is executed once). Leader epochs are bumped in hoist_leader by
// hand, as a new leader's election would.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "controller/rollout/executor.h"
#include "controller/rollout/rollout_manager.h"
#include "controller/rollout/step_kind.h"
#include "controller/store/pg_agent_store.h"
#include "controller/store/pg_migrator.h"
#include "controller/store/pg_pool.h"
#include "controller/store/pg_rollout_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/protocol.h"
#include "shared/proto_names.h"
#include "shared/pg.h"
#include "tests/fixtures/migrated_postgres_test.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using rollout::StepKind;
using rollout::StoredRollout;
using rollout::StoredStep;

constexpr absl::Duration kWait = absl::Seconds(30);

// Polls cond every 10 ms until it holds or the timeout passes.
bool WaitUntil(const std::function<bool()>& cond, absl::Duration timeout = kWait) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return cond();
}

// A small stack over three hosts: an API with a migration gate, workers
// replaced one at a time with a pause, a web front end. DEPLOYMENT and PAUSE
// are replaced per test.
constexpr char kStack[] = R"(deployment: DEPLOYMENT
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
    migration:
      command: [/app, migrate]
      timeout: 1m
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
      pause: PAUSE
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

const std::vector<std::string> kAgents = {"host-1", "host-2", "host-3"};

// Agents with journals, in memory. Each step id executes at most once: a
// re-sent id waits for the execution in flight or returns the recorded
// result. Executions run on their own threads, like an agent that carries on
// when the controller goes away; the caller stops waiting when its cancel
// flag (the executor's "leadership lost") becomes true.
class FakeAgents : public rollout::StepDispatcher {
 public:
  using Predicate = std::function<bool(const hoist::v1::Step&)>;

  ~FakeAgents() override {
    {
      absl::MutexLock lock(&mu_);
      released_all_ = true;
    }
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  // Steps matching `when` fail at the agent with `message`.
  void FailWhen(Predicate when, std::string message) {
    absl::MutexLock lock(&mu_);
    failures_.push_back({std::move(when), std::move(message)});
  }
  // Steps matching `when` block, once started, until Release().
  void BlockWhen(Predicate when) {
    absl::MutexLock lock(&mu_);
    block_ = std::move(when);
    released_ = false;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  // Called on the execution's thread once a step's result is recorded,
  // before the waiting caller sees it.
  void AfterExecution(std::function<void(const hoist::v1::Step&)> hook) {
    absl::MutexLock lock(&mu_);
    after_ = std::move(hook);
  }
  // Waits until a blocked step is executing; returns its id ("" on timeout).
  std::string WaitBlocked(absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](std::string* s) { return !s->empty(); }, &blocked_id_),
                         timeout);
    return blocked_id_;
  }

  // What a pull of `image` finds from now on (a tag pushed again).
  void SetDigest(const std::string& image, const std::string& digest) {
    absl::MutexLock lock(&mu_);
    digests_[image] = digest;
  }
  // The digest the last start of `image` required ("" when none).
  std::string StartedDigest(const std::string& image) {
    absl::MutexLock lock(&mu_);
    auto it = started_digests_.find(image);
    return it == started_digests_.end() ? "" : it->second;
  }

  int Executions(const std::string& step_id) {
    absl::MutexLock lock(&mu_);
    auto it = executions_.find(step_id);
    return it == executions_.end() ? 0 : it->second;
  }
  int Resends() {
    absl::MutexLock lock(&mu_);
    return resends_;
  }

  // The containers the fake agents run, as inventories: what a real agent
  // would report after its steps.
  std::map<std::string, hoist::v1::Inventory> Inventories() {
    absl::MutexLock lock(&mu_);
    std::map<std::string, hoist::v1::Inventory> out;
    for (const std::string& a : kAgents) out[a];
    for (const auto& [key, c] : containers_) *out[key.first].add_containers() = c;
    return out;
  }

  absl::StatusOr<hoist::v1::StepResult> RunStep(const std::string& agent_id, hoist::v1::Step step,
                                                const ProgressFn& on_progress,
                                                const std::atomic<bool>* cancel) override {
    auto cancelled = [cancel] { return cancel != nullptr && cancel->load(); };
    if (cancelled()) return absl::FailedPreconditionError("this replica no longer leads");
    if (step.step_id().empty() || !step.has_deadline()) {
      return absl::InvalidArgumentError("step without an id or a deadline");
    }
    std::shared_ptr<Entry> entry;
    {
      absl::MutexLock lock(&mu_);
      auto it = journal_.find(step.step_id());
      if (it != journal_.end()) {
        ++resends_;
        entry = it->second;
      } else {
        entry = std::make_shared<Entry>();
        journal_[step.step_id()] = entry;
        ++executions_[step.step_id()];
        threads_.emplace_back([this, agent_id, step, entry] { Execute(agent_id, step, entry); });
      }
    }
    if (on_progress) {
      hoist::v1::StepProgress p;
      p.set_step_id(step.step_id());
      p.set_message("working");
      on_progress(p);
    }
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entry->done || cancelled(); };
    while (!ready()) mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(10));
    if (entry->done) return entry->result;
    return absl::FailedPreconditionError("this replica no longer leads");
  }

  bool IsConnected(const std::string& agent_id) const override {
    return std::find(kAgents.begin(), kAgents.end(), agent_id) != kAgents.end();
  }
  bool Leading() const override { return true; }

 private:
  struct Entry {
    bool done = false;
    hoist::v1::StepResult result;
  };

  void Execute(const std::string& agent_id, const hoist::v1::Step& step, const std::shared_ptr<Entry>& entry) {
    std::function<void(const hoist::v1::Step&)> after;
    {
      absl::MutexLock lock(&mu_);
      if (block_ && block_(step)) {
        block_ = nullptr;  // one step blocks
        blocked_id_ = step.step_id();
        auto go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return released_ || released_all_; };
        mu_.Await(absl::Condition(&go));
        blocked_id_.clear();
      }
      hoist::v1::StepResult r;
      r.set_step_id(step.step_id());
      r.set_outcome(hoist::v1::STEP_OUTCOME_SUCCEEDED);
      for (const auto& [when, message] : failures_) {
        if (when(step)) {
          r.set_outcome(hoist::v1::STEP_OUTCOME_FAILED);
          r.set_message(message);
          if (step.has_run_job()) {
            r.mutable_job()->set_exit_code(1);
            r.mutable_job()->set_log_tail("migration 0042 failed");
          }
        }
      }
      if (r.outcome() == hoist::v1::STEP_OUTCOME_SUCCEEDED) Apply(agent_id, step, &r);
      entry->result = r;
      after = after_;
    }
    if (after) after(step);
    absl::MutexLock lock(&mu_);
    entry->done = true;
  }

  // What the step does to the host's containers.
  void Apply(const std::string& agent_id, const hoist::v1::Step& step, hoist::v1::StepResult* r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto key = [&](const hoist::v1::InstanceRef& i, const std::string& version) {
      return std::make_pair(agent_id, absl::StrCat(i.deployment(), "/", i.service(), "/", i.slot(), "/",
                                                    i.replica(), "/", version));
    };
    if (step.has_pull_image()) {
      auto d = digests_.find(step.pull_image().image());
      r->mutable_pull()->set_image_digest(d != digests_.end() ? d->second
                                                              : absl::StrCat("sha256:", step.pull_image().image()));
    } else if (step.has_start_instance()) {
      const auto& s = step.start_instance();
      if (!s.image_digest().empty()) started_digests_[s.spec().image()] = s.image_digest();
      hoist::v1::ContainerInfo c;
      *c.mutable_instance() = s.instance();
      c.set_container_id(absl::StrCat("c", ++next_container_));
      c.set_name(s.container_name().empty() ? key(s.instance(), s.version()).second : s.container_name());
      c.set_image(s.spec().image());
      c.set_version(s.version());
      c.set_state(hoist::v1::CONTAINER_STATE_RUNNING);
      c.set_health(hoist::v1::HEALTH_HEALTHY);
      containers_[key(s.instance(), s.version())] = c;
      r->mutable_start()->set_container_id(c.container_id());
      r->mutable_start()->set_container_name(c.name());
    } else if (step.has_stop_instance()) {
      for (auto& [k, c] : containers_) {
        if (k.first == agent_id && c.instance().SerializeAsString() == step.stop_instance().instance().SerializeAsString() &&
            (step.stop_instance().version().empty() || c.version() == step.stop_instance().version())) {
          c.set_state(hoist::v1::CONTAINER_STATE_EXITED);
        }
      }
    } else if (step.has_remove_instance()) {
      for (auto it = containers_.begin(); it != containers_.end();) {
        const auto& c = it->second;
        if (it->first.first == agent_id &&
            c.instance().SerializeAsString() == step.remove_instance().instance().SerializeAsString() &&
            (step.remove_instance().version().empty() || c.version() == step.remove_instance().version())) {
          it = containers_.erase(it);
        } else {
          ++it;
        }
      }
    } else if (step.has_run_job()) {
      r->mutable_job()->set_exit_code(0);
    } else if (step.has_probe_health()) {
      r->mutable_probe()->set_attempts(1);
      r->mutable_probe()->set_version(step.probe_health().version());
    }
  }

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> journal_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> executions_ ABSL_GUARDED_BY(mu_);
  int resends_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::pair<Predicate, std::string>> failures_ ABSL_GUARDED_BY(mu_);
  Predicate block_ ABSL_GUARDED_BY(mu_);
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  bool released_all_ ABSL_GUARDED_BY(mu_) = false;
  std::string blocked_id_ ABSL_GUARDED_BY(mu_);
  std::function<void(const hoist::v1::Step&)> after_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, hoist::v1::ContainerInfo> containers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> digests_ ABSL_GUARDED_BY(mu_);          // image -> what a pull finds
  std::map<std::string, std::string> started_digests_ ABSL_GUARDED_BY(mu_);  // image -> digest a start required
  int next_container_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// PgRolloutStore with a hook after each FinishStep that committed: the exact
// point "step k finished" at which a test makes the leader go away.
class HookedStore : public rollout::RolloutStore {
 public:
  explicit HookedStore(rollout::RolloutStore* inner) : inner_(inner) {}
  void AfterFinishStep(std::function<void(const std::string& rollout_id, int seq)> hook) {
    absl::MutexLock lock(&mu_);
    after_finish_ = std::move(hook);
  }

  absl::Status FinishStep(uint64_t epoch, const std::string& rollout_id, int seq, hoist::v1::StepState state,
                          const std::string& error, const std::optional<hoist::v1::StepResult>& result) override {
    absl::Status s = inner_->FinishStep(epoch, rollout_id, seq, state, error, result);
    std::function<void(const std::string&, int)> hook;
    {
      absl::MutexLock lock(&mu_);
      hook = after_finish_;
    }
    if (s.ok() && hook) hook(rollout_id, seq);
    return s;
  }

  absl::Status PutDeployment(uint64_t e, const rollout::StoredDeployment& d) override {
    return inner_->PutDeployment(e, d);
  }
  absl::StatusOr<rollout::StoredDeployment> GetDeployment(const std::string& n) override {
    return inner_->GetDeployment(n);
  }
  absl::StatusOr<std::vector<rollout::StoredDeployment>> ListDeployments() override {
    return inner_->ListDeployments();
  }
  absl::Status PutRelease(uint64_t e, const hoist::v1::Release& r) override { return inner_->PutRelease(e, r); }
  absl::StatusOr<hoist::v1::Release> GetRelease(const std::string& d, const std::string& v) override {
    return inner_->GetRelease(d, v);
  }
  absl::StatusOr<std::vector<hoist::v1::Release>> ListReleases(const std::string& d) override {
    return inner_->ListReleases(d);
  }
  absl::Status Pin(uint64_t e, const std::string& d, const std::string& v) override { return inner_->Pin(e, d, v); }
  absl::Status SetLiveSlot(uint64_t e, const std::string& d, hoist::v1::Slot slot) override {
    return inner_->SetLiveSlot(e, d, slot);
  }
  absl::Status CreateRollout(uint64_t e, const StoredRollout& r, const std::vector<StoredStep>& s) override {
    return inner_->CreateRollout(e, r, s);
  }
  absl::StatusOr<StoredRollout> GetRollout(const std::string& id) override { return inner_->GetRollout(id); }
  absl::StatusOr<std::vector<StoredStep>> GetSteps(const std::string& id) override { return inner_->GetSteps(id); }
  absl::StatusOr<std::vector<StoredRollout>> ListRollouts(const std::string& d, int limit) override {
    return inner_->ListRollouts(d, limit);
  }
  absl::StatusOr<std::vector<std::string>> UnfinishedRollouts() override { return inner_->UnfinishedRollouts(); }
  absl::Status MarkStepRunning(uint64_t e, const std::string& id, int seq) override {
    return inner_->MarkStepRunning(e, id, seq);
  }
  absl::Status SetRolloutState(uint64_t e, const std::string& id, hoist::v1::RolloutState s,
                               const std::string& error) override {
    return inner_->SetRolloutState(e, id, s, error);
  }
  absl::Status RequestCancel(const std::string& id) override { return inner_->RequestCancel(id); }
  absl::Status RequestFinish(const std::string& id) override { return inner_->RequestFinish(id); }
  absl::StatusOr<std::vector<hoist::v1::Lock>> ListLocks() override { return inner_->ListLocks(); }
  absl::Status AppendEvent(uint64_t e, const hoist::v1::RolloutEvent& ev) override {
    return inner_->AppendEvent(e, ev);
  }
  absl::StatusOr<std::vector<hoist::v1::RolloutEvent>> EventsAfter(const std::string& id, uint64_t after) override {
    return inner_->EventsAfter(id, after);
  }
  absl::StatusOr<std::map<std::string, std::string>> RecordDigests(
      uint64_t e, const std::string& d, const std::string& v, const std::map<std::string, std::string>& m) override {
    return inner_->RecordDigests(e, d, v, m);
  }
  absl::Status ForgetBackups(uint64_t e, const std::string& a, const std::vector<std::string>& ids) override {
    return inner_->ForgetBackups(e, a, ids);
  }
  absl::Status RecordBackup(uint64_t e, const hoist::v1::BackupRecord& b) override {
    return inner_->RecordBackup(e, b);
  }
  absl::StatusOr<std::vector<hoist::v1::BackupRecord>> ListBackups(const std::string& d) override {
    return inner_->ListBackups(d);
  }
  absl::StatusOr<hoist::v1::BackupRecord> GetBackup(const std::string& id) override {
    return inner_->GetBackup(id);
  }
  absl::Status Audit(const rollout::AuditEntry& e) override { return inner_->Audit(e); }
  absl::StatusOr<std::vector<hoist::v1::AuditEvent>> ListAudit(const std::string& d, int limit,
                                                               uint64_t before) override {
    return inner_->ListAudit(d, limit, before);
  }

 private:
  rollout::RolloutStore* const inner_;
  absl::Mutex mu_;
  std::function<void(const std::string&, int)> after_finish_ ABSL_GUARDED_BY(mu_);
};

// One leader's executor and manager over the shared store and agents.
struct Leader {
  Leader(rollout::RolloutStore* store, AgentStore* agents, FakeAgents* fleet, uint64_t epoch)
      : epoch(epoch),
        executor(store, fleet, RealClock::Get()),
        manager(store, agents, fleet, &executor, RealClock::Get()) {
    executor.OnLeadership(epoch);
  }
  uint64_t epoch;
  rollout::Executor executor;
  rollout::RolloutManager manager;
};

class ExecutorTest : public MigratedPostgresTest {
 protected:
  void SetUp() override {
    MigratedPostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    pool_ = std::make_unique<PgPool>(*WithConnectionDefaults(url_), 8);
    pg_store_ = std::make_unique<PgRolloutStore>(pool_.get());
    store_ = std::make_unique<HookedStore>(pg_store_.get());
    agent_store_ = std::make_unique<PgAgentStore>(pool_.get());
    fleet_ = std::make_unique<FakeAgents>();
    const uint64_t epoch = BumpEpoch();
    for (const std::string& id : kAgents) {
      hoist::v1::Hello hello;
      hello.set_agent_id(id);
      hello.set_host_name(id + ".test");
      hello.set_protocol_version(1);
      hello.set_agent_version(HOIST_VERSION);
      (*hello.mutable_labels())["tier"] = id == "host-3" ? "edge" : "app";
      hello.set_image_disk_free_bytes(100ull << 30);
      hello.set_backup_disk_free_bytes(100ull << 30);
      ASSERT_TRUE(agent_store_->RecordHello(epoch, hello, "test").ok());
    }
  }

  void TearDown() override {
    // Executors first (they use the fleet and the store), then the fleet.
    leaders_.clear();
    fleet_.reset();
  }

  Leader* NewLeader() {
    leaders_.push_back(std::make_unique<Leader>(store_.get(), agent_store_.get(), fleet_.get(), BumpEpoch()));
    return leaders_.back().get();
  }

  // Applies the stack and records releases, as the leader of `epoch`.
  void Prepare(Leader* l, const std::string& deployment, const std::vector<std::string>& versions,
               const std::string& pause = "50ms", const std::string& extra_services = "") {
    hoist::v1::ApplyStackRequest apply;
    std::string stack = std::string(kStack) + extra_services;
    if (!with_migration_) stack = absl::StrReplaceAll(stack, {{"    migration:\n      command: [/app, migrate]\n      timeout: 1m\n", ""}});
    apply.set_manifest_yaml(absl::StrReplaceAll(stack, {{"DEPLOYMENT", deployment}, {"PAUSE", pause}}));
    apply.set_file_name("stack.yaml");
    auto d = l->manager.ApplyStack(l->epoch, apply, "tester");
    ASSERT_TRUE(d.ok()) << d.status();
    for (const std::string& v : versions) {
      hoist::v1::Release r;
      r.set_deployment(deployment);
      r.set_version(v);
      for (const char* s : {"api", "worker", "web"}) {
        (*r.mutable_images())[s] = absl::StrCat("registry.test/shop/", s, ":", v);
      }
      auto created = l->manager.CreateRelease(l->epoch, r, "tester");
      ASSERT_TRUE(created.ok()) << created.status();
    }
  }

  // Starts the first deploy of `deployment` (1.0.0, prepared by `l`) with its
  // first start step held at the agent; returns the rollout id and that step's
  // id, or fails the test.
  std::pair<std::string, std::string> StartHeldAtFirstStart(Leader* l, const std::string& deployment) {
    Prepare(l, deployment, {"1.0.0"});
    fleet_->BlockWhen([](const hoist::v1::Step& s) { return s.has_start_instance(); });
    auto id = Start(l, deployment, "1.0.0");
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return {};
    const std::string blocked = fleet_->WaitBlocked();
    EXPECT_FALSE(blocked.empty()) << "no start step reached the agent";
    return {*id, blocked};
  }

  // Reports the fake agents' containers as their inventories.
  void SyncInventory(uint64_t epoch) {
    for (const auto& [agent, inv] : fleet_->Inventories()) {
      ASSERT_TRUE(agent_store_->ReplaceInventory(epoch, agent, inv).ok());
    }
  }

  // Runs an upgrade of shop to `version` that must succeed, and refreshes the inventory; returns its id.
  std::string Upgraded(Leader* l, const std::string& version) {
    auto id = Start(l, "shop", version);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return "";
    EXPECT_EQ(WaitDone(*id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
    EXPECT_TRUE(l->executor.WaitIdle(*id, kWait));
    SyncInventory(l->epoch);
    return *id;
  }

  absl::StatusOr<std::string> Start(Leader* l, const std::string& deployment, const std::string& version,
                                    hoist::v1::OnFailure on_failure = hoist::v1::ON_FAILURE_STOP) {
    hoist::v1::StartRolloutRequest req;
    req.set_deployment(deployment);
    req.set_target_version(version);
    req.set_on_failure(on_failure);
    auto r = l->manager.StartRollout(l->epoch, req, "tester");
    if (!r.ok()) return r.status();
    return r->id();
  }

  // Waits for the rollout to reach a terminal state and returns it.
  StoredRollout WaitDone(const std::string& id) {
    StoredRollout out;
    bool done = WaitUntil([&] {
      auto r = pg_store_->GetRollout(id);
      if (r.ok()) out = *r;
      return r.ok() && IsTerminal(r->state);
    });
    EXPECT_TRUE(done) << "rollout " << id << " did not finish within " << kWait << "; state "
                      << hoist::v1::RolloutState_Name(out.state);
    return out;
  }

  std::vector<StoredStep> Steps(const std::string& id) {
    auto s = pg_store_->GetSteps(id);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::vector<StoredStep>{};
  }

  // Deploys 1.0.0 of a deployment of its own with a leader of its own and
  // returns the steps: the shape every first deploy of the stack has.
  std::vector<StoredStep> ReferenceDeploy() {
    Leader* l = NewLeader();
    Prepare(l, "reference", {"1.0.0"});
    auto id = Start(l, "reference", "1.0.0");
    if (!id.ok()) {
      ADD_FAILURE() << "reference deploy: " << id.status();
      return {};
    }
    if (StoredRollout r = WaitDone(*id); r.state != hoist::v1::ROLLOUT_STATE_SUCCEEDED) {
      ADD_FAILURE() << "reference deploy failed: " << r.error;
      return {};
    }
    return Steps(*id);
  }

  // A deployment at 1.0.0 (deployed by `l`, inventory reported) with
  // releases 1.0.0 and 1.1.0.
  void Deployed(Leader* l, const std::string& deployment, const std::string& pause = "50ms") {
    Prepare(l, deployment, {"1.0.0", "1.1.0"}, pause);
    auto id = Start(l, deployment, "1.0.0");
    ASSERT_TRUE(id.ok()) << id.status();
    ASSERT_EQ(WaitDone(*id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
    SyncInventory(l->epoch);
  }

  // Upgrades `l`'s deployed "shop" to 1.1.0 with --on-failure rollback while
  // every 1.1.0 health probe fails; returns the rollout once it failed and
  // its runner is idle.
  std::string FailedUpgradeWithOnFailureRollback(Leader* l) {
    return FailedWithOnFailureRollback(
               l, [](const hoist::v1::Step& s) { return s.has_probe_health() && s.probe_health().version() == "1.1.0"; },
               "/health answered 503")
        .id;
  }

  // The message of the rollout's last event of `kind`; empty when there is none.
  std::string LastEvent(const std::string& rollout_id, const std::string& kind) {
    auto events = pg_store_->EventsAfter(rollout_id, 0);
    EXPECT_TRUE(events.ok()) << events.status();
    std::string message;
    if (events.ok()) {
      for (const auto& e : *events) {
        if (e.kind() == kind) message = e.message();
      }
    }
    return message;
  }

  // Upgrades `l`'s deployed "shop" to 1.1.0 with --on-failure rollback while
  // the agents fail the steps `when` matches with `message`; returns the
  // rollout once it failed and its runner is idle.
  StoredRollout FailedWithOnFailureRollback(Leader* l, FakeAgents::Predicate when, const std::string& message) {
    l->executor.SetRollbackLauncher([l](const StoredRollout& failed) {
      return l->manager.RollBackFailed(l->epoch, failed);
    });
    Deployed(l, "shop");
    fleet_->FailWhen(std::move(when), message);
    auto id = Start(l, "shop", "1.1.0", hoist::v1::ON_FAILURE_ROLLBACK);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return {};
    StoredRollout done = WaitDone(*id);
    EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
    EXPECT_TRUE(l->executor.WaitIdle(*id, kWait));
    return done;
  }

  bool with_migration_ = true;  // false: the stack's API has no migration gate
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgRolloutStore> pg_store_;
  std::unique_ptr<HookedStore> store_;
  std::unique_ptr<PgAgentStore> agent_store_;
  std::unique_ptr<FakeAgents> fleet_;
  std::vector<std::unique_ptr<Leader>> leaders_;
};

bool IsMigration(const hoist::v1::Step& s) { return s.has_run_job(); }

// True when s belongs to a batch that runs after ref's.
bool LaterBatch(const StoredStep& s, const StoredStep& ref) {
  return s.phase > ref.phase || (s.phase == ref.phase && s.batch > ref.batch);
}

// Kills the leader right after step k committed, for every k, and checks the
// next leader finishes the rollout with every step executed exactly once.
TEST_F(ExecutorTest, NewLeaderResumesAfterTheOldOneStoppedAtEveryStepBoundary) {
  const int n = static_cast<int>(ReferenceDeploy().size());
  ASSERT_GT(n, 5) << "the plan should have several steps";

  for (int k = 0; k < n; ++k) {
    SCOPED_TRACE(absl::StrCat("leader stops after step ", k, " of ", n));
    const std::string deployment = absl::StrCat("shop", k);
    Leader* old_leader = NewLeader();
    Prepare(old_leader, deployment, {"1.0.0"});
    std::string rollout_id;
    store_->AfterFinishStep([&, k](const std::string& id, int seq) {
      if (seq == k && absl::StartsWith(id, deployment + "-")) old_leader->executor.OnLeadership(0);
    });
    auto id = Start(old_leader, deployment, "1.0.0");
    ASSERT_TRUE(id.ok()) << id.status();
    rollout_id = *id;
    ASSERT_TRUE(old_leader->executor.WaitIdle(rollout_id, kWait)) << "the old leader's runner did not stop";
    store_->AfterFinishStep(nullptr);

    std::vector<StoredStep> steps = Steps(rollout_id);
    ASSERT_EQ(static_cast<int>(steps.size()), n);
    EXPECT_EQ(steps[k].state, hoist::v1::STEP_STATE_SUCCEEDED);
    for (const StoredStep& s : steps) {
      if (LaterBatch(s, steps[k])) {
        EXPECT_EQ(s.attempts, 0) << "step " << s.seq << " (" << s.description
                                 << ") was started by a leader that had already stepped down";
      }
    }
    auto mid = pg_store_->GetRollout(rollout_id);
    ASSERT_TRUE(mid.ok());
    EXPECT_EQ(mid->state, hoist::v1::ROLLOUT_STATE_RUNNING) << "a leader that stepped down must leave it running";

    Leader* new_leader = NewLeader();  // OnLeadership resumes unfinished rollouts
    StoredRollout done = WaitDone(rollout_id);
    EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
    for (const StoredStep& s : Steps(rollout_id)) {
      EXPECT_EQ(s.state, hoist::v1::STEP_STATE_SUCCEEDED) << s.description;
      if (s.action.has_value()) {
        EXPECT_EQ(fleet_->Executions(s.step_id), 1) << s.step_id << " should have executed exactly once";
      }
    }
    ASSERT_TRUE(new_leader->executor.WaitIdle(rollout_id, kWait));
  }
}

// Kills the leader while step k runs at the agent, for every agent step: the
// next leader re-sends it and gets the agent's one result.
// Step finishes are group-committed (PgRolloutStore::FinishStepWithEvent):
// many at once are each written with their own state, error and event; a
// row that cannot be written fails its own caller only; a stale epoch fails
// every caller.
TEST_F(ExecutorTest, StepFinishesArrivingTogetherAreWrittenTogetherAndEachCallerGetsItsOwnAnswer) {
  Leader* l = NewLeader();
  Prepare(l, "together", {"1.0.0"});
  auto id = Start(l, "together", "1.0.0");
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_EQ(WaitDone(*id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
  ASSERT_TRUE(l->executor.WaitIdle(*id, kWait));
  const std::vector<StoredStep> steps = Steps(*id);
  ASSERT_GT(steps.size(), 5u);
  auto events_before = pg_store_->EventsAfter(*id, 0);
  ASSERT_TRUE(events_before.ok()) << events_before.status();

  // Every step finished again from its own thread, all released at once,
  // plus one whose event names a rollout that does not exist.
  const int n = static_cast<int>(steps.size());
  std::vector<absl::Status> results(n + 1);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int k = 0; k <= n; ++k) {
    threads.emplace_back([&, k] {
      while (!go.load()) std::this_thread::yield();
      const bool bad = k == n;
      const std::string rollout_id = bad ? std::string("no-such-rollout") : *id;
      const int seq = bad ? 0 : steps[k].seq;
      hoist::v1::StepResult result;
      result.set_step_id(bad ? "none" : steps[k].step_id);
      result.set_message(absl::StrCat("again ", k));
      hoist::v1::RolloutEvent event;
      event.set_rollout_id(rollout_id);
      event.set_kind("step_failed");
      event.set_message(absl::StrCat("finished again ", k));
      results[k] = pg_store_->FinishStepWithEvent(l->epoch, rollout_id, seq, hoist::v1::STEP_STATE_FAILED,
                                                  absl::StrCat("error ", k), result, event);
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  for (int k = 0; k < n; ++k) EXPECT_TRUE(results[k].ok()) << "step " << k << ": " << results[k];
  EXPECT_FALSE(results[n].ok()) << "an event of a rollout that does not exist was written";

  const std::vector<StoredStep> after = Steps(*id);
  ASSERT_EQ(after.size(), steps.size());
  for (int k = 0; k < n; ++k) {
    EXPECT_EQ(after[k].state, hoist::v1::STEP_STATE_FAILED);
    EXPECT_EQ(after[k].error, absl::StrCat("error ", k));
    ASSERT_TRUE(after[k].result.has_value());
    EXPECT_EQ(after[k].result->message(), absl::StrCat("again ", k));
  }
  auto events = pg_store_->EventsAfter(*id, events_before->size());
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(events->size(), steps.size());
  std::set<std::string> messages;
  for (const auto& e : *events) messages.insert(e.message());
  for (int k = 0; k < n; ++k) EXPECT_TRUE(messages.count(absl::StrCat("finished again ", k))) << k;

  // A replica whose epoch has moved on is refused, every caller of it.
  std::vector<absl::Status> stale(n);
  threads.clear();
  for (int k = 0; k < n; ++k) {
    threads.emplace_back([&, k] {
      hoist::v1::RolloutEvent event;
      event.set_rollout_id(*id);
      event.set_kind("step_done");
      stale[k] = pg_store_->FinishStepWithEvent(l->epoch + 1, *id, steps[k].seq, hoist::v1::STEP_STATE_SUCCEEDED, "",
                                                std::nullopt, event);
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < n; ++k) {
    EXPECT_EQ(stale[k].code(), absl::StatusCode::kFailedPrecondition) << k << ": " << stale[k];
  }
  EXPECT_EQ(Steps(*id)[0].state, hoist::v1::STEP_STATE_FAILED) << "a fenced write changed a step";
}

// `hoist upgrade` runs the plan it showed: a start that names the digest of
// the plan shown starts it; when the deployment changed in between (here a
// host's containers, as the next inventory reports them) the start is
// refused with ABORTED and nothing is stored or locked.
TEST_F(ExecutorTest, StartNamingThePlanShownRunsItAndAChangedPlanIsRefusedWithNothingStarted) {
  Leader* l = NewLeader();
  Deployed(l, "shown");
  hoist::v1::StartRolloutRequest req;
  req.set_deployment("shown");
  req.set_target_version("1.1.0");
  auto shown = l->manager.PlanUpgrade(req);
  ASSERT_TRUE(shown.ok()) << shown.status();
  const std::string digest = ToProto(*shown).digest();
  ASSERT_EQ(digest.size(), 16u);

  // The state moves on: one container the plan counted on is gone.
  ASSERT_TRUE(pool_->Run([](pqxx::connection& c) {
                     pqxx::work tx(c);
                     tx.exec("DELETE FROM agent_containers WHERE ctid IN (SELECT ctid FROM agent_containers"
                             " WHERE deployment = 'shown' ORDER BY agent_id, name LIMIT 1)");
                     tx.commit();
                     return absl::OkStatus();
                   })
                  .ok());
  req.set_expected_plan_digest(digest);
  auto refused = l->manager.StartRollout(l->epoch, req, "tester");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAborted) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("the plan changed since it was shown"));
  EXPECT_THAT(refused.status().message(), HasSubstr(digest));
  auto locks = pg_store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  EXPECT_TRUE(locks->empty()) << "a refused start must not take the lock";
  auto history = pg_store_->ListRollouts("shown", 10);
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(history->size(), 1u) << "only the first deploy is stored";

  // The inventory as it really is again: the same plan, the same digest, started.
  SyncInventory(l->epoch);
  auto again = l->manager.PlanUpgrade(req);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ToProto(*again).digest(), digest);
  auto started = l->manager.StartRollout(l->epoch, req, "tester");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(WaitDone(started->id()).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
}

TEST_F(ExecutorTest, NewLeaderResendsTheStepThatWasRunningAndTheAgentRunsItOnce) {
  std::vector<std::string> agent_steps;  // plan ids of agent steps
  for (const StoredStep& s : ReferenceDeploy()) {
    if (s.action.has_value()) agent_steps.push_back(s.step_id.substr(s.step_id.find('/') + 1));
  }
  ASSERT_GT(agent_steps.size(), 3u);

  for (size_t k = 0; k < agent_steps.size(); ++k) {
    SCOPED_TRACE(absl::StrCat("leader stops while ", agent_steps[k], " runs"));
    const std::string deployment = absl::StrCat("shop", k);
    const std::string suffix = "/" + agent_steps[k];
    fleet_->BlockWhen([suffix](const hoist::v1::Step& s) { return absl::EndsWith(s.step_id(), suffix); });
    Leader* old_leader = NewLeader();
    Prepare(old_leader, deployment, {"1.0.0"});
    auto id = Start(old_leader, deployment, "1.0.0");
    ASSERT_TRUE(id.ok()) << id.status();
    const std::string blocked = fleet_->WaitBlocked();
    ASSERT_EQ(blocked, *id + suffix) << "the step never reached the agent";
    old_leader->executor.OnLeadership(0);
    ASSERT_TRUE(old_leader->executor.WaitIdle(*id, kWait)) << "the old leader's runner did not stop";

    const int resends = fleet_->Resends();
    Leader* new_leader = NewLeader();
    // The new leader re-sends the step; it is still running at the agent.
    ASSERT_TRUE(WaitUntil([&] { return fleet_->Resends() > resends; })) << "the new leader did not re-send the step";
    fleet_->Release();
    StoredRollout done = WaitDone(*id);
    EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
    for (const StoredStep& s : Steps(*id)) {
      if (s.action.has_value()) {
        EXPECT_EQ(fleet_->Executions(s.step_id), 1) << s.step_id << " should have executed exactly once";
      }
    }
    ASSERT_TRUE(new_leader->executor.WaitIdle(*id, kWait));
  }
}

TEST_F(ExecutorTest, PauseCutShortByLosingLeadershipIsNotRecordedAsDone) {
  Leader* old_leader = NewLeader();
  Deployed(old_leader, "shop", "1h");  // a first deploy starts every replica at once: no pause
  auto id = Start(old_leader, "shop", "1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();
  auto pause_step = [&]() -> std::optional<StoredStep> {
    for (const StoredStep& s : Steps(*id)) {
      if (s.kind == StepKind::kPause) return s;
    }
    return std::nullopt;
  };
  ASSERT_TRUE(pause_step().has_value()) << "the upgrade should pause between worker batches";
  ASSERT_TRUE(WaitUntil([&] { return pause_step()->state == hoist::v1::STEP_STATE_RUNNING; }))
      << "the rollout never reached its pause";
  old_leader->executor.OnLeadership(0);
  ASSERT_TRUE(old_leader->executor.WaitIdle(*id, kWait)) << "the old leader's runner did not stop";
  EXPECT_EQ(pause_step()->state, hoist::v1::STEP_STATE_RUNNING)
      << "a pause cut short by losing leadership must not be recorded as done";
  for (const StoredStep& s : Steps(*id)) {
    if (LaterBatch(s, *pause_step())) {
      EXPECT_EQ(s.attempts, 0) << s.description << " started after the pause";
    }
  }

  // The next leader pauses again; an operator cancels during the pause.
  Leader* new_leader = NewLeader();
  ASSERT_TRUE(WaitUntil([&] { return pause_step()->attempts == 2; })) << "the new leader did not pause again";
  ASSERT_TRUE(new_leader->manager.Cancel(*id, "enough", "tester").ok());
  StoredRollout done = WaitDone(*id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_CANCELLED);
}

TEST_F(ExecutorTest, StaleLeaderCannotFinishStepsOnceTheEpochMoved) {
  Leader* old_leader = NewLeader();
  const auto [id, blocked] = StartHeldAtFirstStart(old_leader, "shop");
  ASSERT_FALSE(blocked.empty());

  // Another replica wins an election; nobody tells the old leader.
  const uint64_t stale = old_leader->epoch;
  const uint64_t current = BumpEpoch();
  fleet_->Release();
  ASSERT_TRUE(old_leader->executor.WaitIdle(id, kWait))
      << "the stale leader's runner should stop when its writes are fenced";

  std::vector<StoredStep> steps = Steps(id);
  const StoredStep* step = nullptr;
  for (const StoredStep& s : steps) {
    if (s.step_id == blocked) step = &s;
  }
  ASSERT_NE(step, nullptr);
  EXPECT_EQ(step->state, hoist::v1::STEP_STATE_RUNNING) << "the stale leader's result must not be recorded";
  absl::Status fenced = pg_store_->FinishStep(stale, id, step->seq, hoist::v1::STEP_STATE_SUCCEEDED, "", std::nullopt);
  EXPECT_EQ(fenced.code(), absl::StatusCode::kFailedPrecondition) << fenced;
  EXPECT_THAT(fenced.message(), HasSubstr("fenced"));
  absl::Status end = pg_store_->SetRolloutState(stale, id, hoist::v1::ROLLOUT_STATE_FAILED, "stale");
  EXPECT_EQ(end.code(), absl::StatusCode::kFailedPrecondition) << end;
  auto r = pg_store_->GetRollout(id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, hoist::v1::ROLLOUT_STATE_RUNNING);

  // The real leader of the current epoch finishes it.
  leaders_.push_back(std::make_unique<Leader>(store_.get(), agent_store_.get(), fleet_.get(), current));
  StoredRollout done = WaitDone(id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
  EXPECT_EQ(fleet_->Executions(blocked), 1);
}

TEST_F(ExecutorTest, CancelEndsTheRolloutAfterTheRunningStepAndReleasesTheLock) {
  Leader* l = NewLeader();
  const auto [id, blocked] = StartHeldAtFirstStart(l, "shop");
  ASSERT_FALSE(blocked.empty());

  auto cancelled = l->manager.Cancel(id, "wrong day", "tester");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  fleet_->Release();
  StoredRollout done = WaitDone(id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_CANCELLED);

  std::vector<StoredStep> steps = Steps(id);
  const StoredStep* b = nullptr;
  for (const StoredStep& s : steps) {
    if (s.step_id == blocked) b = &s;
  }
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->state, hoist::v1::STEP_STATE_SUCCEEDED) << "the step running at the cancel finishes";
  int skipped = 0;
  for (const StoredStep& s : steps) {
    if (!LaterBatch(s, *b)) continue;
    EXPECT_EQ(s.state, hoist::v1::STEP_STATE_SKIPPED) << s.description;
    EXPECT_EQ(s.attempts, 0) << s.description;
    if (s.action) {
      EXPECT_EQ(fleet_->Executions(s.step_id), 0) << s.step_id << " ran after the cancel";
    }
    ++skipped;
  }
  EXPECT_GT(skipped, 0) << "the blocked step should not be in the last batch";
  auto locks = pg_store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  EXPECT_TRUE(locks->empty()) << "the deploy lock should be released";
}

// Postgres restarts (a minor upgrade, a managed database's failover) while a
// step runs at an agent: every pooled connection is broken. The rollout goes
// on (its next write on a new connection, or resumed by the leader when the
// write fell in the restart); every step runs once.
TEST_F(ExecutorTest, RolloutGoesOnAcrossAPostgresRestart) {
  Leader* l = NewLeader();
  const auto [id, blocked] = StartHeldAtFirstStart(l, "shop");
  ASSERT_FALSE(blocked.empty());
  ASSERT_TRUE(cluster_->Restart().ok()) << cluster_->LogTail();
  fleet_->Release();
  StoredRollout done = WaitDone(id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
  for (const StoredStep& s : Steps(id)) {
    if (s.action.has_value()) {
      EXPECT_EQ(fleet_->Executions(s.step_id), 1) << s.step_id;
    }
  }
}

// Postgres is down when a step ends: the runner cannot record it and stops,
// leaving the rollout RUNNING. Once Postgres is back, the leader resumes the
// rollout by itself: the step is sent again, the agent answers with its one
// result, and the rollout finishes and frees its lock.
TEST_F(ExecutorTest, RolloutStoppedByADatabaseOutageIsResumedWhenPostgresIsBack) {
  Leader* l = NewLeader();
  const auto [id, blocked] = StartHeldAtFirstStart(l, "shop");
  ASSERT_FALSE(blocked.empty());
  ASSERT_TRUE(cluster_->Stop().ok());
  fleet_->Release();
  ASSERT_TRUE(l->executor.WaitIdle(id, kWait)) << "the runner should stop when it cannot record the step";
  ASSERT_TRUE(cluster_->Restart().ok()) << cluster_->LogTail();
  StoredRollout done = WaitDone(id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
  EXPECT_EQ(fleet_->Executions(blocked), 1);
  EXPECT_GE(fleet_->Resends(), 1) << "the step should have been sent again after the outage";
  auto locks = pg_store_->ListLocks();
  ASSERT_TRUE(locks.ok()) << locks.status();
  EXPECT_TRUE(locks->empty()) << "the deploy lock should be released";
}

TEST_F(ExecutorTest, FailedMigrationStopsTheRolloutWithTheRollbackCommandAndFreesTheLock) {
  Leader* l = NewLeader();
  Deployed(l, "shop");
  fleet_->FailWhen(
      [](const hoist::v1::Step& s) { return IsMigration(s) && s.run_job().version() == "1.1.0"; },
      "job exited with code 1");
  auto id = Start(l, "shop", "1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();
  StoredRollout done = WaitDone(*id);
  ASSERT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
  ASSERT_FALSE(done.rollback_command.empty()) << "an upgrade should say how to undo it";

  const StoredStep* failed = nullptr;
  std::vector<StoredStep> steps = Steps(*id);
  for (const StoredStep& s : steps) {
    if (s.state == hoist::v1::STEP_STATE_FAILED) {
      ASSERT_EQ(failed, nullptr) << "only one step should fail";
      failed = &s;
    }
  }
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->kind, StepKind::kRunJob);
  EXPECT_THAT(failed->error, HasSubstr("exit code 1"));
  EXPECT_THAT(done.error, HasSubstr(failed->description)) << "the error should name the step";
  EXPECT_THAT(done.error, HasSubstr("job exited with code 1"));
  EXPECT_THAT(done.error, HasSubstr(done.rollback_command));
  int undone = 0;
  for (const StoredStep& s : steps) {
    if (s.seq <= failed->seq) continue;
    if (s.phase_name == rollout::kUndoGatePhase) {
      // Nothing moved yet: the deployment is put back as it was.
      EXPECT_EQ(s.state, hoist::v1::STEP_STATE_SUCCEEDED) << s.description;
      ++undone;
      continue;
    }
    EXPECT_EQ(s.state, hoist::v1::STEP_STATE_SKIPPED) << s.description;
    if (s.action) {
      EXPECT_EQ(fleet_->Executions(s.step_id), 0) << s.step_id << " ran after the gate failed";
    }
  }
  EXPECT_GT(undone, 0) << "the plan should carry the steps that undo a failed gate";
  auto deployment = pg_store_->GetDeployment("shop");
  ASSERT_TRUE(deployment.ok()) << deployment.status();
  EXPECT_EQ(deployment->pinned_version, "1.0.0") << "a failed gate leaves the old release pinned";
  EXPECT_THAT(done.error, HasSubstr("put back as before: record 1.0.0 as shop's pinned version again"));
  auto locks = pg_store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  EXPECT_TRUE(locks->empty()) << "the deploy lock should be released";

  // The lock is free: a fixed release can go out.
  hoist::v1::Release fixed;
  fixed.set_deployment("shop");
  fixed.set_version("1.1.1");
  for (const char* s : {"api", "worker", "web"}) {
    (*fixed.mutable_images())[s] = absl::StrCat("registry.test/shop/", s, ":1.1.1");
  }
  ASSERT_TRUE(l->manager.CreateRelease(l->epoch, fixed, "tester").ok());
  SyncInventory(l->epoch);
  auto second = Start(l, "shop", "1.1.1");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(WaitDone(*second).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
}

TEST_F(ExecutorTest, SecondRolloutIsRefusedWhileTheLockIsHeldAndNamesTheHolder) {
  Leader* l = NewLeader();
  Prepare(l, "shop", {"1.0.0", "1.1.0"});
  fleet_->BlockWhen([](const hoist::v1::Step& s) { return s.has_pull_image(); });
  auto first = Start(l, "shop", "1.0.0");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(fleet_->WaitBlocked().empty());

  auto second = Start(l, "shop", "1.1.0");
  ASSERT_FALSE(second.ok()) << "a second rollout started beside " << *first;
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(*first));
  EXPECT_THAT(second.status().message(), HasSubstr("tester"));
  auto locks = pg_store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  ASSERT_EQ(locks->size(), 1u);
  EXPECT_EQ((*locks)[0].rollout_id(), *first);

  fleet_->Release();
  EXPECT_EQ(WaitDone(*first).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
}

TEST_F(ExecutorTest, FailedUpgradeRollsBackByItselfWhenAskedTo) {
  Leader* l = NewLeader();
  // The new API never becomes healthy: the upgrade fails after it moved
  // (without a migration, which would make a rollback without restore unsafe).
  with_migration_ = false;
  const std::string id = FailedUpgradeWithOnFailureRollback(l);
  ASSERT_FALSE(HasFailure());

  auto rollouts = pg_store_->ListRollouts("shop", 10);
  ASSERT_TRUE(rollouts.ok());
  const StoredRollout* rollback = nullptr;
  for (const StoredRollout& r : *rollouts) {
    if (r.kind == "rollback") rollback = &r;
  }
  if (rollback == nullptr) {
    auto events = pg_store_->EventsAfter(id, 0);
    std::string said;
    if (events.ok()) {
      for (const auto& e : *events) {
        if (absl::StartsWith(e.kind(), "rollback") || e.kind() == "rollout_failed") {
          said += e.kind() + ": " + e.message() + "\n";
        }
      }
    }
    FAIL() << "no rollback was launched after the failed upgrade; the events said:\n" << said;
  }
  EXPECT_EQ(rollback->from_version, "1.1.0");
  EXPECT_EQ(rollback->to_version, "1.0.0");
  EXPECT_EQ(rollback->requested_by, "hoistd (--on-failure rollback)");
  StoredRollout done = WaitDone(rollback->id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
  auto d = pg_store_->GetDeployment("shop");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pinned_version, "1.0.0");
  auto events = pg_store_->EventsAfter(id, 0);
  ASSERT_TRUE(events.ok());
  bool announced = false;
  for (const auto& e : *events) {
    if (e.kind() == "rollback_started") {
      announced = true;
      EXPECT_THAT(e.message(), HasSubstr(rollback->id));
    }
  }
  EXPECT_TRUE(announced) << "the failed rollout's events should say the rollback started";
}


TEST_F(ExecutorTest, NoRollbackAfterAMigrationWithoutABackupAndTheEventSaysWhy) {
  Leader* l = NewLeader();
  // With the API's migration, and no backup in the manifest.
  const std::string id = FailedUpgradeWithOnFailureRollback(l);
  ASSERT_FALSE(HasFailure());
  const std::string refused = LastEvent(id, "rollback_refused");
  EXPECT_THAT(refused, HasSubstr("ran a migration since 1.0.0, and "));
  EXPECT_THAT(refused, HasSubstr("took no backup before it"));
  EXPECT_THAT(refused, HasSubstr("Fix forward with a new release"));
  EXPECT_THAT(refused, ::testing::Not(HasSubstr("--restore"))) << "there is no backup to restore";
}

TEST_F(ExecutorTest, FailedGateWithOnFailureRollbackIsPutBackWithoutARollback) {
  Leader* l = NewLeader();
  StoredRollout done = FailedWithOnFailureRollback(
      l, [](const hoist::v1::Step& s) { return IsMigration(s) && s.run_job().version() == "1.1.0"; },
      "job exited with code 1");
  ASSERT_FALSE(HasFailure());
  const std::string& id = done.id;
  EXPECT_THAT(done.error, HasSubstr("put back as before"));
  auto rollouts = pg_store_->ListRollouts("shop", 10);
  ASSERT_TRUE(rollouts.ok());
  for (const StoredRollout& r : *rollouts) EXPECT_NE(r.kind, "rollback") << "nothing moved, nothing to roll back";
  auto events = pg_store_->EventsAfter(id, 0);
  ASSERT_TRUE(events.ok());
  bool said = false;
  for (const auto& e : *events) said |= e.kind() == "rollback_not_needed";
  EXPECT_TRUE(said) << "the events should say why no rollback ran";
}


// Rolling back several versions checks every upgrade in between for a
// migration, not only the last one: 1.0.0 -> 1.1.0 migrated, 1.1.0 -> 1.2.0
// did not; back to 1.1.0 is allowed, back to 1.0.0 is refused naming the
// migrating rollout.
TEST_F(ExecutorTest, RollbackSeveralVersionsBackChecksEveryUpgradeInBetween) {
  Leader* l = NewLeader();
  Deployed(l, "shop");
  const std::string up = Upgraded(l, "1.1.0");
  ASSERT_FALSE(HasFailure());
  with_migration_ = false;
  Prepare(l, "shop", {"1.2.0"});
  const std::string up2 = Upgraded(l, "1.2.0");
  ASSERT_FALSE(HasFailure());

  hoist::v1::RollbackRequest far;
  far.set_deployment("shop");
  far.set_to_version("1.0.0");
  auto refused = l->manager.Rollback(l->epoch, far, "tester");
  ASSERT_FALSE(refused.ok()) << "a rollback past a migration without a restore was allowed";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("rollout ", up, " (1.0.0 -> 1.1.0) ran a migration "
                                                                 "since 1.0.0")));
  EXPECT_THAT(refused.status().message(), ::testing::Not(HasSubstr(up2)));

  hoist::v1::RollbackRequest near;
  near.set_deployment("shop");
  near.set_to_version("1.1.0");
  auto back = l->manager.Rollback(l->epoch, near, "tester");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(WaitDone(back->id()).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
}

// The first pull of a release's image records its digest in the release;
// starts then require that digest; a later pull that finds other content
// under the tag (pushed again) fails the rollout in its pull phase, naming
// both digests, before anything changes.
TEST_F(ExecutorTest, PullsRecordTheReleasesDigestsAndATagPushedAgainIsRefused) {
  Leader* l = NewLeader();
  with_migration_ = false;  // so that going back to 1.0.0 needs no restore
  Deployed(l, "shop");
  Upgraded(l, "1.1.0");
  ASSERT_FALSE(HasFailure());
  auto release = pg_store_->GetRelease("shop", "1.1.0");
  ASSERT_TRUE(release.ok()) << release.status();
  ASSERT_FALSE(release->digests().empty()) << "the pulls recorded no digest";
  for (const auto& [service, image] : release->images()) {
    ASSERT_TRUE(release->digests().contains(service)) << service;
    EXPECT_EQ(release->digests().at(service), absl::StrCat("sha256:", image));
    EXPECT_EQ(fleet_->StartedDigest(image), absl::StrCat("sha256:", image)) << service << " started from its digest";
  }

  // Back to 1.0.0, then the worker's 1.1.0 tag is pushed again with other content.
  hoist::v1::RollbackRequest back;
  back.set_deployment("shop");
  back.set_to_version("1.0.0");
  auto rolled = l->manager.Rollback(l->epoch, back, "tester");
  ASSERT_TRUE(rolled.ok()) << rolled.status();
  ASSERT_EQ(WaitDone(rolled->id()).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
  ASSERT_TRUE(l->executor.WaitIdle(rolled->id(), kWait));
  SyncInventory(l->epoch);
  const std::string worker = release->images().at("worker");
  fleet_->SetDigest(worker, "sha256:pushed-again");
  auto again = Start(l, "shop", "1.1.0");
  ASSERT_TRUE(again.ok()) << again.status();
  StoredRollout failed = WaitDone(*again);
  EXPECT_EQ(failed.state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(failed.error, HasSubstr(absl::StrCat(worker, " pulled on ")));
  EXPECT_THAT(failed.error, HasSubstr(absl::StrCat("is sha256:pushed-again, but release 1.1.0 recorded sha256:", worker)));
  EXPECT_THAT(failed.error, HasSubstr("the tag was pushed again since"));
  EXPECT_THAT(failed.error, HasSubstr(kNothingChangedLine)) << "a pull-phase failure changes nothing";
  auto kept = pg_store_->GetRelease("shop", "1.1.0");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->digests().at("worker"), absl::StrCat("sha256:", worker)) << "the first digest stays recorded";
}

// An instance that fails its pre-flight probe fails the upgrade before
// anything changes: no pull, no pin, and no rollback (there is nothing to
// roll back), and the error says so instead of printing a rollback command.
TEST_F(ExecutorTest, FailedPreflightProbeChangesNothingAndLaunchesNoRollback) {
  Leader* l = NewLeader();
  StoredRollout done = FailedWithOnFailureRollback(
      l,
      [](const hoist::v1::Step& s) {
        return s.has_probe_health() && s.probe_health().instance().service() == "worker" &&
               s.probe_health().instance().replica() == 1 && s.probe_health().version() == "1.0.0";
      },
      "GET /health on port 8080: connection refused");
  ASSERT_FALSE(HasFailure());
  const std::string& id = done.id;
  EXPECT_THAT(done.error, HasSubstr("worker replica 1 (1.0.0)"));
  EXPECT_THAT(done.error, HasSubstr("connection refused"));
  EXPECT_THAT(done.error, HasSubstr("nothing was changed: shop runs 1.0.0 as before"));
  EXPECT_THAT(done.error, ::testing::Not(HasSubstr("to roll back")));
  auto steps = pg_store_->GetSteps(id);
  ASSERT_TRUE(steps.ok());
  for (const StoredStep& st : *steps) {
    if (st.phase_name != "preflight") {
      EXPECT_EQ(st.state, hoist::v1::STEP_STATE_SKIPPED) << st.description << " ran after the pre-flight failed";
    }
  }
  auto d = pg_store_->GetDeployment("shop");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pinned_version, "1.0.0");
  auto rollouts = pg_store_->ListRollouts("shop", 10);
  ASSERT_TRUE(rollouts.ok());
  for (const StoredRollout& r : *rollouts) EXPECT_NE(r.kind, "rollback") << "nothing moved, nothing to roll back";
  EXPECT_THAT(LastEvent(id, "rollback_not_needed"), HasSubstr("failed in its preflight phase, before anything was changed"));
}


// --- blue-green ---

// What a blue-green upgrade needs on top of kStack: a proxy in front of the
// API and the web front end. Its image is pinned, so it stays outside the slots.
constexpr char kProxyService[] = R"(  proxy:
    role: proxy
    image: registry.test/haproxy:2.6
    placement:
      hosts: [host-3]
    ports:
      - "8080:8080"
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
      - {name: api, service: api, port: 8080, listen: 8081}
)";

class BlueGreenExecutorTest : public ExecutorTest {
 protected:
  void SetUp() override {
    ExecutorTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    fleet_->AfterExecution([this](const hoist::v1::Step& s) {
      absl::MutexLock lock(&sent_mu_);
      sent_.push_back(s);
    });
  }

  // The deployment, with a proxy, at 1.0.0 in the blue slot, with releases 1.0.0 and 1.1.0.
  void DeployedBlue(Leader* l, const std::string& deployment) {
    Prepare(l, deployment, {"1.0.0", "1.1.0"}, "50ms", kProxyService);
    auto id = Start(l, deployment, "1.0.0");
    ASSERT_TRUE(id.ok()) << id.status();
    ASSERT_EQ(WaitDone(*id).state, hoist::v1::ROLLOUT_STATE_SUCCEEDED);
    SyncInventory(l->epoch);
  }

  absl::StatusOr<std::string> StartBlueGreen(Leader* l, const std::string& deployment, absl::Duration grace) {
    hoist::v1::StartRolloutRequest req;
    req.set_deployment(deployment);
    req.set_target_version("1.1.0");
    req.set_strategy(hoist::v1::STRATEGY_BLUE_GREEN);
    req.mutable_grace_period()->set_seconds(absl::ToInt64Seconds(grace));
    auto r = l->manager.StartRollout(l->epoch, req, "tester");
    if (!r.ok()) return r.status();
    return r->id();
  }

  bool WaitState(const std::string& id, hoist::v1::RolloutState state) {
    return WaitUntil([&] {
      auto r = pg_store_->GetRollout(id);
      return r.ok() && r->state == state;
    });
  }

  absl::StatusOr<hoist::v1::CutoverResponse> Cutover(Leader* l, const std::string& deployment,
                                                      hoist::v1::CutoverDirection direction) {
    hoist::v1::CutoverRequest req;
    req.set_deployment(deployment);
    req.set_direction(direction);
    return l->manager.Cutover(l->epoch, req, "tester");
  }

  hoist::v1::Slot LiveSlot(const std::string& deployment) {
    auto d = pg_store_->GetDeployment(deployment);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? d->live_slot : hoist::v1::SLOT_UNSPECIFIED;
  }

  // Running containers of the fake agents per slot: "api/green" -> count.
  std::map<std::string, int> Running() {
    std::map<std::string, int> out;
    for (const auto& [agent, inv] : fleet_->Inventories()) {
      for (const auto& c : inv.containers()) {
        if (c.state() != hoist::v1::CONTAINER_STATE_RUNNING) continue;
        ++out[absl::StrCat(c.instance().service(), "/", SlotName(c.instance().slot()))];
      }
    }
    return out;
  }

  // Proxy updates the fake agents executed whose step id contains `part`, in order.
  std::vector<hoist::v1::Step> ProxyUpdates(const std::string& part) {
    absl::MutexLock lock(&sent_mu_);
    std::vector<hoist::v1::Step> out;
    for (const auto& s : sent_) {
      if (s.has_proxy_update() && absl::StrContains(s.step_id(), part)) out.push_back(s);
    }
    return out;
  }

  // "web/green" -> state, for one proxy update.
  static std::map<std::string, hoist::v1::BackendState> States(const hoist::v1::Step& s) {
    std::map<std::string, hoist::v1::BackendState> out;
    for (const auto& r : s.proxy_update().routes()) {
      for (const auto& b : r.backends()) {
        out[absl::StrCat(r.name(), "/", absl::StrContains(b.name(), "-green-") ? "green" : "blue")] = b.state();
      }
    }
    return out;
  }

  int Audited(const std::string& deployment, const std::string& action, const std::string& outcome) {
    auto events = pg_store_->ListAudit(deployment, 100, 0);
    EXPECT_TRUE(events.ok()) << events.status();
    int n = 0;
    for (const auto& e : events.ok() ? *events : std::vector<hoist::v1::AuditEvent>{}) {
      n += e.action() == action && e.outcome() == outcome;
    }
    return n;
  }

  absl::Mutex sent_mu_;
  std::vector<hoist::v1::Step> sent_ ABSL_GUARDED_BY(sent_mu_);
};

TEST_F(BlueGreenExecutorTest, GraceHoldsBlueAndCutoverSwitchesBackForwardThenFinishRetiresBlue) {
  Leader* l = NewLeader();
  DeployedBlue(l, "shop");
  ASSERT_FALSE(HasFailure());
  auto id = StartBlueGreen(l, "shop", absl::Hours(1));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(WaitState(*id, hoist::v1::ROLLOUT_STATE_GRACE)) << "the rollout never reached its grace period";

  // Green serves, blue still runs beside it.
  EXPECT_EQ(LiveSlot("shop"), hoist::v1::SLOT_GREEN);
  std::map<std::string, int> running = Running();
  EXPECT_EQ(running["api/green"], 2);
  EXPECT_EQ(running["api/blue"], 2);
  EXPECT_EQ(running["web/green"], 1);
  EXPECT_EQ(running["web/blue"], 1);
  EXPECT_EQ(running["worker/green"], 2);
  EXPECT_EQ(running["worker/blue"], 2);
  std::vector<hoist::v1::Step> switches = ProxyUpdates("-switch-");
  ASSERT_EQ(switches.size(), 1u) << "one proxy step switches every route";
  EXPECT_EQ(States(switches[0]), (std::map<std::string, hoist::v1::BackendState>{
                                     {"api/green", hoist::v1::BACKEND_STATE_READY},
                                     {"api/blue", hoist::v1::BACKEND_STATE_DRAIN},
                                     {"web/green", hoist::v1::BACKEND_STATE_READY},
                                     {"web/blue", hoist::v1::BACKEND_STATE_DRAIN}}));
  auto d = pg_store_->GetDeployment("shop");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pinned_version, "1.1.0");

  // Back: one proxy step with the states flipped.
  auto back = Cutover(l, "shop", hoist::v1::CUTOVER_DIRECTION_BACK);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->live_slot(), hoist::v1::SLOT_BLUE);
  EXPECT_EQ(LiveSlot("shop"), hoist::v1::SLOT_BLUE);
  std::vector<hoist::v1::Step> backs = ProxyUpdates("/cutover-");
  ASSERT_EQ(backs.size(), 1u);
  EXPECT_EQ(States(backs[0]), (std::map<std::string, hoist::v1::BackendState>{
                                  {"api/green", hoist::v1::BACKEND_STATE_DRAIN},
                                  {"api/blue", hoist::v1::BACKEND_STATE_READY},
                                  {"web/green", hoist::v1::BACKEND_STATE_DRAIN},
                                  {"web/blue", hoist::v1::BACKEND_STATE_READY}}));

  // Finish while blue serves would retire the serving slot: refused.
  auto early = Cutover(l, "shop", hoist::v1::CUTOVER_DIRECTION_FINISH);
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(early.status().message()), HasSubstr("hoist cutover --forward"));
  auto still = pg_store_->GetRollout(*id);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->state, hoist::v1::ROLLOUT_STATE_GRACE);

  auto forward = Cutover(l, "shop", hoist::v1::CUTOVER_DIRECTION_FORWARD);
  ASSERT_TRUE(forward.ok()) << forward.status();
  EXPECT_EQ(forward->live_slot(), hoist::v1::SLOT_GREEN);
  std::vector<hoist::v1::Step> cutovers = ProxyUpdates("/cutover-");
  ASSERT_EQ(cutovers.size(), 2u);
  EXPECT_EQ(States(cutovers[1]), States(switches[0]));

  auto finish = Cutover(l, "shop", hoist::v1::CUTOVER_DIRECTION_FINISH);
  ASSERT_TRUE(finish.ok()) << finish.status();
  StoredRollout done = WaitDone(*id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
  running = Running();
  EXPECT_EQ(running["api/green"], 2);
  EXPECT_EQ(running["web/green"], 1);
  EXPECT_EQ(running["api/blue"] + running["web/blue"] + running["worker/blue"], 0);
  for (const auto& [agent, inv] : fleet_->Inventories()) {
    for (const auto& c : inv.containers()) {
      if (c.instance().service() != "proxy") {
        EXPECT_EQ(c.instance().slot(), hoist::v1::SLOT_GREEN) << c.name() << " should have been removed";
      }
    }
  }
  std::vector<hoist::v1::Step> retire = ProxyUpdates("-retire-");
  ASSERT_EQ(retire.size(), 1u);
  EXPECT_EQ(States(retire[0]), (std::map<std::string, hoist::v1::BackendState>{
                                   {"api/green", hoist::v1::BACKEND_STATE_READY},
                                   {"web/green", hoist::v1::BACKEND_STATE_READY}}));
  EXPECT_EQ(LiveSlot("shop"), hoist::v1::SLOT_GREEN);

  // Nothing is in its grace period any more.
  auto late = Cutover(l, "shop", hoist::v1::CUTOVER_DIRECTION_BACK);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("has no blue-green rollout in its grace period"));
  EXPECT_EQ(Audited("shop", "cutover", "ok"), 3);
  EXPECT_EQ(Audited("shop", "cutover", "refused"), 2);

}

TEST_F(BlueGreenExecutorTest, CutoverWithoutAGracePeriodIsRefused) {
  Leader* l = NewLeader();
  DeployedBlue(l, "plain");
  ASSERT_FALSE(HasFailure());
  auto r = Cutover(l, "plain", hoist::v1::CUTOVER_DIRECTION_BACK);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("plain has no blue-green rollout in its grace period (its latest rollout"));
  EXPECT_EQ(Audited("plain", "cutover", "refused"), 1);
}

TEST_F(BlueGreenExecutorTest, GracePeriodRunsOutAcrossAFailoverAndBlueIsRetired) {
  Leader* old_leader = NewLeader();
  DeployedBlue(old_leader, "lapse");
  ASSERT_FALSE(HasFailure());
  auto id = StartBlueGreen(old_leader, "lapse", absl::Seconds(3));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(WaitState(*id, hoist::v1::ROLLOUT_STATE_GRACE));
  const absl::Time grace_seen = absl::Now();
  old_leader->executor.OnLeadership(0);
  ASSERT_TRUE(old_leader->executor.WaitIdle(*id, kWait));
  auto mid = pg_store_->GetRollout(*id);
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->state, hoist::v1::ROLLOUT_STATE_GRACE) << "a leader that stepped down leaves the grace period";

  NewLeader();  // resumes the rollout, in its grace period
  StoredRollout done = WaitDone(*id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_SUCCEEDED) << done.error;
  // Counted from the step's first start, not restarted by the new leader.
  EXPECT_LT(absl::Now() - grace_seen, absl::Seconds(3) + absl::Seconds(5));
  std::map<std::string, int> running = Running();
  EXPECT_EQ(running["api/blue"] + running["web/blue"], 0);
  EXPECT_EQ(running["api/green"], 2);
  for (const StoredStep& s : Steps(*id)) {
    EXPECT_EQ(s.state, hoist::v1::STEP_STATE_SUCCEEDED) << s.description;
    if (s.action.has_value()) {
      EXPECT_EQ(fleet_->Executions(s.step_id), 1) << s.step_id;
    }
  }
}

TEST_F(BlueGreenExecutorTest, FailedGreenHealthCheckLeavesBlueServingAndTheProxyUntouched) {
  Leader* l = NewLeader();
  DeployedBlue(l, "sick");
  ASSERT_FALSE(HasFailure());
  fleet_->FailWhen(
      [](const hoist::v1::Step& s) {
        return s.has_probe_health() && s.probe_health().instance().slot() == hoist::v1::SLOT_GREEN &&
               s.probe_health().instance().service() == "web";
      },
      "GET /health answered 500 until the deadline");
  auto id = StartBlueGreen(l, "sick", absl::Hours(1));
  ASSERT_TRUE(id.ok()) << id.status();
  StoredRollout done = WaitDone(*id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(done.error, HasSubstr("GET /health answered 500"));
  EXPECT_THAT(done.error, HasSubstr("the proxy was not switched: blue still serves 1.0.0"));
  EXPECT_TRUE(ProxyUpdates(*id).empty()) << "no proxy step may run once green failed";
  EXPECT_EQ(LiveSlot("sick"), hoist::v1::SLOT_BLUE);
  auto d = pg_store_->GetDeployment("sick");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pinned_version, "1.0.0") << "pinned only at the switch";
  std::map<std::string, int> running = Running();
  EXPECT_EQ(running["api/blue"], 2);
  EXPECT_EQ(running["web/blue"], 1);
  EXPECT_EQ(running["worker/blue"], 2);
  EXPECT_EQ(running["web/green"], 1) << "green is left for inspection";
  EXPECT_TRUE(pg_store_->ListLocks().ok() && pg_store_->ListLocks()->empty()) << "the lock must be released";

  // The next blue-green rollout clears the green leftovers first.
  SyncInventory(l->epoch);
  hoist::v1::StartRolloutRequest next_req;
  next_req.set_deployment("sick");
  next_req.set_target_version("1.1.0");
  next_req.set_strategy(hoist::v1::STRATEGY_BLUE_GREEN);
  auto next = l->manager.PlanUpgrade(next_req);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_NE(next->FindPhase("clear-green"), nullptr);
}

TEST_F(BlueGreenExecutorTest, CancelDuringGraceAfterASwitchBackKeepsBothSlotsAndPinsTheOldRelease) {
  Leader* l = NewLeader();
  DeployedBlue(l, "undo");
  ASSERT_FALSE(HasFailure());
  auto id = StartBlueGreen(l, "undo", absl::Hours(1));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(WaitState(*id, hoist::v1::ROLLOUT_STATE_GRACE));
  auto back = Cutover(l, "undo", hoist::v1::CUTOVER_DIRECTION_BACK);
  ASSERT_TRUE(back.ok()) << back.status();
  auto cancelled = l->manager.Cancel(*id, "1.1.0 is wrong", "tester");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  StoredRollout done = WaitDone(*id);
  EXPECT_EQ(done.state, hoist::v1::ROLLOUT_STATE_CANCELLED);
  EXPECT_EQ(LiveSlot("undo"), hoist::v1::SLOT_BLUE);
  auto d = pg_store_->GetDeployment("undo");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pinned_version, "1.0.0") << "the pin follows the slot that serves";
  std::map<std::string, int> running = Running();
  EXPECT_EQ(running["api/blue"], 2);
  EXPECT_EQ(running["api/green"], 2) << "nothing is retired on a cancel";
  EXPECT_TRUE(ProxyUpdates("-retire-").empty());
  auto locks = pg_store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  EXPECT_TRUE(locks->empty()) << "the lock must be released";
}

}  // namespace
}  // namespace hoist::testing

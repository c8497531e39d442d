// AgentHub without gRPC: sessions are FakeConnections the test opens, feeds
// and closes as the agent service would; the registry is an
// InMemoryAgentStore; time is a FakeClock. Leadership reaches the hub in one
// place, AgentHubUnitTest::Lead.

#include "controller/agent_hub.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/proto_time.h"
#include "shared/protocol.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/in_memory_agent_store.h"
#include "tests/fixtures/eventually.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using StepAnswer = absl::StatusOr<hoist::v1::StepResult>;

constexpr absl::Duration kWait = absl::Seconds(10);

// One session as the hub sees it: what the hub sent on it, and whether the
// hub closed it.
class FakeConnection final : public AgentConnection {
 public:
  bool Send(const hoist::v1::SessionResponse& message) override {
    absl::MutexLock lock(&mu_);
    sent_.push_back(message);
    return true;
  }
  void Close() override {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  std::vector<hoist::v1::SessionResponse> sent() const {
    absl::MutexLock lock(&mu_);
    return sent_;
  }
  bool closed() const {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  // Waits until the hub sent step `step_id` here; false on timeout.
  bool WaitForStep(const std::string& step_id, hoist::v1::Step* step = nullptr) {
    absl::MutexLock lock(&mu_);
    auto sent = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& m : sent_) {
        if (m.has_step() && m.step().step_id() == step_id) {
          if (step != nullptr) *step = m.step();
          return true;
        }
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&sent), kWait);
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<hoist::v1::SessionResponse> sent_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

hoist::v1::Hello HelloOf(const std::string& agent_id) {
  hoist::v1::Hello hello;
  hello.set_agent_id(agent_id);
  hello.set_host_name(agent_id + ".test");
  hello.set_agent_version("0.1.0");
  hello.set_protocol_version(kProtocolVersion);
  return hello;
}

hoist::v1::SessionRequest ResultOf(const std::string& step_id, const std::string& message) {
  hoist::v1::SessionRequest m;
  m.mutable_result()->set_step_id(step_id);
  m.mutable_result()->set_outcome(hoist::v1::STEP_OUTCOME_SUCCEEDED);
  m.mutable_result()->set_message(message);
  return m;
}

// The hub's own threads are waited for with Eventually (eventually.h),
// asked every 5 ms.
constexpr absl::Duration kPoll = absl::Milliseconds(5);

class AgentHubUnitTest : public ::testing::Test {
 protected:
  AgentHubUnitTest() : store_(&clock_), hub_(&store_, &clock_, Options()) {}

  void SetUp() override { Lead(); }
  // Every step still waiting ends (UNAVAILABLE) before the fixture goes.
  void TearDown() override { hub_.Stop(); }

  static AgentHubOptions Options() {
    AgentHubOptions options;
    options.controller_id = "replica-a";
    options.heartbeat_interval = absl::Milliseconds(50);
    options.lost_after_missed = 3;
    return options;
  }

  // This replica wins an election: the store's fence moves to the new epoch
  // and the hub hears it.
  void Lead() {
    epoch_ = store_.BumpEpoch();
    hub_.OnLeadership(epoch_);
  }
  void StepDown() { hub_.OnLeadership(0); }

  FakeConnection* NewConnection() {
    conns_.push_back(std::make_unique<FakeConnection>());
    return conns_.back().get();
  }
  // A session of agent_id, opened.
  FakeConnection* Connect(const std::string& agent_id) {
    FakeConnection* conn = NewConnection();
    absl::Status s = hub_.Open(HelloOf(agent_id), conn);
    EXPECT_TRUE(s.ok()) << s;
    return conn;
  }

  // A pull step with a deadline `in` from now.
  hoist::v1::Step StepOf(const std::string& step_id, absl::Duration in = absl::Minutes(1)) {
    hoist::v1::Step step;
    step.set_step_id(step_id);
    SetTimestamp(clock_.Now() + in, step.mutable_deadline());
    step.mutable_pull_image()->set_image("registry.test/shop/api:1.1.0");
    return step;
  }

  // hub_.RunStep on a thread of its own.
  std::future<StepAnswer>& RunAsync(const std::string& agent_id, const hoist::v1::Step& step,
                                    rollout::StepDispatcher::ProgressFn on_progress = nullptr,
                                    const std::atomic<bool>* cancel = nullptr) {
    runs_.push_back(std::async(std::launch::async, [this, agent_id, step, on_progress, cancel] {
      return hub_.RunStep(agent_id, step, on_progress, cancel);
    }));
    return runs_.back();
  }
  // The answer of a RunAsync; when none comes in time the hub is stopped so
  // that the thread ends.
  StepAnswer Answer(std::future<StepAnswer>& run) {
    if (run.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ADD_FAILURE() << "RunStep did not return within " << kWait;
      hub_.Stop();
    }
    return run.get();
  }

  std::vector<hoist::v1::Agent> Agents() {
    auto a = store_.ListAgents();
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : std::vector<hoist::v1::Agent>{};
  }

  FakeClock clock_;
  InMemoryAgentStore store_;
  // Sessions, flags and callbacks the hub may use until it stops.
  std::vector<std::unique_ptr<FakeConnection>> conns_;
  std::atomic<bool> cancel_{false};
  absl::Mutex progress_mu_;
  std::vector<std::string> progress_ ABSL_GUARDED_BY(progress_mu_);
  AgentHub hub_;
  std::deque<std::future<StepAnswer>> runs_;
  uint64_t epoch_ = 0;
};

TEST_F(AgentHubUnitTest, OpenWhenNotLeadingIsRefusedAndRecordsNothing) {
  StepDown();
  FakeConnection* conn = NewConnection();
  absl::Status s = hub_.Open(HelloOf("host-1"), conn);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("does not lead"));
  EXPECT_TRUE(conn->sent().empty()) << "a follower must not welcome an agent";
  EXPECT_TRUE(Agents().empty());
  EXPECT_FALSE(hub_.IsConnected("host-1"));
}

TEST_F(AgentHubUnitTest, OpenWelcomesTheAgentWithTheEpochAndRecordsIt) {
  FakeConnection* conn = Connect("host-1");
  const std::vector<hoist::v1::SessionResponse> sent = conn->sent();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_TRUE(sent[0].has_welcome());
  EXPECT_EQ(sent[0].welcome().epoch(), epoch_);
  EXPECT_EQ(sent[0].welcome().protocol_version(), kProtocolVersion);
  EXPECT_EQ(ToDuration(sent[0].welcome().heartbeat_interval()), absl::Milliseconds(50));
  EXPECT_TRUE(hub_.IsConnected("host-1"));

  const std::vector<hoist::v1::Agent> agents = Agents();
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0].id(), "host-1");
  EXPECT_TRUE(agents[0].connected());
  EXPECT_EQ(store_.ControllerOf("host-1"), "replica-a");
}

TEST_F(AgentHubUnitTest, MalformedOrIncompatibleHelloIsRefusedSayingWhy) {
  hoist::v1::Hello nameless = HelloOf("");
  absl::Status s = hub_.Open(nameless, NewConnection());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("hello.agent_id: required"));

  s = hub_.Open(HelloOf("host 1/a"), NewConnection());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("hello.agent_id \"host 1/a\""));

  hoist::v1::Hello newer = HelloOf("host-1");
  newer.set_protocol_version(kProtocolVersion + 1);
  s = hub_.Open(newer, NewConnection());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("upgrade the controllers first"));
  EXPECT_TRUE(Agents().empty());
}

TEST_F(AgentHubUnitTest, StepWithoutAnIdOrADeadlineIsRefusedNamingTheField) {
  Connect("host-1");
  hoist::v1::Step anonymous = StepOf("s-1");
  anonymous.clear_step_id();
  StepAnswer r = hub_.RunStep("host-1", anonymous, nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("step.step_id"));

  hoist::v1::Step endless = StepOf("s-2");
  endless.clear_deadline();
  r = hub_.RunStep("host-1", endless, nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("step.deadline"));
}

TEST_F(AgentHubUnitTest, StepIsRefusedWhenThisReplicaDoesNotLead) {
  StepDown();
  EXPECT_FALSE(hub_.Leading());
  StepAnswer r = hub_.RunStep("host-1", StepOf("s-1"), nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("does not lead"));
}

TEST_F(AgentHubUnitTest, StepToAnAgentThatIsNotConnectedFailsAtItsDeadlineSayingSo) {
  auto& run = RunAsync("host-9", StepOf("s-1", absl::Seconds(1)));
  clock_.Advance(absl::Seconds(10));  // past the deadline and the hub's grace after it
  StepAnswer r = Answer(run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("no result from agent host-9 for step s-1: the agent was not connected"));
}

TEST_F(AgentHubUnitTest, EachResultIsRoutedToTheStepWaitingForIt) {
  FakeConnection* one = Connect("host-1");
  FakeConnection* two = Connect("host-2");
  auto& first = RunAsync("host-1", StepOf("s-1"));
  auto& second = RunAsync("host-2", StepOf("s-2"));
  hoist::v1::Step sent;
  ASSERT_TRUE(one->WaitForStep("s-1", &sent));
  EXPECT_EQ(sent.epoch(), epoch_) << "the hub stamps its epoch on every step";
  ASSERT_TRUE(two->WaitForStep("s-2"));

  // Answered in the other order.
  hub_.OnMessage("host-2", two, ResultOf("s-2", "second done"));
  hub_.OnMessage("host-1", one, ResultOf("s-1", "first done"));
  StepAnswer a = Answer(first);
  StepAnswer b = Answer(second);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->message(), "first done");
  EXPECT_EQ(b->message(), "second done");
  EXPECT_EQ(hub_.Stats().steps_in_flight, 0);
}

TEST_F(AgentHubUnitTest, ProgressReachesTheCallerWhileTheStepRuns) {
  FakeConnection* conn = Connect("host-1");
  auto& run = RunAsync("host-1", StepOf("s-1"), [this](const hoist::v1::StepProgress& p) {
    absl::MutexLock lock(&progress_mu_);
    progress_.push_back(p.message());
  });
  ASSERT_TRUE(conn->WaitForStep("s-1"));
  hoist::v1::SessionRequest progress;
  progress.mutable_progress()->set_step_id("s-1");
  progress.mutable_progress()->set_message("pulled 3 of 7 layers");
  hub_.OnMessage("host-1", conn, progress);
  {
    absl::MutexLock lock(&progress_mu_);
    EXPECT_EQ(progress_, std::vector<std::string>{"pulled 3 of 7 layers"});
  }
  hub_.OnMessage("host-1", conn, ResultOf("s-1", "done"));
  EXPECT_TRUE(Answer(run).ok());
}

TEST_F(AgentHubUnitTest, DroppedSessionGetsTheSameStepAgainWhenTheAgentReconnects) {
  FakeConnection* first = Connect("host-1");
  auto& run = RunAsync("host-1", StepOf("s-1"));
  ASSERT_TRUE(first->WaitForStep("s-1"));

  hub_.Closed("host-1", first);
  EXPECT_FALSE(hub_.IsConnected("host-1"));
  const std::vector<hoist::v1::Agent> agents = Agents();
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_FALSE(agents[0].connected()) << "the disconnect should be recorded";

  FakeConnection* second = Connect("host-1");
  ASSERT_TRUE(second->WaitForStep("s-1")) << "the step in flight should be sent again on the new session";
  const std::vector<hoist::v1::SessionResponse> sent = second->sent();
  ASSERT_GE(sent.size(), 2u);
  EXPECT_TRUE(sent[0].has_welcome()) << "the welcome goes before any step";
  hub_.OnMessage("host-1", second, ResultOf("s-1", "done"));
  StepAnswer r = Answer(run);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "done");
}

TEST_F(AgentHubUnitTest, DroppedSessionFailsItsStepWhenTheAgentIsNotBackByTheDeadline) {
  FakeConnection* conn = Connect("host-1");
  auto& run = RunAsync("host-1", StepOf("s-1", absl::Seconds(30)));
  ASSERT_TRUE(conn->WaitForStep("s-1"));
  hub_.Closed("host-1", conn);
  clock_.Advance(absl::Seconds(36));  // the deadline and the hub's grace after it
  StepAnswer r = Answer(run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("no result from agent host-1 for step s-1 before its deadline"));
}

TEST_F(AgentHubUnitTest, LosingLeadershipFailsStepsInFlightAndClosesSessions) {
  FakeConnection* conn = Connect("host-1");
  auto& run = RunAsync("host-1", StepOf("s-1"));
  ASSERT_TRUE(conn->WaitForStep("s-1"));
  StepDown();
  StepAnswer r = Answer(run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("leadership lost while step s-1 ran on host-1"));
  EXPECT_TRUE(conn->closed()) << "the agent must reconnect and hear the new leader";
  EXPECT_FALSE(hub_.Leading());
}

TEST_F(AgentHubUnitTest, CancelFlagEndsTheWait) {
  FakeConnection* conn = Connect("host-1");
  auto& run = RunAsync("host-1", StepOf("s-1"), nullptr, &cancel_);
  ASSERT_TRUE(conn->WaitForStep("s-1"));
  cancel_ = true;
  StepAnswer r = Answer(run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_EQ(hub_.Stats().steps_in_flight, 0);
}

TEST_F(AgentHubUnitTest, SecondSessionIsRefusedWhileTheFirstIsAliveAndReplacesItOnceSilent) {
  FakeConnection* first = Connect("host-1");
  FakeConnection* second = NewConnection();
  absl::Status s = hub_.Open(HelloOf("host-1"), second);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_THAT(s.message(), HasSubstr("already has a live session"));
  EXPECT_FALSE(first->closed());

  clock_.Advance(absl::Seconds(1));  // silent for more than two heartbeats
  s = hub_.Open(HelloOf("host-1"), second);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(first->closed()) << "the silent session should be replaced";
  EXPECT_TRUE(hub_.IsConnected("host-1"));
}

TEST_F(AgentHubUnitTest, InventoryIsRecordedByTheHubsWriter) {
  hub_.Start();
  FakeConnection* conn = Connect("host-1");
  hoist::v1::SessionRequest inventory;
  hoist::v1::ContainerInfo* c = inventory.mutable_inventory()->add_containers();
  c->set_container_id("c1");
  c->set_name("shop-api-blue-0-1.1.0");
  c->mutable_instance()->set_deployment("shop");
  c->mutable_instance()->set_service("api");
  c->set_version("1.1.0");
  hub_.OnMessage("host-1", conn, inventory);
  EXPECT_TRUE(Eventually(
      kWait,
      [&] {
        auto containers = store_.ListContainers("shop");
        return containers.ok() && containers->size() == 1 && (*containers)[0].agent_id == "host-1";
      },
      kPoll))
      << "the inventory was not written";
}

TEST_F(AgentHubUnitTest, SilentAgentsSessionIsClosedAndTheAgentMarkedLost) {
  hub_.Start();
  FakeConnection* conn = Connect("host-1");
  clock_.Advance(absl::Seconds(1));  // many heartbeat intervals without a word
  EXPECT_TRUE(Eventually(kWait, [&] { return conn->closed(); }, kPoll)) << "the silent session was not closed";
  EXPECT_TRUE(Eventually(
      kWait,
      [&] {
        const std::vector<hoist::v1::Agent> agents = Agents();
        return agents.size() == 1 && agents[0].lost() && !agents[0].connected();
      },
      kPoll))
      << "the silent agent was not marked lost";
}

}  // namespace

// An AgentStore whose disconnect writes wait at a gate the test opens, so
// that a reconnect can be made to happen while one is in flight.
class GatedDisconnects final : public AgentStore {
 public:
  explicit GatedDisconnects(AgentStore* inner) : inner_(inner) {}
  absl::Status RecordHello(uint64_t epoch, const hoist::v1::Hello& hello, const std::string& controller_id) override {
    return inner_->RecordHello(epoch, hello, controller_id);
  }
  absl::Status RecordHeartbeats(uint64_t epoch,
                                const std::map<std::string, hoist::v1::Heartbeat>& heartbeats) override {
    return inner_->RecordHeartbeats(epoch, heartbeats);
  }
  absl::Status ReplaceInventory(uint64_t epoch, const std::string& agent_id,
                                const hoist::v1::Inventory& inventory) override {
    return inner_->ReplaceInventory(epoch, agent_id, inventory);
  }
  absl::Status ReplaceInventories(uint64_t epoch,
                                  const std::map<std::string, hoist::v1::Inventory>& inventories) override {
    return inner_->ReplaceInventories(epoch, inventories);
  }
  absl::Status RecordDisconnect(uint64_t epoch, const std::string& agent_id) override {
    entered_.Notify();
    open_.WaitForNotification();
    return inner_->RecordDisconnect(epoch, agent_id);
  }
  absl::StatusOr<std::vector<std::string>> MarkLost(uint64_t epoch, absl::Duration silence) override {
    return inner_->MarkLost(epoch, silence);
  }
  absl::StatusOr<std::vector<hoist::v1::Agent>> ListAgents() override { return inner_->ListAgents(); }
  absl::StatusOr<std::vector<ObservedContainer>> ListContainers(const std::string& deployment) override {
    return inner_->ListContainers(deployment);
  }

  absl::Notification entered_;
  absl::Notification open_;

 private:
  AgentStore* const inner_;
};

// A session that ends while the agent is already reconnecting: the old
// session's disconnect must not land after the new session's hello (the
// agent would show as disconnected while its session is open).
TEST(AgentHubRaceTest, AnOldSessionsDisconnectNeverOverwritesTheReconnectsHello) {
  FakeClock clock;
  InMemoryAgentStore store(&clock);
  GatedDisconnects gated(&store);
  AgentHub hub(&gated, &clock, AgentHubOptions{.controller_id = "replica-a"});
  const uint64_t epoch = store.BumpEpoch();
  hub.OnLeadership(epoch);
  FakeConnection old_session;
  FakeConnection new_session;
  ASSERT_TRUE(hub.Open(HelloOf("host-1"), &old_session).ok());

  // The old session ends; its disconnect write waits at the gate.
  std::thread closing([&] { hub.Closed("host-1", &old_session); });
  ASSERT_TRUE(gated.entered_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The agent reconnects meanwhile.
  std::future<absl::Status> reopened =
      std::async(std::launch::async, [&] { return hub.Open(HelloOf("host-1"), &new_session); });
  // Give the reconnect every chance to finish first (it must not be able to
  // write its hello before the disconnect in flight).
  reopened.wait_for(std::chrono::milliseconds(300));
  gated.open_.Notify();
  closing.join();
  ASSERT_TRUE(reopened.get().ok());

  EXPECT_TRUE(hub.IsConnected("host-1"));
  auto agents = store.ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  ASSERT_EQ(agents->size(), 1u);
  EXPECT_TRUE((*agents)[0].connected()) << "the reconnected agent is recorded as disconnected";
  hub.Stop();
}

}  // namespace hoist::testing

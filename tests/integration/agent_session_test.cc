// Agent sessions against a real Postgres and real gRPC streams on loopback:
// an in-process controller (AgentHub + AgentServiceImpl, leading through a
// real LeaderElector) and in-process AgentSessions whose steps are canned.

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/session.h"
#include "controller/agent_hub.h"
#include "controller/agent_service.h"
#include "controller/leader_election.h"
#include "controller/store/pg_agent_store.h"
#include "controller/store/pg_migrator.h"
#include "controller/store/pg_pool.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "shared/ca.h"
#include "shared/pg.h"
#include "shared/tls.h"
#include "tests/fakes/fake_leadership.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/migrated_postgres_test.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

using ::google::protobuf::util::TimeUtil;
using ::testing::HasSubstr;

// How long a test waits for a session to open, close or be recorded.
constexpr absl::Duration kWait = absl::Seconds(10);

// One controller replica in this process.
struct Replica {
  // With credentials (mTLS), agents must present a certificate whose name
  // is their agent id.
  Replica(const std::string& url, const std::string& id, bool lead,
          std::shared_ptr<grpc::ServerCredentials> credentials = nullptr, AgentServiceOptions service_options = {})
      : pool(*WithConnectionDefaults(url), 4),
        store(&pool),
        hub(&store, RealClock::Get(), AgentHubOptions{.controller_id = id, .heartbeat_interval = absl::Milliseconds(200)}),
        authorizer({.tls = credentials != nullptr}),
        service(&hub, &leadership, &authorizer, service_options) {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service);
    builder.AddListeningPort("127.0.0.1:0", credentials ? credentials : grpc::InsecureServerCredentials(), &port);
    server = builder.BuildAndStart();
    address = absl::StrCat("127.0.0.1:", port);
    hub.Start();
    if (lead) {
      elector = std::make_unique<LeaderElector>(
          url, LeaderElectionOptions{.replica_id = id, .advertise_address = address}, RealClock::Get());
      elector->Start([this, id](uint64_t epoch) {
        hub.OnLeadership(epoch);
        leadership.Set(epoch, epoch != 0 ? LeaderInfo{id, address, epoch} : LeaderInfo{});
      });
      elector->WaitForLeadership(absl::Seconds(10));
      // The hub hears of it from the election thread's callback, just after.
      Eventually(kWait, [this] { return hub.epoch() != 0; });
    }
  }
  ~Replica() {
    if (elector) elector->Stop();
    hub.Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  PgPool pool;
  PgAgentStore store;
  AgentHub hub;
  // What the service asks: set from the elector's changes when this replica
  // runs one, else the leader the test names.
  FakeLeadership leadership;
  Authorizer authorizer;
  AgentServiceImpl service;
  int port = 0;
  std::string address;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<LeaderElector> elector;
};

// What the canned agent saw.
struct AgentLog {
  absl::Mutex mu;
  std::vector<hoist::v1::Step> steps;
};

class AgentSessionTest : public MigratedPostgresTest {
 protected:
  std::unique_ptr<AgentSession> Agent(const std::string& id, std::vector<std::string> controllers, AgentLog* log,
                                      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr) {
    AgentSessionOptions o;
    o.controllers = std::move(controllers);
    o.credentials = credentials ? credentials : grpc::InsecureChannelCredentials();
    o.hello.set_agent_id(id);
    o.hello.set_host_name(id + ".test");
    (*o.hello.mutable_labels())["zone"] = "a";
    o.run_step = [log](const hoist::v1::Step& step, const std::function<void(const hoist::v1::StepProgress&)>& progress) {
      {
        absl::MutexLock lock(&log->mu);
        log->steps.push_back(step);
      }
      hoist::v1::StepProgress p;
      p.set_step_id(step.step_id());
      p.set_message("halfway");
      progress(p);
      hoist::v1::StepResult r;
      r.set_step_id(step.step_id());
      r.set_epoch(step.epoch());
      r.set_outcome(hoist::v1::STEP_OUTCOME_SUCCEEDED);
      return r;
    };
    o.take_inventory = [id]() -> absl::StatusOr<hoist::v1::Inventory> {
      hoist::v1::Inventory inv;
      hoist::v1::ContainerInfo* c = inv.add_containers();
      c->set_container_id("c-" + id);
      c->set_name("shop-api-blue-0-1.0.0");
      c->mutable_instance()->set_deployment("shop");
      c->mutable_instance()->set_service("api");
      c->set_image("registry/api:1.0.0");
      c->set_version("1.0.0");
      c->set_state(hoist::v1::CONTAINER_STATE_RUNNING);
      c->set_health(hoist::v1::HEALTH_HEALTHY);
      return inv;
    };
    o.backoff_min = absl::Milliseconds(20);
    o.backoff_max = absl::Milliseconds(200);
    auto s = std::make_unique<AgentSession>(std::move(o));
    s->Start();
    return s;
  }

  hoist::v1::Step MakeStep(const std::string& id) {
    hoist::v1::Step step;
    step.set_step_id(id);
    *step.mutable_deadline() = TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now() + absl::Seconds(10)));
    step.mutable_pull_image()->set_image("registry/api:1.1.0");
    return step;
  }
};

TEST_F(AgentSessionTest, AgentIsRecordedWithItsInventoryAndRunsAStepWithTheLeaderEpoch) {
  Replica leader(url_, "r1", true);
  ASSERT_NE(leader.hub.epoch(), 0u) << "the replica should lead";
  AgentLog log;
  auto agent = Agent("host-a", {leader.address}, &log);
  ASSERT_TRUE(Eventually(kWait, [&] { return leader.hub.IsConnected("host-a"); })) << "agent never connected";

  auto agents = leader.store.ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  ASSERT_EQ(agents->size(), 1u);
  EXPECT_EQ((*agents)[0].id(), "host-a");
  EXPECT_EQ((*agents)[0].host_name(), "host-a.test");
  EXPECT_EQ((*agents)[0].labels().at("zone"), "a");
  EXPECT_TRUE((*agents)[0].connected());
  EXPECT_EQ((*agents)[0].agent_version(), HOIST_VERSION);
  ASSERT_TRUE(Eventually(kWait, [&] {
    auto cs = leader.store.ListContainers("shop");
    return cs.ok() && cs->size() == 1 && (*cs)[0].info.version() == "1.0.0" && (*cs)[0].agent_id == "host-a";
  })) << "inventory was not stored";

  std::vector<std::string> progress;
  auto result = leader.hub.RunStep("host-a", MakeStep("s-1"),
                                   [&](const hoist::v1::StepProgress& p) { progress.push_back(p.message()); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  EXPECT_THAT(progress, ::testing::ElementsAre("halfway"));
  absl::MutexLock lock(&log.mu);
  ASSERT_EQ(log.steps.size(), 1u);
  EXPECT_EQ(log.steps[0].epoch(), leader.hub.epoch()) << "steps must carry the leader's epoch";
}

TEST_F(AgentSessionTest, AgentDiallingAFollowerIsRedirectedToTheLeader) {
  Replica leader(url_, "r1", true);
  Replica follower(url_, "r2", false);
  follower.leadership.Set(0, LeaderInfo{"r1", leader.address, leader.hub.epoch()});
  AgentLog log;
  auto agent = Agent("host-b", {follower.address}, &log);
  ASSERT_TRUE(Eventually(kWait, [&] { return leader.hub.IsConnected("host-b"); }))
      << "the agent should have followed the NotLeader hint to " << leader.address;
  EXPECT_FALSE(follower.hub.IsConnected("host-b"));
  // The hub counts the agent connected when it accepts the hello; the agent
  // learns the epoch from the welcome that follows.
  EXPECT_TRUE(Eventually(kWait, [&] { return agent->session_epoch() == leader.hub.epoch(); }))
      << "the agent's session epoch is " << agent->session_epoch() << ", the leader's " << leader.hub.epoch();
}

TEST_F(AgentSessionTest, FollowerRefusesToPushSteps) {
  Replica follower(url_, "r2", false);
  auto result = follower.hub.RunStep("host-a", MakeStep("s-1"), nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(AgentSessionTest, StepSentBeforeTheAgentConnectsIsDeliveredWhenItDoes) {
  Replica leader(url_, "r1", true);
  AgentLog log;
  std::unique_ptr<AgentSession> agent;
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(300));  // the agent arrives late, on purpose: the step waits for it
    agent = Agent("host-c", {leader.address}, &log);
  });
  auto result = leader.hub.RunStep("host-c", MakeStep("s-late"), nullptr);
  later.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
}

TEST_F(AgentSessionTest, DisconnectIsRecordedAndLeadershipLossClosesSessions) {
  auto leader = std::make_unique<Replica>(url_, "r1", true);
  AgentLog log;
  auto agent = Agent("host-d", {leader->address}, &log);
  ASSERT_TRUE(Eventually(kWait, [&] { return leader->hub.IsConnected("host-d"); }));
  leader->hub.OnLeadership(0);
  ASSERT_TRUE(Eventually(kWait, [&] { return !agent->connected(); })) << "losing leadership must close sessions";
  agent.reset();
  pqxx::connection c(url_);
  pqxx::nontransaction tx(c);
  // The disconnect write is fenced: a replica that stopped leading must not
  // write, so the row may still say connected; the next leader's liveness
  // check marks it lost. Here we only check that nothing crashed and the
  // agent is known.
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM agents WHERE id = 'host-d'")[0].as<int>(), 1);
}

TEST_F(AgentSessionTest, StoppedAgentIsRecordedDisconnected) {
  Replica leader(url_, "r1", true);
  AgentLog log;
  auto agent = Agent("host-e", {leader.address}, &log);
  ASSERT_TRUE(Eventually(kWait, [&] { return leader.hub.IsConnected("host-e"); }));
  agent->Stop();
  ASSERT_TRUE(Eventually(kWait, [&] {
    auto agents = leader.store.ListAgents();
    return agents.ok() && agents->size() == 1 && !(*agents)[0].connected();
  })) << "the agent should be recorded as disconnected";
}

TEST_F(AgentSessionTest, AgentThatSaysHelloThenFallsSilentIsMarkedLostAndItsSessionClosed) {
  Replica leader(url_, "r1", true);
  auto stub = hoist::v1::AgentService::NewStub(grpc::CreateChannel(leader.address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  hoist::v1::SessionRequest hello;
  hello.mutable_hello()->set_agent_id("host-silent");
  hello.mutable_hello()->set_protocol_version(1);
  ASSERT_TRUE(stream->Write(hello));
  hoist::v1::SessionResponse welcome;
  ASSERT_TRUE(stream->Read(&welcome));
  ASSERT_TRUE(welcome.has_welcome());
  // No heartbeats from here on (the hub expects one every 200 ms).
  ASSERT_TRUE(Eventually(kWait, [&] {
    auto agents = leader.store.ListAgents();
    return agents.ok() && agents->size() == 1 && (*agents)[0].lost() && !(*agents)[0].connected();
  })) << "a silent agent should be marked lost";
  hoist::v1::SessionResponse more;
  while (stream->Read(&more)) {
  }
  EXPECT_FALSE(stream->Finish().ok()) << "the hub should have closed the silent session";
}

TEST_F(AgentSessionTest, MalformedAndIncompatibleHellosAreRefusedWithTheReason) {
  Replica leader(url_, "r1", true);
  auto channel = grpc::CreateChannel(leader.address, grpc::InsecureChannelCredentials());
  auto stub = hoist::v1::AgentService::NewStub(channel);
  auto open = [&](const hoist::v1::SessionRequest& first) {
    grpc::ClientContext ctx;
    auto stream = stub->Session(&ctx);
    stream->Write(first);
    stream->WritesDone();
    hoist::v1::SessionResponse r;
    while (stream->Read(&r)) {
    }
    return stream->Finish();
  };
  hoist::v1::SessionRequest heartbeat_first;
  heartbeat_first.mutable_heartbeat();
  grpc::Status s = open(heartbeat_first);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("Hello"));

  hoist::v1::SessionRequest future;
  future.mutable_hello()->set_agent_id("host-f");
  future.mutable_hello()->set_protocol_version(99);
  s = open(future);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("protocol 99"));

  hoist::v1::SessionRequest bad_id;
  bad_id.mutable_hello()->set_agent_id("host f/../");
  bad_id.mutable_hello()->set_protocol_version(1);
  s = open(bad_id);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("agent_id"));
  EXPECT_TRUE(leader.hub.ConnectedAgents().empty());
}

TEST_F(AgentSessionTest, SessionThatSendsNoHelloIsEndedAfterTheHelloTimeout) {
  Replica leader(url_, "r1", true, nullptr, AgentServiceOptions{.hello_timeout = absl::Seconds(1)});
  auto stub = hoist::v1::AgentService::NewStub(grpc::CreateChannel(leader.address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  // A generous deadline of the client's own: the server must end it first.
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const absl::Time opened = absl::Now();
  auto stream = stub->Session(&ctx);
  hoist::v1::SessionResponse r;
  while (stream->Read(&r)) {
  }
  grpc::Status s = stream->Finish();
  const absl::Duration held = absl::Now() - opened;
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_LT(held, absl::Seconds(5)) << "a silent stream held a session for " << held;
  EXPECT_TRUE(leader.hub.ConnectedAgents().empty());
}

// Sessions cancelled by their agent while the hub opens them (the Welcome
// cannot be written any more) leave nothing behind: the hub forgets each
// one, and the agent's next session is served.
TEST_F(AgentSessionTest, SessionsCancelledWhileTheyOpenLeaveNoSessionBehind) {
  Replica leader(url_, "r1", true);
  auto channel = grpc::CreateChannel(leader.address, grpc::InsecureChannelCredentials());
  auto stub = hoist::v1::AgentService::NewStub(channel);
  for (int i = 0; i < 40; ++i) {
    grpc::ClientContext ctx;
    auto stream = stub->Session(&ctx);
    hoist::v1::SessionRequest hello;
    hello.mutable_hello()->set_agent_id("host-flaky");
    hello.mutable_hello()->set_protocol_version(1);
    stream->Write(hello);
    if (i % 2 == 1) absl::SleepFor(absl::Microseconds(200 * i));  // at different points of the opening
    ctx.TryCancel();
    stream->Finish().IgnoreError();
  }
  EXPECT_TRUE(Eventually(kWait, [&] { return !leader.hub.IsConnected("host-flaky"); }))
      << "a cancelled session is still in the hub";
  AgentLog log;
  auto agent = Agent("host-flaky", {leader.address}, &log);
  EXPECT_TRUE(Eventually(kWait, [&] { return leader.hub.IsConnected("host-flaky"); }))
      << "the agent's real session was refused";
}

// Hellos are group-committed (PgAgentStore::RecordHello): a burst of them,
// one agent twice among them, is recorded whole, each agent once.
TEST_F(AgentSessionTest, AHelloBurstIsRecordedWholeEvenWithOneAgentTwice) {
  Replica leader(url_, "r1", true);
  const uint64_t epoch = leader.hub.epoch();
  ASSERT_NE(epoch, 0u);
  constexpr int kAgents = 40;
  std::vector<absl::Status> results(kAgents + 1);
  std::vector<std::thread> threads;
  const std::string controller = "r1";
  for (int i = 0; i <= kAgents; ++i) {
    threads.emplace_back([&, i] {
      hoist::v1::Hello hello;
      hello.set_agent_id(absl::StrCat("burst-", i == kAgents ? 7 : i));  // burst-7 says hello twice
      hello.set_host_name(absl::StrCat("burst-", i, ".test"));
      (*hello.mutable_labels())["zone"] = i % 2 ? "a" : "b";
      hello.add_deployments("shop");
      hello.set_protocol_version(1);
      results[i] = leader.store.RecordHello(epoch, hello, controller);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i <= kAgents; ++i) EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
  auto agents = leader.store.ListAgents();
  ASSERT_TRUE(agents.ok()) << agents.status();
  ASSERT_EQ(agents->size(), static_cast<size_t>(kAgents));
  for (const auto& a : *agents) {
    EXPECT_TRUE(a.connected()) << a.id();
    // Each row is one hello's, whole (burst-7's is either of its two).
    const std::string& host = a.host_name();
    const int sent_by = std::stoi(host.substr(6, host.find('.') - 6));
    EXPECT_EQ(a.labels().at("zone"), sent_by % 2 ? "a" : "b") << a.id();
  }
  // A stale epoch records nobody.
  hoist::v1::Hello late;
  late.set_agent_id("burst-late");
  late.set_protocol_version(1);
  EXPECT_EQ(leader.store.RecordHello(epoch + 1, late, controller).code(), absl::StatusCode::kFailedPrecondition);
}

// mTLS with a fleet CA made by the same code as `hoist ca`.
class AgentSessionTlsTest : public AgentSessionTest {
 protected:
  void SetUp() override {
    AgentSessionTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto dir = MakeOwnedTempDir("hoist-tls");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    ASSERT_TRUE(CaInit(dir_).ok());
    auto controller = CaIssue(dir_, CertKind::kController, "hoistd-1");
    ASSERT_TRUE(controller.ok()) << controller.status();
    auto creds = ServerTlsCredentials(dir_ + "/ca.crt", controller->files.cert_path, controller->files.key_path);
    ASSERT_TRUE(creds.ok()) << creds.status();
    server_credentials_ = *creds;
  }
  void TearDown() override {
    if (!dir_.empty()) RemoveTree(dir_);
  }

  std::shared_ptr<grpc::ChannelCredentials> AgentCredentials(const std::string& cert_name) {
    auto issued = CaIssue(dir_, CertKind::kAgent, cert_name);
    EXPECT_TRUE(issued.ok()) << issued.status();
    auto creds = ChannelTlsCredentials(dir_ + "/ca.crt", issued->files.cert_path, issued->files.key_path);
    EXPECT_TRUE(creds.ok()) << creds.status();
    return creds.ok() ? *creds : nullptr;
  }

  std::string dir_;
  std::shared_ptr<grpc::ServerCredentials> server_credentials_;
};

TEST_F(AgentSessionTlsTest, AgentWithACertificateInItsNameIsAccepted) {
  Replica leader(url_, "r1", true, server_credentials_);
  AgentLog log;
  auto agent = Agent("host-a", {leader.address}, &log, AgentCredentials("host-a"));
  ASSERT_TRUE(Eventually(kWait, [&] { return leader.hub.IsConnected("host-a"); }))
      << "a valid agent certificate is refused";
}

TEST_F(AgentSessionTlsTest, AgentWhoseCertificateNamesAnotherAgentIsRefused) {
  Replica leader(url_, "r1", true, server_credentials_);
  auto stub = hoist::v1::AgentService::NewStub(grpc::CreateChannel(leader.address, AgentCredentials("host-x")));
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  hoist::v1::SessionRequest hello;
  hello.mutable_hello()->set_agent_id("host-a");
  hello.mutable_hello()->set_protocol_version(1);
  stream->Write(hello);
  stream->WritesDone();
  hoist::v1::SessionResponse r;
  while (stream->Read(&r)) {
  }
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("host-x"));
  EXPECT_FALSE(leader.hub.IsConnected("host-a"));
}

TEST_F(AgentSessionTlsTest, OneCertificateMayHoldOnlyAFewSessionCallsAtOnce) {
  Replica leader(url_, "r1", true, server_credentials_, AgentServiceOptions{.max_calls_per_certificate = 2});
  auto creds = AgentCredentials("host-a");
  // Streams of one certificate that never say hello, each on its own
  // connection; the third is refused at once, the first two are held.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<hoist::v1::SessionRequest, hoist::v1::SessionResponse>>> streams;
  for (int i = 0; i < 3; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(grpc::CreateCustomChannel(leader.address, creds, args));
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(hoist::v1::AgentService::NewStub(channels.back())->Session(contexts.back().get()));
    // The call reaches the server with its first message's headers; wait
    // until the two before are counted.
    if (i < 2) {
      ASSERT_TRUE(Eventually(kWait, [&] { return channels.back()->GetState(false) == GRPC_CHANNEL_READY; }));
    }
    // Nothing outside the service tells that it has counted a call that
    // sent no message yet; this pause gives the call time to arrive.
    absl::SleepFor(absl::Milliseconds(200));
  }
  hoist::v1::SessionResponse r;
  while (streams[2]->Read(&r)) {
  }
  grpc::Status third = streams[2]->Finish();
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.error_message();
  EXPECT_THAT(third.error_message(), HasSubstr("host-a"));
  // The two held ones still serve: a hello on the first opens its session.
  hoist::v1::SessionRequest hello;
  hello.mutable_hello()->set_agent_id("host-a");
  hello.mutable_hello()->set_protocol_version(1);
  ASSERT_TRUE(streams[0]->Write(hello));
  ASSERT_TRUE(streams[0]->Read(&r));
  EXPECT_TRUE(r.has_welcome());
  for (auto& c : contexts) c->TryCancel();
}

TEST_F(AgentSessionTlsTest, AgentWithoutACertificateOrFromAnotherCaNeverConnects) {
  Replica leader(url_, "r1", true, server_credentials_);
  AgentLog log;
  // No client certificate: plaintext against the TLS port.
  auto plaintext = Agent("host-b", {leader.address}, &log);
  // A certificate from another fleet's CA.
  auto other = MakeOwnedTempDir("hoist-tls-other");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(CaInit(*other).ok());
  auto foreign = CaIssue(*other, CertKind::kAgent, "host-c");
  ASSERT_TRUE(foreign.ok());
  // Built by hand: ChannelTlsCredentials itself refuses a certificate its CA did not sign.
  grpc::SslCredentialsOptions foreign_options;
  foreign_options.pem_root_certs = ReadWholeFile(dir_ + "/ca.crt");
  foreign_options.pem_cert_chain = ReadWholeFile(foreign->files.cert_path);
  foreign_options.pem_private_key = ReadWholeFile(foreign->files.key_path);
  auto stranger = Agent("host-c", {leader.address}, &log, grpc::SslCredentials(foreign_options));
  // Give both time to try (and retry) several times.
  EXPECT_FALSE(Eventually(absl::Seconds(2), [&] { return !leader.hub.ConnectedAgents().empty(); }))
      << "an agent without a certificate of this fleet connected";
  plaintext.reset();
  stranger.reset();
  RemoveTree(*other);
  auto agents = leader.store.ListAgents();
  ASSERT_TRUE(agents.ok());
  EXPECT_TRUE(agents->empty()) << "a refused agent must not be recorded";
}

}  // namespace
}  // namespace hoist::testing

// hoistd's and hoist-agent's server objects started in-process: two
// controller replicas on one real Postgres (the first migrates it), one
// leads, an agent connects to it, and a graceful stop hands leadership to
// the other replica, which the agent follows.

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "agent/agent_server.h"
#include "controller/agent_hub.h"
#include "controller/controller_server.h"
#include "shared/http_client.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/postgres_test.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist {
namespace {

using ::hoist::testing::Eventually;
using ::hoist::testing::EventuallyHolds;

// A state directory for an agent, removed at the end.
struct StateDir {
  StateDir() : path(*::hoist::testing::MakeOwnedTempDir("hoist-server-test")) {}
  ~StateDir() { ::hoist::testing::RemoveTree(path); }
  std::string path;
};

class ControllerServerTest : public ::hoist::testing::PostgresTest {
 protected:
  absl::StatusOr<std::unique_ptr<ControllerServer>> Replica(const std::string& id) {
    auto server = ControllerServer::Create({.database_url = url_,
                                            .replica_id = id,
                                            .listen = "127.0.0.1:0",
                                            .http_listen = "127.0.0.1:0"});
    if (!server.ok()) return server.status();
    if (absl::Status s = (*server)->Start(); !s.ok()) return s;
    return server;
  }
};

TEST_F(ControllerServerTest, TwoReplicasElectOneLeaderAnAgentConnectsAndAGracefulStopHandsOver) {
  auto a = Replica("replica-a");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->WaitForLeadership(absl::Seconds(10)));
  auto b = Replica("replica-b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->grpc_port(), 0);
  EXPECT_NE((*a)->grpc_port(), (*b)->grpc_port());
  // The follower knows where the leader is, at the address it bound.
  EXPECT_TRUE(EventuallyHolds("the follower to name the leader", absl::Seconds(10),
                              [&] { return (*b)->leadership().CurrentLeader().address; },
                              [&](const std::string& address) { return address == (*a)->address(); }));
  EXPECT_EQ((*b)->leadership().epoch(), 0u);

  // /health on the leader says so.
  auto health = HttpGet(absl::StrCat("http://127.0.0.1:", (*a)->http_port(), "/health"), absl::Seconds(5));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(health->status, 200);
  EXPECT_NE(health->body.find("\"role\":\"leader\""), std::string::npos) << health->body;

  // An agent, in-process too, dials both replicas and opens its session with the leader.
  StateDir state;
  auto agent = AgentServer::Create({.controllers = {(*a)->address(), (*b)->address()},
                                    .insecure = true,
                                    .agent_id = "in-process-agent",
                                    .state_dir = state.path,
                                    .docker_socket = state.path + "/no-docker.sock"});
  ASSERT_TRUE(agent.ok()) << agent.status();
  (*agent)->Start();
  EXPECT_TRUE(Eventually(absl::Seconds(20), [&] { return (*a)->hub().Stats().agents_connected == 1; }));
  EXPECT_TRUE((*agent)->connected());

  // A graceful stop releases leadership: the other replica takes over at
  // once (well within a lease) and the agent follows it.
  const uint64_t old_epoch = (*a)->leadership().epoch();
  (*a)->Stop();
  EXPECT_TRUE((*b)->WaitForLeadership(absl::Seconds(2)));
  EXPECT_GT((*b)->leadership().epoch(), old_epoch);
  EXPECT_TRUE(Eventually(absl::Seconds(20), [&] { return (*b)->hub().Stats().agents_connected == 1; }));
  (*agent)->Stop();
}

TEST_F(ControllerServerTest, BadOptionsAreRefusedNamingTheOptionBeforeAnythingStarts) {
  auto no_url = ControllerServer::Create({.replica_id = "r"});
  ASSERT_FALSE(no_url.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(no_url.status())) << no_url.status();
  EXPECT_NE(no_url.status().message().find("database URL"), std::string::npos);

  auto bad_listen = ControllerServer::Create({.database_url = url_, .replica_id = "r", .listen = "no-port"});
  ASSERT_FALSE(bad_listen.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(bad_listen.status())) << bad_listen.status();
  EXPECT_NE(bad_listen.status().message().find("--listen"), std::string::npos) << bad_listen.status();

  auto half_tls = ControllerServer::Create({.database_url = url_, .replica_id = "r", .tls_ca = "/nonexistent/ca.crt"});
  ASSERT_FALSE(half_tls.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(half_tls.status())) << half_tls.status();

  StateDir state;
  auto agent = AgentServer::Create({.controllers = {"127.0.0.1:1"}, .agent_id = "a", .state_dir = state.path});
  ASSERT_FALSE(agent.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(agent.status())) << agent.status();
  EXPECT_NE(agent.status().message().find("--insecure"), std::string::npos) << agent.status();
}

}  // namespace
}  // namespace hoist

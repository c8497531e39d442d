// OperatorServiceImpl called directly with a grpc::ServerContext (no server,
// no network): the leader check and its trailer, the Status conversion at
// the edge, request fields checked, and the reads any replica serves. The
// manager, executor and stores behind it run on in-memory fakes.
// Leadership reaches every part in one place, OperatorServiceUnitTest::Lead
// (and Follow).

#include "controller/operator_service.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <grpcpp/test/server_context_test_spouse.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/sha256.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_leadership.h"
#include "tests/fakes/fake_step_dispatcher.h"
#include "tests/fakes/in_memory_agent_store.h"
#include "tests/fakes/in_memory_rollout_store.h"

namespace hoist::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kStack[] = R"(deployment: shop
hosts:
  - id: host-a
    labels: {zone: a}
  - id: host-b
    labels: {zone: b}
services:
  api:
    role: api
    repository: registry.local/shop/api
    replicas: 2
    health:
      http: {path: /health, port: 8080}
      interval: 2s
  web:
    role: web
    repository: registry.local/shop/web
)";

const LeaderInfo kOtherLeader{"replica-b", "10.0.0.2:7443", 7};

hoist::v1::Release ReleaseOf(const std::string& version) {
  hoist::v1::Release r;
  r.set_deployment("shop");
  r.set_version(version);
  (*r.mutable_images())["api"] = absl::StrCat("registry.local/shop/api:", version);
  (*r.mutable_images())["web"] = absl::StrCat("registry.local/shop/web:", version);
  return r;
}

// The value of the "hoist-leader" trailer the call set; "" when none.
std::string LeaderTrailer(grpc::ServerContext* context) {
  const std::multimap<std::string, std::string> trailers =
      ::grpc::testing::ServerContextTestSpouse(context).GetTrailingMetadata();
  auto it = trailers.find(kLeaderTrailer);
  return it == trailers.end() ? "" : it->second;
}

class OperatorServiceUnitTest : public ::testing::Test {
 protected:
  OperatorServiceUnitTest()
      : store_(&clock_),
        agents_(&clock_),
        dispatcher_({"host-a", "host-b"}),
        executor_(&store_, &dispatcher_, &clock_, Options()),
        manager_(&store_, &agents_, &dispatcher_, &executor_, &clock_),
        auth_(Authorizer::Options{}),  // no TLS: every caller may do everything
        service_(&manager_, &store_, &agents_, &leadership_, &auth_) {}

  // shop applied by this replica as the leader.
  void SetUp() override {
    Lead();
    hoist::v1::ApplyStackRequest apply;
    apply.set_manifest_yaml(kStack);
    apply.set_file_name("stack.yaml");
    ASSERT_TRUE(manager_.ApplyStack(epoch_, apply, "tester").ok());
  }

  // This replica wins an election: every part hears the new epoch.
  void Lead() {
    epoch_ = store_.BumpEpoch();
    agents_.SetEpoch(epoch_);
    leadership_.Set(epoch_, LeaderInfo{"replica-a", "10.0.0.1:7443", epoch_});
    dispatcher_.SetLeading(true);
    executor_.OnLeadership(epoch_);
  }
  // Another replica leads (or, with an empty `leader`, nobody is known to).
  void Follow(const LeaderInfo& leader) {
    leadership_.Set(0, leader);
    dispatcher_.SetLeading(false);
    executor_.OnLeadership(0);
  }

  static rollout::ExecutorOptions Options() {
    rollout::ExecutorOptions options;
    options.resume_interval = absl::Hours(1);
    return options;
  }

  // A rollout of shop stored as finished, a second after the one before.
  void FinishedRollout(const std::string& id) {
    clock_.Advance(absl::Seconds(1));
    rollout::StoredRollout r;
    r.id = id;
    r.deployment = "shop";
    r.kind = "deploy";
    r.to_version = "1.0.0";
    r.requested_by = "tester";
    ASSERT_TRUE(store_.CreateRollout(epoch_, r, {}).ok());
    ASSERT_TRUE(store_.SetRolloutState(epoch_, id, hoist::v1::ROLLOUT_STATE_SUCCEEDED, "").ok());
  }

  int AuditCount() {
    auto a = store_.ListAudit("", 10000, 0);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? static_cast<int>(a->size()) : -1;
  }

  FakeClock clock_;
  InMemoryRolloutStore store_;
  InMemoryAgentStore agents_;
  FakeStepDispatcher dispatcher_;
  FakeLeadership leadership_;
  rollout::Executor executor_;
  rollout::RolloutManager manager_;
  Authorizer auth_;
  OperatorServiceImpl service_;
  uint64_t epoch_ = 0;
};

TEST_F(OperatorServiceUnitTest, WritesOnAFollowerAnswerUnavailableNamingTheLeader) {
  Follow(kOtherLeader);
  const int audited = AuditCount();
  // Each write, as a follower receives it.
  const std::map<std::string, std::function<grpc::Status(grpc::ServerContext*)>> writes = {
      {"ApplyStack",
       [&](grpc::ServerContext* c) {
         hoist::v1::ApplyStackRequest req;
         req.set_manifest_yaml(kStack);
         hoist::v1::ApplyStackResponse resp;
         return service_.ApplyStack(c, &req, &resp);
       }},
      {"CreateRelease",
       [&](grpc::ServerContext* c) {
         hoist::v1::CreateReleaseRequest req;
         *req.mutable_release() = ReleaseOf("1.0.0");
         hoist::v1::CreateReleaseResponse resp;
         return service_.CreateRelease(c, &req, &resp);
       }},
      {"StartRollout",
       [&](grpc::ServerContext* c) {
         hoist::v1::StartRolloutRequest req;
         req.set_deployment("shop");
         req.set_target_version("1.0.0");
         hoist::v1::StartRolloutResponse resp;
         return service_.StartRollout(c, &req, &resp);
       }},
      {"CancelRollout",
       [&](grpc::ServerContext* c) {
         hoist::v1::CancelRolloutRequest req;
         req.set_id("shop-r1");
         hoist::v1::CancelRolloutResponse resp;
         return service_.CancelRollout(c, &req, &resp);
       }},
      {"Rollback",
       [&](grpc::ServerContext* c) {
         hoist::v1::RollbackRequest req;
         req.set_deployment("shop");
         hoist::v1::RollbackResponse resp;
         return service_.Rollback(c, &req, &resp);
       }},
      {"Cutover",
       [&](grpc::ServerContext* c) {
         hoist::v1::CutoverRequest req;
         req.set_deployment("shop");
         req.set_direction(hoist::v1::CUTOVER_DIRECTION_BACK);
         hoist::v1::CutoverResponse resp;
         return service_.Cutover(c, &req, &resp);
       }},
  };
  for (const auto& [call, write] : writes) {
    grpc::ServerContext context;
    const grpc::Status s = write(&context);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << call << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("send writes to the leader at 10.0.0.2:7443")) << call;
    EXPECT_EQ(LeaderTrailer(&context), "10.0.0.2:7443") << call;
  }
  EXPECT_EQ(AuditCount(), audited) << "a follower must refuse writes before they reach the manager";
  auto releases = store_.ListReleases("shop");
  ASSERT_TRUE(releases.ok());
  EXPECT_TRUE(releases->empty());
}

TEST_F(OperatorServiceUnitTest, FollowerThatKnowsNoLeaderSaysSoWithoutATrailer) {
  Follow(LeaderInfo{});
  grpc::ServerContext context;
  hoist::v1::CreateReleaseRequest req;
  *req.mutable_release() = ReleaseOf("1.0.0");
  hoist::v1::CreateReleaseResponse resp;
  const grpc::Status s = service_.CreateRelease(&context, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("no leader is known yet; retry"));
  EXPECT_EQ(LeaderTrailer(&context), "");
}

TEST_F(OperatorServiceUnitTest, ReadsAreServedByAFollower) {
  ASSERT_TRUE(manager_.CreateRelease(epoch_, ReleaseOf("1.0.0"), "tester").ok());
  Follow(kOtherLeader);
  grpc::ServerContext context;
  hoist::v1::GetDeploymentRequest req;
  req.set_name("shop");
  hoist::v1::GetDeploymentResponse resp;
  const grpc::Status s = service_.GetDeployment(&context, &req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.deployment().name(), "shop");

  grpc::ServerContext list_context;
  hoist::v1::ListReleasesRequest list;
  list.set_deployment("shop");
  hoist::v1::ListReleasesResponse releases;
  ASSERT_TRUE(service_.ListReleases(&list_context, &list, &releases).ok());
  ASSERT_EQ(releases.releases_size(), 1);
  EXPECT_EQ(releases.releases(0).version(), "1.0.0");
}

TEST_F(OperatorServiceUnitTest, ApplyStackOnTheLeaderAnswersWithTheStoredDeployment) {
  std::string text = kStack;
  text.replace(0, std::string("deployment: shop").size(), "deployment: cart");
  grpc::ServerContext context;
  hoist::v1::ApplyStackRequest req;
  req.set_manifest_yaml(text);
  req.set_file_name("cart.yaml");
  hoist::v1::ApplyStackResponse resp;
  const grpc::Status s = service_.ApplyStack(&context, &req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.deployment().name(), "cart");
  EXPECT_EQ(resp.deployment().manifest_sha256(), Sha256Hex(text));
  EXPECT_TRUE(store_.GetDeployment("cart").ok());
}

TEST_F(OperatorServiceUnitTest, ReleaseWithoutADeploymentIsInvalidArgumentNamingTheField) {
  grpc::ServerContext context;
  hoist::v1::CreateReleaseRequest req;
  *req.mutable_release() = ReleaseOf("1.0.0");
  req.mutable_release()->clear_deployment();
  hoist::v1::CreateReleaseResponse resp;
  const grpc::Status s = service_.CreateRelease(&context, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("release.deployment: required"));
}

TEST_F(OperatorServiceUnitTest, StartRolloutNamesTheMissingField) {
  hoist::v1::StartRolloutRequest req;
  hoist::v1::StartRolloutResponse resp;
  grpc::ServerContext nameless;
  grpc::Status s = service_.StartRollout(&nameless, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("deployment: required"));

  req.set_deployment("shop");
  grpc::ServerContext versionless;
  s = service_.StartRollout(&versionless, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("target_version: required"));
}

TEST_F(OperatorServiceUnitTest, CutoverWithoutADirectionIsInvalidArgumentNamingTheField) {
  grpc::ServerContext context;
  hoist::v1::CutoverRequest req;
  req.set_deployment("shop");
  hoist::v1::CutoverResponse resp;
  const grpc::Status s = service_.Cutover(&context, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("direction: give back, forward or finish"));
}

TEST_F(OperatorServiceUnitTest, ReleasesOfAnUnknownDeploymentAreNotFoundNotAnEmptyList) {
  grpc::ServerContext context;
  hoist::v1::ListReleasesRequest req;
  req.set_deployment("shpo");
  hoist::v1::ListReleasesResponse resp;
  const grpc::Status s = service_.ListReleases(&context, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("shpo"));
}

TEST_F(OperatorServiceUnitTest, ReleasesAreListedNewestFirstBySemanticVersion) {
  for (const char* v : {"1.2.0", "1.10.0", "1.9.0"}) {
    ASSERT_TRUE(manager_.CreateRelease(epoch_, ReleaseOf(v), "tester").ok()) << v;
  }
  grpc::ServerContext context;
  hoist::v1::ListReleasesRequest req;
  req.set_deployment("shop");
  hoist::v1::ListReleasesResponse resp;
  ASSERT_TRUE(service_.ListReleases(&context, &req, &resp).ok());
  std::vector<std::string> versions;
  for (const auto& r : resp.releases()) versions.push_back(r.version());
  EXPECT_THAT(versions, ElementsAre("1.10.0", "1.9.0", "1.2.0"));
}

TEST_F(OperatorServiceUnitTest, RolloutsAreListedNewestFirstTwentyByDefault) {
  for (int i = 1; i <= 25; ++i) ASSERT_NO_FATAL_FAILURE(FinishedRollout(absl::StrFormat("shop-r%02d", i)));
  grpc::ServerContext context;
  hoist::v1::ListRolloutsRequest req;
  req.set_deployment("shop");
  hoist::v1::ListRolloutsResponse resp;
  ASSERT_TRUE(service_.ListRollouts(&context, &req, &resp).ok());
  ASSERT_EQ(resp.rollouts_size(), 20);
  EXPECT_EQ(resp.rollouts(0).id(), "shop-r25");
  EXPECT_EQ(resp.rollouts(19).id(), "shop-r06");

  grpc::ServerContext limited_context;
  req.set_limit(3);
  hoist::v1::ListRolloutsResponse limited;
  ASSERT_TRUE(service_.ListRollouts(&limited_context, &req, &limited).ok());
  EXPECT_EQ(limited.rollouts_size(), 3);
}

TEST_F(OperatorServiceUnitTest, AuditEventsArePagedBackwardsAHundredAtATime) {
  const int before = AuditCount();
  for (int i = before; i < 105; ++i) {
    ASSERT_TRUE(store_.Audit({"tester", "release.create", "shop", "", "ok", absl::StrCat("entry ", i)}).ok());
  }
  grpc::ServerContext context;
  hoist::v1::ListAuditEventsRequest req;
  hoist::v1::ListAuditEventsResponse page;
  ASSERT_TRUE(service_.ListAuditEvents(&context, &req, &page).ok());
  ASSERT_EQ(page.events_size(), 100);
  EXPECT_EQ(page.events(0).id(), 105u) << "the newest first";
  EXPECT_EQ(page.events(99).id(), 6u);

  grpc::ServerContext next_context;
  req.set_before_id(page.events(99).id());
  hoist::v1::ListAuditEventsResponse next;
  ASSERT_TRUE(service_.ListAuditEvents(&next_context, &req, &next).ok());
  ASSERT_EQ(next.events_size(), 5);
  EXPECT_EQ(next.events(0).id(), 5u);
  EXPECT_EQ(next.events(4).id(), 1u);
}

TEST_F(OperatorServiceUnitTest, UnknownRolloutIsNotFound) {
  grpc::ServerContext context;
  hoist::v1::GetRolloutRequest req;
  req.set_id("shop-nope");
  hoist::v1::GetRolloutResponse resp;
  const grpc::Status s = service_.GetRollout(&context, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("shop-nope"));
}

TEST_F(OperatorServiceUnitTest, BackupsOfAnUnknownDeploymentAreNotFound) {
  grpc::ServerContext context;
  hoist::v1::ListBackupsRequest req;
  req.set_deployment("shpo");
  hoist::v1::ListBackupsResponse resp;
  const grpc::Status s = service_.ListBackups(&context, &req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
}

TEST_F(OperatorServiceUnitTest, LocksNameTheRolloutHoldingEachDeployment) {
  rollout::StoredRollout r;
  r.id = "shop-r1";
  r.deployment = "shop";
  r.kind = "deploy";
  r.to_version = "1.0.0";
  r.requested_by = "alice";
  ASSERT_TRUE(store_.CreateRollout(epoch_, r, {}).ok());
  grpc::ServerContext context;
  hoist::v1::ListLocksRequest req;
  hoist::v1::ListLocksResponse resp;
  ASSERT_TRUE(service_.ListLocks(&context, &req, &resp).ok());
  ASSERT_EQ(resp.locks_size(), 1);
  EXPECT_EQ(resp.locks(0).deployment(), "shop");
  EXPECT_EQ(resp.locks(0).rollout_id(), "shop-r1");
  EXPECT_EQ(resp.locks(0).owner(), "alice");
}

}  // namespace
}  // namespace hoist::testing

// Who may do what, on a real hoistd with mTLS and a real Postgres: every
// OperatorService method and AgentService.Session, called with each kind of
// certificate, allowed or refused as README.md's permission table says; and
// a revocation that takes effect on the next call without a restart.

#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "controller/authorizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hoist/v1/agent.grpc.pb.h"
#include "hoist/v1/operator.grpc.pb.h"
#include "shared/ca.h"
#include "shared/protocol.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_test.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using Stub = hoist::v1::OperatorService::Stub;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// One RPC made with a harmless request: an allowed call answers NOT_FOUND,
// INVALID_ARGUMENT or OK, never changes anything that matters here.
using Call = std::function<grpc::Status(Stub*)>;

template <typename Req, typename Resp>
Call Unary(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), std::function<void(Req*)> fill = {}) {
  return [method, fill](Stub* stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    Req req;
    if (fill) fill(&req);
    Resp resp;
    return (stub->*method)(&ctx, req, &resp);
  };
}

std::map<std::string, Call> OperatorCalls() {
  using namespace hoist::v1;
  std::map<std::string, Call> calls;
  calls["ApplyStack"] = Unary(&Stub::ApplyStack);  // empty manifest: INVALID_ARGUMENT when allowed
  calls["GetDeployment"] = Unary<GetDeploymentRequest, GetDeploymentResponse>(
      &Stub::GetDeployment, [](auto* r) { r->set_name("nope"); });
  calls["ListDeployments"] = Unary(&Stub::ListDeployments);
  calls["CreateRelease"] = Unary<CreateReleaseRequest, CreateReleaseResponse>(
      &Stub::CreateRelease, [](auto* r) { r->mutable_release()->set_deployment("nope"); });
  calls["GetRelease"] = Unary<GetReleaseRequest, GetReleaseResponse>(&Stub::GetRelease, [](auto* r) {
    r->set_deployment("nope");
    r->set_version("1.0.0");
  });
  calls["ListReleases"] =
      Unary<ListReleasesRequest, ListReleasesResponse>(&Stub::ListReleases, [](auto* r) { r->set_deployment("nope"); });
  calls["PlanRollout"] = Unary<PlanRolloutRequest, PlanRolloutResponse>(&Stub::PlanRollout, [](auto* r) {
    r->set_deployment("nope");
    r->set_target_version("1.0.0");
  });
  calls["StartRollout"] = Unary<StartRolloutRequest, StartRolloutResponse>(&Stub::StartRollout, [](auto* r) {
    r->set_deployment("nope");
    r->set_target_version("1.0.0");
  });
  calls["GetRollout"] =
      Unary<GetRolloutRequest, GetRolloutResponse>(&Stub::GetRollout, [](auto* r) { r->set_id("nope"); });
  calls["ListRollouts"] = Unary(&Stub::ListRollouts);
  calls["WatchRollout"] = [](Stub* stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    WatchRolloutRequest req;
    req.set_id("nope");
    auto reader = stub->WatchRollout(&ctx, req);
    WatchRolloutResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  };
  calls["CancelRollout"] =
      Unary<CancelRolloutRequest, CancelRolloutResponse>(&Stub::CancelRollout, [](auto* r) { r->set_id("nope"); });
  calls["Rollback"] =
      Unary<RollbackRequest, RollbackResponse>(&Stub::Rollback, [](auto* r) { r->set_deployment("nope"); });
  calls["Rollback --restore"] = Unary<RollbackRequest, RollbackResponse>(&Stub::Rollback, [](auto* r) {
    r->set_deployment("nope");
    r->set_restore_backup_id("b-1");
    r->set_confirm_name("nope");
  });
  calls["Cutover"] = Unary<CutoverRequest, CutoverResponse>(&Stub::Cutover, [](auto* r) { r->set_deployment("nope"); });
  calls["GetStatus"] =
      Unary<GetStatusRequest, GetStatusResponse>(&Stub::GetStatus, [](auto* r) { r->set_deployment("nope"); });
  calls["GetVersionMatrix"] = Unary<GetVersionMatrixRequest, GetVersionMatrixResponse>(
      &Stub::GetVersionMatrix, [](auto* r) { r->set_deployment("nope"); });
  calls["ListAgents"] = Unary(&Stub::ListAgents);
  calls["ListBackups"] =
      Unary<ListBackupsRequest, ListBackupsResponse>(&Stub::ListBackups, [](auto* r) { r->set_deployment("nope"); });
  calls["ListAuditEvents"] = Unary(&Stub::ListAuditEvents);
  calls["ListLocks"] = Unary(&Stub::ListLocks);
  return calls;
}

bool Refused(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
         s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
         // A handshake the server refuses (another CA, expired) never gets a call through.
         s.error_code() == grpc::StatusCode::UNAVAILABLE;
}

// README.md's table "Who may do what": call -> level, read from the file.
std::map<std::string, OperatorLevel> ReadmeTable() {
  std::map<std::string, OperatorLevel> table;
  std::istringstream readme(Slurp(std::string(HOIST_SOURCE_DIR) + "/README.md"));
  std::string line;
  bool in_section = false;
  // | `ApplyStack` | hoist apply | admin |
  const std::regex row(R"(^\| `([A-Za-z]+(?: --restore)?)` \|[^|]*\| (viewer|deployer|admin) \|)");
  while (std::getline(readme, line)) {
    if (line.rfind("## ", 0) == 0) in_section = line.find("Who may do what") != std::string::npos;
    std::smatch m;
    if (in_section && std::regex_search(line, m, row)) table[m[1]] = *ParseOperatorLevel(m[2].str());
  }
  return table;
}

// A certificate to present: PEM texts, built by hand so that expired and
// foreign ones can be presented at all (ChannelTlsCredentials refuses them).
struct Identity {
  std::string label;
  std::string cert_pem;
  std::string key_pem;
  // What the table says this identity may do.
  std::optional<CertKind> kind;
  OperatorLevel level = OperatorLevel::kNone;
  bool valid = true;  // false: expired, revoked or another CA's
};

class PermissionsTest : public PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto fleet = HoistFleet::Start(nullptr, cluster_.get(), {.connect_timeout = absl::Seconds(30), .tls = true});
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
    ca_pem_ = Slurp(fleet_->ca_dir() + "/ca.crt");
  }

  Identity Issue(const std::string& label, CertKind kind, const std::string& name, OperatorLevel level,
                 const CaIssueOptions& extra = {}, const std::string& dir = "") {
    CaIssueOptions o = extra;
    o.level = level;
    o.force = true;
    auto issued = CaIssue(dir.empty() ? fleet_->ca_dir() : dir, kind, name, o);
    EXPECT_TRUE(issued.ok()) << issued.status();
    return {label, Slurp(issued->files.cert_path), Slurp(issued->files.key_path), kind, level, true};
  }

  std::shared_ptr<grpc::Channel> Channel(const Identity& id) {
    if (id.cert_pem.empty()) return grpc::CreateChannel(fleet_->controller(), grpc::InsecureChannelCredentials());
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ca_pem_;
    o.pem_cert_chain = id.cert_pem;
    o.pem_private_key = id.key_pem;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
    return grpc::CreateCustomChannel(fleet_->controller(), grpc::SslCredentials(o), args);
  }

  // Opens a session as `agent_id`; OK when welcomed.
  grpc::Status OpenSession(const Identity& id, const std::string& agent_id) {
    auto stub = hoist::v1::AgentService::NewStub(Channel(id));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub->Session(&ctx);
    hoist::v1::SessionRequest hello;
    hello.mutable_hello()->set_agent_id(agent_id);
    hello.mutable_hello()->set_protocol_version(kProtocolVersion);
    hello.mutable_hello()->set_host_name(agent_id + ".test");
    stream->Write(hello);
    hoist::v1::SessionResponse first;
    const bool welcomed = stream->Read(&first) && first.has_welcome();
    if (welcomed) ctx.TryCancel();  // else the server has ended the call with its reason
    grpc::Status s = stream->Finish();
    return welcomed ? grpc::Status::OK : (s.ok() ? grpc::Status(grpc::StatusCode::UNKNOWN, "not welcomed") : s);
  }

  // A session as `agent_id` that the controller welcomed and that stays
  // open until `ctx` is cancelled.
  using SessionStream = grpc::ClientReaderWriter<hoist::v1::SessionRequest, hoist::v1::SessionResponse>;
  std::unique_ptr<SessionStream> OpenLiveSession(hoist::v1::AgentService::Stub* stub, grpc::ClientContext* ctx,
                                                 const std::string& agent_id) {
    auto stream = stub->Session(ctx);
    hoist::v1::SessionRequest hello;
    hello.mutable_hello()->set_agent_id(agent_id);
    hello.mutable_hello()->set_protocol_version(kProtocolVersion);
    hello.mutable_hello()->set_host_name(agent_id + ".test");
    hoist::v1::SessionResponse first;
    EXPECT_TRUE(stream->Write(hello) && stream->Read(&first) && first.has_welcome())
        << agent_id << " was not welcomed";
    return stream;
  }

  std::unique_ptr<HoistFleet> fleet_;
  std::string ca_pem_;
};

TEST_F(PermissionsTest, EveryCallWithEveryKindOfCertificateIsAllowedOrRefusedAsTheReadmeTableSays) {
  // The documented table is the code's table, and covers every method.
  const std::map<std::string, OperatorLevel> readme = ReadmeTable();
  ASSERT_FALSE(readme.empty()) << "README.md has no \"Who may do what\" table";
  std::map<std::string, OperatorLevel> code;
  for (const CallRule& rule : OperatorCallRules()) code[std::string(rule.call)] = rule.level;
  EXPECT_EQ(readme, code) << "README.md's permission table and hoistd's (controller/authorizer.cc) differ";
  const std::map<std::string, Call> calls = OperatorCalls();
  const auto* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("hoist.v1.OperatorService");
  ASSERT_NE(service, nullptr);
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    EXPECT_TRUE(code.count(name)) << "OperatorService." << name << " has no row in the permission table";
    EXPECT_TRUE(calls.count(name)) << "this test does not call OperatorService." << name;
  }

  // Every kind of certificate.
  auto other_ca = MakeOwnedTempDir("hoist-other-ca");
  ASSERT_TRUE(other_ca.ok());
  ASSERT_TRUE(CaInit(*other_ca).ok());
  std::vector<Identity> ids = {
      Issue("agent", CertKind::kAgent, "host-a", OperatorLevel::kNone),
      Issue("viewer", CertKind::kOperator, "vera", OperatorLevel::kViewer),
      Issue("deployer", CertKind::kOperator, "dave", OperatorLevel::kDeployer),
      Issue("admin", CertKind::kOperator, "ada", OperatorLevel::kAdmin),
      Issue("controller", CertKind::kController, "hoistd-9", OperatorLevel::kNone),
  };
  Identity foreign = Issue("another CA's admin", CertKind::kOperator, "eve", OperatorLevel::kAdmin, {}, *other_ca);
  foreign.valid = false;
  ids.push_back(foreign);
  Identity expired = Issue("expired admin", CertKind::kOperator, "old", OperatorLevel::kAdmin,
                           {.validity = absl::Hours(1), .not_before = absl::Now() - absl::Hours(3)});
  expired.valid = false;
  ids.push_back(expired);
  Identity revoked = Issue("revoked admin", CertKind::kOperator, "mallory", OperatorLevel::kAdmin);
  revoked.valid = false;
  ids.push_back(revoked);
  Identity none{"no certificate (plaintext)", "", "", std::nullopt, OperatorLevel::kNone, false};
  ids.push_back(none);
  ASSERT_TRUE(CaRevoke(fleet_->ca_dir(), "mallory").ok());
  // hoistd reads the list again within a second; its /metrics counts what it read.
  ASSERT_TRUE(EventuallyHolds(
      "hoistd to count mallory's revocation", absl::Seconds(10),
      [&] { return fleet_->MetricAt(0, "hoist_tls_revoked_certificates"); },
      [](const absl::StatusOr<std::string>& revoked) { return revoked.ok() && *revoked == "1"; }));

  for (const Identity& id : ids) {
    auto stub = hoist::v1::OperatorService::NewStub(Channel(id));
    for (const auto& [call, run] : calls) {
      const bool may = id.valid && id.kind == CertKind::kOperator && id.level >= code.at(call);
      grpc::Status s = run(stub.get());
      EXPECT_EQ(!Refused(s), may) << id.label << " calling " << call << ": " << s.error_code() << " "
                                  << s.error_message();
      if (!may && id.valid) {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << id.label << " calling " << call;
        EXPECT_THAT(s.error_message(), HasSubstr(call.substr(0, call.find(' ')))) << "the refusal names the call";
      }
    }
    const bool may_session = id.valid && id.kind == CertKind::kAgent;
    grpc::Status s = OpenSession(id, "host-a");
    EXPECT_EQ(s.ok(), may_session) << id.label << " opening an agent session: " << s.error_code() << " "
                                   << s.error_message();
  }
  RemoveTree(*other_ca);

  // Refusals are in the audit log, naming who and what.
  auto audit = fleet_->Hoist({"audit", "--output", "json", "--limit", "500"});
  ASSERT_TRUE(audit.ok()) << audit.status();
  EXPECT_THAT(audit->stdout_text, HasSubstr("\"refused\""));
  EXPECT_THAT(audit->stdout_text, HasSubstr("vera"));
  EXPECT_THAT(audit->stdout_text, HasSubstr("ApplyStack"));
}

TEST_F(PermissionsTest, TheCliSaysWhichLevelACallNeedsAndExitsWithSeventySeven) {
  auto viewer = fleet_->IssueOperator("vera", OperatorLevel::kViewer);
  ASSERT_TRUE(viewer.ok()) << viewer.status();
  auto agents = fleet_->HoistAs(*viewer, {"agents"});
  ASSERT_TRUE(agents.ok());
  EXPECT_EQ(agents->exit_code, 0) << agents->stderr_text;
  const std::string manifest = fleet_->WriteFile("stack.yaml", "deployment: shop\nservices: {}\n");
  auto apply = fleet_->HoistAs(*viewer, {"apply", manifest});
  ASSERT_TRUE(apply.ok());
  EXPECT_EQ(apply->exit_code, 77) << apply->stdout_text << apply->stderr_text;
  EXPECT_THAT(apply->stderr_text, HasSubstr("vera"));
  EXPECT_THAT(apply->stderr_text, HasSubstr("ApplyStack needs admin"));
}

TEST_F(PermissionsTest, ARevokedCertificateIsRefusedOnItsNextCallAndItsAgentSessionIsClosed) {
  // An operator: allowed, revoked, refused, without restarting hoistd.
  auto carol = fleet_->IssueOperator("carol", OperatorLevel::kAdmin);
  ASSERT_TRUE(carol.ok());
  auto before = fleet_->HoistAs(*carol, {"agents"});
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->exit_code, 0) << before->stderr_text;

  // An agent with an open session.
  Identity agent = Issue("agent", CertKind::kAgent, "host-r", OperatorLevel::kNone);
  auto stub = hoist::v1::AgentService::NewStub(Channel(agent));
  grpc::ClientContext ctx;
  auto stream = OpenLiveSession(stub.get(), &ctx, "host-r");
  ASSERT_FALSE(HasFailure());

  auto r1 = RunCommand({HOIST_CLI_PATH, "ca", "revoke", "carol", "--dir", fleet_->ca_dir()}, {});
  ASSERT_TRUE(r1.ok());
  ASSERT_EQ(r1->exit_code, 0) << r1->stderr_text;
  EXPECT_THAT(r1->stdout_text, HasSubstr("Revoked operator carol"));
  auto r2 = RunCommand({HOIST_CLI_PATH, "ca", "revoke", "host-r", "--dir", fleet_->ca_dir()}, {});
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ(r2->exit_code, 0) << r2->stderr_text;

  // The open session ends (the server cancels it) within a few seconds.
  const absl::Time started = absl::Now();
  hoist::v1::SessionResponse more;
  while (stream->Read(&more)) {
    ASSERT_LT(absl::Now() - started, absl::Seconds(10)) << "the revoked agent's session stays open";
  }
  EXPECT_LT(absl::Now() - started, absl::Seconds(5));
  stream->Finish();

  auto after = fleet_->HoistAs(*carol, {"agents"});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->exit_code, 77) << after->stdout_text << after->stderr_text;
  EXPECT_THAT(after->stderr_text, HasSubstr("revoked"));
  // And it cannot open a new session.
  EXPECT_FALSE(OpenSession(agent, "host-r").ok());
}

TEST_F(PermissionsTest, ASecondAgentWithTheSameCertificateIsRefusedWhileTheFirstIsAlive) {
  Identity agent = Issue("agent", CertKind::kAgent, "host-d", OperatorLevel::kNone);
  auto stub = hoist::v1::AgentService::NewStub(Channel(agent));
  grpc::ClientContext ctx;
  auto stream = OpenLiveSession(stub.get(), &ctx, "host-d");
  ASSERT_FALSE(HasFailure());
  grpc::Status second = OpenSession(agent, "host-d");
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ALREADY_EXISTS) << second.error_message();
  EXPECT_THAT(second.error_message(), HasSubstr("already has a live session"));
  ctx.TryCancel();
  stream->Finish();
}

TEST_F(PermissionsTest, OneCertificateCannotHoldMoreThanFourSessionCallsOpen) {
  Identity agent = Issue("agent", CertKind::kAgent, "host-f", OperatorLevel::kNone);
  auto stub = hoist::v1::AgentService::NewStub(Channel(agent));
  // Calls that never say hello: each holds a controller thread until the hello timeout.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<SessionStream>> streams;
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub->Session(contexts.back().get()));
    // Each reaches the controller before the next: nothing outside hoistd
    // tells that it has counted a call that sent no message yet, so a pause.
    absl::SleepFor(absl::Milliseconds(200));
  }
  grpc::ClientContext fifth_ctx;
  fifth_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto fifth = stub->Session(&fifth_ctx);
  hoist::v1::SessionResponse r;
  EXPECT_FALSE(fifth->Read(&r));
  grpc::Status s = fifth->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("host-f"));
  for (auto& c : contexts) c->TryCancel();
  for (auto& st : streams) st->Finish();
}

}  // namespace
}  // namespace hoist::testing

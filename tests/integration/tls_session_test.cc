// mTLS end to end on loopback: a real gRPC server with ServerTlsCredentials
// and clients presenting good, missing, foreign and expired certificates.

#include <grpcpp/create_channel.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hoist/v1/operator.grpc.pb.h"
#include "shared/ca.h"
#include "shared/tls.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

// Answers GetStatus with the caller's certificate CN as the deployment name,
// so the client sees what the server saw.
class WhoAmIService final : public v1::OperatorService::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest*,
                         v1::GetStatusResponse* response) override {
    absl::StatusOr<CertInfo> cert = PeerCertificate(*context);
    if (!cert.ok()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(cert.status().message()));
    response->mutable_deployment()->set_name(cert->common_name);
    return grpc::Status::OK;
  }
};

class TlsSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto root = testing::MakeOwnedTempDir("hoist-tls-test");
    ASSERT_TRUE(root.ok()) << root.status();
    root_ = *root;
    ca_dir_ = root_ + "/fleet";
    ASSERT_TRUE(CaInit(ca_dir_).ok());
    ASSERT_TRUE(CaIssue(ca_dir_, CertKind::kController, "ctl-1").ok());
    ASSERT_TRUE(CaIssue(ca_dir_, CertKind::kAgent, "host-17").ok());

    auto creds = ServerTlsCredentials(Path("ca.crt"), Path("controller-ctl-1.crt"), Path("controller-ctl-1.key"));
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    testing::RemoveTree(root_);
  }

  std::string Path(const std::string& file) const { return ca_dir_ + "/" + file; }

  // Calls GetStatus over a fresh channel to 127.0.0.1 with `creds`; with
  // `server_name`, the client checks the server certificate against that
  // name instead of 127.0.0.1.
  grpc::Status Call(const std::shared_ptr<grpc::ChannelCredentials>& creds, std::string* seen_cn = nullptr,
                    const std::string& server_name = "") {
    grpc::ChannelArguments args;
    if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_), creds, args);
    auto stub = v1::OperatorService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetStatusRequest req;
    v1::GetStatusResponse resp;
    grpc::Status s = stub->GetStatus(&ctx, req, &resp);
    if (seen_cn != nullptr) *seen_cn = resp.deployment().name();
    return s;
  }

  // Client credentials built from raw files, bypassing ChannelTlsCredentials'
  // own checks, to present the server with what a misconfigured or hostile
  // client would.
  std::shared_ptr<grpc::ChannelCredentials> RawClientCreds(const std::string& cert, const std::string& key) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = testing::ReadWholeFile(Path("ca.crt"));
    if (!cert.empty()) {
      options.pem_cert_chain = testing::ReadWholeFile(cert);
      options.pem_private_key = testing::ReadWholeFile(key);
    }
    return grpc::SslCredentials(options);
  }

  std::string root_, ca_dir_;
  int port_ = 0;
  WhoAmIService service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(TlsSessionTest, AgentWithAValidCertificateIsServedAndIdentified) {
  auto creds = ChannelTlsCredentials(Path("ca.crt"), Path("agent-host-17.crt"), Path("agent-host-17.key"));
  ASSERT_TRUE(creds.ok()) << creds.status();
  std::string cn;
  grpc::Status s = Call(*creds, &cn);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_EQ(cn, "host-17") << "the server must see the agent id from the certificate";
}

TEST_F(TlsSessionTest, ControllerCertificateWorksAsAClientToo) {
  auto creds = ChannelTlsCredentials(Path("ca.crt"), Path("controller-ctl-1.crt"), Path("controller-ctl-1.key"));
  ASSERT_TRUE(creds.ok()) << creds.status();
  std::string cn;
  grpc::Status s = Call(*creds, &cn);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_EQ(cn, "ctl-1");
}

TEST_F(TlsSessionTest, ClientWithoutACertificateIsRefused) {
  grpc::Status s = Call(RawClientCreds("", ""));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << "the handshake must fail; got " << s.error_message();
}

TEST_F(TlsSessionTest, PlaintextClientIsRefused) {
  grpc::Status s = Call(grpc::InsecureChannelCredentials());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(TlsSessionTest, CertificateFromAnotherCaIsRefused) {
  std::string other = root_ + "/other";
  ASSERT_TRUE(CaInit(other).ok());
  ASSERT_TRUE(CaIssue(other, CertKind::kAgent, "host-17").ok());
  grpc::Status s = Call(RawClientCreds(other + "/agent-host-17.crt", other + "/agent-host-17.key"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(TlsSessionTest, ExpiredCertificateIsRefused) {
  ASSERT_TRUE(CaIssue(ca_dir_, CertKind::kAgent, "old",
                      {.validity = absl::Hours(24), .not_before = absl::Now() - absl::Hours(48)})
                  .ok());
  // Our loader refuses it up front, with a reason...
  auto creds = ChannelTlsCredentials(Path("ca.crt"), Path("agent-old.crt"), Path("agent-old.key"));
  ASSERT_FALSE(creds.ok());
  EXPECT_THAT(std::string(creds.status().message()), HasSubstr("expired"));
  // ...and the server refuses it on the wire.
  grpc::Status s = Call(RawClientCreds(Path("agent-old.crt"), Path("agent-old.key")));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(TlsSessionTest, ClientRefusesAServerFromAnotherCa) {
  std::string other = root_ + "/other";
  ASSERT_TRUE(CaInit(other).ok());
  ASSERT_TRUE(CaIssue(other, CertKind::kAgent, "host-17").ok());
  // The agent trusts only the other CA, so the fleet's controller is a stranger.
  auto creds = ChannelTlsCredentials(other + "/ca.crt", other + "/agent-host-17.crt", other + "/agent-host-17.key");
  ASSERT_TRUE(creds.ok()) << creds.status();
  grpc::Status s = Call(*creds);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(TlsSessionTest, ClientChecksTheServerNameAgainstItsSans) {
  auto creds = ChannelTlsCredentials(Path("ca.crt"), Path("agent-host-17.crt"), Path("agent-host-17.key"));
  ASSERT_TRUE(creds.ok()) << creds.status();
  grpc::Status named = Call(*creds, nullptr, "ctl-1");
  EXPECT_TRUE(named.ok()) << "ctl-1 is in the controller's SANs: " << named.error_message();
  grpc::Status other = Call(*creds, nullptr, "ctl-2.example.net");
  EXPECT_EQ(other.error_code(), grpc::StatusCode::UNAVAILABLE) << "ctl-2.example.net is not in the SANs";
}

TEST_F(TlsSessionTest, ServerCredentialsNeedAControllerCertificate) {
  auto creds = ServerTlsCredentials(Path("ca.crt"), Path("agent-host-17.crt"), Path("agent-host-17.key"));
  ASSERT_FALSE(creds.ok());
  EXPECT_THAT(std::string(creds.status().message()), HasSubstr("serverAuth"));
  auto missing = ServerTlsCredentials(Path("ca.crt"), Path("controller-nope.crt"), Path("controller-nope.key"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("controller-nope.crt"));
}

}  // namespace
}  // namespace hoist

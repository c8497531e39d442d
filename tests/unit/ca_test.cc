#include "shared/ca.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/revocation.h"
#include "shared/subprocess.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr ReadX509(const std::string& path) {
  std::string pem = testing::ReadWholeFile(path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr x(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return x;
}

// Verifies `cert_path` against `ca_path` with OpenSSL directly (not through
// the code under test); returns OpenSSL's error string, or "ok".
std::string OpenSslVerify(const std::string& ca_path, const std::string& cert_path) {
  X509Ptr ca = ReadX509(ca_path);
  X509Ptr cert = ReadX509(cert_path);
  if (!ca || !cert) return "unreadable PEM";
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert.get(), nullptr);
  std::string result = X509_verify_cert(ctx) == 1 ? "ok" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return result;
}

class CaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::MakeOwnedTempDir("hoist-ca-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    root_ = *dir;
    dir_ = root_ + "/ca";
  }
  void TearDown() override { testing::RemoveTree(root_); }

  void InitCa() {
    auto files = CaInit(dir_);
    ASSERT_TRUE(files.ok()) << files.status();
  }

  std::string root_, dir_;
};

TEST_F(CaTest, InitWritesAConstrainedSelfSignedCa) {
  auto files = CaInit(dir_);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->key_path, dir_ + "/ca.key");
  EXPECT_EQ(files->cert_path, dir_ + "/ca.crt");
  EXPECT_EQ(ModeOf(files->key_path), 0600u) << "the CA key must be readable by its owner only";
  EXPECT_EQ(ModeOf(dir_), 0700u);

  auto info = InspectCertificate(testing::ReadWholeFile(files->cert_path));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "Hoist fleet CA");
  EXPECT_EQ(info->issuer_common_name, "Hoist fleet CA");
  EXPECT_TRUE(info->is_ca);
  EXPECT_GT(info->not_after - absl::Now(), absl::Hours(24 * 3650 - 1)) << "about ten years";

  X509Ptr ca = ReadX509(files->cert_path);
  ASSERT_TRUE(ca);
  int bc = X509_get_ext_by_NID(ca.get(), NID_basic_constraints, -1);
  ASSERT_GE(bc, 0);
  EXPECT_EQ(X509_EXTENSION_get_critical(X509_get_ext(ca.get(), bc)), 1) << "basicConstraints must be critical";
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_EQ(OpenSslVerify(files->cert_path, files->cert_path), "ok") << "the CA must verify itself";
}

TEST_F(CaTest, InitRefusesToReplaceAnExistingCaUnlessForced) {
  InitCa();
  std::string before = testing::ReadWholeFile(dir_ + "/ca.crt");
  auto again = CaInit(dir_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("--force"));
  EXPECT_EQ(testing::ReadWholeFile(dir_ + "/ca.crt"), before) << "a refused init must leave the CA untouched";

  auto forced = CaInit(dir_, {.force = true});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_NE(testing::ReadWholeFile(dir_ + "/ca.crt"), before);
  EXPECT_EQ(ModeOf(dir_ + "/ca.key"), 0600u);
}

TEST_F(CaTest, InitRefusesWhenOnlyTheCertificateIsLeft) {
  InitCa();
  ASSERT_EQ(unlink((dir_ + "/ca.key").c_str()), 0);
  auto again = CaInit(dir_);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(CaTest, ControllerCertificateVerifiesWithServerAndClientAuthAndDefaultSans) {
  InitCa();
  auto issued = CaIssue(dir_, CertKind::kController, "ctl-1", {.sans = {"ctl-1.example.net", "10.0.0.5", "IP:::1"}});
  ASSERT_TRUE(issued.ok()) << issued.status();
  EXPECT_EQ(issued->files.key_path, dir_ + "/controller-ctl-1.key");
  EXPECT_EQ(issued->files.cert_path, dir_ + "/controller-ctl-1.crt");
  EXPECT_EQ(ModeOf(issued->files.key_path), 0600u);
  EXPECT_EQ(OpenSslVerify(dir_ + "/ca.crt", issued->files.cert_path), "ok");

  auto info = InspectCertificate(testing::ReadWholeFile(issued->files.cert_path));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "ctl-1");
  EXPECT_EQ(info->issuer_common_name, "Hoist fleet CA");
  EXPECT_FALSE(info->is_ca);
  EXPECT_TRUE(info->server_auth);
  EXPECT_TRUE(info->client_auth) << "controllers call each other, so they are clients too";
  EXPECT_THAT(info->dns_names, UnorderedElementsAre("localhost", "ctl-1", "ctl-1.example.net"));
  EXPECT_THAT(info->ip_addresses, UnorderedElementsAre("127.0.0.1", "10.0.0.5", "::1"));
}

TEST_F(CaTest, AgentAndOperatorCertificatesAreClientOnly) {
  InitCa();
  for (CertKind kind : {CertKind::kAgent, CertKind::kOperator}) {
    auto issued = CaIssue(
        dir_, kind, "host-17",
        {.force = true, .level = kind == CertKind::kOperator ? OperatorLevel::kViewer : OperatorLevel::kNone});
    ASSERT_TRUE(issued.ok()) << issued.status();
    EXPECT_EQ(issued->files.cert_path, absl::StrCat(dir_, "/", CertKindName(kind), "-host-17.crt"));
    EXPECT_EQ(ModeOf(issued->files.key_path), 0600u);
    EXPECT_EQ(OpenSslVerify(dir_ + "/ca.crt", issued->files.cert_path), "ok");
    auto info = InspectCertificate(testing::ReadWholeFile(issued->files.cert_path));
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->common_name, "host-17");
    EXPECT_TRUE(info->client_auth);
    EXPECT_FALSE(info->server_auth) << CertKindName(kind) << " certificates must not serve";
    EXPECT_THAT(info->dns_names, ElementsAre("host-17"));
    EXPECT_TRUE(info->ip_addresses.empty());
  }
}

TEST_F(CaTest, ValidityFollowsTheOptions) {
  InitCa();
  absl::Time start = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) - 3600);
  auto issued = CaIssue(dir_, CertKind::kAgent, "a1", {.validity = absl::Hours(48), .not_before = start});
  ASSERT_TRUE(issued.ok()) << issued.status();
  auto info = InspectCertificate(testing::ReadWholeFile(issued->files.cert_path));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->not_before, start);
  EXPECT_EQ(info->not_after, start + absl::Hours(48));
  EXPECT_EQ(issued->not_after, start + absl::Hours(48));
}

TEST_F(CaTest, BadNamesAreRefusedWithTheReason) {
  InitCa();
  struct Case {
    std::string name, reason;
  };
  for (const Case& c : std::vector<Case>{{"", "empty"},
                                         {"host_17", "'_'"},
                                         {"a/b", "'/'"},
                                         {"../x", "'/'"},
                                         {"-a", "start and end"},
                                         {"a.", "start and end"},
                                         {"a..b", "empty part"},
                                         {"bad name", "' '"},
                                         {std::string(65, 'a'), "64"}}) {
    auto issued = CaIssue(dir_, CertKind::kAgent, c.name);
    ASSERT_FALSE(issued.ok()) << "\"" << c.name << "\" was accepted";
    EXPECT_EQ(issued.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(issued.status().message()), HasSubstr(c.reason)) << c.name;
  }
  for (const char* good : {"host-17", "ctl-1.example.net", "A1", "x"}) {
    EXPECT_TRUE(ValidateCertName(good).ok()) << good;
  }
}

TEST_F(CaTest, BadSansAreRefused) {
  InitCa();
  for (const char* san : {"bad host", "IP:not-an-ip", "a..b", "x,y"}) {
    auto issued = CaIssue(dir_, CertKind::kController, "ctl-1", {.sans = {san}});
    ASSERT_FALSE(issued.ok()) << san;
    EXPECT_EQ(issued.status().code(), absl::StatusCode::kInvalidArgument) << san;
    EXPECT_THAT(std::string(issued.status().message()), HasSubstr("subjectAltName")) << san;
  }
}

TEST_F(CaTest, IssueWithoutACaSaysHowToCreateOne) {
  auto issued = CaIssue(dir_, CertKind::kAgent, "host-17");
  ASSERT_FALSE(issued.ok());
  EXPECT_EQ(issued.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(issued.status().message()), HasSubstr("hoist ca init"));
}

TEST_F(CaTest, IssueRefusesToReplaceACertificateUnlessForced) {
  InitCa();
  ASSERT_TRUE(CaIssue(dir_, CertKind::kAgent, "host-17").ok());
  std::string before = testing::ReadWholeFile(dir_ + "/agent-host-17.crt");
  auto again = CaIssue(dir_, CertKind::kAgent, "host-17");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("--force"));
  EXPECT_EQ(testing::ReadWholeFile(dir_ + "/agent-host-17.crt"), before);
  ASSERT_TRUE(CaIssue(dir_, CertKind::kAgent, "host-17", {.force = true}).ok());
  EXPECT_NE(testing::ReadWholeFile(dir_ + "/agent-host-17.crt"), before);
}

TEST_F(CaTest, CertificateFromAnotherCaDoesNotVerify) {
  InitCa();
  std::string other = root_ + "/other";
  ASSERT_TRUE(CaInit(other).ok());
  ASSERT_TRUE(CaIssue(other, CertKind::kAgent, "host-17").ok());
  EXPECT_NE(OpenSslVerify(dir_ + "/ca.crt", other + "/agent-host-17.crt"), "ok");
  absl::Status s = VerifyCertificate(testing::ReadWholeFile(dir_ + "/ca.crt"), testing::ReadWholeFile(other + "/agent-host-17.crt"), absl::Now());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
}

TEST_F(CaTest, ParseCertKindNamesTheChoices) {
  EXPECT_EQ(*ParseCertKind("agent"), CertKind::kAgent);
  EXPECT_EQ(*ParseCertKind("controller"), CertKind::kController);
  EXPECT_EQ(*ParseCertKind("operator"), CertKind::kOperator);
  auto bad = ParseCertKind("server");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("controller, agent, operator"));
}

// LoadTlsMaterial: what gRPC credentials are built from.
class LoadTlsMaterialTest : public CaTest {
 protected:
  void SetUp() override {
    CaTest::SetUp();
    InitCa();
    ca_ = dir_ + "/ca.crt";
    ASSERT_TRUE(CaIssue(dir_, CertKind::kController, "ctl-1").ok());
    ASSERT_TRUE(CaIssue(dir_, CertKind::kAgent, "host-17").ok());
  }
  std::string ca_;
};

TEST_F(LoadTlsMaterialTest, LoadsAMatchingSet) {
  auto m = LoadTlsMaterial(ca_, dir_ + "/controller-ctl-1.crt", dir_ + "/controller-ctl-1.key", TlsRole::kServer);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->cert.common_name, "ctl-1");
  EXPECT_EQ(m->ca_pem, testing::ReadWholeFile(ca_));
  EXPECT_EQ(m->key_pem, testing::ReadWholeFile(dir_ + "/controller-ctl-1.key"));
  auto client = LoadTlsMaterial(ca_, dir_ + "/agent-host-17.crt", dir_ + "/agent-host-17.key", TlsRole::kClient);
  EXPECT_TRUE(client.ok()) << client.status();
}

TEST_F(LoadTlsMaterialTest, MissingFileIsNamed) {
  auto m = LoadTlsMaterial(ca_, dir_ + "/agent-nope.crt", dir_ + "/agent-nope.key", TlsRole::kClient);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(dir_ + "/agent-nope.crt"));
}

TEST_F(LoadTlsMaterialTest, NonPemFileIsNamed) {
  std::ofstream(root_ + "/junk.crt") << "not a certificate\n";
  auto m = LoadTlsMaterial(ca_, root_ + "/junk.crt", dir_ + "/agent-host-17.key", TlsRole::kClient);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(root_ + "/junk.crt"));
}

TEST_F(LoadTlsMaterialTest, KeyOfAnotherCertificateIsRefused) {
  auto m = LoadTlsMaterial(ca_, dir_ + "/agent-host-17.crt", dir_ + "/controller-ctl-1.key", TlsRole::kClient);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("does not belong to the certificate"));
}

TEST_F(LoadTlsMaterialTest, ExpiredCertificateIsRefused) {
  ASSERT_TRUE(CaIssue(dir_, CertKind::kAgent, "old",
                      {.validity = absl::Hours(24), .not_before = absl::Now() - absl::Hours(48)})
                  .ok());
  auto m = LoadTlsMaterial(ca_, dir_ + "/agent-old.crt", dir_ + "/agent-old.key", TlsRole::kClient);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("expired"));
}

TEST_F(LoadTlsMaterialTest, CertificateFromAnotherCaIsRefused) {
  std::string other = root_ + "/other";
  ASSERT_TRUE(CaInit(other).ok());
  ASSERT_TRUE(CaIssue(other, CertKind::kAgent, "host-17").ok());
  auto m = LoadTlsMaterial(ca_, other + "/agent-host-17.crt", other + "/agent-host-17.key", TlsRole::kClient);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("does not verify against the CA"));
}

TEST_F(LoadTlsMaterialTest, AgentCertificateCannotServe) {
  auto m = LoadTlsMaterial(ca_, dir_ + "/agent-host-17.crt", dir_ + "/agent-host-17.key", TlsRole::kServer);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("serverAuth"));
}

}  // namespace
}  // namespace hoist

namespace hoist {
namespace {

using ::testing::HasSubstr;

class CaRolesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::MakeOwnedTempDir("hoist-ca-roles");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    ASSERT_TRUE(CaInit(dir_).ok());
  }
  void TearDown() override { testing::RemoveTree(dir_); }
  CertInfo Info(const std::string& path) {
    auto info = InspectCertificate(testing::ReadWholeFile(path));
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? *info : CertInfo{};
  }
  std::string dir_;
};

TEST_F(CaRolesTest, TheRoleAndAnOperatorsLevelAreInTheSignedSubject) {
  auto agent = CaIssue(dir_, CertKind::kAgent, "host-1");
  auto ctl = CaIssue(dir_, CertKind::kController, "ctl-1");
  auto op = CaIssue(dir_, CertKind::kOperator, "alice", {.level = OperatorLevel::kDeployer});
  ASSERT_TRUE(agent.ok() && ctl.ok() && op.ok());
  EXPECT_EQ(Info(agent->files.cert_path).kind, CertKind::kAgent);
  EXPECT_EQ(Info(agent->files.cert_path).level, OperatorLevel::kNone);
  EXPECT_EQ(Info(ctl->files.cert_path).kind, CertKind::kController);
  CertInfo alice = Info(op->files.cert_path);
  EXPECT_EQ(alice.kind, CertKind::kOperator);
  EXPECT_EQ(alice.level, OperatorLevel::kDeployer);
  EXPECT_FALSE(alice.serial.empty());
  EXPECT_NE(alice.serial, Info(agent->files.cert_path).serial);
  // openssl sees the same subject.
  auto subject = RunCommand({"openssl", "x509", "-noout", "-subject", "-in", op->files.cert_path}, {});
  ASSERT_TRUE(subject.ok());
  EXPECT_THAT(subject->stdout_text, HasSubstr("OU = role:operator, OU = level:deployer, CN = alice"));
}

TEST_F(CaRolesTest, AnOperatorNeedsALevelAndOnlyOperatorsTakeOne) {
  auto none = CaIssue(dir_, CertKind::kOperator, "bob");
  EXPECT_TRUE(absl::IsInvalidArgument(none.status()));
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("--level viewer"));
  auto agent = CaIssue(dir_, CertKind::kAgent, "host-2", {.level = OperatorLevel::kAdmin});
  EXPECT_TRUE(absl::IsInvalidArgument(agent.status()));
  EXPECT_FALSE(ParseOperatorLevel("root").ok());
  EXPECT_EQ(*ParseOperatorLevel("admin"), OperatorLevel::kAdmin);
}

TEST_F(CaRolesTest, RevokingWritesACrlSignedByTheCaThatListsTheSerial) {
  auto a = CaIssue(dir_, CertKind::kAgent, "host-1");
  auto b = CaIssue(dir_, CertKind::kOperator, "alice", {.level = OperatorLevel::kAdmin});
  ASSERT_TRUE(a.ok() && b.ok());
  auto first = CaRevoke(dir_, "host-1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->subject, "agent host-1");
  EXPECT_EQ(first->total_revoked, 1u);
  auto second = CaRevoke(dir_, "alice");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->total_revoked, 2u);
  auto again = CaRevoke(dir_, "alice");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already);
  EXPECT_EQ(again->total_revoked, 2u);

  const std::string ca = testing::ReadWholeFile(dir_ + "/ca.crt");
  auto list = ParseRevocationList(ca, testing::ReadWholeFile(dir_ + "/crl.pem"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->Contains(Info(a->files.cert_path).serial));
  EXPECT_TRUE(list->Contains(Info(b->files.cert_path).serial));
  // openssl verifies it, and reports the certificate revoked.
  auto verify = RunCommand({"openssl", "verify", "-crl_check", "-CAfile", dir_ + "/ca.crt", "-CRLfile",
                            dir_ + "/crl.pem", a->files.cert_path}, {});
  ASSERT_TRUE(verify.ok());
  EXPECT_THAT(verify->stdout_text + verify->stderr_text, HasSubstr("certificate revoked"));

  // Another CA's list is refused.
  auto other = testing::MakeOwnedTempDir("hoist-ca-other");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(CaInit(*other).ok());
  auto other_ca = testing::ReadWholeFile(*other + "/ca.crt");
  EXPECT_TRUE(absl::IsUnauthenticated(ParseRevocationList(other_ca, testing::ReadWholeFile(dir_ + "/crl.pem")).status()));
  testing::RemoveTree(*other);
  EXPECT_TRUE(absl::IsNotFound(CaRevoke(dir_, "nobody").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(CaRevoke(dir_, "", {.serial = "xyz"}).status()));
}

TEST_F(CaRolesTest, TheWatcherSeesANewListWithoutARestartAndKeepsTheOldOneWhenTheFileIsBad) {
  auto a = CaIssue(dir_, CertKind::kAgent, "host-1");
  ASSERT_TRUE(a.ok());
  const std::string serial = Info(a->files.cert_path).serial;
  RevocationWatcher watcher(dir_ + "/ca.crt", DefaultCrlPath(dir_ + "/ca.crt"));
  EXPECT_EQ(watcher.crl_path(), dir_ + "/crl.pem");
  bool changed = true;
  ASSERT_TRUE(watcher.Refresh(&changed).ok());
  EXPECT_FALSE(changed) << "no file yet: nothing revoked, nothing changed";
  EXPECT_FALSE(watcher.IsRevoked(serial));
  ASSERT_TRUE(CaRevoke(dir_, "host-1").ok());
  ASSERT_TRUE(watcher.Refresh(&changed).ok());
  EXPECT_TRUE(changed);
  EXPECT_TRUE(watcher.IsRevoked(serial));
  ASSERT_TRUE(watcher.Refresh(&changed).ok());
  EXPECT_FALSE(changed) << "the same file is not read again";
  std::ofstream(dir_ + "/crl.pem") << "not a list";
  EXPECT_FALSE(watcher.Refresh(&changed).ok());
  EXPECT_TRUE(watcher.IsRevoked(serial)) << "a bad file must not lift a revocation";
}

}  // namespace
}  // namespace hoist

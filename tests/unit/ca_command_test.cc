#include "controller/cli/ca_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

class CaCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::MakeOwnedTempDir("hoist-ca-cli-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    root_ = *dir;
    dir_ = root_ + "/ca";
  }
  void TearDown() override { testing::RemoveTree(root_); }

  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return RunCaCommand(args, out_, err_);
  }

  bool Exists(const std::string& file) { return access((dir_ + "/" + file).c_str(), F_OK) == 0; }

  std::string root_, dir_;
  std::ostringstream out_, err_;
};

TEST_F(CaCommandTest, InitThenIssuePrintsWhatWasWritten) {
  ASSERT_EQ(Run({"init", "--dir", dir_}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr(dir_ + "/ca.key"));
  EXPECT_THAT(out_.str(), HasSubstr(dir_ + "/ca.crt"));
  EXPECT_TRUE(Exists("ca.key"));

  ASSERT_EQ(Run({"issue", "controller", "ctl-1", "--dir", dir_, "--san", "ctl-1.example.net", "--san",
                 "10.0.0.5,10.0.0.6"}),
            0)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr(dir_ + "/controller-ctl-1.crt"));
  EXPECT_THAT(out_.str(), HasSubstr("DNS:ctl-1.example.net"));
  EXPECT_THAT(out_.str(), HasSubstr("IP:10.0.0.6"));

  ASSERT_EQ(Run({"issue", "agent", "host-17", "--dir", dir_, "--days", "30"}), 0) << err_.str();
  EXPECT_TRUE(Exists("agent-host-17.key"));
  EXPECT_TRUE(Exists("agent-host-17.crt"));
}

TEST_F(CaCommandTest, SecondInitFailsAndSaysHowToForce) {
  ASSERT_EQ(Run({"init", "--dir", dir_}), 0) << err_.str();
  EXPECT_EQ(Run({"init", "--dir", dir_}), 1);
  EXPECT_THAT(err_.str(), HasSubstr("--force"));
}

TEST_F(CaCommandTest, DirComesFromTheEnvironment) {
  setenv("HOIST_CA_DIR", dir_.c_str(), 1);
  int code = Run({"init"});
  unsetenv("HOIST_CA_DIR");
  ASSERT_EQ(code, 0) << err_.str();
  EXPECT_TRUE(Exists("ca.crt"));
}

TEST_F(CaCommandTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Run({}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("init"));
  EXPECT_EQ(Run({"renew"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("unknown sub-command \"renew\""));
  ASSERT_EQ(Run({"init", "--dir", dir_}), 0) << err_.str();
  EXPECT_EQ(Run({"issue", "agent", "--dir", dir_}), 2) << "NAME is missing";
  EXPECT_EQ(Run({"issue", "server", "x", "--dir", dir_}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("controller, agent, operator"));
  EXPECT_EQ(Run({"issue", "agent", "host_17", "--dir", dir_}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("'_'"));
  EXPECT_EQ(Run({"issue", "agent", "a", "--dir", dir_, "--days", "-3"}), 2);
  EXPECT_EQ(Run({"issue", "agent", "a", "--dir", dir_, "--bogus"}), 2);
}

TEST_F(CaCommandTest, IssueWithoutCaFails) {
  EXPECT_EQ(Run({"issue", "agent", "host-17", "--dir", dir_}), 1);
  EXPECT_THAT(err_.str(), HasSubstr("hoist ca init"));
}

TEST_F(CaCommandTest, HelpExitsZeroWithExamples) {
  EXPECT_EQ(Run({"--help"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("issue KIND NAME"));
  EXPECT_EQ(Run({"issue", "--help"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("Examples:"));
  EXPECT_THAT(out_.str(), HasSubstr("--san"));
  EXPECT_EQ(Run({"init", "--help"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("HOIST_CA_DIR"));
}

TEST_F(CaCommandTest, OperatorsAreIssuedAtALevelAndRevokedByName) {
  ASSERT_EQ(Run({"init", "--dir", dir_}), 0) << err_.str();
  EXPECT_EQ(Run({"issue", "operator", "alice", "--dir", dir_}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("--level"));
  EXPECT_EQ(Run({"issue", "operator", "alice", "--dir", dir_, "--level", "root"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("viewer, deployer or admin"));
  ASSERT_EQ(Run({"issue", "operator", "alice", "--dir", dir_, "--level", "deployer", "--valid-for", "12h"}), 0)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("at level deployer"));
  EXPECT_EQ(Run({"issue", "agent", "h1", "--dir", dir_, "--valid-for", "soon"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("--valid-for"));

  ASSERT_EQ(Run({"revoke", "alice", "--dir", dir_}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("Revoked operator alice"));
  EXPECT_TRUE(Exists("crl.pem"));
  EXPECT_EQ(Run({"revoke", "nobody", "--dir", dir_}), 1);
  EXPECT_THAT(err_.str(), HasSubstr("no certificate named"));
  EXPECT_EQ(Run({"revoke", "--dir", dir_}), 2);
}

}  // namespace
}  // namespace hoist

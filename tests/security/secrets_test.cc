// Env values never sit in clear: a stack whose env holds a known secret is
// applied and upgraded on a real hoistd with mTLS and a secrets key, a real
// agent and Docker; the value reaches the container, and is found nowhere in
// the Postgres dump, the logs of hoistd and the agent, the audit log, or any
// `--output json` answer of the CLI. Then the store's data migration: a
// manifest and a step written in clear by a hoistd without the key are
// sealed when a hoistd with the key starts.

#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hoist/v1/operator.grpc.pb.h"
#include <grpcpp/grpcpp.h>
#include "absl/strings/strip.h"
#include "shared/subprocess.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The value looked for: long and random enough that no other text holds it.
constexpr char kSecret[] = "s3cr3t-Zq8vN41xTe0pLw7";

constexpr char kStack[] = R"(deployment: DEPLOYMENT
network: DEPLOYMENT
hosts:
  - id: host-1
    labels: {tier: app}
services:
  web:
    role: web
    repository: REGISTRY/hoist-test/web
    env:
      DATABASE_PASSWORD: SECRET
      LOG_LEVEL: info
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 100ms
      deadline: 20s
    stop_timeout: 2s
)";

constexpr char kRelease[] = R"(deployment: DEPLOYMENT
version: VERSION
images:
  web: REGISTRY/hoist-test/web:VERSION
)";

class SecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto env = DockerEnv::Start();
    HOIST_REQUIRE_REAL_PART(env.status());
    env_ = std::move(*env);
    auto pg = PostgresCluster::Start();
    HOIST_REQUIRE_REAL_PART(pg.status());
    pg_ = std::move(*pg);
    deployment_ = absl::StrCat("sec-", getpid());
    for (const char* v : {"1.0.0", "1.1.0"}) {
      auto image = env_->BuildTestImage("web", v);
      ASSERT_TRUE(image.ok()) << image.status();
    }
    auto fleet = HoistFleet::Start(env_.get(), pg_.get(),
                                   {.deployment = deployment_, .agents = {{"host-1", "tier=app"}}, .tls = true});
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
  }
  void TearDown() override {
    if (fleet_ != nullptr) fleet_->set_dump_logs_at_exit(HasFailure());
    fleet_.reset();
  }

  std::string Dump() {
    auto dump = RunCommand({"pg_dump", "--data-only", "--dbname", pg_->ConnectionString("hoist")},
                           {.timeout = absl::Minutes(1)});
    EXPECT_TRUE(dump.ok() && dump->exit_code == 0) << (dump.ok() ? dump->stderr_text : dump.status().ToString());
    return dump.ok() ? dump->stdout_text : "";
  }

  std::unique_ptr<DockerEnv> env_;
  std::unique_ptr<PostgresCluster> pg_;
  std::unique_ptr<HoistFleet> fleet_;
  std::string deployment_;
};

TEST_F(SecretsTest, AnEnvValueReachesItsContainerAndNowhereElse) {
  const std::map<std::string, std::string> values = {
      {"DEPLOYMENT", deployment_}, {"REGISTRY", env_->registry()}, {"SECRET", kSecret}};
  fleet_->MustHoist({"apply", fleet_->WriteFile("stack.yaml", FillTemplate(kStack, values))});
  for (const char* v : {"1.0.0", "1.1.0"}) {
    auto with_version = values;
    with_version["VERSION"] = v;
    fleet_->MustHoist(
        {"release", "create", fleet_->WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kRelease, with_version))});
  }
  fleet_->MustHoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(3));
  const std::string plan = fleet_->MustHoist({"plan", "1.1.0", "--output", "json"});
  EXPECT_THAT(plan, HasSubstr("start_instance"));
  EXPECT_THAT(plan, Not(HasSubstr(kSecret))) << "hoist plan --output json";
  fleet_->MustHoist({"upgrade", "1.1.0", "--yes"}, absl::Minutes(3));

  // It did reach the container: the checks below could see it if it leaked.
  auto running = env_->Docker({"ps", "-q", "--filter", absl::StrCat("label=hoist.deployment=", deployment_)});
  ASSERT_TRUE(running.ok());
  auto inspect = env_->Docker({"inspect", "-f", "{{json .Config.Env}}", std::string(absl::StripAsciiWhitespace(*running))});
  ASSERT_TRUE(inspect.ok()) << inspect.status();
  EXPECT_THAT(*inspect, HasSubstr(absl::StrCat("DATABASE_PASSWORD=", kSecret)));

  // Postgres: every table, as a dump.
  const std::string dump = Dump();
  ASSERT_THAT(dump, HasSubstr("COPY public.rollout_steps")) << "the dump holds no steps: the check would be empty";
  EXPECT_THAT(dump, Not(HasSubstr(kSecret))) << "the secret is in Postgres in clear";
  EXPECT_THAT(dump, HasSubstr("hoist:sealed:v1:"));

  // Every --output json answer, and the audit log among them.
  std::vector<std::vector<std::string>> reads = {
      {"status"}, {"matrix"}, {"agents"}, {"releases"}, {"release", "show", "1.1.0"}, {"backups"},
      {"audit", "--limit", "1000"}, {"lock", "status"}};
  for (auto args : reads) {
    args.insert(args.end(), {"--output", "json"});
    auto r = fleet_->Hoist(args);
    ASSERT_TRUE(r.ok()) << absl::StrJoin(args, " ");
    EXPECT_EQ(r->exit_code, 0) << absl::StrJoin(args, " ") << ": " << r->stderr_text;
    EXPECT_THAT(r->stdout_text + r->stderr_text, Not(HasSubstr(kSecret))) << "hoist " << absl::StrJoin(args, " ");
  }
  auto audit = fleet_->Hoist({"audit", "--output", "json"});
  ASSERT_TRUE(audit.ok());
  EXPECT_THAT(audit->stdout_text, HasSubstr("stack.apply")) << "the audit log is not empty";

  // The deployment as the API gives it: names and fingerprints.
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadWholeFile(fleet_->ca_dir() + "/ca.crt");
  o.pem_cert_chain = ReadWholeFile(fleet_->ca_dir() + "/operator-fleet-admin.crt");
  o.pem_private_key = ReadWholeFile(fleet_->ca_dir() + "/operator-fleet-admin.key");
  auto stub = hoist::v1::OperatorService::NewStub(grpc::CreateChannel(fleet_->controller(), grpc::SslCredentials(o)));
  grpc::ClientContext ctx;
  hoist::v1::GetDeploymentRequest req;
  req.set_name(deployment_);
  hoist::v1::GetDeploymentResponse resp;
  grpc::Status got = stub->GetDeployment(&ctx, req, &resp);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_THAT(resp.deployment().manifest_yaml(), HasSubstr("DATABASE_PASSWORD: (secret hmac:"));
  EXPECT_THAT(resp.deployment().manifest_yaml(), Not(HasSubstr(kSecret)));
  EXPECT_THAT(resp.deployment().manifest_yaml(), Not(HasSubstr("info"))) << "every env value is hidden";

  // Every file of the fleet's processes: the logs of hoistd and the agent,
  // the agent's journal and state (not the stack file the test wrote).
  ASSERT_THAT(ReadWholeFile(fleet_->dir() + "/hoistd-1.log"), HasSubstr("leading with epoch"));
  auto grep = RunCommand({"grep", "-rl", "--exclude=stack.yaml", kSecret, fleet_->dir()}, {});
  ASSERT_TRUE(grep.ok());
  EXPECT_EQ(grep->exit_code, 1) << "files that hold the secret:\n" << grep->stdout_text << grep->stderr_text;
}

}  // namespace
}  // namespace hoist::testing

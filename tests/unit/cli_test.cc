// The hoist CLI against an in-process fake OperatorService: every verb's
// table and JSON output and exit code, leader redirects, release file
// validation, live rollout rendering and --help.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "controller/cli/rollout_watch.h"
#include "controller/cli/cli_main.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/interrupt.h"
#include "controller/rollout/planner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "shared/ca.h"
#include "shared/tls.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_operator_service.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist {
namespace {

namespace v1 = hoist::v1;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using hoist::testing::FakeOperatorService;

constexpr int64_t kT0 = 1'800'000'000;  // the fake clock's start

google::protobuf::Timestamp At(int64_t seconds_after_t0) {
  google::protobuf::Timestamp t;
  t.set_seconds(kT0 + seconds_after_t0);
  return t;
}

struct Result {
  int code = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"HOIST_CONTROLLER", "HOIST_DEPLOYMENT", "HOIST_OUTPUT", "HOIST_TLS_CA", "HOIST_TLS_CERT",
                          "HOIST_TLS_KEY", "HOIST_INSECURE", "HOIST_TIMEOUT", "HOIST_DEBUG"}) {
      unsetenv(v);
    }
    auto dir = testing::MakeOwnedTempDir("hoist-cli-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    // An empty config file, so that the developer's own one never leaks in.
    WriteFile("config.yaml", "");
    setenv("HOIST_CONFIG", Path("config.yaml").c_str(), 1);
    ASSERT_TRUE(fake_.Start().ok());
    v1::ListDeploymentsResponse deployments;
    deployments.add_deployments()->set_name("shop");
    fake_.SetResponse("ListDeployments", deployments);
  }
  void TearDown() override {
    unsetenv("HOIST_CONFIG");
    testing::RemoveTree(dir_);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string WriteFile(const std::string& name, const std::string& text) {
    std::ofstream(Path(name)) << text;
    return Path(name);
  }

  // Runs hoist against the fake (plaintext), with stdin text and a TTY flag.
  Result Run(std::vector<std::string> args, const std::string& stdin_text = "", bool tty = false) {
    return RunAt(fake_.address(), std::move(args), stdin_text, tty);
  }
  Result RunAt(const std::string& controllers, std::vector<std::string> args, const std::string& stdin_text = "",
               bool tty = false) {
    args.insert(args.begin(), {"--controller", controllers, "--insecure", "--timeout", "5s"});
    return RunRaw(std::move(args), stdin_text, tty);
  }
  // Runs hoist with exactly these arguments.
  Result RunRaw(const std::vector<std::string>& args, const std::string& stdin_text = "", bool tty = false) {
    std::istringstream in(stdin_text);
    std::ostringstream out, err;
    cli::CliIo io{.in = &in,
                  .out = &out,
                  .err = &err,
                  .stdin_tty = tty,
                  .stdout_tty = tty,
                  .clock = &clock_,
                  .interrupt = &interrupt_};
    Result r;
    r.code = RunCli(args, io);
    r.out = out.str();
    r.err = err.str();
    return r;
  }

  testing::FakeClock clock_;
  cli::Interrupt interrupt_;
  FakeOperatorService fake_;
  std::string dir_;
};

// Every line of text must be one JSON object; returns them.
std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    out.push_back(nlohmann::json::parse(line));  // throws (and fails the test) on bad JSON
  }
  return out;
}

// ---------------------------------------------------------------- help

TEST_F(CliTest, EveryVerbHasHelpWithAnExample) {
  const std::vector<std::vector<std::string>> verbs = {
      {"apply"},    {"release", "create"}, {"release", "show"}, {"releases"}, {"plan"},    {"upgrade"},
      {"watch"},    {"status"},            {"matrix"},          {"rollback"}, {"cutover"}, {"cancel"},
      {"backups"},  {"lock", "status"},    {"audit"},           {"agents"},   {"ca"}};
  for (auto verb : verbs) {
    std::string name = absl::StrJoin(verb, " ");
    verb.push_back("--help");
    Result r = Run(verb);
    EXPECT_EQ(r.code, 0) << name << ": " << r.err;
    EXPECT_THAT(r.out, HasSubstr("hoist " + name)) << name;
    if (name != "ca") {
      EXPECT_THAT(r.out, AllOf(HasSubstr("Examples:\n  hoist " + name), HasSubstr("--controller")))
          << name << " --help:\n" << r.out;
    }
  }
}

TEST_F(CliTest, TopLevelHelpListsVerbsAndExitCodes) {
  Result r = Run({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, AllOf(HasSubstr("upgrade"), HasSubstr("lock status"), HasSubstr("Exit codes:"),
                           HasSubstr("69   no controller answered"), HasSubstr("130  interrupted")));
  Result bare = Run({});
  EXPECT_EQ(bare.code, cli::kExitUsage);
  EXPECT_THAT(bare.err, HasSubstr("Verbs:"));
}

TEST_F(CliTest, VersionAsAVerbOrAFlag) {
  for (const char* word : {"version", "--version"}) {
    Result r = RunRaw({word});
    EXPECT_EQ(r.code, 0) << word;
    EXPECT_EQ(r.out, absl::StrCat("hoist ", HOIST_VERSION, "\n")) << word;
  }
}

TEST_F(CliTest, UnknownVerbAndFlagAreUsageErrors) {
  Result r = Run({"upgrad", "1.5.0"});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("unknown verb \"upgrad\""));
  Result f = Run({"status", "--colour"});
  EXPECT_EQ(f.code, cli::kExitUsage);
  EXPECT_THAT(f.err, HasSubstr("unknown flag --colour"));
  Result g = Run({"release", "delete"});
  EXPECT_EQ(g.code, cli::kExitUsage);
  EXPECT_THAT(g.err, HasSubstr("hoist release create"));
}

// ---------------------------------------------------------------- apply

TEST_F(CliTest, ApplySendsTheManifestAndPrintsTheDeployment) {
  std::string file = WriteFile("stack.yaml", "deployment: shop\n");
  v1::ApplyStackResponse resp;
  resp.mutable_deployment()->set_name("shop");
  resp.mutable_deployment()->set_manifest_sha256("ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12");
  resp.mutable_deployment()->set_pinned_version("1.4.2");
  fake_.SetResponse("ApplyStack", resp);

  Result r = Run({"apply", file});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("deployment shop"), HasSubstr("ab12cd34ef56ab12cd34ef56"),
                           HasSubstr("pinned version   1.4.2")));
  auto req = fake_.LastRequest<v1::ApplyStackRequest>("ApplyStack");
  EXPECT_EQ(req.manifest_yaml(), "deployment: shop\n");
  EXPECT_EQ(req.file_name(), file);

  Result j = Run({"apply", file, "--output", "json"});
  ASSERT_EQ(j.code, 0) << j.err;
  auto docs = JsonLines(j.out);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0]["deployment"]["pinnedVersion"], "1.4.2");
}

TEST_F(CliTest, ApplyReportsTheServersValidationErrorAsUsage) {
  std::string file = WriteFile("stack.yaml", "services: {}\n");
  fake_.SetError("ApplyStack", grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                            "stack.yaml:1: services: at least one service is needed"));
  Result r = Run({"apply", file});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("stack.yaml:1: services: at least one service is needed"));
}

TEST_F(CliTest, ApplyOfAMissingFileIsUsageWithoutACall) {
  Result r = Run({"apply", Path("nope.yaml")});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("cannot read"));
  EXPECT_EQ(fake_.Calls("ApplyStack"), 0);
}

// ---------------------------------------------------------------- releases

constexpr char kGoodRelease[] =
    "version: 1.5.0\n"
    "images:\n"
    "  api: registry.local/shop-api:1.5.0\n"
    "  worker: registry.local/shop-worker@sha256:0123456789abcdef\n"
    "notes: |\n"
    "  Adds invoices.\n"
    "required_env: [SHOP_SMTP_URL]\n"
    "renamed_env:\n"
    "  SHOP_TOKEN: SHOP_API_TOKEN\n";

TEST_F(CliTest, ReleaseCreateSendsTheParsedReleaseToTheOnlyDeployment) {
  std::string file = WriteFile("1.5.0.yaml", kGoodRelease);
  v1::CreateReleaseResponse resp;
  resp.mutable_release()->set_deployment("shop");
  resp.mutable_release()->set_version("1.5.0");
  (*resp.mutable_release()->mutable_images())["api"] = "x:1";
  fake_.SetResponse("CreateRelease", resp);
  Result r = Run({"release", "create", file});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("Recorded release 1.5.0 of shop"), HasSubstr("hoist plan 1.5.0")));
  auto req = fake_.LastRequest<v1::CreateReleaseRequest>("CreateRelease").release();
  EXPECT_EQ(req.deployment(), "shop");
  EXPECT_EQ(req.version(), "1.5.0");
  EXPECT_EQ(req.images().at("api"), "registry.local/shop-api:1.5.0");
  EXPECT_EQ(req.images().at("worker"), "registry.local/shop-worker@sha256:0123456789abcdef");
  EXPECT_EQ(req.notes(), "Adds invoices.\n");
  EXPECT_THAT(req.required_env(), ElementsAre("SHOP_SMTP_URL"));
  EXPECT_EQ(req.renamed_env().at("SHOP_TOKEN"), "SHOP_API_TOKEN");
}

struct BadRelease {
  const char* text;
  const char* expected;  // FILE:LINE: field: ...
};

TEST_F(CliTest, ReleaseFileErrorsNameFileLineAndFieldAndSendNothing) {
  const BadRelease cases[] = {
      {"version: 1.5.0\nimages:\n  api: a:1\nnote: typo\n", "r.yaml:4: note: unknown key"},
      {"version: 1.5\nimages:\n  api: a:1\n", "r.yaml:1: version: "},
      {"version: 1.5.0\nimages:\n  api: registry.local/shop-api:latest\n", "r.yaml:3: images.api: "},
      {"version: 1.5.0\nimages:\n  api: registry.local:5000/shop-api\n", "is not pinned"},
      {"version: 1.5.0\n", "images: missing"},
      {"images:\n  api: a:1\n", "version: missing"},
      {"version: 1.5.0\nimages:\n  api: a:1\nrequired_env: [OK, 9BAD]\n", "r.yaml:4: required_env: \"9BAD\""},
      {"version: 1.5.0\nimages:\n  api: a:1\n  api: a:2\n", "r.yaml:4: images: \"api\" is given twice"},
      {"version: 1.5.0\nimages: [a:1]\n", "r.yaml:2: images: expected a mapping"},
      {"version: [1\n", "r.yaml:"},
  };
  for (const auto& c : cases) {
    std::string file = WriteFile("r.yaml", c.text);
    Result r = Run({"release", "create", file});
    EXPECT_EQ(r.code, cli::kExitUsage) << c.text;
    EXPECT_THAT(r.err, HasSubstr(c.expected)) << c.text;
    EXPECT_THAT(r.err, HasSubstr(Path("r.yaml"))) << c.text;
  }
  EXPECT_EQ(fake_.Calls("CreateRelease"), 0);
}

TEST_F(CliTest, ReleaseCreateRefusesADeploymentMismatch) {
  std::string file = WriteFile("r.yaml", std::string("deployment: shop\n") + kGoodRelease);
  Result r = Run({"release", "create", file, "-d", "blog"});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("release of shop but --deployment says blog"));
}

TEST_F(CliTest, ReleaseShowAndReleases) {
  v1::GetReleaseResponse one;
  auto* rel = one.mutable_release();
  rel->set_deployment("shop");
  rel->set_version("1.5.0");
  (*rel->mutable_images())["api"] = "registry.local/shop-api:1.5.0";
  (*rel->mutable_digests())["api"] = "sha256:0123456789abcdef0123";
  rel->set_notes("Adds invoices.\nSecond line.");
  rel->add_required_env("SHOP_SMTP_URL");
  fake_.SetResponse("GetRelease", one);
  Result r = Run({"release", "show", "1.5.0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("Release 1.5.0 of shop"), HasSubstr("registry.local/shop-api:1.5.0"),
                           HasSubstr("0123456789ab"), HasSubstr("Required env: SHOP_SMTP_URL"),
                           HasSubstr("  Second line.")));
  EXPECT_EQ(fake_.LastRequest<v1::GetReleaseRequest>("GetRelease").version(), "1.5.0");

  v1::ListReleasesResponse list;
  *list.add_releases() = *rel;
  list.add_releases()->set_version("1.4.2");
  fake_.SetResponse("ListReleases", list);
  Result l = Run({"releases"});
  ASSERT_EQ(l.code, 0) << l.err;
  EXPECT_THAT(l.out, AllOf(HasSubstr("VERSION"), HasSubstr("1.5.0"), HasSubstr("Adds invoices."), HasSubstr("1.4.2")));
  Result j = Run({"releases", "--output", "json"});
  EXPECT_EQ(JsonLines(j.out).at(0)["releases"].size(), 2u);
}

TEST_F(CliTest, ReleaseNotFoundExitsThreeWithANextStep) {
  fake_.SetError("GetRelease", grpc::Status(grpc::StatusCode::NOT_FOUND, "no release 9.9.9 of shop"));
  Result r = Run({"release", "show", "9.9.9"});
  EXPECT_EQ(r.code, cli::kExitNotFound);
  EXPECT_THAT(r.err, AllOf(HasSubstr("no release 9.9.9 of shop"), HasSubstr("next: `hoist releases`")));
}

// ---------------------------------------------------------------- deployments

TEST_F(CliTest, DeploymentMustBeNamedWhenThereAreSeveral) {
  v1::ListDeploymentsResponse two;
  two.add_deployments()->set_name("shop");
  two.add_deployments()->set_name("blog");
  fake_.SetResponse("ListDeployments", two);
  Result r = Run({"status"});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, AllOf(HasSubstr("shop, blog"), HasSubstr("-d NAME")));
  EXPECT_EQ(fake_.Calls("GetStatus"), 0);
}

TEST_F(CliTest, NoDeploymentYetSaysToApplyFirst) {
  fake_.SetResponse("ListDeployments", v1::ListDeploymentsResponse());
  Result r = Run({"plan", "1.5.0"});
  EXPECT_EQ(r.code, cli::kExitNotFound);
  EXPECT_THAT(r.err, HasSubstr("hoist apply stack.yaml"));
}

TEST_F(CliTest, DeploymentComesFromFlagThenEnvThenConfigFile) {
  fake_.SetResponse("GetStatus", v1::GetStatusResponse());
  WriteFile("config.yaml", "deployment: from-file\n");
  ASSERT_EQ(Run({"status"}).code, 0);
  EXPECT_EQ(fake_.LastRequest<v1::GetStatusRequest>("GetStatus").deployment(), "from-file");
  setenv("HOIST_DEPLOYMENT", "from-env", 1);
  ASSERT_EQ(Run({"status"}).code, 0);
  EXPECT_EQ(fake_.LastRequest<v1::GetStatusRequest>("GetStatus").deployment(), "from-env");
  ASSERT_EQ(Run({"-d", "from-flag", "status"}).code, 0);
  EXPECT_EQ(fake_.LastRequest<v1::GetStatusRequest>("GetStatus").deployment(), "from-flag");
  unsetenv("HOIST_DEPLOYMENT");
  EXPECT_EQ(fake_.Calls("ListDeployments"), 0);
}

TEST_F(CliTest, ConfigFileUnknownKeyIsAUsageError) {
  WriteFile("config.yaml", "controler: 1.2.3.4:7443\n");
  Result r = Run({"status"});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, AllOf(HasSubstr("config.yaml:1"), HasSubstr("unknown key \"controler\"")));
}

// ---------------------------------------------------------------- redirects and reachability

TEST_F(CliTest, WriteToAFollowerIsRetriedOnTheLeaderNamedInTheTrailer) {
  FakeOperatorService follower;
  ASSERT_TRUE(follower.Start().ok());
  follower.ActAsFollower(fake_.address());
  v1::CancelRolloutResponse resp;
  resp.mutable_rollout()->set_id("r-7");
  resp.mutable_rollout()->set_state(v1::ROLLOUT_STATE_RUNNING);
  fake_.SetResponse("CancelRollout", resp);

  Result quiet = RunAt(follower.address(), {"cancel", "r-7"});
  ASSERT_EQ(quiet.code, 0) << quiet.err;
  EXPECT_EQ(follower.Calls("CancelRollout"), 1);
  EXPECT_EQ(fake_.Calls("CancelRollout"), 1);
  EXPECT_EQ(quiet.err, "") << "the redirect is reported at debug level only";

  Result loud = RunAt(follower.address(), {"cancel", "r-7", "--debug"});
  ASSERT_EQ(loud.code, 0) << loud.err;
  EXPECT_THAT(loud.err, HasSubstr("is a follower; retrying CancelRollout on the leader at " + fake_.address()));
}

TEST_F(CliTest, UnavailableWithoutAHintMovesToTheNextAddress) {
  FakeOperatorService leaderless;
  ASSERT_TRUE(leaderless.Start().ok());
  leaderless.ActAsFollower("");
  v1::CutoverResponse resp;
  resp.set_live_slot(v1::SLOT_BLUE);
  fake_.SetResponse("Cutover", resp);
  Result r = RunAt(leaderless.address() + "," + fake_.address(), {"cutover", "--back", "-d", "shop"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(leaderless.Calls("Cutover"), 1);
  EXPECT_EQ(fake_.LastRequest<v1::CutoverRequest>("Cutover").direction(), v1::CUTOVER_DIRECTION_BACK);
  EXPECT_THAT(r.out, HasSubstr("now goes to blue"));
}

TEST_F(CliTest, NoControllerAnsweringExits69WithAdvice) {
  auto port = testing::PickFreePort();
  ASSERT_TRUE(port.ok());
  std::string dead = absl::StrCat("127.0.0.1:", *port);
  Result r = RunAt(dead, {"agents"});
  EXPECT_EQ(r.code, cli::kExitUnavailable);
  EXPECT_THAT(r.err, AllOf(HasSubstr("controller at " + dead + " is not reachable"),
                           HasSubstr("is hoistd running? set --controller")));
}

TEST_F(CliTest, RefusedByTheServerExitsOne) {
  fake_.SetError("Cutover", grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "shop is not in a grace period"));
  Result r = Run({"cutover", "--finish"});
  EXPECT_EQ(r.code, cli::kExitFailed);
  EXPECT_THAT(r.err, HasSubstr("shop is not in a grace period"));
}

TEST_F(CliTest, TlsFlagsAreRequiredUnlessInsecure) {
  Result r = RunRaw({"--controller", fake_.address(), "agents"});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, AllOf(HasSubstr("--tls-ca"), HasSubstr("--insecure")));
}

TEST_F(CliTest, TalksMutualTlsWithTheFleetCa) {
  std::string ca_dir = Path("ca");
  ASSERT_TRUE(CaInit(ca_dir).ok());
  auto controller = CaIssue(ca_dir, CertKind::kController, "ctl-1");
  auto op = CaIssue(ca_dir, CertKind::kOperator, "alice", {.level = OperatorLevel::kViewer});
  ASSERT_TRUE(controller.ok() && op.ok());
  auto server_creds = ServerTlsCredentials(ca_dir + "/ca.crt", controller->files.cert_path, controller->files.key_path);
  ASSERT_TRUE(server_creds.ok()) << server_creds.status();
  FakeOperatorService tls_fake;
  ASSERT_TRUE(tls_fake.Start(*server_creds).ok());
  tls_fake.SetResponse("ListAgents", v1::ListAgentsResponse());

  Result r = RunRaw({"agents", "--controller", tls_fake.address(), "--tls-ca", ca_dir + "/ca.crt", "--tls-cert",
                     op->files.cert_path, "--tls-key", op->files.key_path});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("No agents have registered yet"));
  EXPECT_EQ(tls_fake.Calls("ListAgents"), 1);

  Result half = RunRaw({"agents", "--controller", tls_fake.address(), "--tls-ca", ca_dir + "/ca.crt"});
  EXPECT_EQ(half.code, cli::kExitUsage);
  EXPECT_THAT(half.err, HasSubstr("go together"));
}

// ---------------------------------------------------------------- plan

v1::Plan SamplePlan() {
  v1::Plan plan;
  plan.set_deployment("shop");
  plan.set_from_version("1.4.2");
  plan.set_to_version("1.5.0");
  plan.set_strategy(v1::STRATEGY_ROLLING);
  auto* pull = plan.add_phases();
  pull->set_name("pull");
  pull->set_reason("images are pulled everywhere before anything stops");
  for (const char* host : {"host-1", "host-2"}) {
    auto* s = pull->add_steps();
    s->set_step_id(absl::StrCat("pull-", host));
    s->set_agent_id(host);
    s->set_kind("pull_image");
    s->set_description("pull registry.local/shop-api:1.5.0");
    pull->add_batches(1);
  }
  auto* api = plan.add_phases();
  api->set_name("api");
  api->set_reason("the API carries the migration gate");
  auto* m = api->add_steps();
  m->set_step_id("migrate");
  m->set_agent_id("host-1");
  m->set_description("run migrations from shop-api:1.5.0");
  api->add_batches(1);
  auto* pin = api->add_steps();
  pin->set_step_id("pin");
  pin->set_description("pin 1.5.0");
  api->add_batches(2);
  auto* n1 = plan.add_notes();
  n1->set_version("1.4.3");
  n1->set_notes("Fixes a crash.");
  auto* n2 = plan.add_notes();
  n2->set_version("1.5.0");
  n2->set_notes("Adds invoices.");
  n2->add_required_env("SHOP_SMTP_URL");
  plan.add_warnings("web stops first (stop-first): brief downtime");
  return plan;
}

TEST_F(CliTest, PlanPrintsPhasesStepsNotesAndWarningsInOrder) {
  v1::PlanRolloutResponse resp;
  *resp.mutable_plan() = SamplePlan();
  fake_.SetResponse("PlanRollout", resp);
  Result r = Run({"plan", "1.5.0"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string& o = r.out;
  EXPECT_THAT(o, HasSubstr("Plan for shop: 1.4.2 -> 1.5.0 (rolling)"));
  size_t pull = o.find("1. pull"), why_pull = o.find("why: images are pulled everywhere"),
         api = o.find("2. api"), notes = o.find("Release notes (2 releases"), n143 = o.find("1.4.3"),
         n150 = o.find("Adds invoices."), warn = o.find("! web stops first");
  for (size_t at : {pull, why_pull, api, notes, n143, n150, warn}) ASSERT_NE(at, std::string::npos) << o;
  EXPECT_LT(pull, why_pull);
  EXPECT_LT(why_pull, api);
  EXPECT_LT(api, notes);
  EXPECT_LT(n143, n150);
  EXPECT_LT(n150, warn);
  EXPECT_THAT(o, AllOf(HasSubstr("BATCH  AGENT       STEP"), HasSubstr("1      host-2  pull registry"),
                       HasSubstr("2      controller  pin 1.5.0"), HasSubstr("requires env: SHOP_SMTP_URL"),
                       HasSubstr("Nothing was changed")));
  auto req = fake_.LastRequest<v1::PlanRolloutRequest>("PlanRollout");
  EXPECT_EQ(req.deployment(), "shop");
  EXPECT_EQ(req.target_version(), "1.5.0");
  EXPECT_EQ(req.strategy(), v1::STRATEGY_ROLLING);

  Result j = Run({"plan", "1.5.0", "--strategy", "blue-green", "--output", "json"});
  ASSERT_EQ(j.code, 0) << j.err;
  EXPECT_EQ(JsonLines(j.out).at(0)["plan"]["phases"].size(), 2u);
  EXPECT_EQ(fake_.LastRequest<v1::PlanRolloutRequest>("PlanRollout").strategy(), v1::STRATEGY_BLUE_GREEN);
}

TEST_F(CliTest, PlanRefusesABadVersionOrStrategyLocally) {
  EXPECT_EQ(Run({"plan", "v1.5"}).code, cli::kExitUsage);
  Result s = Run({"plan", "1.5.0", "--strategy", "canary"});
  EXPECT_EQ(s.code, cli::kExitUsage);
  EXPECT_THAT(s.err, HasSubstr("use rolling or blue-green"));
  EXPECT_EQ(fake_.Calls("PlanRollout"), 0);
}

// ---------------------------------------------------------------- upgrade and watch

v1::RolloutEvent Event(uint64_t seq, int64_t at, const std::string& kind, const std::string& phase,
                       const std::string& step, const std::string& agent = "") {
  v1::RolloutEvent e;
  e.set_sequence(seq);
  *e.mutable_at() = At(at);
  e.set_rollout_id("r-1");
  e.set_kind(kind);
  e.set_phase(phase);
  e.set_step_id(step);
  e.set_agent_id(agent);
  e.set_rollout_state(v1::ROLLOUT_STATE_RUNNING);
  return e;
}

v1::RolloutEvent Progress(uint64_t seq, int64_t at, const std::string& step, const std::string& agent,
                          uint64_t done, uint64_t total) {
  v1::RolloutEvent e = Event(seq, at, "step_progress", "pull", step, agent);
  e.set_bytes_done(done);
  e.set_bytes_total(total);
  return e;
}

std::vector<v1::RolloutEvent> PullEvents() {
  constexpr uint64_t kMB = 1024 * 1024;
  std::vector<v1::RolloutEvent> events = {
      Event(1, 0, "phase_started", "pull", ""),
      Event(2, 1, "step_started", "pull", "pull-host-1", "host-1"),
      Progress(3, 2, "pull-host-1", "host-1", 0, 20 * kMB),
      Progress(4, 3, "pull-host-1", "host-1", 1 * kMB, 20 * kMB),  // still 0%: no new line
      Progress(5, 4, "pull-host-1", "host-1", 10 * kMB, 20 * kMB),
      Progress(6, 5, "pull-host-1", "host-1", 20 * kMB, 20 * kMB),
      Event(7, 5, "step_done", "pull", "pull-host-1", "host-1"),
  };
  events.back().set_step_state(v1::STEP_STATE_SUCCEEDED);
  return events;
}

v1::Rollout SampleRollout(v1::RolloutState state) {
  v1::Rollout r;
  r.set_id("r-1");
  r.set_deployment("shop");
  r.set_state(state);
  *r.mutable_plan() = SamplePlan();
  *r.mutable_started_at() = At(0);
  return r;
}

class UpgradeTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    v1::PlanRolloutResponse plan;
    *plan.mutable_plan() = SamplePlan();
    fake_.SetResponse("PlanRollout", plan);
    v1::StartRolloutResponse started;
    *started.mutable_rollout() = SampleRollout(v1::ROLLOUT_STATE_PENDING);
    fake_.SetResponse("StartRollout", started);
    fake_.SetWatchEvents(PullEvents());
    SetFinal(v1::ROLLOUT_STATE_SUCCEEDED);
  }
  void SetFinal(v1::RolloutState state, const std::string& rollback_command = "") {
    v1::GetRolloutResponse final;
    *final.mutable_rollout() = SampleRollout(state);
    *final.mutable_rollout()->mutable_finished_at() = At(133);
    final.mutable_rollout()->set_rollback_command(rollback_command);
    if (state == v1::ROLLOUT_STATE_FAILED) {
      auto* step = final.mutable_rollout()->mutable_plan()->mutable_phases(1)->mutable_steps(0);
      step->set_state(v1::STEP_STATE_FAILED);
      step->set_error("migration job exited with code 3");
      final.mutable_rollout()->set_error("the migration gate failed; nothing after it ran");
    }
    fake_.SetResponse("GetRollout", final);
  }
};

TEST_F(UpgradeTest, RefusesWithoutYesWhenStdinIsNotATerminal) {
  Result r = Run({"upgrade", "1.5.0"});
  EXPECT_EQ(r.code, cli::kExitUsage);
  EXPECT_THAT(r.err, AllOf(HasSubstr("stdin is not a terminal"), HasSubstr("--yes")));
  EXPECT_EQ(fake_.Calls("StartRollout"), 0);
}

TEST_F(UpgradeTest, AsksOnATerminalAndStopsOnNo) {
  Result r = Run({"upgrade", "1.5.0"}, "n\n", /*tty=*/true);
  EXPECT_EQ(r.code, cli::kExitFailed);
  EXPECT_THAT(r.out, AllOf(HasSubstr("Upgrade shop from 1.4.2 to 1.5.0 (rolling): 2 phases, 4 steps on 2 hosts"),
                           HasSubstr("release notes: 1.4.3, 1.5.0"), HasSubstr("warning:\x1b[0m web stops first"),
                           HasSubstr("Upgrade shop to 1.5.0? [y/N]"), HasSubstr("Not started; nothing changed.")));
  EXPECT_EQ(fake_.Calls("StartRollout"), 0);
}

TEST_F(UpgradeTest, StartsAfterYesAndSendsTheOptions) {
  Result r = Run({"upgrade", "1.5.0", "--strategy", "blue-green", "--on-failure", "rollback", "--grace-period",
                  "10m", "--smoke-test", "./smoke.sh 'https://shop.local/a b'"},
                 "yes\n", /*tty=*/true);
  ASSERT_EQ(r.code, 0) << r.err;
  auto req = fake_.LastRequest<v1::StartRolloutRequest>("StartRollout");
  EXPECT_EQ(req.deployment(), "shop");
  EXPECT_EQ(req.target_version(), "1.5.0");
  EXPECT_EQ(req.strategy(), v1::STRATEGY_BLUE_GREEN);
  EXPECT_EQ(req.on_failure(), v1::ON_FAILURE_ROLLBACK);
  EXPECT_EQ(req.grace_period().seconds(), 600);
  EXPECT_THAT(req.smoke_test(), ElementsAre("./smoke.sh", "https://shop.local/a b"));
  EXPECT_FALSE(req.skip_backup());
}

TEST_F(UpgradeTest, SkipBackupReachesThePlanShownAndTheRollout) {
  Result r = Run({"upgrade", "1.5.0", "--skip-backup"}, "yes\n", /*tty=*/true);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fake_.LastRequest<v1::PlanRolloutRequest>("PlanRollout").skip_backup());
  EXPECT_TRUE(fake_.LastRequest<v1::StartRolloutRequest>("StartRollout").skip_backup());
  ASSERT_EQ(Run({"plan", "1.5.0", "--skip-backup"}).code, 0);
  EXPECT_TRUE(fake_.LastRequest<v1::PlanRolloutRequest>("PlanRollout").skip_backup());
}

TEST_F(UpgradeTest, RendersProgressAsPlainLinesAndSucceeds) {
  Result r = Run({"upgrade", "1.5.0", "--yes"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("\r"))) << "no redraws when stdout is not a terminal";
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  auto find = [&](const std::string& text) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].find(text) != std::string::npos) return static_cast<int>(i);
    }
    ADD_FAILURE() << "no line with \"" << text << "\" in:\n" << r.out;
    return -1;
  };
  int started = find("Started rollout r-1");
  int phase = find("[00:00] ==> pull: images are pulled everywhere before anything stops");
  int step = find("[00:01]     start   host-1       pull registry.local/shop-api:1.5.0");
  int p0 = find("[00:02]     pull    host-1       [--------------------]   0% 0 B / 20.0 MB");
  int p50 = find("[00:04]     pull    host-1       [##########----------]  50% 10.0 MB / 20.0 MB");
  int p100 = find("[00:05]     pull    host-1       [####################] 100% 20.0 MB / 20.0 MB");
  int done = find("[00:05]     done    host-1       pull registry.local/shop-api:1.5.0 (4.0s)");
  int summary = find("Rollout r-1 SUCCEEDED in 2m13s: shop 1.4.2 -> 1.5.0 (rolling)");
  EXPECT_TRUE(started < phase && phase < step && step < p0 && p0 < p50 && p50 < p100 && p100 < done &&
              done < summary)
      << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("1.0 MB / 20.0 MB"))) << "progress inside the same 10% prints no line";
  EXPECT_EQ(fake_.LastRequest<v1::WatchRolloutRequest>("WatchRollout").id(), "r-1");
}

TEST_F(UpgradeTest, RedrawsProgressInPlaceOnATerminal) {
  Result r = Run({"upgrade", "1.5.0", "--yes"}, "", /*tty=*/true);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\r\x1b[Khost-1 [##########----------]  50% 10.0 MB / 20.0 MB"));
  EXPECT_THAT(r.out, Not(HasSubstr("    pull    host-1")));
}

TEST_F(UpgradeTest, FailureSummaryNamesTheFailedStepAndTheRollbackCommand) {
  SetFinal(v1::ROLLOUT_STATE_FAILED, "hoist rollback -d shop --to 1.4.2");
  std::vector<v1::RolloutEvent> events = PullEvents();
  v1::RolloutEvent failed = Event(8, 9, "step_done", "api", "migrate", "host-1");
  failed.set_step_state(v1::STEP_STATE_FAILED);
  failed.set_message("exit code 3");
  failed.set_rollout_state(v1::ROLLOUT_STATE_FAILED);
  events.push_back(Event(8, 6, "step_started", "api", "migrate", "host-1"));
  failed.set_sequence(9);
  events.push_back(failed);
  fake_.SetWatchEvents(events);

  Result r = Run({"upgrade", "1.5.0", "--yes"});
  EXPECT_EQ(r.code, cli::kExitFailed) << r.out << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("FAILED  host-1       run migrations from shop-api:1.5.0 after 3.0s: exit code 3"),
                           HasSubstr("Rollout r-1 FAILED after 2m13s"),
                           HasSubstr("error: the migration gate failed; nothing after it ran"),
                           HasSubstr("api: run migrations from shop-api:1.5.0 on host-1: migration job exited with "
                                     "code 3"),
                           HasSubstr("to roll back, run:\n    hoist rollback -d shop --to 1.4.2\n")));
}

TEST_F(UpgradeTest, CancelledAndRolledBackExitOne) {
  SetFinal(v1::ROLLOUT_STATE_ROLLED_BACK);
  Result r = Run({"upgrade", "1.5.0", "--yes"});
  EXPECT_EQ(r.code, cli::kExitFailed);
  EXPECT_THAT(r.out, HasSubstr("ROLLED BACK"));
  SetFinal(v1::ROLLOUT_STATE_CANCELLED);
  EXPECT_EQ(Run({"watch", "r-1"}).code, cli::kExitFailed);
}

TEST_F(UpgradeTest, JsonPrintsOneObjectPerLine) {
  Result r = Run({"upgrade", "1.5.0", "--yes", "--output", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto docs = JsonLines(r.out);
  ASSERT_EQ(docs.size(), 1 + PullEvents().size() + 1);
  EXPECT_EQ(docs.front()["rollout"]["id"], "r-1");
  EXPECT_EQ(docs[1]["event"]["kind"], "phase_started");
  EXPECT_EQ(docs.back()["rollout"]["state"], "ROLLOUT_STATE_SUCCEEDED");
  EXPECT_EQ(fake_.Calls("PlanRollout"), 0) << "no plan summary in JSON mode";
}

TEST_F(UpgradeTest, WatchResumesAfterABrokenStreamWithoutRepeatingEvents) {
  fake_.SetWatchEvents(PullEvents(), /*hold_open=*/false, /*break_first_stream_after=*/3);
  Result r = Run({"watch", "r-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fake_.Calls("WatchRollout"), 2);
  EXPECT_EQ(fake_.LastRequest<v1::WatchRolloutRequest>("WatchRollout").after_sequence(), 3u);
  size_t first = r.out.find("==> pull");
  EXPECT_NE(first, std::string::npos);
  EXPECT_EQ(r.out.find("==> pull", first + 1), std::string::npos) << r.out;
  EXPECT_THAT(r.out, HasSubstr("100% 20.0 MB / 20.0 MB"));
}

TEST_F(UpgradeTest, CtrlCDetachesWithoutCancelling) {
  fake_.SetWatchEvents(PullEvents(), /*hold_open=*/true);
  Result r;
  std::thread cli([&] { r = Run({"watch", "r-1"}); });
  ASSERT_TRUE(fake_.WaitForWatchEvents(PullEvents().size(), absl::Seconds(10)));
  interrupt_.Trigger();
  cli.join();
  EXPECT_EQ(r.code, cli::kExitInterrupted);
  EXPECT_THAT(r.err, AllOf(HasSubstr("Detached from rollout r-1; it keeps running"), HasSubstr("hoist watch r-1"),
                           HasSubstr("hoist status")));
  EXPECT_EQ(fake_.Calls("CancelRollout"), 0);
}

TEST_F(UpgradeTest, WatchOfAnUnknownRolloutExitsThree) {
  fake_.SetError("GetRollout", grpc::Status(grpc::StatusCode::NOT_FOUND, "no rollout r-404"));
  Result r = Run({"watch", "r-404"});
  EXPECT_EQ(r.code, cli::kExitNotFound);
  EXPECT_THAT(r.err, HasSubstr("`hoist status` shows the latest rollout"));
}

// ---------------------------------------------------------------- rollback, cutover, cancel

TEST_F(UpgradeTest, RollbackWithRestoreNeedsTheNameTyped) {
  v1::RollbackResponse resp;
  *resp.mutable_rollout() = SampleRollout(v1::ROLLOUT_STATE_PENDING);
  resp.mutable_rollout()->set_is_rollback(true);
  fake_.SetResponse("Rollback", resp);

  Result refused = Run({"rollback", "--restore", "b-42"});
  EXPECT_EQ(refused.code, cli::kExitUsage);
  EXPECT_THAT(refused.err, HasSubstr("add --confirm shop"));
  Result wrong = Run({"rollback", "--restore", "b-42"}, "shoP\n", /*tty=*/true);
  EXPECT_EQ(wrong.code, cli::kExitFailed);
  EXPECT_THAT(wrong.err, HasSubstr("nothing was changed"));
  Result mismatch = Run({"rollback", "--restore", "b-42", "--confirm", "blog"});
  EXPECT_EQ(mismatch.code, cli::kExitUsage);
  EXPECT_EQ(fake_.Calls("Rollback"), 0);

  Result typed = Run({"rollback", "--to", "1.4.2", "--restore", "b-42"}, "shop\n", /*tty=*/true);
  ASSERT_EQ(typed.code, 0) << typed.err;
  EXPECT_THAT(typed.out, HasSubstr("Type the deployment's name (shop) to confirm"));
  auto req = fake_.LastRequest<v1::RollbackRequest>("Rollback");
  EXPECT_EQ(req.to_version(), "1.4.2");
  EXPECT_EQ(req.restore_backup_id(), "b-42");
  EXPECT_EQ(req.confirm_name(), "shop");

  Result flagged = Run({"rollback", "--restore", "b-42", "--confirm", "shop", "--no-watch"});
  ASSERT_EQ(flagged.code, 0) << flagged.err;
  EXPECT_THAT(flagged.out, HasSubstr("hoist watch r-1"));
}

// The rollback command a plan prints, run exactly as printed: it parses,
// asks for the deployment's name before the restore, and sends what it says.
TEST_F(UpgradeTest, ThePlansRollbackCommandRunsAsPrinted) {
  auto manifest = rollout::ParseStackManifest("stack.yaml", R"(deployment: shop
hosts: [host-1]
services:
  db:
    role: database
    image: registry.local/postgres:15
  api:
    role: api
    repository: registry.local/shop/api
backup:
  postgres: {service: db, database: shop, user: shop}
)");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  rollout::PlanInput in;
  in.manifest = *manifest;
  rollout::AgentState host;
  host.id = "host-1";
  host.connected = true;
  host.image_disk_free_bytes = host.backup_disk_free_bytes = 100ull << 30;
  for (const char* service : {"db", "api"}) {
    v1::ContainerInfo c;
    c.mutable_instance()->set_deployment("shop");
    c.mutable_instance()->set_service(service);
    c.mutable_instance()->set_slot(v1::SLOT_BLUE);
    c.set_version(std::string(service) == "db" ? "15" : "1.4.2");
    c.set_name(absl::StrCat("shop-", service, "-blue-0-", c.version()));
    c.set_state(v1::CONTAINER_STATE_RUNNING);
    c.set_health(v1::HEALTH_HEALTHY);
    host.containers.push_back(c);
  }
  in.agents = {host};
  for (const auto& [version, out] : {std::pair<const char*, v1::Release*>{"1.4.2", &in.current.emplace()},
                                     std::pair<const char*, v1::Release*>{"1.5.0", &in.target}}) {
    out->set_deployment("shop");
    out->set_version(version);
    (*out->mutable_images())["api"] = absl::StrCat("registry.local/shop/api:", version);
  }
  auto plan = rollout::PlanRollout(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_THAT(plan->rollback_command, ::testing::StartsWith("hoist rollback "));

  v1::RollbackResponse resp;
  *resp.mutable_rollout() = SampleRollout(v1::ROLLOUT_STATE_PENDING);
  resp.mutable_rollout()->set_is_rollback(true);
  fake_.SetResponse("Rollback", resp);
  std::vector<std::string> args = absl::StrSplit(plan->rollback_command.substr(6), ' ');
  args.insert(args.begin(), {"--controller", fake_.address(), "--insecure", "--timeout", "5s"});
  // As printed it carries --confirm, so it runs from a script too (no terminal, no prompt).
  Result r = RunRaw(args, "", /*tty=*/false);
  ASSERT_EQ(r.code, 0) << plan->rollback_command << "\n" << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("to confirm")));
  auto req = fake_.LastRequest<v1::RollbackRequest>("Rollback");
  EXPECT_EQ(req.deployment(), "shop");
  EXPECT_EQ(req.to_version(), "1.4.2");
  EXPECT_EQ(req.restore_backup_id(), "shop-pre-1.5.0");
  EXPECT_EQ(req.confirm_name(), "shop");
}

TEST_F(CliTest, CutoverNeedsExactlyOneDirection) {
  EXPECT_EQ(Run({"cutover"}).code, cli::kExitUsage);
  EXPECT_EQ(Run({"cutover", "--back", "--finish"}).code, cli::kExitUsage);
  v1::CutoverResponse resp;
  resp.set_live_slot(v1::SLOT_GREEN);
  resp.mutable_took()->set_nanos(85'000'000);
  fake_.SetResponse("Cutover", resp);
  Result r = Run({"cutover", "--forward"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Traffic to shop now goes to green (switch took 85ms)"));
  Result j = Run({"cutover", "--forward", "--output", "json"});
  EXPECT_EQ(JsonLines(j.out).at(0)["liveSlot"], "SLOT_GREEN");
}

TEST_F(CliTest, CancelSendsTheReason) {
  v1::CancelRolloutResponse resp;
  resp.mutable_rollout()->set_id("r-9");
  resp.mutable_rollout()->set_state(v1::ROLLOUT_STATE_RUNNING);
  fake_.SetResponse("CancelRollout", resp);
  Result r = Run({"cancel", "r-9", "--reason", "wrong release"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Cancelling rollout r-9 (now RUNNING)"));
  EXPECT_EQ(fake_.LastRequest<v1::CancelRolloutRequest>("CancelRollout").reason(), "wrong release");
  EXPECT_EQ(Run({"cancel"}).code, cli::kExitUsage);
}

// ---------------------------------------------------------------- status and friends

TEST_F(CliTest, StatusShowsReleaseRolloutLockInstancesAndProblems) {
  v1::GetStatusResponse resp;
  resp.mutable_deployment()->set_name("shop");
  resp.mutable_deployment()->set_pinned_version("1.5.0");
  *resp.mutable_latest_rollout() = SampleRollout(v1::ROLLOUT_STATE_FAILED);
  resp.mutable_latest_rollout()->set_rollback_command("hoist rollback -d shop --to 1.4.2");
  resp.mutable_lock()->set_rollout_id("r-1");
  resp.mutable_lock()->set_owner("alice");
  *resp.mutable_lock()->mutable_acquired_at() = At(-90);
  auto* inst = resp.add_instances();
  inst->set_host_name("host-1");
  inst->mutable_container()->mutable_instance()->set_service("api");
  inst->mutable_container()->set_version("1.5.0");
  inst->mutable_container()->set_state(v1::CONTAINER_STATE_RUNNING);
  inst->mutable_container()->set_health(v1::HEALTH_UNHEALTHY);
  resp.add_problems("api on host-1 is unhealthy");
  fake_.SetResponse("GetStatus", resp);

  Result r = Run({"status"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("pinned version  1.5.0"), HasSubstr("r-1 1.4.2 -> 1.5.0 FAILED"),
                           HasSubstr("roll back: hoist rollback -d shop --to 1.4.2"),
                           HasSubstr("held by rollout r-1 (alice) since 1m30s ago"),
                           HasSubstr("api      0        blue  host-1  1.5.0    running  unhealthy"),
                           HasSubstr("! api on host-1 is unhealthy")));
  EXPECT_EQ(JsonLines(Run({"status", "--output", "json"}).out).at(0)["problems"][0], "api on host-1 is unhealthy");
}

v1::GetVersionMatrixResponse SampleMatrix() {
  v1::GetVersionMatrixResponse m;
  m.set_deployment("shop");
  m.set_pinned_version("1.5.0");
  auto cell = [&](const char* service, const char* host, const char* version, bool skew, uint32_t healthy) {
    auto* c = m.add_cells();
    c->set_service(service);
    c->set_host_name(host);
    if (std::string(host) == "host-1") c->set_host_address("10.0.0.11");
    c->set_slot(v1::SLOT_BLUE);
    c->set_version(version);
    c->set_image_digest("sha256:aaaabbbbccccddddeeee");
    c->set_instances(2);
    c->set_healthy(healthy);
    c->set_skew(skew);
  };
  cell("worker", "host-2", "1.4.2", true, 1);
  cell("api", "host-1", "1.5.0", false, 2);
  m.add_violations("worker 1.4.2 must match api 1.5.0");
  return m;
}

TEST_F(CliTest, MatrixMarksSkewAndListsViolations) {
  fake_.SetResponse("GetVersionMatrix", SampleMatrix());
  Result r = Run({"matrix"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("SERVICE  HOST    ADDRESS    SLOT  VERSION  DIGEST        HEALTHY"),
                           HasSubstr("api      host-1  10.0.0.11  blue  1.5.0    aaaabbbbcccc  2/2"),
                           HasSubstr("worker   host-2  -          blue  1.4.2 *  aaaabbbbcccc  1/2"),
                           HasSubstr("* 1 cell runs a version other than the pinned 1.5.0"),
                           HasSubstr("! worker 1.4.2 must match api 1.5.0")));
  EXPECT_LT(r.out.find("api "), r.out.find("worker ")) << "rows sorted by service";
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b[")));
  Result tty = Run({"matrix"}, "", /*tty=*/true);
  EXPECT_THAT(tty.out, HasSubstr("\x1b[33m1.4.2 *\x1b[0m"));
  EXPECT_EQ(JsonLines(Run({"matrix", "--output", "json"}).out).at(0)["cells"][0]["skew"], true);
}

TEST_F(CliTest, AgentsShowStateAndHeartbeatAge) {
  v1::ListAgentsResponse resp;
  auto* a = resp.add_agents();
  a->set_id("host-1");
  a->set_host_name("host-1.lan");
  a->set_agent_version("0.1.0");
  a->set_connected(true);
  a->set_address("10.0.0.11");
  a->set_docker_engine_id("367I:BKAA:H7Y7:ZTUH:3BSW:KUJO:RIG7:KWZH:LI4H:RHMP:VY3T:UG3X");
  *a->mutable_last_heartbeat() = At(-3);
  auto* b = resp.add_agents();
  b->set_id("host-2");
  b->set_lost(true);
  *b->mutable_last_heartbeat() = At(-125);
  fake_.SetResponse("ListAgents", resp);
  Result r = Run({"agents"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The table shows the engine ID's first field; JSON has it whole.
  EXPECT_THAT(r.out, AllOf(HasSubstr("host-1  host-1.lan  10.0.0.11  367I    0.1.0  -       connected  3.0s ago"),
                           HasSubstr("host-2  -           -          -       -      -       lost       2m05s ago")));
  auto json = JsonLines(Run({"agents", "--output", "json"}).out).at(0);
  EXPECT_EQ(json["agents"][0]["dockerEngineId"], "367I:BKAA:H7Y7:ZTUH:3BSW:KUJO:RIG7:KWZH:LI4H:RHMP:VY3T:UG3X");
  EXPECT_EQ(json["agents"][0]["address"], "10.0.0.11");
  EXPECT_EQ(json["agents"][1]["lost"], true);
  EXPECT_EQ(json["agents"][0]["lost"], false) << "false fields are printed too";
}

TEST_F(CliTest, BackupsLocksAndAudit) {
  v1::ListBackupsResponse backups;
  auto* b = backups.add_backups();
  b->set_id("b-42");
  b->set_version("1.4.2");
  b->set_verified(true);
  b->add_artifacts()->set_kind("postgres");
  b->mutable_artifacts(0)->set_size_bytes(3 * 1024 * 1024);
  fake_.SetResponse("ListBackups", backups);
  Result rb = Run({"backups"});
  ASSERT_EQ(rb.code, 0) << rb.err;
  EXPECT_THAT(rb.out, AllOf(HasSubstr("b-42"), HasSubstr("3.0 MB"), HasSubstr("postgres"), HasSubstr("yes")));

  fake_.SetResponse("ListLocks", v1::ListLocksResponse());
  EXPECT_THAT(Run({"lock", "status"}).out, HasSubstr("No deploy lock is held."));
  v1::ListLocksResponse locks;
  locks.add_locks()->set_deployment("shop");
  locks.mutable_locks(0)->set_rollout_id("r-1");
  fake_.SetResponse("ListLocks", locks);
  EXPECT_THAT(Run({"lock", "status"}).out, HasSubstr("shop        r-1"));

  v1::ListAuditEventsResponse audit;
  auto* e = audit.add_events();
  e->set_id(17);
  e->set_actor("alice");
  e->set_action("rollout.start");
  e->set_outcome("ok");
  fake_.SetResponse("ListAuditEvents", audit);
  Result ra = Run({"audit", "--limit", "1"});
  ASSERT_EQ(ra.code, 0) << ra.err;
  EXPECT_THAT(ra.out, AllOf(HasSubstr("alice"), HasSubstr("rollout.start"), HasSubstr("hoist audit --before 17")));
  EXPECT_EQ(fake_.LastRequest<v1::ListAuditEventsRequest>("ListAuditEvents").limit(), 1u);
  EXPECT_EQ(Run({"audit", "--limit", "0"}).code, cli::kExitUsage);
}

TEST_F(CliTest, EveryOtherQueryVerbPrintsOneJsonDocument) {
  v1::GetReleaseResponse release;
  release.mutable_release()->set_version("1.5.0");
  fake_.SetResponse("GetRelease", release);
  v1::ListBackupsResponse backups;
  backups.add_backups()->set_id("b-42");
  fake_.SetResponse("ListBackups", backups);
  v1::ListLocksResponse locks;
  locks.add_locks()->set_rollout_id("r-1");
  fake_.SetResponse("ListLocks", locks);
  v1::ListAuditEventsResponse audit;
  audit.add_events()->set_id(17);
  fake_.SetResponse("ListAuditEvents", audit);
  v1::CancelRolloutResponse cancel;
  cancel.mutable_rollout()->set_id("r-9");
  fake_.SetResponse("CancelRollout", cancel);
  v1::CreateReleaseResponse created;
  created.mutable_release()->set_version("1.5.0");
  fake_.SetResponse("CreateRelease", created);
  std::string file = WriteFile("r.yaml", kGoodRelease);

  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"release", "show", "1.5.0"}, "/release/version"},
      {{"release", "--output", "json", "create", file}, "/release/version"},
      {{"backups"}, "/backups/0/id"},
      {{"lock", "status"}, "/locks/0/rolloutId"},
      {{"audit"}, "/events/0/id"},
      {{"cancel", "r-9"}, "/rollout/id"},
  };
  for (auto [args, pointer] : cases) {
    std::string name = absl::StrJoin(args, " ");
    args.insert(args.end(), {"--output", "json"});
    Result r = Run(args);
    ASSERT_EQ(r.code, 0) << name << ": " << r.err;
    auto docs = JsonLines(r.out);
    ASSERT_EQ(docs.size(), 1u) << name;
    EXPECT_TRUE(docs[0].contains(nlohmann::json::json_pointer(pointer))) << name << ": " << r.out;
  }
}

TEST_F(CliTest, UnimplementedOnTheServerExits69) {
  Result r = Run({"backups"});  // the fake has no answer for ListBackups
  EXPECT_EQ(r.code, cli::kExitUnavailable);
  EXPECT_THAT(r.err, HasSubstr("does not implement ListBackups"));
}

TEST_F(CliTest, VersionNeedsNoController) {
  Result r = RunAt("127.0.0.1:1", {"version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, std::string("hoist ") + HOIST_VERSION + "\n");
}


// A service on hundreds of hosts: its phase is counted in tenths, failures
// are shown at once, and the summary names the slowest hosts; no line per step.
TEST(RolloutPrinterTest, AWidePhaseIsCountedWithItsFailuresAndSlowestHostsNotALinePerStep) {
  v1::Rollout rollout;
  rollout.set_id("r-1");
  v1::PlannedPhase* phase = rollout.mutable_plan()->add_phases();
  phase->set_name("replace-app");
  constexpr int kSteps = 100;
  for (int i = 0; i < kSteps; ++i) {
    v1::PlannedStep* step = phase->add_steps();
    step->set_step_id(absl::StrCat("s-", i));
    step->set_agent_id(absl::StrCat("sim-", i));
    step->set_description(absl::StrCat("replace app on sim-", i));
  }
  testing::FakeClock clock;
  std::ostringstream out;
  cli::RolloutPrinter printer(out, /*tty=*/false, rollout, &clock);
  uint64_t seq = 0;
  printer.OnEvent(Event(++seq, 0, "phase_started", "replace-app", ""));
  for (int i = 0; i < kSteps; ++i) {
    printer.OnEvent(Event(++seq, 1, "step_started", "replace-app", absl::StrCat("s-", i), absl::StrCat("sim-", i)));
  }
  for (int i = 0; i < kSteps; ++i) {
    v1::RolloutEvent done =
        Event(++seq, i == 42 ? 12 : 3, "step_done", "replace-app", absl::StrCat("s-", i), absl::StrCat("sim-", i));
    done.set_step_state(i == 7 ? v1::STEP_STATE_FAILED : v1::STEP_STATE_SUCCEEDED);
    if (i == 7) done.set_message("health check failed");
    printer.OnEvent(done);
  }
  printer.Finish();
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("100 steps: shown as they finish in tenths"));
  EXPECT_THAT(text, HasSubstr("FAILED  sim-7        replace app on sim-7: health check failed"));
  EXPECT_THAT(text, HasSubstr("50/100 steps done, 1 FAILED"));
  EXPECT_THAT(text, HasSubstr("100/100 steps done, 1 FAILED; slowest: sim-42 11s"));
  EXPECT_THAT(text, Not(HasSubstr("replace app on sim-3"))) << "no line per step in a wide phase";
  EXPECT_LT(std::count(text.begin(), text.end(), '\n'), 16) << text;
}

}  // namespace
}  // namespace hoist

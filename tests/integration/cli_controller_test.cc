// The hoist binary, run as a subprocess, against real hoistd processes (a
// leader and a follower, a HoistFleet) on a real Postgres: every query and write verb's
// exit code, its table and its JSON, the follower's redirect of writes, and
// an unreachable controller. Also hoistd's own HTTP endpoints, /health and
// /metrics, on both replicas.

#include <signal.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "shared/http_client.h"
#include "shared/subprocess.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_test.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNotFound = 3;
constexpr int kExitUnavailable = 69;

// Two hosts, an API and workers: enough for a plan to need agents.
constexpr const char* kStack = R"(deployment: shop
hosts:
  - id: host-1
  - id: host-2
services:
  api:
    role: api
    repository: registry.local/shop/api
    replicas: 2
    health:
      http: {path: /health, port: 8080}
  worker:
    role: worker
    repository: registry.local/shop/worker
)";

constexpr const char* kRelease = R"(version: 1.4.0
images:
  api: registry.local/shop/api:1.4.0
  worker: registry.local/shop/worker:1.4.0
notes: |
  Adds invoices.
)";

// A hoistd replica of the fleet, as the CLI and HTTP clients reach it.
struct Replica {
  std::string id;
  std::string grpc_address;  // host:port of the gRPC API
  std::string http_base;     // http://host:port of /health and /metrics
};

struct CliResult {
  int code = -1;
  std::string out, err;
};

// Why a result is what it is, for assertion messages.
std::string Describe(const CliResult& r) {
  return absl::StrCat("exit ", r.code, "\n--- stdout\n", r.out, "--- stderr\n", r.err);
}

class CliControllerTest : public PostgresTest {
 protected:
  void SetUp() override {
    // The developer's own settings must not leak into the CLI under test.
    for (const char* v : {"HOIST_CONTROLLER", "HOIST_DEPLOYMENT", "HOIST_OUTPUT", "HOIST_TLS_CA", "HOIST_TLS_CERT",
                          "HOIST_TLS_KEY", "HOIST_INSECURE", "HOIST_TIMEOUT", "HOIST_DEBUG"}) {
      unsetenv(v);
    }
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // The first replica applies the schema and leads; the second follows.
    auto fleet = HoistFleet::Start(
        nullptr, cluster_.get(), {.connect_timeout = absl::Seconds(30), .controllers = 2, .first_replica_leads = true});
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    fleet_ = std::move(*fleet);
    for (int i : {0, 1}) {
      Replica& r = i == 0 ? leader_ : follower_;
      r = {absl::StrCat("hoistd-", i + 1), fleet_->replica_address(i), fleet_->replica_http(i)};
    }
    ASSERT_NO_FATAL_FAILURE(WaitForRole(leader_, "leader"));
    // A follower redirects writes once it has read who leads (epoch > 0).
    ASSERT_NO_FATAL_FAILURE(WaitForRole(follower_, "follower"));
    WriteFile("config.yaml", "");
  }

  // The fleet stops the replicas and the agents, all at once: each takes a
  // moment to hand over and drain.
  void TearDown() override {
    if (fleet_ != nullptr) fleet_->set_dump_logs_at_exit(HasFailure());
    fleet_.reset();
  }

  std::string Path(const std::string& name) const { return fleet_->dir() + "/" + name; }
  std::string WriteFile(const std::string& name, const std::string& text) { return fleet_->WriteFile(name, text); }

  // SIGTERM, as an operator's stop would; SIGKILL when it hangs.
  void StopReplica(const Replica& r) { fleet_->Stop(r.id).IgnoreError(); }

  // GET the replica's HTTP base + path.
  absl::StatusOr<HttpResponse> Get(const Replica& r, const std::string& path) {
    return HttpGet(r.http_base + path, absl::Seconds(2));
  }

  // Waits until the replica's /health answers with this role and knows the
  // leader's epoch.
  void WaitForRole(const Replica& r, const std::string& role) {
    ASSERT_TRUE(EventuallyHolds(
        absl::StrCat(r.id, " to report role ", role, " with an epoch on /health"), absl::Seconds(20),
        [&]() -> absl::StatusOr<std::string> {
          auto resp = Get(r, "/health");
          if (!resp.ok()) return resp.status();
          if (resp->status != 200) return absl::UnavailableError(absl::StrCat("HTTP ", resp->status, ": ", resp->body));
          return resp->body;
        },
        [&](const absl::StatusOr<std::string>& body) {
          if (!body.ok()) return false;
          auto j = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
          return j.is_object() && j.value("role", "") == role && j.value("epoch", uint64_t{0}) > 0;
        }))
        << "\nlog:\n"
        << fleet_->Log(r.id);
  }

  // Runs `hoist ARGS --controller ADDRESS --insecure`.
  CliResult Hoist(std::vector<std::string> args, const std::string& controller) {
    std::vector<std::string> argv = {HOIST_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--controller", controller, "--insecure", "--timeout", "5s"});
    auto r = RunCommand(argv, {.timeout = absl::Seconds(60), .extra_env = {"HOIST_CONFIG=" + Path("config.yaml")}});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    return {r->exit_code, r->stdout_text, r->stderr_text};
  }
  // The same against the leader.
  CliResult Hoist(std::vector<std::string> args) { return Hoist(std::move(args), leader_.grpc_address); }

  // Parses stdout as one JSON document, failing the test when it is not.
  nlohmann::json Json(const CliResult& r) {
    auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << "stdout is not one JSON document:\n" << Describe(r);
    return j;
  }

  // Applies the stack and records release 1.4.0.
  void ApplyStackAndRelease() {
    CliResult applied = Hoist({"apply", WriteFile("stack.yaml", kStack)});
    ASSERT_EQ(applied.code, 0) << Describe(applied);
    CliResult released = Hoist({"release", "create", WriteFile("release.yaml", kRelease)});
    ASSERT_EQ(released.code, 0) << Describe(released);
  }

  // Starts hoist-agents host-1 and host-2 against the leader and waits until
  // the fleet lists both connected. They need no Docker to be planned for.
  void StartAgents() {
    const absl::Status started = fleet_->StartAgents(
        {{"host-1", ""}, {"host-2", ""}},
        {"--controller", leader_.grpc_address, "--docker-socket", Path("no-docker.sock")});
    ASSERT_TRUE(started.ok()) << "the agents did not connect: " << started;
  }

  std::unique_ptr<HoistFleet> fleet_;
  Replica leader_, follower_;
};

// The connection string can come from a file (kept out of ps); a file that
// cannot be read, or holds no string, is refused before anything starts.
TEST_F(CliControllerTest, HoistdReadsTheDatabaseUrlFromAFile) {
  const std::string file = WriteFile("database-url", fleet_->database_url() + "\n");
  auto status = RunCommand({HOIST_HOISTD_PATH, "migrate", "status", "--database-url-file", file});
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->exit_code, 0) << status->stdout_text << status->stderr_text;
  auto empty = RunCommand({HOIST_HOISTD_PATH, "migrate", "status", "--database-url-file", WriteFile("empty", "\n")});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->exit_code, 2);
  EXPECT_THAT(empty->stderr_text, HasSubstr("its first line is empty"));
  auto missing = RunCommand({HOIST_HOISTD_PATH, "migrate", "status", "--database-url-file", Path("absent")});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 2);
  EXPECT_THAT(missing->stderr_text, HasSubstr("cannot read it"));
  auto help = RunCommand({HOIST_HOISTD_PATH, "--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_THAT(help->stdout_text + help->stderr_text, HasSubstr("visible to every local user"));
}

TEST_F(CliControllerTest, ApplyStoresTheStackAsTableAndJson) {
  const std::string stack = WriteFile("stack.yaml", kStack);
  CliResult table = Hoist({"apply", stack});
  ASSERT_EQ(table.code, 0) << Describe(table);
  EXPECT_THAT(table.out, AllOf(HasSubstr("Applied " + stack + " as deployment shop"), HasSubstr("manifest sha256"),
                               HasSubstr("pinned version   none yet")));

  CliResult json = Hoist({"apply", stack, "--output", "json"});
  ASSERT_EQ(json.code, 0) << Describe(json);
  nlohmann::json j = Json(json);
  EXPECT_EQ(j["deployment"]["name"], "shop");
  EXPECT_EQ(j["deployment"]["manifestYaml"], kStack);
  EXPECT_EQ(j["deployment"]["manifestSha256"].get<std::string>().size(), 64u) << j.dump();
  EXPECT_EQ(j["deployment"]["pinnedVersion"], "");
}

TEST_F(CliControllerTest, InvalidManifestExitsTwoNamingFileLineAndField) {
  std::string bad = kStack;
  bad += "    replicaz: 3\n";  // line 15, under services.worker
  const std::string path = WriteFile("bad.yaml", bad);
  for (const char* output : {"table", "json"}) {
    CliResult r = Hoist({"apply", path, "--output", output});
    EXPECT_EQ(r.code, kExitUsage) << output << ": " << Describe(r);
    EXPECT_THAT(r.err, HasSubstr(path + ":15:")) << output;
    EXPECT_THAT(r.err, HasSubstr("services.worker.replicaz: unknown key")) << output;
    EXPECT_THAT(r.out, IsEmpty()) << output;
  }
  // Nothing was stored.
  CliResult status = Hoist({"status", "-d", "shop"});
  EXPECT_EQ(status.code, kExitNotFound) << Describe(status);
}

// Files that are not one UTF-8 YAML document of a sane size are refused with
// Hoist's own error naming the file (and the line), and nothing is stored.
TEST_F(CliControllerTest, ManifestsThatAreNotOneUtf8DocumentAreRefusedByName) {
  struct Case {
    std::string name;
    std::string text;
    std::vector<std::string> want;
  };
  const std::vector<Case> cases = {
      {"two-docs.yaml", std::string(kStack) + "---\ndeployment: shop\nservicez: {}\n",
       {"two-docs.yaml:15", "a second YAML document"}},
      {"latin1.yaml", std::string(kStack) + "# caf\xe9\n", {"latin1.yaml:15:6", "byte 0xE9 is not UTF-8"}},
      {"huge.yaml", std::string(kStack) + "# " + std::string(2 << 20, 'x') + "\n",
       {"huge.yaml", "2.0 MiB", "at most 1.0 MiB"}},
  };
  for (const Case& c : cases) {
    CliResult r = Hoist({"apply", WriteFile(c.name, c.text)});
    EXPECT_EQ(r.code, kExitUsage) << c.name << ": " << Describe(r);
    for (const std::string& w : c.want) EXPECT_THAT(r.err, HasSubstr(w)) << c.name;
  }
  CliResult status = Hoist({"status", "-d", "shop"});
  EXPECT_EQ(status.code, kExitNotFound) << Describe(status);
}

TEST_F(CliControllerTest, ReleaseCreateShowAndList) {
  ASSERT_EQ(Hoist({"apply", WriteFile("stack.yaml", kStack)}).code, 0);
  const std::string release = WriteFile("release.yaml", kRelease);
  CliResult created = Hoist({"release", "create", release});
  ASSERT_EQ(created.code, 0) << Describe(created);
  EXPECT_THAT(created.out, AllOf(HasSubstr("Recorded release 1.4.0 of shop (2 images)"),
                                 HasSubstr("Next: hoist plan 1.4.0")));

  // Recording the same release again is a no-op; changing a recorded one is refused.
  CliResult again = Hoist({"release", "create", release, "--output", "json"});
  ASSERT_EQ(again.code, 0) << Describe(again);
  EXPECT_EQ(Json(again)["release"]["version"], "1.4.0");
  std::string changed = kRelease;
  changed.replace(changed.find("Adds invoices."), 14, "Adds refunds.");
  CliResult rewritten = Hoist({"release", "create", WriteFile("changed.yaml", changed)});
  EXPECT_EQ(rewritten.code, kExitFailed) << Describe(rewritten);
  EXPECT_THAT(rewritten.err, HasSubstr("a version is immutable"));

  CliResult list = Hoist({"releases"});
  ASSERT_EQ(list.code, 0) << Describe(list);
  EXPECT_THAT(list.out, AllOf(HasSubstr("VERSION"), HasSubstr("SERVICES"), HasSubstr("1.4.0"),
                              HasSubstr("api,worker"), HasSubstr("Adds invoices.")));
  CliResult list_json = Hoist({"releases", "--output", "json"});
  ASSERT_EQ(list_json.code, 0) << Describe(list_json);
  nlohmann::json releases = Json(list_json)["releases"];
  ASSERT_EQ(releases.size(), 1u) << list_json.out;
  EXPECT_EQ(releases[0]["version"], "1.4.0");
  EXPECT_EQ(releases[0]["deployment"], "shop");
  EXPECT_EQ(releases[0]["images"]["api"], "registry.local/shop/api:1.4.0");

  CliResult show = Hoist({"release", "show", "1.4.0"});
  ASSERT_EQ(show.code, 0) << Describe(show);
  EXPECT_THAT(show.out, AllOf(HasSubstr("Release 1.4.0 of shop"), HasSubstr("registry.local/shop/worker:1.4.0"),
                              HasSubstr("not pulled yet"), HasSubstr("Adds invoices.")));
  CliResult show_json = Hoist({"release", "show", "1.4.0", "--output", "json"});
  ASSERT_EQ(show_json.code, 0) << Describe(show_json);
  nlohmann::json shown = Json(show_json)["release"];
  EXPECT_EQ(shown["version"], "1.4.0");
  EXPECT_EQ(shown["notes"], "Adds invoices.\n");
  EXPECT_EQ(shown["images"].size(), 2u);

  CliResult missing = Hoist({"release", "show", "9.9.9"});
  EXPECT_EQ(missing.code, kExitNotFound) << Describe(missing);
  EXPECT_THAT(missing.err, HasSubstr("9.9.9"));
}

TEST_F(CliControllerTest, ReleaseNamingAServiceTheStackLacksIsRefused) {
  ASSERT_EQ(Hoist({"apply", WriteFile("stack.yaml", kStack)}).code, 0);
  const std::string bad = WriteFile("bad-release.yaml",
                                    "version: 1.5.0\n"
                                    "images:\n"
                                    "  api: registry.local/shop/api:1.5.0\n"
                                    "  worker: registry.local/shop/worker:1.5.0\n"
                                    "  billing: registry.local/shop/billing:1.5.0\n");
  for (const char* output : {"table", "json"}) {
    CliResult r = Hoist({"release", "create", bad, "--output", output});
    EXPECT_EQ(r.code, kExitUsage) << output << ": " << Describe(r);
    EXPECT_THAT(r.err, AllOf(HasSubstr(bad + ":5: images.billing"), HasSubstr("no service named \"billing\""),
                             HasSubstr("its versioned services are api, worker")))
        << output;
  }
  CliResult list = Hoist({"releases", "--output", "json"});
  ASSERT_EQ(list.code, 0) << Describe(list);
  EXPECT_THAT(Json(list)["releases"], IsEmpty()) << "a refused release was stored";
  // The refusal is an operator action the audit log keeps.
  CliResult audit = Hoist({"audit", "--output", "json"});
  ASSERT_EQ(audit.code, 0) << Describe(audit);
  bool refused_logged = false;
  const nlohmann::json events = Json(audit)["events"];
  for (const auto& e : events) {
    if (e["action"] == "release.create" && e["outcome"] == "refused") {
      refused_logged = true;
      EXPECT_THAT(e["detail"].get<std::string>(), HasSubstr("billing"));
    }
  }
  EXPECT_TRUE(refused_logged) << audit.out;
  // hoistd's other finding, a service left without an image, names the line of images:.
  const std::string short_release = WriteFile("short-release.yaml",
                                              "version: 1.5.0\n"
                                              "images:\n"
                                              "  api: registry.local/shop/api:1.5.0\n");
  CliResult missing = Hoist({"release", "create", short_release});
  EXPECT_EQ(missing.code, kExitUsage) << Describe(missing);
  EXPECT_THAT(missing.err, AllOf(HasSubstr(short_release + ":2: images: no image for service \"worker\""),
                                 HasSubstr("add `worker: IMAGE:TAG` under images")));
}

TEST_F(CliControllerTest, PlanWithoutAgentsIsRefusedWithThePreflightReason) {
  ASSERT_NO_FATAL_FAILURE(ApplyStackAndRelease());
  for (const char* output : {"table", "json"}) {
    CliResult r = Hoist({"plan", "1.4.0", "--output", output});
    EXPECT_EQ(r.code, kExitFailed) << output << ": " << Describe(r);
    EXPECT_THAT(r.err, AllOf(HasSubstr("agents missing"), HasSubstr("host-1 has never connected"),
                             HasSubstr("host-2 has never connected"), HasSubstr("start hoist-agent")))
        << output;
    EXPECT_THAT(r.out, IsEmpty()) << output;
  }
  CliResult unknown = Hoist({"plan", "9.9.9"});
  EXPECT_EQ(unknown.code, kExitNotFound) << Describe(unknown);
  CliResult bad = Hoist({"plan", "not-a-version"});
  EXPECT_EQ(bad.code, kExitUsage) << Describe(bad);
}

TEST_F(CliControllerTest, PlanSentToTheFollowerSeesTheAgentsOfTheLeader) {
  ASSERT_NO_FATAL_FAILURE(ApplyStackAndRelease());
  ASSERT_NO_FATAL_FAILURE(StartAgents());
  CliResult on_leader = Hoist({"plan", "1.4.0"});
  ASSERT_EQ(on_leader.code, 0) << Describe(on_leader);
  // The follower holds no agent session; it plans from what the leader recorded.
  CliResult on_follower = Hoist({"plan", "1.4.0"}, follower_.grpc_address);
  EXPECT_EQ(on_follower.code, 0) << Describe(on_follower);
  EXPECT_THAT(on_follower.err, Not(HasSubstr("not connected")));
  EXPECT_EQ(on_follower.out, on_leader.out) << "the follower's plan differs from the leader's";
}

TEST_F(CliControllerTest, StatusAndAnEmptyMatrix) {
  ASSERT_NO_FATAL_FAILURE(ApplyStackAndRelease());
  CliResult status = Hoist({"status"});
  ASSERT_EQ(status.code, 0) << Describe(status);
  EXPECT_THAT(status.out, AllOf(HasSubstr("Deployment shop"), HasSubstr("pinned version  none yet"),
                                HasSubstr("latest rollout  none"), HasSubstr("deploy lock     free"),
                                HasSubstr("No instances reported yet.")));
  CliResult status_json = Hoist({"status", "--output", "json"});
  ASSERT_EQ(status_json.code, 0) << Describe(status_json);
  nlohmann::json s = Json(status_json);
  EXPECT_EQ(s["deployment"]["name"], "shop");
  EXPECT_THAT(s["instances"], IsEmpty());
  EXPECT_FALSE(s.contains("latestRollout")) << s.dump();

  CliResult matrix = Hoist({"matrix"});
  ASSERT_EQ(matrix.code, 0) << Describe(matrix);
  EXPECT_THAT(matrix.out, AllOf(HasSubstr("Version matrix of shop (pinned none)"), HasSubstr("Nothing runs yet.")));
  CliResult matrix_json = Hoist({"matrix", "--output", "json"});
  ASSERT_EQ(matrix_json.code, 0) << Describe(matrix_json);
  nlohmann::json m = Json(matrix_json);
  EXPECT_EQ(m["deployment"], "shop");
  EXPECT_EQ(m["pinnedVersion"], "");
  EXPECT_THAT(m["cells"], IsEmpty());
  EXPECT_THAT(m["violations"], IsEmpty());

  CliResult unknown = Hoist({"matrix", "-d", "nosuch"});
  EXPECT_EQ(unknown.code, kExitNotFound) << Describe(unknown);
}

TEST_F(CliControllerTest, AgentsLockStatusAndBackupsWhenNothingRan) {
  ASSERT_NO_FATAL_FAILURE(ApplyStackAndRelease());
  CliResult agents = Hoist({"agents"});
  ASSERT_EQ(agents.code, 0) << Describe(agents);
  EXPECT_THAT(agents.out, HasSubstr("No agents have registered yet"));
  CliResult agents_json = Hoist({"agents", "--output", "json"});
  ASSERT_EQ(agents_json.code, 0) << Describe(agents_json);
  EXPECT_THAT(Json(agents_json)["agents"], IsEmpty());

  CliResult locks = Hoist({"lock", "status"});
  ASSERT_EQ(locks.code, 0) << Describe(locks);
  EXPECT_THAT(locks.out, HasSubstr("No deploy lock is held."));
  CliResult locks_json = Hoist({"lock", "status", "--output", "json"});
  ASSERT_EQ(locks_json.code, 0) << Describe(locks_json);
  EXPECT_THAT(Json(locks_json)["locks"], IsEmpty());

  CliResult backups = Hoist({"backups"});
  ASSERT_EQ(backups.code, 0) << Describe(backups);
  EXPECT_THAT(backups.out, HasSubstr("No backups of shop yet"));
  CliResult backups_json = Hoist({"backups", "--output", "json"});
  ASSERT_EQ(backups_json.code, 0) << Describe(backups_json);
  EXPECT_THAT(Json(backups_json)["backups"], IsEmpty());

  // A deployment that does not exist is not found, not an empty list.
  for (const char* verb : {"backups", "releases"}) {
    CliResult r = Hoist({verb, "-d", "nosuch"});
    EXPECT_EQ(r.code, kExitNotFound) << verb << ": " << Describe(r);
    EXPECT_THAT(r.err, HasSubstr("nosuch")) << verb;
  }
}

TEST_F(CliControllerTest, AuditShowsTheApplyAndTheRelease) {
  ASSERT_NO_FATAL_FAILURE(ApplyStackAndRelease());
  CliResult table = Hoist({"audit"});
  ASSERT_EQ(table.code, 0) << Describe(table);
  EXPECT_THAT(table.out, AllOf(HasSubstr("ACTION"), HasSubstr("OUTCOME"), HasSubstr("stack.apply"),
                               HasSubstr("release.create"), HasSubstr("release 1.4.0")));

  CliResult json = Hoist({"audit", "--output", "json"});
  ASSERT_EQ(json.code, 0) << Describe(json);
  nlohmann::json events = Json(json)["events"];
  ASSERT_EQ(events.size(), 2u) << json.out;
  // Newest first.
  EXPECT_EQ(events[0]["action"], "release.create");
  EXPECT_EQ(events[0]["deployment"], "shop");
  EXPECT_EQ(events[0]["outcome"], "ok");
  EXPECT_EQ(events[0]["detail"], "release 1.4.0");
  EXPECT_EQ(events[1]["action"], "stack.apply");
  EXPECT_EQ(events[1]["outcome"], "ok");
  EXPECT_THAT(events[1]["actor"].get<std::string>(), HasSubstr("127.0.0.1"));

  CliResult limited = Hoist({"audit", "--limit", "1", "--output", "json"});
  ASSERT_EQ(limited.code, 0) << Describe(limited);
  EXPECT_EQ(Json(limited)["events"].size(), 1u);
  CliResult bad_limit = Hoist({"audit", "--limit", "0"});
  EXPECT_EQ(bad_limit.code, kExitUsage) << Describe(bad_limit);
}

TEST_F(CliControllerTest, CancellingAnUnknownRolloutIsNotFound) {
  for (const char* output : {"table", "json"}) {
    CliResult r = Hoist({"cancel", "shop-20990101-000000-0000", "--output", output});
    EXPECT_EQ(r.code, kExitNotFound) << output << ": " << Describe(r);
    EXPECT_THAT(r.err, AllOf(HasSubstr("shop-20990101-000000-0000"), HasSubstr("hoist status")));
  }
}

TEST_F(CliControllerTest, AWriteSentToTheFollowerReachesTheLeader) {
  CliResult r = Hoist({"apply", WriteFile("stack.yaml", kStack), "--debug"}, follower_.grpc_address);
  ASSERT_EQ(r.code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("as deployment shop"));
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat(follower_.grpc_address, " is a follower; retrying ApplyStack on the "
                                            "leader at ",
                                            leader_.grpc_address)));
  // Reads are served by the follower itself, from the same Postgres.
  CliResult status = Hoist({"status", "--output", "json", "--debug"}, follower_.grpc_address);
  ASSERT_EQ(status.code, 0) << Describe(status);
  EXPECT_EQ(Json(status)["deployment"]["name"], "shop");
  EXPECT_THAT(status.err, Not(HasSubstr("follower")));

  CliResult release = Hoist({"release", "create", WriteFile("release.yaml", kRelease), "--output", "json"},
                            follower_.grpc_address);
  ASSERT_EQ(release.code, 0) << Describe(release);
  EXPECT_EQ(Json(release)["release"]["version"], "1.4.0");
}

TEST_F(CliControllerTest, NoControllerAnsweringExits69) {
  const std::string leader = leader_.grpc_address, follower = follower_.grpc_address;
  StopReplica(follower_);
  StopReplica(leader_);
  for (const char* output : {"table", "json"}) {
    CliResult r = Hoist({"status", "-d", "shop", "--output", output}, absl::StrCat(leader, ",", follower));
    EXPECT_EQ(r.code, kExitUnavailable) << output << ": " << Describe(r);
    EXPECT_THAT(r.err, AllOf(HasSubstr(leader), HasSubstr(follower), HasSubstr("not reachable"),
                             HasSubstr("is hoistd running?")))
        << output;
    EXPECT_THAT(r.out, IsEmpty()) << output;
  }
  CliResult write = Hoist({"apply", WriteFile("stack.yaml", kStack)}, leader);
  EXPECT_EQ(write.code, kExitUnavailable) << Describe(write);
}

// hoistd's HTTP endpoints, on the leader and on the follower.

TEST_F(CliControllerTest, HealthReportsEachReplicasRole) {
  auto leader = Get(leader_, "/health");
  auto follower = Get(follower_, "/health");
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_TRUE(follower.ok()) << follower.status();
  ASSERT_EQ(leader->status, 200) << leader->body;
  ASSERT_EQ(follower->status, 200) << follower->body;
  auto l = nlohmann::json::parse(leader->body, nullptr, false);
  auto f = nlohmann::json::parse(follower->body, nullptr, false);
  ASSERT_TRUE(l.is_object()) << leader->body;
  ASSERT_TRUE(f.is_object()) << follower->body;
  for (const auto* j : {&l, &f}) {
    EXPECT_EQ((*j)["status"], "ok") << j->dump();
    EXPECT_EQ((*j)["version"], HOIST_VERSION) << j->dump();
    EXPECT_EQ((*j)["database"], "ok") << j->dump();
    EXPECT_EQ((*j)["agents_connected"], 0) << j->dump();
    EXPECT_TRUE((*j)["epoch"].is_number_unsigned()) << j->dump();
  }
  EXPECT_EQ(l["role"], "leader");
  EXPECT_EQ(f["role"], "follower");
  EXPECT_EQ(l["replica_id"], "hoistd-1");
  EXPECT_EQ(f["replica_id"], "hoistd-2");
  EXPECT_GE(l["epoch"].get<uint64_t>(), 1u);
  // The follower reports the epoch of the leader it follows.
  EXPECT_EQ(f["epoch"], l["epoch"]);

  auto missing = Get(leader_, "/nope");
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->status, 404);
}

TEST_F(CliControllerTest, HealthTurnsDegradedWhenPostgresIsGone) {
  ASSERT_TRUE(cluster_->Stop().ok());
  auto resp = Get(leader_, "/health");
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->status, 503) << resp->body;
  auto j = nlohmann::json::parse(resp->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << resp->body;
  EXPECT_EQ(j["status"], "degraded");
  EXPECT_EQ(j["database"], "unreachable");
}

// The value of an unlabelled sample in Prometheus text, or "" when absent.
std::string Sample(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, absl::MaxSplits(' ', 1));
    if (kv.first == name) return std::string(kv.second);
  }
  return "";
}

TEST_F(CliControllerTest, MetricsArePrometheusText) {
  auto leader = Get(leader_, "/metrics");
  auto follower = Get(follower_, "/metrics");
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_TRUE(follower.ok()) << follower.status();
  ASSERT_EQ(leader->status, 200);
  ASSERT_EQ(follower->status, 200);

  // Every line is a comment (# HELP / # TYPE) or `name{labels} value`.
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? )"
                          R"((-?[0-9.]+([eE][-+]?[0-9]+)?|[-+]Inf|NaN)$)");
  const std::regex meta(R"(^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped))$)");
  for (absl::string_view line : absl::StrSplit(leader->body, '\n', absl::SkipEmpty())) {
    std::string l(line);
    EXPECT_TRUE(std::regex_match(l, sample) || std::regex_match(l, meta)) << "not Prometheus text: " << l;
  }
  EXPECT_THAT(leader->body, AllOf(HasSubstr("# TYPE hoist_leader gauge\n"),
                                  HasSubstr("# TYPE hoist_step_duration_seconds histogram\n"),
                                  HasSubstr("hoist_step_duration_seconds_bucket{le=\"+Inf\"} 0\n"),
                                  HasSubstr("hoist_step_duration_seconds_count 0\n")));
  EXPECT_EQ(Sample(leader->body, "hoist_leader"), "1");
  EXPECT_EQ(Sample(follower->body, "hoist_leader"), "0");
  EXPECT_EQ(Sample(leader->body, "hoist_agents_connected"), "0");
  EXPECT_NE(Sample(leader->body, "hoist_leader_epoch"), "0");
  EXPECT_EQ(Sample(follower->body, "hoist_leader_epoch"), "0");
}

}  // namespace
}  // namespace hoist::testing

// Rollouts end to end: a throw-away Postgres, real hoistd processes, three
// real hoist-agent processes (three "hosts" sharing this machine's Docker,
// each limited to the test's deployment), the fixture's loopback registry
// and FROM-scratch testsvc images, driven through the OperatorService API
// as the CLI would. The stack is api x2, worker x3, scheduler, web, the
// HAProxy proxy in front of web, and a Postgres database (built FROM scratch
// out of this host's Postgres by deploy/build-postgres-image.sh) that the
// API's migrations change: the api images carry psql and their release's
// /migrations.sql, and the migration job runs it against the database over
// the deployment's network. Each test has a deployment and agent ids of its
// own, and a HoistFleet (tests/fixtures/hoist_fleet.h) that stops every
// process it started (by pid) and removes the deployment's containers (by
// the hoist.deployment label), failed or not.

#include <signal.h>

#include <optional>
#include <unistd.h>

#include <functional>
#include <future>
#include <tuple>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hoist/v1/operator.grpc.pb.h"
#include "shared/proto_names.h"
#include "shared/http_client.h"
#include "shared/labels.h"
#include "shared/subprocess.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_test.h"
#include "tests/fixtures/reference_stack.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;
using Stub = hoist::v1::OperatorService::Stub;

// DEPLOYMENT, REGISTRY, HOST (the agent id prefix), DB_IMAGE and
// PROXY_IMAGE are replaced per test. The api image's entrypoint is testsvc,
// whose `exec` runs the psql the image carries.
constexpr char kStack[] = R"(deployment: DEPLOYMENT
network: DEPLOYMENT
hosts:
  - id: HOST-1
    labels: {tier: app}
  - id: HOST-2
    labels: {tier: app}
  - id: HOST-3
    labels: {tier: edge}
services:
  db:
    role: database
    image: DB_IMAGE
    placement:
      hosts: [HOST-1]
    health:
      command: [/usr/lib/postgresql/15/bin/psql, -At, -c, select 1]
      interval: 200ms
      deadline: 30s
    stop_timeout: 10s
  api:
    role: api
    repository: REGISTRY/hoist-test/api
    replicas: 2
    placement:
      labels: {tier: app}
      distinct_hosts: true
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      timeout: 1s
      deadline: 10s
    stop_timeout: 2s
    migration:
      command: [exec, /usr/lib/postgresql/15/bin/psql, -h, db, -v, ON_ERROR_STOP=1, --single-transaction, -f, /migrations.sql]
      timeout: 1m
  worker:
    role: worker
    repository: REGISTRY/hoist-test/worker
    replicas: 3
    placement:
      labels: {tier: app}
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      deadline: 20s
    stop_timeout: 2s
    rolling:
      max_parallel: 1
      pause: 300ms
  scheduler:
    role: scheduler
    repository: REGISTRY/hoist-test/scheduler
    placement:
      hosts: [HOST-1]
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080}
      interval: 200ms
      deadline: 20s
    stop_timeout: 2s
  web:
    role: web
    repository: REGISTRY/hoist-test/web
    placement:
      hosts: [HOST-3]
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      deadline: 20s
    stop_timeout: 2s
  proxy:
    role: proxy
    image: PROXY_IMAGE
    placement:
      hosts: [HOST-3]
    ports:
      - {container: 8080, host_ip: 127.0.0.1}
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
    drain_timeout: 2s
    health:
      tcp: {port: 8080}
      interval: 200ms
      deadline: 30s
    stop_timeout: 2s
backup:
  postgres: {service: db, database: postgres, user: app}
)";

// kMigration100 and kMigration110 (tests/fixtures/reference_stack.h) are the
// releases' migrations; this broken one changes the database and then fails,
// inside psql's single transaction.
constexpr char kBrokenMigration[] =
    "CREATE TABLE half_done (x int);\n"
    "UPDATE items SET v = 'half-migrated' WHERE id = 1;\n"
    "SELECT 1 / 0 AS migration_0042;\n";

// The services versioned by releases.
const std::vector<std::string> kServices = {"api", "worker", "scheduler", "web"};
const std::map<std::string, int> kReplicas = {{"api", 2}, {"worker", 3}, {"scheduler", 1}, {"web", 1}};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipWhitespace());
}

// A time as docker's --since takes it: seconds.nanoseconds since the epoch.
std::string DockerTimestamp(absl::Time t) {
  const int64_t ns = absl::ToUnixNanos(t);
  return absl::StrFormat("%d.%09d", ns / 1'000'000'000, ns % 1'000'000'000);
}

class RolloutE2eTest : public PostgresTest {
 protected:
  // A hoistd replica as the test talks to it; dead once the test killed it.
  struct Replica {
    std::string name;
    std::unique_ptr<Stub> stub;
    bool dead = false;
  };

  // One registry and one set of images for the whole suite.
  static void SetUpTestSuite() {
    auto env = DockerEnv::Start();
    if (!env.ok()) {
      *suite_status_ = env.status();
      return;
    }
    docker_ = env->release();
    if (absl::Status s = DockerEnv::PostgresImagePrerequisites(); !s.ok()) {
      *suite_status_ = s;
      return;
    }
    auto db = docker_->BuildPostgresImage("app");
    auto proxy = docker_->BuildProxyImage();
    if (!db.ok() || !proxy.ok()) {
      *suite_status_ = db.ok() ? proxy.status() : db.status();
      return;
    }
    *db_image_ = *db;
    *proxy_image_ = *proxy;
    // (name, version, env, migration): an api image sits on the database
    // image for its psql and carries its release's migration. Built in
    // parallel (each build is mostly the daemon's I/O).
    struct Image {
      std::string name, version;
      std::map<std::string, std::string> env;
      const char* migration = nullptr;
    };
    std::vector<Image> images;
    for (const char* version : {"1.0.0", "1.1.0"}) {
      for (const std::string& service : kServices) {
        const char* migration = nullptr;
        if (service == "api") migration = std::string(version) == "1.0.0" ? kMigration100 : kMigration110;
        images.push_back({service, version, {}, migration});
      }
    }
    // An API that never becomes healthy (/health answers 503), and one whose
    // migration fails half-way.
    images.push_back({"api-unhealthy", "1.1.0", {{"TESTSVC_UNHEALTHY", "1"}}, kMigration110});
    images.push_back({"api-broken", "1.1.0", {}, kBrokenMigration});
    std::vector<std::future<absl::StatusOr<std::string>>> builds;
    for (const Image& image : images) {
      builds.push_back(std::async(std::launch::async, [&image] {
        if (image.migration == nullptr) return docker_->BuildTestImage(image.name, image.version, image.env);
        return docker_->BuildTestImageOn(*db_image_, image.name, image.version, image.env,
                                         {{"/migrations.sql", image.migration}});
      }));
    }
    for (auto& b : builds) {
      absl::StatusOr<std::string> built = b.get();
      if (!built.ok() && suite_status_->ok()) *suite_status_ = built.status();
    }
  }

  static void TearDownTestSuite() {
    delete docker_;
    docker_ = nullptr;
  }

  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    HOIST_REQUIRE_REAL_PART(*suite_status_);
    static int counter = 0;
    deployment_ = absl::StrCat("e2e", getpid(), "x", ++counter);
  }

  // The fleet stops its processes (agents and controllers) and removes the
  // deployment's containers and network, failed or not.
  void TearDown() override {
    if (fleet_ == nullptr) return;
    fleet_->set_dump_logs_at_exit(HasFailure());
    fleet_.reset();
    auto left =
        docker_->Docker({"ps", "-aq", "--filter", absl::StrCat("label=", labels::kDeployment, "=", deployment_)});
    EXPECT_TRUE(left.ok() && Lines(*left).empty()) << "the test's containers were not removed: "
                                                   << (left.ok() ? *left : std::string(left.status().message()));
  }

  std::string Host(int i) const { return absl::StrCat(deployment_, "-host-", i); }

  std::string Stack() const {
    return absl::StrReplaceAll(kStack, {{"DEPLOYMENT", deployment_},
                                        {"REGISTRY", docker_->registry()},
                                        {"HOST", absl::StrCat(deployment_, "-host")},
                                        {"DB_IMAGE", *db_image_},
                                        {"PROXY_IMAGE", *proxy_image_}});
  }

  std::string Image(const std::string& name, const std::string& version) const {
    return absl::StrCat(docker_->registry(), "/hoist-test/", name, ":", version);
  }

  // Kills replica `r` (SIGKILL, as a crash would) and waits until it has ended.
  void Kill(Replica* r) {
    const absl::Status stopped = fleet_->Stop(r->name, SIGKILL);
    r->dead = true;
    ASSERT_TRUE(stopped.ok()) << stopped;
  }

  // A read from the first replica that answers.
  template <typename Req, typename Resp>
  grpc::Status Read(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req,
                    Resp* resp) {
    grpc::Status last(grpc::StatusCode::UNAVAILABLE, "no replica");
    for (const auto& r : replicas_) {
      if (r->dead) continue;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      last = ((*r->stub).*method)(&ctx, req, resp);
      if (last.ok()) return last;
    }
    return last;
  }

  // A write to the leader: the replica that does not answer "not the leader"
  // (UNAVAILABLE), retried while a failover settles.
  template <typename Req, typename Resp>
  grpc::Status Write(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req,
                     Resp* resp) {
    grpc::Status last(grpc::StatusCode::UNAVAILABLE, "no replica");
    Eventually(
        absl::Seconds(20),
        [&] {
          for (const auto& r : replicas_) {
            if (r->dead) continue;
            grpc::ClientContext ctx;
            ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
            last = ((*r->stub).*method)(&ctx, req, resp);
            if (last.error_code() != grpc::StatusCode::UNAVAILABLE) return true;
          }
          return false;
        },
        absl::Milliseconds(200));
    return last;
  }

  void ApplyStack() {
    hoist::v1::ApplyStackRequest req;
    req.set_manifest_yaml(Stack());
    req.set_file_name("stack.yaml");
    hoist::v1::ApplyStackResponse resp;
    grpc::Status s = Write(&Stub::ApplyStack, req, &resp);
    ASSERT_TRUE(s.ok()) << "ApplyStack: " << s.error_message();
  }

  void CreateRelease(const std::string& version, const std::map<std::string, std::string>& image_names = {}) {
    hoist::v1::CreateReleaseRequest req;
    req.mutable_release()->set_deployment(deployment_);
    req.mutable_release()->set_version(version);
    for (const std::string& s : kServices) {
      auto it = image_names.find(s);
      (*req.mutable_release()->mutable_images())[s] = Image(it == image_names.end() ? s : it->second, version);
    }
    hoist::v1::CreateReleaseResponse resp;
    grpc::Status s = Write(&Stub::CreateRelease, req, &resp);
    ASSERT_TRUE(s.ok()) << "CreateRelease " << version << ": " << s.error_message();
  }

  absl::StatusOr<std::string> StartRollout(const std::string& version) {
    hoist::v1::StartRolloutRequest req;
    req.set_deployment(deployment_);
    req.set_target_version(version);
    hoist::v1::StartRolloutResponse resp;
    grpc::Status s = Write(&Stub::StartRollout, req, &resp);
    if (!s.ok()) return absl::FailedPreconditionError(absl::StrCat("StartRollout ", version, ": ", s.error_message()));
    return resp.rollout().id();
  }

  absl::StatusOr<hoist::v1::Rollout> GetRollout(const std::string& id) {
    hoist::v1::GetRolloutRequest req;
    req.set_id(id);
    hoist::v1::GetRolloutResponse resp;
    grpc::Status s = Read(&Stub::GetRollout, req, &resp);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return resp.rollout();
  }

  // Polls the rollout until it ends; the last state seen otherwise.
  hoist::v1::Rollout WaitRollout(const std::string& id, absl::Duration timeout = absl::Seconds(90)) {
    hoist::v1::Rollout last;
    const bool done = Eventually(
        timeout,
        [&] {
          auto r = GetRollout(id);
          if (r.ok()) last = *r;
          return r.ok() && IsTerminal(r->state());
        },
        absl::Milliseconds(200));
    EXPECT_TRUE(done) << "rollout " << id << " did not end within " << timeout << "; last state "
                      << hoist::v1::RolloutState_Name(last.state()) << "\n"
                      << Describe(last);
    return last;
  }

  static std::string Describe(const hoist::v1::Rollout& r) {
    std::string out;
    for (const auto& ph : r.plan().phases()) {
      for (const auto& st : ph.steps()) {
        absl::StrAppend(&out, "  ", ph.name(), " ", hoist::v1::StepState_Name(st.state()), " ", st.description(),
                        st.error().empty() ? "" : " -- " + st.error(), "\n");
      }
    }
    return out;
  }

  hoist::v1::GetVersionMatrixResponse Matrix() {
    hoist::v1::GetVersionMatrixRequest req;
    req.set_deployment(deployment_);
    hoist::v1::GetVersionMatrixResponse resp;
    grpc::Status s = Read(&Stub::GetVersionMatrix, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // service -> (version -> running instances), from the matrix.
  std::map<std::string, std::map<std::string, int>> MatrixVersions(const hoist::v1::GetVersionMatrixResponse& m) {
    std::map<std::string, std::map<std::string, int>> out;
    for (const auto& c : m.cells()) out[c.service()][c.version()] += static_cast<int>(c.instances());
    return out;
  }

  // Waits until the matrix shows every service at `version` with its
  // replica count, all healthy (inventories arrive shortly after steps).
  bool WaitMatrixAt(const std::string& version, hoist::v1::GetVersionMatrixResponse* last) {
    return Eventually(
        absl::Seconds(30),
        [&] {
          *last = Matrix();
          auto v = MatrixVersions(*last);
          for (const auto& [service, n] : kReplicas) {
            if (v[service].size() != 1 || v[service][version] != n) return false;
          }
          for (const auto& c : last->cells()) {
            if (c.healthy() != c.instances()) return false;
          }
          return true;
        },
        absl::Milliseconds(200));
  }

  // Running containers of a service at a version, from Docker itself.
  std::vector<std::string> RunningContainers(const std::string& service, const std::string& version) {
    auto out = docker_->Docker({"ps", "--filter", absl::StrCat("label=", labels::kDeployment, "=", deployment_),
                                "--filter", absl::StrCat("label=", labels::kService, "=", service), "--filter",
                                absl::StrCat("label=", labels::kVersion, "=", version), "--format", "{{.Names}}"});
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? Lines(*out) : std::vector<std::string>{};
  }

  // Runs SQL in the deployment's database container with its psql; the
  // unaligned, tuples-only output.
  absl::StatusOr<std::string> Sql(const std::string& sql) {
    auto names = docker_->Docker({"ps", "--filter", absl::StrCat("label=", labels::kDeployment, "=", deployment_),
                                  "--filter", absl::StrCat("label=", labels::kService, "=db"), "--format",
                                  "{{.Names}}"});
    if (!names.ok()) return names.status();
    if (Lines(*names).size() != 1) return absl::NotFoundError(absl::StrCat("db containers: [", *names, "]"));
    auto out = docker_->Docker({"exec", Lines(*names)[0], "/usr/lib/postgresql/15/bin/psql", "-At", "-v",
                                "ON_ERROR_STOP=1", "-c", sql});
    if (!out.ok()) return out.status();
    return std::string(absl::StripTrailingAsciiWhitespace(*out));
  }

  // What the proxy's web route answers on /version.
  absl::StatusOr<std::string> ThroughProxy() {
    auto names = docker_->Docker({"ps", "--filter", absl::StrCat("label=", labels::kDeployment, "=", deployment_),
                                  "--filter", absl::StrCat("label=", labels::kService, "=proxy"), "--format",
                                  "{{.Names}}"});
    if (!names.ok()) return names.status();
    if (Lines(*names).size() != 1) return absl::NotFoundError(absl::StrCat("proxy containers: [", *names, "]"));
    auto port = docker_->Docker({"port", Lines(*names)[0], "8080/tcp"});
    if (!port.ok()) return port.status();
    std::string hostport = Lines(*port).at(0);
    auto got = HttpGet(absl::StrCat("http://127.0.0.1:", hostport.substr(hostport.rfind(':') + 1), "/version"),
                       absl::Seconds(3));
    if (!got.ok()) return got.status();
    if (got->status != 200) return absl::UnavailableError(absl::StrCat("HTTP ", got->status, ": ", got->body));
    return std::string(absl::StripTrailingAsciiWhitespace(got->body));
  }

  // Deploys 1.0.0 of the applied stack and waits until the matrix shows it.
  void Deploy100() {
    CreateRelease("1.0.0");
    auto id = StartRollout("1.0.0");
    ASSERT_TRUE(id.ok()) << id.status();
    hoist::v1::Rollout r = WaitRollout(*id);
    ASSERT_EQ(r.state(), hoist::v1::ROLLOUT_STATE_SUCCEEDED) << r.error() << "\n" << Describe(r);
    hoist::v1::GetVersionMatrixResponse m;
    ASSERT_TRUE(WaitMatrixAt("1.0.0", &m)) << "the matrix should show 1.0.0 everywhere, healthy:\n" << m.DebugString();
  }

  // Controllers and three agents that know them all: hoistd-1 starts alone
  // and leads, the others stand by for it. Then the stack, a write only the
  // leader takes.
  void StartFleet(int controllers) {
    auto fleet = HoistFleet::Start(
        docker_, cluster_.get(),
        {.deployment = deployment_,
         .agents = {{Host(1), "tier=app"}, {Host(2), "tier=app"}, {Host(3), "tier=edge"}},
         .connect_timeout = absl::Seconds(30),
         .controllers = controllers,
         .first_replica_leads = true,
         // The run label on every container and network the agents make, for DockerEnv's cleanup.
         .agent_flags = {"--object-labels", docker_->label()}});
    ASSERT_TRUE(fleet.ok()) << "the controllers and the three agents did not start: " << fleet.status();
    fleet_ = std::move(*fleet);
    for (int i = 0; i < controllers; ++i) {
      auto r = std::make_unique<Replica>();
      r->name = absl::StrCat("hoistd-", i + 1);
      r->stub = hoist::v1::OperatorService::NewStub(
          grpc::CreateChannel(fleet_->replica_address(i), grpc::InsecureChannelCredentials()));
      replicas_.push_back(std::move(r));
    }
    ASSERT_NO_FATAL_FAILURE(ApplyStack());
  }

  static inline DockerEnv* docker_ = nullptr;
  static inline absl::Status* const suite_status_ = new absl::Status();
  static inline std::string* const db_image_ = new std::string();
  static inline std::string* const proxy_image_ = new std::string();

  std::string deployment_;
  std::unique_ptr<HoistFleet> fleet_;
  std::vector<std::unique_ptr<Replica>> replicas_;
};

TEST_F(RolloutE2eTest, UpgradeMovesEveryServiceTo110WithoutSkew) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  ASSERT_NO_FATAL_FAILURE(Deploy100());
  CreateRelease("1.1.0");
  auto id = StartRollout("1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();
  hoist::v1::Rollout r = WaitRollout(*id);
  ASSERT_EQ(r.state(), hoist::v1::ROLLOUT_STATE_SUCCEEDED) << r.error() << "\n" << Describe(r);

  hoist::v1::GetVersionMatrixResponse m;
  ASSERT_TRUE(WaitMatrixAt("1.1.0", &m)) << "the matrix should show 1.1.0 everywhere, healthy:\n" << m.DebugString();
  EXPECT_EQ(m.pinned_version(), "1.1.0");
  for (const auto& c : m.cells()) EXPECT_FALSE(c.skew()) << c.service() << " on " << c.agent_id() << " skews";
  // The pulls recorded each image's registry digest in the release, and
  // every instance runs that content.
  hoist::v1::GetReleaseRequest rreq;
  rreq.set_deployment(deployment_);
  rreq.set_version("1.1.0");
  hoist::v1::GetReleaseResponse rresp;
  ASSERT_TRUE(Read(&Stub::GetRelease, rreq, &rresp).ok());
  for (const char* service : {"api", "worker", "scheduler", "web"}) {
    ASSERT_TRUE(rresp.release().digests().contains(service)) << service << ": " << rresp.release().DebugString();
    EXPECT_THAT(rresp.release().digests().at(service), ::testing::StartsWith("sha256:"));
  }
  for (const auto& c : m.cells()) {
    EXPECT_FALSE(c.digest_drift()) << c.service() << " on " << c.agent_id();
    if (rresp.release().digests().contains(c.service())) {
      EXPECT_EQ(c.image_digest(), rresp.release().digests().at(c.service())) << c.service() << " on " << c.agent_id();
    }
  }
  EXPECT_THAT(m.violations(), ::testing::IsEmpty());
  for (const auto& [service, n] : kReplicas) {
    EXPECT_EQ(RunningContainers(service, "1.1.0").size(), static_cast<size_t>(n)) << service;
    EXPECT_THAT(RunningContainers(service, "1.0.0"), ::testing::IsEmpty()) << service << " 1.0.0 still runs";
  }
  // 1.1.0's migration ran against the database; the proxy sends web's traffic to 1.1.0.
  EXPECT_EQ(Sql("SELECT v || '/' || note FROM items WHERE id = 1").value_or("(error)"), "changed by 1.1.0/new in 1.1.0");
  EXPECT_EQ(ThroughProxy().value_or("(error)"), "1.1.0");
}

TEST_F(RolloutE2eTest, FailedMigrationStopsTheUpgradeAndTheOldReleaseKeepsRunning) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  ASSERT_NO_FATAL_FAILURE(Deploy100());
  // This 1.1.0's migration creates a table and changes a row, then fails.
  CreateRelease("1.1.0", {{"api", "api-broken"}});
  auto id = StartRollout("1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();
  hoist::v1::Rollout r = WaitRollout(*id);
  ASSERT_EQ(r.state(), hoist::v1::ROLLOUT_STATE_FAILED) << Describe(r);
  EXPECT_THAT(r.error(), HasSubstr("exit code"));
  EXPECT_THAT(r.error(), HasSubstr("division by zero")) << "psql's error, from the job's log tail, should be in it";
  EXPECT_FALSE(r.rollback_command().empty());
  for (const auto& ph : r.plan().phases()) {
    for (const auto& st : ph.steps()) {
      if (st.state() == hoist::v1::STEP_STATE_FAILED) {
        EXPECT_EQ(st.kind(), "run_job") << "only the migration should fail: " << st.description();
      }
    }
  }

  // Nothing moved: api and workers run 1.0.0, per the matrix and per Docker;
  // the scheduler, stopped before the gate, runs 1.0.0 again; 1.0.0 is pinned.
  // The matrix is the agents' inventories, which follow the steps by up to an
  // inventory interval: the scheduler started again at the very end shows
  // once its host has reported (the assertions below say what, if not).
  hoist::v1::GetVersionMatrixResponse matrix;
  WaitMatrixAt("1.0.0", &matrix);
  auto versions = MatrixVersions(matrix);
  for (const std::string service : {"api", "worker", "scheduler"}) {
    EXPECT_EQ(versions[service], (std::map<std::string, int>{{"1.0.0", kReplicas.at(service)}})) << service;
    EXPECT_EQ(RunningContainers(service, "1.0.0").size(), static_cast<size_t>(kReplicas.at(service))) << service;
    EXPECT_THAT(RunningContainers(service, "1.1.0"), ::testing::IsEmpty()) << service;
  }
  // And the database is as 1.0.0 left it.
  EXPECT_EQ(Sql("SELECT v FROM items WHERE id = 1").value_or("(error)"), "seeded by 1.0.0");
  EXPECT_EQ(Sql("SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'").value_or("(error)"), "0");
  EXPECT_EQ(ThroughProxy().value_or("(error)"), "1.0.0");
  EXPECT_THAT(r.error(), HasSubstr("put back as before"));
  EXPECT_THAT(r.error(), HasSubstr("start scheduler replica 0 (1.0.0)"));
  hoist::v1::GetDeploymentRequest get;
  get.set_name(deployment_);
  hoist::v1::GetDeploymentResponse got;
  ASSERT_TRUE(Read(&Stub::GetDeployment, get, &got).ok());
  EXPECT_EQ(got.deployment().pinned_version(), "1.0.0") << "a failed gate leaves the old release pinned";
}

TEST_F(RolloutE2eTest, RollbackWithRestoreBringsTheDataBackAsItWasBeforeTheUpgrade) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  ASSERT_NO_FATAL_FAILURE(Deploy100());
  ASSERT_EQ(Sql("SELECT v FROM items WHERE id = 1").value_or("(error)"), "seeded by 1.0.0");
  ASSERT_TRUE(Sql("INSERT INTO items VALUES (2, 'written at 1.0.0')").ok());
  CreateRelease("1.1.0");
  auto id = StartRollout("1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();
  hoist::v1::Rollout up = WaitRollout(*id);
  ASSERT_EQ(up.state(), hoist::v1::ROLLOUT_STATE_SUCCEEDED) << up.error() << "\n" << Describe(up);
  ASSERT_EQ(Sql("SELECT v || '/' || note FROM items WHERE id = 1").value_or("(error)"), "changed by 1.1.0/new in 1.1.0");
  ASSERT_TRUE(Sql("INSERT INTO items VALUES (3, 'written at 1.1.0')").ok());

  // The backup the upgrade took before it changed anything.
  hoist::v1::ListBackupsRequest list;
  list.set_deployment(deployment_);
  hoist::v1::ListBackupsResponse backups;
  ASSERT_TRUE(Read(&Stub::ListBackups, list, &backups).ok());
  std::string backup_id;
  for (const auto& b : backups.backups()) {
    if (b.rollout_id() != *id) continue;
    backup_id = b.id();
    EXPECT_TRUE(b.verified()) << b.DebugString();
    for (const auto& a : b.artifacts()) {
      if (a.kind() == "postgres") {
        EXPECT_THAT(a.verified_by(), HasSubstr("pg_restore --list reads")) << a.path();
      }
    }
  }
  ASSERT_FALSE(backup_id.empty()) << "the upgrade should have recorded its backup:\n" << backups.DebugString();

  // A migration ran since: a rollback without the restore is refused, and so
  // is one whose confirmation is not the deployment's name.
  hoist::v1::RollbackRequest rb;
  rb.set_deployment(deployment_);
  hoist::v1::RollbackResponse rb_resp;
  grpc::Status refused = Write(&Stub::Rollback, rb, &rb_resp);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error_message(), HasSubstr(backup_id)) << "the refusal should name the backup to restore";
  rb.set_restore_backup_id(backup_id);
  rb.set_confirm_name("not-the-deployment");
  refused = Write(&Stub::Rollback, rb, &rb_resp);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr(absl::StrCat("--confirm ", deployment_)));

  rb.set_confirm_name(deployment_);
  grpc::Status started = Write(&Stub::Rollback, rb, &rb_resp);
  ASSERT_TRUE(started.ok()) << started.error_message();
  hoist::v1::Rollout back = WaitRollout(rb_resp.rollout().id());
  ASSERT_EQ(back.state(), hoist::v1::ROLLOUT_STATE_SUCCEEDED) << back.error() << "\n" << Describe(back);

  hoist::v1::GetVersionMatrixResponse m;
  ASSERT_TRUE(WaitMatrixAt("1.0.0", &m)) << "the matrix should show 1.0.0 everywhere, healthy:\n" << m.DebugString();
  EXPECT_EQ(m.pinned_version(), "1.0.0");
  // The data is as it was when the backup was taken: 1.1.0's change and
  // column are gone, the row written before the upgrade is back, the one
  // written after it is not.
  EXPECT_EQ(Sql("SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM items").value_or("(error)"),
            "1=seeded by 1.0.0,2=written at 1.0.0");
  EXPECT_EQ(Sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'")
                .value_or("(error)"),
            "0");
  EXPECT_EQ(ThroughProxy().value_or("(error)"), "1.0.0");

  // Upgrading to 1.1.0 again takes a backup of its own: the first one, which
  // the rollback used, is kept under its id.
  auto again = StartRollout("1.1.0");
  ASSERT_TRUE(again.ok()) << again.status();
  hoist::v1::Rollout up2 = WaitRollout(*again);
  ASSERT_EQ(up2.state(), hoist::v1::ROLLOUT_STATE_SUCCEEDED) << up2.error() << "\n" << Describe(up2);
  ASSERT_TRUE(Read(&Stub::ListBackups, list, &backups).ok());
  std::set<std::string> ids;
  for (const auto& b : backups.backups()) {
    if (b.rollout_id() == *id || b.rollout_id() == *again) ids.insert(b.id());
  }
  EXPECT_EQ(ids.size(), 2u) << backups.DebugString();
  EXPECT_TRUE(ids.contains(backup_id));
}

TEST_F(RolloutE2eTest, ApiThatNeverBecomesHealthyFailsTheUpgradeAndTheOldApiStillServes) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(1));
  ASSERT_NO_FATAL_FAILURE(Deploy100());
  CreateRelease("1.1.0", {{"api", "api-unhealthy"}});
  auto id = StartRollout("1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();
  hoist::v1::Rollout r = WaitRollout(*id);
  ASSERT_EQ(r.state(), hoist::v1::ROLLOUT_STATE_FAILED) << Describe(r);
  EXPECT_THAT(r.error(), HasSubstr("api"));

  // Both old API containers still run and answer 1.0.0 on their published ports.
  std::vector<std::string> old_api = RunningContainers("api", "1.0.0");
  ASSERT_EQ(old_api.size(), 2u) << "both 1.0.0 api containers should still run";
  for (const std::string& name : old_api) {
    auto port = docker_->Docker({"port", name, "8080/tcp"});
    ASSERT_TRUE(port.ok()) << port.status();
    std::string hostport = Lines(*port).at(0);
    hostport = hostport.substr(hostport.rfind(':') + 1);
    auto health = HttpGet(absl::StrCat("http://127.0.0.1:", hostport, "/health"), absl::Seconds(3));
    ASSERT_TRUE(health.ok()) << name << ": " << health.status();
    EXPECT_EQ(health->status, 200) << name;
    EXPECT_THAT(health->body, HasSubstr("\"version\":\"1.0.0\"")) << name;
  }
  auto versions = MatrixVersions(Matrix());
  EXPECT_EQ(versions["worker"], (std::map<std::string, int>{{"1.0.0", 3}})) << "workers must not move";
}

TEST_F(RolloutE2eTest, KilledLeaderMidRolloutIsReplacedAndTheRolloutSucceedsWithNoStepRunTwice) {
  ASSERT_NO_FATAL_FAILURE(StartFleet(2));  // hoistd-1 leads, hoistd-2 stands by
  ASSERT_NO_FATAL_FAILURE(Deploy100());
  CreateRelease("1.1.0");
  // A live subscription to Docker's create events from just before the
  // rollout starts: --since replays what came between that moment and the
  // subscription, so that no create is missed however late it opens.
  // Replaying the whole rollout afterwards would not do: the daemon keeps
  // only its last 256 events and other tests running beside this one push
  // them out.
  const std::string events_log = fleet_->dir() + "/create-events.log";
  auto watcher = Spawn({"docker", "events", "--since", DockerTimestamp(absl::Now()), "--filter", "type=container",
                        "--filter", "event=create", "--filter",
                        absl::StrCat("label=", labels::kDeployment, "=", deployment_), "--format",
                        "{{.Actor.Attributes.name}}"},
                       {.log_path = events_log});
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  auto id = StartRollout("1.1.0");
  ASSERT_TRUE(id.ok()) << id.status();

  // Wait, reading from the follower, until a worker is being replaced.
  Replica* leader = replicas_[0].get();
  Replica* follower = replicas_[1].get();
  bool in_workers = Eventually(
      absl::Seconds(60),
      [&] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        hoist::v1::GetRolloutRequest req;
        req.set_id(*id);
        hoist::v1::GetRolloutResponse resp;
        if (!follower->stub->GetRollout(&ctx, req, &resp).ok()) return false;
        for (const auto& ph : resp.rollout().plan().phases()) {
          if (!absl::StrContains(ph.name(), "worker")) continue;
          for (const auto& st : ph.steps()) {
            if (st.state() == hoist::v1::STEP_STATE_RUNNING && st.kind() != "pause") return true;
          }
        }
        return false;
      },
      absl::Milliseconds(200));
  ASSERT_TRUE(in_workers) << "the rollout never reached the worker phase";
  ASSERT_NO_FATAL_FAILURE(Kill(leader));

  hoist::v1::Rollout r = WaitRollout(*id);
  ASSERT_EQ(r.state(), hoist::v1::ROLLOUT_STATE_SUCCEEDED) << r.error() << "\n" << Describe(r);
  EXPECT_THAT(fleet_->Log(follower->name), HasSubstr(absl::StrCat("resuming rollout ", *id)))
      << "hoistd-2 should have taken over the rollout";
  hoist::v1::GetVersionMatrixResponse m;
  ASSERT_TRUE(WaitMatrixAt("1.1.0", &m)) << m.DebugString();

  // Every container of the upgrade was created exactly once (a step run
  // twice would create again); Docker's event log is the witness. A
  // container created now marks its end: a subscriber gets events in order.
  const std::string barrier = absl::StrCat(deployment_, "-events-barrier");
  auto made = docker_->Docker({"create", "--name", barrier, "--label",
                               absl::StrCat(labels::kDeployment, "=", deployment_), "--label", docker_->label(),
                               Image("api", "1.0.0")});
  EXPECT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE(EventuallyHolds(
      absl::StrCat("the create event of ", barrier, " in ", events_log), absl::Seconds(30),
      [&] { return ReadWholeFile(events_log); },
      [&](const std::string& log) { return absl::StrContains(log, barrier); }));
  ::kill(*watcher, SIGTERM);
  (void)WaitForExit(*watcher, absl::Seconds(5));
  (void)docker_->Docker({"rm", "-f", barrier});
  auto events = std::optional<std::string>(ReadWholeFile(events_log));
  std::map<std::string, int> created;
  for (const std::string& name : Lines(*events)) {
    if (name != barrier) ++created[name];
  }
  int instances = 0;
  for (const auto& [name, count] : created) {
    EXPECT_EQ(count, 1) << name << " was created " << count << " times";
    if (absl::StrContains(name, "1.1.0")) ++instances;
  }
  EXPECT_GE(instances, 7) << "every 1.1.0 instance should have been created:\n"
                          << absl::StrJoin(Lines(*events), "\n");
}

}  // namespace
}  // namespace hoist::testing

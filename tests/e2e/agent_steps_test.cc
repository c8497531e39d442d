// The agent's step executor against the machine's real Docker Engine, through
// the real DockerClient: pull with progress from the loopback registry,
// start, health probes passing and failing, stop, jobs exiting 0 and 1, a
// Postgres backup and restore, idempotence, fencing, an agent stopped
// mid-step and reconciled by the next one, and a foreign container left
// alone. Every container the executor creates carries the run label (through
// AgentPolicy::extra_labels), so DockerEnv removes it even when a test fails.
//
// The Postgres image: no public image can be pulled, so the test builds one
// FROM scratch out of this host's Postgres 15 with
// deploy/build-postgres-image.sh (through the DockerEnv fixture).

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "agent/container_names.h"
#include "agent/docker/docker_client.h"
#include "agent/file_util.h"
#include "agent/journal.h"
#include "agent/step_executor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/clock.h"
#include "shared/subprocess.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"

namespace hoist::agent {
namespace {

using ::hoist::testing::DockerEnv;
using ::testing::HasSubstr;

class AgentStepsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto env = DockerEnv::Start();
    if (!env.ok()) {
      *env_status_ = env.status();
      return;
    }
    env_ = env->release();
    for (auto [name, target, extra] :
         {std::tuple{"steps-app", app_image_, std::map<std::string, std::string>{}},
          std::tuple{"steps-sick", sick_image_, std::map<std::string, std::string>{{"TESTSVC_UNHEALTHY", "1"}}}}) {
      auto image = env_->BuildTestImage(name, "1.5.0", extra);
      if (!image.ok()) {
        *env_status_ = image.status();
        return;
      }
      *target = *image;
    }
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    HOIST_REQUIRE_REAL_PART(*env_status_);
    auto dir = testing::MakeOwnedTempDir("hoist-steps-e2e");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    docker_ = std::make_unique<docker::DockerClient>();
    // Names derive from the deployment: one per run keeps parallel runs apart.
    deployment_ = SanitizeContainerName(absl::StrCat("st", env_->run_id()));
    policy_.agent_id = "e2e-agent";
    policy_.backup_dir = dir_ + "/backups";
    policy_.extra_labels = {{std::string(DockerEnv::kRunLabel), env_->run_id()}};
    NewExecutor();
  }
  void TearDown() override {
    executor_.reset();
    journal_.reset();
    if (!dir_.empty()) testing::RemoveTree(dir_);
  }

  // An agent restart: new journal and executor on the same state directory.
  void NewExecutor() {
    executor_.reset();
    journal_.reset();
    auto journal = StepJournal::Open(dir_ + "/state");
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = std::move(*journal);
    executor_ = std::make_unique<StepExecutor>(docker_.get(), journal_.get(), policy_, RealClock::Get());
  }

  hoist::v1::Step NewStep(const std::string& id, uint64_t epoch = 3) {
    hoist::v1::Step step;
    step.set_step_id(absl::StrCat(id, "-", env_->run_id()));
    step.set_epoch(epoch);
    step.mutable_deadline()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Minutes(2)));
    return step;
  }

  hoist::v1::InstanceRef Instance(const std::string& service) {
    hoist::v1::InstanceRef ref;
    ref.set_deployment(deployment_);
    ref.set_service(service);
    return ref;
  }

  hoist::v1::Step StartStep(const std::string& id, const std::string& service, const std::string& image) {
    hoist::v1::Step step = NewStep(id);
    auto* start = step.mutable_start_instance();
    *start->mutable_instance() = Instance(service);
    start->set_version("1.5.0");
    start->mutable_spec()->set_image(image);
    auto* port = start->mutable_spec()->add_ports();
    port->set_container_port(8080);
    port->set_host_ip("127.0.0.1");
    return step;
  }

  hoist::v1::Step ProbeStep(const std::string& id, const std::string& service) {
    hoist::v1::Step step = NewStep(id);
    *step.mutable_probe_health()->mutable_instance() = Instance(service);
    auto* check = step.mutable_probe_health()->mutable_check();
    check->mutable_http()->set_path("/health");
    check->mutable_http()->set_port(8080);
    check->mutable_http()->set_expected_version("1.5.0");
    check->mutable_interval()->set_nanos(300'000'000);
    check->mutable_timeout()->set_seconds(1);
    check->mutable_deadline()->set_seconds(20);
    return step;
  }

  hoist::v1::Step JobStep(const std::string& id, std::vector<std::string> command) {
    hoist::v1::Step step = NewStep(id);
    auto* job = step.mutable_run_job();
    job->set_deployment(deployment_);
    job->set_name("migrate");
    job->set_version("1.5.0");
    job->mutable_spec()->set_image(*app_image_);
    for (auto& arg : command) job->mutable_spec()->add_command(arg);
    return step;
  }

  // Containers of this run carrying hoist.step=<step id>.
  int ContainersOfStep(const std::string& step_id) {
    auto list = docker_->List({absl::StrCat("hoist.step=", step_id), env_->label()});
    EXPECT_TRUE(list.ok()) << list.status();
    return list.ok() ? static_cast<int>(list->size()) : -1;
  }

  hoist::v1::StepResult RunStep(const hoist::v1::Step& step) { return executor_->Run(step, nullptr); }

  static inline DockerEnv* env_ = nullptr;
  static inline absl::Status* env_status_ = new absl::Status();
  static inline std::string* app_image_ = new std::string();
  static inline std::string* sick_image_ = new std::string();

  std::string dir_;
  std::string deployment_;
  std::unique_ptr<docker::DockerClient> docker_;
  AgentPolicy policy_;
  std::unique_ptr<StepJournal> journal_;
  std::unique_ptr<StepExecutor> executor_;
};

TEST_F(AgentStepsE2eTest, PullReportsProgressAndTheRegistryDigest) {
  auto image = env_->BuildTestImage("steps-pull", "1.5.0");
  ASSERT_TRUE(image.ok()) << image.status();
  // Built here, so present: remove it to make the pull fetch layers.
  ASSERT_TRUE(env_->Docker({"rmi", *image}).ok());
  hoist::v1::Step step = NewStep("pull");
  step.mutable_pull_image()->set_image(*image);
  std::vector<hoist::v1::StepProgress> progress;
  hoist::v1::StepResult result = executor_->Run(step, [&](const hoist::v1::StepProgress& p) { progress.push_back(p); });
  ASSERT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << result.message();
  EXPECT_THAT(result.pull().image_digest(), ::testing::StartsWith("sha256:"));
  ASSERT_FALSE(progress.empty()) << "a pull reports progress";
  EXPECT_TRUE(progress.back().has_pull());
  EXPECT_GT(progress.back().pull().layers_total(), 0u);
  auto inspected = docker_->InspectImage(*image);
  ASSERT_TRUE(inspected.ok()) << inspected.status();
  // The pulled image carries the run label from its build, so cleanup removes it.
  EXPECT_EQ(inspected->labels.count(std::string(DockerEnv::kRunLabel)), 1u);
}

TEST_F(AgentStepsE2eTest, StartProbeStopAndAReSentStepThatDoesNotRunTwice) {
  hoist::v1::Step start = StartStep("start", "app", *app_image_);
  hoist::v1::StepResult started = RunStep(start);
  ASSERT_EQ(started.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << started.message();
  EXPECT_THAT(started.start().address(), ::testing::StartsWith("127.0.0.1:"));
  auto before = docker_->Inspect(started.start().container_id());
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->labels.at("hoist.deployment"), deployment_);
  EXPECT_EQ(before->labels.at("hoist.step"), start.step_id());

  hoist::v1::StepResult probe = RunStep(ProbeStep("probe-ok", "app"));
  EXPECT_EQ(probe.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << probe.message();
  EXPECT_EQ(probe.probe().version(), "1.5.0");
  EXPECT_GE(probe.probe().attempts(), 1u);

  hoist::v1::StepResult again = RunStep(start);
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.start().container_id(), started.start().container_id());
  EXPECT_EQ(ContainersOfStep(start.step_id()), 1);
  auto after = docker_->Inspect(started.start().container_id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->started_at, before->started_at) << "the re-sent start did not restart the container";

  hoist::v1::Step stop = NewStep("stop");
  *stop.mutable_stop_instance()->mutable_instance() = Instance("app");
  stop.mutable_stop_instance()->mutable_timeout()->set_seconds(5);
  hoist::v1::StepResult stopped = RunStep(stop);
  EXPECT_EQ(stopped.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << stopped.message();
  auto exited = docker_->Inspect(started.start().container_id());
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->state, "exited");
}

TEST_F(AgentStepsE2eTest, ProbeOfAnUnhealthyInstanceFailsAtItsDeadline) {
  ASSERT_EQ(RunStep(StartStep("start-sick", "sick", *sick_image_)).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  hoist::v1::Step probe = ProbeStep("probe-sick", "sick");
  probe.mutable_probe_health()->mutable_check()->mutable_deadline()->set_seconds(3);
  std::vector<hoist::v1::StepProgress> progress;
  hoist::v1::StepResult result = executor_->Run(probe, [&](const hoist::v1::StepProgress& p) { progress.push_back(p); });
  EXPECT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_EQ(result.code(), static_cast<int>(absl::StatusCode::kDeadlineExceeded)) << result.message();
  EXPECT_GE(result.probe().attempts(), 2u);
  EXPECT_EQ(progress.size(), result.probe().attempts()) << "every attempt is reported";
  EXPECT_THAT(result.message(), HasSubstr("HTTP 503"));
}

TEST_F(AgentStepsE2eTest, JobsSucceedOnlyOnExitZero) {
  hoist::v1::StepResult ok = RunStep(JobStep("job-ok", {"job", "--exit-code", "0", "--print", "migrated 12 tables"}));
  EXPECT_EQ(ok.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << ok.message();
  EXPECT_EQ(ok.job().exit_code(), 0);
  EXPECT_THAT(ok.job().log_tail(), HasSubstr("migrated 12 tables"));

  hoist::v1::Step failing = JobStep("job-fail", {"job", "--exit-code", "1", "--print", "relation already exists"});
  failing.mutable_run_job()->set_remove_after(true);
  hoist::v1::StepResult failed = RunStep(failing);
  EXPECT_EQ(failed.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_EQ(failed.job().exit_code(), 1);
  EXPECT_THAT(failed.job().log_tail(), HasSubstr("relation already exists"));
  EXPECT_EQ(ContainersOfStep(failing.step_id()), 0) << "remove_after removed the job container";
}

TEST_F(AgentStepsE2eTest, AgentStoppedMidJobIsReconciledByTheNextOne) {
  hoist::v1::Step step = JobStep("job-long", {"job", "--sleep-ms", "3000", "--print", "done sleeping"});
  std::string name = JobContainerName(deployment_, "migrate", "1.5.0", step.step_id());
  hoist::v1::StepResult interrupted;
  std::thread runner([&] { interrupted = RunStep(step); });
  const bool running = testing::Eventually(absl::Seconds(30), [&] {
    auto info = docker_->Inspect(name);
    return info.ok() && info->state == "running";
  });
  executor_->Shutdown();
  runner.join();
  ASSERT_TRUE(running) << "the job container never ran";
  EXPECT_EQ(interrupted.code(), static_cast<int>(absl::StatusCode::kCancelled)) << interrupted.message();

  NewExecutor();
  auto results = executor_->Reconcile();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << (*results)[0].message();
  EXPECT_THAT((*results)[0].job().log_tail(), HasSubstr("done sleeping"));
  hoist::v1::StepResult resent = RunStep(step);
  EXPECT_TRUE(resent.replayed());
  EXPECT_EQ(ContainersOfStep(step.step_id()), 1) << "the job ran in one container only";
}

TEST_F(AgentStepsE2eTest, StaleEpochIsRefused) {
  hoist::v1::Step current = StartStep("start-epoch", "epoch", *app_image_);
  current.set_epoch(10);
  ASSERT_EQ(RunStep(current).outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED);
  hoist::v1::Step stale = NewStep("stop-stale", 9);
  *stale.mutable_stop_instance()->mutable_instance() = Instance("epoch");
  hoist::v1::StepResult result = RunStep(stale);
  EXPECT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_REFUSED);
  EXPECT_EQ(result.code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  auto list = docker_->List({absl::StrCat("hoist.deployment=", deployment_), "hoist.service=epoch"});
  ASSERT_TRUE(list.ok() && list->size() == 1u);
  EXPECT_EQ((*list)[0].state, "running") << "the stale stop touched nothing";
}

TEST_F(AgentStepsE2eTest, UnlabelledContainerWithTheSameNameIsLeftUntouched) {
  std::string name = InstanceContainerName(Instance("clash"), "1.5.0");
  // Carries the run label for cleanup, but none of Hoist's.
  auto created = env_->Docker({"create", "--name", name, "--label", env_->label(), *app_image_});
  ASSERT_TRUE(created.ok()) << created.status();
  hoist::v1::StepResult result = RunStep(StartStep("start-clash", "clash", *app_image_));
  EXPECT_EQ(result.outcome(), hoist::v1::STEP_OUTCOME_FAILED);
  EXPECT_EQ(result.code(), static_cast<int>(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(result.message(), HasSubstr("without Hoist's labels"));
  auto info = docker_->Inspect(name);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, "created") << "the foreign container was not started";
  EXPECT_EQ(info->labels.count("hoist.managed"), 0u);
}

TEST_F(AgentStepsE2eTest, VolumeBackupAndRestoreThroughAHelperContainer) {
  policy_.helper_image = *app_image_;
  NewExecutor();
  const std::string volume = absl::StrCat("hoist-e2e-", env_->run_id(), "-data");
  ASSERT_TRUE(docker_->CreateVolume(volume, {{std::string(DockerEnv::kRunLabel), env_->run_id()}}).ok());
  // A never-started container of the test's own, to put files into the volume and read them back.
  const std::string peek = absl::StrCat("hoist-e2e-", env_->run_id(), "-peek");
  ASSERT_TRUE(env_->Docker({"create", "--name", peek, "--label", env_->label(), "-v", volume + ":/data", *app_image_})
                  .ok());
  auto put = [&](const std::string& file, const std::string& content) {
    std::string host = absl::StrCat(dir_, "/", file);
    ASSERT_TRUE(WriteFileAtomic(host, content).ok());
    ASSERT_TRUE(env_->Docker({"cp", host, absl::StrCat(peek, ":/data/", file)}).ok());
  };
  auto get = [&](const std::string& file) -> std::string {
    std::string host = absl::StrCat(dir_, "/got-", file);
    testing::RemoveTree(host);
    if (!env_->Docker({"cp", absl::StrCat(peek, ":/data/", file), host}).ok()) return "(absent)";
    return *ReadFileToString(host);
  };
  put("hello.txt", "before the upgrade\n");

  hoist::v1::Step backup = NewStep("backup-volume");
  backup.mutable_backup()->set_deployment(deployment_);
  backup.mutable_backup()->set_backup_id("vol-1");
  backup.mutable_backup()->add_items()->mutable_volume()->set_volume(volume);
  hoist::v1::StepResult backed_up = RunStep(backup);
  ASSERT_EQ(backed_up.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << backed_up.message();
  const auto& artifact = backed_up.backup().artifacts(0);
  auto listing = RunCommand({"tar", "-tf", artifact.path()});
  ASSERT_TRUE(listing.ok() && listing->exit_code == 0);
  EXPECT_THAT(listing->stdout_text, HasSubstr("hoist-volume/hello.txt"));
  auto helpers = docker_->List({"hoist.helper=true", env_->label()});
  ASSERT_TRUE(helpers.ok());
  EXPECT_TRUE(helpers->empty()) << "the helper container is removed";

  put("hello.txt", "after a bad upgrade\n");
  hoist::v1::Step restore = NewStep("restore-volume");
  restore.mutable_restore()->set_deployment(deployment_);
  restore.mutable_restore()->set_backup_id("vol-1");
  *restore.mutable_restore()->add_artifacts() = artifact;
  hoist::v1::StepResult restored = RunStep(restore);
  ASSERT_EQ(restored.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << restored.message();
  EXPECT_EQ(get("hello.txt"), "before the upgrade\n");
}

TEST_F(AgentStepsE2eTest, PostgresBackupAndRestore) {
  HOIST_REQUIRE_REAL_PART(DockerEnv::PostgresImagePrerequisites());
  auto image = env_->BuildPostgresImage("shop");
  ASSERT_TRUE(image.ok()) << image.status();
  hoist::v1::Step start = NewStep("start-db");
  auto* s = start.mutable_start_instance();
  *s->mutable_instance() = Instance("db");
  s->set_version("15");
  s->mutable_spec()->set_image(*image);
  hoist::v1::StepResult started = RunStep(start);
  ASSERT_EQ(started.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << started.message();

  // Ready when psql answers (a command probe through exec).
  hoist::v1::Step ready = NewStep("probe-db");
  *ready.mutable_probe_health()->mutable_instance() = Instance("db");
  auto* check = ready.mutable_probe_health()->mutable_check();
  for (const char* arg : {"/usr/lib/postgresql/15/bin/psql", "-U", "shop", "-d", "postgres", "-c", "select 1"}) {
    check->mutable_command()->add_command(arg);
  }
  check->mutable_interval()->set_nanos(300'000'000);
  check->mutable_deadline()->set_seconds(30);
  hoist::v1::StepResult probe = RunStep(ready);
  ASSERT_EQ(probe.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << probe.message();

  const std::string id = started.start().container_id();
  auto psql = [&](const std::string& database, const std::string& sql) -> absl::StatusOr<std::string> {
    auto r = docker_->Exec(id, {"/usr/lib/postgresql/15/bin/psql", "-U", "shop", "-d", database, "-At",
                                "-v", "ON_ERROR_STOP=1", "-c", sql},
                           absl::Seconds(30));
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return absl::InternalError(r->output);
    return std::string(absl::StripAsciiWhitespace(r->output));
  };
  ASSERT_TRUE(psql("postgres", "CREATE DATABASE shopdb").ok());
  ASSERT_TRUE(psql("shopdb", "CREATE TABLE orders(id int primary key, item text); "
                             "INSERT INTO orders VALUES (1, 'anvil'), (2, 'rocket skates')")
                  .ok());

  hoist::v1::Step backup = NewStep("backup-db");
  backup.mutable_backup()->set_deployment(deployment_);
  backup.mutable_backup()->set_backup_id("pre-upgrade");
  auto* pg = backup.mutable_backup()->add_items()->mutable_postgres();
  *pg->mutable_instance() = Instance("db");
  pg->set_database("shopdb");
  pg->set_user("shop");
  hoist::v1::StepResult backed_up = RunStep(backup);
  ASSERT_EQ(backed_up.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << backed_up.message();
  ASSERT_EQ(backed_up.backup().artifacts_size(), 1);
  const auto& artifact = backed_up.backup().artifacts(0);
  auto on_disk = HashFile(artifact.path());
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(on_disk->sha256, artifact.sha256());
  EXPECT_GT(artifact.size_bytes(), 100u);
  EXPECT_EQ(ReadFileToString(artifact.path())->substr(0, 5), "PGDMP") << "a custom-format dump";
  // Checked once written: read back, and listed by pg_restore in the database's container.
  EXPECT_THAT(artifact.verified_by(), HasSubstr("sha256 and size read back from disk"));
  EXPECT_THAT(artifact.verified_by(), HasSubstr("1 table's data")) << artifact.verified_by();

  // The upgrade goes wrong...
  ASSERT_TRUE(psql("shopdb", "DELETE FROM orders WHERE id = 2; ALTER TABLE orders ADD COLUMN broken int").ok());

  hoist::v1::Step restore = NewStep("restore-db");
  restore.mutable_restore()->set_deployment(deployment_);
  restore.mutable_restore()->set_backup_id("pre-upgrade");
  *restore.mutable_restore()->add_artifacts() = artifact;
  *restore.mutable_restore()->mutable_database_instance() = Instance("db");
  restore.mutable_restore()->set_database_user("shop");
  hoist::v1::StepResult restored = RunStep(restore);
  ASSERT_EQ(restored.outcome(), hoist::v1::STEP_OUTCOME_SUCCEEDED) << restored.message();
  auto rows = psql("shopdb", "SELECT string_agg(id || ':' || item, ',' ORDER BY id) FROM orders");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, "1:anvil,2:rocket skates");
  auto columns = psql("shopdb", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders'");
  ASSERT_TRUE(columns.ok());
  EXPECT_EQ(*columns, "2") << "the column added after the backup is gone";
}

}  // namespace
}  // namespace hoist::agent

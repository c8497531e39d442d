// The Docker client against the machine's real Docker Engine and the
// fixture's loopback registry: pull, the container lifecycle, one-shot jobs,
// exec, archives of a volume and name clashes. Everything created carries the
// run label, so DockerEnv removes it even when a test fails half-way.

#include "agent/docker/docker_client.h"

#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/http_client.h"
#include "shared/labels.h"
#include "shared/subprocess.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/temp_dir.h"
#include "tests/fixtures/test_env.h"

namespace hoist::docker {
namespace {

using ::hoist::testing::DockerEnv;
using ::hoist::testing::Eventually;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class DockerClientE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto env = DockerEnv::Start();
    if (!env.ok()) {
      *env_status_ = env.status();
      return;
    }
    env_ = env->release();
    auto image = env_->BuildTestImage("dc-app", "1.0.0");
    if (!image.ok()) {
      *env_status_ = image.status();
      return;
    }
    *app_image_ = *image;
  }

  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    HOIST_REQUIRE_REAL_PART(*env_status_);
    client_ = std::make_unique<DockerClient>();
  }

  // A unique container or volume name for this run.
  static std::string Name(absl::string_view what) { return absl::StrCat("hoist-e2e-", env_->run_id(), "-", what); }

  // A spec every test starts from: the run label (for cleanup) and Hoist's.
  static ContainerSpec Spec(absl::string_view what, const std::string& image) {
    ContainerSpec spec;
    spec.name = Name(what);
    spec.image = image;
    spec.labels = {{std::string(DockerEnv::kRunLabel), env_->run_id()}, {std::string(labels::kManaged), "true"}};
    return spec;
  }

  // Polls Inspect until pred holds, Inspect fails or `within` passes; returns the last view.
  absl::StatusOr<ContainerInfo> InspectUntil(const std::string& id, const std::function<bool(const ContainerInfo&)>& pred,
                                             absl::Duration within) {
    absl::StatusOr<ContainerInfo> info = absl::UnknownError("not inspected");
    Eventually(
        within,
        [&] {
          info = client_->Inspect(id);
          return !info.ok() || pred(*info);
        },
        absl::Milliseconds(100));
    return info;
  }

  static DockerEnv* env_;
  static absl::Status* env_status_;
  static std::string* app_image_;
  std::unique_ptr<DockerClient> client_;
};

DockerEnv* DockerClientE2eTest::env_ = nullptr;
absl::Status* DockerClientE2eTest::env_status_ = new absl::Status();
std::string* DockerClientE2eTest::app_image_ = new std::string();

TEST_F(DockerClientE2eTest, NegotiatesWithTheRealDaemon) {
  auto version = client_->Version();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_FALSE(version->empty());
  auto api = client_->ApiVersion();
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_THAT(*api, StartsWith("1.4"));
}

TEST_F(DockerClientE2eTest, PullsFromTheLocalRegistryWithProgress) {
  // Every test image shares testsvc's layer with the images already on this
  // machine, which a pull reports as "Already exists". A layer of random
  // bytes unique to this run is really downloaded.
  auto dir = hoist::testing::MakeOwnedTempDir("hoist-e2e-pull");
  ASSERT_TRUE(dir.ok()) << dir.status();
  {
    std::mt19937 random(std::random_device{}());
    std::ofstream out(*dir + "/unique.bin", std::ios::binary);
    for (int i = 0; i < 64 * 1024; ++i) {
      uint32_t word = random();
      out.write(reinterpret_cast<const char*>(&word), sizeof(word));
    }
  }
  auto image = env_->BuildImage("dc-pull", "2.0.0",
                                absl::StrCat("FROM ", *app_image_, "\nCOPY unique.bin /unique.bin\n"),
                                {{"unique.bin", *dir + "/unique.bin"}});
  hoist::testing::RemoveTree(*dir);
  ASSERT_TRUE(image.ok()) << image.status();
  // Drop the local copy so that the pull really downloads.
  ASSERT_TRUE(env_->Docker({"rmi", *image}).ok());
  ASSERT_EQ(client_->InspectImage(*image).status().code(), absl::StatusCode::kNotFound);

  std::vector<PullProgress> reports;
  absl::Status pulled = client_->Pull(*image, [&](const PullProgress& p) { reports.push_back(p); });
  ASSERT_TRUE(pulled.ok()) << pulled;
  ASSERT_FALSE(reports.empty()) << "expected progress reports from a real download";
  const PullProgress& last = reports.back();
  EXPECT_EQ(last.layers_total, 2u) << "testsvc's layer and the unique one";
  EXPECT_EQ(last.layers_done, last.layers_total);
  EXPECT_GE(last.bytes_total, 256u * 1024) << "the random layer does not compress";
  EXPECT_EQ(last.bytes_done, last.bytes_total);

  auto info = client_->InspectImage(*image);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_THAT(info->id, StartsWith("sha256:"));
  ASSERT_EQ(info->repo_digests.size(), 1u);
  EXPECT_THAT(info->repo_digests[0], StartsWith(absl::StrCat(env_->registry(), "/hoist-test/dc-pull@sha256:")));
  EXPECT_THAT(info->repo_tags, Contains(*image));
  EXPECT_EQ(info->labels[std::string(DockerEnv::kRunLabel)], env_->run_id());

  // Pulling by that digest works too and finds everything present.
  EXPECT_TRUE(client_->Pull(info->repo_digests[0], nullptr).ok());
}

TEST_F(DockerClientE2eTest, PullOfAnUnknownTagIsNotFound) {
  absl::Status s = client_->Pull(absl::StrCat(env_->registry(), "/hoist-test/dc-app:9.9.9"), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("9.9.9"));
}

TEST_F(DockerClientE2eTest, CreateStartInspectListStopRemove) {
  ContainerSpec spec = Spec("api", *app_image_);
  spec.ports = {{.container_port = 8080, .host_ip = "127.0.0.1"}};
  spec.env = {{"TESTSVC_VERSION", "1.0.7"}};
  spec.stop_timeout = absl::Seconds(5);
  auto id = client_->Create(spec);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(client_->Start(*id).ok());
  EXPECT_TRUE(client_->Start(*id).ok()) << "starting a running container is fine";

  // Health comes from the image's HEALTHCHECK (testsvc probe).
  auto info = InspectUntil(*id, [](const ContainerInfo& c) { return c.health == "healthy"; }, absl::Seconds(30));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->health, "healthy");
  EXPECT_EQ(info->state, "running");
  EXPECT_EQ(info->name, spec.name);
  EXPECT_EQ(info->image, *app_image_);
  EXPECT_THAT(info->image_id, StartsWith("sha256:"));
  EXPECT_GT(info->started_at, info->created_at);
  ASSERT_EQ(info->published_ports.count("8080/tcp"), 1u);
  auto version = HttpGet(absl::StrCat("http://127.0.0.1:", info->published_ports["8080/tcp"], "/version"));
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->body, "1.0.7\n") << "the env reached the container";

  auto listed = client_->List({env_->label(), "hoist.managed=true"});
  ASSERT_TRUE(listed.ok()) << listed.status();
  bool found = false;
  for (const ContainerInfo& c : *listed) {
    if (c.id != *id) continue;
    found = true;
    EXPECT_EQ(c.name, spec.name);
    EXPECT_EQ(c.state, "running");
    EXPECT_EQ(c.health, "healthy");
    EXPECT_EQ(c.published_ports.at("8080/tcp"), info->published_ports["8080/tcp"]);
  }
  EXPECT_TRUE(found) << "List by the run label did not return " << spec.name;
  auto none = client_->List({absl::StrCat(DockerEnv::kRunLabel, "=no-such-run")});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  ASSERT_TRUE(client_->Stop(*id, absl::Seconds(5)).ok());
  EXPECT_TRUE(client_->Stop(*id, absl::Seconds(5)).ok()) << "stopping a stopped container is fine";
  auto stopped = client_->Inspect(*id);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->state, "exited");

  ASSERT_TRUE(client_->Remove(*id, /*force=*/false, /*remove_volumes=*/true).ok());
  EXPECT_EQ(client_->Inspect(*id).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DockerClientE2eTest, OneShotJobsReportExitCodesAndLogs) {
  ContainerSpec ok_spec = Spec("job-ok", *app_image_);
  ok_spec.command = {"job", "--print", "migrated 3 tables"};
  auto ok_id = client_->Create(ok_spec);
  ASSERT_TRUE(ok_id.ok()) << ok_id.status();
  ASSERT_TRUE(client_->Start(*ok_id).ok());
  auto ok_code = client_->Wait(*ok_id, absl::Seconds(30));
  ASSERT_TRUE(ok_code.ok()) << ok_code.status();
  EXPECT_EQ(*ok_code, 0);
  auto ok_logs = client_->Logs(*ok_id, 100);
  ASSERT_TRUE(ok_logs.ok()) << ok_logs.status();
  EXPECT_EQ(*ok_logs, "migrated 3 tables\nversion=1.0.0\n");

  ContainerSpec bad_spec = Spec("job-bad", *app_image_);
  bad_spec.command = {"job", "--print", "migration 0042 failed", "--exit-code", "1"};
  auto bad_id = client_->Create(bad_spec);
  ASSERT_TRUE(bad_id.ok()) << bad_id.status();
  ASSERT_TRUE(client_->Start(*bad_id).ok());
  auto bad_code = client_->Wait(*bad_id, absl::Seconds(30));
  ASSERT_TRUE(bad_code.ok()) << bad_code.status();
  EXPECT_EQ(*bad_code, 1);
  auto bad_logs = client_->Logs(*bad_id, 1);
  ASSERT_TRUE(bad_logs.ok()) << bad_logs.status();
  EXPECT_EQ(*bad_logs, "version=1.0.0\n") << "tail=1 keeps the last line only";
  auto exited = client_->Inspect(*bad_id);
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->exit_code, 1);
}

TEST_F(DockerClientE2eTest, WaitOnAJobThatOutlivesTheTimeoutIsDeadlineExceeded) {
  ContainerSpec spec = Spec("job-slow", *app_image_);
  spec.command = {"job", "--sleep-ms", "60000"};
  auto id = client_->Create(spec);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(client_->Start(*id).ok());
  auto code = client_->Wait(*id, absl::Milliseconds(500));
  EXPECT_EQ(code.status().code(), absl::StatusCode::kDeadlineExceeded) << code.status();
  ASSERT_TRUE(client_->Kill(*id).ok());
  auto killed = client_->Wait(*id, absl::Seconds(30));
  ASSERT_TRUE(killed.ok()) << killed.status();
  EXPECT_EQ(*killed, 137);
  // Killing an exited container is a conflict with its state.
  EXPECT_EQ(client_->Kill(*id).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(DockerClientE2eTest, ExecCollectsOutputExitCodeAndStdin) {
  auto id = client_->Create(Spec("exec", *app_image_));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(client_->Start(*id).ok());
  // The service listens a moment after the start.
  auto up = InspectUntil(*id, [](const ContainerInfo& c) { return c.health == "healthy"; }, absl::Seconds(30));
  ASSERT_TRUE(up.ok() && up->health == "healthy") << "the exec target never became healthy";

  auto got = client_->Exec(*id, {"/testsvc", "get", "http://127.0.0.1:8080/version"}, absl::Seconds(20));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->exit_code, 0);
  EXPECT_EQ(got->output, "1.0.0\n");

  // stderr and a non-zero exit.
  auto failed = client_->Exec(*id, {"/testsvc", "probe", "http://127.0.0.1:1/health"}, absl::Seconds(20));
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->exit_code, 1);
  EXPECT_THAT(failed->output, HasSubstr("testsvc: probe http://127.0.0.1:1/health"));

  // stdout to a sink; stdin attached (this process ignores it, and the
  // half-close must still let the exec finish).
  std::string sunk;
  auto streamed = client_->Exec(
      *id, {"/testsvc", "job", "--print", "line one", "--print", "line two"}, absl::Seconds(20),
      [&](absl::string_view data) {
        sunk.append(data.data(), data.size());
        return absl::OkStatus();
      },
      "stdin that nobody reads\n");
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->exit_code, 0);
  EXPECT_EQ(sunk, "line one\nline two\nversion=1.0.0\n");
  EXPECT_EQ(streamed->output, "");

  auto missing = client_->Exec(*id, {"/no/such/binary"}, absl::Seconds(20));
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_NE(missing->exit_code, 0);
  ASSERT_TRUE(client_->Remove(*id, /*force=*/true, /*remove_volumes=*/true).ok());
}

TEST_F(DockerClientE2eTest, ArchivesGoIntoAndOutOfAVolume) {
  const std::string volume = Name("data");
  ASSERT_TRUE(client_->CreateVolume(volume, {{std::string(DockerEnv::kRunLabel), env_->run_id()}}).ok());

  // A file to put there, as a tar made by the host's tar.
  auto dir = hoist::testing::MakeOwnedTempDir("hoist-e2e-archive");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::ofstream(*dir + "/notes.txt") << "kept across upgrades\n";
  auto tarred = RunCommand({"tar", "-cf", *dir + "/in.tar", "-C", *dir, "notes.txt"}, {.timeout = absl::Seconds(30)});
  ASSERT_TRUE(tarred.ok() && tarred->exit_code == 0) << "tar failed";

  // Volumes are reached through created, never started, helper containers.
  ContainerSpec writer = Spec("vol-writer", *app_image_);
  writer.mounts = {{.source = volume, .target = "/data"}};
  auto writer_id = client_->Create(writer);
  ASSERT_TRUE(writer_id.ok()) << writer_id.status();
  ASSERT_TRUE(client_->PutArchive(*writer_id, "/data", *dir + "/in.tar").ok());

  ContainerSpec reader = Spec("vol-reader", *app_image_);
  reader.mounts = {{.source = volume, .target = "/backup", .read_only = true}};
  auto reader_id = client_->Create(reader);
  ASSERT_TRUE(reader_id.ok()) << reader_id.status();
  std::string tar;
  absl::Status got = client_->GetArchive(*reader_id, "/backup/notes.txt", [&](absl::string_view chunk) {
    tar.append(chunk.data(), chunk.size());
    return absl::OkStatus();
  });
  ASSERT_TRUE(got.ok()) << got;
  EXPECT_EQ(tar.size() % 512, 0u) << "a tar stream is made of 512-byte blocks";
  EXPECT_THAT(tar, HasSubstr("notes.txt"));
  EXPECT_THAT(tar, HasSubstr("kept across upgrades\n"));

  EXPECT_EQ(client_->GetArchive(*reader_id, "/backup/missing", [](absl::string_view) { return absl::OkStatus(); }).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->RemoveVolume(volume).code(), absl::StatusCode::kFailedPrecondition) << "the volume is in use";
  ASSERT_TRUE(client_->Remove(*writer_id, false, false).ok());
  ASSERT_TRUE(client_->Remove(*reader_id, false, false).ok());
  EXPECT_TRUE(client_->RemoveVolume(volume).ok());
  EXPECT_EQ(client_->RemoveVolume(volume).code(), absl::StatusCode::kNotFound);
  hoist::testing::RemoveTree(*dir);
}

TEST_F(DockerClientE2eTest, NameClashOnCreateIsAlreadyExistsAndRenameFreesTheName) {
  auto first = client_->Create(Spec("clash", *app_image_));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = client_->Create(Spec("clash", *app_image_));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("already in use"));

  ASSERT_TRUE(client_->Rename(*first, Name("clash-old")).ok());
  auto third = client_->Create(Spec("clash", *app_image_));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(client_->Rename(*third, Name("clash-old")).code(), absl::StatusCode::kAlreadyExists);
  auto renamed = client_->Inspect(Name("clash-old"));
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  EXPECT_EQ(renamed->id, *first);
  EXPECT_EQ(client_->Inspect(Name("no-such")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace hoist::docker

// run_job: a one-off container of a deployment (a migration, say) is
// created once per step, waited for, and its exit code and log kept on
// disk, so that a step re-sent after an agent restart answers from the
// record even when the container is gone.

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/container_names.h"
#include "agent/file_util.h"
#include "agent/step_executor.h"
#include "agent/step_executor_internal.h"
#include "shared/labels.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {

using internal::kStoppingMessage;

namespace {

// Waits are sliced so that Shutdown is noticed quickly.
constexpr absl::Duration kWaitSlice = absl::Seconds(2);
constexpr uint32_t kDefaultLogTailLines = 50;
// Lines of a job's log kept on disk.
constexpr int kJobLogFileLines = 100000;

std::string LastLines(absl::string_view text, uint32_t lines) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  size_t pos = text.size();
  for (uint32_t i = 0; i < lines; ++i) {
    size_t nl = text.rfind('\n', pos == 0 ? 0 : pos - 1);
    if (nl == absl::string_view::npos || pos == 0) {
      pos = 0;
      break;
    }
    pos = nl;
  }
  absl::string_view tail = text.substr(pos);
  if (!tail.empty() && tail.front() == '\n') tail.remove_prefix(1);
  return std::string(tail);
}

}  // namespace

std::string StepExecutor::JobRecordPath(absl::string_view step_id, absl::string_view ext) const {
  return absl::StrCat(journal_->state_dir(), "/jobs/", StepJournal::FileKey(step_id), ".", ext);
}

absl::Status StepExecutor::RunJob(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& job = ctx.step.run_job();
  const std::string& step_id = ctx.step.step_id();
  std::string name = JobContainerName(job.deployment(), job.name(), job.version(), step_id);
  std::string log_path = JobRecordPath(step_id, "log");
  std::string record_path = JobRecordPath(step_id, "job");
  auto job_failed = [&](const hoist::v1::JobResult& r) {
    return absl::UnknownError(absl::StrCat("job ", job.name(), " (", name, ") exited with code ", r.exit_code(),
                                           "; its log is in ", log_path));
  };

  // The job finished before the agent restarted: its record is the truth
  // (the container may already be gone with remove_after).
  if (auto record = ReadFileToString(record_path); record.ok()) {
    hoist::v1::JobResult recorded;
    if (recorded.ParseFromString(*record)) {
      *result->mutable_job() = recorded;
      return recorded.exit_code() == 0 ? absl::OkStatus() : job_failed(recorded);
    }
  }

  auto id = EnsureJobContainer(ctx, name);
  if (!id.ok()) return id.status();
  hoist::v1::StepProgress progress;
  progress.set_message(absl::StrCat("job ", job.name(), " running as ", name));
  Progress(ctx, std::move(progress));

  auto exit_code = WaitForJob(ctx, *id, name);
  if (!exit_code.ok()) return exit_code.status();

  hoist::v1::JobResult job_result;
  job_result.set_exit_code(*exit_code);
  auto logs = docker_->Logs(*id, kJobLogFileLines);
  if (logs.ok()) {
    if (absl::Status s = MakeDirs(journal_->state_dir() + "/jobs"); !s.ok()) return s;
    if (absl::Status s = WriteFileAtomic(log_path, *logs); !s.ok()) return s;
    job_result.set_log_tail(LastLines(*logs, job.log_tail_lines() == 0 ? kDefaultLogTailLines : job.log_tail_lines()));
  } else {
    spdlog::warn("step {}: cannot read the log of {}: {}", step_id, name, logs.status());
  }
  if (absl::Status s = MakeDirs(journal_->state_dir() + "/jobs"); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomic(record_path, job_result.SerializeAsString()); !s.ok()) return s;
  *result->mutable_job() = job_result;
  if (job.remove_after()) {
    if (absl::Status s = docker_->Remove(*id, /*force=*/false, /*remove_volumes=*/true); !s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("step {}: cannot remove job container {}: {}", step_id, name, s);
    }
  }
  return *exit_code == 0 ? absl::OkStatus() : job_failed(job_result);
}

absl::StatusOr<std::string> StepExecutor::EnsureJobContainer(const StepContext& ctx, const std::string& name) {
  const auto& job = ctx.step.run_job();
  const std::string& step_id = ctx.step.step_id();
  auto existing = docker_->Inspect(name);
  std::string id;
  if (absl::IsNotFound(existing.status())) {
    std::map<std::string, std::string> labels = {
        {std::string(labels::kManaged), "true"},
        {std::string(labels::kDeployment), job.deployment()},
        {std::string(labels::kJob), job.name()},
        {std::string(labels::kVersion), job.version()},
        {std::string(labels::kStep), step_id},
        {std::string(labels::kAgent), policy_.agent_id},
    };
    auto spec = DockerSpec(ctx, "run_job.spec", job.spec(), name, std::move(labels));
    if (!spec.ok()) return spec.status();
    if (absl::Status s = CheckDeadline(ctx, "creating the job container"); !s.ok()) return s;
    auto created = docker_->Create(*spec);
    if (!created.ok()) {
      return absl::Status(created.status().code(), absl::StrCat("create ", name, ": ", created.status().message()));
    }
    id = *created;
    if (absl::Status s = StartContainer(ctx, id, name); !s.ok()) return s;
    spdlog::info("step {}: started job {} as {}", step_id, job.name(), name);
  } else if (!existing.ok()) {
    return absl::Status(existing.status().code(), absl::StrCat("inspect ", name, ": ", existing.status().message()));
  } else {
    if (!IsManagedHere(*existing, policy_) || LabelOf(*existing, labels::kStep) != step_id) {
      return absl::AlreadyExistsError(absl::StrCat("a container named ", name,
                                                   " exists that this step did not create; Hoist leaves it untouched"));
    }
    id = existing->id;
    // Created by this step before a restart: never create it twice.
    if (existing->state == "created") {
      if (absl::Status s = StartContainer(ctx, id, name); !s.ok()) return s;
    }
    spdlog::info("step {}: job container {} already exists ({}); waiting for it", step_id, name, existing->state);
  }
  return id;
}

absl::StatusOr<int> StepExecutor::WaitForJob(const StepContext& ctx, const std::string& id, const std::string& name) {
  const auto& job = ctx.step.run_job();
  for (;;) {
    if (stopping()) return absl::CancelledError(kStoppingMessage);
    absl::Duration left = ctx.deadline - clock_->Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("job ", job.name(), " (", name,
                                                      ") still runs at the step's deadline; its container is left "
                                                      "running for a person to look at"));
    }
    auto waited = docker_->Wait(id, std::min(left, kWaitSlice));
    if (waited.ok()) return *waited;
    if (!absl::IsDeadlineExceeded(waited.status())) {
      return absl::Status(waited.status().code(), absl::StrCat("wait for ", name, ": ", waited.status().message()));
    }
  }
}

}  // namespace hoist::agent

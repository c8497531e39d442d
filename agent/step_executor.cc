// The runner: a step's way from Run to its result (fencing, the journal,
// replays, policy, the deadline), the dispatch to the unit of its kind (see
// step_executor_internal.h), the helpers every kind shares, and the
// reconciling of steps an agent restart interrupted.

#include "agent/step_executor.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/container_names.h"
#include "agent/file_util.h"
#include "agent/step_executor_internal.h"
#include "agent/step_validation.h"
#include "shared/logging.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {

using internal::kStoppingMessage;

namespace internal {

std::string Describe(const hoist::v1::InstanceRef& instance) {
  return absl::StrCat(instance.deployment(), "/", instance.service(), "/", SlotName(instance.slot()), "/",
                      instance.replica());
}

}  // namespace internal

namespace {

// Waits are sliced so that Shutdown is noticed quickly.
constexpr absl::Duration kSleepSlice = absl::Milliseconds(250);

std::string ActionName(const hoist::v1::Step& step) {
  switch (step.action_case()) {
    case hoist::v1::Step::kPullImage: return "pull_image";
    case hoist::v1::Step::kStartInstance: return "start_instance";
    case hoist::v1::Step::kStopInstance: return "stop_instance";
    case hoist::v1::Step::kRemoveInstance: return "remove_instance";
    case hoist::v1::Step::kProbeHealth: return "probe_health";
    case hoist::v1::Step::kRunJob: return "run_job";
    case hoist::v1::Step::kBackup: return "backup";
    case hoist::v1::Step::kRestore: return "restore";
    case hoist::v1::Step::kProxyUpdate: return "proxy_update";
    case hoist::v1::Step::kReadEnvNames: return "read_env_names";
    case hoist::v1::Step::kForwardUpdate: return "forward_update";
    case hoist::v1::Step::ACTION_NOT_SET: break;
  }
  return "no action";
}

hoist::v1::StepResult Refused(const hoist::v1::Step& step, absl::Time at, const absl::Status& status) {
  hoist::v1::StepResult result;
  result.set_step_id(step.step_id());
  result.set_epoch(step.epoch());
  result.set_outcome(hoist::v1::STEP_OUTCOME_REFUSED);
  result.set_code(static_cast<int32_t>(status.code()));
  result.set_message(std::string(status.message()));
  SetTimestamp(at, result.mutable_started_at());
  SetTimestamp(at, result.mutable_finished_at());
  spdlog::warn("step {} ({}) refused: {}", step.step_id(), ActionName(step), status.message());
  return result;
}

}  // namespace

StepExecutor::StepExecutor(docker::DockerApi* docker, StepJournal* journal, AgentPolicy policy, Clock* clock)
    : docker_(docker), journal_(journal), policy_(std::move(policy)), clock_(clock) {}

StepExecutor::~StepExecutor() { Shutdown(); }

void StepExecutor::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  mu_.Await(absl::Condition(
      +[](int* active) { return *active == 0; }, &active_));
}

bool StepExecutor::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

std::vector<std::string> StepExecutor::RunningStepIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, flight] : in_flight_) ids.push_back(id);
  return ids;
}

int StepExecutor::WaitersFor(absl::string_view step_id) const {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(step_id);
  return it == in_flight_.end() ? 0 : it->second->waiters;
}

hoist::v1::StepResult StepExecutor::Run(const hoist::v1::Step& step, const ProgressCallback& on_progress) {
  absl::Time started_at = clock_->Now();
  // The id and epoch are checked before anything else: the journal and the
  // fencing token depend on them.
  if (step.step_id().empty() || step.step_id().size() > kMaxStepIdLength || step.epoch() == 0) {
    if (absl::Status s = ValidateStep(step); !s.ok()) return Refused(step, started_at, s);
  }
  if (absl::Status s = journal_->AcceptEpoch(step.epoch()); !s.ok()) {
    if (absl::IsFailedPrecondition(s)) {
      return Refused(step, started_at,
                     absl::FailedPreconditionError(absl::StrCat("step ", step.step_id(), ": ", s.message())));
    }
    return Finish(step, started_at, absl::UnavailableError(absl::StrCat("cannot persist the epoch: ", s.message())),
                  {});
  }
  return RunClaimed(step, [&] { return Execute(step, on_progress, started_at); });
}

hoist::v1::StepResult StepExecutor::RunClaimed(const hoist::v1::Step& step,
                                               const std::function<hoist::v1::StepResult()>& body) {
  std::shared_ptr<InFlight> flight;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      return Finish(step, clock_->Now(), absl::UnavailableError("the agent is stopping; send the step again later"),
                    {});
    }
    auto it = in_flight_.find(step.step_id());
    if (it != in_flight_.end()) {
      flight = it->second;
      ++flight->waiters;
      mu_.Await(absl::Condition(+[](InFlight* f) { return f->done; }, flight.get()));
      --flight->waiters;
      hoist::v1::StepResult result = flight->result;
      result.set_replayed(true);
      return result;
    }
    flight = std::make_shared<InFlight>();
    in_flight_.emplace(step.step_id(), flight);
    ++active_;
  }
  hoist::v1::StepResult result = body();
  absl::MutexLock lock(&mu_);
  flight->result = result;
  flight->done = true;
  in_flight_.erase(step.step_id());
  --active_;
  return result;
}

hoist::v1::StepResult StepExecutor::Execute(const hoist::v1::Step& step, const ProgressCallback& on_progress,
                                            absl::Time started_at) {
  auto entry = journal_->Lookup(step.step_id());
  if (!entry.ok()) {
    return Finish(step, started_at,
                  absl::InternalError(absl::StrCat("cannot read the journal: ", entry.status().message())), {});
  }
  if (entry->has_value() && (*entry)->result.has_value()) {
    hoist::v1::StepResult result = *(*entry)->result;
    result.set_replayed(true);
    spdlog::info("step {} ({}) already ran; replaying its result", step.step_id(), ActionName(step));
    return result;
  }
  if (absl::Status s = ValidateStep(step); !s.ok()) return Refused(step, started_at, s);
  if (absl::Status s = CheckPolicy(step, policy_); !s.ok()) return Refused(step, started_at, s);

  if (absl::Status s = journal_->RecordStarted(step, started_at); !s.ok()) {
    return Finish(step, started_at,
                  absl::UnavailableError(absl::StrCat("cannot journal the step, so it was not run: ", s.message())),
                  {});
  }
  absl::Time deadline = step.has_deadline() ? ToTime(step.deadline()) : started_at + policy_.default_step_timeout;
  spdlog::info("step {} ({}) epoch {} rollout {}: started{}", step.step_id(), ActionName(step), step.epoch(),
               step.rollout_id().empty() ? "-" : step.rollout_id(),
               entry->has_value() ? " again after an interruption" : "");
  return RunAndRecord(StepContext{step, deadline, on_progress}, started_at);
}

hoist::v1::StepResult StepExecutor::RunAndRecord(const StepContext& ctx, absl::Time started_at) {
  hoist::v1::StepResult result;
  absl::Status status = CheckDeadline(ctx, "starting");
  if (status.ok()) status = RunAction(ctx, &result);
  result = Finish(ctx.step, started_at, status, std::move(result));
  if (absl::IsCancelled(status)) return result;  // left open for the next agent to reconcile
  if (absl::Status s = journal_->RecordResult(result); !s.ok()) {
    spdlog::error("step {}: cannot journal its result ({}); a re-sent step will run it again", ctx.step.step_id(), s);
  }
  return result;
}

hoist::v1::StepResult StepExecutor::Finish(const hoist::v1::Step& step, absl::Time started_at, absl::Status status,
                                           hoist::v1::StepResult result) {
  result.set_step_id(step.step_id());
  result.set_epoch(step.epoch());
  result.set_outcome(status.ok() ? hoist::v1::STEP_OUTCOME_SUCCEEDED : hoist::v1::STEP_OUTCOME_FAILED);
  result.set_code(static_cast<int32_t>(status.code()));
  result.set_message(std::string(status.message()));
  SetTimestamp(started_at, result.mutable_started_at());
  SetTimestamp(clock_->Now(), result.mutable_finished_at());
  if (status.ok()) {
    spdlog::info("step {} ({}): succeeded", step.step_id(), ActionName(step));
  } else {
    spdlog::warn("step {} ({}): failed: {}", step.step_id(), ActionName(step), status);
  }
  return result;
}

absl::Status StepExecutor::RunAction(const StepContext& ctx, hoist::v1::StepResult* result) {
  switch (ctx.step.action_case()) {
    case hoist::v1::Step::kPullImage: return PullImage(ctx, result);
    case hoist::v1::Step::kStartInstance: return StartInstance(ctx, result);
    case hoist::v1::Step::kStopInstance: return StopInstance(ctx);
    case hoist::v1::Step::kRemoveInstance: return RemoveInstance(ctx);
    case hoist::v1::Step::kProbeHealth: return ProbeHealth(ctx, result);
    case hoist::v1::Step::kRunJob: return RunJob(ctx, result);
    case hoist::v1::Step::kBackup: return Backup(ctx, result);
    case hoist::v1::Step::kRestore: return Restore(ctx);
    case hoist::v1::Step::kProxyUpdate: return ProxyUpdate(ctx);
    case hoist::v1::Step::kReadEnvNames: return ReadEnvNames(ctx, result);
    case hoist::v1::Step::kForwardUpdate: return ForwardUpdate(ctx);
    case hoist::v1::Step::ACTION_NOT_SET: break;
  }
  return absl::InvalidArgumentError("action: missing");
}

void StepExecutor::Progress(const StepContext& ctx, hoist::v1::StepProgress progress) {
  if (!ctx.on_progress) return;
  progress.set_step_id(ctx.step.step_id());
  ctx.on_progress(progress);
}

absl::Status StepExecutor::CheckDeadline(const StepContext& ctx, absl::string_view doing) {
  if (clock_->Now() < ctx.deadline) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("the step's deadline ", absl::FormatTime(ctx.deadline, absl::UTCTimeZone()), " passed before ",
                   doing));
}

bool StepExecutor::SleepUntil(absl::Time t) {
  for (;;) {
    if (stopping()) return false;
    absl::Duration left = t - clock_->Now();
    if (left <= absl::ZeroDuration()) return true;
    clock_->SleepFor(std::min(left, kSleepSlice));
  }
}

absl::Status StepExecutor::StartContainer(const StepContext& ctx, const std::string& id, absl::string_view name) {
  constexpr absl::Duration kAmbiguousWait = absl::Seconds(10);
  constexpr absl::Duration kAmbiguousRetry = absl::Milliseconds(100);
  const absl::Time give_up = std::min(ctx.deadline, clock_->Now() + kAmbiguousWait);
  for (;;) {
    absl::Status s = docker_->Start(id);
    if (s.ok()) return s;
    const bool ambiguous = absl::StrContains(s.message(), " is ambiguous");
    if (!ambiguous || clock_->Now() + kAmbiguousRetry > give_up) {
      return absl::Status(s.code(), absl::StrCat("start ", name, ": ", s.message()));
    }
    spdlog::info("start {}: {}; retrying while the duplicate network is removed", name, s.message());
    if (!SleepUntil(clock_->Now() + kAmbiguousRetry)) return absl::CancelledError(kStoppingMessage);
  }
}

// ---- reconcile ----

absl::StatusOr<std::vector<hoist::v1::StepResult>> StepExecutor::Reconcile() {
  auto entries = journal_->Interrupted();
  if (!entries.ok()) return entries.status();
  std::vector<hoist::v1::StepResult> results;
  for (const JournalEntry& entry : *entries) {
    hoist::v1::StepResult result = RunClaimed(entry.step, [&] { return ReconcileOne(entry); });
    if (result.outcome() != hoist::v1::STEP_OUTCOME_UNSPECIFIED) results.push_back(std::move(result));
  }
  return results;
}

hoist::v1::StepResult StepExecutor::ReconcileOne(const JournalEntry& entry) {
  const hoist::v1::Step& step = entry.step;
  absl::Time deadline = step.has_deadline() ? ToTime(step.deadline()) : entry.started_at + policy_.default_step_timeout;
  StepContext ctx{step, deadline, nullptr};
  // Unresolved: leave the entry open for the re-sent step (which carries the env values).
  auto leave_open = [&](absl::string_view why) {
    spdlog::info("step {} ({}) was interrupted; {}: it runs when the controller sends it again", step.step_id(),
                 ActionName(step), why);
    return hoist::v1::StepResult();
  };
  auto fail = [&](absl::Status status) {
    hoist::v1::StepResult result = Finish(step, entry.started_at, std::move(status), {});
    if (absl::Status s = journal_->RecordResult(result); !s.ok()) {
      spdlog::error("step {}: cannot journal its result ({})", step.step_id(), s);
    }
    return result;
  };
  spdlog::info("step {} ({}) was interrupted by an agent restart; deciding it from Docker's state", step.step_id(),
               ActionName(step));
  switch (step.action_case()) {
    case hoist::v1::Step::kStartInstance: {
      const auto& start = step.start_instance();
      std::string name = start.container_name().empty() ? InstanceContainerName(start.instance(), start.version())
                                                         : start.container_name();
      auto info = docker_->Inspect(name);
      if (absl::IsNotFound(info.status())) return leave_open("its container was never created");
      if (!info.ok()) return leave_open(absl::StrCat("Docker did not answer (", info.status().message(), ")"));
      // Existing container: starting it needs no env, so the journaled step will do.
      return RunAndRecord(ctx, entry.started_at);
    }
    case hoist::v1::Step::kRunJob: {
      const auto& job = step.run_job();
      std::string name = JobContainerName(job.deployment(), job.name(), job.version(), step.step_id());
      if (PathExists(JobRecordPath(step.step_id(), "job"))) return RunAndRecord(ctx, entry.started_at);
      auto info = docker_->Inspect(name);
      if (absl::IsNotFound(info.status())) return leave_open("its container was never created");
      if (!info.ok()) return leave_open(absl::StrCat("Docker did not answer (", info.status().message(), ")"));
      return RunAndRecord(ctx, entry.started_at);  // exited: its code; running: wait for it
    }
    case hoist::v1::Step::kBackup: {
      const auto& backup = step.backup();
      std::string dir = absl::StrCat(policy_.backup_dir, "/", backup.deployment(), "/", backup.backup_id());
      if (PathExists(dir + "/manifest.json")) return RunAndRecord(ctx, entry.started_at);  // finished: replay it
      if (absl::Status s = RemoveAll(dir + ".partial"); !s.ok()) {
        spdlog::error("step {}: cannot remove the partial backup: {}", step.step_id(), s);
      }
      return fail(absl::AbortedError("the agent restarted during the backup; the partial backup was removed"));
    }
    case hoist::v1::Step::kRestore:
      return fail(absl::AbortedError(
          "the agent restarted during the restore; the data may be partly restored: check it and send a new restore "
          "step"));
    default:
      // pull, stop, remove, probe: idempotent, so simply run again.
      return RunAndRecord(ctx, entry.started_at);
  }
}

}  // namespace hoist::agent

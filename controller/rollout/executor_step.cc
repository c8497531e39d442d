// Executor's running of one step: the writes before and after it, an agent
// step sent over the dispatcher with its result checked (a pull's digest, a
// backup's record), and the steps the controller runs itself (pin, live slot,
// the blue-green grace period, pause, pre-flight).

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/executor.h"
#include "controller/rollout/step_kind.h"
#include "google/protobuf/util/time_util.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::rollout {
namespace {

using google::protobuf::util::TimeUtil;

constexpr absl::Duration kGracePoll = absl::Milliseconds(100);

}  // namespace

absl::Status Executor::MarkRunning(uint64_t epoch, const StoredRollout& rollout,
                                   const std::vector<const StoredStep*>& steps) {
  std::vector<int> seqs;
  std::vector<hoist::v1::RolloutEvent> events;
  for (const StoredStep* step : steps) {
    seqs.push_back(step->seq);
    events.push_back(MakeEvent(rollout, "step_started", step->description, step, hoist::v1::ROLLOUT_STATE_RUNNING,
                               hoist::v1::STEP_STATE_RUNNING));
  }
  return store_->MarkStepsRunning(epoch, rollout.id, seqs, events);
}

absl::StatusOr<hoist::v1::StepState> Executor::RunStep(const StoredRollout& rollout, const StoredStep& step,
                                                       uint64_t epoch, Runner* runner, std::string* error,
                                                       bool marked, bool record_progress) {
  if (!marked) {
    if (absl::Status s = MarkRunning(epoch, rollout, {&step}); !s.ok()) return s;
  }
  const absl::Time started = clock_->Now();
  std::optional<hoist::v1::StepResult> result;
  absl::StatusOr<hoist::v1::StepState> ran =
      step.action.has_value() ? RunAgentStep(rollout, step, epoch, runner, error, record_progress, &result)
                              : RunControllerStep(rollout, step, epoch, runner, started, error);
  if (!ran.ok()) return ran.status();
  const hoist::v1::StepState state = *ran;

  const std::string took = absl::FormatDuration(absl::Trunc(clock_->Now() - started, absl::Milliseconds(100)));
  hoist::v1::RolloutEvent done =
      MakeEvent(rollout, state == hoist::v1::STEP_STATE_SUCCEEDED ? "step_done" : "step_failed",
                state == hoist::v1::STEP_STATE_SUCCEEDED ? absl::StrCat(step.description, " (", took, ")")
                                                         : absl::StrCat(step.description, ": ", *error),
                &step, hoist::v1::ROLLOUT_STATE_RUNNING, state);
  if (absl::Status s = store_->FinishStepWithEvent(epoch, rollout.id, step.seq, state, *error, result, done); !s.ok()) {
    return s;
  }
  return state;
}

absl::StatusOr<hoist::v1::StepState> Executor::RunAgentStep(const StoredRollout& rollout, const StoredStep& step,
                                                            uint64_t epoch, Runner* runner, std::string* error,
                                                            bool record_progress,
                                                            std::optional<hoist::v1::StepResult>* result) {
  hoist::v1::Step action = *step.action;
  action.set_step_id(step.step_id);
  action.set_rollout_id(rollout.id);
  const absl::Duration timeout = step.timeout > absl::ZeroDuration() ? step.timeout : options_.default_step_timeout;
  *action.mutable_deadline() = TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(clock_->Now() + timeout));
  absl::Mutex progress_mu;
  absl::Time last_progress = absl::InfinitePast();
  auto on_progress = [&](const hoist::v1::StepProgress& p) {
    if (!record_progress) return;
    {
      absl::MutexLock lock(&progress_mu);
      const absl::Time now = clock_->Now();
      if (now - last_progress < options_.progress_interval) return;
      last_progress = now;
    }
    Event(epoch, rollout, "step_progress", p.message(), &step, hoist::v1::ROLLOUT_STATE_RUNNING,
          hoist::v1::STEP_STATE_RUNNING, &p);
  };
  absl::Status resolved = ResolveBackends(rollout, &action);
  if (resolved.ok()) resolved = ResolveDigest(rollout, runner, &action);
  absl::StatusOr<hoist::v1::StepResult> r =
      resolved.ok() ? dispatcher_->RunStep(step.agent_id, action, on_progress, &runner->abort) : resolved;
  if (!resolved.ok()) {
    *error = std::string(resolved.message());
    return hoist::v1::STEP_STATE_FAILED;
  }
  if (!r.ok()) {
    if (runner->abort.load() || r.status().code() == absl::StatusCode::kFailedPrecondition) {
      return absl::FailedPreconditionError(absl::StrCat("stopped: ", r.status().message()));
    }
    *error = std::string(r.status().message());
    return hoist::v1::STEP_STATE_FAILED;
  }
  *result = *r;
  return CheckAgentResult(rollout, step, action, *r, epoch, runner, error);
}

absl::StatusOr<hoist::v1::StepState> Executor::CheckAgentResult(const StoredRollout& rollout, const StoredStep& step,
                                                                const hoist::v1::Step& action,
                                                                const hoist::v1::StepResult& r, uint64_t epoch,
                                                                Runner* runner, std::string* error) {
  if (r.outcome() != hoist::v1::STEP_OUTCOME_SUCCEEDED) {
    *error = r.message().empty() ? std::string("the agent reported a failure") : r.message();
    if (r.has_job()) {
      *error = absl::StrCat(*error, " (exit code ", r.job().exit_code(), ")\n", r.job().log_tail());
    }
    return hoist::v1::STEP_STATE_FAILED;
  }
  if (r.has_pull() && action.has_pull_image()) {
    absl::StatusOr<std::string> drift =
        CheckPulledDigest(epoch, rollout, runner, step.agent_id, action.pull_image().image(), r.pull().image_digest());
    if (!drift.ok()) return drift.status();
    if (!drift->empty()) {
      *error = *drift;
      return hoist::v1::STEP_STATE_FAILED;
    }
  } else if (r.has_backup()) {
    if (absl::Status s = RecordBackupResult(rollout, step, action, r, epoch); !s.ok()) return s;
  }
  return hoist::v1::STEP_STATE_SUCCEEDED;
}

absl::Status Executor::RecordBackupResult(const StoredRollout& rollout, const StoredStep& step,
                                          const hoist::v1::Step& action, const hoist::v1::StepResult& r,
                                          uint64_t epoch) {
  hoist::v1::BackupRecord backup;
  backup.set_id(action.backup().backup_id());
  backup.set_deployment(rollout.deployment);
  backup.set_version(rollout.from_version);
  backup.set_rollout_id(rollout.id);
  backup.set_agent_id(step.agent_id);
  *backup.mutable_artifacts() = r.backup().artifacts();
  // Verified means each artifact says how the agent checked it.
  bool verified = backup.artifacts_size() > 0;
  for (const auto& a : backup.artifacts()) verified = verified && !a.verified_by().empty();
  backup.set_verified(verified);
  if (absl::Status s = store_->RecordBackup(epoch, backup); !s.ok()) return s;
  const std::vector<std::string> pruned(r.backup().pruned().begin(), r.backup().pruned().end());
  if (absl::Status s = store_->ForgetBackups(epoch, step.agent_id, pruned); !s.ok()) return s;
  if (!pruned.empty()) {
    spdlog::info("rollout {}: {} removed older backups {} (backup.keep)", rollout.id, step.agent_id,
                 absl::StrJoin(pruned, ", "));
  }
  return absl::OkStatus();
}

absl::StatusOr<hoist::v1::StepState> Executor::RunControllerStep(const StoredRollout& rollout, const StoredStep& step,
                                                                 uint64_t epoch, Runner* runner, absl::Time started,
                                                                 std::string* error) {
  switch (step.kind) {
    case StepKind::kPin:
      if (absl::Status s = store_->Pin(epoch, rollout.deployment, rollout.to_version); !s.ok()) return s;
      break;
    case StepKind::kPinBack:
      if (absl::Status s = store_->Pin(epoch, rollout.deployment, rollout.from_version); !s.ok()) return s;
      break;
    case StepKind::kLiveSlot: {
      hoist::v1::Slot slot = rollout.plan.target_slot();
      if (absl::Status s = store_->SetLiveSlot(epoch, rollout.deployment, slot); !s.ok()) return s;
      break;
    }
    case StepKind::kGrace:
      if (absl::Status s = RunGrace(rollout, step, epoch, runner, started); !s.ok()) return s;
      break;
    case StepKind::kPause: {
      const absl::Time until = started + step.timeout;
      while (clock_->Now() < until && !runner->cancel.load() && !runner->abort.load()) {
        clock_->SleepFor(std::min(absl::Milliseconds(100), until - clock_->Now()));
      }
      // A pause cut short by losing leadership is not done: the next leader
      // pauses again.
      if (runner->abort.load()) return absl::FailedPreconditionError("stopped: leadership lost during the pause");
      break;
    }
    case StepKind::kPreflight:
    case StepKind::kPostcheck:
      return CheckAgentsConnected(rollout, error);
    default:
      *error = absl::StrCat("step kind \"", StepKindName(step.kind),
                            "\" has no action and this controller cannot run it");
      return hoist::v1::STEP_STATE_FAILED;
  }
  return hoist::v1::STEP_STATE_SUCCEEDED;
}

absl::StatusOr<hoist::v1::StepState> Executor::CheckAgentsConnected(const StoredRollout& rollout,
                                                                    std::string* error) {
  // The agents the plan needs must be connected now (the planner checked
  // health and disk when it planned; the agents' own steps re-check).
  absl::StatusOr<std::vector<StoredStep>> steps = store_->GetSteps(rollout.id);
  if (!steps.ok()) return steps.status();
  std::vector<std::string> missing;
  for (const StoredStep& s : *steps) {
    if (!s.agent_id.empty() && !dispatcher_->IsConnected(s.agent_id) &&
        std::find(missing.begin(), missing.end(), s.agent_id) == missing.end()) {
      missing.push_back(s.agent_id);
    }
  }
  if (missing.empty()) return hoist::v1::STEP_STATE_SUCCEEDED;
  *error = absl::StrCat("agents not connected: ", absl::StrJoin(missing, ", "),
                        "; start them or check their controller address");
  return hoist::v1::STEP_STATE_FAILED;
}

absl::Status Executor::RunGrace(const StoredRollout& rollout, const StoredStep& step, uint64_t epoch, Runner* runner,
                                absl::Time started) {
  const hoist::v1::Slot target = rollout.plan.target_slot();
  const std::string new_word = target == hoist::v1::SLOT_GREEN ? "green" : "blue";
  const std::string old_word = target == hoist::v1::SLOT_GREEN ? "blue" : "green";
  // From the step's first start: a new leader does not restart the period.
  const absl::Time began = step.started_at == absl::InfinitePast() ? started : step.started_at;
  const absl::Time until = began + step.timeout;
  if (absl::Status s = store_->SetRolloutState(epoch, rollout.id, hoist::v1::ROLLOUT_STATE_GRACE, ""); !s.ok()) {
    return s;
  }
  Event(epoch, rollout, "grace_started",
        absl::StrCat(new_word, " serves; ", old_word, " is kept until ",
                     absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", until, absl::UTCTimeZone()),
                     " (hoist cutover --back | --finish)"),
        &step, hoist::v1::ROLLOUT_STATE_GRACE, hoist::v1::STEP_STATE_RUNNING);
  for (;;) {
    if (runner->abort.load()) return absl::FailedPreconditionError("stopped: leadership lost during the grace period");
    {
      absl::MutexLock lock(&grace_mu_);
      auto r = store_->GetRollout(rollout.id);
      auto d = store_->GetDeployment(rollout.deployment);
      if (r.ok() && d.ok() && (r->cancel_requested || runner->cancel.load())) {
        // Cancelled: nothing is retired, both slots keep running, and the pin
        // follows the slot that serves (after a switch back, the old release).
        const bool old_serves = d->live_slot != target;
        if (old_serves) {
          if (absl::Status s = store_->Pin(epoch, rollout.deployment, rollout.from_version); !s.ok()) return s;
        }
        if (absl::Status s = store_->SetRolloutState(epoch, rollout.id, hoist::v1::ROLLOUT_STATE_RUNNING, "");
            !s.ok()) {
          return s;
        }
        Event(epoch, rollout, "grace_cancelled",
              absl::StrCat("cancelled during the grace period: ", old_serves ? old_word : new_word, " serves (",
                           old_serves ? rollout.from_version : rollout.to_version, ", pinned), ",
                           old_serves ? new_word : old_word,
                           " keeps running without traffic; the next blue-green rollout removes it"),
              &step, hoist::v1::ROLLOUT_STATE_RUNNING, hoist::v1::STEP_STATE_RUNNING);
        return absl::OkStatus();
      }
      if (r.ok() && d.ok() && d->live_slot == target) {
        const bool finish = r->finish_requested;
        if (finish || clock_->Now() >= until) {
          if (absl::Status s = store_->SetRolloutState(epoch, rollout.id, hoist::v1::ROLLOUT_STATE_RUNNING, "");
              !s.ok()) {
            return s;
          }
          Event(epoch, rollout, "grace_ended",
                absl::StrCat(finish ? "hoist cutover --finish" : "the grace period is over", ": retiring ", old_word),
                &step, hoist::v1::ROLLOUT_STATE_RUNNING, hoist::v1::STEP_STATE_RUNNING);
          return absl::OkStatus();
        }
      } else if (!r.ok() || !d.ok()) {
        spdlog::warn("rollout {}: cannot read its grace state: {}", rollout.id,
                     (!r.ok() ? r.status() : d.status()).message());
      }
    }
    clock_->SleepFor(kGracePoll);
  }
}

}  // namespace hoist::rollout

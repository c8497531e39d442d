// The executor's runners: leadership and resuming, one rollout's run from its
// first unfinished batch to its end, and its events (one step:
// executor_step.cc; addressing a step: executor_resolve.cc).

#include "controller/rollout/executor.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner.h"
#include "controller/rollout/step_kind.h"
#include "shared/logging.h"
#include "shared/protocol.h"
#include "spdlog/spdlog.h"

namespace hoist::rollout {
namespace {

bool Finished(hoist::v1::StepState s) {
  return s == hoist::v1::STEP_STATE_SUCCEEDED || s == hoist::v1::STEP_STATE_SKIPPED;
}

}  // namespace

Executor::Executor(RolloutStore* store, StepDispatcher* dispatcher, Clock* clock, ExecutorOptions options)
    : store_(store), dispatcher_(dispatcher), clock_(clock), options_(options) {
  resumer_ = std::thread([this] { ResumeLoop(); });
}

Executor::~Executor() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  resumer_.join();
  {
    absl::MutexLock lock(&mu_);
    epoch_ = 0;
    for (auto& [id, r] : runners_) r->abort = true;
  }
  Reap(true);
}

void Executor::SetRollbackLauncher(RollbackLauncher launcher) {
  absl::MutexLock lock(&mu_);
  rollback_ = std::move(launcher);
}

void Executor::Reap(bool all) {
  std::vector<std::unique_ptr<Runner>> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = runners_.begin(); it != runners_.end();) {
      if (all || it->second->done) {
        finished.push_back(std::move(it->second));
        it = runners_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& r : finished) r->thread.join();
}

void Executor::OnLeadership(uint64_t epoch) {
  {
    absl::MutexLock lock(&mu_);
    epoch_ = epoch;
    if (epoch == 0) {
      for (auto& [id, r] : runners_) r->abort = true;
    }
  }
  if (epoch == 0) return;
  {
    absl::MutexLock lock(&mu_);
    resumed_.clear();  // a new leader resumes everything at once
  }
  ResumeUnfinished(epoch);
}

void Executor::ResumeUnfinished(uint64_t epoch) {
  Reap(false);
  auto unfinished = store_->UnfinishedRollouts();
  if (!unfinished.ok()) {
    spdlog::error("cannot list unfinished rollouts to resume (trying again in {}): {}",
                  absl::FormatDuration(options_.resume_interval), unfinished.status().message());
    return;
  }
  std::vector<std::string> launch;
  {
    absl::MutexLock lock(&mu_);
    if (epoch_ != epoch) return;
    const absl::Time now = absl::Now();
    std::map<std::string, Backoff> still;
    for (const std::string& id : *unfinished) {
      auto it = resumed_.find(id);
      Backoff b = it != resumed_.end() ? it->second : Backoff{absl::ZeroDuration(), absl::InfinitePast()};
      auto r = runners_.find(id);
      const bool held = r != runners_.end() && !r->second->done;
      if (!held && now >= b.next) {
        launch.push_back(id);
        b.wait = b.wait == absl::ZeroDuration() ? options_.resume_interval
                                                : std::min(b.wait * 2, options_.max_resume_backoff);
        b.next = now + b.wait;
      }
      still[id] = b;
    }
    resumed_.swap(still);  // finished rollouts forget their backoff
  }
  for (const std::string& id : launch) {
    spdlog::info("resuming rollout {} as leader epoch {}", id, epoch);
    if (absl::Status s = Launch(id); !s.ok()) spdlog::error("cannot resume rollout {}: {}", id, s.message());
  }
}

void Executor::ResumeLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.resume_interval);
    if (stopping_ || epoch_ == 0) continue;
    const uint64_t epoch = epoch_;
    mu_.Unlock();
    ResumeUnfinished(epoch);
    mu_.Lock();
  }
}

absl::Status Executor::Launch(const std::string& rollout_id) {
  Reap(false);
  absl::MutexLock lock(&mu_);
  if (epoch_ == 0) return absl::FailedPreconditionError("this replica does not lead; it cannot run rollouts");
  auto it = runners_.find(rollout_id);
  if (it != runners_.end()) {
    if (!it->second->done) return absl::OkStatus();  // already running here
    // A finished runner is reaped by the next Reap; replace it now.
    it->second->thread.join();
    runners_.erase(it);
  }
  auto runner = std::make_unique<Runner>();
  Runner* r = runner.get();
  const uint64_t epoch = epoch_;
  runners_[rollout_id] = std::move(runner);
  r->thread = std::thread([this, rollout_id, epoch, r] { Run(rollout_id, epoch, r); });
  return absl::OkStatus();
}

void Executor::Cancel(const std::string& rollout_id) {
  absl::MutexLock lock(&mu_);
  auto it = runners_.find(rollout_id);
  if (it != runners_.end()) it->second->cancel = true;
}

bool Executor::WaitIdle(const std::string& rollout_id, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this, &rollout_id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = runners_.find(rollout_id);
    return it == runners_.end() || it->second->done;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

absl::Status Executor::WhileGraceHeld(const std::function<absl::Status()>& fn) {
  absl::MutexLock lock(&grace_mu_);
  return fn();
}

hoist::v1::RolloutEvent Executor::MakeEvent(const StoredRollout& rollout, const std::string& kind,
                                            const std::string& message, const StoredStep* step,
                                            hoist::v1::RolloutState state, hoist::v1::StepState step_state,
                                            const hoist::v1::StepProgress* progress) {
  hoist::v1::RolloutEvent e;
  e.set_rollout_id(rollout.id);
  e.set_kind(kind);
  e.set_message(message);
  e.set_rollout_state(state);
  if (step != nullptr) {
    e.set_phase(step->phase_name);
    e.set_step_id(step->step_id);
    e.set_step_state(step_state);
    e.set_agent_id(step->agent_id);
  }
  if (progress != nullptr && progress->has_pull()) {
    e.set_bytes_done(progress->pull().bytes_done());
    e.set_bytes_total(progress->pull().bytes_total());
  }
  return e;
}

void Executor::Event(uint64_t epoch, const StoredRollout& rollout, const std::string& kind, const std::string& message,
                     const StoredStep* step, hoist::v1::RolloutState state, hoist::v1::StepState step_state,
                     const hoist::v1::StepProgress* progress) {
  if (absl::Status s = store_->AppendEvent(epoch, MakeEvent(rollout, kind, message, step, state, step_state, progress));
      !s.ok()) {
    spdlog::warn("rollout {}: cannot record event {}: {}", rollout.id, kind, s.message());
  }
}


void Executor::Run(const std::string& id, uint64_t epoch, Runner* runner) {
  auto finish = [this, runner] {
    absl::MutexLock lock(&mu_);
    runner->done = true;
  };
  auto rollout = store_->GetRollout(id);
  auto steps = store_->GetSteps(id);
  if (!rollout.ok() || !steps.ok()) {
    spdlog::error("rollout {}: cannot load it: {}", id,
                  (!rollout.ok() ? rollout.status() : steps.status()).message());
    finish();
    return;
  }
  if (absl::Status s = Begin(epoch, *rollout, steps->size()); !s.ok()) {
    spdlog::error("rollout {}: {}", id, s.message());
    finish();
    return;
  }
  RunOutcome outcome = RunBatches(*rollout, *steps, epoch, runner);
  UndoFailedGate(*rollout, *steps, epoch, runner, &outcome);
  if (outcome.stopped || runner->abort.load()) {
    finish();
    return;
  }
  End(epoch, *rollout, outcome);
  finish();
}

absl::Status Executor::Begin(uint64_t epoch, const StoredRollout& rollout, size_t step_count) {
  if (rollout.state != hoist::v1::ROLLOUT_STATE_PENDING) {
    Event(epoch, rollout, "rollout_resumed", absl::StrCat("resumed by the leader of epoch ", epoch));
    return absl::OkStatus();
  }
  if (absl::Status s = store_->SetRolloutState(epoch, rollout.id, hoist::v1::ROLLOUT_STATE_RUNNING, ""); !s.ok()) {
    return s;
  }
  Event(epoch, rollout, "rollout_started",
        absl::StrCat(rollout.kind, " of ", rollout.deployment, " ",
                     rollout.from_version.empty() ? std::string("") : rollout.from_version + " -> ",
                     rollout.to_version, " (", step_count, " steps)"));
  return absl::OkStatus();
}

Executor::RunOutcome Executor::RunBatches(const StoredRollout& rollout, const std::vector<StoredStep>& steps,
                                          uint64_t epoch, Runner* runner) {
  RunOutcome out;
  size_t i = 0;
  int current_phase = -1;
  // A runner told to stop (leadership lost) starts no further batch: its
  // epoch may still pass the fence until the next leader bumps it.
  while (i < steps.size() && out.failure.empty() && !out.cancelled && !out.stopped && !runner->abort.load()) {
    // One batch: consecutive steps of the same phase and batch number.
    size_t j = i;
    while (j < steps.size() && steps[j].phase == steps[i].phase && steps[j].batch == steps[i].batch) ++j;
    // The phase that undoes a failed gate runs only then (UndoFailedGate).
    if (PhaseRoleOf(steps[i].phase_name) == PhaseRole::kUndoGate) break;
    std::vector<const StoredStep*> todo;
    for (size_t k = i; k < j; ++k) {
      if (!Finished(steps[k].state)) todo.push_back(&steps[k]);
    }
    if (!todo.empty()) {
      auto status = store_->GetRolloutStatus(rollout.id);
      if (runner->cancel.load() || (status.ok() && status->cancel_requested)) {
        out.cancelled = true;
        break;
      }
      if (steps[i].phase != current_phase) {
        current_phase = steps[i].phase;
        std::string reason;
        for (const auto& p : rollout.plan.phases()) {
          if (p.name() == steps[i].phase_name) reason = p.reason();
        }
        Event(epoch, rollout, "phase_started", absl::StrCat(steps[i].phase_name, reason.empty() ? "" : ": ", reason),
              &steps[i]);
      }
      RunBatch(rollout, todo, epoch, runner, &out);
    }
    i = j;
  }
  return out;
}

void Executor::RunBatch(const StoredRollout& rollout, const std::vector<const StoredStep*>& todo, uint64_t epoch,
                        Runner* runner, RunOutcome* out) {
  std::vector<std::string> errors(todo.size());
  std::vector<absl::StatusOr<hoist::v1::StepState>> states(todo.size(), hoist::v1::STEP_STATE_PENDING);
  // The whole batch is marked running in one write, then each step runs
  // on its own thread.
  if (absl::Status s = MarkRunning(epoch, rollout, todo); !s.ok()) {
    spdlog::warn("rollout {}: runner stops: {}", rollout.id, s.message());
    out->stopped = true;
    return;
  }
  // A batch across hundreds of hosts records no progress lines: they
  // would be a write per host per step, and nobody reads them one by one.
  const bool record_progress = todo.size() <= kMaxBatchWithProgress;
  std::vector<std::thread> threads;
  for (size_t k = 0; k < todo.size(); ++k) {
    threads.emplace_back([&, k] {
      states[k] = RunStep(rollout, *todo[k], epoch, runner, &errors[k], /*marked=*/true, record_progress);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t k = 0; k < todo.size(); ++k) {
    if (!states[k].ok()) {
      spdlog::warn("rollout {}: runner stops: {}", rollout.id, states[k].status().message());
      out->stopped = true;
    } else if (*states[k] == hoist::v1::STEP_STATE_FAILED && out->failure.empty()) {
      out->failure = absl::StrCat(todo[k]->description, ": ", errors[k]);
      out->failed_step = todo[k];
    }
  }
}

void Executor::UndoFailedGate(const StoredRollout& rollout, const std::vector<StoredStep>& steps, uint64_t epoch,
                              Runner* runner, RunOutcome* out) {
  // A failed gate (a migration gate, or a one-shot job run before any
  // service moved): nothing has moved yet, so the deployment is put back as
  // it was (the old pin, the services stopped first running).
  bool gate = out->failed_step != nullptr && IsGate(PhaseRoleOf(out->failed_step->phase_name));
  for (const StoredStep& st : steps) {
    if (!gate || st.phase == out->failed_step->phase) break;
    if (MovesInstances(PhaseRoleOf(st.phase_name))) gate = false;
  }
  if (out->stopped || runner->abort.load() || !gate) return;
  std::vector<std::string> undone, not_undone;
  for (const StoredStep& st : steps) {
    if (PhaseRoleOf(st.phase_name) != PhaseRole::kUndoGate || Finished(st.state)) continue;
    std::string err;
    absl::StatusOr<hoist::v1::StepState> done = RunStep(rollout, st, epoch, runner, &err);
    if (!done.ok()) {
      out->stopped = true;
      break;
    }
    (*done == hoist::v1::STEP_STATE_SUCCEEDED ? undone : not_undone)
        .push_back(*done == hoist::v1::STEP_STATE_SUCCEEDED ? st.description
                                                            : absl::StrCat(st.description, ": ", err));
  }
  if (!undone.empty()) absl::StrAppend(&out->failure, "\nput back as before: ", absl::StrJoin(undone, "; "));
  if (!not_undone.empty()) absl::StrAppend(&out->failure, "\nNOT put back: ", absl::StrJoin(not_undone, "; "));
  out->put_back = !undone.empty() && not_undone.empty();
}

hoist::v1::RolloutState Executor::EndState(const StoredRollout& rollout, const RunOutcome& outcome, bool untouched,
                                           std::string* message) {
  *message = absl::StrCat(rollout.deployment, " now runs ", rollout.to_version);
  if (outcome.cancelled) {
    *message = "cancelled by an operator; steps already done stay done";
    return hoist::v1::ROLLOUT_STATE_CANCELLED;
  }
  if (outcome.failure.empty()) return hoist::v1::ROLLOUT_STATE_SUCCEEDED;
  *message = outcome.failure;
  if (untouched) {
    *message = absl::StrCat(*message, kNothingChangedLine, rollout.deployment, " runs ",
                            rollout.from_version.empty() ? "what it ran" : rollout.from_version, " as before");
  } else if (!rollout.rollback_command.empty()) {
    *message = absl::StrCat(*message, "\nto roll back: ", rollout.rollback_command);
  }
  if (rollout.strategy == hoist::v1::STRATEGY_BLUE_GREEN) {
    auto d = store_->GetDeployment(rollout.deployment);
    if (d.ok() && d->live_slot != rollout.plan.target_slot()) {
      const bool green = rollout.plan.target_slot() == hoist::v1::SLOT_GREEN;
      *message = absl::StrCat(*message, "\nthe proxy was not switched: ", green ? "blue" : "green", " still serves ",
                              rollout.from_version, "; the ", green ? "green" : "blue",
                              " containers are left for inspection and the next blue-green rollout removes them");
    }
  }
  return hoist::v1::ROLLOUT_STATE_FAILED;
}

void Executor::End(uint64_t epoch, const StoredRollout& rollout, const RunOutcome& outcome) {
  // Pre-flight checks and pulls change nothing the deployment runs on.
  const bool untouched =
      outcome.failed_step != nullptr && ChangesNothing(PhaseRoleOf(outcome.failed_step->phase_name));
  std::string message;
  const hoist::v1::RolloutState final_state = EndState(rollout, outcome, untouched, &message);
  if (absl::Status s = store_->SetRolloutState(epoch, rollout.id, final_state,
                                               final_state == hoist::v1::ROLLOUT_STATE_SUCCEEDED ? "" : message);
      !s.ok()) {
    spdlog::error("rollout {}: cannot record its end: {}", rollout.id, s.message());
    return;
  }
  Event(epoch, rollout, final_state == hoist::v1::ROLLOUT_STATE_SUCCEEDED ? "rollout_succeeded"
                        : outcome.cancelled                                 ? "rollout_cancelled"
                                                                            : "rollout_failed",
        message, nullptr, final_state);
  store_->Audit({"hoistd", absl::StrCat("rollout.", rollout.kind), rollout.deployment, rollout.id,
                 final_state == hoist::v1::ROLLOUT_STATE_SUCCEEDED ? "ok" : "failed", message})
      .IgnoreError();
  AfterFailure(epoch, rollout, outcome, untouched, final_state);
}

void Executor::AfterFailure(uint64_t epoch, const StoredRollout& rollout, const RunOutcome& outcome, bool untouched,
                            hoist::v1::RolloutState final_state) {
  // A failed blue-green upgrade needs no rollback: the old slot still serves;
  // nor does a failed gate that was put back.
  if ((outcome.put_back || (untouched && final_state == hoist::v1::ROLLOUT_STATE_FAILED)) &&
      rollout.on_failure == hoist::v1::ON_FAILURE_ROLLBACK) {
    Event(epoch, rollout, "rollback_not_needed",
          outcome.put_back ? absl::StrCat("no rollback: the failed gate was undone and ", rollout.from_version,
                                          " runs as before")
                           : absl::StrCat("no rollback: the rollout failed in its ", outcome.FailedPhase(),
                                          " phase, before anything was changed"),
          nullptr, final_state);
  } else if (final_state == hoist::v1::ROLLOUT_STATE_FAILED && rollout.on_failure == hoist::v1::ON_FAILURE_ROLLBACK &&
             rollout.kind == "upgrade" && rollout.strategy != hoist::v1::STRATEGY_BLUE_GREEN) {
    RollbackLauncher launcher;
    {
      absl::MutexLock lock(&mu_);
      launcher = rollback_;
    }
    if (launcher) {
      auto rb = launcher(rollout);
      if (rb.ok()) {
        Event(epoch, rollout, "rollback_started", absl::StrCat("rolling back by itself: rollout ", *rb), nullptr,
              final_state);
      } else {
        Event(epoch, rollout, "rollback_refused", absl::StrCat("cannot roll back by itself: ", rb.status().message()),
              nullptr, final_state);
      }
    }
  }
}

}  // namespace hoist::rollout

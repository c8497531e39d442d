#include "controller/rollout/executor.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner.h"
#include "google/protobuf/util/time_util.h"
#include "shared/logging.h"
#include "shared/protocol.h"
#include "spdlog/spdlog.h"

namespace hoist::rollout {
namespace {

using google::protobuf::util::TimeUtil;

constexpr absl::Duration kGracePoll = absl::Milliseconds(100);

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

absl::Status Executor::ResolveBackends(const StoredRollout& rollout, hoist::v1::Step* action) {
  std::vector<hoist::v1::ProxyBackend*> open;
  if (action->has_proxy_update()) {
    for (auto& route : *action->mutable_proxy_update()->mutable_routes()) {
      for (auto& b : *route.mutable_backends()) {
        if (b.address().empty() && b.has_instance()) open.push_back(&b);
      }
    }
  } else if (action->has_forward_update()) {
    for (auto& port : *action->mutable_forward_update()->mutable_ports()) {
      for (auto& b : *port.mutable_targets()) {
        if (b.address().empty() && b.has_instance()) open.push_back(&b);
      }
    }
  }
  if (open.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<StoredStep>> steps = store_->GetSteps(rollout.id);
  if (!steps.ok()) return steps.status();
  auto same = [](const hoist::v1::InstanceRef& a, const hoist::v1::InstanceRef& b) {
    return a.deployment() == b.deployment() && a.service() == b.service() && a.replica() == b.replica() &&
           a.slot() == b.slot();
  };
  for (hoist::v1::ProxyBackend* b : open) {
    const hoist::v1::PortMapping* found = nullptr;
    const StoredStep* started = nullptr;
    for (const StoredStep& s : *steps) {  // the last start of that instance wins
      if (s.state != hoist::v1::STEP_STATE_SUCCEEDED || !s.action.has_value() || !s.action->has_start_instance() ||
          !s.result.has_value() || !s.result->has_start()) {
        continue;
      }
      const hoist::v1::StartInstance& start = s.action->start_instance();
      if (!same(start.instance(), b->instance()) || start.version() != b->version()) continue;
      started = &s;
      found = nullptr;
      for (const hoist::v1::PortMapping& p : s.result->start().published_ports()) {
        if (p.container_port() == b->container_port() && p.host_port() != 0 &&
            (p.protocol().empty() || p.protocol() == "tcp")) {
          found = &p;
        }
      }
    }
    const std::string what = absl::StrCat(b->instance().service(), " replica ", b->instance().replica(), " (",
                                          b->version(), ")");
    if (started == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot route to ", what, ": no step of this rollout started it, so the port Docker published for its "
          "container port ", b->container_port(), " is unknown; plan again so the plan reads it from the hosts"));
    }
    if (found == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("cannot route to ", what, ": its start on ", started->agent_id,
                                                        " reported no published host port for container port ",
                                                        b->container_port()));
    }
    const std::string& address = found->host_ip();
    if (address.empty() || address == "0.0.0.0" || address == "::") {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot route to ", what, ": its container port ", b->container_port(), " was published on every address of ",
          started->agent_id, ", not on the host's address the plan gave"));
    }
    b->set_address(address);
    b->set_port(found->host_port());
  }
  return absl::OkStatus();
}

absl::StatusOr<hoist::v1::Release> Executor::ReleaseOf(Runner* runner, const StoredRollout& rollout,
                                                      const std::string& version) {
  // Held while reading: the steps of a batch wait for one read, not each its own.
  absl::MutexLock lock(&runner->releases_mu);
  auto it = runner->releases.find(version);
  if (it != runner->releases.end()) return it->second;
  auto release = store_->GetRelease(rollout.deployment, version);
  if (!release.ok()) return release.status();
  runner->releases[version] = *release;
  return release;
}

absl::Status Executor::ResolveDigest(const StoredRollout& rollout, Runner* runner, hoist::v1::Step* action) {
  if (!action->has_start_instance()) return absl::OkStatus();
  hoist::v1::StartInstance* start = action->mutable_start_instance();
  auto release = ReleaseOf(runner, rollout, start->version());
  if (absl::IsNotFound(release.status())) return absl::OkStatus();  // a pinned image, not a release's
  if (!release.ok()) return release.status();
  const std::string& service = start->instance().service();
  auto image = release->images().find(service);
  auto digest = release->digests().find(service);
  if (image == release->images().end() || digest == release->digests().end() ||
      image->second != start->spec().image()) {
    return absl::OkStatus();
  }
  start->set_image_digest(digest->second);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Executor::CheckPulledDigest(uint64_t epoch, const StoredRollout& rollout, Runner* runner,
                                                        const std::string& agent_id, const std::string& image,
                                                        const std::string& digest) {
  if (digest.empty() || rollout.to_version.empty()) return std::string();
  auto release = ReleaseOf(runner, rollout, rollout.to_version);
  if (absl::IsNotFound(release.status())) return std::string();
  if (!release.ok()) return release.status();
  std::map<std::string, std::string> pulled;
  for (const auto& [service, ref] : release->images()) {
    if (ref == image) pulled[service] = digest;
  }
  if (pulled.empty()) return std::string();  // a pinned image of the manifest
  // Digests this run has seen recorded already are compared without a write.
  std::map<std::string, std::string> recorded_before;
  for (const auto& [service, d] : pulled) {
    auto first = release->digests().find(service);
    if (first == release->digests().end()) break;
    recorded_before[service] = first->second;
  }
  absl::StatusOr<std::map<std::string, std::string>> recorded = recorded_before;
  if (recorded_before.size() != pulled.size()) {
    recorded = store_->RecordDigests(epoch, rollout.deployment, rollout.to_version, pulled);
    if (!recorded.ok()) return recorded.status();
    absl::MutexLock lock(&runner->releases_mu);
    auto& digests = *runner->releases[rollout.to_version].mutable_digests();
    for (const auto& [service, first] : *recorded) digests[service] = first;
  }
  for (const auto& [service, first] : *recorded) {
    if (first == digest) continue;
    return absl::StrCat(image, " pulled on ", agent_id, " is ", digest, ", but release ", rollout.to_version,
                        " recorded ", first, " for ", service,
                        " when it was first pulled: the tag was pushed again since. Publish the new image under a "
                        "new version (or push the recorded one back to the tag)");
  }
  return std::string();
}

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
  hoist::v1::StepState state = hoist::v1::STEP_STATE_SUCCEEDED;

  if (step.action.has_value()) {
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
      state = hoist::v1::STEP_STATE_FAILED;
      *error = std::string(resolved.message());
    } else if (!r.ok()) {
      if (runner->abort.load() || r.status().code() == absl::StatusCode::kFailedPrecondition) {
        return absl::FailedPreconditionError(absl::StrCat("stopped: ", r.status().message()));
      }
      state = hoist::v1::STEP_STATE_FAILED;
      *error = std::string(r.status().message());
    } else {
      result = *r;
      if (r->outcome() != hoist::v1::STEP_OUTCOME_SUCCEEDED) {
        state = hoist::v1::STEP_STATE_FAILED;
        *error = r->message().empty() ? std::string("the agent reported a failure") : r->message();
        if (r->has_job()) {
          *error = absl::StrCat(*error, " (exit code ", r->job().exit_code(), ")\n", r->job().log_tail());
        }
      } else if (r->has_pull() && action.has_pull_image()) {
        absl::StatusOr<std::string> drift =
            CheckPulledDigest(epoch, rollout, runner, step.agent_id, action.pull_image().image(),
                              r->pull().image_digest());
        if (!drift.ok()) return drift.status();
        if (!drift->empty()) {
          state = hoist::v1::STEP_STATE_FAILED;
          *error = *drift;
        }
      } else if (r->has_backup()) {
        hoist::v1::BackupRecord backup;
        backup.set_id(action.backup().backup_id());
        backup.set_deployment(rollout.deployment);
        backup.set_version(rollout.from_version);
        backup.set_rollout_id(rollout.id);
        backup.set_agent_id(step.agent_id);
        *backup.mutable_artifacts() = r->backup().artifacts();
        // Verified means each artifact says how the agent checked it.
        bool verified = backup.artifacts_size() > 0;
        for (const auto& a : backup.artifacts()) verified = verified && !a.verified_by().empty();
        backup.set_verified(verified);
        if (absl::Status s = store_->RecordBackup(epoch, backup); !s.ok()) return s;
        const std::vector<std::string> pruned(r->backup().pruned().begin(), r->backup().pruned().end());
        if (absl::Status s = store_->ForgetBackups(epoch, step.agent_id, pruned); !s.ok()) return s;
        if (!pruned.empty()) {
          spdlog::info("rollout {}: {} removed older backups {} (backup.keep)", rollout.id, step.agent_id,
                       absl::StrJoin(pruned, ", "));
        }
      }
    }
  } else if (step.kind == "pin") {
    if (absl::Status s = store_->Pin(epoch, rollout.deployment, rollout.to_version); !s.ok()) return s;
  } else if (step.kind == "pin_back") {
    if (absl::Status s = store_->Pin(epoch, rollout.deployment, rollout.from_version); !s.ok()) return s;
  } else if (step.kind == "live_slot") {
    hoist::v1::Slot slot = rollout.plan.target_slot();
    if (absl::Status s = store_->SetLiveSlot(epoch, rollout.deployment, slot); !s.ok()) return s;
  } else if (step.kind == "grace") {
    if (absl::Status s = RunGrace(rollout, step, epoch, runner, started); !s.ok()) return s;
  } else if (step.kind == "pause") {
    const absl::Time until = started + step.timeout;
    while (clock_->Now() < until && !runner->cancel.load() && !runner->abort.load()) {
      clock_->SleepFor(std::min(absl::Milliseconds(100), until - clock_->Now()));
    }
    // A pause cut short by losing leadership is not done: the next leader
    // pauses again.
    if (runner->abort.load()) return absl::FailedPreconditionError("stopped: leadership lost during the pause");
  } else if (step.kind == "preflight" || step.kind == "postcheck") {
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
    if (!missing.empty()) {
      state = hoist::v1::STEP_STATE_FAILED;
      *error = absl::StrCat("agents not connected: ", absl::StrJoin(missing, ", "),
                            "; start them or check their controller address");
    }
  } else {
    state = hoist::v1::STEP_STATE_FAILED;
    *error = absl::StrCat("step kind \"", step.kind, "\" has no action and this controller cannot run it");
  }

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
  if (rollout->state == hoist::v1::ROLLOUT_STATE_PENDING) {
    if (absl::Status s = store_->SetRolloutState(epoch, id, hoist::v1::ROLLOUT_STATE_RUNNING, ""); !s.ok()) {
      spdlog::error("rollout {}: {}", id, s.message());
      finish();
      return;
    }
    Event(epoch, *rollout, "rollout_started",
          absl::StrCat(rollout->kind, " of ", rollout->deployment, " ",
                       rollout->from_version.empty() ? std::string("") : rollout->from_version + " -> ",
                       rollout->to_version, " (", steps->size(), " steps)"));
  } else {
    Event(epoch, *rollout, "rollout_resumed", absl::StrCat("resumed by the leader of epoch ", epoch));
  }

  std::string failure;
  std::string failed_phase;
  bool cancelled = false;
  bool stopped = false;  // leadership lost: leave the state for the next leader
  size_t i = 0;
  int current_phase = -1;
  // A runner told to stop (leadership lost) starts no further batch: its
  // epoch may still pass the fence until the next leader bumps it.
  while (i < steps->size() && failure.empty() && !cancelled && !stopped && !runner->abort.load()) {
    // One batch: consecutive steps of the same phase and batch number.
    size_t j = i;
    while (j < steps->size() && (*steps)[j].phase == (*steps)[i].phase && (*steps)[j].batch == (*steps)[i].batch) ++j;
    // The phase that undoes a failed gate runs only then (below).
    if ((*steps)[i].phase_name == kUndoGatePhase) break;
    std::vector<const StoredStep*> todo;
    for (size_t k = i; k < j; ++k) {
      if (!Finished((*steps)[k].state)) todo.push_back(&(*steps)[k]);
    }
    if (!todo.empty()) {
      auto status = store_->GetRolloutStatus(id);
      if (runner->cancel.load() || (status.ok() && status->cancel_requested)) {
        cancelled = true;
        break;
      }
      if ((*steps)[i].phase != current_phase) {
        current_phase = (*steps)[i].phase;
        std::string reason;
        for (const auto& p : rollout->plan.phases()) {
          if (p.name() == (*steps)[i].phase_name) reason = p.reason();
        }
        Event(epoch, *rollout, "phase_started", absl::StrCat((*steps)[i].phase_name, reason.empty() ? "" : ": ", reason),
              &(*steps)[i]);
      }
      std::vector<std::string> errors(todo.size());
      std::vector<absl::StatusOr<hoist::v1::StepState>> states(todo.size(), hoist::v1::STEP_STATE_PENDING);
      // The whole batch is marked running in one write, then each step runs
      // on its own thread.
      if (absl::Status s = MarkRunning(epoch, *rollout, todo); !s.ok()) {
        spdlog::warn("rollout {}: runner stops: {}", id, s.message());
        stopped = true;
        break;
      }
      // A batch across hundreds of hosts records no progress lines: they
      // would be a write per host per step, and nobody reads them one by one.
      const bool record_progress = todo.size() <= kMaxBatchWithProgress;
      std::vector<std::thread> threads;
      for (size_t k = 0; k < todo.size(); ++k) {
        threads.emplace_back([&, k] {
          states[k] = RunStep(*rollout, *todo[k], epoch, runner, &errors[k], /*marked=*/true, record_progress);
        });
      }
      for (auto& t : threads) t.join();
      for (size_t k = 0; k < todo.size(); ++k) {
        if (!states[k].ok()) {
          spdlog::warn("rollout {}: runner stops: {}", id, states[k].status().message());
          stopped = true;
        } else if (*states[k] == hoist::v1::STEP_STATE_FAILED && failure.empty()) {
          failure = absl::StrCat(todo[k]->description, ": ", errors[k]);
          failed_phase = todo[k]->phase_name;
        }
      }
    }
    i = j;
  }
  // A failed gate (a migration gate, or a one-shot job run before any
  // service moved): nothing has moved yet, so the deployment is put back as
  // it was (the old pin, the services stopped first running).
  bool gate = absl::StartsWith(failed_phase, "migrate-") || absl::StartsWith(failed_phase, "run-");
  for (const StoredStep& st : *steps) {
    if (!gate || st.phase_name == failed_phase) break;
    if (absl::StartsWith(st.phase_name, "replace-") || absl::StartsWith(st.phase_name, "start-")) gate = false;
  }
  bool put_back = false;
  if (!stopped && !runner->abort.load() && gate) {
    std::vector<std::string> undone, not_undone;
    for (const StoredStep& st : *steps) {
      if (st.phase_name != kUndoGatePhase || Finished(st.state)) continue;
      std::string err;
      absl::StatusOr<hoist::v1::StepState> done = RunStep(*rollout, st, epoch, runner, &err);
      if (!done.ok()) {
        stopped = true;
        break;
      }
      (*done == hoist::v1::STEP_STATE_SUCCEEDED ? undone : not_undone)
          .push_back(*done == hoist::v1::STEP_STATE_SUCCEEDED ? st.description
                                                              : absl::StrCat(st.description, ": ", err));
    }
    if (!undone.empty()) absl::StrAppend(&failure, "\nput back as before: ", absl::StrJoin(undone, "; "));
    if (!not_undone.empty()) absl::StrAppend(&failure, "\nNOT put back: ", absl::StrJoin(not_undone, "; "));
    put_back = !undone.empty() && not_undone.empty();
  }
  if (stopped || runner->abort.load()) {
    finish();
    return;
  }
  // Pre-flight checks and pulls change nothing the deployment runs on.
  const bool untouched = failed_phase == "preflight" || failed_phase == "pull";
  hoist::v1::RolloutState final_state = hoist::v1::ROLLOUT_STATE_SUCCEEDED;
  std::string message = absl::StrCat(rollout->deployment, " now runs ", rollout->to_version);
  if (cancelled) {
    final_state = hoist::v1::ROLLOUT_STATE_CANCELLED;
    message = "cancelled by an operator; steps already done stay done";
  } else if (!failure.empty()) {
    final_state = hoist::v1::ROLLOUT_STATE_FAILED;
    message = failure;
    if (untouched) {
      message = absl::StrCat(message, kNothingChangedLine, rollout->deployment, " runs ",
                             rollout->from_version.empty() ? "what it ran" : rollout->from_version, " as before");
    } else if (!rollout->rollback_command.empty()) {
      message = absl::StrCat(message, "\nto roll back: ", rollout->rollback_command);
    }
    if (rollout->strategy == hoist::v1::STRATEGY_BLUE_GREEN) {
      auto d = store_->GetDeployment(rollout->deployment);
      if (d.ok() && d->live_slot != rollout->plan.target_slot()) {
        const bool green = rollout->plan.target_slot() == hoist::v1::SLOT_GREEN;
        message = absl::StrCat(message, "\nthe proxy was not switched: ", green ? "blue" : "green", " still serves ",
                               rollout->from_version, "; the ", green ? "green" : "blue",
                               " containers are left for inspection and the next blue-green rollout removes them");
      }
    }
  }
  if (absl::Status s = store_->SetRolloutState(epoch, id, final_state, final_state == hoist::v1::ROLLOUT_STATE_SUCCEEDED ? "" : message);
      !s.ok()) {
    spdlog::error("rollout {}: cannot record its end: {}", id, s.message());
    finish();
    return;
  }
  Event(epoch, *rollout, final_state == hoist::v1::ROLLOUT_STATE_SUCCEEDED ? "rollout_succeeded"
                         : cancelled                                         ? "rollout_cancelled"
                                                                             : "rollout_failed",
        message, nullptr, final_state);
  store_->Audit({"hoistd", absl::StrCat("rollout.", rollout->kind), rollout->deployment, id,
                 final_state == hoist::v1::ROLLOUT_STATE_SUCCEEDED ? "ok" : "failed", message})
      .IgnoreError();

  // A failed blue-green upgrade needs no rollback: the old slot still serves;
  // nor does a failed gate that was put back.
  if ((put_back || (untouched && final_state == hoist::v1::ROLLOUT_STATE_FAILED)) &&
      rollout->on_failure == hoist::v1::ON_FAILURE_ROLLBACK) {
    Event(epoch, *rollout, "rollback_not_needed",
          put_back ? absl::StrCat("no rollback: the failed gate was undone and ", rollout->from_version,
                                  " runs as before")
                   : absl::StrCat("no rollback: the rollout failed in its ", failed_phase,
                                  " phase, before anything was changed"),
          nullptr, final_state);
  } else if (final_state == hoist::v1::ROLLOUT_STATE_FAILED && rollout->on_failure == hoist::v1::ON_FAILURE_ROLLBACK &&
             rollout->kind == "upgrade" && rollout->strategy != hoist::v1::STRATEGY_BLUE_GREEN) {
    RollbackLauncher launcher;
    {
      absl::MutexLock lock(&mu_);
      launcher = rollback_;
    }
    if (launcher) {
      auto rb = launcher(*rollout);
      if (rb.ok()) {
        Event(epoch, *rollout, "rollback_started", absl::StrCat("rolling back by itself: rollout ", *rb), nullptr,
              final_state);
      } else {
        Event(epoch, *rollout, "rollback_refused", absl::StrCat("cannot roll back by itself: ", rb.status().message()),
              nullptr, final_state);
      }
    }
  }
  finish();
}

}  // namespace hoist::rollout

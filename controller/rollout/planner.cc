// The planner's entry points and the assembly of a rolling plan (upgrade,
// first deploy, rollback, restore): checks first, then the plan's header,
// notes and warnings, the move order, and its phases in order. The parts
// live in the planner_*.cc files that planner_internal.h lists.

#include "controller/rollout/planner.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controller/rollout/move_order.h"
#include "controller/rollout/planner_internal.h"
#include "shared/semver.h"
#include "shared/status_macros.h"

namespace hoist::rollout {
namespace internal {

absl::StatusOr<Plan> Planner::Build(const RollbackOptions* rollback) {
  if (in_.strategy == v1::STRATEGY_BLUE_GREEN && mode_ == Mode::kInitial) {
    return absl::FailedPreconditionError(absl::StrCat(
        "blue-green switches traffic from what runs to a second set of containers, but nothing of ", m_.deployment,
        " runs yet; deploy ", in_.target.version(), " with --strategy rolling first"));
  }
  if (in_.strategy == v1::STRATEGY_BLUE_GREEN && mode_ == Mode::kUpgrade) return BuildBlueGreen();
  HOIST_RETURN_IF_ERROR(CheckReleases());
  HOIST_RETURN_IF_ERROR(CollectObserved());
  Place();
  HOIST_RETURN_IF_ERROR(CheckWiring());
  // What moves: versioned services other than databases; on a first deploy everything.
  for (const ServiceSpec& s : m_.services) {
    if (mode_ == Mode::kInitial || (s.versioned() && s.role != v1::ROLE_DATABASE)) moving_.push_back(s.name);
  }
  HOIST_RETURN_IF_ERROR(Preflight());

  StartPlan(v1::STRATEGY_ROLLING);
  CollectNotes();
  WarnRolling();
  HOIST_RETURN_IF_ERROR(OrderRollingMoves());

  PhasePreflight();
  if (mode_ == Mode::kUpgrade) HOIST_RETURN_IF_ERROR(PhaseBackupUnlessSkipped());
  PhasePull(moving_);
  PhasePin();
  PhaseForwards();
  // What a failed migration gate puts back (its phase runs only then).
  StoppedServices stopped;
  if (mode_ == Mode::kRestore) {
    PhaseStopApp();
    HOIST_RETURN_IF_ERROR(PhaseRestore(*rollback->restore));
  } else {
    stopped = PhasesStopFirst();
  }
  for (size_t i = 0; i < order_.units.size(); ++i) PhaseUnit(order_.units[i], i);
  PhaseProxyReload();
  PhasePostcheck();

  if (mode_ == Mode::kUpgrade) {
    PhaseUndoGate(stopped);
    plan_.rollback_command = RollbackCommand(m_.deployment, from_version_, plan_.backup_id);
  }
  Finish();
  return std::move(plan_);
}

void Planner::StartPlan(v1::Strategy strategy) {
  plan_.deployment = m_.deployment;
  plan_.from_version = from_version_;
  plan_.to_version = to_version_;
  plan_.strategy = strategy;
  plan_.initial_deploy = mode_ == Mode::kInitial;
  plan_.is_rollback = mode_ == Mode::kRollback || mode_ == Mode::kRestore;
  plan_.on_failure = in_.options.on_failure == v1::ON_FAILURE_UNSPECIFIED ? v1::ON_FAILURE_STOP
                                                                          : in_.options.on_failure;
}

void Planner::CollectNotes() {
  // Release notes from just after the current release up to the target, oldest first.
  std::vector<v1::Release> notes = in_.intermediate;
  notes.push_back(in_.target);
  std::optional<Version> from_v;
  if (!from_version_.empty()) from_v = *Version::Parse(from_version_);
  const Version to_v = *Version::Parse(to_version_);
  std::set<std::string> seen;
  for (const v1::Release& r : notes) {
    auto v = Version::Parse(r.version());
    if (!v.ok() || !seen.insert(v->ToString()).second) continue;
    bool between = plan_.is_rollback ? false : (*v <= to_v && (!from_v || *v > *from_v));
    if (between) plan_.notes.push_back(r);
  }
  std::sort(plan_.notes.begin(), plan_.notes.end(), [](const v1::Release& a, const v1::Release& b) {
    return *Version::Parse(a.version()) < *Version::Parse(b.version());
  });
}

void Planner::WarnRolling() {
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_DATABASE && mode_ != Mode::kInitial) {
      plan_.warnings.push_back(absl::StrCat(
          s.name, " (database) is never replaced by a rolling ", plan_.is_rollback ? "rollback" : "upgrade",
          m_.backup.has_value() ? "; it is backed up and restored only" : ""));
    }
    if (!s.health.has_value() && s.role != v1::ROLE_JOB && s.replicas > 0) {
      plan_.warnings.push_back(absl::StrCat(s.name, " has no health check: Hoist only knows its containers started"));
    }
  }
}

absl::Status Planner::OrderRollingMoves() {
  MoveOrderInput order_in;
  order_in.manifest = &m_;
  order_in.to_version = to_version_;
  bool nothing_runs = mode_ == Mode::kInitial || mode_ == Mode::kRestore;
  order_in.from_version = nothing_runs ? "" : from_version_;
  for (const std::string& name : moving_) {
    const ServiceSpec& s = *m_.FindService(name);
    order_in.services.push_back(name);
    std::string why;
    order_in.update_order[name] = EffectiveOrder(s, &why);
    if (s.role == v1::ROLE_SCHEDULER && !nothing_runs) {
      order_in.stopped_first[name] =
          "role scheduler: stopped first, so no new scheduled work starts while the database and the "
          "services change; it starts again on the new version after the workers";
    }
  }
  HOIST_ASSIGN_OR_RETURN(order_, OrderMoves(order_in));
  for (const std::string& w : order_.warnings) plan_.warnings.push_back(w);
  return absl::OkStatus();
}

void Planner::Finish() {
  for (size_t i = 0; i < plan_.phases.size(); ++i) {
    PlanPhase& ph = plan_.phases[i];
    // Batches numbered 0, 1, 2, ... in order, whatever gaps planning left.
    std::set<uint32_t> used;
    for (const PlanStep& s : ph.steps) used.insert(s.batch);
    std::map<uint32_t, uint32_t> renumber;
    for (uint32_t b : used) renumber[b] = static_cast<uint32_t>(renumber.size());
    std::stable_sort(ph.steps.begin(), ph.steps.end(),
                     [](const PlanStep& a, const PlanStep& b) { return a.batch < b.batch; });
    for (size_t j = 0; j < ph.steps.size(); ++j) {
      PlanStep& s = ph.steps[j];
      s.batch = renumber[s.batch];
      s.id = absl::StrFormat("p%02d-s%03d-%s", i + 1, j + 1, s.id);
    }
  }
}

}  // namespace internal

std::vector<const PlanStep*> Plan::AllSteps() const {
  std::vector<const PlanStep*> out;
  for (const PlanPhase& ph : phases) {
    for (const PlanStep& s : ph.steps) out.push_back(&s);
  }
  return out;
}

const PlanPhase* Plan::FindPhase(absl::string_view name) const {
  for (const PlanPhase& ph : phases) {
    if (ph.name == name) return &ph;
  }
  return nullptr;
}

std::string RollbackCommand(const std::string& deployment, const std::string& to_version,
                            const std::string& backup_id) {
  std::string command = absl::StrCat("hoist rollback -d ", deployment, " --to ", to_version);
  if (!backup_id.empty()) absl::StrAppend(&command, " --restore ", backup_id, " --confirm ", deployment);
  return command;
}

absl::StatusOr<Plan> PlanRollout(const PlanInput& input) {
  internal::Planner planner(input,
                            input.current.has_value() ? internal::Mode::kUpgrade : internal::Mode::kInitial);
  return planner.Build(nullptr);
}

absl::StatusOr<Plan> PlanRollback(const PlanInput& input, const RollbackOptions& options) {
  if (!input.current.has_value()) {
    return absl::InvalidArgumentError("nothing to roll back: no release is pinned");
  }
  internal::Planner planner(input,
                            options.restore.has_value() ? internal::Mode::kRestore : internal::Mode::kRollback);
  return planner.Build(&options);
}

}  // namespace hoist::rollout

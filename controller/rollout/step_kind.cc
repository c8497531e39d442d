// The names of step kinds and phase roles: the only place they are spelled.

#include "controller/rollout/step_kind.h"

#include <cstddef>
#include <iterator>
#include <ostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace hoist::rollout {
namespace {

struct StepKindEntry {
  StepKind kind;
  absl::string_view name;
};

// In the enum's order: StepKindName indexes it.
constexpr StepKindEntry kStepKinds[] = {
    {StepKind::kPreflight, "preflight"},
    {StepKind::kBackup, "backup"},
    {StepKind::kPullImage, "pull_image"},
    {StepKind::kPin, "pin"},
    {StepKind::kPinBack, "pin_back"},
    {StepKind::kStopInstance, "stop_instance"},
    {StepKind::kStartInstance, "start_instance"},
    {StepKind::kProbeHealth, "probe_health"},
    {StepKind::kRunJob, "run_job"},
    {StepKind::kRemoveInstance, "remove_instance"},
    {StepKind::kPause, "pause"},
    {StepKind::kProxyUpdate, "proxy_update"},
    {StepKind::kForwardUpdate, "forward_update"},
    {StepKind::kPostcheck, "postcheck"},
    {StepKind::kSmokeTest, "smoke_test"},
    {StepKind::kRestore, "restore"},
    {StepKind::kLiveSlot, "live_slot"},
    {StepKind::kGrace, "grace"},
};

constexpr bool StepKindsInOrder() {
  for (size_t i = 0; i < std::size(kStepKinds); ++i) {
    if (static_cast<size_t>(kStepKinds[i].kind) != i) return false;
  }
  return std::size(kStepKinds) == static_cast<size_t>(StepKind::kGrace) + 1;
}
static_assert(StepKindsInOrder(), "kStepKinds must name every StepKind, in the enum's order");

struct PhaseRoleEntry {
  PhaseRole role;
  absl::string_view name;
  bool prefix;  // name is followed by the phase's subject
};

// No fixed name starts with a prefix, so a name reads back as one role only.
constexpr PhaseRoleEntry kPhaseRoles[] = {
    {PhaseRole::kPreflight, "preflight", false},
    {PhaseRole::kPull, "pull", false},
    {PhaseRole::kMigrationGate, "migrate-", true},
    {PhaseRole::kOneShotJob, "run-", true},
    {PhaseRole::kStart, "start-", true},
    {PhaseRole::kReplace, "replace-", true},
    {PhaseRole::kSwitch, "switch", false},
    {PhaseRole::kUndoGate, kUndoGatePhase, false},
};

}  // namespace

absl::string_view StepKindName(StepKind kind) {
  const auto i = static_cast<size_t>(kind);
  return i < std::size(kStepKinds) ? kStepKinds[i].name : absl::string_view("unknown");
}

std::optional<StepKind> ParseStepKind(absl::string_view name) {
  for (const StepKindEntry& e : kStepKinds) {
    if (e.name == name) return e.kind;
  }
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, StepKind kind) { return os << StepKindName(kind); }

std::string PhaseName(PhaseRole role, absl::string_view subject) {
  for (const PhaseRoleEntry& e : kPhaseRoles) {
    if (e.role == role) return e.prefix ? absl::StrCat(e.name, subject) : std::string(e.name);
  }
  return std::string(subject);
}

PhaseRole PhaseRoleOf(absl::string_view phase_name) {
  for (const PhaseRoleEntry& e : kPhaseRoles) {
    if (e.prefix ? absl::StartsWith(phase_name, e.name) : phase_name == e.name) return e.role;
  }
  return PhaseRole::kOther;
}

bool IsGate(PhaseRole role) { return role == PhaseRole::kMigrationGate || role == PhaseRole::kOneShotJob; }

bool MovesInstances(PhaseRole role) { return role == PhaseRole::kStart || role == PhaseRole::kReplace; }

bool ChangesNothing(PhaseRole role) { return role == PhaseRole::kPreflight || role == PhaseRole::kPull; }

bool RunsMigrations(StepKind kind, PhaseRole role, absl::string_view job_name) {
  if (kind != StepKind::kRunJob) return false;
  return role == PhaseRole::kMigrationGate || (role == PhaseRole::kOneShotJob && absl::StrContains(job_name, "migrat"));
}

}  // namespace hoist::rollout

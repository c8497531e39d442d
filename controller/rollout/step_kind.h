#pragma once

// What a rollout step does and what a plan's phase is for, as the
// controller's rules see them. The planner sets both; the store keeps them as
// text (rollout_steps.kind and .phase_name) and the operator API shows that
// text, so each has one table of names (step_kind.cc) and the rules compare
// these enums, never the names.

#include <iosfwd>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace hoist::rollout {

// Every kind of step the planner emits. Steps without an action run in the
// controller (preflight, pin, pin_back, pause, live_slot, grace); the others
// are sent to an agent.
enum class StepKind {
  kPreflight,       // the agents the plan needs are connected
  kBackup,          // the backup a rollback can restore
  kPullImage,
  kPin,             // the target becomes the pinned release
  kPinBack,         // the old release is pinned again (undo gate)
  kStopInstance,
  kStartInstance,
  kProbeHealth,
  kRunJob,          // a migration gate or a one-shot job
  kRemoveInstance,
  kPause,           // a wait between batches of a rolling replace
  kProxyUpdate,
  kForwardUpdate,
  kPostcheck,       // an instance probed once more after every move
  kSmokeTest,
  kRestore,
  kLiveSlot,        // blue-green: the slot that now serves is recorded
  kGrace,           // blue-green: the old slot is kept for a while (keep last)
};

// The name the store and the API carry for `kind`, e.g. "run_job".
absl::string_view StepKindName(StepKind kind);

// The kind a stored or wire name stands for; nullopt for a name this
// controller does not know, which the caller reports (running a step as some
// other kind would do the wrong thing).
std::optional<StepKind> ParseStepKind(absl::string_view name);

// Writes StepKindName(kind): for logs and test failure messages.
std::ostream& operator<<(std::ostream& os, StepKind kind);

// What a phase is for, where a rule depends on it (kOther elsewhere). Each
// role has a fixed name or a name prefix followed by what it is about; the
// names are what `hoist plan` and the store show.
enum class PhaseRole {
  kOther,
  kPreflight,      // "preflight": checks only, nothing changes
  kPull,           // "pull": images arrive, nothing that runs changes
  kMigrationGate,  // "migrate-<service>": a service's migration, before it moves
  kOneShotJob,     // "run-<job>": a job service runs once
  kStart,          // "start-<service or slot>": instances start where none run
  kReplace,        // "replace-<service or group>": old instances give way to new ones
  kSwitch,         // "switch": blue-green proxies send every route to the new slot
  kUndoGate,       // "undo-gate": runs only after a failed gate, puts things back
};

// The name of the last phase of a rolling upgrade with a migration gate: it
// runs only when a gate fails (the executor skips it otherwise) and puts the
// deployment back as it was before the rollout.
inline constexpr char kUndoGatePhase[] = "undo-gate";

// The name of a phase of `role`: the fixed name, or the prefix followed by
// `subject` (the service, group, job or slot it is about). A kOther phase is
// named `subject` as given.
std::string PhaseName(PhaseRole role, absl::string_view subject = "");

// The role of a phase by its name, the inverse of PhaseName: the one way a
// stored step's phase_name is read (the store keeps no role of its own).
PhaseRole PhaseRoleOf(absl::string_view phase_name);

// Gates run before the services they guard move: a migration gate, or a
// one-shot job.
bool IsGate(PhaseRole role);
// Phases where instances of the deployment's services start or are replaced.
bool MovesInstances(PhaseRole role);
// Phases whose failure leaves everything the deployment runs on as it was.
bool ChangesNothing(PhaseRole role);

// Whether a step of `kind` in a phase of `role` runs migrations, which a
// rollback cannot undo: a migration gate's job, or a one-shot job whose name
// says it migrates (a stack may run its migrations as a job service, like
// RyTask's `migrate`). `job_name`: the name its run_job action gives.
bool RunsMigrations(StepKind kind, PhaseRole role, absl::string_view job_name);

}  // namespace hoist::rollout

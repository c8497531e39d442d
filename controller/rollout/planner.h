#pragma once

// The rollout planner: a pure function from (stack manifest, observed state,
// releases, options) to an ordered plan of phases and steps, each phase with
// the reason it sits where it does. Nothing here touches the network, the
// database or Docker; the executor runs the plan and `hoist plan` prints it.
//
// Order of an upgrade (rolling; blue-green is described at PlanRollout): preflight, backup, pull (every host, in
// parallel), pin, stop the scheduler, then one phase per service (or per group
// of services that must match) in role order: jobs, api (with its migration as
// a gate first), workers, scheduler (started again), web, proxy; then
// postcheck and the smoke test. `after:` constraints and compatibility rules
// reorder services or make them stop first; every such choice is explained in
// the phase's reason and in the plan's warnings.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/rollout/manifest.h"
#include "controller/rollout/step_kind.h"
#include "hoist/v1/agent.pb.h"
#include "hoist/v1/common.pb.h"
#include "hoist/v1/operator.pb.h"

namespace hoist::rollout {

// One agent as the controller sees it.
struct AgentState {
  std::string id;
  bool connected = false;
  std::map<std::string, std::string> labels;
  uint64_t image_disk_free_bytes = 0;
  uint64_t backup_disk_free_bytes = 0;
  // The host's Docker Engine ID as the agent reported it; empty when unknown.
  // Agents with different IDs run on different Docker hosts, and a container
  // name on a deployment network only resolves on its own engine.
  std::string docker_engine_id;
  // The address the agent reported for its host (its --address); the
  // manifest's hosts[].address, when given, wins.
  std::string address;
  // Managed containers on the host (every deployment's; others are ignored).
  std::vector<hoist::v1::ContainerInfo> containers;
};

struct PlanOptions {
  hoist::v1::OnFailure on_failure = hoist::v1::ON_FAILURE_STOP;
  // Leave out the backup phase (the plan warns that a rollback cannot restore data).
  bool skip_backup = false;
  // Id of the backup this rollout takes; empty: "<deployment>-pre-<to_version>",
  // followed by "-<backup_suffix>" when that is given (hoistd gives the
  // rollout's time stamp, so that every rollout's backup has an id of its own).
  std::string backup_id;
  std::string backup_suffix;
  // Env var names the hosts' env files provide, per agent id, for the
  // release's required_env check (values are never needed).
  std::map<std::string, std::set<std::string>> host_env;
  // False when the hosts could not be asked (a follower plans): a name that
  // only env files could set is then a warning, not a pre-flight problem.
  bool host_env_checked = true;
  // Pre-flight refuses hosts with less free space than these.
  uint64_t min_image_disk_free_bytes = 1ull << 30;
  uint64_t min_backup_disk_free_bytes = 1ull << 30;
  // Timeouts of steps whose length the manifest does not give.
  absl::Duration pull_timeout = absl::Minutes(10);
  absl::Duration start_timeout = absl::Minutes(1);
  // Blue-green: how long the old slot keeps running after the switch.
  absl::Duration grace_period = absl::Minutes(10);
};

struct PlanInput {
  StackManifest manifest;
  std::vector<AgentState> agents;
  // The pinned release; absent on the first deploy.
  std::optional<hoist::v1::Release> current;
  hoist::v1::Release target;
  // Releases after current up to target, for their notes (any order).
  std::vector<hoist::v1::Release> intermediate;
  hoist::v1::Strategy strategy = hoist::v1::STRATEGY_ROLLING;
  // The slot the proxy sends traffic to now. Rolling plans replace its
  // containers in place; a blue-green plan starts the new version in the
  // other slot. Containers of the other slot are never touched by a rolling
  // plan.
  hoist::v1::Slot live_slot = hoist::v1::SLOT_BLUE;
  PlanOptions options;
};

struct PlanStep {
  // Stable, deterministic id: "p05-s003-start-api-0".
  std::string id;
  // What the step does (its name in the API: StepKindName).
  StepKind kind = StepKind::kPreflight;
  // Agent that runs it; empty for controller-side steps (preflight, pin, pause).
  std::string agent_id;
  // One line for a person.
  std::string description;
  std::optional<hoist::v1::InstanceRef> instance;
  // Steps of a phase with the same batch run in parallel; batches run in order.
  uint32_t batch = 0;
  absl::Duration timeout = absl::ZeroDuration();
  // For agent steps: the complete action. step_id, epoch, deadline and
  // rollout_id are left for the executor.
  hoist::v1::Step action;
};

struct PlanPhase {
  // For the rules that depend on what the phase is for, the name reads back
  // as the role (PhaseRoleOf), which is how a stored step's phase is read.
  std::string name;
  PhaseRole role = PhaseRole::kOther;
  // Why the phase is here and in this order, citing the role or the rule.
  std::string reason;
  std::vector<PlanStep> steps;
};

struct Plan {
  std::string deployment;
  std::string from_version;  // empty on the first deploy
  std::string to_version;
  hoist::v1::Strategy strategy = hoist::v1::STRATEGY_ROLLING;
  bool initial_deploy = false;
  bool is_rollback = false;
  hoist::v1::OnFailure on_failure = hoist::v1::ON_FAILURE_STOP;
  // Backup this rollout takes (empty when none) or restores (rollback).
  std::string backup_id;
  // What to run if this rollout fails, for the operator.
  std::string rollback_command;
  std::vector<PlanPhase> phases;
  // Releases after from_version up to to_version, oldest first.
  std::vector<hoist::v1::Release> notes;
  std::vector<std::string> warnings;
  // Blue-green: the slot the new version starts in, and how long the old one
  // is kept after the switch.
  hoist::v1::Slot target_slot = hoist::v1::SLOT_UNSPECIFIED;
  absl::Duration grace_period = absl::ZeroDuration();

  // Every step in order, for tests and printing.
  std::vector<const PlanStep*> AllSteps() const;
  const PlanPhase* FindPhase(absl::string_view name) const;
};

// Plans an upgrade to input.target (or the first deploy when input.current is
// absent). Refusals:
//   INVALID_ARGUMENT: target not newer than current ("that is a rollback"),
//     target missing an image for a versioned service, image for an unknown
//     service, unparsable versions;
//   FAILED_PRECONDITION: agents missing or disconnected, current instances
//     unhealthy, required env missing (renamed ones named), low disk, rules
//     the target release breaks by itself, orders no rule allows;
//
// Blue-green (input.strategy): preflight, backup, clear leftovers of the idle
// slot, pull, migration gates (expand/contract: the old slot serves while
// they run), one-shot jobs, every moving service started in the idle slot
// and health-checked, the preview route and the smoke test, the scheduler
// handed over, pin, ONE proxy step per proxy host switching every route at
// once, the grace period, then the old slot retired and the new one checked.
// Refusals on top of the above, FAILED_PRECONDITION: a first deploy, no
// running proxy with routes, a moving service publishing a host port (both
// slots cannot hold it), a versioned proxy.
absl::StatusOr<Plan> PlanRollout(const PlanInput& input);

// The rollback command printed for an operator to run as it is:
// "hoist rollback -d D --to V", plus "--restore B --confirm D" when a backup
// is to be restored (the CLI asks for the confirmation at a terminal otherwise).
std::string RollbackCommand(const std::string& deployment, const std::string& to_version,
                            const std::string& backup_id);

struct RollbackOptions {
  // The pre-upgrade backup to restore; when set, the rollback stops every app
  // service, restores it on the database's host, then starts the old release.
  std::optional<hoist::v1::BackupRecord> restore;
};

// Plans a rollback from input.current (what runs) to input.target (an older
// release). Without a restore it moves services back in the same role order
// as an upgrade (no migration, no backup). INVALID_ARGUMENT when the target is
// not older ("that is an upgrade") or input.current is absent.
absl::StatusOr<Plan> PlanRollback(const PlanInput& input, const RollbackOptions& options);

// The plan as the operator API carries it.
// What the plan does, as 16 hex digits of a SHA-256: deployment, versions,
// strategy, warnings, and every phase's steps with their batches, timeouts
// and complete actions, in order; not step ids, states, times or release
// notes. The plan's backup id (which carries the time stamp of the rollout
// that takes it) is read as a placeholder, so a plan shown and the same plan
// started a minute later agree.
std::string PlanDigest(const Plan& plan);

// The plan for the API, its digest included.
hoist::v1::Plan ToProto(const Plan& plan);

}  // namespace hoist::rollout

#pragma once

// The planner's working parts, shared by its source files (nothing outside
// controller/rollout/planner*.cc includes this):
//   planner.cc             the public entry points and the rolling plan's assembly
//   planner_checks.cc      releases, observed containers, placement, wiring, pre-flight
//   planner_steps.cc       steps on one instance or job: start, probe, stop, remove, run
//   planner_proxy.cc       proxy routes and forwarders (names across Docker hosts)
//   planner_phases.cc      phases around the moves: preflight, backup, pull, pin,
//                          postcheck, stop-app, restore
//   planner_rolling.cc     the rolling moves: stop-first, unit phases, the undo gate
//   planner_blue_green.cc  the blue-green plan, stage by stage
//   planner_proto.cc       the plan's digest and its API form

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/rollout/manifest.h"
#include "controller/rollout/move_order.h"
#include "controller/rollout/planner.h"
#include "controller/rollout/step_kind.h"
#include "google/protobuf/duration.pb.h"

namespace hoist::rollout::internal {

namespace v1 = ::hoist::v1;

inline constexpr absl::Duration kControllerStepTimeout = absl::Seconds(30);
inline constexpr absl::Duration kRemoveTimeout = absl::Seconds(30);
inline constexpr absl::Duration kStepSlack = absl::Seconds(30);
// A forward_update may import the forwarder image first (one small file).
inline constexpr absl::Duration kForwardTimeout = absl::Minutes(2);
inline constexpr uint32_t kJobLogTailLines = 50;

google::protobuf::Duration DurationProto(absl::Duration d);

std::string Fmt(absl::Duration d);

// Which version label a pinned (not versioned) service's containers carry:
// its image tag, or its digest when it has no tag.
std::string PinnedVersion(const ServiceSpec& s);

// One container of a service as the plan goes: observed ones at first, then
// the ones the plan starts.
struct Live {
  std::string version;
  std::string agent;
  bool running = true;
  // Ports Docker published for a container that runs now (from the
  // inventory); empty for an instance this plan starts.
  std::vector<v1::PortMapping> published;
  bool planned = false;  // started by this plan
};

// Services a rolling upgrade stops before anything moves, each with the
// replicas that ran (what a failed migration gate starts again).
using StoppedServices = std::vector<std::pair<const ServiceSpec*, std::vector<std::pair<uint32_t, Live>>>>;

enum class Mode { kUpgrade, kInitial, kRollback, kRestore };

class Planner {
 public:
  Planner(const PlanInput& in, Mode mode) : in_(in), m_(in.manifest), mode_(mode) {}

  absl::StatusOr<Plan> Build(const RollbackOptions* rollback);
  absl::StatusOr<Plan> BuildBlueGreen();

 private:
  // --- inputs and checks (planner_checks.cc) ---
  absl::Status CheckReleases();
  absl::Status CollectObserved();
  void Place();
  // Refuses a stack whose proxy would reach a backend by its container name
  // across Docker hosts (names resolve on one engine only).
  absl::Status CheckWiring();
  // Routes whose proxy and backend run on different Docker engines: the
  // backend is published at its host's address (see CrossHost()).
  void WireProxyRoutes(std::vector<std::string>* problems);
  // Hosts that run part of the stack, in manifest order.
  std::vector<std::string> StackHosts() const;
  // The forwarders `s` needs on engines where it does not run (see Forwarded()).
  void WireForwarder(const ServiceSpec& s, const std::vector<std::string>& stack_hosts,
                     std::vector<std::string>* problems);
  absl::Status Preflight();
  void PreflightHealth();
  // Where env var `name` is set: services' env and the hosts' env files.
  std::vector<std::string> EnvPlaces(const std::string& name) const;
  void PreflightEnv();
  void PreflightDisk();

  // --- helpers for steps ---
  // A phase no rule depends on, named as given.
  PlanPhase& AddPhase(std::string name, std::string reason) {
    return AddPhase(PhaseRole::kOther, name, std::move(reason));
  }
  // A phase of `role`, named by it (see PhaseName).
  PlanPhase& AddPhase(PhaseRole role, absl::string_view subject, std::string reason) {
    PlanPhase ph;
    ph.name = PhaseName(role, subject);
    ph.role = role;
    ph.reason = std::move(reason);
    plan_.phases.push_back(std::move(ph));
    return plan_.phases.back();
  }
  PlanStep& AddStep(PlanPhase& phase, std::string slug, StepKind kind, std::string agent,
                    std::string description, uint32_t batch, absl::Duration timeout) {
    PlanStep s;
    s.id = std::move(slug);  // made into the full id by Finish()
    s.kind = kind;
    s.agent_id = std::move(agent);
    s.description = std::move(description);
    s.batch = batch;
    s.timeout = timeout;
    phase.steps.push_back(std::move(s));
    return phase.steps.back();
  }
  void Finish();

  // SLOT_UNSPECIFIED: the live slot.
  v1::InstanceRef Ref(const std::string& service, uint32_t replica, v1::Slot slot = v1::SLOT_UNSPECIFIED) const {
    v1::InstanceRef r;
    r.set_deployment(m_.deployment);
    r.set_service(service);
    r.set_slot(slot == v1::SLOT_UNSPECIFIED ? live_slot_ : slot);
    r.set_replica(replica);
    return r;
  }
  std::string SlotWord(v1::Slot slot) const {
    return (slot == v1::SLOT_UNSPECIFIED ? live_slot_ : slot) == v1::SLOT_GREEN ? "green" : "blue";
  }
  // The containers the plan tracks in a slot: live_ or idle_.
  std::map<std::string, std::map<uint32_t, std::vector<Live>>>& SlotLive(v1::Slot slot) {
    return slot == v1::SLOT_UNSPECIFIED || slot == live_slot_ ? live_ : idle_;
  }
  bool Moves(const ServiceSpec& s) const {
    return std::find(moving_.begin(), moving_.end(), s.name) != moving_.end();
  }
  std::string NewVersion(const ServiceSpec& s) const {
    return s.versioned() ? to_version_ : PinnedVersion(s);
  }
  std::string NewImage(const ServiceSpec& s) const {
    if (!s.versioned()) return s.image;
    return in_.target.images().at(s.name);
  }
  // `host`: where the container runs (its address binds cross-host ports);
  // empty for a job, which publishes nothing.
  v1::ContainerSpec SpecOf(const ServiceSpec& s, const std::string& image, const std::string& host) const;
  v1::HealthCheck CheckOf(const HealthSpec& h, const std::string& version) const;
  // Where one-shot jobs of a service run: its first replica's host.
  std::string HostOfFirstReplica(const ServiceSpec& s) const {
    auto it = placement_.find(s.name);
    if (it != placement_.end() && !it->second.empty()) return it->second.front();
    std::vector<std::string> eligible = m_.EligibleHosts(s);
    return eligible.empty() ? m_.hosts.front().id : eligible.front();
  }
  // How other hosts reach `agent`'s host: the manifest's address, else the
  // one its agent reported, else its id.
  std::string HostAddress(const std::string& agent) const {
    const HostSpec* h = m_.FindHost(agent);
    if (h != nullptr && !h->address.empty()) return h->address;
    auto it = agents_.find(agent);
    if (it != agents_.end() && !it->second->address.empty()) return it->second->address;
    return agent;
  }
  std::string EngineOf(const std::string& agent) const {
    auto it = agents_.find(agent);
    return it == agents_.end() ? "" : it->second->docker_engine_id;
  }
  // Container ports of `service` that a proxy on another Docker host sends
  // traffic to without a fixed host port: published on a port Docker chooses,
  // on the host's address.
  bool CrossHost(const std::string& service, uint32_t container_port) const {
    auto it = cross_host_.find(service);
    return it != cross_host_.end() && it->second.contains(container_port);
  }

  // --- steps on one instance or job (planner_steps.cc) ---
  // `slot` SLOT_UNSPECIFIED is the live slot; another slot's steps carry its
  // name in their ids and descriptions.
  void StepStart(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, uint32_t batch,
                 v1::Slot slot = v1::SLOT_UNSPECIFIED);
  bool StepProbe(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, const std::string& version,
                 uint32_t batch, bool postcheck, v1::Slot slot = v1::SLOT_UNSPECIFIED);
  void StepStop(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, Live& c, uint32_t batch,
                v1::Slot slot = v1::SLOT_UNSPECIFIED);
  void StepRemove(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, const Live& c, uint32_t batch,
                  v1::Slot slot = v1::SLOT_UNSPECIFIED);
  // " green" for a slot other than the live one, else "".
  std::string SlotTag(v1::Slot slot) const {
    return slot == v1::SLOT_UNSPECIFIED || slot == live_slot_ ? "" : absl::StrCat(" ", SlotWord(slot));
  }
  // Before a migration: a probe of every database instance that runs (a
  // database whose host just restarted may still be recovering); true when
  // it added any, in batch 0.
  bool StepDatabasesHealthy(PlanPhase& ph);
  void StepJob(PlanPhase& ph, const ServiceSpec& s, const std::string& job_name,
               const std::vector<std::string>& command, absl::Duration timeout,
               StepKind kind, const std::string& what, uint32_t batch);

  // --- proxy routes and forwarders (planner_proxy.cc) ---
  // One backend of `route` for container c (replica r of the route's service) in `slot`.
  // Adds c as a backend of route; false when the proxy cannot reach it (the
  // plan warns).
  // `forwarder`: for a forwarder's targets rather than a proxy's (the warning says so).
  bool AddBackend(v1::ProxyRoute* route, const RouteSpec& r, uint32_t replica, const Live& c, v1::Slot slot,
                  v1::BackendState state, bool forwarder = false);
  // For every proxy with a route `pick` selects and a running instance: one
  // proxy_update per host; fill adds a route's backends and returns its summary.
  void StepProxyUpdate(PlanPhase& ph, const std::function<bool(const RouteSpec&)>& pick,
                       const std::function<std::string(const RouteSpec&, v1::ProxyRoute*)>& fill, uint32_t batch,
                       const std::string& slug, const std::string& verb);
  // Blue-green: one proxy_update per proxy host setting the routes `pick`
  // selects to the running containers of each (slot, state) pair given.
  void StepProxySlots(PlanPhase& ph, const std::function<bool(const RouteSpec&)>& pick,
                      const std::vector<std::pair<v1::Slot, v1::BackendState>>& sets, uint32_t batch,
                      const std::string& slug);
  // Sends every proxy the backends of routes to `service` as they are now,
  // the containers in `draining` marked DRAIN. Nothing when no proxy runs.
  void StepProxyRoutes(PlanPhase& ph, const std::string& service,
                       const std::vector<std::pair<uint32_t, const Live*>>& draining, uint32_t batch);
  void StepProxyReload(PlanPhase& ph, uint32_t batch);
  // Points the forwarders of `service` (on the Docker hosts where it does
  // not run) at its running instances in `slots`, leaving out `draining`.
  // Nothing when the service needs no forwarder.
  void StepForwards(PlanPhase& ph, const std::string& service,
                    const std::vector<std::pair<uint32_t, const Live*>>& draining, uint32_t batch,
                    const std::vector<v1::Slot>& slots = {v1::SLOT_UNSPECIFIED});
  bool Forwarded(const std::string& service) const { return forward_hosts_.contains(service); }
  // Whether any proxy has a route to `service`.
  bool Routed(const std::string& service) const;
  // Container ports other services may reach `s` on by name.
  std::set<uint32_t> NamedPorts(const ServiceSpec& s) const;
  void PhaseForwards();
  void PhaseProxyReload();

  // --- phases around the moves (planner_phases.cc) ---
  void PhasePreflight();
  // The backup phase when the manifest has a backup, unless the operator
  // skips it (the plan then warns).
  absl::Status PhaseBackupUnlessSkipped();
  absl::Status PhaseBackup();
  // The one agent that takes the whole backup, checked for the volumes it
  // must see and its free space.
  absl::StatusOr<std::string> BackupHost();
  void PhasePull(const std::vector<std::string>& extra_services);
  void PhasePin();
  void PhasePostcheck();
  absl::Status PhaseRestore(const v1::BackupRecord& record);
  void PhaseStopApp();

  // --- plan assembly (planner.cc) ---
  // The plan's header fields: deployment, versions, strategy, on_failure.
  void StartPlan(v1::Strategy strategy);
  // Release notes of a rolling plan.
  void CollectNotes();
  // What a rolling plan leaves alone or cannot check.
  void WarnRolling();
  // Fills order_ for the moving services.
  absl::Status OrderRollingMoves();

  // --- rolling moves (planner_rolling.cc) ---
  // The phases that stop services first, scheduler first; returns what ran.
  StoppedServices PhasesStopFirst();
  void PhaseStopFirst(const std::string& service, const std::string& why);
  void PhaseUnit(const MoveUnit& unit, size_t position);
  // The migration gates of a unit's members, each its own phase; true when any.
  bool PhasesMigrate(const MoveUnit& unit);
  // A group that moves together: every old instance stops, then each member starts.
  void PhaseGroup(const MoveUnit& unit, bool gated);
  // One service's phase (start- or replace-).
  void PhaseService(const ServiceSpec& s, const MoveUnit& unit, bool gated);
  // Replaces `s` in batches its rolling settings allow; returns why, for the reason.
  std::string ReplaceRolling(PlanPhase& ph, const ServiceSpec& s, uint32_t& batch);
  void ReplaceService(PlanPhase& ph, const ServiceSpec& s, UpdateOrder order, uint32_t batch_size,
                      uint32_t& batch, bool allow_pause);
  // Replicas with something to do: no healthy new container where it belongs, or old ones left.
  std::vector<uint32_t> ReplicasToReplace(const ServiceSpec& s);
  // Containers of replica r other than the new version where it belongs.
  std::vector<std::pair<uint32_t, Live*>> OldInstances(const ServiceSpec& s, uint32_t r);
  bool NeedsStart(const ServiceSpec& s, uint32_t r);
  // Forgets the containers of replica r that the plan removed.
  void DropReplaced(const ServiceSpec& s, uint32_t r);
  // One batch of replicas replaced in `order`, in batches batch .. batch + 5.
  void ReplaceChunk(PlanPhase& ph, const ServiceSpec& s, UpdateOrder order, const std::vector<uint32_t>& chunk,
                    uint32_t batch);
  // Replicas the manifest no longer has: drained, stopped and removed.
  void RemoveExtraReplicas(PlanPhase& ph, const ServiceSpec& s, uint32_t& batch);
  // The phase a failed migration gate runs (kUndoGatePhase): the old pin
  // and the services stopped first, started again.
  void PhaseUndoGate(const StoppedServices& stopped);
  // Whether a gate (migration or one-shot job) runs before any service moves.
  bool GatedBeforeMoves() const;
  void StepsRestartStopped(PlanPhase& ph, const StoppedServices& stopped);
  // Proxy routes and forwarders, which the stop drained, back to the restarted containers.
  void StepsRouteRestarted(PlanPhase& ph, const StoppedServices& stopped);

  std::string UnitReason(const MoveUnit& unit, bool has_migration_phase);
  UpdateOrder EffectiveOrder(const ServiceSpec& s, std::string* why) const;

  // --- blue-green stages (planner_blue_green.cc) ---
  // Refusals particular to blue-green (see PlanRollout); fills moving_ and
  // returns the proxy that switches.
  absl::StatusOr<const ServiceSpec*> CheckBlueGreen();
  const ServiceSpec* BlueGreenMoves(std::vector<std::string>* problems);
  void BlueGreenRuleProblems(std::vector<std::string>* problems) const;
  void StartBlueGreenPlan();
  void PhaseClearIdle();
  void PhasesBlueGreenGates();
  // Starts every moving service but the schedulers in the idle slot; returns those.
  std::vector<const ServiceSpec*> PhaseStartIdle();
  // Routes "<route>-preview" to a moving service.
  std::set<std::string> PreviewRoutes(const ServiceSpec& proxy) const;
  // Routes the switch moves: to a moving service, not a preview one.
  std::function<bool(const RouteSpec&)> SwitchedRoutes(const std::set<std::string>& preview) const;
  void PhasePreview(const std::set<std::string>& preview);
  void PhaseBlueGreenSmoke(const std::set<std::string>& preview);
  void PhaseHandover(const ServiceSpec& s);
  void PhaseBlueGreenPin();
  void PhaseSwitch(const std::set<std::string>& preview);
  void PhaseGrace();
  void PhaseRetire(const std::set<std::string>& preview);
  void PhaseBlueGreenPostcheck();

  const PlanInput& in_;
  const StackManifest& m_;
  Mode mode_;
  const v1::Slot live_slot_ = in_.live_slot == v1::SLOT_GREEN ? v1::SLOT_GREEN : v1::SLOT_BLUE;
  const v1::Slot idle_slot_ = live_slot_ == v1::SLOT_GREEN ? v1::SLOT_BLUE : v1::SLOT_GREEN;
  Plan plan_;
  std::string from_version_;
  std::string to_version_;
  std::map<std::string, const AgentState*> agents_;
  // service -> replica -> containers (any version); observed, then as planned.
  std::map<std::string, std::map<uint32_t, std::vector<Live>>> live_;
  // The same for the idle slot: leftovers observed, then what a blue-green plan starts there.
  std::map<std::string, std::map<uint32_t, std::vector<Live>>> idle_;
  std::map<std::string, std::vector<v1::ContainerInfo>> observed_;
  std::map<std::string, std::set<uint32_t>> cross_host_;  // see CrossHost()
  // Services reached by name from Docker hosts where no instance of theirs
  // runs: service -> the hosts (one per such engine) that keep its
  // forwarder, and the container ports it relays.
  std::map<std::string, std::vector<std::string>> forward_hosts_;
  std::map<std::string, std::set<uint32_t>> forward_ports_;
  std::map<std::string, std::vector<std::string>> placement_;  // service -> host per replica
  std::vector<std::string> moving_;
  MoveOrder order_;
  std::vector<std::string> preflight_problems_;
};

}  // namespace hoist::rollout::internal

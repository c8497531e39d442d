#include "controller/rollout/planner.h"

#include <arpa/inet.h>

#include <algorithm>
#include <functional>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "controller/rollout/move_order.h"
#include "shared/status_macros.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/text_format.h"
#include "shared/semver.h"
#include "shared/sha256.h"

namespace hoist::rollout {
namespace {

namespace v1 = ::hoist::v1;

constexpr absl::Duration kControllerStepTimeout = absl::Seconds(30);
constexpr absl::Duration kRemoveTimeout = absl::Seconds(30);
constexpr absl::Duration kStepSlack = absl::Seconds(30);
// A forward_update may import the forwarder image first (one small file).
constexpr absl::Duration kForwardTimeout = absl::Minutes(2);
constexpr uint32_t kJobLogTailLines = 50;

google::protobuf::Duration DurationProto(absl::Duration d) {
  google::protobuf::Duration out;
  int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return out;
}

std::string Fmt(absl::Duration d) { return absl::FormatDuration(d); }

// Which version label a pinned (not versioned) service's containers carry:
// its image tag, or its digest when it has no tag.
std::string PinnedVersion(const ServiceSpec& s) {
  auto ref = ParseImageReference(s.image);
  if (!ref.ok()) return "";
  return ref->tag.empty() ? ref->digest : ref->tag;
}

bool Healthy(const v1::ContainerInfo& c, const ServiceSpec& s) {
  if (c.state() != v1::CONTAINER_STATE_RUNNING) return false;
  if (s.health.has_value()) return c.health() == v1::HEALTH_HEALTHY;
  return c.health() != v1::HEALTH_UNHEALTHY;
}

std::string StateWord(const v1::ContainerInfo& c) {
  if (c.state() != v1::CONTAINER_STATE_RUNNING) {
    std::string s = v1::ContainerState_Name(c.state());
    return absl::StrCat("not running (", s.substr(std::string("CONTAINER_STATE_").size()), ")");
  }
  return c.health() == v1::HEALTH_UNHEALTHY ? "unhealthy"
         : c.health() == v1::HEALTH_STARTING ? "still starting"
                                               : "not reported healthy";
}

// One container of a service as the plan goes: observed ones at first, then
// the ones the plan starts.
bool IsIpAddress(const std::string& a) {
  in6_addr buf;
  return inet_pton(AF_INET, a.c_str(), &buf) == 1 || inet_pton(AF_INET6, a.c_str(), &buf) == 1;
}

struct Live {
  std::string version;
  std::string agent;
  bool running = true;
  // Ports Docker published for a container that runs now (from the
  // inventory); empty for an instance this plan starts.
  std::vector<v1::PortMapping> published;
  bool planned = false;  // started by this plan
};

enum class Mode { kUpgrade, kInitial, kRollback, kRestore };

class Planner {
 public:
  Planner(const PlanInput& in, Mode mode) : in_(in), m_(in.manifest), mode_(mode) {}

  absl::StatusOr<Plan> Build(const RollbackOptions* rollback);
  absl::StatusOr<Plan> BuildBlueGreen();

 private:
  // --- inputs and checks ---
  absl::Status CheckReleases();
  absl::Status CollectObserved();
  void Place();
  // Refuses a stack whose proxy would reach a backend by its container name
  // across Docker hosts (names resolve on one engine only).
  absl::Status CheckWiring();
  absl::Status Preflight();

  // --- helpers for steps ---
  PlanPhase& AddPhase(std::string name, std::string reason) {
    plan_.phases.push_back(PlanPhase{std::move(name), std::move(reason), {}});
    return plan_.phases.back();
  }
  PlanStep& AddStep(PlanPhase& phase, std::string slug, std::string kind, std::string agent,
                    std::string description, uint32_t batch, absl::Duration timeout) {
    PlanStep s;
    s.id = std::move(slug);  // made into the full id by Finish()
    s.kind = std::move(kind);
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
  // Container ports other services may reach `s` on by name.
  std::set<uint32_t> NamedPorts(const ServiceSpec& s) const;
  void PhaseForwards();
  // Before a migration: a probe of every database instance that runs (a
  // database whose host just restarted may still be recovering); true when
  // it added any, in batch 0.
  // The phase a failed migration gate runs (kUndoGatePhase): the old pin
  // and the services stopped first, started again.
  void PhaseUndoGate(
      const std::vector<std::pair<const ServiceSpec*, std::vector<std::pair<uint32_t, Live>>>>& stopped);
  bool StepDatabasesHealthy(PlanPhase& ph);
  void StepJob(PlanPhase& ph, const ServiceSpec& s, const std::string& job_name,
               const std::vector<std::string>& command, absl::Duration timeout,
               const std::string& kind, const std::string& what, uint32_t batch);

  // --- phases ---
  void PhasePreflight();
  absl::Status PhaseBackup();
  void PhasePull(const std::vector<std::string>& extra_services);
  void PhasePin();
  void PhaseStopFirst(const std::string& service, const std::string& why);
  void PhaseUnit(const MoveUnit& unit, size_t position);
  void ReplaceService(PlanPhase& ph, const ServiceSpec& s, UpdateOrder order, uint32_t batch_size,
                      uint32_t& batch, bool allow_pause);
  void PhaseProxyReload();
  void PhasePostcheck();
  absl::Status PhaseRestore(const v1::BackupRecord& record);
  void PhaseStopApp();

  std::string UnitReason(const MoveUnit& unit, bool has_migration_phase);
  UpdateOrder EffectiveOrder(const ServiceSpec& s, std::string* why) const;

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

absl::Status Planner::CheckReleases() {
  const v1::Release& target = in_.target;
  auto to = Version::Parse(target.version());
  if (!to.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("target release version \"", target.version(),
                                                   "\" is not a semantic version like 1.4.0"));
  }
  to_version_ = to->ToString();
  if (in_.current.has_value()) {
    auto from = Version::Parse(in_.current->version());
    if (!from.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("current release version \"", in_.current->version(),
                                                     "\" is not a semantic version"));
    }
    from_version_ = from->ToString();
    if (mode_ == Mode::kUpgrade) {
      if (*to == *from) {
        return absl::InvalidArgumentError(
            absl::StrCat(m_.deployment, " already runs ", from_version_, "; nothing to upgrade"));
      }
      if (*to < *from) {
        return absl::InvalidArgumentError(absl::StrCat(
            "target ", to_version_, " is older than the running ", from_version_,
            ": that is a rollback: use hoist rollback --to ", to_version_));
      }
    } else if (!(*to < *from)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target ", to_version_, " is not older than the running ", from_version_,
          ": that is an upgrade: use hoist upgrade ", to_version_));
    }
  }
  std::vector<std::string> missing;
  for (const ServiceSpec& s : m_.services) {
    if (s.versioned() && !target.images().contains(s.name)) missing.push_back(s.name);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("release ", to_version_, " has no image for ", absl::StrJoin(missing, ", "),
                     "; every service with a repository in the manifest needs one in images:"));
  }
  std::vector<std::string> unknown;
  for (const auto& [name, image] : target.images()) {
    const ServiceSpec* s = m_.FindService(name);
    if (s == nullptr) {
      unknown.push_back(name);
    } else if (!s->versioned()) {
      plan_.warnings.push_back(absl::StrCat("release ", to_version_, " names an image for ", name,
                                            ", which the manifest pins to ", s->image,
                                            "; the manifest's image is used"));
    } else if (auto ref = ParseImageReference(image); ref.ok() && ref->repository != s->repository) {
      plan_.warnings.push_back(absl::StrCat("release ", to_version_, " takes ", name, " from ",
                                            ref->repository, ", not the manifest's repository ",
                                            s->repository));
    }
  }
  if (!unknown.empty()) {
    std::sort(unknown.begin(), unknown.end());
    std::vector<std::string> names;
    for (const ServiceSpec& s : m_.services) names.push_back(s.name);
    return absl::InvalidArgumentError(
        absl::StrCat("release ", to_version_, " names unknown service(s) ", absl::StrJoin(unknown, ", "),
                     "; services in ", m_.file_name, " are: ", absl::StrJoin(names, ", ")));
  }
  return absl::OkStatus();
}

absl::Status Planner::CollectObserved() {
  std::vector<std::string> problems;
  for (const HostSpec& h : m_.hosts) {
    auto it = std::find_if(in_.agents.begin(), in_.agents.end(),
                           [&](const AgentState& a) { return a.id == h.id; });
    if (it == in_.agents.end()) {
      problems.push_back(absl::StrCat(h.id, " has never connected"));
    } else if (!it->connected) {
      problems.push_back(absl::StrCat(h.id, " is not connected"));
    } else {
      agents_[h.id] = &*it;
    }
  }
  if (!problems.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("agents missing: ", absl::StrJoin(problems, "; "),
                     "; start hoist-agent on those hosts (or remove them from ", m_.file_name,
                     ") and plan again"));
  }
  std::set<std::string> strangers;
  for (const AgentState& a : in_.agents) {
    for (const v1::ContainerInfo& c : a.containers) {
      if (c.instance().deployment() != m_.deployment) continue;
      const v1::Slot slot = c.instance().slot() == v1::SLOT_GREEN ? v1::SLOT_GREEN : v1::SLOT_BLUE;
      if (slot != live_slot_) {
        if (in_.strategy == v1::STRATEGY_BLUE_GREEN && m_.FindService(c.instance().service()) != nullptr &&
            agents_.contains(a.id)) {
          idle_[c.instance().service()][c.instance().replica()].push_back(
              Live{c.version(), a.id, c.state() == v1::CONTAINER_STATE_RUNNING,
                   {c.published_ports().begin(), c.published_ports().end()}});
        } else {
          plan_.warnings.push_back(absl::StrCat("a ", SlotWord(slot), "-slot container ", c.name(), " is on ", a.id,
                                                ", but ", SlotWord(live_slot_),
                                                " serves; the rolling plan leaves it alone"));
        }
        continue;
      }
      const ServiceSpec* s = m_.FindService(c.instance().service());
      if (s == nullptr) {
        strangers.insert(c.instance().service());
        continue;
      }
      if (!agents_.contains(a.id)) {
        plan_.warnings.push_back(absl::StrCat(s->name, " replica ", c.instance().replica(), " runs on ",
                                              a.id, ", which is not a host of the manifest; it is left alone"));
        continue;
      }
      observed_[s->name].push_back(c);
      live_[s->name][c.instance().replica()].push_back(
          Live{c.version(), a.id, c.state() == v1::CONTAINER_STATE_RUNNING,
               {c.published_ports().begin(), c.published_ports().end()}});
    }
  }
  for (const std::string& s : strangers) {
    plan_.warnings.push_back(absl::StrCat("containers of service ", s, " run but ", m_.file_name,
                                          " no longer names it; they are left alone"));
  }
  if (mode_ == Mode::kInitial && !observed_.empty()) {
    std::vector<std::string> names;
    for (const auto& [name, cs] : observed_) names.push_back(name);
    return absl::FailedPreconditionError(absl::StrCat(
        "no release is pinned for ", m_.deployment, " but its containers already run (",
        absl::StrJoin(names, ", "), "); record the running release first, or remove them"));
  }
  return absl::OkStatus();
}

void Planner::Place() {
  for (const ServiceSpec& s : m_.services) {
    std::vector<std::string> eligible = m_.EligibleHosts(s);
    std::vector<std::string> hosts(s.replicas);
    std::map<std::string, int> load;
    std::vector<bool> assigned(s.replicas, false);
    // Keep each replica where it runs, preferring a container of the new version.
    for (uint32_t r = 0; r < s.replicas; ++r) {
      auto it = live_[s.name].find(r);
      if (it == live_[s.name].end()) continue;
      std::vector<Live> candidates = it->second;
      std::stable_sort(candidates.begin(), candidates.end(), [&](const Live& a, const Live& b) {
        return (a.version == NewVersion(s)) > (b.version == NewVersion(s));
      });
      for (const Live& c : candidates) {
        bool ok = std::find(eligible.begin(), eligible.end(), c.agent) != eligible.end();
        if (ok && s.needs_distinct_hosts() && load[c.agent] > 0) ok = false;
        if (ok) {
          hosts[r] = c.agent;
          assigned[r] = true;
          ++load[c.agent];
          break;
        }
      }
    }
    // The rest round-robin over eligible hosts, least loaded first.
    for (uint32_t r = 0; r < s.replicas; ++r) {
      if (assigned[r] || eligible.empty()) continue;
      std::string best;
      for (size_t k = 0; k < eligible.size(); ++k) {
        const std::string& h = eligible[(r + k) % eligible.size()];
        if (s.needs_distinct_hosts() && load[h] > 0) continue;
        if (best.empty() || load[h] < load[best]) best = h;
      }
      if (best.empty()) best = eligible[r % eligible.size()];  // validation keeps this unreachable
      hosts[r] = best;
      ++load[best];
    }
    placement_[s.name] = hosts;
  }
}

absl::Status Planner::CheckWiring() {
  cross_host_.clear();
  std::vector<std::string> problems;
  for (const ServiceSpec& proxy : m_.services) {
    if (proxy.role != v1::ROLE_PROXY || proxy.routes.empty()) continue;
    auto proxy_hosts = placement_.find(proxy.name);
    if (proxy_hosts == placement_.end()) continue;
    for (const RouteSpec& r : proxy.routes) {
      const ServiceSpec* target = m_.FindService(r.service);
      if (target == nullptr) continue;
      bool fixed_port = false;
      for (const PortSpec& p : target->ports) fixed_port |= p.container_port == r.port && p.host_port != 0;
      if (fixed_port) continue;  // reached at the host's address
      auto target_hosts = placement_.find(target->name);
      if (target_hosts == placement_.end()) continue;
      const std::set<std::string> proxy_set(proxy_hosts->second.begin(), proxy_hosts->second.end());
      std::set<std::string> apart;  // target hosts on another engine than some proxy
      for (const std::string& ph : proxy_set) {
        for (const std::string& th : target_hosts->second) {
          const std::string pe = EngineOf(ph), te = EngineOf(th);
          if (!pe.empty() && !te.empty() && pe != te) apart.insert(th);
        }
      }
      if (apart.empty()) continue;
      // Reached at address:port, the port Docker chooses when the instance starts.
      cross_host_[target->name].insert(r.port);
      std::vector<std::string> unaddressed;
      for (const std::string& th : apart) {
        if (!IsIpAddress(HostAddress(th))) unaddressed.push_back(absl::StrCat(th, " (\"", HostAddress(th), "\")"));
      }
      if (unaddressed.empty()) continue;
      problems.push_back(absl::StrCat(
          "services.", proxy.name, ".routes.", r.name, " sends traffic to ", target->name, ":", r.port,
          ", which runs on another Docker host than the proxy (", absl::StrJoin(proxy_set, ", "),
          "), and these hosts have no IP address to publish it on: ", absl::StrJoin(unaddressed, ", "),
          ". Give each host its IP in hosts[].address (or start its agent with --address), or place ", target->name,
          " on the proxy's host"));
    }
  }
  // Names across Docker hosts: each engine that runs part of the stack but
  // no instance of a service gets a forwarder for it, so the name resolves
  // there too (on the deployment's network; without one, names do not
  // resolve even on one host).
  forward_hosts_.clear();
  forward_ports_.clear();
  if (!m_.network.empty()) {
    std::vector<std::string> stack_hosts;  // manifest order
    for (const HostSpec& h : m_.hosts) {
      bool used = false;
      for (const auto& [service, hosts] : placement_) {
        used = used || std::find(hosts.begin(), hosts.end(), h.id) != hosts.end();
      }
      if (used) stack_hosts.push_back(h.id);
    }
    for (const ServiceSpec& s : m_.services) {
      auto placed = placement_.find(s.name);
      if (s.role == v1::ROLE_JOB || placed == placement_.end() || placed->second.empty()) continue;
      std::set<uint32_t> ports = NamedPorts(s);
      if (ports.empty()) continue;
      std::set<std::string> engines;
      for (const std::string& h : placed->second) engines.insert(EngineOf(h));
      if (engines.contains("")) continue;  // an agent that reported no engine: cannot tell
      std::vector<std::string> forwarders;
      std::set<std::string> forwarder_engines;
      for (const std::string& h : stack_hosts) {
        const std::string e = EngineOf(h);
        if (e.empty() || engines.contains(e) || !forwarder_engines.insert(e).second) continue;
        forwarders.push_back(h);
      }
      if (forwarders.empty()) continue;
      // A fixed host port bound to loopback cannot be reached from another host.
      for (const PortSpec& p : s.ports) {
        if (p.host_port == 0 || !ports.contains(p.container_port)) continue;
        if (p.host_ip == "127.0.0.1" || p.host_ip == "::1" || absl::StartsWith(p.host_ip, "127.")) {
          ports.erase(p.container_port);
          plan_.warnings.push_back(absl::StrCat(
              s.name, " publishes ", p.container_port, " on ", p.host_ip, ":", p.host_port,
              " only, so ", absl::StrJoin(forwarders, ", "), " (other Docker hosts) cannot reach ", s.name, ":",
              p.container_port, " by name; bind it to the host's address, or drop host_port"));
        }
      }
      if (ports.empty()) continue;
      forward_hosts_[s.name] = forwarders;
      forward_ports_[s.name] = ports;
      for (uint32_t p : ports) cross_host_[s.name].insert(p);
      std::set<std::string> unaddressed;
      for (const std::string& h : placed->second) {
        if (!IsIpAddress(HostAddress(h))) unaddressed.insert(absl::StrCat(h, " (\"", HostAddress(h), "\")"));
      }
      if (unaddressed.empty()) continue;
      problems.push_back(absl::StrCat(
          "services.", s.name, " is reached by its name (", s.name, ":", absl::StrJoin(ports, ","), ") from ",
          absl::StrJoin(forwarders, ", "), ", which run on other Docker hosts than ", s.name, ", and its hosts have no "
          "IP address to publish it on: ", absl::StrJoin(unaddressed, ", "),
          ". Give each host its IP in hosts[].address (or start its agent with --address), or place ", s.name,
          " on a host of every Docker engine of the stack"));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("cannot wire ", m_.deployment, " across its hosts: ", absl::StrJoin(problems, "; ")));
}

std::set<uint32_t> Planner::NamedPorts(const ServiceSpec& s) const {
  std::set<uint32_t> ports(s.expose.begin(), s.expose.end());
  for (const PortSpec& p : s.ports) {
    if (p.protocol.empty() || p.protocol == "tcp") ports.insert(p.container_port);
  }
  if (s.health.has_value() && (s.health->kind == HealthSpec::Kind::kHttp || s.health->kind == HealthSpec::Kind::kTcp) &&
      s.health->port != 0) {
    ports.insert(s.health->port);
  }
  return ports;
}

void Planner::StepForwards(PlanPhase& ph, const std::string& service,
                           const std::vector<std::pair<uint32_t, const Live*>>& draining, uint32_t batch,
                           const std::vector<v1::Slot>& slots) {
  auto hosts = forward_hosts_.find(service);
  if (hosts == forward_hosts_.end()) return;
  v1::ForwardUpdate update;
  update.set_deployment(m_.deployment);
  update.set_service(service);
  update.set_network(m_.network);
  std::set<std::string> instances;
  for (uint32_t port : forward_ports_.at(service)) {
    v1::ForwardPort* fp = update.add_ports();
    fp->set_listen_port(port);
    RouteSpec r;
    r.name = service;
    r.service = service;
    r.port = port;
    v1::ProxyRoute targets;
    for (v1::Slot slot : slots) {
      for (const auto& [replica, cs] : SlotLive(slot)[service]) {
        for (const Live& c : cs) {
          if (!c.running) continue;
          bool drains = std::any_of(draining.begin(), draining.end(), [&](const auto& d) {
            return d.first == replica && d.second->version == c.version && d.second->agent == c.agent;
          });
          if (drains) continue;
          if (AddBackend(&targets, r, replica, c, slot, v1::BACKEND_STATE_READY, /*forwarder=*/true)) {
            instances.insert(absl::StrCat(replica, "/", c.version, "/", c.agent));
          }
        }
      }
    }
    *fp->mutable_targets() = std::move(*targets.mutable_backends());
  }
  std::vector<std::string> ports;
  for (uint32_t p : forward_ports_.at(service)) ports.push_back(absl::StrCat(p));
  for (const std::string& host : hosts->second) {
    PlanStep& st = AddStep(ph, absl::StrCat("forward-", service, "-", host), "forward_update", host,
                           absl::StrCat("point ", service, ":", absl::StrJoin(ports, ","), " on ", host, " at ",
                                        instances.size(), " ", service, " instance(s) on other hosts"),
                           batch, kForwardTimeout);
    *st.action.mutable_forward_update() = update;
  }
}

void Planner::PhaseForwards() {
  if (forward_hosts_.empty() || mode_ == Mode::kInitial || mode_ == Mode::kRestore) return;
  PlanPhase& ph = AddPhase("forward",
                           "names across hosts: on each Docker host where a service does not run, a forwarder "
                           "answers to its name and relays to its instances on the other hosts");
  for (const ServiceSpec& s : m_.services) StepForwards(ph, s.name, {}, 0);
  if (ph.steps.empty()) plan_.phases.pop_back();
}

absl::Status Planner::Preflight() {
  // Health of what runs now; a rollback exists to fix an unhealthy deployment.
  if (mode_ == Mode::kUpgrade) {
    for (const ServiceSpec& s : m_.services) {
      for (const v1::ContainerInfo& c : observed_[s.name]) {
        if (s.role == v1::ROLE_JOB || Healthy(c, s)) continue;
        // A container that does not run is refused now. A health result the
        // hosts reported earlier can be old (or missing after an agent
        // restart): the pre-flight phase probes every instance again before
        // anything is touched, so here it is only a warning.
        if (c.state() != v1::CONTAINER_STATE_RUNNING || !s.health.has_value()) {
          preflight_problems_.push_back(absl::StrCat(s.name, " replica ", c.instance().replica(), " (",
                                                     c.version(), ") is ", StateWord(c)));
        } else {
          plan_.warnings.push_back(absl::StrCat(s.name, " replica ", c.instance().replica(), " (", c.version(),
                                                ") was last reported ", StateWord(c),
                                                "; pre-flight probes it again before anything is touched"));
        }
      }
      uint32_t seen = 0;
      for (uint32_t r = 0; r < s.replicas; ++r) seen += live_[s.name].contains(r) ? 1 : 0;
      if (s.role != v1::ROLE_JOB && seen < s.replicas) {
        plan_.warnings.push_back(absl::StrCat(s.name, ": ", s.replicas - seen, " of ", s.replicas,
                                              " replicas do not run now; the plan starts them"));
      }
    }
  } else if (mode_ == Mode::kRollback || mode_ == Mode::kRestore) {
    for (const ServiceSpec& s : m_.services) {
      for (const v1::ContainerInfo& c : observed_[s.name]) {
        if (s.role != v1::ROLE_JOB && !Healthy(c, s)) {
          plan_.warnings.push_back(absl::StrCat(s.name, " replica ", c.instance().replica(), " (",
                                                c.version(), ") is ", StateWord(c)));
        }
      }
    }
  }

  // Env the new release requires, and env it renamed.
  if (mode_ == Mode::kUpgrade || mode_ == Mode::kInitial) {
    auto where = [&](const std::string& name) {
      std::vector<std::string> places;
      for (const ServiceSpec& s : m_.services) {
        if (s.env.contains(name)) places.push_back(absl::StrCat("services.", s.name, ".env"));
      }
      for (const auto& [agent, names] : in_.options.host_env) {
        if (names.contains(name)) places.push_back(absl::StrCat("the env files on ", agent));
      }
      return places;
    };
    for (const auto& [old_name, new_name] : in_.target.renamed_env()) {
      std::vector<std::string> old_places = where(old_name);
      if (old_places.empty()) continue;
      if (where(new_name).empty()) {
        preflight_problems_.push_back(absl::StrCat(
            old_name, " was renamed to ", new_name, " in ", to_version_, ": rename it in ",
            absl::StrJoin(old_places, " and ")));
      } else {
        plan_.warnings.push_back(absl::StrCat(old_name, " (renamed to ", new_name,
                                              ") is still set in ", absl::StrJoin(old_places, " and "),
                                              "; remove it once the upgrade is done"));
      }
    }
    bool env_files = false;
    for (const ServiceSpec& s : m_.services) env_files = env_files || !s.env_files.empty();
    for (const std::string& name : in_.target.required_env()) {
      if (!where(name).empty()) continue;
      std::string renamed_from;
      for (const auto& [o, n] : in_.target.renamed_env()) {
        if (n == name) renamed_from = o;
      }
      if (!renamed_from.empty() && !where(renamed_from).empty()) continue;  // reported above
      if (!in_.options.host_env_checked && env_files) {
        plan_.warnings.push_back(absl::StrCat("release ", to_version_, " requires ", name,
                                              ", which no service's env sets; the hosts' env files are checked "
                                              "when the upgrade starts (this replica does not lead)"));
        continue;
      }
      preflight_problems_.push_back(absl::StrCat(
          "release ", to_version_, " requires ", name,
          ", which no service's env and no host's env files set",
          env_files ? " (add it to an env file the stack names, on the hosts that run the services needing it)"
                    : ""));
    }
  }

  // Disk: images on every host that pulls, the backup on the backup host.
  std::set<std::string> pulling;
  for (const ServiceSpec& s : m_.services) {
    if (!Moves(s) && mode_ != Mode::kInitial) continue;
    for (const std::string& h : placement_[s.name]) pulling.insert(h);
  }
  for (const std::string& h : pulling) {
    const AgentState* a = agents_.at(h);
    if (a->image_disk_free_bytes < in_.options.min_image_disk_free_bytes) {
      preflight_problems_.push_back(absl::StrCat(
          h, " has ", a->image_disk_free_bytes >> 20, " MiB free for images; at least ",
          in_.options.min_image_disk_free_bytes >> 20, " MiB are needed"));
    }
  }
  if (!preflight_problems_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pre-flight found ", preflight_problems_.size(), " problem(s) with ", m_.deployment,
        "; nothing was touched: ", absl::StrJoin(preflight_problems_, "; ")));
  }
  return absl::OkStatus();
}

v1::HealthCheck Planner::CheckOf(const HealthSpec& h, const std::string& version) const {
  v1::HealthCheck c;
  switch (h.kind) {
    case HealthSpec::Kind::kHttp:
      c.mutable_http()->set_path(h.http_path);
      c.mutable_http()->set_port(h.port);
      if (h.check_version) c.mutable_http()->set_expected_version(version);
      break;
    case HealthSpec::Kind::kTcp:
      c.mutable_tcp()->set_port(h.port);
      break;
    case HealthSpec::Kind::kDocker:
      c.mutable_docker();
      break;
    case HealthSpec::Kind::kCommand:
      for (const std::string& a : h.command) c.mutable_command()->add_command(a);
      break;
  }
  *c.mutable_interval() = DurationProto(h.interval);
  *c.mutable_timeout() = DurationProto(h.timeout);
  *c.mutable_deadline() = DurationProto(h.deadline);
  return c;
}

v1::ContainerSpec Planner::SpecOf(const ServiceSpec& s, const std::string& image, const std::string& host) const {
  v1::ContainerSpec spec;
  spec.set_image(image);
  for (const std::string& a : s.command) spec.add_command(a);
  for (const auto& [k, v] : s.env) (*spec.mutable_env())[k] = v;
  for (const std::string& f : s.env_files) spec.add_env_files(f);
  for (const PortSpec& p : s.ports) {
    v1::PortMapping* pm = spec.add_ports();
    pm->set_container_port(p.container_port);
    pm->set_host_port(p.host_port);
    pm->set_host_ip(p.host_ip);
    pm->set_protocol(p.protocol);
  }
  // A proxy on another Docker host reaches these on the host's address, on
  // a port Docker chooses (so a start-first replacement can run beside the
  // old instance); the start result reports it.
  if (auto cross = cross_host_.find(s.name); cross != cross_host_.end() && !host.empty()) {
    for (uint32_t port : cross->second) {
      bool declared = false;
      for (v1::PortMapping& pm : *spec.mutable_ports()) {
        if (pm.container_port() != port || (pm.protocol() != "tcp" && !pm.protocol().empty())) continue;
        declared = true;
        if (pm.host_ip().empty() || pm.host_ip() == "0.0.0.0") pm.set_host_ip(HostAddress(host));
      }
      if (declared) continue;
      v1::PortMapping* pm = spec.add_ports();
      pm->set_container_port(port);
      pm->set_host_ip(HostAddress(host));
      pm->set_protocol("tcp");
    }
  }
  for (const VolumeSpec& v : s.volumes) {
    v1::VolumeMount* vm = spec.add_volumes();
    vm->set_source(v.source);
    vm->set_target(v.target);
    vm->set_read_only(v.read_only);
  }
  spec.set_network(m_.network);
  if (!m_.network.empty()) spec.add_network_aliases(s.name);
  spec.set_restart_policy(s.role == v1::ROLE_JOB ? "no" : s.restart_policy);
  if (s.health.has_value() && s.health->kind == HealthSpec::Kind::kDocker) {
    for (const std::string& a : s.health->command) spec.add_docker_healthcheck(a);
  }
  *spec.mutable_stop_timeout() = DurationProto(s.stop_timeout);
  return spec;
}

void Planner::StepStart(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, uint32_t batch, v1::Slot slot) {
  const std::string& host = placement_[s.name][replica];
  const std::string version = NewVersion(s);
  const std::string image = NewImage(s);
  PlanStep& st = AddStep(ph, absl::StrCat("start-", s.name, "-", replica), "start_instance", host,
                         absl::StrCat("start", SlotTag(slot), " ", s.name, " replica ", replica, " on ", host, " at ",
                                      version, " (", image, ")"),
                         batch, in_.options.start_timeout);
  st.instance = Ref(s.name, replica, slot);
  v1::StartInstance* a = st.action.mutable_start_instance();
  *a->mutable_instance() = *st.instance;
  a->set_version(version);
  *a->mutable_spec() = SpecOf(s, image, host);
  // The agent writes the proxy's configuration from these; proxy_update steps add the backends.
  if (s.role == v1::ROLE_PROXY) {
    for (const RouteSpec& r : s.routes) {
      v1::ProxyFrontend* f = a->mutable_proxy()->add_frontends();
      f->set_route(r.name);
      f->set_listen_port(r.listen);
    }
  }
  SlotLive(slot)[s.name][replica].push_back(Live{version, host, true, {}, true});
}

bool Planner::StepProbe(PlanPhase& ph, const ServiceSpec& s, uint32_t replica,
                        const std::string& version, uint32_t batch, bool postcheck, v1::Slot slot) {
  if (!s.health.has_value() || replica >= placement_[s.name].size()) return false;
  const std::string& host = placement_[s.name][replica];
  std::string how;
  switch (s.health->kind) {
    case HealthSpec::Kind::kHttp:
      how = absl::StrCat("GET ", s.health->http_path, " on port ", s.health->port,
                         s.health->check_version ? absl::StrCat(" reporting version ", version) : "");
      break;
    case HealthSpec::Kind::kTcp: how = absl::StrCat("a TCP connect to port ", s.health->port); break;
    case HealthSpec::Kind::kDocker: how = "Docker's HEALTHCHECK"; break;
    case HealthSpec::Kind::kCommand: how = absl::StrCat("`", absl::StrJoin(s.health->command, " "), "`"); break;
  }
  PlanStep& st = AddStep(
      ph, absl::StrCat(postcheck ? "check-" : "probe-", s.name, "-", replica),
      postcheck ? "postcheck" : "probe_health", host,
      postcheck ? absl::StrCat("check", SlotTag(slot), " ", s.name, " replica ", replica, " (", version, ") on ", host,
                               " passes ", how)
                : absl::StrCat("wait until", SlotTag(slot), " ", s.name, " replica ", replica, " (", version, ") on ",
                               host, " passes ", how, " (deadline ", Fmt(s.health->deadline), ")"),
      batch, s.health->deadline + kStepSlack);
  st.instance = Ref(s.name, replica, slot);
  v1::ProbeHealth* a = st.action.mutable_probe_health();
  *a->mutable_instance() = *st.instance;
  *a->mutable_check() = CheckOf(*s.health, version);
  a->set_version(version);
  return true;
}

void Planner::StepStop(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, Live& c, uint32_t batch,
                       v1::Slot slot) {
  PlanStep& st = AddStep(ph, absl::StrCat("stop-", s.name, "-", replica), "stop_instance", c.agent,
                         absl::StrCat("stop", SlotTag(slot), " ", s.name, " replica ", replica, " (", c.version, ") on ",
                                      c.agent, " (SIGTERM, kill after ", Fmt(s.stop_timeout), ")"),
                         batch, s.stop_timeout + kStepSlack);
  st.instance = Ref(s.name, replica, slot);
  v1::StopInstance* a = st.action.mutable_stop_instance();
  *a->mutable_instance() = *st.instance;
  *a->mutable_timeout() = DurationProto(s.stop_timeout);
  a->set_version(c.version);
  c.running = false;
}

void Planner::StepRemove(PlanPhase& ph, const ServiceSpec& s, uint32_t replica, const Live& c,
                         uint32_t batch, v1::Slot slot) {
  PlanStep& st = AddStep(ph, absl::StrCat("remove-", s.name, "-", replica), "remove_instance", c.agent,
                         absl::StrCat("remove the stopped", SlotTag(slot), " ", s.name, " replica ", replica, " (",
                                      c.version, ") container on ", c.agent),
                         batch, kRemoveTimeout);
  st.instance = Ref(s.name, replica, slot);
  v1::RemoveInstance* a = st.action.mutable_remove_instance();
  *a->mutable_instance() = *st.instance;
  a->set_version(c.version);
}

void Planner::StepProxyRoutes(PlanPhase& ph, const std::string& service,
                              const std::vector<std::pair<uint32_t, const Live*>>& draining,
                              uint32_t batch) {
  auto pick = [&](const RouteSpec& r) { return r.service == service || service.empty(); };
  auto fill = [&](const RouteSpec& r, v1::ProxyRoute* route) {
    int ready = 0, drain = 0;
    for (const auto& [replica, cs] : live_[r.service]) {
      for (const Live& c : cs) {
        if (!c.running) continue;
        bool drains = std::any_of(draining.begin(), draining.end(), [&](const auto& d) {
          return d.first == replica && d.second->version == c.version && d.second->agent == c.agent;
        });
        if (AddBackend(route, r, replica, c, live_slot_, drains ? v1::BACKEND_STATE_DRAIN : v1::BACKEND_STATE_READY)) {
          (drains ? drain : ready)++;
        }
      }
    }
    return absl::StrCat(r.name, " -> ", ready, " ready", drain > 0 ? absl::StrCat(", ", drain, " draining") : "");
  };
  StepProxyUpdate(ph, pick, fill, batch, "proxy", "update");
}

void Planner::StepProxyUpdate(PlanPhase& ph, const std::function<bool(const RouteSpec&)>& pick,
                              const std::function<std::string(const RouteSpec&, v1::ProxyRoute*)>& fill,
                              uint32_t batch, const std::string& slug, const std::string& verb) {
  for (const ServiceSpec& proxy : m_.services) {
    std::vector<const RouteSpec*> routes;
    for (const RouteSpec& r : proxy.routes) {
      if (pick(r)) routes.push_back(&r);
    }
    if (routes.empty()) continue;
    std::set<std::string> proxy_hosts;
    for (const auto& [replica, cs] : live_[proxy.name]) {
      for (const Live& c : cs) {
        if (c.running) proxy_hosts.insert(c.agent);
      }
    }
    if (proxy_hosts.empty()) continue;
    v1::ProxyUpdate update;
    update.set_deployment(m_.deployment);
    update.set_service(proxy.name);
    *update.mutable_drain_timeout() = DurationProto(proxy.drain_timeout);
    std::vector<std::string> summary;
    for (const RouteSpec* r : routes) {
      v1::ProxyRoute* route = update.add_routes();
      route->set_name(r->name);
      summary.push_back(fill(*r, route));
    }
    for (const std::string& host : proxy_hosts) {
      PlanStep& st = AddStep(ph, absl::StrCat(slug, "-", proxy.name, "-", host), "proxy_update", host,
                             absl::StrCat(verb, " ", proxy.name, " routes on ", host, ": ",
                                          absl::StrJoin(summary, "; ")),
                             batch, proxy.drain_timeout + kStepSlack);
      *st.action.mutable_proxy_update() = update;
    }
  }
}

void Planner::StepProxyReload(PlanPhase& ph, uint32_t batch) { StepProxyRoutes(ph, "", {}, batch); }

bool Planner::AddBackend(v1::ProxyRoute* route, const RouteSpec& r, uint32_t replica, const Live& c, v1::Slot slot,
                         v1::BackendState state, bool forwarder) {
  const ServiceSpec* target = m_.FindService(r.service);
  const bool cross = CrossHost(r.service, r.port);
  // A fixed host port is reached on the host.
  const PortSpec* fixed = nullptr;
  for (const PortSpec& p : target->ports) {
    if (p.container_port == r.port && p.host_port != 0) fixed = &p;
  }
  if (cross && fixed == nullptr && !c.planned &&
      std::none_of(c.published.begin(), c.published.end(), [&](const v1::PortMapping& p) {
        return p.container_port() == r.port && p.host_port() != 0;
      })) {
    const std::string w = absl::StrCat(r.service, " replica ", replica, " (", c.version, ") on ", c.agent,
                                       " publishes no host port for ", r.port,
                                       forwarder
                                           ? " (it started before other Docker hosts reached it by name), so they "
                                             "cannot reach it by name until Hoist starts it again"
                                           : ", so the proxy on another Docker host cannot reach it; it gets no "
                                             "traffic until this rollout replaces it");
    if (std::find(plan_.warnings.begin(), plan_.warnings.end(), w) == plan_.warnings.end()) {
      plan_.warnings.push_back(w);
    }
    return false;
  }
  v1::ProxyBackend* b = route->add_backends();
  b->set_name(absl::StrCat(m_.deployment, "-", r.service, "-", SlotWord(slot), "-", replica, "-", c.version));
  b->set_state(state);
  if (fixed != nullptr) {
    bool specific = !fixed->host_ip.empty() && fixed->host_ip != "0.0.0.0";
    b->set_address(specific ? fixed->host_ip : HostAddress(c.agent));
    b->set_port(fixed->host_port);
    return true;
  }
  // Across Docker hosts: on the port Docker chose, at the host's address.
  if (cross) {
    for (const v1::PortMapping& p : c.published) {
      if (p.container_port() != r.port || p.host_port() == 0 || (p.protocol() != "tcp" && !p.protocol().empty())) {
        continue;
      }
      bool specific = !p.host_ip().empty() && p.host_ip() != "0.0.0.0" && p.host_ip() != "::";
      b->set_address(specific ? p.host_ip() : HostAddress(c.agent));
      b->set_port(p.host_port());
      return true;
    }
    // Known once the instance starts (or, for one started before the
    // port was published, once it is replaced): the controller fills it in.
    *b->mutable_instance() = Ref(r.service, replica, slot);
    b->set_version(c.version);
    b->set_container_port(r.port);
    return true;
  }
  // On the proxy's own Docker host: by name on the deployment network.
  b->set_address(b->name());
  b->set_port(r.port);
  return true;
}

void Planner::StepProxySlots(PlanPhase& ph, const std::function<bool(const RouteSpec&)>& pick,
                             const std::vector<std::pair<v1::Slot, v1::BackendState>>& sets, uint32_t batch,
                             const std::string& slug) {
  auto fill = [&](const RouteSpec& r, v1::ProxyRoute* route) {
    std::vector<std::string> parts;
    for (const auto& [slot, state] : sets) {
      int n = 0;
      for (const auto& [replica, cs] : SlotLive(slot)[r.service]) {
        for (const Live& c : cs) {
          if (!c.running) continue;
          if (AddBackend(route, r, replica, c, slot, state)) ++n;
        }
      }
      parts.push_back(absl::StrCat(n, " ", SlotWord(slot), " ", state == v1::BACKEND_STATE_READY ? "serving" : "drained"));
    }
    return absl::StrCat(r.name, " -> ", absl::StrJoin(parts, ", "));
  };
  StepProxyUpdate(ph, pick, fill, batch, slug, "set, in one update,");
}

void Planner::StepJob(PlanPhase& ph, const ServiceSpec& s, const std::string& job_name,
                      const std::vector<std::string>& command, absl::Duration timeout,
                      const std::string& kind, const std::string& what, uint32_t batch) {
  const std::string host = HostOfFirstReplica(s);
  const std::string image = NewImage(s);
  PlanStep& st = AddStep(ph, absl::StrCat(job_name, "-", s.name), kind, host,
                         absl::StrCat(what, " from ", image, " on ", host,
                                      command.empty() ? "" : absl::StrCat(": `", absl::StrJoin(command, " "), "`")),
                         batch, timeout + kStepSlack);
  v1::RunJob* a = st.action.mutable_run_job();
  a->set_deployment(m_.deployment);
  a->set_name(job_name);
  a->set_version(NewVersion(s));
  v1::ContainerSpec spec = SpecOf(s, image, "");
  // A job runs beside the service: it must not take its host ports or its name.
  spec.clear_ports();
  spec.clear_network_aliases();
  spec.clear_docker_healthcheck();
  spec.set_restart_policy("no");
  if (!command.empty()) {
    spec.clear_command();
    for (const std::string& c : command) spec.add_command(c);
  }
  *a->mutable_spec() = spec;
  a->set_log_tail_lines(kJobLogTailLines);
  a->set_remove_after(true);
}

void Planner::PhasePreflight() {
  PlanPhase& ph = AddPhase(
      "preflight",
      mode_ == Mode::kUpgrade
          ? "first, before anything is touched: if the current deployment is already unhealthy the "
            "rollout stops here, so a fresh problem is never blamed on the new version"
          : "first, before anything is touched: every host must answer");
  std::vector<std::string> hosts;
  for (const HostSpec& h : m_.hosts) hosts.push_back(h.id);
  AddStep(ph, "agents", "preflight", "", absl::StrCat("every host's agent is connected: ", absl::StrJoin(hosts, ", ")),
          0, kControllerStepTimeout);
  if (mode_ == Mode::kUpgrade) {
    // Every running instance with a health check is probed now, all at once
    // (one batch): the inventory's health can be minutes old.
    for (const ServiceSpec& s : m_.services) {
      if (s.role == v1::ROLE_JOB || !s.health.has_value()) continue;
      for (const auto& [replica, lives] : live_[s.name]) {
        for (const Live& l : lives) {
          if (!l.running) continue;
          PlanStep& st = AddStep(
              ph, absl::StrCat("health-", s.name, "-", replica, lives.size() > 1 ? absl::StrCat("-", l.version) : ""),
              "probe_health", l.agent,
              absl::StrCat(s.name, " replica ", replica, " (", l.version, ") on ", l.agent,
                           " passes its health check now (deadline ", Fmt(s.health->deadline), ")"),
              0, s.health->deadline + kStepSlack);
          st.instance = Ref(s.name, replica, live_slot_);
          v1::ProbeHealth* a = st.action.mutable_probe_health();
          *a->mutable_instance() = *st.instance;
          *a->mutable_check() = CheckOf(*s.health, l.version);
          a->set_version(l.version);
        }
      }
    }
  }
  if ((mode_ == Mode::kUpgrade || mode_ == Mode::kInitial) &&
      (in_.target.required_env_size() > 0 || in_.target.renamed_env_size() > 0)) {
    std::vector<std::string> names(in_.target.required_env().begin(), in_.target.required_env().end());
    for (const auto& [o, n] : in_.target.renamed_env()) names.push_back(absl::StrCat(o, "->", n));
    AddStep(ph, "env", "preflight", "",
            absl::StrCat("env vars release ", to_version_, " needs are set: ", absl::StrJoin(names, ", ")), 0,
            kControllerStepTimeout);
  }
  AddStep(ph, "disk", "preflight", "",
          absl::StrCat("every host pulling images has ", in_.options.min_image_disk_free_bytes >> 20,
                       " MiB free", m_.backup.has_value() && mode_ == Mode::kUpgrade && !in_.options.skip_backup
                                        ? absl::StrCat(", the backup host ", in_.options.min_backup_disk_free_bytes >> 20, " MiB")
                                        : ""),
          0, kControllerStepTimeout);
}

absl::Status Planner::PhaseBackup() {
  const BackupSpec& b = *m_.backup;
  // One agent takes the whole backup: the database's host, else the first
  // host that mounts a listed volume, else the first host.
  std::string host;
  std::string db_service;
  if (b.postgres.has_value()) {
    db_service = b.postgres->service;
    if (!placement_[db_service].empty()) host = placement_[db_service][0];
  }
  if (host.empty() && !b.volumes.empty()) {
    for (const ServiceSpec& s : m_.services) {
      for (const VolumeSpec& v : s.volumes) {
        if (host.empty() && v.source == b.volumes[0] && !placement_[s.name].empty()) host = placement_[s.name][0];
      }
    }
  }
  if (host.empty()) host = m_.hosts.front().id;
  for (const std::string& vol : b.volumes) {
    bool here = false;
    for (const ServiceSpec& s : m_.services) {
      for (const VolumeSpec& v : s.volumes) {
        if (v.source != vol) continue;
        for (const std::string& h : placement_[s.name]) here = here || h == host;
      }
    }
    if (!here) {
      return absl::FailedPreconditionError(absl::StrCat(
          "backup.volumes names ", vol, ", but no service mounts it on ", host,
          ", the host that takes the backup; place the services that use it there"));
    }
  }
  const AgentState* a = agents_.at(host);
  if (a->backup_disk_free_bytes < in_.options.min_backup_disk_free_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pre-flight: ", host, " has ", a->backup_disk_free_bytes >> 20, " MiB free for the backup; at least ",
        in_.options.min_backup_disk_free_bytes >> 20, " MiB are needed"));
  }
  plan_.backup_id = in_.options.backup_id;
  if (plan_.backup_id.empty()) {
    plan_.backup_id = absl::StrCat(m_.deployment, "-pre-", to_version_);
    if (!in_.options.backup_suffix.empty()) absl::StrAppend(&plan_.backup_id, "-", in_.options.backup_suffix);
  }
  PlanPhase& ph = AddPhase(
      "backup",
      "before any image changes: migrations are forward-only, so this backup is what a rollback "
      "restores; a failed backup stops the upgrade with nothing changed");
  std::vector<std::string> what;
  v1::Backup backup;
  backup.set_deployment(m_.deployment);
  backup.set_backup_id(plan_.backup_id);
  backup.set_keep(b.keep);
  if (b.postgres.has_value()) {
    v1::PostgresDump* pg = backup.add_items()->mutable_postgres();
    *pg->mutable_instance() = Ref(db_service, 0);
    pg->set_database(b.postgres->database);
    pg->set_user(b.postgres->user);
    what.push_back(absl::StrCat("database ", b.postgres->database, " (pg_dump from ", db_service, ")"));
  }
  for (const std::string& vol : b.volumes) {
    backup.add_items()->mutable_volume()->set_volume(vol);
    what.push_back(absl::StrCat("volume ", vol));
  }
  for (const std::string& f : b.config_files) {
    backup.add_items()->mutable_config()->set_path(f);
    what.push_back(f);
  }
  PlanStep& st = AddStep(ph, "backup", "backup", host,
                         absl::StrCat("back up ", absl::StrJoin(what, ", "), " on ", host, " as ", plan_.backup_id,
                                      "; sizes and sha256 recorded and read back; the newest ", b.keep,
                                      " backups are kept"),
                         0, b.timeout);
  *st.action.mutable_backup() = backup;
  return absl::OkStatus();
}

void Planner::PhasePull(const std::vector<std::string>& services) {
  PlanPhase& ph = AddPhase(
      "pull",
      "every new image is pulled on every host that runs it, in parallel, before anything is "
      "stopped: a registry or disk problem stops the rollout with nothing changed");
  for (const HostSpec& h : m_.hosts) {
    std::set<std::string> images;
    for (const std::string& name : services) {
      const ServiceSpec& s = *m_.FindService(name);
      std::vector<std::string> hosts = placement_[name];
      if (hosts.empty()) hosts.push_back(HostOfFirstReplica(s));
      if (std::find(hosts.begin(), hosts.end(), h.id) == hosts.end()) continue;
      std::string image = NewImage(s);
      if (!images.insert(image).second) continue;
      PlanStep& st = AddStep(ph, absl::StrCat("pull-", h.id, "-", name), "pull_image", h.id,
                             absl::StrCat("pull ", image, " on ", h.id), 0, in_.options.pull_timeout);
      st.action.mutable_pull_image()->set_image(image);
    }
  }
}

void Planner::PhasePin() {
  PlanPhase& ph = AddPhase(
      "pin", "the images are on every host, so the target is recorded now: from here a restart of "
             "the controller or any host comes back on " + to_version_ + ", not on what ran before");
  AddStep(ph, "pin", "pin", "", absl::StrCat("record ", to_version_, " as ", m_.deployment, "'s pinned version"),
          0, kControllerStepTimeout);
}

void Planner::PhaseStopFirst(const std::string& service, const std::string& why) {
  const ServiceSpec& s = *m_.FindService(service);
  PlanPhase& ph = AddPhase(absl::StrCat("stop-", service), why);
  std::vector<std::pair<uint32_t, const Live*>> running;
  for (auto& [replica, cs] : live_[service]) {
    for (Live& c : cs) {
      if (c.running) running.emplace_back(replica, &c);
    }
  }
  StepProxyRoutes(ph, service, running, 0);
  StepForwards(ph, service, running, 0);
  for (auto& [replica, cs] : live_[service]) {
    for (Live& c : cs) {
      if (c.running) StepStop(ph, s, replica, c, 1);
    }
  }
  if (ph.steps.empty()) {
    AddStep(ph, absl::StrCat("none-", service), "preflight", "",
            absl::StrCat("no ", service, " instance runs; nothing to stop"), 0, kControllerStepTimeout);
  }
}

UpdateOrder Planner::EffectiveOrder(const ServiceSpec& s, std::string* why) const {
  if (s.update_order == UpdateOrder::kStopFirst) {
    *why = "stop-first (update_order in the manifest)";
    return UpdateOrder::kStopFirst;
  }
  for (const PortSpec& p : s.ports) {
    if (p.host_port != 0) {
      *why = absl::StrCat("stop-first although the manifest asks start-first: it publishes host port ",
                          p.host_port, ", which the old and the new container cannot hold at once");
      return UpdateOrder::kStopFirst;
    }
  }
  *why = "start-first: each new instance is healthy before the old one stops";
  return UpdateOrder::kStartFirst;
}

void Planner::ReplaceService(PlanPhase& ph, const ServiceSpec& s, UpdateOrder order, uint32_t batch_size,
                             uint32_t& batch, bool allow_pause) {
  const std::string version = NewVersion(s);
  bool routed = false;
  for (const ServiceSpec& p : m_.services) {
    for (const RouteSpec& r : p.routes) routed = routed || r.service == s.name;
  }
  const bool forwarded = Forwarded(s.name);
  // Replicas with something to do: no healthy new container where it belongs, or old ones left.
  std::vector<uint32_t> todo;
  for (uint32_t r = 0; r < s.replicas; ++r) {
    bool has_new = false, has_old = false;
    for (const Live& c : live_[s.name][r]) {
      if (c.version == version && c.agent == placement_[s.name][r] && c.running) {
        has_new = true;
      } else {
        has_old = true;
      }
    }
    if (!has_new || has_old) todo.push_back(r);
  }
  auto olds_of = [&](uint32_t r) {
    std::vector<std::pair<uint32_t, Live*>> out;
    for (Live& c : live_[s.name][r]) {
      if (!(c.version == version && c.agent == placement_[s.name][r])) out.emplace_back(r, &c);
    }
    return out;
  };
  auto needs_start = [&](uint32_t r) {
    for (const Live& c : live_[s.name][r]) {
      if (c.version == version && c.agent == placement_[s.name][r] && c.running) return false;
    }
    return true;
  };
  auto drop_removed = [&](uint32_t r) {
    auto& cs = live_[s.name][r];
    cs.erase(std::remove_if(cs.begin(), cs.end(),
                            [&](const Live& c) { return !(c.version == version && c.agent == placement_[s.name][r]); }),
             cs.end());
  };
  for (size_t first = 0; first < todo.size(); first += batch_size) {
    std::vector<uint32_t> chunk(todo.begin() + first, todo.begin() + std::min(todo.size(), first + batch_size));
    if (order == UpdateOrder::kStartFirst) {
      for (uint32_t r : chunk) {
        if (needs_start(r)) StepStart(ph, s, r, batch);
      }
    }
    // Collected after the starts: starting adds to the vectors these point into.
    std::vector<std::pair<uint32_t, Live*>> olds;
    for (uint32_t r : chunk) {
      for (auto& o : olds_of(r)) olds.push_back(o);
    }
    std::vector<std::pair<uint32_t, const Live*>> draining;
    for (auto& [r, c] : olds) {
      if (c->running) draining.emplace_back(r, c);
    }
    if (order == UpdateOrder::kStartFirst) {
      for (uint32_t r : chunk) StepProbe(ph, s, r, version, batch + 1, false);
      if (routed && !draining.empty()) StepProxyRoutes(ph, s.name, draining, batch + 2);
      if (forwarded) StepForwards(ph, s.name, draining, batch + 2);
      for (auto& [r, c] : olds) {
        if (c->running) StepStop(ph, s, r, *c, batch + 3);
      }
      for (auto& [r, c] : olds) StepRemove(ph, s, r, *c, batch + 4);
      for (uint32_t r : chunk) drop_removed(r);
    } else {
      if (routed && !draining.empty()) StepProxyRoutes(ph, s.name, draining, batch);
      if (forwarded && !draining.empty()) StepForwards(ph, s.name, draining, batch);
      for (auto& [r, c] : olds) {
        if (c->running) StepStop(ph, s, r, *c, batch + 1);
      }
      for (auto& [r, c] : olds) StepRemove(ph, s, r, *c, batch + 2);
      for (uint32_t r : chunk) drop_removed(r);
      for (uint32_t r : chunk) {
        if (needs_start(r)) StepStart(ph, s, r, batch + 3);
      }
      for (uint32_t r : chunk) StepProbe(ph, s, r, version, batch + 4, false);
      if (routed) StepProxyRoutes(ph, s.name, {}, batch + 5);
      if (forwarded) StepForwards(ph, s.name, {}, batch + 5);
    }
    batch += 6;
    if (allow_pause && s.rolling.pause > absl::ZeroDuration() && first + batch_size < todo.size()) {
      AddStep(ph, absl::StrCat("pause-", s.name, "-", first / batch_size + 1), "pause", "",
              absl::StrCat("pause ", Fmt(s.rolling.pause), " before the next ", s.name, " batch"), batch,
              s.rolling.pause);
      ++batch;
    }
  }
  // Replicas the manifest no longer has.
  std::vector<std::pair<uint32_t, Live*>> extras;
  for (auto& [r, cs] : live_[s.name]) {
    if (r < s.replicas) continue;
    for (Live& c : cs) extras.emplace_back(r, &c);
  }
  if (!extras.empty()) {
    std::vector<std::pair<uint32_t, const Live*>> draining;
    for (auto& [r, c] : extras) {
      if (c->running) draining.emplace_back(r, c);
    }
    if (routed && !draining.empty()) StepProxyRoutes(ph, s.name, draining, batch);
    if (forwarded && !draining.empty()) StepForwards(ph, s.name, draining, batch);
    for (auto& [r, c] : extras) {
      if (c->running) StepStop(ph, s, r, *c, batch + 1);
    }
    for (auto& [r, c] : extras) StepRemove(ph, s, r, *c, batch + 2);
    for (auto it = live_[s.name].begin(); it != live_[s.name].end();) {
      it = it->first >= s.replicas ? live_[s.name].erase(it) : std::next(it);
    }
    batch += 3;
  }
}

std::string Planner::UnitReason(const MoveUnit& unit, bool has_migration_phase) {
  std::vector<std::string> parts;
  const ServiceSpec& first = *m_.FindService(unit.members.front());
  if (unit.together) {
    // The group's own note says why and in which order.
  } else {
    switch (first.role) {
      case v1::ROLE_JOB: parts.push_back("role job: runs once from the new image before the long-running services move"); break;
      case v1::ROLE_API:
        parts.push_back(mode_ == Mode::kInitial || mode_ == Mode::kRestore
                            ? "role api: the database-facing API starts first, once the database is up"
                            : "role api: the database-facing API moves first");
        if (has_migration_phase) parts.push_back("its migration gate ran just before");
        break;
      case v1::ROLE_WORKER: parts.push_back("role worker: moves after the API, in batches, so background work keeps draining"); break;
      case v1::ROLE_SCHEDULER: parts.push_back("role scheduler: started again on the new version once the API and the workers run it"); break;
      case v1::ROLE_WEB: parts.push_back("role web: the front end moves after the API it talks to"); break;
      case v1::ROLE_PROXY: parts.push_back("role proxy: last, so it picks up every change behind it"); break;
      case v1::ROLE_DATABASE: parts.push_back("role database: starts before everything that uses it"); break;
      default: break;
    }
  }
  for (const std::string& n : unit.notes) parts.push_back(n);
  for (const std::string& member : unit.members) {
    const ServiceSpec& s = *m_.FindService(member);
    for (const std::string& d : s.after) parts.push_back(absl::StrCat(member, " after ", d, " (services.", member, ".after)"));
  }
  return absl::StrJoin(parts, "; ");
}

void Planner::PhaseUndoGate(
    const std::vector<std::pair<const ServiceSpec*, std::vector<std::pair<uint32_t, Live>>>>& stopped) {
  // Gates: migration gates, and one-shot jobs that run before any service moves.
  bool gated = false;
  for (const PlanPhase& ph : plan_.phases) {
    if (absl::StartsWith(ph.name, "replace-") || absl::StartsWith(ph.name, "start-")) break;
    gated = gated || absl::StartsWith(ph.name, "migrate-") || absl::StartsWith(ph.name, "run-");
  }
  if (!gated) return;
  PlanPhase& ph = AddPhase(
      std::string(kUndoGatePhase),
      absl::StrCat("only when a migration gate or a one-shot job before the moves fails, while no instance has "
                   "moved yet: puts ", m_.deployment,
                   " back as it was before the rollout (", from_version_,
                   " pinned again, the services stopped first started again); skipped otherwise"));
  AddStep(ph, "pin-back", "pin_back", "", absl::StrCat("record ", from_version_, " as ", m_.deployment,
                                                      "'s pinned version again"),
          0, kControllerStepTimeout);
  for (const auto& [s, running] : stopped) {
    for (const auto& [replica, c] : running) {
      PlanStep& st = AddStep(ph, absl::StrCat("restart-", s->name, "-", replica), "start_instance", c.agent,
                             absl::StrCat("start ", s->name, " replica ", replica, " (", c.version, ") on ", c.agent,
                                          " again, as it ran before"),
                             1, in_.options.start_timeout);
      st.instance = Ref(s->name, replica);
      v1::StartInstance* a = st.action.mutable_start_instance();
      *a->mutable_instance() = *st.instance;
      a->set_version(c.version);
      // The stopped container is started again; the spec is for a host
      // that lost it meanwhile.
      const std::string image = s->versioned() && in_.current.has_value() && in_.current->images().contains(s->name)
                                    ? in_.current->images().at(s->name)
                                    : NewImage(*s);
      *a->mutable_spec() = SpecOf(*s, image, c.agent);
      StepProbe(ph, *s, replica, c.version, 2, false);
    }
  }
  // Their proxy routes and forwarders, which the stop drained, back to the
  // restarted containers.
  std::set<std::string> names;
  for (const auto& [s, running] : stopped) {
    if (!running.empty()) names.insert(s->name);
  }
  auto restarted = [&](const std::string& service) {
    for (const auto& [s, running] : stopped) {
      if (s->name == service) return &running;
    }
    return static_cast<const std::vector<std::pair<uint32_t, Live>>*>(nullptr);
  };
  StepProxyUpdate(
      ph, [&](const RouteSpec& r) { return names.contains(r.service); },
      [&](const RouteSpec& r, v1::ProxyRoute* route) {
        int n = 0;
        for (const auto& [replica, c] : *restarted(r.service)) {
          Live back = c;
          back.running = true;
          if (AddBackend(route, r, replica, back, live_slot_, v1::BACKEND_STATE_READY)) ++n;
        }
        return absl::StrCat(r.name, " -> ", n, " restarted");
      },
      3, "proxy-back", "set back");
  for (const std::string& name : names) {
    if (!Forwarded(name)) continue;
    // The forwarders see the restarted containers as the live ones.
    auto saved = live_[name];
    live_[name].clear();
    for (const auto& [replica, c] : *restarted(name)) {
      Live back = c;
      back.running = true;
      live_[name][replica].push_back(back);
    }
    StepForwards(ph, name, {}, 3);
    live_[name] = std::move(saved);
  }
}

bool Planner::StepDatabasesHealthy(PlanPhase& ph) {
  bool any = false;
  for (const ServiceSpec& d : m_.services) {
    if (d.role != v1::ROLE_DATABASE || !d.health.has_value()) continue;
    for (const auto& [replica, cs] : live_[d.name]) {
      auto running = std::find_if(cs.begin(), cs.end(), [](const Live& c) { return c.running; });
      if (running != cs.end()) any |= StepProbe(ph, d, replica, running->version, 0, false);
    }
  }
  return any;
}

void Planner::PhaseUnit(const MoveUnit& unit, size_t /*position*/) {
  // Migration gates of the unit's services come first, as their own phases.
  bool gated = false;
  if (mode_ == Mode::kUpgrade || mode_ == Mode::kInitial) {
    for (const std::string& member : unit.members) {
      const ServiceSpec& s = *m_.FindService(member);
      if (!s.migration.has_value()) continue;
      gated = true;
      PlanPhase& ph = AddPhase(
          absl::StrCat("migrate-", member),
          absl::StrCat("migration gate for ", member, ": runs from the ", to_version_, " image before any ",
                       member, " instance moves; a non-zero exit stops the rollout with nothing else "
                       "moved (each migration runs in its own transaction, so data is left as it was)"));
      StepJob(ph, s, "migrate", s.migration->command, s.migration->timeout, "run_job",
              absl::StrCat("run the ", member, " migration"), StepDatabasesHealthy(ph) ? 1 : 0);
    }
  }
  const ServiceSpec& first = *m_.FindService(unit.members.front());
  if (!unit.together && first.role == v1::ROLE_JOB) {
    PlanPhase& ph = AddPhase(absl::StrCat("run-", first.name), UnitReason(unit, gated));
    StepJob(ph, first, first.name, first.command, first.job_timeout, "run_job",
            absl::StrCat("run the one-shot job ", first.name), 0);
    return;
  }

  uint32_t batch = 0;
  if (unit.together) {
    PlanPhase& ph = AddPhase(absl::StrCat("replace-", unit.name), UnitReason(unit, gated));
    std::vector<std::pair<uint32_t, const Live*>> draining;
    for (const std::string& member : unit.members) {
      draining.clear();
      for (auto& [r, cs] : live_[member]) {
        for (const Live& c : cs) {
          if (c.running && c.version != NewVersion(*m_.FindService(member))) draining.emplace_back(r, &c);
        }
      }
      if (!draining.empty()) StepProxyRoutes(ph, member, draining, 0);
      if (!draining.empty()) StepForwards(ph, member, draining, 0);
    }
    for (const std::string& member : unit.members) {
      const ServiceSpec& s = *m_.FindService(member);
      for (auto& [r, cs] : live_[member]) {
        for (Live& c : cs) {
          if (c.running && c.version != NewVersion(s)) StepStop(ph, s, r, c, 1);
        }
      }
    }
    batch = 2;
    for (const std::string& member : unit.members) {
      const ServiceSpec& s = *m_.FindService(member);
      ReplaceService(ph, s, UpdateOrder::kStopFirst, std::max<uint32_t>(1, s.replicas), batch, false);
    }
    return;
  }

  const ServiceSpec& s = first;
  std::string name_prefix = order_.stopped_first.contains(s.name) ? "start-" : "replace-";
  if (mode_ == Mode::kInitial || mode_ == Mode::kRestore) name_prefix = "start-";
  PlanPhase& ph = AddPhase(absl::StrCat(name_prefix, s.name), "");
  std::string reason = UnitReason(unit, gated);
  if (order_.stopped_first.contains(s.name) || mode_ == Mode::kInitial || mode_ == Mode::kRestore) {
    ReplaceService(ph, s, UpdateOrder::kStopFirst, std::max<uint32_t>(1, s.replicas), batch, false);
    absl::StrAppend(&reason, "; all ", s.replicas, " replica(s) start at once",
                    mode_ == Mode::kInitial || mode_ == Mode::kRestore ? "" : " (it was stopped earlier)");
  } else {
    std::string order_why;
    UpdateOrder order = EffectiveOrder(s, &order_why);
    uint32_t k = s.rolling.max_parallel;
    std::string health_why;
    if (order == UpdateOrder::kStartFirst) {
      health_why = absl::StrCat("never fewer than ", s.replicas, " healthy");
    } else {
      uint32_t min_healthy = s.EffectiveMinHealthy(UpdateOrder::kStopFirst);
      if (min_healthy >= s.replicas) {
        min_healthy = s.replicas > 0 ? s.replicas - 1 : 0;
        plan_.warnings.push_back(absl::StrCat(
            s.name, ": min_healthy ", s.EffectiveMinHealthy(UpdateOrder::kStopFirst), " cannot be kept "
            "stop-first; one replica at a time is replaced (", order_why, ")"));
      }
      k = std::max<uint32_t>(1, std::min(k, s.replicas - min_healthy));
      health_why = absl::StrCat("at least ", min_healthy, " of ", s.replicas, " stay healthy");
      if (s.update_order == UpdateOrder::kStartFirst) {
        plan_.warnings.push_back(absl::StrCat(s.name, " is replaced ", order_why));
      }
    }
    ReplaceService(ph, s, order, std::max<uint32_t>(1, k), batch, true);
    absl::StrAppend(&reason, "; ", s.replicas, " replica(s) ", order_why, "; ", k, " at a time, ", health_why,
                    s.rolling.pause > absl::ZeroDuration() ? absl::StrCat(", pause ", Fmt(s.rolling.pause), " between batches") : "");
  }
  if (s.role == v1::ROLE_PROXY) {
    StepProxyReload(ph, batch);
    absl::StrAppend(&reason, "; then its routes are set to the new instances behind it");
  }
  ph.reason = reason;
  if (ph.steps.empty()) {
    AddStep(ph, absl::StrCat("noop-", s.name), "preflight", "",
            absl::StrCat("every ", s.name, " replica already runs ", NewVersion(s), "; nothing to do"), 0,
            kControllerStepTimeout);
  }
}

void Planner::PhaseProxyReload() {
  for (const ServiceSpec& p : m_.services) {
    if (p.role != v1::ROLE_PROXY || p.routes.empty() || Moves(p)) continue;
    PlanPhase& ph = AddPhase(absl::StrCat("reload-", p.name),
                             "role proxy: reloaded last to pick up every change to the services behind it "
                             "(its image is pinned, so the proxy itself is not replaced)");
    StepProxyReload(ph, 0);
    if (ph.steps.empty()) {
      plan_.phases.pop_back();
      plan_.warnings.push_back(absl::StrCat("no ", p.name, " instance runs, so its routes are not updated"));
    }
  }
}

void Planner::PhasePostcheck() {
  PlanPhase& ph = AddPhase("postcheck",
                           "after every move: each instance is probed once more on the version it should run");
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_JOB) continue;
    for (uint32_t r = 0; r < s.replicas && r < placement_[s.name].size(); ++r) {
      std::string version = NewVersion(s);
      if (!Moves(s)) {
        for (const Live& c : live_[s.name][r]) version = c.version;
      }
      StepProbe(ph, s, r, version, 0, true);
    }
  }
  if (ph.steps.empty()) {
    plan_.phases.pop_back();
    plan_.warnings.push_back("no service has a health check: the post-upgrade check only knows containers started");
  }
  const std::optional<SmokeTestSpec>& smoke = m_.smoke_test;
  if (smoke.has_value() && mode_ != Mode::kRestore && mode_ != Mode::kRollback) {
    const ServiceSpec& s = *m_.FindService(smoke->service);
    PlanPhase& sp = AddPhase("smoke-test", "last: the smoke test runs against the whole stack once every instance is healthy");
    StepJob(sp, s, "smoke-test", smoke->job.command, smoke->job.timeout, "smoke_test",
            absl::StrCat("run the smoke test with the ", s.name, " ", NewVersion(s), " image"), 0);
  }
}

void Planner::PhaseStopApp() {
  PlanPhase& ph = AddPhase(
      "stop-app",
      "the backup is restored into a database nothing writes to: every application service stops "
      "first (the scheduler before the rest); the database and the proxy keep running");
  for (const ServiceSpec& s : m_.services) {
    if (!Moves(s) || s.role == v1::ROLE_PROXY) continue;
    uint32_t batch = s.role == v1::ROLE_SCHEDULER ? 0 : 1;
    for (auto& [r, cs] : live_[s.name]) {
      for (Live& c : cs) {
        if (c.running) StepStop(ph, s, r, c, batch);
      }
    }
  }
  if (ph.steps.empty()) {
    AddStep(ph, "none", "preflight", "", "no application instance runs; nothing to stop", 0, kControllerStepTimeout);
  }
}

absl::Status Planner::PhaseRestore(const v1::BackupRecord& record) {
  if (!agents_.contains(record.agent_id())) {
    return absl::FailedPreconditionError(absl::StrCat("backup ", record.id(), " is held by ", record.agent_id(),
                                                      ", which is not a connected host of ", m_.deployment));
  }
  if (record.artifacts_size() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("backup ", record.id(), " has no artifacts to restore"));
  }
  if (m_.backup.has_value() && m_.backup->postgres.has_value()) {
    const std::vector<std::string>& db_hosts = placement_[m_.backup->postgres->service];
    if (!db_hosts.empty() && db_hosts[0] != record.agent_id()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "backup ", record.id(), " is held by ", record.agent_id(), " but ", m_.backup->postgres->service,
          " runs on ", db_hosts[0], "; the restore runs beside the database, so the backup must be on its host"));
    }
  }
  plan_.backup_id = record.id();
  PlanPhase& ph = AddPhase(
      "restore",
      absl::StrCat("migrations are forward-only: the database goes back to backup ", record.id(),
                   " (taken before the upgrade) so the old version finds the schema it expects; "
                   "data written since is lost"));
  v1::Restore restore;
  restore.set_deployment(m_.deployment);
  restore.set_backup_id(record.id());
  *restore.mutable_artifacts() = record.artifacts();
  std::vector<std::string> what;
  for (const v1::BackupArtifact& a : record.artifacts()) what.push_back(absl::StrCat(a.kind(), " ", a.source()));
  if (m_.backup.has_value() && m_.backup->postgres.has_value()) {
    *restore.mutable_database_instance() = Ref(m_.backup->postgres->service, 0);
    restore.set_database_user(m_.backup->postgres->user);
  }
  PlanStep& st = AddStep(ph, "restore", "restore", record.agent_id(),
                         absl::StrCat("restore ", absl::StrJoin(what, ", "), " from backup ", record.id(), " on ",
                                      record.agent_id(), " after checking each sha256"),
                         0, m_.backup.has_value() ? m_.backup->timeout : absl::Minutes(30));
  if (restore.has_database_instance()) st.instance = restore.database_instance();
  *st.action.mutable_restore() = restore;
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

  plan_.deployment = m_.deployment;
  plan_.from_version = from_version_;
  plan_.to_version = to_version_;
  plan_.strategy = v1::STRATEGY_ROLLING;
  plan_.initial_deploy = mode_ == Mode::kInitial;
  plan_.is_rollback = mode_ == Mode::kRollback || mode_ == Mode::kRestore;
  plan_.on_failure = in_.options.on_failure == v1::ON_FAILURE_UNSPECIFIED ? v1::ON_FAILURE_STOP
                                                                          : in_.options.on_failure;

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

  PhasePreflight();
  if (mode_ == Mode::kUpgrade && m_.backup.has_value()) {
    if (in_.options.skip_backup) {
      plan_.warnings.push_back("the backup is skipped at the operator's request: a rollback cannot restore data");
    } else {
      HOIST_RETURN_IF_ERROR(PhaseBackup());
    }
  }
  std::vector<std::string> pulled;
  for (const std::string& name : moving_) pulled.push_back(name);
  PhasePull(pulled);
  PhasePin();
  PhaseForwards();
  // What a failed migration gate puts back (its phase runs only then).
  std::vector<std::pair<const ServiceSpec*, std::vector<std::pair<uint32_t, Live>>>> stopped;
  if (mode_ == Mode::kRestore) {
    PhaseStopApp();
    HOIST_RETURN_IF_ERROR(PhaseRestore(*rollback->restore));
  } else {
    // Scheduler first, then the services rules stop early, in manifest order.
    std::vector<std::string> early;
    for (const ServiceSpec& s : m_.services) {
      if (order_.stopped_first.contains(s.name) && s.role == v1::ROLE_SCHEDULER) early.push_back(s.name);
    }
    for (const ServiceSpec& s : m_.services) {
      if (order_.stopped_first.contains(s.name) && s.role != v1::ROLE_SCHEDULER) early.push_back(s.name);
    }
    for (const std::string& name : early) {
      std::vector<std::pair<uint32_t, Live>> running;
      for (const auto& [replica, cs] : live_[name]) {
        for (const Live& c : cs) {
          if (c.running) running.emplace_back(replica, c);
        }
      }
      stopped.emplace_back(m_.FindService(name), std::move(running));
    }
    for (const std::string& name : early) PhaseStopFirst(name, order_.stopped_first.at(name));
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

absl::StatusOr<Plan> Planner::BuildBlueGreen() {
  HOIST_RETURN_IF_ERROR(CheckReleases());
  HOIST_RETURN_IF_ERROR(CollectObserved());
  Place();
  HOIST_RETURN_IF_ERROR(CheckWiring());
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);

  // What moves into the new slot: versioned services other than databases.
  // The proxy is where the switch happens, so it stays outside the slots.
  std::vector<std::string> problems;
  const ServiceSpec* proxy = nullptr;
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_PROXY) {
      if (s.versioned()) {
        problems.push_back(absl::StrCat("services.", s.name, " is a proxy with a repository: blue-green switches "
                                        "traffic inside the proxy, so the proxy cannot move with a slot; pin it "
                                        "with image:"));
      } else if (!s.routes.empty() && proxy == nullptr) {
        proxy = &s;
      }
      continue;
    }
    if (!s.versioned() || s.role == v1::ROLE_DATABASE) continue;
    moving_.push_back(s.name);
    if (s.role == v1::ROLE_JOB) continue;
    for (const PortSpec& p : s.ports) {
      if (p.host_port != 0) {
        problems.push_back(absl::StrCat("services.", s.name, ".ports publishes host port ", p.host_port,
                                        ", which the ", old_word, " and the ", new_word,
                                        " containers cannot hold at once; let the proxy reach it on the network "
                                        "(drop the host port)"));
      }
    }
  }
  if (proxy == nullptr) {
    problems.push_back(absl::StrCat(m_.file_name, " has no service with role proxy and routes: blue-green switches "
                                    "traffic in the proxy"));
  } else {
    bool running = false;
    for (const auto& [r, cs] : live_[proxy->name]) {
      for (const Live& c : cs) running = running || c.running;
    }
    if (!running) {
      problems.push_back(absl::StrCat("no ", proxy->name, " instance runs, so there is no proxy to switch"));
    }
  }
  // Compatibility rules. Blue-green runs the whole new release beside the
  // old one until the old slot is retired, so it cannot plan around a rule
  // the way rolling does (by moving or stopping a service first): a rule that
  // forbids the mix refuses the plan.
  if (!from_version_.empty() && from_version_ != to_version_) {
    auto from = Version::Parse(from_version_);
    auto to = Version::Parse(to_version_);
    if (from.ok() && to.ok()) {
      for (const CompatRule& r : m_.rules) {
        if (!r.Allows(*to, *to)) {
          problems.push_back(absl::StrCat("release ", to_version_, " breaks the rule \"", r.Describe(), "\" by itself"));
        } else if (r.kind == CompatRule::Kind::kMustMatch) {
          problems.push_back(absl::StrCat("the rule \"", r.Describe(), "\" forbids ", r.service, " and ", r.other,
                                          " at different versions, and blue-green runs ", from_version_, " and ",
                                          to_version_, " at once"));
        } else if (!m_.network.empty()) {
          for (const auto& [sv, ov] : {std::pair(*to, *from), std::pair(*from, *to)}) {
            if (r.Allows(sv, ov)) continue;
            problems.push_back(absl::StrCat(
                "the rule \"", r.Describe(), "\" forbids ", r.service, " ", sv == *to ? to_version_ : from_version_,
                " beside ", r.other, " ", ov == *to ? to_version_ : from_version_,
                ", and both slots answer to the same service names on network ", m_.network));
          }
        }
      }
    }
  }
  if (!problems.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot plan a blue-green upgrade of ", m_.deployment, ": ",
                                                      absl::StrJoin(problems, "; "), "; or use --strategy rolling"));
  }
  HOIST_RETURN_IF_ERROR(Preflight());

  plan_.deployment = m_.deployment;
  plan_.from_version = from_version_;
  plan_.to_version = to_version_;
  plan_.strategy = v1::STRATEGY_BLUE_GREEN;
  plan_.target_slot = idle_slot_;
  plan_.grace_period = in_.options.grace_period;
  plan_.on_failure = in_.options.on_failure == v1::ON_FAILURE_UNSPECIFIED ? v1::ON_FAILURE_STOP
                                                                          : in_.options.on_failure;
  for (const v1::Release& r : in_.intermediate) {
    auto v = Version::Parse(r.version());
    if (v.ok() && *v > *Version::Parse(from_version_) && *v < *Version::Parse(to_version_)) plan_.notes.push_back(r);
  }
  plan_.notes.push_back(in_.target);
  std::sort(plan_.notes.begin(), plan_.notes.end(), [](const v1::Release& a, const v1::Release& b) {
    return *Version::Parse(a.version()) < *Version::Parse(b.version());
  });
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_DATABASE) {
      plan_.warnings.push_back(absl::StrCat(s.name, " (database) is shared by both slots and not replaced",
                                            m_.backup.has_value() ? "; it is backed up first" : ""));
    }
    if (!s.health.has_value() && s.role != v1::ROLE_JOB && s.replicas > 0 && Moves(s)) {
      plan_.warnings.push_back(absl::StrCat(s.name, " has no health check: Hoist only knows its ", new_word,
                                            " containers started before traffic switches to them"));
    }
  }
  if (!m_.network.empty()) {
    plan_.warnings.push_back(absl::StrCat(
        "both slots answer to the same service names on network ", m_.network, ": between the start of ", new_word,
        " and the retirement of ", old_word, " a call between services may reach either version"));
  }

  PhasePreflight();
  if (m_.backup.has_value()) {
    if (in_.options.skip_backup) {
      plan_.warnings.push_back("the backup is skipped at the operator's request: a rollback cannot restore data");
    } else {
      HOIST_RETURN_IF_ERROR(PhaseBackup());
    }
  }

  // Leftovers in the idle slot (a blue-green rollout that failed before its
  // switch): they take no traffic, and the new slot needs their names.
  if (!idle_.empty()) {
    PlanPhase& ph = AddPhase(
        absl::StrCat("clear-", new_word),
        absl::StrCat(new_word, " containers are left from an earlier blue-green rollout that did not switch; "
                     "the proxy sends them nothing, so they are removed before ", new_word, " starts again"));
    for (auto& [service, replicas] : idle_) {
      const ServiceSpec& s = *m_.FindService(service);
      for (auto& [r, cs] : replicas) {
        for (Live& c : cs) {
          if (c.running) StepStop(ph, s, r, c, 0, idle_slot_);
          StepRemove(ph, s, r, c, 1, idle_slot_);
        }
      }
    }
    idle_.clear();
  }

  PhasePull(moving_);
  PhaseForwards();

  // Migration gates, api first (the role order of a rolling upgrade).
  std::vector<const ServiceSpec*> gated;
  for (v1::Role role : {v1::ROLE_API, v1::ROLE_WORKER, v1::ROLE_SCHEDULER, v1::ROLE_WEB, v1::ROLE_JOB}) {
    for (const ServiceSpec& s : m_.services) {
      if (s.role == role && Moves(s) && s.migration.has_value()) gated.push_back(&s);
    }
  }
  for (const ServiceSpec* s : gated) {
    PlanPhase& ph = AddPhase(
        absl::StrCat("migrate-", s->name),
        absl::StrCat("migration gate for ", s->name, ": runs from the ", to_version_, " image before any ", new_word,
                     " container starts, while ", old_word, " (", from_version_,
                     ") keeps serving: the migration must be expand-only (add, never drop or rename) so that ",
                     from_version_, " still works on the migrated schema during the grace period; a non-zero exit "
                     "stops the rollout with ", old_word, " serving and nothing else changed"));
    StepJob(ph, *s, "migrate", s->migration->command, s->migration->timeout, "run_job",
            absl::StrCat("run the ", s->name, " migration"), StepDatabasesHealthy(ph) ? 1 : 0);
  }
  for (const ServiceSpec& s : m_.services) {
    if (s.role != v1::ROLE_JOB || !Moves(s)) continue;
    PlanPhase& ph = AddPhase(absl::StrCat("run-", s.name),
                             absl::StrCat("role job: runs once from the new image after the migrations, before ",
                                          new_word, " starts"));
    StepJob(ph, s, s.name, s.command, s.job_timeout, "run_job", absl::StrCat("run the one-shot job ", s.name), 0);
  }

  // The whole new slot at once: the old one serves meanwhile, so nothing
  // waits on a batch. Schedulers are singletons and wait for the handover.
  std::vector<const ServiceSpec*> schedulers;
  {
    PlanPhase& ph = AddPhase(
        absl::StrCat("start-", new_word),
        absl::StrCat(old_word, " keeps serving, so every ", new_word, " instance starts at once beside it (names carry "
                     "the slot: <deployment>-<service>-", new_word, "-<replica>-<version>) and must pass its health "
                     "check; a failure stops the rollout with the proxy untouched and ", old_word, " serving, the ",
                     new_word, " containers left for inspection (the next blue-green rollout removes them)"));
    for (const std::string& name : moving_) {
      const ServiceSpec& s = *m_.FindService(name);
      if (s.role == v1::ROLE_JOB) continue;
      if (s.role == v1::ROLE_SCHEDULER) {
        schedulers.push_back(&s);
        continue;
      }
      for (uint32_t r = 0; r < s.replicas; ++r) {
        StepStart(ph, s, r, 0, idle_slot_);
        StepProbe(ph, s, r, NewVersion(s), 1, false, idle_slot_);
      }
      // As on one host, where the name reaches both slots from here on.
      StepForwards(ph, name, {}, 2, {live_slot_, idle_slot_});
    }
    if (ph.steps.empty()) {
      AddStep(ph, "none", "preflight", "", absl::StrCat("no service other than schedulers moves"), 0,
              kControllerStepTimeout);
    }
  }

  // Preview routes ("<route>-preview" of the same service) reach the new
  // slot only, for the smoke test and for people, before any user does.
  std::set<std::string> preview;
  for (const RouteSpec& r : proxy->routes) {
    const std::string base = r.name.size() > 8 && absl::EndsWith(r.name, "-preview")
                                 ? r.name.substr(0, r.name.size() - 8) : "";
    if (!base.empty() && std::find(moving_.begin(), moving_.end(), r.service) != moving_.end()) {
      preview.insert(r.name);
    }
  }
  auto is_preview = [&](const RouteSpec& r) { return preview.contains(r.name); };
  auto is_switched = [&](const RouteSpec& r) { return !preview.contains(r.name) && Moves(*m_.FindService(r.service)); };
  if (!preview.empty()) {
    PlanPhase& ph = AddPhase(
        "preview",
        absl::StrCat("the preview route(s) ", absl::StrJoin(preview, ", "), " now reach ", new_word,
                     " only, so it can be tried before any user request goes there"));
    StepProxySlots(ph, is_preview, {{idle_slot_, v1::BACKEND_STATE_READY}}, 0, "preview");
  }
  if (m_.smoke_test.has_value()) {
    const ServiceSpec& s = *m_.FindService(m_.smoke_test->service);
    PlanPhase& sp = AddPhase(
        "smoke-test",
        absl::StrCat("before the switch: the smoke test runs against ", new_word, " while ", old_word,
                     " still serves users",
                     preview.empty() ? absl::StrCat(" (the proxy has no <route>-preview route: the test runs from the new "
                                                    "image on the deployment network, where service names reach both "
                                                    "slots; it can reach ", new_word, " by container name)")
                                     : absl::StrCat(", through the preview route ", absl::StrJoin(preview, ", ")),
                     "; a failure stops the rollout before any user sees ", to_version_));
    StepJob(sp, s, "smoke-test", m_.smoke_test->job.command, m_.smoke_test->job.timeout, "smoke_test",
            absl::StrCat("run the smoke test with the ", s.name, " ", NewVersion(s), " image"), 0);
  }
  for (const ServiceSpec* s : schedulers) {
    PlanPhase& ph = AddPhase(
        absl::StrCat("handover-", s->name),
        absl::StrCat("role scheduler, a singleton: the ", old_word, " ", s->name, " stops before the ", new_word,
                     " one starts, so scheduled work never runs twice; it moves last, once the rest of ", new_word,
                     " is healthy. A switch back moves the proxy only: the scheduler stays on ", to_version_,
                     ", which expand-only migrations keep safe"));
    for (auto& [r, cs] : live_[s->name]) {
      for (Live& c : cs) {
        if (c.running) StepStop(ph, *s, r, c, 0);
      }
    }
    for (uint32_t r = 0; r < s->replicas; ++r) {
      StepStart(ph, *s, r, 1, idle_slot_);
      StepProbe(ph, *s, r, NewVersion(*s), 2, false, idle_slot_);
    }
  }

  {
    PlanPhase& ph = AddPhase(
        "pin", absl::StrCat("just before the switch: until ", new_word, " takes traffic, ", from_version_,
                            " is what should run; from here a restart of the controller or any host comes back on ",
                            to_version_));
    AddStep(ph, "pin", "pin", "", absl::StrCat("record ", to_version_, " as ", m_.deployment, "'s pinned version"),
            0, kControllerStepTimeout);
  }
  {
    PlanPhase& ph = AddPhase(
        "switch",
        absl::StrCat("ONE proxy_update per proxy host switches every route to ", new_word,
                     " at once: validated first (routes and addresses), then applied through HAProxy's runtime API "
                     "without a reload; ", old_word, "'s servers stay in the backends, drained, so `hoist cutover "
                     "--back` is one more runtime change"));
    StepProxySlots(ph, is_switched,
                   {{idle_slot_, v1::BACKEND_STATE_READY}, {live_slot_, v1::BACKEND_STATE_DRAIN}}, 0, "switch");
    AddStep(ph, absl::StrCat("live-", new_word), "live_slot", "",
            absl::StrCat("record ", new_word, " as the slot that serves ", m_.deployment), 1, kControllerStepTimeout);
  }
  {
    PlanPhase& ph = AddPhase(
        "grace",
        absl::StrCat(new_word, " serves; ", old_word, " keeps running for ", Fmt(in_.options.grace_period),
                     " so that `hoist cutover --back` is instant. `hoist cutover --finish` ends it early; while ",
                     old_word, " serves again the period does not run out"));
    AddStep(ph, "grace", "grace", "",
            absl::StrCat("keep ", old_word, " (", from_version_, ") for ", Fmt(in_.options.grace_period)), 0,
            in_.options.grace_period);
  }
  {
    PlanPhase& ph = AddPhase(
        absl::StrCat("retire-", old_word),
        absl::StrCat("after the grace period: ", old_word, "'s servers leave the proxy first, then its containers "
                     "stop and are removed; ", new_word, " becomes the slot the next rollout starts from"));
    StepProxySlots(ph, is_switched, {{idle_slot_, v1::BACKEND_STATE_READY}}, 0, "retire");
    for (const std::string& name : moving_) StepForwards(ph, name, {}, 0, {idle_slot_});
    for (const std::string& name : moving_) {
      const ServiceSpec& s = *m_.FindService(name);
      if (s.role == v1::ROLE_JOB) continue;
      for (auto& [r, cs] : live_[name]) {
        for (Live& c : cs) {
          if (c.running) StepStop(ph, s, r, c, 1);
          StepRemove(ph, s, r, c, 2);
        }
      }
    }
  }
  {
    PlanPhase& ph = AddPhase("postcheck",
                             absl::StrCat("last: every ", new_word, " instance is probed once more on ", to_version_));
    for (const std::string& name : moving_) {
      const ServiceSpec& s = *m_.FindService(name);
      if (s.role == v1::ROLE_JOB) continue;
      for (uint32_t r = 0; r < s.replicas; ++r) StepProbe(ph, s, r, NewVersion(s), 0, true, idle_slot_);
    }
    if (ph.steps.empty()) plan_.phases.pop_back();
  }
  Finish();
  return std::move(plan_);
}

}  // namespace

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
  Planner planner(input, input.current.has_value() ? Mode::kUpgrade : Mode::kInitial);
  return planner.Build(nullptr);
}

absl::StatusOr<Plan> PlanRollback(const PlanInput& input, const RollbackOptions& options) {
  if (!input.current.has_value()) {
    return absl::InvalidArgumentError("nothing to roll back: no release is pinned");
  }
  Planner planner(input, options.restore.has_value() ? Mode::kRestore : Mode::kRollback);
  return planner.Build(&options);
}

std::string PlanDigest(const Plan& plan) {
  Sha256 hash;
  auto clean = [&](absl::string_view text) {
    return plan.backup_id.empty() ? std::string(text) : absl::StrReplaceAll(text, {{plan.backup_id, "<backup>"}});
  };
  // Each value with its length first: no two different plans read the same.
  auto add = [&](absl::string_view value) {
    hash.Update(absl::StrCat(value.size(), ":"));
    hash.Update(value);
  };
  // Text, not wire bytes: the placeholder must replace the backup id
  // without a length in front of it telling the two apart. (Map entries
  // print in key order.)
  auto text = [](const google::protobuf::Message& m) {
    std::string out;
    google::protobuf::TextFormat::PrintToString(m, &out);
    return out;
  };
  add(plan.deployment);
  add(plan.from_version);
  add(plan.to_version);
  add(absl::StrCat(plan.strategy, "/", plan.target_slot, "/", absl::ToInt64Milliseconds(plan.grace_period), "/",
                   plan.on_failure));
  for (const std::string& w : plan.warnings) add(clean(w));
  for (const PlanPhase& ph : plan.phases) {
    add(ph.name);
    for (const PlanStep& st : ph.steps) {
      add(st.kind);
      add(st.agent_id);
      add(clean(st.description));
      add(absl::StrCat(st.batch, "/", absl::ToInt64Milliseconds(st.timeout)));
      add(st.instance.has_value() ? text(*st.instance) : std::string());
      add(clean(text(st.action)));
    }
  }
  return hash.HexDigest().substr(0, 16);
}

hoist::v1::Plan ToProto(const Plan& plan) {
  hoist::v1::Plan out;
  out.set_deployment(plan.deployment);
  out.set_from_version(plan.from_version);
  out.set_to_version(plan.to_version);
  out.set_strategy(plan.strategy);
  out.set_target_slot(plan.target_slot);
  if (plan.grace_period > absl::ZeroDuration()) *out.mutable_grace_period() = DurationProto(plan.grace_period);
  for (const PlanPhase& ph : plan.phases) {
    hoist::v1::PlannedPhase* p = out.add_phases();
    p->set_name(ph.name);
    p->set_reason(ph.reason);
    for (const PlanStep& s : ph.steps) {
      hoist::v1::PlannedStep* ps = p->add_steps();
      ps->set_step_id(s.id);
      ps->set_agent_id(s.agent_id);
      ps->set_description(s.description);
      ps->set_kind(s.kind);
      if (s.instance.has_value()) *ps->mutable_instance() = *s.instance;
      ps->set_state(hoist::v1::STEP_STATE_PENDING);
      p->add_batches(s.batch);
    }
  }
  for (const hoist::v1::Release& r : plan.notes) *out.add_notes() = r;
  for (const std::string& w : plan.warnings) out.add_warnings(w);
  out.set_digest(PlanDigest(plan));
  return out;
}

}  // namespace hoist::rollout

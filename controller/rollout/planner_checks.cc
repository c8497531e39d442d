// Planner inputs and checks: the releases, the containers the hosts report,
// where each replica goes, how the stack is wired across Docker hosts, and
// the pre-flight problems that refuse a plan before anything is touched.

#include <arpa/inet.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner_internal.h"
#include "shared/semver.h"

namespace hoist::rollout::internal {
namespace {

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

bool IsIpAddress(const std::string& a) {
  in6_addr buf;
  return inet_pton(AF_INET, a.c_str(), &buf) == 1 || inet_pton(AF_INET6, a.c_str(), &buf) == 1;
}

}  // namespace

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
  WireProxyRoutes(&problems);
  // Names across Docker hosts: each engine that runs part of the stack but
  // no instance of a service gets a forwarder for it, so the name resolves
  // there too (on the deployment's network; without one, names do not
  // resolve even on one host).
  forward_hosts_.clear();
  forward_ports_.clear();
  if (!m_.network.empty()) {
    const std::vector<std::string> stack_hosts = StackHosts();
    for (const ServiceSpec& s : m_.services) WireForwarder(s, stack_hosts, &problems);
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("cannot wire ", m_.deployment, " across its hosts: ", absl::StrJoin(problems, "; ")));
}

void Planner::WireProxyRoutes(std::vector<std::string>* problems) {
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
      problems->push_back(absl::StrCat(
          "services.", proxy.name, ".routes.", r.name, " sends traffic to ", target->name, ":", r.port,
          ", which runs on another Docker host than the proxy (", absl::StrJoin(proxy_set, ", "),
          "), and these hosts have no IP address to publish it on: ", absl::StrJoin(unaddressed, ", "),
          ". Give each host its IP in hosts[].address (or start its agent with --address), or place ", target->name,
          " on the proxy's host"));
    }
  }
}

std::vector<std::string> Planner::StackHosts() const {
  std::vector<std::string> stack_hosts;  // manifest order
  for (const HostSpec& h : m_.hosts) {
    bool used = false;
    for (const auto& [service, hosts] : placement_) {
      used = used || std::find(hosts.begin(), hosts.end(), h.id) != hosts.end();
    }
    if (used) stack_hosts.push_back(h.id);
  }
  return stack_hosts;
}

void Planner::WireForwarder(const ServiceSpec& s, const std::vector<std::string>& stack_hosts,
                            std::vector<std::string>* problems) {
  auto placed = placement_.find(s.name);
  if (s.role == v1::ROLE_JOB || placed == placement_.end() || placed->second.empty()) return;
  std::set<uint32_t> ports = NamedPorts(s);
  if (ports.empty()) return;
  std::set<std::string> engines;
  for (const std::string& h : placed->second) engines.insert(EngineOf(h));
  if (engines.contains("")) return;  // an agent that reported no engine: cannot tell
  std::vector<std::string> forwarders;
  std::set<std::string> forwarder_engines;
  for (const std::string& h : stack_hosts) {
    const std::string e = EngineOf(h);
    if (e.empty() || engines.contains(e) || !forwarder_engines.insert(e).second) continue;
    forwarders.push_back(h);
  }
  if (forwarders.empty()) return;
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
  if (ports.empty()) return;
  forward_hosts_[s.name] = forwarders;
  forward_ports_[s.name] = ports;
  for (uint32_t p : ports) cross_host_[s.name].insert(p);
  std::set<std::string> unaddressed;
  for (const std::string& h : placed->second) {
    if (!IsIpAddress(HostAddress(h))) unaddressed.insert(absl::StrCat(h, " (\"", HostAddress(h), "\")"));
  }
  if (unaddressed.empty()) return;
  problems->push_back(absl::StrCat(
      "services.", s.name, " is reached by its name (", s.name, ":", absl::StrJoin(ports, ","), ") from ",
      absl::StrJoin(forwarders, ", "), ", which run on other Docker hosts than ", s.name, ", and its hosts have no "
      "IP address to publish it on: ", absl::StrJoin(unaddressed, ", "),
      ". Give each host its IP in hosts[].address (or start its agent with --address), or place ", s.name,
      " on a host of every Docker engine of the stack"));
}

absl::Status Planner::Preflight() {
  PreflightHealth();
  // Env the new release requires, and env it renamed.
  if (mode_ == Mode::kUpgrade || mode_ == Mode::kInitial) PreflightEnv();
  PreflightDisk();
  if (!preflight_problems_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pre-flight found ", preflight_problems_.size(), " problem(s) with ", m_.deployment,
        "; nothing was touched: ", absl::StrJoin(preflight_problems_, "; ")));
  }
  return absl::OkStatus();
}

void Planner::PreflightHealth() {
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
}

std::vector<std::string> Planner::EnvPlaces(const std::string& name) const {
  std::vector<std::string> places;
  for (const ServiceSpec& s : m_.services) {
    if (s.env.contains(name)) places.push_back(absl::StrCat("services.", s.name, ".env"));
  }
  for (const auto& [agent, names] : in_.options.host_env) {
    if (names.contains(name)) places.push_back(absl::StrCat("the env files on ", agent));
  }
  return places;
}

void Planner::PreflightEnv() {
  for (const auto& [old_name, new_name] : in_.target.renamed_env()) {
    std::vector<std::string> old_places = EnvPlaces(old_name);
    if (old_places.empty()) continue;
    if (EnvPlaces(new_name).empty()) {
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
    if (!EnvPlaces(name).empty()) continue;
    std::string renamed_from;
    for (const auto& [o, n] : in_.target.renamed_env()) {
      if (n == name) renamed_from = o;
    }
    if (!renamed_from.empty() && !EnvPlaces(renamed_from).empty()) continue;  // reported above
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

void Planner::PreflightDisk() {
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
}

}  // namespace hoist::rollout::internal

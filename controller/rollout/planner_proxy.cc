// Planner steps that wire traffic: proxy_update steps that set a proxy's
// routes to the instances behind them (either slot, ready or draining), and
// forward_update steps for the forwarders that make a service's name resolve
// on Docker hosts where none of its instances runs.

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner_internal.h"

namespace hoist::rollout::internal {

bool Planner::Routed(const std::string& service) const {
  bool routed = false;
  for (const ServiceSpec& p : m_.services) {
    for (const RouteSpec& r : p.routes) routed = routed || r.service == service;
  }
  return routed;
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
    PlanStep& st = AddStep(ph, absl::StrCat("forward-", service, "-", host), StepKind::kForwardUpdate, host,
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
      PlanStep& st = AddStep(ph, absl::StrCat(slug, "-", proxy.name, "-", host), StepKind::kProxyUpdate, host,
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

}  // namespace hoist::rollout::internal

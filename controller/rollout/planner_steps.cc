// Planner steps on one instance or one job: the container spec and health
// check an agent gets, and the start, probe, stop, remove and run-job steps
// that every strategy's phases are made of.

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner_internal.h"
#include "shared/proto_time.h"

namespace hoist::rollout::internal {

google::protobuf::Duration DurationProto(absl::Duration d) {
  google::protobuf::Duration out;
  SetDuration(d, &out);
  return out;
}

std::string Fmt(absl::Duration d) { return absl::FormatDuration(d); }

std::string PinnedVersion(const ServiceSpec& s) {
  auto ref = ParseImageReference(s.image);
  if (!ref.ok()) return "";
  return ref->tag.empty() ? ref->digest : ref->tag;
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
  PlanStep& st = AddStep(ph, absl::StrCat("start-", s.name, "-", replica), StepKind::kStartInstance, host,
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
      postcheck ? StepKind::kPostcheck : StepKind::kProbeHealth, host,
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
  PlanStep& st = AddStep(ph, absl::StrCat("stop-", s.name, "-", replica), StepKind::kStopInstance, c.agent,
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
  PlanStep& st = AddStep(ph, absl::StrCat("remove-", s.name, "-", replica), StepKind::kRemoveInstance, c.agent,
                         absl::StrCat("remove the stopped", SlotTag(slot), " ", s.name, " replica ", replica, " (",
                                      c.version, ") container on ", c.agent),
                         batch, kRemoveTimeout);
  st.instance = Ref(s.name, replica, slot);
  v1::RemoveInstance* a = st.action.mutable_remove_instance();
  *a->mutable_instance() = *st.instance;
  a->set_version(c.version);
}

void Planner::StepJob(PlanPhase& ph, const ServiceSpec& s, const std::string& job_name,
                      const std::vector<std::string>& command, absl::Duration timeout,
                      StepKind kind, const std::string& what, uint32_t batch) {
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

}  // namespace hoist::rollout::internal

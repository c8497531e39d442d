// The checks that need the whole manifest, run once every section parsed:
// references between sections (after, placement hosts, routes, rules, backup,
// smoke test), whether each service has hosts enough, fixed host ports that
// would collide on a shared host, and cycles in `after`. They run in the order
// CrossCheck lists, so a manifest with several mistakes reports the same one
// first every time.

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/manifest_internal.h"

namespace hoist::rollout::internal {
namespace {

// Checks that `name` is a service of the manifest and, when `versioned`, one
// whose versions releases give (compatibility rules compare versions).
absl::Status CheckServiceRef(const Parser& p, const StackManifest& m, const std::string& name, SourcePos pos,
                             const std::string& path, bool versioned) {
  const ServiceSpec* s = m.FindService(name);
  if (s == nullptr) {
    std::vector<std::string> names;
    for (const ServiceSpec& each : m.services) names.push_back(each.name);
    return p.ErrorAt(pos, path,
                     absl::StrCat("unknown service \"", name, "\"; services are: ", absl::StrJoin(names, ", ")));
  }
  if (versioned && !s->versioned()) {
    return p.ErrorAt(pos, path,
                     absl::StrCat("service \"", name,
                                  "\" has a pinned image and no release versions; rules apply "
                                  "to services versioned by releases"));
  }
  return absl::OkStatus();
}

// A service's after, placement.hosts and routes name things that exist.
absl::Status CheckServiceReferences(const Parser& p, const StackManifest& m, const ServiceSpec& s) {
  const std::string path = Child("services", s.name);
  for (size_t i = 0; i < s.after.size(); ++i) {
    std::string ap = Index(Child(path, "after"), i);
    HOIST_RETURN_IF_ERROR(CheckServiceRef(p, m, s.after[i], s.after_pos, ap, false));
    if (s.after[i] == s.name) return p.ErrorAt(s.after_pos, ap, "a service cannot come after itself");
  }
  for (size_t i = 0; i < s.placement.hosts.size(); ++i) {
    if (m.FindHost(s.placement.hosts[i]) == nullptr) {
      std::vector<std::string> ids;
      for (const HostSpec& h : m.hosts) ids.push_back(h.id);
      return p.ErrorAt(s.pos, Index(Child(path, "placement.hosts"), i),
                       absl::StrCat("unknown host \"", s.placement.hosts[i], "\"; hosts are: ",
                                    absl::StrJoin(ids, ", ")));
    }
  }
  for (const RouteSpec& r : s.routes) {
    HOIST_RETURN_IF_ERROR(CheckServiceRef(p, m, r.service, r.pos, Child(path, "routes"), false));
    if (r.service == s.name) return p.ErrorAt(r.pos, Child(path, "routes"), "a proxy cannot route to itself");
  }
  return absl::OkStatus();
}

// A service's placement leaves it a host per replica where it needs one.
absl::Status CheckPlacement(const Parser& p, const StackManifest& m, const ServiceSpec& s) {
  const std::string path = Child("services", s.name);
  std::vector<std::string> eligible = m.EligibleHosts(s);
  if (s.replicas > 0 && eligible.empty()) {
    return p.ErrorAt(s.pos, Child(path, "placement"),
                     "no host is eligible (check placement.hosts and placement.labels against "
                     "the hosts' labels)");
  }
  if (s.needs_distinct_hosts() && s.replicas > eligible.size()) {
    return p.ErrorAt(
        s.pos, Child(path, "replicas"),
        absl::StrCat(s.replicas, " replicas need ", s.replicas, " distinct hosts (",
                     s.placement.distinct_hosts ? "placement.distinct_hosts is set"
                                                : "a fixed host port allows one replica per host",
                     ") but only ", eligible.size(), " are eligible: ", absl::StrJoin(eligible, ", ")));
  }
  return absl::OkStatus();
}

bool IpsOverlap(const std::string& a, const std::string& b) {
  auto any = [](const std::string& ip) { return ip.empty() || ip == "0.0.0.0" || ip == "::"; };
  return any(a) || any(b) || a == b;
}

bool SameHostPort(const PortSpec& a, const PortSpec& b) {
  return b.host_port == a.host_port && b.protocol == a.protocol && IpsOverlap(a.host_ip, b.host_ip);
}

// Port i of service a (a fixed host port) against the ports after it in the
// same service.
absl::Status CheckPortWithinService(const Parser& p, const ServiceSpec& sa, size_t i) {
  const PortSpec& pa = sa.ports[i];
  for (size_t j = i + 1; j < sa.ports.size(); ++j) {
    const PortSpec& pb = sa.ports[j];
    if (SameHostPort(pa, pb)) {
      return p.ErrorAt(pb.pos, Index(Child(Child("services", sa.name), "ports"), j),
                       absl::StrCat("host port ", pb.host_port, "/", pb.protocol,
                                    " is published twice by this service"));
    }
  }
  return absl::OkStatus();
}

// Port i of service a (a fixed host port) against the services after a that
// may share a host with it.
absl::Status CheckPortAcrossServices(const Parser& p, const StackManifest& m, size_t a, size_t i) {
  const ServiceSpec& sa = m.services[a];
  const PortSpec& pa = sa.ports[i];
  std::vector<std::string> ea = m.EligibleHosts(sa);
  for (size_t b = a + 1; b < m.services.size(); ++b) {
    const ServiceSpec& sb = m.services[b];
    std::vector<std::string> eb = m.EligibleHosts(sb);
    std::string shared;
    for (const std::string& h : ea) {
      if (std::find(eb.begin(), eb.end(), h) != eb.end()) { shared = h; break; }
    }
    if (shared.empty()) continue;
    for (size_t j = 0; j < sb.ports.size(); ++j) {
      const PortSpec& pb = sb.ports[j];
      if (SameHostPort(pa, pb)) {
        return p.ErrorAt(pb.pos, Index(Child(Child("services", sb.name), "ports"), j),
                         absl::StrCat("host port ", pb.host_port, "/", pb.protocol, " on host ",
                                      shared, " is also published by services.", sa.name,
                                      " (line ", pa.pos.line,
                                      "); give them different host ports or placements that "
                                      "share no host"));
      }
    }
  }
  return absl::OkStatus();
}

// Fixed host ports: one service's replicas are on distinct hosts already; two
// services that may share a host must not publish the same port.
absl::Status CheckHostPorts(const Parser& p, const StackManifest& m) {
  for (size_t a = 0; a < m.services.size(); ++a) {
    for (size_t i = 0; i < m.services[a].ports.size(); ++i) {
      if (m.services[a].ports[i].host_port == 0) continue;
      HOIST_RETURN_IF_ERROR(CheckPortWithinService(p, m.services[a], i));
      HOIST_RETURN_IF_ERROR(CheckPortAcrossServices(p, m, a, i));
    }
  }
  return absl::OkStatus();
}

// Finds a cycle in `after` edges and returns it as "a -> b -> a"; empty if none.
std::string FindAfterCycle(const StackManifest& m) {
  std::map<std::string, int> state;  // 0 new, 1 on stack, 2 done
  std::vector<std::string> stack;
  std::string cycle;
  std::function<bool(const ServiceSpec&)> visit = [&](const ServiceSpec& s) -> bool {
    state[s.name] = 1;
    stack.push_back(s.name);
    for (const std::string& dep : s.after) {
      const ServiceSpec* d = m.FindService(dep);
      if (d == nullptr) continue;
      if (state[dep] == 1) {
        auto it = std::find(stack.begin(), stack.end(), dep);
        std::vector<std::string> names(it, stack.end());
        names.push_back(dep);
        cycle = absl::StrJoin(names, " -> ");
        return true;
      }
      if (state[dep] == 0 && visit(*d)) return true;
    }
    stack.pop_back();
    state[s.name] = 2;
    return false;
  };
  for (const ServiceSpec& s : m.services) {
    if (state[s.name] == 0 && visit(s)) return cycle;
  }
  return "";
}

absl::Status CheckAfterCycle(const Parser& p, const StackManifest& m) {
  if (std::string cycle = FindAfterCycle(m); !cycle.empty()) {
    const ServiceSpec* first = m.FindService(cycle.substr(0, cycle.find(' ')));
    return p.ErrorAt(first->after_pos, Child(Child("services", first->name), "after"),
                     absl::StrCat("order constraints form a cycle: ", cycle,
                                  "; remove one of these after: entries"));
  }
  return absl::OkStatus();
}

// Compatibility rules relate two different services versioned by releases.
absl::Status CheckRules(const Parser& p, const StackManifest& m) {
  for (size_t i = 0; i < m.rules.size(); ++i) {
    const CompatRule& r = m.rules[i];
    std::string rp = Index("rules", i);
    HOIST_RETURN_IF_ERROR(CheckServiceRef(p, m, r.service, r.pos, Child(rp, "service"), true));
    HOIST_RETURN_IF_ERROR(CheckServiceRef(
        p, m, r.other, r.pos,
        Child(rp, r.kind == CompatRule::Kind::kMustMatch ? "must_match" : "requires.service"), true));
    if (r.service == r.other) {
      return p.ErrorAt(r.pos, rp, "a rule must name two different services");
    }
  }
  return absl::OkStatus();
}

// The backup dumps a database service and copies volumes some service mounts.
absl::Status CheckBackup(const Parser& p, const StackManifest& m) {
  if (!m.backup.has_value()) return absl::OkStatus();
  const BackupSpec& b = *m.backup;
  if (b.postgres.has_value()) {
    HOIST_RETURN_IF_ERROR(CheckServiceRef(p, m, b.postgres->service, b.pos, "backup.postgres.service", false));
    if (m.FindService(b.postgres->service)->role != hoist::v1::ROLE_DATABASE) {
      return p.ErrorAt(b.pos, "backup.postgres.service",
                       absl::StrCat("service \"", b.postgres->service,
                                    "\" does not have role database"));
    }
  }
  for (size_t i = 0; i < b.volumes.size(); ++i) {
    bool mounted = false;
    for (const ServiceSpec& s : m.services) {
      for (const VolumeSpec& v : s.volumes) mounted = mounted || v.source == b.volumes[i];
    }
    if (!mounted) {
      return p.ErrorAt(b.pos, Index("backup.volumes", i),
                       absl::StrCat("volume \"", b.volumes[i], "\" is not mounted by any service"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CrossCheck(const Parser& p, const StackManifest& m) {
  for (const ServiceSpec& s : m.services) {
    HOIST_RETURN_IF_ERROR(CheckServiceReferences(p, m, s));
    HOIST_RETURN_IF_ERROR(CheckPlacement(p, m, s));
  }
  HOIST_RETURN_IF_ERROR(CheckHostPorts(p, m));
  HOIST_RETURN_IF_ERROR(CheckAfterCycle(p, m));
  HOIST_RETURN_IF_ERROR(CheckRules(p, m));
  HOIST_RETURN_IF_ERROR(CheckBackup(p, m));
  if (m.smoke_test.has_value()) {
    HOIST_RETURN_IF_ERROR(
        CheckServiceRef(p, m, m.smoke_test->service, m.smoke_test->job.pos, "smoke_test.service", false));
  }
  return absl::OkStatus();
}

}  // namespace hoist::rollout::internal

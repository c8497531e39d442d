// One entry of a manifest's services: its role and image, how its containers
// run, how it is upgraded, its role's own settings, and the keys a role
// refuses. The sections are read in this order, so a service with several
// mistakes always reports the same one first.

#include <algorithm>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/manifest_internal.h"

namespace hoist::rollout::internal {
namespace {

constexpr absl::string_view kServiceKeys[] = {
    "role",    "repository", "image",        "command",       "replicas",     "placement",
    "ports",   "env",        "env_files",    "volumes",       "health",       "stop_timeout",
    "rolling", "update_order", "migration",  "after",         "routes",       "drain_timeout",
    "timeout", "restart_policy", "expose"};

absl::StatusOr<hoist::v1::Role> ParseRole(const Parser& p, const Fields& f) {
  std::vector<std::string> role_names;
  for (const auto& [name, role] : RolesByName()) role_names.push_back(name);
  HOIST_ASSIGN_OR_RETURN(std::string role,
                         p.Required(f, "role", absl::StrCat("one of ", absl::StrJoin(role_names, ", "))));
  auto rit = RolesByName().find(role);
  if (rit == RolesByName().end()) {
    return p.Error(*f.Get("role"), f.Path("role"),
                   absl::StrCat("expected one of ", absl::StrJoin(role_names, ", "), "; got \"", role, "\""));
  }
  return rit->second;
}

// repository (versioned by releases) or image (pinned), exactly one.
absl::Status ParseImageSource(const Parser& p, const Fields& f, const YAML::Node& node, ServiceSpec& s) {
  const YAML::Node* repo = f.Get("repository");
  const YAML::Node* image = f.Get("image");
  if ((repo == nullptr) == (image == nullptr)) {
    return p.Error(node, f.path,
                   "expected exactly one of repository (versioned by releases: the release gives "
                   "the tag) or image (a pinned image such as postgres:15.4, not versioned by "
                   "releases)");
  }
  if (repo != nullptr) {
    HOIST_ASSIGN_OR_RETURN(s.repository, p.String(*repo, f.Path("repository"), "an image repository"));
    auto ref = ParseImageReference(s.repository);
    if (!ref.ok() || !ref->tag.empty() || !ref->digest.empty()) {
      return p.Error(*repo, f.Path("repository"),
                     absl::StrCat("expected a repository without tag or digest (the release gives "
                                  "the tag), like registry.example.com/app/api; got ",
                                  Quote(*repo), "; use image: for a pinned image not versioned by releases"));
    }
  } else {
    HOIST_ASSIGN_OR_RETURN(s.image, p.String(*image, f.Path("image"), "a pinned image reference"));
    auto ref = ParseImageReference(s.image);
    if (!ref.ok() || !ref->pinned()) {
      return p.Error(*image, f.Path("image"),
                     absl::StrCat("expected an image pinned to a tag or digest, like postgres:15.4; "
                                  "got ",
                                  Quote(*image),
                                  " (an image without a tag or with :latest changes under you)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PlacementSpec> ParsePlacement(const Parser& p, const YAML::Node& node, const std::string& path) {
  PlacementSpec placement;
  HOIST_ASSIGN_OR_RETURN(Fields pf, p.Map(node, path, {"hosts", "labels", "distinct_hosts"}));
  if (const YAML::Node* h = pf.Get("hosts")) {
    HOIST_ASSIGN_OR_RETURN(placement.hosts, p.StringList(*h, pf.Path("hosts"), "[host-a, host-b]"));
  }
  if (const YAML::Node* l = pf.Get("labels")) {
    HOIST_ASSIGN_OR_RETURN(placement.labels, p.StringMap(*l, pf.Path("labels"), "labels"));
  }
  if (const YAML::Node* d = pf.Get("distinct_hosts")) {
    HOIST_ASSIGN_OR_RETURN(placement.distinct_hosts, p.Bool(*d, pf.Path("distinct_hosts")));
  }
  return placement;
}

absl::StatusOr<std::vector<uint32_t>> ParseExpose(const Parser& p, const YAML::Node& node, const std::string& path) {
  if (!node.IsSequence()) {
    return p.Error(node, path, "expected a list of container ports, for example [5432]");
  }
  std::vector<uint32_t> expose;
  for (size_t i = 0; i < node.size(); ++i) {
    HOIST_ASSIGN_OR_RETURN(uint32_t port, p.Uint(node[i], Index(path, i), 1, 65535));
    if (std::find(expose.begin(), expose.end(), port) != expose.end()) {
      return p.Error(node[i], Index(path, i), absl::StrCat("port ", port, " is listed twice"));
    }
    expose.push_back(port);
  }
  return expose;
}

// How the service's containers run: command, replicas, placement, ports,
// env, volumes, health check and stop timeout.
absl::Status ParseRuntime(const Parser& p, const Fields& f, ServiceSpec& s) {
  const bool is_job = s.role == hoist::v1::ROLE_JOB;
  if (const YAML::Node* n = f.Get("command")) {
    HOIST_ASSIGN_OR_RETURN(s.command, p.Command(*n, f.Path("command")));
  }
  if (const YAML::Node* n = f.Get("replicas")) {
    HOIST_ASSIGN_OR_RETURN(s.replicas, p.Uint(*n, f.Path("replicas"), is_job ? 1 : 0, is_job ? 1 : 1000));
  }
  if (const YAML::Node* n = f.Get("placement")) {
    HOIST_ASSIGN_OR_RETURN(s.placement, ParsePlacement(p, *n, f.Path("placement")));
  }
  if (const YAML::Node* n = f.Get("ports")) {
    HOIST_ASSIGN_OR_RETURN(s.ports, p.List<PortSpec>(*n, f.Path("ports"), "[\"127.0.0.1:8080:80\"]",
                                                     [&](const YAML::Node& item, const std::string& path) {
                                                       return ParsePort(p, item, path);
                                                     }));
  }
  if (const YAML::Node* n = f.Get("expose")) {
    HOIST_ASSIGN_OR_RETURN(s.expose, ParseExpose(p, *n, f.Path("expose")));
  }
  if (const YAML::Node* n = f.Get("env")) {
    HOIST_ASSIGN_OR_RETURN(s.env, p.EnvMap(*n, f.Path("env")));
  }
  if (const YAML::Node* n = f.Get("env_files")) {
    HOIST_ASSIGN_OR_RETURN(s.env_files, p.HostPaths(*n, f.Path("env_files"), "[/etc/app/api.env]"));
  }
  if (const YAML::Node* n = f.Get("volumes")) {
    HOIST_ASSIGN_OR_RETURN(s.volumes, p.List<VolumeSpec>(*n, f.Path("volumes"), "[\"data:/var/lib/data\"]",
                                                         [&](const YAML::Node& item, const std::string& path) {
                                                           return ParseVolume(p, item, path);
                                                         }));
  }
  if (const YAML::Node* n = f.Get("health")) {
    HOIST_ASSIGN_OR_RETURN(s.health, ParseHealth(p, *n, f.Path("health")));
  }
  if (const YAML::Node* n = f.Get("stop_timeout")) {
    HOIST_ASSIGN_OR_RETURN(s.stop_timeout, p.Duration(*n, f.Path("stop_timeout"), true));
  }
  return absl::OkStatus();
}

// `replicas` bounds min_healthy, so it is read first.
absl::StatusOr<RollingPolicy> ParseRolling(const Parser& p, const YAML::Node& node, const std::string& path,
                                           uint32_t replicas) {
  RollingPolicy rolling;
  HOIST_ASSIGN_OR_RETURN(Fields rf, p.Map(node, path, {"max_parallel", "min_healthy", "pause"}));
  if (const YAML::Node* m = rf.Get("max_parallel")) {
    HOIST_ASSIGN_OR_RETURN(rolling.max_parallel, p.Uint(*m, rf.Path("max_parallel"), 1, 1000));
  }
  if (const YAML::Node* m = rf.Get("min_healthy")) {
    HOIST_ASSIGN_OR_RETURN(uint32_t mh, p.Uint(*m, rf.Path("min_healthy"), 0, 1000));
    if (mh > replicas) {
      return p.Error(*m, rf.Path("min_healthy"),
                     absl::StrCat("expected at most replicas (", replicas, "); got ", mh));
    }
    rolling.min_healthy = mh;
  }
  if (const YAML::Node* m = rf.Get("pause")) {
    HOIST_ASSIGN_OR_RETURN(rolling.pause, p.Duration(*m, rf.Path("pause"), true));
  }
  return rolling;
}

absl::StatusOr<UpdateOrder> ParseUpdateOrder(const Parser& p, const YAML::Node& node, const std::string& path) {
  HOIST_ASSIGN_OR_RETURN(std::string order, p.String(node, path, "start-first or stop-first"));
  if (order == "start-first") return UpdateOrder::kStartFirst;
  if (order == "stop-first") return UpdateOrder::kStopFirst;
  return p.Error(node, path, absl::StrCat("expected start-first or stop-first; got ", Quote(node)));
}

// How the service is upgraded: rolling policy, update order, migration and
// the services it comes after.
absl::Status ParseUpgrade(const Parser& p, const Fields& f, const YAML::Node& node, ServiceSpec& s) {
  if (const YAML::Node* n = f.Get("rolling")) {
    HOIST_ASSIGN_OR_RETURN(s.rolling, ParseRolling(p, *n, f.Path("rolling"), s.replicas));
  }
  if (const YAML::Node* n = f.Get("update_order")) {
    HOIST_ASSIGN_OR_RETURN(s.update_order, ParseUpdateOrder(p, *n, f.Path("update_order")));
  }
  if (s.update_order == UpdateOrder::kStopFirst && s.rolling.min_healthy.has_value() &&
      s.replicas > 0 && *s.rolling.min_healthy >= s.replicas) {
    return p.Error(node, Child(f.Path("rolling"), "min_healthy"),
                   absl::StrCat("min_healthy ", *s.rolling.min_healthy, " with ", s.replicas,
                                " replicas leaves no instance to replace stop-first; lower "
                                "min_healthy or use update_order: start-first"));
  }
  if (const YAML::Node* n = f.Get("migration")) {
    HOIST_ASSIGN_OR_RETURN(s.migration, ParseJob(p, *n, f.Path("migration"), {"command", "timeout"}));
  }
  if (const YAML::Node* n = f.Get("after")) {
    HOIST_ASSIGN_OR_RETURN(s.after, p.StringList(*n, f.Path("after"), "[api]"));
    s.after_pos = PosOf(*n);
  }
  return absl::OkStatus();
}

// Route `i` of a proxy: without listen, it listens on the proxy's i-th
// published port. `earlier` are the routes before it.
absl::StatusOr<RouteSpec> ParseRoute(const Parser& p, const YAML::Node& node, const std::string& path, size_t i,
                                     const std::vector<PortSpec>& ports, const std::vector<RouteSpec>& earlier) {
  HOIST_ASSIGN_OR_RETURN(Fields rf, p.Map(node, path, {"name", "service", "port", "listen"}));
  RouteSpec r;
  r.pos = PosOf(node);
  HOIST_ASSIGN_OR_RETURN(r.name, p.Required(rf, "name", "a route name"));
  HOIST_ASSIGN_OR_RETURN(r.service, p.Required(rf, "service", "a service name"));
  const YAML::Node* port = rf.Get("port");
  if (port == nullptr) return p.Error(node, rf.Path("port"), "required; expected the service's container port");
  HOIST_ASSIGN_OR_RETURN(r.port, p.Uint(*port, rf.Path("port"), 1, 65535));
  if (const YAML::Node* listen = rf.Get("listen")) {
    HOIST_ASSIGN_OR_RETURN(r.listen, p.Uint(*listen, rf.Path("listen"), 1, 65535));
  } else if (i < ports.size()) {
    r.listen = ports[i].container_port;  // the i-th route listens on the i-th published port
  } else {
    return p.Error(node, rf.Path("listen"),
                   absl::StrCat("required: the proxy's container port this route listens on (the proxy "
                                "publishes no port number ", i + 1, " to default to)"));
  }
  for (const RouteSpec& other : earlier) {
    if (other.listen == r.listen) {
      return p.Error(node, rf.Path("listen"),
                     absl::StrCat("port ", r.listen, " is already the listen port of route \"", other.name, "\""));
    }
  }
  return r;
}

absl::StatusOr<std::vector<RouteSpec>> ParseRoutes(const Parser& p, const YAML::Node& node, const std::string& path,
                                                   const std::vector<PortSpec>& ports) {
  if (!node.IsSequence()) {
    return p.Error(node, path, absl::StrCat("expected a list of {name, service, port}; got ", Quote(node)));
  }
  std::vector<RouteSpec> routes;
  std::set<std::string> names;
  for (size_t i = 0; i < node.size(); ++i) {
    std::string rp = Index(path, i);
    HOIST_ASSIGN_OR_RETURN(RouteSpec r, ParseRoute(p, node[i], rp, i, ports, routes));
    if (!names.insert(r.name).second) {
      return p.Error(node[i], Child(rp, "name"), absl::StrCat("duplicate route \"", r.name, "\""));
    }
    routes.push_back(std::move(r));
  }
  return routes;
}

// Settings only some roles have (a proxy's routes and drain timeout, a job's
// timeout), and the restart policy.
absl::Status ParseRoleSettings(const Parser& p, const Fields& f, ServiceSpec& s) {
  const bool is_job = s.role == hoist::v1::ROLE_JOB;
  const bool is_proxy = s.role == hoist::v1::ROLE_PROXY;
  if (const YAML::Node* n = f.Get("routes")) {
    if (!is_proxy) {
      return p.Error(*n, f.Path("routes"),
                     absl::StrCat("only a service with role proxy has routes; this one is ", RoleName(s.role)));
    }
    HOIST_ASSIGN_OR_RETURN(s.routes, ParseRoutes(p, *n, f.Path("routes"), s.ports));
  }
  if (const YAML::Node* n = f.Get("drain_timeout")) {
    if (!is_proxy) return p.Error(*n, f.Path("drain_timeout"), "only a service with role proxy has drain_timeout");
    HOIST_ASSIGN_OR_RETURN(s.drain_timeout, p.Duration(*n, f.Path("drain_timeout"), true));
  }
  if (const YAML::Node* n = f.Get("timeout")) {
    if (!is_job) return p.Error(*n, f.Path("timeout"), "only a service with role job has timeout; other services use health.deadline");
    HOIST_ASSIGN_OR_RETURN(s.job_timeout, p.Duration(*n, f.Path("timeout")));
  }
  if (const YAML::Node* n = f.Get("restart_policy")) {
    HOIST_ASSIGN_OR_RETURN(s.restart_policy, p.String(*n, f.Path("restart_policy")));
    static const std::set<std::string> kPolicies = {"no", "always", "unless-stopped", "on-failure"};
    if (!kPolicies.contains(s.restart_policy)) {
      return p.Error(*n, f.Path("restart_policy"),
                     absl::StrCat("expected one of no, always, unless-stopped, on-failure; got ", Quote(*n)));
    }
  }
  return absl::OkStatus();
}

// Keys that mean nothing for a role are refused rather than silently ignored.
absl::Status CheckKeysForRole(const Parser& p, const Fields& f, const ServiceSpec& s) {
  if (s.role == hoist::v1::ROLE_JOB) {
    for (const char* k : {"ports", "expose", "health", "rolling", "update_order", "migration"}) {
      if (const YAML::Node* n = f.Get(k)) {
        return p.Error(*n, f.Path(k), absl::StrCat("a job runs once per rollout and has no ", k));
      }
    }
  }
  if (s.role == hoist::v1::ROLE_DATABASE) {
    for (const char* k : {"migration", "rolling"}) {
      if (const YAML::Node* n = f.Get(k)) {
        return p.Error(*n, f.Path(k),
                       absl::StrCat("a database is never replaced by a rolling upgrade (only backed "
                                    "up), so it has no ",
                                    k));
      }
    }
  }
  if (s.migration.has_value() && !s.versioned()) {
    return p.Error(*f.Get("migration"), f.Path("migration"),
                   "a migration runs from the new release's image; this service has a pinned image "
                   "and no releases");
  }
  return absl::OkStatus();
}

}  // namespace

const std::map<std::string, hoist::v1::Role>& RolesByName() {
  static const auto* roles = new std::map<std::string, hoist::v1::Role>{
      {"api", hoist::v1::ROLE_API},       {"worker", hoist::v1::ROLE_WORKER},
      {"scheduler", hoist::v1::ROLE_SCHEDULER}, {"web", hoist::v1::ROLE_WEB},
      {"proxy", hoist::v1::ROLE_PROXY},   {"database", hoist::v1::ROLE_DATABASE},
      {"job", hoist::v1::ROLE_JOB}};
  return *roles;
}

absl::StatusOr<ServiceSpec> ParseService(const Parser& p, const YAML::Node& key, const YAML::Node& node) {
  ServiceSpec s;
  s.name = key.Scalar();
  const std::string path = Child("services", s.name);
  s.pos = PosOf(key);
  if (!IsDnsLabel(s.name)) {
    return p.Error(key, path,
                   "expected a service name of lower-case letters, digits and '-' (at most 63, "
                   "not starting or ending with '-')");
  }
  HOIST_ASSIGN_OR_RETURN(
      Fields f, p.MapOf(node, path, std::vector<absl::string_view>(std::begin(kServiceKeys), std::end(kServiceKeys))));
  HOIST_ASSIGN_OR_RETURN(s.role, ParseRole(p, f));
  HOIST_RETURN_IF_ERROR(ParseImageSource(p, f, node, s));
  HOIST_RETURN_IF_ERROR(ParseRuntime(p, f, s));
  HOIST_RETURN_IF_ERROR(ParseUpgrade(p, f, node, s));
  HOIST_RETURN_IF_ERROR(ParseRoleSettings(p, f, s));
  HOIST_RETURN_IF_ERROR(CheckKeysForRole(p, f, s));
  return s;
}

}  // namespace hoist::rollout::internal

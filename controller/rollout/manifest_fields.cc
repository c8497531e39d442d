// The sections of a stack manifest besides services: hosts, ports, volumes,
// health checks, jobs (migrations, smoke tests), compatibility rules and the
// backup. Each reader checks its own section only; manifest_checks.cc checks
// references between sections.

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "controller/rollout/manifest_internal.h"

namespace hoist::rollout::internal {
namespace {

bool IsHostId(absl::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return absl::ascii_isalnum(static_cast<unsigned char>(s.front()));
}

// "8080", "9000:8080", "127.0.0.1:9000:8080", each with an optional "/udp".
absl::StatusOr<PortSpec> ParsePortString(const Parser& p, const YAML::Node& node,
                                         const std::string& path) {
  std::string s = node.Scalar();
  PortSpec port;
  port.pos = PosOf(node);
  auto bad = [&]() {
    return p.Error(node, path,
                   absl::StrCat("expected a port like \"8080\", \"9000:8080\" or "
                                "\"127.0.0.1:9000:8080\" (host ip:host port:container port, "
                                "optionally /udp); got ",
                                Quote(node)));
  };
  if (size_t slash = s.find('/'); slash != std::string::npos) {
    port.protocol = s.substr(slash + 1);
    s = s.substr(0, slash);
    if (port.protocol != "tcp" && port.protocol != "udp") return bad();
  }
  std::vector<std::string> parts = absl::StrSplit(s, ':');
  auto num = [](const std::string& t, uint32_t& out) {
    return !t.empty() && t.find_first_not_of("0123456789") == std::string::npos &&
           absl::SimpleAtoi(t, &out) && out >= 1 && out <= 65535;
  };
  if (parts.size() == 1) {
    if (!num(parts[0], port.container_port)) return bad();
  } else if (parts.size() == 2) {
    if (!num(parts[0], port.host_port) || !num(parts[1], port.container_port)) return bad();
  } else if (parts.size() == 3) {
    port.host_ip = parts[0];
    if (port.host_ip.empty() || !num(parts[1], port.host_port) ||
        !num(parts[2], port.container_port)) {
      return bad();
    }
  } else {
    return bad();
  }
  return port;
}

}  // namespace

absl::StatusOr<std::vector<HostSpec>> ParseHosts(const Parser& p, const YAML::Node& node) {
  const std::string path = "hosts";
  if (!node.IsSequence() || node.size() == 0) {
    return p.Error(node, path,
                   absl::StrCat("expected a non-empty list of hosts (agent ids, or mappings with "
                                "id, address, labels); got ",
                                Quote(node)));
  }
  std::vector<HostSpec> hosts;
  std::map<std::string, int> seen;
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node& h = node[i];
    std::string hp = Index(path, i);
    HostSpec host;
    host.pos = PosOf(h);
    YAML::Node id_node = h;
    if (h.IsScalar()) {
      host.id = h.Scalar();
    } else {
      HOIST_ASSIGN_OR_RETURN(Fields f, p.Map(h, hp, {"id", "address", "labels"}));
      HOIST_ASSIGN_OR_RETURN(host.id, p.Required(f, "id", "an agent id"));
      id_node = *f.Get("id");
      if (const YAML::Node* a = f.Get("address")) {
        HOIST_ASSIGN_OR_RETURN(host.address, p.String(*a, f.Path("address"), "a host name or IP"));
      }
      if (const YAML::Node* l = f.Get("labels")) {
        HOIST_ASSIGN_OR_RETURN(host.labels, p.StringMap(*l, f.Path("labels"), "labels"));
      }
    }
    if (!IsHostId(host.id)) {
      return p.Error(id_node, hp,
                     absl::StrCat("expected an agent id (letters, digits, '.', '-', '_'); got ",
                                  Quote(id_node)));
    }
    if (auto it = seen.find(host.id); it != seen.end()) {
      return p.Error(id_node, hp,
                     absl::StrCat("duplicate host \"", host.id, "\" (first on line ", it->second, ")"));
    }
    seen[host.id] = host.pos.line;
    hosts.push_back(std::move(host));
  }
  return hosts;
}

absl::StatusOr<PortSpec> ParsePort(const Parser& p, const YAML::Node& node,
                                   const std::string& path) {
  if (node.IsScalar()) return ParsePortString(p, node, path);
  HOIST_ASSIGN_OR_RETURN(Fields f, p.Map(node, path, {"container", "host", "host_ip", "protocol"}));
  PortSpec port;
  port.pos = PosOf(node);
  const YAML::Node* c = f.Get("container");
  if (c == nullptr) return p.Error(node, f.Path("container"), "required; expected a port 1 to 65535");
  HOIST_ASSIGN_OR_RETURN(port.container_port, p.Uint(*c, f.Path("container"), 1, 65535));
  if (const YAML::Node* h = f.Get("host")) {
    HOIST_ASSIGN_OR_RETURN(port.host_port, p.Uint(*h, f.Path("host"), 0, 65535));
  }
  if (const YAML::Node* ip = f.Get("host_ip")) {
    HOIST_ASSIGN_OR_RETURN(port.host_ip, p.String(*ip, f.Path("host_ip"), "an IP address"));
  }
  if (const YAML::Node* pr = f.Get("protocol")) {
    HOIST_ASSIGN_OR_RETURN(port.protocol, p.String(*pr, f.Path("protocol"), "tcp or udp"));
    if (port.protocol != "tcp" && port.protocol != "udp") {
      return p.Error(*pr, f.Path("protocol"), absl::StrCat("expected tcp or udp; got ", Quote(*pr)));
    }
  }
  return port;
}

absl::StatusOr<VolumeSpec> ParseVolume(const Parser& p, const YAML::Node& node,
                                       const std::string& path) {
  VolumeSpec v;
  YAML::Node at = node;
  if (node.IsScalar()) {
    std::vector<std::string> parts = absl::StrSplit(node.Scalar(), ':');
    if (parts.size() < 2 || parts.size() > 3 || (parts.size() == 3 && parts[2] != "ro" && parts[2] != "rw")) {
      return p.Error(node, path,
                     absl::StrCat("expected \"source:/path/in/container\" with an optional "
                                  "\":ro\"; got ",
                                  Quote(node)));
    }
    v.source = parts[0];
    v.target = parts[1];
    v.read_only = parts.size() == 3 && parts[2] == "ro";
  } else {
    HOIST_ASSIGN_OR_RETURN(Fields f, p.Map(node, path, {"source", "target", "read_only"}));
    HOIST_ASSIGN_OR_RETURN(v.source, p.Required(f, "source", "a volume name or absolute host path"));
    HOIST_ASSIGN_OR_RETURN(v.target, p.Required(f, "target", "an absolute path in the container"));
    if (const YAML::Node* ro = f.Get("read_only")) {
      HOIST_ASSIGN_OR_RETURN(v.read_only, p.Bool(*ro, f.Path("read_only")));
    }
    if (const YAML::Node* t = f.Get("target")) at = *t;
  }
  if (v.source.empty()) return p.Error(node, path, "expected a volume name or absolute host path as source");
  if (v.target.empty() || v.target.front() != '/') {
    return p.Error(at, path,
                   absl::StrCat("expected an absolute path inside the container as target; got \"",
                                v.target, "\""));
  }
  return v;
}

absl::StatusOr<HealthSpec> ParseHealth(const Parser& p, const YAML::Node& node,
                                       const std::string& path) {
  HOIST_ASSIGN_OR_RETURN(
      Fields f, p.Map(node, path, {"http", "tcp", "docker", "command", "interval", "timeout", "deadline"}));
  HealthSpec h;
  int kinds = 0;
  for (const char* k : {"http", "tcp", "docker", "command"}) kinds += f.Has(k) ? 1 : 0;
  if (kinds != 1) {
    return p.Error(node, path,
                   absl::StrCat("expected exactly one of http, tcp, docker or command; got ", kinds));
  }
  if (const YAML::Node* n = f.Get("http")) {
    h.kind = HealthSpec::Kind::kHttp;
    HOIST_ASSIGN_OR_RETURN(Fields hf, p.Map(*n, f.Path("http"), {"path", "port", "check_version"}));
    HOIST_ASSIGN_OR_RETURN(h.http_path, p.Required(hf, "path", "a path starting with \"/\""));
    if (h.http_path.front() != '/') {
      return p.Error(*hf.Get("path"), hf.Path("path"),
                     absl::StrCat("expected a path starting with \"/\"; got \"", h.http_path, "\""));
    }
    const YAML::Node* port = hf.Get("port");
    if (port == nullptr) return p.Error(*n, hf.Path("port"), "required; expected the container port to probe");
    HOIST_ASSIGN_OR_RETURN(h.port, p.Uint(*port, hf.Path("port"), 1, 65535));
    if (const YAML::Node* cv = hf.Get("check_version")) {
      HOIST_ASSIGN_OR_RETURN(h.check_version, p.Bool(*cv, hf.Path("check_version")));
    }
  } else if (const YAML::Node* n = f.Get("tcp")) {
    h.kind = HealthSpec::Kind::kTcp;
    HOIST_ASSIGN_OR_RETURN(Fields tf, p.Map(*n, f.Path("tcp"), {"port"}));
    const YAML::Node* port = tf.Get("port");
    if (port == nullptr) return p.Error(*n, tf.Path("port"), "required; expected the container port to connect to");
    HOIST_ASSIGN_OR_RETURN(h.port, p.Uint(*port, tf.Path("port"), 1, 65535));
  } else if (const YAML::Node* n = f.Get("docker")) {
    h.kind = HealthSpec::Kind::kDocker;
    if (n->IsSequence()) {
      HOIST_ASSIGN_OR_RETURN(h.command, p.Command(*n, f.Path("docker")));
    } else {
      HOIST_ASSIGN_OR_RETURN(bool on, p.Bool(*n, f.Path("docker")));
      if (!on) {
        return p.Error(*n, f.Path("docker"),
                       "expected true (use the image's HEALTHCHECK) or a command list to configure");
      }
    }
  } else if (const YAML::Node* n = f.Get("command")) {
    h.kind = HealthSpec::Kind::kCommand;
    HOIST_ASSIGN_OR_RETURN(h.command, p.Command(*n, f.Path("command")));
  }
  if (const YAML::Node* n = f.Get("interval")) {
    HOIST_ASSIGN_OR_RETURN(h.interval, p.Duration(*n, f.Path("interval")));
  }
  if (const YAML::Node* n = f.Get("timeout")) {
    HOIST_ASSIGN_OR_RETURN(h.timeout, p.Duration(*n, f.Path("timeout")));
  }
  if (const YAML::Node* n = f.Get("deadline")) {
    HOIST_ASSIGN_OR_RETURN(h.deadline, p.Duration(*n, f.Path("deadline")));
  }
  if (h.timeout > h.deadline || h.interval > h.deadline) {
    return p.Error(node, path,
                   absl::StrCat("interval (", absl::FormatDuration(h.interval), ") and timeout (",
                                absl::FormatDuration(h.timeout),
                                ") must not exceed the deadline (",
                                absl::FormatDuration(h.deadline), ")"));
  }
  return h;
}

absl::StatusOr<JobSpec> ParseJob(const Parser& p, const YAML::Node& node, const std::string& path,
                                 std::initializer_list<absl::string_view> allowed) {
  HOIST_ASSIGN_OR_RETURN(Fields f, p.Map(node, path, allowed));
  JobSpec job;
  job.pos = PosOf(node);
  const YAML::Node* c = f.Get("command");
  if (c == nullptr) return p.Error(node, f.Path("command"), "required; expected the command to run, as a list");
  HOIST_ASSIGN_OR_RETURN(job.command, p.Command(*c, f.Path("command")));
  if (const YAML::Node* t = f.Get("timeout")) {
    HOIST_ASSIGN_OR_RETURN(job.timeout, p.Duration(*t, f.Path("timeout")));
  }
  return job;
}

absl::StatusOr<CompatRule> ParseRule(const Parser& p, const YAML::Node& node, const std::string& path) {
  HOIST_ASSIGN_OR_RETURN(Fields f, p.Map(node, path, {"service", "must_match", "requires", "when"}));
  CompatRule r;
  r.pos = PosOf(node);
  HOIST_ASSIGN_OR_RETURN(r.service, p.Required(f, "service", "a service name"));
  const YAML::Node* mm = f.Get("must_match");
  const YAML::Node* rq = f.Get("requires");
  if ((mm == nullptr) == (rq == nullptr)) {
    return p.Error(node, path,
                   "expected exactly one of must_match: <service> or requires: {service, range}");
  }
  if (mm != nullptr) {
    r.kind = CompatRule::Kind::kMustMatch;
    HOIST_ASSIGN_OR_RETURN(r.other, p.String(*mm, f.Path("must_match"), "a service name"));
    if (const YAML::Node* w = f.Get("when")) {
      return p.Error(*w, f.Path("when"), "when applies to requires rules only");
    }
  } else {
    r.kind = CompatRule::Kind::kRequires;
    HOIST_ASSIGN_OR_RETURN(Fields rf, p.Map(*rq, f.Path("requires"), {"service", "range"}));
    HOIST_ASSIGN_OR_RETURN(r.other, p.Required(rf, "service", "a service name"));
    const YAML::Node* range = rf.Get("range");
    if (range == nullptr) return p.Error(*rq, rf.Path("range"), "required; expected a version range like \">=1.4 <2\"");
    HOIST_ASSIGN_OR_RETURN(r.range, p.Range(*range, rf.Path("range")));
    if (const YAML::Node* w = f.Get("when")) {
      HOIST_ASSIGN_OR_RETURN(r.when, p.Range(*w, f.Path("when")));
    }
  }
  return r;
}

absl::StatusOr<BackupSpec> ParseBackup(const Parser& p, const YAML::Node& node) {
  HOIST_ASSIGN_OR_RETURN(Fields bf, p.Map(node, "backup", {"postgres", "volumes", "config_files", "timeout", "keep"}));
  BackupSpec b;
  b.pos = PosOf(node);
  if (const YAML::Node* pg = bf.Get("postgres")) {
    HOIST_ASSIGN_OR_RETURN(Fields pf, p.Map(*pg, "backup.postgres", {"service", "database", "user"}));
    BackupSpec::Postgres pgs;
    HOIST_ASSIGN_OR_RETURN(pgs.service, p.Required(pf, "service", "the database service"));
    HOIST_ASSIGN_OR_RETURN(pgs.database, p.Required(pf, "database", "a database name"));
    HOIST_ASSIGN_OR_RETURN(pgs.user, p.Required(pf, "user", "a role to connect as"));
    b.postgres = pgs;
  }
  if (const YAML::Node* v = bf.Get("volumes")) {
    HOIST_ASSIGN_OR_RETURN(b.volumes, p.StringList(*v, "backup.volumes", "[uploads]"));
  }
  if (const YAML::Node* c = bf.Get("config_files")) {
    HOIST_ASSIGN_OR_RETURN(b.config_files, p.HostPaths(*c, "backup.config_files", "[/etc/app/.env]"));
  }
  if (const YAML::Node* t = bf.Get("timeout")) {
    HOIST_ASSIGN_OR_RETURN(b.timeout, p.Duration(*t, "backup.timeout"));
  }
  if (const YAML::Node* k = bf.Get("keep")) {
    HOIST_ASSIGN_OR_RETURN(b.keep, p.Uint(*k, "backup.keep", 1, 1000));
  }
  if (!b.postgres.has_value() && b.volumes.empty() && b.config_files.empty()) {
    return p.Error(node, "backup", "expected at least one of postgres, volumes or config_files");
  }
  return b;
}

absl::StatusOr<SmokeTestSpec> ParseSmokeTest(const Parser& p, const YAML::Node& node) {
  HOIST_ASSIGN_OR_RETURN(Fields sf, p.Map(node, "smoke_test", {"service", "command", "timeout"}));
  SmokeTestSpec st;
  HOIST_ASSIGN_OR_RETURN(st.service, p.Required(sf, "service", "the service whose new image runs the test"));
  HOIST_ASSIGN_OR_RETURN(st.job, ParseJob(p, node, "smoke_test", {"service", "command", "timeout"}));
  return st;
}

}  // namespace hoist::rollout::internal

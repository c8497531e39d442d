#include "controller/rollout/manifest.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "shared/status_macros.h"
#include "shared/yaml_text.h"
#include "yaml-cpp/yaml.h"

namespace hoist::rollout {
namespace {

SourcePos PosOf(const YAML::Node& node) {
  YAML::Mark m = node.Mark();
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

std::string Child(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string Index(absl::string_view path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

// Quotes a scalar for an error message, shortening long ones.
std::string Quote(const YAML::Node& node) {
  if (!node.IsScalar()) return node.IsSequence() ? "a list" : node.IsMap() ? "a mapping" : "nothing";
  std::string s = node.Scalar();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return absl::StrCat("\"", s, "\"");
}

bool IsDnsLabel(absl::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!absl::ascii_islower(static_cast<unsigned char>(c)) &&
        !absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '-') {
      return false;
    }
  }
  return s.front() != '-' && s.back() != '-';
}

bool IsHostId(absl::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return absl::ascii_isalnum(static_cast<unsigned char>(s.front()));
}

bool IsEnvName(absl::string_view s) {
  if (s.empty() || absl::ascii_isdigit(static_cast<unsigned char>(s.front()))) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// One mapping of the document after its keys were checked against the allowed
// ones: lookups by key, with the path used in errors.
struct Fields {
  YAML::Node self;
  std::string path;
  std::map<std::string, YAML::Node> values;

  const YAML::Node* Get(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? nullptr : &it->second;
  }
  bool Has(const std::string& key) const { return values.contains(key); }
  std::string Path(absl::string_view key) const { return Child(path, key); }
};

// Parser carries the file name into every error and holds the scalar and
// collection readers shared by manifests and release files.
class Parser {
 public:
  explicit Parser(absl::string_view file) : file_(file) {}

  absl::Status ErrorAt(SourcePos pos, absl::string_view path, absl::string_view message) const {
    std::string where = file_;
    if (pos.line > 0) absl::StrAppend(&where, ":", pos.line, ":", pos.column);
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", path.empty() ? "" : absl::StrCat(path, ": "), message));
  }
  absl::Status Error(const YAML::Node& at, absl::string_view path, absl::string_view message) const {
    return ErrorAt(PosOf(at), path, message);
  }

  // `what` names the kind of file in the errors ("stack manifest").
  absl::StatusOr<YAML::Node> Load(absl::string_view text, absl::string_view what) const {
    return LoadYamlDocument(file_, text, what);
  }


  // Checks that `node` is a mapping whose keys are plain, unique and allowed.
  absl::StatusOr<Fields> Map(const YAML::Node& node, const std::string& path,
                             std::initializer_list<absl::string_view> allowed) const {
    return MapOf(node, path, std::vector<absl::string_view>(allowed));
  }
  absl::StatusOr<Fields> MapOf(const YAML::Node& node, const std::string& path,
                               const std::vector<absl::string_view>& allowed) const {
    if (!node.IsMap()) {
      return Error(node, path,
                   absl::StrCat("expected a mapping with keys ", absl::StrJoin(allowed, ", "),
                                "; got ", Quote(node)));
    }
    Fields f{node, path, {}};
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) return Error(kv.first, path, "keys must be plain names");
      std::string key = kv.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return Error(kv.first, Child(path, key),
                     absl::StrCat("unknown key; allowed keys here: ", absl::StrJoin(allowed, ", ")));
      }
      if (f.values.contains(key)) {
        return Error(kv.first, Child(path, key),
                     absl::StrCat("set twice (first on line ", PosOf(f.values[key]).line, ")"));
      }
      f.values[key] = kv.second;
    }
    return f;
  }

  // A mapping whose keys are names chosen by the user (services, env vars).
  absl::StatusOr<std::vector<std::pair<YAML::Node, YAML::Node>>> NamedEntries(
      const YAML::Node& node, const std::string& path, absl::string_view what) const {
    if (!node.IsMap()) {
      return Error(node, path, absl::StrCat("expected a mapping of ", what, "; got ", Quote(node)));
    }
    std::vector<std::pair<YAML::Node, YAML::Node>> out;
    std::map<std::string, int> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar() || kv.first.Scalar().empty()) {
        return Error(kv.first, path, absl::StrCat("expected ", what, " names as keys"));
      }
      const std::string& key = kv.first.Scalar();
      if (auto it = seen.find(key); it != seen.end()) {
        return Error(kv.first, Child(path, key),
                     absl::StrCat("duplicate name (first on line ", it->second, ")"));
      }
      seen[key] = PosOf(kv.first).line;
      out.emplace_back(kv.first, kv.second);
    }
    return out;
  }

  absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& path,
                                     absl::string_view expected = "a string") const {
    if (!node.IsScalar() || node.Scalar().empty()) {
      return Error(node, path, absl::StrCat("expected ", expected, "; got ", Quote(node)));
    }
    return node.Scalar();
  }

  absl::StatusOr<std::string> Required(const Fields& f, const std::string& key,
                                       absl::string_view expected = "a string") const {
    const YAML::Node* n = f.Get(key);
    if (n == nullptr) {
      return Error(f.self, f.Path(key), absl::StrCat("required; expected ", expected));
    }
    return String(*n, f.Path(key), expected);
  }

  absl::StatusOr<uint32_t> Uint(const YAML::Node& node, const std::string& path, uint32_t min,
                                uint32_t max) const {
    uint32_t v = 0;
    std::string expected = absl::StrCat("a whole number from ", min, " to ", max);
    if (!node.IsScalar() || node.Scalar().find_first_not_of("0123456789") != std::string::npos ||
        !absl::SimpleAtoi(node.Scalar(), &v) || v < min || v > max) {
      return Error(node, path, absl::StrCat("expected ", expected, "; got ", Quote(node)));
    }
    return v;
  }

  absl::StatusOr<absl::Duration> Duration(const YAML::Node& node, const std::string& path,
                                          bool allow_zero = false) const {
    absl::Duration d;
    if (!node.IsScalar() || !absl::ParseDuration(node.Scalar(), &d) ||
        d == absl::InfiniteDuration() || d < absl::ZeroDuration() ||
        (!allow_zero && d == absl::ZeroDuration()) ||
        node.Scalar().find_first_of("hmsun") == std::string::npos) {
      return Error(node, path,
                   absl::StrCat("expected a duration like \"5s\", \"500ms\" or \"2m\"",
                                allow_zero ? "" : " (above zero)", ", got ", Quote(node)));
    }
    return d;
  }

  absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& path) const {
    if (node.IsScalar()) {
      std::string s = absl::AsciiStrToLower(node.Scalar());
      if (s == "true") return true;
      if (s == "false") return false;
    }
    return Error(node, path, absl::StrCat("expected true or false; got ", Quote(node)));
  }

  absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& node,
                                                      const std::string& path,
                                                      absl::string_view example) const {
    if (!node.IsSequence()) {
      return Error(node, path, absl::StrCat("expected a list like ", example, "; got ", Quote(node)));
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < node.size(); ++i) {
      HOIST_ASSIGN_OR_RETURN(std::string s, String(node[i], Index(path, i)));
      out.push_back(std::move(s));
    }
    return out;
  }

  // A list whose items `item` parses, each with its own path ("ports[2]").
  template <typename T, typename ItemFn>
  absl::StatusOr<std::vector<T>> List(const YAML::Node& node, const std::string& path,
                                      absl::string_view example, ItemFn item) const {
    if (!node.IsSequence()) {
      return Error(node, path, absl::StrCat("expected a list like ", example, "; got ", Quote(node)));
    }
    std::vector<T> out;
    for (size_t i = 0; i < node.size(); ++i) {
      HOIST_ASSIGN_OR_RETURN(T value, item(node[i], Index(path, i)));
      out.push_back(std::move(value));
    }
    return out;
  }

  // A list of absolute paths on the host.
  absl::StatusOr<std::vector<std::string>> HostPaths(const YAML::Node& node, const std::string& path,
                                                     absl::string_view example) const {
    return List<std::string>(node, path, example, [&](const YAML::Node& n, const std::string& np) -> absl::StatusOr<std::string> {
      HOIST_ASSIGN_OR_RETURN(std::string s, String(n, np, "an absolute path on the host"));
      if (s.front() != '/') {
        return Error(n, np, absl::StrCat("expected an absolute path on the host; got \"", s, "\""));
      }
      return s;
    });
  }

  absl::StatusOr<std::vector<std::string>> Command(const YAML::Node& node,
                                                   const std::string& path) const {
    HOIST_ASSIGN_OR_RETURN(auto argv, StringList(node, path, "[\"python\", \"migrate.py\"]"));
    if (argv.empty()) return Error(node, path, "expected at least the program to run");
    return argv;
  }

  absl::StatusOr<std::map<std::string, std::string>> StringMap(const YAML::Node& node,
                                                               const std::string& path,
                                                               absl::string_view what) const {
    HOIST_ASSIGN_OR_RETURN(auto entries, NamedEntries(node, path, what));
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : entries) {
      if (!v.IsScalar()) {
        return Error(v, Child(path, k.Scalar()),
                     absl::StrCat("expected a single value; got ", Quote(v)));
      }
      out[k.Scalar()] = v.Scalar();
    }
    return out;
  }

  absl::StatusOr<std::map<std::string, std::string>> EnvMap(const YAML::Node& node,
                                                            const std::string& path) const {
    HOIST_ASSIGN_OR_RETURN(auto entries, NamedEntries(node, path, "environment variables"));
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : entries) {
      if (!IsEnvName(k.Scalar())) {
        return Error(k, Child(path, k.Scalar()),
                     "expected an environment variable name (letters, digits, _; not starting "
                     "with a digit)");
      }
      if (!v.IsScalar()) {
        // Env values are secrets: the message says what kind of node it is,
        // never what it holds (refusals reach the audit log).
        return Error(v, Child(path, k.Scalar()),
                     absl::StrCat("expected a single value (quote it if it looks like a list); got ",
                                  v.IsSequence() ? "a list" : v.IsMap() ? "a map" : "nothing"));
      }
      out[k.Scalar()] = v.Scalar();
    }
    return out;
  }

  absl::StatusOr<std::string> Version(const YAML::Node& node, const std::string& path) const {
    HOIST_ASSIGN_OR_RETURN(std::string s, String(node, path, "a version like \"1.4.0\""));
    auto v = hoist::Version::Parse(s);
    if (!v.ok()) {
      return Error(node, path,
                   absl::StrCat("expected a semantic version like \"1.4.0\"; got ", Quote(node)));
    }
    return v->ToString();
  }

  absl::StatusOr<VersionRange> Range(const YAML::Node& node, const std::string& path) const {
    HOIST_ASSIGN_OR_RETURN(std::string s, String(node, path, "a version range like \">=1.4 <2\""));
    auto r = VersionRange::Parse(s);
    if (!r.ok()) {
      return Error(node, path,
                   absl::StrCat("expected a version range like \">=1.4 <2\"; got ", Quote(node),
                                " (", r.status().message(), ")"));
    }
    return *r;
  }

 private:
  std::string file_;
};

const std::map<std::string, hoist::v1::Role>& RolesByName() {
  static const auto* roles = new std::map<std::string, hoist::v1::Role>{
      {"api", hoist::v1::ROLE_API},       {"worker", hoist::v1::ROLE_WORKER},
      {"scheduler", hoist::v1::ROLE_SCHEDULER}, {"web", hoist::v1::ROLE_WEB},
      {"proxy", hoist::v1::ROLE_PROXY},   {"database", hoist::v1::ROLE_DATABASE},
      {"job", hoist::v1::ROLE_JOB}};
  return *roles;
}

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

constexpr absl::string_view kServiceKeys[] = {
    "role",    "repository", "image",        "command",       "replicas",     "placement",
    "ports",   "env",        "env_files",    "volumes",       "health",       "stop_timeout",
    "rolling", "update_order", "migration",  "after",         "routes",       "drain_timeout",
    "timeout", "restart_policy", "expose"};

absl::StatusOr<ServiceSpec> ParseService(const Parser& p, const YAML::Node& key,
                                         const YAML::Node& node) {
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

  std::vector<std::string> role_names;
  for (const auto& [name, role] : RolesByName()) role_names.push_back(name);
  HOIST_ASSIGN_OR_RETURN(std::string role,
                         p.Required(f, "role", absl::StrCat("one of ", absl::StrJoin(role_names, ", "))));
  auto rit = RolesByName().find(role);
  if (rit == RolesByName().end()) {
    return p.Error(*f.Get("role"), f.Path("role"),
                   absl::StrCat("expected one of ", absl::StrJoin(role_names, ", "), "; got \"", role, "\""));
  }
  s.role = rit->second;
  const bool is_job = s.role == hoist::v1::ROLE_JOB;
  const bool is_proxy = s.role == hoist::v1::ROLE_PROXY;

  const YAML::Node* repo = f.Get("repository");
  const YAML::Node* image = f.Get("image");
  if ((repo == nullptr) == (image == nullptr)) {
    return p.Error(node, path,
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
  if (const YAML::Node* n = f.Get("command")) {
    HOIST_ASSIGN_OR_RETURN(s.command, p.Command(*n, f.Path("command")));
  }
  if (const YAML::Node* n = f.Get("replicas")) {
    HOIST_ASSIGN_OR_RETURN(s.replicas, p.Uint(*n, f.Path("replicas"), is_job ? 1 : 0, is_job ? 1 : 1000));
  }
  if (const YAML::Node* n = f.Get("placement")) {
    HOIST_ASSIGN_OR_RETURN(Fields pf, p.Map(*n, f.Path("placement"), {"hosts", "labels", "distinct_hosts"}));
    if (const YAML::Node* h = pf.Get("hosts")) {
      HOIST_ASSIGN_OR_RETURN(s.placement.hosts, p.StringList(*h, pf.Path("hosts"), "[host-a, host-b]"));
    }
    if (const YAML::Node* l = pf.Get("labels")) {
      HOIST_ASSIGN_OR_RETURN(s.placement.labels, p.StringMap(*l, pf.Path("labels"), "labels"));
    }
    if (const YAML::Node* d = pf.Get("distinct_hosts")) {
      HOIST_ASSIGN_OR_RETURN(s.placement.distinct_hosts, p.Bool(*d, pf.Path("distinct_hosts")));
    }
  }
  if (const YAML::Node* n = f.Get("ports")) {
    HOIST_ASSIGN_OR_RETURN(s.ports, p.List<PortSpec>(*n, f.Path("ports"), "[\"127.0.0.1:8080:80\"]",
                                                     [&](const YAML::Node& item, const std::string& path) {
                                                       return ParsePort(p, item, path);
                                                     }));
  }
  if (const YAML::Node* n = f.Get("expose")) {
    if (!n->IsSequence()) {
      return p.Error(*n, f.Path("expose"), "expected a list of container ports, for example [5432]");
    }
    for (size_t i = 0; i < n->size(); ++i) {
      HOIST_ASSIGN_OR_RETURN(uint32_t port, p.Uint((*n)[i], Index(f.Path("expose"), i), 1, 65535));
      if (std::find(s.expose.begin(), s.expose.end(), port) != s.expose.end()) {
        return p.Error((*n)[i], Index(f.Path("expose"), i), absl::StrCat("port ", port, " is listed twice"));
      }
      s.expose.push_back(port);
    }
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
  if (const YAML::Node* n = f.Get("rolling")) {
    HOIST_ASSIGN_OR_RETURN(Fields rf, p.Map(*n, f.Path("rolling"), {"max_parallel", "min_healthy", "pause"}));
    if (const YAML::Node* m = rf.Get("max_parallel")) {
      HOIST_ASSIGN_OR_RETURN(s.rolling.max_parallel, p.Uint(*m, rf.Path("max_parallel"), 1, 1000));
    }
    if (const YAML::Node* m = rf.Get("min_healthy")) {
      HOIST_ASSIGN_OR_RETURN(uint32_t mh, p.Uint(*m, rf.Path("min_healthy"), 0, 1000));
      if (mh > s.replicas) {
        return p.Error(*m, rf.Path("min_healthy"),
                       absl::StrCat("expected at most replicas (", s.replicas, "); got ", mh));
      }
      s.rolling.min_healthy = mh;
    }
    if (const YAML::Node* m = rf.Get("pause")) {
      HOIST_ASSIGN_OR_RETURN(s.rolling.pause, p.Duration(*m, rf.Path("pause"), true));
    }
  }
  if (const YAML::Node* n = f.Get("update_order")) {
    HOIST_ASSIGN_OR_RETURN(std::string order, p.String(*n, f.Path("update_order"), "start-first or stop-first"));
    if (order == "start-first") {
      s.update_order = UpdateOrder::kStartFirst;
    } else if (order == "stop-first") {
      s.update_order = UpdateOrder::kStopFirst;
    } else {
      return p.Error(*n, f.Path("update_order"),
                     absl::StrCat("expected start-first or stop-first; got ", Quote(*n)));
    }
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
  if (const YAML::Node* n = f.Get("routes")) {
    if (!is_proxy) {
      return p.Error(*n, f.Path("routes"), absl::StrCat("only a service with role proxy has routes; this one is ", role));
    }
    if (!n->IsSequence()) {
      return p.Error(*n, f.Path("routes"),
                     absl::StrCat("expected a list of {name, service, port}; got ", Quote(*n)));
    }
    std::set<std::string> names;
    for (size_t i = 0; i < n->size(); ++i) {
      std::string rp = Index(f.Path("routes"), i);
      HOIST_ASSIGN_OR_RETURN(Fields rf, p.Map((*n)[i], rp, {"name", "service", "port", "listen"}));
      RouteSpec r;
      r.pos = PosOf((*n)[i]);
      HOIST_ASSIGN_OR_RETURN(r.name, p.Required(rf, "name", "a route name"));
      HOIST_ASSIGN_OR_RETURN(r.service, p.Required(rf, "service", "a service name"));
      const YAML::Node* port = rf.Get("port");
      if (port == nullptr) return p.Error((*n)[i], rf.Path("port"), "required; expected the service's container port");
      HOIST_ASSIGN_OR_RETURN(r.port, p.Uint(*port, rf.Path("port"), 1, 65535));
      if (const YAML::Node* listen = rf.Get("listen")) {
        HOIST_ASSIGN_OR_RETURN(r.listen, p.Uint(*listen, rf.Path("listen"), 1, 65535));
      } else if (i < s.ports.size()) {
        r.listen = s.ports[i].container_port;  // the i-th route listens on the i-th published port
      } else {
        return p.Error((*n)[i], rf.Path("listen"),
                       absl::StrCat("required: the proxy's container port this route listens on (the proxy "
                                    "publishes no port number ", i + 1, " to default to)"));
      }
      for (const RouteSpec& other : s.routes) {
        if (other.listen == r.listen) {
          return p.Error((*n)[i], rf.Path("listen"),
                         absl::StrCat("port ", r.listen, " is already the listen port of route \"", other.name, "\""));
        }
      }
      if (!names.insert(r.name).second) {
        return p.Error((*n)[i], rf.Path("name"), absl::StrCat("duplicate route \"", r.name, "\""));
      }
      s.routes.push_back(std::move(r));
    }
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
  // Keys that mean nothing for a role are refused rather than silently ignored.
  if (is_job) {
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
  return s;
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

bool IpsOverlap(const std::string& a, const std::string& b) {
  auto any = [](const std::string& ip) { return ip.empty() || ip == "0.0.0.0" || ip == "::"; };
  return any(a) || any(b) || a == b;
}

absl::Status CrossCheck(const Parser& p, const StackManifest& m) {
  std::vector<std::string> names;
  for (const ServiceSpec& s : m.services) names.push_back(s.name);
  const std::string known = absl::StrCat("services are: ", absl::StrJoin(names, ", "));
  auto service_ref = [&](const std::string& name, SourcePos pos, const std::string& path,
                         bool versioned) -> absl::Status {
    const ServiceSpec* s = m.FindService(name);
    if (s == nullptr) {
      return p.ErrorAt(pos, path, absl::StrCat("unknown service \"", name, "\"; ", known));
    }
    if (versioned && !s->versioned()) {
      return p.ErrorAt(pos, path,
                       absl::StrCat("service \"", name,
                                    "\" has a pinned image and no release versions; rules apply "
                                    "to services versioned by releases"));
    }
    return absl::OkStatus();
  };

  for (const ServiceSpec& s : m.services) {
    const std::string path = Child("services", s.name);
    for (size_t i = 0; i < s.after.size(); ++i) {
      std::string ap = Index(Child(path, "after"), i);
      HOIST_RETURN_IF_ERROR(service_ref(s.after[i], s.after_pos, ap, false));
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
      HOIST_RETURN_IF_ERROR(service_ref(r.service, r.pos, Child(path, "routes"), false));
      if (r.service == s.name) return p.ErrorAt(r.pos, Child(path, "routes"), "a proxy cannot route to itself");
    }
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
  }

  // Fixed host ports: one service's replicas are on distinct hosts already; two
  // services that may share a host must not publish the same port.
  for (size_t a = 0; a < m.services.size(); ++a) {
    const ServiceSpec& sa = m.services[a];
    for (size_t i = 0; i < sa.ports.size(); ++i) {
      const PortSpec& pa = sa.ports[i];
      if (pa.host_port == 0) continue;
      for (size_t j = i + 1; j < sa.ports.size(); ++j) {
        const PortSpec& pb = sa.ports[j];
        if (pb.host_port == pa.host_port && pb.protocol == pa.protocol && IpsOverlap(pa.host_ip, pb.host_ip)) {
          return p.ErrorAt(pb.pos, Index(Child(Child("services", sa.name), "ports"), j),
                           absl::StrCat("host port ", pb.host_port, "/", pb.protocol,
                                        " is published twice by this service"));
        }
      }
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
          if (pb.host_port == pa.host_port && pb.protocol == pa.protocol && IpsOverlap(pa.host_ip, pb.host_ip)) {
            return p.ErrorAt(pb.pos, Index(Child(Child("services", sb.name), "ports"), j),
                             absl::StrCat("host port ", pb.host_port, "/", pb.protocol, " on host ",
                                          shared, " is also published by services.", sa.name,
                                          " (line ", pa.pos.line,
                                          "); give them different host ports or placements that "
                                          "share no host"));
          }
        }
      }
    }
  }

  if (std::string cycle = FindAfterCycle(m); !cycle.empty()) {
    const ServiceSpec* first = m.FindService(cycle.substr(0, cycle.find(' ')));
    return p.ErrorAt(first->after_pos, Child(Child("services", first->name), "after"),
                     absl::StrCat("order constraints form a cycle: ", cycle,
                                  "; remove one of these after: entries"));
  }

  for (size_t i = 0; i < m.rules.size(); ++i) {
    const CompatRule& r = m.rules[i];
    std::string rp = Index("rules", i);
    HOIST_RETURN_IF_ERROR(service_ref(r.service, r.pos, Child(rp, "service"), true));
    HOIST_RETURN_IF_ERROR(service_ref(
        r.other, r.pos,
        Child(rp, r.kind == CompatRule::Kind::kMustMatch ? "must_match" : "requires.service"), true));
    if (r.service == r.other) {
      return p.ErrorAt(r.pos, rp, "a rule must name two different services");
    }
  }

  if (m.backup.has_value()) {
    const BackupSpec& b = *m.backup;
    if (b.postgres.has_value()) {
      HOIST_RETURN_IF_ERROR(service_ref(b.postgres->service, b.pos, "backup.postgres.service", false));
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
  }
  if (m.smoke_test.has_value()) {
    HOIST_RETURN_IF_ERROR(service_ref(m.smoke_test->service, m.smoke_test->job.pos, "smoke_test.service", false));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path, ": no such file or no permission"));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

absl::StatusOr<StackManifest> ParseStackManifestOrThrow(absl::string_view file_name,
                                                        absl::string_view yaml_text);
absl::StatusOr<hoist::v1::Release> ParseReleaseFileOrThrow(absl::string_view file_name,
                                                           absl::string_view yaml_text);

}  // namespace

absl::StatusOr<ImageReference> ParseImageReference(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("image reference \"", text, "\": ", why));
  };
  if (text.empty()) return bad("empty");
  for (char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return bad("contains whitespace");
  }
  ImageReference ref;
  absl::string_view rest = text;
  if (size_t at = rest.find('@'); at != absl::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (ref.digest.find(':') == std::string::npos || ref.digest.back() == ':') {
      return bad("expected a digest like @sha256:<hex>");
    }
  }
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (ref.tag.empty()) return bad("empty tag after ':'");
  }
  if (rest.empty() || rest.back() == '/' || rest.front() == '/') return bad("expected a repository name");
  ref.repository = std::string(rest);
  return ref;
}

absl::string_view UpdateOrderName(UpdateOrder order) {
  return order == UpdateOrder::kStartFirst ? "start-first" : "stop-first";
}

absl::string_view RoleName(hoist::v1::Role role) {
  for (const auto& [name, r] : RolesByName()) {
    if (r == role) return name;
  }
  return "unspecified";
}

bool ServiceSpec::needs_distinct_hosts() const {
  if (placement.distinct_hosts) return true;
  for (const PortSpec& p : ports) {
    if (p.host_port != 0) return true;
  }
  return false;
}

uint32_t ServiceSpec::EffectiveMinHealthy(UpdateOrder order) const {
  if (rolling.min_healthy.has_value()) return *rolling.min_healthy;
  if (order == UpdateOrder::kStartFirst) return replicas;
  return replicas > rolling.max_parallel ? replicas - rolling.max_parallel : 0;
}

bool CompatRule::Allows(const Version& sv, const Version& ov) const {
  if (kind == Kind::kMustMatch) return sv == ov;
  if (when.has_value() && !when->Contains(sv)) return true;
  return range->Contains(ov);
}

std::string CompatRule::Describe() const {
  if (kind == Kind::kMustMatch) return absl::StrCat(service, " must match ", other);
  return absl::StrCat(service, when.has_value() ? absl::StrCat(" ", when->ToString()) : "",
                      " requires ", other, " ", range->ToString());
}

const ServiceSpec* StackManifest::FindService(absl::string_view name) const {
  for (const ServiceSpec& s : services) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const HostSpec* StackManifest::FindHost(absl::string_view id) const {
  for (const HostSpec& h : hosts) {
    if (h.id == id) return &h;
  }
  return nullptr;
}

std::vector<std::string> StackManifest::EligibleHosts(const ServiceSpec& service) const {
  std::vector<std::string> out;
  for (const HostSpec& h : hosts) {
    if (!service.placement.hosts.empty() &&
        std::find(service.placement.hosts.begin(), service.placement.hosts.end(), h.id) ==
            service.placement.hosts.end()) {
      continue;
    }
    bool match = true;
    for (const auto& [k, v] : service.placement.labels) {
      auto it = h.labels.find(k);
      match = match && it != h.labels.end() && it->second == v;
    }
    if (match) out.push_back(h.id);
  }
  return out;
}

absl::StatusOr<StackManifest> ParseStackManifest(absl::string_view file_name,
                                                 absl::string_view yaml_text) {
  // yaml-cpp reports misuse by exception; none may cross into the caller.
  try {
    return ParseStackManifestOrThrow(file_name, yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                                   ": cannot read the manifest (", e.msg, ")"));
  }
}

absl::StatusOr<hoist::v1::Release> ParseReleaseFile(absl::string_view file_name,
                                                    absl::string_view yaml_text) {
  try {
    return ParseReleaseFileOrThrow(file_name, yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                                   ": cannot read the release file (", e.msg, ")"));
  }
}

namespace {

absl::StatusOr<StackManifest> ParseStackManifestOrThrow(absl::string_view file_name,
                                                        absl::string_view yaml_text) {
  Parser p(file_name);
  HOIST_ASSIGN_OR_RETURN(YAML::Node root, p.Load(yaml_text, "stack manifest"));
  if (root.IsNull()) return p.ErrorAt({}, "", "empty manifest; expected deployment, hosts and services");
  HOIST_ASSIGN_OR_RETURN(
      Fields f, p.Map(root, "", {"deployment", "network", "hosts", "services", "backup", "rules", "smoke_test"}));
  StackManifest m;
  m.file_name = std::string(file_name);
  HOIST_ASSIGN_OR_RETURN(m.deployment, p.Required(f, "deployment", "a deployment name"));
  if (!IsDnsLabel(m.deployment)) {
    return p.Error(*f.Get("deployment"), "deployment",
                   "expected lower-case letters, digits and '-' (at most 63, not starting or "
                   "ending with '-')");
  }
  if (const YAML::Node* n = f.Get("network")) {
    HOIST_ASSIGN_OR_RETURN(m.network, p.String(*n, "network", "a Docker network name"));
  }
  const YAML::Node* hosts = f.Get("hosts");
  if (hosts == nullptr) return p.Error(root, "hosts", "required; expected a list of agent ids");
  HOIST_ASSIGN_OR_RETURN(m.hosts, ParseHosts(p, *hosts));

  const YAML::Node* services = f.Get("services");
  if (services == nullptr) return p.Error(root, "services", "required; expected a mapping of service name to settings");
  HOIST_ASSIGN_OR_RETURN(auto entries, p.NamedEntries(*services, "services", "services"));
  if (entries.empty()) return p.Error(*services, "services", "expected at least one service");
  for (const auto& [k, v] : entries) {
    HOIST_ASSIGN_OR_RETURN(ServiceSpec s, ParseService(p, k, v));
    m.services.push_back(std::move(s));
  }

  if (const YAML::Node* n = f.Get("backup")) {
    HOIST_ASSIGN_OR_RETURN(Fields bf, p.Map(*n, "backup", {"postgres", "volumes", "config_files", "timeout", "keep"}));
    BackupSpec b;
    b.pos = PosOf(*n);
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
      return p.Error(*n, "backup", "expected at least one of postgres, volumes or config_files");
    }
    m.backup = std::move(b);
  }
  if (const YAML::Node* n = f.Get("rules")) {
    HOIST_ASSIGN_OR_RETURN(m.rules, p.List<CompatRule>(*n, "rules", "[{service: runner, must_match: ratd}]",
                                                       [&](const YAML::Node& item, const std::string& path) {
                                                         return ParseRule(p, item, path);
                                                       }));
  }
  if (const YAML::Node* n = f.Get("smoke_test")) {
    HOIST_ASSIGN_OR_RETURN(Fields sf, p.Map(*n, "smoke_test", {"service", "command", "timeout"}));
    SmokeTestSpec st;
    HOIST_ASSIGN_OR_RETURN(st.service, p.Required(sf, "service", "the service whose new image runs the test"));
    HOIST_ASSIGN_OR_RETURN(st.job, ParseJob(p, *n, "smoke_test", {"service", "command", "timeout"}));
    m.smoke_test = std::move(st);
  }
  HOIST_RETURN_IF_ERROR(CrossCheck(p, m));
  return m;
}

}  // namespace

absl::StatusOr<StackManifest> LoadStackManifest(const std::string& path) {
  HOIST_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseStackManifest(path, text);
}

namespace {

absl::StatusOr<hoist::v1::Release> ParseReleaseFileOrThrow(absl::string_view file_name,
                                                           absl::string_view yaml_text) {
  Parser p(file_name);
  HOIST_ASSIGN_OR_RETURN(YAML::Node root, p.Load(yaml_text, "release file"));
  if (root.IsNull()) return p.ErrorAt({}, "", "empty release file; expected version and images");
  HOIST_ASSIGN_OR_RETURN(
      Fields f, p.Map(root, "", {"deployment", "version", "images", "notes", "required_env", "renamed_env"}));
  hoist::v1::Release r;
  if (const YAML::Node* n = f.Get("deployment")) {
    HOIST_ASSIGN_OR_RETURN(std::string d, p.String(*n, "deployment", "a deployment name"));
    if (!IsDnsLabel(d)) return p.Error(*n, "deployment", "expected lower-case letters, digits and '-'");
    r.set_deployment(d);
  }
  const YAML::Node* version = f.Get("version");
  if (version == nullptr) return p.Error(root, "version", "required; expected a semantic version like \"1.4.0\"");
  HOIST_ASSIGN_OR_RETURN(std::string v, p.Version(*version, "version"));
  r.set_version(v);

  const YAML::Node* images = f.Get("images");
  if (images == nullptr) return p.Error(root, "images", "required; expected a mapping of service name to image reference");
  HOIST_ASSIGN_OR_RETURN(auto entries, p.NamedEntries(*images, "images", "service names to image references"));
  if (entries.empty()) return p.Error(*images, "images", "expected at least one service image");
  for (const auto& [k, val] : entries) {
    std::string ip = Child("images", k.Scalar());
    if (!IsDnsLabel(k.Scalar())) return p.Error(k, ip, "expected a service name of lower-case letters, digits and '-'");
    HOIST_ASSIGN_OR_RETURN(std::string ref_text, p.String(val, ip, "an image reference"));
    auto ref = ParseImageReference(ref_text);
    if (!ref.ok() || !ref->pinned()) {
      return p.Error(val, ip,
                     absl::StrCat("expected an image pinned to a tag or digest, like "
                                  "registry.example.com/app/api:",
                                  v, "; got ", Quote(val)));
    }
    (*r.mutable_images())[k.Scalar()] = ref_text;
  }
  if (const YAML::Node* n = f.Get("notes")) {
    HOIST_ASSIGN_OR_RETURN(std::string notes, p.String(*n, "notes", "release notes (Markdown)"));
    r.set_notes(notes);
  }
  if (const YAML::Node* n = f.Get("required_env")) {
    HOIST_ASSIGN_OR_RETURN(auto names, p.StringList(*n, "required_env", "[DATABASE_URL]"));
    for (size_t i = 0; i < names.size(); ++i) {
      if (!IsEnvName(names[i])) {
        return p.Error((*n)[i], Index("required_env", i),
                       absl::StrCat("expected an environment variable name; got \"", names[i], "\""));
      }
      r.add_required_env(names[i]);
    }
  }
  if (const YAML::Node* n = f.Get("renamed_env")) {
    HOIST_ASSIGN_OR_RETURN(auto renamed, p.EnvMap(*n, "renamed_env"));
    for (const auto& [from, to] : renamed) {
      if (!IsEnvName(to)) {
        return p.Error(*n, Child("renamed_env", from),
                       absl::StrCat("expected the new environment variable name; got \"", to, "\""));
      }
      (*r.mutable_renamed_env())[from] = to;
    }
  }
  return r;
}

}  // namespace

absl::StatusOr<hoist::v1::Release> LoadReleaseFile(const std::string& path) {
  HOIST_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseReleaseFile(path, text);
}

}  // namespace hoist::rollout

// The public face of the stack manifest (manifest.h): the document's top
// level, loading from a file, and the small types' methods. The sections are
// read in manifest_fields.cc and manifest_service.cc and checked together in
// manifest_checks.cc (see manifest_internal.h).

#include "controller/rollout/manifest.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "controller/rollout/manifest_internal.h"
#include "shared/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace hoist::rollout {

namespace internal {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path, ": no such file or no permission"));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace internal

namespace {

using internal::Fields;
using internal::Parser;

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
  if (!internal::IsDnsLabel(m.deployment)) {
    return p.Error(*f.Get("deployment"), "deployment",
                   "expected lower-case letters, digits and '-' (at most 63, not starting or "
                   "ending with '-')");
  }
  if (const YAML::Node* n = f.Get("network")) {
    HOIST_ASSIGN_OR_RETURN(m.network, p.String(*n, "network", "a Docker network name"));
  }
  const YAML::Node* hosts = f.Get("hosts");
  if (hosts == nullptr) return p.Error(root, "hosts", "required; expected a list of agent ids");
  HOIST_ASSIGN_OR_RETURN(m.hosts, internal::ParseHosts(p, *hosts));

  const YAML::Node* services = f.Get("services");
  if (services == nullptr) return p.Error(root, "services", "required; expected a mapping of service name to settings");
  HOIST_ASSIGN_OR_RETURN(auto entries, p.NamedEntries(*services, "services", "services"));
  if (entries.empty()) return p.Error(*services, "services", "expected at least one service");
  for (const auto& [k, v] : entries) {
    HOIST_ASSIGN_OR_RETURN(ServiceSpec s, internal::ParseService(p, k, v));
    m.services.push_back(std::move(s));
  }

  if (const YAML::Node* n = f.Get("backup")) {
    HOIST_ASSIGN_OR_RETURN(m.backup, internal::ParseBackup(p, *n));
  }
  if (const YAML::Node* n = f.Get("rules")) {
    HOIST_ASSIGN_OR_RETURN(m.rules, p.List<CompatRule>(*n, "rules", "[{service: runner, must_match: ratd}]",
                                                       [&](const YAML::Node& item, const std::string& path) {
                                                         return internal::ParseRule(p, item, path);
                                                       }));
  }
  if (const YAML::Node* n = f.Get("smoke_test")) {
    HOIST_ASSIGN_OR_RETURN(m.smoke_test, internal::ParseSmokeTest(p, *n));
  }
  HOIST_RETURN_IF_ERROR(internal::CrossCheck(p, m));
  return m;
}

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
  for (const auto& [name, r] : internal::RolesByName()) {
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

absl::StatusOr<StackManifest> LoadStackManifest(const std::string& path) {
  HOIST_ASSIGN_OR_RETURN(std::string text, internal::ReadTextFile(path));
  return ParseStackManifest(path, text);
}

}  // namespace hoist::rollout

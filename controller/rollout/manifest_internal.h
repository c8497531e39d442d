#pragma once

// Internals of the stack manifest parser shared by its files (not for use
// outside controller/rollout/manifest*.cc and release_file.cc):
//   manifest_yaml.cc     the YAML readers: Parser's scalar and collection readers
//   manifest_fields.cc   the sections below services: hosts, ports, volumes,
//                        health, jobs, rules, backup, smoke_test
//   manifest_service.cc  one service's settings
//   manifest_checks.cc   the checks across sections, once everything parsed
//   manifest.cc          the document and the public API of manifest.h

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/rollout/manifest.h"
#include "shared/semver.h"
#include "shared/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace hoist::rollout::internal {

SourcePos PosOf(const YAML::Node& node);

// Field paths in errors: Child("services", "api") is "services.api",
// Index("ports", 2) is "ports[2]".
std::string Child(absl::string_view path, absl::string_view key);
std::string Index(absl::string_view path, size_t i);

// Quotes a scalar for an error message, shortening long ones.
std::string Quote(const YAML::Node& node);

// Lower-case letters, digits and '-', at most 63, not starting or ending with '-'.
bool IsDnsLabel(absl::string_view s);
// Letters, digits and _, not starting with a digit: an environment variable
// name (manifests' env keys, release files' required and renamed env).
bool IsEnvName(absl::string_view s);

// Reads a whole file; NOT_FOUND when it cannot be read.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

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
// collection readers every section of a manifest uses.
class Parser {
 public:
  explicit Parser(absl::string_view file) : file_(file) {}

  absl::Status ErrorAt(SourcePos pos, absl::string_view path, absl::string_view message) const;
  absl::Status Error(const YAML::Node& at, absl::string_view path, absl::string_view message) const {
    return ErrorAt(PosOf(at), path, message);
  }

  // `what` names the kind of file in the errors ("stack manifest").
  absl::StatusOr<YAML::Node> Load(absl::string_view text, absl::string_view what) const;

  // Checks that `node` is a mapping whose keys are plain, unique and allowed.
  absl::StatusOr<Fields> Map(const YAML::Node& node, const std::string& path,
                             std::initializer_list<absl::string_view> allowed) const {
    return MapOf(node, path, std::vector<absl::string_view>(allowed));
  }
  absl::StatusOr<Fields> MapOf(const YAML::Node& node, const std::string& path,
                               const std::vector<absl::string_view>& allowed) const;

  // A mapping whose keys are names chosen by the user (services, env vars).
  absl::StatusOr<std::vector<std::pair<YAML::Node, YAML::Node>>> NamedEntries(
      const YAML::Node& node, const std::string& path, absl::string_view what) const;

  absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& path,
                                     absl::string_view expected = "a string") const;
  absl::StatusOr<std::string> Required(const Fields& f, const std::string& key,
                                       absl::string_view expected = "a string") const;
  absl::StatusOr<uint32_t> Uint(const YAML::Node& node, const std::string& path, uint32_t min,
                                uint32_t max) const;
  absl::StatusOr<absl::Duration> Duration(const YAML::Node& node, const std::string& path,
                                          bool allow_zero = false) const;
  absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& path) const;
  absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& node, const std::string& path,
                                                      absl::string_view example) const;

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
                                                     absl::string_view example) const;
  absl::StatusOr<std::vector<std::string>> Command(const YAML::Node& node, const std::string& path) const;
  absl::StatusOr<std::map<std::string, std::string>> StringMap(const YAML::Node& node, const std::string& path,
                                                               absl::string_view what) const;
  absl::StatusOr<std::map<std::string, std::string>> EnvMap(const YAML::Node& node,
                                                            const std::string& path) const;
  absl::StatusOr<VersionRange> Range(const YAML::Node& node, const std::string& path) const;

 private:
  std::string file_;
};

// Role names as written in manifests ("api", "worker", ...).
const std::map<std::string, hoist::v1::Role>& RolesByName();

// Sections (manifest_fields.cc). Each returns INVALID_ARGUMENT naming the
// offending field.
absl::StatusOr<std::vector<HostSpec>> ParseHosts(const Parser& p, const YAML::Node& node);
absl::StatusOr<PortSpec> ParsePort(const Parser& p, const YAML::Node& node, const std::string& path);
absl::StatusOr<VolumeSpec> ParseVolume(const Parser& p, const YAML::Node& node, const std::string& path);
absl::StatusOr<HealthSpec> ParseHealth(const Parser& p, const YAML::Node& node, const std::string& path);
// `allowed` are the keys of the mapping holding the job (a smoke test names its service too).
absl::StatusOr<JobSpec> ParseJob(const Parser& p, const YAML::Node& node, const std::string& path,
                                 std::initializer_list<absl::string_view> allowed);
absl::StatusOr<CompatRule> ParseRule(const Parser& p, const YAML::Node& node, const std::string& path);
absl::StatusOr<BackupSpec> ParseBackup(const Parser& p, const YAML::Node& node);
absl::StatusOr<SmokeTestSpec> ParseSmokeTest(const Parser& p, const YAML::Node& node);

// One entry of services: (manifest_service.cc); `key` is the service's name.
absl::StatusOr<ServiceSpec> ParseService(const Parser& p, const YAML::Node& key, const YAML::Node& node);

// The checks that need the whole manifest: references between sections,
// placements, host ports, order cycles (manifest_checks.cc).
absl::Status CrossCheck(const Parser& p, const StackManifest& m);

}  // namespace hoist::rollout::internal

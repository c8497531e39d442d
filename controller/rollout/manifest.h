#pragma once

// The stack manifest (one YAML file per deployment: hosts and services),
// parsed and validated; release files are in release_file.h.
// deploy/manifest-reference.md documents every key. Every error names the
// file, line, column and field path, and says what was expected:
//   stack.yaml:14:7: services.api.health.interval: expected a duration like "5s", got "fast"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "hoist/v1/common.pb.h"
#include "hoist/v1/operator.pb.h"
#include "shared/semver.h"

namespace hoist::rollout {

// Where a value was written, 1-based; 0 when it was not written (a default).
struct SourcePos {
  int line = 0;
  int column = 0;
};

// ImageReference is "[registry/]path[:tag][@digest]" split into its parts.
struct ImageReference {
  std::string repository;  // everything before the tag and digest
  std::string tag;         // empty when absent
  std::string digest;      // "sha256:..." or empty
  // True when the reference names one image for good: a digest, or a tag other than "latest".
  bool pinned() const { return !digest.empty() || (!tag.empty() && tag != "latest"); }
};

// Splits an image reference. Refuses empty references, whitespace and empty
// tags or digests; does not require a tag (see ImageReference::pinned).
absl::StatusOr<ImageReference> ParseImageReference(absl::string_view text);

enum class UpdateOrder {
  kStartFirst,  // start the new instance, wait for health, then stop the old one
  kStopFirst,   // stop the old instance, then start the new one
};

// "start-first" or "stop-first".
absl::string_view UpdateOrderName(UpdateOrder order);

// Lower-case role name as written in manifests: "api", "worker", ...
absl::string_view RoleName(hoist::v1::Role role);

struct HostSpec {
  std::string id;       // agent id
  std::string address;  // how other hosts reach it; empty: the agent id
  std::map<std::string, std::string> labels;
  SourcePos pos;
};

struct PortSpec {
  uint32_t container_port = 0;
  uint32_t host_port = 0;  // 0: not fixed (Docker chooses)
  std::string host_ip;     // empty: all addresses
  std::string protocol = "tcp";
  SourcePos pos;
};

struct VolumeSpec {
  std::string source;  // named volume or absolute host path
  std::string target;
  bool read_only = false;
};

struct HealthSpec {
  enum class Kind { kHttp, kTcp, kDocker, kCommand };
  Kind kind = Kind::kHttp;
  std::string http_path;              // kHttp
  uint32_t port = 0;                  // kHttp, kTcp
  bool check_version = false;         // kHttp: the body's "version" must equal the release
  std::vector<std::string> command;   // kCommand; kDocker: HEALTHCHECK to configure (optional)
  absl::Duration interval = absl::Seconds(2);
  absl::Duration timeout = absl::Seconds(1);
  absl::Duration deadline = absl::Minutes(2);
};

struct PlacementSpec {
  std::vector<std::string> hosts;              // empty: every host
  std::map<std::string, std::string> labels;   // every label must match
  bool distinct_hosts = false;                 // at most one replica per host
};

struct RollingPolicy {
  uint32_t max_parallel = 1;
  std::optional<uint32_t> min_healthy;  // unset: see EffectiveMinHealthy
  absl::Duration pause = absl::ZeroDuration();
};

// A one-shot command run from a service's new image (migrations, smoke tests).
struct JobSpec {
  std::vector<std::string> command;
  absl::Duration timeout = absl::Minutes(10);
  SourcePos pos;
};

// A route of a proxy service: where the proxy sends a name's traffic.
struct RouteSpec {
  std::string name;
  std::string service;
  uint32_t port = 0;  // container port of that service
  uint32_t listen = 0;  // container port of the proxy the route's frontend binds
  SourcePos pos;
};

struct ServiceSpec {
  std::string name;
  hoist::v1::Role role = hoist::v1::ROLE_UNSPECIFIED;
  std::string repository;  // versioned by releases: the release gives the tag
  std::string image;       // or a pinned image not versioned by releases
  std::vector<std::string> command;
  uint32_t replicas = 1;
  PlacementSpec placement;
  std::vector<PortSpec> ports;
  // Container ports other services reach it on by name, besides ports[]
  // and its health check's port (a service on another Docker host reaches
  // them through a forwarder).
  std::vector<uint32_t> expose;
  std::map<std::string, std::string> env;
  std::vector<std::string> env_files;
  std::vector<VolumeSpec> volumes;
  std::optional<HealthSpec> health;
  absl::Duration stop_timeout = absl::Seconds(10);
  RollingPolicy rolling;
  UpdateOrder update_order = UpdateOrder::kStartFirst;
  std::optional<JobSpec> migration;
  std::vector<std::string> after;
  std::vector<RouteSpec> routes;               // proxy only
  absl::Duration drain_timeout = absl::Seconds(10);  // proxy only
  absl::Duration job_timeout = absl::Minutes(10);    // role job only
  std::string restart_policy = "unless-stopped";
  SourcePos pos;
  SourcePos after_pos;

  // True when releases give this service's image.
  bool versioned() const { return image.empty(); }
  // True when at most one replica may run per host (asked for, or a fixed host port).
  bool needs_distinct_hosts() const;
  // min_healthy as written, or: replicas for start-first, replicas - max_parallel for stop-first.
  uint32_t EffectiveMinHealthy(UpdateOrder order) const;
};

struct BackupSpec {
  struct Postgres {
    std::string service;
    std::string database;
    std::string user;
  };
  std::optional<Postgres> postgres;
  std::vector<std::string> volumes;
  std::vector<std::string> config_files;
  absl::Duration timeout = absl::Minutes(30);
  // Backups of the deployment kept on the backup host, the newest first.
  uint32_t keep = 5;
  SourcePos pos;
};

// A compatibility rule between two services versioned by releases.
struct CompatRule {
  enum class Kind {
    kMustMatch,  // service and other always run the same version
    kRequires,   // service (at versions in `when`) works only with other in `range`
  };
  Kind kind = Kind::kMustMatch;
  std::string service;
  std::string other;
  std::optional<VersionRange> range;  // kRequires
  std::optional<VersionRange> when;   // kRequires; unset: every version of service
  SourcePos pos;

  // True when `service` at sv may run beside `other` at ov.
  bool Allows(const Version& sv, const Version& ov) const;
  // The rule in words: "runner must match ratd", "web <2 requires api >=1.4 <2".
  std::string Describe() const;
};

struct SmokeTestSpec {
  std::string service;
  JobSpec job;
};

struct StackManifest {
  std::string file_name;
  std::string deployment;
  std::string network;  // Docker network every service joins; empty: the default bridge
  std::vector<HostSpec> hosts;
  std::vector<ServiceSpec> services;  // in manifest order
  std::optional<BackupSpec> backup;
  std::vector<CompatRule> rules;
  std::optional<SmokeTestSpec> smoke_test;

  const ServiceSpec* FindService(absl::string_view name) const;
  const HostSpec* FindHost(absl::string_view id) const;
  // Hosts a service may run on, in manifest order.
  std::vector<std::string> EligibleHosts(const ServiceSpec& service) const;
};

// Parses and validates a stack manifest. `file_name` only appears in errors.
// INVALID_ARGUMENT on any error, naming file:line:column, the field path, what
// was expected and (for unknown keys) the allowed ones.
absl::StatusOr<StackManifest> ParseStackManifest(absl::string_view file_name,
                                                 absl::string_view yaml_text);

// Reads a manifest file and parses it; NOT_FOUND when it cannot be read.
absl::StatusOr<StackManifest> LoadStackManifest(const std::string& path);

}  // namespace hoist::rollout

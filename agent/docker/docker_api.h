#pragma once

// DockerApi: the part of the Docker Engine API the agent uses, as a small
// interface so that steps can be tested against a fake and the real client
// (docker_client.h, libcurl over the unix socket) stays the only place that
// speaks HTTP to the daemon.
//
// Every method returns a Status that carries Docker's own message on failure:
//   NOT_FOUND          no such image, container or volume (HTTP 404)
//   ALREADY_EXISTS     a container name clash (HTTP 409 on create)
//   FAILED_PRECONDITION a conflict with the object's state (other HTTP 409)
//   UNAVAILABLE        the daemon is down or the socket is missing
//   INTERNAL           HTTP 5xx, or an answer that is not the JSON expected
//   DEADLINE_EXCEEDED  the call's timeout passed

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hoist::docker {

// Progress of a pull, summed over the layers Docker reported so far.
struct PullProgress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint32_t layers_done = 0;
  uint32_t layers_total = 0;
};

struct ImageInfo {
  std::string id;                         // sha256:... of the image config
  std::vector<std::string> repo_digests;  // repository@sha256:...
  std::vector<std::string> repo_tags;
  std::map<std::string, std::string> labels;
};

struct PortBinding {
  uint16_t container_port = 0;
  uint16_t host_port = 0;  // 0: Docker picks one
  std::string host_ip;     // empty: all addresses
  std::string protocol = "tcp";
};

struct Mount {
  std::string source;  // named volume, or an absolute host path (a bind)
  std::string target;  // absolute path inside the container
  bool read_only = false;
  bool is_bind() const { return !source.empty() && source[0] == '/'; }
};

struct HealthConfig {
  std::vector<std::string> test;  // argv; run as CMD
  absl::Duration interval = absl::Seconds(2);
  absl::Duration timeout = absl::Seconds(2);
  absl::Duration start_period = absl::ZeroDuration();
  int retries = 3;
};

// What to create. env holds final values (env files already merged in by the
// caller); they are never logged.
struct ContainerSpec {
  std::string name;
  std::string image;
  std::vector<std::string> command;  // empty: the image's own
  std::map<std::string, std::string> env;
  std::vector<PortBinding> ports;
  std::vector<Mount> mounts;
  std::string network;  // empty: the default bridge
  std::vector<std::string> network_aliases;
  std::map<std::string, std::string> labels;
  std::string restart_policy;  // "", "no", "always", "unless-stopped", "on-failure"
  std::optional<HealthConfig> healthcheck;
  std::optional<absl::Duration> stop_timeout;
  bool privileged = false;
};

// Docker's view of one container (list and inspect share it; list leaves
// health and exit_code as Docker's summary gives them).
struct ContainerInfo {
  std::string id;
  std::string name;  // without the leading "/"
  std::string image;
  std::string image_id;
  std::map<std::string, std::string> labels;
  std::string state;   // created, running, paused, restarting, removing, exited, dead
  std::string health;  // "", starting, healthy, unhealthy
  int exit_code = 0;
  absl::Time created_at = absl::InfinitePast();
  absl::Time started_at = absl::InfinitePast();
  // Published ports: container port/proto ("8080/tcp") -> host port.
  std::map<std::string, uint16_t> published_ports;
  // The host address each of those is bound to, when one is named
  // ("10.0.0.11"); absent when it is bound on every address.
  std::map<std::string, std::string> published_ips;
  std::map<std::string, std::string> network_ips;  // network name -> IP
};

struct ExecResult {
  int exit_code = 0;
  std::string output;  // stdout and stderr, interleaved as Docker sent them
};

class DockerApi {
 public:
  virtual ~DockerApi() = default;

  // Engine version string ("20.10.24"); also proves the daemon answers.
  virtual absl::StatusOr<std::string> Version() = 0;

  // The engine's ID (GET /info "ID"), which tells one Docker host from another.
  virtual absl::StatusOr<std::string> EngineId() = 0;

  // Pulls image (repository:tag or repository@digest) and reports progress
  // as Docker streams it. An error inside the stream (unknown tag, registry
  // down) is returned as a Status even though the HTTP answer was 200.
  virtual absl::Status Pull(absl::string_view image,
                            const std::function<void(const PullProgress&)>& on_progress) = 0;
  virtual absl::StatusOr<ImageInfo> InspectImage(absl::string_view image) = 0;
  // Makes the image repository:tag from a tar of its whole file system read
  // from tar_path (docker import): for images built on the host, no registry.
  virtual absl::Status ImportImage(absl::string_view repository, absl::string_view tag,
                                   absl::string_view tar_path) = 0;

  // Creates the container; returns its id.
  virtual absl::StatusOr<std::string> Create(const ContainerSpec& spec) = 0;
  virtual absl::Status Start(absl::string_view id_or_name) = 0;
  // SIGTERM, then SIGKILL after timeout. Stopping a stopped container is OK.
  virtual absl::Status Stop(absl::string_view id_or_name, absl::Duration timeout) = 0;
  virtual absl::Status Kill(absl::string_view id_or_name) = 0;
  virtual absl::Status Rename(absl::string_view id_or_name, absl::string_view new_name) = 0;
  // force: kill a running container first. remove_volumes: its anonymous volumes too.
  virtual absl::Status Remove(absl::string_view id_or_name, bool force, bool remove_volumes) = 0;
  // Blocks until the container exits or timeout passes; returns its exit code.
  virtual absl::StatusOr<int> Wait(absl::string_view id_or_name, absl::Duration timeout) = 0;
  // The last `tail` lines of stdout and stderr.
  virtual absl::StatusOr<std::string> Logs(absl::string_view id_or_name, int tail) = 0;
  // Runs argv inside a running container and collects its output. When
  // stdout_sink is set, stdout goes there (for dumps too big for memory) and
  // ExecResult.output holds stderr only.
  virtual absl::StatusOr<ExecResult> Exec(absl::string_view id_or_name,
                                          const std::vector<std::string>& argv,
                                          absl::Duration timeout,
                                          const std::function<absl::Status(absl::string_view)>& stdout_sink = nullptr,
                                          absl::string_view stdin_data = {}) = 0;
  virtual absl::StatusOr<ContainerInfo> Inspect(absl::string_view id_or_name) = 0;
  // Every container (running or not) carrying all the given labels
  // ("key" or "key=value").
  virtual absl::StatusOr<std::vector<ContainerInfo>> List(const std::vector<std::string>& label_filters) = 0;

  // Named volumes.
  virtual absl::Status CreateVolume(absl::string_view name, const std::map<std::string, std::string>& labels) = 0;
  virtual absl::Status RemoveVolume(absl::string_view name) = 0;
  // The labels of the named volume or network; NOT_FOUND when there is none
  // of that name.
  virtual absl::StatusOr<std::map<std::string, std::string>> VolumeLabels(absl::string_view name) = 0;
  virtual absl::StatusOr<std::map<std::string, std::string>> NetworkLabels(absl::string_view name) = 0;

  // Creates a bridge network named `name` with these labels unless one of
  // that name exists (then OK, whoever created it). Returns the id of the
  // network to join: while agents sharing a daemon race to create it, the
  // name may briefly match two networks, and Docker refuses an ambiguous name.
  virtual absl::StatusOr<std::string> EnsureNetwork(absl::string_view name,
                                                    const std::map<std::string, std::string>& labels) = 0;

  // Copies `path` out of a container (created or running) as a tar stream,
  // chunk by chunk; a volume is archived through a created, never started
  // container that mounts it.
  virtual absl::Status GetArchive(absl::string_view id_or_name, absl::string_view path,
                                  const std::function<absl::Status(absl::string_view)>& sink) = 0;
  // Extracts a tar stream read from tar_path on this host into `path` in the container.
  virtual absl::Status PutArchive(absl::string_view id_or_name, absl::string_view path,
                                  absl::string_view tar_path) = 0;
};

}  // namespace hoist::docker

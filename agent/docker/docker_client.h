#pragma once

// DockerClient: the DockerApi spoken to the real Docker Engine over its unix
// socket, with libcurl (CURLOPT_UNIX_SOCKET_PATH).
//
// Every call uses its own curl easy handle (its own connection), so one
// client may be shared by all of the agent's step runners; the only shared
// state is the negotiated API version, behind a mutex.
//
// API version: the first call asks GET /version (unversioned) and then
// prefixes every path with /v<min(server ApiVersion, 1.41)>. Servers below
// 1.40 (Docker 19.03), or whose minimum is above 1.41, are refused with
// FAILED_PRECONDITION naming both versions. A failed negotiation is retried
// on the next call (the daemon may come back).
//
// Exec: the output of POST /exec/{id}/start is read over a connection this
// client manages itself (a raw unix socket, the HTTP/1.1 "Upgrade: tcp"
// request written by hand), because stdin needs the hijacked connection in
// both directions: stdin_data is written, the write side is half-closed
// (the process sees EOF on its stdin), and the multiplexed stdout/stderr
// stream is read until Docker closes the connection. The exit code comes
// from GET /exec/{id}/json afterwards. An exec whose timeout passes keeps
// running inside the container (the Engine API cannot stop an exec); the
// call returns DEADLINE_EXCEEDED.
//
// Logs and env values are never logged; request bodies are never logged.

#include <initializer_list>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/docker/docker_api.h"
#include "shared/clock.h"

namespace hoist::docker {

// The API version this client is written against, and the oldest it accepts.
inline constexpr int kMaxApiMinor = 41;
inline constexpr int kMinApiMinor = 40;
inline constexpr absl::string_view kDefaultDockerSocket = "/var/run/docker.sock";

// An image reference split the way the Engine's POST /images/create wants it.
struct ImageReference {
  std::string repository;  // "127.0.0.1:5000/app/api" (registry host and port kept)
  std::string tag;         // "1.0.0", or the digest "sha256:..." when pinned by digest
};

// Splits "repo:tag", "host:port/repo:tag", "repo@sha256:..." and
// "repo:tag@sha256:..." (the digest wins). A reference with neither tag nor
// digest is INVALID_ARGUMENT: Docker would pull every tag of it.
absl::StatusOr<ImageReference> ParseImageReference(absl::string_view image);

struct DockerClientOptions {
  std::string socket_path = std::string(kDefaultDockerSocket);
  // Timeout of ordinary calls (create, inspect, list, ...). Stop allows its
  // own timeout plus a margin; Wait and Exec end at their own timeout.
  absl::Duration request_timeout = absl::Seconds(60);
  // A pull has no timeout argument; big images on slow links take long.
  absl::Duration pull_timeout = absl::Minutes(30);
  // Archive transfers (backups of volumes) may be large too.
  absl::Duration archive_timeout = absl::Minutes(30);
  // At most one pull progress report per interval, plus a final one.
  absl::Duration progress_interval = absl::Milliseconds(200);
  // Time source for progress throttling and exec polling; RealClock if null.
  Clock* clock = nullptr;
};

class DockerClient : public DockerApi {
 public:
  explicit DockerClient(std::string socket_path = std::string(kDefaultDockerSocket));
  explicit DockerClient(DockerClientOptions options);
  ~DockerClient() override;
  DockerClient(const DockerClient&) = delete;
  DockerClient& operator=(const DockerClient&) = delete;

  // The negotiated API version ("1.41"), negotiating first if needed.
  absl::StatusOr<std::string> ApiVersion();

  absl::StatusOr<std::string> Version() override;
  absl::StatusOr<std::string> EngineId() override;
  absl::Status Pull(absl::string_view image,
                    const std::function<void(const PullProgress&)>& on_progress) override;
  absl::StatusOr<ImageInfo> InspectImage(absl::string_view image) override;
  absl::Status ImportImage(absl::string_view repository, absl::string_view tag, absl::string_view tar_path) override;
  absl::StatusOr<std::string> Create(const ContainerSpec& spec) override;
  absl::Status Start(absl::string_view id_or_name) override;
  absl::Status Stop(absl::string_view id_or_name, absl::Duration timeout) override;
  absl::Status Kill(absl::string_view id_or_name) override;
  absl::Status Rename(absl::string_view id_or_name, absl::string_view new_name) override;
  absl::Status Remove(absl::string_view id_or_name, bool force, bool remove_volumes) override;
  absl::StatusOr<int> Wait(absl::string_view id_or_name, absl::Duration timeout) override;
  // tail < 0: every line.
  absl::StatusOr<std::string> Logs(absl::string_view id_or_name, int tail) override;
  absl::StatusOr<ExecResult> Exec(absl::string_view id_or_name, const std::vector<std::string>& argv,
                                  absl::Duration timeout,
                                  const std::function<absl::Status(absl::string_view)>& stdout_sink = nullptr,
                                  absl::string_view stdin_data = {}) override;
  absl::StatusOr<ContainerInfo> Inspect(absl::string_view id_or_name) override;
  absl::StatusOr<std::vector<ContainerInfo>> List(const std::vector<std::string>& label_filters) override;
  absl::Status CreateVolume(absl::string_view name, const std::map<std::string, std::string>& labels) override;
  absl::Status RemoveVolume(absl::string_view name) override;
  absl::StatusOr<std::map<std::string, std::string>> VolumeLabels(absl::string_view name) override;
  absl::StatusOr<std::map<std::string, std::string>> NetworkLabels(absl::string_view name) override;
  // GET /<kind>s/<name>: the labels of a volume or network.
  absl::StatusOr<std::map<std::string, std::string>> ObjectLabels(absl::string_view kind, absl::string_view name);
  absl::StatusOr<std::string> EnsureNetwork(absl::string_view name,
                                            const std::map<std::string, std::string>& labels) override;
  absl::Status GetArchive(absl::string_view id_or_name, absl::string_view path,
                          const std::function<absl::Status(absl::string_view)>& sink) override;
  absl::Status PutArchive(absl::string_view id_or_name, absl::string_view path,
                          absl::string_view tar_path) override;

 private:
  struct Call;
  struct Reply;
  struct JsonReply;

  // Sends one request on a fresh connection; any HTTP status is a reply.
  // Paths are versioned here unless call.unversioned.
  absl::StatusOr<Reply> Perform(const Call& call);
  // Perform, then turns a status >= 300 not in ok_statuses into a Status.
  absl::StatusOr<Reply> Expect(const Call& call, std::initializer_list<long> ok_statuses);
  // Expect for a 2xx answer whose body must be a JSON object.
  absl::StatusOr<JsonReply> ExpectObject(const Call& call);
  // GET /containers/{id}/json (id_or_name already checked).
  absl::StatusOr<JsonReply> InspectJson(absl::string_view id_or_name);
  // The "/v1.41" prefix, negotiating first if needed.
  absl::StatusOr<std::string> Prefix();
  // POST /exec/{id}/start over a hand-managed connection (see above);
  // demultiplexes into stdout_sink (or *output) and *output.
  absl::Status StartExec(const std::string& exec_id, absl::Time deadline, absl::string_view stdin_data,
                         const std::function<absl::Status(absl::string_view)>& stdout_sink,
                         std::string* output);

  DockerClientOptions options_;
  Clock* clock_;
  absl::Mutex mu_;
  std::string api_version_ ABSL_GUARDED_BY(mu_);  // "" until negotiated
};

}  // namespace hoist::docker

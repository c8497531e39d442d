#pragma once

// Internals of DockerClient shared by its files (not for use outside
// agent/docker/docker_*.cc):
//   docker_transport.cc  libcurl over the unix socket: one request, one
//                        reply; HTTP errors as Status; API version
//                        negotiation; the raw connection exec needs
//   docker_json.cc       JSON decoding of Docker's answers and the body of
//                        POST /containers/create
//   docker_streams.cc    answers that are streams: pull progress, the
//                        multiplexed log and exec output, and the hijacked
//                        connection of POST /exec/{id}/start
//   docker_client.cc     the DockerApi calls that are one request and reply

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/docker/docker_api.h"
#include "agent/docker/docker_client.h"
#include "nlohmann/json.hpp"
#include "shared/clock.h"

namespace hoist::docker {

struct DockerClient::Call {
  std::string method = "GET";
  std::string target;  // "/containers/create?name=x", without the version prefix
  bool unversioned = false;
  std::string body;         // JSON, sent with POST
  std::string upload_path;  // PUT: the body is this file (a tar stream)
  absl::Duration timeout = absl::ZeroDuration();  // zero: options_.request_timeout
  // Receives the body of a 2xx answer chunk by chunk instead of collecting
  // it; a non-OK Status aborts the transfer and is the call's result.
  std::function<absl::Status(absl::string_view)> on_data;
  // HTTP 409 means a name clash (create, rename): ALREADY_EXISTS.
  bool conflict_is_name_clash = false;
};

struct DockerClient::JsonReply {
  nlohmann::json doc;  // always an object
  std::string what;
};

struct DockerClient::Reply {
  long status = 0;
  std::string body;
  std::string what;  // "POST /v1.41/containers/create?name=x", for messages
};

namespace internal {

using json = nlohmann::json;

// Answers bigger than this are refused rather than held in memory.
inline constexpr size_t kMaxCollectedBytes = 64 << 20;
inline constexpr size_t kMaxErrorBodyBytes = 64 << 10;

// ---- requests and transport (docker_transport.cc) ----

std::string QueryEscape(absl::string_view s);

// Container ids and names, volume names and exec ids go into URL paths
// unescaped; refuse anything that could change the path's meaning.
absl::Status CheckName(absl::string_view what, absl::string_view value);
absl::Status CheckImageName(absl::string_view image);

// An HTTP error answer as a Status (see docker_api.h for the mapping).
absl::Status HttpError(long status, absl::string_view body, absl::string_view what, bool conflict_is_name_clash);

// Why the socket could not be reached, in words a person can act on.
absl::Status Unreachable(const std::string& socket_path, absl::string_view detail);

// The API version to speak with a server that offers `server` and accepts
// nothing below `server_min` (may be empty); FAILED_PRECONDITION when the
// two cannot agree.
absl::StatusOr<std::string> NegotiateApiVersion(absl::string_view server, absl::string_view server_min,
                                                absl::string_view socket_path);

// A file descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// A non-blocking connection to the daemon's unix socket, for the requests
// libcurl cannot make (a hijacked exec).
absl::StatusOr<Fd> ConnectUnixSocket(const std::string& socket_path);

// ---- JSON (docker_json.cc) ----

// At most n characters of s (whitespace trimmed), for messages.
std::string Clip(absl::string_view s, size_t n = 300);

// Docker's error answers are {"message": "..."}; anything else is quoted raw.
std::string DockerMessage(absl::string_view body);

absl::StatusOr<json> ParseJson(absl::string_view body, absl::string_view what);
absl::StatusOr<json> ParseJsonObject(absl::string_view body, absl::string_view what);

// Field readers that never throw: a missing or mistyped field reads as empty.
const json* Field(const json& j, const char* key);
std::string Str(const json& j, const char* key);
int64_t Int(const json& j, const char* key);
bool Bool(const json& j, const char* key);
const json& Obj(const json& j, const char* key);
std::vector<std::string> Strings(const json& j, const char* key);
std::map<std::string, std::string> StringMap(const json& j, const char* key);

// A container from GET /containers/{id}/json, and from one entry of
// GET /containers/json.
ContainerInfo ContainerFromInspect(const json& j);
ContainerInfo ContainerFromList(const json& j);

// The body of POST /containers/create; INVALID_ARGUMENT for a spec Docker
// would refuse or misread.
absl::StatusOr<json> CreateBody(const ContainerSpec& spec);

// ---- streams (docker_streams.cc) ----

// Collects output in memory, refusing to grow without bound.
absl::Status AppendBounded(std::string* out, absl::string_view data, absl::string_view what);

// Pull progress: JSON lines, one object per line, parsed as they arrive. An
// error line ends the stream with a Status saying what went wrong.
class PullStream {
 public:
  PullStream(std::string image, std::string what, const std::function<void(const PullProgress&)>& on_progress,
             Clock* clock, absl::Duration interval)
      : image_(std::move(image)), what_(std::move(what)), on_progress_(on_progress), clock_(clock), interval_(interval) {}

  absl::Status Feed(absl::string_view chunk);
  // After the stream ended: the last line (if unterminated) and a final report.
  absl::Status Finish();

 private:
  struct Layer {
    uint64_t current = 0;
    uint64_t total = 0;
    bool done = false;
  };

  absl::Status Line(absl::string_view line);
  static bool IsLayerStatus(absl::string_view s);
  void Report(bool final);

  const std::string image_;
  const std::string what_;
  const std::function<void(const PullProgress&)>& on_progress_;
  Clock* const clock_;
  const absl::Duration interval_;
  std::map<std::string, Layer> layers_;
  std::string pending_;
  absl::Time last_report_ = absl::InfinitePast();
};

// The multiplexed stream of logs and exec output: frames of an 8-byte header
// (stream: 0 stdin, 1 stdout, 2 stderr, 3 Docker's own error; three zero
// bytes; big-endian payload size) and the payload.
class Demuxer {
 public:
  using Sink = std::function<absl::Status(int stream, absl::string_view payload)>;
  Demuxer(std::string what, Sink sink) : what_(std::move(what)), sink_(std::move(sink)) {}

  absl::Status Feed(absl::string_view data);
  absl::Status Finish();

 private:
  const std::string what_;
  Sink sink_;
  std::string buf_;
};

}  // namespace internal
}  // namespace hoist::docker

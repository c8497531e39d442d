#pragma once

// FakeDockerEngine: a tiny HTTP/1.1 server on a unix socket in a temp dir,
// standing in for dockerd in unit tests of the Docker client. A test
// registers canned answers per method and target prefix and reads back the
// requests the server received. One thread, owned and joined by the object,
// serves one connection at a time and closes each after one answer.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace hoist::testing {

struct FakeResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
  // Sent with Transfer-Encoding: chunked, one chunk each (a progress stream);
  // replaces body.
  std::vector<std::string> chunks;
  // No Content-Length: the body ends when the server closes the connection.
  bool close_delimited = false;
  // Announces the whole body's length but sends only this many bytes of it,
  // then closes the connection.
  std::optional<size_t> cut_after;
  // Never answers; the connection is held until the client gives up (or the
  // engine stops).
  bool hang = false;
  // For 101 upgrades (exec start with stdin): after the head, reads what the
  // client sends until it half-closes, keeps it as the request's
  // upgraded_input, then sends the body and closes.
  bool read_until_half_close = false;
};

struct FakeRequest {
  std::string method;
  std::string target;  // path and query, as sent: "/v1.41/containers/create?name=x"
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string upgraded_input;
};

// One frame of Docker's multiplexed stream: stream 1 stdout, 2 stderr.
std::string MultiplexedFrame(int stream, absl::string_view payload);

class FakeDockerEngine {
 public:
  // Listens on <temp dir>/docker.sock and starts serving.
  static absl::StatusOr<std::unique_ptr<FakeDockerEngine>> Start();
  // Stops serving (cutting a held connection), joins the thread and removes
  // the temp dir.
  ~FakeDockerEngine();
  FakeDockerEngine(const FakeDockerEngine&) = delete;
  FakeDockerEngine& operator=(const FakeDockerEngine&) = delete;

  const std::string& socket_path() const { return socket_path_; }

  // Answers requests with this method whose target starts with
  // target_prefix; the longest matching prefix wins, and registering the
  // same pair again replaces the answer. Unmatched requests get a 404 whose
  // message names them.
  void On(absl::string_view method, absl::string_view target_prefix, FakeResponse response);
  // GET /version answering like an engine speaking api_version.
  void OnVersion(absl::string_view api_version = "1.41", absl::string_view min_api_version = "1.12");

  // Every request received so far, oldest first.
  std::vector<FakeRequest> Requests() const;
  // The latest request with this method and target prefix, if any.
  std::optional<FakeRequest> LastRequest(absl::string_view method, absl::string_view target_prefix) const;

 private:
  FakeDockerEngine() = default;
  void Serve();
  void HandleConnection(int fd);
  // Reads at least one more byte into *buf; false on EOF, error or stop.
  bool ReadMore(int fd, std::string* buf);
  // Waits until the client closes or the engine stops.
  void WaitForCloseOrStop(int fd);
  FakeResponse Route(const FakeRequest& request) const;

  std::string dir_;
  std::string socket_path_;
  int listen_fd_ = -1;
  int wake_read_ = -1;
  int wake_write_ = -1;
  std::thread thread_;

  mutable absl::Mutex mu_;
  // (method, target prefix) -> answer.
  std::map<std::pair<std::string, std::string>, FakeResponse> routes_ ABSL_GUARDED_BY(mu_);
  std::vector<FakeRequest> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist::testing

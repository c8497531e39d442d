#pragma once

// A deliberately tiny HTTP/1.1 server for hoistd's /health and /metrics:
// GET (and HEAD) on exact paths, one request per connection
// (Connection: close), served one connection at a time by a single thread
// that Stop() joins. Not a general web server: a slow client delays others
// by at most the read timeout, which is fine for probes and scrapes.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace hoist {

// What a handler sees of a request.
struct HttpServerRequest {
  std::string method;  // "GET" or "HEAD"
  std::string path;    // without the query, e.g. "/metrics"
  std::string query;   // after '?', may be empty
  std::map<std::string, std::string> headers;  // names lower-cased
};

// What a handler answers.
struct HttpServerReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpServerReply(const HttpServerRequest&)>;

struct HttpServerOptions {
  // Longer request lines get 414, larger header blocks 431.
  size_t max_request_line = 4096;
  size_t max_header_bytes = 16 * 1024;
  // A client that has not sent its full request by then gets 408.
  absl::Duration read_timeout = absl::Seconds(5);
  absl::Duration write_timeout = absl::Seconds(5);
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options = {});
  // Stops the server if it runs.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves `path` (exact match, query ignored) with `handler`, which runs on
  // the server's thread and must be thread-safe with respect to the rest of
  // the program. A later registration for the same path replaces the
  // earlier one. May be called before or after Start().
  void Handle(std::string path, HttpHandler handler);

  // Binds host:port (port 0 picks a free one; host is an address or name such
  // as "127.0.0.1", "::" or "0.0.0.0") and starts the accept thread.
  // FAILED_PRECONDITION if already started; UNAVAILABLE when the address
  // cannot be bound, with the reason.
  absl::Status Start(absl::string_view host, uint16_t port);
  // Same, from "host:port" or "[v6]:port".
  absl::Status Start(absl::string_view address);

  // The bound port, once Start() succeeded; 0 before.
  uint16_t port() const;

  // Closes the listening socket and joins the thread; an in-flight request is
  // abandoned. Idempotent.
  void Stop();

 private:
  void AcceptLoop();
  void ServeConnection(int fd);
  HttpServerReply Dispatch(const HttpServerRequest& request);

  const HttpServerOptions options_;
  absl::Mutex mu_;
  std::map<std::string, HttpHandler, std::less<>> handlers_ ABSL_GUARDED_BY(mu_);
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that Stop() signals
  uint16_t port_ = 0;
  std::thread thread_;
};

// Splits "host:port" / "[v6]:port" into its parts; INVALID_ARGUMENT naming
// what is wrong otherwise.
absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(absl::string_view address);

// The standard reason phrase for an HTTP status ("Not Found"), or "Status".
absl::string_view HttpReasonPhrase(int status);

}  // namespace hoist

#pragma once

// A small blocking HTTP client on libcurl, for health probes over TCP and for
// test fixtures. The Docker Engine client (unix socket, streaming) lives in
// agent/docker/.

#include <map>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace hoist {

struct HttpResponse {
  long status = 0;
  std::string body;
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::string body;
  std::map<std::string, std::string> headers;
  absl::Duration timeout = absl::Seconds(5);
  // A longer body ends the exchange with RESOURCE_EXHAUSTED: a health
  // endpoint cannot make the agent hold an unbounded answer.
  size_t max_body_bytes = 1 << 20;
};

// Sends one request. Any HTTP status is a successful exchange; transport
// failures (refused, timed out, malformed reply) are UNAVAILABLE or
// DEADLINE_EXCEEDED with curl's reason and the URL, and a body over
// max_body_bytes is RESOURCE_EXHAUSTED.
absl::StatusOr<HttpResponse> HttpDo(const HttpRequest& request);

// GET shorthand (a body of at most 1 MiB).
absl::StatusOr<HttpResponse> HttpGet(absl::string_view url, absl::Duration timeout = absl::Seconds(5));

}  // namespace hoist

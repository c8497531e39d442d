#include "shared/http_server.h"

#include <algorithm>
#include <climits>

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

// How long a connection is drained after an early error reply, so that the
// client reads the reply instead of a reset caused by unread request bytes.
constexpr absl::Duration kLingerAfterError = absl::Milliseconds(200);

enum class WaitResult { kReady, kTimeout, kStopped, kError };

// Waits until fd has `events` or the wake fd fires or the deadline passes.
WaitResult WaitFor(int fd, short events, int wake_fd, absl::Time deadline) {
  for (;;) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return WaitResult::kTimeout;
    pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
    // An infinite deadline waits without a timeout; a finite one is clamped
    // to what poll takes (a bare cast of an infinite duration wraps to 0 and
    // turns the wait into a busy loop).
    const int ms = left == absl::InfiniteDuration()
                       ? -1
                       : static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, INT32_MAX));
    int n = poll(fds, 2, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return WaitResult::kError;
    }
    if (fds[1].revents != 0) return WaitResult::kStopped;
    if (fds[0].revents != 0) return WaitResult::kReady;
  }
}

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(c) || absl::StrContains("!#$%&'*+-.^_`|~", c);
}

// A request that could not be parsed: the status to answer and why.
struct ParseError {
  int status;
  std::string reason;
};

// Parses the head (request line and headers, without the final blank line).
std::variant<HttpServerRequest, ParseError> ParseHead(absl::string_view head) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, '\n');
  for (auto& l : lines) {
    if (absl::EndsWith(l, "\r")) l.remove_suffix(1);
  }
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) {
    return ParseError{400, "the request line is not \"METHOD /path HTTP/1.1\""};
  }
  for (char c : parts[0]) {
    if (!IsTokenChar(c)) return ParseError{400, "the method has a character a method cannot have"};
  }
  if (!absl::StartsWith(parts[2], "HTTP/")) return ParseError{400, "the request line does not end in HTTP/1.x"};
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    return ParseError{505, "only HTTP/1.0 and HTTP/1.1 are served"};
  }
  if (parts[1].front() != '/') return ParseError{400, "the request target must be a path starting with '/'"};
  for (char c : parts[1]) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return ParseError{400, "the request target has a control or non-ASCII character"};
    }
  }
  HttpServerRequest req;
  req.method = std::string(parts[0]);
  absl::string_view target = parts[1];
  if (size_t q = target.find('?'); q != absl::string_view::npos) {
    req.query = std::string(target.substr(q + 1));
    target = target.substr(0, q);
  }
  req.path = std::string(target);
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return ParseError{400, "a header line is not \"Name: value\""};
    }
    absl::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!IsTokenChar(c)) return ParseError{400, "a header name has a character a name cannot have"};
    }
    req.headers[absl::AsciiStrToLower(name)] = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return req;
}

}  // namespace

absl::string_view HttpReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
  }
}

absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(absl::string_view address) {
  std::string host;
  absl::string_view port_text;
  if (absl::StartsWith(address, "[")) {
    size_t close = address.find("]:");
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("address \"", address, "\" is not \"[v6-address]:port\""));
    }
    host = std::string(address.substr(1, close - 1));
    port_text = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos || address.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", address, "\" is not \"host:port\" (write IPv6 as [::1]:port)"));
    }
    host = std::string(address.substr(0, colon));
    port_text = address.substr(colon + 1);
  }
  uint32_t port = 0;
  if (host.empty() || !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" needs a host and a port from 0 to 65535, like 127.0.0.1:9464"));
  }
  return std::make_pair(host, static_cast<uint16_t>(port));
}

HttpServer::HttpServer(HttpServerOptions options) : options_(options) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(std::string path, HttpHandler handler) {
  absl::MutexLock lock(&mu_);
  handlers_[std::move(path)] = std::move(handler);
}

uint16_t HttpServer::port() const { return port_; }

absl::Status HttpServer::Start(absl::string_view address) {
  auto hp = SplitHostPort(address);
  if (!hp.ok()) return hp.status();
  return Start(hp->first, hp->second);
}

absl::Status HttpServer::Start(absl::string_view host, uint16_t port) {
  if (thread_.joinable()) return absl::FailedPreconditionError("the HTTP server is already running");
  std::string where = absl::StrCat(host, ":", port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string host_str(host);
  int gai = getaddrinfo(host_str.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve HTTP listen address ", where, ": ", gai_strerror(gai)));
  }
  int fd = -1;
  std::string error = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) break;
    error = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", where, ": ", error));
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("getsockname for ", where, ": ", std::strerror(err)));
  }
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(err)));
  }
  listen_fd_ = fd;
  thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;  // an eventfd write cannot fail short of overflow
  thread_.join();
  close(listen_fd_);
  close(wake_fd_);
  listen_fd_ = wake_fd_ = -1;
}

void HttpServer::AcceptLoop() {
  for (;;) {
    WaitResult w = WaitFor(listen_fd_, POLLIN, wake_fd_, absl::InfiniteFuture());
    if (w == WaitResult::kStopped) return;
    if (w != WaitResult::kReady) {
      spdlog::error("HTTP server on port {}: poll failed: {}", port_, std::strerror(errno));
      return;
    }
    int conn = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      // Transient (the client went away, or fds ran out): keep serving.
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        spdlog::warn("HTTP server on port {}: accept: {}", port_, std::strerror(errno));
      }
      continue;
    }
    ServeConnection(conn);
    close(conn);
  }
}

void HttpServer::ServeConnection(int fd) {
  const absl::Time read_deadline = absl::Now() + options_.read_timeout;
  std::string buf;
  std::variant<HttpServerRequest, ParseError> parsed = ParseError{400, "incomplete request"};
  bool early_error = false;
  for (;;) {
    size_t head_end = buf.find("\r\n\r\n");
    size_t sep = 4;
    if (head_end == std::string::npos) {
      head_end = buf.find("\n\n");
      sep = 2;
    }
    size_t line_end = buf.find('\n');
    if (line_end == std::string::npos ? buf.size() > options_.max_request_line : line_end > options_.max_request_line) {
      parsed = ParseError{414, "the request line is too long"};
      early_error = true;
      break;
    }
    if (head_end != std::string::npos) {
      if (head_end + sep > options_.max_header_bytes) {
        parsed = ParseError{431, "the request headers are too large"};
        early_error = true;
      } else {
        parsed = ParseHead(absl::string_view(buf).substr(0, head_end));
      }
      break;
    }
    if (buf.size() > options_.max_header_bytes) {
      parsed = ParseError{431, "the request headers are too large"};
      early_error = true;
      break;
    }
    WaitResult w = WaitFor(fd, POLLIN, wake_fd_, read_deadline);
    if (w == WaitResult::kStopped || w == WaitResult::kError) return;
    if (w == WaitResult::kTimeout) {
      parsed = ParseError{408, "the request did not arrive in time"};
      early_error = true;
      break;
    }
    char chunk[4096];
    ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;  // the client left before finishing its request
    buf.append(chunk, static_cast<size_t>(n));
  }

  HttpServerReply reply;
  bool head_only = false;
  if (auto* err = std::get_if<ParseError>(&parsed)) {
    reply.status = err->status;
    reply.body = err->reason + "\n";
    early_error = true;
  } else {
    const auto& req = std::get<HttpServerRequest>(parsed);
    head_only = req.method == "HEAD";
    reply = Dispatch(req);
  }

  std::string out = absl::StrCat("HTTP/1.1 ", reply.status, " ", HttpReasonPhrase(reply.status), "\r\n",
                                 "Content-Type: ", reply.content_type, "\r\n",
                                 "Content-Length: ", reply.body.size(), "\r\n");
  if (reply.status == 405) out += "Allow: GET, HEAD\r\n";
  out += "Connection: close\r\n\r\n";
  if (!head_only) out += reply.body;

  const absl::Time write_deadline = absl::Now() + options_.write_timeout;
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      if (WaitFor(fd, POLLOUT, wake_fd_, write_deadline) != WaitResult::kReady) return;
      continue;
    }
    return;
  }
  shutdown(fd, SHUT_WR);
  if (!early_error) return;
  // Read what the client still sends, briefly, so that closing with unread
  // bytes does not reset the connection before it reads the reply.
  const absl::Time linger_deadline = absl::Now() + kLingerAfterError;
  size_t drained = 0;
  while (drained < (1 << 20) && WaitFor(fd, POLLIN, wake_fd_, linger_deadline) == WaitResult::kReady) {
    char chunk[4096];
    ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;
    drained += static_cast<size_t>(n);
  }
}

HttpServerReply HttpServer::Dispatch(const HttpServerRequest& request) {
  if (request.method != "GET" && request.method != "HEAD") {
    return {405, "text/plain; charset=utf-8", absl::StrCat("method ", request.method, " is not allowed; use GET\n")};
  }
  HttpHandler handler;
  {
    absl::MutexLock lock(&mu_);
    auto it = handlers_.find(request.path);
    if (it != handlers_.end()) handler = it->second;
  }
  if (!handler) return {404, "text/plain; charset=utf-8", absl::StrCat("no such path: ", request.path, "\n")};
  try {
    return handler(request);
  } catch (const std::exception& e) {
    spdlog::error("HTTP handler for {} failed: {}", request.path, e.what());
  } catch (...) {
    spdlog::error("HTTP handler for {} failed with an unknown exception", request.path);
  }
  return {500, "text/plain; charset=utf-8", "internal error\n"};
}

}  // namespace hoist

#include "tests/fakes/fake_docker_engine.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

void SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away; nothing to tell anyone
    data.remove_prefix(static_cast<size_t>(n));
  }
}

std::string ReasonPhrase(int status) {
  switch (status) {
    case 101: return "UPGRADED";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 500: return "Internal Server Error";
    default: return "Status";
  }
}

}  // namespace

std::string MultiplexedFrame(int stream, absl::string_view payload) {
  std::string frame(8, '\0');
  frame[0] = static_cast<char>(stream);
  const auto size = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) frame[4 + i] = static_cast<char>((size >> (8 * (3 - i))) & 0xff);
  frame.append(payload.data(), payload.size());
  return frame;
}

absl::StatusOr<std::unique_ptr<FakeDockerEngine>> FakeDockerEngine::Start() {
  std::unique_ptr<FakeDockerEngine> engine(new FakeDockerEngine());
  auto dir = MakeOwnedTempDir("hoist-fake-docker");
  if (!dir.ok()) return dir.status();
  engine->dir_ = *dir;
  engine->socket_path_ = *dir + "/docker.sock";
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  engine->wake_read_ = pipe_fds[0];
  engine->wake_write_ = pipe_fds[1];
  engine->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, engine->socket_path_.c_str(), sizeof(addr.sun_path) - 1);
  if (engine->listen_fd_ < 0 || bind(engine->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(engine->listen_fd_, 16) != 0) {
    return absl::InternalError(absl::StrCat("listening on ", engine->socket_path_, ": ", std::strerror(errno)));
  }
  engine->thread_ = std::thread([e = engine.get()] { e->Serve(); });
  return engine;
}

FakeDockerEngine::~FakeDockerEngine() {
  if (thread_.joinable()) {
    char byte = 1;
    (void)!write(wake_write_, &byte, 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_read_, wake_write_}) {
    if (fd >= 0) close(fd);
  }
  if (!dir_.empty()) RemoveTree(dir_);
}

void FakeDockerEngine::On(absl::string_view method, absl::string_view target_prefix, FakeResponse response) {
  absl::MutexLock lock(&mu_);
  routes_[{std::string(method), std::string(target_prefix)}] = std::move(response);
}

void FakeDockerEngine::OnVersion(absl::string_view api_version, absl::string_view min_api_version) {
  nlohmann::json body = {{"Version", "20.10.24"},
                         {"ApiVersion", std::string(api_version)},
                         {"MinAPIVersion", std::string(min_api_version)},
                         {"Os", "linux"}};
  On("GET", "/version", FakeResponse{.body = body.dump()});
}

std::vector<FakeRequest> FakeDockerEngine::Requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

std::optional<FakeRequest> FakeDockerEngine::LastRequest(absl::string_view method,
                                                         absl::string_view target_prefix) const {
  absl::MutexLock lock(&mu_);
  for (auto it = requests_.rbegin(); it != requests_.rend(); ++it) {
    if (it->method == method && absl::StartsWith(it->target, target_prefix)) return *it;
  }
  return std::nullopt;
}

FakeResponse FakeDockerEngine::Route(const FakeRequest& request) const {
  absl::MutexLock lock(&mu_);
  const FakeResponse* best = nullptr;
  size_t best_len = 0;
  for (const auto& [key, response] : routes_) {
    if (key.first == request.method && absl::StartsWith(request.target, key.second) &&
        (best == nullptr || key.second.size() > best_len)) {
      best = &response;
      best_len = key.second.size();
    }
  }
  if (best != nullptr) return *best;
  nlohmann::json body = {
      {"message", absl::StrCat("fake docker engine: nothing registered for ", request.method, " ", request.target)}};
  return FakeResponse{.status = 404, .body = body.dump()};
}

void FakeDockerEngine::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    HandleConnection(fd);
    close(fd);
  }
}

bool FakeDockerEngine::ReadMore(int fd, std::string* buf) {
  while (true) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (fds[1].revents != 0) return false;
    char chunk[16384];
    ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf->append(chunk, static_cast<size_t>(n));
    return true;
  }
}

void FakeDockerEngine::WaitForCloseOrStop(int fd) {
  std::string ignored;
  while (ReadMore(fd, &ignored)) ignored.clear();
}

void FakeDockerEngine::HandleConnection(int fd) {
  std::string buf;
  size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (!ReadMore(fd, &buf)) return;
  }
  FakeRequest request;
  std::vector<absl::string_view> lines = absl::StrSplit(absl::string_view(buf).substr(0, head_end), "\r\n");
  std::vector<absl::string_view> first = absl::StrSplit(lines[0], ' ');
  if (first.size() != 3) return;
  request.method = std::string(first[0]);
  request.target = std::string(first[1]);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(lines[i], absl::MaxSplits(':', 1));
    request.headers[absl::AsciiStrToLower(kv.first)] = std::string(absl::StripAsciiWhitespace(kv.second));
  }
  size_t length = 0;
  if (auto it = request.headers.find("content-length"); it != request.headers.end()) {
    (void)absl::SimpleAtoi(it->second, &length);
  }
  if (auto it = request.headers.find("expect"); it != request.headers.end() && absl::EqualsIgnoreCase(it->second, "100-continue")) {
    SendAll(fd, "HTTP/1.1 100 Continue\r\n\r\n");
  }
  buf.erase(0, head_end + 4);
  while (buf.size() < length) {
    if (!ReadMore(fd, &buf)) return;
  }
  request.body = buf.substr(0, length);
  buf.erase(0, length);

  FakeResponse response = Route(request);
  // Recorded before anything is sent, so that a client that has its answer
  // always finds its request here.
  auto record = [&] {
    absl::MutexLock lock(&mu_);
    requests_.push_back(request);
  };
  if (!response.read_until_half_close) record();
  if (response.hang) {
    WaitForCloseOrStop(fd);
    return;
  }

  std::string head = absl::StrCat("HTTP/1.1 ", response.status, " ", ReasonPhrase(response.status), "\r\n");
  if (!response.content_type.empty()) absl::StrAppend(&head, "Content-Type: ", response.content_type, "\r\n");
  for (const auto& [k, v] : response.headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
  const bool chunked = !response.chunks.empty();
  if (response.status == 101) {
    absl::StrAppend(&head, "Connection: Upgrade\r\nUpgrade: tcp\r\n");
  } else {
    absl::StrAppend(&head, "Connection: close\r\n");
    if (chunked) {
      absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
    } else if (!response.close_delimited) {
      absl::StrAppend(&head, "Content-Length: ", response.body.size(), "\r\n");
    }
  }
  absl::StrAppend(&head, "\r\n");
  SendAll(fd, head);

  if (response.read_until_half_close) {
    // Whatever followed the request on the connection is upgraded input too.
    request.upgraded_input = buf;
    while (ReadMore(fd, &request.upgraded_input)) {
    }
    record();
  }
  if (chunked) {
    for (const std::string& chunk : response.chunks) {
      if (chunk.empty()) continue;  // an empty chunk would end the body
      SendAll(fd, absl::StrCat(absl::Hex(chunk.size()), "\r\n", chunk, "\r\n"));
    }
    SendAll(fd, "0\r\n\r\n");
  } else if (response.cut_after) {
    SendAll(fd, absl::string_view(response.body).substr(0, *response.cut_after));
  } else {
    SendAll(fd, response.body);
  }
}

}  // namespace hoist::testing

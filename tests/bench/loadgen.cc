#include "tests/bench/loadgen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace hoist::bench {
namespace {

constexpr size_t kMaxFailureSamples = 20;

// One keep-alive connection; every error closes it.
class Connection {
 public:
  Connection(const LoadOptions& options) : options_(options) {}
  ~Connection() { Close(); }

  // Sends one GET and reads the answer; false with the reason on any failure.
  bool Get(absl::Time deadline, int* status, std::string* body, std::string* reason) {
    if (fd_ < 0 && !Open(deadline, reason)) return false;
    std::string request = absl::StrCat("GET ", options_.path, " HTTP/1.1\r\nHost: ", options_.host, "\r\n\r\n");
    if (!SendAll(request, deadline, reason)) return Fail(reason);
    // Headers.
    size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadMore(deadline, reason)) return Fail(reason);
    }
    absl::string_view head(buffer_.data(), header_end);
    if (!absl::StartsWith(head, "HTTP/1.") || head.size() < 12 || !absl::SimpleAtoi(head.substr(9, 3), status)) {
      *reason = absl::StrCat("malformed status line: ", head.substr(0, 40));
      return Fail(reason);
    }
    size_t length = 0;
    bool close_after = false;
    for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
      std::string lower = absl::AsciiStrToLower(line);
      if (absl::StartsWith(lower, "content-length:")) {
        (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(lower.substr(15)), &length);
      } else if (absl::StartsWith(lower, "connection:") && absl::StrContains(lower, "close")) {
        close_after = true;
      }
    }
    size_t need = header_end + 4 + length;
    while (buffer_.size() < need) {
      if (!ReadMore(deadline, reason)) return Fail(reason);
    }
    *body = buffer_.substr(header_end + 4, length);
    buffer_.erase(0, need);
    if (close_after) Close();
    return true;
  }

 private:
  bool Fail(std::string* reason) {
    (void)reason;
    Close();
    return false;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    buffer_.clear();
  }
  bool Wait(short events, absl::Time deadline, std::string* reason) {
    for (;;) {
      int ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
      pollfd p{fd_, events, 0};
      int n = poll(&p, 1, ms);
      if (n > 0) return true;
      if (n == 0) {
        *reason = "timed out";
        return false;
      }
      if (errno != EINTR) {
        *reason = absl::StrCat("poll: ", std::strerror(errno));
        return false;
      }
    }
  }
  bool Open(absl::Time deadline, std::string* reason) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) {
      *reason = absl::StrCat("socket: ", std::strerror(errno));
      return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(options_.port);
    inet_pton(AF_INET, options_.host.c_str(), &addr.sin_addr);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno != EINPROGRESS) {
        *reason = absl::StrCat("connect: ", std::strerror(errno));
        return Fail(reason);
      }
      if (!Wait(POLLOUT, deadline, reason)) return Fail(reason);
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        *reason = absl::StrCat("connect: ", std::strerror(err));
        return Fail(reason);
      }
    }
    return true;
  }
  bool SendAll(const std::string& data, absl::Time deadline, std::string* reason) {
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!Wait(POLLOUT, deadline, reason)) return false;
      } else {
        *reason = absl::StrCat("send: ", std::strerror(errno));
        return false;
      }
    }
    return true;
  }
  bool ReadMore(absl::Time deadline, std::string* reason) {
    for (;;) {
      char buf[8192];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        buffer_.append(buf, static_cast<size_t>(n));
        return true;
      }
      if (n == 0) {
        *reason = buffer_.empty() ? "connection closed before any answer" : "connection closed mid-answer";
        return false;
      }
      if (errno == EAGAIN || errno == EINTR) {
        if (!Wait(POLLIN, deadline, reason)) return false;
        continue;
      }
      *reason = absl::StrCat("recv: ", std::strerror(errno));
      return false;
    }
  }

  const LoadOptions& options_;
  int fd_ = -1;
  std::string buffer_;
};

double Percentile(std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

}  // namespace

LoadGenerator::~LoadGenerator() {
  if (!threads_.empty()) (void)Stop();
}

void LoadGenerator::Start() {
  for (int i = 0; i < options_.connections; ++i) threads_.emplace_back([this, i] { RunConnection(i); });
}

LoadStats LoadGenerator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  absl::MutexLock lock(&mu_);
  std::sort(latencies_ms_.begin(), latencies_ms_.end());
  stats_.p50_ms = Percentile(latencies_ms_, 0.50);
  stats_.p99_ms = Percentile(latencies_ms_, 0.99);
  stats_.max_ms = latencies_ms_.empty() ? 0 : latencies_ms_.back();
  return stats_;
}

LoadStats LoadGenerator::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void LoadGenerator::Record(bool ok, const std::string& body_or_reason, absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  latencies_ms_.push_back(absl::ToDoubleMilliseconds(latency));
  if (!ok) {
    ++stats_.failed;
    if (stats_.failure_samples.size() < kMaxFailureSamples) stats_.failure_samples.push_back(body_or_reason);
    return;
  }
  ++stats_.served;
  ++stats_.bodies[body_or_reason];
  if (stats_.first_body.empty()) stats_.first_body = body_or_reason;
  if (!stats_.last_body.empty() && stats_.last_body != body_or_reason) ++stats_.body_changes;
  stats_.last_body = body_or_reason;
}

void LoadGenerator::RunConnection(int index) {
  Connection conn(options_);
  const absl::Duration interval = absl::Seconds(options_.connections / options_.rate_per_second);
  // Connections start spread over one interval so the load is even.
  absl::Time next = absl::Now() + interval * index / options_.connections;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    absl::Time now = absl::Now();
    if (now < next) absl::SleepFor(std::min(next - now, absl::Milliseconds(50)));
    if (absl::Now() < next) continue;
    absl::Time due = next;
    next += interval;
    int status = 0;
    std::string body, reason;
    bool ok = conn.Get(absl::Now() + options_.request_timeout, &status, &body, &reason);
    if (ok && (status < 200 || status > 299)) {
      ok = false;
      reason = absl::StrCat("HTTP ", status, ": ", absl::StripAsciiWhitespace(body).substr(0, 80));
    }
    Record(ok, ok ? std::string(absl::StripAsciiWhitespace(body)) : reason, absl::Now() - due);
  }
}

}  // namespace hoist::bench

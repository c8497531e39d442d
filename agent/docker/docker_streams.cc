// The Docker answers that are streams: pull (and import) progress as JSON
// lines, the multiplexed stdout/stderr of logs and exec, and exec's hijacked
// connection, on which stdin goes out while the output comes back.

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/docker/docker_client.h"
#include "agent/docker/docker_internal.h"

namespace hoist::docker {
namespace internal {
namespace {

absl::Status PullStreamError(absl::string_view image, absl::string_view message) {
  std::string msg = absl::StrCat("pulling ", image, ": ", message);
  std::string lower = absl::AsciiStrToLower(message);
  if (absl::StrContains(lower, "not found") || absl::StrContains(lower, "manifest unknown") ||
      absl::StrContains(lower, "does not exist")) {
    return absl::NotFoundError(msg);
  }
  if (absl::StrContains(lower, "unauthorized") || absl::StrContains(lower, "denied")) {
    return absl::PermissionDeniedError(msg);
  }
  if (absl::StrContains(lower, "no space left")) return absl::ResourceExhaustedError(msg);
  // Registry down, connection reset, timeouts: worth retrying.
  return absl::UnavailableError(msg);
}

}  // namespace

absl::Status PullStream::Feed(absl::string_view chunk) {
  pending_.append(chunk.data(), chunk.size());
  size_t start = 0;
  for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1) {
    if (absl::Status s = Line(absl::string_view(pending_).substr(start, nl - start)); !s.ok()) return s;
  }
  pending_.erase(0, start);
  if (pending_.size() > (1 << 20)) {
    return absl::InternalError(absl::StrCat("docker ", what_, ": a progress line exceeds 1 MiB"));
  }
  return absl::OkStatus();
}

absl::Status PullStream::Finish() {
  if (absl::Status s = Line(pending_); !s.ok()) return s;
  pending_.clear();
  Report(/*final=*/true);
  return absl::OkStatus();
}

absl::Status PullStream::Line(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (line.empty()) return absl::OkStatus();
  json j = json::parse(line.begin(), line.end(), nullptr, false);
  if (!j.is_object()) {
    return absl::InternalError(absl::StrCat("docker ", what_, ": a progress line is not a JSON object: ", Clip(line, 200)));
  }
  std::string error = Str(j, "error");
  if (error.empty()) error = Str(Obj(j, "errorDetail"), "message");
  if (!error.empty()) return PullStreamError(image_, error);

  const std::string status = Str(j, "status");
  const std::string id = Str(j, "id");
  // Lines without an id are summaries ("Digest: ...", "Status: ..."); the
  // one whose id is the tag ("Pulling from ...") is not a layer either.
  if (id.empty() || !IsLayerStatus(status)) return absl::OkStatus();
  Layer& layer = layers_[id];
  if (status == "Downloading") {
    const json& detail = Obj(j, "progressDetail");
    int64_t current = Int(detail, "current");
    int64_t total = Int(detail, "total");
    if (total > 0) layer.total = static_cast<uint64_t>(total);
    if (current > 0) layer.current = static_cast<uint64_t>(current);
  } else if (status == "Download complete" || status == "Verifying Checksum" || status == "Extracting") {
    layer.current = layer.total;
  } else if (status == "Pull complete" || status == "Already exists") {
    layer.current = layer.total;
    layer.done = true;
  }
  Report(/*final=*/false);
  return absl::OkStatus();
}

bool PullStream::IsLayerStatus(absl::string_view s) {
  for (absl::string_view known : {"Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
                                  "Download complete", "Extracting", "Pull complete", "Already exists"}) {
    if (s == known) return true;
  }
  return false;
}

void PullStream::Report(bool final) {
  if (!on_progress_) return;
  absl::Time now = clock_->Now();
  if (!final && now - last_report_ < interval_) return;
  last_report_ = now;
  PullProgress p;
  for (const auto& [id, layer] : layers_) {
    p.bytes_done += layer.current;
    p.bytes_total += layer.total;
    p.layers_done += layer.done ? 1 : 0;
    ++p.layers_total;
  }
  on_progress_(p);
}

absl::Status Demuxer::Feed(absl::string_view data) {
  buf_.append(data.data(), data.size());
  size_t pos = 0;
  while (buf_.size() - pos >= 8) {
    const auto* h = reinterpret_cast<const unsigned char*>(buf_.data() + pos);
    if (h[0] > 3 || h[1] != 0 || h[2] != 0 || h[3] != 0) {
      return absl::InternalError(absl::StrCat("docker ", what_, ": the output is not Docker's multiplexed stream format"));
    }
    size_t size = (size_t{h[4]} << 24) | (size_t{h[5]} << 16) | (size_t{h[6]} << 8) | size_t{h[7]};
    if (buf_.size() - pos - 8 < size) break;
    int stream = h[0] == 3 ? 2 : h[0];
    if (absl::Status s = sink_(stream, absl::string_view(buf_).substr(pos + 8, size)); !s.ok()) return s;
    pos += 8 + size;
  }
  buf_.erase(0, pos);
  return absl::OkStatus();
}

absl::Status Demuxer::Finish() {
  if (!buf_.empty()) {
    return absl::InternalError(absl::StrCat("docker ", what_, ": the output stream ended inside a frame (",
                                            buf_.size(), " bytes left over)"));
  }
  return absl::OkStatus();
}

absl::Status AppendBounded(std::string* out, absl::string_view data, absl::string_view what) {
  if (out->size() + data.size() > kMaxCollectedBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("docker ", what, ": output exceeds ", kMaxCollectedBytes >> 20,
                                                     " MiB; stream it to a sink instead"));
  }
  out->append(data.data(), data.size());
  return absl::OkStatus();
}

}  // namespace internal

using internal::AppendBounded;
using internal::Bool;
using internal::CheckImageName;
using internal::CheckName;
using internal::Clip;
using internal::Demuxer;
using internal::Field;
using internal::HttpError;
using internal::json;
using internal::kMaxErrorBodyBytes;
using internal::Obj;
using internal::PullStream;
using internal::QueryEscape;
using internal::Str;

namespace {

// The client side of POST /exec/{id}/start on a connection Docker hijacks:
// the request goes out first; once the answer is 101 (or 200) the raw
// stream follows, stdin is written and the write side half-closed (the
// process sees EOF on its stdin), and the multiplexed output is read until
// Docker closes the connection. Any other answer is an HTTP error whose body
// is read up to its Content-Length.
class HijackedExec {
 public:
  HijackedExec(int fd, std::string what, std::string request, absl::string_view stdin_data, Demuxer* demux)
      : fd_(fd), what_(std::move(what)), to_send_(std::move(request)), stdin_data_(stdin_data), demux_(demux) {}

  // Runs the exchange; socket waits use real time (io_deadline): they are
  // I/O timeouts, not logic.
  absl::Status Run(absl::Time io_deadline) {
    char buf[64 * 1024];
    while (true) {
      QueueStdin();
      absl::Duration left = io_deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(absl::StrCat("docker ", what_, ": no end of output in time"));
      }
      pollfd p{fd_, static_cast<short>(POLLIN | (to_send_.empty() ? 0 : POLLOUT)), 0};
      int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000)));
      if (ready < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
      if (ready <= 0) continue;
      if ((p.revents & POLLOUT) != 0 && !to_send_.empty()) {
        if (absl::Status s = Send(); !s.ok()) return s;
      }
      if ((p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0) return absl::UnavailableError(absl::StrCat("docker ", what_, ": receiving failed: ", std::strerror(errno)));
      bool ended = false;
      if (absl::Status s = Receive(absl::string_view(buf, static_cast<size_t>(n)), &ended); !s.ok()) return s;
      if (ended) break;
    }
    if (!streaming_) return HttpError(status_, error_body_, what_, false);
    return demux_->Finish();
  }

 private:
  // Once the stream is up, stdin follows the request; all sent, the write
  // side is closed.
  void QueueStdin() {
    if (streaming_ && !stdin_queued_) {
      to_send_.append(stdin_data_.data(), stdin_data_.size());
      stdin_queued_ = true;
    }
    if (stdin_queued_ && to_send_.empty() && !write_closed_ && !stdin_data_.empty()) {
      shutdown(fd_, SHUT_WR);  // the process sees EOF on its stdin
      write_closed_ = true;
    }
  }

  absl::Status Send() {
    ssize_t n = send(fd_, to_send_.data(), to_send_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      to_send_.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET) && streaming_) {
      // The process exited without reading all of its stdin; its output
      // may still be buffered on the way.
      to_send_.clear();
      write_closed_ = true;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("docker ", what_, ": sending failed: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

  // Takes what one recv returned (empty: the connection closed); *ended
  // when the exchange is over.
  absl::Status Receive(absl::string_view data, bool* ended) {
    if (!head_done_) {
      if (data.empty()) {
        return absl::UnavailableError(absl::StrCat("docker ", what_, ": the daemon closed the connection without answering"));
      }
      if (absl::Status s = TakeHead(&data); !s.ok() || !head_done_) return s;
    } else if (data.empty()) {
      *ended = true;  // Docker closed the stream (or the error answer ended).
      return absl::OkStatus();
    }
    if (streaming_) return demux_->Feed(data);
    absl::string_view keep = data.substr(0, kMaxErrorBodyBytes - std::min(kMaxErrorBodyBytes, error_body_.size()));
    error_body_.append(keep.data(), keep.size());
    *ended = error_body_.size() >= std::min(error_body_length_, kMaxErrorBodyBytes);
    return absl::OkStatus();
  }

  // Collects the answer head; once it is whole, parses it and leaves in
  // *data what followed it.
  absl::Status TakeHead(absl::string_view* data) {
    head_.append(data->data(), data->size());
    size_t end = head_.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (head_.size() > 64 * 1024) return absl::InternalError(absl::StrCat("docker ", what_, ": answer head too long"));
      return absl::OkStatus();
    }
    head_done_ = true;
    *data = absl::string_view(head_).substr(end + 4);
    // "HTTP/1.1 101 UPGRADED": the status code sits at offset 9.
    if (!absl::StartsWith(head_, "HTTP/1.") || head_.size() < 12 || !absl::SimpleAtoi(head_.substr(9, 3), &status_)) {
      return absl::InternalError(absl::StrCat("docker ", what_, ": not an HTTP answer: ", Clip(head_.substr(0, end), 200)));
    }
    streaming_ = status_ == 101 || status_ == 200;
    for (absl::string_view line : absl::StrSplit(absl::string_view(head_).substr(0, end), "\r\n")) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
      size_t len = 0;
      if (absl::EqualsIgnoreCase(kv.first, "content-length") &&
          absl::SimpleAtoi(absl::StripAsciiWhitespace(kv.second), &len)) {
        error_body_length_ = len;
      }
    }
    return absl::OkStatus();
  }

  const int fd_;
  const std::string what_;
  std::string to_send_;
  const absl::string_view stdin_data_;
  Demuxer* const demux_;
  bool head_done_ = false;
  bool streaming_ = false;  // the answer was 101 (or 200): the raw stream follows
  bool stdin_queued_ = false;
  bool write_closed_ = false;
  std::string head_;
  long status_ = 0;
  size_t error_body_length_ = std::string::npos;  // Content-Length of an error answer
  std::string error_body_;
};

}  // namespace

absl::Status DockerClient::Pull(absl::string_view image, const std::function<void(const PullProgress&)>& on_progress) {
  auto ref = ParseImageReference(image);
  if (!ref.ok()) return ref.status();
  Call call;
  call.method = "POST";
  call.target = absl::StrCat("/images/create?fromImage=", QueryEscape(ref->repository), "&tag=", QueryEscape(ref->tag));
  call.timeout = options_.pull_timeout;
  PullStream stream(std::string(image), absl::StrCat("POST ", call.target), on_progress, clock_, options_.progress_interval);
  call.on_data = [&stream](absl::string_view chunk) { return stream.Feed(chunk); };
  auto reply = Expect(call, {});
  if (!reply.ok()) return reply.status();
  return stream.Finish();
}

absl::Status DockerClient::ImportImage(absl::string_view repository, absl::string_view tag,
                                       absl::string_view tar_path) {
  if (absl::Status s = CheckImageName(absl::StrCat(repository, ":", tag)); !s.ok()) return s;
  if (tar_path.empty()) return absl::InvalidArgumentError("tar_path is empty");
  Call call;
  call.method = "POST";
  call.target = absl::StrCat("/images/create?fromSrc=-&repo=", QueryEscape(repository), "&tag=", QueryEscape(tag));
  call.timeout = options_.archive_timeout;
  call.upload_path = std::string(tar_path);
  // The answer streams like a pull's, and an error comes inside the stream.
  const std::function<void(const PullProgress&)> no_progress;  // the stream keeps a reference
  PullStream stream(absl::StrCat(repository, ":", tag), absl::StrCat("POST ", call.target), no_progress, clock_,
                    options_.progress_interval);
  call.on_data = [&stream](absl::string_view chunk) { return stream.Feed(chunk); };
  auto reply = Expect(call, {});
  if (!reply.ok()) return reply.status();
  return stream.Finish();
}

absl::StatusOr<std::string> DockerClient::Logs(absl::string_view id_or_name, int tail) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  // With API 1.41 the content type does not say whether the stream is
  // multiplexed; the container's TTY setting does.
  auto inspected = InspectJson(id_or_name);
  if (!inspected.ok()) return inspected.status();
  const bool tty = Bool(Obj(inspected->doc, "Config"), "Tty");

  Call call;
  call.target = absl::StrCat("/containers/", id_or_name, "/logs?stdout=1&stderr=1&tail=",
                             tail < 0 ? std::string("all") : absl::StrCat(tail));
  std::string out;
  Demuxer demux(call.target, [&out, &call](int, absl::string_view payload) {
    return AppendBounded(&out, payload, call.target);
  });
  call.on_data = [&](absl::string_view chunk) {
    return tty ? AppendBounded(&out, chunk, call.target) : demux.Feed(chunk);
  };
  auto reply = Expect(call, {});
  if (!reply.ok()) return reply.status();
  if (absl::Status s = demux.Finish(); !s.ok()) return s;
  return out;
}

absl::StatusOr<ExecResult> DockerClient::Exec(absl::string_view id_or_name, const std::vector<std::string>& argv,
                                              absl::Duration timeout,
                                              const std::function<absl::Status(absl::string_view)>& stdout_sink,
                                              absl::string_view stdin_data) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  if (argv.empty()) return absl::InvalidArgumentError("exec: argv is empty");
  const absl::Time deadline = clock_->Now() + timeout;
  Call create;
  create.method = "POST";
  create.target = absl::StrCat("/containers/", id_or_name, "/exec");
  create.body = json{{"AttachStdin", !stdin_data.empty()},
                     {"AttachStdout", true},
                     {"AttachStderr", true},
                     {"Tty", false},
                     {"Cmd", argv}}
                    .dump();
  auto created = ExpectObject(create);
  if (!created.ok()) return created.status();
  const json& j = created->doc;
  std::string exec_id = Str(j, "Id");
  if (absl::Status s = CheckName("exec id", exec_id); !s.ok()) {
    return absl::InternalError(absl::StrCat("docker ", created->what, ": bad exec Id in the answer: ", s.message()));
  }

  ExecResult result;
  if (absl::Status s = StartExec(exec_id, deadline, stdin_data, stdout_sink, &result.output); !s.ok()) {
    if (absl::IsDeadlineExceeded(s)) {
      return absl::DeadlineExceededError(absl::StrCat("exec of ", argv[0], " in container ", id_or_name,
                                                      " did not finish within ", absl::FormatDuration(timeout),
                                                      " (it may still be running there)"));
    }
    return s;
  }

  // The stream ends when the process has exited, but Docker may record the
  // exit code a moment later.
  Call inspect;
  inspect.target = absl::StrCat("/exec/", exec_id, "/json");
  for (absl::Duration backoff = absl::Milliseconds(5);; backoff = std::min(backoff * 2, absl::Milliseconds(200))) {
    auto reply = ExpectObject(inspect);
    if (!reply.ok()) return reply.status();
    const json& info = reply->doc;
    if (!Bool(info, "Running")) {
      const json* code = Field(info, "ExitCode");
      if (code == nullptr || !code->is_number_integer()) {
        return absl::InternalError(absl::StrCat("docker ", reply->what, ": the finished exec has no ExitCode"));
      }
      result.exit_code = static_cast<int>(code->get<int64_t>());
      return result;
    }
    if (clock_->Now() + backoff > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("exec of ", argv[0], " in container ", id_or_name,
                                                      " closed its output but did not exit within ", absl::FormatDuration(timeout)));
    }
    clock_->SleepFor(backoff);
  }
}

absl::Status DockerClient::StartExec(const std::string& exec_id, absl::Time deadline, absl::string_view stdin_data,
                                     const std::function<absl::Status(absl::string_view)>& stdout_sink,
                                     std::string* output) {
  auto prefix = Prefix();
  if (!prefix.ok()) return prefix.status();
  const std::string path = absl::StrCat(*prefix, "/exec/", exec_id, "/start");
  const std::string what = absl::StrCat("POST ", path);
  const std::string body = R"({"Detach":false,"Tty":false})";
  std::string request = absl::StrCat("POST ", path,
                                     " HTTP/1.1\r\n"
                                     "Host: docker\r\n"
                                     "Content-Type: application/json\r\n"
                                     "Connection: Upgrade\r\n"
                                     "Upgrade: tcp\r\n"
                                     "Content-Length: ",
                                     body.size(), "\r\n\r\n", body);
  auto fd = internal::ConnectUnixSocket(options_.socket_path);
  if (!fd.ok()) return fd.status();
  Demuxer demux(what, [&](int stream, absl::string_view payload) {
    if (stream == 1 && stdout_sink) return stdout_sink(payload);
    return AppendBounded(output, payload, what);
  });
  HijackedExec exchange(fd->get(), what, std::move(request), stdin_data, &demux);
  return exchange.Run(absl::Now() + (deadline - clock_->Now()));
}

}  // namespace hoist::docker

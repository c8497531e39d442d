// DockerClient's transport: libcurl over the daemon's unix socket, one
// request and one reply per call on a connection of its own; HTTP errors
// turned into Status; the API version negotiated once; and the raw socket
// connection that a hijacked exec needs (libcurl cannot hand one over).

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/docker/docker_client.h"
#include "agent/docker/docker_internal.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::docker {

using internal::AppendBounded;
using internal::HttpError;
using internal::kMaxErrorBodyBytes;
using internal::ParseJsonObject;
using internal::Unreachable;

namespace {

constexpr absl::Duration kConnectTimeout = absl::Seconds(5);

void CurlGlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// "1.41" -> 41 for API major version 1; other majors are refused.
absl::StatusOr<int> ApiMinor(absl::string_view version) {
  std::pair<std::string, std::string> parts = absl::StrSplit(version, absl::MaxSplits('.', 1));
  int major = 0;
  int minor = 0;
  if (!absl::SimpleAtoi(parts.first, &major) || !absl::SimpleAtoi(parts.second, &minor) || major != 1) {
    return absl::InternalError(absl::StrCat("docker GET /version: unrecognised API version \"", version, "\""));
  }
  return minor;
}

struct Transfer {
  CURL* curl = nullptr;
  const std::function<absl::Status(absl::string_view)>* on_data = nullptr;
  std::string* body = nullptr;
  std::string what;
  absl::Status sink_status;
};

size_t OnCurlData(char* data, size_t size, size_t n, void* p) {
  auto* t = static_cast<Transfer*>(p);
  const size_t len = size * n;
  long code = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
  absl::string_view chunk(data, len);
  if (code >= 200 && code < 300 && *t->on_data) {
    t->sink_status = (*t->on_data)(chunk);
  } else if (code >= 200 && code < 300) {
    t->sink_status = AppendBounded(t->body, chunk, t->what);
  } else if (t->body->size() < kMaxErrorBodyBytes) {
    absl::string_view keep = chunk.substr(0, kMaxErrorBodyBytes - t->body->size());
    t->body->append(keep.data(), keep.size());
  }
  return t->sink_status.ok() ? len : 0;
}

size_t OnCurlRead(char* buffer, size_t size, size_t n, void* p) {
  size_t got = std::fread(buffer, 1, size * n, static_cast<FILE*>(p));
  if (got == 0 && std::ferror(static_cast<FILE*>(p))) return CURL_READFUNC_ABORT;
  return got;
}

}  // namespace

namespace internal {

std::string QueryEscape(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status CheckName(absl::string_view what, absl::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  for (char c : value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(what, " \"", value, "\" may contain only letters, digits, '_', '.' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckImageName(absl::string_view image) {
  if (image.empty()) return absl::InvalidArgumentError("image reference is empty");
  for (char c : image) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && !absl::StrContains("_.-/:@", c)) {
      return absl::InvalidArgumentError(absl::StrCat("image reference \"", image, "\" has an invalid character '", std::string(1, c), "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status HttpError(long status, absl::string_view body, absl::string_view what, bool conflict_is_name_clash) {
  std::string msg = absl::StrCat("docker ", what, ": HTTP ", status, ": ", DockerMessage(body));
  if (status == 404) return absl::NotFoundError(msg);
  if (status == 409) {
    return conflict_is_name_clash ? absl::AlreadyExistsError(msg) : absl::FailedPreconditionError(msg);
  }
  if (status == 400) return absl::InvalidArgumentError(msg);
  if (status == 401 || status == 403) return absl::PermissionDeniedError(msg);
  if (status >= 500) return absl::InternalError(msg);
  return absl::UnknownError(msg);
}

absl::Status Unreachable(const std::string& socket_path, absl::string_view detail) {
  std::string hint;
  struct stat st;
  if (stat(socket_path.c_str(), &st) != 0) {
    hint = "the socket does not exist (is dockerd running?)";
  } else if (!S_ISSOCK(st.st_mode)) {
    hint = "the path is not a socket";
  } else if (access(socket_path.c_str(), R_OK | W_OK) != 0) {
    hint = "permission denied (run the agent as root or in the docker group)";
  } else {
    hint = "connection refused (is dockerd running?)";
  }
  return absl::UnavailableError(
      absl::StrCat("the Docker daemon is not reachable at ", socket_path, ": ", hint, " (", detail, ")"));
}

absl::StatusOr<std::string> NegotiateApiVersion(absl::string_view server, absl::string_view server_min,
                                                absl::string_view socket_path) {
  auto minor = ApiMinor(server);
  if (!minor.ok()) return minor.status();
  if (*minor < kMinApiMinor) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the Docker daemon at ", socket_path, " speaks Engine API ", server, "; Hoist needs 1.", kMinApiMinor,
        " or newer (Docker Engine 19.03+): upgrade Docker on this host"));
  }
  if (!server_min.empty()) {
    auto min_minor = ApiMinor(server_min);
    if (min_minor.ok() && *min_minor > kMaxApiMinor) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the Docker daemon at ", socket_path, " accepts Engine API ", server_min, " or newer only; this agent speaks 1.",
          kMinApiMinor, " to 1.", kMaxApiMinor, ": upgrade hoist-agent"));
    }
  }
  return absl::StrCat("1.", std::min(*minor, kMaxApiMinor));
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<Fd> ConnectUnixSocket(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", socket_path, " is too long"));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Unreachable(socket_path, std::strerror(errno));
  }
  if (fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("fcntl: ", std::strerror(errno)));
  }
  return fd;
}

}  // namespace internal

DockerClient::DockerClient(std::string socket_path)
    : DockerClient(DockerClientOptions{.socket_path = std::move(socket_path)}) {}

DockerClient::DockerClient(DockerClientOptions options)
    : options_(std::move(options)), clock_(options_.clock != nullptr ? options_.clock : RealClock::Get()) {
  CurlGlobalInitOnce();
}

DockerClient::~DockerClient() = default;

absl::StatusOr<DockerClient::Reply> DockerClient::Perform(const Call& call) {
  std::string path = call.target;
  if (!call.unversioned) {
    auto prefix = Prefix();
    if (!prefix.ok()) return prefix.status();
    path = *prefix + path;
  }
  Reply reply;
  reply.what = absl::StrCat(call.method, " ", path);
  const absl::Duration timeout = call.timeout == absl::ZeroDuration() ? options_.request_timeout : call.timeout;

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> handle(curl_easy_init(), curl_easy_cleanup);
  if (!handle) return absl::InternalError("curl_easy_init failed");
  CURL* c = handle.get();
  const std::string url = "http://docker" + path;
  char errbuf[CURL_ERROR_SIZE] = {0};
  Transfer transfer;
  transfer.curl = c;
  transfer.on_data = &call.on_data;
  transfer.body = &reply.body;
  transfer.what = reply.what;
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, options_.socket_path.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(kConnectTimeout)));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnCurlData);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &transfer);

  curl_slist* headers = curl_slist_append(nullptr, "Expect:");
  std::unique_ptr<FILE, decltype(&std::fclose)> upload(nullptr, std::fclose);
  if (!call.upload_path.empty()) {
    upload.reset(std::fopen(call.upload_path.c_str(), "rb"));
    struct stat st;
    if (!upload || fstat(fileno(upload.get()), &st) != 0) {
      curl_slist_free_all(headers);
      return absl::InvalidArgumentError(absl::StrCat("cannot read ", call.upload_path, ": ", std::strerror(errno)));
    }
    headers = curl_slist_append(headers, "Content-Type: application/x-tar");
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    if (call.method != "PUT") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call.method.c_str());
    curl_easy_setopt(c, CURLOPT_READFUNCTION, OnCurlRead);
    curl_easy_setopt(c, CURLOPT_READDATA, upload.get());
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(st.st_size));
  } else if (call.method == "POST") {
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, call.body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
  } else if (call.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call.method.c_str());
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);

  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  if (rc != CURLE_OK) {
    if (!transfer.sink_status.ok()) return transfer.sink_status;
    std::string reason = errbuf[0] != 0 ? errbuf : curl_easy_strerror(rc);
    switch (rc) {
      case CURLE_COULDNT_CONNECT:
        return Unreachable(options_.socket_path, reason);
      case CURLE_OPERATION_TIMEDOUT:
        return absl::DeadlineExceededError(
            absl::StrCat("docker ", reply.what, ": no complete answer within ", absl::FormatDuration(timeout)));
      case CURLE_PARTIAL_FILE:
      case CURLE_WEIRD_SERVER_REPLY:
      case CURLE_BAD_CONTENT_ENCODING:
        return absl::InternalError(absl::StrCat("docker ", reply.what, ": the answer was malformed or cut short: ", reason));
      case CURLE_READ_ERROR:
        return absl::InternalError(absl::StrCat("docker ", reply.what, ": reading ", call.upload_path, " failed: ", reason));
      default:
        return absl::UnavailableError(
            absl::StrCat("docker ", reply.what, ": the Docker daemon at ", options_.socket_path, " failed to answer: ", reason));
    }
  }
  spdlog::debug("docker {} -> {}", reply.what, reply.status);
  return reply;
}

absl::StatusOr<DockerClient::Reply> DockerClient::Expect(const Call& call, std::initializer_list<long> ok_statuses) {
  auto reply = Perform(call);
  if (!reply.ok()) return reply.status();
  if (reply->status >= 200 && reply->status < 300) return reply;
  for (long ok : ok_statuses) {
    if (reply->status == ok) return reply;
  }
  return HttpError(reply->status, reply->body, reply->what, call.conflict_is_name_clash);
}

absl::StatusOr<DockerClient::JsonReply> DockerClient::ExpectObject(const Call& call) {
  auto reply = Expect(call, {});
  if (!reply.ok()) return reply.status();
  auto doc = ParseJsonObject(reply->body, reply->what);
  if (!doc.ok()) return doc.status();
  return JsonReply{std::move(*doc), std::move(reply->what)};
}

absl::StatusOr<std::string> DockerClient::Prefix() {
  {
    absl::MutexLock lock(&mu_);
    if (!api_version_.empty()) return absl::StrCat("/v", api_version_);
  }
  auto version = ApiVersion();
  if (!version.ok()) return version.status();
  return absl::StrCat("/v", *version);
}

absl::StatusOr<std::string> DockerClient::ApiVersion() {
  {
    absl::MutexLock lock(&mu_);
    if (!api_version_.empty()) return api_version_;
  }
  if (auto v = Version(); !v.ok()) return v.status();
  absl::MutexLock lock(&mu_);
  return api_version_;
}

}  // namespace hoist::docker

#include "agent/docker/docker_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
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
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::docker {

using json = nlohmann::json;

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

namespace {

// Answers bigger than this are refused rather than held in memory.
constexpr size_t kMaxCollectedBytes = 64 << 20;
constexpr size_t kMaxErrorBodyBytes = 64 << 10;
constexpr absl::Duration kConnectTimeout = absl::Seconds(5);
// Added to a caller's timeout for calls where Docker itself waits that long.
constexpr absl::Duration kTimeoutMargin = absl::Seconds(30);

void CurlGlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

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

// Container ids and names, volume names and exec ids go into URL paths
// unescaped; refuse anything that could change the path's meaning.
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

std::string Clip(absl::string_view s, size_t n = 300) {
  s = absl::StripAsciiWhitespace(s);
  if (s.size() <= n) return std::string(s);
  return absl::StrCat(s.substr(0, n), "...");
}

// Docker's error answers are {"message": "..."}; anything else is quoted raw.
std::string DockerMessage(absl::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_object()) {
    auto it = j.find("message");
    if (it != j.end() && it->is_string()) return it->get<std::string>();
  }
  return body.empty() ? "(no message)" : Clip(body);
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

// Why the socket could not be reached, in words a person can act on.
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

absl::StatusOr<json> ParseJson(absl::string_view body, absl::string_view what) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) {
    return absl::InternalError(absl::StrCat("docker ", what, ": the answer is not valid JSON: ", Clip(body, 200)));
  }
  return j;
}

absl::StatusOr<json> ParseJsonObject(absl::string_view body, absl::string_view what) {
  auto j = ParseJson(body, what);
  if (!j.ok()) return j.status();
  if (!j->is_object()) {
    return absl::InternalError(absl::StrCat("docker ", what, ": expected a JSON object, got: ", Clip(body, 200)));
  }
  return j;
}

// Field readers that never throw: a missing or mistyped field reads as empty.
const json* Field(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string Str(const json& j, const char* key) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::string();
}

int64_t Int(const json& j, const char* key) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_number_integer() ? f->get<int64_t>() : 0;
}

bool Bool(const json& j, const char* key) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_boolean() && f->get<bool>();
}

const json& Obj(const json& j, const char* key) {
  static const json kEmpty = json::object();
  const json* f = Field(j, key);
  return f != nullptr && f->is_object() ? *f : kEmpty;
}

std::vector<std::string> Strings(const json& j, const char* key) {
  std::vector<std::string> out;
  const json* f = Field(j, key);
  if (f == nullptr || !f->is_array()) return out;
  for (const json& v : *f) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

std::map<std::string, std::string> StringMap(const json& j, const char* key) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : Obj(j, key).items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

// Docker writes "0001-01-01T00:00:00Z" for "never".
absl::Time ParseDockerTime(absl::string_view text) {
  absl::Time t;
  std::string err;
  if (text.empty() || absl::StartsWith(text, "0001-") || !absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InfinitePast();
  }
  return t;
}

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

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

// ---------------------------------------------------------------------------
// Pull progress: JSON lines, one object per line, parsed as they arrive.

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

class PullStream {
 public:
  PullStream(std::string image, std::string what, const std::function<void(const PullProgress&)>& on_progress,
             Clock* clock, absl::Duration interval)
      : image_(std::move(image)), what_(std::move(what)), on_progress_(on_progress), clock_(clock), interval_(interval) {}

  absl::Status Feed(absl::string_view chunk) {
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

  // After the stream ended: the last line (if unterminated) and a final report.
  absl::Status Finish() {
    if (absl::Status s = Line(pending_); !s.ok()) return s;
    pending_.clear();
    Report(/*final=*/true);
    return absl::OkStatus();
  }

 private:
  struct Layer {
    uint64_t current = 0;
    uint64_t total = 0;
    bool done = false;
  };

  absl::Status Line(absl::string_view line) {
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

  static bool IsLayerStatus(absl::string_view s) {
    for (absl::string_view known : {"Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
                                    "Download complete", "Extracting", "Pull complete", "Already exists"}) {
      if (s == known) return true;
    }
    return false;
  }

  void Report(bool final) {
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

  const std::string image_;
  const std::string what_;
  const std::function<void(const PullProgress&)>& on_progress_;
  Clock* const clock_;
  const absl::Duration interval_;
  std::map<std::string, Layer> layers_;
  std::string pending_;
  absl::Time last_report_ = absl::InfinitePast();
};

// ---------------------------------------------------------------------------
// The multiplexed stream of logs and exec output: frames of an 8-byte header
// (stream: 0 stdin, 1 stdout, 2 stderr, 3 Docker's own error; three zero
// bytes; big-endian payload size) and the payload.

class Demuxer {
 public:
  using Sink = std::function<absl::Status(int stream, absl::string_view payload)>;
  Demuxer(std::string what, Sink sink) : what_(std::move(what)), sink_(std::move(sink)) {}

  absl::Status Feed(absl::string_view data) {
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

  absl::Status Finish() {
    if (!buf_.empty()) {
      return absl::InternalError(absl::StrCat("docker ", what_, ": the output stream ended inside a frame (",
                                              buf_.size(), " bytes left over)"));
    }
    return absl::OkStatus();
  }

 private:
  const std::string what_;
  Sink sink_;
  std::string buf_;
};

// Collects output in memory, refusing to grow without bound.
absl::Status AppendBounded(std::string* out, absl::string_view data, absl::string_view what) {
  if (out->size() + data.size() > kMaxCollectedBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("docker ", what, ": output exceeds ", kMaxCollectedBytes >> 20,
                                                     " MiB; stream it to a sink instead"));
  }
  out->append(data.data(), data.size());
  return absl::OkStatus();
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

// The summary of `docker ps`: "Up 3 minutes (healthy)", "Exited (1) 2 seconds ago".
void ParseSummary(absl::string_view status, ContainerInfo* info) {
  if (absl::StrContains(status, "(healthy)")) info->health = "healthy";
  if (absl::StrContains(status, "(unhealthy)")) info->health = "unhealthy";
  if (absl::StrContains(status, "(health: starting)")) info->health = "starting";
  if (absl::ConsumePrefix(&status, "Exited (")) {
    int code = 0;
    if (absl::SimpleAtoi(status.substr(0, status.find(')')), &code)) info->exit_code = code;
  }
}

// A host address a port is bound to that names one interface (not 0.0.0.0 or ::).
bool IsSpecificAddress(const std::string& ip) { return !ip.empty() && ip != "0.0.0.0" && ip != "::"; }

ContainerInfo ContainerFromInspect(const json& j) {
  ContainerInfo info;
  info.id = Str(j, "Id");
  info.name = Str(j, "Name");
  if (absl::StartsWith(info.name, "/")) info.name.erase(0, 1);
  const json& config = Obj(j, "Config");
  info.image = Str(config, "Image");
  info.image_id = Str(j, "Image");
  info.labels = StringMap(config, "Labels");
  const json& state = Obj(j, "State");
  info.state = Str(state, "Status");
  info.health = Str(Obj(state, "Health"), "Status");
  info.exit_code = static_cast<int>(Int(state, "ExitCode"));
  info.created_at = ParseDockerTime(Str(j, "Created"));
  info.started_at = ParseDockerTime(Str(state, "StartedAt"));
  const json& settings = Obj(j, "NetworkSettings");
  for (const auto& [port, bindings] : Obj(settings, "Ports").items()) {
    if (!bindings.is_array()) continue;
    for (const json& b : bindings) {
      int host_port = 0;
      if (absl::SimpleAtoi(Str(b, "HostPort"), &host_port) && host_port > 0 && host_port < 65536) {
        info.published_ports.emplace(port, static_cast<uint16_t>(host_port));
        if (std::string ip = Str(b, "HostIp"); IsSpecificAddress(ip)) info.published_ips.emplace(port, ip);
        break;
      }
    }
  }
  for (const auto& [name, net] : Obj(settings, "Networks").items()) {
    info.network_ips[name] = Str(net, "IPAddress");
  }
  return info;
}

ContainerInfo ContainerFromList(const json& j) {
  ContainerInfo info;
  info.id = Str(j, "Id");
  std::vector<std::string> names = Strings(j, "Names");
  if (!names.empty()) info.name = std::string(absl::StripPrefix(names[0], "/"));
  info.image = Str(j, "Image");
  info.image_id = Str(j, "ImageID");
  info.labels = StringMap(j, "Labels");
  info.state = Str(j, "State");
  ParseSummary(Str(j, "Status"), &info);
  info.created_at = absl::FromUnixSeconds(Int(j, "Created"));
  const json* ports = Field(j, "Ports");
  if (ports != nullptr && ports->is_array()) {
    for (const json& p : *ports) {
      int64_t pub = Int(p, "PublicPort");
      if (pub <= 0 || pub > 65535) continue;
      std::string type = Str(p, "Type");
      std::string key = absl::StrCat(Int(p, "PrivatePort"), "/", type.empty() ? "tcp" : type);
      if (info.published_ports.emplace(key, static_cast<uint16_t>(pub)).second) {
        if (std::string ip = Str(p, "IP"); IsSpecificAddress(ip)) info.published_ips.emplace(key, ip);
      }
    }
  }
  for (const auto& [name, net] : Obj(Obj(j, "NetworkSettings"), "Networks").items()) {
    info.network_ips[name] = Str(net, "IPAddress");
  }
  return info;
}

absl::StatusOr<json> CreateBody(const ContainerSpec& spec) {
  if (spec.image.empty()) return absl::InvalidArgumentError("container spec: image is empty");
  json body = json::object();
  body["Image"] = spec.image;
  if (!spec.command.empty()) body["Cmd"] = spec.command;
  json env = json::array();
  for (const auto& [k, v] : spec.env) {
    if (k.empty() || absl::StrContains(k, '=')) {
      return absl::InvalidArgumentError(absl::StrCat("container spec: env name \"", k, "\" is empty or contains '='"));
    }
    env.push_back(absl::StrCat(k, "=", v));
  }
  body["Env"] = env;
  body["Labels"] = spec.labels;

  json host = json::object();
  json exposed = json::object();
  json bindings = json::object();
  for (const PortBinding& p : spec.ports) {
    if (p.container_port == 0) return absl::InvalidArgumentError("container spec: a port has container_port 0");
    if (p.protocol != "tcp" && p.protocol != "udp" && p.protocol != "sctp") {
      return absl::InvalidArgumentError(absl::StrCat("container spec: port ", p.container_port, " has protocol \"",
                                                     p.protocol, "\"; use tcp, udp or sctp"));
    }
    std::string key = absl::StrCat(p.container_port, "/", p.protocol);
    exposed[key] = json::object();
    json binding = json::object();
    binding["HostIp"] = p.host_ip;
    binding["HostPort"] = p.host_port == 0 ? std::string() : absl::StrCat(p.host_port);
    bindings[key].push_back(binding);
  }
  if (!exposed.empty()) body["ExposedPorts"] = exposed;
  if (!bindings.empty()) host["PortBindings"] = bindings;

  json mounts = json::array();
  for (const Mount& m : spec.mounts) {
    if (m.source.empty() || m.target.empty() || m.target[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("container spec: mount \"", m.source, "\" -> \"", m.target,
                                                     "\" needs a source and an absolute target"));
    }
    json mount = json::object();
    mount["Type"] = m.is_bind() ? "bind" : "volume";
    mount["Source"] = m.source;
    mount["Target"] = m.target;
    mount["ReadOnly"] = m.read_only;
    mounts.push_back(mount);
  }
  if (!mounts.empty()) host["Mounts"] = mounts;
  if (!spec.restart_policy.empty()) host["RestartPolicy"] = {{"Name", spec.restart_policy}};
  host["Privileged"] = spec.privileged;
  if (!spec.network.empty()) {
    host["NetworkMode"] = spec.network;
    json endpoint = json::object();
    if (!spec.network_aliases.empty()) endpoint["Aliases"] = spec.network_aliases;
    body["NetworkingConfig"] = {{"EndpointsConfig", {{spec.network, endpoint}}}};
  } else if (!spec.network_aliases.empty()) {
    return absl::InvalidArgumentError("container spec: network aliases need a network (the default bridge has none)");
  }
  body["HostConfig"] = host;

  if (spec.healthcheck) {
    const HealthConfig& h = *spec.healthcheck;
    json hc = json::object();
    // An empty test keeps the image's HEALTHCHECK command with these timings.
    if (!h.test.empty()) {
      json test = json::array({"CMD"});
      for (const std::string& arg : h.test) test.push_back(arg);
      hc["Test"] = test;
    }
    hc["Interval"] = Nanos(h.interval);
    hc["Timeout"] = Nanos(h.timeout);
    hc["StartPeriod"] = Nanos(h.start_period);
    hc["Retries"] = h.retries;
    body["Healthcheck"] = hc;
  }
  if (spec.stop_timeout) {
    body["StopTimeout"] = absl::ToInt64Seconds(absl::Ceil(*spec.stop_timeout, absl::Seconds(1)));
  }
  return body;
}

// A file descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<ImageReference> ParseImageReference(absl::string_view image) {
  if (absl::Status s = CheckImageName(image); !s.ok()) return s;
  ImageReference ref;
  absl::string_view name = image;
  if (size_t at = image.find('@'); at != absl::string_view::npos) {
    name = image.substr(0, at);
    ref.tag = std::string(image.substr(at + 1));
    if (!absl::StrContains(ref.tag, ':')) {
      return absl::InvalidArgumentError(absl::StrCat("image reference \"", image, "\": the digest must look like sha256:<hex>"));
    }
  }
  // A colon after the last slash starts the tag; one before it is a port.
  size_t slash = name.rfind('/');
  size_t colon = name.rfind(':');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    if (ref.tag.empty()) ref.tag = std::string(name.substr(colon + 1));
    name = name.substr(0, colon);
  }
  ref.repository = std::string(name);
  if (ref.repository.empty() || ref.tag.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("image reference \"", image,
                                                   "\" needs a repository and a tag or digest (repo:1.2.3 or repo@sha256:...)"));
  }
  return ref;
}

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

absl::StatusOr<std::string> DockerClient::Version() {
  Call call;
  call.target = "/version";
  call.unversioned = true;
  auto reply = ExpectObject(call);
  if (!reply.ok()) return reply.status();
  const json& j = reply->doc;
  std::string engine = Str(j, "Version");
  std::string api = Str(j, "ApiVersion");
  if (engine.empty() || api.empty()) {
    return absl::InternalError(absl::StrCat("docker ", reply->what, ": the answer lacks Version or ApiVersion"));
  }
  auto negotiated = NegotiateApiVersion(api, Str(j, "MinAPIVersion"), options_.socket_path);
  if (!negotiated.ok()) return negotiated.status();
  absl::MutexLock lock(&mu_);
  if (api_version_ != *negotiated) {
    spdlog::info("Docker Engine {} at {}: using API {}", engine, options_.socket_path, *negotiated);
    api_version_ = *negotiated;
  }
  return engine;
}

absl::StatusOr<std::string> DockerClient::EngineId() {
  Call call;
  call.target = "/info";
  auto reply = ExpectObject(call);
  if (!reply.ok()) return reply.status();
  std::string id = Str(reply->doc, "ID");
  if (id.empty()) return absl::InternalError(absl::StrCat("docker ", reply->what, ": the answer lacks ID"));
  return id;
}

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

absl::StatusOr<ImageInfo> DockerClient::InspectImage(absl::string_view image) {
  if (absl::Status s = CheckImageName(image); !s.ok()) return s;
  Call call;
  call.target = absl::StrCat("/images/", image, "/json");
  auto reply = ExpectObject(call);
  if (!reply.ok()) return reply.status();
  const json& j = reply->doc;
  ImageInfo info;
  info.id = Str(j, "Id");
  if (info.id.empty()) return absl::InternalError(absl::StrCat("docker ", reply->what, ": the answer lacks Id"));
  info.repo_digests = Strings(j, "RepoDigests");
  info.repo_tags = Strings(j, "RepoTags");
  info.labels = StringMap(Obj(j, "Config"), "Labels");
  return info;
}

absl::StatusOr<std::string> DockerClient::Create(const ContainerSpec& spec) {
  if (!spec.name.empty()) {
    if (absl::Status s = CheckName("container name", spec.name); !s.ok()) return s;
  }
  auto body = CreateBody(spec);
  if (!body.ok()) return body.status();
  Call call;
  call.method = "POST";
  call.target = "/containers/create";
  if (!spec.name.empty()) absl::StrAppend(&call.target, "?name=", QueryEscape(spec.name));
  call.body = body->dump();
  call.conflict_is_name_clash = true;
  auto reply = ExpectObject(call);
  if (!reply.ok()) return reply.status();
  const json& j = reply->doc;
  std::string id = Str(j, "Id");
  if (id.empty()) return absl::InternalError(absl::StrCat("docker ", reply->what, ": the answer lacks Id"));
  for (const std::string& warning : Strings(j, "Warnings")) {
    spdlog::warn("docker created {} ({}) with a warning: {}", spec.name, id.substr(0, 12), warning);
  }
  return id;
}

absl::Status DockerClient::Start(absl::string_view id_or_name) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  Call call;
  call.method = "POST";
  call.target = absl::StrCat("/containers/", id_or_name, "/start");
  return Expect(call, {304}).status();
}

absl::Status DockerClient::Stop(absl::string_view id_or_name, absl::Duration timeout) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  Call call;
  call.method = "POST";
  int64_t secs = std::max<int64_t>(0, absl::ToInt64Seconds(absl::Ceil(timeout, absl::Seconds(1))));
  call.target = absl::StrCat("/containers/", id_or_name, "/stop?t=", secs);
  call.timeout = absl::Seconds(secs) + kTimeoutMargin;
  return Expect(call, {304}).status();
}

absl::Status DockerClient::Kill(absl::string_view id_or_name) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  Call call;
  call.method = "POST";
  call.target = absl::StrCat("/containers/", id_or_name, "/kill");
  return Expect(call, {}).status();
}

absl::Status DockerClient::Rename(absl::string_view id_or_name, absl::string_view new_name) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  if (absl::Status s = CheckName("new container name", new_name); !s.ok()) return s;
  Call call;
  call.method = "POST";
  call.target = absl::StrCat("/containers/", id_or_name, "/rename?name=", QueryEscape(new_name));
  call.conflict_is_name_clash = true;
  return Expect(call, {}).status();
}

absl::Status DockerClient::Remove(absl::string_view id_or_name, bool force, bool remove_volumes) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  Call call;
  call.method = "DELETE";
  call.target = absl::StrCat("/containers/", id_or_name, "?force=", force ? "1" : "0", "&v=", remove_volumes ? "1" : "0");
  return Expect(call, {}).status();
}

absl::StatusOr<int> DockerClient::Wait(absl::string_view id_or_name, absl::Duration timeout) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  Call call;
  call.method = "POST";
  call.target = absl::StrCat("/containers/", id_or_name, "/wait?condition=not-running");
  call.timeout = timeout;
  auto reply = ExpectObject(call);
  if (absl::IsDeadlineExceeded(reply.status())) {
    return absl::DeadlineExceededError(
        absl::StrCat("container ", id_or_name, " did not exit within ", absl::FormatDuration(timeout)));
  }
  if (!reply.ok()) return reply.status();
  const json& j = reply->doc;
  const json* code = Field(j, "StatusCode");
  if (code == nullptr || !code->is_number_integer()) {
    return absl::InternalError(absl::StrCat("docker ", reply->what, ": the answer lacks StatusCode: ", Clip(j.dump())));
  }
  if (std::string err = Str(Obj(j, "Error"), "Message"); !err.empty()) {
    return absl::InternalError(absl::StrCat("waiting for container ", id_or_name, ": ", err));
  }
  return static_cast<int>(code->get<int64_t>());
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
  const std::string request = absl::StrCat("POST ", path,
                                           " HTTP/1.1\r\n"
                                           "Host: docker\r\n"
                                           "Content-Type: application/json\r\n"
                                           "Connection: Upgrade\r\n"
                                           "Upgrade: tcp\r\n"
                                           "Content-Length: ",
                                           body.size(), "\r\n\r\n", body);

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options_.socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", options_.socket_path, " is too long"));
  }
  std::memcpy(addr.sun_path, options_.socket_path.c_str(), options_.socket_path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Unreachable(options_.socket_path, std::strerror(errno));
  }
  if (fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("fcntl: ", std::strerror(errno)));
  }

  Demuxer demux(what, [&](int stream, absl::string_view payload) {
    if (stream == 1 && stdout_sink) return stdout_sink(payload);
    return AppendBounded(output, payload, what);
  });
  // Phases: send the request, read the response head, then stream (writing
  // stdin and half-closing if there is any) until Docker closes. Socket
  // waits use real time: they are I/O timeouts, not logic.
  const absl::Time io_deadline = absl::Now() + (deadline - clock_->Now());
  std::string to_send = request;
  bool head_done = false;
  bool streaming = false;  // the answer was 101 (or 200): the raw stream follows
  bool stdin_queued = false;
  bool write_closed = false;
  std::string head;
  long status = 0;
  size_t error_body_length = std::string::npos;  // Content-Length of an error answer
  std::string error_body;
  char buf[64 * 1024];
  while (true) {
    if (streaming && !stdin_queued) {
      to_send.append(stdin_data.data(), stdin_data.size());
      stdin_queued = true;
    }
    if (stdin_queued && to_send.empty() && !write_closed && !stdin_data.empty()) {
      shutdown(fd.get(), SHUT_WR);  // the process sees EOF on its stdin
      write_closed = true;
    }
    absl::Duration left = io_deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("docker ", what, ": no end of output in time"));
    }
    pollfd p{fd.get(), static_cast<short>(POLLIN | (to_send.empty() ? 0 : POLLOUT)), 0};
    int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000)));
    if (ready < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    if (ready <= 0) continue;
    if ((p.revents & POLLOUT) != 0 && !to_send.empty()) {
      ssize_t n = send(fd.get(), to_send.data(), to_send.size(), MSG_NOSIGNAL);
      if (n > 0) {
        to_send.erase(0, static_cast<size_t>(n));
      } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET) && streaming) {
        // The process exited without reading all of its stdin; its output
        // may still be buffered on the way.
        to_send.clear();
        write_closed = true;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return absl::UnavailableError(absl::StrCat("docker ", what, ": sending failed: ", std::strerror(errno)));
      }
    }
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("docker ", what, ": receiving failed: ", std::strerror(errno)));
    absl::string_view data(buf, static_cast<size_t>(n));
    if (!head_done) {
      if (n == 0) {
        return absl::UnavailableError(absl::StrCat("docker ", what, ": the daemon closed the connection without answering"));
      }
      head.append(data.data(), data.size());
      size_t end = head.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (head.size() > 64 * 1024) return absl::InternalError(absl::StrCat("docker ", what, ": answer head too long"));
        continue;
      }
      head_done = true;
      data = absl::string_view(head).substr(end + 4);
      // "HTTP/1.1 101 UPGRADED": the status code sits at offset 9.
      if (!absl::StartsWith(head, "HTTP/1.") || head.size() < 12 || !absl::SimpleAtoi(head.substr(9, 3), &status)) {
        return absl::InternalError(absl::StrCat("docker ", what, ": not an HTTP answer: ", Clip(head.substr(0, end), 200)));
      }
      streaming = status == 101 || status == 200;
      for (absl::string_view line : absl::StrSplit(absl::string_view(head).substr(0, end), "\r\n")) {
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
        size_t len = 0;
        if (absl::EqualsIgnoreCase(kv.first, "content-length") &&
            absl::SimpleAtoi(absl::StripAsciiWhitespace(kv.second), &len)) {
          error_body_length = len;
        }
      }
    } else if (n == 0) {
      break;  // Docker closed the stream (or the error answer ended).
    }
    if (streaming) {
      if (absl::Status s = demux.Feed(data); !s.ok()) return s;
    } else {
      absl::string_view keep = data.substr(0, kMaxErrorBodyBytes - std::min(kMaxErrorBodyBytes, error_body.size()));
      error_body.append(keep.data(), keep.size());
      if (error_body.size() >= std::min(error_body_length, kMaxErrorBodyBytes)) break;
    }
  }
  if (!streaming) return HttpError(status, error_body, what, false);
  return demux.Finish();
}

absl::StatusOr<DockerClient::JsonReply> DockerClient::InspectJson(absl::string_view id_or_name) {
  Call call;
  call.target = absl::StrCat("/containers/", id_or_name, "/json");
  auto reply = ExpectObject(call);
  if (reply.ok() && Str(reply->doc, "Id").empty()) {
    return absl::InternalError(absl::StrCat("docker ", reply->what, ": the answer lacks Id"));
  }
  return reply;
}

absl::StatusOr<ContainerInfo> DockerClient::Inspect(absl::string_view id_or_name) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  auto reply = InspectJson(id_or_name);
  if (!reply.ok()) return reply.status();
  return ContainerFromInspect(reply->doc);
}

absl::StatusOr<std::vector<ContainerInfo>> DockerClient::List(const std::vector<std::string>& label_filters) {
  Call call;
  call.target = "/containers/json?all=1";
  if (!label_filters.empty()) {
    absl::StrAppend(&call.target, "&filters=", QueryEscape(json{{"label", label_filters}}.dump()));
  }
  auto reply = Expect(call, {});
  if (!reply.ok()) return reply.status();
  auto j = ParseJson(reply->body, reply->what);
  if (!j.ok()) return j.status();
  if (!j->is_array()) {
    return absl::InternalError(absl::StrCat("docker ", reply->what, ": expected a JSON array, got: ", Clip(reply->body, 200)));
  }
  std::vector<ContainerInfo> out;
  for (const json& c : *j) {
    ContainerInfo info = ContainerFromList(c);
    if (info.id.empty()) {
      return absl::InternalError(absl::StrCat("docker ", reply->what, ": a container in the answer lacks Id"));
    }
    out.push_back(std::move(info));
  }
  return out;
}

absl::Status DockerClient::CreateVolume(absl::string_view name, const std::map<std::string, std::string>& labels) {
  if (absl::Status s = CheckName("volume name", name); !s.ok()) return s;
  Call call;
  call.method = "POST";
  call.target = "/volumes/create";
  call.body = json{{"Name", std::string(name)}, {"Labels", labels}}.dump();
  return Expect(call, {}).status();
}

absl::StatusOr<std::map<std::string, std::string>> DockerClient::ObjectLabels(absl::string_view kind,
                                                                               absl::string_view name) {
  if (absl::Status s = CheckName(absl::StrCat(kind, " name"), name); !s.ok()) return s;
  Call call;
  call.target = absl::StrCat("/", kind, "s/", name);
  auto reply = ExpectObject(call);
  if (!reply.ok()) return reply.status();
  return StringMap(reply->doc, "Labels");
}

absl::StatusOr<std::map<std::string, std::string>> DockerClient::VolumeLabels(absl::string_view name) {
  return ObjectLabels("volume", name);
}

absl::StatusOr<std::map<std::string, std::string>> DockerClient::NetworkLabels(absl::string_view name) {
  return ObjectLabels("network", name);
}

absl::Status DockerClient::RemoveVolume(absl::string_view name) {
  if (absl::Status s = CheckName("volume name", name); !s.ok()) return s;
  Call call;
  call.method = "DELETE";
  call.target = absl::StrCat("/volumes/", name);
  return Expect(call, {}).status();
}

namespace {

// An exclusive flock on /run/lock/hoist-network-NAME.lock, held while it
// lives: agents that share one Docker daemon on one machine serialise
// creating a network, so that none finds it missing while another creates it
// (Docker's duplicate-name check is not atomic). Best effort: without the
// lock directory, or after waiting 30 s for a stuck holder, it goes on
// unlocked, and EnsureNetwork's removal of duplicates is the fallback.
class HostNetworkLock {
 public:
  explicit HostNetworkLock(absl::string_view name) {
    const std::string path = absl::StrCat("/run/lock/hoist-network-", name, ".lock");
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) break;
      if (absl::Now() > give_up) {
        spdlog::warn("network {}: {} is still locked after 30 s; creating it without the lock", name, path);
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  ~HostNetworkLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  HostNetworkLock(const HostNetworkLock&) = delete;
  HostNetworkLock& operator=(const HostNetworkLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace

absl::StatusOr<std::string> DockerClient::EnsureNetwork(absl::string_view name,
                                                       const std::map<std::string, std::string>& labels) {
  if (absl::Status s = CheckName("network name", name); !s.ok()) return s;
  HostNetworkLock host_lock(name);
  // Networks of exactly this name (the name filter matches substrings), oldest first.
  auto same_name = [&]() -> absl::StatusOr<std::vector<std::pair<absl::Time, std::string>>> {
    Call call;
    call.target = absl::StrCat("/networks?filters=", QueryEscape(json{{"name", {std::string(name)}}}.dump()));
    auto reply = Expect(call, {});
    if (!reply.ok()) return reply.status();
    auto j = ParseJson(reply->body, reply->what);
    if (!j.ok()) return j.status();
    if (!j->is_array()) {
      return absl::InternalError(absl::StrCat("docker ", reply->what, ": expected a JSON array, got: ", Clip(reply->body, 200)));
    }
    std::vector<std::pair<absl::Time, std::string>> out;  // (created, id)
    for (const json& n : *j) {
      if (!n.is_object() || Str(n, "Name") != name) continue;
      // RFC 3339 with trimmed nanoseconds: compared as times, not as strings.
      absl::Time created = absl::InfiniteFuture();
      std::string err;
      if (!absl::ParseTime(absl::RFC3339_full, Str(n, "Created"), &created, &err)) created = absl::InfiniteFuture();
      out.emplace_back(created, Str(n, "Id"));
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  auto found = same_name();
  if (!found.ok()) return found.status();
  if (found->size() == 1) {
    // A network of this name that Hoist did not make (an overlay of a swarm,
    // say) is not joined: containers on it may not start on this host.
    Call call;
    call.target = absl::StrCat("/networks/", found->front().second);
    auto reply = Expect(call, {});
    if (!reply.ok()) return reply.status();
    auto j = ParseJson(reply->body, reply->what);
    if (!j.ok()) return j.status();
    const std::string driver = Str(*j, "Driver");
    const std::string scope = Str(*j, "Scope");
    if (driver != "bridge" || scope != "local") {
      return absl::FailedPreconditionError(absl::StrCat(
          "network ", name, " exists with driver \"", driver, "\" and scope \"", scope,
          "\"; Hoist joins only a local bridge network of the deployment's name: remove that network or set "
          "another `network:` in the stack manifest"));
    }
    return found->front().second;
  }
  if (found->empty()) {
    Call call;
    call.method = "POST";
    call.target = "/networks/create";
    call.body = json{{"Name", std::string(name)}, {"Driver", "bridge"}, {"CheckDuplicate", true}, {"Labels", labels}}.dump();
    absl::Status created = Expect(call, {}).status();
    if (!created.ok() && !absl::IsFailedPrecondition(created)) return created;
  }
  // Docker's duplicate check is not atomic: agents sharing a daemon may each
  // create one. Every agent keeps the oldest and removes the others, which no
  // container can have joined yet (whoever saw only one saw the oldest).
  found = same_name();
  if (!found.ok()) return found.status();
  for (size_t i = 1; i < found->size(); ++i) {
    Call remove;
    remove.method = "DELETE";
    remove.target = absl::StrCat("/networks/", (*found)[i].second);
    if (absl::Status s = Expect(remove, {}).status(); !s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("cannot remove duplicate network {} ({}): {}", name, (*found)[i].second, s);
    }
  }
  if (found->empty()) return absl::InternalError(absl::StrCat("network ", name, " vanished right after it was created"));
  return found->front().second;
}

absl::Status DockerClient::GetArchive(absl::string_view id_or_name, absl::string_view path,
                                      const std::function<absl::Status(absl::string_view)>& sink) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  if (path.empty() || path[0] != '/') return absl::InvalidArgumentError(absl::StrCat("archive path \"", path, "\" is not absolute"));
  Call call;
  call.target = absl::StrCat("/containers/", id_or_name, "/archive?path=", QueryEscape(path));
  call.timeout = options_.archive_timeout;
  call.on_data = sink;
  return Expect(call, {}).status();
}

absl::Status DockerClient::PutArchive(absl::string_view id_or_name, absl::string_view path, absl::string_view tar_path) {
  if (absl::Status s = CheckName("container", id_or_name); !s.ok()) return s;
  if (path.empty() || path[0] != '/') return absl::InvalidArgumentError(absl::StrCat("archive path \"", path, "\" is not absolute"));
  if (tar_path.empty()) return absl::InvalidArgumentError("tar_path is empty");
  Call call;
  call.method = "PUT";
  call.target = absl::StrCat("/containers/", id_or_name, "/archive?path=", QueryEscape(path));
  call.timeout = options_.archive_timeout;
  call.upload_path = std::string(tar_path);
  return Expect(call, {}).status();
}

}  // namespace hoist::docker

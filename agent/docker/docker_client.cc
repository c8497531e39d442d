// The DockerApi calls that are one request and one reply (see
// docker_internal.h for where the transport, the JSON and the streams live).

#include "agent/docker/docker_client.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/docker/docker_internal.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::docker {

using internal::CheckImageName;
using internal::CheckName;
using internal::Clip;
using internal::ContainerFromInspect;
using internal::ContainerFromList;
using internal::CreateBody;
using internal::Field;
using internal::json;
using internal::NegotiateApiVersion;
using internal::Obj;
using internal::ParseJson;
using internal::QueryEscape;
using internal::Str;
using internal::StringMap;
using internal::Strings;

namespace {

// Added to a caller's timeout for calls where Docker itself waits that long.
constexpr absl::Duration kTimeoutMargin = absl::Seconds(30);

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

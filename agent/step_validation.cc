#include "agent/step_validation.h"

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/container_names.h"
#include "agent/haproxy.h"
#include "shared/labels.h"
#include "shared/status_macros.h"

namespace hoist::agent {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status Denied(absl::string_view field, absl::string_view problem) {
  return absl::PermissionDeniedError(absl::StrCat(field, ": ", problem));
}


absl::Status NonEmpty(absl::string_view field, absl::string_view value) {
  if (value.empty()) return Invalid(field, "missing");
  return absl::OkStatus();
}

absl::Status ValidDuration(absl::string_view field, const google::protobuf::Duration& d) {
  if (d.seconds() < 0 || d.nanos() < 0) return Invalid(field, "must not be negative");
  return absl::OkStatus();
}

bool IsVolumeName(absl::string_view name) {
  if (name.empty() || !absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

absl::Status ValidateInstance(absl::string_view field, const hoist::v1::InstanceRef& instance) {
  HOIST_RETURN_IF_ERROR(NonEmpty(absl::StrCat(field, ".deployment"), instance.deployment()));
  HOIST_RETURN_IF_ERROR(NonEmpty(absl::StrCat(field, ".service"), instance.service()));
  if (!hoist::v1::Slot_IsValid(instance.slot())) return Invalid(absl::StrCat(field, ".slot"), "unknown slot");
  return absl::OkStatus();
}

absl::Status ValidateSpec(absl::string_view field, const hoist::v1::ContainerSpec& spec) {
  HOIST_RETURN_IF_ERROR(ValidateImageRef(absl::StrCat(field, ".image"), spec.image()));
  for (const auto& [key, value] : spec.env()) {
    // The value is a secret: messages name the key only.
    if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos) {
      return Invalid(absl::StrCat(field, ".env"), absl::StrCat("\"", key, "\" is not a variable name"));
    }
  }
  for (int i = 0; i < spec.env_files_size(); ++i) {
    if (!absl::StartsWith(spec.env_files(i), "/")) {
      return Invalid(absl::StrCat(field, ".env_files[", i, "]"),
                     absl::StrCat("\"", spec.env_files(i), "\" is not an absolute path"));
    }
  }
  for (int i = 0; i < spec.ports_size(); ++i) {
    const auto& port = spec.ports(i);
    std::string f = absl::StrCat(field, ".ports[", i, "]");
    if (port.container_port() == 0 || port.container_port() > 65535) {
      return Invalid(f + ".container_port", "must be between 1 and 65535");
    }
    if (port.host_port() > 65535) return Invalid(f + ".host_port", "must be at most 65535");
    if (!port.protocol().empty() && port.protocol() != "tcp" && port.protocol() != "udp") {
      return Invalid(f + ".protocol", absl::StrCat("\"", port.protocol(), "\" is neither tcp nor udp"));
    }
  }
  for (int i = 0; i < spec.volumes_size(); ++i) {
    const auto& volume = spec.volumes(i);
    std::string f = absl::StrCat(field, ".volumes[", i, "]");
    if (volume.source().empty()) return Invalid(f + ".source", "missing");
    if (!absl::StartsWith(volume.source(), "/") && !IsVolumeName(volume.source())) {
      return Invalid(f + ".source", absl::StrCat("\"", volume.source(),
                                                 "\" is neither a volume name nor an absolute host path"));
    }
    if (!absl::StartsWith(volume.target(), "/")) {
      return Invalid(f + ".target", absl::StrCat("\"", volume.target(), "\" is not an absolute path"));
    }
  }
  for (const auto& [key, value] : spec.labels()) {
    if (key.empty()) return Invalid(absl::StrCat(field, ".labels"), "empty label key");
    if (absl::StartsWith(key, labels::kPrefix)) {
      return Invalid(absl::StrCat(field, ".labels"),
                     absl::StrCat("\"", key, "\" is Hoist's own label; keys starting with \"", labels::kPrefix,
                                  "\" are set by the agent"));
    }
  }
  const std::string& restart = spec.restart_policy();
  if (!restart.empty() && restart != "no" && restart != "always" && restart != "unless-stopped" &&
      restart != "on-failure") {
    return Invalid(absl::StrCat(field, ".restart_policy"),
                   absl::StrCat("\"", restart, "\" is not one of no, always, unless-stopped, on-failure"));
  }
  HOIST_RETURN_IF_ERROR(ValidDuration(absl::StrCat(field, ".stop_timeout"), spec.stop_timeout()));
  return absl::OkStatus();
}

absl::Status ValidateCheck(absl::string_view field, const hoist::v1::HealthCheck& check) {
  switch (check.kind_case()) {
    case hoist::v1::HealthCheck::kHttp:
      if (!absl::StartsWith(check.http().path(), "/")) {
        return Invalid(absl::StrCat(field, ".http.path"), "must start with \"/\"");
      }
      if (check.http().port() == 0 || check.http().port() > 65535) {
        return Invalid(absl::StrCat(field, ".http.port"), "must be between 1 and 65535");
      }
      break;
    case hoist::v1::HealthCheck::kTcp:
      if (check.tcp().port() == 0 || check.tcp().port() > 65535) {
        return Invalid(absl::StrCat(field, ".tcp.port"), "must be between 1 and 65535");
      }
      break;
    case hoist::v1::HealthCheck::kDocker:
      break;
    case hoist::v1::HealthCheck::kCommand:
      if (check.command().command().empty()) return Invalid(absl::StrCat(field, ".command.command"), "missing");
      break;
    case hoist::v1::HealthCheck::KIND_NOT_SET:
      return Invalid(field, "no kind of check (http, tcp, docker or command)");
  }
  HOIST_RETURN_IF_ERROR(ValidDuration(absl::StrCat(field, ".interval"), check.interval()));
  HOIST_RETURN_IF_ERROR(ValidDuration(absl::StrCat(field, ".timeout"), check.timeout()));
  HOIST_RETURN_IF_ERROR(ValidDuration(absl::StrCat(field, ".deadline"), check.deadline()));
  return absl::OkStatus();
}

// Backup ids and deployment names become directory names.
absl::Status ValidatePathComponent(absl::string_view field, absl::string_view value) {
  HOIST_RETURN_IF_ERROR(NonEmpty(field, value));
  if (value == "." || value == ".." || value.find('/') != absl::string_view::npos ||
      value.find('\0') != absl::string_view::npos) {
    return Invalid(field, absl::StrCat("\"", value, "\" cannot name a directory"));
  }
  return absl::OkStatus();
}

absl::Status ValidateBackup(const hoist::v1::Backup& backup) {
  HOIST_RETURN_IF_ERROR(ValidatePathComponent("backup.deployment", backup.deployment()));
  HOIST_RETURN_IF_ERROR(ValidatePathComponent("backup.backup_id", backup.backup_id()));
  if (backup.items().empty()) return Invalid("backup.items", "nothing to back up");
  for (int i = 0; i < backup.items_size(); ++i) {
    const auto& item = backup.items(i);
    std::string f = absl::StrCat("backup.items[", i, "]");
    switch (item.kind_case()) {
      case hoist::v1::BackupItem::kPostgres:
        HOIST_RETURN_IF_ERROR(ValidateInstance(f + ".postgres.instance", item.postgres().instance()));
        HOIST_RETURN_IF_ERROR(NonEmpty(f + ".postgres.database", item.postgres().database()));
        HOIST_RETURN_IF_ERROR(NonEmpty(f + ".postgres.user", item.postgres().user()));
        break;
      case hoist::v1::BackupItem::kVolume:
        if (!IsVolumeName(item.volume().volume())) {
          return Invalid(f + ".volume.volume", absl::StrCat("\"", item.volume().volume(), "\" is not a volume name"));
        }
        break;
      case hoist::v1::BackupItem::kConfig:
        if (!absl::StartsWith(item.config().path(), "/")) {
          return Invalid(f + ".config.path", absl::StrCat("\"", item.config().path(), "\" is not an absolute path"));
        }
        break;
      case hoist::v1::BackupItem::KIND_NOT_SET:
        return Invalid(f, "no kind (postgres, volume or config)");
    }
  }
  return absl::OkStatus();
}

bool IsHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

absl::Status ValidateRestore(const hoist::v1::Restore& restore) {
  HOIST_RETURN_IF_ERROR(ValidatePathComponent("restore.deployment", restore.deployment()));
  HOIST_RETURN_IF_ERROR(ValidatePathComponent("restore.backup_id", restore.backup_id()));
  if (restore.artifacts().empty()) return Invalid("restore.artifacts", "nothing to restore");
  bool needs_database = false;
  for (int i = 0; i < restore.artifacts_size(); ++i) {
    const auto& a = restore.artifacts(i);
    std::string f = absl::StrCat("restore.artifacts[", i, "]");
    if (a.kind() != "postgres" && a.kind() != "volume" && a.kind() != "config") {
      return Invalid(f + ".kind", absl::StrCat("\"", a.kind(), "\" is not postgres, volume or config"));
    }
    HOIST_RETURN_IF_ERROR(NonEmpty(f + ".source", a.source()));
    if (!absl::StartsWith(a.path(), "/")) return Invalid(f + ".path", "must be an absolute path");
    if (!IsHex64(a.sha256())) return Invalid(f + ".sha256", "must be 64 hex digits");
    if (a.kind() == "volume" && !IsVolumeName(a.source())) {
      return Invalid(f + ".source", absl::StrCat("\"", a.source(), "\" is not a volume name"));
    }
    if (a.kind() == "config" && !absl::StartsWith(a.source(), "/")) {
      return Invalid(f + ".source", "must be an absolute path");
    }
    needs_database = needs_database || a.kind() == "postgres";
  }
  if (needs_database) {
    HOIST_RETURN_IF_ERROR(ValidateInstance("restore.database_instance", restore.database_instance()));
    HOIST_RETURN_IF_ERROR(NonEmpty("restore.database_user", restore.database_user()));
  }
  return absl::OkStatus();
}

// Host paths no container gets, whatever the agent allows: the kernel's and
// the container runtimes' state (a bind of /proc/1/root is the host's root).
constexpr absl::string_view kNeverBound[] = {
    "/proc", "/sys", "/dev", "/boot", "/root", "/etc/shadow", "/etc/sudoers", "/var/lib/docker", "/var/lib/containerd",
    "/run/containerd", "/var/run/containerd", "/var/lib/kubelet"};

// The path made absolute and normal, without a trailing slash.
std::string NormalPath(absl::string_view path) {
  std::string out = std::filesystem::path(std::string(path)).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// True when a is b or a directory holding b.
bool IsOrHolds(absl::string_view a, absl::string_view b) {
  return a == b || a == "/" || absl::StartsWith(b, absl::StrCat(a, "/"));
}

absl::Status CheckSpecPolicy(absl::string_view field, const hoist::v1::ContainerSpec& spec,
                             const AgentPolicy& policy) {
  if (spec.privileged() && !policy.allow_privileged) {
    return Denied(absl::StrCat(field, ".privileged"),
                  "this agent does not run privileged containers (allow_privileged is off in its config)");
  }
  if ((spec.network() == "host" || absl::StartsWith(spec.network(), "container:")) && !policy.allow_host_network) {
    return Denied(absl::StrCat(field, ".network"),
                  absl::StrCat("\"", spec.network(), "\" shares a network stack that is not the container's own; this "
                               "agent does not allow it (hoist-agent --allow-host-network)"));
  }
  for (int i = 0; i < spec.env_files_size(); ++i) {
    HOIST_RETURN_IF_ERROR(CheckEnvFilePath(absl::StrCat(field, ".env_files[", i, "]"), spec.env_files(i), policy));
  }
  for (int i = 0; i < spec.volumes_size(); ++i) {
    const std::string& source = spec.volumes(i).source();
    if (!absl::StartsWith(source, "/")) continue;
    std::string f = absl::StrCat(field, ".volumes[", i, "].source");
    if (ExposesDockerSocket(source, policy)) {
      if (!policy.allow_docker_socket) {
        return Denied(f, absl::StrCat("\"", source,
                                      "\" exposes the Docker socket, which is root on this host; this agent does "
                                      "not allow it (allow_docker_socket is off in its config)"));
      }
      continue;
    }
    const std::string normal = NormalPath(source);
    for (absl::string_view never : kNeverBound) {
      if (IsOrHolds(normal, never) || IsOrHolds(never, normal)) {
        return Denied(f, absl::StrCat("\"", source, "\" is or holds ", never,
                                      ", which no container of this agent mounts (it reaches the host's kernel or "
                                      "container runtime)"));
      }
    }
    if (!policy.allow_host_paths) {
      return Denied(f, absl::StrCat("\"", source,
                                    "\" is a host path; this agent mounts named volumes only "
                                    "(allow_host_paths is off in its config)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckServes(absl::string_view field, absl::string_view deployment, const AgentPolicy& policy) {
  if (!policy.Serves(deployment)) {
    return Denied(field, absl::StrCat("this agent does not serve deployment \"", deployment, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateImageRef(absl::string_view field, absl::string_view image) {
  if (image.empty()) return Invalid(field, "missing");
  for (char c : image) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return Invalid(field, absl::StrCat("\"", image, "\" contains white space"));
    }
  }
  size_t at = image.find('@');
  if (at != absl::string_view::npos) {
    absl::string_view digest = image.substr(at + 1);
    if (at == 0 || digest.find(':') == absl::string_view::npos || absl::EndsWith(digest, ":")) {
      return Invalid(field, absl::StrCat("\"", image, "\" has a malformed digest; expected repository@sha256:<hex>"));
    }
    return absl::OkStatus();
  }
  size_t slash = image.rfind('/');
  absl::string_view last = slash == absl::string_view::npos ? image : image.substr(slash + 1);
  size_t colon = last.find(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == last.size()) {
    return Invalid(field, absl::StrCat("\"", image, "\" names no tag or digest; pin it (repository:1.5.0 or ",
                                       "repository@sha256:...)"));
  }
  return absl::OkStatus();
}

absl::Status CheckEnvFilePath(absl::string_view field, absl::string_view path, const AgentPolicy& policy) {
  if (policy.env_file_dirs.empty()) {
    return Denied(field, absl::StrCat("this agent reads no env files (\"", path,
                                      "\"); allow their directory with hoist-agent --env-file-dirs DIR"));
  }
  // The file and the directories as named and as they resolve: a symlink
  // must not lead out.
  auto resolved = [](absl::string_view p) {
    std::error_code ec;
    std::filesystem::path real = std::filesystem::canonical(std::string(p), ec);
    return ec ? NormalPath(p) : real.string();
  };
  std::vector<std::string> dirs;
  for (const std::string& dir : policy.env_file_dirs) dirs.push_back(resolved(dir));
  for (const std::string& form : {NormalPath(path), resolved(path)}) {
    const bool inside = std::any_of(dirs.begin(), dirs.end(),
                                    [&](const std::string& dir) { return form != dir && IsOrHolds(dir, form); });
    if (!inside) {
      return Denied(field, absl::StrCat("\"", path, "\"", form == NormalPath(path) ? "" : absl::StrCat(" (", form, ")"),
                                        " is outside the directories this agent reads env files from (",
                                        absl::StrJoin(policy.env_file_dirs, ", "), "; hoist-agent --env-file-dirs)"));
    }
  }
  return absl::OkStatus();
}

bool ExposesDockerSocket(absl::string_view host_path, const AgentPolicy& policy) {
  const std::string source = NormalPath(host_path);
  for (const std::string& socket : {policy.docker_socket_path, std::string("/var/run/docker.sock"),
                                    std::string("/run/docker.sock")}) {
    if (!socket.empty() && IsOrHolds(source, socket)) return true;
  }
  return false;
}

static absl::Status ValidateForwardUpdate(const hoist::v1::ForwardUpdate& f) {
  HOIST_RETURN_IF_ERROR(NonEmpty("forward_update.deployment", f.deployment()));
  HOIST_RETURN_IF_ERROR(NonEmpty("forward_update.service", f.service()));
  if (!IsValidContainerName(f.service()) || f.service().find('.') != std::string::npos) {
    return Invalid("forward_update.service", absl::StrCat("\"", f.service(), "\" is not a service name"));
  }
  HOIST_RETURN_IF_ERROR(NonEmpty("forward_update.network", f.network()));
  std::set<uint32_t> seen;
  for (int i = 0; i < f.ports_size(); ++i) {
    const hoist::v1::ForwardPort& p = f.ports(i);
    const std::string field = absl::StrCat("forward_update.ports[", i, "]");
    if (p.listen_port() == 0 || p.listen_port() > 65535) {
      return Invalid(absl::StrCat(field, ".listen_port"), absl::StrCat(p.listen_port(), " is not a port (1-65535)"));
    }
    if (!seen.insert(p.listen_port()).second) {
      return Invalid(absl::StrCat(field, ".listen_port"), absl::StrCat(p.listen_port(), " is listed twice"));
    }
    for (int k = 0; k < p.targets_size(); ++k) {
      const hoist::v1::ProxyBackend& t = p.targets(k);
      const std::string tf = absl::StrCat(field, ".targets[", k, "]");
      unsigned char buf[sizeof(in6_addr)];
      if (inet_pton(AF_INET, t.address().c_str(), buf) != 1 && inet_pton(AF_INET6, t.address().c_str(), buf) != 1) {
        return Invalid(absl::StrCat(tf, ".address"),
                       absl::StrCat("\"", t.address(), "\" is not an IP address (the forwarder dials IPs only)"));
      }
      if (t.port() == 0 || t.port() > 65535) {
        return Invalid(absl::StrCat(tf, ".port"), absl::StrCat(t.port(), " is not a port (1-65535)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStep(const hoist::v1::Step& step) {
  HOIST_RETURN_IF_ERROR(NonEmpty("step_id", step.step_id()));
  if (step.step_id().size() > kMaxStepIdLength) {
    return Invalid("step_id", absl::StrCat("longer than ", kMaxStepIdLength, " bytes"));
  }
  for (char c : step.step_id()) {
    if (absl::ascii_iscntrl(static_cast<unsigned char>(c))) return Invalid("step_id", "contains control characters");
  }
  if (step.epoch() == 0) return Invalid("epoch", "missing; every step carries its leader's epoch");
  if (step.deadline().seconds() < 0) return Invalid("deadline", "before 1970");
  switch (step.action_case()) {
    case hoist::v1::Step::kPullImage:
      return ValidateImageRef("pull_image.image", step.pull_image().image());
    case hoist::v1::Step::kStartInstance: {
      const auto& start = step.start_instance();
      HOIST_RETURN_IF_ERROR(ValidateInstance("start_instance.instance", start.instance()));
      HOIST_RETURN_IF_ERROR(NonEmpty("start_instance.version", start.version()));
      if (!start.container_name().empty() && !IsValidContainerName(start.container_name())) {
        return Invalid("start_instance.container_name",
                       absl::StrCat("\"", start.container_name(), "\" is not a Docker container name"));
      }
      if (!start.has_spec()) return Invalid("start_instance.spec", "missing");
      if (start.has_proxy()) HOIST_RETURN_IF_ERROR(ValidateProxyConfig("start_instance.proxy", start.proxy()));
      return ValidateSpec("start_instance.spec", start.spec());
    }
    case hoist::v1::Step::kStopInstance:
      HOIST_RETURN_IF_ERROR(ValidateInstance("stop_instance.instance", step.stop_instance().instance()));
      return ValidDuration("stop_instance.timeout", step.stop_instance().timeout());
    case hoist::v1::Step::kRemoveInstance:
      return ValidateInstance("remove_instance.instance", step.remove_instance().instance());
    case hoist::v1::Step::kProbeHealth:
      HOIST_RETURN_IF_ERROR(ValidateInstance("probe_health.instance", step.probe_health().instance()));
      if (!step.probe_health().has_check()) return Invalid("probe_health.check", "missing");
      return ValidateCheck("probe_health.check", step.probe_health().check());
    case hoist::v1::Step::kRunJob: {
      const auto& job = step.run_job();
      HOIST_RETURN_IF_ERROR(NonEmpty("run_job.deployment", job.deployment()));
      HOIST_RETURN_IF_ERROR(NonEmpty("run_job.name", job.name()));
      HOIST_RETURN_IF_ERROR(NonEmpty("run_job.version", job.version()));
      if (!job.has_spec()) return Invalid("run_job.spec", "missing");
      return ValidateSpec("run_job.spec", job.spec());
    }
    case hoist::v1::Step::kBackup:
      return ValidateBackup(step.backup());
    case hoist::v1::Step::kRestore:
      return ValidateRestore(step.restore());
    case hoist::v1::Step::kProxyUpdate:
      HOIST_RETURN_IF_ERROR(NonEmpty("proxy_update.deployment", step.proxy_update().deployment()));
      return ValidateProxyUpdate(step.proxy_update());
    case hoist::v1::Step::kReadEnvNames: {
      const auto& read = step.read_env_names();
      HOIST_RETURN_IF_ERROR(NonEmpty("read_env_names.deployment", read.deployment()));
      if (read.env_files().empty()) return Invalid("read_env_names.env_files", "empty; name at least one env file");
      for (int i = 0; i < read.env_files_size(); ++i) {
        if (!absl::StartsWith(read.env_files(i), "/")) {
          return Invalid(absl::StrCat("read_env_names.env_files[", i, "]"),
                         absl::StrCat("\"", read.env_files(i), "\" is not an absolute path"));
        }
      }
      for (int i = 0; i < read.names_size(); ++i) {
        const std::string& n = read.names(i);
        bool ok = !n.empty() && (absl::ascii_isalpha(static_cast<unsigned char>(n[0])) || n[0] == '_');
        for (char c : n) ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_');
        if (!ok) {
          return Invalid(absl::StrCat("read_env_names.names[", i, "]"),
                         absl::StrCat("\"", n, "\" is not an environment variable name"));
        }
      }
      return absl::OkStatus();
    }
    case hoist::v1::Step::kForwardUpdate:
      return ValidateForwardUpdate(step.forward_update());
    case hoist::v1::Step::ACTION_NOT_SET:
      return Invalid("action", "missing; the step names nothing to do");
  }
  return Invalid("action", "unknown action");
}

absl::Status CheckPolicy(const hoist::v1::Step& step, const AgentPolicy& policy) {
  switch (step.action_case()) {
    case hoist::v1::Step::kStartInstance:
      HOIST_RETURN_IF_ERROR(CheckServes("start_instance.instance.deployment",
                                        step.start_instance().instance().deployment(), policy));
      return CheckSpecPolicy("start_instance.spec", step.start_instance().spec(), policy);
    case hoist::v1::Step::kStopInstance:
      return CheckServes("stop_instance.instance.deployment", step.stop_instance().instance().deployment(), policy);
    case hoist::v1::Step::kRemoveInstance:
      return CheckServes("remove_instance.instance.deployment", step.remove_instance().instance().deployment(),
                         policy);
    case hoist::v1::Step::kProbeHealth:
      return CheckServes("probe_health.instance.deployment", step.probe_health().instance().deployment(), policy);
    case hoist::v1::Step::kRunJob:
      HOIST_RETURN_IF_ERROR(CheckServes("run_job.deployment", step.run_job().deployment(), policy));
      return CheckSpecPolicy("run_job.spec", step.run_job().spec(), policy);
    case hoist::v1::Step::kBackup: {
      HOIST_RETURN_IF_ERROR(CheckServes("backup.deployment", step.backup().deployment(), policy));
      for (int i = 0; i < step.backup().items_size(); ++i) {
        const auto& item = step.backup().items(i);
        if (item.has_postgres()) {
          HOIST_RETURN_IF_ERROR(CheckServes(absl::StrCat("backup.items[", i, "].postgres.instance.deployment"),
                                            item.postgres().instance().deployment(), policy));
        }
      }
      if (policy.backup_dir.empty()) return Denied("backup", "this agent has no backup directory configured");
      return absl::OkStatus();
    }
    case hoist::v1::Step::kRestore: {
      const auto& restore = step.restore();
      HOIST_RETURN_IF_ERROR(CheckServes("restore.deployment", restore.deployment(), policy));
      if (restore.has_database_instance()) {
        HOIST_RETURN_IF_ERROR(CheckServes("restore.database_instance.deployment",
                                          restore.database_instance().deployment(), policy));
      }
      if (policy.backup_dir.empty()) return Denied("restore", "this agent has no backup directory configured");
      // Artifacts are read only from where this agent writes backups.
      std::string dir = absl::StrCat(policy.backup_dir, "/", restore.deployment(), "/", restore.backup_id(), "/");
      for (int i = 0; i < restore.artifacts_size(); ++i) {
        std::string path = std::filesystem::path(restore.artifacts(i).path()).lexically_normal().string();
        std::string normal_dir = std::filesystem::path(dir).lexically_normal().string();
        if (!absl::StartsWith(path, normal_dir)) {
          return Denied(absl::StrCat("restore.artifacts[", i, "].path"),
                        absl::StrCat("\"", restore.artifacts(i).path(), "\" is outside this backup's directory ",
                                     normal_dir));
        }
      }
      return absl::OkStatus();
    }
    case hoist::v1::Step::kProxyUpdate:
      return CheckServes("proxy_update.deployment", step.proxy_update().deployment(), policy);
    case hoist::v1::Step::kReadEnvNames: {
      HOIST_RETURN_IF_ERROR(CheckServes("read_env_names.deployment", step.read_env_names().deployment(), policy));
      for (int i = 0; i < step.read_env_names().env_files_size(); ++i) {
        HOIST_RETURN_IF_ERROR(CheckEnvFilePath(absl::StrCat("read_env_names.env_files[", i, "]"),
                                               step.read_env_names().env_files(i), policy));
      }
      return absl::OkStatus();
    }
    case hoist::v1::Step::kForwardUpdate:
      return CheckServes("forward_update.deployment", step.forward_update().deployment(), policy);
    case hoist::v1::Step::kPullImage:
    case hoist::v1::Step::ACTION_NOT_SET:
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace hoist::agent

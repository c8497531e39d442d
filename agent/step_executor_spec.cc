// A step's ContainerSpec made Docker's, for start_instance, run_job and the
// forwarders: env files merged under the spec's own env, host ports the
// agent picks, and named volumes and the deployment's network made on first
// use, or refused when another deployment (or a compose project) owns them.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/env_file.h"
#include "agent/step_executor.h"
#include "shared/labels.h"
#include "shared/proto_time.h"

namespace hoist::agent {
namespace {

// A port the kernel has free on `ip` (an address of this host) right now, or
// 0 when it cannot tell (not an address of this host, for one).
uint16_t FreePortOn(const std::string& ip, const std::string& protocol) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    len = sizeof(*v6);
  } else {
    return 0;
  }
  int fd = socket(ss.ss_family, protocol == "udp" ? SOCK_DGRAM : SOCK_STREAM, 0);
  if (fd < 0) return 0;
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    port = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  }
  close(fd);
  return port;
}

// The spec's env files in order, then its own env on top of them.
absl::Status MergeEnv(absl::string_view field, const hoist::v1::ContainerSpec& spec, docker::ContainerSpec* out) {
  for (int i = 0; i < spec.env_files_size(); ++i) {
    auto file_env = ReadEnvFile(spec.env_files(i));
    if (!file_env.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ".env_files[", i, "]: ", file_env.status().message()));
    }
    for (auto& [key, value] : *file_env) out->env[key] = std::move(value);
  }
  for (const auto& [key, value] : spec.env()) out->env[key] = value;
  return absl::OkStatus();
}

std::vector<docker::PortBinding> PortBindings(const hoist::v1::ContainerSpec& spec) {
  std::vector<docker::PortBinding> out;
  for (const auto& port : spec.ports()) {
    docker::PortBinding binding;
    binding.container_port = static_cast<uint16_t>(port.container_port());
    binding.host_port = static_cast<uint16_t>(port.host_port());
    binding.host_ip = port.host_ip();
    binding.protocol = port.protocol().empty() ? "tcp" : port.protocol();
    // A port "Docker chooses" on a specific address is chosen here and given
    // to Docker as fixed: Docker would choose again whenever the container
    // restarts (after a reboot, say), and a proxy on another host that was
    // told the first one would lose it.
    if (binding.host_port == 0 && !binding.host_ip.empty() && binding.host_ip != "0.0.0.0" &&
        binding.host_ip != "::") {
      binding.host_port = FreePortOn(binding.host_ip, binding.protocol);
    }
    out.push_back(std::move(binding));
  }
  return out;
}

}  // namespace

absl::StatusOr<docker::ContainerSpec> StepExecutor::DockerSpec(const StepContext& ctx, absl::string_view field,
                                                               const hoist::v1::ContainerSpec& spec, std::string name,
                                                               std::map<std::string, std::string> labels) {
  (void)ctx;
  docker::ContainerSpec out;
  out.name = std::move(name);
  out.image = spec.image();
  out.command.assign(spec.command().begin(), spec.command().end());
  if (absl::Status s = MergeEnv(field, spec, &out); !s.ok()) return s;
  out.ports = PortBindings(spec);
  const std::string deployment =
      labels.contains(std::string(labels::kDeployment)) ? labels.at(std::string(labels::kDeployment)) : "";
  if (absl::Status s = AddVolumeMounts(field, spec, deployment, &out); !s.ok()) return s;
  out.network = spec.network();
  if (absl::Status s = JoinNetwork(field, labels, deployment, &out); !s.ok()) return s;
  out.network_aliases.assign(spec.network_aliases().begin(), spec.network_aliases().end());
  for (const auto& [key, value] : spec.labels()) labels[key] = value;
  for (const auto& [key, value] : policy_.extra_labels) labels.emplace(key, value);
  out.labels = std::move(labels);
  out.restart_policy = spec.restart_policy();
  if (!spec.docker_healthcheck().empty()) {
    docker::HealthConfig health;
    health.test.assign(spec.docker_healthcheck().begin(), spec.docker_healthcheck().end());
    out.healthcheck = std::move(health);
  }
  if (spec.has_stop_timeout()) out.stop_timeout = ToDuration(spec.stop_timeout());
  out.privileged = spec.privileged();
  return out;
}

absl::Status StepExecutor::CheckOwner(absl::string_view what, const std::string& name,
                                      const std::map<std::string, std::string>& theirs,
                                      const std::string& deployment) const {
  // A network or volume of another deployment, or of a docker compose
  // project, is not this step's to join or mount (unless the agent allows it).
  if (policy_.allow_foreign_objects) return absl::OkStatus();
  std::string owner;
  if (auto it = theirs.find(std::string(labels::kDeployment)); it != theirs.end() && it->second != deployment) {
    owner = absl::StrCat("deployment ", it->second);
  } else if (it == theirs.end()) {
    if (auto compose = theirs.find("com.docker.compose.project"); compose != theirs.end()) {
      owner = absl::StrCat("docker compose project ", compose->second);
    }
  }
  if (owner.empty()) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(what, " ", name, " belongs to ", owner, ", not to deployment ",
                                                  deployment, "; this agent does not share it "
                                                  "(hoist-agent --allow-foreign-objects)"));
}

absl::Status StepExecutor::AddVolumeMounts(absl::string_view field, const hoist::v1::ContainerSpec& spec,
                                           const std::string& deployment, docker::ContainerSpec* out) {
  for (int i = 0; i < spec.volumes_size(); ++i) {
    const auto& volume = spec.volumes(i);
    docker::Mount mount{volume.source(), volume.target(), volume.read_only()};
    if (!mount.is_bind()) {
      const std::string f = absl::StrCat(field, ".volumes[", i, "].source");
      auto theirs = docker_->VolumeLabels(mount.source);
      if (theirs.ok()) {
        if (absl::Status s = CheckOwner("volume", mount.source, *theirs, deployment); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat(f, ": ", s.message()));
        }
      } else if (absl::IsNotFound(theirs.status())) {
        // Made here with the deployment's labels, so that it is known as its own.
        std::map<std::string, std::string> mine = {{std::string(labels::kManaged), "true"}};
        if (!deployment.empty()) mine[std::string(labels::kDeployment)] = deployment;
        for (const auto& [key, value] : policy_.extra_labels) mine.emplace(key, value);
        if (absl::Status s = docker_->CreateVolume(mount.source, mine); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat(f, ": cannot create volume ", mount.source, ": ", s.message()));
        }
      } else {
        return absl::Status(theirs.status().code(), absl::StrCat(f, ": ", theirs.status().message()));
      }
    }
    out->mounts.push_back(std::move(mount));
  }
  return absl::OkStatus();
}

absl::Status StepExecutor::JoinNetwork(absl::string_view field, const std::map<std::string, std::string>& labels,
                                       const std::string& deployment, docker::ContainerSpec* out) {
  // Docker's own networks exist; a deployment's network is created on first use.
  if (out->network.empty() || out->network == "bridge" || out->network == "host" || out->network == "none") {
    return absl::OkStatus();
  }
  // A network that exists must be this deployment's (or nobody's in particular).
  if (!absl::StartsWith(out->network, "container:")) {
    auto theirs = docker_->NetworkLabels(out->network);
    absl::Status owned = theirs.ok() ? CheckOwner("network", out->network, *theirs, deployment)
                         : absl::IsNotFound(theirs.status()) ? absl::OkStatus()
                                                             : theirs.status();
    if (!owned.ok()) return absl::Status(owned.code(), absl::StrCat(field, ".network: ", owned.message()));
  }
  std::map<std::string, std::string> net_labels = {{std::string(labels::kManaged), "true"}};
  if (auto it = labels.find(std::string(labels::kDeployment)); it != labels.end()) net_labels.insert(*it);
  for (const auto& [key, value] : policy_.extra_labels) net_labels.emplace(key, value);
  auto network_id = docker_->EnsureNetwork(out->network, net_labels);
  if (!network_id.ok()) {
    const absl::Status& s = network_id.status();
    return absl::Status(s.code(), absl::StrCat(field, ".network: cannot create network ", out->network, ": ", s.message()));
  }
  out->network = *network_id;  // join by id: the name may briefly be ambiguous
  return absl::OkStatus();
}

}  // namespace hoist::agent

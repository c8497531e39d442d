#include "agent/inventory.h"

#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/container_names.h"
#include "shared/proto_time.h"
#include "shared/labels.h"

namespace hoist::agent {
namespace {

hoist::v1::ContainerState StateOf(const std::string& state) {
  static const std::map<std::string, hoist::v1::ContainerState> kStates = {
      {"created", hoist::v1::CONTAINER_STATE_CREATED},       {"running", hoist::v1::CONTAINER_STATE_RUNNING},
      {"paused", hoist::v1::CONTAINER_STATE_PAUSED},         {"restarting", hoist::v1::CONTAINER_STATE_RESTARTING},
      {"exited", hoist::v1::CONTAINER_STATE_EXITED},         {"removing", hoist::v1::CONTAINER_STATE_REMOVING},
      {"dead", hoist::v1::CONTAINER_STATE_DEAD},
  };
  auto it = kStates.find(state);
  return it == kStates.end() ? hoist::v1::CONTAINER_STATE_UNSPECIFIED : it->second;
}

hoist::v1::Health HealthOf(const std::string& health) {
  if (health == "healthy") return hoist::v1::HEALTH_HEALTHY;
  if (health == "unhealthy") return hoist::v1::HEALTH_UNHEALTHY;
  if (health == "starting") return hoist::v1::HEALTH_STARTING;
  return hoist::v1::HEALTH_UNSPECIFIED;
}

// The content digest of the image a container runs, "" when unknown.
std::string DigestOf(docker::DockerApi& docker, const docker::ContainerInfo& c,
                     std::map<std::string, std::string>* cache) {
  size_t at = c.image.find("@sha256:");
  if (at != std::string::npos) return c.image.substr(at + 1);
  std::string key = c.image_id.empty() ? c.image : c.image_id;
  if (key.empty()) return "";
  if (auto it = cache->find(key); it != cache->end()) return it->second;
  std::string digest;
  auto image = docker.InspectImage(key);
  if (image.ok()) {
    size_t colon = c.image.rfind(':');
    size_t slash = c.image.rfind('/');
    std::string repository =
        colon != std::string::npos && (slash == std::string::npos || colon > slash) ? c.image.substr(0, colon) : c.image;
    for (const std::string& rd : image->repo_digests) {
      size_t sep = rd.find('@');
      if (sep == std::string::npos) continue;
      if (digest.empty() || rd.substr(0, sep) == repository) digest = rd.substr(sep + 1);
    }
  }
  (*cache)[key] = digest;
  return digest;
}

}  // namespace

google::protobuf::RepeatedPtrField<hoist::v1::PortMapping> PublishedPorts(const docker::ContainerInfo& c) {
  google::protobuf::RepeatedPtrField<hoist::v1::PortMapping> out;
  for (const auto& [key, host_port] : c.published_ports) {
    if (host_port == 0) continue;
    absl::string_view port = key, protocol = "tcp";
    if (size_t slash = key.find('/'); slash != std::string::npos) {
      port = absl::string_view(key).substr(0, slash);
      protocol = absl::string_view(key).substr(slash + 1);
    }
    uint32_t container_port = 0;
    if (!absl::SimpleAtoi(port, &container_port) || container_port == 0 || container_port > 65535) continue;
    hoist::v1::PortMapping* m = out.Add();
    m->set_container_port(container_port);
    m->set_host_port(host_port);
    m->set_protocol(std::string(protocol));
    if (auto ip = c.published_ips.find(key); ip != c.published_ips.end()) m->set_host_ip(ip->second);
  }
  return out;
}

absl::StatusOr<hoist::v1::Inventory> TakeInventory(
    docker::DockerApi& docker, const AgentPolicy& policy, Clock* clock,
    const std::function<hoist::v1::Health(const std::string&)>& observed_health) {
  auto containers = docker.List({absl::StrCat(labels::kManaged, "=true")});
  if (!containers.ok()) return containers.status();
  hoist::v1::Inventory inventory;
  std::map<std::string, std::string> digests;
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy) || !LabelOf(c, labels::kJob).empty()) continue;
    auto instance = InstanceFromLabels(c.labels);
    if (!instance.has_value()) continue;
    auto* info = inventory.add_containers();
    *info->mutable_instance() = *instance;
    info->set_container_id(c.id);
    info->set_name(c.name);
    info->set_image(c.image);
    info->set_image_digest(DigestOf(docker, c, &digests));
    info->set_version(LabelOf(c, labels::kVersion));
    info->set_state(StateOf(c.state));
    info->set_health(HealthOf(c.health));
    // Without a Docker health check, or before its first run ("starting"),
    // the agent's own last probe says more.
    if ((c.health.empty() || c.health == "starting") && c.state == "running" && observed_health) {
      const hoist::v1::Health seen = observed_health(c.id);
      if (c.health.empty() || seen == hoist::v1::HEALTH_HEALTHY) info->set_health(seen);
    }
    if (c.state == "exited" || c.state == "dead") info->set_exit_code(c.exit_code);
    *info->mutable_published_ports() = PublishedPorts(c);
    SetTimestamp(c.created_at, info->mutable_created_at());
    SetTimestamp(c.started_at, info->mutable_started_at());
  }
  SetTimestamp(clock->Now(), inventory.mutable_taken_at());
  return inventory;
}

}  // namespace hoist::agent

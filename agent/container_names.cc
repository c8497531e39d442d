#include "agent/container_names.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/file_util.h"
#include "shared/labels.h"

namespace hoist::agent {
namespace {

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}

}  // namespace

std::string SanitizeContainerName(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 1);
  for (char c : text) out.push_back(IsNameChar(c) ? c : '-');
  if (out.empty() || !absl::ascii_isalnum(static_cast<unsigned char>(out[0]))) out.insert(out.begin(), 'h');
  return out;
}

bool IsValidContainerName(absl::string_view name) {
  if (name.empty() || name.size() > 200 || !absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

std::string InstanceContainerName(const hoist::v1::InstanceRef& instance, absl::string_view version) {
  return SanitizeContainerName(absl::StrCat(instance.deployment(), "-", instance.service(), "-",
                                            SlotName(instance.slot()), "-", instance.replica(), "-", version));
}

std::string JobContainerName(absl::string_view deployment, absl::string_view job, absl::string_view version,
                             absl::string_view step_id) {
  std::string short_id(step_id);
  bool safe = !short_id.empty() && short_id.size() <= 12;
  for (char c : short_id) safe = safe && IsNameChar(c);
  if (!safe) short_id = Sha256Hex(step_id).substr(0, 12);
  return SanitizeContainerName(absl::StrCat(deployment, "-job-", job, "-", version, "-", short_id));
}

std::map<std::string, std::string> InstanceLabels(const hoist::v1::InstanceRef& instance, absl::string_view version,
                                                  absl::string_view step_id, absl::string_view agent_id) {
  return {
      {std::string(labels::kManaged), "true"},
      {std::string(labels::kDeployment), instance.deployment()},
      {std::string(labels::kService), instance.service()},
      {std::string(labels::kSlot), SlotName(instance.slot())},
      {std::string(labels::kReplica), absl::StrCat(instance.replica())},
      {std::string(labels::kVersion), std::string(version)},
      {std::string(labels::kStep), std::string(step_id)},
      {std::string(labels::kAgent), std::string(agent_id)},
  };
}

std::vector<std::string> InstanceFilters(const hoist::v1::InstanceRef& instance, absl::string_view version) {
  std::vector<std::string> filters = {
      absl::StrCat(labels::kManaged, "=true"),
      absl::StrCat(labels::kDeployment, "=", instance.deployment()),
      absl::StrCat(labels::kService, "=", instance.service()),
      absl::StrCat(labels::kSlot, "=", SlotName(instance.slot())),
      absl::StrCat(labels::kReplica, "=", instance.replica()),
  };
  if (!version.empty()) filters.push_back(absl::StrCat(labels::kVersion, "=", version));
  return filters;
}

std::string LabelOf(const docker::ContainerInfo& container, absl::string_view key) {
  auto it = container.labels.find(std::string(key));
  return it == container.labels.end() ? std::string() : it->second;
}

bool IsManagedHere(const docker::ContainerInfo& container, const AgentPolicy& policy) {
  if (LabelOf(container, labels::kManaged) != "true") return false;
  // Several agents may share one Docker daemon (hosts in tests, or two
  // agents serving different deployments): each manages what it created.
  std::string agent = LabelOf(container, labels::kAgent);
  if (!agent.empty() && !policy.agent_id.empty() && agent != policy.agent_id) return false;
  std::string deployment = LabelOf(container, labels::kDeployment);
  return !deployment.empty() && policy.Serves(deployment);
}

std::optional<hoist::v1::InstanceRef> InstanceFromLabels(const std::map<std::string, std::string>& labels) {
  auto get = [&](absl::string_view key) {
    auto it = labels.find(std::string(key));
    return it == labels.end() ? std::string() : it->second;
  };
  hoist::v1::InstanceRef ref;
  ref.set_deployment(get(labels::kDeployment));
  ref.set_service(get(labels::kService));
  if (ref.deployment().empty() || ref.service().empty()) return std::nullopt;
  ref.set_slot(get(labels::kSlot) == "green" ? hoist::v1::SLOT_GREEN : hoist::v1::SLOT_BLUE);
  uint32_t replica = 0;
  if (absl::SimpleAtoi(get(labels::kReplica), &replica)) ref.set_replica(replica);
  return ref;
}

}  // namespace hoist::agent

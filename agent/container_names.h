#pragma once

// How Hoist names and labels the containers it creates, and how it recognises
// them again: the one place that turns an InstanceRef into Docker labels,
// label filters and container names, and back.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/agent_policy.h"
#include "agent/docker/docker_api.h"
#include "hoist/v1/common.pb.h"
#include "shared/proto_names.h"

namespace hoist::agent {

// Maps text onto Docker's name charset [a-zA-Z0-9][a-zA-Z0-9_.-]*: other
// characters become '-', and a name that would not start with a letter or
// digit gets an "h" in front.
std::string SanitizeContainerName(absl::string_view text);

// True when name is already a valid Docker container name.
bool IsValidContainerName(absl::string_view name);

// <deployment>-<service>-<slot>-<replica>-<version>, sanitised.
std::string InstanceContainerName(const hoist::v1::InstanceRef& instance, absl::string_view version);

// <deployment>-job-<name>-<version>-<short step id>, sanitised. The short id is
// the step id itself when short and safe, else 12 hex digits of its sha256.
std::string JobContainerName(absl::string_view deployment, absl::string_view job, absl::string_view version,
                             absl::string_view step_id);

// The hoist.* labels of an instance's container.
std::map<std::string, std::string> InstanceLabels(const hoist::v1::InstanceRef& instance, absl::string_view version,
                                                  absl::string_view step_id, absl::string_view agent_id);

// Label filters ("key=value") selecting an instance's containers; version
// narrows them to one release when not empty.
std::vector<std::string> InstanceFilters(const hoist::v1::InstanceRef& instance, absl::string_view version = {});

// True when the container carries hoist.managed=true and a hoist.deployment
// the policy serves: the only containers the agent may touch.
bool IsManagedHere(const docker::ContainerInfo& container, const AgentPolicy& policy);

// The label's value, or "" when absent.
std::string LabelOf(const docker::ContainerInfo& container, absl::string_view key);

// Reads the instance back from a container's labels; nullopt when the
// deployment or service label is missing.
std::optional<hoist::v1::InstanceRef> InstanceFromLabels(const std::map<std::string, std::string>& labels);

}  // namespace hoist::agent

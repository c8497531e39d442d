#pragma once

#include <functional>
#include <string>

// The agent's report of the managed containers on its host, from which the
// controller builds the version matrix.

#include "absl/status/statusor.h"
#include "agent/agent_policy.h"
#include "agent/docker/docker_api.h"
#include "hoist/v1/agent.pb.h"
#include "shared/clock.h"

namespace hoist::agent {

// The ports Docker published for a container, as the controller wants them:
// container port and protocol, the bound host port, and the bound address
// (empty when the port listens on every address of the host).
google::protobuf::RepeatedPtrField<hoist::v1::PortMapping> PublishedPorts(const docker::ContainerInfo& c);

// Lists every container labelled hoist.managed=true for a deployment the
// policy serves, as ContainerInfo read back from its labels. One-shot job
// containers (hoist.job) are left out: their outcome is reported by their
// step. Image digests come from the image's RepoDigests, inspected once per
// distinct image. Fails only when Docker cannot list containers.
// observed_health, when set, gives the health of containers Docker has no
// health status for, or whose Docker health check has not run yet
// ("starting"): the agent's own last probe, when it passed.
absl::StatusOr<hoist::v1::Inventory> TakeInventory(
    docker::DockerApi& docker, const AgentPolicy& policy, Clock* clock = RealClock::Get(),
    const std::function<hoist::v1::Health(const std::string&)>& observed_health = nullptr);

}  // namespace hoist::agent

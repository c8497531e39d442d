#pragma once

// The Docker labels Hoist puts on everything it creates. An agent touches only
// containers that carry kManaged and a kDeployment it serves; the inventory
// and the version matrix are read back from these labels.

#include "absl/strings/string_view.h"

namespace hoist::labels {

inline constexpr absl::string_view kManaged = "hoist.managed";        // "true"
inline constexpr absl::string_view kDeployment = "hoist.deployment";  // deployment name
inline constexpr absl::string_view kService = "hoist.service";        // service name
inline constexpr absl::string_view kSlot = "hoist.slot";              // "blue" or "green"
inline constexpr absl::string_view kReplica = "hoist.replica";        // "0", "1", ...
inline constexpr absl::string_view kVersion = "hoist.version";        // release version
inline constexpr absl::string_view kStep = "hoist.step";              // id of the step that created it
inline constexpr absl::string_view kJob = "hoist.job";                // job name, on one-shot job containers
inline constexpr absl::string_view kAgent = "hoist.agent";            // agent id that created it
// On proxy containers: their routes' frontends, "route=port,route=port".
inline constexpr absl::string_view kProxyFrontends = "hoist.proxy.frontends";
// On a proxy container: the agent's host directory holding its runtime API socket.
inline constexpr absl::string_view kProxyRuntime = "hoist.proxy.runtime";

// Every label key Hoist owns starts with this; manifests may not set them.
inline constexpr absl::string_view kPrefix = "hoist.";

}  // namespace hoist::labels

#pragma once

// Checks a Step before the agent touches anything: its shape (INVALID_ARGUMENT
// naming the field, e.g. "start_instance.spec.image: ...") and the agent's own
// policy (PERMISSION_DENIED). Both mean the step is REFUSED, never tried.

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/agent_policy.h"
#include "hoist/v1/agent.pb.h"

namespace hoist::agent {

// Longest step id accepted; ids name journal files and container labels.
inline constexpr size_t kMaxStepIdLength = 128;

// Returns INVALID_ARGUMENT naming the first malformed field.
absl::Status ValidateStep(const hoist::v1::Step& step);

// Returns PERMISSION_DENIED when the step needs something the policy does not
// allow: a deployment the agent does not serve, a privileged container, a
// host-path mount, a mount of the Docker socket.
absl::Status CheckPolicy(const hoist::v1::Step& step, const AgentPolicy& policy);

// OK when image names a tag or a digest ("repo:tag", "host:5000/repo@sha256:...");
// field prefixes the message.
absl::Status ValidateImageRef(absl::string_view field, absl::string_view image);

// True when a bind of host_path would expose the Docker socket (the socket
// itself or a directory above it).
bool ExposesDockerSocket(absl::string_view host_path, const AgentPolicy& policy);

// OK when the agent may read the env file at `path`: inside one of
// policy.env_file_dirs both as named and as its symlinks resolve.
// PERMISSION_DENIED naming `field`, the path and the flag otherwise.
absl::Status CheckEnvFilePath(absl::string_view field, absl::string_view path, const AgentPolicy& policy);

}  // namespace hoist::agent

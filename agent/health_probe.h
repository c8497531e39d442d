#pragma once

// One health probe attempt against a container, of any kind a HealthCheck
// names. The executor loops over attempts; this file only knows how to try.

#include <string>

#include "absl/time/time.h"
#include "agent/docker/docker_api.h"
#include "hoist/v1/common.pb.h"

namespace hoist::agent {

struct ProbeOutcome {
  bool passed = false;
  // What was seen, for a person: "HTTP 503", "version 1.4.0, expected 1.5.0".
  std::string detail;
  // Version the instance reported (HTTP checks with a JSON body).
  std::string version;
  // Retrying cannot help (for example no HEALTHCHECK configured).
  bool permanent = false;
};

// Where a container port is reachable from this host: 127.0.0.1:<host port>
// when published, else <container IP>:<port>; empty when neither is known.
std::string ContainerEndpoint(const docker::ContainerInfo& container, uint32_t port);

// Makes one attempt that takes at most timeout.
ProbeOutcome ProbeOnce(docker::DockerApi& docker, const docker::ContainerInfo& container,
                       const hoist::v1::HealthCheck& check, absl::Duration timeout);

}  // namespace hoist::agent

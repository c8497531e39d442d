#pragma once

// The stack scale tests and tests/bench/scale.sh roll out on simulated hosts:
// one service, `app`, with one replica on each host labelled tier=app,
// healthy by Docker's HEALTHCHECK, upgraded max_parallel hosts at a time.

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/sim/sim_hosts.h"

namespace hoist::testing {

// The hosts are the simulated hosts sim-0001 to sim-<hosts>.
inline std::string ScaleStack(const std::string& deployment, int hosts, int max_parallel) {
  std::string host_list;
  for (int i = 1; i <= hosts; ++i) absl::StrAppend(&host_list, "  - {id: ", SimHostId("sim-", i), ", labels: {tier: app}}\n");
  return absl::StrCat("deployment: ", deployment, "\nnetwork: ", deployment, "\nhosts:\n", host_list, R"(services:
  app:
    role: worker
    repository: registry.sim/)", deployment, R"(/app
    replicas: )", hosts, R"(
    placement:
      labels: {tier: app}
      distinct_hosts: true
    health:
      docker: true
      interval: 100ms
      deadline: 60s
    stop_timeout: 10s
    rolling:
      max_parallel: )", max_parallel, "\n");
}

// Two hoistd replicas over mTLS and `hosts` simulated hosts labelled
// tier=app, serving deployment "scale", their sessions started over a
// second per 200 hosts.
inline FleetOptions ScaleFleet(int hosts) {
  return {.deployment = "scale",
          .connect_timeout = absl::Minutes(5),
          .controllers = 2,
          .tls = true,
          .simulated_hosts = hosts,
          .simulated_labels = "tier=app",
          .simulated_flags = {"--ramp", absl::StrCat(hosts * 5, "ms")}};
}

inline std::string ScaleRelease(const std::string& deployment, const std::string& version) {
  return absl::StrCat("deployment: ", deployment, "\nversion: ", version, "\nimages:\n  app: registry.sim/", deployment,
                      "/app:", version, "\n");
}

}  // namespace hoist::testing

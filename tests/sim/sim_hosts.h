#pragma once

// Simulated hosts for scale tests and benchmarks: N agents in one process,
// each a real AgentSession (the agent's own protocol code: hello, heartbeats,
// inventory, steps, reconnects, fencing) with its own certificate, journal
// and StepExecutor, running steps on an in-memory Docker Engine that takes
// the time a real one would (pull, create, start, stop, health). Only Docker
// is simulated; everything Hoist does is the real code.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace hoist::testing {

// How long the simulated Docker Engine takes for each call.
struct SimDockerTimes {
  absl::Duration pull = absl::Milliseconds(800);
  absl::Duration create = absl::Milliseconds(60);
  absl::Duration start = absl::Milliseconds(250);
  absl::Duration stop = absl::Milliseconds(300);
  absl::Duration remove = absl::Milliseconds(50);
  // A started container reports Docker health "starting" this long, then
  // "healthy" (health: {docker: ...} in the stack).
  absl::Duration healthy_after = absl::Milliseconds(500);
};

struct SimHostsOptions {
  // host:port of each controller replica.
  std::vector<std::string> controllers;
  // Host i (first <= i < first + count) is <prefix><i, zero-padded to 4>.
  std::string prefix = "sim-";
  int first = 1;
  int count = 0;
  // Labels of every host ("tier=app,zone=a").
  std::string labels;
  // Deployments the hosts manage (empty: all).
  std::vector<std::string> deployments;
  // Each host's journal goes to <state_dir>/<id>.
  std::string state_dir;
  // mTLS: <tls_dir>/ca.crt and, per host, <tls_dir>/agent-<id>.crt and .key
  // (hoist ca issue agent <id>). Empty: plaintext.
  std::string tls_dir;
  SimDockerTimes times;
  // Sessions start evenly spread over this long (hosts installed over a
  // while); zero: all at once.
  absl::Duration ramp = absl::ZeroDuration();
};

// The id of simulated host i: <prefix><i, zero-padded to 4 digits>.
inline std::string SimHostId(const std::string& prefix, int i) { return absl::StrFormat("%s%04d", prefix, i); }

class SimHosts {
 public:
  // Builds every host and starts its session; fails (naming the host) when a
  // certificate or state directory is unusable.
  static absl::StatusOr<std::unique_ptr<SimHosts>> Start(const SimHostsOptions& options);
  // Stops every session and joins its threads.
  ~SimHosts();
  SimHosts(const SimHosts&) = delete;
  SimHosts& operator=(const SimHosts&) = delete;

  int count() const;
  // How many hosts have a session open with a leader now.
  int Connected() const;

 private:
  struct Host;
  SimHosts() = default;
  std::vector<std::unique_ptr<Host>> hosts_;
};

}  // namespace hoist::testing

#pragma once

// hoist-agent as an object: it owns the journal, the Docker client, the step
// executor, the session with the controllers and the journal's pruning, and
// starts and stops them in order. hoist-agent's main only parses flags into
// AgentServerOptions and runs one; tests can run agents in-process the same
// way.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/agent_policy.h"
#include "shared/clock.h"

namespace hoist {

class AgentSession;

struct AgentServerOptions {
  // host:port of each controller replica; at least one.
  std::vector<std::string> controllers;
  // mTLS: all three (and tls_crl, default crl.pem next to tls_ca), or
  // insecure for development.
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_crl;
  bool insecure = false;
  // Reported in the hello. agent_id and host_name default to the system's
  // host name.
  std::string agent_id;
  std::string host_name;
  std::map<std::string, std::string> labels;
  std::string address;
  // Journal and job logs; backups go to <state_dir>/backups.
  std::string state_dir;
  std::string docker_socket = "/var/run/docker.sock";
  // How long finished steps stay in the journal (at least an hour).
  absl::Duration journal_keep = absl::Hours(168);
  // What this host allows; agent_id, backup_dir and docker_socket_path are
  // filled from the fields above.
  agent::AgentPolicy policy;
  Clock* clock = RealClock::Get();
};

class AgentServer {
 public:
  // Checks the options, loads the TLS material, opens the journal, asks
  // Docker for its version and reconciles the steps the last stop
  // interrupted; nothing is dialled yet. INVALID_ARGUMENT names a bad option;
  // other errors are the state directory's.
  static absl::StatusOr<std::unique_ptr<AgentServer>> Create(AgentServerOptions options);
  ~AgentServer();
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  // Dials the controllers and keeps a session open; prunes the journal hourly.
  void Start();
  // Ends the session and the pruning. Idempotent.
  void Stop();

  // True while a session with the leader is open.
  bool connected() const;

 private:
  struct Parts;
  explicit AgentServer(std::unique_ptr<Parts> parts);

  std::unique_ptr<Parts> parts_;
};

}  // namespace hoist

#pragma once

// hoistd as an object: it owns every part of one controller replica (the
// connection pool and stores, the agent hub, the executor and rollout
// manager, the leader elector, the gRPC services and the HTTP /health and
// /metrics endpoints), starts them in order and stops them in order. hoistd's
// main only parses flags into ControllerServerOptions and runs one; tests
// start replicas in-process the same way.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/leader_election.h"
#include "shared/clock.h"

namespace hoist {

class AgentHub;

struct ControllerServerOptions {
  // Postgres connection string (URI or key=value); required.
  std::string database_url;
  // Unique name of this replica; required.
  std::string replica_id;
  // gRPC address to serve; port 0 picks a free one (grpc_port()).
  std::string listen = "127.0.0.1:7443";
  // What agents and the CLI dial for this replica; default: the bound
  // listen address.
  std::string advertise_address;
  // HTTP /health and /metrics; empty: none. Port 0 picks a free one.
  std::string http_listen;
  // mTLS: all three, or none (then nothing is authenticated).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // Revocation list; default crl.pem next to tls_ca.
  std::string tls_crl;
  // Key file that seals env values at rest; required with TLS.
  std::string secrets_key_file;
  // Election timings (replica_id and advertise_address are this server's).
  LeaderElectionOptions election;
  Clock* clock = RealClock::Get();
};

class ControllerServer {
 public:
  // Checks the options and loads what they name (TLS material, revocation
  // list, secrets key) and brings the schema up to date; nothing is served
  // yet. INVALID_ARGUMENT names a bad option or file; other errors are the
  // database's.
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Create(ControllerServerOptions options);
  // Stops whatever still runs.
  ~ControllerServer();
  ControllerServer(const ControllerServer&) = delete;
  ControllerServer& operator=(const ControllerServer&) = delete;

  // Serves gRPC and HTTP, then starts the hub and the election.
  absl::Status Start();
  // Releases leadership (a follower takes over at once), closes the agents'
  // sessions and stops serving. Idempotent.
  void Stop();

  // The bound ports, once started.
  int grpc_port() const;
  int http_port() const;
  // What agents and the CLI dial (advertise_address, or the bound address).
  std::string address() const;
  const Leadership& leadership() const;
  // Blocks until this replica leads or the timeout passes.
  bool WaitForLeadership(absl::Duration timeout) const;
  AgentHub& hub();

 private:
  struct Parts;
  explicit ControllerServer(std::unique_ptr<Parts> parts);

  std::unique_ptr<Parts> parts_;
};

}  // namespace hoist

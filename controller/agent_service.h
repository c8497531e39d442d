#pragma once

// The gRPC adapter of AgentService.Session: it authenticates the stream,
// redirects agents that dialled a follower, and forwards everything else to
// AgentHub. Writes go through a per-session queue so that a slow agent never
// blocks the hub.

#include <functional>
#include <map>
#include <utility>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "controller/agent_hub.h"
#include "controller/authorizer.h"
#include "controller/leader_election.h"
#include "hoist/v1/agent.grpc.pb.h"

namespace hoist {

class AgentServiceImpl final : public hoist::v1::AgentService::Service {
 public:
  // current_leader tells a follower where to send agents. With an
  // authorizer under mTLS, the client certificate must be an agent's, not
  // revoked, and its common name must equal Hello.agent_id; auth may be
  // null (development, nothing checked).
  AgentServiceImpl(AgentHub* hub, std::function<LeaderInfo()> current_leader, const Authorizer* auth);

  grpc::Status Session(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<hoist::v1::SessionResponse, hoist::v1::SessionRequest>* stream)
      override;

  // Ends the open sessions whose certificate is now revoked (called when the
  // revocation list changes). Returns how many it ended.
  int CloseRevokedSessions();

 private:
  AgentHub* const hub_;
  const std::function<LeaderInfo()> current_leader_;
  const Authorizer* const auth_;
  // Open sessions by their stream's context, with their certificate serial.
  absl::Mutex mu_;
  std::map<grpc::ServerContext*, std::pair<std::string, std::string>> open_ ABSL_GUARDED_BY(mu_);  // id, serial
  // Session calls in progress (the hello wait included) per certificate serial.
  std::map<std::string, int> calls_per_serial_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist

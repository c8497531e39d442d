#pragma once

// The gRPC adapter of AgentService.Session: it authenticates the stream,
// redirects agents that dialled a follower, and forwards everything else to
// AgentHub. Writes go through a per-session queue so that a slow agent never
// blocks the hub.

#include <functional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "controller/agent_hub.h"
#include "controller/leader_election.h"
#include "hoist/v1/agent.grpc.pb.h"

namespace hoist {

class AgentServiceImpl final : public hoist::v1::AgentService::Service {
 public:
  // current_leader tells a follower where to send agents. With
  // require_peer_identity (mTLS on), the client certificate's common name
  // must equal Hello.agent_id.
  AgentServiceImpl(AgentHub* hub, std::function<LeaderInfo()> current_leader, bool require_peer_identity);

  grpc::Status Session(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<hoist::v1::SessionResponse, hoist::v1::SessionRequest>* stream)
      override;

 private:
  AgentHub* const hub_;
  const std::function<LeaderInfo()> current_leader_;
  const bool require_peer_identity_;
};

}  // namespace hoist

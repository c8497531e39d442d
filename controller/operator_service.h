#pragma once

// The gRPC adapter of OperatorService: it checks leadership for writes
// (a follower answers UNAVAILABLE with the leader's address in the
// "hoist-leader" trailer), converts Status at the edge, and forwards to
// RolloutManager, the stores and the agent registry. Reads are served by any
// replica from Postgres.

#include <functional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "controller/authorizer.h"
#include "controller/leadership.h"
#include "controller/rollout/rollout_manager.h"
#include "controller/rollout/rollout_store.h"
#include "controller/store/agent_store.h"
#include "hoist/v1/operator.grpc.pb.h"

namespace hoist {

// The trailer a follower names the leader's address in.
inline constexpr const char* kLeaderTrailer = "hoist-leader";

class OperatorServiceImpl final : public hoist::v1::OperatorService::Service {
 public:
  // Writes are served only while `leadership` says this replica leads
  // (with its epoch); a follower names the leader in kLeaderTrailer.
  OperatorServiceImpl(rollout::RolloutManager* manager, rollout::RolloutStore* store, AgentStore* agents,
                      const Leadership* leadership, const Authorizer* auth);

  grpc::Status ApplyStack(grpc::ServerContext*, const hoist::v1::ApplyStackRequest*,
                          hoist::v1::ApplyStackResponse*) override;
  grpc::Status GetDeployment(grpc::ServerContext*, const hoist::v1::GetDeploymentRequest*,
                             hoist::v1::GetDeploymentResponse*) override;
  grpc::Status ListDeployments(grpc::ServerContext*, const hoist::v1::ListDeploymentsRequest*,
                               hoist::v1::ListDeploymentsResponse*) override;
  grpc::Status CreateRelease(grpc::ServerContext*, const hoist::v1::CreateReleaseRequest*,
                             hoist::v1::CreateReleaseResponse*) override;
  grpc::Status GetRelease(grpc::ServerContext*, const hoist::v1::GetReleaseRequest*,
                          hoist::v1::GetReleaseResponse*) override;
  grpc::Status ListReleases(grpc::ServerContext*, const hoist::v1::ListReleasesRequest*,
                            hoist::v1::ListReleasesResponse*) override;
  grpc::Status PlanRollout(grpc::ServerContext*, const hoist::v1::PlanRolloutRequest*,
                           hoist::v1::PlanRolloutResponse*) override;
  grpc::Status StartRollout(grpc::ServerContext*, const hoist::v1::StartRolloutRequest*,
                            hoist::v1::StartRolloutResponse*) override;
  grpc::Status GetRollout(grpc::ServerContext*, const hoist::v1::GetRolloutRequest*,
                          hoist::v1::GetRolloutResponse*) override;
  grpc::Status ListRollouts(grpc::ServerContext*, const hoist::v1::ListRolloutsRequest*,
                            hoist::v1::ListRolloutsResponse*) override;
  grpc::Status WatchRollout(grpc::ServerContext*, const hoist::v1::WatchRolloutRequest*,
                            grpc::ServerWriter<hoist::v1::WatchRolloutResponse>*) override;
  grpc::Status CancelRollout(grpc::ServerContext*, const hoist::v1::CancelRolloutRequest*,
                             hoist::v1::CancelRolloutResponse*) override;
  grpc::Status Rollback(grpc::ServerContext*, const hoist::v1::RollbackRequest*,
                        hoist::v1::RollbackResponse*) override;
  grpc::Status Cutover(grpc::ServerContext*, const hoist::v1::CutoverRequest*,
                       hoist::v1::CutoverResponse*) override;
  grpc::Status GetStatus(grpc::ServerContext*, const hoist::v1::GetStatusRequest*,
                         hoist::v1::GetStatusResponse*) override;
  grpc::Status GetVersionMatrix(grpc::ServerContext*, const hoist::v1::GetVersionMatrixRequest*,
                                hoist::v1::GetVersionMatrixResponse*) override;
  grpc::Status ListAgents(grpc::ServerContext*, const hoist::v1::ListAgentsRequest*,
                          hoist::v1::ListAgentsResponse*) override;
  grpc::Status ListBackups(grpc::ServerContext*, const hoist::v1::ListBackupsRequest*,
                           hoist::v1::ListBackupsResponse*) override;
  grpc::Status ListAuditEvents(grpc::ServerContext*, const hoist::v1::ListAuditEventsRequest*,
                               hoist::v1::ListAuditEventsResponse*) override;
  grpc::Status ListLocks(grpc::ServerContext*, const hoist::v1::ListLocksRequest*,
                         hoist::v1::ListLocksResponse*) override;

 private:
  // OK with the epoch when this replica leads; otherwise UNAVAILABLE with
  // the leader's address, in the message and the trailer.
  grpc::Status RequireLeader(grpc::ServerContext* context, uint64_t* epoch);

  rollout::RolloutManager* const manager_;
  rollout::RolloutStore* const store_;
  AgentStore* const agents_;
  const Leadership* const leadership_;
  const Authorizer* const auth_;
};

}  // namespace hoist

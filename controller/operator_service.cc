#include "controller/operator_service.h"

#include "absl/strings/str_cat.h"
#include "shared/proto_names.h"
#include "shared/status_grpc.h"
#include "shared/tls.h"

namespace hoist {
namespace {

template <typename T>
grpc::Status Done(const absl::StatusOr<T>& s) {
  return ToGrpcStatus(s.status());
}

}  // namespace

OperatorServiceImpl::OperatorServiceImpl(rollout::RolloutManager* manager, rollout::RolloutStore* store,
                                         AgentStore* agents, const Leadership* leadership,
                                         const Authorizer* auth)
    : manager_(manager),
      store_(store),
      agents_(agents),
      leadership_(leadership),
      auth_(auth) {}

grpc::Status OperatorServiceImpl::RequireLeader(grpc::ServerContext* context, uint64_t* epoch) {
  *epoch = leadership_->epoch();
  if (*epoch != 0) return grpc::Status::OK;
  LeaderInfo leader = leadership_->CurrentLeader();
  if (!leader.address.empty()) context->AddTrailingMetadata(kLeaderTrailer, leader.address);
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      leader.address.empty() ? std::string("this replica does not lead and no leader is known yet; retry")
                                             : absl::StrCat("this replica does not lead; send writes to the leader at ",
                                                            leader.address));
}

grpc::Status OperatorServiceImpl::ApplyStack(grpc::ServerContext* context, const hoist::v1::ApplyStackRequest* request,
                                             hoist::v1::ApplyStackResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ApplyStack", "", &actor); !s.ok()) return s;
  uint64_t epoch;
  if (grpc::Status s = RequireLeader(context, &epoch); !s.ok()) return s;
  auto d = manager_->ApplyStack(epoch, *request, actor);
  if (d.ok()) *response->mutable_deployment() = *d;
  return Done(d);
}

grpc::Status OperatorServiceImpl::GetDeployment(grpc::ServerContext* context, const hoist::v1::GetDeploymentRequest* request,
                                                hoist::v1::GetDeploymentResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "GetDeployment", request->name(), &actor); !s.ok()) return s;
  auto d = manager_->GetDeployment(request->name());
  if (d.ok()) *response->mutable_deployment() = *d;
  return Done(d);
}

grpc::Status OperatorServiceImpl::ListDeployments(grpc::ServerContext* context, const hoist::v1::ListDeploymentsRequest*,
                                                  hoist::v1::ListDeploymentsResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListDeployments", "", &actor); !s.ok()) return s;
  auto ds = store_->ListDeployments();
  if (!ds.ok()) return ToGrpcStatus(ds.status());
  for (const auto& d : *ds) {
    auto p = manager_->GetDeployment(d.name);
    if (p.ok()) *response->add_deployments() = *p;
  }
  return grpc::Status::OK;
}

grpc::Status OperatorServiceImpl::CreateRelease(grpc::ServerContext* context,
                                                const hoist::v1::CreateReleaseRequest* request,
                                                hoist::v1::CreateReleaseResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "CreateRelease", "", &actor); !s.ok()) return s;
  uint64_t epoch;
  if (grpc::Status s = RequireLeader(context, &epoch); !s.ok()) return s;
  auto r = manager_->CreateRelease(epoch, *request, actor);
  if (r.ok()) *response->mutable_release() = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::GetRelease(grpc::ServerContext* context, const hoist::v1::GetReleaseRequest* request,
                                             hoist::v1::GetReleaseResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "GetRelease", request->deployment(), &actor); !s.ok()) return s;
  auto r = store_->GetRelease(request->deployment(), request->version());
  if (r.ok()) *response->mutable_release() = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::ListReleases(grpc::ServerContext* context, const hoist::v1::ListReleasesRequest* request,
                                               hoist::v1::ListReleasesResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListReleases", request->deployment(), &actor); !s.ok()) return s;
  // An unknown deployment is NOT_FOUND, not an empty list: a typo in -d
  // must not read as "no releases yet".
  if (auto d = store_->GetDeployment(request->deployment()); !d.ok()) return ToGrpcStatus(d.status());
  auto rs = store_->ListReleases(request->deployment());
  if (!rs.ok()) return ToGrpcStatus(rs.status());
  std::vector<hoist::v1::Release> sorted = *rs;
  std::sort(sorted.begin(), sorted.end(), [](const hoist::v1::Release& a, const hoist::v1::Release& b) {
    auto va = Version::Parse(a.version());
    auto vb = Version::Parse(b.version());
    if (va.ok() && vb.ok()) return *va > *vb;
    return a.version() > b.version();
  });
  for (auto& r : sorted) *response->add_releases() = std::move(r);
  return grpc::Status::OK;
}

grpc::Status OperatorServiceImpl::PlanRollout(grpc::ServerContext* context, const hoist::v1::PlanRolloutRequest* request,
                                              hoist::v1::PlanRolloutResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "PlanRollout", request->deployment(), &actor); !s.ok()) return s;
  hoist::v1::StartRolloutRequest as_started;
  as_started.set_deployment(request->deployment());
  as_started.set_target_version(request->target_version());
  as_started.set_strategy(request->strategy());
  as_started.set_skip_backup(request->skip_backup());
  as_started.set_on_failure(request->on_failure());
  *as_started.mutable_smoke_test() = request->smoke_test();
  if (request->has_grace_period()) *as_started.mutable_grace_period() = request->grace_period();
  auto plan = manager_->PlanUpgrade(as_started);
  if (plan.ok()) *response->mutable_plan() = rollout::ToProto(*plan);
  return Done(plan);
}

grpc::Status OperatorServiceImpl::StartRollout(grpc::ServerContext* context,
                                               const hoist::v1::StartRolloutRequest* request,
                                               hoist::v1::StartRolloutResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "StartRollout", request->deployment(), &actor); !s.ok()) return s;
  uint64_t epoch;
  if (grpc::Status s = RequireLeader(context, &epoch); !s.ok()) return s;
  auto r = manager_->StartRollout(epoch, *request, actor);
  if (r.ok()) *response->mutable_rollout() = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::GetRollout(grpc::ServerContext* context, const hoist::v1::GetRolloutRequest* request,
                                             hoist::v1::GetRolloutResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "GetRollout", "", &actor); !s.ok()) return s;
  auto r = manager_->GetRollout(request->id());
  if (r.ok()) *response->mutable_rollout() = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::ListRollouts(grpc::ServerContext* context, const hoist::v1::ListRolloutsRequest* request,
                                               hoist::v1::ListRolloutsResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListRollouts", request->deployment(), &actor); !s.ok()) return s;
  auto rs = store_->ListRollouts(request->deployment(), request->limit() == 0 ? 20 : static_cast<int>(request->limit()));
  if (!rs.ok()) return ToGrpcStatus(rs.status());
  for (const auto& r : *rs) {
    auto p = manager_->GetRollout(r.id);
    if (p.ok()) *response->add_rollouts() = *p;
  }
  return grpc::Status::OK;
}

grpc::Status OperatorServiceImpl::WatchRollout(grpc::ServerContext* context,
                                               const hoist::v1::WatchRolloutRequest* request,
                                               grpc::ServerWriter<hoist::v1::WatchRolloutResponse>* writer) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "WatchRollout", "", &actor); !s.ok()) return s;
  auto first = store_->GetRolloutStatus(request->id());
  if (!first.ok()) return ToGrpcStatus(first.status());
  uint64_t after = request->after_sequence();
  // Events live in Postgres, so any replica can serve a watch, and a watch
  // survives a leader failover.
  while (!context->IsCancelled()) {
    auto events = store_->EventsAfter(request->id(), after);
    if (!events.ok()) return ToGrpcStatus(events.status());
    for (const auto& e : *events) {
      hoist::v1::WatchRolloutResponse response;
      *response.mutable_event() = e;
      if (!writer->Write(response)) return grpc::Status::OK;
      after = e.sequence();
    }
    auto r = store_->GetRolloutStatus(request->id());
    // A blue-green rollout in its grace period waits for the operator: the
    // watch ends there too (hoist watch shows the cutover commands).
    if (r.ok() && (IsTerminal(r->state) || r->state == hoist::v1::ROLLOUT_STATE_GRACE)) {
      // Drain what was written with the final state, then end the stream.
      auto rest = store_->EventsAfter(request->id(), after);
      if (rest.ok()) {
        for (const auto& e : *rest) {
          hoist::v1::WatchRolloutResponse response;
          *response.mutable_event() = e;
          writer->Write(response);
        }
      }
      return grpc::Status::OK;
    }
    absl::SleepFor(absl::Milliseconds(150));
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
}

grpc::Status OperatorServiceImpl::CancelRollout(grpc::ServerContext* context,
                                                const hoist::v1::CancelRolloutRequest* request,
                                                hoist::v1::CancelRolloutResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "CancelRollout", "", &actor); !s.ok()) return s;
  uint64_t epoch;
  if (grpc::Status s = RequireLeader(context, &epoch); !s.ok()) return s;
  auto r = manager_->Cancel(request->id(), request->reason(), actor);
  if (r.ok()) *response->mutable_rollout() = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::Rollback(grpc::ServerContext* context, const hoist::v1::RollbackRequest* request,
                                           hoist::v1::RollbackResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, request->restore_backup_id().empty() ? "Rollback" : "Rollback --restore", request->deployment(), &actor); !s.ok()) return s;
  uint64_t epoch;
  if (grpc::Status s = RequireLeader(context, &epoch); !s.ok()) return s;
  auto r = manager_->Rollback(epoch, *request, actor);
  if (r.ok()) *response->mutable_rollout() = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::Cutover(grpc::ServerContext* context, const hoist::v1::CutoverRequest* request,
                                          hoist::v1::CutoverResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "Cutover", request->deployment(), &actor); !s.ok()) return s;
  uint64_t epoch;
  if (grpc::Status s = RequireLeader(context, &epoch); !s.ok()) return s;
  auto r = manager_->Cutover(epoch, *request, actor);
  if (r.ok()) *response = *r;
  return Done(r);
}

grpc::Status OperatorServiceImpl::GetStatus(grpc::ServerContext* context, const hoist::v1::GetStatusRequest* request,
                                            hoist::v1::GetStatusResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "GetStatus", request->deployment(), &actor); !s.ok()) return s;
  auto s = manager_->Status(request->deployment());
  if (s.ok()) *response = *s;
  return Done(s);
}

grpc::Status OperatorServiceImpl::GetVersionMatrix(grpc::ServerContext* context,
                                                   const hoist::v1::GetVersionMatrixRequest* request,
                                                   hoist::v1::GetVersionMatrixResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "GetVersionMatrix", request->deployment(), &actor); !s.ok()) return s;
  auto m = manager_->Matrix(request->deployment());
  if (m.ok()) *response = *m;
  return Done(m);
}

grpc::Status OperatorServiceImpl::ListAgents(grpc::ServerContext* context, const hoist::v1::ListAgentsRequest*,
                                             hoist::v1::ListAgentsResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListAgents", "", &actor); !s.ok()) return s;
  auto as = agents_->ListAgents();
  if (!as.ok()) return ToGrpcStatus(as.status());
  for (auto& a : *as) *response->add_agents() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status OperatorServiceImpl::ListBackups(grpc::ServerContext* context, const hoist::v1::ListBackupsRequest* request,
                                              hoist::v1::ListBackupsResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListBackups", request->deployment(), &actor); !s.ok()) return s;
  if (auto d = store_->GetDeployment(request->deployment()); !d.ok()) return ToGrpcStatus(d.status());
  auto bs = store_->ListBackups(request->deployment());
  if (!bs.ok()) return ToGrpcStatus(bs.status());
  for (auto& b : *bs) *response->add_backups() = std::move(b);
  return grpc::Status::OK;
}

grpc::Status OperatorServiceImpl::ListAuditEvents(grpc::ServerContext* context,
                                                  const hoist::v1::ListAuditEventsRequest* request,
                                                  hoist::v1::ListAuditEventsResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListAuditEvents", request->deployment(), &actor); !s.ok()) return s;
  auto es = store_->ListAudit(request->deployment(), request->limit() == 0 ? 100 : static_cast<int>(request->limit()),
                              request->before_id());
  if (!es.ok()) return ToGrpcStatus(es.status());
  for (auto& e : *es) *response->add_events() = std::move(e);
  return grpc::Status::OK;
}

grpc::Status OperatorServiceImpl::ListLocks(grpc::ServerContext* context, const hoist::v1::ListLocksRequest*,
                                            hoist::v1::ListLocksResponse* response) {
  std::string actor;
  if (grpc::Status s = auth_->CheckOperator(*context, "ListLocks", "", &actor); !s.ok()) return s;
  auto ls = store_->ListLocks();
  if (!ls.ok()) return ToGrpcStatus(ls.status());
  for (auto& l : *ls) *response->add_locks() = std::move(l);
  return grpc::Status::OK;
}

}  // namespace hoist

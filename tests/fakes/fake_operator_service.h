#pragma once

// An in-process OperatorService for CLI tests: a real gRPC server on
// 127.0.0.1:0 answering with canned responses, recording every request, and
// able to play a follower (writes answer UNAVAILABLE with the leader's
// address in the "hoist-leader" trailer) or stream a scripted rollout.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hoist/v1/operator.grpc.pb.h"

namespace hoist::testing {

class FakeOperatorService final : public hoist::v1::OperatorService::Service {
 public:
  FakeOperatorService();
  ~FakeOperatorService() override;

  // Starts serving on 127.0.0.1 at a free port, in plaintext or with the
  // given credentials (mTLS tests).
  absl::Status Start(std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials());
  // "127.0.0.1:PORT", once started.
  const std::string& address() const { return address_; }

  // Answers `method` ("GetStatus", as named in the proto) with `response`.
  // Methods with neither a response nor an error answer UNIMPLEMENTED.
  void SetResponse(const std::string& method, const google::protobuf::Message& response);
  // Answers `method` with an error.
  void SetError(const std::string& method, grpc::Status status);
  // From now on, writes answer UNAVAILABLE with hoist-leader = `leader`
  // (an empty leader: UNAVAILABLE without the trailer, as with no leader).
  void ActAsFollower(std::string leader);

  // WatchRollout sends these events (those after the request's
  // after_sequence), then ends the stream OK; with hold_open it waits until
  // the client cancels instead. When break_first_stream_after > 0, the first
  // stream ends with UNAVAILABLE after that many events.
  void SetWatchEvents(std::vector<hoist::v1::RolloutEvent> events, bool hold_open = false,
                      size_t break_first_stream_after = 0);
  // Waits until the watch streams together have sent at least n events.
  bool WaitForWatchEvents(size_t n, absl::Duration timeout);

  // Every request `method` received, oldest first.
  std::vector<std::string> Methods() const;
  int Calls(const std::string& method) const;
  // The last request of `method`, as its type; an empty message when none.
  template <class Req>
  Req LastRequest(const std::string& method) const {
    absl::MutexLock lock(&mu_);
    Req out;
    for (auto it = requests_.rbegin(); it != requests_.rend(); ++it) {
      if (it->first == method) {
        out.CopyFrom(*it->second);
        break;
      }
    }
    return out;
  }

  grpc::Status ApplyStack(grpc::ServerContext* c, const hoist::v1::ApplyStackRequest* q,
                          hoist::v1::ApplyStackResponse* r) override;
  grpc::Status GetDeployment(grpc::ServerContext* c, const hoist::v1::GetDeploymentRequest* q,
                             hoist::v1::GetDeploymentResponse* r) override;
  grpc::Status ListDeployments(grpc::ServerContext* c, const hoist::v1::ListDeploymentsRequest* q,
                               hoist::v1::ListDeploymentsResponse* r) override;
  grpc::Status CreateRelease(grpc::ServerContext* c, const hoist::v1::CreateReleaseRequest* q,
                             hoist::v1::CreateReleaseResponse* r) override;
  grpc::Status GetRelease(grpc::ServerContext* c, const hoist::v1::GetReleaseRequest* q,
                          hoist::v1::GetReleaseResponse* r) override;
  grpc::Status ListReleases(grpc::ServerContext* c, const hoist::v1::ListReleasesRequest* q,
                            hoist::v1::ListReleasesResponse* r) override;
  grpc::Status PlanRollout(grpc::ServerContext* c, const hoist::v1::PlanRolloutRequest* q,
                           hoist::v1::PlanRolloutResponse* r) override;
  grpc::Status StartRollout(grpc::ServerContext* c, const hoist::v1::StartRolloutRequest* q,
                            hoist::v1::StartRolloutResponse* r) override;
  grpc::Status GetRollout(grpc::ServerContext* c, const hoist::v1::GetRolloutRequest* q,
                          hoist::v1::GetRolloutResponse* r) override;
  grpc::Status ListRollouts(grpc::ServerContext* c, const hoist::v1::ListRolloutsRequest* q,
                            hoist::v1::ListRolloutsResponse* r) override;
  grpc::Status WatchRollout(grpc::ServerContext* c, const hoist::v1::WatchRolloutRequest* q,
                            grpc::ServerWriter<hoist::v1::WatchRolloutResponse>* w) override;
  grpc::Status CancelRollout(grpc::ServerContext* c, const hoist::v1::CancelRolloutRequest* q,
                             hoist::v1::CancelRolloutResponse* r) override;
  grpc::Status Rollback(grpc::ServerContext* c, const hoist::v1::RollbackRequest* q,
                        hoist::v1::RollbackResponse* r) override;
  grpc::Status Cutover(grpc::ServerContext* c, const hoist::v1::CutoverRequest* q,
                       hoist::v1::CutoverResponse* r) override;
  grpc::Status GetStatus(grpc::ServerContext* c, const hoist::v1::GetStatusRequest* q,
                         hoist::v1::GetStatusResponse* r) override;
  grpc::Status GetVersionMatrix(grpc::ServerContext* c, const hoist::v1::GetVersionMatrixRequest* q,
                                hoist::v1::GetVersionMatrixResponse* r) override;
  grpc::Status ListAgents(grpc::ServerContext* c, const hoist::v1::ListAgentsRequest* q,
                          hoist::v1::ListAgentsResponse* r) override;
  grpc::Status ListBackups(grpc::ServerContext* c, const hoist::v1::ListBackupsRequest* q,
                           hoist::v1::ListBackupsResponse* r) override;
  grpc::Status ListAuditEvents(grpc::ServerContext* c, const hoist::v1::ListAuditEventsRequest* q,
                               hoist::v1::ListAuditEventsResponse* r) override;
  grpc::Status ListLocks(grpc::ServerContext* c, const hoist::v1::ListLocksRequest* q,
                         hoist::v1::ListLocksResponse* r) override;

 private:
  // Records the request and answers from the canned tables.
  grpc::Status Answer(grpc::ServerContext* ctx, const std::string& method, bool write,
                      const google::protobuf::Message& request, google::protobuf::Message* response);

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<google::protobuf::Message>> responses_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, grpc::Status> errors_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::unique_ptr<google::protobuf::Message>>> requests_ ABSL_GUARDED_BY(mu_);
  bool follower_ ABSL_GUARDED_BY(mu_) = false;
  std::string leader_ ABSL_GUARDED_BY(mu_);
  std::vector<hoist::v1::RolloutEvent> watch_events_ ABSL_GUARDED_BY(mu_);
  bool hold_open_ ABSL_GUARDED_BY(mu_) = false;
  size_t break_after_ ABSL_GUARDED_BY(mu_) = 0;
  int watch_streams_ ABSL_GUARDED_BY(mu_) = 0;
  size_t watch_sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace hoist::testing

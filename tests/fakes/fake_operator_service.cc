#include "tests/fakes/fake_operator_service.h"

#include "absl/strings/str_cat.h"

namespace hoist::testing {

namespace v1 = hoist::v1;

FakeOperatorService::FakeOperatorService() = default;

FakeOperatorService::~FakeOperatorService() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
}

absl::Status FakeOperatorService::Start(std::shared_ptr<grpc::ServerCredentials> credentials) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port);
  builder.RegisterService(this);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) return absl::InternalError("the fake OperatorService could not listen");
  address_ = absl::StrCat("127.0.0.1:", port);
  return absl::OkStatus();
}

void FakeOperatorService::SetResponse(const std::string& method, const google::protobuf::Message& response) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<google::protobuf::Message> copy(response.New());
  copy->CopyFrom(response);
  responses_[method] = std::move(copy);
  errors_.erase(method);
}

void FakeOperatorService::SetError(const std::string& method, grpc::Status status) {
  absl::MutexLock lock(&mu_);
  errors_[method] = std::move(status);
}

void FakeOperatorService::ActAsFollower(std::string leader) {
  absl::MutexLock lock(&mu_);
  follower_ = true;
  leader_ = std::move(leader);
}

void FakeOperatorService::SetWatchEvents(std::vector<v1::RolloutEvent> events, bool hold_open,
                                         size_t break_first_stream_after) {
  absl::MutexLock lock(&mu_);
  watch_events_ = std::move(events);
  hold_open_ = hold_open;
  break_after_ = break_first_stream_after;
}

bool FakeOperatorService::WaitForWatchEvents(size_t n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return watch_sent_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

std::vector<std::string> FakeOperatorService::Methods() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [method, request] : requests_) out.push_back(method);
  return out;
}

int FakeOperatorService::Calls(const std::string& method) const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [m, request] : requests_) n += m == method ? 1 : 0;
  return n;
}

grpc::Status FakeOperatorService::Answer(grpc::ServerContext* ctx, const std::string& method, bool write,
                                         const google::protobuf::Message& request,
                                         google::protobuf::Message* response) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  requests_.emplace_back(method, std::move(copy));
  if (write && follower_) {
    if (leader_.empty()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no leader elected yet");
    ctx->AddTrailingMetadata("hoist-leader", leader_);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, absl::StrCat("not the leader; the leader is ", leader_));
  }
  if (auto it = errors_.find(method); it != errors_.end()) return it->second;
  auto it = responses_.find(method);
  if (it == responses_.end()) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, absl::StrCat("the fake has no answer for ", method));
  }
  response->CopyFrom(*it->second);
  return grpc::Status::OK;
}

grpc::Status FakeOperatorService::WatchRollout(grpc::ServerContext* c, const v1::WatchRolloutRequest* q,
                                               grpc::ServerWriter<v1::WatchRolloutResponse>* w) {
  std::vector<v1::RolloutEvent> events;
  bool hold_open = false;
  size_t break_after = 0;
  {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<google::protobuf::Message> copy(q->New());
    copy->CopyFrom(*q);
    requests_.emplace_back("WatchRollout", std::move(copy));
    if (auto it = errors_.find("WatchRollout"); it != errors_.end()) return it->second;
    events = watch_events_;
    hold_open = hold_open_;
    if (watch_streams_++ == 0) break_after = break_after_;
  }
  size_t sent = 0;
  for (const auto& e : events) {
    if (e.sequence() <= q->after_sequence()) continue;
    if (break_after > 0 && sent == break_after) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the fake broke the stream");
    }
    v1::WatchRolloutResponse resp;
    *resp.mutable_event() = e;
    if (!w->Write(resp)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    ++sent;
    absl::MutexLock lock(&mu_);
    ++watch_sent_;
  }
  if (hold_open) {
    // The sync API has no cancellation callback: look at the context between short waits.
    absl::MutexLock lock(&mu_);
    while (!c->IsCancelled() && !shutting_down_) {
      mu_.AwaitWithTimeout(absl::Condition(&shutting_down_), absl::Milliseconds(10));
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
  }
  return grpc::Status::OK;
}

#define HOIST_FAKE_UNARY(Method, write)                                                                  \
  grpc::Status FakeOperatorService::Method(grpc::ServerContext* c, const v1::Method##Request* q,        \
                                           v1::Method##Response* r) {                                   \
    return Answer(c, #Method, write, *q, r);                                                            \
  }

HOIST_FAKE_UNARY(ApplyStack, true)
HOIST_FAKE_UNARY(GetDeployment, false)
HOIST_FAKE_UNARY(ListDeployments, false)
HOIST_FAKE_UNARY(CreateRelease, true)
HOIST_FAKE_UNARY(GetRelease, false)
HOIST_FAKE_UNARY(ListReleases, false)
HOIST_FAKE_UNARY(PlanRollout, false)
HOIST_FAKE_UNARY(StartRollout, true)
HOIST_FAKE_UNARY(GetRollout, false)
HOIST_FAKE_UNARY(ListRollouts, false)
HOIST_FAKE_UNARY(CancelRollout, true)
HOIST_FAKE_UNARY(Rollback, true)
HOIST_FAKE_UNARY(Cutover, true)
HOIST_FAKE_UNARY(GetStatus, false)
HOIST_FAKE_UNARY(GetVersionMatrix, false)
HOIST_FAKE_UNARY(ListAgents, false)
HOIST_FAKE_UNARY(ListBackups, false)
HOIST_FAKE_UNARY(ListAuditEvents, false)
HOIST_FAKE_UNARY(ListLocks, false)

#undef HOIST_FAKE_UNARY

}  // namespace hoist::testing

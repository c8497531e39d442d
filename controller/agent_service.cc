#include "controller/agent_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "shared/logging.h"
#include "shared/tls.h"
#include "spdlog/spdlog.h"

namespace hoist {

using hoist::v1::SessionRequest;
using hoist::v1::SessionResponse;

// One session. gRPC calls its On* reactions on its own threads; the hub
// calls Send and Close from any thread.
//
// Its life: the hello is read; a follower answers with a redirect; the
// leader hands the hello to a worker, which opens the session in the hub
// (a Postgres write) and starts reading the session's messages. Every
// failure ends in one Finish; after OnDone (the last reaction) the hub is
// told the session closed, on a worker, and the reactor is deleted - by the
// opening worker instead when OnDone came while it opened the session.
//
// Every Start*, Finish and TryCancel is made holding mu_ and only while the
// call is not finishing: none after Finish, none after OnDone. (gRPC runs no
// reaction inline from those calls, so holding mu_ there cannot deadlock;
// the lock order is hub or service first, then a reactor.)
class SessionReactor final : public grpc::ServerBidiReactor<SessionRequest, SessionResponse>,
                             public AgentConnection {
 public:
  SessionReactor(AgentServiceImpl* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), started_(absl::Now()) {
    // Under mTLS the certificate is checked before anything is read.
    const Authorizer* auth = service_->auth_;
    if (auth != nullptr && auth->tls()) {
      absl::StatusOr<CertInfo> cert = auth->CheckAgent(*context);
      if (!cert.ok()) {
        RequestFinish(grpc::Status(static_cast<grpc::StatusCode>(cert.status().code()),
                                   std::string(cert.status().message())));
        return;
      }
      serial_ = cert->serial;
      cert_name_ = cert->common_name;
    }
    if (!service_->Begin(this, serial_)) {
      spdlog::warn("agent certificate {} (serial {}) already has {} session calls open; refused another from {}",
                   cert_name_, serial_, service_->options_.max_calls_per_certificate, context->peer());
      RequestFinish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat("the certificate of \"", cert_name_, "\" already has ",
                                              service_->options_.max_calls_per_certificate,
                                              " session calls open on this controller")));
      return;
    }
    registered_ = true;
    absl::MutexLock lock(&mu_);
    ReadNextLocked();
  }

  bool Send(const SessionResponse& message) override {
    absl::MutexLock lock(&mu_);
    if (finish_requested_ || done_) return false;
    out_.push_back(message);
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());  // a deque's elements stay put while it grows
    }
    return true;
  }

  void Close() override {
    absl::MutexLock lock(&mu_);
    if (!done_) context_->TryCancel();
  }

  // Cancels the session when it has sent no hello by now - timeout.
  void CancelIfSilent(absl::Time now, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    if (done_ || phase_ != Phase::kHello || now - started_ < timeout) return;
    hello_timed_out_ = true;
    context_->TryCancel();
  }

  const std::string& serial() const { return serial_; }

 private:
  enum class Phase { kHello, kOpening, kOpen };

  void ReadNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finish_requested_ && !done_) StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    Phase phase;
    bool timed_out;
    {
      absl::MutexLock lock(&mu_);
      phase = phase_;
      timed_out = hello_timed_out_;
    }
    if (!ok) {
      if (phase == Phase::kHello) {
        RequestFinish(grpc::Status(
            grpc::StatusCode::CANCELLED,
            timed_out ? absl::StrCat("the agent sent no hello within ",
                                     absl::FormatDuration(service_->options_.hello_timeout))
                      : std::string("the agent closed the stream before its hello")));
      } else {
        RequestFinish(grpc::Status::OK);
      }
      return;
    }
    if (phase == Phase::kHello) {
      OnHello();
      return;
    }
    service_->hub_->OnMessage(agent_id_, this, in_);
    absl::MutexLock lock(&mu_);
    ReadNextLocked();
  }

  void OnHello() {
    if (in_.payload_case() != SessionRequest::kHello) {
      spdlog::warn("session from {} refused: first message is not a hello", context_->peer());
      RequestFinish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message of a session must be a Hello"));
      return;
    }
    const hoist::v1::Hello& hello = in_.hello();
    const Authorizer* auth = service_->auth_;
    if (auth != nullptr && auth->tls() && (cert_name_.empty() || cert_name_ != hello.agent_id())) {
      spdlog::warn("session from {} refused: certificate name \"{}\" does not match agent id \"{}\"",
                   context_->peer(), cert_name_, hello.agent_id());
      RequestFinish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                 absl::StrCat("the client certificate is issued to \"", cert_name_,
                                              "\" but the hello names agent \"", hello.agent_id(),
                                              "\"; issue one with: hoist ca issue agent ", hello.agent_id())));
      return;
    }
    if (service_->leadership_->epoch() == 0) {
      LeaderInfo leader = service_->leadership_->CurrentLeader();
      SessionResponse redirect;
      redirect.mutable_not_leader()->set_leader_address(leader.address);
      redirect.mutable_not_leader()->set_leader_epoch(leader.epoch);
      Send(redirect);
      RequestFinish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 leader.address.empty()
                                     ? std::string("not the leader, and no leader is known yet")
                                     : absl::StrCat("not the leader; the leader is at ", leader.address)));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      phase_ = Phase::kOpening;
      agent_id_ = hello.agent_id();
      opening_ = true;
    }
    // Opening records the agent in Postgres: not on gRPC's thread.
    service_->Post([this] { OpenInHub(); });
  }

  // On a worker. Open sends the Welcome and makes the session visible to
  // the hub, which may send and close from then on.
  void OpenInHub() {
    absl::Status opened = service_->hub_->Open(in_.hello(), this);
    bool done;
    {
      absl::MutexLock lock(&mu_);
      opening_ = false;
      done = done_;
      if (opened.ok()) {
        opened_ = true;
        phase_ = Phase::kOpen;
        ReadNextLocked();
      }
    }
    if (done) {
      // The call ended while the hub opened the session (its Welcome could
      // not be written, it was cancelled): OnDone left the clean-up here.
      if (opened.ok()) service_->hub_->Closed(agent_id_, this);
      delete this;
      return;
    }
    if (!opened.ok()) {
      spdlog::warn("session of agent \"{}\" from {} refused: {}", agent_id_, context_->peer(), opened.message());
      RequestFinish(grpc::Status(static_cast<grpc::StatusCode>(opened.code()), std::string(opened.message())));
    }
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    out_.pop_front();
    if (!ok && !finish_requested_) {
      // The stream is gone: nothing queued will be delivered.
      finish_requested_ = true;
      status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "writing to the agent failed");
      context_->TryCancel();
    }
    if (finish_requested_) out_.clear();  // what is queued behind a finish is dropped
    if (!out_.empty()) {
      StartWrite(&out_.front());
      return;
    }
    writing_ = false;
    if (finish_requested_ && !finished_) {
      finished_ = true;
      Finish(status_);
    }
  }

  // Ends the call with `status` once the write in flight is done; messages
  // queued behind it are dropped. The first request wins.
  void RequestFinish(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (finish_requested_) return;
    finish_requested_ = true;
    status_ = std::move(status);
    if (writing_) return;  // OnWriteDone finishes
    finished_ = true;
    Finish(status_);
  }

  void OnCancel() override {}

  void OnDone() override {
    bool opening, opened;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      opening = opening_;
      opened = opened_;
    }
    if (registered_) service_->End(this, serial_);
    if (opening) return;  // OpenInHub cleans up
    if (!opened) {
      delete this;
      return;
    }
    service_->Post([this] {
      service_->hub_->Closed(agent_id_, this);
      delete this;
    });
  }

  AgentServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  const absl::Time started_;
  std::string serial_;
  std::string cert_name_;
  bool registered_ = false;
  // Read by one reaction (or the opening worker) at a time.
  SessionRequest in_;
  // Set before the session opens, read after.
  std::string agent_id_;

  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kHello;
  bool hello_timed_out_ ABSL_GUARDED_BY(mu_) = false;
  bool opening_ ABSL_GUARDED_BY(mu_) = false;  // OpenInHub posted, not yet done
  bool opened_ ABSL_GUARDED_BY(mu_) = false;   // the hub knows this session
  std::deque<SessionResponse> out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

AgentServiceImpl::AgentServiceImpl(AgentHub* hub, const Leadership* leadership, const Authorizer* auth,
                                   AgentServiceOptions options)
    : hub_(hub), leadership_(leadership), auth_(auth), options_(std::move(options)) {
  for (int i = 0; i < std::max(1, options_.workers); ++i) workers_.emplace_back([this] { WorkLoop(); });
  hello_watch_ = std::thread([this] { HelloWatchLoop(); });
}

AgentServiceImpl::~AgentServiceImpl() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  hello_watch_.join();
  {
    absl::MutexLock lock(&work_mu_);
    work_stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

grpc::ServerBidiReactor<SessionRequest, SessionResponse>* AgentServiceImpl::Session(
    grpc::CallbackServerContext* context) {
  return new SessionReactor(this, context);
}

void AgentServiceImpl::Post(std::function<void()> job) {
  absl::MutexLock lock(&work_mu_);
  work_.push_back(std::move(job));
}

void AgentServiceImpl::WorkLoop() {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&work_mu_);
      work_mu_.Await(absl::Condition(
          +[](AgentServiceImpl* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->work_mu_) {
            return s->work_stop_ || !s->work_.empty();
          },
          this));
      // Stopping still runs what is queued: a closed session's reactor is
      // deleted by its job.
      if (work_.empty()) return;
      job = std::move(work_.front());
      work_.pop_front();
    }
    job();
  }
}

void AgentServiceImpl::HelloWatchLoop() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1))) {
    const absl::Time now = absl::Now();
    for (SessionReactor* reactor : open_) reactor->CancelIfSilent(now, options_.hello_timeout);
  }
}

bool AgentServiceImpl::Begin(SessionReactor* reactor, const std::string& serial) {
  absl::MutexLock lock(&mu_);
  if (!serial.empty()) {
    int& calls = calls_per_serial_[serial];
    if (calls >= options_.max_calls_per_certificate) return false;
    ++calls;
  }
  open_.insert(reactor);
  return true;
}

void AgentServiceImpl::End(SessionReactor* reactor, const std::string& serial) {
  absl::MutexLock lock(&mu_);
  open_.erase(reactor);
  if (!serial.empty() && --calls_per_serial_[serial] <= 0) calls_per_serial_.erase(serial);
}

int AgentServiceImpl::CloseRevokedSessions() {
  if (auth_ == nullptr) return 0;
  int closed = 0;
  absl::MutexLock lock(&mu_);
  for (SessionReactor* reactor : open_) {
    if (auth_->IsRevoked(reactor->serial())) {
      spdlog::warn("closing a session: its agent certificate (serial {}) is revoked", reactor->serial());
      reactor->Close();
      ++closed;
    }
  }
  return closed;
}

}  // namespace hoist

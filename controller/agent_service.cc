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
// calls Send and Close from any thread. Nothing here holds mu_ while it
// calls into gRPC or the hub.
//
// Its life: the hello is read; a follower answers with a redirect; the
// leader hands the hello to a worker, which opens the session in the hub
// (a Postgres write) and starts reading the session's messages. Every
// failure ends in one Finish; OnDone, after the last reaction, tells the
// hub the session closed (on a worker) and deletes the reactor.
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
    StartRead(&in_);
  }

  bool Send(const SessionResponse& message) override {
    const SessionResponse* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_ || done_) return false;
      out_.push_back(message);
      if (writing_) return true;
      writing_ = true;
      next = &out_.front();  // a deque's elements stay put while it grows
    }
    StartWrite(next);
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

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool timed_out;
      Phase phase;
      {
        absl::MutexLock lock(&mu_);
        timed_out = hello_timed_out_;
        phase = phase_;
      }
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
    Phase phase;
    {
      absl::MutexLock lock(&mu_);
      phase = phase_;
    }
    if (phase == Phase::kHello) {
      OnHello();
      return;
    }
    service_->hub_->OnMessage(agent_id_, this, in_);
    StartRead(&in_);
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
    if (service_->hub_->epoch() == 0) {
      LeaderInfo leader = service_->current_leader_();
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
    }
    // Opening records the agent in Postgres: not on gRPC's thread.
    service_->Post([this] {
      // Open sends the Welcome.
      absl::Status opened = service_->hub_->Open(in_.hello(), this);
      if (!opened.ok()) {
        spdlog::warn("session of agent \"{}\" from {} refused: {}", agent_id_, context_->peer(), opened.message());
        RequestFinish(grpc::Status(static_cast<grpc::StatusCode>(opened.code()), std::string(opened.message())));
        return;
      }
      {
        absl::MutexLock lock(&mu_);
        phase_ = Phase::kOpen;
        opened_ = true;
      }
      StartRead(&in_);
    });
  }

  void OnWriteDone(bool ok) override {
    const SessionResponse* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      out_.pop_front();
      if (!ok) {
        // The stream is gone: nothing queued will be delivered.
        out_.clear();
        if (!finish_requested_) {
          finish_requested_ = true;
          status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "writing to the agent failed");
          context_->TryCancel();
        }
      }
      if (finish_requested_) out_.clear();
      if (!out_.empty()) {
        next = &out_.front();
      } else {
        writing_ = false;
        finish = finish_requested_ && !finished_;
        if (finish) finished_ = true;
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    } else if (finish) {
      Finish(status_);
    }
  }

  // Ends the call with `status` once the write in flight is done; messages
  // queued behind it are dropped. The first request wins.
  void RequestFinish(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
      finish_requested_ = true;
      status_ = std::move(status);
      if (writing_) return;  // OnWriteDone finishes
      finished_ = true;
    }
    Finish(status_);
  }

  void OnCancel() override {}

  void OnDone() override {
    bool opened;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      opened = opened_;
    }
    if (registered_) service_->End(this, serial_);
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
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<SessionResponse> out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Written once, before finished_ is set; read by the one Finish.
  grpc::Status status_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

AgentServiceImpl::AgentServiceImpl(AgentHub* hub, std::function<LeaderInfo()> current_leader, const Authorizer* auth,
                                   AgentServiceOptions options)
    : hub_(hub), current_leader_(std::move(current_leader)), auth_(auth), options_(std::move(options)) {
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

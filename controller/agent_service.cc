#include "controller/agent_service.h"

#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "shared/logging.h"
#include "shared/tls.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

using Stream = grpc::ServerReaderWriter<hoist::v1::SessionResponse, hoist::v1::SessionRequest>;

// How long a new session may take to send its Hello.
constexpr absl::Duration kHelloTimeout = absl::Seconds(10);
// Session calls one agent certificate may have open at once.
constexpr int kMaxCallsPerCertificate = 4;

// One session's connection: Send queues, a writer thread drains the queue.
class StreamConnection final : public AgentConnection {
 public:
  StreamConnection(grpc::ServerContext* context, Stream* stream) : context_(context), stream_(stream) {
    writer_ = std::thread([this] { WriteLoop(); });
  }
  ~StreamConnection() override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    writer_.join();
  }

  bool Send(const hoist::v1::SessionResponse& message) override {
    absl::MutexLock lock(&mu_);
    if (broken_ || done_) return false;
    queue_.push_back(message);
    return true;
  }

  void Close() override { context_->TryCancel(); }

 private:
  void WriteLoop() {
    while (true) {
      hoist::v1::SessionResponse next;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](StreamConnection* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return c->done_ || !c->queue_.empty(); },
            this));
        if (queue_.empty()) return;  // done_
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!stream_->Write(next)) {
        absl::MutexLock lock(&mu_);
        broken_ = true;
        queue_.clear();
        context_->TryCancel();
      }
    }
  }

  grpc::ServerContext* const context_;
  Stream* const stream_;
  absl::Mutex mu_;
  std::deque<hoist::v1::SessionResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;
};

}  // namespace

AgentServiceImpl::AgentServiceImpl(AgentHub* hub, std::function<LeaderInfo()> current_leader, const Authorizer* auth)
    : hub_(hub), current_leader_(std::move(current_leader)), auth_(auth) {}

int AgentServiceImpl::CloseRevokedSessions() {
  if (auth_ == nullptr) return 0;
  int closed = 0;
  absl::MutexLock lock(&mu_);
  for (const auto& [context, who] : open_) {
    if (auth_->IsRevoked(who.second)) {
      spdlog::warn("closing the session of agent {}: its certificate (serial {}) is revoked", who.first, who.second);
      context->TryCancel();
      ++closed;
    }
  }
  return closed;
}

grpc::Status AgentServiceImpl::Session(grpc::ServerContext* context, Stream* stream) {
  // Under mTLS the certificate is checked before anything is read: an
  // operator's or a revoked one holds no thread waiting for a hello.
  std::string serial;
  std::string cert_name;
  if (auth_ != nullptr && auth_->tls()) {
    absl::StatusOr<CertInfo> cert = auth_->CheckAgent(*context);
    if (!cert.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(cert.status().code()), std::string(cert.status().message()));
    }
    serial = cert->serial;
    cert_name = cert->common_name;
  }
  // A few calls at once per certificate (a reconnect may overlap the old
  // session's end); more is one key opening streams to hold threads.
  {
    absl::MutexLock lock(&mu_);
    if (!serial.empty() && calls_per_serial_[serial] >= kMaxCallsPerCertificate) {
      spdlog::warn("agent certificate {} (serial {}) already has {} session calls open; refused another from {}",
                   cert_name, serial, calls_per_serial_[serial], context->peer());
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the certificate of \"", cert_name, "\" already has ",
                                       kMaxCallsPerCertificate, " session calls open on this controller"));
    }
    if (!serial.empty()) ++calls_per_serial_[serial];
  }
  struct Release {
    AgentServiceImpl* self;
    std::string serial;
    ~Release() {
      if (serial.empty()) return;
      absl::MutexLock lock(&self->mu_);
      if (--self->calls_per_serial_[serial] <= 0) self->calls_per_serial_.erase(serial);
    }
  } release{this, serial};
  hoist::v1::SessionRequest first;
  bool read_first = false;
  {
    // A peer that opens a session and says nothing would hold this thread.
    absl::Mutex mu;
    bool answered = false;
    std::thread watch([&] {
      absl::MutexLock lock(&mu);
      if (!mu.AwaitWithTimeout(absl::Condition(&answered), kHelloTimeout)) context->TryCancel();
    });
    read_first = stream->Read(&first);
    {
      absl::MutexLock lock(&mu);
      answered = true;
    }
    watch.join();
  }
  if (!read_first) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        absl::StrCat("the agent closed the stream or sent no hello within ",
                                     absl::FormatDuration(kHelloTimeout)));
  }
  if (first.payload_case() != hoist::v1::SessionRequest::kHello) {
    spdlog::warn("session from {} refused: first message is not a hello", context->peer());
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message of a session must be a Hello");
  }
  const hoist::v1::Hello& hello = first.hello();
  if (auth_ != nullptr && auth_->tls()) {
    const std::string& cn = cert_name;
    if (cn.empty() || cn != hello.agent_id()) {
      spdlog::warn("session from {} refused: certificate name \"{}\" does not match agent id \"{}\"",
                   context->peer(), cn, hello.agent_id());
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("the client certificate is issued to \"", cn, "\" but the hello names agent \"",
                                       hello.agent_id(), "\"; issue one with: hoist ca issue agent ",
                                       hello.agent_id()));
    }
  }
  if (hub_->epoch() == 0) {
    LeaderInfo leader = current_leader_();
    hoist::v1::SessionResponse redirect;
    redirect.mutable_not_leader()->set_leader_address(leader.address);
    redirect.mutable_not_leader()->set_leader_epoch(leader.epoch);
    stream->Write(redirect);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        leader.address.empty() ? std::string("not the leader, and no leader is known yet")
                                               : absl::StrCat("not the leader; the leader is at ", leader.address));
  }

  StreamConnection conn(context, stream);
  {
    absl::MutexLock lock(&mu_);
    open_[context] = {hello.agent_id(), serial};
  }
  struct Forget {
    AgentServiceImpl* self;
    grpc::ServerContext* context;
    ~Forget() {
      absl::MutexLock lock(&self->mu_);
      self->open_.erase(context);
    }
  } forget{this, context};
  // Open sends the Welcome.
  if (absl::Status opened = hub_->Open(hello, &conn); !opened.ok()) {
    spdlog::warn("session of agent \"{}\" from {} refused: {}", hello.agent_id(), context->peer(), opened.message());
    return grpc::Status(static_cast<grpc::StatusCode>(opened.code()), std::string(opened.message()));
  }
  hoist::v1::SessionRequest message;
  while (stream->Read(&message)) {
    hub_->OnMessage(hello.agent_id(), &conn, message);
  }
  hub_->Closed(hello.agent_id(), &conn);
  return grpc::Status::OK;
}

}  // namespace hoist

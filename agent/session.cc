#include "agent/session.h"

#include "shared/tls.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "shared/logging.h"
#include "shared/protocol.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

using google::protobuf::util::TimeUtil;

absl::Duration Jitter(absl::Duration d) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> dist(0.5, 1.5);
  return d * dist(rng);
}

google::protobuf::Timestamp NowProto() { return TimeUtil::GetCurrentTime(); }

}  // namespace

AgentSession::AgentSession(AgentSessionOptions options) : options_(std::move(options)) {}

AgentSession::~AgentSession() { Stop(); }

void AgentSession::Start() { thread_ = std::thread([this] { Loop(); }); }

void AgentSession::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (active_context_ != nullptr) active_context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
  ReapWorkers(/*all=*/true);
}

bool AgentSession::Stopping() {
  absl::MutexLock lock(&mu_);
  return stop_;
}

void AgentSession::Loop() {
  size_t next = 0;
  std::string hint;
  absl::Duration backoff = options_.backoff_min;
  while (!Stopping()) {
    std::string address = hint.empty() ? options_.controllers[next++ % options_.controllers.size()] : hint;
    const absl::Time began = absl::Now();
    hint = RunOnce(address);
    if (Stopping()) break;
    if (!hint.empty() && hint != address) {
      backoff = options_.backoff_min;  // follow a fresh redirect at once
      continue;
    }
    hint.clear();
    // A session that lasted a while was healthy: start the backoff over.
    if (absl::Now() - began > absl::Seconds(10)) backoff = options_.backoff_min;
    // Jittered, so that a fleet cut off together does not come back in one
    // burst, and never past the cap: after an outage every agent is back
    // within backoff_max of the controller's return.
    absl::Duration wait = std::min(Jitter(backoff), options_.backoff_max);
    backoff = std::min(backoff * 2, options_.backoff_max);
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), wait);
  }
}

bool AgentSession::ControllerCertificateOk(grpc::ClientContext& context, const std::string& address) {
  if (!options_.is_revoked) return true;
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  absl::StatusOr<CertInfo> cert =
      auth != nullptr ? PeerCertificate(*auth) : absl::UnauthenticatedError("no authentication context");
  if (!cert.ok()) {
    spdlog::error("{}: cannot read the controller's certificate ({}); not serving it", address,
                  std::string(cert.status().message()));
    return false;
  }
  if (!cert->kind.has_value() || *cert->kind != CertKind::kController) {
    spdlog::error("{} presents a certificate for \"{}\" that is not a controller's (OU=role:controller); not "
                  "serving it", address, cert->common_name);
    return false;
  }
  if (options_.is_revoked(cert->serial)) {
    spdlog::error("{}: the certificate of controller {} (serial {}) is revoked; not serving it", address,
                  cert->common_name, cert->serial);
    return false;
  }
  absl::MutexLock lock(&mu_);
  controller_serial_ = cert->serial;
  return true;
}

void AgentSession::CloseIfControllerRevoked() {
  if (!options_.is_revoked) return;
  absl::MutexLock lock(&mu_);
  if (active_context_ != nullptr && !controller_serial_.empty() && options_.is_revoked(controller_serial_)) {
    spdlog::error("the controller's certificate (serial {}) is now revoked; closing the session", controller_serial_);
    active_context_->TryCancel();
  }
}

std::string AgentSession::RunOnce(const std::string& address) {
  std::shared_ptr<grpc::Channel> channel = Dial(address);
  auto stub = hoist::v1::AgentService::NewStub(channel);
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return "";
    active_context_ = &context;
  }
  if (!AwaitConnection(*channel, address)) {
    absl::MutexLock lock(&mu_);
    active_context_ = nullptr;
    return "";
  }
  // Cancels the call when no answer to the hello arrives in time.
  bool answered = false;
  std::thread hello_watch([this, &context, &answered, address] {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return answered || stop_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), options_.hello_answer_timeout)) {
      spdlog::warn("{} did not answer the hello within {}; trying the next controller", address,
                   absl::FormatDuration(options_.hello_answer_timeout));
      context.TryCancel();
    }
  });
  auto hello_answered = [&] {
    {
      absl::MutexLock lock(&mu_);
      answered = true;
    }
    if (hello_watch.joinable()) hello_watch.join();
  };
  std::unique_ptr<Stream> stream = stub->Session(&context);
  hoist::v1::SessionRequest hello_message = HelloMessage();
  std::string hint;
  bool served = false;
  hoist::v1::SessionResponse first;
  const bool got_first = stream->Write(hello_message) && stream->Read(&first);
  hello_answered();
  if (got_first) {
    if (first.has_not_leader()) {
      hint = first.not_leader().leader_address();
      spdlog::info("{} does not lead; {}", address,
                   hint.empty() ? std::string("no leader known yet") : absl::StrCat("following to ", hint));
    } else if (first.has_welcome() && !ControllerCertificateOk(context, address)) {
      // Refused: said why; the next controller is tried.
    } else if (first.has_welcome()) {
      served = true;
      ServeWelcome(stream.get(), &context, address, first.welcome());
    } else {
      spdlog::warn("{} answered the hello with an unexpected message; reconnecting", address);
    }
  }
  // Finish waits for the server's status, which follows every message it
  // sent; a session left with unread messages (refused, or an unexpected
  // answer) is cancelled rather than waited for.
  if (got_first && !first.has_not_leader() && !served) context.TryCancel();
  stream->WritesDone();
  grpc::Status status = stream->Finish();
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
    spdlog::warn("session with {} ended: {} ({})", address, status.error_message(),
                 static_cast<int>(status.error_code()));
  }
  absl::MutexLock lock(&mu_);
  active_context_ = nullptr;
  return hint;
}

std::shared_ptr<grpc::Channel> AgentSession::Dial(const std::string& address) const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_time)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_timeout)));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC waits 20 s for a connection by default; a frozen host would hold
  // the agent that long before it tried the next controller.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.hello_timeout)));
  // A connection of this session's own: sessions of one process (simulated
  // hosts) would otherwise share one and its stream limit.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, options_.credentials, args);
}

bool AgentSession::AwaitConnection(grpc::Channel& channel, const std::string& address) {
  // The connection first, within hello_timeout; a refused or failed one
  // moves on at once. Watched in slices, so that Stop is not held up.
  const absl::Time connect_by = absl::Now() + options_.hello_timeout;
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE && state != GRPC_CHANNEL_SHUTDOWN &&
         absl::Now() < connect_by && !Stopping()) {
    channel.WaitForStateChange(state, absl::ToChronoTime(std::min(connect_by, absl::Now() + absl::Milliseconds(200))));
    state = channel.GetState(/*try_to_connect=*/true);
  }
  if (state == GRPC_CHANNEL_READY) return true;
  if (!Stopping()) {
    spdlog::warn("{} {}; trying the next controller", address,
                 state == GRPC_CHANNEL_TRANSIENT_FAILURE
                     ? std::string("refused the connection or cannot be reached")
                     : absl::StrCat("did not accept a connection within ", absl::FormatDuration(options_.hello_timeout)));
  }
  return false;
}

hoist::v1::SessionRequest AgentSession::HelloMessage() const {
  hoist::v1::SessionRequest hello_message;
  hoist::v1::Hello* hello = hello_message.mutable_hello();
  *hello = options_.hello;
  hello->set_protocol_version(kProtocolVersion);
  hello->set_agent_version(HOIST_VERSION);
  if (options_.highest_epoch) hello->set_highest_epoch(options_.highest_epoch());
  if (options_.disk_free) {
    auto [images, backups] = options_.disk_free();
    hello->set_image_disk_free_bytes(images);
    hello->set_backup_disk_free_bytes(backups);
  }
  return hello_message;
}

void AgentSession::ServeWelcome(Stream* stream, grpc::ClientContext* context, const std::string& address,
                                const hoist::v1::Welcome& welcome) {
  absl::Duration interval = absl::Milliseconds(TimeUtil::DurationToMilliseconds(welcome.heartbeat_interval()));
  if (interval <= absl::ZeroDuration()) interval = absl::Seconds(2);
  spdlog::info("session open with {} (leader epoch {}, controller {})", address, welcome.epoch(),
               welcome.controller_version());
  session_epoch_ = welcome.epoch();
  connected_ = true;
  Serve(stream, context, interval);
  connected_ = false;
  session_epoch_ = 0;
  {
    absl::MutexLock lock(&mu_);
    controller_serial_.clear();
  }
}

bool AgentSession::Write(const hoist::v1::SessionRequest& message) {
  absl::MutexLock lock(&write_mu_);
  return current_stream_ != nullptr && current_stream_->Write(message);
}

void AgentSession::SendInventory(bool only_if_changed) {
  if (!options_.take_inventory) return;
  absl::StatusOr<hoist::v1::Inventory> inventory = options_.take_inventory();
  if (!inventory.ok()) {
    spdlog::warn("cannot take the inventory: {}", inventory.status().message());
    return;
  }
  // What the containers are, not when they were looked at: the time would
  // make every inventory look changed and be sent (and stored) again.
  inventory->clear_taken_at();
  std::string key = inventory->SerializeAsString();
  hoist::v1::SessionRequest message;
  *message.mutable_inventory() = *std::move(inventory);
  *message.mutable_inventory()->mutable_taken_at() = NowProto();
  absl::MutexLock lock(&write_mu_);
  if (current_stream_ == nullptr || (only_if_changed && key == last_inventory_)) return;
  if (current_stream_->Write(message)) last_inventory_ = std::move(key);
}

void AgentSession::Serve(Stream* stream, grpc::ClientContext* context, absl::Duration heartbeat_interval) {
  {
    absl::MutexLock lock(&write_mu_);
    last_inventory_.clear();
    current_stream_ = stream;
  }
  SendInventory(/*only_if_changed=*/false);

  // Heartbeats and inventory changes, on their own thread.
  absl::Mutex ticker_mu;
  bool ticker_stop = false;
  std::thread ticker([&] {
    absl::Time next_inventory = absl::Now() + options_.inventory_interval;
    while (true) {
      {
        absl::MutexLock lock(&ticker_mu);
        ticker_mu.AwaitWithTimeout(absl::Condition(&ticker_stop), heartbeat_interval);
        if (ticker_stop) return;
      }
      hoist::v1::SessionRequest beat;
      *beat.mutable_heartbeat()->mutable_sent_at() = NowProto();
      if (options_.disk_free) {
        auto [images, backups] = options_.disk_free();
        beat.mutable_heartbeat()->set_image_disk_free_bytes(images);
        beat.mutable_heartbeat()->set_backup_disk_free_bytes(backups);
      }
      {
        absl::MutexLock lock(&mu_);
        for (const std::string& id : running_steps_) beat.mutable_heartbeat()->add_running_step_ids(id);
      }
      if (!Write(beat)) return;
      if (absl::Now() >= next_inventory) {
        SendInventory(/*only_if_changed=*/true);
        next_inventory = absl::Now() + options_.inventory_interval;
      }
    }
  });

  hoist::v1::SessionResponse message;
  while (stream->Read(&message)) {
    ReapWorkers(/*all=*/false);
    switch (message.payload_case()) {
      case hoist::v1::SessionResponse::kStep: {
        auto worker = std::make_unique<StepWorker>();
        StepWorker* w = worker.get();
        hoist::v1::Step step = message.step();
        {
          absl::MutexLock lock(&mu_);
          running_steps_.push_back(step.step_id());
        }
        w->thread = std::thread([this, w, step = std::move(step)] {
          hoist::v1::StepResult result = options_.run_step(step, [&](const hoist::v1::StepProgress& progress) {
            hoist::v1::SessionRequest m;
            *m.mutable_progress() = progress;
            Write(m);
          });
          hoist::v1::SessionRequest m;
          *m.mutable_result() = std::move(result);
          // If the stream is gone the journal keeps the result; the leader
          // sends the step again after reconnecting and gets it replayed.
          Write(m);
          {
            absl::MutexLock lock(&mu_);
            auto it = std::find(running_steps_.begin(), running_steps_.end(), step.step_id());
            if (it != running_steps_.end()) running_steps_.erase(it);
          }
          SendInventory(/*only_if_changed=*/true);
          w->done = true;
        });
        absl::MutexLock lock(&workers_mu_);
        workers_.push_back(std::move(worker));
        break;
      }
      case hoist::v1::SessionResponse::kInventoryRequest:
        SendInventory(/*only_if_changed=*/false);
        break;
      case hoist::v1::SessionResponse::kNotLeader:
        spdlog::info("the controller stepped down; reconnecting");
        context->TryCancel();
        break;
      default:
        spdlog::warn("unexpected message from the controller ignored");
        break;
    }
  }
  {
    absl::MutexLock lock(&ticker_mu);
    ticker_stop = true;
  }
  ticker.join();
  // Steps still running go on: they write their results to the next
  // session's stream, or only to the journal if there is none by then.
  absl::MutexLock lock(&write_mu_);
  current_stream_ = nullptr;
}

void AgentSession::ReapWorkers(bool all) {
  std::vector<std::unique_ptr<StepWorker>> finished;
  {
    absl::MutexLock lock(&workers_mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (all || (*it)->done.load()) {
        finished.push_back(std::move(*it));
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : finished) w->thread.join();
}

}  // namespace hoist


#include "controller/agent_hub.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "shared/logging.h"
#include "shared/protocol.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

using google::protobuf::util::TimeUtil;

// How long past a step's deadline the hub still waits for the agent's own
// DEADLINE_EXCEEDED result before giving up on it.
constexpr absl::Duration kResultGrace = absl::Seconds(5);

absl::Status CheckHello(const hoist::v1::Hello& hello) {
  const std::string& id = hello.agent_id();
  if (id.empty()) return absl::InvalidArgumentError("hello.agent_id: required");
  if (id.size() > 128) return absl::InvalidArgumentError("hello.agent_id: longer than 128 characters");
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return absl::InvalidArgumentError(
          absl::StrCat("hello.agent_id \"", id, "\": use letters, digits, '-', '_' and '.' only"));
    }
  }
  if (hello.protocol_version() < kMinAgentProtocol || hello.protocol_version() > kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "agent ", id, " speaks session protocol ", hello.protocol_version(), " but this controller accepts ",
        kMinAgentProtocol, " to ", kProtocolVersion,
        hello.protocol_version() > kProtocolVersion ? "; upgrade the controllers first"
                                                    : "; upgrade the agent"));
  }
  return absl::OkStatus();
}

}  // namespace

AgentHub::AgentHub(AgentStore* store, Clock* clock, AgentHubOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

AgentHub::~AgentHub() { Stop(); }

void AgentHub::Start() {
  liveness_ = std::thread([this] { LivenessLoop(); });
  inventory_writer_ = std::thread([this] { InventoryLoop(); });
}

void AgentHub::InventoryLoop() {
  while (true) {
    uint64_t epoch;
    std::map<std::string, hoist::v1::Inventory> pending;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](AgentHub* hub) ABSL_EXCLUSIVE_LOCKS_REQUIRED(hub->mu_) { return hub->stop_ || !hub->inventories_.empty(); },
          this));
      if (stop_) return;
      pending.swap(inventories_);
      epoch = epoch_;
    }
    if (epoch == 0) continue;
    if (absl::Status s = store_->ReplaceInventories(epoch, pending); !s.ok()) {
      StoreError(absl::StrCat("recording the inventories of ", pending.size(), " agents"), s).IgnoreError();
    }
  }
}

void AgentHub::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    for (auto& [id, session] : sessions_) session.conn->Close();
    WakeWaiters();
  }
  if (liveness_.joinable()) liveness_.join();
  if (inventory_writer_.joinable()) inventory_writer_.join();
}

void AgentHub::OnLeadership(uint64_t epoch) {
  absl::MutexLock lock(&mu_);
  if (epoch == epoch_) return;
  epoch_ = epoch;
  heard_.clear();
  inventories_.clear();
  // A new epoch (or none) invalidates every session: agents must hear the new
  // epoch in a fresh Welcome, or be redirected to the new leader.
  for (auto& [id, session] : sessions_) session.conn->Close();
  WakeWaiters();
}

void AgentHub::WakeWaiters(const std::string& agent_id) {
  for (auto& [step_id, waiter] : waiters_) {
    if (agent_id.empty() || waiter->agent_id == agent_id) waiter->cv.Signal();
  }
}

uint64_t AgentHub::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

absl::Status AgentHub::StoreError(absl::string_view what, const absl::Status& s) {
  spdlog::warn("{}: {}", what, s.message());
  return s;
}

absl::Mutex& AgentHub::WriteLockFor(const std::string& agent_id) {
  return write_locks_[std::hash<std::string>{}(agent_id) % write_locks_.size()];
}

absl::Status AgentHub::Open(const hoist::v1::Hello& hello, AgentConnection* conn) {
  if (absl::Status s = CheckHello(hello); !s.ok()) return s;
  uint64_t epoch = this->epoch();
  if (epoch == 0) return absl::FailedPreconditionError("this replica does not lead");
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(hello.agent_id());
    if (it != sessions_.end() && it->second.conn != conn) {
      // Two processes with one identity would take the session from each
      // other over and over: the one already heard from keeps it. A session
      // silent for two heartbeats is an agent that reconnects after a broken
      // connection, and is replaced.
      const absl::Duration silent = clock_->Now() - it->second.last_seen;
      if (silent < options_.heartbeat_interval * 2) {
        spdlog::warn("agent {} opened a second session while its first is alive (heard {} ago): refused; two "
                     "agents may be running with the same id or certificate",
                     hello.agent_id(), absl::FormatDuration(silent));
        return absl::AlreadyExistsError(absl::StrCat(
            "agent \"", hello.agent_id(), "\" already has a live session on this controller (heard ",
            absl::FormatDuration(silent), " ago); is another agent running with this id or certificate?"));
      }
    }
  }
  // The hello and the session's registration are one step for this agent's
  // writes: an old session's disconnect is written before both, or not at all.
  absl::MutexLock write(&WriteLockFor(hello.agent_id()));
  if (absl::Status s = store_->RecordHello(epoch, hello, options_.controller_id); !s.ok()) {
    return StoreError(absl::StrCat("recording agent ", hello.agent_id()), s);
  }
  {
    absl::MutexLock lock(&mu_);
    if (epoch_ != epoch) return absl::FailedPreconditionError("leadership changed while the agent connected");
    auto it = sessions_.find(hello.agent_id());
    if (it != sessions_.end() && it->second.conn != conn) {
      spdlog::info("agent {} opened a new session; closing its old one", hello.agent_id());
      it->second.conn->Close();
    }
    // The Welcome goes first, before the session is visible to the steps
    // waiting for this agent: an agent reads a step before its Welcome as a
    // broken session.
    hoist::v1::SessionResponse message;
    hoist::v1::Welcome* welcome = message.mutable_welcome();
    welcome->set_epoch(epoch);
    welcome->set_controller_version(HOIST_VERSION);
    welcome->set_protocol_version(kProtocolVersion);
    *welcome->mutable_heartbeat_interval() =
        TimeUtil::MillisecondsToDuration(absl::ToInt64Milliseconds(options_.heartbeat_interval));
    if (!conn->Send(message)) return absl::UnavailableError("the session ended before its welcome was sent");
    sessions_[hello.agent_id()] = Session{conn, next_generation_++, clock_->Now()};
    // Its steps in flight are sent again on the new session now.
    WakeWaiters(hello.agent_id());
  }
  spdlog::info("agent {} connected (host {}, agent {}, docker {})", hello.agent_id(), hello.host_name(),
               hello.agent_version(), hello.docker_version());
  return absl::OkStatus();
}

void AgentHub::OnMessage(const std::string& agent_id, AgentConnection* conn,
                         const hoist::v1::SessionRequest& message) {
  uint64_t epoch;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(agent_id);
    if (it == sessions_.end() || it->second.conn != conn) return;  // a replaced session's late message
    it->second.last_seen = clock_->Now();
    epoch = epoch_;
  }
  switch (message.payload_case()) {
    case hoist::v1::SessionRequest::kHeartbeat:
      // Written with every other agent's once per interval (LivenessLoop):
      // a thousand agents cost one write, not a thousand.
      if (epoch != 0) {
        absl::MutexLock lock(&mu_);
        heard_[agent_id] = message.heartbeat();
      }
      return;
    case hoist::v1::SessionRequest::kInventory:
      // Written by InventoryLoop, with whatever other inventories arrived
      // meanwhile: this session goes on reading (its heartbeats too) while
      // a burst of them waits for the database.
      if (epoch != 0) {
        absl::MutexLock lock(&mu_);
        inventories_[agent_id] = message.inventory();
      }
      return;
    case hoist::v1::SessionRequest::kProgress: {
      std::shared_ptr<Waiter> waiter;
      {
        absl::MutexLock lock(&mu_);
        auto it = waiters_.find(message.progress().step_id());
        if (it == waiters_.end() || it->second->agent_id != agent_id || !it->second->on_progress) return;
        waiter = it->second;
        // RunStep does not return while its progress callback runs: the
        // callback may refer to the caller's frame.
        ++waiter->progress_calls;
      }
      waiter->on_progress(message.progress());
      absl::MutexLock lock(&mu_);
      if (--waiter->progress_calls == 0) waiter->cv.Signal();
      return;
    }
    case hoist::v1::SessionRequest::kResult: {
      absl::MutexLock lock(&mu_);
      auto it = waiters_.find(message.result().step_id());
      if (it == waiters_.end() || it->second->agent_id != agent_id) {
        spdlog::debug("result of step {} from {} has no waiter", message.result().step_id(), agent_id);
        return;
      }
      it->second->result = message.result();
      it->second->done = true;
      it->second->cv.Signal();
      return;
    }
    case hoist::v1::SessionRequest::kHello:
      spdlog::warn("agent {} sent a second hello; closing its session", agent_id);
      conn->Close();
      return;
    case hoist::v1::SessionRequest::PAYLOAD_NOT_SET:
      spdlog::warn("agent {} sent an empty message; ignored", agent_id);
      return;
  }
}

void AgentHub::Closed(const std::string& agent_id, AgentConnection* conn) {
  uint64_t epoch;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(agent_id);
    if (it == sessions_.end() || it->second.conn != conn) return;
    sessions_.erase(it);
    heard_.erase(agent_id);
    epoch = epoch_;
  }
  spdlog::info("agent {} disconnected", agent_id);
  if (epoch == 0) return;
  // A new session of the agent may have opened meanwhile (a reconnect): its
  // hello was then written, and a disconnect written after it would show a
  // connected agent as gone. Under the agent's write lock, a session present
  // now is that new one.
  absl::MutexLock write(&WriteLockFor(agent_id));
  {
    absl::MutexLock lock(&mu_);
    if (sessions_.count(agent_id) != 0) return;
  }
  if (absl::Status s = store_->RecordDisconnect(epoch, agent_id); !s.ok()) {
    StoreError(absl::StrCat("recording disconnect of ", agent_id), s).IgnoreError();
  }
}

absl::StatusOr<hoist::v1::StepResult> AgentHub::RunStep(const std::string& agent_id, hoist::v1::Step step,
                                                        const ProgressFn& on_progress,
                                                        const std::atomic<bool>* cancel) {
  if (step.step_id().empty()) return absl::InvalidArgumentError("step.step_id: required");
  if (!step.has_deadline()) return absl::InvalidArgumentError("step.deadline: required");
  const absl::Time deadline = absl::FromUnixMillis(TimeUtil::TimestampToMilliseconds(step.deadline()));
  const absl::Time give_up = deadline + kResultGrace;
  auto waiter = std::make_shared<Waiter>();
  waiter->agent_id = agent_id;
  waiter->on_progress = on_progress;
  const absl::Time started = clock_->Now();

  absl::MutexLock lock(&mu_);
  if (epoch_ == 0) return absl::FailedPreconditionError("this replica does not lead; it cannot push steps");
  const uint64_t epoch = epoch_;
  step.set_epoch(epoch);
  if (waiters_.count(step.step_id())) {
    return absl::AlreadyExistsError(absl::StrCat("step ", step.step_id(), " is already being run"));
  }
  waiters_[step.step_id()] = waiter;
  hoist::v1::SessionResponse message;
  *message.mutable_step() = step;
  uint64_t sent_on = 0;
  absl::Status outcome = absl::OkStatus();
  while (true) {
    if (waiter->done) break;
    if (epoch_ != epoch) {
      outcome = absl::FailedPreconditionError(
          absl::StrCat("leadership lost while step ", step.step_id(), " ran on ", agent_id));
      break;
    }
    if (cancel != nullptr && cancel->load()) {
      outcome = absl::CancelledError(absl::StrCat("step ", step.step_id(), " cancelled"));
      break;
    }
    if (stop_) {
      outcome = absl::UnavailableError("the controller is shutting down");
      break;
    }
    const absl::Time now = clock_->Now();
    if (now >= give_up) {
      outcome = absl::DeadlineExceededError(absl::StrCat(
          "no result from agent ", agent_id, " for step ", step.step_id(),
          sent_on == 0 ? ": the agent was not connected" : " before its deadline"));
      break;
    }
    auto it = sessions_.find(agent_id);
    if (it != sessions_.end() && it->second.generation != sent_on) {
      // First send, or the agent reconnected: (re)send; its journal dedups.
      if (it->second.conn->Send(message)) {
        sent_on = it->second.generation;
        spdlog::debug("step {} sent to {} (epoch {})", step.step_id(), agent_id, epoch);
      }
    }
    // Wake up on a result, a reconnect, leadership changes, or every 200 ms
    // to check cancel and the deadline.
    waiter->cv.WaitWithTimeout(&mu_, std::min(absl::Milliseconds(200), give_up - now));
  }
  while (waiter->progress_calls > 0) waiter->cv.Wait(&mu_);
  waiters_.erase(step.step_id());
  if (!outcome.ok()) return outcome;
  if (observer_) {
    StepObserver observer = observer_;
    hoist::v1::StepResult result = waiter->result;
    mu_.Unlock();
    observer(step, result, clock_->Now() - started);
    mu_.Lock();
  }
  return waiter->result;
}

absl::Status AgentHub::RequestInventory(const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(agent_id);
  if (it == sessions_.end()) return absl::UnavailableError(absl::StrCat("agent ", agent_id, " is not connected"));
  hoist::v1::SessionResponse message;
  message.mutable_inventory_request();
  if (!it->second.conn->Send(message)) return absl::UnavailableError("the session ended");
  return absl::OkStatus();
}

bool AgentHub::IsConnected(const std::string& agent_id) const {
  absl::MutexLock lock(&mu_);
  return sessions_.count(agent_id) > 0;
}

std::vector<std::string> AgentHub::ConnectedAgents() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, session] : sessions_) ids.push_back(id);
  return ids;
}

AgentHubStats AgentHub::Stats() const {
  absl::MutexLock lock(&mu_);
  return AgentHubStats{static_cast<int>(sessions_.size()), static_cast<int>(waiters_.size())};
}

void AgentHub::SetStepObserver(StepObserver observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

void AgentHub::LivenessLoop() {
  const absl::Duration silence = options_.heartbeat_interval * options_.lost_after_missed;
  while (true) {
    uint64_t epoch;
    std::map<std::string, hoist::v1::Heartbeat> heard;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.heartbeat_interval);
      if (stop_) return;
      epoch = epoch_;
      heard.swap(heard_);
      // A session whose agent went silent is stuck (frozen agent, cut
      // network): close it so the agent has to reconnect.
      const absl::Time now = clock_->Now();
      for (auto& [id, session] : sessions_) {
        if (now - session.last_seen > silence) {
          spdlog::warn("agent {} silent for {}; closing its session", id, absl::FormatDuration(now - session.last_seen));
          session.conn->Close();
        }
      }
    }
    if (epoch == 0) continue;
    if (absl::Status s = store_->RecordHeartbeats(epoch, heard); !s.ok()) {
      StoreError(absl::StrCat("recording the heartbeats of ", heard.size(), " agents"), s).IgnoreError();
    }
    auto lost = store_->MarkLost(epoch, silence);
    if (!lost.ok()) {
      StoreError("marking lost agents", lost.status()).IgnoreError();
    } else if (!lost->empty()) {
      spdlog::warn("agents lost after {} missed heartbeats: {}", options_.lost_after_missed, absl::StrJoin(*lost, ", "));
    }
  }
}

}  // namespace hoist

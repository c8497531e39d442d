#include "controller/leader_election.h"

#include "absl/strings/str_cat.h"
#include "controller/store/pg_leader_lock.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {

LeaderElector::LeaderElector(std::string conninfo, LeaderElectionOptions options, Clock* clock)
    : LeaderElector(std::make_unique<PgLeaderLock>(std::move(conninfo),
                                                   PgLeaderLockOptions{
                                                       .replica_id = options.replica_id,
                                                       .lease = options.lease,
                                                       .idle_session_timeout = options.idle_session_timeout,
                                                   }),
                    options, clock) {}

LeaderElector::LeaderElector(std::unique_ptr<LeaderLock> lock, LeaderElectionOptions options, Clock* clock)
    : options_(std::move(options)),
      clock_(clock),
      lock_(std::move(lock)),
      rng_(std::random_device{}()),
      advertise_address_(options_.advertise_address) {}

LeaderElector::~LeaderElector() { Stop(); }

void LeaderElector::Start(RoleCallback on_change) {
  if (on_change) {
    absl::MutexLock lock(&mu_);
    observers_.insert(observers_.begin(), std::move(on_change));
  }
  thread_ = std::thread([this] { Run(); });
}

void LeaderElector::SetAdvertiseAddress(std::string address) {
  absl::MutexLock lock(&mu_);
  advertise_address_ = std::move(address);
}

LeaderInfo LeaderElector::Me(uint64_t epoch) const {
  absl::MutexLock lock(&mu_);
  return LeaderInfo{options_.replica_id, advertise_address_, epoch};
}

void LeaderElector::Observe(Observer observer) {
  absl::MutexLock lock(&mu_);
  observers_.push_back(std::move(observer));
}

void LeaderElector::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::Stopping() const {
  absl::MutexLock lock(&mu_);
  return stop_;
}

bool LeaderElector::IsLeader() const { return epoch() != 0; }

uint64_t LeaderElector::epoch() const {
  absl::MutexLock lock(&mu_);
  return leader_ && clock_->Now() - last_heartbeat_ok_ < options_.lease ? epoch_ : 0;
}

LeaderInfo LeaderElector::CurrentLeader() const {
  absl::MutexLock lock(&mu_);
  return known_leader_;
}

bool LeaderElector::WaitForLeadership(absl::Duration timeout) const {
  const absl::Time deadline = clock_->Now() + timeout;
  while (clock_->Now() < deadline) {
    if (IsLeader()) return true;
    clock_->SleepFor(absl::Milliseconds(10));
  }
  return IsLeader();
}

absl::Duration LeaderElector::Jittered(absl::Duration d) {
  std::uniform_real_distribution<double> f(0.5, 1.5);
  return d * f(rng_);
}

void LeaderElector::SetRole(bool leader, uint64_t epoch) {
  bool changed;
  std::vector<Observer> observers;
  {
    absl::MutexLock lock(&mu_);
    changed = leader_ != leader;
    leader_ = leader;
    epoch_ = leader ? epoch : 0;
    if (leader) {
      last_heartbeat_ok_ = clock_->Now();
      known_leader_ = LeaderInfo{options_.replica_id, advertise_address_, epoch};
    } else if (known_leader_.replica_id == options_.replica_id) {
      known_leader_ = LeaderInfo{};  // unknown until read from the database again
    }
    if (changed) observers = observers_;
  }
  for (const Observer& observe : observers) observe(leader ? epoch : 0);
}

void LeaderElector::Drop(absl::string_view why) {
  bool was_leader;
  {
    absl::MutexLock lock(&mu_);
    was_leader = leader_;
  }
  if (was_leader) spdlog::warn("lost leadership: {}", std::string(why));
  else spdlog::debug("leader election connection dropped: {}", std::string(why));
  lock_->Disconnect();
  SetRole(false, 0);
}

LeaderElector::Pause LeaderElector::Round() {
  if (!lock_->connected()) {
    if (absl::Status s = lock_->Connect(); !s.ok()) {
      spdlog::warn("leader election: {}", std::string(s.message()));
      return {.wait = Jittered(options_.poll_interval * 2)};
    }
  }
  bool leader;
  uint64_t epoch;
  absl::Time last_ok;
  {
    absl::MutexLock lock(&mu_);
    leader = leader_;
    epoch = epoch_;
    last_ok = last_heartbeat_ok_;
  }
  return leader ? LeaderRound(epoch, last_ok) : FollowerRound();
}

LeaderElector::Pause LeaderElector::FollowerRound() {
  absl::StatusOr<uint64_t> won = lock_->TryAcquire(Me(0));
  if (!won.ok()) {
    Drop(won.status().message());
    return {.wait = Jittered(options_.poll_interval)};
  }
  if (*won != 0) {
    spdlog::info("became leader with epoch {}", *won);
    SetRole(true, *won);
    return {.wait = options_.heartbeat_interval};
  }
  absl::StatusOr<LeaderInfo> info = lock_->ReadLeader();
  if (!info.ok()) {
    Drop(info.status().message());
    return {.wait = Jittered(options_.poll_interval)};
  }
  {
    absl::MutexLock lock(&mu_);
    known_leader_ = *std::move(info);
  }
  return {.await_release = true, .wait = Jittered(options_.poll_interval)};
}

LeaderElector::Pause LeaderElector::LeaderRound(uint64_t epoch, absl::Time last_ok) {
  if (clock_->Now() - last_ok >= options_.lease) {
    Drop(absl::StrCat("no heartbeat succeeded for ", absl::FormatDuration(clock_->Now() - last_ok)));
    return {.wait = absl::ZeroDuration()};
  }
  // The lease counts from the send time: the database's timers started no
  // earlier than that.
  const absl::Time sent = clock_->Now();
  if (absl::Status s = lock_->Heartbeat(Me(epoch)); !s.ok()) {
    Drop(s.message());
    return {.wait = absl::ZeroDuration()};
  }
  absl::MutexLock lock(&mu_);
  last_heartbeat_ok_ = sent;
  return {.wait = options_.heartbeat_interval};
}

void LeaderElector::Finish() {
  bool was_leader;
  {
    absl::MutexLock lock(&mu_);
    was_leader = leader_;
  }
  if (was_leader && lock_->connected()) {
    if (absl::Status s = lock_->Release(); s.ok()) {
      spdlog::info("released leadership");
    } else {
      spdlog::warn("releasing leadership: {} (the session's end frees it)", s.message());
    }
  }
  lock_->Disconnect();
  SetRole(false, 0);
}

void LeaderElector::Run() {
  while (!Stopping()) {
    const Pause pause = Round();
    if (pause.await_release) {
      // A follower: a graceful release ends the wait early.
      if (absl::Status s = lock_->AwaitRelease(pause.wait); !s.ok()) {
        Drop(s.message());
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stop_), Jittered(options_.poll_interval));
      }
      continue;
    }
    // Sleep until the next round, waking at once for a graceful stop.
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), pause.wait);
  }
  Finish();
}

}  // namespace hoist

#include "controller/leader_election.h"

#include <pqxx/pqxx>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "shared/pg.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

// LISTENs for a graceful release: a notification ends the follower's
// await_notification early, which is all it is for.
class ReleaseListener final : public pqxx::notification_receiver {
 public:
  explicit ReleaseListener(pqxx::connection_base& conn) : pqxx::notification_receiver(conn, kLeaderReleasedChannel) {}
  void operator()(const std::string&, int) override {}
};

std::string Why(const std::exception& e) { return std::string(absl::StripTrailingAsciiWhitespace(e.what())); }

LeaderInfo ReadLeader(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  pqxx::row r = tx.exec1("SELECT coalesce(leader_id, ''), coalesce(address, ''), epoch FROM hoist_leader WHERE id = 1");
  return LeaderInfo{r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<uint64_t>()};
}

}  // namespace

LeaderElector::LeaderElector(std::string conninfo, LeaderElectionOptions options, Clock* clock)
    : conninfo_(std::move(conninfo)), options_(std::move(options)), clock_(clock) {}

LeaderElector::~LeaderElector() { Stop(); }

void LeaderElector::Start(RoleCallback on_change) {
  on_change_ = std::move(on_change);
  thread_ = std::thread([this] { Run(); });
}

void LeaderElector::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::IsLeader() const {
  absl::MutexLock lock(&mu_);
  return leader_ && clock_->Now() - last_heartbeat_ok_ < options_.lease;
}

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
    absl::SleepFor(absl::Milliseconds(10));
  }
  return IsLeader();
}

void LeaderElector::SetRole(bool leader, uint64_t epoch) {
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    changed = leader_ != leader;
    leader_ = leader;
    epoch_ = leader ? epoch : 0;
    if (leader) {
      last_heartbeat_ok_ = clock_->Now();
      known_leader_ = LeaderInfo{options_.replica_id, options_.advertise_address, epoch};
    } else if (known_leader_.replica_id == options_.replica_id) {
      known_leader_ = LeaderInfo{};  // unknown until read from Postgres again
    }
  }
  if (changed && on_change_) on_change_(leader ? epoch : 0);
}

void LeaderElector::Run() {
  std::mt19937_64 rng(std::random_device{}());
  // The lock connection gives up on an unresponsive network quickly; the
  // server side ends a silent session after idle_session_timeout.
  PgConnectOptions conn_options{.application_name = absl::StrCat("hoistd-leader-", options_.replica_id),
                                .connect_timeout_s = 2,
                                .keepalives_idle_s = 1,
                                .keepalives_interval_s = 1,
                                .keepalives_count = 2,
                                .tcp_user_timeout_ms = 2000};
  std::unique_ptr<pqxx::connection> conn;
  std::unique_ptr<ReleaseListener> listener;
  auto drop = [&](const std::string& why) {
    bool was_leader;
    {
      absl::MutexLock lock(&mu_);
      was_leader = leader_;
    }
    if (was_leader) spdlog::warn("lost leadership: {}", why);
    else spdlog::debug("leader election connection dropped: {}", why);
    listener.reset();
    conn.reset();  // ends the session, which frees the lock if still held
    SetRole(false, 0);
  };
  auto stopping = [&] {
    absl::MutexLock lock(&mu_);
    return stop_;
  };
  auto jittered = [&](absl::Duration d) {
    std::uniform_real_distribution<double> f(0.5, 1.5);
    return d * f(rng);
  };

  while (!stopping()) {
    if (!conn) {
      auto c = PgConnect(conninfo_, conn_options);
      if (!c.ok()) {
        spdlog::warn("leader election: {}", c.status().message());
        clock_->SleepFor(jittered(options_.poll_interval * 2));
        continue;
      }
      conn = std::move(*c);
      try {
        pqxx::nontransaction tx(*conn);
        tx.exec0(absl::StrCat("SET idle_session_timeout = ", absl::ToInt64Milliseconds(options_.idle_session_timeout)));
        // The server may only drop this session after the leader's lease has
        // run out: its TCP abort (keepalives, user timeout) and idle timeout
        // all exceed the lease, counted from the heartbeat's send time.
        tx.exec0("SET tcp_keepalives_idle = 1");
        tx.exec0("SET tcp_keepalives_interval = 1");
        tx.exec0("SET tcp_keepalives_count = 3");
        tx.exec0("SET tcp_user_timeout = 3500");
        // A heartbeat queued behind a long writer must fail, not hang.
        tx.exec0(absl::StrCat("SET lock_timeout = ", absl::ToInt64Milliseconds(options_.lease / 2)));
        tx.exec0(absl::StrCat("SET idle_in_transaction_session_timeout = ",
                              absl::ToInt64Milliseconds(options_.idle_session_timeout)));
        listener = std::make_unique<ReleaseListener>(*conn);
      } catch (const std::exception& e) {
        drop(Why(e));
        continue;
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
    if (!leader) {
      try {
        pqxx::nontransaction probe(*conn);
        bool won = probe.exec_params1("SELECT pg_try_advisory_lock($1)", kLeaderLockKey)[0].as<bool>();
        probe.commit();
        if (won) {
          pqxx::work tx(*conn);
          // FOR UPDATE waits for fenced writes in flight (they hold the row
          // FOR KEY SHARE): none commits for the old epoch after the bump.
          tx.exec1("SELECT 1 FROM hoist_leader WHERE id = 1 FOR UPDATE");
          uint64_t new_epoch =
              tx.exec_params1(
                    "UPDATE hoist_leader SET epoch = epoch + 1, leader_id = $1, address = $2, "
                    "acquired_at = now(), heartbeat_at = now() WHERE id = 1 RETURNING epoch",
                    options_.replica_id, options_.advertise_address)[0]
                  .as<uint64_t>();
          tx.commit();
          spdlog::info("became leader with epoch {}", new_epoch);
          SetRole(true, new_epoch);
          continue;
        }
        LeaderInfo info = ReadLeader(*conn);
        {
          absl::MutexLock lock(&mu_);
          known_leader_ = info;
        }
        absl::Duration wait = jittered(options_.poll_interval);
        conn->await_notification(static_cast<long>(absl::ToInt64Seconds(wait)),
                                 static_cast<long>(absl::ToInt64Microseconds(wait) % 1000000));
      } catch (const std::exception& e) {
        drop(Why(e));
        clock_->SleepFor(jittered(options_.poll_interval));
      }
      continue;
    }
    // Leading: heartbeat, and demote on a missed lease or a changed epoch.
    // Sleep until the next heartbeat, waking at once for a graceful stop.
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.heartbeat_interval);
      if (stop_) break;
    }
    if (clock_->Now() - last_ok >= options_.lease) {
      drop(absl::StrCat("no heartbeat succeeded for ", absl::FormatDuration(clock_->Now() - last_ok)));
      continue;
    }
    // The lease counts from the send time: the server's timers started no
    // earlier than that.
    const absl::Time sent = clock_->Now();
    std::string failure;
    try {
      pqxx::nontransaction tx(*conn);
      pqxx::result r = tx.exec_params(
          "UPDATE hoist_leader SET heartbeat_at = now() WHERE id = 1 AND epoch = $1 AND leader_id = $2 "
          "RETURNING epoch",
          epoch, options_.replica_id);
      if (r.empty()) failure = absl::StrCat("epoch ", epoch, " is no longer current (fenced)");
    } catch (const std::exception& e) {
      failure = Why(e);
    }
    if (!failure.empty()) {
      drop(failure);  // after the transaction object is gone
      continue;
    }
    absl::MutexLock lock(&mu_);
    last_heartbeat_ok_ = sent;
  }

  // Graceful stop: free the lock and wake the followers.
  bool was_leader;
  {
    absl::MutexLock lock(&mu_);
    was_leader = leader_;
  }
  if (conn && was_leader) {
    try {
      pqxx::nontransaction tx(*conn);
      tx.exec_params("SELECT pg_advisory_unlock($1)", kLeaderLockKey);
      tx.exec0(absl::StrCat("NOTIFY ", kLeaderReleasedChannel));
      spdlog::info("released leadership");
    } catch (const std::exception& e) {
      spdlog::warn("releasing leadership: {} (the session's end frees it)", Why(e));
    }
  }
  listener.reset();
  conn.reset();
  SetRole(false, 0);
}

}  // namespace hoist

#include "controller/store/pg_leader_lock.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "shared/pg.h"

namespace hoist {
namespace {

absl::Status Failed(const std::exception& e) {
  return absl::UnavailableError(absl::StripTrailingAsciiWhitespace(e.what()));
}

}  // namespace

// A notification ends the follower's await_notification early, which is all
// it is for.
class PgLeaderLock::ReleaseListener final : public pqxx::notification_receiver {
 public:
  explicit ReleaseListener(pqxx::connection_base& conn) : pqxx::notification_receiver(conn, kLeaderReleasedChannel) {}
  void operator()(const std::string&, int) override {}
};

PgLeaderLock::PgLeaderLock(std::string conninfo, PgLeaderLockOptions options)
    : conninfo_(std::move(conninfo)), options_(std::move(options)) {}

PgLeaderLock::~PgLeaderLock() { Disconnect(); }

absl::Status PgLeaderLock::Connect() {
  if (conn_) return absl::OkStatus();
  // The lock connection gives up on an unresponsive network quickly; the
  // server side ends a silent session after idle_session_timeout.
  PgConnectOptions conn_options{.application_name = absl::StrCat("hoistd-leader-", options_.replica_id),
                                .connect_timeout_s = 2,
                                .keepalives_idle_s = 1,
                                .keepalives_interval_s = 1,
                                .keepalives_count = 2,
                                .tcp_user_timeout_ms = 2000};
  auto c = PgConnect(conninfo_, conn_options);
  if (!c.ok()) return c.status();
  conn_ = std::move(*c);
  try {
    pqxx::nontransaction tx(*conn_);
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
    tx.commit();
    listener_ = std::make_unique<ReleaseListener>(*conn_);
  } catch (const std::exception& e) {
    Disconnect();
    return Failed(e);
  }
  return absl::OkStatus();
}

void PgLeaderLock::Disconnect() {
  listener_.reset();
  conn_.reset();  // ends the session, which frees the lock if still held
}

absl::StatusOr<uint64_t> PgLeaderLock::TryAcquire(const LeaderInfo& me) {
  if (!conn_) return absl::FailedPreconditionError("the leader lock's session is not open");
  try {
    pqxx::nontransaction probe(*conn_);
    const bool won = probe.exec_params1("SELECT pg_try_advisory_lock($1)", kLeaderLockKey)[0].as<bool>();
    probe.commit();
    if (!won) return uint64_t{0};
    pqxx::work tx(*conn_);
    // FOR UPDATE waits for fenced writes in flight (they hold the row FOR
    // KEY SHARE): none commits for the old epoch after the bump.
    tx.exec1("SELECT 1 FROM hoist_leader WHERE id = 1 FOR UPDATE");
    const uint64_t epoch = tx.exec_params1(
                                 "UPDATE hoist_leader SET epoch = epoch + 1, leader_id = $1, address = $2, "
                                 "acquired_at = now(), heartbeat_at = now() WHERE id = 1 RETURNING epoch",
                                 me.replica_id, me.address)[0]
                               .as<uint64_t>();
    tx.commit();
    return epoch;
  } catch (const std::exception& e) {
    return Failed(e);
  }
}

absl::StatusOr<LeaderInfo> PgLeaderLock::ReadLeader() {
  if (!conn_) return absl::FailedPreconditionError("the leader lock's session is not open");
  try {
    pqxx::nontransaction tx(*conn_);
    pqxx::row r =
        tx.exec1("SELECT coalesce(leader_id, ''), coalesce(address, ''), epoch FROM hoist_leader WHERE id = 1");
    return LeaderInfo{r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<uint64_t>()};
  } catch (const std::exception& e) {
    return Failed(e);
  }
}

absl::Status PgLeaderLock::AwaitRelease(absl::Duration timeout) {
  if (!conn_) return absl::FailedPreconditionError("the leader lock's session is not open");
  try {
    conn_->await_notification(static_cast<long>(absl::ToInt64Seconds(timeout)),
                              static_cast<long>(absl::ToInt64Microseconds(timeout) % 1000000));
  } catch (const std::exception& e) {
    return Failed(e);
  }
  return absl::OkStatus();
}

absl::Status PgLeaderLock::Heartbeat(const LeaderInfo& me) {
  if (!conn_) return absl::FailedPreconditionError("the leader lock's session is not open");
  try {
    pqxx::nontransaction tx(*conn_);
    pqxx::result r = tx.exec_params(
        "UPDATE hoist_leader SET heartbeat_at = now() WHERE id = 1 AND epoch = $1 AND leader_id = $2 "
        "RETURNING epoch",
        me.epoch, me.replica_id);
    if (r.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("epoch ", me.epoch, " is no longer current (fenced)"));
    }
  } catch (const std::exception& e) {
    return Failed(e);
  }
  return absl::OkStatus();
}

absl::Status PgLeaderLock::Release() {
  if (!conn_) return absl::FailedPreconditionError("the leader lock's session is not open");
  try {
    pqxx::nontransaction tx(*conn_);
    tx.exec_params("SELECT pg_advisory_unlock($1)", kLeaderLockKey);
    tx.exec0(absl::StrCat("NOTIFY ", kLeaderReleasedChannel));
  } catch (const std::exception& e) {
    return Failed(e);
  }
  return absl::OkStatus();
}

}  // namespace hoist

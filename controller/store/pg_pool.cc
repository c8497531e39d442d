#include "controller/store/pg_pool.h"

#include "absl/strings/str_cat.h"
#include "controller/store/pg_fence.h"
#include "shared/pg.h"

namespace hoist {
namespace {

// No transaction of the controller's stores waits on anything but Postgres,
// so 30 s idle inside one means the controller is gone.
constexpr char kSessionSettings[] =
    "SET idle_in_transaction_session_timeout = '30s'; SET tcp_keepalives_idle = 5; "
    "SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";

}  // namespace

PgPool::PgPool(std::string conninfo, int size, absl::Duration wait_limit)
    : conninfo_(std::move(conninfo)), size_(size), wait_limit_(wait_limit) {}

PgPool::~PgPool() = default;

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    // Bounded: a caller that cannot have a connection within wait_limit_
    // (Postgres stalled with every connection in a transaction) fails and
    // says so rather than piling up behind the others.
    if (!mu_.AwaitWithTimeout(absl::Condition(
                                  +[](PgPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
                                    return !p->idle_.empty() || p->open_ < p->size_;
                                  },
                                  this),
                              wait_limit_)) {
      return absl::UnavailableError(absl::StrCat("all ", size_, " database connections stayed busy for ",
                                                 absl::FormatDuration(wait_limit_),
                                                 "; is Postgres slow or stalled?"));
    }
    if (!idle_.empty()) {
      Lease lease{std::move(idle_.back()), true};
      idle_.pop_back();
      return lease;
    }
    ++open_;
  }
  PgConnectOptions options;
  options.application_name = "hoistd";
  auto conn = PgConnect(conninfo_, options);
  if (conn.ok()) {
    // The server's side of the same promises the client's socket options
    // make: a session whose controller froze or vanished inside a
    // transaction (holding the leader row FOR SHARE, say) is ended within
    // seconds, not after the OS's two-hour keepalive.
    try {
      pqxx::nontransaction tx(**conn);
      tx.exec0(kSessionSettings);
    } catch (const std::exception& e) {
      conn = absl::UnavailableError(absl::StrCat("cannot set up a database session: ", e.what()));
    }
  }
  if (!conn.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
    return conn.status();
  }
  return Lease{std::move(*conn), false};
}

void PgPool::Release(std::unique_ptr<pqxx::connection> conn) {
  absl::MutexLock lock(&mu_);
  if (conn && conn->is_open()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
  }
}

void PgPool::DropIdle() {
  std::vector<std::unique_ptr<pqxx::connection>> dropped;
  {
    absl::MutexLock lock(&mu_);
    open_ -= static_cast<int>(idle_.size());
    dropped.swap(idle_);
  }
  // Closed outside the lock: closing a dead connection can take a moment.
}

absl::Status PgPool::RunOn(Lease lease, const std::function<absl::Status(pqxx::connection&)>& fn, bool* broken) {
  *broken = false;
  absl::Status status;
  try {
    status = fn(*lease.conn);
  } catch (const pqxx::broken_connection& e) {
    lease.conn.reset();
    *broken = true;
    status = absl::UnavailableError(absl::StrCat("lost the database connection: ", e.what()));
  } catch (const pqxx::in_doubt_error& e) {
    lease.conn.reset();
    status = absl::UnavailableError(absl::StrCat("database commit in doubt: ", e.what()));
  } catch (const pqxx::sql_error& e) {
    status = absl::InternalError(absl::StrCat("database error: ", e.what()));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("database error: ", e.what()));
  }
  Release(std::move(lease.conn));
  return status;
}

absl::Status PgPool::Run(const std::function<absl::Status(pqxx::connection&)>& fn) {
  auto lease = Acquire();
  if (!lease.ok()) return lease.status();
  bool broken = false;
  absl::Status s = RunOn(std::move(*lease), fn, &broken);
  if (broken) DropIdle();
  return s;
}

absl::Status PgPool::Transact(const std::function<absl::Status(pqxx::work&)>& fn) {
  auto body = [&](pqxx::connection& c) -> absl::Status {
    pqxx::work tx(c);
    absl::Status s = fn(tx);
    if (!s.ok()) return s;  // the work object aborts on destruction
    tx.commit();
    return absl::OkStatus();
  };
  auto lease = Acquire();
  if (!lease.ok()) return lease.status();
  const bool reused = lease->reused;
  bool broken = false;
  absl::Status s = RunOn(std::move(*lease), body, &broken);
  if (!broken) return s;
  DropIdle();
  if (!reused) return s;  // a new connection broke: the server is gone, not restarted
  auto fresh = Acquire();
  if (!fresh.ok()) return fresh.status();
  return RunOn(std::move(*fresh), body, &broken);
}

absl::Status PgPool::FencedWrite(uint64_t epoch, const std::function<absl::Status(pqxx::work&)>& fn) {
  return Transact([&](pqxx::work& tx) -> absl::Status {
    if (absl::Status s = CheckEpoch(tx, epoch); !s.ok()) return s;
    return fn(tx);
  });
}

}  // namespace hoist

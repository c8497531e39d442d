#include "controller/store/pg_pool.h"

#include "absl/strings/str_cat.h"
#include "controller/store/pg_fence.h"
#include "shared/pg.h"

namespace hoist {

PgPool::PgPool(std::string conninfo, int size) : conninfo_(std::move(conninfo)), size_(size) {}

PgPool::~PgPool() = default;

absl::StatusOr<std::unique_ptr<pqxx::connection>> PgPool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](PgPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return !p->idle_.empty() || p->open_ < p->size_; },
        this));
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      return conn;
    }
    ++open_;
  }
  PgConnectOptions options;
  options.application_name = "hoistd";
  auto conn = PgConnect(conninfo_, options);
  if (!conn.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
  }
  return conn;
}

void PgPool::Release(std::unique_ptr<pqxx::connection> conn) {
  absl::MutexLock lock(&mu_);
  if (conn && conn->is_open()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
  }
}

absl::Status PgPool::Run(const std::function<absl::Status(pqxx::connection&)>& fn) {
  auto conn = Acquire();
  if (!conn.ok()) return conn.status();
  absl::Status status;
  try {
    status = fn(**conn);
  } catch (const pqxx::broken_connection& e) {
    conn->reset();
    status = absl::UnavailableError(absl::StrCat("lost the database connection: ", e.what()));
  } catch (const pqxx::in_doubt_error& e) {
    conn->reset();
    status = absl::UnavailableError(absl::StrCat("database commit in doubt: ", e.what()));
  } catch (const pqxx::sql_error& e) {
    status = absl::InternalError(absl::StrCat("database error: ", e.what()));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("database error: ", e.what()));
  }
  Release(std::move(*conn));
  return status;
}

absl::Status PgPool::Transact(const std::function<absl::Status(pqxx::work&)>& fn) {
  return Run([&](pqxx::connection& c) -> absl::Status {
    pqxx::work tx(c);
    absl::Status s = fn(tx);
    if (!s.ok()) return s;  // the work object aborts on destruction
    tx.commit();
    return absl::OkStatus();
  });
}

absl::Status PgPool::FencedWrite(uint64_t epoch, const std::function<absl::Status(pqxx::work&)>& fn) {
  return Transact([&](pqxx::work& tx) -> absl::Status {
    if (absl::Status s = CheckEpoch(tx, epoch); !s.ok()) return s;
    return fn(tx);
  });
}

}  // namespace hoist

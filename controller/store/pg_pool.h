#pragma once

// A small pool of Postgres connections for the controller's stores. Leader
// election keeps its own dedicated connection and never uses this pool.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace hoist {

class PgPool {
 public:
  // conninfo should already carry WithConnectionDefaults. At most `size`
  // connections are open at once; callers beyond that wait.
  PgPool(std::string conninfo, int size);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // Runs fn on a pooled connection. libpqxx exceptions become a Status:
  // a lost connection UNAVAILABLE (and the connection is dropped), an SQL
  // error INTERNAL with the server's message. fn's own Status passes through.
  absl::Status Run(const std::function<absl::Status(pqxx::connection&)>& fn);

  // Runs fn in one transaction that first checks the leader epoch FOR SHARE
  // (see pg_fence.h) and commits only when fn succeeds.
  absl::Status FencedWrite(uint64_t epoch, const std::function<absl::Status(pqxx::work&)>& fn);

  // Runs fn in a read-write transaction without the epoch check (reads, and
  // writes any replica may make).
  absl::Status Transact(const std::function<absl::Status(pqxx::work&)>& fn);

 private:
  absl::StatusOr<std::unique_ptr<pqxx::connection>> Acquire();
  void Release(std::unique_ptr<pqxx::connection> conn);

  const std::string conninfo_;
  const int size_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace hoist

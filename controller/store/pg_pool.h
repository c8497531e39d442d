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
#include "absl/time/time.h"

namespace hoist {

class PgPool {
 public:
  // conninfo should already carry WithConnectionDefaults. At most `size`
  // connections are open at once; callers beyond that wait up to
  // wait_limit, then fail with UNAVAILABLE.
  PgPool(std::string conninfo, int size, absl::Duration wait_limit = absl::Seconds(30));
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
  //
  // A transaction whose pooled connection turns out broken (Postgres was
  // restarted since it was last used) committed nothing: the idle
  // connections are dropped, as they went with the same server, and the
  // transaction runs once more on a new connection. A commit whose outcome is
  // unknown is never run again.
  absl::Status Transact(const std::function<absl::Status(pqxx::work&)>& fn);

 private:
  // A connection and whether it was reused from the idle list.
  struct Lease {
    std::unique_ptr<pqxx::connection> conn;
    bool reused = false;
  };
  absl::StatusOr<Lease> Acquire();
  void Release(std::unique_ptr<pqxx::connection> conn);
  // Run's body; *broken tells a lost connection (nothing committed) from
  // the other failures.
  absl::Status RunOn(Lease lease, const std::function<absl::Status(pqxx::connection&)>& fn, bool* broken);
  // Closes every idle connection.
  void DropIdle();

  const std::string conninfo_;
  const int size_;
  const absl::Duration wait_limit_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace hoist

#pragma once

// What every in-memory store shares with the database it stands for: the
// leader epoch writes are fenced by (hoist_leader's, moved by the test as an
// election moves it), and a count of the writes the fence refused. A write
// with another epoch, or epoch 0, fails FAILED_PRECONDITION as PgPool's fenced
// writes do. The store's own state is guarded by the same mutex, so that an
// epoch moved by the test never lands between a write's fence and the write
// (in Postgres the fenced write holds the leader row meanwhile).

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace hoist::testing {

class EpochFence {
 public:
  // The leader epoch writes are checked against; 0 at first: nobody leads.
  void SetEpoch(uint64_t epoch) {
    absl::MutexLock lock(&mu_);
    epoch_ = epoch;
  }
  // A new leader won: the epoch grows by one; returns it.
  uint64_t BumpEpoch() {
    absl::MutexLock lock(&mu_);
    return ++epoch_;
  }
  uint64_t epoch() const {
    absl::MutexLock lock(&mu_);
    return epoch_;
  }
  // Writes the fence refused.
  int fenced_writes() const {
    absl::MutexLock lock(&mu_);
    return fenced_writes_;
  }

 protected:
  // The epoch check every leader-only write makes first.
  absl::Status Fence(uint64_t epoch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (epoch != epoch_ || epoch == 0) {
      ++fenced_writes_;
      return absl::FailedPreconditionError(absl::StrCat("fenced: this replica acted for leader epoch ", epoch,
                                                        " but the current epoch is ", epoch_, "; it no longer leads"));
    }
    return absl::OkStatus();
  }

  // The store's mutex: it guards the fence and everything the store keeps.
  mutable absl::Mutex mu_;

 private:
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  int fenced_writes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace hoist::testing

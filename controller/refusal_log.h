#pragma once

// Writes the authorizer's refusals to the audit log on a thread of its own.
// A refusal is decided on whatever thread checked the call, gRPC's own among
// them (an agent session's certificate is checked as its reactor starts),
// where a database write would hold a thread gRPC needs; here it waits its
// turn instead. A burst beyond `max_queued` is logged and not written (a
// flood of refused calls must not grow memory without bound). Stop writes
// what is queued, then returns.

#include <cstddef>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "controller/rollout/rollout_store.h"

namespace hoist {

class RefusalLog {
 public:
  explicit RefusalLog(rollout::RolloutStore* store, size_t max_queued = 1000);
  ~RefusalLog();
  RefusalLog(const RefusalLog&) = delete;
  RefusalLog& operator=(const RefusalLog&) = delete;

  // Queues one refusal; returns at once.
  void Write(rollout::AuditEntry entry);
  // Writes what is queued and ends the thread. Idempotent.
  void Stop();

 private:
  void Loop();

  rollout::RolloutStore* const store_;
  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<rollout::AuditEntry> queue_ ABSL_GUARDED_BY(mu_);
  size_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace hoist

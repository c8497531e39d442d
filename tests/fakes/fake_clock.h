#pragma once

// A Clock that moves only when told to. SleepFor advances it instead of
// blocking, so code that waits in loops runs instantly and deterministically.

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "shared/clock.h"

namespace hoist::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'800'000'000)) : now_(start) {}

  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  // Advances the clock by d and returns at once.
  void SleepFor(absl::Duration d) override { Advance(d); }

  // Moves time forward.
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist::testing

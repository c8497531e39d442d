#pragma once

// Time as an injectable dependency, so that leader leases, heartbeats and
// deadlines can be tested without sleeping. Tests use FakeClock
// (tests/fakes/fake_clock.h).

#include "absl/time/time.h"

namespace hoist {

// Clock is every component's source of "now" and of waiting.
class Clock {
 public:
  virtual ~Clock() = default;
  // Returns the current wall time.
  virtual absl::Time Now() = 0;
  // Blocks the calling thread for d (a fake clock may return at once).
  virtual void SleepFor(absl::Duration d) = 0;
};

// RealClock reads the system clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() override;
  void SleepFor(absl::Duration d) override;
  // Returns a process-wide RealClock for main() to inject.
  static Clock* Get();
};

}  // namespace hoist

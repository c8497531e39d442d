#pragma once

// A Leadership set by hand: a test makes this replica lead (or follow, naming
// another leader) and its observers hear each change at once.

#include <cstdint>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "controller/leadership.h"

namespace hoist::testing {

class FakeLeadership final : public Leadership {
 public:
  // Leads with `epoch` (0: follows); observers hear it when it changes.
  void Set(uint64_t epoch, LeaderInfo leader = {}) {
    std::vector<Observer> observers;
    {
      absl::MutexLock lock(&mu_);
      if (epoch_ != epoch) observers = observers_;
      epoch_ = epoch;
      leader_ = leader;
      if (epoch != 0 && leader_.epoch == 0) leader_.epoch = epoch;
    }
    for (const Observer& observe : observers) observe(epoch);
  }

  uint64_t epoch() const override {
    absl::MutexLock lock(&mu_);
    return epoch_;
  }
  LeaderInfo CurrentLeader() const override {
    absl::MutexLock lock(&mu_);
    return leader_;
  }
  void Observe(Observer observer) override {
    absl::MutexLock lock(&mu_);
    observers_.push_back(std::move(observer));
  }

 private:
  mutable absl::Mutex mu_;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  LeaderInfo leader_ ABSL_GUARDED_BY(mu_);
  std::vector<Observer> observers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist::testing

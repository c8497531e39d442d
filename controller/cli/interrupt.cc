#include "controller/cli/interrupt.h"

namespace hoist::cli {

Interrupt::Scope::Scope(Interrupt* owner, std::function<void()> handler) : owner_(owner) {
  if (owner_ == nullptr) return;
  absl::MutexLock lock(&owner_->mu_);
  owner_->handler_ = std::move(handler);
  if (owner_->triggered_) owner_->handler_();
}

Interrupt::Scope::~Scope() {
  if (owner_ == nullptr) return;
  absl::MutexLock lock(&owner_->mu_);
  owner_->handler_ = nullptr;
}

bool Interrupt::Trigger() {
  absl::MutexLock lock(&mu_);
  triggered_ = true;
  if (!handler_) return false;
  handler_();
  return true;
}

bool Interrupt::triggered() const {
  absl::MutexLock lock(&mu_);
  return triggered_;
}

}  // namespace hoist::cli

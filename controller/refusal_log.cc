#include "controller/refusal_log.h"

#include <optional>
#include <utility>

#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {

RefusalLog::RefusalLog(rollout::RolloutStore* store, size_t max_queued)
    : store_(store), max_queued_(max_queued), thread_([this] { Loop(); }) {}

RefusalLog::~RefusalLog() { Stop(); }

void RefusalLog::Write(rollout::AuditEntry entry) {
  absl::MutexLock lock(&mu_);
  if (stop_ || queue_.size() >= max_queued_) {
    ++dropped_;
    return;
  }
  queue_.push_back(std::move(entry));
}

void RefusalLog::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void RefusalLog::Loop() {
  while (true) {
    std::optional<rollout::AuditEntry> entry;
    size_t dropped;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](RefusalLog* log) ABSL_EXCLUSIVE_LOCKS_REQUIRED(log->mu_) { return log->stop_ || !log->queue_.empty(); },
          this));
      dropped = std::exchange(dropped_, 0);
      if (!queue_.empty()) {
        entry = std::move(queue_.front());
        queue_.pop_front();
      }
    }
    if (dropped > 0) spdlog::error("{} refusals were not written to the audit log (too many at once)", dropped);
    if (!entry) return;  // stopping, everything written
    if (absl::Status s = store_->Audit(*entry); !s.ok()) {
      spdlog::error("cannot write a refusal to the audit log: {}", std::string(s.message()));
    }
  }
}

}  // namespace hoist

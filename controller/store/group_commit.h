#pragma once

// Group commit: callers that each want one small write, arriving together,
// are written together. The first caller to find nobody writing writes
// everything queued (its own included) with one call of `write`; the others
// queue meanwhile and are written by the next one. Each caller returns its
// own outcome once its write is done. Nothing waits on a timer: a caller
// alone is written at once, and a burst costs a few transactions instead
// of one each.

#include <exception>
#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace hoist {

template <typename T>
class GroupCommit {
 public:
  struct Entry {
    const T* value = nullptr;
    // Set by `write`, for this caller.
    absl::Status status;
  };
  // Writes the entries (one or more, in arrival order) and sets each one's
  // status. Called by one caller at a time.
  using WriteFn = std::function<void(const std::vector<Entry*>&)>;

  // What must be the same for entries written together (a leader epoch:
  // one fenced write per epoch); `write` gets one group at a time.
  using KeyFn = std::function<uint64_t(const T&)>;

  explicit GroupCommit(WriteFn write, KeyFn key = nullptr) : write_(std::move(write)), key_(std::move(key)) {}
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  absl::Status Commit(const T& value) {
    Waiting me;
    me.entry.value = &value;
    me.self = this;
    absl::MutexLock lock(&mu_);
    queue_.push_back(&me);
    while (true) {
      mu_.Await(absl::Condition(
          +[](Waiting* w) ABSL_NO_THREAD_SAFETY_ANALYSIS { return w->done || !w->self->writing_; },
          &me));
      if (me.done) return me.entry.status;
      // Nobody writes, and this caller is still queued: write the queue.
      writing_ = true;
      std::vector<Waiting*> batch;
      batch.swap(queue_);
      mu_.Unlock();
      std::map<uint64_t, std::vector<Entry*>> groups;  // in arrival order within each
      for (Waiting* w : batch) groups[key_ ? key_(*w->entry.value) : 0].push_back(&w->entry);
      for (const auto& [key, entries] : groups) {
        try {
          write_(entries);
        } catch (const std::exception& e) {
          // Whatever threw, every caller of this write hears of it and the
          // next write can still happen.
          for (Entry* entry : entries) entry->status = absl::InternalError(absl::StrCat("writing: ", e.what()));
        }
      }
      mu_.Lock();
      for (Waiting* w : batch) w->done = true;
      writing_ = false;
    }
  }

  // Callers waiting for the next write.
  size_t Queued() {
    absl::MutexLock lock(&mu_);
    return queue_.size();
  }

 private:
  struct Waiting {
    Entry entry;
    bool done = false;
    GroupCommit* self = nullptr;
  };

  const WriteFn write_;
  const KeyFn key_;
  absl::Mutex mu_;
  std::vector<Waiting*> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace hoist

#pragma once

// Interrupt carries Ctrl-C from the process's signal thread (or a test) to
// whatever the CLI is waiting on, such as a rollout watch stream.

#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace hoist::cli {

class Interrupt {
 public:
  // Registers `handler` with `owner` (which may be null: nothing to do) for
  // as long as the Scope lives; the handler runs at once if the interrupt
  // already fired. One handler at a time. After the destructor returns the
  // handler never runs.
  class Scope {
   public:
    Scope(Interrupt* owner, std::function<void()> handler);
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope();

   private:
    Interrupt* owner_;
  };

  // Marks the interrupt and runs the registered handler, if any. Returns
  // whether a handler ran (when none did, the caller decides: the real
  // process exits with 130).
  bool Trigger();

  // True once Trigger was called.
  bool triggered() const;

 private:
  mutable absl::Mutex mu_;
  bool triggered_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> handler_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist::cli

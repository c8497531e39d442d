#pragma once

// Who leads, as this replica knows it. One object answers for the whole
// controller (the elector in hoistd, a fixed one in tools and unit tests):
// the services ask it before acting as leader, and the parts that change
// behaviour with leadership (the agent hub, the executor) observe it.

#include <cstdint>
#include <functional>
#include <string>

namespace hoist {

struct LeaderInfo {
  std::string replica_id;  // empty when nobody has led yet
  std::string address;
  uint64_t epoch = 0;
};

class Leadership {
 public:
  // Called with the new epoch when this replica starts leading, with 0 when
  // it stops; on the thread that noticed the change, never under a lock of
  // the source.
  using Observer = std::function<void(uint64_t epoch)>;

  virtual ~Leadership() = default;

  // The epoch this replica leads with (the fencing token every write
  // carries), or 0 when it does not lead.
  virtual uint64_t epoch() const = 0;

  // The leader as last known (this replica when it leads): where followers
  // send agents and operators.
  virtual LeaderInfo CurrentLeader() const = 0;

  // Adds an observer of every change from now on. Add observers before the
  // source starts.
  virtual void Observe(Observer observer) = 0;
};

}  // namespace hoist

#pragma once

// What the controller keeps about agents: the registry (identity, labels,
// versions, liveness) and each agent's inventory. Writes are the leader's and
// carry its epoch; an implementation refuses them once that epoch is stale.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hoist/v1/agent.pb.h"
#include "hoist/v1/operator.pb.h"

namespace hoist {

// One managed container and the agent that reported it.
struct ObservedContainer {
  std::string agent_id;
  std::string host_name;
  std::string host_address;  // as the agent reported it; may be empty
  hoist::v1::ContainerInfo info;
};

class AgentStore {
 public:
  virtual ~AgentStore() = default;

  // Records a hello: creates or updates the agent, marks it connected to
  // controller_id and not lost.
  virtual absl::Status RecordHello(uint64_t epoch, const hoist::v1::Hello& hello,
                                   const std::string& controller_id) = 0;
  // Records the last heartbeat of each agent (by id) in one write: its time
  // (now), not lost, and the disk figures it carried.
  virtual absl::Status RecordHeartbeats(uint64_t epoch,
                                        const std::map<std::string, hoist::v1::Heartbeat>& heartbeats) = 0;
  // Replaces the agent's whole inventory with this snapshot.
  virtual absl::Status ReplaceInventory(uint64_t epoch, const std::string& agent_id,
                                        const hoist::v1::Inventory& inventory) = 0;
  // ReplaceInventory for several agents (by id), in one write.
  virtual absl::Status ReplaceInventories(uint64_t epoch,
                                          const std::map<std::string, hoist::v1::Inventory>& inventories) = 0;
  virtual absl::Status RecordDisconnect(uint64_t epoch, const std::string& agent_id) = 0;
  // Marks agents silent for longer than `silence` (connected or not) as lost
  // and not connected; returns the ids newly marked.
  virtual absl::StatusOr<std::vector<std::string>> MarkLost(uint64_t epoch, absl::Duration silence) = 0;

  virtual absl::StatusOr<std::vector<hoist::v1::Agent>> ListAgents() = 0;
  // Containers of one deployment (every deployment when empty).
  virtual absl::StatusOr<std::vector<ObservedContainer>> ListContainers(const std::string& deployment) = 0;
};

}  // namespace hoist

#pragma once

#include "controller/store/agent_store.h"
#include "controller/store/group_commit.h"
#include "controller/store/pg_pool.h"

namespace hoist {

// AgentStore on the tables agents and agent_containers.
class PgAgentStore : public AgentStore {
 public:
  explicit PgAgentStore(PgPool* pool);
  PgAgentStore(const PgAgentStore&) = delete;
  PgAgentStore& operator=(const PgAgentStore&) = delete;

  // Group-committed (group_commit.h): a fleet reconnecting at once is
  // recorded in a few statements, not one transaction per agent.
  absl::Status RecordHello(uint64_t epoch, const hoist::v1::Hello& hello, const std::string& controller_id) override;
  absl::Status RecordHeartbeats(uint64_t epoch,
                                const std::map<std::string, hoist::v1::Heartbeat>& heartbeats) override;
  absl::Status ReplaceInventory(uint64_t epoch, const std::string& agent_id,
                                const hoist::v1::Inventory& inventory) override;
  absl::Status ReplaceInventories(uint64_t epoch,
                                  const std::map<std::string, hoist::v1::Inventory>& inventories) override;
  absl::Status RecordDisconnect(uint64_t epoch, const std::string& agent_id) override;
  absl::StatusOr<std::vector<std::string>> MarkLost(uint64_t epoch, absl::Duration silence) override;
  absl::StatusOr<std::vector<hoist::v1::Agent>> ListAgents() override;
  absl::StatusOr<std::vector<ObservedContainer>> ListContainers(const std::string& deployment) override;

 private:
  struct HelloArgs {
    uint64_t epoch = 0;
    const hoist::v1::Hello* hello = nullptr;
    const std::string* controller_id = nullptr;
  };
  // Records hellos of one epoch (GroupCommit groups them so) in one statement, or each alone when that
  // fails (one agent twice in the batch, a bad row).
  void WriteHellos(const std::vector<GroupCommit<HelloArgs>::Entry*>& batch);

  PgPool* const pool_;
  GroupCommit<HelloArgs> hellos_;
};

}  // namespace hoist

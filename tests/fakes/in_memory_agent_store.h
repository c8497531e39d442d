#pragma once

// An AgentStore in memory, for unit tests of the agent hub and the rollout
// manager without Postgres. It keeps PgAgentStore's semantics: every write
// checks the leader epoch first and fails with FAILED_PRECONDITION
// ("fenced: ...") when it is not the current one (or is 0); a hello marks the
// agent connected and not lost; a heartbeat does not reopen a closed session;
// an inventory replaces the agent's containers; agents silent too long are
// marked lost once. The current epoch is the test's to move, as a new
// leader's election moves hoist_leader's.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/store/agent_store.h"
#include "tests/fakes/epoch_fence.h"
#include "shared/clock.h"

namespace hoist::testing {

class InMemoryAgentStore final : public AgentStore, public EpochFence {
 public:
  // Heartbeat times are read from clock (the real clock when null). The
  // current epoch starts at 0: nobody leads.
  explicit InMemoryAgentStore(Clock* clock = nullptr);
  InMemoryAgentStore(const InMemoryAgentStore&) = delete;
  InMemoryAgentStore& operator=(const InMemoryAgentStore&) = delete;

  // The epoch and the count of fenced writes: EpochFence.
  // The controller the agent's last hello was recorded for ("" when unknown).
  std::string ControllerOf(const std::string& agent_id) const;

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
  struct AgentRow {
    hoist::v1::Agent agent;  // last_heartbeat is kept below
    std::string controller_id;
    absl::Time last_heartbeat = absl::InfinitePast();
  };

  // The containers as the table keeps them; INTERNAL (a foreign key) for an
  // agent never recorded.
  absl::StatusOr<std::vector<hoist::v1::ContainerInfo>> Rows(const std::string& agent_id,
                                                             const hoist::v1::Inventory& inventory) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  std::map<std::string, AgentRow> agents_ ABSL_GUARDED_BY(mu_);  // by id
  std::map<std::string, std::vector<hoist::v1::ContainerInfo>> containers_ ABSL_GUARDED_BY(mu_);  // by agent id
};

}  // namespace hoist::testing

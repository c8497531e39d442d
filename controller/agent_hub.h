#pragma once

// AgentHub: the controller's side of every open agent session. It records
// agents and their inventories through an AgentStore, pushes steps (leader
// only, stamped with the leader's epoch) and routes their progress and
// results back to whoever waits for them. It knows nothing of gRPC: the
// service adapter (agent_service.h) hands it an AgentConnection per stream.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/rollout/step_dispatcher.h"
#include "controller/store/agent_store.h"
#include "hoist/v1/agent.pb.h"
#include "shared/clock.h"

namespace hoist {

// One open session, as the hub sees it.
class AgentConnection {
 public:
  virtual ~AgentConnection() = default;
  // Sends one message; false once the stream is gone.
  virtual bool Send(const hoist::v1::SessionResponse& message) = 0;
  // Ends the session; the agent reconnects (and is redirected if need be).
  virtual void Close() = 0;
};

struct AgentHubOptions {
  // This replica's id, recorded as the agent's controller.
  std::string controller_id;
  // What agents are told in their Welcome.
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // An agent silent for this many intervals is marked lost.
  int lost_after_missed = 3;
};

// Counters the hub keeps for /health and /metrics.
struct AgentHubStats {
  int agents_connected = 0;
  int steps_in_flight = 0;
};

class AgentHub : public rollout::StepDispatcher {
 public:
  // Called with each finished step's latency, for metrics.
  using StepObserver = std::function<void(const hoist::v1::Step&, const hoist::v1::StepResult&, absl::Duration)>;

  AgentHub(AgentStore* store, Clock* clock, AgentHubOptions options);
  // Stops the liveness thread and closes every session.
  ~AgentHub();
  AgentHub(const AgentHub&) = delete;
  AgentHub& operator=(const AgentHub&) = delete;

  // Starts the threads that mark silent agents lost and write inventories.
  void Start();
  void Stop();

  // Leadership changed: epoch is the new leader epoch, or 0 when this replica
  // no longer leads. Losing it closes every session (the agents reconnect to
  // the new leader) and fails every waiting step with FAILED_PRECONDITION.
  void OnLeadership(uint64_t epoch);
  // The epoch steps are sent with; 0 when not leading.
  uint64_t epoch() const;

  // A hello arrived on `conn` (already authenticated by the adapter). Checks
  // it, records the agent and sends the Welcome on conn before any step can
  // be sent there. A second session
  // of the same agent replaces the first. INVALID_ARGUMENT for a malformed
  // hello, FAILED_PRECONDITION for an incompatible protocol or when this
  // replica does not lead.
  absl::Status Open(const hoist::v1::Hello& hello, AgentConnection* conn);
  // Any later message of that session.
  void OnMessage(const std::string& agent_id, AgentConnection* conn, const hoist::v1::SessionRequest& message);
  // The session ended.
  void Closed(const std::string& agent_id, AgentConnection* conn);

  // Pushes `step` to agent_id and waits for its result. The step must carry
  // an id and a deadline; the hub stamps the epoch. When the session drops
  // the hub waits for the agent to come back and sends the same step again:
  // the agent's journal makes that safe. Fails with DEADLINE_EXCEEDED when
  // no result arrives by the deadline (plus a grace), FAILED_PRECONDITION
  // when leadership is lost, CANCELLED when *cancel becomes true.
  absl::StatusOr<hoist::v1::StepResult> RunStep(const std::string& agent_id, hoist::v1::Step step,
                                                const ProgressFn& on_progress,
                                                const std::atomic<bool>* cancel = nullptr) override;

  // Asks a connected agent for a fresh inventory.
  absl::Status RequestInventory(const std::string& agent_id);

  bool IsConnected(const std::string& agent_id) const override;
  bool Leading() const override { return epoch() != 0; }
  std::vector<std::string> ConnectedAgents() const;
  AgentHubStats Stats() const;
  void SetStepObserver(StepObserver observer);

 private:
  struct Session {
    AgentConnection* conn = nullptr;
    uint64_t generation = 0;  // bumps on every (re)connect
    absl::Time last_seen;
  };
  struct Waiter {
    std::string agent_id;
    ProgressFn on_progress;
    bool done = false;
    // Progress callbacks running now (RunStep waits for them to end).
    int progress_calls = 0;
    hoist::v1::StepResult result;
    // Signalled (with mu_) on its result, a reconnect of its agent, a
    // leadership change and shutdown. One per waiter: a thousand steps in
    // flight are not a thousand conditions every unlock of mu_ evaluates.
    absl::CondVar cv;
  };
  // Wakes every waiter (of agent_id only, when given).
  void WakeWaiters(const std::string& agent_id = "") ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void LivenessLoop();
  // Writes the inventories received, all at once, as soon as there are any.
  void InventoryLoop();
  absl::Status StoreError(absl::string_view what, const absl::Status& s);

  AgentStore* const store_;
  Clock* const clock_;
  const AgentHubOptions options_;

  // Orders one agent's session writes (hello, disconnect) with its sessions;
  // taken before mu_. Striped: agents that share one only wait for each other.
  absl::Mutex& WriteLockFor(const std::string& agent_id);
  std::array<absl::Mutex, 64> write_locks_;

  mutable absl::Mutex mu_;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  // The last inventory of each agent received since the last write of them.
  std::map<std::string, hoist::v1::Inventory> inventories_ ABSL_GUARDED_BY(mu_);
  // The last heartbeat of each agent heard since the last write of them.
  std::map<std::string, hoist::v1::Heartbeat> heard_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  StepObserver observer_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread liveness_;
  std::thread inventory_writer_;
};

}  // namespace hoist

#pragma once

// How the executor reaches agents: AgentHub implements it; tests use fakes.

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "hoist/v1/agent.pb.h"

namespace hoist::rollout {

class StepDispatcher {
 public:
  using ProgressFn = std::function<void(const hoist::v1::StepProgress&)>;
  virtual ~StepDispatcher() = default;
  // Pushes step (with id and deadline) to the agent and waits for its result;
  // see AgentHub::RunStep for the errors.
  virtual absl::StatusOr<hoist::v1::StepResult> RunStep(const std::string& agent_id, hoist::v1::Step step,
                                                        const ProgressFn& on_progress,
                                                        const std::atomic<bool>* cancel) = 0;
  // Whether agent_id has a session with this replica. Only the leader holds
  // sessions.
  virtual bool IsConnected(const std::string& agent_id) const = 0;
  // Whether this replica leads (and so holds the agents' sessions).
  virtual bool Leading() const = 0;
};

}  // namespace hoist::rollout

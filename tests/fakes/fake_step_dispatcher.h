#pragma once

// A StepDispatcher whose agents are scripted: per action and agent, a step
// succeeds, fails, hangs until the test releases it, or never reaches the
// agent. It answers as AgentHub does (FAILED_PRECONDITION when not leading or
// when leadership is lost while a step waits, CANCELLED when the caller's
// cancel flag is set, INVALID_ARGUMENT for a step without an id or a
// deadline, ALREADY_EXISTS for a step id already waited for), and its agents
// keep a journal like hoist-agent's: a step id runs once, and a step sent
// again returns the recorded result (or waits for the run in flight).
// Every call is recorded in order, with whether the dispatcher led then.

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/rollout/step_dispatcher.h"
#include "hoist/v1/agent.pb.h"

namespace hoist::testing {

// The name of an agent step's action ("pull_image", "start_instance", ...;
// a postcheck's is "probe_health"), which Answer's rules match; "" for a step
// without one.
std::string ActionName(const hoist::v1::Step& step);

class FakeStepDispatcher final : public rollout::StepDispatcher {
 public:
  enum class Reply {
    kSucceed,      // the agent reports success
    kFail,         // the agent reports a failure, with the rule's message
    kHang,         // no result until ReleaseHanging (or the caller gives up)
    kUnreachable,  // RunStep fails UNAVAILABLE: the step never reached the agent
  };
  // One RunStep call.
  struct Dispatch {
    std::string agent_id;
    hoist::v1::Step step;
    bool leading = false;    // whether the dispatcher led at the call
    bool delivered = false;  // the step reached the agent (refused calls did not)
  };
  // Fills in the output of a result (its outcome and message already set)
  // before it is journaled: a pull's digest, a start's ports, a job's exit
  // code. Runs under the dispatcher's lock: it must not call back into it.
  using ResultFn =
      std::function<void(const std::string& agent_id, const hoist::v1::Step& step, hoist::v1::StepResult* result)>;

  // `connected`: the agents with a session; `leading`: whether this replica leads.
  explicit FakeStepDispatcher(std::vector<std::string> connected = {}, bool leading = true);
  // Every caller must have returned (destroy executors and managers first).
  ~FakeStepDispatcher() override = default;
  FakeStepDispatcher(const FakeStepDispatcher&) = delete;
  FakeStepDispatcher& operator=(const FakeStepDispatcher&) = delete;

  // Losing leadership fails every step waiting for its result.
  void SetLeading(bool leading);
  void Connect(const std::string& agent_id);
  void Disconnect(const std::string& agent_id);

  // Steps whose action is `kind` (ActionName; "" any) sent to `agent_id`
  // ("" any) are answered with `reply`; the rule added last that matches
  // wins; a step no rule matches succeeds.
  void Answer(const std::string& kind, const std::string& agent_id, Reply reply, std::string message = "");
  void FillResults(ResultFn fill);
  // Each step delivered reports this progress line once before its result
  // ("" reports none, the default).
  void ReportProgress(std::string line);

  // Ends every step hanging now with kSucceed or kFail (its recorded result;
  // a caller still waiting gets it). Later steps a kHang rule matches hang
  // again.
  void ReleaseHanging(Reply reply = Reply::kSucceed, std::string message = "");
  // Waits until at least n steps hang; false on timeout.
  bool WaitHanging(size_t n, absl::Duration timeout);
  // Waits until step_id was delivered at least `times` times; false on timeout.
  bool WaitDelivered(const std::string& step_id, int times, absl::Duration timeout);

  // Every call so far, in order.
  std::vector<Dispatch> Dispatched() const;
  // The ids of the steps delivered, in order (a resent step appears again).
  std::vector<std::string> DeliveredIds() const;
  // How often the agents ran step_id (a resend returns the journal's result).
  int Executions(const std::string& step_id) const;

  absl::StatusOr<hoist::v1::StepResult> RunStep(const std::string& agent_id, hoist::v1::Step step,
                                                const ProgressFn& on_progress,
                                                const std::atomic<bool>* cancel) override;
  bool IsConnected(const std::string& agent_id) const override;
  bool Leading() const override;

 private:
  struct Rule {
    std::string kind;
    std::string agent_id;
    Reply reply;
    std::string message;
  };
  // A step id in an agent's journal.
  struct Entry {
    std::string agent_id;
    hoist::v1::Step step;
    bool done = false;
    hoist::v1::StepResult result;
  };

  const Rule* Match(const std::string& agent_id, const hoist::v1::Step& step) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The result of a step answered with kSucceed or kFail.
  hoist::v1::StepResult Result(const std::string& agent_id, const hoist::v1::Step& step, Reply reply,
                               const std::string& message) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Records the call and returns `refusal`.
  absl::Status Refuse(const std::string& agent_id, const hoist::v1::Step& step, absl::Status refusal)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for entry's result; FAILED_PRECONDITION or CANCELLED when the
  // caller must stop waiting first.
  absl::StatusOr<hoist::v1::StepResult> Await(const std::string& agent_id, const std::shared_ptr<Entry>& entry,
                                              bool resent, const std::atomic<bool>* cancel)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  bool leading_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> connected_ ABSL_GUARDED_BY(mu_);
  std::vector<Rule> rules_ ABSL_GUARDED_BY(mu_);
  ResultFn fill_ ABSL_GUARDED_BY(mu_);
  std::string progress_ ABSL_GUARDED_BY(mu_);
  std::vector<Dispatch> dispatched_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Entry>> journal_ ABSL_GUARDED_BY(mu_);  // by step id
  std::map<std::string, int> executions_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> waiting_ ABSL_GUARDED_BY(mu_);  // step ids a caller waits for
};

}  // namespace hoist::testing

#pragma once

// The rollout executor, on the leader: it runs a stored plan step by step,
// batch by batch, persisting every step's state before and after it runs
// (epoch-guarded), and streams events for watchers. After a failover the new
// leader calls OnLeadership and every unfinished rollout resumes from its
// first unfinished step; a step that was running is sent again with the same
// id, and the agent's journal returns its recorded result instead of running
// it twice.
//
// Blue-green: the "grace" step puts the rollout in ROLLOUT_STATE_GRACE and
// waits until its period (counted from the step's first start, which
// Postgres keeps across failovers) has passed while the new slot serves, or
// until `hoist cutover --finish`; a switch back holds the period open.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/rollout/rollout_store.h"
#include "controller/rollout/step_dispatcher.h"
#include "shared/clock.h"

namespace hoist::rollout {

struct ExecutorOptions {
  // Deadline of agent steps whose plan gives none.
  absl::Duration default_step_timeout = absl::Minutes(10);
  // Progress events of one step are written at most this often.
  absl::Duration progress_interval = absl::Milliseconds(250);
  // How often the leader looks for unfinished rollouts that no runner holds
  // (a resume that failed, a runner stopped by a database error). The same
  // rollout is picked up again after twice as long each time, up to
  // max_resume_backoff.
  absl::Duration resume_interval = absl::Seconds(2);
  absl::Duration max_resume_backoff = absl::Minutes(1);
};

class Executor {
 public:
  // Starts the rollback of a failed rollout (ON_FAILURE_ROLLBACK); returns the
  // new rollout's id. Set by the rollout manager, which can plan.
  using RollbackLauncher = std::function<absl::StatusOr<std::string>(const StoredRollout& failed)>;

  Executor(RolloutStore* store, StepDispatcher* dispatcher, Clock* clock, ExecutorOptions options = {});
  // Stops every runner and joins it.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void SetRollbackLauncher(RollbackLauncher launcher);

  // Leadership changed. On winning, resumes every unfinished rollout; on
  // losing, stops the runners (their writes would be fenced anyway). While
  // leading, unfinished rollouts without a runner are resumed again every
  // resume_interval, so a database restart costs a pause, not a rollout left
  // RUNNING with its lock held.
  void OnLeadership(uint64_t epoch);

  // Starts running a stored rollout. FAILED_PRECONDITION when not leading.
  absl::Status Launch(const std::string& rollout_id);

  // Asks a running rollout to stop after the steps in flight.
  void Cancel(const std::string& rollout_id);

  // Blocks until the rollout is no longer run by this executor, or timeout.
  bool WaitIdle(const std::string& rollout_id, absl::Duration timeout);

  // Runs fn while no grace period can end on this replica, so that a cutover
  // and the retirement of a slot never interleave. Returns fn's status.
  absl::Status WhileGraceHeld(const std::function<absl::Status()>& fn);

  // Fills in the proxy backends and forward targets the plan could not
  // address (a port Docker chose when this rollout started the instance)
  // from the start results.
  absl::Status ResolveBackends(const StoredRollout& rollout, hoist::v1::Step* action);

 private:
  struct Runner {
    std::thread thread;
    std::atomic<bool> cancel{false};
    std::atomic<bool> abort{false};  // leadership lost
    bool done = false;
    // Releases this run has read, by version, with the digests recorded so
    // far: a thousand hosts' steps read a release once, not a thousand times.
    absl::Mutex releases_mu;
    std::map<std::string, hoist::v1::Release> releases ABSL_GUARDED_BY(releases_mu);
  };
  // The release `version` of the rollout's deployment, from the runner's
  // cache or the store (NOT_FOUND when there is none).
  absl::StatusOr<hoist::v1::Release> ReleaseOf(Runner* runner, const StoredRollout& rollout,
                                               const std::string& version);
  // A start of a release's image carries the digest the release recorded
  // (the agent refuses another content under the same tag).
  absl::Status ResolveDigest(const StoredRollout& rollout, Runner* runner, hoist::v1::Step* action);
  // Records a pull's digest in the target release (the first one wins) and
  // returns why the step fails when the release recorded another one ("" when
  // it did not).
  absl::StatusOr<std::string> CheckPulledDigest(uint64_t epoch, const StoredRollout& rollout, Runner* runner,
                                                const std::string& agent_id, const std::string& image,
                                                const std::string& digest);

  // How a run's batches ended, for its end and whether it rolls back.
  struct RunOutcome {
    std::string failure;  // the first failed step and why ("" when none failed)
    // That step, in the run's steps; nullptr when none failed.
    const StoredStep* failed_step = nullptr;
    std::string FailedPhase() const { return failed_step == nullptr ? "" : failed_step->phase_name; }
    bool cancelled = false;
    bool stopped = false;  // leadership lost: leave the state for the next leader
    bool put_back = false;  // a failed gate was undone completely
  };

  // One rollout's run, in the stages below, on the runner's thread.
  void Run(const std::string& id, uint64_t epoch, Runner* runner);
  // Marks a pending rollout running (rollout_started), or records that this
  // leader resumes it; an error when the state cannot be written.
  absl::Status Begin(uint64_t epoch, const StoredRollout& rollout, size_t step_count);
  // Runs the unfinished steps batch by batch until one fails, the rollout is
  // cancelled or the runner must stop; the undo-gate phase is left out.
  RunOutcome RunBatches(const StoredRollout& rollout, const std::vector<StoredStep>& steps, uint64_t epoch,
                        Runner* runner);
  // One batch: marked running in one write, then each step on its own thread.
  void RunBatch(const StoredRollout& rollout, const std::vector<const StoredStep*>& todo, uint64_t epoch,
                Runner* runner, RunOutcome* out);
  // After a failed gate, runs the undo-gate phase and says in the failure
  // what was put back.
  void UndoFailedGate(const StoredRollout& rollout, const std::vector<StoredStep>& steps, uint64_t epoch,
                      Runner* runner, RunOutcome* out);
  // The state a run ends the rollout in, and the message that says why.
  // untouched: it failed before anything the deployment runs on changed.
  hoist::v1::RolloutState EndState(const StoredRollout& rollout, const RunOutcome& outcome, bool untouched,
                                   std::string* message);
  // Records the end (state, event, audit) and what follows a failure.
  void End(uint64_t epoch, const StoredRollout& rollout, const RunOutcome& outcome);
  // ON_FAILURE_ROLLBACK: says why no rollback is needed, or starts one.
  void AfterFailure(uint64_t epoch, const StoredRollout& rollout, const RunOutcome& outcome, bool untouched,
                    hoist::v1::RolloutState final_state);

  // Runs one step; returns its final state (or an error when the runner must stop).
  // Marked: the step was marked running with its batch (MarkRunning).
  // record_progress: the agent's progress lines become step_progress events.
  absl::StatusOr<hoist::v1::StepState> RunStep(const StoredRollout& rollout, const StoredStep& step, uint64_t epoch,
                                               Runner* runner, std::string* error, bool marked = false,
                                               bool record_progress = true);
  // RunStep of a step with an action: sends it to its agent, sets *result to
  // the agent's answer, and checks it.
  absl::StatusOr<hoist::v1::StepState> RunAgentStep(const StoredRollout& rollout, const StoredStep& step,
                                                    uint64_t epoch, Runner* runner, std::string* error,
                                                    bool record_progress,
                                                    std::optional<hoist::v1::StepResult>* result);
  // An agent's answer: its failure, a pulled digest the release did not
  // record, or a backup to record.
  absl::StatusOr<hoist::v1::StepState> CheckAgentResult(const StoredRollout& rollout, const StoredStep& step,
                                                        const hoist::v1::Step& action, const hoist::v1::StepResult& r,
                                                        uint64_t epoch, Runner* runner, std::string* error);
  // Records the backup a step took and forgets those its agent pruned.
  absl::Status RecordBackupResult(const StoredRollout& rollout, const StoredStep& step, const hoist::v1::Step& action,
                                  const hoist::v1::StepResult& r, uint64_t epoch);
  // RunStep of a step without an action: the controller runs it itself.
  absl::StatusOr<hoist::v1::StepState> RunControllerStep(const StoredRollout& rollout, const StoredStep& step,
                                                         uint64_t epoch, Runner* runner, absl::Time started,
                                                         std::string* error);
  // Pre-flight and post-check: FAILED, naming them, when agents the plan
  // needs are not connected.
  absl::StatusOr<hoist::v1::StepState> CheckAgentsConnected(const StoredRollout& rollout, std::string* error);
  // Batches of more steps than this record no step_progress events.
  static constexpr size_t kMaxBatchWithProgress = 24;
  // Marks steps running, with their step_started events, in one write.
  absl::Status MarkRunning(uint64_t epoch, const StoredRollout& rollout, const std::vector<const StoredStep*>& steps);
  hoist::v1::RolloutEvent MakeEvent(const StoredRollout& rollout, const std::string& kind, const std::string& message,
                                    const StoredStep* step = nullptr,
                                    hoist::v1::RolloutState state = hoist::v1::ROLLOUT_STATE_RUNNING,
                                    hoist::v1::StepState step_state = hoist::v1::STEP_STATE_UNSPECIFIED,
                                    const hoist::v1::StepProgress* progress = nullptr);
  void Event(uint64_t epoch, const StoredRollout& rollout, const std::string& kind, const std::string& message,
             const StoredStep* step = nullptr, hoist::v1::RolloutState state = hoist::v1::ROLLOUT_STATE_RUNNING,
             hoist::v1::StepState step_state = hoist::v1::STEP_STATE_UNSPECIFIED,
             const hoist::v1::StepProgress* progress = nullptr);
  void Reap(bool all);
  // Launches every unfinished rollout that no runner of this replica holds
  // and whose backoff has passed.
  void ResumeUnfinished(uint64_t epoch);
  void ResumeLoop();
  // The "grace" step: OK once the old slot may be retired; FAILED_PRECONDITION when the runner must stop.
  absl::Status RunGrace(const StoredRollout& rollout, const StoredStep& step, uint64_t epoch, Runner* runner,
                        absl::Time started);

  RolloutStore* const store_;
  StepDispatcher* const dispatcher_;
  Clock* const clock_;
  const ExecutorOptions options_;

  absl::Mutex mu_;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::unique_ptr<Runner>> runners_ ABSL_GUARDED_BY(mu_);
  RollbackLauncher rollback_ ABSL_GUARDED_BY(mu_);
  // Rollouts resumed by ResumeUnfinished: how often in a row, and when next.
  struct Backoff {
    absl::Duration wait;
    absl::Time next;
  };
  std::map<std::string, Backoff> resumed_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread resumer_;
  // Held by a cutover and by the decision that a grace period is over.
  absl::Mutex grace_mu_;
};

}  // namespace hoist::rollout

#pragma once

// A RolloutStore in memory, for unit tests of the executor, the rollout
// manager and the operator service without Postgres. It keeps
// PgRolloutStore's semantics: every leader-only write checks the leader epoch
// first and fails with FAILED_PRECONDITION ("fenced: ...") when it is not the
// current one (or is 0); a rollout takes its deployment's lock when it is
// created and a terminal state releases it and skips the pending steps; a
// step's started_at is its first start; events are numbered within their
// rollout. The current epoch is the test's to move, as a new leader's
// election moves hoist_leader's.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/rollout/rollout_store.h"
#include "tests/fakes/epoch_fence.h"
#include "shared/clock.h"

namespace hoist::testing {

class InMemoryRolloutStore final : public rollout::RolloutStore, public EpochFence {
 public:
  // Times (updated_at, started_at, event times, ...) are read from clock
  // (the real clock when null). The current epoch starts at 0: nobody leads.
  explicit InMemoryRolloutStore(Clock* clock = nullptr);
  InMemoryRolloutStore(const InMemoryRolloutStore&) = delete;
  InMemoryRolloutStore& operator=(const InMemoryRolloutStore&) = delete;

  // The epoch and the count of fenced writes: EpochFence.


  absl::Status PutDeployment(uint64_t epoch, const rollout::StoredDeployment& deployment) override;
  absl::StatusOr<rollout::StoredDeployment> GetDeployment(const std::string& name) override;
  absl::StatusOr<std::vector<rollout::StoredDeployment>> ListDeployments() override;
  absl::Status PutRelease(uint64_t epoch, const hoist::v1::Release& release) override;
  absl::StatusOr<hoist::v1::Release> GetRelease(const std::string& deployment, const std::string& version) override;
  absl::StatusOr<std::map<std::string, std::string>> RecordDigests(
      uint64_t epoch, const std::string& deployment, const std::string& version,
      const std::map<std::string, std::string>& digests) override;
  absl::StatusOr<std::vector<hoist::v1::Release>> ListReleases(const std::string& deployment) override;
  absl::Status Pin(uint64_t epoch, const std::string& deployment, const std::string& version) override;
  absl::Status SetLiveSlot(uint64_t epoch, const std::string& deployment, hoist::v1::Slot slot) override;

  absl::Status CreateRollout(uint64_t epoch, const rollout::StoredRollout& rollout,
                             const std::vector<rollout::StoredStep>& steps) override;
  absl::StatusOr<rollout::StoredRollout> GetRollout(const std::string& id) override;
  absl::StatusOr<rollout::RolloutStatus> GetRolloutStatus(const std::string& id) override;
  absl::StatusOr<std::vector<rollout::StoredStep>> GetSteps(const std::string& rollout_id) override;
  absl::StatusOr<std::vector<rollout::StoredRollout>> ListRollouts(const std::string& deployment, int limit) override;
  absl::StatusOr<std::vector<std::string>> UnfinishedRollouts() override;
  absl::Status MarkStepRunning(uint64_t epoch, const std::string& rollout_id, int seq) override;
  absl::Status FinishStep(uint64_t epoch, const std::string& rollout_id, int seq, hoist::v1::StepState state,
                          const std::string& error, const std::optional<hoist::v1::StepResult>& result) override;
  absl::Status MarkStepsRunning(uint64_t epoch, const std::string& rollout_id, const std::vector<int>& seqs,
                                const std::vector<hoist::v1::RolloutEvent>& events) override;
  absl::Status FinishStepWithEvent(uint64_t epoch, const std::string& rollout_id, int seq, hoist::v1::StepState state,
                                   const std::string& error, const std::optional<hoist::v1::StepResult>& result,
                                   const hoist::v1::RolloutEvent& event) override;
  absl::Status SetRolloutState(uint64_t epoch, const std::string& id, hoist::v1::RolloutState state,
                               const std::string& error) override;
  absl::Status RequestCancel(const std::string& id) override;
  absl::Status RequestFinish(const std::string& id) override;
  absl::StatusOr<std::vector<hoist::v1::Lock>> ListLocks() override;

  absl::Status AppendEvent(uint64_t epoch, const hoist::v1::RolloutEvent& event) override;
  absl::StatusOr<std::vector<hoist::v1::RolloutEvent>> EventsAfter(const std::string& rollout_id,
                                                                   uint64_t after_sequence) override;

  absl::Status RecordBackup(uint64_t epoch, const hoist::v1::BackupRecord& backup) override;
  absl::Status ForgetBackups(uint64_t epoch, const std::string& agent_id,
                             const std::vector<std::string>& ids) override;
  absl::StatusOr<std::vector<hoist::v1::BackupRecord>> ListBackups(const std::string& deployment) override;
  absl::StatusOr<hoist::v1::BackupRecord> GetBackup(const std::string& id) override;

  absl::Status Audit(const rollout::AuditEntry& entry) override;
  absl::StatusOr<std::vector<hoist::v1::AuditEvent>> ListAudit(const std::string& deployment, int limit,
                                                               uint64_t before_id) override;

 private:
  struct RolloutRow {
    rollout::StoredRollout rollout;
    std::vector<rollout::StoredStep> steps;  // by seq
    uint64_t created = 0;                    // creation order, for ties of created_at
  };
  struct EventRow {
    hoist::v1::RolloutEvent event;
    absl::Time at;
  };
  struct BackupRow {
    hoist::v1::BackupRecord record;
    absl::Time created_at;
  };

  absl::StatusOr<rollout::StoredStep*> FindStep(const std::string& rollout_id, int seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(rollout::StoredStep* step, hoist::v1::StepState state, const std::string& error,
              const std::optional<hoist::v1::StepResult>& result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Append(const hoist::v1::RolloutEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;

  std::map<std::string, rollout::StoredDeployment> deployments_ ABSL_GUARDED_BY(mu_);
  // (deployment, version) -> release, created_at included.
  std::map<std::pair<std::string, std::string>, hoist::v1::Release> releases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RolloutRow> rollouts_ ABSL_GUARDED_BY(mu_);
  uint64_t next_rollout_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, hoist::v1::Lock> locks_ ABSL_GUARDED_BY(mu_);  // by deployment
  std::map<std::string, std::vector<EventRow>> events_ ABSL_GUARDED_BY(mu_);  // by rollout, in order
  std::vector<BackupRow> backups_ ABSL_GUARDED_BY(mu_);  // in insertion order
  std::vector<hoist::v1::AuditEvent> audit_ ABSL_GUARDED_BY(mu_);  // id = index + 1
};

}  // namespace hoist::testing

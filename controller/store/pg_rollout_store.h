#pragma once

#include <vector>

#include "controller/rollout/rollout_store.h"
#include "controller/store/group_commit.h"
#include "controller/store/pg_pool.h"
#include "shared/secret_box.h"

namespace hoist {

// RolloutStore on the tables of migrations/0002 and 0003 and audit_log.
// With a SecretBox, env values never reach Postgres in clear: a deployment's
// manifest is stored sealed as a whole, and each env value of a step's
// action is sealed on its own; both are opened again when read. Without one
// (a development hoistd without TLS) they are stored as given.
class PgRolloutStore : public rollout::RolloutStore {
 public:
  explicit PgRolloutStore(PgPool* pool, const SecretBox* secrets = nullptr);
  PgRolloutStore(const PgRolloutStore&) = delete;
  PgRolloutStore& operator=(const PgRolloutStore&) = delete;

  // Seals what an older hoistd (or one without a key) stored in clear, and
  // what is sealed under an older key, under the current one. Returns how
  // many manifests and steps it rewrote. A no-op without a SecretBox.
  absl::StatusOr<int> SealStoredSecrets();

  absl::Status PutDeployment(uint64_t epoch, const rollout::StoredDeployment& deployment) override;
  absl::StatusOr<rollout::StoredDeployment> GetDeployment(const std::string& name) override;
  absl::StatusOr<std::vector<rollout::StoredDeployment>> ListDeployments() override;
  absl::Status PutRelease(uint64_t epoch, const hoist::v1::Release& release) override;
  absl::StatusOr<hoist::v1::Release> GetRelease(const std::string& deployment, const std::string& version) override;
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
  // Group-committed (group_commit.h): the finishes that arrive while one is
  // being written go together, in one transaction of two statements. A
  // batch of a hundred steps ending at once is a few commits, not a hundred.
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
  absl::StatusOr<std::map<std::string, std::string>> RecordDigests(
      uint64_t epoch, const std::string& deployment, const std::string& version,
      const std::map<std::string, std::string>& digests) override;
  absl::Status ForgetBackups(uint64_t epoch, const std::string& agent_id, const std::vector<std::string>& ids) override;
  absl::StatusOr<std::vector<hoist::v1::BackupRecord>> ListBackups(const std::string& deployment) override;
  absl::StatusOr<hoist::v1::BackupRecord> GetBackup(const std::string& id) override;
  absl::Status Audit(const rollout::AuditEntry& entry) override;
  absl::StatusOr<std::vector<hoist::v1::AuditEvent>> ListAudit(const std::string& deployment, int limit,
                                                               uint64_t before_id) override;

 private:
  // A stored text (a manifest, an env value), opened when sealed; `what`
  // names it in errors.
  absl::StatusOr<std::string> Open(const std::string& stored, absl::string_view what) const;
  // A step's action as stored: its env values sealed (with a SecretBox).
  absl::StatusOr<std::string> ActionBytes(const hoist::v1::Step& action) const;

  // One FinishStepWithEvent's arguments.
  struct FinishArgs {
    uint64_t epoch = 0;
    const std::string* rollout_id = nullptr;
    int seq = 0;
    hoist::v1::StepState state{};
    const std::string* error = nullptr;
    const std::optional<hoist::v1::StepResult>* result = nullptr;
    const hoist::v1::RolloutEvent* event = nullptr;
  };
  // Writes finishes of one epoch (GroupCommit groups them so): all at once, or each alone when that
  // fails, so that one bad row fails only its own caller.
  void WriteFinishes(const std::vector<GroupCommit<FinishArgs>::Entry*>& batch);

  PgPool* const pool_;
  const SecretBox* const secrets_;
  GroupCommit<FinishArgs> finishes_;
};

}  // namespace hoist

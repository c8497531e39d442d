#pragma once

// What the executor and the operator API keep in the database: deployments
// and their pinned release, releases, rollouts with every step's state, the
// deploy lock, rollout events, backups and the audit log. Leader-only writes
// carry the leader's epoch and fail with FAILED_PRECONDITION once it is stale.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/rollout/step_kind.h"
#include "hoist/v1/agent.pb.h"
#include "hoist/v1/operator.pb.h"

namespace hoist::rollout {

struct StoredStep {
  int seq = 0;
  int phase = 0;
  // What the phase is for reads from its name: PhaseRoleOf(phase_name).
  std::string phase_name;
  int batch = 0;
  std::string step_id;
  // Stored by its name (StepKindName); a store refuses a name it cannot parse.
  StepKind kind = StepKind::kPreflight;
  std::string agent_id;
  std::string description;
  std::optional<hoist::v1::Step> action;  // agent steps
  absl::Duration timeout = absl::ZeroDuration();
  hoist::v1::StepState state = hoist::v1::STEP_STATE_PENDING;
  int attempts = 0;
  std::string error;
  std::optional<hoist::v1::StepResult> result;
  absl::Time started_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();
};

struct StoredRollout {
  std::string id;
  std::string deployment;
  std::string kind;  // deploy, upgrade, rollback
  std::string from_version;
  std::string to_version;
  hoist::v1::Strategy strategy = hoist::v1::STRATEGY_ROLLING;
  hoist::v1::OnFailure on_failure = hoist::v1::ON_FAILURE_STOP;
  hoist::v1::RolloutState state = hoist::v1::ROLLOUT_STATE_PENDING;
  hoist::v1::Plan plan;  // as planned; step states live in the steps
  std::string error;
  std::string requested_by;
  bool cancel_requested = false;
  // Blue-green: `hoist cutover --finish` asked to end the grace period.
  bool finish_requested = false;
  std::string backup_id;
  // The exact command that undoes this rollout, shown when it fails.
  std::string rollback_command;
  absl::Time created_at = absl::InfinitePast();
  absl::Time started_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();
};

// What of a rollout changes while it runs, without its plan (which for a
// thousand hosts is large): for the loops that look at it again and again.
struct RolloutStatus {
  hoist::v1::RolloutState state = hoist::v1::ROLLOUT_STATE_PENDING;
  bool cancel_requested = false;
  bool finish_requested = false;
};

struct StoredDeployment {
  std::string name;
  std::string manifest_yaml;
  std::string manifest_sha256;
  std::string file_name;
  std::string pinned_version;  // empty before the first deploy
  absl::Time updated_at = absl::InfinitePast();
  // The slot the proxy sends traffic to (blue until a blue-green rollout switches).
  hoist::v1::Slot live_slot = hoist::v1::SLOT_BLUE;
};

struct AuditEntry {
  std::string actor;
  std::string action;
  std::string deployment;
  std::string rollout_id;
  std::string outcome;  // ok, failed, refused
  std::string detail;
};

class RolloutStore {
 public:
  virtual ~RolloutStore() = default;

  // Deployments and releases.
  virtual absl::Status PutDeployment(uint64_t epoch, const StoredDeployment& deployment) = 0;
  virtual absl::StatusOr<StoredDeployment> GetDeployment(const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<StoredDeployment>> ListDeployments() = 0;
  // ALREADY_EXISTS when that version exists with different content.
  virtual absl::Status PutRelease(uint64_t epoch, const hoist::v1::Release& release) = 0;
  virtual absl::StatusOr<hoist::v1::Release> GetRelease(const std::string& deployment, const std::string& version) = 0;
  // Records service -> digest in the release for services that have none
  // yet; returns the digest each of those services has recorded afterwards
  // (an earlier one wins). NOT_FOUND when the release does not exist.
  virtual absl::StatusOr<std::map<std::string, std::string>> RecordDigests(
      uint64_t epoch, const std::string& deployment, const std::string& version,
      const std::map<std::string, std::string>& digests) = 0;
  virtual absl::StatusOr<std::vector<hoist::v1::Release>> ListReleases(const std::string& deployment) = 0;
  virtual absl::Status Pin(uint64_t epoch, const std::string& deployment, const std::string& version) = 0;
  // Records which slot serves the deployment (blue-green switch and cutover).
  virtual absl::Status SetLiveSlot(uint64_t epoch, const std::string& deployment, hoist::v1::Slot slot) = 0;

  // Creates the rollout and its steps and takes the deployment's lock, in one
  // transaction. FAILED_PRECONDITION naming the holder when the lock is taken.
  virtual absl::Status CreateRollout(uint64_t epoch, const StoredRollout& rollout,
                                     const std::vector<StoredStep>& steps) = 0;
  virtual absl::StatusOr<StoredRollout> GetRollout(const std::string& id) = 0;
  // NOT_FOUND like GetRollout; the default reads the whole rollout.
  virtual absl::StatusOr<RolloutStatus> GetRolloutStatus(const std::string& id) {
    absl::StatusOr<StoredRollout> r = GetRollout(id);
    if (!r.ok()) return r.status();
    return RolloutStatus{r->state, r->cancel_requested, r->finish_requested};
  }
  virtual absl::StatusOr<std::vector<StoredStep>> GetSteps(const std::string& rollout_id) = 0;
  virtual absl::StatusOr<std::vector<StoredRollout>> ListRollouts(const std::string& deployment, int limit) = 0;
  // Ids of rollouts in pending, running or grace state, oldest first.
  virtual absl::StatusOr<std::vector<std::string>> UnfinishedRollouts() = 0;
  virtual absl::Status MarkStepRunning(uint64_t epoch, const std::string& rollout_id, int seq) = 0;
  virtual absl::Status FinishStep(uint64_t epoch, const std::string& rollout_id, int seq,
                                  hoist::v1::StepState state, const std::string& error,
                                  const std::optional<hoist::v1::StepResult>& result) = 0;
  // A batch's steps marked running and the events that tell it, in one
  // write where the store can (the default makes one call each; an event
  // that cannot be recorded does not fail the batch).
  virtual absl::Status MarkStepsRunning(uint64_t epoch, const std::string& rollout_id, const std::vector<int>& seqs,
                                        const std::vector<hoist::v1::RolloutEvent>& events) {
    for (int seq : seqs) {
      if (absl::Status s = MarkStepRunning(epoch, rollout_id, seq); !s.ok()) return s;
    }
    for (const hoist::v1::RolloutEvent& e : events) AppendEvent(epoch, e).IgnoreError();
    return absl::OkStatus();
  }
  // FinishStep and the event that tells it, in one write where the store can
  // (the default makes the two calls; the event's failure is not the step's).
  virtual absl::Status FinishStepWithEvent(uint64_t epoch, const std::string& rollout_id, int seq,
                                           hoist::v1::StepState state, const std::string& error,
                                           const std::optional<hoist::v1::StepResult>& result,
                                           const hoist::v1::RolloutEvent& event) {
    if (absl::Status s = FinishStep(epoch, rollout_id, seq, state, error, result); !s.ok()) return s;
    AppendEvent(epoch, event).IgnoreError();
    return absl::OkStatus();
  }
  // Sets the rollout's state; a terminal state also sets finished_at and
  // releases the deploy lock in the same transaction.
  virtual absl::Status SetRolloutState(uint64_t epoch, const std::string& id, hoist::v1::RolloutState state,
                                       const std::string& error) = 0;
  // Any replica may ask; the leader's executor sees it.
  virtual absl::Status RequestCancel(const std::string& id) = 0;
  // Asks a blue-green rollout in its grace period to retire the old slot now.
  virtual absl::Status RequestFinish(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<hoist::v1::Lock>> ListLocks() = 0;

  // Events: the executor appends; watchers read after a sequence number.
  virtual absl::Status AppendEvent(uint64_t epoch, const hoist::v1::RolloutEvent& event) = 0;
  virtual absl::StatusOr<std::vector<hoist::v1::RolloutEvent>> EventsAfter(const std::string& rollout_id,
                                                                           uint64_t after_sequence) = 0;

  virtual absl::Status RecordBackup(uint64_t epoch, const hoist::v1::BackupRecord& backup) = 0;
  // Forgets backups `agent_id` removed from its host (backup.keep).
  virtual absl::Status ForgetBackups(uint64_t epoch, const std::string& agent_id,
                                     const std::vector<std::string>& ids) = 0;
  virtual absl::StatusOr<std::vector<hoist::v1::BackupRecord>> ListBackups(const std::string& deployment) = 0;
  virtual absl::StatusOr<hoist::v1::BackupRecord> GetBackup(const std::string& id) = 0;

  // The audit log is written by any replica (a refused write is audited too).
  virtual absl::Status Audit(const AuditEntry& entry) = 0;
  virtual absl::StatusOr<std::vector<hoist::v1::AuditEvent>> ListAudit(const std::string& deployment, int limit,
                                                                       uint64_t before_id) = 0;
};

}  // namespace hoist::rollout

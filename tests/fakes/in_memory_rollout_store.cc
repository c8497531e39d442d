#include "tests/fakes/in_memory_rollout_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist::testing {
namespace {

using rollout::StoredDeployment;
using rollout::StoredRollout;
using rollout::StoredStep;

// What a constraint violation comes back as from PgPool.
absl::Status DatabaseError(absl::string_view what) { return absl::InternalError(absl::StrCat("database error: ", what)); }

}  // namespace

InMemoryRolloutStore::InMemoryRolloutStore(Clock* clock) : clock_(clock != nullptr ? clock : RealClock::Get()) {}

absl::Status InMemoryRolloutStore::PutDeployment(uint64_t epoch, const StoredDeployment& d) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  auto [it, added] = deployments_.try_emplace(d.name);
  StoredDeployment& row = it->second;
  if (added) {
    // A new row: no pin yet, blue serves (the columns' defaults).
    row.name = d.name;
    row.pinned_version.clear();
    row.live_slot = hoist::v1::SLOT_BLUE;
  }
  row.manifest_yaml = d.manifest_yaml;
  row.manifest_sha256 = d.manifest_sha256;
  row.file_name = d.file_name;
  row.updated_at = clock_->Now();
  return absl::OkStatus();
}

absl::StatusOr<StoredDeployment> InMemoryRolloutStore::GetDeployment(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) {
    return absl::NotFoundError(absl::StrCat("no deployment named \"", name, "\"; apply its stack first"));
  }
  return it->second;
}

absl::StatusOr<std::vector<StoredDeployment>> InMemoryRolloutStore::ListDeployments() {
  absl::MutexLock lock(&mu_);
  std::vector<StoredDeployment> out;
  for (const auto& [name, d] : deployments_) out.push_back(d);  // ordered by name
  return out;
}

absl::Status InMemoryRolloutStore::PutRelease(uint64_t epoch, const hoist::v1::Release& release) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  hoist::v1::Release stored = release;
  stored.clear_created_at();
  auto it = releases_.find({release.deployment(), release.version()});
  if (it != releases_.end()) {
    // Equal but for the time and the digests recorded since: accepted again.
    hoist::v1::Release old = it->second;
    old.clear_created_at();
    old.clear_digests();
    stored.clear_digests();
    if (!google::protobuf::util::MessageDifferencer::Equals(old, stored)) {
      return absl::AlreadyExistsError(absl::StrCat("release ", release.version(), " of ", release.deployment(),
                                                   " exists with other content; a version is immutable:"
                                                   " publish a new version instead"));
    }
    return absl::OkStatus();
  }
  if (!deployments_.contains(release.deployment())) {
    return DatabaseError(absl::StrCat("release of unknown deployment ", release.deployment(),
                                      " violates foreign key constraint"));
  }
  SetTimestamp(clock_->Now(), stored.mutable_created_at());
  releases_[{release.deployment(), release.version()}] = std::move(stored);
  return absl::OkStatus();
}

absl::StatusOr<hoist::v1::Release> InMemoryRolloutStore::GetRelease(const std::string& deployment,
                                                                    const std::string& version) {
  absl::MutexLock lock(&mu_);
  auto it = releases_.find({deployment, version});
  if (it == releases_.end()) {
    return absl::NotFoundError(absl::StrCat("deployment ", deployment, " has no release ", version,
                                            "; see hoist releases, or hoist release create FILE"));
  }
  return it->second;
}

absl::StatusOr<std::map<std::string, std::string>> InMemoryRolloutStore::RecordDigests(
    uint64_t epoch, const std::string& deployment, const std::string& version,
    const std::map<std::string, std::string>& digests) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  auto it = releases_.find({deployment, version});
  if (it == releases_.end()) return absl::NotFoundError(absl::StrCat("no release ", version, " of ", deployment));
  auto& known = *it->second.mutable_digests();
  std::map<std::string, std::string> recorded;
  for (const auto& [service, digest] : digests) {
    if (!known.contains(service)) known[service] = digest;  // the first one wins
    recorded[service] = known.at(service);
  }
  return recorded;
}

absl::StatusOr<std::vector<hoist::v1::Release>> InMemoryRolloutStore::ListReleases(const std::string& deployment) {
  absl::MutexLock lock(&mu_);
  std::vector<hoist::v1::Release> out;
  for (const auto& [key, r] : releases_) {
    if (key.first == deployment) out.push_back(r);
  }
  return out;
}

absl::Status InMemoryRolloutStore::Pin(uint64_t epoch, const std::string& deployment, const std::string& version) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  auto it = deployments_.find(deployment);
  if (it == deployments_.end()) return absl::OkStatus();  // an UPDATE of no row
  it->second.pinned_version = version;
  it->second.updated_at = clock_->Now();
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::SetLiveSlot(uint64_t epoch, const std::string& deployment, hoist::v1::Slot slot) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  auto it = deployments_.find(deployment);
  if (it == deployments_.end()) return absl::OkStatus();
  it->second.live_slot = slot == hoist::v1::SLOT_GREEN ? slot : hoist::v1::SLOT_BLUE;
  it->second.updated_at = clock_->Now();
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::CreateRollout(uint64_t epoch, const StoredRollout& r,
                                                 const std::vector<StoredStep>& steps) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  if (auto held = locks_.find(r.deployment); held != locks_.end()) {
    const hoist::v1::Lock& l = held->second;
    return absl::FailedPreconditionError(absl::StrCat(
        "deployment ", r.deployment, " is locked by rollout ", l.rollout_id(), " (started by ", l.owner(), " at ",
        absl::FormatTime(ToTime(l.acquired_at())), "); wait for it, watch it with hoist watch ", l.rollout_id(),
        ", or cancel it"));
  }
  if (!deployments_.contains(r.deployment)) {
    return DatabaseError(absl::StrCat("rollout of unknown deployment ", r.deployment,
                                      " violates foreign key constraint"));
  }
  if (rollouts_.contains(r.id)) return DatabaseError(absl::StrCat("duplicate key: rollout ", r.id));
  if (r.kind != "deploy" && r.kind != "upgrade" && r.kind != "rollback") {
    return DatabaseError(absl::StrCat("rollout kind \"", r.kind, "\" violates check constraint"));
  }
  const absl::Time now = clock_->Now();
  RolloutRow row;
  // Only what the INSERT writes; the rest takes the columns' defaults.
  StoredRollout& stored = row.rollout;
  stored.id = r.id;
  stored.deployment = r.deployment;
  stored.kind = r.kind;
  stored.from_version = r.from_version;
  stored.to_version = r.to_version;
  stored.strategy = r.strategy == hoist::v1::STRATEGY_BLUE_GREEN ? r.strategy : hoist::v1::STRATEGY_ROLLING;
  stored.on_failure = r.on_failure == hoist::v1::ON_FAILURE_ROLLBACK ? r.on_failure : hoist::v1::ON_FAILURE_STOP;
  stored.state = r.state;
  stored.plan = r.plan;
  stored.requested_by = r.requested_by;
  stored.backup_id = r.backup_id;
  stored.rollback_command = r.rollback_command;
  stored.created_at = now;
  for (const StoredStep& s : steps) {
    StoredStep st;
    st.seq = s.seq;
    st.phase = s.phase;
    st.phase_name = s.phase_name;
    st.batch = s.batch;
    st.step_id = s.step_id;
    st.kind = s.kind;
    st.agent_id = s.agent_id;
    st.description = s.description;
    st.action = s.action;
    st.timeout = absl::Milliseconds(absl::ToInt64Milliseconds(s.timeout));  // kept in milliseconds
    row.steps.push_back(std::move(st));
  }
  std::sort(row.steps.begin(), row.steps.end(),
            [](const StoredStep& a, const StoredStep& b) { return a.seq < b.seq; });
  row.created = next_rollout_++;
  rollouts_[r.id] = std::move(row);
  hoist::v1::Lock l;
  l.set_deployment(r.deployment);
  l.set_rollout_id(r.id);
  l.set_owner(r.requested_by);
  SetTimestamp(now, l.mutable_acquired_at());
  locks_[r.deployment] = std::move(l);
  return absl::OkStatus();
}

absl::StatusOr<StoredRollout> InMemoryRolloutStore::GetRollout(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = rollouts_.find(id);
  if (it == rollouts_.end()) return absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
  return it->second.rollout;
}

absl::StatusOr<rollout::RolloutStatus> InMemoryRolloutStore::GetRolloutStatus(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = rollouts_.find(id);
  if (it == rollouts_.end()) return absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
  const StoredRollout& r = it->second.rollout;
  return rollout::RolloutStatus{r.state, r.cancel_requested, r.finish_requested};
}

absl::StatusOr<std::vector<StoredStep>> InMemoryRolloutStore::GetSteps(const std::string& rollout_id) {
  absl::MutexLock lock(&mu_);
  auto it = rollouts_.find(rollout_id);
  if (it == rollouts_.end()) return std::vector<StoredStep>{};  // a SELECT of no row
  return it->second.steps;
}

absl::StatusOr<std::vector<StoredRollout>> InMemoryRolloutStore::ListRollouts(const std::string& deployment,
                                                                             int limit) {
  absl::MutexLock lock(&mu_);
  std::vector<const RolloutRow*> rows;
  for (const auto& [id, row] : rollouts_) {
    if (row.rollout.deployment == deployment) rows.push_back(&row);
  }
  // Newest first.
  std::sort(rows.begin(), rows.end(), [](const RolloutRow* a, const RolloutRow* b) {
    if (a->rollout.created_at != b->rollout.created_at) return a->rollout.created_at > b->rollout.created_at;
    return a->created > b->created;
  });
  std::vector<StoredRollout> out;
  for (const RolloutRow* row : rows) {
    if (static_cast<int>(out.size()) >= limit) break;
    out.push_back(row->rollout);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> InMemoryRolloutStore::UnfinishedRollouts() {
  absl::MutexLock lock(&mu_);
  std::vector<const RolloutRow*> rows;
  for (const auto& [id, row] : rollouts_) {
    const hoist::v1::RolloutState state = row.rollout.state;
    if (state == hoist::v1::ROLLOUT_STATE_PENDING || state == hoist::v1::ROLLOUT_STATE_RUNNING ||
        state == hoist::v1::ROLLOUT_STATE_GRACE) {
      rows.push_back(&row);
    }
  }
  // Oldest first.
  std::sort(rows.begin(), rows.end(), [](const RolloutRow* a, const RolloutRow* b) {
    if (a->rollout.created_at != b->rollout.created_at) return a->rollout.created_at < b->rollout.created_at;
    return a->created < b->created;
  });
  std::vector<std::string> out;
  for (const RolloutRow* row : rows) out.push_back(row->rollout.id);
  return out;
}

absl::StatusOr<StoredStep*> InMemoryRolloutStore::FindStep(const std::string& rollout_id, int seq) {
  auto it = rollouts_.find(rollout_id);
  if (it != rollouts_.end()) {
    for (StoredStep& s : it->second.steps) {
      if (s.seq == seq) return &s;
    }
  }
  // An UPDATE of no row is no error in Postgres; here it is, so that a test
  // that writes a step that does not exist hears of it.
  return absl::NotFoundError(absl::StrCat("rollout ", rollout_id, " has no step ", seq));
}

absl::Status InMemoryRolloutStore::MarkStepRunning(uint64_t epoch, const std::string& rollout_id, int seq) {
  return MarkStepsRunning(epoch, rollout_id, {seq}, {});
}

absl::Status InMemoryRolloutStore::MarkStepsRunning(uint64_t epoch, const std::string& rollout_id,
                                                    const std::vector<int>& seqs,
                                                    const std::vector<hoist::v1::RolloutEvent>& events) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  std::vector<StoredStep*> steps;
  for (int seq : seqs) {
    absl::StatusOr<StoredStep*> step = FindStep(rollout_id, seq);
    if (!step.ok()) return step.status();
    steps.push_back(*step);
  }
  // All or nothing, like the one transaction it is in Postgres.
  const absl::Time now = clock_->Now();
  for (StoredStep* step : steps) {
    step->state = hoist::v1::STEP_STATE_RUNNING;
    ++step->attempts;
    if (step->started_at == absl::InfinitePast()) step->started_at = now;  // the first start
  }
  for (const hoist::v1::RolloutEvent& e : events) Append(e);
  return absl::OkStatus();
}

void InMemoryRolloutStore::Finish(StoredStep* step, hoist::v1::StepState state, const std::string& error,
                                  const std::optional<hoist::v1::StepResult>& result) {
  step->state = state;
  step->error = error;
  step->result = result;
  step->finished_at = clock_->Now();
}

absl::Status InMemoryRolloutStore::FinishStep(uint64_t epoch, const std::string& rollout_id, int seq,
                                              hoist::v1::StepState state, const std::string& error,
                                              const std::optional<hoist::v1::StepResult>& result) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  absl::StatusOr<StoredStep*> step = FindStep(rollout_id, seq);
  if (!step.ok()) return step.status();
  Finish(*step, state, error, result);
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::FinishStepWithEvent(uint64_t epoch, const std::string& rollout_id, int seq,
                                                       hoist::v1::StepState state, const std::string& error,
                                                       const std::optional<hoist::v1::StepResult>& result,
                                                       const hoist::v1::RolloutEvent& event) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  absl::StatusOr<StoredStep*> step = FindStep(rollout_id, seq);
  if (!step.ok()) return step.status();
  Finish(*step, state, error, result);
  Append(event);
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::SetRolloutState(uint64_t epoch, const std::string& id,
                                                   hoist::v1::RolloutState state, const std::string& error) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  auto it = rollouts_.find(id);
  if (it == rollouts_.end()) return absl::OkStatus();  // an UPDATE of no row
  StoredRollout& r = it->second.rollout;
  const absl::Time now = clock_->Now();
  r.state = state;
  if (!error.empty()) r.error = error;
  if (state == hoist::v1::ROLLOUT_STATE_RUNNING && r.started_at == absl::InfinitePast()) r.started_at = now;
  if (IsTerminal(state)) {
    r.finished_at = now;
    // The lock lives exactly as long as its rollout is unfinished.
    auto held = locks_.find(r.deployment);
    if (held != locks_.end() && held->second.rollout_id() == id) locks_.erase(held);
    for (StoredStep& s : it->second.steps) {
      if (s.state == hoist::v1::STEP_STATE_PENDING) s.state = hoist::v1::STEP_STATE_SKIPPED;
    }
  }
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::RequestCancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = rollouts_.find(id);
  if (it == rollouts_.end()) return absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
  it->second.rollout.cancel_requested = true;
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::RequestFinish(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = rollouts_.find(id);
  if (it == rollouts_.end()) return absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
  it->second.rollout.finish_requested = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<hoist::v1::Lock>> InMemoryRolloutStore::ListLocks() {
  absl::MutexLock lock(&mu_);
  std::vector<hoist::v1::Lock> out;
  for (const auto& [deployment, l] : locks_) out.push_back(l);  // ordered by deployment
  return out;
}

void InMemoryRolloutStore::Append(const hoist::v1::RolloutEvent& event) {
  events_[event.rollout_id()].push_back(EventRow{event, clock_->Now()});
}

absl::Status InMemoryRolloutStore::AppendEvent(uint64_t epoch, const hoist::v1::RolloutEvent& event) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  Append(event);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<hoist::v1::RolloutEvent>> InMemoryRolloutStore::EventsAfter(const std::string& rollout_id,
                                                                                       uint64_t after_sequence) {
  absl::MutexLock lock(&mu_);
  std::vector<hoist::v1::RolloutEvent> out;
  auto it = events_.find(rollout_id);
  if (it == events_.end()) return out;
  // An event's sequence is its rank within its rollout, from 1.
  for (uint64_t i = after_sequence; i < it->second.size(); ++i) {
    hoist::v1::RolloutEvent e = it->second[i].event;
    e.set_sequence(i + 1);
    SetTimestamp(it->second[i].at, e.mutable_at());
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status InMemoryRolloutStore::RecordBackup(uint64_t epoch, const hoist::v1::BackupRecord& backup) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  if (!deployments_.contains(backup.deployment())) {
    return DatabaseError(absl::StrCat("backup of unknown deployment ", backup.deployment(),
                                      " violates foreign key constraint"));
  }
  for (const BackupRow& b : backups_) {
    if (b.record.id() == backup.id()) return absl::OkStatus();  // ON CONFLICT (id) DO NOTHING
  }
  backups_.push_back(BackupRow{backup, clock_->Now()});
  return absl::OkStatus();
}

absl::Status InMemoryRolloutStore::ForgetBackups(uint64_t epoch, const std::string& agent_id,
                                                 const std::vector<std::string>& ids) {
  if (ids.empty()) return absl::OkStatus();  // no write at all, so no fence either
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  std::erase_if(backups_, [&](const BackupRow& b) {
    return b.record.agent_id() == agent_id && std::find(ids.begin(), ids.end(), b.record.id()) != ids.end();
  });
  return absl::OkStatus();
}

absl::StatusOr<std::vector<hoist::v1::BackupRecord>> InMemoryRolloutStore::ListBackups(const std::string& deployment) {
  absl::MutexLock lock(&mu_);
  std::vector<hoist::v1::BackupRecord> out;
  for (auto it = backups_.rbegin(); it != backups_.rend(); ++it) {  // newest first
    if (it->record.deployment() != deployment) continue;
    hoist::v1::BackupRecord b = it->record;
    SetTimestamp(it->created_at, b.mutable_created_at());
    out.push_back(std::move(b));
  }
  return out;
}

absl::StatusOr<hoist::v1::BackupRecord> InMemoryRolloutStore::GetBackup(const std::string& id) {
  absl::MutexLock lock(&mu_);
  for (const BackupRow& row : backups_) {
    if (row.record.id() != id) continue;
    hoist::v1::BackupRecord b = row.record;
    SetTimestamp(row.created_at, b.mutable_created_at());
    return b;
  }
  return absl::NotFoundError(absl::StrCat("no backup with id \"", id, "\"; see hoist backups"));
}

absl::Status InMemoryRolloutStore::Audit(const rollout::AuditEntry& e) {
  absl::MutexLock lock(&mu_);
  if (e.outcome != "ok" && e.outcome != "failed" && e.outcome != "refused") {
    return DatabaseError(absl::StrCat("audit outcome \"", e.outcome, "\" violates check constraint"));
  }
  hoist::v1::AuditEvent a;
  a.set_id(audit_.size() + 1);
  SetTimestamp(clock_->Now(), a.mutable_at());
  a.set_actor(e.actor);
  a.set_action(e.action);
  a.set_deployment(e.deployment);
  a.set_rollout_id(e.rollout_id);
  a.set_outcome(e.outcome);
  a.set_detail(e.detail);
  audit_.push_back(std::move(a));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<hoist::v1::AuditEvent>> InMemoryRolloutStore::ListAudit(const std::string& deployment,
                                                                                   int limit, uint64_t before_id) {
  absl::MutexLock lock(&mu_);
  std::vector<hoist::v1::AuditEvent> out;
  for (auto it = audit_.rbegin(); it != audit_.rend() && static_cast<int>(out.size()) < limit; ++it) {
    if (!deployment.empty() && it->deployment() != deployment) continue;
    if (before_id != 0 && it->id() >= before_id) continue;
    out.push_back(*it);
  }
  return out;
}

}  // namespace hoist::testing

// PgRolloutStore's backups (recorded by the step that took them, forgotten
// when their agent prunes them) and the audit log of operator actions.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/store/pg_rollout_store.h"
#include "controller/store/pg_rollout_store_internal.h"
#include "shared/proto_time.h"

namespace hoist {

using pg_rollout_internal::Bytes;
using pg_rollout_internal::FromMicros;
using pg_rollout_internal::Micros;
using pg_rollout_internal::Parse;

absl::Status PgRolloutStore::RecordBackup(uint64_t epoch, const hoist::v1::BackupRecord& backup) {
  uint64_t size = 0;
  for (const auto& a : backup.artifacts()) size += a.size_bytes();
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    tx.exec_params0(
        "INSERT INTO backups (id, deployment, rollout_id, agent_id, version, artifacts, size_bytes)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        backup.id(), backup.deployment(), backup.rollout_id(), backup.agent_id(), backup.version(),
        pqxx::binarystring(Bytes(backup)), static_cast<int64_t>(size));
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::ForgetBackups(uint64_t epoch, const std::string& agent_id,
                                           const std::vector<std::string>& ids) {
  if (ids.empty()) return absl::OkStatus();
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    for (const std::string& id : ids) {
      tx.exec_params0("DELETE FROM backups WHERE id = $1 AND agent_id = $2", id, agent_id);
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<hoist::v1::BackupRecord>> PgRolloutStore::ListBackups(const std::string& deployment) {
  std::vector<hoist::v1::BackupRecord> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(absl::StrCat("SELECT artifacts, ", Micros("created_at"),
                                                 " FROM backups WHERE deployment = $1 ORDER BY created_at DESC"),
                                    deployment);
    for (const auto& row : r) {
      auto b = Parse<hoist::v1::BackupRecord>(row[0], "backup");
      if (!b.ok()) return b.status();
      SetTimestamp(FromMicros(row[1].as<int64_t>()), b->mutable_created_at());
      out.push_back(*std::move(b));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<hoist::v1::BackupRecord> PgRolloutStore::GetBackup(const std::string& id) {
  absl::StatusOr<hoist::v1::BackupRecord> out =
      absl::NotFoundError(absl::StrCat("no backup with id \"", id, "\"; see hoist backups"));
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(absl::StrCat("SELECT artifacts, ", Micros("created_at"), " FROM backups WHERE id = $1"), id);
    if (!r.empty()) {
      out = Parse<hoist::v1::BackupRecord>(r[0][0], "backup");
      if (out.ok()) SetTimestamp(FromMicros(r[0][1].as<int64_t>()), out->mutable_created_at());
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgRolloutStore::Audit(const rollout::AuditEntry& e) {
  return pool_->Transact([&](pqxx::work& tx) {
    tx.exec_params0(
        "INSERT INTO audit_log (actor, action, deployment, rollout_id, outcome, detail)"
        " VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5, $6)",
        e.actor, e.action, e.deployment, e.rollout_id, e.outcome, e.detail);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<hoist::v1::AuditEvent>> PgRolloutStore::ListAudit(const std::string& deployment, int limit,
                                                                             uint64_t before_id) {
  std::vector<hoist::v1::AuditEvent> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT id, ", Micros("at"), ", actor, action, COALESCE(deployment, ''), COALESCE(rollout_id, ''),"
                     " outcome, detail FROM audit_log WHERE ($1 = '' OR deployment = $1) AND ($2 = 0 OR id < $2)"
                     " ORDER BY id DESC LIMIT $3"),
        deployment, static_cast<int64_t>(before_id), limit);
    for (const auto& row : r) {
      hoist::v1::AuditEvent e;
      e.set_id(row[0].as<uint64_t>());
      SetTimestamp(FromMicros(row[1].as<int64_t>()), e.mutable_at());
      e.set_actor(row[2].as<std::string>());
      e.set_action(row[3].as<std::string>());
      e.set_deployment(row[4].as<std::string>());
      e.set_rollout_id(row[5].as<std::string>());
      e.set_outcome(row[6].as<std::string>());
      e.set_detail(row[7].as<std::string>());
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace hoist

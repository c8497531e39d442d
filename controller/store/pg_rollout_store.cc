// PgRolloutStore's deployments and releases (with the pinned release, the
// live slot and the digests a release records at its first pull), and the
// sealing of stored secrets (rollouts and steps: pg_rollout_store_rollouts.cc;
// backups and the audit log: pg_rollout_store_backups.cc).

#include "controller/store/pg_rollout_store.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "controller/rollout/secrets.h"
#include "controller/rollout/step_kind.h"
#include "controller/store/pg_rollout_store_internal.h"
#include "google/protobuf/util/message_differencer.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist {

using rollout::StoredDeployment;
using pg_rollout_internal::Bytes;
using pg_rollout_internal::FromMicros;
using pg_rollout_internal::Micros;
using pg_rollout_internal::Parse;

PgRolloutStore::PgRolloutStore(PgPool* pool, const SecretBox* secrets)
    : pool_(pool), secrets_(secrets), finishes_([this](const auto& batch) { WriteFinishes(batch); }, [](const FinishArgs& f) { return f.epoch; }) {}

absl::StatusOr<std::string> PgRolloutStore::Open(const std::string& stored, absl::string_view what) const {
  if (!SecretBox::IsSealed(stored)) return stored;
  if (secrets_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the stored ", what, " is sealed and this hoistd has no key: start it with --secrets-key-file"));
  }
  auto opened = secrets_->Open(stored);
  if (!opened.ok()) return absl::Status(opened.status().code(), absl::StrCat(what, ": ", opened.status().message()));
  return opened;
}

absl::StatusOr<std::string> PgRolloutStore::ActionBytes(const hoist::v1::Step& action) const {
  if (secrets_ == nullptr) return Bytes(action);
  hoist::v1::Step sealed = action;
  absl::Status s = rollout::TransformStepEnv(
      &sealed, [this](const std::string& value) { return secrets_->Reseal(value); });
  if (!s.ok()) return s;
  return Bytes(sealed);
}

absl::Status PgRolloutStore::PutDeployment(uint64_t epoch, const StoredDeployment& d) {
  const std::string stored = secrets_ != nullptr ? secrets_->Seal(d.manifest_yaml) : d.manifest_yaml;
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    tx.exec_params0(
        "INSERT INTO deployments (name, manifest_yaml, manifest_sha256, file_name) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET manifest_yaml = EXCLUDED.manifest_yaml,"
        " manifest_sha256 = EXCLUDED.manifest_sha256, file_name = EXCLUDED.file_name, updated_at = now()",
        d.name, stored, d.manifest_sha256, d.file_name);
    return absl::OkStatus();
  });
}

absl::StatusOr<int> PgRolloutStore::SealStoredSecrets() {
  if (secrets_ == nullptr) return 0;
  // No row locks: each row is replaced only if it still holds what was read
  // (two replicas starting at once seal it once), and the leader's writes to
  // the steps never wait for a replica that starts.
  const std::string current = absl::StrCat(kSealedPrefix, secrets_->current_key_id(), ":");
  int rewritten = 0;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    rewritten = 0;
    for (const auto& row : tx.exec("SELECT name, manifest_yaml FROM deployments")) {
      const std::string stored = row[1].as<std::string>();
      if (secrets_->IsCurrent(stored)) continue;
      auto sealed = secrets_->Reseal(stored);
      if (!sealed.ok()) {
        return absl::Status(sealed.status().code(), absl::StrCat("stack manifest: ", sealed.status().message()));
      }
      pqxx::result done = tx.exec_params(
          "UPDATE deployments SET manifest_yaml = $2 WHERE name = $1 AND manifest_yaml = $3",
          row[0].as<std::string>(), *sealed, stored);
      rewritten += static_cast<int>(done.affected_rows());
    }
    // A step whose env is sealed under the current key holds its prefix:
    // only the others are read (those in clear, under an older key, or
    // without env at all) of the kinds whose actions carry env.
    const std::string start(rollout::StepKindName(rollout::StepKind::kStartInstance));
    const std::string job(rollout::StepKindName(rollout::StepKind::kRunJob));
    for (const auto& row : tx.exec_params("SELECT rollout_id, seq, action FROM rollout_steps WHERE action IS NOT NULL"
                                          " AND kind IN ($2, $3) AND position(convert_to($1, 'UTF8') IN action) = 0",
                                          current, start, job)) {
      auto action = Parse<hoist::v1::Step>(row[2], "step action");
      if (!action.ok()) return action.status();
      bool stale = false;
      (void)rollout::TransformStepEnv(&*action, [&](const std::string& v) -> absl::StatusOr<std::string> {
        stale = stale || !secrets_->IsCurrent(v);
        return v;
      });
      if (!stale) continue;
      auto bytes = ActionBytes(*action);
      if (!bytes.ok()) return bytes.status();
      pqxx::result done = tx.exec_params(
          "UPDATE rollout_steps SET action = $3 WHERE rollout_id = $1 AND seq = $2 AND action = $4",
          row[0].as<std::string>(), row[1].as<int>(), pqxx::binarystring(*bytes), pqxx::binarystring(row[2]));
      rewritten += static_cast<int>(done.affected_rows());
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return rewritten;
}

absl::StatusOr<StoredDeployment> PgRolloutStore::GetDeployment(const std::string& name) {
  StoredDeployment d;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT name, manifest_yaml, manifest_sha256, file_name, COALESCE(pinned_version, ''), ",
                     Micros("updated_at"), ", live_slot FROM deployments WHERE name = $1"),
        name);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("no deployment named \"", name, "\"; apply its stack first"));
    auto manifest = Open(r[0][1].as<std::string>(), "stack manifest");
    if (!manifest.ok()) return manifest.status();
    d = {r[0][0].as<std::string>(), *std::move(manifest), r[0][2].as<std::string>(),
         r[0][3].as<std::string>(), r[0][4].as<std::string>(), FromMicros(r[0][5].as<int64_t>()),
         ParseSlot(r[0][6].as<std::string>())};
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return d;
}

absl::StatusOr<std::vector<StoredDeployment>> PgRolloutStore::ListDeployments() {
  std::vector<StoredDeployment> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec(absl::StrCat("SELECT name, manifest_yaml, manifest_sha256, file_name,"
                                          " COALESCE(pinned_version, ''), ", Micros("updated_at"),
                                          ", live_slot FROM deployments ORDER BY name"));
    for (const auto& row : r) {
      auto manifest = Open(row[1].as<std::string>(), "stack manifest");
      if (!manifest.ok()) return manifest.status();
      out.push_back({row[0].as<std::string>(), *std::move(manifest), row[2].as<std::string>(),
                     row[3].as<std::string>(), row[4].as<std::string>(), FromMicros(row[5].as<int64_t>()),
                     ParseSlot(row[6].as<std::string>())});
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgRolloutStore::PutRelease(uint64_t epoch, const hoist::v1::Release& release) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result existing = tx.exec_params(
        "SELECT release FROM releases WHERE deployment = $1 AND version = $2", release.deployment(), release.version());
    hoist::v1::Release stored = release;
    stored.clear_created_at();
    if (!existing.empty()) {
      auto old = Parse<hoist::v1::Release>(existing[0][0], "release");
      if (!old.ok()) return old.status();
      old->clear_created_at();
      old->clear_digests();
      stored.clear_digests();
      // Compared field by field: the images map serializes in no fixed
      // order, so equal releases can have different bytes.
      if (!google::protobuf::util::MessageDifferencer::Equals(*old, stored)) {
        return absl::AlreadyExistsError(absl::StrCat("release ", release.version(), " of ", release.deployment(),
                                                     " exists with other content; a version is immutable:"
                                                     " publish a new version instead"));
      }
      return absl::OkStatus();
    }
    tx.exec_params0("INSERT INTO releases (deployment, version, release) VALUES ($1, $2, $3)", release.deployment(),
                    release.version(), pqxx::binarystring(Bytes(stored)));
    return absl::OkStatus();
  });
}

absl::StatusOr<hoist::v1::Release> PgRolloutStore::GetRelease(const std::string& deployment,
                                                              const std::string& version) {
  hoist::v1::Release out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT release, ", Micros("created_at"), " FROM releases WHERE deployment = $1 AND version = $2"),
        deployment, version);
    if (r.empty()) {
      return absl::NotFoundError(absl::StrCat("deployment ", deployment, " has no release ", version,
                                              "; see hoist releases, or hoist release create FILE"));
    }
    auto rel = Parse<hoist::v1::Release>(r[0][0], "release");
    if (!rel.ok()) return rel.status();
    out = *std::move(rel);
    SetTimestamp(FromMicros(r[0][1].as<int64_t>()), out.mutable_created_at());
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<hoist::v1::Release>> PgRolloutStore::ListReleases(const std::string& deployment) {
  std::vector<hoist::v1::Release> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT release, ", Micros("created_at"), " FROM releases WHERE deployment = $1"), deployment);
    for (const auto& row : r) {
      auto rel = Parse<hoist::v1::Release>(row[0], "release");
      if (!rel.ok()) return rel.status();
      SetTimestamp(FromMicros(row[1].as<int64_t>()), rel->mutable_created_at());
      out.push_back(*std::move(rel));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgRolloutStore::Pin(uint64_t epoch, const std::string& deployment, const std::string& version) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    tx.exec_params0("UPDATE deployments SET pinned_version = $2, updated_at = now() WHERE name = $1", deployment,
                    version);
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::SetLiveSlot(uint64_t epoch, const std::string& deployment, hoist::v1::Slot slot) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    tx.exec_params0("UPDATE deployments SET live_slot = $2, updated_at = now() WHERE name = $1", deployment,
                    SlotName(slot == hoist::v1::SLOT_GREEN ? slot : hoist::v1::SLOT_BLUE));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::map<std::string, std::string>> PgRolloutStore::RecordDigests(
    uint64_t epoch, const std::string& deployment, const std::string& version,
    const std::map<std::string, std::string>& digests) {
  std::map<std::string, std::string> recorded;
  absl::Status s = pool_->FencedWrite(epoch, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(
        "SELECT release FROM releases WHERE deployment = $1 AND version = $2 FOR UPDATE", deployment, version);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("no release ", version, " of ", deployment));
    auto release = Parse<hoist::v1::Release>(r[0][0], "release");
    if (!release.ok()) return release.status();
    bool changed = false;
    auto& known = *release->mutable_digests();
    for (const auto& [service, digest] : digests) {
      if (!known.contains(service)) {
        known[service] = digest;
        changed = true;
      }
      recorded[service] = known.at(service);
    }
    if (changed) {
      tx.exec_params0("UPDATE releases SET release = $3 WHERE deployment = $1 AND version = $2", deployment, version,
                      pqxx::binarystring(Bytes(*release)));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return recorded;
}

}  // namespace hoist

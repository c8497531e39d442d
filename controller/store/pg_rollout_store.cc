#include "controller/store/pg_rollout_store.h"

#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "nlohmann/json.hpp"
#include "controller/rollout/secrets.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist {
namespace {

using rollout::StoredDeployment;
using rollout::StoredRollout;
using rollout::StoredStep;

// Timestamps travel as microseconds since the epoch (NULL as 0).
constexpr const char* kMicros = "COALESCE((extract(epoch FROM {}) * 1000000)::bigint, 0)";

std::string Micros(absl::string_view column) {
  std::string s(kMicros);
  return s.replace(s.find("{}"), 2, std::string(column));
}

absl::Time FromMicros(int64_t micros) { return micros == 0 ? absl::InfinitePast() : absl::FromUnixMicros(micros); }

std::string Bytes(const google::protobuf::Message& m) { return m.SerializeAsString(); }

template <typename M>
absl::StatusOr<M> Parse(const pqxx::field& f, absl::string_view what) {
  M m;
  pqxx::binarystring b(f);
  if (!m.ParseFromArray(b.data(), static_cast<int>(b.size()))) {
    return absl::DataLossError(absl::StrCat("stored ", what, " does not parse"));
  }
  return m;
}

std::string RolloutColumns() {
  return absl::StrCat("id, deployment, kind, from_version, to_version, strategy, on_failure, state, plan, error,"
                      " requested_by, cancel_requested, backup_id, rollback_command, ",
                      Micros("created_at"), ", ", Micros("started_at"), ", ", Micros("finished_at"),
                      ", finish_requested");
}

absl::StatusOr<StoredRollout> RolloutFromRow(const pqxx::row& row) {
  StoredRollout r;
  r.id = row[0].as<std::string>();
  r.deployment = row[1].as<std::string>();
  r.kind = row[2].as<std::string>();
  r.from_version = row[3].as<std::string>();
  r.to_version = row[4].as<std::string>();
  r.strategy = row[5].as<std::string>() == "blue-green" ? hoist::v1::STRATEGY_BLUE_GREEN : hoist::v1::STRATEGY_ROLLING;
  r.on_failure = row[6].as<std::string>() == "rollback" ? hoist::v1::ON_FAILURE_ROLLBACK : hoist::v1::ON_FAILURE_STOP;
  r.state = ParseRolloutState(row[7].as<std::string>());
  auto plan = Parse<hoist::v1::Plan>(row[8], "plan");
  if (!plan.ok()) return plan.status();
  r.plan = *std::move(plan);
  r.error = row[9].as<std::string>();
  r.requested_by = row[10].as<std::string>();
  r.cancel_requested = row[11].as<bool>();
  r.backup_id = row[12].as<std::string>();
  r.rollback_command = row[13].as<std::string>();
  r.created_at = FromMicros(row[14].as<int64_t>());
  r.started_at = FromMicros(row[15].as<int64_t>());
  r.finished_at = FromMicros(row[16].as<int64_t>());
  r.finish_requested = row[17].as<bool>();
  return r;
}

}  // namespace

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
    // without env at all).
    for (const auto& row : tx.exec_params("SELECT rollout_id, seq, action FROM rollout_steps WHERE action IS NOT NULL"
                                          " AND kind IN ('start_instance', 'run_job')"
                                          " AND position(convert_to($1, 'UTF8') IN action) = 0",
                                          current)) {
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

absl::Status PgRolloutStore::CreateRollout(uint64_t epoch, const StoredRollout& r, const std::vector<StoredStep>& steps) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result held = tx.exec_params(
        absl::StrCat("SELECT rollout_id, owner, ", Micros("acquired_at"), " FROM deploy_locks WHERE deployment = $1"),
        r.deployment);
    if (!held.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "deployment ", r.deployment, " is locked by rollout ", held[0][0].as<std::string>(), " (started by ",
          held[0][1].as<std::string>(), " at ", absl::FormatTime(FromMicros(held[0][2].as<int64_t>())),
          "); wait for it, watch it with hoist watch ", held[0][0].as<std::string>(), ", or cancel it"));
    }
    tx.exec_params0(
        "INSERT INTO rollouts (id, deployment, kind, from_version, to_version, strategy, on_failure, state, plan,"
        " requested_by, backup_id, rollback_command) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        r.id, r.deployment, r.kind, r.from_version, r.to_version, StrategyName(r.strategy), OnFailureName(r.on_failure),
        RolloutStateName(r.state), pqxx::binarystring(Bytes(r.plan)), r.requested_by, r.backup_id,
        r.rollback_command);
    tx.exec_params0("INSERT INTO deploy_locks (deployment, rollout_id, owner) VALUES ($1, $2, $3)", r.deployment, r.id,
                    r.requested_by);
    for (const StoredStep& s : steps) {
      std::string action;
      if (s.action) {
        auto bytes = ActionBytes(*s.action);
        if (!bytes.ok()) return bytes.status();
        action = *std::move(bytes);
      }
      // $10 is NULL for controller-side steps: an empty string with $12 false.
      tx.exec_params0(
          "INSERT INTO rollout_steps (rollout_id, seq, phase, phase_name, batch, step_id, kind, agent_id, description,"
          " action, timeout_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $12 THEN $10::bytea END, $11)",
          r.id, s.seq, s.phase, s.phase_name, s.batch, s.step_id, s.kind, s.agent_id, s.description,
          pqxx::binarystring(action), absl::ToInt64Milliseconds(s.timeout),
          s.action.has_value());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<StoredRollout> PgRolloutStore::GetRollout(const std::string& id) {
  absl::StatusOr<StoredRollout> out = absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(absl::StrCat("SELECT ", RolloutColumns(), " FROM rollouts WHERE id = $1"), id);
    if (!r.empty()) out = RolloutFromRow(r[0]);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

PgRolloutStore::PgRolloutStore(PgPool* pool, const SecretBox* secrets)
    : pool_(pool), secrets_(secrets), finishes_([this](const auto& batch) { WriteFinishes(batch); }, [](const FinishArgs& f) { return f.epoch; }) {}

absl::StatusOr<rollout::RolloutStatus> PgRolloutStore::GetRolloutStatus(const std::string& id) {
  absl::StatusOr<rollout::RolloutStatus> out = absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r =
        tx.exec_params("SELECT state, cancel_requested, finish_requested FROM rollouts WHERE id = $1", id);
    if (r.empty()) return absl::OkStatus();
    out = rollout::RolloutStatus{ParseRolloutState(r[0][0].as<std::string>()), r[0][1].as<bool>(),
                                 r[0][2].as<bool>()};
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<StoredStep>> PgRolloutStore::GetSteps(const std::string& rollout_id) {
  std::vector<StoredStep> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT seq, phase, phase_name, batch, step_id, kind, agent_id, description, action, timeout_ms,"
                     " state, attempts, result, error, ",
                     Micros("started_at"), ", ", Micros("finished_at"),
                     " FROM rollout_steps WHERE rollout_id = $1 ORDER BY seq"),
        rollout_id);
    for (const auto& row : r) {
      StoredStep st;
      st.seq = row[0].as<int>();
      st.phase = row[1].as<int>();
      st.phase_name = row[2].as<std::string>();
      st.batch = row[3].as<int>();
      st.step_id = row[4].as<std::string>();
      st.kind = row[5].as<std::string>();
      st.agent_id = row[6].as<std::string>();
      st.description = row[7].as<std::string>();
      if (!row[8].is_null()) {
        auto a = Parse<hoist::v1::Step>(row[8], "step action");
        if (!a.ok()) return a.status();
        absl::Status opened =
            rollout::TransformStepEnv(&*a, [this](const std::string& v) { return Open(v, "env value"); });
        if (!opened.ok()) return absl::Status(opened.code(), absl::StrCat("step ", st.step_id, ": ", opened.message()));
        st.action = *std::move(a);
      }
      st.timeout = absl::Milliseconds(row[9].as<int64_t>());
      st.state = ParseStepState(row[10].as<std::string>());
      st.attempts = row[11].as<int>();
      if (!row[12].is_null()) {
        auto res = Parse<hoist::v1::StepResult>(row[12], "step result");
        if (!res.ok()) return res.status();
        st.result = *std::move(res);
      }
      st.error = row[13].as<std::string>();
      st.started_at = FromMicros(row[14].as<int64_t>());
      st.finished_at = FromMicros(row[15].as<int64_t>());
      out.push_back(std::move(st));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<StoredRollout>> PgRolloutStore::ListRollouts(const std::string& deployment, int limit) {
  std::vector<StoredRollout> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(absl::StrCat("SELECT ", RolloutColumns(),
                                                 " FROM rollouts WHERE deployment = $1 ORDER BY created_at DESC"
                                                 " LIMIT $2"),
                                    deployment, limit);
    for (const auto& row : r) {
      auto ro = RolloutFromRow(row);
      if (!ro.ok()) return ro.status();
      out.push_back(*std::move(ro));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<std::string>> PgRolloutStore::UnfinishedRollouts() {
  std::vector<std::string> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    for (const auto& row : tx.exec("SELECT id FROM rollouts WHERE state IN ('pending', 'running', 'grace') ORDER BY created_at")) {
      out.push_back(row[0].as<std::string>());
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

namespace {

void MarkRunning(pqxx::work& tx, const std::string& rollout_id, int seq) {
  tx.exec_params0(
      "UPDATE rollout_steps SET state = 'running', attempts = attempts + 1,"
      " started_at = COALESCE(started_at, now()) WHERE rollout_id = $1 AND seq = $2",
      rollout_id, seq);
}

void Finish(pqxx::work& tx, const std::string& rollout_id, int seq, hoist::v1::StepState state,
            const std::string& error, const std::optional<hoist::v1::StepResult>& result) {
  tx.exec_params0(
      "UPDATE rollout_steps SET state = $3, error = $4, result = CASE WHEN $6 THEN $5::bytea END, finished_at = now()"
      " WHERE rollout_id = $1 AND seq = $2",
      rollout_id, seq, StepStateName(state), error, pqxx::binarystring(result ? Bytes(*result) : std::string()),
      result.has_value());
}

void Append(pqxx::work& tx, const hoist::v1::RolloutEvent& event) {
  tx.exec_params0("INSERT INTO rollout_events (rollout_id, kind, step_id, message, detail) VALUES ($1, $2, $3, $4, $5)",
                  event.rollout_id(), event.kind(), event.step_id(), event.message(), pqxx::binarystring(Bytes(event)));
}

}  // namespace

absl::Status PgRolloutStore::MarkStepRunning(uint64_t epoch, const std::string& rollout_id, int seq) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    MarkRunning(tx, rollout_id, seq);
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::MarkStepsRunning(uint64_t epoch, const std::string& rollout_id,
                                              const std::vector<int>& seqs,
                                              const std::vector<hoist::v1::RolloutEvent>& events) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    // One statement for the batch, however many hosts it spans.
    tx.exec_params0(
        "UPDATE rollout_steps SET state = 'running', attempts = attempts + 1,"
        " started_at = COALESCE(started_at, now()) WHERE rollout_id = $1 AND seq = ANY($2::int[])",
        rollout_id, absl::StrCat("{", absl::StrJoin(seqs, ","), "}"));
    for (const hoist::v1::RolloutEvent& e : events) Append(tx, e);
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::FinishStep(uint64_t epoch, const std::string& rollout_id, int seq,
                                        hoist::v1::StepState state, const std::string& error,
                                        const std::optional<hoist::v1::StepResult>& result) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    Finish(tx, rollout_id, seq, state, error, result);
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::FinishStepWithEvent(uint64_t epoch, const std::string& rollout_id, int seq,
                                                 hoist::v1::StepState state, const std::string& error,
                                                 const std::optional<hoist::v1::StepResult>& result,
                                                 const hoist::v1::RolloutEvent& event) {
  return finishes_.Commit(FinishArgs{epoch, &rollout_id, seq, state, &error, &result, &event});
}

void PgRolloutStore::WriteFinishes(const std::vector<GroupCommit<FinishArgs>::Entry*>& batch) {
  auto one = [this](GroupCommit<FinishArgs>::Entry* e) {
    const FinishArgs& p = *e->value;
    e->status = pool_->FencedWrite(p.epoch, [&](pqxx::work& tx) {
      Finish(tx, *p.rollout_id, p.seq, p.state, *p.error, *p.result);
      Append(tx, *p.event);
      return absl::OkStatus();
    });
  };
  if (batch.size() == 1) return one(batch[0]);
  nlohmann::json steps = nlohmann::json::array();
  nlohmann::json events = nlohmann::json::array();
  for (const auto* e : batch) {
    const FinishArgs* p = e->value;
    steps.push_back({{"rollout_id", *p->rollout_id},
                     {"seq", p->seq},
                     {"state", StepStateName(p->state)},
                     {"error", *p->error},
                     {"has_result", p->result->has_value()},
                     {"result", p->result->has_value() ? absl::Base64Escape(Bytes(**p->result)) : std::string()}});
    events.push_back({{"rollout_id", p->event->rollout_id()},
                      {"kind", p->event->kind()},
                      {"step_id", p->event->step_id()},
                      {"message", p->event->message()},
                      {"detail", absl::Base64Escape(Bytes(*p->event))}});
  }
  const auto text = [](const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  absl::Status s = pool_->FencedWrite(batch[0]->value->epoch, [&](pqxx::work& tx) {
    tx.exec_params0(
        "UPDATE rollout_steps s SET state = v.state, error = v.error,"
        " result = CASE WHEN v.has_result THEN decode(v.result, 'base64') END, finished_at = now()"
        " FROM jsonb_to_recordset($1::jsonb) AS v(rollout_id text, seq int, state text, error text,"
        " has_result boolean, result text) WHERE s.rollout_id = v.rollout_id AND s.seq = v.seq",
        text(steps));
    // In the callers' order: an event's id is its place in the rollout's story.
    tx.exec_params0(
        "INSERT INTO rollout_events (rollout_id, kind, step_id, message, detail)"
        " SELECT e.j->>'rollout_id', e.j->>'kind', e.j->>'step_id', e.j->>'message', decode(e.j->>'detail', 'base64')"
        " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(j, n) ORDER BY e.n",
        text(events));
    return absl::OkStatus();
  });
  if (s.ok()) {
    for (auto* e : batch) e->status = absl::OkStatus();
    return;
  }
  // A lost fence is every caller's answer, and so is a commit that may have
  // happened (written again row by row, the events would be there twice);
  // anything else may be one row's.
  if (s.code() == absl::StatusCode::kFailedPrecondition || s.code() == absl::StatusCode::kUnavailable) {
    for (auto* e : batch) e->status = s;
    return;
  }
  for (auto* e : batch) one(e);
}

absl::Status PgRolloutStore::SetRolloutState(uint64_t epoch, const std::string& id, hoist::v1::RolloutState state,
                                             const std::string& error) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    const bool terminal = IsTerminal(state);
    tx.exec_params0(
        "UPDATE rollouts SET state = $2, error = CASE WHEN $3 = '' THEN error ELSE $3 END,"
        " started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,"
        " finished_at = CASE WHEN $4 THEN now() ELSE finished_at END WHERE id = $1",
        id, RolloutStateName(state), error, terminal);
    if (terminal) {
      tx.exec_params0("DELETE FROM deploy_locks WHERE rollout_id = $1", id);
      tx.exec_params0("UPDATE rollout_steps SET state = 'skipped' WHERE rollout_id = $1 AND state = 'pending'", id);
    }
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::RequestCancel(const std::string& id) {
  return pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params("UPDATE rollouts SET cancel_requested = true WHERE id = $1 RETURNING state", id);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
    return absl::OkStatus();
  });
}

absl::Status PgRolloutStore::RequestFinish(const std::string& id) {
  return pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params("UPDATE rollouts SET finish_requested = true WHERE id = $1 RETURNING state", id);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("no rollout with id \"", id, "\""));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<hoist::v1::Lock>> PgRolloutStore::ListLocks() {
  std::vector<hoist::v1::Lock> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    pqxx::result r = tx.exec(absl::StrCat("SELECT deployment, rollout_id, owner, ", Micros("acquired_at"),
                                          " FROM deploy_locks ORDER BY deployment"));
    for (const auto& row : r) {
      hoist::v1::Lock l;
      l.set_deployment(row[0].as<std::string>());
      l.set_rollout_id(row[1].as<std::string>());
      l.set_owner(row[2].as<std::string>());
      SetTimestamp(FromMicros(row[3].as<int64_t>()), l.mutable_acquired_at());
      out.push_back(std::move(l));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgRolloutStore::AppendEvent(uint64_t epoch, const hoist::v1::RolloutEvent& event) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    Append(tx, event);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<hoist::v1::RolloutEvent>> PgRolloutStore::EventsAfter(const std::string& rollout_id,
                                                                                 uint64_t after_sequence) {
  std::vector<hoist::v1::RolloutEvent> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) -> absl::Status {
    // The sequence is the event's rank within its rollout: those after
    // `after_sequence` are the rollout's events in id order past as many.
    // (Skipping along the (rollout_id, id) index costs little; ranking every
    // event of a rollout of a thousand hosts, each poll, did not.)
    pqxx::result r = tx.exec_params(
        absl::StrCat("SELECT detail, ", Micros("at"),
                     " FROM rollout_events WHERE rollout_id = $1 ORDER BY id OFFSET $2"),
        rollout_id, static_cast<int64_t>(after_sequence));
    uint64_t sequence = after_sequence;
    for (const auto& row : r) {
      auto e = Parse<hoist::v1::RolloutEvent>(row[0], "rollout event");
      if (!e.ok()) return e.status();
      e->set_sequence(++sequence);
      SetTimestamp(FromMicros(row[1].as<int64_t>()), e->mutable_at());
      out.push_back(*std::move(e));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

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

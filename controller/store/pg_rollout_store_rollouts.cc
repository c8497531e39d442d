// PgRolloutStore's rollouts with their steps and events, and the deploy lock
// a rollout holds until it ends. Step finishes are group-committed
// (WriteFinishes).

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/secrets.h"
#include "controller/rollout/step_kind.h"
#include "controller/store/pg_rollout_store.h"
#include "controller/store/pg_rollout_store_internal.h"
#include "nlohmann/json.hpp"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist {
namespace {

using rollout::StoredRollout;
using rollout::StoredStep;
using pg_rollout_internal::Bytes;
using pg_rollout_internal::FromMicros;
using pg_rollout_internal::Micros;
using pg_rollout_internal::Parse;

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
          r.id, s.seq, s.phase, s.phase_name, s.batch, s.step_id, std::string(rollout::StepKindName(s.kind)),
          s.agent_id, s.description, pqxx::binarystring(action), absl::ToInt64Milliseconds(s.timeout),
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
      const std::string kind = row[5].as<std::string>();
      const std::optional<rollout::StepKind> parsed = rollout::ParseStepKind(kind);
      if (!parsed.has_value()) {
        // Planned by a newer hoistd: running it as anything else would do the wrong thing.
        return absl::FailedPreconditionError(
            absl::StrCat("step ", st.step_id, " of rollout ", rollout_id, " has kind \"", kind,
                         "\", which this hoistd does not know; run the hoistd version that planned it"));
      }
      st.kind = *parsed;
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

}  // namespace hoist

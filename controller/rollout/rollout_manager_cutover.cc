// RolloutManager's cutover: during a blue-green rollout's grace period, the
// operator switches the proxies back to the old slot, forward to the new one
// again, or asks the executor to retire the old slot now. Each switch repeats
// the rollout's own switch step on every proxy host at once, while no grace
// period can end (Executor::WhileGraceHeld).

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/rollout_manager.h"
#include "controller/rollout/rollout_manager_internal.h"
#include "controller/rollout/step_kind.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist::rollout {
namespace {

using internal::Required;

// The slot a blue-green rollout moves away from.
hoist::v1::Slot OldSlot(const StoredRollout& rollout) {
  return rollout.plan.target_slot() == hoist::v1::SLOT_GREEN ? hoist::v1::SLOT_BLUE : hoist::v1::SLOT_GREEN;
}

}  // namespace

absl::StatusOr<hoist::v1::CutoverResponse> RolloutManager::Cutover(uint64_t epoch,
                                                                   const hoist::v1::CutoverRequest& request,
                                                                   const std::string& actor) {
  const std::string& deployment = request.deployment();
  const hoist::v1::CutoverDirection direction = request.direction();
  const std::string word = direction == hoist::v1::CUTOVER_DIRECTION_BACK      ? "back"
                           : direction == hoist::v1::CUTOVER_DIRECTION_FORWARD ? "forward"
                                                                               : "finish";
  std::string rollout_id;
  auto refuse = [&](absl::Status s) {
    Audit(actor, "cutover", deployment, rollout_id, s, "");
    return s;
  };
  if (absl::Status s = Required("deployment", deployment); !s.ok()) return refuse(s);
  if (direction == hoist::v1::CUTOVER_DIRECTION_UNSPECIFIED) {
    return refuse(absl::InvalidArgumentError("direction: give back, forward or finish"));
  }
  absl::StatusOr<StoredRollout> in_grace = RolloutInGrace(deployment, &rollout_id);
  if (!in_grace.ok()) return refuse(in_grace.status());
  const StoredRollout rollout = *std::move(in_grace);
  const hoist::v1::Slot target = rollout.plan.target_slot();
  hoist::v1::CutoverResponse out;
  const absl::Time start = clock_->Now();
  absl::Status result = executor_->WhileGraceHeld(
      [&]() -> absl::Status { return CutoverInGrace(epoch, request, rollout, word, start, &out); });
  const absl::Duration took = clock_->Now() - start;
  SetDuration(took, out.mutable_took());
  std::string detail =
      direction == hoist::v1::CUTOVER_DIRECTION_FINISH
          ? absl::StrCat("finish: ", SlotName(OldSlot(rollout)), " (", rollout.from_version, ") is retired now")
          : absl::StrCat(word, ": ", SlotName(out.live_slot()), " serves ",
                         out.live_slot() == target ? rollout.to_version : rollout.from_version, " (switch took ",
                         absl::FormatDuration(absl::Trunc(took, absl::Milliseconds(1))), ")");
  Audit(actor, "cutover", deployment, rollout.id, result, detail);
  if (!result.ok()) return result;
  hoist::v1::RolloutEvent e;
  e.set_rollout_id(rollout.id);
  e.set_kind("cutover");
  e.set_message(absl::StrCat("hoist cutover --", detail, " by ", actor));
  e.set_rollout_state(hoist::v1::ROLLOUT_STATE_GRACE);
  store_->AppendEvent(epoch, e).IgnoreError();
  return out;
}

absl::StatusOr<StoredRollout> RolloutManager::RolloutInGrace(const std::string& deployment,
                                                             std::string* rollout_id) {
  auto latest = store_->ListRollouts(deployment, 1);
  if (!latest.ok()) return latest.status();
  if (latest->empty() || latest->front().strategy != hoist::v1::STRATEGY_BLUE_GREEN ||
      latest->front().state != hoist::v1::ROLLOUT_STATE_GRACE) {
    std::string what = latest->empty() ? std::string("it has no rollout yet")
                                       : absl::StrCat("its latest rollout ", latest->front().id, " is a ",
                                                      latest->front().strategy == hoist::v1::STRATEGY_BLUE_GREEN
                                                          ? "blue-green"
                                                          : "rolling",
                                                      " one in state ", RolloutStateName(latest->front().state));
    if (!latest->empty()) *rollout_id = latest->front().id;
    return absl::FailedPreconditionError(absl::StrCat(
        deployment, " has no blue-green rollout in its grace period (", what,
        "); cutover switches between the slots of a blue-green upgrade until its old slot is retired: "
        "hoist upgrade VERSION --strategy blue-green"));
  }
  *rollout_id = latest->front().id;
  return latest->front();
}

absl::Status RolloutManager::CutoverInGrace(uint64_t epoch, const hoist::v1::CutoverRequest& request,
                                            const StoredRollout& rollout, const std::string& word, absl::Time start,
                                            hoist::v1::CutoverResponse* out) {
  const std::string& deployment = request.deployment();
  const hoist::v1::CutoverDirection direction = request.direction();
  const hoist::v1::Slot target = rollout.plan.target_slot();
  const hoist::v1::Slot old = OldSlot(rollout);
  auto now_rollout = store_->GetRollout(rollout.id);
  if (!now_rollout.ok()) return now_rollout.status();
  if (now_rollout->state != hoist::v1::ROLLOUT_STATE_GRACE) {
    return absl::FailedPreconditionError(absl::StrCat("the grace period of rollout ", rollout.id,
                                                      " has just ended (now ", RolloutStateName(now_rollout->state),
                                                      "); nothing was switched"));
  }
  auto d = store_->GetDeployment(deployment);
  if (!d.ok()) return d.status();
  if (direction == hoist::v1::CUTOVER_DIRECTION_FINISH) {
    if (d->live_slot != target) {
      return absl::FailedPreconditionError(absl::StrCat(
          SlotName(old), " (", rollout.from_version, ") serves ", deployment, " since a cutover --back: --finish "
          "would retire the slot that serves. Switch to ", SlotName(target), " first: hoist cutover --forward"));
    }
    if (absl::Status s = store_->RequestFinish(rollout.id); !s.ok()) return s;
    out->set_live_slot(target);
    return absl::OkStatus();
  }
  const bool back = direction == hoist::v1::CUTOVER_DIRECTION_BACK;
  absl::StatusOr<std::vector<ProxySwitch>> switches = SwitchActions(rollout, back, word, start);
  if (!switches.ok()) return switches.status();
  const std::vector<std::string> failures = RunSwitches(*switches);
  if (!failures.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "the switch ", word, " failed on ", absl::StrJoin(failures, "; "), "; ", SlotName(d->live_slot),
        " is still recorded as serving, but a proxy host that succeeded may have switched: run the cutover again"));
  }
  const hoist::v1::Slot now_serving = back ? old : target;
  if (absl::Status s = store_->SetLiveSlot(epoch, deployment, now_serving); !s.ok()) return s;
  out->set_live_slot(now_serving);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RolloutManager::ProxySwitch>> RolloutManager::SwitchActions(const StoredRollout& rollout,
                                                                                       bool back,
                                                                                       const std::string& word,
                                                                                       absl::Time start) {
  auto steps = store_->GetSteps(rollout.id);
  if (!steps.ok()) return steps.status();
  std::vector<const StoredStep*> switches;
  for (const StoredStep& st : *steps) {
    if (PhaseRoleOf(st.phase_name) == PhaseRole::kSwitch && st.kind == StepKind::kProxyUpdate &&
        st.action.has_value()) {
      switches.push_back(&st);
    }
  }
  if (switches.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("rollout ", rollout.id, " has no proxy switch step to repeat"));
  }
  // The switch step as planned, or with every backend's state flipped: the
  // same servers, so HAProxy only changes states (no server added).
  const std::string stamp = absl::StrCat(absl::ToUnixMicros(start));
  std::vector<ProxySwitch> actions;
  for (const StoredStep* sw : switches) {
    hoist::v1::Step action = *sw->action;
    if (back) {
      for (auto& route : *action.mutable_proxy_update()->mutable_routes()) {
        for (auto& b : *route.mutable_backends()) {
          b.set_state(b.state() == hoist::v1::BACKEND_STATE_DRAIN ? hoist::v1::BACKEND_STATE_READY
                                                                  : hoist::v1::BACKEND_STATE_DRAIN);
        }
      }
    }
    // Backends on other Docker hosts, at the ports their start reported.
    if (absl::Status s = executor_->ResolveBackends(rollout, &action); !s.ok()) return s;
    action.set_step_id(absl::StrCat(rollout.id, "/cutover-", stamp, "-", word, "-", sw->agent_id));
    action.set_rollout_id(rollout.id);
    const absl::Duration timeout = sw->timeout > absl::ZeroDuration() ? sw->timeout : absl::Minutes(1);
    SetTimestamp(clock_->Now() + timeout, action.mutable_deadline());
    actions.push_back({sw->agent_id, std::move(action)});
  }
  return actions;
}

std::vector<std::string> RolloutManager::RunSwitches(const std::vector<ProxySwitch>& switches) {
  std::vector<absl::StatusOr<hoist::v1::StepResult>> results(switches.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < switches.size(); ++i) {
    threads.emplace_back([this, &results, i, action = switches[i].action, agent = switches[i].agent_id] {
      results[i] = dispatcher_->RunStep(agent, action, nullptr, nullptr);
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::string> failures;
  for (size_t i = 0; i < switches.size(); ++i) {
    if (!results[i].ok()) {
      failures.push_back(absl::StrCat(switches[i].agent_id, ": ", results[i].status().message()));
    } else if (results[i]->outcome() != hoist::v1::STEP_OUTCOME_SUCCEEDED) {
      failures.push_back(absl::StrCat(switches[i].agent_id, ": ", results[i]->message()));
    }
  }
  return failures;
}

}  // namespace hoist::rollout

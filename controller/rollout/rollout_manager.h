#pragma once

#include <functional>

// RolloutManager: what the operator API does, without gRPC. It validates and
// stores stacks and releases, plans upgrades and rollbacks from what the
// agents report, starts them on the executor, and assembles status, the
// version matrix and rollouts for reading. Writes take the caller's leader
// epoch; the service adapter checks leadership first.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/rollout/executor.h"
#include "controller/rollout/manifest.h"
#include "controller/rollout/planner.h"
#include "controller/rollout/rollout_store.h"
#include "controller/rollout/step_dispatcher.h"
#include "controller/store/agent_store.h"
#include "hoist/v1/operator.pb.h"
#include "shared/clock.h"

namespace hoist::rollout {

class RolloutManager {
 public:
  RolloutManager(RolloutStore* store, AgentStore* agents, StepDispatcher* dispatcher, Executor* executor,
                 Clock* clock);

  absl::StatusOr<hoist::v1::Deployment> ApplyStack(uint64_t epoch, const hoist::v1::ApplyStackRequest& request,
                                                   const std::string& actor);
  // Validates a release against its deployment's stack and stores it; the
  // audit log records it, refused or not.
  // Errors name the request's file and line when it gives them.
  absl::StatusOr<hoist::v1::Release> CreateRelease(uint64_t epoch, const hoist::v1::CreateReleaseRequest& request,
                                                   const std::string& actor);
  absl::StatusOr<hoist::v1::Release> CreateRelease(uint64_t epoch, const hoist::v1::Release& release,
                                                   const std::string& actor) {
    hoist::v1::CreateReleaseRequest request;
    *request.mutable_release() = release;
    return CreateRelease(epoch, request, actor);
  }
  // What StartRollout(request) (an upgrade, or the first deploy) would do
  // now; touches nothing. Its digest
  // (PlanDigest) is what request.expected_plan_digest is compared with.
  absl::StatusOr<Plan> PlanUpgrade(const hoist::v1::StartRolloutRequest& request);
  // ABORTED when request.expected_plan_digest is set and the plan is no
  // longer that one.
  absl::StatusOr<hoist::v1::Rollout> StartRollout(uint64_t epoch, const hoist::v1::StartRolloutRequest& request,
                                                  const std::string& actor);
  absl::StatusOr<hoist::v1::Rollout> Rollback(uint64_t epoch, const hoist::v1::RollbackRequest& request,
                                              const std::string& actor);
  absl::StatusOr<hoist::v1::Rollout> Cancel(const std::string& id, const std::string& reason, const std::string& actor);
  // Blue-green, during a rollout's grace period: BACK switches every route to
  // the old slot at once, FORWARD to the new one again (each one proxy_update
  // per proxy host, built from the rollout's own switch step), FINISH asks
  // the executor to retire the old slot now. FAILED_PRECONDITION when the
  // deployment has no blue-green rollout in its grace period, or FINISH while
  // the old slot serves. Every call goes to the audit log.
  absl::StatusOr<hoist::v1::CutoverResponse> Cutover(uint64_t epoch, const hoist::v1::CutoverRequest& request,
                                                     const std::string& actor);
  // The rollback of a failed upgrade, for the executor's ON_FAILURE_ROLLBACK.
  absl::StatusOr<std::string> RollBackFailed(uint64_t epoch, const StoredRollout& failed);

  // The deployment as applied; its manifest's env values are replaced by
  // "(secret <fingerprint>)" (secrets.h): no API answer carries a value.
  absl::StatusOr<hoist::v1::Deployment> GetDeployment(const std::string& name);
  // The keyed fingerprint shown in place of an env value (SecretBox). Unset:
  // values show as "(secret)".
  void SetSecretFingerprint(std::function<std::string(absl::string_view)> fingerprint) {
    fingerprint_ = std::move(fingerprint);
  }
  absl::StatusOr<hoist::v1::Rollout> GetRollout(const std::string& id);
  absl::StatusOr<hoist::v1::GetStatusResponse> Status(const std::string& deployment);
  absl::StatusOr<hoist::v1::GetVersionMatrixResponse> Matrix(const std::string& deployment);

 private:
  // INVALID_ARGUMENT (naming the field) or NOT_FOUND when `release` cannot
  // be recorded for its deployment.
  absl::Status CheckRelease(const hoist::v1::CreateReleaseRequest& request);
  absl::StatusOr<PlanInput> Input(const std::string& deployment, const std::string& target,
                                  hoist::v1::Strategy strategy, bool for_rollback);
  // Input with the request's options; `stamp` suffixes the backup's id.
  absl::StatusOr<PlanInput> UpgradeInput(const hoist::v1::StartRolloutRequest& request, const std::string& stamp);
  // Fills in->options.host_env: which of the target release's required and
  // renamed env names each host's env files set (names only; values stay on
  // the hosts).
  void ReadHostEnv(PlanInput* in);
  // "20261130-082016-63a4": the time a rollout is stored, and a few bits more.
  std::string NewStamp() const;
  // The rollout's id is "<deployment>-<stamp>" (a new stamp when empty).
  absl::StatusOr<hoist::v1::Rollout> Store(uint64_t epoch, const Plan& plan, const std::string& kind,
                                           hoist::v1::OnFailure on_failure, const std::string& actor,
                                           const std::string& stamp = "");
  absl::StatusOr<hoist::v1::Rollout> ToRollout(const StoredRollout& r);

  // Cutover (rollout_manager_cutover.cc).
  // One proxy host's repeat of the rollout's switch step.
  struct ProxySwitch {
    std::string agent_id;
    hoist::v1::Step action;
  };
  // The deployment's latest rollout when it is a blue-green one in its grace
  // period, else FAILED_PRECONDITION saying what it is. Sets *rollout_id to
  // the latest rollout's id, for the audit log.
  absl::StatusOr<StoredRollout> RolloutInGrace(const std::string& deployment, std::string* rollout_id);
  // The cutover itself, while no grace period can end: FINISH asks the
  // executor to retire the old slot; BACK and FORWARD switch every proxy
  // host and record the slot that serves.
  absl::Status CutoverInGrace(uint64_t epoch, const hoist::v1::CutoverRequest& request, const StoredRollout& rollout,
                              const std::string& word, absl::Time start, hoist::v1::CutoverResponse* out);
  // The rollout's switch steps (their backends flipped when `back`), with
  // new step ids and deadlines.
  absl::StatusOr<std::vector<ProxySwitch>> SwitchActions(const StoredRollout& rollout, bool back,
                                                         const std::string& word, absl::Time start);
  // Runs the switches on their proxy hosts at once; returns the failures.
  std::vector<std::string> RunSwitches(const std::vector<ProxySwitch>& switches);

  void Audit(const std::string& actor, const std::string& action, const std::string& deployment,
             const std::string& rollout_id, const absl::Status& outcome, const std::string& detail);

  RolloutStore* const store_;
  AgentStore* const agents_;
  StepDispatcher* const dispatcher_;
  Executor* const executor_;
  Clock* const clock_;
  std::function<std::string(absl::string_view)> fingerprint_;
  hoist::v1::Deployment DeploymentProto(const StoredDeployment& d) const;
};

}  // namespace hoist::rollout

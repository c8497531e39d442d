#include "controller/rollout/rollout_manager.h"

#include "controller/rollout/secrets.h"

#include <future>
#include <map>
#include <thread>
#include <vector>
#include <set>
#include <tuple>


#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"
#include "shared/semver.h"
#include "shared/sha256.h"
#include "spdlog/spdlog.h"

namespace hoist::rollout {
hoist::v1::Deployment RolloutManager::DeploymentProto(const StoredDeployment& d) const {
  hoist::v1::Deployment out;
  out.set_name(d.name);
  out.set_manifest_yaml(RedactEnvValues(d.manifest_yaml, [this](absl::string_view value) {
    return fingerprint_ ? fingerprint_(value) : std::string();
  }));
  out.set_manifest_sha256(d.manifest_sha256);
  out.set_pinned_version(d.pinned_version);
  SetTimestamp(d.updated_at, out.mutable_updated_at());
  return out;
}

namespace {

// Checks a deployment or version name given by an operator.
absl::Status Required(absl::string_view field, absl::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  return absl::OkStatus();
}

}  // namespace

RolloutManager::RolloutManager(RolloutStore* store, AgentStore* agents, StepDispatcher* dispatcher, Executor* executor,
                               Clock* clock)
    : store_(store), agents_(agents), dispatcher_(dispatcher), executor_(executor), clock_(clock) {}

void RolloutManager::Audit(const std::string& actor, const std::string& action, const std::string& deployment,
                           const std::string& rollout_id, const absl::Status& outcome, const std::string& detail) {
  store_
      ->Audit({actor, action, deployment, rollout_id,
               outcome.ok() ? "ok"
               : (outcome.code() == absl::StatusCode::kInvalidArgument ||
                  outcome.code() == absl::StatusCode::kFailedPrecondition)
                   ? "refused"
                   : "failed",
               outcome.ok() ? detail : std::string(outcome.message())})
      .IgnoreError();
}

absl::StatusOr<hoist::v1::Deployment> RolloutManager::ApplyStack(uint64_t epoch,
                                                                 const hoist::v1::ApplyStackRequest& request,
                                                                 const std::string& actor) {
  const std::string file = request.file_name().empty() ? "stack.yaml" : request.file_name();
  auto manifest = ParseStackManifest(file, request.manifest_yaml());
  if (!manifest.ok()) {
    Audit(actor, "stack.apply", "", "", manifest.status(), "");
    return manifest.status();
  }
  StoredDeployment d{manifest->deployment, request.manifest_yaml(), Sha256Hex(request.manifest_yaml()), file, "", {}};
  absl::Status s = store_->PutDeployment(epoch, d);
  Audit(actor, "stack.apply", d.name, "", s, absl::StrCat("applied ", file, " sha256 ", d.manifest_sha256));
  if (!s.ok()) return s;
  return GetDeployment(d.name);
}

absl::StatusOr<hoist::v1::Release> RolloutManager::CreateRelease(uint64_t epoch,
                                                                 const hoist::v1::CreateReleaseRequest& request,
                                                                 const std::string& actor) {
  const hoist::v1::Release& release = request.release();
  // A refused release is an operator action too: the audit log records it
  // with the reason, as it does for a refused stack.
  absl::Status s = CheckRelease(request);
  if (s.ok()) s = store_->PutRelease(epoch, release);
  Audit(actor, "release.create", release.deployment(), "", s, absl::StrCat("release ", release.version()));
  if (!s.ok()) return s;
  return store_->GetRelease(release.deployment(), release.version());
}

absl::Status RolloutManager::CheckRelease(const hoist::v1::CreateReleaseRequest& request) {
  const hoist::v1::Release& release = request.release();
  // "FILE:LINE: images.api: ..." when the CLI said where the field is, else
  // "release.images.api: ...".
  auto invalid = [&](const std::string& field, absl::string_view message) {
    auto line = request.field_lines().find(field);
    if (!request.file_name().empty() && line != request.field_lines().end()) {
      return absl::InvalidArgumentError(absl::StrCat(request.file_name(), ":", line->second, ": ", field, message));
    }
    return absl::InvalidArgumentError(absl::StrCat("release.", field, message));
  };
  if (absl::Status s = Required("release.deployment", release.deployment()); !s.ok()) return s;
  auto version = Version::Parse(release.version());
  if (!version.ok()) {
    return invalid("version", absl::StrCat(" \"", release.version(), "\": ", version.status().message()));
  }
  auto d = store_->GetDeployment(release.deployment());
  if (!d.ok()) return d.status();
  auto manifest = ParseStackManifest(d->file_name, d->manifest_yaml);
  if (!manifest.ok()) return manifest.status();
  for (const auto& [service, image] : release.images()) {
    const std::string field = absl::StrCat("images.", service);
    const ServiceSpec* spec = manifest->FindService(service);
    if (spec == nullptr) {
      std::vector<std::string> names;
      for (const ServiceSpec& s : manifest->services) {
        if (s.versioned()) names.push_back(s.name);
      }
      return invalid(field, absl::StrCat(": the stack ", d->name, " has no service named \"", service,
                                         "\"; its versioned services are ", absl::StrJoin(names, ", ")));
    }
    auto ref = ParseImageReference(image);
    if (!ref.ok()) return invalid(field, absl::StrCat(": ", ref.status().message()));
    if (!ref->pinned()) {
      return invalid(field, absl::StrCat(" \"", image, "\": pin the image with a tag other than latest, or a digest"));
    }
  }
  for (const ServiceSpec& spec : manifest->services) {
    if (spec.versioned() && spec.role != hoist::v1::ROLE_DATABASE && !release.images().contains(spec.name)) {
      return invalid("images", absl::StrCat(": no image for service \"", spec.name, "\"; every versioned service of ",
                                            d->name, " needs one (add `", spec.name, ": IMAGE:TAG` under images)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PlanInput> RolloutManager::Input(const std::string& deployment, const std::string& target,
                                                hoist::v1::Strategy strategy, bool for_rollback) {
  if (absl::Status s = Required("deployment", deployment); !s.ok()) return s;
  auto d = store_->GetDeployment(deployment);
  if (!d.ok()) return d.status();
  auto manifest = ParseStackManifest(d->file_name, d->manifest_yaml);
  if (!manifest.ok()) return manifest.status();
  PlanInput in;
  in.manifest = *std::move(manifest);
  in.live_slot = d->live_slot;
  in.strategy = strategy == hoist::v1::STRATEGY_UNSPECIFIED ? hoist::v1::STRATEGY_ROLLING : strategy;
  auto releases = store_->ListReleases(deployment);
  if (!releases.ok()) return releases.status();
  std::string target_version = target;
  if (!d->pinned_version.empty()) {
    auto current = store_->GetRelease(deployment, d->pinned_version);
    if (!current.ok()) return current.status();
    in.current = *std::move(current);
  }
  if (target_version.empty() && for_rollback) {
    // The previous release: the newest one older than the pinned one.
    if (!in.current) return absl::FailedPreconditionError(absl::StrCat(deployment, " has never been deployed"));
    auto pinned = Version::Parse(in.current->version());
    std::optional<Version> best;
    for (const auto& r : *releases) {
      auto v = Version::Parse(r.version());
      if (v.ok() && pinned.ok() && *v < *pinned && (!best || *v > *best)) {
        best = *v;
        target_version = r.version();
      }
    }
    if (target_version.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(deployment, " has no release older than ", in.current->version(), " to roll back to"));
    }
  }
  if (absl::Status s = Required("target_version", target_version); !s.ok()) return s;
  auto target_release = store_->GetRelease(deployment, target_version);
  if (!target_release.ok()) return target_release.status();
  in.target = *std::move(target_release);
  auto tv = Version::Parse(in.target.version());
  std::optional<Version> cv;
  if (in.current) {
    auto parsed = Version::Parse(in.current->version());
    if (parsed.ok()) cv = *parsed;
  }
  for (const auto& r : *releases) {
    auto v = Version::Parse(r.version());
    if (!v.ok() || !tv.ok()) continue;
    if ((!cv || *v > *cv) && *v <= *tv) in.intermediate.push_back(r);
  }
  auto agents = agents_->ListAgents();
  if (!agents.ok()) return agents.status();
  auto containers = agents_->ListContainers("");
  if (!containers.ok()) return containers.status();
  for (const hoist::v1::Agent& a : *agents) {
    AgentState st;
    st.id = a.id();
    // Only the leader holds the agents' sessions; a follower asked for a
    // plan goes by what the leader recorded in Postgres.
    st.connected = dispatcher_->Leading() ? dispatcher_->IsConnected(a.id()) : (a.connected() && !a.lost());
    st.labels.insert(a.labels().begin(), a.labels().end());
    st.image_disk_free_bytes = a.image_disk_free_bytes();
    st.backup_disk_free_bytes = a.backup_disk_free_bytes();
    st.docker_engine_id = a.docker_engine_id();
    st.address = a.address();
    for (const ObservedContainer& c : *containers) {
      if (c.agent_id == a.id()) st.containers.push_back(c.info);
    }
    in.agents.push_back(std::move(st));
  }
  if (!for_rollback) ReadHostEnv(&in);
  return in;
}

void RolloutManager::ReadHostEnv(PlanInput* in) {
  std::set<std::string> names(in->target.required_env().begin(), in->target.required_env().end());
  for (const auto& [old_name, new_name] : in->target.renamed_env()) {
    names.insert(old_name);
    names.insert(new_name);
  }
  std::set<std::string> files;
  for (const ServiceSpec& s : in->manifest.services) files.insert(s.env_files.begin(), s.env_files.end());
  if (names.empty() || files.empty()) return;
  if (!dispatcher_->Leading()) {
    // Only the leader holds the sessions the question goes over.
    in->options.host_env_checked = false;
    return;
  }
  // Every connected host of the stack is asked, at once, which of the names
  // its env files set; a host that does not answer in time counts as setting
  // none (and pre-flight names it if it is not connected).
  const std::string stamp = NewStamp();
  std::vector<std::pair<std::string, std::future<absl::StatusOr<hoist::v1::StepResult>>>> asked;
  for (const HostSpec& h : in->manifest.hosts) {
    if (!dispatcher_->IsConnected(h.id)) continue;
    hoist::v1::Step step;
    step.set_step_id(absl::StrCat("env-", in->manifest.deployment, "-", h.id, "-", stamp));
    SetTimestamp(clock_->Now() + absl::Seconds(10), step.mutable_deadline());
    hoist::v1::ReadEnvNames* read = step.mutable_read_env_names();
    read->set_deployment(in->manifest.deployment);
    for (const std::string& f : files) read->add_env_files(f);
    for (const std::string& n : names) read->add_names(n);
    asked.emplace_back(h.id, std::async(std::launch::async, [this, id = h.id, step] {
                         return dispatcher_->RunStep(id, step, nullptr, nullptr);
                       }));
  }
  for (auto& [id, answer] : asked) {
    absl::StatusOr<hoist::v1::StepResult> r = answer.get();
    if (!r.ok() || r->outcome() != hoist::v1::STEP_OUTCOME_SUCCEEDED) {
      spdlog::warn("{}: cannot read the env files' names on {}: {}", in->manifest.deployment, id,
                   r.ok() ? r->message() : std::string(r.status().message()));
      continue;
    }
    std::set<std::string>& set = in->options.host_env[id];
    set.insert(r->env_names().set().begin(), r->env_names().set().end());
  }
}

absl::StatusOr<Plan> RolloutManager::PlanUpgrade(const hoist::v1::StartRolloutRequest& request) {
  auto in = UpgradeInput(request, "");
  if (!in.ok()) return in.status();
  return PlanRollout(*in);
}

std::string RolloutManager::NewStamp() const {
  const absl::Time now = clock_->Now();
  return absl::StrCat(absl::FormatTime("%Y%m%d-%H%M%S", now, absl::UTCTimeZone()), "-",
                      absl::StrFormat("%04x", static_cast<unsigned>(absl::ToUnixNanos(now) / 1000 % 0x10000)));
}

absl::StatusOr<hoist::v1::Rollout> RolloutManager::Store(uint64_t epoch, const Plan& plan, const std::string& kind,
                                                         hoist::v1::OnFailure on_failure, const std::string& actor,
                                                         const std::string& stamp) {
  StoredRollout r;
  r.id = absl::StrCat(plan.deployment, "-", stamp.empty() ? NewStamp() : stamp);
  r.deployment = plan.deployment;
  r.kind = kind;
  r.from_version = plan.from_version;
  r.to_version = plan.to_version;
  r.strategy = plan.strategy;
  r.on_failure = on_failure == hoist::v1::ON_FAILURE_UNSPECIFIED ? hoist::v1::ON_FAILURE_STOP : on_failure;
  r.state = hoist::v1::ROLLOUT_STATE_PENDING;
  r.plan = ToProto(plan);
  r.requested_by = actor;
  r.backup_id = plan.backup_id;
  r.rollback_command = plan.rollback_command;
  std::vector<StoredStep> steps;
  int seq = 0;
  for (size_t p = 0; p < plan.phases.size(); ++p) {
    for (const PlanStep& s : plan.phases[p].steps) {
      StoredStep st;
      st.seq = seq++;
      st.phase = static_cast<int>(p);
      st.phase_name = plan.phases[p].name;
      st.batch = static_cast<int>(s.batch);
      // Step ids are unique across rollouts: agents journal by them.
      st.step_id = absl::StrCat(r.id, "/", s.id);
      st.kind = s.kind;
      st.agent_id = s.agent_id;
      st.description = s.description;
      if (!s.agent_id.empty()) st.action = s.action;
      st.timeout = s.timeout;
      steps.push_back(std::move(st));
    }
  }
  absl::Status s = store_->CreateRollout(epoch, r, steps);
  Audit(actor, absl::StrCat("rollout.", kind), plan.deployment, r.id, s,
        absl::StrCat(kind, " ", plan.from_version.empty() ? "" : plan.from_version + " -> ", plan.to_version,
                     " (", steps.size(), " steps)"));
  if (!s.ok()) return s;
  if (absl::Status l = executor_->Launch(r.id); !l.ok()) return l;
  return GetRollout(r.id);
}

absl::StatusOr<PlanInput> RolloutManager::UpgradeInput(const hoist::v1::StartRolloutRequest& request,
                                                       const std::string& stamp) {
  auto in = Input(request.deployment(), request.target_version(), request.strategy(), false);
  if (!in.ok()) return in.status();
  in->options.on_failure = request.on_failure();
  in->options.skip_backup = request.skip_backup();
  if (request.has_grace_period()) {
    const absl::Duration grace = ToDuration(request.grace_period());
    if (grace < absl::ZeroDuration()) return absl::InvalidArgumentError("grace_period: must not be negative");
    if (grace > absl::ZeroDuration()) in->options.grace_period = grace;
  }
  // --smoke-test replaces the manifest's smoke test command for this rollout;
  // the manifest says which service's new image runs it.
  if (request.smoke_test_size() > 0) {
    if (!in->manifest.smoke_test.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "smoke_test: ", in->manifest.file_name, " has no smoke_test section, which names the service whose new "
          "image runs the test; add `smoke_test: {service: NAME, command: [...]}` to it and apply it, or leave out "
          "--smoke-test"));
    }
    in->manifest.smoke_test->job.command.assign(request.smoke_test().begin(), request.smoke_test().end());
  }
  in->options.backup_suffix = stamp;
  return in;
}

absl::StatusOr<hoist::v1::Rollout> RolloutManager::StartRollout(uint64_t epoch,
                                                                const hoist::v1::StartRolloutRequest& request,
                                                                const std::string& actor) {
  // The rollout's id and its backup's share a time stamp: a retry of the same
  // upgrade, or an upgrade again after a rollback, takes a backup of its own.
  const std::string stamp = NewStamp();
  auto in = UpgradeInput(request, stamp);
  if (!in.ok()) {
    Audit(actor, "rollout.upgrade", request.deployment(), "", in.status(), "");
    return in.status();
  }
  auto plan = PlanRollout(*in);
  if (!plan.ok()) {
    Audit(actor, "rollout.upgrade", request.deployment(), "", plan.status(), "");
    return plan.status();
  }
  if (!request.expected_plan_digest().empty()) {
    const std::string digest = PlanDigest(*plan);
    if (digest != request.expected_plan_digest()) {
      absl::Status s = absl::AbortedError(absl::StrCat(
          "the plan changed since it was shown (plan ", request.expected_plan_digest(), ", now ", digest,
          "): the deployment's containers, hosts, manifest or releases changed in between. Nothing was started; "
          "review the new plan and confirm it again"));
      Audit(actor, "rollout.upgrade", request.deployment(), "", s, "");
      return s;
    }
  }
  return Store(epoch, *plan, plan->initial_deploy ? "deploy" : "upgrade", request.on_failure(), actor, stamp);
}

absl::StatusOr<hoist::v1::Rollout> RolloutManager::Rollback(uint64_t epoch, const hoist::v1::RollbackRequest& request,
                                                            const std::string& actor) {
  auto in = Input(request.deployment(), request.to_version(), hoist::v1::STRATEGY_ROLLING, true);
  if (!in.ok()) {
    Audit(actor, "rollback", request.deployment(), "", in.status(), "");
    return in.status();
  }
  RollbackOptions options;
  if (!request.restore_backup_id().empty()) {
    if (request.confirm_name() != request.deployment()) {
      absl::Status s = absl::FailedPreconditionError(absl::StrCat(
          "restoring backup ", request.restore_backup_id(), " replaces the data of ", request.deployment(),
          "; confirm by passing --confirm ", request.deployment()));
      Audit(actor, "rollback", request.deployment(), "", s, "");
      return s;
    }
    auto backup = store_->GetBackup(request.restore_backup_id());
    if (!backup.ok()) return backup.status();
    if (backup->deployment() != request.deployment()) {
      return absl::InvalidArgumentError(absl::StrCat("backup ", backup->id(), " belongs to ", backup->deployment()));
    }
    options.restore = *std::move(backup);
  } else {
    // Forward-only migrations: when an upgrade being undone ran one, the
    // old release cannot read the data; only a backup taken before it can.
    // Every upgrade since the deployment last ran the target (or older) is
    // undone, newest first; the backup to restore is the oldest one's.
    auto target = Version::Parse(in->target.version());
    auto history = store_->ListRollouts(request.deployment(), 500);
    std::vector<const StoredRollout*> migrated;
    if (history.ok() && target.ok()) {
      for (const StoredRollout& r : *history) {
        auto to = Version::Parse(r.to_version);
        if (!to.ok()) continue;
        if (!(*target < *to)) break;  // from here back, the deployment ran the target or older
        if (r.kind != "upgrade") continue;
        auto steps = store_->GetSteps(r.id);
        if (!steps.ok()) continue;
        for (const StoredStep& st : *steps) {
          if (st.kind == "run_job" && st.phase_name.find("migrat") != std::string::npos &&
              st.state == hoist::v1::STEP_STATE_SUCCEEDED) {
            migrated.push_back(&r);
            break;
          }
        }
      }
    }
    if (!migrated.empty()) {
      std::vector<std::string> which;
      for (auto it = migrated.rbegin(); it != migrated.rend(); ++it) {
        which.push_back(absl::StrCat((*it)->id, " (", (*it)->from_version.empty() ? "-" : (*it)->from_version,
                                     " -> ", (*it)->to_version, ")"));
      }
      const StoredRollout& first = *migrated.back();
      const std::string ran = absl::StrCat(
          migrated.size() == 1 ? "rollout " : "rollouts ", absl::StrJoin(which, ", "),
          migrated.size() == 1 ? " ran a migration" : " ran migrations", " since ", in->target.version());
      // Without a backup before the first of them (the manifest has none, or
      // it was skipped) there is nothing to restore: say so rather than print
      // a command with an empty backup id.
      absl::Status s = absl::FailedPreconditionError(
          first.backup_id.empty()
              ? absl::StrCat(ran, ", and ", first.id, " took no backup before it; the old release may not read the "
                             "migrated data, and there is no backup to restore. Fix forward with a new release "
                             "(hoist release create, then hoist upgrade)")
              : absl::StrCat(ran, "; the old release may not read the migrated data. Restore the backup taken "
                             "before the first of them: ",
                             RollbackCommand(request.deployment(), in->target.version(), first.backup_id)));
      Audit(actor, "rollback", request.deployment(), "", s, "");
      return s;
    }
  }
  auto plan = PlanRollback(*in, options);
  if (!plan.ok()) {
    Audit(actor, "rollback", request.deployment(), "", plan.status(), "");
    return plan.status();
  }
  return Store(epoch, *plan, "rollback", hoist::v1::ON_FAILURE_STOP, actor);
}

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
  auto latest = store_->ListRollouts(deployment, 1);
  if (!latest.ok()) return refuse(latest.status());
  if (latest->empty() || latest->front().strategy != hoist::v1::STRATEGY_BLUE_GREEN ||
      latest->front().state != hoist::v1::ROLLOUT_STATE_GRACE) {
    std::string what = latest->empty() ? std::string("it has no rollout yet")
                                       : absl::StrCat("its latest rollout ", latest->front().id, " is a ",
                                                      latest->front().strategy == hoist::v1::STRATEGY_BLUE_GREEN
                                                          ? "blue-green"
                                                          : "rolling",
                                                      " one in state ", RolloutStateName(latest->front().state));
    if (!latest->empty()) rollout_id = latest->front().id;
    return refuse(absl::FailedPreconditionError(absl::StrCat(
        deployment, " has no blue-green rollout in its grace period (", what,
        "); cutover switches between the slots of a blue-green upgrade until its old slot is retired: "
        "hoist upgrade VERSION --strategy blue-green")));
  }
  const StoredRollout rollout = latest->front();
  rollout_id = rollout.id;
  const hoist::v1::Slot target = rollout.plan.target_slot();
  const hoist::v1::Slot old = target == hoist::v1::SLOT_GREEN ? hoist::v1::SLOT_BLUE : hoist::v1::SLOT_GREEN;
  hoist::v1::CutoverResponse out;
  const absl::Time start = clock_->Now();
  absl::Status result = executor_->WhileGraceHeld([&]() -> absl::Status {
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
      out.set_live_slot(target);
      return absl::OkStatus();
    }
    const bool back = direction == hoist::v1::CUTOVER_DIRECTION_BACK;
    auto steps = store_->GetSteps(rollout.id);
    if (!steps.ok()) return steps.status();
    std::vector<const StoredStep*> switches;
    for (const StoredStep& st : *steps) {
      if (st.phase_name == "switch" && st.kind == "proxy_update" && st.action.has_value()) switches.push_back(&st);
    }
    if (switches.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("rollout ", rollout.id, " has no proxy switch step to repeat"));
    }
    // The switch step as planned, or with every backend's state flipped: the
    // same servers, so HAProxy only changes states (no server added).
    const std::string stamp = absl::StrCat(absl::ToUnixMicros(start));
    std::vector<hoist::v1::Step> actions;
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
      actions.push_back(std::move(action));
    }
    std::vector<absl::StatusOr<hoist::v1::StepResult>> results(switches.size(), absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < switches.size(); ++i) {
      threads.emplace_back([this, &results, i, action = actions[i], agent = switches[i]->agent_id] {
        results[i] = dispatcher_->RunStep(agent, action, nullptr, nullptr);
      });
    }
    for (auto& t : threads) t.join();
    std::vector<std::string> failures;
    for (size_t i = 0; i < switches.size(); ++i) {
      if (!results[i].ok()) {
        failures.push_back(absl::StrCat(switches[i]->agent_id, ": ", results[i].status().message()));
      } else if (results[i]->outcome() != hoist::v1::STEP_OUTCOME_SUCCEEDED) {
        failures.push_back(absl::StrCat(switches[i]->agent_id, ": ", results[i]->message()));
      }
    }
    if (!failures.empty()) {
      return absl::UnavailableError(absl::StrCat(
          "the switch ", word, " failed on ", absl::StrJoin(failures, "; "), "; ", SlotName(d->live_slot),
          " is still recorded as serving, but a proxy host that succeeded may have switched: run the cutover again"));
    }
    const hoist::v1::Slot now_serving = back ? old : target;
    if (absl::Status s = store_->SetLiveSlot(epoch, deployment, now_serving); !s.ok()) return s;
    out.set_live_slot(now_serving);
    return absl::OkStatus();
  });
  const absl::Duration took = clock_->Now() - start;
  SetDuration(took, out.mutable_took());
  std::string detail =
      direction == hoist::v1::CUTOVER_DIRECTION_FINISH
          ? absl::StrCat("finish: ", SlotName(old), " (", rollout.from_version, ") is retired now")
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

absl::StatusOr<std::string> RolloutManager::RollBackFailed(uint64_t epoch, const StoredRollout& failed) {
  hoist::v1::RollbackRequest request;
  request.set_deployment(failed.deployment);
  request.set_to_version(failed.from_version);
  auto r = Rollback(epoch, request, "hoistd (--on-failure rollback)");
  if (!r.ok()) return r.status();
  return r->id();
}

absl::StatusOr<hoist::v1::Rollout> RolloutManager::Cancel(const std::string& id, const std::string& reason,
                                                          const std::string& actor) {
  absl::Status s = store_->RequestCancel(id);
  executor_->Cancel(id);
  auto r = store_->GetRollout(id);
  Audit(actor, "rollout.cancel", r.ok() ? r->deployment : "", id, s, reason);
  if (!s.ok()) return s;
  return GetRollout(id);
}

absl::StatusOr<hoist::v1::Deployment> RolloutManager::GetDeployment(const std::string& name) {
  auto d = store_->GetDeployment(name);
  if (!d.ok()) return d.status();
  return DeploymentProto(*d);
}

absl::StatusOr<hoist::v1::Rollout> RolloutManager::ToRollout(const StoredRollout& r) {
  hoist::v1::Rollout out;
  out.set_id(r.id);
  out.set_deployment(r.deployment);
  out.set_state(r.state);
  out.set_on_failure(r.on_failure);
  out.set_started_by(r.requested_by);
  SetTimestamp(r.started_at, out.mutable_started_at());
  SetTimestamp(r.finished_at, out.mutable_finished_at());
  out.set_error(r.error);
  out.set_rollback_command(r.rollback_command);
  out.set_is_rollback(r.kind == "rollback");
  out.set_backup_id(r.backup_id);
  *out.mutable_plan() = r.plan;
  auto steps = store_->GetSteps(r.id);
  if (!steps.ok()) return steps.status();
  std::map<std::string, const StoredStep*> by_id;
  for (const StoredStep& s : *steps) by_id[s.step_id] = &s;
  for (auto& phase : *out.mutable_plan()->mutable_phases()) {
    for (auto& ps : *phase.mutable_steps()) {
      auto it = by_id.find(absl::StrCat(r.id, "/", ps.step_id()));
      if (it == by_id.end()) continue;
      ps.set_step_id(it->second->step_id);
      ps.set_state(it->second->state);
      ps.set_error(it->second->error);
      SetTimestamp(it->second->started_at, ps.mutable_started_at());
      SetTimestamp(it->second->finished_at, ps.mutable_finished_at());
    }
  }
  return out;
}

absl::StatusOr<hoist::v1::Rollout> RolloutManager::GetRollout(const std::string& id) {
  auto r = store_->GetRollout(id);
  if (!r.ok()) return r.status();
  return ToRollout(*r);
}

absl::StatusOr<hoist::v1::GetVersionMatrixResponse> RolloutManager::Matrix(const std::string& deployment) {
  auto d = store_->GetDeployment(deployment);
  if (!d.ok()) return d.status();
  auto manifest = ParseStackManifest(d->file_name, d->manifest_yaml);
  if (!manifest.ok()) return manifest.status();
  auto containers = agents_->ListContainers(deployment);
  if (!containers.ok()) return containers.status();
  hoist::v1::GetVersionMatrixResponse out;
  out.set_deployment(deployment);
  out.set_pinned_version(d->pinned_version);
  std::optional<hoist::v1::Release> pinned;
  if (!d->pinned_version.empty()) {
    auto r = store_->GetRelease(deployment, d->pinned_version);
    if (r.ok()) pinned = *r;
  }
  // service x agent x slot -> cell; only running containers count.
  std::map<std::tuple<std::string, std::string, int>, hoist::v1::MatrixCell> cells;
  std::map<std::string, std::set<std::string>> versions;  // service -> running versions
  for (const ObservedContainer& c : *containers) {
    if (c.info.state() != hoist::v1::CONTAINER_STATE_RUNNING) continue;
    const auto& inst = c.info.instance();
    auto key = std::make_tuple(inst.service(), c.agent_id, static_cast<int>(inst.slot()));
    hoist::v1::MatrixCell& cell = cells[key];
    if (cell.service().empty()) {
      cell.set_service(inst.service());
      cell.set_agent_id(c.agent_id);
      cell.set_host_name(c.host_name);
      cell.set_host_address(c.host_address);
      cell.set_slot(inst.slot() == hoist::v1::SLOT_UNSPECIFIED ? hoist::v1::SLOT_BLUE : inst.slot());
      cell.set_version(c.info.version());
      cell.set_image_digest(c.info.image_digest());
    } else if (cell.version() != c.info.version()) {
      cell.set_version(absl::StrCat(cell.version(), ",", c.info.version()));
    }
    cell.set_instances(cell.instances() + 1);
    if (c.info.health() == hoist::v1::HEALTH_HEALTHY || c.info.health() == hoist::v1::HEALTH_UNSPECIFIED) {
      cell.set_healthy(cell.healthy() + 1);
    }
    const ServiceSpec* spec = manifest->FindService(inst.service());
    if (spec != nullptr && spec->versioned() && pinned && c.info.version() != pinned->version()) cell.set_skew(true);
    // The release's content, pulled again later from a re-pushed tag.
    if (spec != nullptr && spec->versioned() && pinned && c.info.version() == pinned->version() &&
        !c.info.image_digest().empty() && pinned->digests().contains(inst.service()) &&
        pinned->digests().at(inst.service()) != c.info.image_digest()) {
      cell.set_digest_drift(true);
    }
    versions[inst.service()].insert(c.info.version());
  }
  for (auto& [key, cell] : cells) *out.add_cells() = cell;
  for (const CompatRule& rule : manifest->rules) {
    for (const std::string& sv : versions[rule.service]) {
      for (const std::string& ov : versions[rule.other]) {
        auto a = Version::Parse(sv);
        auto b = Version::Parse(ov);
        if (a.ok() && b.ok() && !rule.Allows(*a, *b)) {
          out.add_violations(absl::StrCat(rule.Describe(), ": ", rule.service, " ", sv, " runs beside ", rule.other,
                                          " ", ov));
        }
      }
    }
  }
  return out;
}

absl::StatusOr<hoist::v1::GetStatusResponse> RolloutManager::Status(const std::string& deployment) {
  auto d = store_->GetDeployment(deployment);
  if (!d.ok()) return d.status();
  hoist::v1::GetStatusResponse out;
  *out.mutable_deployment() = DeploymentProto(*d);
  auto rollouts = store_->ListRollouts(deployment, 1);
  if (rollouts.ok() && !rollouts->empty()) {
    auto r = ToRollout(rollouts->front());
    if (r.ok()) *out.mutable_latest_rollout() = *r;
  }
  auto locks = store_->ListLocks();
  if (locks.ok()) {
    for (const auto& l : *locks) {
      if (l.deployment() == deployment) *out.mutable_lock() = l;
    }
  }
  auto containers = agents_->ListContainers(deployment);
  if (!containers.ok()) return containers.status();
  for (const ObservedContainer& c : *containers) {
    hoist::v1::InstanceStatus* i = out.add_instances();
    *i->mutable_container() = c.info;
    i->set_agent_id(c.agent_id);
    i->set_host_name(c.host_name);
    if (c.info.state() == hoist::v1::CONTAINER_STATE_RUNNING && c.info.health() == hoist::v1::HEALTH_UNHEALTHY) {
      out.add_problems(absl::StrCat(c.info.name(), " on ", c.agent_id, " is unhealthy"));
    }
  }
  auto agents = agents_->ListAgents();
  if (agents.ok()) {
    for (const auto& a : *agents) {
      if (a.lost()) out.add_problems(absl::StrCat("agent ", a.id(), " is lost (no heartbeat)"));
    }
  }
  auto matrix = Matrix(deployment);
  if (matrix.ok()) {
    for (const auto& cell : matrix->cells()) {
      if (cell.skew()) {
        out.add_problems(absl::StrCat(cell.service(), " on ", cell.agent_id(), " runs ", cell.version(),
                                      ", not the pinned ", matrix->pinned_version()));
      }
    }
    for (const auto& v : matrix->violations()) out.add_problems(v);
  }
  return out;
}

}  // namespace hoist::rollout

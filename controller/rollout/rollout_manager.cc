// RolloutManager's writing side: stacks and releases, planning and starting
// upgrades and rollbacks, cancelling (the cutover: rollout_manager_cutover.cc;
// reading: rollout_manager_status.cc).

#include "controller/rollout/rollout_manager.h"

#include <future>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/rollout_manager_internal.h"
#include "controller/rollout/step_kind.h"
#include "shared/proto_time.h"
#include "shared/semver.h"
#include "shared/sha256.h"
#include "spdlog/spdlog.h"

namespace hoist::rollout {

using internal::Required;

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
        if (absl::IsFailedPrecondition(steps.status())) {
          // Steps this hoistd cannot read (a kind from a newer release): whether
          // that upgrade migrated is unknown, so nothing is rolled back past it.
          absl::Status s = absl::FailedPreconditionError(absl::StrCat(
              "cannot tell whether rollout ", r.id, " ran a migration: ", steps.status().message(),
              "; roll back with the hoistd that ran it, or restore a backup taken before it"));
          Audit(actor, "rollback", request.deployment(), "", s, "");
          return s;
        }
        if (!steps.ok()) continue;
        for (const StoredStep& st : *steps) {
          const std::string job = st.action.has_value() ? st.action->run_job().name() : "";
          if (RunsMigrations(st.kind, PhaseRoleOf(st.phase_name), job) &&
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

}  // namespace hoist::rollout

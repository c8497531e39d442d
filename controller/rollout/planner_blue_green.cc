// The blue-green plan, stage by stage: the refusals particular to it, then
// the new release started whole in the idle slot beside the old one, tried
// (preview route, smoke test), handed the scheduler, switched to in one
// proxy update per host, and the old slot retired after the grace period.

#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner_internal.h"
#include "shared/semver.h"
#include "shared/status_macros.h"

namespace hoist::rollout::internal {

absl::StatusOr<Plan> Planner::BuildBlueGreen() {
  HOIST_RETURN_IF_ERROR(CheckReleases());
  HOIST_RETURN_IF_ERROR(CollectObserved());
  Place();
  HOIST_RETURN_IF_ERROR(CheckWiring());
  HOIST_ASSIGN_OR_RETURN(const ServiceSpec* proxy, CheckBlueGreen());
  HOIST_RETURN_IF_ERROR(Preflight());
  StartBlueGreenPlan();

  PhasePreflight();
  HOIST_RETURN_IF_ERROR(PhaseBackupUnlessSkipped());
  PhaseClearIdle();
  PhasePull(moving_);
  PhaseForwards();
  PhasesBlueGreenGates();
  const std::vector<const ServiceSpec*> schedulers = PhaseStartIdle();
  const std::set<std::string> preview = PreviewRoutes(*proxy);
  PhasePreview(preview);
  PhaseBlueGreenSmoke(preview);
  for (const ServiceSpec* s : schedulers) PhaseHandover(*s);
  PhaseBlueGreenPin();
  PhaseSwitch(preview);
  PhaseGrace();
  PhaseRetire(preview);
  PhaseBlueGreenPostcheck();
  Finish();
  return std::move(plan_);
}

absl::StatusOr<const ServiceSpec*> Planner::CheckBlueGreen() {
  std::vector<std::string> problems;
  const ServiceSpec* proxy = BlueGreenMoves(&problems);
  if (proxy == nullptr) {
    problems.push_back(absl::StrCat(m_.file_name, " has no service with role proxy and routes: blue-green switches "
                                    "traffic in the proxy"));
  } else {
    bool running = false;
    for (const auto& [r, cs] : live_[proxy->name]) {
      for (const Live& c : cs) running = running || c.running;
    }
    if (!running) {
      problems.push_back(absl::StrCat("no ", proxy->name, " instance runs, so there is no proxy to switch"));
    }
  }
  BlueGreenRuleProblems(&problems);
  if (!problems.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot plan a blue-green upgrade of ", m_.deployment, ": ",
                                                      absl::StrJoin(problems, "; "), "; or use --strategy rolling"));
  }
  return proxy;
}

const ServiceSpec* Planner::BlueGreenMoves(std::vector<std::string>* problems) {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  // What moves into the new slot: versioned services other than databases.
  // The proxy is where the switch happens, so it stays outside the slots.
  const ServiceSpec* proxy = nullptr;
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_PROXY) {
      if (s.versioned()) {
        problems->push_back(absl::StrCat("services.", s.name, " is a proxy with a repository: blue-green switches "
                                         "traffic inside the proxy, so the proxy cannot move with a slot; pin it "
                                         "with image:"));
      } else if (!s.routes.empty() && proxy == nullptr) {
        proxy = &s;
      }
      continue;
    }
    if (!s.versioned() || s.role == v1::ROLE_DATABASE) continue;
    moving_.push_back(s.name);
    if (s.role == v1::ROLE_JOB) continue;
    for (const PortSpec& p : s.ports) {
      if (p.host_port != 0) {
        problems->push_back(absl::StrCat("services.", s.name, ".ports publishes host port ", p.host_port,
                                         ", which the ", old_word, " and the ", new_word,
                                         " containers cannot hold at once; let the proxy reach it on the network "
                                         "(drop the host port)"));
      }
    }
  }
  return proxy;
}

void Planner::BlueGreenRuleProblems(std::vector<std::string>* problems) const {
  // Compatibility rules. Blue-green runs the whole new release beside the
  // old one until the old slot is retired, so it cannot plan around a rule
  // the way rolling does (by moving or stopping a service first): a rule that
  // forbids the mix refuses the plan.
  if (!from_version_.empty() && from_version_ != to_version_) {
    auto from = Version::Parse(from_version_);
    auto to = Version::Parse(to_version_);
    if (from.ok() && to.ok()) {
      for (const CompatRule& r : m_.rules) {
        if (!r.Allows(*to, *to)) {
          problems->push_back(
              absl::StrCat("release ", to_version_, " breaks the rule \"", r.Describe(), "\" by itself"));
        } else if (r.kind == CompatRule::Kind::kMustMatch) {
          problems->push_back(absl::StrCat("the rule \"", r.Describe(), "\" forbids ", r.service, " and ", r.other,
                                           " at different versions, and blue-green runs ", from_version_, " and ",
                                           to_version_, " at once"));
        } else if (!m_.network.empty()) {
          for (const auto& [sv, ov] : {std::pair(*to, *from), std::pair(*from, *to)}) {
            if (r.Allows(sv, ov)) continue;
            problems->push_back(absl::StrCat(
                "the rule \"", r.Describe(), "\" forbids ", r.service, " ", sv == *to ? to_version_ : from_version_,
                " beside ", r.other, " ", ov == *to ? to_version_ : from_version_,
                ", and both slots answer to the same service names on network ", m_.network));
          }
        }
      }
    }
  }
}

void Planner::StartBlueGreenPlan() {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  StartPlan(v1::STRATEGY_BLUE_GREEN);
  plan_.target_slot = idle_slot_;
  plan_.grace_period = in_.options.grace_period;
  for (const v1::Release& r : in_.intermediate) {
    auto v = Version::Parse(r.version());
    if (v.ok() && *v > *Version::Parse(from_version_) && *v < *Version::Parse(to_version_)) plan_.notes.push_back(r);
  }
  plan_.notes.push_back(in_.target);
  std::sort(plan_.notes.begin(), plan_.notes.end(), [](const v1::Release& a, const v1::Release& b) {
    return *Version::Parse(a.version()) < *Version::Parse(b.version());
  });
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_DATABASE) {
      plan_.warnings.push_back(absl::StrCat(s.name, " (database) is shared by both slots and not replaced",
                                            m_.backup.has_value() ? "; it is backed up first" : ""));
    }
    if (!s.health.has_value() && s.role != v1::ROLE_JOB && s.replicas > 0 && Moves(s)) {
      plan_.warnings.push_back(absl::StrCat(s.name, " has no health check: Hoist only knows its ", new_word,
                                            " containers started before traffic switches to them"));
    }
  }
  if (!m_.network.empty()) {
    plan_.warnings.push_back(absl::StrCat(
        "both slots answer to the same service names on network ", m_.network, ": between the start of ", new_word,
        " and the retirement of ", old_word, " a call between services may reach either version"));
  }
}

void Planner::PhaseClearIdle() {
  // Leftovers in the idle slot (a blue-green rollout that failed before its
  // switch): they take no traffic, and the new slot needs their names.
  if (idle_.empty()) return;
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      absl::StrCat("clear-", new_word),
      absl::StrCat(new_word, " containers are left from an earlier blue-green rollout that did not switch; "
                   "the proxy sends them nothing, so they are removed before ", new_word, " starts again"));
  for (auto& [service, replicas] : idle_) {
    const ServiceSpec& s = *m_.FindService(service);
    for (auto& [r, cs] : replicas) {
      for (Live& c : cs) {
        if (c.running) StepStop(ph, s, r, c, 0, idle_slot_);
        StepRemove(ph, s, r, c, 1, idle_slot_);
      }
    }
  }
  idle_.clear();
}

void Planner::PhasesBlueGreenGates() {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  // Migration gates, api first (the role order of a rolling upgrade).
  std::vector<const ServiceSpec*> gated;
  for (v1::Role role : {v1::ROLE_API, v1::ROLE_WORKER, v1::ROLE_SCHEDULER, v1::ROLE_WEB, v1::ROLE_JOB}) {
    for (const ServiceSpec& s : m_.services) {
      if (s.role == role && Moves(s) && s.migration.has_value()) gated.push_back(&s);
    }
  }
  for (const ServiceSpec* s : gated) {
    PlanPhase& ph = AddPhase(
        PhaseRole::kMigrationGate, s->name,
        absl::StrCat("migration gate for ", s->name, ": runs from the ", to_version_, " image before any ", new_word,
                     " container starts, while ", old_word, " (", from_version_,
                     ") keeps serving: the migration must be expand-only (add, never drop or rename) so that ",
                     from_version_, " still works on the migrated schema during the grace period; a non-zero exit "
                     "stops the rollout with ", old_word, " serving and nothing else changed"));
    StepJob(ph, *s, "migrate", s->migration->command, s->migration->timeout, StepKind::kRunJob,
            absl::StrCat("run the ", s->name, " migration"), StepDatabasesHealthy(ph) ? 1 : 0);
  }
  for (const ServiceSpec& s : m_.services) {
    if (s.role != v1::ROLE_JOB || !Moves(s)) continue;
    PlanPhase& ph = AddPhase(PhaseRole::kOneShotJob, s.name,
                             absl::StrCat("role job: runs once from the new image after the migrations, before ",
                                          new_word, " starts"));
    StepJob(ph, s, s.name, s.command, s.job_timeout, StepKind::kRunJob, absl::StrCat("run the one-shot job ", s.name),
            0);
  }
}

std::vector<const ServiceSpec*> Planner::PhaseStartIdle() {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  // The whole new slot at once: the old one serves meanwhile, so nothing
  // waits on a batch. Schedulers are singletons and wait for the handover.
  std::vector<const ServiceSpec*> schedulers;
  PlanPhase& ph = AddPhase(
      PhaseRole::kStart, new_word,
      absl::StrCat(old_word, " keeps serving, so every ", new_word, " instance starts at once beside it (names carry "
                   "the slot: <deployment>-<service>-", new_word, "-<replica>-<version>) and must pass its health "
                   "check; a failure stops the rollout with the proxy untouched and ", old_word, " serving, the ",
                   new_word, " containers left for inspection (the next blue-green rollout removes them)"));
  for (const std::string& name : moving_) {
    const ServiceSpec& s = *m_.FindService(name);
    if (s.role == v1::ROLE_JOB) continue;
    if (s.role == v1::ROLE_SCHEDULER) {
      schedulers.push_back(&s);
      continue;
    }
    for (uint32_t r = 0; r < s.replicas; ++r) {
      StepStart(ph, s, r, 0, idle_slot_);
      StepProbe(ph, s, r, NewVersion(s), 1, false, idle_slot_);
    }
    // As on one host, where the name reaches both slots from here on.
    StepForwards(ph, name, {}, 2, {live_slot_, idle_slot_});
  }
  if (ph.steps.empty()) {
    AddStep(ph, "none", StepKind::kPreflight, "", absl::StrCat("no service other than schedulers moves"), 0,
            kControllerStepTimeout);
  }
  return schedulers;
}

std::set<std::string> Planner::PreviewRoutes(const ServiceSpec& proxy) const {
  // Preview routes ("<route>-preview" of the same service) reach the new
  // slot only, for the smoke test and for people, before any user does.
  std::set<std::string> preview;
  for (const RouteSpec& r : proxy.routes) {
    const std::string base = r.name.size() > 8 && absl::EndsWith(r.name, "-preview")
                                 ? r.name.substr(0, r.name.size() - 8) : "";
    if (!base.empty() && std::find(moving_.begin(), moving_.end(), r.service) != moving_.end()) {
      preview.insert(r.name);
    }
  }
  return preview;
}

std::function<bool(const RouteSpec&)> Planner::SwitchedRoutes(const std::set<std::string>& preview) const {
  return [this, &preview](const RouteSpec& r) {
    return !preview.contains(r.name) && Moves(*m_.FindService(r.service));
  };
}

void Planner::PhasePreview(const std::set<std::string>& preview) {
  if (preview.empty()) return;
  auto is_preview = [&](const RouteSpec& r) { return preview.contains(r.name); };
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      "preview",
      absl::StrCat("the preview route(s) ", absl::StrJoin(preview, ", "), " now reach ", new_word,
                   " only, so it can be tried before any user request goes there"));
  StepProxySlots(ph, is_preview, {{idle_slot_, v1::BACKEND_STATE_READY}}, 0, "preview");
}

void Planner::PhaseBlueGreenSmoke(const std::set<std::string>& preview) {
  if (!m_.smoke_test.has_value()) return;
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  const ServiceSpec& s = *m_.FindService(m_.smoke_test->service);
  PlanPhase& sp = AddPhase(
      "smoke-test",
      absl::StrCat("before the switch: the smoke test runs against ", new_word, " while ", old_word,
                   " still serves users",
                   preview.empty() ? absl::StrCat(" (the proxy has no <route>-preview route: the test runs from the new "
                                                  "image on the deployment network, where service names reach both "
                                                  "slots; it can reach ", new_word, " by container name)")
                                   : absl::StrCat(", through the preview route ", absl::StrJoin(preview, ", ")),
                   "; a failure stops the rollout before any user sees ", to_version_));
  StepJob(sp, s, "smoke-test", m_.smoke_test->job.command, m_.smoke_test->job.timeout, StepKind::kSmokeTest,
          absl::StrCat("run the smoke test with the ", s.name, " ", NewVersion(s), " image"), 0);
}

void Planner::PhaseHandover(const ServiceSpec& s) {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      absl::StrCat("handover-", s.name),
      absl::StrCat("role scheduler, a singleton: the ", old_word, " ", s.name, " stops before the ", new_word,
                   " one starts, so scheduled work never runs twice; it moves last, once the rest of ", new_word,
                   " is healthy. A switch back moves the proxy only: the scheduler stays on ", to_version_,
                   ", which expand-only migrations keep safe"));
  for (auto& [r, cs] : live_[s.name]) {
    for (Live& c : cs) {
      if (c.running) StepStop(ph, s, r, c, 0);
    }
  }
  for (uint32_t r = 0; r < s.replicas; ++r) {
    StepStart(ph, s, r, 1, idle_slot_);
    StepProbe(ph, s, r, NewVersion(s), 2, false, idle_slot_);
  }
}

void Planner::PhaseBlueGreenPin() {
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      "pin", absl::StrCat("just before the switch: until ", new_word, " takes traffic, ", from_version_,
                          " is what should run; from here a restart of the controller or any host comes back on ",
                          to_version_));
  AddStep(ph, "pin", StepKind::kPin, "",
          absl::StrCat("record ", to_version_, " as ", m_.deployment, "'s pinned version"), 0, kControllerStepTimeout);
}

void Planner::PhaseSwitch(const std::set<std::string>& preview) {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      PhaseRole::kSwitch, "",
      absl::StrCat("ONE proxy_update per proxy host switches every route to ", new_word,
                   " at once: validated first (routes and addresses), then applied through HAProxy's runtime API "
                   "without a reload; ", old_word, "'s servers stay in the backends, drained, so `hoist cutover "
                   "--back` is one more runtime change"));
  StepProxySlots(ph, SwitchedRoutes(preview),
                 {{idle_slot_, v1::BACKEND_STATE_READY}, {live_slot_, v1::BACKEND_STATE_DRAIN}}, 0, "switch");
  AddStep(ph, absl::StrCat("live-", new_word), StepKind::kLiveSlot, "",
          absl::StrCat("record ", new_word, " as the slot that serves ", m_.deployment), 1, kControllerStepTimeout);
}

void Planner::PhaseGrace() {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      "grace",
      absl::StrCat(new_word, " serves; ", old_word, " keeps running for ", Fmt(in_.options.grace_period),
                   " so that `hoist cutover --back` is instant. `hoist cutover --finish` ends it early; while ",
                   old_word, " serves again the period does not run out"));
  AddStep(ph, "grace", StepKind::kGrace, "",
          absl::StrCat("keep ", old_word, " (", from_version_, ") for ", Fmt(in_.options.grace_period)), 0,
          in_.options.grace_period);
}

void Planner::PhaseRetire(const std::set<std::string>& preview) {
  const std::string old_word = SlotWord(live_slot_);
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase(
      absl::StrCat("retire-", old_word),
      absl::StrCat("after the grace period: ", old_word, "'s servers leave the proxy first, then its containers "
                   "stop and are removed; ", new_word, " becomes the slot the next rollout starts from"));
  StepProxySlots(ph, SwitchedRoutes(preview), {{idle_slot_, v1::BACKEND_STATE_READY}}, 0, "retire");
  for (const std::string& name : moving_) StepForwards(ph, name, {}, 0, {idle_slot_});
  for (const std::string& name : moving_) {
    const ServiceSpec& s = *m_.FindService(name);
    if (s.role == v1::ROLE_JOB) continue;
    for (auto& [r, cs] : live_[name]) {
      for (Live& c : cs) {
        if (c.running) StepStop(ph, s, r, c, 1);
        StepRemove(ph, s, r, c, 2);
      }
    }
  }
}

void Planner::PhaseBlueGreenPostcheck() {
  const std::string new_word = SlotWord(idle_slot_);
  PlanPhase& ph = AddPhase("postcheck",
                           absl::StrCat("last: every ", new_word, " instance is probed once more on ", to_version_));
  for (const std::string& name : moving_) {
    const ServiceSpec& s = *m_.FindService(name);
    if (s.role == v1::ROLE_JOB) continue;
    for (uint32_t r = 0; r < s.replicas; ++r) StepProbe(ph, s, r, NewVersion(s), 0, true, idle_slot_);
  }
  if (ph.steps.empty()) plan_.phases.pop_back();
}

}  // namespace hoist::rollout::internal

// The rolling strategy's moves: services stopped first, one phase per move
// unit in the order OrderMoves chose (migration gates first, groups that
// move together, batches of a service replaced start- or stop-first), and
// the undo-gate phase that puts things back when a gate fails.

#include <algorithm>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner_internal.h"

namespace hoist::rollout::internal {

StoppedServices Planner::PhasesStopFirst() {
  // Scheduler first, then the services rules stop early, in manifest order.
  std::vector<std::string> early;
  for (const ServiceSpec& s : m_.services) {
    if (order_.stopped_first.contains(s.name) && s.role == v1::ROLE_SCHEDULER) early.push_back(s.name);
  }
  for (const ServiceSpec& s : m_.services) {
    if (order_.stopped_first.contains(s.name) && s.role != v1::ROLE_SCHEDULER) early.push_back(s.name);
  }
  StoppedServices stopped;
  for (const std::string& name : early) {
    std::vector<std::pair<uint32_t, Live>> running;
    for (const auto& [replica, cs] : live_[name]) {
      for (const Live& c : cs) {
        if (c.running) running.emplace_back(replica, c);
      }
    }
    stopped.emplace_back(m_.FindService(name), std::move(running));
  }
  for (const std::string& name : early) PhaseStopFirst(name, order_.stopped_first.at(name));
  return stopped;
}

void Planner::PhaseStopFirst(const std::string& service, const std::string& why) {
  const ServiceSpec& s = *m_.FindService(service);
  PlanPhase& ph = AddPhase(absl::StrCat("stop-", service), why);
  std::vector<std::pair<uint32_t, const Live*>> running;
  for (auto& [replica, cs] : live_[service]) {
    for (Live& c : cs) {
      if (c.running) running.emplace_back(replica, &c);
    }
  }
  StepProxyRoutes(ph, service, running, 0);
  StepForwards(ph, service, running, 0);
  for (auto& [replica, cs] : live_[service]) {
    for (Live& c : cs) {
      if (c.running) StepStop(ph, s, replica, c, 1);
    }
  }
  if (ph.steps.empty()) {
    AddStep(ph, absl::StrCat("none-", service), StepKind::kPreflight, "",
            absl::StrCat("no ", service, " instance runs; nothing to stop"), 0, kControllerStepTimeout);
  }
}

UpdateOrder Planner::EffectiveOrder(const ServiceSpec& s, std::string* why) const {
  if (s.update_order == UpdateOrder::kStopFirst) {
    *why = "stop-first (update_order in the manifest)";
    return UpdateOrder::kStopFirst;
  }
  for (const PortSpec& p : s.ports) {
    if (p.host_port != 0) {
      *why = absl::StrCat("stop-first although the manifest asks start-first: it publishes host port ",
                          p.host_port, ", which the old and the new container cannot hold at once");
      return UpdateOrder::kStopFirst;
    }
  }
  *why = "start-first: each new instance is healthy before the old one stops";
  return UpdateOrder::kStartFirst;
}

void Planner::ReplaceService(PlanPhase& ph, const ServiceSpec& s, UpdateOrder order, uint32_t batch_size,
                             uint32_t& batch, bool allow_pause) {
  const std::vector<uint32_t> todo = ReplicasToReplace(s);
  for (size_t first = 0; first < todo.size(); first += batch_size) {
    std::vector<uint32_t> chunk(todo.begin() + first, todo.begin() + std::min(todo.size(), first + batch_size));
    ReplaceChunk(ph, s, order, chunk, batch);
    batch += 6;
    if (allow_pause && s.rolling.pause > absl::ZeroDuration() && first + batch_size < todo.size()) {
      AddStep(ph, absl::StrCat("pause-", s.name, "-", first / batch_size + 1), StepKind::kPause, "",
              absl::StrCat("pause ", Fmt(s.rolling.pause), " before the next ", s.name, " batch"), batch,
              s.rolling.pause);
      ++batch;
    }
  }
  RemoveExtraReplicas(ph, s, batch);
}

std::vector<uint32_t> Planner::ReplicasToReplace(const ServiceSpec& s) {
  const std::string version = NewVersion(s);
  std::vector<uint32_t> todo;
  for (uint32_t r = 0; r < s.replicas; ++r) {
    bool has_new = false, has_old = false;
    for (const Live& c : live_[s.name][r]) {
      if (c.version == version && c.agent == placement_[s.name][r] && c.running) {
        has_new = true;
      } else {
        has_old = true;
      }
    }
    if (!has_new || has_old) todo.push_back(r);
  }
  return todo;
}

std::vector<std::pair<uint32_t, Live*>> Planner::OldInstances(const ServiceSpec& s, uint32_t r) {
  const std::string version = NewVersion(s);
  std::vector<std::pair<uint32_t, Live*>> out;
  for (Live& c : live_[s.name][r]) {
    if (!(c.version == version && c.agent == placement_[s.name][r])) out.emplace_back(r, &c);
  }
  return out;
}

bool Planner::NeedsStart(const ServiceSpec& s, uint32_t r) {
  const std::string version = NewVersion(s);
  for (const Live& c : live_[s.name][r]) {
    if (c.version == version && c.agent == placement_[s.name][r] && c.running) return false;
  }
  return true;
}

void Planner::DropReplaced(const ServiceSpec& s, uint32_t r) {
  const std::string version = NewVersion(s);
  auto& cs = live_[s.name][r];
  cs.erase(std::remove_if(cs.begin(), cs.end(),
                          [&](const Live& c) { return !(c.version == version && c.agent == placement_[s.name][r]); }),
           cs.end());
}

void Planner::ReplaceChunk(PlanPhase& ph, const ServiceSpec& s, UpdateOrder order,
                           const std::vector<uint32_t>& chunk, uint32_t batch) {
  const std::string version = NewVersion(s);
  const bool routed = Routed(s.name);
  const bool forwarded = Forwarded(s.name);
  if (order == UpdateOrder::kStartFirst) {
    for (uint32_t r : chunk) {
      if (NeedsStart(s, r)) StepStart(ph, s, r, batch);
    }
  }
  // Collected after the starts: starting adds to the vectors these point into.
  std::vector<std::pair<uint32_t, Live*>> olds;
  for (uint32_t r : chunk) {
    for (auto& o : OldInstances(s, r)) olds.push_back(o);
  }
  std::vector<std::pair<uint32_t, const Live*>> draining;
  for (auto& [r, c] : olds) {
    if (c->running) draining.emplace_back(r, c);
  }
  if (order == UpdateOrder::kStartFirst) {
    for (uint32_t r : chunk) StepProbe(ph, s, r, version, batch + 1, false);
    if (routed && !draining.empty()) StepProxyRoutes(ph, s.name, draining, batch + 2);
    if (forwarded) StepForwards(ph, s.name, draining, batch + 2);
    for (auto& [r, c] : olds) {
      if (c->running) StepStop(ph, s, r, *c, batch + 3);
    }
    for (auto& [r, c] : olds) StepRemove(ph, s, r, *c, batch + 4);
    for (uint32_t r : chunk) DropReplaced(s, r);
  } else {
    if (routed && !draining.empty()) StepProxyRoutes(ph, s.name, draining, batch);
    if (forwarded && !draining.empty()) StepForwards(ph, s.name, draining, batch);
    for (auto& [r, c] : olds) {
      if (c->running) StepStop(ph, s, r, *c, batch + 1);
    }
    for (auto& [r, c] : olds) StepRemove(ph, s, r, *c, batch + 2);
    for (uint32_t r : chunk) DropReplaced(s, r);
    for (uint32_t r : chunk) {
      if (NeedsStart(s, r)) StepStart(ph, s, r, batch + 3);
    }
    for (uint32_t r : chunk) StepProbe(ph, s, r, version, batch + 4, false);
    if (routed) StepProxyRoutes(ph, s.name, {}, batch + 5);
    if (forwarded) StepForwards(ph, s.name, {}, batch + 5);
  }
}

void Planner::RemoveExtraReplicas(PlanPhase& ph, const ServiceSpec& s, uint32_t& batch) {
  std::vector<std::pair<uint32_t, Live*>> extras;
  for (auto& [r, cs] : live_[s.name]) {
    if (r < s.replicas) continue;
    for (Live& c : cs) extras.emplace_back(r, &c);
  }
  if (extras.empty()) return;
  const bool routed = Routed(s.name);
  const bool forwarded = Forwarded(s.name);
  std::vector<std::pair<uint32_t, const Live*>> draining;
  for (auto& [r, c] : extras) {
    if (c->running) draining.emplace_back(r, c);
  }
  if (routed && !draining.empty()) StepProxyRoutes(ph, s.name, draining, batch);
  if (forwarded && !draining.empty()) StepForwards(ph, s.name, draining, batch);
  for (auto& [r, c] : extras) {
    if (c->running) StepStop(ph, s, r, *c, batch + 1);
  }
  for (auto& [r, c] : extras) StepRemove(ph, s, r, *c, batch + 2);
  for (auto it = live_[s.name].begin(); it != live_[s.name].end();) {
    it = it->first >= s.replicas ? live_[s.name].erase(it) : std::next(it);
  }
  batch += 3;
}

std::string Planner::UnitReason(const MoveUnit& unit, bool has_migration_phase) {
  std::vector<std::string> parts;
  const ServiceSpec& first = *m_.FindService(unit.members.front());
  if (unit.together) {
    // The group's own note says why and in which order.
  } else {
    switch (first.role) {
      case v1::ROLE_JOB: parts.push_back("role job: runs once from the new image before the long-running services move"); break;
      case v1::ROLE_API:
        parts.push_back(mode_ == Mode::kInitial || mode_ == Mode::kRestore
                            ? "role api: the database-facing API starts first, once the database is up"
                            : "role api: the database-facing API moves first");
        if (has_migration_phase) parts.push_back("its migration gate ran just before");
        break;
      case v1::ROLE_WORKER: parts.push_back("role worker: moves after the API, in batches, so background work keeps draining"); break;
      case v1::ROLE_SCHEDULER: parts.push_back("role scheduler: started again on the new version once the API and the workers run it"); break;
      case v1::ROLE_WEB: parts.push_back("role web: the front end moves after the API it talks to"); break;
      case v1::ROLE_PROXY: parts.push_back("role proxy: last, so it picks up every change behind it"); break;
      case v1::ROLE_DATABASE: parts.push_back("role database: starts before everything that uses it"); break;
      default: break;
    }
  }
  for (const std::string& n : unit.notes) parts.push_back(n);
  for (const std::string& member : unit.members) {
    const ServiceSpec& s = *m_.FindService(member);
    for (const std::string& d : s.after) parts.push_back(absl::StrCat(member, " after ", d, " (services.", member, ".after)"));
  }
  return absl::StrJoin(parts, "; ");
}

void Planner::PhaseUndoGate(const StoppedServices& stopped) {
  if (!GatedBeforeMoves()) return;
  PlanPhase& ph = AddPhase(
      PhaseRole::kUndoGate, "",
      absl::StrCat("only when a migration gate or a one-shot job before the moves fails, while no instance has "
                   "moved yet: puts ", m_.deployment,
                   " back as it was before the rollout (", from_version_,
                   " pinned again, the services stopped first started again); skipped otherwise"));
  AddStep(ph, "pin-back", StepKind::kPinBack, "",
          absl::StrCat("record ", from_version_, " as ", m_.deployment, "'s pinned version again"), 0,
          kControllerStepTimeout);
  StepsRestartStopped(ph, stopped);
  StepsRouteRestarted(ph, stopped);
}

bool Planner::GatedBeforeMoves() const {
  // Gates: migration gates, and one-shot jobs that run before any service moves.
  bool gated = false;
  for (const PlanPhase& ph : plan_.phases) {
    if (MovesInstances(ph.role)) break;
    gated = gated || IsGate(ph.role);
  }
  return gated;
}

void Planner::StepsRestartStopped(PlanPhase& ph, const StoppedServices& stopped) {
  for (const auto& [s, running] : stopped) {
    for (const auto& [replica, c] : running) {
      PlanStep& st = AddStep(ph, absl::StrCat("restart-", s->name, "-", replica), StepKind::kStartInstance, c.agent,
                             absl::StrCat("start ", s->name, " replica ", replica, " (", c.version, ") on ", c.agent,
                                          " again, as it ran before"),
                             1, in_.options.start_timeout);
      st.instance = Ref(s->name, replica);
      v1::StartInstance* a = st.action.mutable_start_instance();
      *a->mutable_instance() = *st.instance;
      a->set_version(c.version);
      // The stopped container is started again; the spec is for a host
      // that lost it meanwhile.
      const std::string image = s->versioned() && in_.current.has_value() && in_.current->images().contains(s->name)
                                    ? in_.current->images().at(s->name)
                                    : NewImage(*s);
      *a->mutable_spec() = SpecOf(*s, image, c.agent);
      StepProbe(ph, *s, replica, c.version, 2, false);
    }
  }
}

void Planner::StepsRouteRestarted(PlanPhase& ph, const StoppedServices& stopped) {
  std::set<std::string> names;
  for (const auto& [s, running] : stopped) {
    if (!running.empty()) names.insert(s->name);
  }
  auto restarted = [&](const std::string& service) {
    for (const auto& [s, running] : stopped) {
      if (s->name == service) return &running;
    }
    return static_cast<const std::vector<std::pair<uint32_t, Live>>*>(nullptr);
  };
  StepProxyUpdate(
      ph, [&](const RouteSpec& r) { return names.contains(r.service); },
      [&](const RouteSpec& r, v1::ProxyRoute* route) {
        int n = 0;
        for (const auto& [replica, c] : *restarted(r.service)) {
          Live back = c;
          back.running = true;
          if (AddBackend(route, r, replica, back, live_slot_, v1::BACKEND_STATE_READY)) ++n;
        }
        return absl::StrCat(r.name, " -> ", n, " restarted");
      },
      3, "proxy-back", "set back");
  for (const std::string& name : names) {
    if (!Forwarded(name)) continue;
    // The forwarders see the restarted containers as the live ones.
    auto saved = live_[name];
    live_[name].clear();
    for (const auto& [replica, c] : *restarted(name)) {
      Live back = c;
      back.running = true;
      live_[name][replica].push_back(back);
    }
    StepForwards(ph, name, {}, 3);
    live_[name] = std::move(saved);
  }
}

void Planner::PhaseUnit(const MoveUnit& unit, size_t /*position*/) {
  const bool gated = PhasesMigrate(unit);
  const ServiceSpec& first = *m_.FindService(unit.members.front());
  if (!unit.together && first.role == v1::ROLE_JOB) {
    PlanPhase& ph = AddPhase(PhaseRole::kOneShotJob, first.name, UnitReason(unit, gated));
    StepJob(ph, first, first.name, first.command, first.job_timeout, StepKind::kRunJob,
            absl::StrCat("run the one-shot job ", first.name), 0);
    return;
  }
  if (unit.together) {
    PhaseGroup(unit, gated);
    return;
  }
  PhaseService(first, unit, gated);
}

bool Planner::PhasesMigrate(const MoveUnit& unit) {
  // Migration gates of the unit's services come first, as their own phases.
  bool gated = false;
  if (mode_ == Mode::kUpgrade || mode_ == Mode::kInitial) {
    for (const std::string& member : unit.members) {
      const ServiceSpec& s = *m_.FindService(member);
      if (!s.migration.has_value()) continue;
      gated = true;
      PlanPhase& ph = AddPhase(
          PhaseRole::kMigrationGate, member,
          absl::StrCat("migration gate for ", member, ": runs from the ", to_version_, " image before any ",
                       member, " instance moves; a non-zero exit stops the rollout with nothing else "
                       "moved (each migration runs in its own transaction, so data is left as it was)"));
      StepJob(ph, s, "migrate", s.migration->command, s.migration->timeout, StepKind::kRunJob,
              absl::StrCat("run the ", member, " migration"), StepDatabasesHealthy(ph) ? 1 : 0);
    }
  }
  return gated;
}

void Planner::PhaseGroup(const MoveUnit& unit, bool gated) {
  PlanPhase& ph = AddPhase(PhaseRole::kReplace, unit.name, UnitReason(unit, gated));
  std::vector<std::pair<uint32_t, const Live*>> draining;
  for (const std::string& member : unit.members) {
    draining.clear();
    for (auto& [r, cs] : live_[member]) {
      for (const Live& c : cs) {
        if (c.running && c.version != NewVersion(*m_.FindService(member))) draining.emplace_back(r, &c);
      }
    }
    if (!draining.empty()) StepProxyRoutes(ph, member, draining, 0);
    if (!draining.empty()) StepForwards(ph, member, draining, 0);
  }
  for (const std::string& member : unit.members) {
    const ServiceSpec& s = *m_.FindService(member);
    for (auto& [r, cs] : live_[member]) {
      for (Live& c : cs) {
        if (c.running && c.version != NewVersion(s)) StepStop(ph, s, r, c, 1);
      }
    }
  }
  uint32_t batch = 2;
  for (const std::string& member : unit.members) {
    const ServiceSpec& s = *m_.FindService(member);
    ReplaceService(ph, s, UpdateOrder::kStopFirst, std::max<uint32_t>(1, s.replicas), batch, false);
  }
}

void Planner::PhaseService(const ServiceSpec& s, const MoveUnit& unit, bool gated) {
  uint32_t batch = 0;
  PhaseRole role = order_.stopped_first.contains(s.name) ? PhaseRole::kStart : PhaseRole::kReplace;
  if (mode_ == Mode::kInitial || mode_ == Mode::kRestore) role = PhaseRole::kStart;
  PlanPhase& ph = AddPhase(role, s.name, "");
  std::string reason = UnitReason(unit, gated);
  if (order_.stopped_first.contains(s.name) || mode_ == Mode::kInitial || mode_ == Mode::kRestore) {
    ReplaceService(ph, s, UpdateOrder::kStopFirst, std::max<uint32_t>(1, s.replicas), batch, false);
    absl::StrAppend(&reason, "; all ", s.replicas, " replica(s) start at once",
                    mode_ == Mode::kInitial || mode_ == Mode::kRestore ? "" : " (it was stopped earlier)");
  } else {
    absl::StrAppend(&reason, ReplaceRolling(ph, s, batch));
  }
  if (s.role == v1::ROLE_PROXY) {
    StepProxyReload(ph, batch);
    absl::StrAppend(&reason, "; then its routes are set to the new instances behind it");
  }
  ph.reason = reason;
  if (ph.steps.empty()) {
    AddStep(ph, absl::StrCat("noop-", s.name), StepKind::kPreflight, "",
            absl::StrCat("every ", s.name, " replica already runs ", NewVersion(s), "; nothing to do"), 0,
            kControllerStepTimeout);
  }
}

std::string Planner::ReplaceRolling(PlanPhase& ph, const ServiceSpec& s, uint32_t& batch) {
  std::string order_why;
  UpdateOrder order = EffectiveOrder(s, &order_why);
  uint32_t k = s.rolling.max_parallel;
  std::string health_why;
  if (order == UpdateOrder::kStartFirst) {
    health_why = absl::StrCat("never fewer than ", s.replicas, " healthy");
  } else {
    uint32_t min_healthy = s.EffectiveMinHealthy(UpdateOrder::kStopFirst);
    if (min_healthy >= s.replicas) {
      min_healthy = s.replicas > 0 ? s.replicas - 1 : 0;
      plan_.warnings.push_back(absl::StrCat(
          s.name, ": min_healthy ", s.EffectiveMinHealthy(UpdateOrder::kStopFirst), " cannot be kept "
          "stop-first; one replica at a time is replaced (", order_why, ")"));
    }
    k = std::max<uint32_t>(1, std::min(k, s.replicas - min_healthy));
    health_why = absl::StrCat("at least ", min_healthy, " of ", s.replicas, " stay healthy");
    if (s.update_order == UpdateOrder::kStartFirst) {
      plan_.warnings.push_back(absl::StrCat(s.name, " is replaced ", order_why));
    }
  }
  ReplaceService(ph, s, order, std::max<uint32_t>(1, k), batch, true);
  return absl::StrCat("; ", s.replicas, " replica(s) ", order_why, "; ", k, " at a time, ", health_why,
                      s.rolling.pause > absl::ZeroDuration()
                          ? absl::StrCat(", pause ", Fmt(s.rolling.pause), " between batches")
                          : "");
}

}  // namespace hoist::rollout::internal

// RolloutManager's reading side: a deployment as applied (its env values
// redacted), a rollout with every step's state, the version matrix of what
// runs where, and the status that sums them up with the problems it sees.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "controller/rollout/rollout_manager.h"
#include "controller/rollout/secrets.h"
#include "shared/proto_time.h"
#include "shared/semver.h"

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

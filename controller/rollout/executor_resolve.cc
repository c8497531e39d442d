// Executor's addressing of agent steps from what the rollout has learned
// since it was planned: proxy backends and forward targets at the ports their
// start reported, and image digests as the release recorded them at the
// first pull (a tag pushed again since is a failed step, not new content).

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/rollout/executor.h"

namespace hoist::rollout {

absl::Status Executor::ResolveBackends(const StoredRollout& rollout, hoist::v1::Step* action) {
  std::vector<hoist::v1::ProxyBackend*> open;
  if (action->has_proxy_update()) {
    for (auto& route : *action->mutable_proxy_update()->mutable_routes()) {
      for (auto& b : *route.mutable_backends()) {
        if (b.address().empty() && b.has_instance()) open.push_back(&b);
      }
    }
  } else if (action->has_forward_update()) {
    for (auto& port : *action->mutable_forward_update()->mutable_ports()) {
      for (auto& b : *port.mutable_targets()) {
        if (b.address().empty() && b.has_instance()) open.push_back(&b);
      }
    }
  }
  if (open.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<StoredStep>> steps = store_->GetSteps(rollout.id);
  if (!steps.ok()) return steps.status();
  auto same = [](const hoist::v1::InstanceRef& a, const hoist::v1::InstanceRef& b) {
    return a.deployment() == b.deployment() && a.service() == b.service() && a.replica() == b.replica() &&
           a.slot() == b.slot();
  };
  for (hoist::v1::ProxyBackend* b : open) {
    const hoist::v1::PortMapping* found = nullptr;
    const StoredStep* started = nullptr;
    for (const StoredStep& s : *steps) {  // the last start of that instance wins
      if (s.state != hoist::v1::STEP_STATE_SUCCEEDED || !s.action.has_value() || !s.action->has_start_instance() ||
          !s.result.has_value() || !s.result->has_start()) {
        continue;
      }
      const hoist::v1::StartInstance& start = s.action->start_instance();
      if (!same(start.instance(), b->instance()) || start.version() != b->version()) continue;
      started = &s;
      found = nullptr;
      for (const hoist::v1::PortMapping& p : s.result->start().published_ports()) {
        if (p.container_port() == b->container_port() && p.host_port() != 0 &&
            (p.protocol().empty() || p.protocol() == "tcp")) {
          found = &p;
        }
      }
    }
    const std::string what = absl::StrCat(b->instance().service(), " replica ", b->instance().replica(), " (",
                                          b->version(), ")");
    if (started == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot route to ", what, ": no step of this rollout started it, so the port Docker published for its "
          "container port ", b->container_port(), " is unknown; plan again so the plan reads it from the hosts"));
    }
    if (found == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("cannot route to ", what, ": its start on ", started->agent_id,
                                                        " reported no published host port for container port ",
                                                        b->container_port()));
    }
    const std::string& address = found->host_ip();
    if (address.empty() || address == "0.0.0.0" || address == "::") {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot route to ", what, ": its container port ", b->container_port(), " was published on every address of ",
          started->agent_id, ", not on the host's address the plan gave"));
    }
    b->set_address(address);
    b->set_port(found->host_port());
  }
  return absl::OkStatus();
}

absl::StatusOr<hoist::v1::Release> Executor::ReleaseOf(Runner* runner, const StoredRollout& rollout,
                                                      const std::string& version) {
  // Held while reading: the steps of a batch wait for one read, not each its own.
  absl::MutexLock lock(&runner->releases_mu);
  auto it = runner->releases.find(version);
  if (it != runner->releases.end()) return it->second;
  auto release = store_->GetRelease(rollout.deployment, version);
  if (!release.ok()) return release.status();
  runner->releases[version] = *release;
  return release;
}

absl::Status Executor::ResolveDigest(const StoredRollout& rollout, Runner* runner, hoist::v1::Step* action) {
  if (!action->has_start_instance()) return absl::OkStatus();
  hoist::v1::StartInstance* start = action->mutable_start_instance();
  auto release = ReleaseOf(runner, rollout, start->version());
  if (absl::IsNotFound(release.status())) return absl::OkStatus();  // a pinned image, not a release's
  if (!release.ok()) return release.status();
  const std::string& service = start->instance().service();
  auto image = release->images().find(service);
  auto digest = release->digests().find(service);
  if (image == release->images().end() || digest == release->digests().end() ||
      image->second != start->spec().image()) {
    return absl::OkStatus();
  }
  start->set_image_digest(digest->second);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Executor::CheckPulledDigest(uint64_t epoch, const StoredRollout& rollout, Runner* runner,
                                                        const std::string& agent_id, const std::string& image,
                                                        const std::string& digest) {
  if (digest.empty() || rollout.to_version.empty()) return std::string();
  auto release = ReleaseOf(runner, rollout, rollout.to_version);
  if (absl::IsNotFound(release.status())) return std::string();
  if (!release.ok()) return release.status();
  std::map<std::string, std::string> pulled;
  for (const auto& [service, ref] : release->images()) {
    if (ref == image) pulled[service] = digest;
  }
  if (pulled.empty()) return std::string();  // a pinned image of the manifest
  // Digests this run has seen recorded already are compared without a write.
  std::map<std::string, std::string> recorded_before;
  for (const auto& [service, d] : pulled) {
    auto first = release->digests().find(service);
    if (first == release->digests().end()) break;
    recorded_before[service] = first->second;
  }
  absl::StatusOr<std::map<std::string, std::string>> recorded = recorded_before;
  if (recorded_before.size() != pulled.size()) {
    recorded = store_->RecordDigests(epoch, rollout.deployment, rollout.to_version, pulled);
    if (!recorded.ok()) return recorded.status();
    absl::MutexLock lock(&runner->releases_mu);
    auto& digests = *runner->releases[rollout.to_version].mutable_digests();
    for (const auto& [service, first] : *recorded) digests[service] = first;
  }
  for (const auto& [service, first] : *recorded) {
    if (first == digest) continue;
    return absl::StrCat(image, " pulled on ", agent_id, " is ", digest, ", but release ", rollout.to_version,
                        " recorded ", first, " for ", service,
                        " when it was first pulled: the tag was pushed again since. Publish the new image under a "
                        "new version (or push the recorded one back to the tag)");
  }
  return std::string();
}

}  // namespace hoist::rollout

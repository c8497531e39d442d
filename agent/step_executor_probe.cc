// probe_health: probes an instance's running container (HTTP, TCP or a
// command, health_probe.h) until it passes, fails for good, or the probe's
// deadline; and the health this agent last saw, for the inventory.

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/container_names.h"
#include "agent/health_probe.h"
#include "agent/step_executor.h"
#include "agent/step_executor_internal.h"
#include "shared/labels.h"
#include "shared/proto_time.h"

namespace hoist::agent {

using internal::Describe;
using internal::kStoppingMessage;

namespace {

constexpr absl::Duration kDefaultProbeInterval = absl::Seconds(2);
constexpr absl::Duration kDefaultProbeTimeout = absl::Seconds(2);
constexpr absl::Duration kDefaultProbeDeadline = absl::Seconds(60);

}  // namespace

absl::StatusOr<docker::ContainerInfo> StepExecutor::RunningContainerOf(const hoist::v1::InstanceRef& instance,
                                                                       absl::string_view prefer_version) {
  auto containers = docker_->List(InstanceFilters(instance));
  if (!containers.ok()) return containers.status();
  const docker::ContainerInfo* best = nullptr;
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || c.state != "running") continue;
    bool preferred = !prefer_version.empty() && LabelOf(c, labels::kVersion) == prefer_version;
    bool best_preferred = best != nullptr && !prefer_version.empty() && LabelOf(*best, labels::kVersion) == prefer_version;
    if (best == nullptr || (preferred && !best_preferred) ||
        (preferred == best_preferred && c.created_at > best->created_at)) {
      best = &c;
    }
  }
  if (best == nullptr) {
    return absl::NotFoundError(absl::StrCat("no running container of instance ", Describe(instance)));
  }
  // Inspect has what a summary may lack (published ports, network IPs).
  return docker_->Inspect(best->id);
}

hoist::v1::Health StepExecutor::ObservedHealth(const std::string& container_id) const {
  absl::MutexLock lock(&mu_);
  auto it = observed_health_.find(container_id);
  return it == observed_health_.end() ? hoist::v1::HEALTH_UNSPECIFIED : it->second;
}

absl::Status StepExecutor::ProbeHealth(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& probe = ctx.step.probe_health();
  const auto& check = probe.check();
  auto positive = [](const google::protobuf::Duration& d, absl::Duration fallback) {
    absl::Duration v = ToDuration(d);
    return v > absl::ZeroDuration() ? v : fallback;
  };
  absl::Duration interval = positive(check.interval(), kDefaultProbeInterval);
  absl::Duration attempt_timeout = positive(check.timeout(), kDefaultProbeTimeout);
  absl::Time first = clock_->Now();
  absl::Time deadline = std::min(ctx.deadline, first + positive(check.deadline(), kDefaultProbeDeadline));
  std::string prefer_version = !probe.version().empty() ? probe.version()
                               : check.has_http()       ? check.http().expected_version()
                                                        : "";
  auto* out = result->mutable_probe();
  uint32_t attempt = 0;
  // The detail of the last attempt that had its whole timeout: an attempt cut
  // short by the deadline may only say it ran out of time.
  std::string last_whole_detail;
  for (;;) {
    ++attempt;
    absl::Time attempt_start = clock_->Now();
    ProbeOutcome outcome;
    const absl::Duration allowed = std::min(attempt_timeout, deadline - attempt_start);
    const bool cut_short = allowed < attempt_timeout;
    auto container = RunningContainerOf(probe.instance(), prefer_version);
    if (!container.ok()) {
      outcome.detail = std::string(container.status().message());
    } else {
      outcome = ProbeOnce(*docker_, *container, check, std::max(absl::Milliseconds(1), allowed));
      absl::MutexLock lock(&mu_);
      observed_health_[container->id] = outcome.passed ? hoist::v1::HEALTH_HEALTHY : hoist::v1::HEALTH_UNHEALTHY;
    }
    out->set_attempts(attempt);
    if (!outcome.version.empty()) out->set_version(outcome.version);
    hoist::v1::StepProgress progress;
    progress.set_message(absl::StrCat("probe ", attempt, " of ", Describe(probe.instance()), ": ",
                                      outcome.passed ? "passed" : "failed", " (", outcome.detail, ")"));
    progress.mutable_probe()->set_attempt(attempt);
    progress.mutable_probe()->set_passed(outcome.passed);
    progress.mutable_probe()->set_detail(outcome.detail);
    Progress(ctx, std::move(progress));
    if (outcome.passed) return absl::OkStatus();
    if (outcome.permanent) {
      return absl::FailedPreconditionError(
          absl::StrCat("instance ", Describe(probe.instance()), " cannot be probed: ", outcome.detail));
    }
    absl::Time next = attempt_start + interval;
    if (next >= deadline) {
      std::string last = outcome.detail;
      if (cut_short && !last_whole_detail.empty() && last_whole_detail != outcome.detail) {
        last = absl::StrCat(outcome.detail, " (cut short by the deadline); the attempt before: ", last_whole_detail);
      }
      return absl::DeadlineExceededError(absl::StrCat("instance ", Describe(probe.instance()), " not healthy after ",
                                                      attempt, attempt == 1 ? " attempt" : " attempts", " in ",
                                                      absl::FormatDuration(clock_->Now() - first),
                                                      "; last attempt: ", last));
    }
    if (!cut_short) last_whole_detail = outcome.detail;
    if (!SleepUntil(next)) return absl::CancelledError(kStoppingMessage);
  }
}

}  // namespace hoist::agent

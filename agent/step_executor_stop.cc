// stop_instance and remove_instance: every managed container of the
// instance (of one version, when the step names it) is stopped, or removed.

#include "absl/strings/str_cat.h"
#include "agent/container_names.h"
#include "agent/step_executor.h"
#include "shared/logging.h"
#include "shared/proto_time.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {
namespace {

// Stop timeout when neither the step nor the spec names one (Docker's own default).
constexpr absl::Duration kDefaultStopTimeout = absl::Seconds(10);

bool IsRunningState(absl::string_view state) {
  return state == "running" || state == "restarting" || state == "paused";
}

}  // namespace

absl::Status StepExecutor::StopInstance(const StepContext& ctx) {
  const auto& stop = ctx.step.stop_instance();
  auto containers = docker_->List(InstanceFilters(stop.instance(), stop.version()));
  if (!containers.ok()) return containers.status();
  absl::Duration timeout = stop.has_timeout() && ToDuration(stop.timeout()) > absl::ZeroDuration()
                               ? ToDuration(stop.timeout())
                               : kDefaultStopTimeout;
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || !IsRunningState(c.state)) continue;
    if (absl::Status s = CheckDeadline(ctx, absl::StrCat("stopping ", c.name)); !s.ok()) return s;
    absl::Status s = docker_->Stop(c.id, timeout);
    if (!s.ok() && !absl::IsNotFound(s)) return absl::Status(s.code(), absl::StrCat("stop ", c.name, ": ", s.message()));
    spdlog::info("step {}: stopped {}", ctx.step.step_id(), c.name);
  }
  return absl::OkStatus();
}

absl::Status StepExecutor::RemoveInstance(const StepContext& ctx) {
  const auto& remove = ctx.step.remove_instance();
  auto containers = docker_->List(InstanceFilters(remove.instance(), remove.version()));
  if (!containers.ok()) return containers.status();
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || c.state == "removing") continue;
    if (IsRunningState(c.state)) {
      if (!remove.force()) {
        return absl::FailedPreconditionError(
            absl::StrCat("container ", c.name, " is still ", c.state, "; stop it first or set remove_instance.force"));
      }
      if (absl::Status s = CheckDeadline(ctx, absl::StrCat("stopping ", c.name)); !s.ok()) return s;
      absl::Status s = docker_->Stop(c.id, kDefaultStopTimeout);
      if (!s.ok() && !absl::IsNotFound(s)) return absl::Status(s.code(), absl::StrCat("stop ", c.name, ": ", s.message()));
    }
    absl::Status s = docker_->Remove(c.id, /*force=*/remove.force(), /*remove_volumes=*/false);
    if (!s.ok() && !absl::IsNotFound(s)) return absl::Status(s.code(), absl::StrCat("remove ", c.name, ": ", s.message()));
    spdlog::info("step {}: removed {}", ctx.step.step_id(), c.name);
  }
  return absl::OkStatus();
}

}  // namespace hoist::agent

#include "shared/proto_names.h"

#include <array>
#include <utility>

namespace hoist {
namespace {

template <typename E, size_t N>
std::string NameOf(const std::array<std::pair<E, absl::string_view>, N>& table, E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return std::string(name);
  }
  return "";
}

template <typename E, size_t N>
E ParseName(const std::array<std::pair<E, absl::string_view>, N>& table, absl::string_view name, E fallback) {
  for (const auto& [v, n] : table) {
    if (n == name) return v;
  }
  return fallback;
}

using hoist::v1::ContainerState;
using hoist::v1::Health;
using hoist::v1::RolloutState;
using hoist::v1::StepState;

constexpr std::array<std::pair<ContainerState, absl::string_view>, 7> kStates{{
    {hoist::v1::CONTAINER_STATE_CREATED, "created"},
    {hoist::v1::CONTAINER_STATE_RUNNING, "running"},
    {hoist::v1::CONTAINER_STATE_PAUSED, "paused"},
    {hoist::v1::CONTAINER_STATE_RESTARTING, "restarting"},
    {hoist::v1::CONTAINER_STATE_EXITED, "exited"},
    {hoist::v1::CONTAINER_STATE_REMOVING, "removing"},
    {hoist::v1::CONTAINER_STATE_DEAD, "dead"},
}};

constexpr std::array<std::pair<Health, absl::string_view>, 3> kHealth{{
    {hoist::v1::HEALTH_STARTING, "starting"},
    {hoist::v1::HEALTH_HEALTHY, "healthy"},
    {hoist::v1::HEALTH_UNHEALTHY, "unhealthy"},
}};

constexpr std::array<std::pair<RolloutState, absl::string_view>, 7> kRolloutStates{{
    {hoist::v1::ROLLOUT_STATE_PENDING, "pending"},
    {hoist::v1::ROLLOUT_STATE_RUNNING, "running"},
    {hoist::v1::ROLLOUT_STATE_GRACE, "grace"},
    {hoist::v1::ROLLOUT_STATE_SUCCEEDED, "succeeded"},
    {hoist::v1::ROLLOUT_STATE_FAILED, "failed"},
    {hoist::v1::ROLLOUT_STATE_CANCELLED, "cancelled"},
    {hoist::v1::ROLLOUT_STATE_ROLLED_BACK, "rolled_back"},
}};

constexpr std::array<std::pair<StepState, absl::string_view>, 5> kStepStates{{
    {hoist::v1::STEP_STATE_PENDING, "pending"},
    {hoist::v1::STEP_STATE_RUNNING, "running"},
    {hoist::v1::STEP_STATE_SUCCEEDED, "succeeded"},
    {hoist::v1::STEP_STATE_FAILED, "failed"},
    {hoist::v1::STEP_STATE_SKIPPED, "skipped"},
}};

}  // namespace

std::string SlotName(hoist::v1::Slot slot) { return slot == hoist::v1::SLOT_GREEN ? "green" : "blue"; }

hoist::v1::Slot ParseSlot(absl::string_view name) {
  if (name == "blue") return hoist::v1::SLOT_BLUE;
  if (name == "green") return hoist::v1::SLOT_GREEN;
  return hoist::v1::SLOT_UNSPECIFIED;
}

std::string ContainerStateName(ContainerState state) { return NameOf(kStates, state); }
ContainerState ParseContainerState(absl::string_view name) {
  return ParseName(kStates, name, hoist::v1::CONTAINER_STATE_UNSPECIFIED);
}
std::string HealthName(Health health) { return NameOf(kHealth, health); }
Health ParseHealth(absl::string_view name) { return ParseName(kHealth, name, hoist::v1::HEALTH_UNSPECIFIED); }
std::string RolloutStateName(RolloutState state) { return NameOf(kRolloutStates, state); }
RolloutState ParseRolloutState(absl::string_view name) {
  return ParseName(kRolloutStates, name, hoist::v1::ROLLOUT_STATE_UNSPECIFIED);
}
bool IsTerminal(RolloutState s) {
  return s == hoist::v1::ROLLOUT_STATE_SUCCEEDED || s == hoist::v1::ROLLOUT_STATE_FAILED ||
         s == hoist::v1::ROLLOUT_STATE_CANCELLED || s == hoist::v1::ROLLOUT_STATE_ROLLED_BACK;
}

std::string StepStateName(StepState state) { return NameOf(kStepStates, state); }
StepState ParseStepState(absl::string_view name) {
  return ParseName(kStepStates, name, hoist::v1::STEP_STATE_UNSPECIFIED);
}

std::string StrategyName(hoist::v1::Strategy strategy) {
  return strategy == hoist::v1::STRATEGY_BLUE_GREEN ? "blue-green" : "rolling";
}

std::string OnFailureName(hoist::v1::OnFailure on_failure) {
  return on_failure == hoist::v1::ON_FAILURE_ROLLBACK ? "rollback" : "stop";
}

}  // namespace hoist

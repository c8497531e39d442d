#pragma once

// Lower-case names of the protocol's enums, as they appear in Docker labels,
// database rows, logs and the CLI's tables.

#include <string>

#include "absl/strings/string_view.h"
#include "hoist/v1/common.pb.h"
#include "hoist/v1/operator.pb.h"

namespace hoist {

// "blue" or "green" (UNSPECIFIED is blue).
std::string SlotName(hoist::v1::Slot slot);
hoist::v1::Slot ParseSlot(absl::string_view name);  // unknown -> UNSPECIFIED

// Docker's words: "created", "running", ...; unknown -> UNSPECIFIED.
std::string ContainerStateName(hoist::v1::ContainerState state);
hoist::v1::ContainerState ParseContainerState(absl::string_view name);

// "", "starting", "healthy", "unhealthy".
std::string HealthName(hoist::v1::Health health);
hoist::v1::Health ParseHealth(absl::string_view name);

std::string RolloutStateName(hoist::v1::RolloutState state);
// True for the states a rollout never leaves: succeeded, failed, cancelled,
// rolled back.
bool IsTerminal(hoist::v1::RolloutState state);
hoist::v1::RolloutState ParseRolloutState(absl::string_view name);

std::string StepStateName(hoist::v1::StepState state);
hoist::v1::StepState ParseStepState(absl::string_view name);

std::string StrategyName(hoist::v1::Strategy strategy);
std::string OnFailureName(hoist::v1::OnFailure on_failure);

}  // namespace hoist

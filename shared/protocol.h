#pragma once

// The agent session protocol's version. The controller accepts agents whose
// Hello.protocol_version lies in [kMinAgentProtocol, kProtocolVersion] and
// refuses the others with the reason, so that a fleet is upgraded controller
// first, then agents.

#include <cstdint>

namespace hoist {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kMinAgentProtocol = 1;

// A failed rollout's error holds this line when it failed before it changed
// anything (in pre-flight or while pulling): clients then print no rollback
// command, since there is nothing to roll back.
inline constexpr char kNothingChangedLine[] = "\nnothing was changed: ";

}  // namespace hoist

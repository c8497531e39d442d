#pragma once

// Helpers shared by the files of RolloutManager (rollout_manager*.cc).

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace hoist::rollout::internal {

// Checks a deployment or version name given by an operator.
inline absl::Status Required(absl::string_view field, absl::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  return absl::OkStatus();
}

}  // namespace hoist::rollout::internal

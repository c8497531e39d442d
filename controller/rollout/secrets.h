#pragma once

// Env values are secrets: what the controller shows and stores of them.
// API answers carry a manifest whose env values are replaced by a keyed
// fingerprint; the store seals the values of every step it keeps
// (shared/secret_box.h) through TransformStepEnv.

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hoist/v1/agent.pb.h"

namespace hoist::rollout {

// The manifest with each services.<name>.env value replaced by
// "(secret <fingerprint>)": the names stay, the values never leave hoistd.
// A text that does not parse comes back as a one-line note, not as itself.
std::string RedactEnvValues(absl::string_view manifest_yaml,
                            const std::function<std::string(absl::string_view)>& fingerprint);

// Replaces every env value of the step's container spec (start_instance,
// run_job) by f(value); the first error stops it.
absl::Status TransformStepEnv(hoist::v1::Step* step,
                              const std::function<absl::StatusOr<std::string>(const std::string&)>& f);

}  // namespace hoist::rollout

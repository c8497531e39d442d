#pragma once

// Env files as Docker Compose and the seeds' .env files write them.

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace hoist::agent {

// Reads KEY=VALUE lines. Blank lines and lines starting with '#' are skipped,
// a leading "export " is allowed, and a value wrapped in matching single or
// double quotes loses them. Errors name the file and line, never a value.
absl::StatusOr<std::map<std::string, std::string>> ReadEnvFile(const std::string& path);

}  // namespace hoist::agent

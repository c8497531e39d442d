// read_env_names: which of the names a release needs are set in the env
// files on this host.

#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/env_file.h"
#include "agent/step_executor.h"

namespace hoist::agent {

// Names only: the values read stay in this function.
absl::Status StepExecutor::ReadEnvNames(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& read = ctx.step.read_env_names();
  std::set<std::string> found;
  hoist::v1::EnvNamesResult* out = result->mutable_env_names();
  for (const std::string& path : read.env_files()) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      out->add_missing_files(path);
      continue;
    }
    auto env = ReadEnvFile(path);
    if (!env.ok()) {
      (*out->mutable_unreadable_files())[path] = std::string(env.status().message());
      continue;
    }
    for (const std::string& name : read.names()) {
      if (env->contains(name)) found.insert(name);
    }
  }
  for (const std::string& name : found) out->add_set(name);
  hoist::v1::StepProgress progress;
  progress.set_message(absl::StrCat(found.size(), " of ", read.names_size(), " name(s) set in ",
                                    read.env_files_size(), " env file(s)"));
  Progress(ctx, std::move(progress));
  return absl::OkStatus();
}

}  // namespace hoist::agent

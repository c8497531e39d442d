#pragma once

#include <string>
#include <vector>

#include "controller/store/pg_migrator.h"

namespace hoist {

// Runs `hoistd migrate status|verify|plan|apply|retry VERSION` and returns the
// exit code: 0 done (verify: consistent and nothing pending), 1 failed or
// inconsistent, 2 bad usage.
int RunMigrateCommand(PgMigrator& migrator, const std::vector<std::string>& args);

}  // namespace hoist

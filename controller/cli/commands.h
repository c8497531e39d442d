#pragma once

// The hoist verbs. Each takes the command line without its verb word(s) and
// the process's streams, and returns the exit code (exit_codes.h).

#include <string>
#include <vector>

#include "controller/cli/invocation.h"

namespace hoist::cli {

using Args = std::vector<std::string>;

// deployment_commands.cc: stacks and releases.
int RunApply(const Args& args, CliIo& io);
int RunReleaseCreate(const Args& args, CliIo& io);
int RunReleaseShow(const Args& args, CliIo& io);
int RunReleases(const Args& args, CliIo& io);

// rollout_commands.cc: plans, upgrades and what follows them.
int RunPlan(const Args& args, CliIo& io);
int RunUpgrade(const Args& args, CliIo& io);
int RunWatch(const Args& args, CliIo& io);
int RunRollback(const Args& args, CliIo& io);
int RunCutover(const Args& args, CliIo& io);
int RunCancel(const Args& args, CliIo& io);

// status_commands.cc: what runs where, and what happened.
int RunStatus(const Args& args, CliIo& io);
int RunMatrix(const Args& args, CliIo& io);
int RunAgents(const Args& args, CliIo& io);
int RunBackups(const Args& args, CliIo& io);
int RunLockStatus(const Args& args, CliIo& io);
int RunAudit(const Args& args, CliIo& io);

}  // namespace hoist::cli

#pragma once

#include <string>
#include <vector>

#include "controller/cli/invocation.h"

namespace hoist {

// Runs one hoist command line (without the program name) against `io`:
// finds the verb among the global flags, hands it the rest, and returns the
// process exit code (controller/cli/exit_codes.h). Tests call this with
// string streams, a fake clock and their own Interrupt.
int RunCli(const std::vector<std::string>& args, cli::CliIo& io);

// The real process: stdin/stdout/stderr, isatty, the system clock, and
// Ctrl-C delivered to RunCli through an Interrupt (a watch detaches; before
// anything started the process exits with 130).
int CliMain(int argc, char** argv);

}  // namespace hoist

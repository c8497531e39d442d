#pragma once

namespace hoist {

// Runs the hoist CLI with its command line; returns the process exit code.
int CliMain(int argc, char** argv);

}  // namespace hoist

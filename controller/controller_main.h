#pragma once

namespace hoist {

// Runs hoistd with its command line; returns the process exit code.
int ControllerMain(int argc, char** argv);

}  // namespace hoist

#pragma once

namespace hoist {

// Runs hoist-agent with its command line; returns the process exit code.
int AgentMain(int argc, char** argv);

}  // namespace hoist

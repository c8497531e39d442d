// hoist-agent: runs on each Docker host. All logic lives in hoist_agent.
#include "agent/agent_main.h"

int main(int argc, char** argv) { return hoist::AgentMain(argc, argv); }

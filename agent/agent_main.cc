#include "agent/agent_main.h"

#include <iostream>
#include <string>
#include <vector>

#include "shared/flags.h"

namespace hoist {

int AgentMain(int argc, char** argv) {
  FlagSet flags("hoist-agent [flags]",
                "The Hoist agent. Dials the controller, keeps one session open and runs the\n"
                "steps the leader sends on this host's Docker Engine.");
  flags.AddString("controller", "127.0.0.1:7443", "Controller addresses, comma-separated.",
                  "HOIST_CONTROLLER");
  flags.AddString("state-dir", "/var/lib/hoist-agent", "Journal, epoch and backups.",
                  "HOIST_AGENT_STATE_DIR");
  flags.AddBool("version", "Print the version and exit.");
  flags.AddExample("hoist-agent --controller hoistd-1:7443,hoistd-2:7443");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (auto s = flags.Parse(args); !s.ok()) {
    std::cerr << "hoist-agent: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Help();
    return 0;
  }
  if (flags.GetBool("version")) {
    std::cout << "hoist-agent " << HOIST_VERSION << "\n";
    return 0;
  }
  std::cerr << "hoist-agent: the controller session is not available in this build yet\n";
  return 69;
}

}  // namespace hoist

#include "controller/cli/cli_main.h"

#include <iostream>
#include <string>
#include <vector>

#include "shared/flags.h"

namespace hoist {
namespace {

// Exit codes scripts can rely on.
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitUnavailable = 69;  // sysexits EX_UNAVAILABLE

constexpr const char* kVerbs =
    "Verbs:\n"
    "  plan VERSION          What an upgrade to VERSION would do, in order, and why.\n"
    "  upgrade VERSION       Run the upgrade (rolling, or --strategy blue-green).\n"
    "  status                Release, rollout, health and lock of a deployment.\n"
    "  matrix                Which version runs where; skew is flagged.\n"
    "  rollback              Back to the previous release (restoring a backup if needed).\n"
    "  version               Print the CLI's version.\n";

}  // namespace

int CliMain(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  FlagSet flags("hoist VERB [flags]", "Plan and run safe upgrades of multi-service apps across Docker hosts.");
  flags.AddString("controller", "127.0.0.1:7443", "hoistd address.", "HOIST_CONTROLLER");
  flags.AddExample("hoist plan 1.5.0");
  if (auto s = flags.Parse(args); !s.ok()) {
    std::cerr << "hoist: " << s.message() << "\n";
    return kExitUsage;
  }
  if (flags.help_requested() || flags.positional().empty()) {
    std::cout << flags.Help() << "\n" << kVerbs;
    return flags.help_requested() ? kExitOk : kExitUsage;
  }
  const std::string& verb = flags.positional()[0];
  if (verb == "version") {
    std::cout << "hoist " << HOIST_VERSION << "\n";
    return kExitOk;
  }
  std::cerr << "hoist: \"" << verb << "\" is not available in this build yet; see hoist --help\n";
  return kExitUnavailable;
}

}  // namespace hoist

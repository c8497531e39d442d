#include "controller/cli/ca_command.h"

#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "shared/ca.h"
#include "shared/flags.h"

namespace hoist {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr const char* kCaUsage =
    "Usage: hoist ca init|issue ... [flags]\n"
    "\n"
    "Manages the fleet CA that signs the mTLS certificates of controllers, agents\n"
    "and operators.\n"
    "\n"
    "Sub-commands:\n"
    "  init                         Create the CA (ca.key, ca.crt) in --dir.\n"
    "  issue KIND NAME              Issue a key and certificate for a controller, an\n"
    "                               agent (NAME = its agent id) or an operator.\n"
    "\n"
    "Run `hoist ca init --help` or `hoist ca issue --help` for their flags.\n";

// Adds the flags both sub-commands take.
void AddCommonFlags(FlagSet& flags, int default_days) {
  flags.AddString("dir", "./hoist-ca", "Directory holding the CA.", "HOIST_CA_DIR");
  flags.AddString("days", std::to_string(default_days), "Validity in days.");
  flags.AddBool("force", "Replace existing files.");
}

// Parses flags; returns an exit code when the command should stop there.
std::optional<int> ParseOrExit(FlagSet& flags, const std::vector<std::string>& args, std::ostream& out,
                               std::ostream& err) {
  if (auto s = flags.Parse(args); !s.ok()) {
    err << "hoist ca: " << s.message() << "\n";
    return kExitUsage;
  }
  if (flags.help_requested()) {
    out << flags.Help();
    return kExitOk;
  }
  return std::nullopt;
}

std::optional<absl::Duration> ParseDays(const FlagSet& flags, std::ostream& err) {
  int days = 0;
  if (!absl::SimpleAtoi(flags.Get("days"), &days) || days < 1 || days > 36500) {
    err << "hoist ca: --days \"" << flags.Get("days") << "\" must be a whole number from 1 to 36500\n";
    return std::nullopt;
  }
  return absl::Hours(24) * days;
}

std::string Until(absl::Time t) { return absl::FormatTime("%Y-%m-%d %H:%M UTC", t, absl::UTCTimeZone()); }

int RunInit(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  FlagSet flags("hoist ca init [flags]",
                "Creates the fleet CA: an ECDSA P-256 key (ca.key, mode 0600) and a self-signed\n"
                "certificate (ca.crt) valid for 10 years. Refuses to replace an existing CA.");
  AddCommonFlags(flags, 3652);
  flags.AddExample("hoist ca init");
  flags.AddExample("hoist ca init --dir /etc/hoist/ca");
  if (auto code = ParseOrExit(flags, args, out, err)) return *code;
  if (flags.positional().size() > 1) {
    err << "hoist ca init: unexpected argument \"" << flags.positional()[1] << "\"; see --help\n";
    return kExitUsage;
  }
  auto validity = ParseDays(flags, err);
  if (!validity) return kExitUsage;
  const std::string& dir = flags.Get("dir");
  auto files = CaInit(dir, {.validity = *validity, .force = flags.GetBool("force")});
  if (!files.ok()) {
    err << "hoist ca init: " << files.status().message() << "\n";
    return kExitFailed;
  }
  out << "Created the fleet CA in " << dir << " (valid until " << Until(absl::Now() + *validity) << "):\n"
      << "  " << files->key_path << "  CA private key (mode 0600): keep it off the fleet and back it up\n"
      << "  " << files->cert_path << "  CA certificate: give it to every controller, agent and operator\n"
      << "Next: hoist ca issue controller NAME --dir " << dir << "\n"
      << "      hoist ca issue agent AGENT-ID --dir " << dir << "\n";
  return kExitOk;
}

int RunIssue(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  FlagSet flags("hoist ca issue controller|agent|operator NAME [flags]",
                "Issues an ECDSA P-256 key (mode 0600) and a certificate signed by the fleet CA,\n"
                "with common name NAME, written to DIR/KIND-NAME.key and .crt.\n"
                "  controller  serverAuth + clientAuth; SANs localhost, 127.0.0.1, NAME and --san\n"
                "              (clients check the controller's SAN against the address they dial)\n"
                "  agent       clientAuth; NAME must be the agent's id (checked at every Hello)\n"
                "  operator    clientAuth");
  AddCommonFlags(flags, 365);
  flags.AddList("san", "Extra subjectAltName: a host name or IP address (repeat or comma-separate).");
  flags.AddExample("hoist ca issue controller ctl-1 --san ctl-1.example.net --san 10.0.0.5");
  flags.AddExample("hoist ca issue agent host-17 --days 90");
  flags.AddExample("hoist ca issue operator alice --dir /etc/hoist/ca");
  if (auto code = ParseOrExit(flags, args, out, err)) return *code;
  const auto& pos = flags.positional();  // pos[0] is "issue"
  if (pos.size() != 3) {
    err << "hoist ca issue: need KIND and NAME, e.g. `hoist ca issue agent host-17`; see --help\n";
    return kExitUsage;
  }
  auto kind = ParseCertKind(pos[1]);
  if (!kind.ok()) {
    err << "hoist ca issue: " << kind.status().message() << "\n";
    return kExitUsage;
  }
  auto validity = ParseDays(flags, err);
  if (!validity) return kExitUsage;
  const std::string& dir = flags.Get("dir");
  auto issued = CaIssue(dir, *kind, pos[2],
                        {.sans = flags.GetList("san"), .validity = *validity, .force = flags.GetBool("force")});
  if (!issued.ok()) {
    err << "hoist ca issue: " << issued.status().message() << "\n";
    return absl::IsInvalidArgument(issued.status()) ? kExitUsage : kExitFailed;
  }
  out << "Issued " << (*kind == CertKind::kController ? "a " : "an ") << CertKindName(*kind) << " certificate for \"" << pos[2] << "\" (valid until "
      << Until(issued->not_after) << "; " << absl::StrJoin(issued->sans, ", ") << "):\n"
      << "  " << issued->files.key_path << "  private key (mode 0600)\n"
      << "  " << issued->files.cert_path << "  certificate\n";
  return kExitOk;
}

}  // namespace

int RunCaCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    err << kCaUsage;
    return kExitUsage;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    out << kCaUsage;
    return kExitOk;
  }
  if (args[0] == "init") return RunInit(args, out, err);
  if (args[0] == "issue") return RunIssue(args, out, err);
  err << "hoist ca: unknown sub-command \"" << args[0] << "\"\n\n" << kCaUsage;
  return kExitUsage;
}

}  // namespace hoist

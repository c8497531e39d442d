#include "controller/cli/ca_command.h"

#include <optional>

#include "absl/strings/match.h"
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
    "Usage: hoist ca init|issue|revoke ... [flags]\n"
    "\n"
    "Manages the fleet CA that signs the mTLS certificates of controllers, agents\n"
    "and operators.\n"
    "\n"
    "Sub-commands:\n"
    "  init                         Create the CA (ca.key, ca.crt) in --dir.\n"
    "  issue KIND NAME              Issue a key and certificate for a controller, an\n"
    "                               agent (NAME = its agent id) or an operator (with\n"
    "                               --level viewer, deployer or admin).\n"
    "  revoke NAME                  Add a certificate to the revocation list (crl.pem in\n"
    "                               --dir); hoistd and the agents refuse it from then on.\n"
    "\n"
    "Run `hoist ca init --help`, `hoist ca issue --help` or `hoist ca revoke --help`.\n";

// Adds the flags both sub-commands take.
void AddCommonFlags(FlagSet& flags, int default_days) {
  flags.AddString("dir", "./hoist-ca", "Directory holding the CA.", "HOIST_CA_DIR");
  flags.AddString("days", std::to_string(default_days), "Validity in days.");
  flags.AddString("valid-for", "", "Validity as a duration instead of --days: 90d, 36h, 30m (d = 24h).");
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
  if (const std::string& text = flags.Get("valid-for"); !text.empty()) {
    absl::Duration d;
    int days = 0;
    bool ok = false;
    if (absl::EndsWith(text, "d") && absl::SimpleAtoi(absl::string_view(text).substr(0, text.size() - 1), &days)) {
      d = absl::Hours(24) * days;
      ok = true;
    } else {
      ok = absl::ParseDuration(text, &d);
    }
    if (!ok || d < absl::Minutes(1) || d > absl::Hours(24 * 36500)) {
      err << "hoist ca: --valid-for \"" << text << "\" must be a duration from 1m to 36500d, e.g. 90d or 12h\n";
      return std::nullopt;
    }
    return d;
  }
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
                "  operator    clientAuth; --level viewer (read everything but secrets),\n"
                "              deployer (also plan, upgrade, roll back without a restore, cancel,\n"
                "              cut over) or admin (also apply stacks and restore backups)\n"
                "The role (and an operator's level) is written into the certificate's subject\n"
                "(OU=role:KIND, OU=level:LEVEL); hoistd trusts only what the CA signed. To change\n"
                "a level, issue again with --force and revoke the old one (hoist ca revoke).");
  AddCommonFlags(flags, 365);
  flags.AddList("san", "Extra subjectAltName: a host name or IP address (repeat or comma-separate).");
  flags.AddString("level", "", "Operator certificates only: viewer, deployer or admin.");
  flags.AddExample("hoist ca issue controller ctl-1 --san ctl-1.example.net --san 10.0.0.5");
  flags.AddExample("hoist ca issue agent host-17 --valid-for 90d");
  flags.AddExample("hoist ca issue operator alice --level deployer --dir /etc/hoist/ca");
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
  OperatorLevel level = OperatorLevel::kNone;
  if (!flags.Get("level").empty()) {
    auto parsed = ParseOperatorLevel(flags.Get("level"));
    if (!parsed.ok()) {
      err << "hoist ca issue: --level: " << parsed.status().message() << "\n";
      return kExitUsage;
    }
    level = *parsed;
  }
  const std::string& dir = flags.Get("dir");
  auto issued = CaIssue(dir, *kind, pos[2],
                        {.sans = flags.GetList("san"),
                         .validity = *validity,
                         .force = flags.GetBool("force"),
                         .level = level});
  if (!issued.ok()) {
    err << "hoist ca issue: " << issued.status().message() << "\n";
    return absl::IsInvalidArgument(issued.status()) ? kExitUsage : kExitFailed;
  }
  out << "Issued " << (*kind == CertKind::kController ? "a " : "an ") << CertKindName(*kind) << " certificate for \""
      << pos[2] << "\"" << (level != OperatorLevel::kNone ? absl::StrCat(" at level ", OperatorLevelName(level)) : "")
      << " (valid until " << Until(issued->not_after) << "; " << absl::StrJoin(issued->sans, ", ") << "):\n"
      << "  " << issued->files.key_path << "  private key (mode 0600)\n"
      << "  " << issued->files.cert_path << "  certificate\n";
  return kExitOk;
}

int RunRevoke(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  FlagSet flags("hoist ca revoke NAME [flags]",
                "Adds the certificate DIR/KIND-NAME.crt (or --serial) to the fleet's revocation\n"
                "list, DIR/crl.pem, signed by the CA. hoistd and the agents read that file again\n"
                "within a second of it changing (copy it to where their --tls-crl points, by\n"
                "default next to their ca.crt): the certificate is refused on its next call,\n"
                "and an agent session open with it is closed.");
  flags.AddString("dir", "./hoist-ca", "Directory holding the CA.", "HOIST_CA_DIR");
  flags.AddString("kind", "", "controller, agent or operator, when NAME has certificates of several kinds.");
  flags.AddString("serial", "", "Revoke this serial (hex, as `openssl x509 -serial` prints it) instead of NAME.");
  flags.AddExample("hoist ca revoke host-17");
  flags.AddExample("hoist ca revoke alice --kind operator --dir /etc/hoist/ca");
  flags.AddExample("hoist ca revoke --serial 5A1F0C...");
  if (auto code = ParseOrExit(flags, args, out, err)) return *code;
  const auto& pos = flags.positional();  // pos[0] is "revoke"
  const std::string serial = flags.Get("serial");
  if ((serial.empty() && pos.size() != 2) || (!serial.empty() && pos.size() != 1)) {
    err << "hoist ca revoke: give one NAME, or --serial HEX alone; see --help\n";
    return kExitUsage;
  }
  CaRevokeOptions options{.serial = serial};
  if (!flags.Get("kind").empty()) {
    auto kind = ParseCertKind(flags.Get("kind"));
    if (!kind.ok()) {
      err << "hoist ca revoke: --kind: " << kind.status().message() << "\n";
      return kExitUsage;
    }
    options.kind = *kind;
  }
  auto revoked = CaRevoke(flags.Get("dir"), serial.empty() ? pos[1] : "", options);
  if (!revoked.ok()) {
    err << "hoist ca revoke: " << revoked.status().message() << "\n";
    return absl::IsInvalidArgument(revoked.status()) ? kExitUsage : kExitFailed;
  }
  out << (revoked->already ? "Already revoked: " : "Revoked ") << revoked->subject << " (serial " << revoked->serial
      << "); " << revoked->crl_path << " lists " << revoked->total_revoked << " certificate"
      << (revoked->total_revoked == 1 ? "" : "s") << ".\n"
      << "Copy it to every controller and agent host that reads its own copy (--tls-crl); they reload it "
         "within a second.\n";
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
  if (args[0] == "revoke") return RunRevoke(args, out, err);
  err << "hoist ca: unknown sub-command \"" << args[0] << "\"\n\n" << kCaUsage;
  return kExitUsage;
}

}  // namespace hoist

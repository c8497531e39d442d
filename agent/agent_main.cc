#include "agent/agent_main.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "agent/agent_server.h"
#include "shared/config.h"
#include "shared/flags.h"
#include "shared/labels.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

void DefineFlags(FlagSet& flags) {
  flags.AddString("controller", "127.0.0.1:7443", "Controller addresses, comma-separated (any replica).",
                  "HOIST_CONTROLLER");
  flags.AddString("agent-id", "", "This agent's id (default: the host name); must match its certificate.",
                  "HOIST_AGENT_ID");
  flags.AddString("host-name", "", "Host name reported to the controller (default: the system's).",
                  "HOIST_AGENT_HOST_NAME");
  flags.AddString("labels", "", "Placement labels, k=v,k=v.", "HOIST_AGENT_LABELS");
  flags.AddString("object-labels", "",
                  "Docker labels, k=v,k=v, added to every container and network this agent creates\n"
                  "(for your own inventory or cleanup tools); keys may not start with hoist.",
                  "HOIST_AGENT_OBJECT_LABELS");
  flags.AddString("address", "",
                  "The address other hosts reach this host at (an IP or DNS name), shown by `hoist agents`.",
                  "HOIST_AGENT_ADDRESS");
  flags.AddString("deployments", "", "Deployments this agent manages, comma-separated (default: all).",
                  "HOIST_AGENT_DEPLOYMENTS");
  flags.AddString("forward-binary", "",
                  "The static hoist-forward binary whose image makes services of other hosts reachable by name "
                  "here (default: hoist-forward next to hoist-agent).",
                  "HOIST_AGENT_FORWARD_BINARY");
  flags.AddString("journal-keep", "168h",
                  "How long finished steps stay in the journal (and job logs in state-dir/jobs); older ones "
                  "are removed at start-up and every hour. A step re-sent after that runs again.",
                  "HOIST_AGENT_JOURNAL_KEEP");
  flags.AddString("state-dir", "/var/lib/hoist-agent", "Journal, epoch and backups.", "HOIST_AGENT_STATE_DIR");
  flags.AddString("docker-socket", "/var/run/docker.sock", "The Docker Engine's unix socket.", "DOCKER_SOCKET");
  flags.AddString("tls-ca", "", "Fleet CA certificate.", "HOIST_TLS_CA");
  flags.AddString("tls-cert", "", "This agent's certificate (hoist ca issue agent ID).", "HOIST_TLS_CERT");
  flags.AddString("tls-key", "", "This agent's private key.", "HOIST_TLS_KEY");
  flags.AddString("tls-crl", "", "Revocation list (hoist ca revoke), read again whenever it changes; default "
                  "crl.pem next to --tls-ca (absent: nothing revoked).", "HOIST_TLS_CRL");
  flags.AddBool("insecure", "Dial the controller without TLS (development only).", "HOIST_INSECURE");
  flags.AddBool("allow-privileged", "Allow privileged containers.");
  flags.AddBool("allow-host-paths", "Allow host-path (bind) mounts.");
  flags.AddBool("allow-docker-socket", "Allow mounting the Docker socket (root on the host).");
  flags.AddString("env-file-dirs", "", "Directories (comma-separated) whose env files stacks may name; the agent "
                  "reads them with its own rights. Empty: env files are refused.", "HOIST_ENV_FILE_DIRS");
  flags.AddBool("allow-host-network", "Allow containers and jobs on the host's network (network: host) or another "
                "container's.");
  flags.AddBool("allow-foreign-objects", "Allow joining networks and mounting volumes that belong to another "
                "deployment or docker compose project.");
  flags.AddString("log-level", "info", "trace, debug, info, warn, error.", "HOIST_LOG_LEVEL");
  flags.AddString("log-format", "text", "text or json.", "HOIST_LOG_FORMAT");
  flags.AddBool("version", "Print the version and exit.");
  flags.AddExample("hoist-agent --controller hoistd-1:7443,hoistd-2:7443 --tls-ca ca.crt --tls-cert agent-web1.crt "
                   "--tls-key agent-web1.key");
  flags.AddExample("hoist-agent --controller 127.0.0.1:7443 --insecure --agent-id dev --state-dir /tmp/agent");
}

// k=v,k=v into `out`; `flag` names the flag in the error.
absl::Status ParseKeyValues(absl::string_view flag, const std::string& text, std::map<std::string, std::string>& out) {
  for (absl::string_view kv : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || kv.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", kv, "\" is not key=value (example: team=ops)"));
    }
    out[p.first] = p.second;
  }
  return absl::OkStatus();
}

// The static hoist-forward binary: --forward-binary, or next to hoist-agent.
absl::StatusOr<std::string> ForwardBinary(const std::string& flag) {
  if (!flag.empty()) {
    if (access(flag.c_str(), R_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--forward-binary ", flag, ": ", std::strerror(errno),
                                                     " (the static hoist-forward binary installed with the agent)"));
    }
    return flag;
  }
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec && std::filesystem::exists(self.parent_path() / "hoist-forward", ec)) {
    return (self.parent_path() / "hoist-forward").string();
  }
  spdlog::warn("no hoist-forward binary next to hoist-agent: services of other hosts cannot be reached by name "
               "here (forward steps fail); install it or pass --forward-binary");
  return std::string();
}

// What this host allows, from the --allow-*, --deployments, --env-file-dirs
// and --object-labels flags.
absl::Status ParsePolicy(const FlagSet& flags, agent::AgentPolicy& policy) {
  for (absl::string_view d : absl::StrSplit(flags.Get("deployments"), ',', absl::SkipWhitespace())) {
    policy.deployments.emplace_back(d);
  }
  policy.allow_privileged = flags.GetBool("allow-privileged");
  policy.allow_host_paths = flags.GetBool("allow-host-paths");
  policy.allow_docker_socket = flags.GetBool("allow-docker-socket");
  policy.allow_host_network = flags.GetBool("allow-host-network");
  policy.allow_foreign_objects = flags.GetBool("allow-foreign-objects");
  for (absl::string_view d : absl::StrSplit(flags.Get("env-file-dirs"), ',', absl::SkipWhitespace())) {
    if (!absl::StartsWith(d, "/")) {
      return absl::InvalidArgumentError(absl::StrCat("--env-file-dirs: \"", d, "\" is not an absolute directory"));
    }
    policy.env_file_dirs.emplace_back(d);
  }
  if (absl::Status s = ParseKeyValues("--object-labels", flags.Get("object-labels"), policy.extra_labels); !s.ok()) {
    return s;
  }
  for (const auto& [key, value] : policy.extra_labels) {
    if (absl::StartsWith(key, labels::kPrefix)) {
      return absl::InvalidArgumentError(absl::StrCat("--object-labels: \"", key,
                                                     "\" is in the hoist. namespace, which Hoist's own labels use; "
                                                     "choose another key"));
    }
  }
  auto forward = ForwardBinary(flags.Get("forward-binary"));
  if (!forward.ok()) return forward.status();
  policy.forward_binary = *std::move(forward);
  return absl::OkStatus();
}

// The agent's options from its flags.
absl::StatusOr<AgentServerOptions> Options(const FlagSet& flags) {
  AgentServerOptions o;
  for (absl::string_view c : absl::StrSplit(flags.Get("controller"), ',', absl::SkipWhitespace())) {
    auto hp = ParseHostPort("--controller", c);
    if (!hp.ok()) return hp.status();
    o.controllers.push_back(hp->ToString());
  }
  if (o.controllers.empty()) return absl::InvalidArgumentError("--controller needs at least one host:port");
  o.agent_id = flags.Get("agent-id");
  o.host_name = flags.Get("host-name");
  o.address = flags.Get("address");
  if (absl::Status s = ParseKeyValues("--labels", flags.Get("labels"), o.labels); !s.ok()) return s;
  o.tls_ca = flags.Get("tls-ca");
  o.tls_cert = flags.Get("tls-cert");
  o.tls_key = flags.Get("tls-key");
  o.tls_crl = flags.Get("tls-crl");
  o.insecure = flags.GetBool("insecure");
  o.state_dir = flags.Get("state-dir");
  o.docker_socket = flags.Get("docker-socket");
  if (!absl::ParseDuration(flags.Get("journal-keep"), &o.journal_keep) || o.journal_keep < absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat("--journal-keep \"", flags.Get("journal-keep"),
                                                   "\" is not a duration of at least 1h (example: 168h)"));
  }
  if (absl::Status s = ParsePolicy(flags, o.policy); !s.ok()) return s;
  return o;
}

// Runs the agent until SIGTERM or SIGINT; the exit code.
int Serve(AgentServerOptions options) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  auto server = AgentServer::Create(std::move(options));
  if (!server.ok()) {
    std::cerr << "hoist-agent: " << server.status().message() << "\n";
    return absl::IsInvalidArgument(server.status()) ? 2 : 1;
  }
  (*server)->Start();
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: stopping", sig);
  (*server)->Stop();
  return 0;
}

}  // namespace

int AgentMain(int argc, char** argv) {
  // Debian's Abseil is built with its mutex deadlock detector on, which keeps
  // a lock graph on every acquisition; tests keep it, the binaries do not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FlagSet flags("hoist-agent [flags]",
                "The Hoist agent. Dials the controller, keeps one session open and runs the\n"
                "steps the leader sends on this host's Docker Engine. It listens on no port.");
  DefineFlags(flags);
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
  auto level = ParseLogLevel(flags.Get("log-level"));
  auto format = ParseLogFormat(flags.Get("log-format"));
  if (!level.ok() || !format.ok()) {
    std::cerr << "hoist-agent: " << (!level.ok() ? level.status() : format.status()).message() << "\n";
    return 2;
  }
  InitLogging({*level, *format, "hoist-agent"});
  auto options = Options(flags);
  if (!options.ok()) {
    std::cerr << "hoist-agent: " << options.status().message() << "\n";
    return 2;
  }
  return Serve(*std::move(options));
}

}  // namespace hoist

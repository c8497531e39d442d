#include "agent/agent_main.h"

#include <pthread.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "agent/docker/docker_client.h"
#include "agent/inventory.h"
#include "agent/journal.h"
#include "agent/session.h"
#include "agent/step_executor.h"
#include "shared/clock.h"
#include "shared/config.h"
#include "shared/flags.h"
#include "shared/labels.h"
#include "shared/logging.h"
#include "shared/revocation.h"
#include "shared/tls.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

uint64_t FreeBytes(const std::string& path) {
  struct statvfs s {};
  if (statvfs(path.c_str(), &s) != 0) return 0;
  return static_cast<uint64_t>(s.f_bavail) * s.f_frsize;
}

}  // namespace

int AgentMain(int argc, char** argv) {
  // Debian's Abseil is built with its mutex deadlock detector on, which keeps
  // a lock graph on every acquisition; tests keep it, the binaries do not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FlagSet flags("hoist-agent [flags]",
                "The Hoist agent. Dials the controller, keeps one session open and runs the\n"
                "steps the leader sends on this host's Docker Engine. It listens on no port.");
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

  std::string agent_id = flags.Get("agent-id");
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  if (agent_id.empty()) agent_id = host;

  AgentSessionOptions options;
  for (absl::string_view c : absl::StrSplit(flags.Get("controller"), ',', absl::SkipWhitespace())) {
    auto hp = ParseHostPort("--controller", c);
    if (!hp.ok()) {
      std::cerr << "hoist-agent: " << hp.status().message() << "\n";
      return 2;
    }
    options.controllers.push_back(hp->ToString());
  }
  if (options.controllers.empty()) {
    std::cerr << "hoist-agent: --controller needs at least one host:port\n";
    return 2;
  }
  const bool tls = !flags.Get("tls-ca").empty() || !flags.Get("tls-cert").empty() || !flags.Get("tls-key").empty();
  std::unique_ptr<RevocationWatcher> revocations;
  if (tls) {
    auto creds = ChannelTlsCredentials(flags.Get("tls-ca"), flags.Get("tls-cert"), flags.Get("tls-key"));
    if (!creds.ok()) {
      std::cerr << "hoist-agent: " << creds.status().message() << "\n";
      return 2;
    }
    options.credentials = *creds;
    auto watcher = RevocationWatcher::Load(flags.Get("tls-ca"), flags.Get("tls-crl"));
    if (!watcher.ok()) {
      std::cerr << "hoist-agent: " << watcher.status().message() << "\n";
      return 2;
    }
    revocations = *std::move(watcher);
    options.is_revoked = [watcher = revocations.get()](const std::string& serial) {
      return watcher->IsRevoked(serial);
    };
  } else if (flags.GetBool("insecure")) {
    spdlog::warn("dialling the controller without TLS (--insecure): development only");
    options.credentials = grpc::InsecureChannelCredentials();
  } else {
    std::cerr << "hoist-agent: give --tls-ca, --tls-cert and --tls-key (hoist ca issue agent " << agent_id
              << "), or --insecure for development\n";
    return 2;
  }

  agent::AgentPolicy policy;
  policy.agent_id = agent_id;
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
      std::cerr << "hoist-agent: --env-file-dirs: \"" << d << "\" is not an absolute directory\n";
      return 2;
    }
    policy.env_file_dirs.emplace_back(d);
  }
  policy.docker_socket_path = flags.Get("docker-socket");
  for (absl::string_view kv : absl::StrSplit(flags.Get("object-labels"), ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || kv.find('=') == absl::string_view::npos) {
      std::cerr << "hoist-agent: --object-labels: \"" << kv << "\" is not key=value (example: team=ops)\n";
      return 2;
    }
    if (absl::StartsWith(p.first, labels::kPrefix)) {
      std::cerr << "hoist-agent: --object-labels: \"" << p.first
                << "\" is in the hoist. namespace, which Hoist's own labels use; choose another key\n";
      return 2;
    }
    policy.extra_labels[p.first] = p.second;
  }
  const std::string state_dir = flags.Get("state-dir");
  policy.backup_dir = state_dir + "/backups";
  policy.forward_binary = flags.Get("forward-binary");
  if (policy.forward_binary.empty()) {
    std::error_code ec;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec && std::filesystem::exists(self.parent_path() / "hoist-forward", ec)) {
      policy.forward_binary = (self.parent_path() / "hoist-forward").string();
    }
  } else if (access(policy.forward_binary.c_str(), R_OK) != 0) {
    std::cerr << "hoist-agent: --forward-binary " << policy.forward_binary << ": " << std::strerror(errno)
              << " (the static hoist-forward binary installed with the agent)\n";
    return 2;
  }
  if (policy.forward_binary.empty()) {
    spdlog::warn("no hoist-forward binary next to hoist-agent: services of other hosts cannot be reached by name "
                 "here (forward steps fail); install it or pass --forward-binary");
  }

  absl::Duration journal_keep;
  if (!absl::ParseDuration(flags.Get("journal-keep"), &journal_keep) || journal_keep < absl::Hours(1)) {
    std::cerr << "hoist-agent: --journal-keep \"" << flags.Get("journal-keep")
              << "\" is not a duration of at least 1h (example: 168h)\n";
    return 2;
  }
  auto journal = agent::StepJournal::Open(state_dir);
  if (!journal.ok()) {
    std::cerr << "hoist-agent: --state-dir " << state_dir << ": " << journal.status().message() << "\n";
    return 1;
  }
  docker::DockerClient docker(flags.Get("docker-socket"));
  auto docker_version = docker.Version();
  if (!docker_version.ok()) {
    // Not fatal: steps fail with the reason until the daemon is back.
    spdlog::error("Docker: {}", docker_version.status().message());
  }
  agent::StepExecutor executor(&docker, journal->get(), policy, RealClock::Get());
  auto reconciled = executor.Reconcile();
  if (!reconciled.ok()) {
    spdlog::error("reconciling interrupted steps: {}", reconciled.status().message());
  } else if (!reconciled->empty()) {
    spdlog::info("reconciled {} step(s) interrupted by the last stop", reconciled->size());
  }

  options.hello.set_agent_id(agent_id);
  options.hello.set_host_name(flags.Get("host-name").empty() ? std::string(host) : flags.Get("host-name"));
  for (absl::string_view kv : absl::StrSplit(flags.Get("labels"), ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty()) {
      std::cerr << "hoist-agent: --labels: \"" << kv << "\" is not key=value\n";
      return 2;
    }
    (*options.hello.mutable_labels())[p.first] = p.second;
  }
  for (const std::string& d : policy.deployments) options.hello.add_deployments(d);
  if (docker_version.ok()) options.hello.set_docker_version(*docker_version);
  if (auto engine_id = docker.EngineId(); engine_id.ok()) {
    options.hello.set_docker_engine_id(*engine_id);
  } else {
    spdlog::warn("Docker: no engine ID: {}", engine_id.status().message());
  }
  options.hello.set_address(flags.Get("address"));
  const std::string docker_root = FreeBytes("/var/lib/docker") > 0 ? "/var/lib/docker" : "/";
  options.disk_free = [docker_root, state_dir] {
    return std::make_pair(FreeBytes(docker_root), FreeBytes(state_dir));
  };
  options.run_step = [&executor](const hoist::v1::Step& step,
                                 const std::function<void(const hoist::v1::StepProgress&)>& progress) {
    return executor.Run(step, progress);
  };
  options.take_inventory = [&docker, &policy, &executor] {
    return agent::TakeInventory(docker, policy, RealClock::Get(),
                                [&executor](const std::string& id) { return executor.ObservedHealth(id); });
  };
  agent::StepJournal* journal_ptr = journal->get();
  options.highest_epoch = [journal_ptr] { return journal_ptr->highest_epoch(); };

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // The journal and job logs would otherwise grow with every step.
  absl::Notification stop_pruning;
  std::thread pruner([&stop_pruning, journal_ptr, journal_keep, state_dir] {
    do {
      const absl::Time now = absl::Now();
      auto steps = journal_ptr->Prune(now, journal_keep);
      auto jobs = agent::StepJournal::PruneFilesBefore(state_dir + "/jobs", now - journal_keep);
      if (!steps.ok() || !jobs.ok()) {
        spdlog::warn("pruning the journal: {}", !steps.ok() ? steps.status() : jobs.status());
      } else if (*steps + *jobs > 0) {
        spdlog::info("pruned {} journal entries and {} job files older than {}", *steps, *jobs,
                     absl::FormatDuration(journal_keep));
      }
    } while (!stop_pruning.WaitForNotificationWithTimeout(absl::Hours(1)));
  });
  AgentSession session(std::move(options));
  if (revocations) revocations->Start(absl::Seconds(1), [&session] { session.CloseIfControllerRevoked(); });
  session.Start();
  spdlog::info("hoist-agent {} ({}) started", HOIST_VERSION, agent_id);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: stopping", sig);
  session.Stop();
  if (revocations) revocations->Stop();
  stop_pruning.Notify();
  pruner.join();
  return 0;
}

}  // namespace hoist

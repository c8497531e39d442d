#include "agent/agent_server.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "agent/docker/docker_client.h"
#include "agent/inventory.h"
#include "agent/journal.h"
#include "agent/session.h"
#include "agent/step_executor.h"
#include "shared/revocation.h"
#include "shared/tls.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

uint64_t FreeBytes(const std::string& path) {
  struct statvfs s {};
  if (statvfs(path.c_str(), &s) != 0) return 0;
  return static_cast<uint64_t>(s.f_bavail) * s.f_frsize;
}

absl::Status Invalid(const absl::Status& s) { return absl::InvalidArgumentError(s.message()); }

}  // namespace

struct AgentServer::Parts {
  AgentServerOptions options;
  std::unique_ptr<RevocationWatcher> revocations;
  std::unique_ptr<agent::StepJournal> journal;
  std::unique_ptr<docker::DockerClient> docker;
  std::unique_ptr<agent::StepExecutor> executor;
  std::unique_ptr<AgentSession> session;
  absl::Notification stop_pruning;
  std::thread pruner;
  bool started = false;
  bool stopped = false;

  absl::Status Credentials(AgentSessionOptions& session_options);
  void Hello(hoist::v1::Hello& hello);
  AgentSessionOptions SessionOptions(AgentSessionOptions session_options);
  void Prune();
};

absl::Status AgentServer::Parts::Credentials(AgentSessionOptions& s) {
  const bool tls = !options.tls_ca.empty() || !options.tls_cert.empty() || !options.tls_key.empty();
  if (tls) {
    auto creds = ChannelTlsCredentials(options.tls_ca, options.tls_cert, options.tls_key);
    if (!creds.ok()) return Invalid(creds.status());
    s.credentials = *creds;
    auto watcher = RevocationWatcher::Load(options.tls_ca, options.tls_crl);
    if (!watcher.ok()) return Invalid(watcher.status());
    revocations = *std::move(watcher);
    s.is_revoked = [watcher = revocations.get()](const std::string& serial) { return watcher->IsRevoked(serial); };
  } else if (options.insecure) {
    spdlog::warn("dialling the controller without TLS (--insecure): development only");
    s.credentials = grpc::InsecureChannelCredentials();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("give --tls-ca, --tls-cert and --tls-key (hoist ca issue agent ",
                                                   options.agent_id, "), or --insecure for development"));
  }
  return absl::OkStatus();
}

void AgentServer::Parts::Hello(hoist::v1::Hello& hello) {
  hello.set_agent_id(options.agent_id);
  hello.set_host_name(options.host_name);
  for (const auto& [key, value] : options.labels) (*hello.mutable_labels())[key] = value;
  for (const std::string& d : options.policy.deployments) hello.add_deployments(d);
  auto docker_version = docker->Version();
  if (docker_version.ok()) {
    hello.set_docker_version(*docker_version);
  } else {
    // Not fatal: steps fail with the reason until the daemon is back.
    spdlog::error("Docker: {}", docker_version.status().message());
  }
  if (auto engine_id = docker->EngineId(); engine_id.ok()) {
    hello.set_docker_engine_id(*engine_id);
  } else {
    spdlog::warn("Docker: no engine ID: {}", engine_id.status().message());
  }
  hello.set_address(options.address);
}

AgentSessionOptions AgentServer::Parts::SessionOptions(AgentSessionOptions s) {
  s.controllers = options.controllers;
  Hello(s.hello);
  const std::string docker_root = FreeBytes("/var/lib/docker") > 0 ? "/var/lib/docker" : "/";
  s.disk_free = [docker_root, state_dir = options.state_dir] {
    return std::make_pair(FreeBytes(docker_root), FreeBytes(state_dir));
  };
  s.run_step = [this](const hoist::v1::Step& step,
                      const std::function<void(const hoist::v1::StepProgress&)>& progress) {
    return executor->Run(step, progress);
  };
  s.take_inventory = [this] {
    return agent::TakeInventory(*docker, options.policy, options.clock,
                                [this](const std::string& id) { return executor->ObservedHealth(id); });
  };
  s.highest_epoch = [journal = journal.get()] { return journal->highest_epoch(); };
  return s;
}

// The journal and job logs would otherwise grow with every step.
void AgentServer::Parts::Prune() {
  do {
    const absl::Time now = options.clock->Now();
    auto steps = journal->Prune(now, options.journal_keep);
    auto jobs = agent::StepJournal::PruneFilesBefore(options.state_dir + "/jobs", now - options.journal_keep);
    if (!steps.ok() || !jobs.ok()) {
      spdlog::warn("pruning the journal: {}", !steps.ok() ? steps.status() : jobs.status());
    } else if (*steps + *jobs > 0) {
      spdlog::info("pruned {} journal entries and {} job files older than {}", *steps, *jobs,
                   absl::FormatDuration(options.journal_keep));
    }
  } while (!stop_pruning.WaitForNotificationWithTimeout(absl::Hours(1)));
}

absl::StatusOr<std::unique_ptr<AgentServer>> AgentServer::Create(AgentServerOptions options) {
  if (options.controllers.empty()) return absl::InvalidArgumentError("--controller needs at least one host:port");
  if (options.state_dir.empty()) return absl::InvalidArgumentError("--state-dir is required");
  if (options.journal_keep < absl::Hours(1)) {
    return absl::InvalidArgumentError("--journal-keep must be at least 1h (example: 168h)");
  }
  if (options.clock == nullptr) options.clock = RealClock::Get();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  if (options.agent_id.empty()) options.agent_id = host;
  if (options.host_name.empty()) options.host_name = host;
  options.policy.agent_id = options.agent_id;
  options.policy.backup_dir = options.state_dir + "/backups";
  options.policy.docker_socket_path = options.docker_socket;
  auto parts = std::make_unique<Parts>();
  parts->options = std::move(options);
  AgentSessionOptions session_options;
  if (absl::Status s = parts->Credentials(session_options); !s.ok()) return s;
  auto journal = agent::StepJournal::Open(parts->options.state_dir);
  if (!journal.ok()) {
    return absl::Status(journal.status().code(),
                        absl::StrCat("--state-dir ", parts->options.state_dir, ": ", journal.status().message()));
  }
  parts->journal = *std::move(journal);
  parts->docker = std::make_unique<docker::DockerClient>(parts->options.docker_socket);
  parts->executor = std::make_unique<agent::StepExecutor>(parts->docker.get(), parts->journal.get(),
                                                          parts->options.policy, parts->options.clock);
  auto reconciled = parts->executor->Reconcile();
  if (!reconciled.ok()) {
    spdlog::error("reconciling interrupted steps: {}", reconciled.status().message());
  } else if (!reconciled->empty()) {
    spdlog::info("reconciled {} step(s) interrupted by the last stop", reconciled->size());
  }
  parts->session = std::make_unique<AgentSession>(parts->SessionOptions(std::move(session_options)));
  return std::unique_ptr<AgentServer>(new AgentServer(std::move(parts)));
}

AgentServer::AgentServer(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

AgentServer::~AgentServer() { Stop(); }

void AgentServer::Start() {
  Parts& p = *parts_;
  if (p.started) return;
  p.started = true;
  p.pruner = std::thread([&p] { p.Prune(); });
  if (p.revocations) p.revocations->Start(absl::Seconds(1), [&p] { p.session->CloseIfControllerRevoked(); });
  p.session->Start();
  spdlog::info("hoist-agent {} ({}) started", HOIST_VERSION, p.options.agent_id);
}

void AgentServer::Stop() {
  Parts& p = *parts_;
  if (!p.started || p.stopped) return;
  p.stopped = true;
  p.session->Stop();
  if (p.revocations) p.revocations->Stop();
  p.stop_pruning.Notify();
  p.pruner.join();
}

bool AgentServer::connected() const { return parts_->session->connected(); }

}  // namespace hoist

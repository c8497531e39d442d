#include "tests/sim/sim_hosts.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/inventory.h"
#include "agent/journal.h"
#include "agent/session.h"
#include "agent/step_executor.h"
#include "shared/clock.h"
#include "shared/tls.h"
#include "tests/fakes/fake_docker_api.h"

namespace hoist::testing {

struct SimHosts::Host {
  FakeDockerApi docker;
  std::unique_ptr<agent::StepJournal> journal;
  std::unique_ptr<agent::StepExecutor> executor;
  std::unique_ptr<AgentSession> session;
};

absl::StatusOr<std::unique_ptr<SimHosts>> SimHosts::Start(const SimHostsOptions& options) {
  if (options.controllers.empty()) return absl::InvalidArgumentError("no controller address to dial");
  if (options.count <= 0) return absl::InvalidArgumentError("count must be at least 1");
  std::map<std::string, std::string> labels;
  for (absl::string_view kv : absl::StrSplit(options.labels, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || kv.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("labels: \"", kv, "\" is not key=value"));
    }
    labels[p.first] = p.second;
  }
  const SimDockerTimes times = options.times;
  std::unique_ptr<SimHosts> sim(new SimHosts());
  for (int i = options.first; i < options.first + options.count; ++i) {
    const std::string id = SimHostId(options.prefix, i);
    auto host = std::make_unique<Host>();
    host->docker.ServeAnyImage({.health = "healthy", .healthy_after = times.healthy_after});
    host->docker.SetBeforeCall([times](absl::string_view method) {
      if (method == "Pull") absl::SleepFor(times.pull);
      if (method == "Create") absl::SleepFor(times.create);
      if (method == "Start") absl::SleepFor(times.start);
      if (method == "Stop") absl::SleepFor(times.stop);
      if (method == "Remove") absl::SleepFor(times.remove);
    });
    auto journal = agent::StepJournal::Open(absl::StrCat(options.state_dir, "/", id));
    if (!journal.ok()) return absl::Status(journal.status().code(), absl::StrCat(id, ": ", journal.status().message()));
    host->journal = *std::move(journal);
    agent::AgentPolicy policy;
    policy.agent_id = id;
    policy.deployments = options.deployments;
    policy.backup_dir = absl::StrCat(options.state_dir, "/", id, "/backups");
    host->executor = std::make_unique<agent::StepExecutor>(&host->docker, host->journal.get(), policy,
                                                           RealClock::Get());
    AgentSessionOptions session;
    session.controllers = options.controllers;
    if (options.tls_dir.empty()) {
      session.credentials = grpc::InsecureChannelCredentials();
    } else {
      const std::string base = absl::StrCat(options.tls_dir, "/agent-", id);
      auto creds = ChannelTlsCredentials(options.tls_dir + "/ca.crt", base + ".crt", base + ".key");
      if (!creds.ok()) return absl::Status(creds.status().code(), absl::StrCat(id, ": ", creds.status().message()));
      session.credentials = *creds;
      session.is_revoked = [](const std::string&) { return false; };
    }
    session.hello.set_agent_id(id);
    session.hello.set_host_name(id + ".sim");
    session.hello.set_docker_version("simulated");
    session.hello.set_docker_engine_id(absl::StrCat("SIM:", id));
    for (const auto& [k, v] : labels) (*session.hello.mutable_labels())[k] = v;
    for (const std::string& d : options.deployments) session.hello.add_deployments(d);
    Host* h = host.get();
    session.run_step = [h](const hoist::v1::Step& step,
                           const std::function<void(const hoist::v1::StepProgress&)>& progress) {
      return h->executor->Run(step, progress);
    };
    session.take_inventory = [h] {
      return agent::TakeInventory(h->docker, h->executor->policy(), RealClock::Get(),
                                  [h](const std::string& cid) { return h->executor->ObservedHealth(cid); });
    };
    session.disk_free = [] { return std::make_pair(uint64_t{100} << 30, uint64_t{100} << 30); };
    session.highest_epoch = [h] { return h->journal->highest_epoch(); };
    host->session = std::make_unique<AgentSession>(std::move(session));
    sim->hosts_.push_back(std::move(host));
  }
  const absl::Duration gap = options.ramp / static_cast<double>(sim->hosts_.size());
  for (auto& host : sim->hosts_) {
    host->session->Start();
    if (gap > absl::ZeroDuration()) absl::SleepFor(gap);
  }
  return sim;
}

SimHosts::~SimHosts() {
  for (auto& host : hosts_) host->session->Stop();
  for (auto& host : hosts_) host->executor->Shutdown();
}

int SimHosts::count() const { return static_cast<int>(hosts_.size()); }

int SimHosts::Connected() const {
  int n = 0;
  for (const auto& host : hosts_) n += host->session->connected() ? 1 : 0;
  return n;
}

}  // namespace hoist::testing

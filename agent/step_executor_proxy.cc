// The proxy side of the step executor: starting a proxy instance with its
// configuration, and proxy_update through HAProxy's runtime API (haproxy.h).

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/container_names.h"
#include "agent/file_util.h"
#include "agent/haproxy.h"
#include "shared/proto_time.h"
#include "agent/step_executor.h"
#include "shared/labels.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {
namespace {

// How long the config check container may take.
constexpr absl::Duration kConfigCheckTimeout = absl::Seconds(30);
// One runtime API exchange.
constexpr absl::Duration kRuntimeCommandTimeout = absl::Seconds(5);
// How long a proxy that just started may take to answer on its runtime API.
constexpr absl::Duration kRuntimeReadyWait = absl::Seconds(15);

bool IsIpLiteral(const std::string& address) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, address.c_str(), buf) == 1 || inet_pton(AF_INET6, address.c_str(), buf) == 1;
}

// The host's resolver; "" when the name does not resolve.
std::string ResolveHostName(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return "";
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof(buf));
  freeaddrinfo(res);
  return buf;
}

std::string FrontendsLabel(const hoist::v1::ProxyConfig& config) {
  std::vector<std::string> parts;
  for (const auto& f : config.frontends()) parts.push_back(absl::StrCat(f.route(), "=", f.listen_port()));
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<hoist::v1::ProxyConfig> FrontendsFromLabel(absl::string_view value) {
  hoist::v1::ProxyConfig config;
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    uint32_t port = 0;
    if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &port)) {
      return absl::InternalError(absl::StrCat("label ", labels::kProxyFrontends, " \"", value, "\" is malformed"));
    }
    auto* f = config.add_frontends();
    f->set_route(std::string(kv.first));
    f->set_listen_port(port);
  }
  return config;
}

}  // namespace

absl::Status StepExecutor::PrepareProxy(const StepContext& ctx, const hoist::v1::ProxyConfig& config,
                                        docker::ContainerSpec* spec) {
  // The runtime API is a unix socket in a directory of the agent's (0700),
  // bind-mounted into this proxy alone: app containers on the proxy's
  // networks cannot reach it, as they could a TCP port.
  const std::string dir = absl::StrCat(journal_->state_dir(), "/proxy-api/", spec->name);
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  if (chmod(dir.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("chmod 0700 ", dir, ": ", std::strerror(errno)));
  }
  (void)unlink(absl::StrCat(dir, "/admin.sock").c_str());  // a previous container's
  spec->mounts.push_back({.source = dir, .target = std::string(kHaproxyRuntimeDir), .read_only = false});
  spec->labels[std::string(labels::kProxyRuntime)] = dir;
  spec->labels[std::string(labels::kProxyFrontends)] = FrontendsLabel(config);
  return CheckProxyConfig(ctx, spec->image, spec->name, RenderHaproxyConfig(config, {}));
}

absl::Status StepExecutor::WriteProxyConfig(const StepContext& ctx, const std::string& container,
                                            const std::string& config_text, absl::string_view file_name) {
  std::string dir = absl::StrCat(journal_->state_dir(), "/proxy");
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  std::string tar = absl::StrCat(dir, "/", StepJournal::FileKey(ctx.step.step_id()), ".tar");
  if (absl::Status s = WriteFileAtomic(tar, TarArchive({{std::string(file_name), config_text, 0644}})); !s.ok()) return s;
  absl::Status put = docker_->PutArchive(container, kHaproxyConfigDir, tar);
  (void)RemoveAll(tar);
  if (!put.ok()) {
    return absl::Status(put.code(), absl::StrCat("write ", kHaproxyConfigDir, "/", file_name, " into ", container, ": ",
                                                 put.message(), " (a proxy image needs the directory ",
                                                 kHaproxyConfigDir, ")"));
  }
  return absl::OkStatus();
}

absl::Status StepExecutor::CheckProxyConfig(const StepContext& ctx, const std::string& image, const std::string& name,
                                            const std::string& config_text) {
  docker::ContainerSpec check;
  check.name = absl::StrCat(name, "-config-check");
  check.image = image;
  check.command = {std::string(kHaproxyBinary), "-c", "-q", "-f", std::string(kHaproxyConfigPath)};
  check.restart_policy = "no";
  check.labels = {{std::string(labels::kManaged), "true"},
                  {std::string(labels::kJob), "proxy-config-check"},
                  {std::string(labels::kStep), ctx.step.step_id()},
                  {std::string(labels::kAgent), policy_.agent_id}};
  if (ctx.step.has_start_instance()) {
    check.labels[std::string(labels::kDeployment)] = ctx.step.start_instance().instance().deployment();
  }
  for (const auto& [key, value] : policy_.extra_labels) check.labels.emplace(key, value);
  // A check container left by an agent that stopped mid-check.
  if (auto old = docker_->Inspect(check.name); old.ok() && IsManagedHere(*old, policy_)) RemoveHelper(old->id);
  auto id = docker_->Create(check);
  if (!id.ok()) return absl::Status(id.status().code(), absl::StrCat("create ", check.name, ": ", id.status().message()));
  absl::Status result = [&]() -> absl::Status {
    if (absl::Status s = WriteProxyConfig(ctx, *id, config_text); !s.ok()) return s;
    if (absl::Status s = docker_->Start(*id); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("start ", check.name, " (is ", kHaproxyBinary, " in the image?): ", s.message()));
    }
    auto code = docker_->Wait(*id, std::min(kConfigCheckTimeout, std::max(absl::Seconds(1), ctx.deadline - clock_->Now())));
    if (!code.ok()) return absl::Status(code.status().code(), absl::StrCat("wait for ", check.name, ": ", code.status().message()));
    if (*code != 0) {
      auto logs = docker_->Logs(*id, 20);
      return absl::FailedPreconditionError(absl::StrCat("`haproxy -c` refused the proxy configuration (exit ", *code,
                                                        "): ", logs.ok() ? *logs : "(no log)"));
    }
    return absl::OkStatus();
  }();
  RemoveHelper(*id);
  return result;
}

absl::StatusOr<docker::ContainerInfo> StepExecutor::ProxyContainer(const hoist::v1::ProxyUpdate& update) {
  auto containers = docker_->List({absl::StrCat(labels::kManaged, "=true"),
                                   absl::StrCat(labels::kDeployment, "=", update.deployment()),
                                   absl::StrCat(labels::kService, "=", update.service())});
  if (!containers.ok()) return containers.status();
  const docker::ContainerInfo* best = nullptr;
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || c.state != "running") continue;
    if (best == nullptr || c.created_at > best->created_at) best = &c;
  }
  if (best == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("no running container of proxy service ", update.service(),
                                                      " of deployment ", update.deployment(), " on this host"));
  }
  return docker_->Inspect(best->id);
}

absl::StatusOr<std::map<std::string, std::string>> StepExecutor::ResolveBackends(
    const hoist::v1::ProxyUpdate& update, const docker::ContainerInfo& proxy) {
  std::map<std::string, std::string> out;
  for (int i = 0; i < update.routes_size(); ++i) {
    for (int j = 0; j < update.routes(i).backends_size(); ++j) {
      const std::string& address = update.routes(i).backends(j).address();
      if (out.contains(address)) continue;
      if (IsIpLiteral(address)) {
        out[address] = address;
        continue;
      }
      // A container name: its IP on a network it shares with the proxy
      // (HAProxy's dynamic servers take IPs, not names).
      std::string ip;
      std::vector<std::string> theirs;
      if (auto c = docker_->Inspect(address); c.ok()) {
        for (const auto& [network, net_ip] : c->network_ips) {
          theirs.push_back(network);
          if (ip.empty() && !net_ip.empty() && proxy.network_ips.contains(network)) ip = net_ip;
        }
      } else {
        ip = ResolveHostName(address);
      }
      if (ip.empty()) {
        std::vector<std::string> proxy_networks;
        for (const auto& [network, net_ip] : proxy.network_ips) proxy_networks.push_back(network);
        return absl::InvalidArgumentError(absl::StrCat(
            "proxy_update.routes[", i, "].backends[", j, "].address: \"", address,
            "\" is not an IP, no host name that resolves, and no container sharing a network with the proxy ",
            proxy.name, " (proxy networks: ", absl::StrJoin(proxy_networks, ", "), "; ",
            theirs.empty() ? "no such container" : absl::StrCat("the container's: ", absl::StrJoin(theirs, ", ")),
            "); nothing was changed"));
      }
      out[address] = ip;
    }
  }
  return out;
}

absl::Status StepExecutor::ProxyUpdate(const StepContext& ctx) {
  const auto& update = ctx.step.proxy_update();
  auto proxy = ProxyContainer(update);
  if (!proxy.ok()) return proxy.status();
  std::unique_ptr<HaproxySocket> socket;
  if (auto dir = proxy->labels.find(std::string(labels::kProxyRuntime)); dir != proxy->labels.end()) {
    socket = UnixHaproxySocket(absl::StrCat(dir->second, "/admin.sock"), kRuntimeCommandTimeout);
  } else if (auto port = proxy->published_ports.find(absl::StrCat(kHaproxyRuntimePort, "/tcp"));
             port != proxy->published_ports.end() && port->second != 0) {
    // Started by an older agent: its API is a TCP port on loopback until the
    // proxy is replaced.
    socket = TcpHaproxySocket("127.0.0.1", port->second, kRuntimeCommandTimeout);
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        "proxy container ", proxy->name, " has no runtime API (label ", labels::kProxyRuntime,
        "): it was not started as a Hoist proxy (start_instance.proxy); replace it"));
  }
  auto addresses = ResolveBackends(update, *proxy);
  if (!addresses.ok()) return addresses.status();

  HaproxyRuntime runtime(socket.get(), clock_);
  if (absl::Status s = runtime.WaitReady(std::min(ctx.deadline, clock_->Now() + kRuntimeReadyWait)); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("proxy ", proxy->name, ": ", s.message()));
  }
  absl::Duration drain = ToDuration(update.drain_timeout());
  if (drain <= absl::ZeroDuration()) drain = absl::Seconds(10);
  drain = std::min(drain, std::max(absl::ZeroDuration(), ctx.deadline - clock_->Now() - absl::Seconds(2)));
  absl::Time started = clock_->Now();
  auto report = runtime.Apply(update, *addresses, drain, [this] { return stopping(); });
  if (!report.ok()) {
    return absl::Status(report.status().code(), absl::StrCat("proxy ", proxy->name, ": ", report.status().message()));
  }
  spdlog::info("step {}: proxy {}: {}", ctx.step.step_id(), proxy->name, absl::StrJoin(report->commands, "; "));
  hoist::v1::StepProgress progress;
  progress.set_message(absl::StrCat("proxy ", proxy->name, ": ", report->commands.size(), " runtime change(s) in ",
                                    absl::FormatDuration(absl::Trunc(clock_->Now() - started, absl::Milliseconds(1))),
                                    report->drained_sessions_left > 0
                                        ? absl::StrCat("; ", report->drained_sessions_left,
                                                       " session(s) still open at the drain timeout were closed")
                                        : ""));
  Progress(ctx, std::move(progress));

  // The file mirrors the runtime state, so that a restarted proxy keeps it;
  // checked with `haproxy -c` inside the proxy before it replaces the old one.
  auto frontends = FrontendsFromLabel(LabelOf(*proxy, labels::kProxyFrontends));
  auto servers = runtime.Servers();
  if (!frontends.ok() || !servers.ok()) {
    spdlog::warn("step {}: proxy {}: its configuration file was not rewritten: {}", ctx.step.step_id(), proxy->name,
                 !frontends.ok() ? frontends.status() : servers.status());
    return absl::OkStatus();
  }
  std::string text = RenderHaproxyConfig(*frontends, *servers);
  // A change of server states only (a blue-green switch or switch back)
  // keeps every server line HAProxy already holds and flips its `disabled`
  // keyword: the file is written at once, without the `haproxy -c` round
  // trip that would double the switch's time. Any other change is checked first.
  const bool states_only = std::all_of(report->commands.begin(), report->commands.end(), [](const std::string& c) {
    return absl::StartsWith(c, "set server ") && absl::StrContains(c, " state ");
  });
  if (states_only) {
    if (absl::Status s = WriteProxyConfig(ctx, proxy->id, text); !s.ok()) {
      spdlog::warn("step {}: proxy {}: the runtime change is applied, but its configuration file was not rewritten "
                   "(a restart of the proxy would lose it): {}",
                   ctx.step.step_id(), proxy->name, s);
    }
    return absl::OkStatus();
  }
  absl::Status persisted = WriteProxyConfig(ctx, proxy->id, text, "haproxy.cfg.next");
  if (persisted.ok()) {
    auto checked = docker_->Exec(proxy->id,
                                 {std::string(kHaproxyBinary), "-c", "-q", "-f",
                                  absl::StrCat(kHaproxyConfigDir, "/haproxy.cfg.next")},
                                 kConfigCheckTimeout);
    if (!checked.ok()) {
      persisted = checked.status();
    } else if (checked->exit_code != 0) {
      persisted = absl::FailedPreconditionError(absl::StrCat("`haproxy -c` refused it: ", checked->output));
    } else {
      persisted = WriteProxyConfig(ctx, proxy->id, text);
    }
  }
  if (!persisted.ok()) {
    spdlog::warn("step {}: proxy {}: the runtime change is applied, but its configuration file was not rewritten "
                 "(a restart of the proxy would lose it): {}",
                 ctx.step.step_id(), proxy->name, persisted);
  }
  return absl::OkStatus();
}

}  // namespace hoist::agent

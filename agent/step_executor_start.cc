// start_instance: creates the instance's container (unless this step made
// it before), checks that an existing one is this instance's at this
// version, starts it, and answers where it can be reached.

#include <map>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/container_names.h"
#include "agent/haproxy.h"
#include "agent/inventory.h"
#include "agent/step_executor.h"
#include "agent/step_executor_internal.h"
#include "shared/labels.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {

using internal::Describe;

namespace {

// OK when the existing container `info` (named `name`) is the instance's of
// the version `start` asks for, and can be started or is running.
absl::Status CheckInstanceContainer(const docker::ContainerInfo& info, const std::string& name,
                                    const hoist::v1::StartInstance& start, const AgentPolicy& policy) {
  const auto& instance = start.instance();
  if (!IsManagedHere(info, policy)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a container named ", name, " exists without Hoist's labels for a deployment this agent serves; Hoist "
        "leaves it untouched: rename or remove it, or set start_instance.container_name"));
  }
  auto theirs = InstanceFromLabels(info.labels);
  std::string version = LabelOf(info, labels::kVersion);
  if (!theirs.has_value() || Describe(*theirs) != Describe(instance) || version != start.version()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "container ", name, " already exists for ", theirs.has_value() ? Describe(*theirs) : "another instance",
        " version ", version.empty() ? "(none)" : version, "; remove it first (remove_instance)"));
  }
  if (info.state == "paused") {
    return absl::FailedPreconditionError(absl::StrCat("container ", name, " is paused; unpause or remove it"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<hoist::v1::StartResult> StepExecutor::DescribeStarted(const docker::ContainerInfo& info,
                                                                     const hoist::v1::ContainerSpec& spec) {
  hoist::v1::StartResult start;
  start.set_container_id(info.id);
  start.set_container_name(info.name);
  *start.mutable_published_ports() = PublishedPorts(info);
  // Published: where this host reaches it. Otherwise: its IP on its network.
  for (const auto& port : spec.ports()) {
    std::string key = absl::StrCat(port.container_port(), "/", port.protocol().empty() ? "tcp" : port.protocol());
    auto published = info.published_ports.find(key);
    if (published == info.published_ports.end() || published->second == 0) continue;
    std::string host = port.host_ip().empty() || port.host_ip() == "0.0.0.0" ? "127.0.0.1" : port.host_ip();
    start.set_address(absl::StrCat(host, ":", published->second));
    return start;
  }
  std::string network = spec.network().empty() ? "bridge" : spec.network();
  std::string ip;
  if (auto it = info.network_ips.find(network); it != info.network_ips.end()) ip = it->second;
  for (const auto& [name, address] : info.network_ips) {
    if (ip.empty()) ip = address;
  }
  if (!ip.empty() && !spec.ports().empty()) ip = absl::StrCat(ip, ":", spec.ports(0).container_port());
  start.set_address(ip);
  return start;
}

absl::Status StepExecutor::StartInstance(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& start = ctx.step.start_instance();
  const auto& instance = start.instance();
  std::string name = start.container_name().empty() ? InstanceContainerName(instance, start.version())
                                                     : start.container_name();
  std::map<std::string, std::string> labels =
      InstanceLabels(instance, start.version(), ctx.step.step_id(), policy_.agent_id);
  // The agent picks the host port of a binding "Docker chooses" on one
  // address (see DockerSpec); another process can take it before Docker
  // binds it, and the start then fails. The container is made again with
  // another port, a few times.
  bool agent_picks_ports = false;
  for (const auto& port : start.spec().ports()) {
    agent_picks_ports = agent_picks_ports || (port.host_port() == 0 && !port.host_ip().empty() &&
                                              port.host_ip() != "0.0.0.0" && port.host_ip() != "::");
  }
  int port_retries = 0;
  // Two rounds: a create that loses a race with another creator looks again.
  for (int round = 0; round < 2; ++round) {
    bool created_here = false;
    auto existing = docker_->Inspect(name);
    if (absl::IsNotFound(existing.status())) {
      auto spec = InstanceSpec(ctx, name, labels);
      if (!spec.ok()) return spec.status();
      auto id = docker_->Create(*spec);
      if (absl::IsAlreadyExists(id.status())) continue;
      if (!id.ok()) return absl::Status(id.status().code(), absl::StrCat("create ", name, ": ", id.status().message()));
      spdlog::info("step {}: created {} for {} version {}", ctx.step.step_id(), name, Describe(instance),
                   start.version());
      created_here = true;
      existing = docker_->Inspect(*id);
    }
    if (!existing.ok()) {
      return absl::Status(existing.status().code(), absl::StrCat("inspect ", name, ": ", existing.status().message()));
    }
    const docker::ContainerInfo& info = *existing;
    if (absl::Status s = CheckInstanceContainer(info, name, start, policy_); !s.ok()) return s;
    if (info.state != "running" && info.state != "restarting") {
      if (absl::Status s = CheckDeadline(ctx, "starting the container"); !s.ok()) return s;
      if (start.has_proxy()) {
        if (absl::Status s = WriteProxyConfig(ctx, info.id, RenderHaproxyConfig(start.proxy(), {})); !s.ok()) return s;
      }
      if (absl::Status s = StartContainer(ctx, info.id, name); !s.ok()) {
        if (created_here && agent_picks_ports && port_retries < 3 &&
            absl::StrContains(s.message(), "address already in use")) {
          ++port_retries;
          spdlog::warn("step {}: {}: the host port picked was taken meanwhile; making the container again with "
                       "another ({})", ctx.step.step_id(), name, s.message());
          if (absl::Status r = docker_->Remove(info.id, /*force=*/true, /*remove_volumes=*/false);
              !r.ok() && !absl::IsNotFound(r)) {
            return absl::Status(r.code(), absl::StrCat("remove ", name, " after a port clash: ", r.message()));
          }
          --round;
          continue;
        }
        return s;
      }
    }
    return ReportStarted(ctx, info.id, name, start.spec(), result);
  }
  return absl::AbortedError(absl::StrCat("container ", name, " keeps appearing and disappearing; try again"));
}

absl::StatusOr<docker::ContainerSpec> StepExecutor::InstanceSpec(const StepContext& ctx, const std::string& name,
                                                                 const std::map<std::string, std::string>& labels) {
  const auto& start = ctx.step.start_instance();
  auto spec = DockerSpec(ctx, "start_instance.spec", start.spec(), name, labels);
  if (!spec.ok()) return spec.status();
  if (start.has_proxy()) {
    if (absl::Status s = PrepareProxy(ctx, start.proxy(), &*spec); !s.ok()) return s;
  }
  if (!start.image_digest().empty()) {
    if (absl::Status s = CheckImageDigest(start.spec().image(), start.image_digest()); !s.ok()) return s;
  }
  if (absl::Status s = CheckDeadline(ctx, "creating the container"); !s.ok()) return s;
  return spec;
}

absl::Status StepExecutor::ReportStarted(const StepContext& ctx, const std::string& id, const std::string& name,
                                         const hoist::v1::ContainerSpec& spec, hoist::v1::StepResult* result) {
  auto started = docker_->Inspect(id);
  if (!started.ok()) {
    return absl::Status(started.status().code(), absl::StrCat("inspect ", name, ": ", started.status().message()));
  }
  auto described = DescribeStarted(*started, spec);
  if (!described.ok()) return described.status();
  *result->mutable_start() = std::move(*described);
  hoist::v1::StepProgress progress;
  progress.set_message(absl::StrCat("started ", name, " at ", result->start().address()));
  Progress(ctx, std::move(progress));
  return absl::OkStatus();
}

}  // namespace hoist::agent

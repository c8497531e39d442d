// The forward side of the step executor: a service of the deployment that
// runs on other Docker hosts is made reachable here by its name, through one
// forwarder container per service on the deployment's network (the
// service's name as its alias) that relays each port to the instances'
// address:port on the other hosts.
//
// The forwarder's image is made on this host from the static hoist-forward
// binary next to the agent (docker import of a one-file tar: no registry),
// tagged with the binary's digest, so that a new agent brings its own.

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/container_names.h"
#include "agent/file_util.h"
#include "agent/journal.h"
#include "agent/step_executor.h"
#include "shared/labels.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {
namespace {

constexpr absl::string_view kForwardRepository = "hoist-forward";
constexpr absl::string_view kForwardConfigDir = "/etc/hoist-forward";
constexpr absl::string_view kForwardLabel = "hoist.forward";             // service forwarded
constexpr absl::string_view kForwardPortsLabel = "hoist.forward.ports";  // "5432,8000"

std::string ForwarderName(const hoist::v1::ForwardUpdate& f) {
  return SanitizeContainerName(absl::StrCat(f.deployment(), "-forward-", f.service()));
}

// What a forwarder is told: one line per listen port with the address and
// port of each target that takes connections, then "end".
struct ForwarderConfig {
  std::string text;
  std::vector<std::string> summary;  // "5432 -> 2 target(s)", for the log
  std::string ports_label;           // the listen ports, "5432,8000"
};

ForwarderConfig RenderForwarderConfig(const hoist::v1::ForwardUpdate& f) {
  ForwarderConfig out;
  std::set<uint32_t> listen;
  for (const hoist::v1::ForwardPort& p : f.ports()) {
    listen.insert(p.listen_port());
    std::string line = absl::StrCat(p.listen_port());
    int n = 0;
    for (const hoist::v1::ProxyBackend& t : p.targets()) {
      if (t.state() != hoist::v1::BACKEND_STATE_READY && t.state() != hoist::v1::BACKEND_STATE_UNSPECIFIED) continue;
      absl::StrAppend(&line, " ", t.address(), " ", t.port());
      ++n;
    }
    absl::StrAppend(&out.text, line, "\n");
    out.summary.push_back(absl::StrCat(p.listen_port(), " -> ", n, " target(s)"));
  }
  absl::StrAppend(&out.text, "end\n");  // hoist-forward reads a file without it again
  out.ports_label = absl::StrJoin(listen, ",");
  return out;
}

}  // namespace

absl::StatusOr<std::string> StepExecutor::ForwarderImage(const StepContext& ctx) {
  absl::MutexLock lock(&forward_mu_);
  if (!forward_image_.empty()) {
    if (docker_->InspectImage(forward_image_).ok()) return forward_image_;
    forward_image_.clear();  // removed behind the agent's back: import it again
  }
  if (policy_.forward_binary.empty()) {
    return absl::FailedPreconditionError(
        "this agent has no forwarder binary (hoist-agent --forward-binary, by default hoist-forward next to "
        "hoist-agent); install hoist-forward with the agent");
  }
  auto binary = ReadFileToString(policy_.forward_binary);
  if (!binary.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the forwarder binary ", policy_.forward_binary, ": ", binary.status().message()));
  }
  const std::string tag = Sha256Hex(*binary).substr(0, 16);
  const std::string image = absl::StrCat(kForwardRepository, ":", tag);
  if (docker_->InspectImage(image).ok()) {
    forward_image_ = image;
    return image;
  }
  std::string dir = absl::StrCat(journal_->state_dir(), "/forward");
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  std::string tar = absl::StrCat(dir, "/", StepJournal::FileKey(ctx.step.step_id()), ".image.tar");
  std::string archive = TarArchive({{"hoist-forward", *binary, 0755}, {"etc/hoist-forward/targets", "end\n", 0644}});
  if (absl::Status s = WriteFileAtomic(tar, archive); !s.ok()) return s;
  absl::Status imported = docker_->ImportImage(kForwardRepository, tag, tar);
  (void)RemoveAll(tar);
  if (!imported.ok()) {
    return absl::Status(imported.code(), absl::StrCat("import the forwarder image ", image, ": ", imported.message()));
  }
  spdlog::info("imported the forwarder image {} from {}", image, policy_.forward_binary);
  forward_image_ = image;
  return image;
}

absl::Status StepExecutor::ForwardUpdate(const StepContext& ctx) {
  const hoist::v1::ForwardUpdate& f = ctx.step.forward_update();
  const std::string name = ForwarderName(f);
  auto existing = docker_->Inspect(name);
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  if (existing.ok() && !IsManagedHere(*existing, policy_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("container ", name, " exists but was not made by this agent for ", f.deployment(),
                     "; remove or rename it"));
  }
  if (f.ports().empty()) {  // not needed here any more
    if (existing.ok()) {
      if (absl::Status s = docker_->Remove(existing->id, /*force=*/true, /*remove_volumes=*/true); !s.ok()) return s;
      spdlog::info("removed the forwarder {}", name);
    }
    return absl::OkStatus();
  }

  const ForwarderConfig config = RenderForwarderConfig(f);
  auto image = ForwarderImage(ctx);
  if (!image.ok()) return image.status();
  const bool reusable = existing.ok() && existing->state == "running" && existing->image == *image &&
                        LabelOf(*existing, kForwardPortsLabel) == config.ports_label &&
                        existing->network_ips.contains(f.network());

  std::string dir = absl::StrCat(journal_->state_dir(), "/forward");
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  std::string tar = absl::StrCat(dir, "/", StepJournal::FileKey(ctx.step.step_id()), ".tar");
  if (absl::Status s = WriteFileAtomic(tar, TarArchive({{"targets", config.text, 0644}})); !s.ok()) return s;
  struct TarCleanup {
    std::string path;
    ~TarCleanup() { (void)RemoveAll(path); }
  } cleanup{tar};

  if (reusable) {  // same listen ports: new targets without a restart
    if (absl::Status s = docker_->PutArchive(existing->id, kForwardConfigDir, tar); !s.ok()) return s;
    spdlog::info("forwarder {} now relays {}", name, absl::StrJoin(config.summary, ", "));
    return absl::OkStatus();
  }
  if (existing.ok()) {
    if (absl::Status s = docker_->Remove(existing->id, /*force=*/true, /*remove_volumes=*/true); !s.ok()) return s;
  }
  if (absl::Status s = StartForwarder(ctx, name, *image, config.ports_label, tar); !s.ok()) return s;
  spdlog::info("forwarder {} ({} on {}) relays {}", name, f.service(), f.network(), absl::StrJoin(config.summary, ", "));
  return absl::OkStatus();
}

absl::Status StepExecutor::StartForwarder(const StepContext& ctx, const std::string& name, const std::string& image,
                                          const std::string& ports_label, const std::string& tar) {
  const hoist::v1::ForwardUpdate& f = ctx.step.forward_update();
  if (absl::Status s = CheckDeadline(ctx, "creating the forwarder"); !s.ok()) return s;
  // The same path as an instance's container: the deployment network made
  // on first use and joined by id, the agent's object labels added.
  hoist::v1::ContainerSpec forwarder;
  forwarder.set_image(image);
  for (const std::string& a : {std::string("/hoist-forward"), std::string("--config"),
                               absl::StrCat(kForwardConfigDir, "/targets")}) {
    forwarder.add_command(a);
  }
  forwarder.set_network(f.network());
  forwarder.add_network_aliases(f.service());
  forwarder.set_restart_policy("unless-stopped");
  forwarder.mutable_stop_timeout()->set_seconds(2);
  auto spec = DockerSpec(ctx, "forward_update", forwarder, name,
                         {{std::string(labels::kManaged), "true"},
                          {std::string(labels::kDeployment), f.deployment()},
                          {std::string(labels::kAgent), policy_.agent_id},
                          {std::string(labels::kStep), ctx.step.step_id()},
                          {std::string(kForwardLabel), f.service()},
                          {std::string(kForwardPortsLabel), ports_label}});
  if (!spec.ok()) return spec.status();
  auto id = docker_->Create(*spec);
  if (!id.ok()) return id.status();
  if (absl::Status s = docker_->PutArchive(*id, kForwardConfigDir, tar); !s.ok()) {
    RemoveHelper(*id);
    return s;
  }
  if (absl::Status s = StartContainer(ctx, *id, name); !s.ok()) {
    RemoveHelper(*id);
    return s;
  }
  // A forwarder that cannot listen exits at once: say so here, not later.
  for (int i = 0; i < 10; ++i) {
    auto info = docker_->Inspect(*id);
    if (info.ok() && info->state != "running" && info->state != "created") {
      auto logs = docker_->Logs(*id, 5);
      return absl::InternalError(absl::StrCat("the forwarder ", name, " stopped at once (", info->state,
                                              ", exit code ", info->exit_code, "): ", logs.ok() ? *logs : ""));
    }
    if (!SleepUntil(clock_->Now() + absl::Milliseconds(20))) break;
  }
  return absl::OkStatus();
}

}  // namespace hoist::agent

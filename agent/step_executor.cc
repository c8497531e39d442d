#include "agent/step_executor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/container_names.h"
#include "agent/env_file.h"
#include "agent/file_util.h"
#include "shared/proto_time.h"
#include "agent/haproxy.h"
#include "agent/health_probe.h"
#include "agent/inventory.h"
#include "agent/step_validation.h"
#include "shared/labels.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {
namespace {

// A port the kernel has free on `ip` (an address of this host) right now, or
// 0 when it cannot tell (not an address of this host, for one).
uint16_t FreePortOn(const std::string& ip, const std::string& protocol) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    len = sizeof(*v6);
  } else {
    return 0;
  }
  int fd = socket(ss.ss_family, protocol == "udp" ? SOCK_DGRAM : SOCK_STREAM, 0);
  if (fd < 0) return 0;
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    port = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  }
  close(fd);
  return port;
}

// Stop timeout when neither the step nor the spec names one (Docker's own default).
constexpr absl::Duration kDefaultStopTimeout = absl::Seconds(10);
// Waits are sliced so that Shutdown is noticed quickly.
constexpr absl::Duration kWaitSlice = absl::Seconds(2);
constexpr absl::Duration kSleepSlice = absl::Milliseconds(250);
constexpr absl::Duration kDefaultProbeInterval = absl::Seconds(2);
constexpr absl::Duration kDefaultProbeTimeout = absl::Seconds(2);
constexpr absl::Duration kDefaultProbeDeadline = absl::Seconds(60);
constexpr uint32_t kDefaultLogTailLines = 50;
// Lines of a job's log kept on disk.
constexpr int kJobLogFileLines = 100000;
// The message CANCELLED carries when a step gives up because the agent stops.
constexpr absl::string_view kStoppingMessage = "the agent is stopping; the step resumes when re-sent";




std::string ActionName(const hoist::v1::Step& step) {
  switch (step.action_case()) {
    case hoist::v1::Step::kPullImage: return "pull_image";
    case hoist::v1::Step::kStartInstance: return "start_instance";
    case hoist::v1::Step::kStopInstance: return "stop_instance";
    case hoist::v1::Step::kRemoveInstance: return "remove_instance";
    case hoist::v1::Step::kProbeHealth: return "probe_health";
    case hoist::v1::Step::kRunJob: return "run_job";
    case hoist::v1::Step::kBackup: return "backup";
    case hoist::v1::Step::kRestore: return "restore";
    case hoist::v1::Step::kProxyUpdate: return "proxy_update";
    case hoist::v1::Step::kReadEnvNames: return "read_env_names";
    case hoist::v1::Step::kForwardUpdate: return "forward_update";
    case hoist::v1::Step::ACTION_NOT_SET: break;
  }
  return "no action";
}

std::string Describe(const hoist::v1::InstanceRef& instance) {
  return absl::StrCat(instance.deployment(), "/", instance.service(), "/", SlotName(instance.slot()), "/",
                      instance.replica());
}

bool IsRunningState(absl::string_view state) {
  return state == "running" || state == "restarting" || state == "paused";
}

// Repository part of an image reference (without tag or digest).
std::string Repository(absl::string_view image) {
  size_t at = image.find('@');
  if (at != absl::string_view::npos) return std::string(image.substr(0, at));
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    return std::string(image.substr(0, colon));
  }
  return std::string(image);
}

std::string LastLines(absl::string_view text, uint32_t lines) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  size_t pos = text.size();
  for (uint32_t i = 0; i < lines; ++i) {
    size_t nl = text.rfind('\n', pos == 0 ? 0 : pos - 1);
    if (nl == absl::string_view::npos || pos == 0) {
      pos = 0;
      break;
    }
    pos = nl;
  }
  absl::string_view tail = text.substr(pos);
  if (!tail.empty() && tail.front() == '\n') tail.remove_prefix(1);
  return std::string(tail);
}

hoist::v1::StepResult Refused(const hoist::v1::Step& step, absl::Time at, const absl::Status& status) {
  hoist::v1::StepResult result;
  result.set_step_id(step.step_id());
  result.set_epoch(step.epoch());
  result.set_outcome(hoist::v1::STEP_OUTCOME_REFUSED);
  result.set_code(static_cast<int32_t>(status.code()));
  result.set_message(std::string(status.message()));
  SetTimestamp(at, result.mutable_started_at());
  SetTimestamp(at, result.mutable_finished_at());
  spdlog::warn("step {} ({}) refused: {}", step.step_id(), ActionName(step), status.message());
  return result;
}

}  // namespace

StepExecutor::StepExecutor(docker::DockerApi* docker, StepJournal* journal, AgentPolicy policy, Clock* clock)
    : docker_(docker), journal_(journal), policy_(std::move(policy)), clock_(clock) {}

StepExecutor::~StepExecutor() { Shutdown(); }

void StepExecutor::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  mu_.Await(absl::Condition(
      +[](int* active) { return *active == 0; }, &active_));
}

bool StepExecutor::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

std::vector<std::string> StepExecutor::RunningStepIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, flight] : in_flight_) ids.push_back(id);
  return ids;
}

int StepExecutor::WaitersFor(absl::string_view step_id) const {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(step_id);
  return it == in_flight_.end() ? 0 : it->second->waiters;
}

hoist::v1::StepResult StepExecutor::Run(const hoist::v1::Step& step, const ProgressCallback& on_progress) {
  absl::Time started_at = clock_->Now();
  // The id and epoch are checked before anything else: the journal and the
  // fencing token depend on them.
  if (step.step_id().empty() || step.step_id().size() > kMaxStepIdLength || step.epoch() == 0) {
    if (absl::Status s = ValidateStep(step); !s.ok()) return Refused(step, started_at, s);
  }
  if (absl::Status s = journal_->AcceptEpoch(step.epoch()); !s.ok()) {
    if (absl::IsFailedPrecondition(s)) {
      return Refused(step, started_at,
                     absl::FailedPreconditionError(absl::StrCat("step ", step.step_id(), ": ", s.message())));
    }
    return Finish(step, started_at, absl::UnavailableError(absl::StrCat("cannot persist the epoch: ", s.message())),
                  {});
  }
  return RunClaimed(step, [&] { return Execute(step, on_progress, started_at); });
}

hoist::v1::StepResult StepExecutor::RunClaimed(const hoist::v1::Step& step,
                                               const std::function<hoist::v1::StepResult()>& body) {
  std::shared_ptr<InFlight> flight;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      return Finish(step, clock_->Now(), absl::UnavailableError("the agent is stopping; send the step again later"),
                    {});
    }
    auto it = in_flight_.find(step.step_id());
    if (it != in_flight_.end()) {
      flight = it->second;
      ++flight->waiters;
      mu_.Await(absl::Condition(+[](InFlight* f) { return f->done; }, flight.get()));
      --flight->waiters;
      hoist::v1::StepResult result = flight->result;
      result.set_replayed(true);
      return result;
    }
    flight = std::make_shared<InFlight>();
    in_flight_.emplace(step.step_id(), flight);
    ++active_;
  }
  hoist::v1::StepResult result = body();
  absl::MutexLock lock(&mu_);
  flight->result = result;
  flight->done = true;
  in_flight_.erase(step.step_id());
  --active_;
  return result;
}

hoist::v1::StepResult StepExecutor::Execute(const hoist::v1::Step& step, const ProgressCallback& on_progress,
                                            absl::Time started_at) {
  auto entry = journal_->Lookup(step.step_id());
  if (!entry.ok()) {
    return Finish(step, started_at,
                  absl::InternalError(absl::StrCat("cannot read the journal: ", entry.status().message())), {});
  }
  if (entry->has_value() && (*entry)->result.has_value()) {
    hoist::v1::StepResult result = *(*entry)->result;
    result.set_replayed(true);
    spdlog::info("step {} ({}) already ran; replaying its result", step.step_id(), ActionName(step));
    return result;
  }
  if (absl::Status s = ValidateStep(step); !s.ok()) return Refused(step, started_at, s);
  if (absl::Status s = CheckPolicy(step, policy_); !s.ok()) return Refused(step, started_at, s);

  if (absl::Status s = journal_->RecordStarted(step, started_at); !s.ok()) {
    return Finish(step, started_at,
                  absl::UnavailableError(absl::StrCat("cannot journal the step, so it was not run: ", s.message())),
                  {});
  }
  absl::Time deadline = step.has_deadline() ? ToTime(step.deadline()) : started_at + policy_.default_step_timeout;
  spdlog::info("step {} ({}) epoch {} rollout {}: started{}", step.step_id(), ActionName(step), step.epoch(),
               step.rollout_id().empty() ? "-" : step.rollout_id(),
               entry->has_value() ? " again after an interruption" : "");
  return RunAndRecord(StepContext{step, deadline, on_progress}, started_at);
}

hoist::v1::StepResult StepExecutor::RunAndRecord(const StepContext& ctx, absl::Time started_at) {
  hoist::v1::StepResult result;
  absl::Status status = CheckDeadline(ctx, "starting");
  if (status.ok()) status = RunAction(ctx, &result);
  result = Finish(ctx.step, started_at, status, std::move(result));
  if (absl::IsCancelled(status)) return result;  // left open for the next agent to reconcile
  if (absl::Status s = journal_->RecordResult(result); !s.ok()) {
    spdlog::error("step {}: cannot journal its result ({}); a re-sent step will run it again", ctx.step.step_id(), s);
  }
  return result;
}

hoist::v1::StepResult StepExecutor::Finish(const hoist::v1::Step& step, absl::Time started_at, absl::Status status,
                                           hoist::v1::StepResult result) {
  result.set_step_id(step.step_id());
  result.set_epoch(step.epoch());
  result.set_outcome(status.ok() ? hoist::v1::STEP_OUTCOME_SUCCEEDED : hoist::v1::STEP_OUTCOME_FAILED);
  result.set_code(static_cast<int32_t>(status.code()));
  result.set_message(std::string(status.message()));
  SetTimestamp(started_at, result.mutable_started_at());
  SetTimestamp(clock_->Now(), result.mutable_finished_at());
  if (status.ok()) {
    spdlog::info("step {} ({}): succeeded", step.step_id(), ActionName(step));
  } else {
    spdlog::warn("step {} ({}): failed: {}", step.step_id(), ActionName(step), status);
  }
  return result;
}

absl::Status StepExecutor::RunAction(const StepContext& ctx, hoist::v1::StepResult* result) {
  switch (ctx.step.action_case()) {
    case hoist::v1::Step::kPullImage: return PullImage(ctx, result);
    case hoist::v1::Step::kStartInstance: return StartInstance(ctx, result);
    case hoist::v1::Step::kStopInstance: return StopInstance(ctx);
    case hoist::v1::Step::kRemoveInstance: return RemoveInstance(ctx);
    case hoist::v1::Step::kProbeHealth: return ProbeHealth(ctx, result);
    case hoist::v1::Step::kRunJob: return RunJob(ctx, result);
    case hoist::v1::Step::kBackup: return Backup(ctx, result);
    case hoist::v1::Step::kRestore: return Restore(ctx);
    case hoist::v1::Step::kProxyUpdate: return ProxyUpdate(ctx);
    case hoist::v1::Step::kReadEnvNames: return ReadEnvNames(ctx, result);
    case hoist::v1::Step::kForwardUpdate: return ForwardUpdate(ctx);
    case hoist::v1::Step::ACTION_NOT_SET: break;
  }
  return absl::InvalidArgumentError("action: missing");
}

void StepExecutor::Progress(const StepContext& ctx, hoist::v1::StepProgress progress) {
  if (!ctx.on_progress) return;
  progress.set_step_id(ctx.step.step_id());
  ctx.on_progress(progress);
}

absl::Status StepExecutor::CheckDeadline(const StepContext& ctx, absl::string_view doing) {
  if (clock_->Now() < ctx.deadline) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("the step's deadline ", absl::FormatTime(ctx.deadline, absl::UTCTimeZone()), " passed before ",
                   doing));
}

bool StepExecutor::SleepUntil(absl::Time t) {
  for (;;) {
    if (stopping()) return false;
    absl::Duration left = t - clock_->Now();
    if (left <= absl::ZeroDuration()) return true;
    clock_->SleepFor(std::min(left, kSleepSlice));
  }
}

absl::Status StepExecutor::StartContainer(const StepContext& ctx, const std::string& id, absl::string_view name) {
  constexpr absl::Duration kAmbiguousWait = absl::Seconds(10);
  constexpr absl::Duration kAmbiguousRetry = absl::Milliseconds(100);
  const absl::Time give_up = std::min(ctx.deadline, clock_->Now() + kAmbiguousWait);
  for (;;) {
    absl::Status s = docker_->Start(id);
    if (s.ok()) return s;
    const bool ambiguous = absl::StrContains(s.message(), " is ambiguous");
    if (!ambiguous || clock_->Now() + kAmbiguousRetry > give_up) {
      return absl::Status(s.code(), absl::StrCat("start ", name, ": ", s.message()));
    }
    spdlog::info("start {}: {}; retrying while the duplicate network is removed", name, s.message());
    if (!SleepUntil(clock_->Now() + kAmbiguousRetry)) return absl::CancelledError(kStoppingMessage);
  }
}

// ---- pull_image ----

absl::Status StepExecutor::CheckImageDigest(const std::string& image, const std::string& digest) {
  auto local = docker_->InspectImage(image);
  if (!local.ok()) {
    return absl::Status(local.status().code(), absl::StrCat("inspect ", image, ": ", local.status().message()));
  }
  const std::string repository = Repository(image);
  std::vector<std::string> here;
  for (const std::string& repo_digest : local->repo_digests) {
    size_t at = repo_digest.find('@');
    if (at == std::string::npos || repo_digest.substr(0, at) != repository) continue;
    if (repo_digest.substr(at + 1) == digest) return absl::OkStatus();
    here.push_back(repo_digest.substr(at + 1));
  }
  if (local->id == digest) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      image, " is ", here.empty() ? local->id : absl::StrJoin(here, ", "), " on this host, but its release recorded ",
      digest, " when it was first pulled: the tag was pushed again since. Publish the new image under a new "
      "version (or push the recorded one back to the tag); nothing was started"));
}

absl::Status StepExecutor::PullImage(const StepContext& ctx, hoist::v1::StepResult* result) {
  const std::string& image = ctx.step.pull_image().image();
  bool pinned_by_digest = image.find('@') != std::string::npos;
  auto local = docker_->InspectImage(image);
  // A digest names content: if it is here, there is nothing to fetch.
  if (!pinned_by_digest || !local.ok()) {
    uint32_t last_layers_done = UINT32_MAX;
    absl::Time last_report = absl::InfinitePast();
    absl::Status s = docker_->Pull(image, [&](const docker::PullProgress& p) {
      absl::Time now = clock_->Now();
      // Docker reports every chunk; forward layer completions and at most a few lines a second.
      if (p.layers_done == last_layers_done && now - last_report < absl::Milliseconds(500)) return;
      last_layers_done = p.layers_done;
      last_report = now;
      hoist::v1::StepProgress progress;
      progress.set_message(absl::StrCat("pulling ", image, ": ", p.layers_done, "/", p.layers_total, " layers"));
      auto* pull = progress.mutable_pull();
      pull->set_bytes_done(p.bytes_done);
      pull->set_bytes_total(p.bytes_total);
      pull->set_layers_done(p.layers_done);
      pull->set_layers_total(p.layers_total);
      Progress(ctx, std::move(progress));
    });
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("pull ", image, ": ", s.message()));
    local = docker_->InspectImage(image);
  }
  if (!local.ok()) {
    return absl::Status(local.status().code(),
                        absl::StrCat("inspect ", image, " after pulling it: ", local.status().message()));
  }
  std::string digest;
  if (pinned_by_digest) digest = image.substr(image.find('@') + 1);
  std::string repository = Repository(image);
  for (const std::string& repo_digest : local->repo_digests) {
    if (!digest.empty()) break;
    size_t at = repo_digest.find('@');
    if (at != std::string::npos && repo_digest.substr(0, at) == repository) digest = repo_digest.substr(at + 1);
  }
  if (digest.empty() && !local->repo_digests.empty()) {
    const std::string& first = local->repo_digests.front();
    digest = first.substr(first.find('@') + 1);
  }
  // An image that never came from a registry has no content digest; its id
  // (the config's digest) is the best stable name for it.
  if (digest.empty()) digest = local->id;
  result->mutable_pull()->set_image_digest(digest);
  return absl::OkStatus();
}

// ---- start_instance ----

absl::StatusOr<docker::ContainerSpec> StepExecutor::DockerSpec(const StepContext& ctx, absl::string_view field,
                                                               const hoist::v1::ContainerSpec& spec, std::string name,
                                                               std::map<std::string, std::string> labels) {
  (void)ctx;
  docker::ContainerSpec out;
  out.name = std::move(name);
  out.image = spec.image();
  out.command.assign(spec.command().begin(), spec.command().end());
  for (int i = 0; i < spec.env_files_size(); ++i) {
    auto file_env = ReadEnvFile(spec.env_files(i));
    if (!file_env.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ".env_files[", i, "]: ", file_env.status().message()));
    }
    for (auto& [key, value] : *file_env) out.env[key] = std::move(value);
  }
  for (const auto& [key, value] : spec.env()) out.env[key] = value;
  for (const auto& port : spec.ports()) {
    docker::PortBinding binding;
    binding.container_port = static_cast<uint16_t>(port.container_port());
    binding.host_port = static_cast<uint16_t>(port.host_port());
    binding.host_ip = port.host_ip();
    binding.protocol = port.protocol().empty() ? "tcp" : port.protocol();
    // A port "Docker chooses" on a specific address is chosen here and given
    // to Docker as fixed: Docker would choose again whenever the container
    // restarts (after a reboot, say), and a proxy on another host that was
    // told the first one would lose it.
    if (binding.host_port == 0 && !binding.host_ip.empty() && binding.host_ip != "0.0.0.0" &&
        binding.host_ip != "::") {
      binding.host_port = FreePortOn(binding.host_ip, binding.protocol);
    }
    out.ports.push_back(std::move(binding));
  }
  const std::string deployment =
      labels.contains(std::string(labels::kDeployment)) ? labels.at(std::string(labels::kDeployment)) : "";
  // A network or volume of another deployment, or of a docker compose
  // project, is not this step's to join or mount (unless the agent allows it).
  auto check_owner = [&](absl::string_view what, const std::string& name,
                         const std::map<std::string, std::string>& theirs) -> absl::Status {
    if (policy_.allow_foreign_objects) return absl::OkStatus();
    std::string owner;
    if (auto it = theirs.find(std::string(labels::kDeployment)); it != theirs.end() && it->second != deployment) {
      owner = absl::StrCat("deployment ", it->second);
    } else if (it == theirs.end()) {
      if (auto compose = theirs.find("com.docker.compose.project"); compose != theirs.end()) {
        owner = absl::StrCat("docker compose project ", compose->second);
      }
    }
    if (owner.empty()) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrCat(what, " ", name, " belongs to ", owner, ", not to deployment ",
                                                    deployment, "; this agent does not share it "
                                                    "(hoist-agent --allow-foreign-objects)"));
  };
  for (int i = 0; i < spec.volumes_size(); ++i) {
    const auto& volume = spec.volumes(i);
    docker::Mount mount{volume.source(), volume.target(), volume.read_only()};
    if (!mount.is_bind()) {
      const std::string f = absl::StrCat(field, ".volumes[", i, "].source");
      auto theirs = docker_->VolumeLabels(mount.source);
      if (theirs.ok()) {
        if (absl::Status s = check_owner("volume", mount.source, *theirs); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat(f, ": ", s.message()));
        }
      } else if (absl::IsNotFound(theirs.status())) {
        // Made here with the deployment's labels, so that it is known as its own.
        std::map<std::string, std::string> mine = {{std::string(labels::kManaged), "true"}};
        if (!deployment.empty()) mine[std::string(labels::kDeployment)] = deployment;
        for (const auto& [key, value] : policy_.extra_labels) mine.emplace(key, value);
        if (absl::Status s = docker_->CreateVolume(mount.source, mine); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat(f, ": cannot create volume ", mount.source, ": ", s.message()));
        }
      } else {
        return absl::Status(theirs.status().code(), absl::StrCat(f, ": ", theirs.status().message()));
      }
    }
    out.mounts.push_back(std::move(mount));
  }
  out.network = spec.network();
  // Docker's own networks exist; a deployment's network is created on first use.
  if (!out.network.empty() && out.network != "bridge" && out.network != "host" && out.network != "none") {
    // A network that exists must be this deployment's (or nobody's in particular).
    if (!absl::StartsWith(out.network, "container:")) {
      auto theirs = docker_->NetworkLabels(out.network);
      absl::Status owned = theirs.ok() ? check_owner("network", out.network, *theirs)
                           : absl::IsNotFound(theirs.status()) ? absl::OkStatus()
                                                               : theirs.status();
      if (!owned.ok()) return absl::Status(owned.code(), absl::StrCat(field, ".network: ", owned.message()));
    }
    std::map<std::string, std::string> net_labels = {{std::string(labels::kManaged), "true"}};
    if (auto it = labels.find(std::string(labels::kDeployment)); it != labels.end()) net_labels.insert(*it);
    for (const auto& [key, value] : policy_.extra_labels) net_labels.emplace(key, value);
    auto network_id = docker_->EnsureNetwork(out.network, net_labels);
    if (!network_id.ok()) {
      const absl::Status& s = network_id.status();
      return absl::Status(s.code(), absl::StrCat(field, ".network: cannot create network ", out.network, ": ", s.message()));
    }
    out.network = *network_id;  // join by id: the name may briefly be ambiguous
  }
  out.network_aliases.assign(spec.network_aliases().begin(), spec.network_aliases().end());
  for (const auto& [key, value] : spec.labels()) labels[key] = value;
  for (const auto& [key, value] : policy_.extra_labels) labels.emplace(key, value);
  out.labels = std::move(labels);
  out.restart_policy = spec.restart_policy();
  if (!spec.docker_healthcheck().empty()) {
    docker::HealthConfig health;
    health.test.assign(spec.docker_healthcheck().begin(), spec.docker_healthcheck().end());
    out.healthcheck = std::move(health);
  }
  if (spec.has_stop_timeout()) out.stop_timeout = ToDuration(spec.stop_timeout());
  out.privileged = spec.privileged();
  return out;
}

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
      auto spec = DockerSpec(ctx, "start_instance.spec", start.spec(), name, labels);
      if (!spec.ok()) return spec.status();
      if (start.has_proxy()) {
        if (absl::Status s = PrepareProxy(ctx, start.proxy(), &*spec); !s.ok()) return s;
      }
      if (!start.image_digest().empty()) {
        if (absl::Status s = CheckImageDigest(start.spec().image(), start.image_digest()); !s.ok()) return s;
      }
      if (absl::Status s = CheckDeadline(ctx, "creating the container"); !s.ok()) return s;
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
    if (!IsManagedHere(info, policy_)) {
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
    auto started = docker_->Inspect(info.id);
    if (!started.ok()) {
      return absl::Status(started.status().code(), absl::StrCat("inspect ", name, ": ", started.status().message()));
    }
    auto described = DescribeStarted(*started, start.spec());
    if (!described.ok()) return described.status();
    *result->mutable_start() = std::move(*described);
    hoist::v1::StepProgress progress;
    progress.set_message(absl::StrCat("started ", name, " at ", result->start().address()));
    Progress(ctx, std::move(progress));
    return absl::OkStatus();
  }
  return absl::AbortedError(absl::StrCat("container ", name, " keeps appearing and disappearing; try again"));
}

// ---- stop_instance / remove_instance ----

absl::Status StepExecutor::StopInstance(const StepContext& ctx) {
  const auto& stop = ctx.step.stop_instance();
  auto containers = docker_->List(InstanceFilters(stop.instance(), stop.version()));
  if (!containers.ok()) return containers.status();
  absl::Duration timeout = stop.has_timeout() && ToDuration(stop.timeout()) > absl::ZeroDuration()
                               ? ToDuration(stop.timeout())
                               : kDefaultStopTimeout;
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || !IsRunningState(c.state)) continue;
    if (absl::Status s = CheckDeadline(ctx, absl::StrCat("stopping ", c.name)); !s.ok()) return s;
    absl::Status s = docker_->Stop(c.id, timeout);
    if (!s.ok() && !absl::IsNotFound(s)) return absl::Status(s.code(), absl::StrCat("stop ", c.name, ": ", s.message()));
    spdlog::info("step {}: stopped {}", ctx.step.step_id(), c.name);
  }
  return absl::OkStatus();
}

absl::Status StepExecutor::RemoveInstance(const StepContext& ctx) {
  const auto& remove = ctx.step.remove_instance();
  auto containers = docker_->List(InstanceFilters(remove.instance(), remove.version()));
  if (!containers.ok()) return containers.status();
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || c.state == "removing") continue;
    if (IsRunningState(c.state)) {
      if (!remove.force()) {
        return absl::FailedPreconditionError(
            absl::StrCat("container ", c.name, " is still ", c.state, "; stop it first or set remove_instance.force"));
      }
      if (absl::Status s = CheckDeadline(ctx, absl::StrCat("stopping ", c.name)); !s.ok()) return s;
      absl::Status s = docker_->Stop(c.id, kDefaultStopTimeout);
      if (!s.ok() && !absl::IsNotFound(s)) return absl::Status(s.code(), absl::StrCat("stop ", c.name, ": ", s.message()));
    }
    absl::Status s = docker_->Remove(c.id, /*force=*/remove.force(), /*remove_volumes=*/false);
    if (!s.ok() && !absl::IsNotFound(s)) return absl::Status(s.code(), absl::StrCat("remove ", c.name, ": ", s.message()));
    spdlog::info("step {}: removed {}", ctx.step.step_id(), c.name);
  }
  return absl::OkStatus();
}

// ---- probe_health ----

absl::StatusOr<docker::ContainerInfo> StepExecutor::RunningContainerOf(const hoist::v1::InstanceRef& instance,
                                                                       absl::string_view prefer_version) {
  auto containers = docker_->List(InstanceFilters(instance));
  if (!containers.ok()) return containers.status();
  const docker::ContainerInfo* best = nullptr;
  for (const auto& c : *containers) {
    if (!IsManagedHere(c, policy_) || c.state != "running") continue;
    bool preferred = !prefer_version.empty() && LabelOf(c, labels::kVersion) == prefer_version;
    bool best_preferred = best != nullptr && !prefer_version.empty() && LabelOf(*best, labels::kVersion) == prefer_version;
    if (best == nullptr || (preferred && !best_preferred) ||
        (preferred == best_preferred && c.created_at > best->created_at)) {
      best = &c;
    }
  }
  if (best == nullptr) {
    return absl::NotFoundError(absl::StrCat("no running container of instance ", Describe(instance)));
  }
  // Inspect has what a summary may lack (published ports, network IPs).
  return docker_->Inspect(best->id);
}

hoist::v1::Health StepExecutor::ObservedHealth(const std::string& container_id) const {
  absl::MutexLock lock(&mu_);
  auto it = observed_health_.find(container_id);
  return it == observed_health_.end() ? hoist::v1::HEALTH_UNSPECIFIED : it->second;
}

absl::Status StepExecutor::ProbeHealth(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& probe = ctx.step.probe_health();
  const auto& check = probe.check();
  auto positive = [](const google::protobuf::Duration& d, absl::Duration fallback) {
    absl::Duration v = ToDuration(d);
    return v > absl::ZeroDuration() ? v : fallback;
  };
  absl::Duration interval = positive(check.interval(), kDefaultProbeInterval);
  absl::Duration attempt_timeout = positive(check.timeout(), kDefaultProbeTimeout);
  absl::Time first = clock_->Now();
  absl::Time deadline = std::min(ctx.deadline, first + positive(check.deadline(), kDefaultProbeDeadline));
  std::string prefer_version = !probe.version().empty() ? probe.version()
                               : check.has_http()       ? check.http().expected_version()
                                                        : "";
  auto* out = result->mutable_probe();
  uint32_t attempt = 0;
  // The detail of the last attempt that had its whole timeout: an attempt cut
  // short by the deadline may only say it ran out of time.
  std::string last_whole_detail;
  for (;;) {
    ++attempt;
    absl::Time attempt_start = clock_->Now();
    ProbeOutcome outcome;
    const absl::Duration allowed = std::min(attempt_timeout, deadline - attempt_start);
    const bool cut_short = allowed < attempt_timeout;
    auto container = RunningContainerOf(probe.instance(), prefer_version);
    if (!container.ok()) {
      outcome.detail = std::string(container.status().message());
    } else {
      outcome = ProbeOnce(*docker_, *container, check, std::max(absl::Milliseconds(1), allowed));
      absl::MutexLock lock(&mu_);
      observed_health_[container->id] = outcome.passed ? hoist::v1::HEALTH_HEALTHY : hoist::v1::HEALTH_UNHEALTHY;
    }
    out->set_attempts(attempt);
    if (!outcome.version.empty()) out->set_version(outcome.version);
    hoist::v1::StepProgress progress;
    progress.set_message(absl::StrCat("probe ", attempt, " of ", Describe(probe.instance()), ": ",
                                      outcome.passed ? "passed" : "failed", " (", outcome.detail, ")"));
    progress.mutable_probe()->set_attempt(attempt);
    progress.mutable_probe()->set_passed(outcome.passed);
    progress.mutable_probe()->set_detail(outcome.detail);
    Progress(ctx, std::move(progress));
    if (outcome.passed) return absl::OkStatus();
    if (outcome.permanent) {
      return absl::FailedPreconditionError(
          absl::StrCat("instance ", Describe(probe.instance()), " cannot be probed: ", outcome.detail));
    }
    absl::Time next = attempt_start + interval;
    if (next >= deadline) {
      std::string last = outcome.detail;
      if (cut_short && !last_whole_detail.empty() && last_whole_detail != outcome.detail) {
        last = absl::StrCat(outcome.detail, " (cut short by the deadline); the attempt before: ", last_whole_detail);
      }
      return absl::DeadlineExceededError(absl::StrCat("instance ", Describe(probe.instance()), " not healthy after ",
                                                      attempt, attempt == 1 ? " attempt" : " attempts", " in ",
                                                      absl::FormatDuration(clock_->Now() - first),
                                                      "; last attempt: ", last));
    }
    if (!cut_short) last_whole_detail = outcome.detail;
    if (!SleepUntil(next)) return absl::CancelledError(kStoppingMessage);
  }
}

// ---- run_job ----

std::string StepExecutor::JobRecordPath(absl::string_view step_id, absl::string_view ext) const {
  return absl::StrCat(journal_->state_dir(), "/jobs/", StepJournal::FileKey(step_id), ".", ext);
}

absl::Status StepExecutor::RunJob(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& job = ctx.step.run_job();
  const std::string& step_id = ctx.step.step_id();
  std::string name = JobContainerName(job.deployment(), job.name(), job.version(), step_id);
  std::string log_path = JobRecordPath(step_id, "log");
  std::string record_path = JobRecordPath(step_id, "job");
  auto job_failed = [&](const hoist::v1::JobResult& r) {
    return absl::UnknownError(absl::StrCat("job ", job.name(), " (", name, ") exited with code ", r.exit_code(),
                                           "; its log is in ", log_path));
  };

  // The job finished before the agent restarted: its record is the truth
  // (the container may already be gone with remove_after).
  if (auto record = ReadFileToString(record_path); record.ok()) {
    hoist::v1::JobResult recorded;
    if (recorded.ParseFromString(*record)) {
      *result->mutable_job() = recorded;
      return recorded.exit_code() == 0 ? absl::OkStatus() : job_failed(recorded);
    }
  }

  auto existing = docker_->Inspect(name);
  std::string id;
  if (absl::IsNotFound(existing.status())) {
    std::map<std::string, std::string> labels = {
        {std::string(labels::kManaged), "true"},
        {std::string(labels::kDeployment), job.deployment()},
        {std::string(labels::kJob), job.name()},
        {std::string(labels::kVersion), job.version()},
        {std::string(labels::kStep), step_id},
        {std::string(labels::kAgent), policy_.agent_id},
    };
    auto spec = DockerSpec(ctx, "run_job.spec", job.spec(), name, std::move(labels));
    if (!spec.ok()) return spec.status();
    if (absl::Status s = CheckDeadline(ctx, "creating the job container"); !s.ok()) return s;
    auto created = docker_->Create(*spec);
    if (!created.ok()) {
      return absl::Status(created.status().code(), absl::StrCat("create ", name, ": ", created.status().message()));
    }
    id = *created;
    if (absl::Status s = StartContainer(ctx, id, name); !s.ok()) return s;
    spdlog::info("step {}: started job {} as {}", step_id, job.name(), name);
  } else if (!existing.ok()) {
    return absl::Status(existing.status().code(), absl::StrCat("inspect ", name, ": ", existing.status().message()));
  } else {
    if (!IsManagedHere(*existing, policy_) || LabelOf(*existing, labels::kStep) != step_id) {
      return absl::AlreadyExistsError(absl::StrCat("a container named ", name,
                                                   " exists that this step did not create; Hoist leaves it untouched"));
    }
    id = existing->id;
    // Created by this step before a restart: never create it twice.
    if (existing->state == "created") {
      if (absl::Status s = StartContainer(ctx, id, name); !s.ok()) return s;
    }
    spdlog::info("step {}: job container {} already exists ({}); waiting for it", step_id, name, existing->state);
  }

  hoist::v1::StepProgress progress;
  progress.set_message(absl::StrCat("job ", job.name(), " running as ", name));
  Progress(ctx, std::move(progress));

  int exit_code = 0;
  for (;;) {
    if (stopping()) return absl::CancelledError(kStoppingMessage);
    absl::Duration left = ctx.deadline - clock_->Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("job ", job.name(), " (", name,
                                                      ") still runs at the step's deadline; its container is left "
                                                      "running for a person to look at"));
    }
    auto waited = docker_->Wait(id, std::min(left, kWaitSlice));
    if (waited.ok()) {
      exit_code = *waited;
      break;
    }
    if (!absl::IsDeadlineExceeded(waited.status())) {
      return absl::Status(waited.status().code(), absl::StrCat("wait for ", name, ": ", waited.status().message()));
    }
  }

  hoist::v1::JobResult job_result;
  job_result.set_exit_code(exit_code);
  auto logs = docker_->Logs(id, kJobLogFileLines);
  if (logs.ok()) {
    if (absl::Status s = MakeDirs(journal_->state_dir() + "/jobs"); !s.ok()) return s;
    if (absl::Status s = WriteFileAtomic(log_path, *logs); !s.ok()) return s;
    job_result.set_log_tail(LastLines(*logs, job.log_tail_lines() == 0 ? kDefaultLogTailLines : job.log_tail_lines()));
  } else {
    spdlog::warn("step {}: cannot read the log of {}: {}", step_id, name, logs.status());
  }
  if (absl::Status s = MakeDirs(journal_->state_dir() + "/jobs"); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomic(record_path, job_result.SerializeAsString()); !s.ok()) return s;
  *result->mutable_job() = job_result;
  if (job.remove_after()) {
    if (absl::Status s = docker_->Remove(id, /*force=*/false, /*remove_volumes=*/true); !s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("step {}: cannot remove job container {}: {}", step_id, name, s);
    }
  }
  return exit_code == 0 ? absl::OkStatus() : job_failed(job_result);
}

// ---- reconcile ----

absl::StatusOr<std::vector<hoist::v1::StepResult>> StepExecutor::Reconcile() {
  auto entries = journal_->Interrupted();
  if (!entries.ok()) return entries.status();
  std::vector<hoist::v1::StepResult> results;
  for (const JournalEntry& entry : *entries) {
    hoist::v1::StepResult result = RunClaimed(entry.step, [&] { return ReconcileOne(entry); });
    if (result.outcome() != hoist::v1::STEP_OUTCOME_UNSPECIFIED) results.push_back(std::move(result));
  }
  return results;
}

hoist::v1::StepResult StepExecutor::ReconcileOne(const JournalEntry& entry) {
  const hoist::v1::Step& step = entry.step;
  absl::Time deadline = step.has_deadline() ? ToTime(step.deadline()) : entry.started_at + policy_.default_step_timeout;
  StepContext ctx{step, deadline, nullptr};
  // Unresolved: leave the entry open for the re-sent step (which carries the env values).
  auto leave_open = [&](absl::string_view why) {
    spdlog::info("step {} ({}) was interrupted; {}: it runs when the controller sends it again", step.step_id(),
                 ActionName(step), why);
    return hoist::v1::StepResult();
  };
  auto fail = [&](absl::Status status) {
    hoist::v1::StepResult result = Finish(step, entry.started_at, std::move(status), {});
    if (absl::Status s = journal_->RecordResult(result); !s.ok()) {
      spdlog::error("step {}: cannot journal its result ({})", step.step_id(), s);
    }
    return result;
  };
  spdlog::info("step {} ({}) was interrupted by an agent restart; deciding it from Docker's state", step.step_id(),
               ActionName(step));
  switch (step.action_case()) {
    case hoist::v1::Step::kStartInstance: {
      const auto& start = step.start_instance();
      std::string name = start.container_name().empty() ? InstanceContainerName(start.instance(), start.version())
                                                         : start.container_name();
      auto info = docker_->Inspect(name);
      if (absl::IsNotFound(info.status())) return leave_open("its container was never created");
      if (!info.ok()) return leave_open(absl::StrCat("Docker did not answer (", info.status().message(), ")"));
      // Existing container: starting it needs no env, so the journaled step will do.
      return RunAndRecord(ctx, entry.started_at);
    }
    case hoist::v1::Step::kRunJob: {
      const auto& job = step.run_job();
      std::string name = JobContainerName(job.deployment(), job.name(), job.version(), step.step_id());
      if (PathExists(JobRecordPath(step.step_id(), "job"))) return RunAndRecord(ctx, entry.started_at);
      auto info = docker_->Inspect(name);
      if (absl::IsNotFound(info.status())) return leave_open("its container was never created");
      if (!info.ok()) return leave_open(absl::StrCat("Docker did not answer (", info.status().message(), ")"));
      return RunAndRecord(ctx, entry.started_at);  // exited: its code; running: wait for it
    }
    case hoist::v1::Step::kBackup: {
      const auto& backup = step.backup();
      std::string dir = absl::StrCat(policy_.backup_dir, "/", backup.deployment(), "/", backup.backup_id());
      if (PathExists(dir + "/manifest.json")) return RunAndRecord(ctx, entry.started_at);  // finished: replay it
      if (absl::Status s = RemoveAll(dir + ".partial"); !s.ok()) {
        spdlog::error("step {}: cannot remove the partial backup: {}", step.step_id(), s);
      }
      return fail(absl::AbortedError("the agent restarted during the backup; the partial backup was removed"));
    }
    case hoist::v1::Step::kRestore:
      return fail(absl::AbortedError(
          "the agent restarted during the restore; the data may be partly restored: check it and send a new restore "
          "step"));
    default:
      // pull, stop, remove, probe: idempotent, so simply run again.
      return RunAndRecord(ctx, entry.started_at);
  }
}

// Names only: the values read stay in this function.
absl::Status StepExecutor::ReadEnvNames(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& read = ctx.step.read_env_names();
  std::set<std::string> found;
  hoist::v1::EnvNamesResult* out = result->mutable_env_names();
  for (const std::string& path : read.env_files()) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      out->add_missing_files(path);
      continue;
    }
    auto env = ReadEnvFile(path);
    if (!env.ok()) {
      (*out->mutable_unreadable_files())[path] = std::string(env.status().message());
      continue;
    }
    for (const std::string& name : read.names()) {
      if (env->contains(name)) found.insert(name);
    }
  }
  for (const std::string& name : found) out->add_set(name);
  hoist::v1::StepProgress progress;
  progress.set_message(absl::StrCat(found.size(), " of ", read.names_size(), " name(s) set in ",
                                    read.env_files_size(), " env file(s)"));
  Progress(ctx, std::move(progress));
  return absl::OkStatus();
}

}  // namespace hoist::agent

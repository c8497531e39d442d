#pragma once

// StepExecutor runs the steps the leader sends on this host's Docker Engine:
// idempotent (a step id runs at most once; a re-sent id returns its journaled
// result), fenced (steps from a stale leader epoch are refused), and checked
// against the agent's own policy before anything is touched.
//
// Outcomes: REFUSED (not tried: malformed step INVALID_ARGUMENT naming the
// field, policy PERMISSION_DENIED, stale epoch FAILED_PRECONDITION), FAILED
// (tried: the code and message say what went wrong), SUCCEEDED. Refusals are
// not journaled; they are decided the same way every time.
//
// Env values are secrets: they reach Docker and nothing else (not logs, not
// the journal, not error messages).

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent_policy.h"
#include "agent/docker/docker_api.h"
#include "agent/file_util.h"
#include "agent/journal.h"
#include "hoist/v1/agent.pb.h"
#include "shared/clock.h"

namespace hoist::agent {

// Receives a step's progress lines; may be called from the step's thread any
// number of times before Run returns.
using ProgressCallback = std::function<void(const hoist::v1::StepProgress&)>;

class StepExecutor {
 public:
  // Borrows docker, journal and clock; they must outlive the executor.
  StepExecutor(docker::DockerApi* docker, StepJournal* journal, AgentPolicy policy, Clock* clock);
  // Calls Shutdown().
  ~StepExecutor();
  StepExecutor(const StepExecutor&) = delete;
  StepExecutor& operator=(const StepExecutor&) = delete;

  // Runs step to its end and returns its result (never an error: failures are
  // results). Thread-safe: different step ids run concurrently; a step id
  // that is already running is not run again, the second caller waits for
  // the first's result (replayed=true). on_progress may be null.
  hoist::v1::StepResult Run(const hoist::v1::Step& step, const ProgressCallback& on_progress);

  // Decides every journal entry that started without a result (the agent
  // stopped mid-step) from Docker's real state, records the results so that
  // a re-sent step replays them, and returns them. Entries that cannot be
  // decided without the original step (a start or job whose container was
  // never created: the journal keeps no env values) stay open and run when
  // the step is re-sent. Call once at start-up, before serving steps.
  absl::StatusOr<std::vector<hoist::v1::StepResult>> Reconcile();

  // Makes running steps give up at their next wait (job wait, probe interval)
  // without recording a result, so that the next agent reconciles them; new
  // steps fail with UNAVAILABLE. Blocks until no step runs.
  void Shutdown();

  // Health of a container as this agent's last probe of it saw it
  // (UNSPECIFIED when never probed), for the inventory of containers that
  // have no Docker HEALTHCHECK.
  hoist::v1::Health ObservedHealth(const std::string& container_id) const;

  // Ids of the steps running now (for heartbeats).
  std::vector<std::string> RunningStepIds() const;
  // How many callers wait for the running step step_id to finish.
  int WaitersFor(absl::string_view step_id) const;

  const AgentPolicy& policy() const { return policy_; }

 private:
  struct InFlight {
    bool done = false;
    int waiters = 0;
    hoist::v1::StepResult result;
  };
  // One execution of one step.
  struct StepContext {
    const hoist::v1::Step& step;
    absl::Time deadline;
    ProgressCallback on_progress;
  };

  hoist::v1::StepResult RunClaimed(const hoist::v1::Step& step, const std::function<hoist::v1::StepResult()>& body);
  hoist::v1::StepResult Execute(const hoist::v1::Step& step, const ProgressCallback& on_progress, absl::Time started_at);
  hoist::v1::StepResult ReconcileOne(const JournalEntry& entry);
  // Runs the action and journals its result (unless the agent is stopping).
  hoist::v1::StepResult RunAndRecord(const StepContext& ctx, absl::Time started_at);
  hoist::v1::StepResult Finish(const hoist::v1::Step& step, absl::Time started_at, absl::Status status,
                               hoist::v1::StepResult result);
  absl::Status RunAction(const StepContext& ctx, hoist::v1::StepResult* result);

  absl::Status PullImage(const StepContext& ctx, hoist::v1::StepResult* result);
  // OK when the local `image` has content digest `digest` (a RepoDigest of
  // its repository, or its id); FAILED_PRECONDITION naming both otherwise.
  absl::Status CheckImageDigest(const std::string& image, const std::string& digest);
  absl::Status StartInstance(const StepContext& ctx, hoist::v1::StepResult* result);
  // start_instance's parts (step_executor_start.cc): the spec of the
  // container to create (proxy prepared, image digest checked), and the
  // result and progress of a started one.
  absl::StatusOr<docker::ContainerSpec> InstanceSpec(const StepContext& ctx, const std::string& name,
                                                     const std::map<std::string, std::string>& labels);
  absl::Status ReportStarted(const StepContext& ctx, const std::string& id, const std::string& name,
                             const hoist::v1::ContainerSpec& spec, hoist::v1::StepResult* result);
  absl::Status StopInstance(const StepContext& ctx);
  absl::Status RemoveInstance(const StepContext& ctx);
  absl::Status ProbeHealth(const StepContext& ctx, hoist::v1::StepResult* result);
  absl::Status RunJob(const StepContext& ctx, hoist::v1::StepResult* result);
  // run_job's parts (step_executor_job.cc): the job's container, created and
  // started once per step (or found from before a restart); and its exit
  // code, waited for in slices until the step's deadline.
  absl::StatusOr<std::string> EnsureJobContainer(const StepContext& ctx, const std::string& name);
  absl::StatusOr<int> WaitForJob(const StepContext& ctx, const std::string& id, const std::string& name);
  absl::Status Backup(const StepContext& ctx, hoist::v1::StepResult* result);
  // Backup's parts (step_executor_backup.cc): BackupItem writes item `index`
  // into partial_dir, reads it back and checks it, and describes it as it
  // will be under final_dir; WriteArtifact writes its bytes (pg_dump, a
  // volume's archive, a copied file); VerifyDump lists a dump's table of
  // contents with pg_restore and says what it found.
  absl::StatusOr<hoist::v1::BackupArtifact> BackupItem(const StepContext& ctx, int index,
                                                       const std::string& partial_dir, const std::string& final_dir);
  absl::StatusOr<FileDigest> WriteArtifact(const StepContext& ctx, int index, const std::string& path);
  absl::StatusOr<std::string> VerifyDump(const StepContext& ctx, const hoist::v1::PostgresDump& pg,
                                         const std::string& path);
  absl::Status Restore(const StepContext& ctx);
  absl::Status ProxyUpdate(const StepContext& ctx);
  absl::Status ReadEnvNames(const StepContext& ctx, hoist::v1::StepResult* result);
  // Forwarders (step_executor_forward.cc): ForwardUpdate keeps the
  // service's forwarder container; ForwarderImage imports its image once;
  // StartForwarder creates one with the configuration in tar and starts it.
  absl::Status ForwardUpdate(const StepContext& ctx);
  absl::StatusOr<std::string> ForwarderImage(const StepContext& ctx);
  absl::Status StartForwarder(const StepContext& ctx, const std::string& name, const std::string& image,
                              const std::string& ports_label, const std::string& tar);

  // Proxy helpers (step_executor_proxy.cc). PrepareProxy publishes the
  // runtime API on loopback, labels the container with its frontends and
  // checks its configuration with `haproxy -c` in a throw-away container of
  // the same image; WriteProxyConfig puts a configuration into a container.
  absl::Status PrepareProxy(const StepContext& ctx, const hoist::v1::ProxyConfig& config, docker::ContainerSpec* spec);
  absl::Status CheckProxyConfig(const StepContext& ctx, const std::string& image, const std::string& name,
                                const std::string& config_text);
  absl::Status WriteProxyConfig(const StepContext& ctx, const std::string& container, const std::string& config_text,
                                absl::string_view file_name = "haproxy.cfg");
  // The running proxy container of the update's service on this host.
  absl::StatusOr<docker::ContainerInfo> ProxyContainer(const hoist::v1::ProxyUpdate& update);
  // Maps each backend address of the update to the IP the proxy connects to.
  absl::StatusOr<std::map<std::string, std::string>> ResolveBackends(const hoist::v1::ProxyUpdate& update,
                                                                     const docker::ContainerInfo& proxy);

  // Helpers shared by the actions.
  absl::StatusOr<docker::ContainerSpec> DockerSpec(const StepContext& ctx, absl::string_view field,
                                                   const hoist::v1::ContainerSpec& spec, std::string name,
                                                   std::map<std::string, std::string> labels);
  // DockerSpec's parts (step_executor_spec.cc): whether a volume or network
  // that exists, labelled `theirs`, may be used by `deployment`; the spec's
  // volumes mounted (named ones made when missing); its network joined by id
  // (made on first use).
  absl::Status CheckOwner(absl::string_view what, const std::string& name,
                          const std::map<std::string, std::string>& theirs, const std::string& deployment) const;
  absl::Status AddVolumeMounts(absl::string_view field, const hoist::v1::ContainerSpec& spec,
                               const std::string& deployment, docker::ContainerSpec* out);
  absl::Status JoinNetwork(absl::string_view field, const std::map<std::string, std::string>& labels,
                           const std::string& deployment, docker::ContainerSpec* out);
  absl::StatusOr<hoist::v1::StartResult> DescribeStarted(const docker::ContainerInfo& info,
                                                         const hoist::v1::ContainerSpec& spec);
  absl::StatusOr<docker::ContainerInfo> RunningContainerOf(const hoist::v1::InstanceRef& instance,
                                                           absl::string_view prefer_version);
  absl::StatusOr<std::string> CreateVolumeHelper(const StepContext& ctx, absl::string_view deployment,
                                                 absl::string_view volume, int index, bool read_only);
  void RemoveHelper(const std::string& id);
  absl::Status ReadBackupManifest(const StepContext& ctx, const std::string& dir, hoist::v1::StepResult* result);
  std::string JobRecordPath(absl::string_view step_id, absl::string_view ext) const;
  void Progress(const StepContext& ctx, hoist::v1::StepProgress progress);
  absl::Status CheckDeadline(const StepContext& ctx, absl::string_view doing);
  // Sleeps until t in short slices; false when the agent began stopping.
  bool SleepUntil(absl::Time t);
  // Starts a created container. Agents sharing one Docker daemon may briefly
  // see a deployment network twice (Docker's duplicate check is not atomic);
  // each removes the younger copy within moments, so a start refused as
  // "ambiguous" is retried until the step's deadline, at most kAmbiguousWait.
  absl::Status StartContainer(const StepContext& ctx, const std::string& id, absl::string_view name);
  bool stopping() const;

  docker::DockerApi* const docker_;
  StepJournal* const journal_;
  const AgentPolicy policy_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<InFlight>, std::less<>> in_flight_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex forward_mu_;
  std::string forward_image_ ABSL_GUARDED_BY(forward_mu_);  // imported this run
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, hoist::v1::Health> observed_health_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist::agent

#pragma once

// Internals of StepExecutor shared by its files (not for use outside
// agent/step_executor*.cc). The runner is step_executor.cc (dispatch,
// journal, deadlines, reconciling after a restart); each step kind has a
// unit of its own:
//   step_executor_pull.cc       pull_image
//   step_executor_spec.cc       a step's ContainerSpec made Docker's (start, job, forwarder)
//   step_executor_start.cc      start_instance
//   step_executor_stop.cc       stop_instance, remove_instance
//   step_executor_probe.cc      probe_health
//   step_executor_job.cc        run_job
//   step_executor_env_names.cc  read_env_names
//   step_executor_backup.cc     backup, restore
//   step_executor_proxy.cc      proxy_update and a proxy's start
//   step_executor_forward.cc    forward_update

#include <string>

#include "absl/strings/string_view.h"
#include "hoist/v1/agent.pb.h"

namespace hoist::agent::internal {

// The message CANCELLED carries when a step gives up because the agent stops.
inline constexpr absl::string_view kStoppingMessage = "the agent is stopping; the step resumes when re-sent";

// "deployment/service/slot/replica", for messages.
std::string Describe(const hoist::v1::InstanceRef& instance);

}  // namespace hoist::agent::internal

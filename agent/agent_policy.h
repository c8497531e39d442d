#pragma once

// What this agent may do on its host, from its own configuration: the
// controller cannot widen it. Steps outside the policy are REFUSED with
// PERMISSION_DENIED.

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hoist::agent {

struct AgentPolicy {
  // Recorded in the hoist.agent label of every container the agent creates.
  std::string agent_id;
  // Deployments whose containers the agent manages; empty means all.
  std::vector<std::string> deployments;
  // Containers with `privileged: true`.
  bool allow_privileged = false;
  // Volume mounts whose source is an absolute host path (binds).
  bool allow_host_paths = false;
  // Binds of the Docker socket (or a directory holding it): root on the host.
  // Needs this flag even when allow_host_paths is set.
  bool allow_docker_socket = false;
  // Directories env files may be read from (the agent reads them with its
  // own rights, often root's, and hands their values to a container); a
  // step naming an env file elsewhere is refused. Empty: env files are
  // refused altogether (hoist-agent --env-file-dirs).
  std::vector<std::string> env_file_dirs;
  // Containers and jobs on the host's network stack (`network: host`) or
  // another container's (`container:NAME`).
  bool allow_host_network = false;
  // Networks and named volumes that belong to another deployment or project:
  // labelled hoist.deployment for another deployment, or made by docker
  // compose for a project (com.docker.compose.project).
  bool allow_foreign_objects = false;
  // Where backups go: <backup_dir>/<deployment>/<backup_id>/.
  std::string backup_dir;
  // The Docker socket on this host, for the check above (/run/docker.sock and
  // /var/run/docker.sock are always treated as the socket too).
  std::string docker_socket_path = "/var/run/docker.sock";
  // Labels added to every container and network the agent creates,
  // next to hoist.* ones (hoist-agent --object-labels). Tests use it to tag
  // their run so that cleanup finds what was created.
  std::map<std::string, std::string> extra_labels;
  // Image for the created-never-started helper containers that archive and
  // restore volumes; empty picks the image of a managed container.
  std::string helper_image;
  // The static hoist-forward binary whose image relays services of other
  // hosts (forward_update steps); empty: such steps fail and say why.
  std::string forward_binary;
  // Bound of a step that carries no deadline.
  absl::Duration default_step_timeout = absl::Hours(1);

  // True when the agent manages containers of this deployment.
  bool Serves(absl::string_view deployment) const {
    return deployments.empty() ||
           std::find(deployments.begin(), deployments.end(), deployment) != deployments.end();
  }
};

}  // namespace hoist::agent

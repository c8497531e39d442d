#include "tests/fakes/in_memory_agent_store.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist::testing {

InMemoryAgentStore::InMemoryAgentStore(Clock* clock) : clock_(clock != nullptr ? clock : RealClock::Get()) {}

std::string InMemoryAgentStore::ControllerOf(const std::string& agent_id) const {
  absl::MutexLock lock(&mu_);
  auto it = agents_.find(agent_id);
  return it == agents_.end() ? "" : it->second.controller_id;
}

absl::Status InMemoryAgentStore::RecordHello(uint64_t epoch, const hoist::v1::Hello& hello,
                                             const std::string& controller_id) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  AgentRow& row = agents_[hello.agent_id()];
  hoist::v1::Agent& a = row.agent;
  a.set_id(hello.agent_id());
  a.set_host_name(hello.host_name());
  *a.mutable_labels() = hello.labels();
  a.set_agent_version(hello.agent_version());
  a.set_docker_version(hello.docker_version());
  a.set_connected(true);
  a.set_lost(false);
  a.set_image_disk_free_bytes(hello.image_disk_free_bytes());
  a.set_backup_disk_free_bytes(hello.backup_disk_free_bytes());
  a.set_docker_engine_id(hello.docker_engine_id());
  a.set_address(hello.address());
  row.controller_id = controller_id;
  row.last_heartbeat = clock_->Now();
  return absl::OkStatus();
}

absl::Status InMemoryAgentStore::RecordHeartbeats(uint64_t epoch,
                                                  const std::map<std::string, hoist::v1::Heartbeat>& heartbeats) {
  if (heartbeats.empty()) return absl::OkStatus();  // no write at all, so no fence either
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  const absl::Time now = clock_->Now();
  for (const auto& [id, heartbeat] : heartbeats) {
    auto it = agents_.find(id);
    if (it == agents_.end()) continue;  // an UPDATE of no row
    // `connected` is the session's: a heartbeat written after its session
    // closed does not reopen it.
    it->second.last_heartbeat = now;
    it->second.agent.set_lost(false);
    it->second.agent.set_image_disk_free_bytes(heartbeat.image_disk_free_bytes());
    it->second.agent.set_backup_disk_free_bytes(heartbeat.backup_disk_free_bytes());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<hoist::v1::ContainerInfo>> InMemoryAgentStore::Rows(
    const std::string& agent_id, const hoist::v1::Inventory& inventory) const {
  if (!agents_.contains(agent_id)) {
    return absl::InternalError(absl::StrCat("database error: containers of unknown agent ", agent_id,
                                            " violate foreign key constraint"));
  }
  std::vector<hoist::v1::ContainerInfo> rows;
  for (const hoist::v1::ContainerInfo& c : inventory.containers()) {
    const bool seen = std::any_of(rows.begin(), rows.end(), [&](const hoist::v1::ContainerInfo& r) {
      return r.container_id() == c.container_id();
    });
    if (seen) continue;  // ON CONFLICT (agent_id, container_id) DO NOTHING
    hoist::v1::ContainerInfo row = c;
    // What the columns keep: a slot is blue or green, no container times,
    // and only ports with both numbers.
    row.mutable_instance()->set_slot(ParseSlot(SlotName(c.instance().slot())));
    row.clear_created_at();
    row.clear_started_at();
    row.clear_published_ports();
    for (const hoist::v1::PortMapping& p : c.published_ports()) {
      if (p.container_port() != 0 && p.host_port() != 0) *row.add_published_ports() = p;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::Status InMemoryAgentStore::ReplaceInventory(uint64_t epoch, const std::string& agent_id,
                                                  const hoist::v1::Inventory& inventory) {
  return ReplaceInventories(epoch, {{agent_id, inventory}});
}

absl::Status InMemoryAgentStore::ReplaceInventories(uint64_t epoch,
                                                    const std::map<std::string, hoist::v1::Inventory>& inventories) {
  if (inventories.empty()) return absl::OkStatus();  // no write at all, so no fence either
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  // One transaction: one unknown agent fails them all.
  std::map<std::string, std::vector<hoist::v1::ContainerInfo>> replaced;
  for (const auto& [agent_id, inventory] : inventories) {
    auto rows = Rows(agent_id, inventory);
    if (!rows.ok()) return rows.status();
    replaced[agent_id] = *std::move(rows);
  }
  for (auto& [agent_id, rows] : replaced) containers_[agent_id] = std::move(rows);
  return absl::OkStatus();
}

absl::Status InMemoryAgentStore::RecordDisconnect(uint64_t epoch, const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  auto it = agents_.find(agent_id);
  if (it != agents_.end()) it->second.agent.set_connected(false);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> InMemoryAgentStore::MarkLost(uint64_t epoch, absl::Duration silence) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Fence(epoch); !s.ok()) return s;
  const absl::Time cutoff = clock_->Now() - silence;
  std::vector<std::string> ids;
  for (auto& [id, row] : agents_) {
    // An agent never heard from has no heartbeat to be late with.
    if (row.agent.lost() || row.last_heartbeat == absl::InfinitePast() || row.last_heartbeat >= cutoff) continue;
    row.agent.set_lost(true);
    row.agent.set_connected(false);
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<hoist::v1::Agent>> InMemoryAgentStore::ListAgents() {
  absl::MutexLock lock(&mu_);
  std::vector<hoist::v1::Agent> out;
  for (const auto& [id, row] : agents_) {  // ordered by id
    hoist::v1::Agent a = row.agent;
    SetTimestamp(row.last_heartbeat, a.mutable_last_heartbeat());
    out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<std::vector<ObservedContainer>> InMemoryAgentStore::ListContainers(const std::string& deployment) {
  absl::MutexLock lock(&mu_);
  std::vector<ObservedContainer> out;
  for (const auto& [agent_id, rows] : containers_) {
    const hoist::v1::Agent& agent = agents_.at(agent_id).agent;
    for (const hoist::v1::ContainerInfo& c : rows) {
      if (!deployment.empty() && c.instance().deployment() != deployment) continue;
      out.push_back(ObservedContainer{agent_id, agent.host_name(), agent.address(), c});
    }
  }
  auto key = [](const ObservedContainer& o) {
    const hoist::v1::InstanceRef& i = o.info.instance();
    return std::make_tuple(i.service(), SlotName(i.slot()), i.replica(), o.agent_id);
  };
  std::stable_sort(out.begin(), out.end(),
                   [&](const ObservedContainer& a, const ObservedContainer& b) { return key(a) < key(b); });
  return out;
}

}  // namespace hoist::testing

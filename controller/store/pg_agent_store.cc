#include "controller/store/pg_agent_store.h"

#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "shared/proto_names.h"
#include "shared/proto_time.h"

namespace hoist {
namespace {

std::string PortsJson(const google::protobuf::RepeatedPtrField<hoist::v1::PortMapping>& ports) {
  nlohmann::json j = nlohmann::json::array();
  for (const hoist::v1::PortMapping& p : ports) {
    j.push_back({{"container_port", p.container_port()},
                 {"protocol", p.protocol()},
                 {"host_ip", p.host_ip()},
                 {"host_port", p.host_port()}});
  }
  return j.dump();
}

// What PortsJson wrote; anything else (a row written by hand) reads as no ports.
void ParsePorts(const std::string& text, google::protobuf::RepeatedPtrField<hoist::v1::PortMapping>* out) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array()) return;
  for (const nlohmann::json& e : j) {
    if (!e.is_object()) continue;
    auto port = [&](const char* key) -> uint32_t {
      auto it = e.find(key);
      if (it == e.end() || !it->is_number_unsigned()) return 0;
      uint64_t v = it->get<uint64_t>();
      return v > 65535 ? 0 : static_cast<uint32_t>(v);
    };
    auto text_of = [&](const char* key) -> std::string {
      auto it = e.find(key);
      return it != e.end() && it->is_string() ? it->get<std::string>() : "";
    };
    if (port("container_port") == 0 || port("host_port") == 0) continue;
    hoist::v1::PortMapping* p = out->Add();
    p->set_container_port(port("container_port"));
    p->set_host_port(port("host_port"));
    p->set_protocol(text_of("protocol"));
    p->set_host_ip(text_of("host_ip"));
  }
}

int64_t ClampBytes(uint64_t v) { return v > INT64_MAX ? INT64_MAX : static_cast<int64_t>(v); }

}  // namespace

PgAgentStore::PgAgentStore(PgPool* pool)
    : pool_(pool), hellos_([this](const auto& batch) { WriteHellos(batch); }, [](const HelloArgs& h) { return h.epoch; }) {}

absl::Status PgAgentStore::RecordHello(uint64_t epoch, const hoist::v1::Hello& hello,
                                       const std::string& controller_id) {
  return hellos_.Commit(HelloArgs{epoch, &hello, &controller_id});
}

namespace {

// The agents row of a hello, as jsonb_to_recordset below reads it.
nlohmann::json HelloRow(const hoist::v1::Hello& hello, const std::string& controller_id) {
  nlohmann::json deployments = nlohmann::json::array();
  for (const auto& d : hello.deployments()) deployments.push_back(d);
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : hello.labels()) labels[k] = v;
  return {{"id", hello.agent_id()},
          {"host_name", hello.host_name()},
          {"labels", labels},
          {"agent_version", hello.agent_version()},
          {"docker_version", hello.docker_version()},
          {"protocol_version", static_cast<int>(hello.protocol_version())},
          {"deployments", deployments},
          {"controller_id", controller_id},
          {"image_free", ClampBytes(hello.image_disk_free_bytes())},
          {"backup_free", ClampBytes(hello.backup_disk_free_bytes())},
          {"docker_engine_id", hello.docker_engine_id()},
          {"address", hello.address()}};
}

}  // namespace

void PgAgentStore::WriteHellos(const std::vector<GroupCommit<HelloArgs>::Entry*>& entries) {
  auto write = [this](uint64_t epoch, const nlohmann::json& rows) {
    return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
      tx.exec_params0(
          "INSERT INTO agents (id, host_name, labels, agent_version, docker_version, protocol_version,"
          " connected, lost, last_heartbeat, connected_at, deployments, controller_id,"
          " image_disk_free_bytes, backup_disk_free_bytes, docker_engine_id, address)"
          " SELECT v.id, v.host_name, v.labels, v.agent_version, v.docker_version, v.protocol_version,"
          " true, false, now(), now(), v.deployments, v.controller_id, v.image_free, v.backup_free,"
          " v.docker_engine_id, v.address"
          " FROM jsonb_to_recordset($1::jsonb) AS v(id text, host_name text, labels jsonb, agent_version text,"
          " docker_version text, protocol_version int, deployments jsonb, controller_id text, image_free bigint,"
          " backup_free bigint, docker_engine_id text, address text)"
          " ON CONFLICT (id) DO UPDATE SET host_name = EXCLUDED.host_name, labels = EXCLUDED.labels,"
          " agent_version = EXCLUDED.agent_version, docker_version = EXCLUDED.docker_version,"
          " protocol_version = EXCLUDED.protocol_version, connected = true, lost = false,"
          " last_heartbeat = now(), connected_at = now(), deployments = EXCLUDED.deployments,"
          " controller_id = EXCLUDED.controller_id, image_disk_free_bytes = EXCLUDED.image_disk_free_bytes,"
          " backup_disk_free_bytes = EXCLUDED.backup_disk_free_bytes,"
          " docker_engine_id = EXCLUDED.docker_engine_id, address = EXCLUDED.address",
          rows.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      return absl::OkStatus();
    });
  };
  const uint64_t epoch = entries[0]->value->epoch;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto* e : entries) rows.push_back(HelloRow(*e->value->hello, *e->value->controller_id));
  absl::Status s = write(epoch, rows);
  if (s.ok() || s.code() == absl::StatusCode::kFailedPrecondition || entries.size() == 1) {
    for (auto* e : entries) e->status = s;
    return;
  }
  for (size_t i = 0; i < entries.size(); ++i) entries[i]->status = write(epoch, nlohmann::json::array({rows[i]}));
}

absl::Status PgAgentStore::RecordHeartbeats(uint64_t epoch,
                                            const std::map<std::string, hoist::v1::Heartbeat>& heartbeats) {
  if (heartbeats.empty()) return absl::OkStatus();
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& [id, heartbeat] : heartbeats) {
    rows.push_back({{"id", id},
                    {"image", ClampBytes(heartbeat.image_disk_free_bytes())},
                    {"backup", ClampBytes(heartbeat.backup_disk_free_bytes())}});
  }
  // One statement for every agent heard since the last write. `connected`
  // is the session's (hello and disconnect), not the heartbeat's: a
  // heartbeat written after its session closed must not reopen it.
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    tx.exec_params0(
        "UPDATE agents a SET last_heartbeat = now(), lost = false, image_disk_free_bytes = v.image,"
        " backup_disk_free_bytes = v.backup"
        " FROM jsonb_to_recordset($1::jsonb) AS v(id text, image bigint, backup bigint) WHERE a.id = v.id",
        rows.dump());
    return absl::OkStatus();
  });
}

namespace {

void WriteInventory(pqxx::work& tx, const std::string& agent_id, const hoist::v1::Inventory& inventory) {
  tx.exec_params0("DELETE FROM agent_containers WHERE agent_id = $1", agent_id);
  for (const hoist::v1::ContainerInfo& c : inventory.containers()) {
    tx.exec_params0(
        "INSERT INTO agent_containers (agent_id, container_id, name, deployment, service, slot, replica,"
        " image, image_digest, version, state, health, exit_code, published_ports)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)"
        " ON CONFLICT (agent_id, container_id) DO NOTHING",
        agent_id, c.container_id(), c.name(), c.instance().deployment(), c.instance().service(),
        SlotName(c.instance().slot()), static_cast<int>(c.instance().replica()), c.image(), c.image_digest(),
        c.version(), ContainerStateName(c.state()), HealthName(c.health()), c.exit_code(),
        PortsJson(c.published_ports()));
  }
}

}  // namespace

absl::Status PgAgentStore::ReplaceInventory(uint64_t epoch, const std::string& agent_id,
                                            const hoist::v1::Inventory& inventory) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    WriteInventory(tx, agent_id, inventory);
    return absl::OkStatus();
  });
}

absl::Status PgAgentStore::ReplaceInventories(uint64_t epoch,
                                              const std::map<std::string, hoist::v1::Inventory>& inventories) {
  if (inventories.empty()) return absl::OkStatus();
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    for (const auto& [agent_id, inventory] : inventories) WriteInventory(tx, agent_id, inventory);
    return absl::OkStatus();
  });
}

absl::Status PgAgentStore::RecordDisconnect(uint64_t epoch, const std::string& agent_id) {
  return pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    tx.exec_params0("UPDATE agents SET connected = false WHERE id = $1", agent_id);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<std::string>> PgAgentStore::MarkLost(uint64_t epoch, absl::Duration silence) {
  std::vector<std::string> ids;
  absl::Status s = pool_->FencedWrite(epoch, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        "UPDATE agents SET lost = true, connected = false"
        " WHERE NOT lost AND last_heartbeat < now() - make_interval(secs => $1) RETURNING id",
        absl::ToDoubleSeconds(silence));
    for (const auto& row : r) ids.push_back(row[0].as<std::string>());
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return ids;
}

absl::StatusOr<std::vector<hoist::v1::Agent>> PgAgentStore::ListAgents() {
  std::vector<hoist::v1::Agent> agents;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    pqxx::result r = tx.exec(
        "SELECT id, host_name, labels::text, agent_version, docker_version, connected, lost,"
        " COALESCE((extract(epoch FROM last_heartbeat) * 1000000)::bigint, 0), image_disk_free_bytes,"
        " backup_disk_free_bytes, docker_engine_id, address FROM agents ORDER BY id");
    for (const auto& row : r) {
      hoist::v1::Agent a;
      a.set_id(row[0].as<std::string>());
      a.set_host_name(row[1].as<std::string>());
      nlohmann::json labels = nlohmann::json::parse(row[2].as<std::string>(), nullptr, false);
      if (labels.is_object()) {
        for (auto it = labels.begin(); it != labels.end(); ++it) {
          if (it.value().is_string()) (*a.mutable_labels())[it.key()] = it.value().get<std::string>();
        }
      }
      a.set_agent_version(row[3].as<std::string>());
      a.set_docker_version(row[4].as<std::string>());
      a.set_connected(row[5].as<bool>());
      a.set_lost(row[6].as<bool>());
      if (int64_t micros = row[7].as<int64_t>(); micros > 0) SetTimestamp(absl::FromUnixMicros(micros), a.mutable_last_heartbeat());
      a.set_image_disk_free_bytes(row[8].as<uint64_t>());
      a.set_backup_disk_free_bytes(row[9].as<uint64_t>());
      a.set_docker_engine_id(row[10].as<std::string>());
      a.set_address(row[11].as<std::string>());
      agents.push_back(std::move(a));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return agents;
}

absl::StatusOr<std::vector<ObservedContainer>> PgAgentStore::ListContainers(const std::string& deployment) {
  std::vector<ObservedContainer> out;
  absl::Status s = pool_->Transact([&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        "SELECT c.agent_id, a.host_name, c.container_id, c.name, c.deployment, c.service, c.slot, c.replica,"
        " c.image, c.image_digest, c.version, c.state, c.health, c.exit_code, a.address, c.published_ports::text"
        " FROM agent_containers c JOIN agents a ON a.id = c.agent_id"
        " WHERE $1 = '' OR c.deployment = $1 ORDER BY c.service, c.slot, c.replica, c.agent_id",
        deployment);
    for (const auto& row : r) {
      ObservedContainer oc;
      oc.agent_id = row[0].as<std::string>();
      oc.host_name = row[1].as<std::string>();
      oc.host_address = row[14].as<std::string>();
      hoist::v1::ContainerInfo& c = oc.info;
      c.set_container_id(row[2].as<std::string>());
      c.set_name(row[3].as<std::string>());
      c.mutable_instance()->set_deployment(row[4].as<std::string>());
      c.mutable_instance()->set_service(row[5].as<std::string>());
      c.mutable_instance()->set_slot(ParseSlot(row[6].as<std::string>()));
      c.mutable_instance()->set_replica(row[7].as<uint32_t>());
      c.set_image(row[8].as<std::string>());
      c.set_image_digest(row[9].as<std::string>());
      c.set_version(row[10].as<std::string>());
      c.set_state(ParseContainerState(row[11].as<std::string>()));
      c.set_health(ParseHealth(row[12].as<std::string>()));
      c.set_exit_code(row[13].as<int>());
      ParsePorts(row[15].as<std::string>(), c.mutable_published_ports());
      out.push_back(std::move(oc));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace hoist

#include "controller/controller_server.h"

#include <chrono>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "controller/agent_hub.h"
#include "controller/agent_service.h"
#include "controller/authorizer.h"
#include "controller/operator_service.h"
#include "controller/refusal_log.h"
#include "controller/rollout/executor.h"
#include "controller/rollout/rollout_manager.h"
#include "controller/store/embedded_migrations.h"
#include "controller/store/pg_agent_store.h"
#include "controller/store/pg_migrator.h"
#include "controller/store/pg_pool.h"
#include "controller/store/pg_rollout_store.h"
#include "shared/config.h"
#include "shared/http_server.h"
#include "shared/pg.h"
#include "shared/revocation.h"
#include "shared/secret_box.h"
#include "shared/tls.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist {

// What Create loads from the options' files, before any part exists.
struct Loaded {
  bool tls = false;
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::unique_ptr<RevocationWatcher> revocations;
  std::optional<absl::Time> own_cert_expiry;
  std::unique_ptr<SecretBox> secrets;
  std::string pooled_url;
  HostPort listen;
};

// Every part, in the order they are built; destroyed in reverse.
struct ControllerServer::Parts {
  Parts(ControllerServerOptions o, Loaded l)
      : options(std::move(o)),
        loaded(std::move(l)),
        pool(loaded.pooled_url, 8),
        agent_store(&pool),
        rollout_store(&pool, loaded.secrets.get()),
        hub(&agent_store, options.clock, AgentHubOptions{.controller_id = options.replica_id}),
        executor(&rollout_store, &hub, options.clock),
        manager(&rollout_store, &agent_store, &hub, &executor, options.clock),
        elector(options.database_url, Election(options), options.clock),
        refusals(&rollout_store),
        authorizer({.tls = loaded.tls,
                    .revocations = loaded.revocations.get(),
                    .audit = [this](const rollout::AuditEntry& entry) { refusals.Write(entry); }}),
        agent_service(&hub, &elector, &authorizer),
        operator_service(&manager, &rollout_store, &agent_store, &elector, &authorizer) {}

  static LeaderElectionOptions Election(const ControllerServerOptions& o) {
    LeaderElectionOptions e = o.election;
    e.replica_id = o.replica_id;
    e.advertise_address = o.advertise_address;
    return e;
  }

  void Wire();
  void ServeHttp();
  HttpServerReply Health();

  const ControllerServerOptions options;
  Loaded loaded;
  PgPool pool;
  PgAgentStore agent_store;
  PgRolloutStore rollout_store;
  // Before the hub and the executor: their step observer writes into it
  // until they are gone.
  prometheus::Registry metrics;
  AgentHub hub;
  rollout::Executor executor;
  rollout::RolloutManager manager;
  LeaderElector elector;
  RefusalLog refusals;
  Authorizer authorizer;
  AgentServiceImpl agent_service;
  OperatorServiceImpl operator_service;
  HttpServer http;
  // Declared last: shut down and destroyed first (the services must outlive it).
  std::unique_ptr<grpc::Server> grpc_server;
  int grpc_port = 0;
  std::string address;
  bool started = false;
  bool stopped = false;
};

namespace {

absl::Status Invalid(const absl::Status& s) { return absl::InvalidArgumentError(s.message()); }

// The Prometheus text exposition format /metrics answers in.
constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

prometheus::Gauge& AddGauge(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

// TLS material, the revocation list and the secrets key, as the options name them.
absl::Status LoadFiles(const ControllerServerOptions& o, Loaded& l) {
  l.tls = !o.tls_ca.empty() || !o.tls_cert.empty() || !o.tls_key.empty();
  l.credentials = grpc::InsecureServerCredentials();
  if (l.tls) {
    auto material = LoadTlsMaterial(o.tls_ca, o.tls_cert, o.tls_key, TlsRole::kServer);
    if (!material.ok()) return Invalid(material.status());
    l.credentials = ServerTlsCredentials(*material);
    if (l.credentials == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("gRPC refused the TLS server credentials from ", o.tls_cert));
    }
    l.own_cert_expiry = material->cert.not_after;
    auto watcher = RevocationWatcher::Load(o.tls_ca, o.tls_crl);
    if (!watcher.ok()) return Invalid(watcher.status());
    l.revocations = *std::move(watcher);
    spdlog::info("revocation list {}: {} certificates revoked", l.revocations->crl_path(),
                 l.revocations->revoked_count());
  } else {
    spdlog::warn("serving without TLS: agents and operators are not authenticated (pass --tls-ca, --tls-cert and "
                 "--tls-key in production)");
  }
  if (!o.secrets_key_file.empty()) {
    auto box = SecretBox::FromFile(o.secrets_key_file);
    if (!box.ok()) return Invalid(box.status());
    l.secrets = *std::move(box);
  } else if (l.tls) {
    return absl::InvalidArgumentError(
        "--secrets-key-file is required with TLS: env values are kept sealed in Postgres under a key only hoistd "
        "reads (make one: openssl rand -hex 32 > hoistd-secrets.key && chmod 600 hoistd-secrets.key; every "
        "replica uses the same file)");
  } else {
    spdlog::warn("no --secrets-key-file: env values are stored in Postgres in clear (development only)");
  }
  return absl::OkStatus();
}

// The schema comes first: nothing is served from a database this binary does
// not match.
absl::Status Migrate(const ControllerServerOptions& o) {
  auto migrations = ParseMigrations(EmbeddedMigrationFiles());
  if (!migrations.ok()) return absl::InternalError(absl::StrCat("embedded migrations: ", migrations.status().message()));
  PgMigrator migrator(o.database_url, *migrations, {.applied_by = o.replica_id}, o.clock);
  auto migrated = migrator.Migrate();
  if (!migrated.ok()) return migrated.status();
  if (!migrated->applied_now.empty()) spdlog::info("applied {} schema migration(s)", migrated->applied_now.size());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Create(ControllerServerOptions options) {
  if (options.database_url.empty()) return absl::InvalidArgumentError("the database URL is required");
  if (options.replica_id.empty()) return absl::InvalidArgumentError("the replica id is required");
  if (options.clock == nullptr) options.clock = RealClock::Get();
  Loaded loaded;
  auto pooled = WithConnectionDefaults(options.database_url);
  if (!pooled.ok()) return absl::InvalidArgumentError(absl::StrCat("--database-url: ", pooled.status().message()));
  loaded.pooled_url = *std::move(pooled);
  auto listen = ParseListenAddress("--listen", options.listen);
  if (!listen.ok()) return Invalid(listen.status());
  loaded.listen = *std::move(listen);
  if (absl::Status s = LoadFiles(options, loaded); !s.ok()) return s;
  if (absl::Status s = Migrate(options); !s.ok()) return s;
  auto parts = std::make_unique<Parts>(std::move(options), std::move(loaded));
  if (SecretBox* box = parts->loaded.secrets.get()) {
    auto sealed = parts->rollout_store.SealStoredSecrets();
    if (!sealed.ok()) {
      // Not a bad option (INVALID_ARGUMENT is one): the stored data is.
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot seal the env values stored in clear or under an older key: ", sealed.status().message()));
    }
    if (*sealed > 0) spdlog::info("sealed {} stored manifests and steps under key {}", *sealed, box->current_key_id());
  }
  parts->Wire();
  return std::unique_ptr<ControllerServer>(new ControllerServer(std::move(parts)));
}

ControllerServer::ControllerServer(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

ControllerServer::~ControllerServer() { Stop(); }

void ControllerServer::Parts::Wire() {
  if (SecretBox* box = loaded.secrets.get()) {
    manager.SetSecretFingerprint([box](absl::string_view value) { return box->Fingerprint(value); });
  }
  executor.SetRollbackLauncher(
      [this](const rollout::StoredRollout& failed) { return manager.RollBackFailed(elector.epoch(), failed); });
  // The hub and the executor follow leadership; the services ask the
  // elector directly.
  elector.Observe([this](uint64_t epoch) {
    if (epoch != 0) spdlog::info("leading with epoch {}", epoch);
    else spdlog::info("following");
    hub.OnLeadership(epoch);
    executor.OnLeadership(epoch);
  });
  // Durations in seconds, from 5 ms to a minute.
  prometheus::Histogram& step_latency =
      prometheus::BuildHistogram()
          .Name("hoist_step_duration_seconds")
          .Help("Time from push to result, per step.")
          .Register(metrics)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  hub.SetStepObserver([&step_latency](const hoist::v1::Step&, const hoist::v1::StepResult&, absl::Duration took) {
    step_latency.Observe(absl::ToDoubleSeconds(took));
  });
}

void ControllerServer::Parts::ServeHttp() {
  prometheus::Gauge& is_leader = AddGauge(metrics, "hoist_leader", "1 while this replica leads.");
  prometheus::Gauge& epoch_gauge =
      AddGauge(metrics, "hoist_leader_epoch", "Epoch this replica leads with (0: following).");
  prometheus::Gauge& agents_gauge = AddGauge(metrics, "hoist_agents_connected", "Agents with an open session here.");
  prometheus::Gauge& in_flight = AddGauge(metrics, "hoist_steps_in_flight", "Steps pushed and not yet answered.");
  // Only with TLS: without a certificate there is nothing to expire or revoke.
  prometheus::Gauge* cert_expiry =
      loaded.own_cert_expiry ? &AddGauge(metrics, "hoist_tls_certificate_expiry_seconds",
                                         "Seconds until this replica's certificate expires.")
                             : nullptr;
  prometheus::Gauge* revoked_gauge =
      loaded.revocations ? &AddGauge(metrics, "hoist_tls_revoked_certificates", "Entries in the revocation list.")
                         : nullptr;
  http.Handle("/health", [this](const HttpServerRequest&) { return Health(); });
  // The gauges live as long as the registry; the references name them.
  http.Handle("/metrics", [this, &is_leader, &epoch_gauge, &agents_gauge, &in_flight, cert_expiry,
                           revoked_gauge](const HttpServerRequest&) {
    const uint64_t epoch = elector.epoch();
    const AgentHubStats stats = hub.Stats();
    is_leader.Set(epoch != 0 ? 1 : 0);
    epoch_gauge.Set(static_cast<double>(epoch));
    agents_gauge.Set(stats.agents_connected);
    in_flight.Set(stats.steps_in_flight);
    if (cert_expiry) cert_expiry->Set(absl::ToDoubleSeconds(*loaded.own_cert_expiry - absl::Now()));
    if (revoked_gauge) revoked_gauge->Set(static_cast<double>(loaded.revocations->revoked_count()));
    return HttpServerReply{200, kPrometheusContentType, prometheus::TextSerializer().Serialize(metrics.Collect())};
  });
}

HttpServerReply ControllerServer::Parts::Health() {
  const uint64_t epoch = elector.epoch();
  const bool database_ok = pool.Run([](pqxx::connection& c) {
                                 pqxx::nontransaction tx(c);
                                 tx.exec1("SELECT 1");
                                 return absl::OkStatus();
                               }).ok();
  nlohmann::json body = {{"status", database_ok ? "ok" : "degraded"},
                         {"version", HOIST_VERSION},
                         {"role", epoch != 0 ? "leader" : "follower"},
                         {"epoch", epoch != 0 ? epoch : elector.CurrentLeader().epoch},
                         {"database", database_ok ? "ok" : "unreachable"},
                         {"agents_connected", hub.Stats().agents_connected},
                         {"replica_id", options.replica_id}};
  if (const std::optional<absl::Time>& expiry = loaded.own_cert_expiry) {
    const absl::Duration left = *expiry - absl::Now();
    body["certificate_expires"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *expiry, absl::UTCTimeZone());
    body["certificate_days_left"] = static_cast<int64_t>(absl::ToDoubleHours(left) / 24);
    if (left < kCertificateExpiryWarning) {
      body["warnings"].push_back(absl::StrCat(
          "this replica's certificate expires in ", absl::FormatDuration(absl::Trunc(left, absl::Minutes(1))),
          ": issue a new one (hoist ca issue controller ", options.replica_id, " --force) and restart hoistd"));
    }
  }
  return HttpServerReply{database_ok ? 200 : 503, "application/json", body.dump() + "\n"};
}

absl::Status ControllerServer::Start() {
  Parts& p = *parts_;
  if (p.started) return absl::FailedPreconditionError("the controller was already started");
  p.started = true;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(&p.operator_service);
  builder.RegisterService(&p.agent_service);
  // HTTP/2 keepalive: a frozen or vanished agent's session ends within
  // seconds instead of holding its steps; the agents ping every 2 s too
  // (agent/session.h), which the server must allow.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddListeningPort(p.loaded.listen.ToString(), p.loaded.credentials, &p.grpc_port);
  p.grpc_server = builder.BuildAndStart();
  if (!p.grpc_server || p.grpc_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", p.loaded.listen.ToString(), ": address in use or not available"));
  }
  p.address = p.options.advertise_address.empty()
                  ? HostPort{p.loaded.listen.host, static_cast<uint16_t>(p.grpc_port)}.ToString()
                  : p.options.advertise_address;
  p.elector.SetAdvertiseAddress(p.address);
  spdlog::info("hoistd {} ({}) serving on {}", HOIST_VERSION, p.options.replica_id, p.address);
  if (!p.options.http_listen.empty()) {
    p.ServeHttp();
    if (absl::Status s = p.http.Start(p.options.http_listen); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cannot serve /health on ", p.options.http_listen, ": ", s.message()));
    }
    spdlog::info("/health and /metrics on http://{}:{}", p.options.http_listen.substr(0, p.options.http_listen.rfind(':')),
                 p.http.port());
  }
  if (p.loaded.revocations) {
    p.loaded.revocations->Start(absl::Seconds(1), [&p] { p.agent_service.CloseRevokedSessions(); });
  }
  if (p.loaded.own_cert_expiry && *p.loaded.own_cert_expiry - absl::Now() < kCertificateExpiryWarning) {
    spdlog::warn("this replica's certificate expires on {}: issue a new one before then",
                 absl::FormatTime("%Y-%m-%d %H:%M UTC", *p.loaded.own_cert_expiry, absl::UTCTimeZone()));
  }
  p.hub.Start();
  p.elector.Start();
  return absl::OkStatus();
}

void ControllerServer::Stop() {
  Parts& p = *parts_;
  if (p.stopped) return;
  p.stopped = true;
  p.elector.Stop();  // its observers hear the loss: the hub and executor let go
  p.hub.Stop();
  if (p.loaded.revocations) p.loaded.revocations->Stop();
  p.http.Stop();
  if (p.grpc_server) p.grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  p.refusals.Stop();
}

int ControllerServer::grpc_port() const { return parts_->grpc_port; }
int ControllerServer::http_port() const { return parts_->http.port(); }
std::string ControllerServer::address() const { return parts_->address; }
const Leadership& ControllerServer::leadership() const { return parts_->elector; }
bool ControllerServer::WaitForLeadership(absl::Duration timeout) const {
  return parts_->elector.WaitForLeadership(timeout);
}
AgentHub& ControllerServer::hub() { return parts_->hub; }

}  // namespace hoist

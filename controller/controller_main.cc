#include "controller/controller_main.h"

#include <pthread.h>
#include <unistd.h>
#include <signal.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pqxx/pqxx>

#include "absl/synchronization/mutex.h"
#include "absl/strings/strip.h"
#include "controller/agent_hub.h"
#include "controller/agent_service.h"
#include "controller/authorizer.h"
#include "controller/leader_election.h"
#include "controller/store/pg_agent_store.h"
#include "controller/store/pg_pool.h"
#include "controller/store/pg_rollout_store.h"
#include "controller/operator_service.h"
#include "controller/rollout/executor.h"
#include "controller/rollout/rollout_manager.h"
#include "shared/http_server.h"
#include "shared/metrics.h"
#include "shared/revocation.h"
#include "shared/secret_box.h"
#include "shared/tls.h"
#include <nlohmann/json.hpp>
#include "hoist/v1/agent.grpc.pb.h"
#include "hoist/v1/operator.grpc.pb.h"
#include "controller/migrate_command.h"
#include "controller/store/pg_migrator.h"
#include "shared/clock.h"
#include "shared/config.h"
#include "shared/flags.h"
#include "shared/logging.h"
#include "shared/pg.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {


// Blocks SIGTERM and SIGINT in every thread started after this call, so that
// WaitForStopSignal alone receives them.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int WaitForStopSignal(const sigset_t& set) {
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace

int ControllerMain(int argc, char** argv) {
  // Debian's Abseil is built with its mutex deadlock detector on, which keeps
  // a lock graph on every acquisition; tests keep it, the binaries do not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FlagSet flags("hoistd [flags]",
                "The Hoist controller. Keeps deployments, releases and rollouts in Postgres,\n"
                "elects one leader among its replicas and pushes steps to agents.");
  flags.AddString("listen", "127.0.0.1:7443", "gRPC address to serve (operator API, agents, grpc.health.v1).",
                  "HOIST_LISTEN");
  flags.AddString("database-url", "",
                  "Postgres connection string (URI or key=value). On the command line a password in it is "
                  "visible to every local user (ps): prefer HOIST_DATABASE_URL or --database-url-file.",
                  "HOIST_DATABASE_URL");
  flags.AddString("database-url-file", "",
                  "A file holding the connection string (its first line), for example a secret mounted "
                  "into the container; used when --database-url is not set.",
                  "HOIST_DATABASE_URL_FILE");
  flags.AddString("replica-id", "", "Unique name of this replica (default: host name and pid).",
                  "HOIST_REPLICA_ID");
  flags.AddString("advertise-address", "", "Address agents and the CLI should dial for this replica "
                  "(default: --listen).", "HOIST_ADVERTISE_ADDRESS");
  flags.AddString("http-listen", "127.0.0.1:7480", "Address of the HTTP /health and /metrics endpoints; "
                  "empty disables them.", "HOIST_HTTP_LISTEN");
  flags.AddString("tls-ca", "", "Fleet CA certificate (hoist ca init); with --tls-cert and --tls-key, agents "
                  "and operators must present certificates it signed.", "HOIST_TLS_CA");
  flags.AddString("tls-cert", "", "This controller's certificate (hoist ca issue controller NAME).", "HOIST_TLS_CERT");
  flags.AddString("tls-key", "", "This controller's private key.", "HOIST_TLS_KEY");
  flags.AddString("tls-crl", "", "Revocation list (hoist ca revoke), read again whenever it changes; default "
                  "crl.pem next to --tls-ca (absent: nothing revoked).", "HOIST_TLS_CRL");
  flags.AddString("secrets-key-file", "", "Key file (mode 0600, 64 hex digits a line: openssl rand -hex 32) that "
                  "seals env values at rest in Postgres; required with TLS. The first key seals, every key opens "
                  "(rotation: README, Secrets).", "HOIST_SECRETS_KEY_FILE");
  flags.AddString("log-level", "info", "trace, debug, info, warn, error.", "HOIST_LOG_LEVEL");
  flags.AddString("log-format", "text", "text or json.", "HOIST_LOG_FORMAT");
  flags.AddBool("version", "Print the version and exit.");
  flags.AddExample("hoistd --listen 0.0.0.0:7443 --database-url postgresql://hoist@db/hoist");
  flags.AddExample("hoistd migrate status --database-url postgresql://hoist@db/hoist");

  std::vector<std::string> args(argv + 1, argv + argc);
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    std::cerr << "hoistd: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Help();
    return 0;
  }
  if (flags.GetBool("version")) {
    std::cout << "hoistd " << HOIST_VERSION << "\n";
    return 0;
  }
  auto level = ParseLogLevel(flags.Get("log-level"));
  auto format = ParseLogFormat(flags.Get("log-format"));
  auto listen = ParseHostPort("--listen", flags.Get("listen"));
  for (const absl::Status& s : {level.status(), format.status(), listen.status()}) {
    if (!s.ok()) {
      std::cerr << "hoistd: " << s.message() << "\n";
      return 2;
    }
  }
  InitLogging({*level, *format, "hoistd"});
  std::string database_url = flags.Get("database-url");
  if (database_url.empty() && !flags.Get("database-url-file").empty()) {
    std::ifstream in(flags.Get("database-url-file"));
    if (!in) {
      std::cerr << "hoistd: --database-url-file " << flags.Get("database-url-file") << ": cannot read it\n";
      return 2;
    }
    std::getline(in, database_url);
    database_url = std::string(absl::StripAsciiWhitespace(database_url));
    if (database_url.empty()) {
      std::cerr << "hoistd: --database-url-file " << flags.Get("database-url-file")
                << ": its first line is empty; write the connection string there\n";
      return 2;
    }
  }
  if (database_url.empty()) {
    std::cerr << "hoistd: --database-url is required (or set HOIST_DATABASE_URL, or --database-url-file)\n";
    return 2;
  }
  if (auto s = WithConnectionDefaults(database_url); !s.ok()) {
    std::cerr << "hoistd: --database-url: " << s.status().message() << "\n";
    return 2;
  }
  std::string replica_id = flags.Get("replica-id");
  if (replica_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    replica_id = std::string(host) + "-" + std::to_string(getpid());
  }
  auto migrations = ParseMigrations(EmbeddedMigrationFiles());
  if (!migrations.ok()) {
    spdlog::critical("embedded migrations: {}", migrations.status().message());
    return 1;
  }
  PgMigrator migrator(database_url, *migrations, {.applied_by = replica_id}, RealClock::Get());

  const std::vector<std::string>& positional = flags.positional();
  if (!positional.empty()) {
    if (positional[0] != "migrate") {
      std::cerr << "hoistd: unknown command \"" << positional[0] << "\"; the only command is migrate\n";
      return 2;
    }
    return RunMigrateCommand(migrator, std::vector<std::string>(positional.begin() + 1, positional.end()));
  }

  // The schema comes first: nothing is served from a database this binary
  // does not match.
  auto migrated = migrator.Migrate();
  if (!migrated.ok()) {
    spdlog::critical("cannot start: {}", migrated.status().message());
    return 1;
  }
  if (!migrated->applied_now.empty()) {
    spdlog::info("applied {} schema migration(s)", migrated->applied_now.size());
  }

  const sigset_t stop_signals = BlockStopSignals();
  const std::string advertise =
      flags.Get("advertise-address").empty() ? listen->ToString() : flags.Get("advertise-address");
  const bool tls = !flags.Get("tls-ca").empty() || !flags.Get("tls-cert").empty() || !flags.Get("tls-key").empty();
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  std::unique_ptr<RevocationWatcher> revocations;
  std::optional<absl::Time> own_cert_expiry;
  if (tls) {
    auto material = LoadTlsMaterial(flags.Get("tls-ca"), flags.Get("tls-cert"), flags.Get("tls-key"), TlsRole::kServer);
    if (!material.ok()) {
      std::cerr << "hoistd: " << material.status().message() << "\n";
      return 2;
    }
    credentials = ServerTlsCredentials(*material);
    if (credentials == nullptr) {
      std::cerr << "hoistd: gRPC refused the TLS server credentials from " << flags.Get("tls-cert") << "\n";
      return 2;
    }
    own_cert_expiry = material->cert.not_after;
    auto watcher = RevocationWatcher::Load(flags.Get("tls-ca"), flags.Get("tls-crl"));
    if (!watcher.ok()) {
      std::cerr << "hoistd: " << watcher.status().message() << "\n";
      return 2;
    }
    revocations = *std::move(watcher);
    spdlog::info("revocation list {}: {} certificates revoked", revocations->crl_path(), revocations->revoked_count());
  } else {
    spdlog::warn("serving without TLS: agents and operators are not authenticated (pass --tls-ca, --tls-cert and "
                 "--tls-key in production)");
  }
  std::unique_ptr<SecretBox> secrets;
  if (!flags.Get("secrets-key-file").empty()) {
    auto box = SecretBox::FromFile(flags.Get("secrets-key-file"));
    if (!box.ok()) {
      std::cerr << "hoistd: " << box.status().message() << "\n";
      return 2;
    }
    secrets = *std::move(box);
  } else if (tls) {
    std::cerr << "hoistd: --secrets-key-file is required with TLS: env values are kept sealed in Postgres under "
                 "a key only hoistd reads (make one: openssl rand -hex 32 > hoistd-secrets.key && chmod 600 "
                 "hoistd-secrets.key; every replica uses the same file)\n";
    return 2;
  } else {
    spdlog::warn("no --secrets-key-file: env values are stored in Postgres in clear (development only)");
  }
  auto pooled_url = WithConnectionDefaults(database_url);
  PgPool pool(*pooled_url, 8);
  PgAgentStore agent_store(&pool);
  PgRolloutStore rollout_store(&pool, secrets.get());
  if (secrets) {
    auto sealed = rollout_store.SealStoredSecrets();
    if (!sealed.ok()) {
      spdlog::critical("cannot seal the env values stored in clear or under an older key: {}",
                       std::string(sealed.status().message()));
      return 1;
    }
    if (*sealed > 0) spdlog::info("sealed {} stored manifests and steps under key {}", *sealed, secrets->current_key_id());
  }
  AgentHub hub(&agent_store, RealClock::Get(), AgentHubOptions{.controller_id = replica_id});
  rollout::Executor executor(&rollout_store, &hub, RealClock::Get());
  rollout::RolloutManager manager(&rollout_store, &agent_store, &hub, &executor, RealClock::Get());
  if (secrets) {
    manager.SetSecretFingerprint([box = secrets.get()](absl::string_view value) { return box->Fingerprint(value); });
  }
  executor.SetRollbackLauncher([&manager, &hub](const rollout::StoredRollout& failed) {
    return manager.RollBackFailed(hub.epoch(), failed);
  });
  LeaderElectionOptions election{.replica_id = replica_id, .advertise_address = advertise};
  LeaderElector elector(database_url, election, RealClock::Get());
  auto current_leader = [&elector] { return elector.CurrentLeader(); };
  Authorizer authorizer({.tls = tls,
                         .revocations = revocations.get(),
                         .audit = [&rollout_store](const rollout::AuditEntry& entry) {
                           if (absl::Status s = rollout_store.Audit(entry); !s.ok()) {
                             spdlog::error("cannot write a refusal to the audit log: {}", std::string(s.message()));
                           }
                         }});
  AgentServiceImpl agent_service(&hub, current_leader, &authorizer);
  OperatorServiceImpl operator_service(&manager, &rollout_store, &agent_store, &hub, current_leader, &authorizer);

  MetricsRegistry metrics;
  Gauge& is_leader = metrics.AddGauge("hoist_leader", "1 while this replica leads.");
  Gauge& epoch_gauge = metrics.AddGauge("hoist_leader_epoch", "Epoch this replica leads with (0: following).");
  Gauge& agents_gauge = metrics.AddGauge("hoist_agents_connected", "Agents with an open session here.");
  Gauge& in_flight = metrics.AddGauge("hoist_steps_in_flight", "Steps pushed and not yet answered.");
  Gauge& cert_expiry = metrics.AddGauge("hoist_tls_certificate_expiry_seconds",
                                        "Seconds until this replica's certificate expires (absent without TLS).");
  Gauge& revoked_gauge = metrics.AddGauge("hoist_tls_revoked_certificates", "Entries in the revocation list.");
  Histogram& step_latency =
      metrics.AddHistogram("hoist_step_duration_seconds", "Time from push to result, per step.", DefaultLatencyBuckets());
  hub.SetStepObserver([&step_latency](const hoist::v1::Step&, const hoist::v1::StepResult&, absl::Duration took) {
    step_latency.Observe(absl::ToDoubleSeconds(took));
  });

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.RegisterService(&operator_service);
  builder.RegisterService(&agent_service);
  // HTTP/2 keepalive: a frozen or vanished agent's session ends within
  // seconds instead of holding its steps; the agents ping every 2 s too
  // (agent/session.h), which the server must allow.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  int bound_port = 0;
  builder.AddListeningPort(listen->ToString(), credentials, &bound_port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    spdlog::critical("cannot listen on {}: address in use or not available", listen->ToString());
    return 1;
  }
  spdlog::info("hoistd {} ({}) serving on {}", HOIST_VERSION, replica_id, listen->ToString());

  HttpServer http;
  http.Handle("/health", [&](const HttpServerRequest&) {
    const uint64_t epoch = hub.epoch();
    bool database_ok = pool.Run([](pqxx::connection& c) {
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
                           {"replica_id", replica_id}};
    if (own_cert_expiry) {
      const absl::Duration left = *own_cert_expiry - absl::Now();
      body["certificate_expires"] = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *own_cert_expiry, absl::UTCTimeZone());
      body["certificate_days_left"] = static_cast<int64_t>(absl::ToDoubleHours(left) / 24);
      if (left < kCertificateExpiryWarning) {
        body["warnings"].push_back(absl::StrCat(
            "this replica's certificate expires in ", absl::FormatDuration(absl::Trunc(left, absl::Minutes(1))),
            ": issue a new one (hoist ca issue controller ", replica_id, " --force) and restart hoistd"));
      }
    }
    return HttpServerReply{database_ok ? 200 : 503, "application/json", body.dump() + "\n"};
  });
  http.Handle("/metrics", [&](const HttpServerRequest&) {
    const uint64_t epoch = hub.epoch();
    const AgentHubStats stats = hub.Stats();
    is_leader.Set(epoch != 0 ? 1 : 0);
    epoch_gauge.Set(static_cast<double>(epoch));
    agents_gauge.Set(stats.agents_connected);
    in_flight.Set(stats.steps_in_flight);
    if (own_cert_expiry) cert_expiry.Set(absl::ToDoubleSeconds(*own_cert_expiry - absl::Now()));
    if (revocations) revoked_gauge.Set(static_cast<double>(revocations->revoked_count()));
    return HttpServerReply{200, std::string(kPrometheusContentType), metrics.Render()};
  });
  if (!flags.Get("http-listen").empty()) {
    if (absl::Status s = http.Start(flags.Get("http-listen")); !s.ok()) {
      spdlog::critical("cannot serve /health on {}: {}", flags.Get("http-listen"), s.message());
      return 1;
    }
    spdlog::info("/health and /metrics on http://{}:{}", flags.Get("http-listen").substr(0, flags.Get("http-listen").rfind(':')), http.port());
  }

  if (revocations) {
    revocations->Start(absl::Seconds(1), [&agent_service] { agent_service.CloseRevokedSessions(); });
  }
  if (own_cert_expiry && *own_cert_expiry - absl::Now() < kCertificateExpiryWarning) {
    spdlog::warn("this replica's certificate expires on {}: issue a new one before then",
                 absl::FormatTime("%Y-%m-%d %H:%M UTC", *own_cert_expiry, absl::UTCTimeZone()));
  }
  hub.Start();
  elector.Start([&hub, &executor](uint64_t epoch) {
    if (epoch != 0) spdlog::info("leading with epoch {}", epoch);
    else spdlog::info("following");
    hub.OnLeadership(epoch);
    executor.OnLeadership(epoch);
  });
  int sig = WaitForStopSignal(stop_signals);
  spdlog::info("signal {}: shutting down", sig);
  elector.Stop();
  hub.OnLeadership(0);
  executor.OnLeadership(0);
  hub.Stop();
  if (revocations) revocations->Stop();
  http.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace hoist

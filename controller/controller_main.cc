#include "controller/controller_main.h"

#include <pthread.h>
#include <unistd.h>
#include <signal.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pqxx/pqxx>

#include "controller/leader_election.h"
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
  FlagSet flags("hoistd [flags]",
                "The Hoist controller. Keeps deployments, releases and rollouts in Postgres,\n"
                "elects one leader among its replicas and pushes steps to agents.");
  flags.AddString("listen", "127.0.0.1:7443", "gRPC address to serve (operator API, agents, grpc.health.v1).",
                  "HOIST_LISTEN");
  flags.AddString("database-url", "", "Postgres connection string (URI or key=value).",
                  "HOIST_DATABASE_URL");
  flags.AddString("replica-id", "", "Unique name of this replica (default: host name and pid).",
                  "HOIST_REPLICA_ID");
  flags.AddString("advertise-address", "", "Address agents and the CLI should dial for this replica "
                  "(default: --listen).", "HOIST_ADVERTISE_ADDRESS");
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
  const std::string& database_url = flags.Get("database-url");
  if (database_url.empty()) {
    std::cerr << "hoistd: --database-url is required (or set HOIST_DATABASE_URL)\n";
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
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // The operator API and the agent session answer UNIMPLEMENTED until their
  // handlers land; registering them keeps the port's surface stable.
  hoist::v1::OperatorService::Service operator_service;
  hoist::v1::AgentService::Service agent_service;
  builder.RegisterService(&operator_service);
  builder.RegisterService(&agent_service);
  int bound_port = 0;
  builder.AddListeningPort(listen->ToString(), grpc::InsecureServerCredentials(), &bound_port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    spdlog::critical("cannot listen on {}: address in use or not available", listen->ToString());
    return 1;
  }
  spdlog::info("hoistd {} ({}) serving on {}", HOIST_VERSION, replica_id, listen->ToString());

  LeaderElectionOptions election{.replica_id = replica_id,
                                 .advertise_address = flags.Get("advertise-address").empty()
                                                          ? listen->ToString()
                                                          : flags.Get("advertise-address")};
  LeaderElector elector(database_url, election, RealClock::Get());
  elector.Start([](uint64_t epoch) {
    if (epoch != 0) spdlog::info("leading with epoch {}", epoch);
    else spdlog::info("following");
  });
  int sig = WaitForStopSignal(stop_signals);
  spdlog::info("signal {}: shutting down", sig);
  elector.Stop();
  server->Shutdown();
  return 0;
}

}  // namespace hoist

#include "controller/controller_main.h"

#include <pthread.h>
#include <signal.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pqxx/pqxx>

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
  flags.AddString("log-level", "info", "trace, debug, info, warn, error.", "HOIST_LOG_LEVEL");
  flags.AddString("log-format", "text", "text or json.", "HOIST_LOG_FORMAT");
  flags.AddBool("version", "Print the version and exit.");
  flags.AddExample("hoistd --listen 0.0.0.0:7443 --database-url postgresql://hoist@db/hoist");

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
  if (flags.Get("database-url").empty()) {
    std::cerr << "hoistd: --database-url is required (or set HOIST_DATABASE_URL)\n";
    return 2;
  }
  auto conn = PgConnect(flags.Get("database-url"), {.application_name = "hoistd"});
  if (!conn.ok()) {
    spdlog::critical("{}", conn.status().message());
    return 1;
  }

  const sigset_t stop_signals = BlockStopSignals();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen->ToString(), grpc::InsecureServerCredentials(), &bound_port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    spdlog::critical("cannot listen on {}: address in use or not available", listen->ToString());
    return 1;
  }
  spdlog::info("hoistd {} serving on {}", HOIST_VERSION, listen->ToString());
  int sig = WaitForStopSignal(stop_signals);
  spdlog::info("signal {}: shutting down", sig);
  server->Shutdown();
  return 0;
}

}  // namespace hoist

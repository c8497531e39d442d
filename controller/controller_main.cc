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

#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "controller/controller_server.h"
#include "controller/migrate_command.h"
#include "controller/store/embedded_migrations.h"
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

void DefineFlags(FlagSet& flags) {
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

}

// The connection string from --database-url or the first line of
// --database-url-file; an empty answer has been reported.
std::string DatabaseUrl(const FlagSet& flags) {
  std::string url = flags.Get("database-url");
  const std::string file = flags.Get("database-url-file");
  if (url.empty() && !file.empty()) {
    std::ifstream in(file);
    if (!in) {
      std::cerr << "hoistd: --database-url-file " << file << ": cannot read it\n";
      return "";
    }
    std::getline(in, url);
    url = std::string(absl::StripAsciiWhitespace(url));
    if (url.empty()) {
      std::cerr << "hoistd: --database-url-file " << file << ": its first line is empty; write the connection string there\n";
      return "";
    }
  }
  if (url.empty()) {
    std::cerr << "hoistd: --database-url is required (or set HOIST_DATABASE_URL, or --database-url-file)\n";
    return "";
  }
  if (auto s = WithConnectionDefaults(url); !s.ok()) {
    std::cerr << "hoistd: --database-url: " << s.status().message() << "\n";
    return "";
  }
  return url;
}

std::string DefaultReplicaId() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "-" + std::to_string(getpid());
}

int RunMigrate(const ControllerServerOptions& options, const std::vector<std::string>& positional) {
  if (positional[0] != "migrate") {
    std::cerr << "hoistd: unknown command \"" << positional[0] << "\"; the only command is migrate\n";
    return 2;
  }
  auto migrations = ParseMigrations(EmbeddedMigrationFiles());
  if (!migrations.ok()) {
    spdlog::critical("embedded migrations: {}", migrations.status().message());
    return 1;
  }
  PgMigrator migrator(options.database_url, *migrations, {.applied_by = options.replica_id}, RealClock::Get());
  return RunMigrateCommand(migrator, std::vector<std::string>(positional.begin() + 1, positional.end()));
}

// Serves until SIGTERM or SIGINT; the exit code.
int Serve(ControllerServerOptions options) {
  const sigset_t stop_signals = BlockStopSignals();
  auto server = ControllerServer::Create(std::move(options));
  if (!server.ok()) {
    if (absl::IsInvalidArgument(server.status())) {
      std::cerr << "hoistd: " << server.status().message() << "\n";
      return 2;
    }
    spdlog::critical("cannot start: {}", server.status().message());
    return 1;
  }
  if (absl::Status s = (*server)->Start(); !s.ok()) {
    spdlog::critical("{}", s.message());
    return 1;
  }
  int sig = WaitForStopSignal(stop_signals);
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Stop();
  return 0;
}

}  // namespace

int ControllerMain(int argc, char** argv) {
  // Debian's Abseil is built with its mutex deadlock detector on, which keeps
  // a lock graph on every acquisition; tests keep it, the binaries do not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FlagSet flags("hoistd [flags]",
                "The Hoist controller. Keeps deployments, releases and rollouts in Postgres,\n"
                "elects one leader among its replicas and pushes steps to agents.");
  DefineFlags(flags);
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
  auto listen = ParseListenAddress("--listen", flags.Get("listen"));
  for (const absl::Status& s : {level.status(), format.status(), listen.status()}) {
    if (!s.ok()) {
      std::cerr << "hoistd: " << s.message() << "\n";
      return 2;
    }
  }
  InitLogging({*level, *format, "hoistd"});
  ControllerServerOptions options{.database_url = DatabaseUrl(flags),
                                  .replica_id = flags.Get("replica-id"),
                                  .listen = flags.Get("listen"),
                                  .advertise_address = flags.Get("advertise-address"),
                                  .http_listen = flags.Get("http-listen"),
                                  .tls_ca = flags.Get("tls-ca"),
                                  .tls_cert = flags.Get("tls-cert"),
                                  .tls_key = flags.Get("tls-key"),
                                  .tls_crl = flags.Get("tls-crl"),
                                  .secrets_key_file = flags.Get("secrets-key-file")};
  if (options.database_url.empty()) return 2;
  if (options.replica_id.empty()) options.replica_id = DefaultReplicaId();
  if (!flags.positional().empty()) return RunMigrate(options, flags.positional());
  return Serve(std::move(options));
}

}  // namespace hoist

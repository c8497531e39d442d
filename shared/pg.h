#pragma once

// Postgres connection helpers. Every connection Hoist opens carries TCP
// keepalives and a TCP user timeout, so that a leader cut off from the database
// finds out in seconds instead of the kernel's default of hours.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include <pqxx/connection>

#include "absl/status/statusor.h"


namespace hoist {

struct PgConnectOptions {
  // application_name, shown in pg_stat_activity.
  std::string application_name = "hoist";
  int connect_timeout_s = 5;
  int keepalives_idle_s = 5;
  int keepalives_interval_s = 2;
  int keepalives_count = 3;
  // Milliseconds unacknowledged data may stay in flight before the connection is dropped.
  int tcp_user_timeout_ms = 10000;
};

// Parses a libpq connection string (URI "postgresql://..." or "key=value ...")
// into its parameters. The error quotes libpq's reason but never the password.
absl::StatusOr<std::map<std::string, std::string>> ParseConnInfo(absl::string_view conninfo);

// Returns conninfo as a "key=value" string with the options' keepalive,
// timeout and application settings added where the caller did not set them.
absl::StatusOr<std::string> WithConnectionDefaults(absl::string_view conninfo,
                                                   const PgConnectOptions& options = {});

// Renders parameters as a "key=value" string, quoting values as libpq expects.
std::string RenderConnInfo(const std::map<std::string, std::string>& params);

// Returns conninfo with any password replaced by "***", for logs and errors.
std::string RedactConnInfo(absl::string_view conninfo);

// Opens a connection with WithConnectionDefaults applied. Connection failures
// come back as UNAVAILABLE with libpq's reason; bad strings as INVALID_ARGUMENT.
absl::StatusOr<std::unique_ptr<pqxx::connection>> PgConnect(absl::string_view conninfo,
                                                            const PgConnectOptions& options = {});

}  // namespace hoist

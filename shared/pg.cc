#include "shared/pg.h"

#include <libpq-fe.h>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace hoist {

absl::StatusOr<std::map<std::string, std::string>> ParseConnInfo(absl::string_view conninfo) {
  std::string text(conninfo);
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(text.c_str(), &err);
  if (opts == nullptr) {
    std::string reason = err ? std::string(absl::StripTrailingAsciiWhitespace(err)) : "out of memory";
    if (err) PQfreemem(err);
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid database connection string: ", reason,
        "; expected a URI such as postgresql://hoist@127.0.0.1:5432/hoist or key=value pairs "
        "such as \"host=127.0.0.1 port=5432 dbname=hoist user=hoist\""));
  }
  std::map<std::string, std::string> params;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) params[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  return params;
}

std::string RenderConnInfo(const std::map<std::string, std::string>& params) {
  std::string out;
  for (const auto& [key, value] : params) {
    if (!out.empty()) out += ' ';
    std::string escaped = absl::StrReplaceAll(value, {{"\\", "\\\\"}, {"'", "\\'"}});
    absl::StrAppend(&out, key, "='", escaped, "'");
  }
  return out;
}

absl::StatusOr<std::string> WithConnectionDefaults(absl::string_view conninfo,
                                                   const PgConnectOptions& options) {
  auto params = ParseConnInfo(conninfo);
  if (!params.ok()) return params.status();
  auto set_default = [&](const std::string& key, std::string value) {
    params->try_emplace(key, std::move(value));
  };
  set_default("application_name", options.application_name);
  set_default("connect_timeout", absl::StrCat(options.connect_timeout_s));
  set_default("keepalives", "1");
  set_default("keepalives_idle", absl::StrCat(options.keepalives_idle_s));
  set_default("keepalives_interval", absl::StrCat(options.keepalives_interval_s));
  set_default("keepalives_count", absl::StrCat(options.keepalives_count));
  set_default("tcp_user_timeout", absl::StrCat(options.tcp_user_timeout_ms));
  return RenderConnInfo(*params);
}

std::string RedactConnInfo(absl::string_view conninfo) {
  auto params = ParseConnInfo(conninfo);
  if (!params.ok()) return "<unparsable connection string>";
  if (auto it = params->find("password"); it != params->end()) it->second = "***";
  return RenderConnInfo(*params);
}

absl::StatusOr<std::unique_ptr<pqxx::connection>> PgConnect(absl::string_view conninfo,
                                                            const PgConnectOptions& options) {
  auto full = WithConnectionDefaults(conninfo, options);
  if (!full.ok()) return full.status();
  try {
    return std::make_unique<pqxx::connection>(*full);
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(absl::StrCat("cannot connect to Postgres (",
                                               RedactConnInfo(conninfo), "): ",
                                               absl::StripTrailingAsciiWhitespace(e.what())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot connect to Postgres: ",
                                                   absl::StripTrailingAsciiWhitespace(e.what())));
  }
}

}  // namespace hoist

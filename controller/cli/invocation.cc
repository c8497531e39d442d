#include "controller/cli/invocation.h"

#include <cstdlib>
#include <filesystem>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "controller/cli/exit_codes.h"
#include "google/protobuf/util/json_util.h"
#include "shared/config.h"
#include "shared/tls.h"

namespace hoist::cli {
namespace {

struct GlobalFlag {
  const char* name;
  bool takes_value;
};

// Every global flag is also a config file key of the same name.
constexpr GlobalFlag kGlobalFlags[] = {
    {"controller", true}, {"deployment", true}, {"output", true}, {"tls-ca", true}, {"tls-cert", true},
    {"tls-key", true},    {"insecure", false},  {"timeout", true}, {"debug", false}, {"config", true},
};

std::string ConfigPath(bool* explicit_path) {
  *explicit_path = false;
  if (const char* p = std::getenv("HOIST_CONFIG"); p != nullptr && *p != '\0') {
    *explicit_path = true;
    return p;
  }
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x != nullptr && *x != '\0') {
    return absl::StrCat(x, "/hoist/config.yaml");
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return absl::StrCat(h, "/.config/hoist/config.yaml");
  }
  return "";
}

}  // namespace

bool IsGlobalFlag(absl::string_view name, bool* takes_value) {
  for (const auto& f : kGlobalFlags) {
    if (name == f.name) {
      *takes_value = f.takes_value;
      return true;
    }
  }
  return false;
}

void AddGlobalFlags(FlagSet& flags) {
  flags.AddString("controller", "127.0.0.1:7443", "hoistd addresses, comma-separated; tried in order.",
                  "HOIST_CONTROLLER");
  flags.AddString("deployment", "", "Deployment to act on (-d); may be left out when hoistd has only one.",
                  "HOIST_DEPLOYMENT");
  flags.AddString("output", "table", "table or json (one JSON document; one per line for a watch).",
                  "HOIST_OUTPUT");
  flags.AddString("tls-ca", "", "Fleet CA certificate (hoist ca init).", "HOIST_TLS_CA");
  flags.AddString("tls-cert", "", "Operator certificate (hoist ca issue operator NAME).", "HOIST_TLS_CERT");
  flags.AddString("tls-key", "", "Operator private key.", "HOIST_TLS_KEY");
  flags.AddBool("insecure", "Plaintext connection to a development controller without TLS.", "HOIST_INSECURE");
  flags.AddString("timeout", "10s", "Deadline of each call to hoistd.", "HOIST_TIMEOUT");
  flags.AddBool("debug", "Print debug lines (redirects, retries) on stderr.", "HOIST_DEBUG");
  flags.AddString("config", "~/.config/hoist/config.yaml",
                  "Config file with the same keys as these flags (flags > env > file).", "HOIST_CONFIG");
}

Invocation::Invocation(std::string verb, CliIo& io) : verb_(std::move(verb)), io_(io) {}

std::optional<int> Invocation::Parse(FlagSet& flags, const std::vector<std::string>& args, size_t min_args,
                                     size_t max_args, absl::string_view args_hint) {
  AddGlobalFlags(flags);
  if (auto s = flags.Parse(args); !s.ok()) return Usage(s.message());
  if (flags.help_requested()) {
    out() << flags.Help();
    return kExitOk;
  }
  // The config file fills in what neither a flag nor an env var set.
  std::map<std::string, ConfigValue> file;
  bool explicit_path = false;
  std::string path = flags.IsSet("config") ? flags.Get("config") : ConfigPath(&explicit_path);
  explicit_path = explicit_path || flags.IsSet("config");
  if (!path.empty() && (explicit_path || std::filesystem::exists(path))) {
    std::set<std::string> known;
    for (const auto& f : kGlobalFlags) {
      if (std::string(f.name) != "config") known.insert(f.name);
    }
    auto loaded = LoadConfigFile(path, known);
    if (!loaded.ok()) return Usage(loaded.status().message());
    file = std::move(*loaded);
  }
  auto setting = [&](const std::string& name) -> std::string {
    if (flags.IsSet(name)) return flags.Get(name);
    if (auto it = file.find(name); it != file.end()) return it->second.value;
    return flags.Get(name);
  };
  auto where = [&](const std::string& name) {
    if (flags.IsSet(name)) return absl::StrCat("--", name);
    if (auto it = file.find(name); it != file.end()) return absl::StrCat(path, ":", it->second.line, ": ", name);
    return absl::StrCat("--", name);
  };

  for (absl::string_view a : absl::StrSplit(setting("controller"), ',', absl::SkipWhitespace())) {
    a = absl::StripAsciiWhitespace(a);
    auto hp = ParseHostPort(where("controller"), a);
    if (!hp.ok()) return Usage(hp.status().message());
    options_.controllers.push_back(std::string(a));
  }
  if (options_.controllers.empty()) return Usage("--controller is empty; give host:port, such as 127.0.0.1:7443");
  options_.deployment = setting("deployment");
  std::string output = setting("output");
  if (output == "json") {
    options_.output = OutputFormat::kJson;
  } else if (output != "table") {
    return Usage(absl::StrCat(where("output"), ": \"", output, "\" is not an output format; use table or json"));
  }
  options_.tls_ca = setting("tls-ca");
  options_.tls_cert = setting("tls-cert");
  options_.tls_key = setting("tls-key");
  for (const char* name : {"insecure", "debug"}) {
    auto b = ParseBoolSetting(where(name), setting(name));
    if (!b.ok()) return Usage(b.status().message());
    (std::string(name) == "insecure" ? options_.insecure : options_.debug) = *b;
  }
  auto timeout = ParseDurationSetting(where("timeout"), setting("timeout"));
  if (!timeout.ok()) return Usage(timeout.status().message());
  if (*timeout <= absl::ZeroDuration()) return Usage(absl::StrCat(where("timeout"), " must be more than 0s"));
  options_.timeout = *timeout;

  args_ = flags.positional();
  if (args_.size() < min_args) {
    return Usage(absl::StrCat("missing ", args_hint, "; see hoist ", verb_, " --help"));
  }
  if (args_.size() > max_args) {
    return Usage(absl::StrCat("unexpected argument \"", args_[max_args], "\"",
                              max_args == 0 ? "" : absl::StrCat(" after ", args_hint), "; see hoist ", verb_,
                              " --help"));
  }
  return std::nullopt;
}

absl::StatusOr<OperatorClient*> Invocation::Client() {
  if (client_ != nullptr) return client_.get();
  ConnectionOptions conn;
  conn.addresses = options_.controllers;
  conn.timeout = options_.timeout;
  conn.debug = options_.debug ? io_.err : nullptr;
  bool any_tls = !options_.tls_ca.empty() || !options_.tls_cert.empty() || !options_.tls_key.empty();
  if (any_tls) {
    if (options_.tls_ca.empty() || options_.tls_cert.empty() || options_.tls_key.empty()) {
      return absl::InvalidArgumentError(
          "--tls-ca, --tls-cert and --tls-key go together: set all three ($HOIST_TLS_CA, $HOIST_TLS_CERT, "
          "$HOIST_TLS_KEY)");
    }
    auto creds = ChannelTlsCredentials(options_.tls_ca, options_.tls_cert, options_.tls_key);
    if (!creds.ok()) return absl::InvalidArgumentError(creds.status().message());
    conn.credentials = *creds;
  } else if (options_.insecure) {
    conn.credentials = grpc::InsecureChannelCredentials();
  } else {
    return absl::InvalidArgumentError(
        "no TLS material: set --tls-ca, --tls-cert and --tls-key (or $HOIST_TLS_*) to the fleet CA and your "
        "operator certificate from `hoist ca issue operator NAME`, or pass --insecure for a development "
        "controller without TLS");
  }
  client_ = std::make_unique<OperatorClient>(std::move(conn));
  return client_.get();
}

absl::StatusOr<std::string> Invocation::Deployment() {
  if (deployment_) return *deployment_;
  if (!options_.deployment.empty()) {
    deployment_ = options_.deployment;
    return *deployment_;
  }
  hoist::v1::ListDeploymentsResponse resp;
  if (auto s = Call("ListDeployments", &OperatorClient::Stub::ListDeployments, hoist::v1::ListDeploymentsRequest(),
                    &resp);
      !s.ok()) {
    return s;
  }
  if (resp.deployments_size() == 0) {
    return absl::NotFoundError("hoistd has no deployment yet; create one with `hoist apply stack.yaml` first");
  }
  if (resp.deployments_size() > 1) {
    std::vector<std::string> names;
    for (const auto& d : resp.deployments()) names.push_back(d.name());
    return absl::InvalidArgumentError(absl::StrCat("hoistd has ", names.size(), " deployments (",
                                                   absl::StrJoin(names, ", "),
                                                   "): choose one with -d NAME (--deployment, $HOIST_DEPLOYMENT)"));
  }
  deployment_ = resp.deployments(0).name();
  return *deployment_;
}

int Invocation::Fail(const absl::Status& status, absl::string_view not_found_hint) {
  err() << "hoist " << verb_ << ": " << status.message() << "\n";
  std::string hint;
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      hint = not_found_hint.empty()
                 ? "check the name: `hoist status` and `hoist releases` show what exists; `hoist apply FILE` "
                   "creates a deployment"
                 : std::string(not_found_hint);
      break;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      hint = "check --tls-cert and --tls-key: an operator certificate from `hoist ca issue operator NAME`, signed "
             "by the controller's fleet CA";
      break;
    default:
      break;
  }
  if (!hint.empty()) err() << "  next: " << hint << "\n";
  return ExitCodeFor(status);
}

int Invocation::Usage(absl::string_view message) {
  err() << "hoist " << verb_ << ": " << message << "\n";
  return kExitUsage;
}

void Invocation::PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  if (auto s = google::protobuf::util::MessageToJsonString(message, &json, options); !s.ok()) {
    // Only invalid UTF-8 in a string field gets here; say so rather than print half a document.
    err() << "hoist " << verb_ << ": cannot print the answer as JSON: " << s.ToString() << "\n";
    return;
  }
  out() << json << "\n";
}

}  // namespace hoist::cli

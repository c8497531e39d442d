#pragma once

// What every hoist verb shares: the process's streams and terminal facts
// (CliIo), the global flags with their env vars and config file, the
// connection to hoistd, deployment resolution, JSON output, and turning an
// error into a message with the next step and an exit code.

#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/cli/operator_client.h"
#include "google/protobuf/message.h"
#include "shared/clock.h"
#include "shared/flags.h"

namespace hoist::cli {

class Interrupt;

// The outside world of one CLI run; tests pass string streams and a fake clock.
struct CliIo {
  std::istream* in = nullptr;
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  // Whether stdin / stdout are terminals: prompts need the first, progress
  // bars redrawn in place and colour need the second.
  bool stdin_tty = false;
  bool stdout_tty = false;
  Clock* clock = nullptr;
  // Ctrl-C; may be null (never interrupted).
  Interrupt* interrupt = nullptr;
};

enum class OutputFormat { kTable, kJson };

// The global flags after flags > env > config file > defaults.
struct GlobalOptions {
  std::vector<std::string> controllers;
  std::string deployment;
  OutputFormat output = OutputFormat::kTable;
  std::string tls_ca, tls_cert, tls_key;
  bool insecure = false;
  absl::Duration timeout = absl::Seconds(10);
  bool debug = false;
};

// The names of the global flags, which may come before the verb; `value`
// tells whether each takes a value. The dispatcher uses it to find the verb.
bool IsGlobalFlag(absl::string_view name, bool* takes_value);

// Adds the global flags to a verb's flag set (so its --help lists them).
void AddGlobalFlags(FlagSet& flags);

// Invocation is one run of one verb.
class Invocation {
 public:
  // `verb` is how the command is named in messages ("plan", "release create").
  Invocation(std::string verb, CliIo& io);

  // Adds the global flags to `flags`, parses `args` (the command line without
  // the verb) and the config file, and checks that there are between
  // min_args and max_args positional arguments (`args_hint` names them in the
  // error). Returns an exit code when the command should stop here: 0 after
  // printing --help, 2 for bad usage (already reported).
  std::optional<int> Parse(FlagSet& flags, const std::vector<std::string>& args, size_t min_args, size_t max_args,
                           absl::string_view args_hint);

  const std::vector<std::string>& args() const { return args_; }
  const GlobalOptions& options() const { return options_; }
  const std::string& verb() const { return verb_; }
  bool json() const { return options_.output == OutputFormat::kJson; }
  CliIo& io() { return io_; }
  std::ostream& out() { return *io_.out; }
  std::ostream& err() { return *io_.err; }
  absl::Time Now() { return io_.clock->Now(); }

  // The connection to hoistd, built on first use from the TLS flags.
  // INVALID_ARGUMENT when the TLS material is missing or bad.
  absl::StatusOr<OperatorClient*> Client();

  // Calls one RPC through Client().
  template <class Req, class Resp>
  absl::Status Call(absl::string_view method, OperatorClient::Rpc<Req, Resp> rpc, const Req& request,
                    Resp* response) {
    auto client = Client();
    if (!client.ok()) return client.status();
    return (*client)->Call(method, rpc, request, response);
  }

  // Calls one RPC for a verb that prints its answer: reports a failure (with
  // `not_found_hint`) or, with --output json, prints the response. Returns
  // the exit code when the verb is done, nullopt when it prints a table.
  template <class Req, class Resp>
  std::optional<int> Fetch(absl::string_view method, OperatorClient::Rpc<Req, Resp> rpc, const Req& request,
                           Resp* response, absl::string_view not_found_hint = "") {
    if (auto s = Call(method, rpc, request, response); !s.ok()) return Fail(s, not_found_hint);
    if (!json()) return std::nullopt;
    PrintJson(*response);
    return 0;
  }

  // The deployment to act on: --deployment / $HOIST_DEPLOYMENT / the config
  // file, or else the only deployment hoistd has. NOT_FOUND when there is
  // none, INVALID_ARGUMENT when there are several.
  absl::StatusOr<std::string> Deployment();

  // Reports a failure as "hoist VERB: message" plus a next step when one is
  // known (`not_found_hint` for NOT_FOUND), and returns its exit code.
  int Fail(const absl::Status& status, absl::string_view not_found_hint = "");
  // Reports bad usage and returns 2.
  int Usage(absl::string_view message);
  // Prints a message as one line of JSON (proto3 JSON mapping, every field).
  void PrintJson(const google::protobuf::Message& message);

 private:
  std::string verb_;
  CliIo& io_;
  GlobalOptions options_;
  std::vector<std::string> args_;
  std::unique_ptr<OperatorClient> client_;
  std::optional<std::string> deployment_;
};

}  // namespace hoist::cli

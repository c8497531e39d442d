#pragma once

// Running other programs: short commands whose output we need (docker build,
// haproxy -c) and long-running children we own by pid (Postgres in tests, the
// proxy on a host).

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace hoist {

struct CommandResult {
  int exit_code = -1;     // -1 when killed by a signal
  int term_signal = 0;    // the signal, when killed
  std::string stdout_text;
  std::string stderr_text;
};

struct CommandOptions {
  // Data written to the child's stdin, which is then closed.
  std::string stdin_data;
  // The child is killed (SIGKILL) after this; INFINITE waits forever.
  absl::Duration timeout = absl::Minutes(10);
  // Extra "KEY=VALUE" entries on top of the current environment.
  std::vector<std::string> extra_env;
  // Working directory; empty keeps the current one.
  std::string cwd;
};

// Runs argv[0] (looked up in PATH) and waits. A non-zero exit is not an error
// here: callers read exit_code. Fails only when the program cannot be started
// or times out (DEADLINE_EXCEEDED, naming the command).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const CommandOptions& options = {});

struct SpawnOptions {
  // Extra "KEY=VALUE" environment entries.
  std::vector<std::string> extra_env;
  // Drop privileges to this user before exec (requires root).
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  // Append stdout and stderr to this file; empty sends them to /dev/null.
  std::string log_path;
  // Deliver SIGKILL to the child when the spawning thread's process dies, so
  // that a crashed test leaves no server behind.
  bool die_with_parent = true;
  // Put the child in its own process group (so signals to ours miss it).
  bool new_process_group = true;
};

// Starts argv without waiting and returns its pid. The caller owns the child:
// it must reap it with WaitForExit.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Waits up to `timeout` for a spawned child to exit and reaps it. Returns its
// exit status as from waitpid, or DEADLINE_EXCEEDED if it still runs.
absl::StatusOr<int> WaitForExit(pid_t pid, absl::Duration timeout);

// Returns "a b 'c d'" for logs and error messages.
std::string QuoteArgv(const std::vector<std::string>& argv);

}  // namespace hoist

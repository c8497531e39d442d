// hoist-simhosts: N simulated Docker hosts in one process, each a real agent
// session with its own identity (see tests/sim/sim_hosts.h). For scale
// benchmarks and tests; stops on SIGTERM or SIGINT.

#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "shared/flags.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"
#include "tests/sim/sim_hosts.h"

namespace {

bool DurationFlag(const hoist::FlagSet& flags, const std::string& name, absl::Duration* out) {
  if (absl::ParseDuration(flags.Get(name), out) && *out >= absl::ZeroDuration()) return true;
  std::cerr << "hoist-simhosts: --" << name << " \"" << flags.Get(name) << "\" is not a duration (example: 250ms)\n";
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil is built with its mutex deadlock detector on, which keeps
  // a lock graph on every acquisition; tests keep it, the binaries do not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  hoist::FlagSet flags("hoist-simhosts --controller ADDR[,ADDR] --count N [flags]",
                       "Simulated Docker hosts: N real agent sessions on an in-memory Docker Engine.");
  flags.AddString("controller", "", "host:port of each hoistd replica, comma-separated.");
  flags.AddString("count", "100", "How many hosts.");
  flags.AddString("first", "1", "Number of the first host.");
  flags.AddString("prefix", "sim-", "Host ids are <prefix><number, 4 digits>.");
  flags.AddString("labels", "", "Labels of every host, key=value,...");
  flags.AddString("deployments", "", "Deployments the hosts manage, comma-separated (default: all).");
  flags.AddString("state-dir", "", "Each host's journal goes to <state-dir>/<id>.");
  flags.AddString("tls-dir", "", "Directory with ca.crt and agent-<id>.crt/.key per host; empty: plaintext.");
  const hoist::testing::SimDockerTimes defaults;
  flags.AddString("pull", absl::FormatDuration(defaults.pull), "Time an image pull takes.");
  flags.AddString("create", absl::FormatDuration(defaults.create), "Time a container create takes.");
  flags.AddString("start", absl::FormatDuration(defaults.start), "Time a container start takes.");
  flags.AddString("stop", absl::FormatDuration(defaults.stop), "Time a container stop takes.");
  flags.AddString("remove", absl::FormatDuration(defaults.remove), "Time a container removal takes.");
  flags.AddString("healthy-after", absl::FormatDuration(defaults.healthy_after),
                  "How long a started container reports Docker health \"starting\".");
  flags.AddString("ramp", "0s", "Start the hosts' sessions evenly spread over this long.");
  flags.AddString("log-level", "warn", "trace, debug, info, warn, error (of every host's session).");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (auto s = flags.Parse(args); !s.ok()) {
    std::cerr << "hoist-simhosts: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Help();
    return 0;
  }
  hoist::testing::SimHostsOptions options;
  for (absl::string_view c : absl::StrSplit(flags.Get("controller"), ',', absl::SkipWhitespace())) {
    options.controllers.emplace_back(c);
  }
  for (absl::string_view d : absl::StrSplit(flags.Get("deployments"), ',', absl::SkipWhitespace())) {
    options.deployments.emplace_back(d);
  }
  if (!absl::SimpleAtoi(flags.Get("count"), &options.count) || !absl::SimpleAtoi(flags.Get("first"), &options.first)) {
    std::cerr << "hoist-simhosts: --count and --first take whole numbers\n";
    return 2;
  }
  options.prefix = flags.Get("prefix");
  options.labels = flags.Get("labels");
  options.state_dir = flags.Get("state-dir");
  options.tls_dir = flags.Get("tls-dir");
  if (options.state_dir.empty()) {
    std::cerr << "hoist-simhosts: --state-dir is required (each host keeps its journal there)\n";
    return 2;
  }
  hoist::testing::SimDockerTimes& t = options.times;
  if (!DurationFlag(flags, "pull", &t.pull) || !DurationFlag(flags, "create", &t.create) ||
      !DurationFlag(flags, "start", &t.start) || !DurationFlag(flags, "stop", &t.stop) ||
      !DurationFlag(flags, "remove", &t.remove) || !DurationFlag(flags, "healthy-after", &t.healthy_after) ||
      !DurationFlag(flags, "ramp", &options.ramp)) {
    return 2;
  }
  auto level = hoist::ParseLogLevel(flags.Get("log-level"));
  if (!level.ok()) {
    std::cerr << "hoist-simhosts: " << level.status().message() << "\n";
    return 2;
  }
  hoist::InitLogging({*level, hoist::LogFormat::kText, "hoist-simhosts"});

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  auto sim = hoist::testing::SimHosts::Start(options);
  if (!sim.ok()) {
    std::cerr << "hoist-simhosts: " << sim.status().message() << "\n";
    return 1;
  }
  spdlog::warn("{} simulated hosts started", (*sim)->count());
  int sig = 0;
  sigwait(&set, &sig);
  sim->reset();
  return 0;
}

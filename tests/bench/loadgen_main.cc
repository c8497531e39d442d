// hoist-loadgen: the zero-downtime benchmark's load generator on the command
// line (tests/bench/loadgen.h). It sends GETs at a fixed rate from the moment
// it starts until SIGTERM or SIGINT, then prints key=value lines for exactly
// that window:
//   NAME_served, NAME_failed (any non-2xx answer or connection error),
//   NAME_p50_ms, NAME_p99_ms, NAME_max_ms, NAME_load_s, NAME_rate
// and, on stderr, the first failure reasons and the count of each answer body.

#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "shared/flags.h"
#include "tests/bench/loadgen.h"

namespace hoist::bench {
namespace {

int Main(int argc, char** argv) {
  FlagSet flags("hoist-loadgen --port PORT [flags]",
                "Sends GETs at a fixed total rate until SIGTERM or SIGINT, then prints key=value lines\n"
                "for that window: NAME_served, NAME_failed, NAME_p50_ms, NAME_p99_ms, NAME_max_ms,\n"
                "NAME_load_s and NAME_rate. A failure is any non-2xx answer or connection error.");
  flags.AddString("host", "127.0.0.1", "IPv4 address to connect to.");
  flags.AddString("port", "", "TCP port to connect to (required).");
  flags.AddString("path", "/", "Path of every GET.");
  flags.AddString("rate", "250", "Requests per second, all connections together.");
  flags.AddString("connections", "8", "Keep-alive connections.");
  flags.AddString("timeout-ms", "5000", "A request with no full answer after this long fails.");
  flags.AddString("name", "load", "Prefix of the printed keys.");
  flags.AddExample("hoist-loadgen --port 8080 --rate 250 --name compose");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    std::cerr << "hoist-loadgen: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Help();
    return 0;
  }
  LoadOptions options;
  options.host = flags.Get("host");
  options.path = flags.Get("path");
  int port = 0, timeout_ms = 0;
  if (!absl::SimpleAtoi(flags.Get("port"), &port) || port <= 0 || port > 65535) {
    std::cerr << "hoist-loadgen: --port \"" << flags.Get("port") << "\" is not a port; give 1-65535\n";
    return 2;
  }
  options.port = static_cast<uint16_t>(port);
  if (!absl::SimpleAtod(flags.Get("rate"), &options.rate_per_second) || options.rate_per_second <= 0) {
    std::cerr << "hoist-loadgen: --rate \"" << flags.Get("rate") << "\" is not a positive number of requests/s\n";
    return 2;
  }
  if (!absl::SimpleAtoi(flags.Get("connections"), &options.connections) || options.connections <= 0) {
    std::cerr << "hoist-loadgen: --connections \"" << flags.Get("connections") << "\" is not a positive count\n";
    return 2;
  }
  if (!absl::SimpleAtoi(flags.Get("timeout-ms"), &timeout_ms) || timeout_ms <= 0) {
    std::cerr << "hoist-loadgen: --timeout-ms \"" << flags.Get("timeout-ms") << "\" is not a positive count\n";
    return 2;
  }
  options.request_timeout = absl::Milliseconds(timeout_ms);
  const std::string name = flags.Get("name");

  // Blocked before the connection threads start, so only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  LoadGenerator load(options);
  absl::Time start = absl::Now();
  load.Start();
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LoadStats stats = load.Stop();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  std::cout << name << "_served=" << stats.served << "\n"
            << name << "_failed=" << stats.failed << "\n"
            << absl::StrFormat("%s_p50_ms=%.1f\n%s_p99_ms=%.1f\n%s_max_ms=%.1f\n", name, stats.p50_ms, name,
                               stats.p99_ms, name, stats.max_ms)
            << absl::StrFormat("%s_load_s=%.2f\n%s_rate=%.0f\n", name, seconds, name,
                               seconds > 0 ? static_cast<double>(stats.served + stats.failed) / seconds : 0.0)
            << std::flush;
  for (const std::string& reason : stats.failure_samples) std::cerr << name << " failure: " << reason << "\n";
  for (const auto& [body, count] : stats.bodies) std::cerr << name << " answer x" << count << ": " << body << "\n";
  return 0;
}

}  // namespace
}  // namespace hoist::bench

int main(int argc, char** argv) { return hoist::bench::Main(argc, argv); }

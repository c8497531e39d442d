#pragma once

// A small HTTP load generator for zero-downtime measurements: N keep-alive
// connections sending GETs at a fixed total rate (an open loop: a slow answer
// does not lower the rate, requests due meanwhile go out late and count their
// wait in the latency). Every request that does not end in a 2xx answer is a
// failure: refused or reset connections, timeouts, truncated answers, 5xx. A
// failed connection is reopened for the next request.

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace hoist::bench {

struct LoadOptions {
  std::string host = "127.0.0.1";  // IPv4
  uint16_t port = 0;
  std::string path = "/";
  int connections = 8;
  double rate_per_second = 250;  // all connections together
  absl::Duration request_timeout = absl::Seconds(5);
};

struct LoadStats {
  int64_t served = 0;  // 2xx answers
  int64_t failed = 0;
  std::vector<std::string> failure_samples;  // the first few reasons
  std::map<std::string, int64_t> bodies;     // answer body -> count
  std::string first_body;                    // of the first 2xx answer
  std::string last_body;                     // of the last one
  int64_t body_changes = 0;                  // answers whose body differs from the one before
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

class LoadGenerator {
 public:
  explicit LoadGenerator(LoadOptions options) : options_(std::move(options)) {}
  // Stops it.
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Starts the connection threads.
  void Start();
  // Stops sending, joins the threads and returns the totals.
  LoadStats Stop();
  // Totals so far (latency figures are filled by Stop only).
  LoadStats Snapshot() const;

 private:
  void RunConnection(int index);
  void Record(bool ok, const std::string& body_or_reason, absl::Duration latency);

  const LoadOptions options_;
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  LoadStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hoist::bench

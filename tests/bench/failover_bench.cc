// Measures leader failover of hoistd: three real replicas on a throw-away
// Postgres; the leader is ended by kill -9, SIGSTOP or SIGTERM, and the time
// until another replica has won the lock and bumped the epoch (the moment it
// may dispatch) is recorded. Prints key=value lines.

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/subprocess.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

struct Leader {
  std::string id;
  uint64_t epoch = 0;
};

class Bench {
 public:
  explicit Bench(std::string url) : url_(std::move(url)), conn_(url_) {}

  ~Bench() {
    for (auto& [id, pid] : pids_) {
      kill(pid, SIGCONT);
      kill(pid, SIGKILL);
      (void)WaitForExit(pid, absl::Seconds(10));
    }
    if (!dir_.empty()) RemoveTree(dir_);
  }

  bool Start(const std::string& id) {
    if (dir_.empty()) dir_ = *MakeOwnedTempDir("hoist-failover-bench");
    auto port = PickFreePort();
    if (!port.ok()) return false;
    auto pid = Spawn({HOIST_HOISTD_PATH, "--replica-id", id, "--listen", absl::StrCat("127.0.0.1:", *port),
                      "--database-url", url_, "--http-listen", "127.0.0.1:0"},
                     {.log_path = dir_ + "/" + id + ".log"});
    if (!pid.ok()) {
      std::fprintf(stderr, "start %s: %s\n", id.c_str(), std::string(pid.status().message()).c_str());
      return false;
    }
    pids_[id] = *pid;
    return true;
  }

  // The leader row, or an empty id while the schema is not there yet.
  Leader Current() {
    try {
      pqxx::nontransaction tx(conn_);
      auto r = tx.exec1("SELECT coalesce(leader_id, ''), epoch FROM hoist_leader");
      return {r[0].as<std::string>(), r[1].as<uint64_t>()};
    } catch (const pqxx::sql_error&) {
      return {};
    }
  }

  // Waits for a leader with an epoch above `above`; returns it or an empty id.
  Leader WaitAbove(uint64_t above, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      Leader l = Current();
      if (!l.id.empty() && l.epoch > above) return l;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return {};
  }

  // Ends the leader with `how`, times the hand-over, and brings the old
  // replica back as a follower. Returns seconds, or a negative value on failure.
  double Trial(const std::string& how) {
    Leader before = WaitAbove(0, absl::Seconds(20));
    if (before.id.empty()) return -1;
    pid_t pid = pids_.at(before.id);
    int sig = how == "kill9" ? SIGKILL : how == "sigstop" ? SIGSTOP : SIGTERM;
    const absl::Time t0 = absl::Now();
    kill(pid, sig);
    Leader after = WaitAbove(before.epoch, absl::Seconds(30));
    const double took = absl::ToDoubleSeconds(absl::Now() - t0);
    if (after.id.empty() || after.id == before.id) return -1;
    if (sig == SIGSTOP) kill(pid, SIGCONT);
    if (sig != SIGSTOP) {
      (void)WaitForExit(pid, absl::Seconds(20));
      pids_.erase(before.id);
      if (!Start(before.id)) return -1;
    }
    // Let the old replica settle as a follower before the next trial.
    absl::SleepFor(absl::Milliseconds(sig == SIGSTOP ? 3000 : 500));
    return took;
  }

 private:
  std::string url_;
  pqxx::connection conn_;
  std::string dir_;
  std::map<std::string, pid_t> pids_;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int Main(int argc, char** argv) {
  int trials = 10;
  if (argc > 1 && (!absl::SimpleAtoi(argv[1], &trials) || trials < 1)) {
    std::fprintf(stderr, "usage: failover_bench [TRIALS>=1]\n");
    return 2;
  }
  auto cluster = PostgresCluster::Start();
  if (!cluster.ok()) {
    std::fprintf(stderr, "failover_bench: %s\n", std::string(cluster.status().message()).c_str());
    return 1;
  }
  Bench bench((*cluster)->ConnectionString());
  for (const char* id : {"r1", "r2", "r3"}) {
    if (!bench.Start(id)) return 1;
  }
  std::printf("failover_trials=%d\n", trials);
  for (const std::string how : {"kill9", "sigstop", "graceful"}) {
    std::vector<double> times;
    for (int i = 0; i < trials; ++i) {
      double t = bench.Trial(how);
      if (t < 0) {
        std::fprintf(stderr, "failover_bench: %s trial %d found no new leader\n", how.c_str(), i + 1);
        return 1;
      }
      times.push_back(t);
    }
    std::printf("failover_%s_median_s=%.3f\n", how.c_str(), Median(times));
    std::printf("failover_%s_max_s=%.3f\n", how.c_str(), *std::max_element(times.begin(), times.end()));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace hoist::testing

int main(int argc, char** argv) { return hoist::testing::Main(argc, argv); }

// Scale of one controller: N simulated hosts (tests/sim: real agent sessions
// with their own certificates, on in-memory Docker Engines that take
// realistic times) against two real hoistd replicas on a throw-away Postgres,
// over mTLS. For each N given, prints key=value lines:
//
//   scale_<N>_first_connect_s    launching the hosts (spread over N*5 ms) to all N in session
//   scale_<N>_connect_s          both controllers killed, started again 5 s later: to all N in
//                                session with the leader (its /health)
//   scale_<N>_first_deploy_s     `hoist upgrade 1.0.0` (pull, start, health on every host)
//   scale_<N>_plan_ms            `hoist plan 1.1.0`, CLI wall time
//   scale_<N>_rollout_wall_s     `hoist upgrade 1.1.0 --yes`, CLI wall time
//   scale_<N>_critical_path_s    the same rollout's critical path: per phase and
//                                batch, the slowest host's chain of steps as the
//                                agents timed them, summed
//   scale_<N>_rollout_over_critical  the ratio of the two
//   scale_<N>_batches            how many batches (each a barrier: the next starts when all
//                                its steps are recorded) that rollout ran
//   scale_<N>_batch_overhead_ms  per batch, on average: its span in the controller (first
//                                start to last recorded finish) less its slowest host's
//                                chain as the agents timed it
//   scale_<N>_batch_gap_ms       per batch, on average: from the last finish recorded to the
//                                next batch's start
//   scale_<N>_push_ack_p50_ms, _p99_ms, _max_ms   one pull step pushed to every host
//                                at once: controller time from dispatch to the
//                                stored result, less the agent's own time
//   scale_<N>_idle_cpu_pct       leader CPU (% of one core) over 10 s of idle heartbeats
//   scale_<N>_rss_mb             leader resident memory then
//   scale_<N>_idle_pg_commits_per_s, _idle_pg_rows_written_per_s   what those 10 s cost Postgres
//   scale_<N>_reconnect_s        kill -9 of the leader to all N in session with the other replica
//
//   scale_bench 100 300 1000

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "hoist/v1/agent.pb.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/sim/scale_stack.h"

namespace hoist::testing {
namespace {

void Print(int n, const std::string& key, double value) { std::printf("scale_%d_%s=%.3f\n", n, key.c_str(), value); std::fflush(stdout); }
void Error(int n, const std::string& what) { std::printf("scale_%d_error=%s\n", n, what.c_str()); std::fflush(stdout); }

// utime + stime of pid, in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> f = absl::StrSplit(text.substr(close + 2), ' ');
  // Fields after the command: state is f[0]; utime and stime are fields 14 and 15 of the line.
  double utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime)) return -1;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double RssMb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    double kb = 0;
    if (line.rfind("VmRSS:", 0) == 0 && absl::SimpleAtod(absl::StripSuffix(absl::StripAsciiWhitespace(line.substr(6)), " kB"), &kb)) {
      return kb / 1024;
    }
  }
  return -1;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double Seconds(const google::protobuf::Timestamp& t) { return static_cast<double>(t.seconds()) + t.nanos() / 1e9; }

// Runs a hoist command; false (and says why) when it fails.
bool Hoist(HoistFleet& fleet, int n, std::vector<std::string> args, double* seconds = nullptr,
           absl::Duration timeout = absl::Minutes(20)) {
  const std::string what = absl::StrJoin(args, " ");
  const absl::Time t0 = absl::Now();
  auto r = fleet.Hoist(std::move(args), timeout);
  if (seconds != nullptr) *seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  if (!r.ok() || r->exit_code != 0) {
    std::string out = r.ok() ? r->stdout_text + r->stderr_text : std::string(r.status().message());
    if (out.size() > 600) out = out.substr(out.size() - 600);
    Error(n, absl::StrCat("hoist ", what, ": ", absl::StrReplaceAll(out, {{"\n", " | "}})));
    return false;
  }
  return true;
}

struct StepRow {
  std::string kind, agent;
  int phase = 0, batch = 0;
  double started = 0, finished = 0;  // in the controller (epoch seconds)
  double controller_s = 0;  // dispatch to stored result
  double agent_s = 0;       // the agent's own start to end
};

std::vector<StepRow> StepsOf(const std::string& url, const std::string& to_version) {
  std::vector<StepRow> out;
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto rows = tx.exec_params(
      "SELECT s.kind, s.agent_id, s.phase, s.batch, extract(epoch FROM s.finished_at - s.started_at), s.result,"
      " extract(epoch FROM s.started_at), extract(epoch FROM s.finished_at)"
      " FROM rollout_steps s JOIN rollouts r ON r.id = s.rollout_id"
      " WHERE r.to_version = $1 AND s.state = 'succeeded' AND s.result IS NOT NULL",
      to_version);
  for (const auto& row : rows) {
    StepRow s;
    s.kind = row[0].as<std::string>();
    s.agent = row[1].as<std::string>();
    s.phase = row[2].as<int>();
    s.batch = row[3].as<int>();
    s.controller_s = row[4].as<double>();
    s.started = row[6].as<double>();
    s.finished = row[7].as<double>();
    hoist::v1::StepResult result;
    pqxx::binarystring bytes(row[5]);
    if (!result.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) continue;
    s.agent_s = Seconds(result.finished_at()) - Seconds(result.started_at());
    out.push_back(std::move(s));
  }
  return out;
}

// Batches in order, with the averages of their overhead and of the gaps
// between them (see the header).
struct BatchCosts {
  int batches = 0;
  double overhead_ms = 0, gap_ms = 0;
};
BatchCosts CostsOf(const std::vector<StepRow>& steps) {
  struct Span {
    double first = 1e300, last = 0;
    std::map<std::string, double> chain;
  };
  std::map<std::pair<int, int>, Span> spans;
  for (const StepRow& s : steps) {
    Span& b = spans[{s.phase, s.batch}];
    b.first = std::min(b.first, s.started);
    b.last = std::max(b.last, s.finished);
    b.chain[s.agent] += s.agent_s;
  }
  BatchCosts c;
  c.batches = static_cast<int>(spans.size());
  double prev_last = -1;
  int gaps = 0;
  for (const auto& [key, b] : spans) {
    double slowest = 0;
    for (const auto& [agent, t] : b.chain) slowest = std::max(slowest, t);
    c.overhead_ms += (b.last - b.first - slowest) * 1000;
    if (prev_last >= 0) c.gap_ms += (b.first - prev_last) * 1000, ++gaps;
    prev_last = b.last;
  }
  if (c.batches > 0) c.overhead_ms /= c.batches;
  if (gaps > 0) c.gap_ms /= gaps;
  return c;
}

// Per phase and batch, the slowest host's chain of steps (as the agents
// timed them), summed: the least a rollout of this plan can take.
double CriticalPath(const std::vector<StepRow>& steps) {
  std::map<std::tuple<int, int, std::string>, double> chain;
  for (const StepRow& s : steps) chain[{s.phase, s.batch, s.agent}] += s.agent_s;
  std::map<std::pair<int, int>, double> slowest;
  for (const auto& [key, t] : chain) {
    double& m = slowest[{std::get<0>(key), std::get<1>(key)}];
    m = std::max(m, t);
  }
  double total = 0;
  for (const auto& [key, t] : slowest) total += t;
  return total;
}

std::pair<double, double> PgWrites(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto row = tx.exec1(
      "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = 'hoist'");
  return {row[0].as<double>(), row[1].as<double>()};
}

// Waits until the leader (or replica `only`) has all n hosts in session;
// prints when there was a leader, and half and nine tenths of the hosts, as
// <key>_leader_s, <key>_half_s and <key>_p90_s.
bool WaitForSessions(HoistFleet& fleet, int n, absl::Time since, const std::string& key, int only = -1) {
  const absl::Time deadline = since + absl::Minutes(3);
  int sessions = 0;
  bool leader = false, half = false, p90 = false;
  while (absl::Now() < deadline) {
    const int replica = only >= 0 ? only : fleet.Leader();
    sessions = replica >= 0 ? fleet.SessionsAt(replica) : 0;
    const double at = absl::ToDoubleSeconds(absl::Now() - since);
    // With `only`, the time that replica took over; without, the time any did.
    if (!leader && replica >= 0 && (only < 0 || fleet.Leader() == only)) Print(n, key + "_leader_s", at), leader = true;
    if (!half && sessions * 2 >= n) Print(n, key + "_half_s", at), half = true;
    if (!p90 && sessions * 10 >= n * 9) Print(n, key + "_p90_s", at), p90 = true;
    if (sessions == n) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  Error(n, absl::StrCat("only ", sessions, " of ", n, " hosts in session within 3 minutes"));
  return false;
}

void RunSize(int n) {
  auto pg = PostgresCluster::Start();
  if (!pg.ok()) return Error(n, absl::StrCat("postgres: ", pg.status().message()));
  auto started = HoistFleet::Start(nullptr, pg->get(), ScaleFleet(n));
  if (!started.ok()) return Error(n, absl::StrCat("fleet: ", started.status().message()));
  HoistFleet& fleet = **started;
  fleet.set_dump_logs_at_exit(true);
  Print(n, "first_connect_s", absl::ToDoubleSeconds(fleet.agents_connected_in()));
  // Every host back in session after both controllers start again (the
  // hosts meanwhile in their reconnect backoff, as after an outage).
  for (const char* name : {"hoistd-1", "hoistd-2"}) {
    if (auto s = fleet.Signal(name, SIGKILL); !s.ok()) return Error(n, std::string(s.message()));
  }
  absl::SleepFor(absl::Seconds(5));
  const absl::Time c0 = absl::Now();
  for (const char* name : {"hoistd-1", "hoistd-2"}) {
    if (auto s = fleet.Restart(name); !s.ok()) return Error(n, std::string(s.message()));
  }
  if (!WaitForSessions(fleet, n, c0, "connect")) return;
  Print(n, "connect_s", absl::ToDoubleSeconds(absl::Now() - c0));
  // Let the agents' rows settle (the CLI waits for them too).
  for (absl::Time until = absl::Now() + absl::Minutes(3); absl::Now() < until;) {
    auto c = fleet.ConnectedAgents();
    if (c.ok() && *c == n) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  const std::string url = (*pg)->ConnectionString("hoist");

  if (!Hoist(fleet, n, {"apply", fleet.WriteFile("stack.yaml", ScaleStack("scale", n, std::max(1, n / 10)))})) return;
  for (const char* v : {"1.0.0", "1.1.0"}) {
    if (!Hoist(fleet, n, {"release", "create", fleet.WriteFile(absl::StrCat("release-", v, ".yaml"), ScaleRelease("scale", v))})) {
      return;
    }
  }
  double first = 0;
  if (!Hoist(fleet, n, {"upgrade", "1.0.0", "--yes"}, &first)) return;
  Print(n, "first_deploy_s", first);

  double plan = 0;
  if (!Hoist(fleet, n, {"plan", "1.1.0"}, &plan)) return;
  Print(n, "plan_ms", plan * 1000);
  double wall = 0;
  if (!Hoist(fleet, n, {"upgrade", "1.1.0", "--yes"}, &wall)) return;
  Print(n, "rollout_wall_s", wall);
  std::vector<StepRow> steps = StepsOf(url, "1.1.0");
  const double critical = CriticalPath(steps);
  Print(n, "critical_path_s", critical);
  Print(n, "rollout_over_critical", critical > 0 ? wall / critical : -1);
  const BatchCosts costs = CostsOf(steps);
  Print(n, "batches", costs.batches);
  Print(n, "batch_overhead_ms", costs.overhead_ms);
  Print(n, "batch_gap_ms", costs.gap_ms);
  std::vector<double> push_ack;
  for (const StepRow& s : steps) {
    if (s.kind == "pull_image") push_ack.push_back((s.controller_s - s.agent_s) * 1000);
  }
  Print(n, "push_ack_samples", static_cast<double>(push_ack.size()));
  Print(n, "push_ack_p50_ms", Percentile(push_ack, 0.5));
  Print(n, "push_ack_p99_ms", Percentile(push_ack, 0.99));
  Print(n, "push_ack_max_ms", Percentile(push_ack, 1.0));

  // Idle: heartbeats and inventories only.
  const int leader = fleet.Leader();
  if (leader < 0) return Error(n, "no leader");
  const pid_t pid = fleet.Pid(absl::StrCat("hoistd-", leader + 1));
  absl::SleepFor(absl::Seconds(5));
  const double cpu0 = CpuSeconds(pid);
  const auto pg0 = PgWrites(url);
  const absl::Time t0 = absl::Now();
  absl::SleepFor(absl::Seconds(10));
  const double cpu1 = CpuSeconds(pid);
  const auto pg1 = PgWrites(url);
  const double idle = absl::ToDoubleSeconds(absl::Now() - t0);
  Print(n, "idle_cpu_pct", 100 * (cpu1 - cpu0) / idle);
  Print(n, "rss_mb", RssMb(pid));
  Print(n, "idle_pg_commits_per_s", (pg1.first - pg0.first) / idle);
  Print(n, "idle_pg_rows_written_per_s", (pg1.second - pg0.second) / idle);

  // Failover: every host back in session with the other replica.
  const int other = 1 - leader;
  const absl::Time k0 = absl::Now();
  if (auto s = fleet.Signal(absl::StrCat("hoistd-", leader + 1), SIGKILL); !s.ok()) return Error(n, std::string(s.message()));
  if (!WaitForSessions(fleet, n, k0, "reconnect", other)) return;
  Print(n, "reconnect_s", absl::ToDoubleSeconds(absl::Now() - k0));
  fleet.set_dump_logs_at_exit(false);
}

}  // namespace
}  // namespace hoist::testing

int main(int argc, char** argv) {
  std::vector<int> sizes;
  for (int i = 1; i < argc; ++i) {
    int n = 0;
    if (!absl::SimpleAtoi(argv[i], &n) || n < 1 || n > 9999) {
      std::fprintf(stderr, "scale_bench: \"%s\" is not a number of hosts (1 to 9999)\n", argv[i]);
      return 2;
    }
    sizes.push_back(n);
  }
  if (sizes.empty()) sizes = {100, 300, 1000};
  for (int n : sizes) hoist::testing::RunSize(n);
  return 0;
}

// The fault matrix: the reference rollout (the rollout e2e stack's upgrade
// 1.0.0 -> 1.1.0 over three separate Docker hosts: a database with a
// migration and a backup, api, workers, scheduler, web behind a proxy on a
// host of its own, two hoistd replicas) hit once by one fault right after
// its k-th step finished, for each fault kind and a spread of k:
//
//   leader_kill9   the leading hoistd gets SIGKILL; started again 3 s later
//   leader_freeze  the leader's host is frozen (SIGSTOP) for 6 s
//   leader_cut     the leader's host is cut off the network for 6 s
//   host_crash     host-1 (the database, an api, workers, the scheduler)
//                  loses power: every process on it dies at once; its dockerd
//                  and agent start again 3 s later on the same disk
//   pg_restart     the controllers' Postgres restarts (pg_ctl restart -m fast)
//
// Each case then waits for the rollout to end and checks what Hoist
// promises: it SUCCEEDED, or it FAILED/CANCELLED with the reason recorded and
// the deploy lock released (stopped safely); anything else (still running
// after 4 minutes, a lock left behind, a failure without a reason) is unsafe.
// No step's effect happened twice (no container created twice for one step,
// no job started twice: from the agents' logs, which survive restarts); the
// 200 rows written to the database before the upgrade are all there after
// it; and the proxy, on a host no fault hits, answered every request of a
// load of 100 requests/s during the case.
//
// Prints one line per case, then chaos_cases, chaos_completed,
// chaos_stopped_safely, chaos_unsafe, chaos_steps_twice, chaos_rows_lost and
// chaos_proxy_failed. Root only (separate hosts).
//
//   tests/bench/chaos.sh [--per-fault N] [--faults a,b]   (see chaos.sh)

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "shared/subprocess.h"
#include "tests/bench/loadgen.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/hoist_fleet.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/reference_stack.h"
#include "tests/fixtures/test_hosts.h"

namespace hoist::testing {
namespace {

constexpr char kStack[] = R"(deployment: DEPLOYMENT
network: DEPLOYMENT
hosts:
  - {id: host-1, address: ADDR1, labels: {tier: app}}
  - {id: host-2, address: ADDR2, labels: {tier: app}}
  - {id: host-3, address: ADDR3, labels: {tier: edge}}
services:
  db:
    role: database
    image: DB_IMAGE
    placement:
      hosts: [host-1]
    health:
      command: [/usr/lib/postgresql/15/bin/psql, -At, -c, select 1]
      interval: 200ms
      deadline: 60s
    stop_timeout: 10s
  api:
    role: api
    repository: REGISTRY/hoist-test/api
    replicas: 2
    placement:
      labels: {tier: app}
      distinct_hosts: true
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      timeout: 1s
      deadline: 30s
    stop_timeout: 2s
    migration:
      command: [exec, /usr/lib/postgresql/15/bin/psql, -h, db, -v, ON_ERROR_STOP=1, --single-transaction, -f, /migrations.sql]
      timeout: 1m
  worker:
    role: worker
    repository: REGISTRY/hoist-test/worker
    replicas: 3
    placement:
      labels: {tier: app}
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      deadline: 30s
    stop_timeout: 2s
    rolling:
      max_parallel: 1
  scheduler:
    role: scheduler
    repository: REGISTRY/hoist-test/scheduler
    placement:
      hosts: [host-1]
    health:
      http: {path: /health, port: 8080}
      interval: 200ms
      deadline: 30s
    stop_timeout: 2s
  web:
    role: web
    repository: REGISTRY/hoist-test/web
    placement:
      hosts: [host-2]
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      deadline: 30s
    stop_timeout: 2s
  proxy:
    role: proxy
    image: PROXY_IMAGE
    placement:
      hosts: [host-3]
    ports: ["ADDR3:18000:8080"]
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
    drain_timeout: 2s
    health:
      tcp: {port: 8080}
      interval: 200ms
      deadline: 30s
    stop_timeout: 2s
backup:
  postgres: {service: db, database: postgres, user: app}
)";

constexpr int kRows = 200;
const char* const kPsql = "/usr/lib/postgresql/15/bin/psql";

const std::vector<std::string> kFaults = {"leader_kill9", "leader_freeze", "leader_cut", "host_crash", "pg_restart"};

struct Outcome {
  std::string fault;
  int after_step = 0;
  std::string step_name;  // the k-th step's id (its phase and kind)
  std::string state;      // succeeded, failed, cancelled, or what it was stuck in
  bool safe = false;
  std::string why;  // for a stop or an unsafe end
  int steps_twice = 0;
  int rows_lost = 0;
  int64_t proxy_failed = 0;
  double seconds = 0;
  // Leader faults: from the fault to the first step an agent began for the
  // new leader (a higher epoch), and to every agent in session with it.
  double dispatch_s = -1;
  double agents_s = -1;
};

// The time at the start of a log line of Hoist's ("2026-11-30T05:32:52.163 ..."),
// in the local time zone the processes log in.
std::optional<absl::Time> LineTime(const std::string& line) {
  if (line.size() < 23) return std::nullopt;
  absl::Time t;
  std::string err;
  if (!absl::ParseTime("%Y-%m-%dT%H:%M:%E3S", line.substr(0, 23), absl::LocalTimeZone(), &t, &err)) return std::nullopt;
  return t;
}

// Seconds from `after` to the first line of `path` at or after it that
// matches `pattern` and, when `min_epoch` > 0, names an epoch of at least it
// ("epoch N"); -1 when there is none.
double FirstAfter(const std::string& path, absl::Time after, const std::regex& pattern, uint64_t min_epoch = 0) {
  std::ifstream in(path);
  std::string line;
  std::smatch m;
  static const std::regex epoch_re("epoch ([0-9]+)");
  while (std::getline(in, line)) {
    auto t = LineTime(line);
    if (!t.has_value() || *t < after || !std::regex_search(line, pattern)) continue;
    if (min_epoch > 0) {
      uint64_t e = 0;
      if (!std::regex_search(line, m, epoch_re) || !absl::SimpleAtoi(m[1].str(), &e) || e < min_epoch) continue;
    }
    return absl::ToDoubleSeconds(*t - after);
  }
  return -1;
}

std::string Trim(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

class Chaos {
 public:
  absl::Status SetUp() {
    auto hosts = TestHosts::Start({.nodes = {"reg:docker", "pg", "ctl-1", "ctl-2", "host-1:docker", "host-2:docker",
                                             "host-3:docker"},
                                   .registry_node = "reg"});
    if (!hosts.ok()) return hosts.status();
    hosts_ = std::move(*hosts);
    auto env = DockerEnv::Start({.docker_host = hosts_->node("reg").docker_host, .registry = hosts_->registry()});
    if (!env.ok()) return env.status();
    env_ = std::move(*env);
    if (absl::Status s = DockerEnv::PostgresImagePrerequisites(); !s.ok()) return s;
    auto db = env_->BuildPostgresImage("app");
    if (!db.ok()) return db.status();
    auto proxy = env_->BuildProxyImage();
    if (!proxy.ok()) return proxy.status();
    for (const char* v : {"1.0.0", "1.1.0"}) {
      for (const char* service : {"api", "worker", "scheduler", "web"}) {
        absl::StatusOr<std::string> built =
            std::string(service) == "api"
                ? env_->BuildTestImageOn(*db, service, v, {},
                                         {{"/migrations.sql", std::string(v) == "1.0.0" ? kMigration100 : kMigration110}})
                : env_->BuildTestImage(service, v);
        if (!built.ok()) return built.status();
      }
    }
    values_ = {{"REGISTRY", env_->registry()},
               {"DB_IMAGE", *db},
               {"PROXY_IMAGE", *proxy},
               {"ADDR1", hosts_->node("host-1").address},
               {"ADDR2", hosts_->node("host-2").address},
               {"ADDR3", hosts_->node("host-3").address}};
    return absl::OkStatus();
  }

  void TearDown() {
    env_.reset();
    if (hosts_ != nullptr) {
      if (absl::Status s = hosts_->Stop(); !s.ok()) std::cerr << "chaos: teardown: " << s << "\n";
    }
  }

  // One case: deploy 1.0.0, write rows, upgrade to 1.1.0 with `fault` after
  // step `k` (0: no fault). `steps` receives the upgrade's step ids in order.
  Outcome Run(int index, const std::string& fault, int k, std::vector<std::string>* steps);

 private:
  absl::StatusOr<std::string> Psql(const std::string& deployment, const std::string& sql) {
    auto name = DockerOn("host-1", {"ps", "-q", "--filter", absl::StrCat("label=hoist.deployment=", deployment),
                                    "--filter", "label=hoist.service=db"});
    if (!name.ok()) return name.status();
    const std::string id = Trim(*name);
    if (id.empty() || id.find('\n') != std::string::npos) return absl::NotFoundError("no single db container");
    return DockerOn("host-1", {"exec", id, kPsql, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql});
  }

  absl::StatusOr<std::string> DockerOn(const std::string& host, std::vector<std::string> args) {
    args.insert(args.begin(), {"docker", "-H", hosts_->node(host).docker_host});
    auto r = RunCommand(args, {.timeout = absl::Minutes(2)});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return absl::InternalError(r->stderr_text);
    return r->stdout_text;
  }

  // Steps whose effect happened twice, from the agents' logs: a container
  // created twice for one step, or a job started twice.
  int StepsTwice(const std::string& dir, const std::string& rollout_id) {
    std::map<std::string, int> effects;
    const std::regex effect("step (" + rollout_id + "/[^ ]+): (created|started job) ");
    for (const char* host : {"host-1", "host-2", "host-3"}) {
      std::ifstream in(dir + "/" + host + ".log");
      std::string line;
      std::smatch m;
      while (std::getline(in, line)) {
        if (std::regex_search(line, m, effect)) ++effects[m[1].str()];
      }
    }
    int twice = 0;
    for (const auto& [step, n] : effects) {
      if (n > 1) {
        std::cerr << "chaos: step " << step << " took effect " << n << " times\n";
        ++twice;
      }
    }
    return twice;
  }

  std::unique_ptr<TestHosts> hosts_;
  std::unique_ptr<DockerEnv> env_;
  std::map<std::string, std::string> values_;
};

Outcome Chaos::Run(int index, const std::string& fault, int k, std::vector<std::string>* steps) {
  Outcome out{.fault = fault, .after_step = k};
  const absl::Time begin = absl::Now();
  const TestNode& pg_node = hosts_->node("pg");
  auto pg = PostgresCluster::Start({.netns = pg_node.netns, .listen_address = pg_node.address});
  if (!pg.ok()) {
    out.why = absl::StrCat("setup: ", pg.status().message());
    return out;
  }
  const std::string deployment = absl::StrCat("chaos-", index);
  auto fleet = HoistFleet::Start(env_.get(), pg->get(),
                                 {.deployment = deployment,
                                  .agents = {{"host-1", "tier=app"}, {"host-2", "tier=app"}, {"host-3", "tier=edge"}},
                                  .controllers = 2,
                                  .hosts = hosts_.get()});
  if (!fleet.ok()) {
    out.why = absl::StrCat("setup: ", fleet.status().message());
    return out;
  }
  HoistFleet& f = **fleet;
  auto values = values_;
  values["DEPLOYMENT"] = deployment;
  auto setup = [&]() -> absl::Status {
    auto applied = f.Hoist({"apply", f.WriteFile("stack.yaml", FillTemplate(kStack, values))});
    if (!applied.ok() || applied->exit_code != 0) return absl::InternalError("apply failed");
    for (const char* v : {"1.0.0", "1.1.0"}) {
      values["VERSION"] = v;
      auto r = f.Hoist({"release", "create", f.WriteFile(absl::StrCat("release-", v, ".yaml"), FillTemplate(kReferenceRelease, values))});
      if (!r.ok() || r->exit_code != 0) return absl::InternalError("release create failed");
    }
    auto r = f.Hoist({"upgrade", "1.0.0", "--yes"}, absl::Minutes(5));
    if (!r.ok() || r->exit_code != 0) {
      return absl::InternalError(absl::StrCat("deploy 1.0.0: ", r.ok() ? r->stderr_text : r.status().message()));
    }
    auto rows = Psql(deployment, absl::StrCat("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1000, ",
                                              999 + kRows, ") g"));
    if (!rows.ok()) return rows.status();
    return absl::OkStatus();
  };
  if (absl::Status s = setup(); !s.ok()) {
    out.why = absl::StrCat("setup: ", s.message());
    f.set_dump_logs_at_exit(true);
    return out;
  }
  auto query = [&](const std::string& sql) -> std::vector<std::vector<std::string>> {
    std::vector<std::vector<std::string>> rows;
    try {
      pqxx::connection c((*pg)->ConnectionString("hoist"));
      pqxx::work tx(c);
      for (const auto& row : tx.exec(sql)) {
        std::vector<std::string> cells;
        for (const auto& field : row) cells.push_back(field.is_null() ? "" : field.c_str());
        rows.push_back(std::move(cells));
      }
    } catch (const std::exception&) {
      // Postgres restarting: the caller asks again.
    }
    return rows;
  };

  bench::LoadGenerator load({.host = hosts_->node("host-3").address, .port = 18000, .connections = 4,
                             .rate_per_second = 100});
  load.Start();
  // The CLI starts the rollout and watches it; the watch may hang on a
  // frozen leader, so it is cut after 15 s (the rollout goes on: Postgres
  // tells how it ends).
  std::thread upgrade([&] { (void)f.Hoist({"upgrade", "1.1.0", "--yes"}, absl::Seconds(15)); });
  // The rollout's id once it exists.
  std::string rollout_id;
  const absl::Time limit = absl::Now() + absl::Minutes(1);
  while (rollout_id.empty() && absl::Now() < limit) {
    auto rows = query(absl::StrCat("SELECT id FROM rollouts WHERE deployment = '", deployment,
                                   "' AND to_version = '1.1.0' ORDER BY created_at DESC LIMIT 1"));
    if (!rows.empty()) rollout_id = rows[0][0];
    if (rollout_id.empty()) absl::SleepFor(absl::Milliseconds(20));
  }
  auto finished = [&] {
    auto rows = query(absl::StrCat("SELECT count(*) FROM rollout_steps WHERE rollout_id = '", rollout_id,
                                   "' AND state IN ('succeeded', 'failed', 'skipped')"));
    int n = -1;
    if (!rows.empty()) (void)absl::SimpleAtoi(rows[0][0], &n);
    return n;
  };
  std::string leader_node;
  uint64_t old_epoch = 0;
  int old_leader = -1;
  absl::Time fault_at = absl::InfinitePast();
  if (!rollout_id.empty() && k > 0) {
    while (finished() < k && absl::Now() < begin + absl::Minutes(5)) absl::SleepFor(absl::Milliseconds(10));
    auto named = query(absl::StrCat("SELECT step_id FROM rollout_steps WHERE rollout_id = '", rollout_id,
                                    "' ORDER BY seq OFFSET ", k - 1, " LIMIT 1"));
    if (!named.empty()) out.step_name = named[0][0].substr(named[0][0].find('/') + 1);
    const int leader = f.Leader();
    const std::string replica = absl::StrCat("hoistd-", leader + 1);
    auto epoch_rows = query("SELECT epoch FROM hoist_leader WHERE id = 1");
    if (!epoch_rows.empty()) (void)absl::SimpleAtoi(epoch_rows[0][0], &old_epoch);
    old_leader = leader;
    fault_at = absl::Now();
    leader_node = absl::StrCat("ctl-", leader + 1);
    absl::Status injected = absl::OkStatus();
    if (fault == "leader_kill9") {
      injected = f.Signal(replica, SIGKILL);
      absl::SleepFor(absl::Seconds(3));
      if (injected.ok()) injected = f.Restart(replica);
    } else if (fault == "leader_freeze") {
      injected = hosts_->Freeze(leader_node);
      absl::SleepFor(absl::Seconds(6));
      if (injected.ok()) injected = hosts_->Thaw(leader_node);
    } else if (fault == "leader_cut") {
      injected = hosts_->Cut(leader_node);
      absl::SleepFor(absl::Seconds(6));
      if (injected.ok()) injected = hosts_->Heal(leader_node);
    } else if (fault == "host_crash") {
      injected = hosts_->Crash("host-1");
      absl::SleepFor(absl::Seconds(3));
      if (injected.ok()) injected = hosts_->Boot("host-1");
      if (injected.ok()) injected = f.Restart("host-1");
    } else if (fault == "pg_restart") {
      injected = (*pg)->Restart();
    }
    if (!injected.ok()) std::cerr << "chaos: case " << index << ": injecting " << fault << ": " << injected << "\n";
  }
  // The end of the rollout, as Postgres has it.
  std::string state, error;
  const absl::Time end_limit = absl::Now() + absl::Minutes(4);
  while (absl::Now() < end_limit) {
    auto rows = query(absl::StrCat("SELECT state, error FROM rollouts WHERE id = '", rollout_id, "'"));
    if (!rows.empty()) {
      state = rows[0][0];
      error = rows[0][1];
      if (state == "succeeded" || state == "failed" || state == "cancelled") break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  upgrade.join();
  absl::SleepFor(absl::Seconds(1));
  bench::LoadStats stats = load.Stop();
  out.proxy_failed = stats.failed;
  out.state = state.empty() ? "unknown" : state;
  auto locks = query(absl::StrCat("SELECT count(*) FROM deploy_locks WHERE deployment = '", deployment, "'"));
  const bool lock_free = !locks.empty() && locks[0][0] == "0";
  if (state == "succeeded") {
    out.safe = lock_free;
    if (!lock_free) out.why = "succeeded but the deploy lock is still held";
  } else if (state == "failed" || state == "cancelled") {
    auto status = f.Hoist({"status"});
    const std::string first = std::string(absl::StripAsciiWhitespace(error.substr(0, error.find('\n'))));
    const bool explained = !first.empty() && status.ok() && absl::StrContains(status->stdout_text, first.substr(0, 60));
    out.safe = lock_free && explained;
    out.why = absl::StrCat(first.substr(0, 160), lock_free ? "" : " (deploy lock still held)",
                           explained ? "" : " (hoist status does not say why)");
  } else {
    out.why = absl::StrCat("still ", out.state, " 4 minutes after the fault");
  }
  out.steps_twice = StepsTwice(f.dir(), rollout_id);
  if (absl::StartsWith(fault, "leader_") && old_leader >= 0 && old_epoch > 0) {
    // Dispatched by the new leader and acknowledged: an agent began a step
    // of a later epoch.
    const std::regex began("rollout [^ ]+: started");
    for (const char* host : {"host-1", "host-2", "host-3"}) {
      const double d = FirstAfter(f.dir() + "/" + host + ".log", fault_at, began, old_epoch + 1);
      if (d >= 0 && (out.dispatch_s < 0 || d < out.dispatch_s)) out.dispatch_s = d;
    }
    // Every agent in session with the new leader.
    const std::string next_log = absl::StrCat(f.dir(), "/hoistd-", 2 - old_leader, ".log");
    double all = 0;
    for (const char* host : {"host-1", "host-2", "host-3"}) {
      const double d = FirstAfter(next_log, fault_at, std::regex(absl::StrCat("agent ", host, " connected")));
      all = d < 0 || all < 0 ? -1 : std::max(all, d);
    }
    out.agents_s = all;
  }
  auto count = Psql(deployment, "SELECT count(*) FROM items WHERE id >= 1000");
  int have = -1;
  if (count.ok()) (void)absl::SimpleAtoi(Trim(*count), &have);
  out.rows_lost = have < 0 ? kRows : kRows - have;
  if (steps != nullptr) {
    // The steps a rollout runs when nothing fails (not the phase that
    // undoes a failed gate, which is skipped then).
    for (const auto& row : query(absl::StrCat("SELECT step_id FROM rollout_steps WHERE rollout_id = '", rollout_id,
                                              "' AND phase_name <> 'undo-gate' ORDER BY seq"))) {
      steps->push_back(row[0]);
    }
  }
  if (!out.safe || out.steps_twice > 0 || out.rows_lost > 0) f.set_dump_logs_at_exit(true);
  out.seconds = absl::ToDoubleSeconds(absl::Now() - begin);
  return out;
}

int Main(int argc, char** argv) {
  int per_fault = 7;
  std::vector<std::string> faults = kFaults;
  std::vector<int> at_steps;  // --steps: these k instead of the spread
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--per-fault" && i + 1 < argc && absl::SimpleAtoi(argv[i + 1], &per_fault) && per_fault > 0) {
      ++i;
    } else if (a == "--steps" && i + 1 < argc) {
      for (absl::string_view k : absl::StrSplit(argv[++i], ',', absl::SkipEmpty())) {
        int v = 0;
        if (!absl::SimpleAtoi(k, &v) || v < 1) {
          std::cerr << "chaos: --steps takes step numbers from 1, comma-separated; not \"" << k << "\"\n";
          return 2;
        }
        at_steps.push_back(v);
      }
    } else if (a == "--faults" && i + 1 < argc) {
      faults = absl::StrSplit(argv[++i], ',', absl::SkipEmpty());
      for (const std::string& f : faults) {
        if (std::find(kFaults.begin(), kFaults.end(), f) == kFaults.end()) {
          std::cerr << "chaos: unknown fault \"" << f << "\"; known: " << absl::StrJoin(kFaults, ", ") << "\n";
          return 2;
        }
      }
    } else {
      std::cerr << "usage: chaos_bench [--per-fault N (7)] [--steps K,K...] [--faults " << absl::StrJoin(kFaults, ",")
                << "]\n";
      return 2;
    }
  }
  if (absl::Status s = TestHosts::Available(); !s.ok()) {
    std::cerr << "chaos: separate hosts unavailable here: " << s << "\n";
    return 2;
  }
  Chaos chaos;
  if (absl::Status s = chaos.SetUp(); !s.ok()) {
    std::cerr << "chaos: setup: " << s << "\n";
    chaos.TearDown();
    return 1;
  }
  std::vector<Outcome> outcomes;
  auto report = [&](const Outcome& o) {
    std::string extra;
    if (!o.why.empty()) extra += absl::StrCat(": ", o.why);
    if (o.steps_twice > 0) extra += absl::StrCat("; steps twice ", o.steps_twice);
    if (o.rows_lost > 0) extra += absl::StrCat("; rows lost ", o.rows_lost);
    if (o.proxy_failed > 0) extra += absl::StrCat("; proxy failed ", o.proxy_failed);
    if (o.dispatch_s >= 0) extra += absl::StrFormat("; new leader dispatched after %.2f s", o.dispatch_s);
    if (o.agents_s >= 0) extra += absl::StrFormat(", every agent with it after %.2f s", o.agents_s);
    std::printf("case %zu: %-13s after step %2d %-44s -> %-9s %s%s (%.0f s)\n", outcomes.size(), o.fault.c_str(),
                o.after_step, o.step_name.c_str(), o.state.c_str(), o.safe ? "safe" : "UNSAFE", extra.c_str(),
                o.seconds);
    std::fflush(stdout);
  };
  // The reference run, without a fault: how many steps the upgrade has.
  std::vector<std::string> steps;
  outcomes.push_back(chaos.Run(0, "none", 0, &steps));
  report(outcomes.back());
  const int n = static_cast<int>(steps.size());
  if (n == 0) {
    std::cerr << "chaos: the reference upgrade recorded no steps: " << outcomes.back().why << "\n";
    chaos.TearDown();
    return 1;
  }
  // The k of each fault: first the first step of every phase, the phases
  // dealt round-robin over the faults (so that one run covers every phase),
  // then steps spread over the whole rollout, each fault's spread shifted,
  // up to per_fault each.
  std::vector<std::vector<int>> ks(faults.size());
  if (at_steps.empty()) {
    std::vector<int> phase_starts;
    for (int i = 0; i < n; ++i) {
      if (i == 0 || steps[i].substr(steps[i].find('/') + 1, 3) != steps[i - 1].substr(steps[i - 1].find('/') + 1, 3)) {
        phase_starts.push_back(std::min(i + 1, n - 1));
      }
    }
    for (size_t p = 0; p < phase_starts.size(); ++p) ks[p % faults.size()].push_back(phase_starts[p]);
    for (size_t fi = 0; fi < faults.size(); ++fi) {
      for (int i = 0; static_cast<int>(ks[fi].size()) < per_fault && i < 4 * per_fault; ++i) {
        const double at = (i + (fi + 1.0) / (faults.size() + 1.0)) * n / per_fault;
        const int k = std::clamp(static_cast<int>(at), 1, n - 1);
        if (std::find(ks[fi].begin(), ks[fi].end(), k) == ks[fi].end()) ks[fi].push_back(k);
      }
      std::sort(ks[fi].begin(), ks[fi].end());
    }
  } else {
    for (auto& k : ks) {
      for (int at : at_steps) k.push_back(std::min(at, n - 1));
    }
  }
  int index = 1;
  for (size_t fi = 0; fi < faults.size(); ++fi) {
    for (int k : ks[fi]) {
      outcomes.push_back(chaos.Run(index++, faults[fi], k, nullptr));
      report(outcomes.back());
    }
  }
  std::set<std::string> hit;
  for (const Outcome& o : outcomes) {
    if (!o.step_name.empty()) hit.insert(o.step_name.substr(0, 3));
  }
  std::set<std::string> phases;
  for (const std::string& st : steps) phases.insert(st.substr(st.find('/') + 1, 3));
  std::printf("chaos_phases=%zu\n", phases.size());
  std::printf("chaos_phases_hit=%zu\n", hit.size());
  chaos.TearDown();
  int completed = 0, stopped = 0, unsafe = 0, twice = 0, rows_lost = 0;
  int64_t proxy_failed = 0;
  for (const Outcome& o : outcomes) {
    if (!o.safe) {
      ++unsafe;
    } else if (o.state == "succeeded") {
      ++completed;
    } else {
      ++stopped;
    }
    twice += o.steps_twice;
    rows_lost += o.rows_lost;
    proxy_failed += o.proxy_failed;
  }
  // Failover as users feel it, per leader fault: the medians and maxima.
  const std::map<std::string, std::string> failover_names = {
      {"leader_kill9", "kill9"}, {"leader_freeze", "freeze"}, {"leader_cut", "partition"}};
  std::vector<double> reconnected;
  for (const auto& [fault, name] : failover_names) {
    std::vector<double> d;
    for (const Outcome& o : outcomes) {
      if (o.fault != fault) continue;
      if (o.dispatch_s >= 0) d.push_back(o.dispatch_s);
      if (o.agents_s >= 0) reconnected.push_back(o.agents_s);
    }
    if (d.empty()) continue;
    std::sort(d.begin(), d.end());
    std::printf("failover_dispatch_%s_median_s=%.2f\n", name.c_str(), d[d.size() / 2]);
    std::printf("failover_dispatch_%s_max_s=%.2f\n", name.c_str(), d.back());
  }
  if (!reconnected.empty()) {
    std::sort(reconnected.begin(), reconnected.end());
    std::printf("failover_agents_reconnected_median_s=%.2f\n", reconnected[reconnected.size() / 2]);
  }
  std::printf("chaos_reference_steps=%d\n", n);
  std::printf("chaos_cases=%zu\n", outcomes.size());
  std::printf("chaos_completed=%d\n", completed);
  std::printf("chaos_stopped_safely=%d\n", stopped);
  std::printf("chaos_unsafe=%d\n", unsafe);
  std::printf("chaos_steps_twice=%d\n", twice);
  std::printf("chaos_rows_lost=%d\n", rows_lost);
  std::printf("chaos_proxy_failed=%lld\n", static_cast<long long>(proxy_failed));
  return unsafe == 0 && twice == 0 && rows_lost == 0 ? 0 : 1;
}

}  // namespace
}  // namespace hoist::testing

int main(int argc, char** argv) { return hoist::testing::Main(argc, argv); }

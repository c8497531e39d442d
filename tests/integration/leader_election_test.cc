// Leader election among hoistd replicas against a real Postgres: in-process
// electors for the fencing details, real hoistd processes for kill -9, SIGSTOP
// and graceful stop.

#include <signal.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/leader_election.h"
#include "controller/store/pg_leader_lock.h"
#include "controller/store/pg_fence.h"
#include "controller/store/pg_migrator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/subprocess.h"
#include "tests/fixtures/migrated_postgres_test.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;

class LeaderElectionTest : public MigratedPostgresTest {
 protected:
  void TearDown() override {
    for (pid_t pid : pids_) {
      kill(pid, SIGCONT);
      kill(pid, SIGKILL);
      (void)WaitForExit(pid, absl::Seconds(10));
    }
    if (!dir_.empty()) RemoveTree(dir_);
  }

  std::unique_ptr<LeaderElector> Elector(const std::string& id) {
    return std::make_unique<LeaderElector>(url_, LeaderElectionOptions{.replica_id = id, .advertise_address = id + ":7443"},
                                           RealClock::Get());
  }

  LeaderInfo LeaderRow() {
    pqxx::connection c(url_);
    pqxx::nontransaction tx(c);
    auto r = tx.exec1("SELECT coalesce(leader_id, ''), coalesce(address, ''), epoch FROM hoist_leader");
    return {r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<uint64_t>()};
  }

  // Sessions holding the leader lock, by application_name.
  std::vector<std::string> LockHolders() {
    pqxx::connection c(url_);
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND "
        "((l.classid::bigint << 32) | l.objid::bigint) = $1",
        kLeaderLockKey);
    std::vector<std::string> out;
    for (const auto& row : r) out.push_back(row[0].as<std::string>());
    return out;
  }

  // Starts a real hoistd replica and returns its pid.
  pid_t StartReplica(const std::string& id) {
    if (dir_.empty()) dir_ = *MakeOwnedTempDir("hoist-election");
    auto port = PickFreePort();
    EXPECT_TRUE(port.ok());
    auto pid = Spawn({HOIST_HOISTD_PATH, "--replica-id", id, "--listen", absl::StrCat("127.0.0.1:", *port),
                      "--database-url", url_, "--log-level", "debug", "--http-listen", "127.0.0.1:0"},
                     {.log_path = LogPath(id)});
    EXPECT_TRUE(pid.ok()) << pid.status();
    pids_.push_back(*pid);
    return *pid;
  }

  std::string LogPath(const std::string& id) { return dir_ + "/" + id + ".log"; }
  std::string Log(const std::string& id) {
    std::ifstream in(LogPath(id));
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Waits until the leader row names someone other than `not_id` and exactly
  // one session holds the lock; returns the leader.
  absl::StatusOr<LeaderInfo> WaitForLeader(absl::Duration timeout, const std::string& not_id = "",
                                           uint64_t above_epoch = 0) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      try {
        LeaderInfo row = LeaderRow();
        if (!row.replica_id.empty() && row.replica_id != not_id && row.epoch > above_epoch &&
            LockHolders() == std::vector<std::string>{"hoistd-leader-" + row.replica_id}) {
          return row;
        }
      } catch (const std::exception&) {
        // Postgres may be restarting.
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return absl::DeadlineExceededError(absl::StrCat("no new leader within ", absl::FormatDuration(timeout)));
  }

  pid_t PidOf(const std::string& id) {
    return pids_.at(std::stoi(id.substr(1)) - 1);  // ids are r1, r2, ...
  }

  std::string dir_;
  std::vector<pid_t> pids_;
};

TEST_F(LeaderElectionTest, ThreeElectorsElectExactlyOne) {
  auto a = Elector("a"), b = Elector("b"), c = Elector("c");
  a->Start();
  b->Start();
  c->Start();
  auto leader = WaitForLeader(absl::Seconds(10));
  ASSERT_TRUE(leader.ok()) << leader.status();
  EXPECT_EQ(leader->epoch, 1u);
  // Give the others time to try and fail.
  absl::SleepFor(absl::Milliseconds(600));
  int leading = a->IsLeader() + b->IsLeader() + c->IsLeader();
  EXPECT_EQ(leading, 1);
  for (auto* e : {a.get(), b.get(), c.get()}) {
    EXPECT_EQ(e->CurrentLeader().replica_id, leader->replica_id);
  }
}

TEST_F(LeaderElectionTest, LostSessionIsFencedAndAnotherLeads) {
  auto a = Elector("a");
  a->Start();
  ASSERT_TRUE(a->WaitForLeadership(absl::Seconds(10)));
  const uint64_t old_epoch = a->epoch();
  auto b = Elector("b");
  b->Start();
  {
    pqxx::connection c(url_);
    pqxx::nontransaction tx(c);
    tx.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hoistd-leader-a'");
  }
  auto leader = WaitForLeader(absl::Seconds(10), "", old_epoch);
  ASSERT_TRUE(leader.ok()) << leader.status();
  EXPECT_GT(leader->epoch, old_epoch);
  // A write made for the old epoch is refused inside its own transaction.
  pqxx::connection c(url_);
  pqxx::work tx(c);
  absl::Status fenced = CheckEpoch(tx, old_epoch);
  EXPECT_EQ(fenced.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(fenced.message()), HasSubstr("fenced"));
  EXPECT_TRUE(CheckEpoch(tx, leader->epoch).ok());
}

// A fenced write that takes longer than the lease (a slow transaction of
// the leader's) does not hold up the leader's heartbeat: the leader keeps
// leading, with its epoch.
TEST_F(LeaderElectionTest, LongFencedWriteDoesNotCostTheLeaderItsLease) {
  auto a = Elector("a");
  a->Start();
  ASSERT_TRUE(a->WaitForLeadership(absl::Seconds(10)));
  const uint64_t epoch = a->epoch();
  {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    ASSERT_TRUE(CheckEpoch(tx, epoch).ok());
    absl::SleepFor(absl::Seconds(4));  // longer than the lease (2.5 s)
    EXPECT_TRUE(a->IsLeader()) << "the leader stepped down while a fenced write held the leader row";
    tx.commit();
  }
  EXPECT_TRUE(a->IsLeader());
  EXPECT_EQ(a->epoch(), epoch);
}

// A new leader's epoch bump waits for a fenced write in flight, so that no
// write commits for the old epoch once the new one is current.
TEST_F(LeaderElectionTest, EpochBumpWaitsForTheFencedWriteInFlight) {
  pqxx::connection c(url_);
  pqxx::work tx(c);
  const uint64_t before = tx.exec1("SELECT epoch FROM hoist_leader WHERE id = 1")[0].as<uint64_t>();
  tx.exec1("SELECT epoch FROM hoist_leader WHERE id = 1 FOR KEY SHARE");  // what CheckEpoch holds
  auto a = Elector("a");
  a->Start();
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_FALSE(a->IsLeader()) << "the epoch moved while a fenced write held the leader row";
  tx.commit();
  ASSERT_TRUE(a->WaitForLeadership(absl::Seconds(10)));
  EXPECT_EQ(a->epoch(), before + 1);
}

TEST_F(LeaderElectionTest, GracefulStopHandsOverAtOnce) {
  auto a = Elector("a");
  a->Start();
  ASSERT_TRUE(a->WaitForLeadership(absl::Seconds(10)));
  auto b = Elector("b");
  b->Start();
  absl::SleepFor(absl::Milliseconds(300));  // b is following
  const absl::Time stop = absl::Now();
  a->Stop();
  ASSERT_TRUE(b->WaitForLeadership(absl::Seconds(5)));
  const absl::Duration took = absl::Now() - stop;
  EXPECT_LT(took, absl::Seconds(1)) << "a notified release should not wait for a poll cycle";
  EXPECT_FALSE(a->IsLeader());
}

TEST_F(LeaderElectionTest, PostgresRestartThenALeaderAgain) {
  auto a = Elector("a"), b = Elector("b");
  a->Start();
  b->Start();
  auto first = WaitForLeader(absl::Seconds(10));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(cluster_->Restart().ok()) << cluster_->LogTail();
  auto again = WaitForLeader(absl::Seconds(20), "", first->epoch);
  ASSERT_TRUE(again.ok()) << again.status();
  // The old leader may believe it leads until its next heartbeat fails (its
  // writes are fenced meanwhile); within one lease exactly one believes it.
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  while (absl::Now() < deadline && a->IsLeader() + b->IsLeader() != 1) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(a->IsLeader() + b->IsLeader(), 1);
}

TEST_F(LeaderElectionTest, Kill9TheLeaderProcessAndAnotherLeads) {
  for (const char* id : {"r1", "r2", "r3"}) StartReplica(id);
  auto first = WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(first.ok()) << first.status() << "\n" << Log("r1");
  kill(PidOf(first->replica_id), SIGKILL);
  const absl::Time killed = absl::Now();
  auto next = WaitForLeader(absl::Seconds(10), first->replica_id, first->epoch);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->epoch, first->epoch + 1);
  EXPECT_LT(absl::Now() - killed, absl::Seconds(5));
}

TEST_F(LeaderElectionTest, SigstopTheLeaderThenItIsFencedWhenItResumes) {
  for (const char* id : {"r1", "r2", "r3"}) StartReplica(id);
  auto first = WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(first.ok()) << first.status() << "\n" << Log("r1");
  const pid_t frozen = PidOf(first->replica_id);
  kill(frozen, SIGSTOP);
  const absl::Time stopped = absl::Now();
  auto next = WaitForLeader(absl::Seconds(15), first->replica_id, first->epoch);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(8));
  kill(frozen, SIGCONT);
  // The resumed replica finds its lease gone and steps down; it never bumps
  // the epoch or takes the lock back while the new leader lives.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && Log(first->replica_id).find("lost leadership") == std::string::npos) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(Log(first->replica_id), HasSubstr("lost leadership"));
  absl::SleepFor(absl::Seconds(1));
  LeaderInfo row = LeaderRow();
  EXPECT_EQ(row.replica_id, next->replica_id);
  EXPECT_EQ(row.epoch, next->epoch);
  EXPECT_EQ(LockHolders(), std::vector<std::string>{"hoistd-leader-" + next->replica_id});
}

TEST_F(LeaderElectionTest, SigtermTheLeaderProcessHandsOver) {
  for (const char* id : {"r1", "r2"}) StartReplica(id);
  auto first = WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(first.ok()) << first.status() << "\n" << Log("r1");
  kill(PidOf(first->replica_id), SIGTERM);
  const absl::Time stopped = absl::Now();
  auto next = WaitForLeader(absl::Seconds(10), first->replica_id, first->epoch);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(2));
  auto exit = WaitForExit(PidOf(first->replica_id), absl::Seconds(10));
  ASSERT_TRUE(exit.ok());
  EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == 0) << Log(first->replica_id);
  EXPECT_THAT(Log(first->replica_id), HasSubstr("released leadership"));
}

TEST_F(LeaderElectionTest, BadDatabaseUrlFailsStartupWithTheReason) {
  auto r = RunCommand({HOIST_HOISTD_PATH, "--database-url", "postgresql://hoist@127.0.0.1:1/none"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->stderr_text, HasSubstr("cannot connect to Postgres"));
  auto garbage = RunCommand({HOIST_HOISTD_PATH, "--database-url", "postgresql://[oops"});
  ASSERT_TRUE(garbage.ok());
  EXPECT_EQ(garbage->exit_code, 2);
  EXPECT_THAT(garbage->stderr_text, HasSubstr("--database-url"));
}

}  // namespace
}  // namespace hoist::testing

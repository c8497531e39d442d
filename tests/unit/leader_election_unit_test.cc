// The election's decisions, round by round, on a fake clock and a scripted
// lock: who wins, when a leader stops believing it leads, what a fenced or
// slow heartbeat does, and that a graceful stop hands over at once. The
// Postgres lock itself is tested in tests/integration/leader_election_test.cc.

#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "controller/leader_election.h"
#include "controller/store/leader_lock.h"
#include "tests/fakes/fake_clock.h"

namespace hoist {
namespace {

using ::hoist::testing::FakeClock;

// The database every replica's lock talks to.
struct FakeDatabase {
  absl::Mutex mu;
  const void* holder ABSL_GUARDED_BY(mu) = nullptr;
  LeaderInfo row ABSL_GUARDED_BY(mu);
  bool down ABSL_GUARDED_BY(mu) = false;
  int releases ABSL_GUARDED_BY(mu) = 0;
};

class FakeLeaderLock final : public LeaderLock {
 public:
  FakeLeaderLock(FakeDatabase* db, FakeClock* clock) : db_(db), clock_(clock) {}
  ~FakeLeaderLock() override { Disconnect(); }

  absl::Status Connect() override {
    absl::MutexLock lock(&db_->mu);
    if (db_->down) return absl::UnavailableError("connection refused");
    connected_ = true;
    return absl::OkStatus();
  }
  bool connected() const override { return connected_; }
  void Disconnect() override {
    absl::MutexLock lock(&db_->mu);
    connected_ = false;
    if (db_->holder == this) db_->holder = nullptr;  // the session's end frees the lock
  }
  absl::StatusOr<uint64_t> TryAcquire(const LeaderInfo& me) override {
    absl::MutexLock lock(&db_->mu);
    if (db_->down) return absl::UnavailableError("server closed the connection");
    if (db_->holder != nullptr && db_->holder != this) return uint64_t{0};
    db_->holder = this;
    db_->row = LeaderInfo{me.replica_id, me.address, db_->row.epoch + 1};
    return db_->row.epoch;
  }
  absl::StatusOr<LeaderInfo> ReadLeader() override {
    absl::MutexLock lock(&db_->mu);
    if (db_->down) return absl::UnavailableError("server closed the connection");
    return db_->row;
  }
  absl::Status AwaitRelease(absl::Duration timeout) override {
    clock_->Advance(timeout);
    return absl::OkStatus();
  }
  absl::Status Heartbeat(const LeaderInfo& me) override {
    clock_->Advance(heartbeat_takes);
    absl::MutexLock lock(&db_->mu);
    if (db_->down) return absl::UnavailableError("server closed the connection");
    if (db_->row.epoch != me.epoch || db_->row.replica_id != me.replica_id) {
      return absl::FailedPreconditionError("epoch is no longer current (fenced)");
    }
    return absl::OkStatus();
  }
  absl::Status Release() override {
    absl::MutexLock lock(&db_->mu);
    if (db_->holder == this) db_->holder = nullptr;
    ++db_->releases;
    return absl::OkStatus();
  }

  // How long each heartbeat takes, on the fake clock.
  absl::Duration heartbeat_takes = absl::Milliseconds(5);

 private:
  FakeDatabase* const db_;
  FakeClock* const clock_;
  bool connected_ = false;
};

class LeaderElectionUnitTest : public ::testing::Test {
 protected:
  LeaderElectionOptions Options(const std::string& id) {
    return LeaderElectionOptions{.replica_id = id, .advertise_address = id + ":7443"};
  }
  // A replica whose observer records every change in `heard`.
  std::unique_ptr<LeaderElector> Replica(const std::string& id, FakeLeaderLock** lock_out = nullptr,
                                         std::vector<uint64_t>* heard = nullptr) {
    auto lock = std::make_unique<FakeLeaderLock>(&db_, &clock_);
    if (lock_out != nullptr) *lock_out = lock.get();
    auto elector = std::make_unique<LeaderElector>(std::move(lock), Options(id), &clock_);
    if (heard != nullptr) elector->Observe([heard](uint64_t epoch) { heard->push_back(epoch); });
    return elector;
  }

  FakeDatabase db_;
  FakeClock clock_;
  const LeaderElectionOptions defaults_;
};

TEST_F(LeaderElectionUnitTest, FirstReplicaToTryWinsAndTheOtherFollowsNamingIt) {
  std::vector<uint64_t> heard_a, heard_b;
  auto a = Replica("a", nullptr, &heard_a);
  auto b = Replica("b", nullptr, &heard_b);
  LeaderElector::Pause pa = a->Round();
  EXPECT_EQ(a->epoch(), 1u);
  EXPECT_TRUE(a->IsLeader());
  EXPECT_EQ(heard_a, std::vector<uint64_t>{1});
  EXPECT_FALSE(pa.await_release);
  EXPECT_EQ(pa.wait, defaults_.heartbeat_interval);
  EXPECT_EQ(a->CurrentLeader().address, "a:7443");

  LeaderElector::Pause pb = b->Round();
  EXPECT_EQ(b->epoch(), 0u);
  EXPECT_TRUE(heard_b.empty());
  EXPECT_TRUE(pb.await_release);
  EXPECT_GE(pb.wait, defaults_.poll_interval * 0.5);
  EXPECT_LE(pb.wait, defaults_.poll_interval * 1.5);
  LeaderInfo seen = b->CurrentLeader();
  EXPECT_EQ(seen.replica_id, "a");
  EXPECT_EQ(seen.address, "a:7443");
  EXPECT_EQ(seen.epoch, 1u);
}

TEST_F(LeaderElectionUnitTest, HeartbeatsKeepTheLeaseForLongerThanOneLease) {
  auto a = Replica("a");
  a->Round();
  ASSERT_EQ(a->epoch(), 1u);
  for (int i = 0; i < 20; ++i) {  // 20 x 400 ms: over three leases
    clock_.Advance(defaults_.heartbeat_interval);
    a->Round();
    ASSERT_EQ(a->epoch(), 1u) << "after heartbeat " << i;
  }
}

TEST_F(LeaderElectionUnitTest, ALeaderStopsLeadingWhenItsLeaseRunsOutEvenBeforeItsNextRound) {
  std::vector<uint64_t> heard;
  FakeLeaderLock* lock = nullptr;
  auto a = Replica("a", &lock, &heard);
  a->Round();
  clock_.Advance(defaults_.lease - absl::Milliseconds(1));
  EXPECT_EQ(a->epoch(), 1u);
  clock_.Advance(absl::Milliseconds(1));
  // Nothing has run: the epoch is gone by the clock alone, so no write is
  // stamped with it after the lease.
  EXPECT_EQ(a->epoch(), 0u);
  EXPECT_FALSE(a->IsLeader());
  EXPECT_EQ(heard, std::vector<uint64_t>{1});
  // The next round notices, drops the lock's session and tells the observers.
  a->Round();
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 0}));
  EXPECT_FALSE(lock->connected());
  // With the session gone the lock is free: another replica wins a newer epoch.
  auto b = Replica("b");
  b->Round();
  EXPECT_EQ(b->epoch(), 2u);
}

TEST_F(LeaderElectionUnitTest, AHeartbeatThatTakesLongerThanTheLeaseEndsLeadership) {
  std::vector<uint64_t> heard;
  FakeLeaderLock* lock = nullptr;
  auto a = Replica("a", &lock, &heard);
  a->Round();
  lock->heartbeat_takes = defaults_.lease + absl::Milliseconds(100);
  clock_.Advance(defaults_.heartbeat_interval);
  a->Round();
  // The lease counts from when the heartbeat was sent, not when it answered.
  EXPECT_EQ(a->epoch(), 0u);
  a->Round();
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 0}));
}

TEST_F(LeaderElectionUnitTest, AFencedHeartbeatDemotesAtOnce) {
  std::vector<uint64_t> heard;
  auto a = Replica("a", nullptr, &heard);
  a->Round();
  {
    absl::MutexLock lock(&db_.mu);
    // a's session was cut off meanwhile: another replica took the lock and
    // a newer epoch.
    db_.holder = &db_;
    db_.row = LeaderInfo{"b", "b:7443", 7};
  }
  clock_.Advance(defaults_.heartbeat_interval);
  LeaderElector::Pause p = a->Round();
  EXPECT_EQ(a->epoch(), 0u);
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 0}));
  EXPECT_EQ(p.wait, absl::ZeroDuration());  // reconnect and follow at once
  EXPECT_EQ(a->CurrentLeader().replica_id, "");  // unknown until read again
  a->Round();
  EXPECT_EQ(a->CurrentLeader().replica_id, "b");
}

TEST_F(LeaderElectionUnitTest, ALostDatabaseDemotesTheLeaderAndItRetriesLater) {
  std::vector<uint64_t> heard;
  auto a = Replica("a", nullptr, &heard);
  a->Round();
  {
    absl::MutexLock lock(&db_.mu);
    db_.down = true;
  }
  clock_.Advance(defaults_.heartbeat_interval);
  a->Round();
  EXPECT_EQ(a->epoch(), 0u);
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 0}));
  // While the database is down, rounds fail to connect and wait longer
  // between tries.
  LeaderElector::Pause p = a->Round();
  EXPECT_FALSE(p.await_release);
  EXPECT_GE(p.wait, defaults_.poll_interval);
  EXPECT_LE(p.wait, defaults_.poll_interval * 3);
  EXPECT_EQ(a->epoch(), 0u);
  {
    absl::MutexLock lock(&db_.mu);
    db_.down = false;
  }
  a->Round();
  EXPECT_EQ(a->epoch(), 2u);
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 0, 2}));
}

TEST_F(LeaderElectionUnitTest, AGracefulStopReleasesTheLockSoAFollowerWinsAtOnce) {
  std::vector<uint64_t> heard;
  auto a = Replica("a", nullptr, &heard);
  auto b = Replica("b");
  a->Round();
  b->Round();
  ASSERT_EQ(b->epoch(), 0u);
  a->Finish();
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 0}));
  {
    absl::MutexLock lock(&db_.mu);
    EXPECT_EQ(db_.releases, 1);
  }
  b->Round();
  EXPECT_EQ(b->epoch(), 2u);
  EXPECT_EQ(b->CurrentLeader().replica_id, "b");
}

TEST_F(LeaderElectionUnitTest, AFollowerDoesNotReleaseWhatItNeverHeld) {
  auto a = Replica("a");
  auto b = Replica("b");
  a->Round();
  b->Round();
  b->Finish();
  absl::MutexLock lock(&db_.mu);
  EXPECT_EQ(db_.releases, 0);
  EXPECT_EQ(db_.row.replica_id, "a");
}

TEST_F(LeaderElectionUnitTest, TheAddressSetBeforeStartIsTheOneRecorded) {
  auto a = Replica("a");
  a->SetAdvertiseAddress("10.0.0.5:7443");
  a->Round();
  EXPECT_EQ(a->CurrentLeader().address, "10.0.0.5:7443");
  absl::MutexLock lock(&db_.mu);
  EXPECT_EQ(db_.row.address, "10.0.0.5:7443");
}

}  // namespace
}  // namespace hoist

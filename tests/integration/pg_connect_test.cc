// Postgres connection helpers against a real throw-away cluster.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string>

#include <pqxx/pqxx>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "controller/store/pg_pool.h"
#include "shared/pg.h"
#include "tests/fixtures/postgres_test.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;

using PgConnectTest = PostgresTest;

TEST_F(PgConnectTest, ConnectsWithApplicationNameAndKeepalives) {
  auto conn = PgConnect(cluster_->ConnectionString(), {.application_name = "hoist-test"});
  ASSERT_TRUE(conn.ok()) << conn.status();
  pqxx::work tx(**conn);
  EXPECT_EQ(tx.exec1("SELECT current_setting('application_name')")[0].as<std::string>(), "hoist-test");
  // The helper's settings reached the socket itself.
  int fd = (*conn)->sock();
  ASSERT_GE(fd, 0);
  int value = 0;
  socklen_t len = sizeof(value);
  ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &value, &len), 0);
  EXPECT_EQ(value, 1) << "SO_KEEPALIVE";
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &value, &len), 0);
  EXPECT_EQ(value, 5) << "TCP_KEEPIDLE";
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &value, &len), 0);
  EXPECT_EQ(value, 3) << "TCP_KEEPCNT";
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &value, &len), 0);
  EXPECT_EQ(value, 10000) << "TCP_USER_TIMEOUT";
}

TEST_F(PgConnectTest, StoppedServerIsUnavailableAndBackAfterRestart) {
  ASSERT_TRUE(cluster_->Stop().ok());
  auto down = PgConnect(cluster_->ConnectionString());
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(cluster_->Restart().ok()) << cluster_->LogTail();
  EXPECT_TRUE(PgConnect(cluster_->ConnectionString()).ok());
}

TEST_F(PgConnectTest, CreatesDatabases) {
  auto url = cluster_->CreateDatabase("hoist_one");
  ASSERT_TRUE(url.ok()) << url.status();
  auto conn = PgConnect(*url);
  ASSERT_TRUE(conn.ok()) << conn.status();
  pqxx::work tx(**conn);
  EXPECT_EQ(tx.exec1("SELECT current_database()")[0].as<std::string>(), "hoist_one");
}

// A pooled connection outlives a Postgres restart only as a broken socket.
// The next transaction finds it so, drops the idle ones and runs on a new
// connection, instead of failing once per pooled connection.
TEST_F(PgConnectTest, PoolRunsATransactionAfterAPostgresRestartOnANewConnection) {
  auto conninfo = WithConnectionDefaults(cluster_->ConnectionString());
  ASSERT_TRUE(conninfo.ok()) << conninfo.status();
  PgPool pool(*conninfo, 4);
  int backend_before = 0;
  ASSERT_TRUE(pool.Transact([&](pqxx::work& tx) {
                    backend_before = tx.exec1("SELECT pg_backend_pid()")[0].as<int>();
                    // The server ends a session left idle in a transaction, or whose client vanished.
                    EXPECT_EQ(tx.exec1("SHOW idle_in_transaction_session_timeout")[0].as<std::string>(), "30s");
                    EXPECT_EQ(tx.exec1("SHOW tcp_keepalives_idle")[0].as<std::string>(), "5");
                    return absl::OkStatus();
                  }).ok());
  ASSERT_TRUE(cluster_->Restart().ok()) << cluster_->LogTail();
  int backend_after = 0;
  absl::Status s = pool.Transact([&](pqxx::work& tx) {
    backend_after = tx.exec1("SELECT pg_backend_pid()")[0].as<int>();
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_NE(backend_after, 0);
  EXPECT_NE(backend_after, backend_before) << "the transaction should run on a new server session";

  // With Postgres down, a transaction fails at once as UNAVAILABLE; it is not retried forever.
  ASSERT_TRUE(cluster_->Stop().ok());
  absl::Status down = pool.Transact([](pqxx::work& tx) {
    tx.exec1("SELECT 1");
    return absl::OkStatus();
  });
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
}

}  // namespace
}  // namespace hoist::testing

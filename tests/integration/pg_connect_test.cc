// Postgres connection helpers against a real throw-away cluster.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string>

#include <pqxx/pqxx>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

}  // namespace
}  // namespace hoist::testing

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/pg.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(PgConnInfoTest, AddsKeepalivesToUris) {
  auto s = WithConnectionDefaults("postgresql://hoist@127.0.0.1:5433/hoist");
  ASSERT_TRUE(s.ok()) << s.status();
  auto params = ParseConnInfo(*s);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->at("host"), "127.0.0.1");
  EXPECT_EQ(params->at("port"), "5433");
  EXPECT_EQ(params->at("keepalives"), "1");
  EXPECT_EQ(params->at("keepalives_idle"), "5");
  EXPECT_EQ(params->at("keepalives_interval"), "2");
  EXPECT_EQ(params->at("keepalives_count"), "3");
  EXPECT_EQ(params->at("tcp_user_timeout"), "10000");
  EXPECT_EQ(params->at("connect_timeout"), "5");
}

TEST(PgConnInfoTest, KeepsWhatTheCallerSet) {
  auto s = WithConnectionDefaults("host=db keepalives_idle=30 application_name=mine", {.application_name = "hoistd"});
  ASSERT_TRUE(s.ok());
  auto params = ParseConnInfo(*s);
  EXPECT_EQ(params->at("keepalives_idle"), "30");
  EXPECT_EQ(params->at("application_name"), "mine");
}

TEST(PgConnInfoTest, QuotesValuesSafely) {
  std::string rendered = RenderConnInfo({{"password", "it's a \\ secret"}, {"host", "db"}});
  auto back = ParseConnInfo(rendered);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->at("password"), "it's a \\ secret");
}

TEST(PgConnInfoTest, GarbageNamesTheShapeExpected) {
  auto s = WithConnectionDefaults("postgresql://[broken");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("expected a URI such as postgresql://"));
  EXPECT_FALSE(WithConnectionDefaults("nonsense_key=1").ok());
}

TEST(PgConnInfoTest, RedactsPasswords) {
  std::string r = RedactConnInfo("postgresql://hoist:hunter2@db/hoist");
  EXPECT_THAT(r, Not(HasSubstr("hunter2")));
  EXPECT_THAT(r, HasSubstr("password='***'"));
}

TEST(PgConnInfoTest, UnreachableServerIsUnavailableWithoutPassword) {
  // Port 1 on loopback refuses at once.
  auto c = PgConnect("postgresql://hoist:hunter2@127.0.0.1:1/hoist");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), Not(HasSubstr("hunter2")));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("cannot connect to Postgres"));
}

}  // namespace
}  // namespace hoist

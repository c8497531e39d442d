#include "shared/config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(DurationSettingTest, AcceptsUnitsRefusesGarbage) {
  EXPECT_EQ(*ParseDurationSetting("--x", "250ms"), absl::Milliseconds(250));
  EXPECT_EQ(*ParseDurationSetting("--x", "1m30s"), absl::Seconds(90));
  EXPECT_EQ(*ParseDurationSetting("--x", "0"), absl::ZeroDuration());
  for (const char* bad : {"", "5", "-1s", "inf", "soon", "5 parsecs"}) {
    auto d = ParseDurationSetting("--heartbeat-interval", bad);
    ASSERT_FALSE(d.ok()) << "accepted \"" << bad << "\"";
    EXPECT_THAT(Msg(d.status()), HasSubstr("--heartbeat-interval"));
    EXPECT_THAT(Msg(d.status()), HasSubstr("such as 250ms"));
  }
}

TEST(PortSettingTest, Range) {
  EXPECT_EQ(*ParsePortSetting("--p", "7443"), 7443);
  for (const char* bad : {"0", "65536", "-1", "80x", "", " 80"}) {
    auto p = ParsePortSetting("--port", bad);
    ASSERT_FALSE(p.ok()) << "accepted \"" << bad << "\"";
    EXPECT_THAT(Msg(p.status()), HasSubstr("1 to 65535"));
  }
}

TEST(BoolSettingTest, Words) {
  EXPECT_TRUE(*ParseBoolSetting("x", "yes"));
  EXPECT_FALSE(*ParseBoolSetting("x", "Off"));
  EXPECT_THAT(Msg(ParseBoolSetting("HOIST_X", "maybe").status()), HasSubstr("HOIST_X"));
}

TEST(HostPortTest, ParsesIpv4NamesAndBracketedIpv6) {
  auto a = ParseHostPort("--listen", "127.0.0.1:7443");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7443);
  auto b = ParseHostPort("--listen", "[::1]:80");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->ToString(), "[::1]:80");
  EXPECT_EQ(ParseHostPort("x", "hoistd-1:7443")->host, "hoistd-1");
}

TEST(HostPortTest, AListenAddressMayAskForAnyFreePort) {
  auto any = ParseListenAddress("--listen", "127.0.0.1:0");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->host, "127.0.0.1");
  EXPECT_EQ(any->port, 0);
  EXPECT_EQ(ParseListenAddress("--listen", "[::1]:7443")->port, 7443);
  for (const char* bad : {"localhost", ":0", "host:http", "host:70000"}) {
    auto hp = ParseListenAddress("--listen", bad);
    ASSERT_FALSE(hp.ok()) << "accepted \"" << bad << "\"";
    EXPECT_THAT(Msg(hp.status()), HasSubstr("--listen"));
  }
}

TEST(HostPortTest, RefusesGarbage) {
  for (const char* bad : {"", "localhost", ":80", "::1:80", "[::1]80", "host:0", "host:http", "a b:80"}) {
    auto hp = ParseHostPort("--controller", bad);
    ASSERT_FALSE(hp.ok()) << "accepted \"" << bad << "\"";
    EXPECT_THAT(Msg(hp.status()), HasSubstr("--controller"));
    EXPECT_THAT(Msg(hp.status()), HasSubstr("expected host:port"));
  }
}

TEST(ConfigFileTest, ReadsKnownKeysWithLines) {
  auto cfg = ParseConfigText("agent.yml", "controller: a:1\n\nstate_dir: /var/lib/x\n",
                             {"controller", "state_dir", "log_level"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->at("controller").value, "a:1");
  EXPECT_EQ(cfg->at("state_dir").line, 3);
  EXPECT_FALSE(cfg->contains("log_level"));
}

TEST(ConfigFileTest, UnknownKeyNamesFileLineAndKnownKeys) {
  auto cfg = ParseConfigText("agent.yml", "controller: a:1\ncontroler: b:2\n", {"controller", "state_dir"});
  ASSERT_FALSE(cfg.ok());
  EXPECT_THAT(Msg(cfg.status()), HasSubstr("agent.yml:2"));
  EXPECT_THAT(Msg(cfg.status()), HasSubstr("unknown key \"controler\""));
  EXPECT_THAT(Msg(cfg.status()), HasSubstr("controller, state_dir"));
}

TEST(ConfigFileTest, RefusesNestingBrokenYamlAndNonMappings) {
  EXPECT_THAT(Msg(ParseConfigText("c.yml", "controller:\n  - a\n", {"controller"}).status()),
              HasSubstr("must be a single value"));
  EXPECT_THAT(Msg(ParseConfigText("c.yml", "controller: [a\n", {"controller"}).status()),
              HasSubstr("c.yml:"));
  EXPECT_THAT(Msg(ParseConfigText("c.yml", "- a\n- b\n", {"controller"}).status()),
              HasSubstr("expected a mapping"));
  EXPECT_TRUE(ParseConfigText("c.yml", "", {"controller"})->empty());
}

TEST(ConfigFileTest, MissingFileIsNotFound) {
  auto cfg = LoadConfigFile("/nonexistent/hoist.yml", {"a"});
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(cfg.status()), HasSubstr("/nonexistent/hoist.yml"));
}

}  // namespace
}  // namespace hoist

#include "shared/flags.h"

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

FlagSet MakeFlags() {
  FlagSet f("tool [flags] ARGS", "Does things.");
  f.AddString("listen", "127.0.0.1:1", "Where to listen.", "HOIST_TEST_LISTEN");
  f.AddBool("yes", "Do not ask.");
  f.AddExample("tool --yes 1.5.0");
  return f;
}

TEST(FlagSetTest, ParsesFormsAndPositionals) {
  FlagSet f = MakeFlags();
  ASSERT_TRUE(f.Parse({"plan", "--listen", "a:2", "--yes", "1.5.0", "--", "--not-a-flag"}).ok());
  EXPECT_EQ(f.Get("listen"), "a:2");
  EXPECT_TRUE(f.GetBool("yes"));
  EXPECT_EQ(f.positional(), (std::vector<std::string>{"plan", "1.5.0", "--not-a-flag"}));
  FlagSet g = MakeFlags();
  ASSERT_TRUE(g.Parse({"--listen=b:3", "--yes=false"}).ok());
  EXPECT_EQ(g.Get("listen"), "b:3");
  EXPECT_FALSE(g.GetBool("yes"));
}

TEST(FlagSetTest, EnvFallbackAndFlagWins) {
  setenv("HOIST_TEST_LISTEN", "env:9", 1);
  FlagSet f = MakeFlags();
  ASSERT_TRUE(f.Parse({}).ok());
  EXPECT_EQ(f.Get("listen"), "env:9");
  EXPECT_TRUE(f.IsSet("listen"));
  FlagSet g = MakeFlags();
  ASSERT_TRUE(g.Parse({"--listen", "flag:1"}).ok());
  EXPECT_EQ(g.Get("listen"), "flag:1");
  unsetenv("HOIST_TEST_LISTEN");
}

TEST(FlagSetTest, ErrorsNameTheFlag) {
  FlagSet f = MakeFlags();
  auto s = f.Parse({"--lisen", "x"});
  EXPECT_THAT(std::string(s.message()), HasSubstr("unknown flag --lisen"));
  FlagSet g = MakeFlags();
  EXPECT_THAT(std::string(g.Parse({"--listen"}).message()), HasSubstr("--listen needs a value"));
  FlagSet h = MakeFlags();
  EXPECT_THAT(std::string(h.Parse({"--yes=perhaps"}).message()), HasSubstr("--yes"));
  FlagSet i = MakeFlags();
  EXPECT_THAT(std::string(i.Parse({"-y"}).message()), HasSubstr("unknown flag \"-y\""));
}

TEST(FlagSetTest, HelpListsFlagsEnvDefaultsAndExamples) {
  FlagSet f = MakeFlags();
  ASSERT_TRUE(f.Parse({"--help"}).ok());
  EXPECT_TRUE(f.help_requested());
  std::string help = f.Help();
  EXPECT_THAT(help, HasSubstr("Usage: tool [flags] ARGS"));
  EXPECT_THAT(help, HasSubstr("--listen VALUE"));
  EXPECT_THAT(help, HasSubstr("(default 127.0.0.1:1)"));
  EXPECT_THAT(help, HasSubstr("[env HOIST_TEST_LISTEN]"));
  EXPECT_THAT(help, HasSubstr("tool --yes 1.5.0"));
}

}  // namespace
}  // namespace hoist

namespace hoist {
namespace {

TEST(FlagSetTest, ListFlagCollectsRepeatsAndCommas) {
  FlagSet f("tool [flags]", "Does things.");
  f.AddList("san", "Extra names.");
  ASSERT_TRUE(f.Parse({"--san", "a.example", "--san=10.0.0.5, 10.0.0.6", "--san", ",b,"}).ok());
  EXPECT_EQ(f.GetList("san"), (std::vector<std::string>{"a.example", "10.0.0.5", "10.0.0.6", "b"}));
  EXPECT_TRUE(f.IsSet("san"));
  FlagSet g("tool [flags]", "Does things.");
  g.AddList("san", "Extra names.");
  ASSERT_TRUE(g.Parse({}).ok());
  EXPECT_TRUE(g.GetList("san").empty());
  EXPECT_THAT(g.Help(), ::testing::HasSubstr("--san VALUE..."));
}

}  // namespace
}  // namespace hoist

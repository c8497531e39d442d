#include "shared/semver.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

Version V(const char* text) {
  auto v = Version::Parse(text);
  EXPECT_TRUE(v.ok()) << text << ": " << v.status();
  return v.ok() ? *v : Version();
}

TEST(VersionTest, ParsesFullVersions) {
  Version v = V("1.4.2-rc.1+build.7");
  EXPECT_EQ(v.major(), 1u);
  EXPECT_EQ(v.minor(), 4u);
  EXPECT_EQ(v.patch(), 2u);
  EXPECT_EQ(v.prerelease(), (std::vector<std::string>{"rc", "1"}));
  EXPECT_EQ(v.build(), "build.7");
  EXPECT_EQ(v.ToString(), "1.4.2-rc.1+build.7");
}

TEST(VersionTest, OrdersAsSemverOrgSection11) {
  // The example chain from semver.org, each strictly lower than the next.
  const std::vector<const char*> chain = {"1.0.0-alpha",      "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                          "1.0.0-beta",       "1.0.0-beta.2",  "1.0.0-beta.11",
                                          "1.0.0-rc.1",       "1.0.0",         "1.0.1",
                                          "1.1.0",            "2.0.0",         "10.0.0"};
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    EXPECT_LT(V(chain[i]), V(chain[i + 1])) << chain[i] << " should sort before " << chain[i + 1];
    EXPECT_GT(V(chain[i + 1]), V(chain[i])) << chain[i + 1] << " should sort after " << chain[i];
  }
}

TEST(VersionTest, BuildMetadataDoesNotAffectPrecedence) {
  EXPECT_EQ(V("1.2.3+a"), V("1.2.3+b"));
  EXPECT_EQ(V("1.2.3+a"), V("1.2.3"));
}

struct BadVersion {
  const char* input;
  const char* expected_in_message;
};

void PrintTo(const BadVersion& b, std::ostream* os) { *os << "\"" << b.input << "\""; }

class BadVersionTest : public ::testing::TestWithParam<BadVersion> {};

TEST_P(BadVersionTest, IsRefusedWithAReason) {
  auto v = Version::Parse(GetParam().input);
  ASSERT_FALSE(v.ok()) << "accepted " << GetParam().input;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr(GetParam().expected_in_message));
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("MAJOR.MINOR.PATCH"));
}

INSTANTIATE_TEST_SUITE_P(
    Garbage, BadVersionTest,
    ::testing::Values(BadVersion{"", "empty"}, BadVersion{"1.4", "2 numeric parts"},
                      BadVersion{"1.2.3.4", "4 numeric parts"}, BadVersion{"v1.2.3", "leading \"v\""},
                      BadVersion{"01.2.3", "leading zero"}, BadVersion{"1.2.x", "other than digits"},
                      BadVersion{"1.2.3-", "pre-release after '-' is empty"},
                      BadVersion{"1.2.3-rc..1", "empty identifier"},
                      BadVersion{"1.2.3-01", "leading zero"}, BadVersion{"1.2.3+", "build metadata"},
                      BadVersion{"1.2.3 ", "not allowed"}, BadVersion{"latest", "other than digits"},
                      BadVersion{"1.2.99999999999999999999", "too large"}));

TEST(VersionRangeTest, AndOfComparators) {
  auto r = VersionRange::Parse(">=1.4 <2");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->Contains(V("1.3.9")));
  EXPECT_TRUE(r->Contains(V("1.4.0")));
  EXPECT_TRUE(r->Contains(V("1.99.0")));
  EXPECT_FALSE(r->Contains(V("2.0.0")));
  EXPECT_FALSE(r->Contains(V("2.0.0-rc.1"))) << "<2 must exclude 2.0.0's pre-releases";
  EXPECT_EQ(r->ToString(), ">=1.4 <2");
}

TEST(VersionRangeTest, CaretTildeAndWildcards) {
  struct Case {
    const char* range;
    const char* version;
    bool inside;
  };
  const Case cases[] = {
      {"^1.2.3", "1.9.0", true},    {"^1.2.3", "2.0.0", false},  {"^1.2.3", "1.2.2", false},
      {"^0.2.3", "0.2.9", true},    {"^0.2.3", "0.3.0", false},  {"^0.0.3", "0.0.4", false},
      {"~1.4.2", "1.4.9", true},    {"~1.4.2", "1.5.0", false},  {"~1", "1.9.9", true},
      {"1.x", "1.7.3", true},       {"1.x", "2.0.0", false},     {"*", "0.0.1", true},
      {"1.4", "1.4.7", true},       {"1.4", "1.5.0", false},     {"=1.4.0", "1.4.0", true},
      {">1.4", "1.4.9", false},     {">1.4", "1.5.0", true},     {"<=1.4", "1.4.9", true},
      {"<=1.4", "1.5.0", false},    {">= 1.4", "1.4.0", true},   {"<1.0.0 || >=2", "2.1.0", true},
      {"<1.0.0 || >=2", "1.5.0", false},
  };
  for (const Case& c : cases) {
    auto r = VersionRange::Parse(c.range);
    ASSERT_TRUE(r.ok()) << c.range << ": " << r.status();
    EXPECT_EQ(r->Contains(V(c.version)), c.inside)
        << c.version << (c.inside ? " should be inside " : " should be outside ") << c.range;
  }
}

TEST(VersionRangeTest, RefusesGarbageNamingTheComparator) {
  for (const char* bad : {"", ">=", ">=1.4 <two", "1.2.3.4", "1.x.3", "||", ">=1 ||", "<*", "=>1.0.0"}) {
    auto r = VersionRange::Parse(bad);
    ASSERT_FALSE(r.ok()) << "accepted \"" << bad << "\"";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("invalid version range"));
  }
  auto r = VersionRange::Parse(">=1.4 <two");
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("comparator \"<two\""));
}

}  // namespace
}  // namespace hoist

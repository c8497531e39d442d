#include "shared/logging.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/details/log_msg.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

TEST(LoggingTest, ParsesLevelsAndFormats) {
  EXPECT_EQ(*ParseLogLevel("DEBUG"), spdlog::level::debug);
  EXPECT_EQ(*ParseLogLevel("warning"), spdlog::level::warn);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  auto bad = ParseLogLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"loud\""));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("trace, debug, info"));
  EXPECT_FALSE(ParseLogFormat("xml").ok());
}

TEST(LoggingTest, JsonLinesAreOneValidObjectEach) {
  auto formatter = MakeJsonFormatter("hoistd");
  spdlog::details::log_msg msg("hoistd", spdlog::level::warn, "quote \" newline \n tab \t done");
  spdlog::memory_buf_t buf;
  formatter->format(msg, buf);
  std::string line(buf.data(), buf.size());
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "a record must be exactly one line";
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["component"], "hoistd");
  EXPECT_EQ(j["msg"], "quote \" newline \n tab \t done");
  EXPECT_THAT(j["ts"].get<std::string>(), HasSubstr("T"));
}

}  // namespace
}  // namespace hoist

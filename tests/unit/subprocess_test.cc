#include "shared/subprocess.h"

#include <signal.h>
#include <sys/wait.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

TEST(RunCommandTest, CapturesOutputExitCodeAndStdin) {
  auto r = RunCommand({"sh", "-c", "cat; echo err >&2; exit 3"}, {.stdin_data = "hello"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_text, "hello");
  EXPECT_EQ(r->stderr_text, "err\n");
}

TEST(RunCommandTest, MissingProgramIsNotFound) {
  auto r = RunCommand({"hoist-no-such-program"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("hoist-no-such-program"));
}

TEST(RunCommandTest, TimeoutKillsAndSaysSo) {
  auto r = RunCommand({"sleep", "30"}, {.timeout = absl::Milliseconds(100)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("sleep 30"));
}

TEST(SpawnTest, StartsAndReapsAChild) {
  auto pid = Spawn({"sleep", "30"});
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(WaitForExit(*pid, absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  kill(*pid, SIGKILL);
  auto st = WaitForExit(*pid, absl::Seconds(5));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(WIFSIGNALED(*st));
}

TEST(SpawnTest, ExecFailureIsReported) {
  auto pid = Spawn({"/nonexistent/binary"});
  ASSERT_FALSE(pid.ok());
  EXPECT_THAT(std::string(pid.status().message()), HasSubstr("exec failed"));
}

}  // namespace
}  // namespace hoist

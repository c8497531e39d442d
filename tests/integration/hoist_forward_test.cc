// hoist-forward, the relay an agent runs for services of other hosts: the
// real binary on loopback, relaying to small servers in this process.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/subprocess.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::testing {
namespace {

int ListenOnLoopback(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

// Answers every connection with `name`, then what the client sent, then closes.
class NamedServer {
 public:
  explicit NamedServer(std::string name) : name_(std::move(name)) {
    fd_ = ListenOnLoopback(&port_);
    thread_ = std::thread([this] {
      for (;;) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        std::string reply = name_ + ":";
        char buf[256];
        ssize_t n = read(c, buf, sizeof(buf));
        if (n > 0) reply.append(buf, static_cast<size_t>(n));
        (void)!write(c, reply.data(), reply.size());
        close(c);
      }
    });
  }
  ~NamedServer() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  int port() const { return port_; }

 private:
  std::string name_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

// A port nothing listens on (bound, then released).
int DeadPort() {
  int port = 0;
  int fd = ListenOnLoopback(&port);
  close(fd);
  return port;
}

// Connects to 127.0.0.1:port, sends "ping", returns all it reads ("" when refused or closed).
std::string Call(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    (void)!write(fd, "ping", 4);
    shutdown(fd, SHUT_WR);
    char buf[256];
    for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

class HoistForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeOwnedTempDir("hoist-forward-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    config_ = dir_ + "/targets";
    listen_ = DeadPort();
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      auto code = WaitForExit(pid_, absl::Seconds(5));
      EXPECT_TRUE(code.ok() && *code == 0) << "hoist-forward exits 0 on SIGTERM";
    }
    RemoveTree(dir_);
  }
  void Write(const std::string& text) { ASSERT_TRUE(agent::WriteFileAtomic(config_, text).ok()); }
  void Start() {
    auto pid = Spawn({HOIST_FORWARD_PATH, "--config", config_}, {.log_path = dir_ + "/forward.log"});
    ASSERT_TRUE(pid.ok()) << pid.status();
    pid_ = *pid;
    const bool listens = Eventually(
        absl::Seconds(20),
        [&] {
          int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in addr{};
          addr.sin_family = AF_INET;
          addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          addr.sin_port = htons(static_cast<uint16_t>(listen_));
          const bool up = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
          close(fd);
          return up;
        },
        absl::Milliseconds(10));
    ASSERT_TRUE(listens) << "hoist-forward did not listen on " << listen_;
  }

  std::string dir_, config_;
  int listen_ = 0;
  pid_t pid_ = -1;
};

TEST_F(HoistForwardTest, RelaysToTheTargetsOfTheFileAsItIsNow) {
  NamedServer a("a"), b("b");
  const int dead = DeadPort();
  Write(absl::StrCat(listen_, " 127.0.0.1 ", a.port(), "\nend\n"));
  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_EQ(Call(listen_), "a:ping") << "bytes go both ways";

  // A new file: the next connection goes to the new target, without a restart.
  Write(absl::StrCat(listen_, " 127.0.0.1 ", b.port(), "\nend\n"));
  EXPECT_EQ(Call(listen_), "b:ping");

  // A target that refuses is skipped for the next one.
  Write(absl::StrCat(listen_, " 127.0.0.1 ", dead, " 127.0.0.1 ", a.port(), "\nend\n"));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Call(listen_), "a:ping") << i;

  // Two live targets take turns.
  Write(absl::StrCat(listen_, " 127.0.0.1 ", a.port(), " 127.0.0.1 ", b.port(), "\nend\n"));
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) seen.insert(Call(listen_));
  EXPECT_EQ(seen, (std::set<std::string>{"a:ping", "b:ping"}));

  // No target: the connection is closed at once.
  Write(absl::StrCat(listen_, "\nend\n"));
  EXPECT_EQ(Call(listen_), "");
}

TEST_F(HoistForwardTest, AFileCaughtHalfWrittenIsReadAgain) {
  NamedServer a("a"), b("b");
  Write(absl::StrCat(listen_, " 127.0.0.1 ", a.port(), "\nend\n"));
  ASSERT_NO_FATAL_FAILURE(Start());
  // The agent's upload is cut short (no "end" yet): a caller waits for the
  // whole file instead of dialling a port cut in half.
  Write(absl::StrCat(listen_, " 127.0.0.1 ", b.port() / 10, "\n"));
  std::string got;
  std::thread caller([&] { got = Call(listen_); });
  // The whole file comes late on purpose, while the forwarder reads the
  // half one again (for up to half a second).
  absl::SleepFor(absl::Milliseconds(100));
  Write(absl::StrCat(listen_, " 127.0.0.1 ", b.port(), "\nend\n"));
  caller.join();
  EXPECT_EQ(got, "b:ping");
}

TEST(HoistForwardFlagsTest, BadConfigAndFlagsExitNonZeroAndSayWhy) {
  auto no_config = RunCommand({HOIST_FORWARD_PATH});
  ASSERT_TRUE(no_config.ok());
  EXPECT_EQ(no_config->exit_code, 2);
  EXPECT_THAT(no_config->stderr_text, ::testing::HasSubstr("--config FILE is required"));
  auto missing = RunCommand({HOIST_FORWARD_PATH, "--config", "/nonexistent/targets"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 1);
  EXPECT_THAT(missing->stderr_text, ::testing::HasSubstr("cannot read /nonexistent/targets"));
  auto help = RunCommand({HOIST_FORWARD_PATH, "--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_EQ(help->exit_code, 0);
  EXPECT_THAT(help->stdout_text, ::testing::HasSubstr("LISTEN_PORT ADDRESS PORT"));
}

}  // namespace
}  // namespace hoist::testing

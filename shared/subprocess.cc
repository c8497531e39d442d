#include "shared/subprocess.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace hoist {
namespace {

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::vector<std::string> MergedEnv(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& x : extra) {
      if (x.substr(0, x.find('=')) == key) overridden = true;
    }
    if (!overridden) env.push_back(std::move(entry));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

absl::Status ErrnoError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// The parent's ends of a child's stdin, stdout and stderr; -1 once closed.
struct ChildPipes {
  int in_fd = -1;
  int out_fd = -1;
  int err_fd = -1;
};

// Writes stdin_data to the child (then closes its stdin) while collecting
// its stdout and stderr into *result, until both close or `deadline`
// passes; closes every pipe. True when the deadline passed.
bool ExchangeWithChild(ChildPipes pipes, absl::string_view stdin_data, absl::Time deadline, CommandResult* result) {
  int in_fd = pipes.in_fd, out_fd = pipes.out_fd, err_fd = pipes.err_fd;
  size_t written = 0;
  bool timed_out = false;
  char buf[16384];
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0;
    if (out_fd >= 0) fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[n++] = {err_fd, POLLIN, 0};
    if (in_fd >= 0) fds[n++] = {in_fd, POLLOUT, 0};
    int wait_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
    }
    int r = poll(fds, n, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_fd) {
        ssize_t w = write(in_fd, stdin_data.data() + written, stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = stdin_data.size();
        if (written >= stdin_data.size()) {
          close(in_fd);
          in_fd = -1;
        }
        continue;
      }
      ssize_t got = read(fds[i].fd, buf, sizeof(buf));
      if (got > 0) {
        (fds[i].fd == out_fd ? result->stdout_text : result->stderr_text).append(buf, got);
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        if (fds[i].fd == out_fd) {
          close(out_fd);
          out_fd = -1;
        } else {
          close(err_fd);
          err_fd = -1;
        }
      }
    }
  }
  if (in_fd >= 0) close(in_fd);
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0) close(err_fd);
  return timed_out;
}

}  // namespace

std::string QuoteArgv(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    if (a.find_first_of(" \t'\"$\\") == std::string::npos && !a.empty()) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) {
        if (c == '\'') out += "'\\''";
        else out += c;
      }
      out += '\'';
    }
  }
  return out;
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const CommandOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("RunCommand: empty argv");
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe");
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe");

  std::vector<std::string> args = argv;
  std::vector<std::string> env = MergedEnv(options.extra_env);
  std::vector<char*> c_args = CStrings(args);
  std::vector<char*> c_env = CStrings(env);

  pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) _exit(126);
    execvpe(c_args[0], c_args.data(), c_env.data());
    const char msg[] = "exec failed\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);

  CommandResult result;
  const absl::Time deadline = options.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.timeout;
  ChildPipes pipes{in_pipe[1], out_pipe[0], err_pipe[0]};
  if (options.stdin_data.empty()) {
    close(pipes.in_fd);
    pipes.in_fd = -1;
  } else {
    fcntl(pipes.in_fd, F_SETFL, O_NONBLOCK);
  }
  const bool timed_out = ExchangeWithChild(pipes, options.stdin_data, deadline, &result);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("command timed out after ",
                                                    absl::FormatDuration(options.timeout), ": ",
                                                    QuoteArgv(argv)));
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
    if (result.exit_code == 127 && result.stderr_text == "exec failed\n") {
      return absl::NotFoundError(absl::StrCat("cannot run ", argv[0], ": not found in PATH"));
    }
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
  }
  return result;
}

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("Spawn: empty argv");
  std::vector<std::string> args = argv;
  std::vector<std::string> env = MergedEnv(options.extra_env);
  std::vector<char*> c_args = CStrings(args);
  std::vector<char*> c_env = CStrings(env);
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe");
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork");
  if (pid == 0) {
    close(err_pipe[0]);
    auto fail = [&](int step) {
      int e[2] = {step, errno};
      (void)!write(err_pipe[1], e, sizeof(e));
      _exit(127);
    };
    if (options.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
    }
    if (options.new_process_group) setpgid(0, 0);
    int fd = open(options.log_path.empty() ? "/dev/null" : options.log_path.c_str(),
                  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) fail(1);
    int null_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    dup2(null_in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (options.gid && setgid(*options.gid) != 0) fail(2);
    if (options.uid && setgroups(0, nullptr) != 0) fail(3);
    if (options.uid && setuid(*options.uid) != 0) fail(4);
    execvpe(c_args[0], c_args.data(), c_env.data());
    fail(5);
  }
  close(err_pipe[1]);
  int e[2] = {0, 0};
  ssize_t got;
  while ((got = read(err_pipe[0], e, sizeof(e))) < 0 && errno == EINTR) {
  }
  close(err_pipe[0]);
  if (got > 0) {
    int status;
    waitpid(pid, &status, 0);
    static const char* kSteps[] = {"", "open the log file", "setgid", "setgroups", "setuid", "exec"};
    return absl::InternalError(absl::StrCat("cannot start ", QuoteArgv(argv), ": ",
                                            kSteps[e[0] < 6 ? e[0] : 0], " failed: ",
                                            std::strerror(e[1])));
  }
  return pid;
}

absl::StatusOr<int> WaitForExit(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return ErrnoError(absl::StrCat("waitpid ", pid));
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("process ", pid, " still runs after ",
                                                      absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace hoist

// hoist-forward: the TCP relay an agent runs, one container per remote
// service, so that the service's name resolves on this Docker host too.
//
//   hoist-forward --config /etc/hoist-forward/targets
//
// The config file has one line per listen port:
//
//   LISTEN_PORT ADDRESS PORT [ADDRESS PORT ...]
//   end
//
// The last line is "end": the agent replaces the file in place (Docker's
// archive upload), so a reader that sees no "end" has caught it half
// written and reads it again.
// The listen ports are fixed for the life of the process (the agent makes a
// new container when they change); the targets are read again for every
// connection, so the agent changes them by replacing the file. A connection
// goes to the first target that accepts it, starting one further along the
// list each time. The binary is static and has no dependencies but libc, so
// that it runs in an image of its own file only.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

struct Target {
  std::string address;
  int port = 0;
};

using Config = std::map<int, std::vector<Target>>;

// Parses the config; false (with a reason) when a line is malformed.
bool ParseConfig(const std::string& text, Config* out, std::string* error) {
  Config config;
  std::istringstream lines(text);
  std::string line;
  int number = 0;
  bool ended = false;
  while (std::getline(lines, line)) {
    ++number;
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string s; words >> s;) w.push_back(s);
    if (w.empty() || w[0][0] == '#') continue;
    if (ended) {
      *error = "line " + std::to_string(number) + ": nothing may follow \"end\"";
      return false;
    }
    if (w.size() == 1 && w[0] == "end") {
      ended = true;
      continue;
    }
    auto port_of = [](const std::string& s) {
      char* end = nullptr;
      long v = std::strtol(s.c_str(), &end, 10);
      return (end != nullptr && *end == '\0' && v > 0 && v < 65536) ? static_cast<int>(v) : 0;
    };
    int listen = port_of(w[0]);
    if (listen == 0 || w.size() % 2 != 1) {
      *error = "line " + std::to_string(number) + ": want LISTEN_PORT followed by ADDRESS PORT pairs";
      return false;
    }
    std::vector<Target>& targets = config[listen];
    for (size_t i = 1; i + 1 < w.size(); i += 2) {
      int port = port_of(w[i + 1]);
      if (port == 0) {
        *error = "line " + std::to_string(number) + ": \"" + w[i + 1] + "\" is not a port";
        return false;
      }
      targets.push_back(Target{w[i], port});
    }
  }
  if (!ended) {
    *error = "the file does not end with \"end\" (written just now, or cut short)";
    return false;
  }
  *out = std::move(config);
  return true;
}

bool ReadConfig(const std::string& path, Config* out, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), out, error);
}

// Connects to address:port (a numeric IPv4 or IPv6 address: a static
// binary has no resolver, and the agent sends IPs only) within timeout_ms;
// -1 when it cannot.
int Dial(const Target& t, int timeout_ms) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, t.address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(t.port));
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, t.address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(t.port));
    len = sizeof(*v6);
  } else {
    return -1;
  }
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    bool ok = false;
    if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t err_len = sizeof(err);
      ok = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) == 0 && err == 0;
    }
    if (!ok) {
      close(fd);
      return -1;
    }
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

// Copies bytes both ways until both sides have finished sending.
void Relay(int a, int b) {
  const int one = 1;
  setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  bool open[2] = {true, true};  // a->b, b->a still carry data
  char buf[64 * 1024];
  while (open[0] || open[1]) {
    pollfd p[2] = {{a, static_cast<short>(open[0] ? POLLIN : 0), 0}, {b, static_cast<short>(open[1] ? POLLIN : 0), 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || (p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      int from = i == 0 ? a : b, to = i == 0 ? b : a;
      ssize_t n = read(from, buf, sizeof(buf));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        open[i] = false;
        shutdown(to, SHUT_WR);
        if (n < 0) open[0] = open[1] = false;  // reset: drop the whole connection
        continue;
      }
      for (ssize_t sent = 0; sent < n;) {
        ssize_t w = write(to, buf + sent, static_cast<size_t>(n - sent));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          open[0] = open[1] = false;
          break;
        }
        sent += w;
      }
    }
  }
  close(a);
  close(b);
}

int Listen(int port) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool v6 = fd >= 0;
  if (!v6) fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (v6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    addr.sin6_port = htons(static_cast<uint16_t>(port));
    rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  if (rc != 0 || listen(fd, 512) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void Serve(int port, int listener, const std::string& config_path) {
  std::atomic<unsigned> turn{0};
  for (;;) {
    int client = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) usleep(100 * 1000);
        continue;
      }
      std::fprintf(stderr, "hoist-forward: accept on %d: %s\n", port, std::strerror(errno));
      std::exit(1);
    }
    unsigned start = turn++;
    std::thread([client, port, start, config_path] {
      Config config;
      std::string error;
      bool read = false;
      for (int attempt = 0; attempt < 50 && !read; ++attempt) {  // the agent may be writing it
        read = ReadConfig(config_path, &config, &error);
        if (!read) usleep(10 * 1000);
      }
      if (!read) {
        std::fprintf(stderr, "hoist-forward: %s\n", error.c_str());
        close(client);
        return;
      }
      const std::vector<Target>& targets = config[port];
      for (size_t k = 0; k < targets.size(); ++k) {
        const Target& t = targets[(start + k) % targets.size()];
        int upstream = Dial(t, 2000);
        if (upstream >= 0) {
          Relay(client, upstream);
          return;
        }
        std::fprintf(stderr, "hoist-forward: %d -> %s:%d refused or unreachable\n", port, t.address.c_str(), t.port);
      }
      if (targets.empty()) std::fprintf(stderr, "hoist-forward: port %d has no target\n", port);
      close(client);
    }).detach();
  }
}

void Stop(int) { _exit(0); }

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: hoist-forward --config FILE\n"
          "Relays TCP connections: each line of FILE is LISTEN_PORT ADDRESS PORT [ADDRESS PORT ...].\n"
          "Targets are read again for every connection; listen ports at start.\n");
      return 0;
    } else {
      std::fprintf(stderr, "hoist-forward: unknown argument \"%s\" (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "hoist-forward: --config FILE is required\n");
    return 2;
  }
  // PID 1 in its container: without handlers, SIGTERM would be ignored.
  signal(SIGTERM, Stop);
  signal(SIGINT, Stop);
  signal(SIGPIPE, SIG_IGN);
  Config config;
  std::string error;
  if (!ReadConfig(config_path, &config, &error)) {
    std::fprintf(stderr, "hoist-forward: %s\n", error.c_str());
    return 1;
  }
  if (config.empty()) {
    std::fprintf(stderr, "hoist-forward: %s names no listen port\n", config_path.c_str());
    return 1;
  }
  std::vector<std::thread> servers;
  for (const auto& [port, targets] : config) {
    int fd = Listen(port);
    if (fd < 0) {
      std::fprintf(stderr, "hoist-forward: cannot listen on port %d: %s\n", port, std::strerror(errno));
      return 1;
    }
    std::fprintf(stderr, "hoist-forward: port %d -> %zu target(s)\n", port, targets.size());
    servers.emplace_back(Serve, port, fd, config_path);
  }
  for (std::thread& t : servers) t.join();
  return 0;
}

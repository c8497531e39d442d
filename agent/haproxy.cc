#include "agent/haproxy.h"

#include <sys/un.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "shared/proto_time.h"

namespace hoist::agent {
namespace {

// HAProxy's SRV_ADMF_* bits in srv_admin_state. 0x04 (CMAINT, "disabled" in
// the configuration) is only a record: `set server ... state ready` serves
// such a server and leaves the bit set, so it is not part of the mask.
constexpr int kAdminForcedMaint = 0x01;
constexpr int kAdminInheritedMaint = 0x02;
constexpr int kAdminForcedDrain = 0x08;
constexpr int kAdminInheritedDrain = 0x10;
constexpr int kAdminResolutionMaint = 0x20;
constexpr int kAdminHostnameMaint = 0x40;
constexpr int kAdminMaintMask = kAdminForcedMaint | kAdminInheritedMaint | kAdminResolutionMaint | kAdminHostnameMaint;
constexpr int kAdminDrainMask = kAdminForcedDrain | kAdminInheritedDrain;

constexpr absl::Duration kDefaultDrainTimeout = absl::Seconds(10);
constexpr absl::Duration kPollInterval = absl::Milliseconds(100);
constexpr size_t kMaxNameLength = 100;

bool NameCharsOk(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

hoist::v1::BackendState StateOf(int admin_state) {
  if ((admin_state & kAdminMaintMask) != 0) return hoist::v1::BACKEND_STATE_MAINT;
  if ((admin_state & kAdminDrainMask) != 0) return hoist::v1::BACKEND_STATE_DRAIN;
  return hoist::v1::BACKEND_STATE_READY;
}

hoist::v1::BackendState Wanted(hoist::v1::BackendState s) {
  return s == hoist::v1::BACKEND_STATE_UNSPECIFIED ? hoist::v1::BACKEND_STATE_READY : s;
}

absl::string_view StateWord(hoist::v1::BackendState s) {
  switch (Wanted(s)) {
    case hoist::v1::BACKEND_STATE_DRAIN: return "drain";
    case hoist::v1::BACKEND_STATE_MAINT: return "maint";
    default: return "ready";
  }
}

std::string Key(absl::string_view backend, absl::string_view server) { return absl::StrCat(backend, "/", server); }

// Lines of an answer without the trailing empty ones.
std::vector<absl::string_view> Lines(absl::string_view text) {
  return absl::StrSplit(text, '\n', absl::SkipWhitespace());
}

// The runtime API over a stream socket: TCP, or a unix socket in a
// directory only the agent can reach.
class StreamSocket final : public HaproxySocket {
 public:
  StreamSocket(std::string where, sockaddr_storage addr, socklen_t addr_len, std::string error,
               absl::Duration timeout)
      : where_(std::move(where)), addr_(addr), addr_len_(addr_len), error_(std::move(error)), timeout_(timeout) {}

  absl::StatusOr<std::string> Send(absl::string_view command) override {
    const std::string& where = where_;
    if (!error_.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", error_));
    int fd = socket(addr_.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return absl::UnavailableError(absl::StrCat(where, ": socket: ", std::strerror(errno)));
    struct Closer {
      int fd;
      ~Closer() { close(fd); }
    } closer{fd};
    absl::Time deadline = absl::Now() + timeout_;
    auto wait = [&](short events) -> absl::Status {
      for (;;) {
        int ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
        pollfd p{fd, events, 0};
        int n = poll(&p, 1, ms);
        if (n > 0) return absl::OkStatus();
        if (n == 0) return absl::DeadlineExceededError(absl::StrCat(where, ": no answer within ", absl::FormatDuration(timeout_)));
        if (errno != EINTR) return absl::UnavailableError(absl::StrCat(where, ": poll: ", std::strerror(errno)));
      }
    };
    sockaddr_storage addr = addr_;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len_) != 0) {
      if (errno != EINPROGRESS) return absl::UnavailableError(absl::StrCat(where, ": connect: ", std::strerror(errno)));
      if (absl::Status s = wait(POLLOUT); !s.ok()) return s;
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return absl::UnavailableError(absl::StrCat(where, ": connect: ", std::strerror(err)));
    }
    std::string line = absl::StrCat(command, "\n");
    size_t sent = 0;
    while (sent < line.size()) {
      ssize_t n = send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (absl::Status s = wait(POLLOUT); !s.ok()) return s;
      } else {
        return absl::UnavailableError(absl::StrCat(where, ": send: ", std::strerror(errno)));
      }
    }
    // Non-interactive mode: HAProxy answers and closes the connection.
    std::string answer;
    char buf[16384];
    for (;;) {
      if (absl::Status s = wait(POLLIN); !s.ok()) return s;
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        answer.append(buf, static_cast<size_t>(n));
      } else if (n == 0) {
        break;
      } else if (errno != EAGAIN && errno != EINTR) {
        // A reset before any byte: Docker's port proxy with nothing listening behind it.
        if (answer.empty()) return absl::UnavailableError(absl::StrCat(where, ": recv: ", std::strerror(errno)));
        break;
      }
    }
    // Even an empty success is one newline; zero bytes means nobody answered.
    if (answer.empty()) return absl::UnavailableError(absl::StrCat(where, ": closed without answering (not listening yet?)"));
    return answer;
  }

 private:
  const std::string where_;
  const sockaddr_storage addr_;
  const socklen_t addr_len_;
  // Set when the address itself is bad: every Send says so.
  const std::string error_;
  const absl::Duration timeout_;
};

}  // namespace

std::string HaproxyBackendName(absl::string_view route) { return absl::StrCat("be_", route); }

absl::Status ValidateProxyConfig(absl::string_view field, const hoist::v1::ProxyConfig& config) {
  std::set<std::string> routes;
  std::set<uint32_t> ports;
  for (int i = 0; i < config.frontends_size(); ++i) {
    const auto& f = config.frontends(i);
    std::string at = absl::StrCat(field, ".frontends[", i, "]");
    if (!NameCharsOk(f.route())) {
      return Invalid(absl::StrCat(at, ".route"),
                     absl::StrCat("\"", f.route(), "\" is not a route name (letters, digits, '-', '_', '.')"));
    }
    if (!routes.insert(f.route()).second) return Invalid(absl::StrCat(at, ".route"), absl::StrCat("duplicate route \"", f.route(), "\""));
    if (f.listen_port() == 0 || f.listen_port() > 65535) {
      return Invalid(absl::StrCat(at, ".listen_port"), absl::StrCat(f.listen_port(), " is not a port (1-65535)"));
    }
    if (f.listen_port() == kHaproxyRuntimePort) {
      return Invalid(absl::StrCat(at, ".listen_port"),
                     absl::StrCat("port ", kHaproxyRuntimePort, " is the proxy's runtime API; pick another listen port"));
    }
    if (!ports.insert(f.listen_port()).second) {
      return Invalid(absl::StrCat(at, ".listen_port"), absl::StrCat("port ", f.listen_port(), " is used by two routes"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateProxyUpdate(const hoist::v1::ProxyUpdate& update) {
  if (update.service().empty()) return Invalid("proxy_update.service", "missing; name the proxy service to change");
  if (update.drain_timeout().seconds() < 0 || update.drain_timeout().nanos() < 0) {
    return Invalid("proxy_update.drain_timeout", "negative");
  }
  std::set<std::string> routes;
  for (int i = 0; i < update.routes_size(); ++i) {
    const auto& r = update.routes(i);
    std::string at = absl::StrCat("proxy_update.routes[", i, "]");
    if (!NameCharsOk(r.name())) {
      return Invalid(absl::StrCat(at, ".name"), absl::StrCat("\"", r.name(), "\" is not a route name (letters, digits, '-', '_', '.')"));
    }
    if (!routes.insert(r.name()).second) return Invalid(absl::StrCat(at, ".name"), absl::StrCat("duplicate route \"", r.name(), "\""));
    std::set<std::string> names;
    for (int j = 0; j < r.backends_size(); ++j) {
      const auto& b = r.backends(j);
      std::string bt = absl::StrCat(at, ".backends[", j, "]");
      if (!NameCharsOk(b.name())) {
        return Invalid(absl::StrCat(bt, ".name"),
                       absl::StrCat("\"", b.name(), "\" is not a server name HAProxy accepts (letters, digits, '-', '_', '.', at most ",
                                    kMaxNameLength, ")"));
      }
      if (!names.insert(b.name()).second) return Invalid(absl::StrCat(bt, ".name"), absl::StrCat("duplicate backend \"", b.name(), "\""));
      if (b.address().empty() || b.address().size() > 253 ||
          std::any_of(b.address().begin(), b.address().end(), [](char c) {
            return !(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':');
          })) {
        return Invalid(absl::StrCat(bt, ".address"), absl::StrCat("\"", b.address(), "\" is not an IP address, host or container name"));
      }
      if (b.port() == 0 || b.port() > 65535) return Invalid(absl::StrCat(bt, ".port"), absl::StrCat(b.port(), " is not a port (1-65535)"));
      if (!hoist::v1::BackendState_IsValid(b.state())) return Invalid(absl::StrCat(bt, ".state"), "unknown state");
    }
  }
  return absl::OkStatus();
}

std::string RenderHaproxyConfig(const hoist::v1::ProxyConfig& config, const std::vector<HaproxyServer>& servers) {
  std::string out = absl::StrCat(
      "# Written by hoist-agent. Servers change through the runtime API without a\n"
      "# reload; the agent rewrites this file after each change so that a restarted\n"
      "# proxy comes back with them.\n"
      "global\n"
      // Mode 666: the host directory it is in (0700, the agent's) is the guard.
      "    stats socket ", kHaproxyRuntimeSocket, " mode 666 level admin\n"
      "    stats timeout 30s\n"
      "    maxconn 4096\n"
      "\n"
      "defaults\n"
      "    mode http\n"
      "    timeout connect 2s\n"
      "    timeout client 60s\n"
      "    timeout server 60s\n"
      "    timeout http-keep-alive 10s\n"
      // A request whose connection fails, or that a stopping server drops
      // unanswered, is retried on another server instead of failing.
      "    retries 3\n"
      "    option redispatch 1\n"
      "    retry-on conn-failure empty-response response-timeout\n");
  for (const auto& f : config.frontends()) {
    std::string backend = HaproxyBackendName(f.route());
    absl::StrAppend(&out, "\nfrontend fe_", f.route(), "\n    bind :", f.listen_port(), "\n    default_backend ", backend,
                    "\n\nbackend ", backend, "\n    balance roundrobin\n");
    for (const HaproxyServer& s : servers) {
      if (s.backend != backend) continue;
      absl::StrAppend(&out, "    server ", s.name, " ", s.address, ":", s.port,
                      s.state == hoist::v1::BACKEND_STATE_READY ? "" : " disabled", "\n");
    }
  }
  return out;
}

absl::StatusOr<std::vector<HaproxyServer>> ParseServersState(absl::string_view text) {
  std::vector<absl::string_view> lines = Lines(text);
  if (lines.empty() || absl::StripAsciiWhitespace(lines[0]) != "1") {
    return absl::InternalError(absl::StrCat("show servers state: expected format version 1, got \"",
                                            lines.empty() ? "" : lines[0], "\""));
  }
  std::map<std::string, size_t> column;
  std::vector<HaproxyServer> out;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (absl::StartsWith(line, "#")) {
      for (size_t c = 1; c < f.size(); ++c) column[std::string(f[c])] = c - 1;
      continue;
    }
    for (const char* needed : {"be_name", "srv_name", "srv_addr", "srv_admin_state", "srv_port"}) {
      if (!column.contains(needed) || column[needed] >= f.size()) {
        return absl::InternalError(absl::StrCat("show servers state: no column ", needed, " in line \"", line, "\""));
      }
    }
    HaproxyServer s;
    s.backend = std::string(f[column["be_name"]]);
    s.name = std::string(f[column["srv_name"]]);
    s.address = f[column["srv_addr"]] == "-" ? "" : std::string(f[column["srv_addr"]]);
    if (!absl::SimpleAtoi(f[column["srv_admin_state"]], &s.admin_state) ||
        !absl::SimpleAtoi(f[column["srv_port"]], &s.port)) {
      return absl::InternalError(absl::StrCat("show servers state: bad number in line \"", line, "\""));
    }
    s.state = StateOf(s.admin_state);
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::map<std::string, int>> ParseCurrentSessions(absl::string_view csv) {
  std::vector<absl::string_view> lines = Lines(csv);
  if (lines.empty() || !absl::StartsWith(lines[0], "# ")) {
    return absl::InternalError(absl::StrCat("show stat: expected a CSV header, got \"", lines.empty() ? "" : lines[0], "\""));
  }
  std::vector<absl::string_view> header = absl::StrSplit(lines[0].substr(2), ',');
  auto scur = std::find(header.begin(), header.end(), "scur");
  if (header.size() < 2 || header[0] != "pxname" || header[1] != "svname" || scur == header.end()) {
    return absl::InternalError(absl::StrCat("show stat: header without pxname, svname and scur: \"", lines[0], "\""));
  }
  size_t at = static_cast<size_t>(scur - header.begin());
  std::map<std::string, int> out;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<absl::string_view> f = absl::StrSplit(lines[i], ',');
    if (f.size() <= at || f[1] == "FRONTEND" || f[1] == "BACKEND") continue;
    int sessions = 0;
    if (!absl::SimpleAtoi(f[at], &sessions)) {
      return absl::InternalError(absl::StrCat("show stat: bad scur in line \"", lines[i], "\""));
    }
    out[Key(f[0], f[1])] = sessions;
  }
  return out;
}

std::unique_ptr<HaproxySocket> TcpHaproxySocket(std::string host, uint16_t port, absl::Duration timeout) {
  sockaddr_storage storage{};
  auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
  addr->sin_family = AF_INET;
  addr->sin_port = htons(port);
  std::string error;
  if (inet_pton(AF_INET, host.c_str(), &addr->sin_addr) != 1) error = "not an IPv4 address";
  return std::make_unique<StreamSocket>(absl::StrCat("HAProxy's runtime API at ", host, ":", port), storage,
                                        sizeof(sockaddr_in), error, timeout);
}

std::unique_ptr<HaproxySocket> UnixHaproxySocket(const std::string& path, absl::Duration timeout) {
  sockaddr_storage storage{};
  auto* addr = reinterpret_cast<sockaddr_un*>(&storage);
  addr->sun_family = AF_UNIX;
  std::string error;
  if (path.size() >= sizeof(addr->sun_path)) {
    error = absl::StrCat("the path is ", path.size(), " bytes, longer than a unix socket's ", sizeof(addr->sun_path) - 1,
                         "; use a shorter --state-dir");
  } else {
    std::memcpy(addr->sun_path, path.data(), path.size());
  }
  return std::make_unique<StreamSocket>(absl::StrCat("HAProxy's runtime API at ", path), storage, sizeof(sockaddr_un),
                                        error, timeout);
}

absl::Status HaproxyRuntime::WaitReady(absl::Time deadline) {
  absl::Status last;
  for (;;) {
    auto backends = Backends();
    if (backends.ok()) return absl::OkStatus();
    last = backends.status();
    if (!absl::IsUnavailable(last) && !absl::IsDeadlineExceeded(last)) return last;
    if (clock_->Now() + kPollInterval >= deadline) {
      return absl::UnavailableError(absl::StrCat("the proxy's runtime API does not answer: ", last.message()));
    }
    clock_->SleepFor(kPollInterval);
  }
}

absl::StatusOr<std::vector<std::string>> HaproxyRuntime::Backends() {
  auto answer = socket_->Send("show backend");
  if (!answer.ok()) return answer.status();
  std::vector<absl::string_view> lines = Lines(*answer);
  if (lines.empty() || !absl::StartsWith(lines[0], "# name")) {
    return absl::InternalError(absl::StrCat("show backend: unexpected answer \"", absl::StripAsciiWhitespace(*answer), "\""));
  }
  std::vector<std::string> out;
  for (size_t i = 1; i < lines.size(); ++i) out.emplace_back(absl::StripAsciiWhitespace(lines[i]));
  return out;
}

absl::StatusOr<std::vector<HaproxyServer>> HaproxyRuntime::Servers() {
  auto answer = socket_->Send("show servers state");
  if (!answer.ok()) return answer.status();
  return ParseServersState(*answer);
}

absl::StatusOr<std::map<std::string, int>> HaproxyRuntime::Sessions() {
  auto answer = socket_->Send("show stat");
  if (!answer.ok()) return answer.status();
  return ParseCurrentSessions(*answer);
}

absl::Status HaproxyRuntime::Command(const std::string& command, std::initializer_list<absl::string_view> ok_answers,
                                     HaproxyApplyReport* report) {
  auto answer = socket_->Send(command);
  if (!answer.ok()) return absl::Status(answer.status().code(), absl::StrCat("`", command, "`: ", answer.status().message()));
  report->commands.push_back(command);
  absl::string_view text = absl::StripAsciiWhitespace(*answer);
  if (text.empty()) return absl::OkStatus();
  for (absl::string_view ok : ok_answers) {
    if (absl::StartsWith(text, ok)) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat("HAProxy refused `", command, "`: ", text));
}

absl::StatusOr<HaproxyApplyReport> HaproxyRuntime::Apply(const hoist::v1::ProxyUpdate& update,
                                                         const std::map<std::string, std::string>& addresses,
                                                         absl::Duration drain_timeout,
                                                         const std::function<bool()>& stopping) {
  if (drain_timeout <= absl::ZeroDuration()) drain_timeout = kDefaultDrainTimeout;
  // Checks: nothing is changed unless every route and address is known.
  if (absl::Status s = CheckRoutes(update, addresses); !s.ok()) return s;
  auto current = Servers();
  if (!current.ok()) return current.status();
  std::map<std::string, HaproxyServer> now;
  for (HaproxyServer& s : *current) now[Key(s.backend, s.name)] = std::move(s);

  HaproxyApplyReport report;
  // 1. Capacity first: new servers in, listed servers pointed at their address, READY ones serving.
  if (absl::Status s = AddCapacity(update, addresses, &now, &report); !s.ok()) return s;
  // 2. Drain: servers asked to, and servers no longer listed; maintenance where asked.
  std::vector<std::string> watched;
  std::vector<std::string> removed;
  if (absl::Status s = Drain(update, &now, &watched, &removed, &report); !s.ok()) return s;
  // 3. Wait until the drained servers hold no session, or the drain timeout.
  if (absl::Status s = WaitDrained(watched, drain_timeout, stopping, &report); !s.ok()) return s;
  // 4. Remove the servers no longer listed.
  if (absl::Status s = RemoveServers(removed, &now, &report); !s.ok()) return s;
  // 5. Read back what HAProxy does now.
  if (absl::Status s = CheckApplied(update, addresses, removed); !s.ok()) return s;
  return report;
}

absl::Status HaproxyRuntime::CheckRoutes(const hoist::v1::ProxyUpdate& update,
                                         const std::map<std::string, std::string>& addresses) {
  auto backends = Backends();
  if (!backends.ok()) return backends.status();
  std::vector<std::string> known_routes;
  for (const std::string& b : *backends) {
    if (absl::StartsWith(b, "be_")) known_routes.push_back(b.substr(3));
  }
  for (int i = 0; i < update.routes_size(); ++i) {
    const auto& r = update.routes(i);
    if (std::find(backends->begin(), backends->end(), HaproxyBackendName(r.name())) == backends->end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "proxy_update.routes[", i, "].name: the proxy has no route \"", r.name(), "\"; its routes: ",
          known_routes.empty() ? "(none)" : absl::StrJoin(known_routes, ", "),
          ". Routes are fixed when the proxy starts: add the route to the proxy service and replace it"));
    }
    for (int j = 0; j < r.backends_size(); ++j) {
      if (!addresses.contains(r.backends(j).address())) {
        return absl::InvalidArgumentError(absl::StrCat("proxy_update.routes[", i, "].backends[", j, "].address: \"",
                                                       r.backends(j).address(), "\" does not resolve to an IP"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HaproxyRuntime::AddCapacity(const hoist::v1::ProxyUpdate& update,
                                         const std::map<std::string, std::string>& addresses,
                                         std::map<std::string, HaproxyServer>* servers, HaproxyApplyReport* report) {
  std::map<std::string, HaproxyServer>& now = *servers;
  for (const auto& r : update.routes()) {
    std::string be = HaproxyBackendName(r.name());
    for (const auto& b : r.backends()) {
      std::string key = Key(be, b.name());
      const std::string& ip = addresses.at(b.address());
      auto it = now.find(key);
      if (it == now.end()) {
        // A new server starts in maintenance.
        std::string addr = absl::StrContains(ip, ':') ? absl::StrCat("[", ip, "]") : ip;
        if (absl::Status s = Command(absl::StrCat("add server ", key, " ", addr, ":", b.port()), {"New server registered"}, report);
            !s.ok()) {
          return s;
        }
        HaproxyServer added;
        added.backend = be;
        added.name = b.name();
        added.address = ip;
        added.port = b.port();
        added.state = hoist::v1::BACKEND_STATE_MAINT;
        it = now.emplace(key, std::move(added)).first;
      } else if (it->second.address != ip || it->second.port != b.port()) {
        if (absl::Status s = Command(absl::StrCat("set server ", key, " addr ", ip, " port ", b.port()),
                                     {"IP changed", "no need to change", "port changed"}, report);
            !s.ok()) {
          return s;
        }
      }
      if (Wanted(b.state()) == hoist::v1::BACKEND_STATE_READY && it->second.state != hoist::v1::BACKEND_STATE_READY) {
        if (absl::Status s = Command(absl::StrCat("set server ", key, " state ready"), {}, report); !s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HaproxyRuntime::Drain(const hoist::v1::ProxyUpdate& update, std::map<std::string, HaproxyServer>* servers,
                                   std::vector<std::string>* watched, std::vector<std::string>* removed,
                                   HaproxyApplyReport* report) {
  std::map<std::string, HaproxyServer>& now = *servers;
  for (const auto& r : update.routes()) {
    std::string be = HaproxyBackendName(r.name());
    std::set<std::string> listed;
    for (const auto& b : r.backends()) {
      std::string key = Key(be, b.name());
      listed.insert(key);
      hoist::v1::BackendState want = Wanted(b.state());
      if (want == hoist::v1::BACKEND_STATE_READY || now[key].state == want) {
        if (want == hoist::v1::BACKEND_STATE_DRAIN) watched->push_back(key);
        continue;
      }
      if (absl::Status s = Command(absl::StrCat("set server ", key, " state ", StateWord(want)), {}, report); !s.ok()) {
        return s;
      }
      if (want == hoist::v1::BACKEND_STATE_DRAIN) watched->push_back(key);
    }
    for (const auto& [key, server] : now) {
      if (server.backend != be || listed.contains(key)) continue;
      removed->push_back(key);
      if (server.state != hoist::v1::BACKEND_STATE_READY) continue;
      if (absl::Status s = Command(absl::StrCat("set server ", key, " state drain"), {}, report); !s.ok()) return s;
      watched->push_back(key);
    }
  }
  return absl::OkStatus();
}

absl::Status HaproxyRuntime::WaitDrained(const std::vector<std::string>& watched, absl::Duration drain_timeout,
                                         const std::function<bool()>& stopping, HaproxyApplyReport* report) {
  absl::Time drain_deadline = clock_->Now() + drain_timeout;
  while (!watched.empty()) {
    auto sessions = Sessions();
    if (!sessions.ok()) return sessions.status();
    int open = 0;
    for (const std::string& key : watched) open += (*sessions)[key];
    if (open == 0) break;
    if (clock_->Now() >= drain_deadline || (stopping && stopping())) {
      report->drained_sessions_left = open;
      break;
    }
    clock_->SleepFor(kPollInterval);
  }
  return absl::OkStatus();
}

absl::Status HaproxyRuntime::RemoveServers(const std::vector<std::string>& removed,
                                           std::map<std::string, HaproxyServer>* servers, HaproxyApplyReport* report) {
  std::map<std::string, HaproxyServer>& now = *servers;
  for (const std::string& key : removed) {
    if (now[key].state != hoist::v1::BACKEND_STATE_MAINT) {
      if (absl::Status s = Command(absl::StrCat("set server ", key, " state maint"), {}, report); !s.ok()) return s;
    }
    if (absl::Status s = Command(absl::StrCat("shutdown sessions server ", key), {}, report); !s.ok()) return s;
    if (absl::Status s = Command(absl::StrCat("del server ", key), {"Server deleted"}, report); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status HaproxyRuntime::CheckApplied(const hoist::v1::ProxyUpdate& update,
                                          const std::map<std::string, std::string>& addresses,
                                          const std::vector<std::string>& removed) {
  auto after = Servers();
  if (!after.ok()) return after.status();
  std::map<std::string, const HaproxyServer*> got;
  for (const HaproxyServer& s : *after) got[Key(s.backend, s.name)] = &s;
  for (const auto& r : update.routes()) {
    std::string be = HaproxyBackendName(r.name());
    for (const auto& b : r.backends()) {
      std::string key = Key(be, b.name());
      auto it = got.find(key);
      if (it == got.end()) return absl::InternalError(absl::StrCat("after the update, server ", key, " is missing"));
      const HaproxyServer& s = *it->second;
      if (s.address != addresses.at(b.address()) || s.port != b.port() || s.state != Wanted(b.state())) {
        return absl::InternalError(absl::StrCat("after the update, server ", key, " is ", s.address, ":", s.port, " ",
                                                StateWord(s.state), " (admin state ", s.admin_state, "), not ",
                                                addresses.at(b.address()), ":", b.port(), " ", StateWord(b.state())));
      }
    }
    for (const std::string& key : removed) {
      if (got.contains(key)) return absl::InternalError(absl::StrCat("after the update, server ", key, " is still there"));
    }
  }
  return absl::OkStatus();
}

}  // namespace hoist::agent

#pragma once

// The reverse proxy Hoist drives: HAProxy (2.6 or later) in a container of the
// stack, changed through its runtime API so that no reload ever drops a
// connection. This file holds the pieces that need no Docker: the
// configuration the agent writes into a proxy container, the runtime API
// client (commands and the parsing of their answers), and Apply, which turns
// one ProxyUpdate into per-server runtime commands and checks the result.
//
// Contract with the proxy image (deploy/build-proxy-image.sh builds one):
// HAProxy at kHaproxyBinary, reading kHaproxyConfigPath. Each route becomes
// frontend "fe_<route>" on its listen port and backend "be_<route>"; the
// runtime API listens on a unix socket, kHaproxyRuntimeSocket, in a directory
// the agent bind-mounts from its state directory (mode 0700): no other
// container, and no network peer, can reach it. (Proxies started by older
// agents listen on kHaproxyRuntimePort, published on 127.0.0.1; the agent
// still drives those until they are replaced.)

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "hoist/v1/agent.pb.h"
#include "shared/clock.h"

namespace hoist::agent {

inline constexpr absl::string_view kHaproxyBinary = "/usr/sbin/haproxy";
inline constexpr absl::string_view kHaproxyConfigDir = "/etc/haproxy";
inline constexpr absl::string_view kHaproxyConfigFile = "haproxy.cfg";
inline constexpr absl::string_view kHaproxyConfigPath = "/etc/haproxy/haproxy.cfg";
inline constexpr uint16_t kHaproxyRuntimePort = 9999;
inline constexpr absl::string_view kHaproxyRuntimeDir = "/run/hoist-proxy";
inline constexpr absl::string_view kHaproxyRuntimeSocket = "/run/hoist-proxy/admin.sock";

// "be_<route>": the backend of a route.
std::string HaproxyBackendName(absl::string_view route);

// One server of a backend, as HAProxy reports it (`show servers state`) or as
// the agent writes it into the configuration.
struct HaproxyServer {
  std::string backend;
  std::string name;
  std::string address;  // an IP; HAProxy's dynamic servers resolve no names
  uint32_t port = 0;
  int admin_state = 0;  // HAProxy's SRV_ADMF_* bits (see kAdmin* in haproxy.cc)
  hoist::v1::BackendState state = hoist::v1::BACKEND_STATE_READY;  // derived from admin_state
};

// Checks a proxy config's frontends: route names HAProxy accepts
// ([A-Za-z0-9_.-], unique), listen ports 1-65535, unique and not the runtime
// port. INVALID_ARGUMENT naming `field`.
absl::Status ValidateProxyConfig(absl::string_view field, const hoist::v1::ProxyConfig& config);

// Checks what can be checked of an update without the proxy: route and
// backend names, ports, states. INVALID_ARGUMENT naming the field.
absl::Status ValidateProxyUpdate(const hoist::v1::ProxyUpdate& update);

// The HAProxy configuration of a proxy: the runtime API, one frontend and one
// backend per route, and `servers` written in (READY ones enabled, others
// disabled) so that a restarted proxy comes back with the last applied set.
std::string RenderHaproxyConfig(const hoist::v1::ProxyConfig& config, const std::vector<HaproxyServer>& servers);

// Parses the answer of `show servers state` (format version 1).
absl::StatusOr<std::vector<HaproxyServer>> ParseServersState(absl::string_view text);

// Parses the CSV answer of `show stat`: "backend/server" -> current sessions.
absl::StatusOr<std::map<std::string, int>> ParseCurrentSessions(absl::string_view csv);

// One command, one answer: HAProxy's runtime API in non-interactive mode.
class HaproxySocket {
 public:
  virtual ~HaproxySocket() = default;
  // Sends `command` and returns HAProxy's whole answer. UNAVAILABLE when the
  // API cannot be reached or closes without answering (not listening yet).
  virtual absl::StatusOr<std::string> Send(absl::string_view command) = 0;
};

// The runtime API over TCP: proxies started before the API moved to a unix
// socket published it on loopback.
std::unique_ptr<HaproxySocket> TcpHaproxySocket(std::string host, uint16_t port, absl::Duration timeout);
// The runtime API over the unix socket the agent bind-mounts into the proxy
// (kHaproxyRuntimeDir), at its path on the host.
std::unique_ptr<HaproxySocket> UnixHaproxySocket(const std::string& path, absl::Duration timeout);

// What one ProxyUpdate did, for the step's log and progress.
struct HaproxyApplyReport {
  std::vector<std::string> commands;  // every runtime command sent, in order
  int drained_sessions_left = 0;      // sessions still open on drained servers at the timeout
};

// Drives one proxy through its runtime API.
class HaproxyRuntime {
 public:
  // Borrows socket and clock.
  HaproxyRuntime(HaproxySocket* socket, Clock* clock) : socket_(socket), clock_(clock) {}

  // Waits until the API answers (a proxy that just started may not listen
  // yet) or `deadline`; UNAVAILABLE with the last error after it.
  absl::Status WaitReady(absl::Time deadline);

  // Every server of every backend.
  absl::StatusOr<std::vector<HaproxyServer>> Servers();

  // Names of the proxy's backends.
  absl::StatusOr<std::vector<std::string>> Backends();

  // Makes the routes of `update` true, with `addresses` mapping each
  // backend's address to the IP the proxy connects to. Checks first, changes
  // nothing on failure: every route has a backend here (else
  // INVALID_ARGUMENT naming the route and the proxy's routes) and every
  // address resolves. Then, route by route: new servers are added and
  // enabled (or drained, or left in maintenance, as asked), before any
  // server is drained; servers asked to drain and servers no longer listed
  // are drained; waits until they hold no session or `drain_timeout`;
  // removes the unlisted ones (maintenance, then delete); finally reads
  // `show servers state` back and fails (INTERNAL, naming the server) when
  // it differs from what was asked. `stopping` is polled during the wait.
  absl::StatusOr<HaproxyApplyReport> Apply(const hoist::v1::ProxyUpdate& update,
                                           const std::map<std::string, std::string>& addresses,
                                           absl::Duration drain_timeout, const std::function<bool()>& stopping);

 private:
  // Sends a command whose successful answer is empty or one of `ok_answers`.
  absl::Status Command(const std::string& command, std::initializer_list<absl::string_view> ok_answers,
                       HaproxyApplyReport* report);
  absl::StatusOr<std::map<std::string, int>> Sessions();

  // Apply's steps, in order. `servers` is the proxy's servers by
  // "backend/server" as Apply has left them so far.
  // Every route of the update has a backend here and every address an IP.
  absl::Status CheckRoutes(const hoist::v1::ProxyUpdate& update, const std::map<std::string, std::string>& addresses);
  // New servers added, moved ones pointed at their address, READY ones serving.
  absl::Status AddCapacity(const hoist::v1::ProxyUpdate& update, const std::map<std::string, std::string>& addresses,
                           std::map<std::string, HaproxyServer>* servers, HaproxyApplyReport* report);
  // Servers drained or put in maintenance as asked, and the unlisted ones
  // (*removed) drained; *watched gets every server draining.
  absl::Status Drain(const hoist::v1::ProxyUpdate& update, std::map<std::string, HaproxyServer>* servers,
                     std::vector<std::string>* watched, std::vector<std::string>* removed,
                     HaproxyApplyReport* report);
  // Waits until the watched servers hold no session, drain_timeout passes or
  // `stopping` says so.
  absl::Status WaitDrained(const std::vector<std::string>& watched, absl::Duration drain_timeout,
                           const std::function<bool()>& stopping, HaproxyApplyReport* report);
  absl::Status RemoveServers(const std::vector<std::string>& removed, std::map<std::string, HaproxyServer>* servers,
                             HaproxyApplyReport* report);
  // `show servers state` read back and compared with what the update asked.
  absl::Status CheckApplied(const hoist::v1::ProxyUpdate& update, const std::map<std::string, std::string>& addresses,
                            const std::vector<std::string>& removed);

  HaproxySocket* const socket_;
  Clock* const clock_;
};

}  // namespace hoist::agent
